//! Simulated pieces for benchmarks and tests of the engine: a batched inference server
//! with fixed step time and batch capacity ([`SimServer`]), a policy that replays
//! pre-encoded replies through it ([`SimPolicy`]), a tool environment with log-normal latency
//! ([`SimEnv`]) and a verifier that checks the final answer ([`AnswerVerifier`]). They depend
//! on `enact-core` only.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use enact_core::{
    Action, EnvError, Environment, FinishReason, Message, Policy, PolicyError, Reset, Sample,
    SampleRequest, StepOutcome, Submission, Task, ToolResult, Verdict, Verifier, VerifyError,
};

/// The simulated agent's tool call (Hermes syntax): tool `work`, no arguments.
pub const TOOL_CALL: &str = "<tool_call>\n{\"name\": \"work\", \"arguments\": {}}\n</tool_call>";

/// `n` simulated tasks, ids `{prefix}0`, `{prefix}1`, …
pub fn tasks(prefix: &str, n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| Task {
            id: format!("{prefix}{i}"),
            prompt: format!("simulated task {i}"),
            env: serde_json::Value::Null,
            hidden: None,
            split: None,
            metadata: Default::default(),
            thinking: None,
        })
        .collect()
}

/// A job on the simulated server: `steps` decode steps left, then `done`.
pub struct Job {
    steps: usize,
    done: tokio::sync::oneshot::Sender<()>,
}

/// The simulated inference server: a thread running decode steps of up to `batch` sequences.
pub struct SimServer {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    /// Time spent in decode steps.
    pub busy_ns: Arc<AtomicU64>,
    /// Sequences served, summed over steps.
    pub sequence_steps: Arc<AtomicU64>,
    pub steps: Arc<AtomicU64>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SimServer {
    /// Starts the server thread: each decode step serves up to `batch` sequences, takes `step`.
    pub fn start(batch: usize, step: Duration) -> Arc<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let busy_ns = Arc::new(AtomicU64::new(0));
        let sequence_steps = Arc::new(AtomicU64::new(0));
        let steps = Arc::new(AtomicU64::new(0));
        let (b, q, s) = (busy_ns.clone(), sequence_steps.clone(), steps.clone());
        let thread = std::thread::spawn(move || {
            let mut active: Vec<Job> = Vec::new();
            let mut waiting: VecDeque<Job> = VecDeque::new();
            loop {
                if active.is_empty() && waiting.is_empty() {
                    match rx.recv() {
                        Ok(j) => waiting.push_back(j),
                        Err(_) => return,
                    }
                }
                waiting.extend(rx.try_iter());
                while active.len() < batch {
                    let Some(j) = waiting.pop_front() else { break };
                    active.push(j);
                }
                let t = Instant::now();
                std::thread::sleep(step);
                b.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                q.fetch_add(active.len() as u64, Ordering::Relaxed);
                s.fetch_add(1, Ordering::Relaxed);
                for j in &mut active {
                    j.steps = j.steps.saturating_sub(1);
                }
                let (finished, running): (Vec<Job>, Vec<Job>) =
                    active.drain(..).partition(|j| j.steps == 0);
                active = running;
                for j in finished {
                    let _ = j.done.send(());
                }
            }
        });
        Arc::new(SimServer {
            jobs: std::sync::Mutex::new(Some(tx)),
            busy_ns,
            sequence_steps,
            steps,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Waits until a sequence of `steps` decode steps is done.
    pub async fn generate(&self, steps: usize) -> Result<(), PolicyError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|tx| tx.send(Job { steps, done }).is_ok()));
        if sent != Some(true) {
            return Err(PolicyError::Backend("the simulated server stopped".into()));
        }
        wait.await
            .map_err(|_| PolicyError::Backend("the simulated server dropped a request".into()))
    }

    /// Stops the server thread (pending requests fail).
    pub fn stop(&self) {
        if let Ok(mut g) = self.jobs.lock() {
            g.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
            let _ = t.join();
        }
    }
}

/// Replies of one episode: `turns` tool calls, then a final answer. Pre-encoded, so the
/// policy itself costs nothing measurable.
pub struct SimPolicy {
    /// `None`: answers at once (zero latency).
    pub server: Option<Arc<SimServer>>,
    pub reply_steps: usize,
    /// The tool-call reply and the final answer, without the end-of-turn token.
    pub call: Arc<Vec<u32>>,
    pub answer: Arc<Vec<u32>>,
    /// Tool-call replies before the answer.
    pub turns: usize,
    pub next: AtomicUsize,
    /// Episodes of a lockstep batch wait here before each generation round.
    pub lockstep: Option<Arc<tokio::sync::Barrier>>,
    /// Sampled tokens, summed over all policies sharing it.
    pub tokens: Arc<AtomicU64>,
}

#[async_trait]
impl Policy for SimPolicy {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError> {
        if let Some(b) = &self.lockstep {
            b.wait().await;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let mut tokens = if turn < self.turns {
            self.call.as_ref().clone()
        } else {
            self.answer.as_ref().clone()
        };
        let eot = request
            .stop_tokens
            .first()
            .copied()
            .ok_or_else(|| PolicyError::Backend("no stop token".into()))?;
        tokens.push(eot);
        if let Some(server) = &self.server {
            server.generate(self.reply_steps).await?;
        }
        if let Some(sink) = &request.on_token {
            tokens.iter().for_each(|&t| sink.emit(t));
        }
        self.tokens
            .fetch_add(tokens.len() as u64, Ordering::Relaxed);
        let n = tokens.len();
        Ok(Sample {
            tokens,
            logprobs: vec![-0.5; n],
            policy_versions: vec![0; n],
            finish: FinishReason::StopToken(eot),
        })
    }
}

/// A tool with log-normal latency (zero when `median_ms` is zero); any tool call succeeds, a
/// message ends the episode and becomes the submission's final answer.
pub struct SimEnv {
    pub median_ms: f64,
    pub sigma: f64,
    /// Seed of the latency draws.
    pub rng: u64,
    pub answer: Option<String>,
}

impl SimEnv {
    pub fn new(median_ms: f64, sigma: f64, seed: u64) -> Self {
        SimEnv {
            median_ms,
            sigma,
            rng: seed,
            answer: None,
        }
    }

    /// splitmix64, then Box–Muller: a standard normal draw.
    fn normal(&mut self) -> f64 {
        let mut next = || {
            self.rng = self.rng.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (u1, u2) = (next().max(1e-300), next());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[async_trait]
impl Environment for SimEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        Ok(Reset {
            messages: vec![Message::user(task.prompt.clone())],
            tools: Vec::new(),
        })
    }
    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        match action {
            Action::ToolCall(call) => {
                if self.median_ms > 0.0 {
                    let ms = self.median_ms * (self.sigma * self.normal()).exp();
                    tokio::time::sleep(Duration::from_secs_f64(ms.min(60_000.0) / 1e3)).await;
                }
                Ok(StepOutcome::ToolResult(ToolResult {
                    call_id: call.id,
                    name: call.name,
                    content: "ok".into(),
                    is_error: false,
                }))
            }
            Action::Message { content } => {
                self.answer = Some(content);
                Ok(StepOutcome::Done)
            }
        }
    }
    async fn submission(&mut self) -> Result<Submission, EnvError> {
        Ok(Submission {
            final_answer: self.answer.clone(),
            ..Default::default()
        })
    }
    async fn close(&mut self) -> Result<(), EnvError> {
        Ok(())
    }
}

/// Passes when the final answer is exactly the expected text.
pub struct AnswerVerifier(pub String);

#[async_trait]
impl Verifier for AnswerVerifier {
    async fn verify(&self, _: &Task, s: &Submission) -> Result<Verdict, VerifyError> {
        let passed = s.final_answer.as_deref() == Some(self.0.as_str());
        Ok(Verdict::from_checks(vec![enact_core::CheckResult {
            name: "answer".into(),
            status: if passed {
                enact_core::CheckStatus::Passed
            } else {
                enact_core::CheckStatus::Failed
            },
            detail: String::new(),
        }]))
    }
}

//! Test pieces: a tool environment that misbehaves on demand, a scripted policy that stamps
//! the publisher's version and can misbehave, and a factory over both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use enact_agent::Agent;
use enact_core::{
    Action, EnvError, Environment, Policy, PolicyError, Reset, Sample, SampleRequest, StepOutcome,
    Submission, Task,
};
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, ScriptedPolicy};
use enact_rollout::sim::{AnswerVerifier, SimEnv};
use enact_rollout::{
    Cancel, EpisodeParts, Publisher, Rollout, RolloutConfig, RolloutRecord, RolloutSummary,
};
use tokio::sync::mpsc;

/// How an environment behaves at its first tool call.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum EnvMode {
    Normal,
    PanicOnStep,
    ErrorOnStep,
    HangOnStep,
    ErrorOnReset,
}

/// How a policy behaves at its first request.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum PolicyMode {
    Normal,
    Error,
    Hang,
    /// Fewer logprobs than tokens.
    Mismatched,
    /// Ids no tokenizer knows.
    OutOfVocabulary,
}

/// The simulated tool environment with a fault at the first tool call, counting the
/// episodes alive at once.
pub struct TestEnv {
    pub inner: SimEnv,
    pub mode: EnvMode,
    pub live: Arc<AtomicUsize>,
    pub max_live: Arc<AtomicUsize>,
    counted: bool,
}

#[async_trait]
impl Environment for TestEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        if self.mode == EnvMode::ErrorOnReset {
            return Err(EnvError::Setup(
                "the test environment refuses to start".into(),
            ));
        }
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_live.fetch_max(now, Ordering::SeqCst);
        self.counted = true;
        self.inner.reset(task).await
    }
    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        if matches!(action, Action::ToolCall(_)) {
            match self.mode {
                EnvMode::PanicOnStep => panic!("the test environment crashed"),
                EnvMode::ErrorOnStep => {
                    return Err(EnvError::Step("the test environment broke".into()));
                }
                EnvMode::HangOnStep => std::future::pending::<()>().await,
                _ => {}
            }
        }
        self.inner.step(action).await
    }
    async fn submission(&mut self) -> Result<Submission, EnvError> {
        self.inner.submission().await
    }
    async fn close(&mut self) -> Result<(), EnvError> {
        if self.counted {
            self.live.fetch_sub(1, Ordering::SeqCst);
            self.counted = false;
        }
        self.inner.close().await
    }
}

/// Replays a script; stamps each token with the publisher's current version.
pub struct TestPolicy {
    pub inner: ScriptedPolicy,
    pub mode: PolicyMode,
    pub publisher: Publisher,
    /// Called after each successful sample (e.g. to publish a new version).
    pub after_sample: Option<Arc<dyn Fn() + Send + Sync>>,
}

#[async_trait]
impl Policy for TestPolicy {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError> {
        match self.mode {
            PolicyMode::Error => return Err(PolicyError::Backend("the test backend broke".into())),
            PolicyMode::Hang => std::future::pending::<()>().await,
            _ => {}
        }
        tokio::task::yield_now().await;
        let mut s = self.inner.sample(request).await?;
        let v = self.publisher.version();
        s.policy_versions = vec![v; s.tokens.len()];
        match self.mode {
            PolicyMode::Mismatched => {
                s.logprobs.pop();
            }
            PolicyMode::OutOfVocabulary => {
                s.tokens = vec![4_000_000_000; s.tokens.len()];
            }
            _ => {}
        }
        if let Some(f) = &self.after_sample {
            f();
        }
        Ok(s)
    }
}

pub fn tasks(n: usize) -> Vec<Task> {
    enact_rollout::sim::tasks("t", n)
}

pub fn script() -> Vec<String> {
    vec![enact_rollout::sim::TOOL_CALL.into(), "done".into()]
}

/// A factory of episodes; the modes are chosen per task id by `pick`.
pub struct Harness {
    pub publisher: Option<Publisher>,
    pub live: Arc<AtomicUsize>,
    pub max_live: Arc<AtomicUsize>,
    pub made: Arc<AtomicUsize>,
}

pub type Pick = Arc<dyn Fn(&Task) -> (EnvMode, PolicyMode) + Send + Sync>;

pub fn normal() -> Pick {
    Arc::new(|_: &Task| (EnvMode::Normal, PolicyMode::Normal))
}

/// Builds an engine whose episodes follow `pick`; `after_sample` runs after each sample.
pub fn engine(
    config: RolloutConfig,
    pick: Pick,
    tool_delay: Duration,
    after_sample: Option<Arc<dyn Fn() + Send + Sync>>,
) -> (Rollout, Harness) {
    let live = Arc::new(AtomicUsize::new(0));
    let max_live = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let publisher_cell: Arc<std::sync::OnceLock<Publisher>> = Arc::new(std::sync::OnceLock::new());
    let (l, m, c, p) = (
        live.clone(),
        max_live.clone(),
        made.clone(),
        publisher_cell.clone(),
    );
    let factory = move |task: &Task| -> Result<EpisodeParts, String> {
        c.fetch_add(1, Ordering::SeqCst);
        let (env_mode, policy_mode) = pick(task);
        if task.id == "no-factory" {
            return Err("the factory cannot make this episode".into());
        }
        let tokenizer = Arc::new(ByteTokenizer::new());
        let publisher = p.get().cloned().ok_or("no publisher")?;
        Ok(EpisodeParts {
            agent: Agent::new(
                Arc::new(TestPolicy {
                    inner: ScriptedPolicy::new(script(), tokenizer.clone()),
                    mode: policy_mode,
                    publisher,
                    after_sample: after_sample.clone(),
                }),
                tokenizer,
                Arc::new(ChatMlTemplate::default()),
                Arc::new(HermesParser),
            ),
            env: Box::new(TestEnv {
                inner: SimEnv::new(tool_delay.as_secs_f64() * 1e3, 0.0, 1),
                mode: env_mode,
                live: l.clone(),
                max_live: m.clone(),
                counted: false,
            }),
            verifier: Some(Arc::new(AnswerVerifier("done".into()))),
        })
    };
    let rollout = Rollout::new(config, Arc::new(factory));
    let _ = publisher_cell.set(rollout.publisher());
    (
        rollout,
        Harness {
            publisher: Some(rollout_publisher(&publisher_cell)),
            live,
            max_live,
            made,
        },
    )
}

fn rollout_publisher(cell: &std::sync::OnceLock<Publisher>) -> Publisher {
    cell.get().cloned().expect("publisher set")
}

/// Runs to the end, collecting every record.
pub async fn collect(
    rollout: &Rollout,
    tasks: Vec<Task>,
    done: &HashSet<String>,
    capacity: usize,
) -> (RolloutSummary, Vec<RolloutRecord>) {
    let (tx, mut rx) = mpsc::channel(capacity);
    let consumer = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(r) = rx.recv().await {
            out.push(r);
        }
        out
    });
    let summary = rollout
        .run(tasks, done, tx, Cancel::default())
        .await
        .unwrap();
    (summary, consumer.await.unwrap())
}

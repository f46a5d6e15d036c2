//! The rollout engine: continuous admission of episodes up to a concurrency limit, groups of
//! samples per task, backpressure from a bounded consumer channel, timeouts, cancellation,
//! and admission control by policy version (bounded staleness).
//!
//! Staleness of a finished episode = the engine's policy version when it finishes − the
//! oldest policy version among its sampled tokens (the version it was admitted under when it
//! sampled nothing). With a bound η, a new episode is admitted under version `v` only while
//! every in-flight episode was admitted under a version ≥ `v − η` (η = 0: synchronous, no
//! episode starts under `v + 1` while older ones run); a finished episode beyond the bound is
//! regenerated or kept (marked stale), as configured.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use enact_agent::Agent;
use enact_core::{
    Action, EnvError, Environment, Episode, Policy, PolicyError, Reset, Sample, SampleRequest,
    SegmentKind, StepOutcome, Submission, Task, Termination, TokenSink, Verdict, Verifier,
    VerifyError,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::status::{
    EpisodeStatus, StatusBoard, TokenProgress, Waiting, now_unix_ms, write_json_atomic,
};

/// What a stale episode (beyond the staleness bound) becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StalePolicy {
    /// Discard it and run the same (task, sample) again under the current version, up to
    /// `max_regenerations` times; after that it is dropped and counted.
    Drop,
    /// Keep it, marked `stale`, for importance re-weighting by the trainer.
    Keep,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// Episodes in flight at once.
    pub concurrency: usize,
    /// Samples per task (G, for group-relative advantages).
    pub group_size: u32,
    /// Run seed: part of every episode id and of every episode's sampling seed.
    pub seed: u64,
    /// Largest staleness kept (η); `None` = unbounded.
    pub max_staleness: Option<u64>,
    pub stale: StalePolicy,
    pub max_regenerations: u32,
    /// Wall-clock limit of one episode (sampling and tools), on top of the agent's own.
    pub episode_timeout: Option<Duration>,
    /// Limit of one backend request.
    pub call_timeout: Option<Duration>,
    /// Limit of one environment step (tool call).
    pub tool_timeout: Option<Duration>,
    /// A wait without progress longer than this is named by the watchdog.
    pub watchdog: Duration,
    /// How often `status.json` / `metrics.json` are rewritten.
    pub status_interval: Duration,
    pub status_file: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            concurrency: 8,
            group_size: 1,
            seed: 0,
            max_staleness: None,
            stale: StalePolicy::Drop,
            max_regenerations: 3,
            episode_timeout: None,
            call_timeout: None,
            tool_timeout: None,
            watchdog: Duration::from_secs(120),
            status_interval: Duration::from_secs(2),
            status_file: None,
            metrics_file: None,
        }
    }
}

/// One (task, sample) of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpisodeSlot {
    pub episode_id: String,
    pub task_index: usize,
    pub sample_index: u32,
}

/// The stable id of sample `sample_index` of `task_id` in a run with `seed`: resume finds
/// the same ids, so it neither loses nor duplicates an episode.
pub fn episode_id(seed: u64, task_id: &str, sample_index: u32) -> String {
    format!("{seed:x}-{task_id}-{sample_index}")
}

/// The pieces of one episode, made fresh per episode by an [`EpisodeFactory`].
pub struct EpisodeParts {
    pub agent: Agent,
    pub env: Box<dyn Environment>,
    pub verifier: Option<Arc<dyn Verifier>>,
}

/// Makes the agent, environment and verifier of each episode (policies are usually shared
/// between episodes: one batched backend).
pub trait EpisodeFactory: Send + Sync {
    /// An error becomes an episode that ended with `Termination::Error`.
    fn make(&self, task: &Task) -> Result<EpisodeParts, String>;
}

/// One finished episode as stored and handed to the consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub format_version: u32,
    pub episode_id: String,
    pub task_id: String,
    /// Index of this sample within its task's group (0..G).
    pub sample_index: u32,
    pub run_seed: u64,
    /// Policy version when the episode was admitted, and the oldest / newest version among
    /// its sampled tokens (the admitted version when it sampled nothing).
    pub admitted_version: u64,
    pub min_policy_version: u64,
    pub max_policy_version: u64,
    /// The engine's policy version when the episode finished, and the staleness:
    /// `finished_version − min_policy_version`.
    pub finished_version: u64,
    pub staleness: u64,
    /// Beyond the staleness bound and kept for re-weighting.
    #[serde(default)]
    pub stale: bool,
    /// Engine event order: when the episode was admitted and when it finished.
    pub admit_seq: u64,
    pub finish_seq: u64,
    pub episode: Episode,
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutSummary {
    /// Episodes handed to the consumer in this run.
    pub finished: u64,
    /// Episodes skipped because they were already done (resume).
    pub skipped: u64,
    pub regenerated: u64,
    pub dropped_stale: u64,
    pub errors: u64,
    pub cancelled: bool,
}

#[derive(Debug, Error)]
pub enum RolloutError {
    #[error(
        "the consumer of finished episodes went away (its channel is closed); {pending} episode(s) not handed over will be redone on resume"
    )]
    ConsumerGone { pending: usize },
    #[error("invalid rollout configuration: {0}")]
    Config(String),
}

/// Cancels a running rollout: no more admissions, in-flight episodes are abandoned (they are
/// not stored, so a resume runs them again).
#[derive(Clone)]
pub struct Cancel(Arc<watch::Sender<bool>>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel(Arc::new(watch::Sender::new(false)))
    }
}

impl Cancel {
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
    async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|&c| c).await;
    }
}

/// The trainer's handle: announces new policy versions (the weight swap itself is the
/// backends' business).
#[derive(Clone)]
pub struct Publisher {
    version: Arc<AtomicU64>,
    board: Arc<StatusBoard>,
}

impl Publisher {
    /// The policy is now at `version` (versions only go up; an older one is ignored).
    pub fn publish(&self, version: u64) {
        self.version.fetch_max(version, Ordering::SeqCst);
        self.board.set_version(version);
    }
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }
}

/// The engine.
pub struct Rollout {
    config: RolloutConfig,
    factory: Arc<dyn EpisodeFactory>,
    publisher: Publisher,
    board: Arc<StatusBoard>,
}

struct Finished {
    episode: Episode,
    admitted_version: u64,
    admit_seq: u64,
}

impl Rollout {
    pub fn new(config: RolloutConfig, factory: Arc<dyn EpisodeFactory>) -> Self {
        let board = Arc::new(StatusBoard::default());
        Rollout {
            config,
            factory,
            publisher: Publisher {
                version: Arc::new(AtomicU64::new(0)),
                board: board.clone(),
            },
            board,
        }
    }

    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    pub fn status(&self) -> Arc<StatusBoard> {
        self.board.clone()
    }

    /// Runs `group_size` samples of every task, skipping episode ids in `done` (resume), and
    /// hands each finished episode to `out` in finishing order. Waits for `out` when it is
    /// full (backpressure: nothing new is admitted meanwhile). Returns when every episode is
    /// handed over, or on cancellation.
    pub async fn run(
        &self,
        tasks: Vec<Task>,
        done: &HashSet<String>,
        out: mpsc::Sender<RolloutRecord>,
        cancel: Cancel,
    ) -> Result<RolloutSummary, RolloutError> {
        let cfg = &self.config;
        if cfg.concurrency == 0 || cfg.group_size == 0 {
            return Err(RolloutError::Config(
                "concurrency and group size must be at least 1".into(),
            ));
        }
        let mut seen = HashSet::new();
        if let Some(t) = tasks.iter().find(|t| !seen.insert(t.id.as_str())) {
            return Err(RolloutError::Config(format!(
                "task id {:?} appears twice; episode ids are derived from task ids, so they must be unique",
                t.id
            )));
        }
        let tasks: Arc<Vec<Task>> = Arc::new(tasks);
        let mut summary = RolloutSummary::default();
        let mut queue = VecDeque::new();
        for (task_index, task) in tasks.iter().enumerate() {
            for sample_index in 0..cfg.group_size {
                let id = episode_id(cfg.seed, &task.id, sample_index);
                if done.contains(&id) {
                    summary.skipped += 1;
                } else {
                    queue.push_back(EpisodeSlot {
                        episode_id: id,
                        task_index,
                        sample_index,
                    });
                }
            }
        }
        self.board.count(|c| c.resumed = summary.skipped);
        let reporter = self.spawn_reporter();
        let result = self
            .admit_loop(&tasks, queue, &out, &cancel, &mut summary)
            .await;
        reporter.abort();
        self.write_status_files();
        result.map(|()| summary)
    }

    async fn admit_loop(
        &self,
        tasks: &Arc<Vec<Task>>,
        mut queue: VecDeque<EpisodeSlot>,
        out: &mpsc::Sender<RolloutRecord>,
        cancel: &Cancel,
        summary: &mut RolloutSummary,
    ) -> Result<(), RolloutError> {
        let cfg = &self.config;
        let mut in_flight = tokio::task::JoinSet::new();
        let mut slots: HashMap<tokio::task::Id, (EpisodeSlot, u64, u64)> = HashMap::new();
        // Multiset of the versions in-flight episodes were admitted under.
        let mut admitted: BTreeMap<u64, usize> = BTreeMap::new();
        let mut regenerations: HashMap<String, u32> = HashMap::new();
        let mut seq = 0u64;
        loop {
            if cancel.is_cancelled() {
                self.abandon(&mut in_flight, &slots);
                summary.cancelled = true;
                return Ok(());
            }
            let version = self.publisher.version();
            while in_flight.len() < cfg.concurrency && !queue.is_empty() {
                let oldest = admitted.keys().next().copied();
                let within_bound = match (cfg.max_staleness, oldest) {
                    (Some(eta), Some(oldest)) => version.saturating_sub(oldest) <= eta,
                    _ => true,
                };
                self.board.staleness_blocked(!within_bound);
                if !within_bound {
                    break;
                }
                let Some(slot) = queue.pop_front() else { break };
                let Some(task) = tasks.get(slot.task_index).cloned() else {
                    continue;
                };
                seq += 1;
                let progress = self.board.admit(EpisodeStatus {
                    episode_id: slot.episode_id.clone(),
                    task_id: task.id.clone(),
                    sample_index: slot.sample_index,
                    admitted_version: version,
                    waiting: Waiting::Setup,
                    since_ms: now_unix_ms(),
                    progress_ms: now_unix_ms(),
                    turn: 0,
                    sampled_tokens: 0,
                });
                let handle = in_flight.spawn(run_episode(
                    self.factory.clone(),
                    self.board.clone(),
                    cfg.clone(),
                    task,
                    slot.clone(),
                    progress,
                ));
                slots.insert(handle.id(), (slot, version, seq));
                *admitted.entry(version).or_default() += 1;
            }
            if in_flight.is_empty() {
                return Ok(());
            }
            let joined = tokio::select! {
                j = in_flight.join_next_with_id() => j,
                () = cancel.cancelled() => continue,
            };
            let Some(joined) = joined else { continue };
            let (id, result) = match joined {
                Ok((id, episode)) => (id, Ok(episode)),
                Err(e) => (e.id(), Err(e)),
            };
            let Some((slot, admitted_version, admit_seq)) = slots.remove(&id) else {
                continue;
            };
            if let Some(n) = admitted.get_mut(&admitted_version) {
                *n -= 1;
                if *n == 0 {
                    admitted.remove(&admitted_version);
                }
            }
            self.board.remove(&slot.episode_id);
            let episode = match result {
                Ok(episode) => episode,
                Err(e) => {
                    let task = tasks.get(slot.task_index).cloned().unwrap_or_else(|| Task {
                        id: String::new(),
                        prompt: String::new(),
                        env: serde_json::Value::Null,
                        hidden: None,
                        split: None,
                        metadata: Default::default(),
                        thinking: None,
                    });
                    failed_episode(
                        &task,
                        &slot.episode_id,
                        format!("the episode's task crashed: {e}"),
                    )
                }
            };
            seq += 1;
            let record = self.judge(
                &slot,
                Finished {
                    episode,
                    admitted_version,
                    admit_seq,
                },
                seq,
            );
            let Some(record) = record else {
                let n = regenerations.entry(slot.episode_id.clone()).or_default();
                if cfg.stale == StalePolicy::Drop && *n < cfg.max_regenerations {
                    *n += 1;
                    summary.regenerated += 1;
                    self.board.count(|c| c.regenerated += 1);
                    queue.push_front(slot);
                } else {
                    summary.dropped_stale += 1;
                    self.board.count(|c| c.dropped_stale += 1);
                }
                continue;
            };
            let is_error = matches!(record.episode.outcome.termination, Termination::Error(_));
            self.board.consumer_blocked(out.capacity() == 0);
            let sent = tokio::select! {
                s = out.send(record) => s,
                () = cancel.cancelled() => {
                    self.board.consumer_blocked(false);
                    continue;
                }
            };
            self.board.consumer_blocked(false);
            if sent.is_err() {
                self.abandon(&mut in_flight, &slots);
                return Err(RolloutError::ConsumerGone {
                    pending: queue.len() + slots.len(),
                });
            }
            summary.finished += 1;
            if is_error {
                summary.errors += 1;
            }
            self.board.count(|c| {
                c.finished += 1;
                c.errors += u64::from(is_error);
            });
        }
    }

    /// Aborts the in-flight episodes (not stored: a resume runs them again) and takes them
    /// off the status board.
    fn abandon(
        &self,
        in_flight: &mut tokio::task::JoinSet<Episode>,
        slots: &HashMap<tokio::task::Id, (EpisodeSlot, u64, u64)>,
    ) {
        in_flight.abort_all();
        for (slot, _, _) in slots.values() {
            self.board.remove(&slot.episode_id);
        }
    }

    /// Stamps versions and staleness; `None` when the episode is beyond the bound and the
    /// policy says drop.
    fn judge(&self, slot: &EpisodeSlot, f: Finished, finish_seq: u64) -> Option<RolloutRecord> {
        // One pass over the sampled segments: token count and oldest / newest version.
        let (mut sampled, mut min, mut max) = (0u64, None::<u64>, None::<u64>);
        for s in &f.episode.trajectory.segments {
            if s.kind != SegmentKind::Sampled {
                continue;
            }
            sampled += s.tokens.len() as u64;
            for &v in &s.policy_versions {
                min = Some(min.map_or(v, |m| m.min(v)));
                max = Some(max.map_or(v, |m| m.max(v)));
            }
        }
        let min = min.unwrap_or(f.admitted_version);
        let max = max.unwrap_or(f.admitted_version);
        let finished_version = self.publisher.version();
        let staleness = finished_version.saturating_sub(min);
        let beyond = self.config.max_staleness.is_some_and(|eta| staleness > eta);
        self.board.count(|c| {
            c.sampled_tokens += sampled;
            c.max_staleness = c.max_staleness.max(staleness);
            c.staleness_sum += staleness;
            c.kept_stale += u64::from(beyond && self.config.stale == StalePolicy::Keep);
        });
        if beyond && self.config.stale == StalePolicy::Drop {
            tracing::info!(
                episode = %slot.episode_id,
                staleness,
                "episode beyond the staleness bound; regenerating"
            );
            return None;
        }
        Some(RolloutRecord {
            format_version: enact_core::FORMAT_VERSION,
            episode_id: slot.episode_id.clone(),
            task_id: f.episode.task.id.clone(),
            sample_index: slot.sample_index,
            run_seed: self.config.seed,
            admitted_version: f.admitted_version,
            min_policy_version: min,
            max_policy_version: max,
            finished_version,
            staleness,
            stale: beyond,
            admit_seq: f.admit_seq,
            finish_seq,
            episode: f.episode,
        })
    }

    fn spawn_reporter(&self) -> tokio::task::JoinHandle<()> {
        let board = self.board.clone();
        let cfg = self.config.clone();
        tokio::spawn(async move {
            let mut reported: HashSet<String> = HashSet::new();
            loop {
                tokio::time::sleep(cfg.status_interval).await;
                let snap = board.snapshot(cfg.watchdog);
                for s in &snap.stalled {
                    if reported.insert(s.split(':').next().unwrap_or(s).to_string()) {
                        tracing::warn!("watchdog: {s}");
                    }
                }
                write_files(&cfg, &snap);
            }
        })
    }

    /// Rewrites `status.json` and `metrics.json` now.
    pub fn write_status_files(&self) {
        write_files(&self.config, &self.board.snapshot(self.config.watchdog));
    }
}

fn write_files(cfg: &RolloutConfig, snap: &crate::status::StatusSnapshot) {
    if let Some(p) = &cfg.status_file
        && let Err(e) = write_json_atomic(p, snap)
    {
        tracing::warn!(path = %p.display(), error = %e, "cannot write the status file");
    }
    if let Some(p) = &cfg.metrics_file {
        let metrics = serde_json::json!({
            "policy_version": snap.policy_version,
            "episodes_per_s": snap.episodes_per_s,
            "tokens_per_s": snap.tokens_per_s,
            "in_flight": snap.in_flight.len(),
            "mean_staleness": snap.mean_staleness,
            "counters": snap.counters,
            "stalled": snap.stalled.len(),
        });
        if let Err(e) = write_json_atomic(p, &metrics) {
            tracing::warn!(path = %p.display(), error = %e, "cannot write the metrics file");
        }
    }
}

/// Runs one episode with instrumented pieces; never fails (failures are recorded in the
/// episode).
async fn run_episode(
    factory: Arc<dyn EpisodeFactory>,
    board: Arc<StatusBoard>,
    cfg: RolloutConfig,
    task: Task,
    slot: EpisodeSlot,
    progress: Arc<TokenProgress>,
) -> Episode {
    let parts = match factory.make(&task) {
        Ok(p) => p,
        Err(e) => {
            return failed_episode(
                &task,
                &slot.episode_id,
                format!("cannot set up the episode: {e}"),
            );
        }
    };
    let mut agent = parts.agent;
    agent.policy = Arc::new(WatchedPolicy {
        inner: agent.policy.clone(),
        board: board.clone(),
        progress,
        episode_id: slot.episode_id.clone(),
        timeout: cfg.call_timeout,
    });
    if let Some(limit) = cfg.episode_timeout {
        agent.config.time_limit_secs = agent.config.time_limit_secs.min(limit.as_secs_f64());
    }
    // Distinct, reproducible sampling per (run, task, sample).
    agent.config.sampling.seed = Some(
        agent
            .config
            .sampling
            .seed
            .unwrap_or(0)
            .wrapping_add(stable_hash(&slot.episode_id)),
    );
    let mut env = WatchedEnv {
        inner: parts.env,
        board: board.clone(),
        episode_id: slot.episode_id.clone(),
        timeout: cfg.tool_timeout,
    };
    let verifier = parts.verifier.map(|inner| WatchedVerifier {
        inner,
        board: board.clone(),
        episode_id: slot.episode_id.clone(),
    });
    let mut episode = agent
        .run(
            &task,
            &mut env,
            verifier.as_ref().map(|v| v as &dyn Verifier),
        )
        .await;
    episode.trajectory.id = slot.episode_id;
    episode
}

/// 64-bit FNV-1a: a hash stable across processes and platforms (std's hasher is
/// randomised per process), for seeds derived from ids.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn failed_episode(task: &Task, episode_id: &str, why: String) -> Episode {
    Episode::failed(task, episode_id, "rollout", why)
}

/// The policy as one episode sees it: reports waits and tokens, bounds each request.
struct WatchedPolicy {
    inner: Arc<dyn Policy>,
    board: Arc<StatusBoard>,
    progress: Arc<TokenProgress>,
    episode_id: String,
    timeout: Option<Duration>,
}

#[async_trait]
impl Policy for WatchedPolicy {
    async fn sample(&self, mut request: SampleRequest) -> Result<Sample, PolicyError> {
        self.board.wait_on(&self.episode_id, Waiting::Sampling);
        let (progress, downstream) = (self.progress.clone(), request.on_token.take());
        request.on_token = Some(TokenSink::new(move |token| {
            progress.token();
            if let Some(d) = &downstream {
                d.emit(token);
            }
        }));
        let result = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, self.inner.sample(request)).await {
                Ok(r) => r,
                Err(_) => Err(PolicyError::Timeout(limit)),
            },
            None => self.inner.sample(request).await,
        };
        self.board.wait_on(&self.episode_id, Waiting::Agent);
        result
    }
    fn version(&self) -> u64 {
        self.inner.version()
    }
    fn context_limit(&self) -> usize {
        self.inner.context_limit()
    }
    fn token_exact(&self) -> bool {
        self.inner.token_exact()
    }
}

/// The environment as the engine sees it: reports waits, bounds each step.
struct WatchedEnv {
    inner: Box<dyn Environment>,
    board: Arc<StatusBoard>,
    episode_id: String,
    timeout: Option<Duration>,
}

/// `f`, or the error `timed_out` makes once `limit` has passed.
async fn bounded<T>(
    limit: Option<Duration>,
    f: impl std::future::Future<Output = Result<T, EnvError>>,
    timed_out: impl FnOnce(Duration) -> EnvError,
) -> Result<T, EnvError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f)
            .await
            .unwrap_or_else(|_| Err(timed_out(limit))),
        None => f.await,
    }
}

#[async_trait]
impl Environment for WatchedEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        self.board.wait_on(&self.episode_id, Waiting::Setup);
        let r = bounded(self.timeout, self.inner.reset(task), |limit| {
            EnvError::Setup(format!(
                "reset did not answer within the tool timeout of {limit:?}"
            ))
        })
        .await;
        self.board.wait_on(&self.episode_id, Waiting::Agent);
        r
    }
    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        let label = match &action {
            Action::ToolCall(call) => call.name.clone(),
            Action::Message { .. } => "(answer to a message)".to_string(),
        };
        self.board
            .wait_on(&self.episode_id, Waiting::Tool(label.clone()));
        let r = bounded(self.timeout, self.inner.step(action), |limit| {
            EnvError::Step(format!(
                "step {label} did not answer within the tool timeout of {limit:?}"
            ))
        })
        .await;
        self.board.wait_on(&self.episode_id, Waiting::Agent);
        r
    }
    async fn submission(&mut self) -> Result<Submission, EnvError> {
        self.board
            .wait_on(&self.episode_id, Waiting::Tool("(submission)".into()));
        let r = bounded(self.timeout, self.inner.submission(), |limit| {
            EnvError::Step(format!(
                "collecting the submission did not finish within the tool timeout of {limit:?}"
            ))
        })
        .await;
        self.board.wait_on(&self.episode_id, Waiting::Agent);
        r
    }
    async fn close(&mut self) -> Result<(), EnvError> {
        bounded(self.timeout, self.inner.close(), |limit| {
            EnvError::Step(format!(
                "close did not finish within the tool timeout of {limit:?}"
            ))
        })
        .await
    }
    /// Forwarded whole, so an environment that runs calls at once (sub-agents) still does;
    /// the tool timeout bounds the batch.
    async fn step_all(&mut self, actions: Vec<Action>) -> Vec<Result<StepOutcome, EnvError>> {
        if actions.len() < 2 {
            let mut out = Vec::new();
            for a in actions {
                out.push(self.step(a).await);
            }
            return out;
        }
        self.board.wait_on(
            &self.episode_id,
            Waiting::Tool(format!("{} calls", actions.len())),
        );
        let r = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, self.inner.step_all(actions))
                .await
                .unwrap_or_else(|_| {
                    vec![Err(EnvError::Step(format!(
                        "the reply's tool calls did not answer within the tool timeout of {limit:?}"
                    )))]
                }),
            None => self.inner.step_all(actions).await,
        };
        self.board.wait_on(&self.episode_id, Waiting::Agent);
        r
    }
    fn take_children(&mut self) -> Vec<enact_core::ChildEpisode> {
        self.inner.take_children()
    }
}

struct WatchedVerifier {
    inner: Arc<dyn Verifier>,
    board: Arc<StatusBoard>,
    episode_id: String,
}

#[async_trait]
impl Verifier for WatchedVerifier {
    async fn verify(&self, task: &Task, submission: &Submission) -> Result<Verdict, VerifyError> {
        self.board.wait_on(&self.episode_id, Waiting::Verifier);
        let r = self.inner.verify(task, submission).await;
        self.board.wait_on(&self.episode_id, Waiting::Agent);
        r
    }
}

/// Any closure `Fn(&Task) -> Result<EpisodeParts, String>` is a factory.
impl<F> EpisodeFactory for F
where
    F: Fn(&Task) -> Result<EpisodeParts, String> + Send + Sync,
{
    fn make(&self, task: &Task) -> Result<EpisodeParts, String> {
        self(task)
    }
}

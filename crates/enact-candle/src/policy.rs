//! `CandlePolicy`: the engine behind the `Policy` seam.
//!
//! A worker thread owns the engine, a continuous [`Batch`] and a pool of idle KV caches.
//! Requests arrive through a channel and join the running batch at the next decode step (up
//! to `max_batch` sequences; the rest wait in order); a finished sequence leaves at once and
//! its cache goes to the idle pool. Each request takes the idle cache sharing the longest
//! prefix with its context, so a multi-turn episode only computes each turn's new suffix.
//! A request whose caller went away (the `sample` future was dropped) leaves the batch at the
//! next step. Weight updates apply between two steps: running sequences continue under the
//! new version, each token stamped with the version that sampled it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use candle_core::Tensor;
use enact_core::{Policy, PolicyError, Sample, SampleRequest};
use tokio::sync::oneshot;

use crate::batch::{Batch, SeqId};
use crate::engine::{Engine, GenStats};
use crate::error::EngineError;
use crate::load::{WeightLayout, model_from_tensors};
use crate::model::{KvCache, Model};

/// Tuning of the worker.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// Most sequences generating at once; later requests wait for a free slot.
    pub max_batch: usize,
    /// Idle KV caches kept for prefix reuse.
    pub max_cached: usize,
    /// Most prompt tokens computed per decode step (chunked prefill): bounds how long a
    /// newcomer's prompt delays the tokens of the running sequences.
    pub prefill_chunk: usize,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            max_batch: 16,
            max_cached: 8,
            prefill_chunk: 32,
        }
    }
}

/// What happens to KV caches computed under the old weights when new ones are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvOnPublish {
    /// Keep them: running sequences continue at once, attending to keys and values of the
    /// old weights for the tokens before the update (the usual choice for in-flight
    /// rollouts; the difference is bounded by how far one update moves the weights). Idle
    /// caches stay available for prefix reuse.
    #[default]
    Keep,
    /// Running sequences continue with their caches (as `Keep`), but idle caches are
    /// dropped: a sequence that starts after the update computes its whole context under
    /// the new weights instead of reusing a prefix computed under the old ones (a trainer's
    /// choice: new episodes are then exactly on-policy).
    KeepRunning,
    /// Recompute every running sequence's context and sampled tokens under the new weights
    /// (in prefill chunks) before its next token; idle caches are dropped.
    Recompute,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;
type SampleReply = Reply<(Sample, GenStats)>;

enum Job {
    Sample(SampleRequest, SampleReply),
    Score(Arc<Vec<u32>>, Reply<Vec<f32>>),
    /// New weights, under the given version (`None`: the next one).
    Publish(Box<Model>, KvOnPublish, Option<u64>, Reply<u64>),
    Reload(Box<Engine>, oneshot::Sender<u64>),
}

/// The embedded engine as a [`Policy`].
pub struct CandlePolicy {
    tx: mpsc::Sender<Job>,
    version: Arc<AtomicU64>,
    context_limit: usize,
    name: String,
    layout: Mutex<WeightLayout>,
}

fn to_policy_error(e: EngineError) -> PolicyError {
    match e {
        EngineError::ContextTooLong { context, limit } => {
            PolicyError::ContextTooLong { context, limit }
        }
        other => PolicyError::Backend(other.to_string()),
    }
}

impl CandlePolicy {
    pub fn new(engine: Engine, options: PolicyOptions) -> CandlePolicy {
        let (tx, rx) = mpsc::channel::<Job>();
        let version = Arc::new(AtomicU64::new(engine.version()));
        let context_limit = engine.context_limit();
        let layout = Mutex::new(engine.weight_layout());
        let name = format!(
            "candle:{} ({}, {} threads)",
            engine.info().path.display(),
            engine.weight_format().name(),
            engine.threads()
        );
        let worker = Worker {
            batch: Batch::new(options.prefill_chunk),
            engine,
            version: version.clone(),
            options,
            idle: Vec::new(),
            waiting: VecDeque::new(),
            replies: HashMap::new(),
        };
        let spawned = std::thread::Builder::new()
            .name("enact-candle-worker".into())
            .spawn(move || worker.run(rx));
        if let Err(e) = spawned {
            // The channel's receiver is gone; every request will report it.
            tracing::error!("cannot start the engine worker thread: {e}");
        }
        CandlePolicy {
            tx,
            version,
            context_limit,
            name,
            layout,
        }
    }

    pub fn describe(&self) -> &str {
        &self.name
    }

    fn send(&self, job: Job) -> Result<(), PolicyError> {
        self.tx
            .send(job)
            .map_err(|_| PolicyError::Backend("the engine worker thread has stopped".into()))
    }

    /// Samples, also returning timing statistics. The request is queued when this is called
    /// (not when the future is first polled), so requests join the batch in call order;
    /// dropping the future takes the sequence out of the batch at the next step.
    pub fn sample_with_stats(
        &self,
        request: SampleRequest,
    ) -> impl Future<Output = Result<(Sample, GenStats), PolicyError>> + Send + use<> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Job::Sample(request, tx));
        async move {
            sent?;
            answer(rx).await
        }
    }

    /// Log-probability of each token given its prefix (raw model; first entry 0).
    pub async fn score(&self, tokens: Arc<Vec<u32>>) -> Result<Vec<f32>, PolicyError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Score(tokens, tx))?;
        answer(rx).await
    }

    /// What published weights must match (the running model's configuration and storage).
    pub fn weight_layout(&self) -> WeightLayout {
        match self.layout.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Publishes new weights in process (e.g. after a training step); the future gives the
    /// new version. They apply at the first token boundary after this call (the update is
    /// queued at once, before the future is polled): running sequences continue under them
    /// (partial rollouts), their KV caches kept or recomputed per `kv`.
    pub fn publish_weights(
        &self,
        model: Model,
        kv: KvOnPublish,
    ) -> impl Future<Output = Result<u64, PolicyError>> + Send + use<> {
        self.publish_weights_as(model, kv, None)
    }

    /// [`CandlePolicy::publish_weights`] under a chosen version (newer than the running one;
    /// `None`: the next), e.g. a trainer's step count, which stays meaningful across a resume.
    pub fn publish_weights_as(
        &self,
        model: Model,
        kv: KvOnPublish,
        version: Option<u64>,
    ) -> impl Future<Output = Result<u64, PolicyError>> + Send + use<> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Job::Publish(Box::new(model), kv, version, tx));
        async move {
            sent?;
            answer(rx).await
        }
    }

    /// [`CandlePolicy::publish_weights`] from tensors named as in Hugging Face checkpoints
    /// (see [`model_from_tensors`]); the model is built off the worker thread, so decoding
    /// goes on meanwhile.
    pub async fn publish_tensors(
        &self,
        tensors: HashMap<String, Tensor>,
        kv: KvOnPublish,
    ) -> Result<u64, PolicyError> {
        self.publish_tensors_as(tensors, kv, None).await
    }

    /// [`CandlePolicy::publish_tensors`] under a chosen version (see
    /// [`CandlePolicy::publish_weights_as`]).
    pub async fn publish_tensors_as(
        &self,
        tensors: HashMap<String, Tensor>,
        kv: KvOnPublish,
        version: Option<u64>,
    ) -> Result<u64, PolicyError> {
        let layout = self.weight_layout();
        let model = tokio::task::spawn_blocking(move || model_from_tensors(&layout, &tensors))
            .await
            .map_err(|e| {
                PolicyError::Backend(format!("building the published weights failed: {e}"))
            })?
            .map_err(|e| {
                PolicyError::Backend(format!(
                    "cannot publish the weights: {e}; publish every tensor of the running model, \
                     named and shaped as in its Hugging Face checkpoint"
                ))
            })?;
        self.publish_weights_as(model, kv, version).await
    }

    /// Swaps in a whole new engine (possibly another model) at the next token boundary;
    /// running sequences recompute their caches under it, idle caches are dropped. Bumps
    /// and returns the version.
    pub async fn reload(&self, engine: Engine) -> Result<u64, PolicyError> {
        let layout = engine.weight_layout();
        let (tx, rx) = oneshot::channel();
        self.send(Job::Reload(Box::new(engine), tx))?;
        let v = rx
            .await
            .map_err(|_| PolicyError::Backend("the engine worker dropped the request".into()))?;
        match self.layout.lock() {
            Ok(mut l) => *l = layout,
            Err(poisoned) => *poisoned.into_inner() = layout,
        }
        Ok(v)
    }
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, EngineError>>) -> Result<T, PolicyError> {
    rx.await
        .map_err(|_| PolicyError::Backend("the engine worker dropped the request".into()))?
        .map_err(to_policy_error)
}

#[async_trait]
impl Policy for CandlePolicy {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError> {
        self.sample_with_stats(request).await.map(|(s, _)| s)
    }
    fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }
    fn context_limit(&self) -> usize {
        self.context_limit
    }
}

/// The worker thread's state.
struct Worker {
    engine: Engine,
    version: Arc<AtomicU64>,
    options: PolicyOptions,
    batch: Batch,
    /// Idle caches, least recently used first.
    idle: Vec<KvCache>,
    /// Checked requests waiting for a slot in the batch.
    waiting: VecDeque<(SampleRequest, SampleReply)>,
    replies: HashMap<SeqId, SampleReply>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            if self.batch.is_empty() && self.waiting.is_empty() {
                match rx.recv() {
                    Ok(job) => self.handle(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = rx.try_recv() {
                self.handle(job);
            }
            self.drop_cancelled();
            self.admit();
            for f in self.batch.step(&self.engine) {
                if let Some(tx) = self.replies.remove(&f.id) {
                    let _ = tx.send(Ok((f.sample, f.stats)));
                }
                self.keep_idle(f.cache);
            }
        }
    }

    /// Runs a job at a token boundary (between two steps).
    fn handle(&mut self, job: Job) {
        match job {
            Job::Sample(r, tx) => match self.engine.check(&r) {
                // A bad request fails alone.
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
                Ok(()) => self.waiting.push_back((r, tx)),
            },
            Job::Score(tokens, tx) => {
                let _ = tx.send(self.engine.score(&tokens));
            }
            Job::Publish(model, kv, version, tx) => {
                let published = match version {
                    Some(v) => self.engine.publish_as(*model, v),
                    None => self.engine.publish(*model),
                };
                if published.is_ok() {
                    match kv {
                        KvOnPublish::Keep => {}
                        KvOnPublish::KeepRunning => self.idle.clear(),
                        KvOnPublish::Recompute => {
                            self.batch.recompute(&self.engine);
                            self.idle.clear();
                        }
                    }
                }
                self.version.store(self.engine.version(), Ordering::SeqCst);
                let _ = tx.send(published);
            }
            Job::Reload(engine, tx) => {
                let v = self.engine.replace(*engine);
                self.batch.recompute(&self.engine);
                self.idle.clear();
                self.version.store(v, Ordering::SeqCst);
                let _ = tx.send(v);
            }
        }
    }

    /// Takes out the sequences whose caller dropped the `sample` future.
    fn drop_cancelled(&mut self) {
        let gone: Vec<SeqId> = self
            .replies
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.replies.remove(&id);
            if let Some(cache) = self.batch.remove(id) {
                self.keep_idle(cache);
            }
        }
        self.waiting.retain(|(_, tx)| !tx.is_closed());
    }

    /// Moves waiting requests into free slots, each with the idle cache sharing the longest
    /// prefix with its context.
    fn admit(&mut self) {
        while self.batch.len() < self.options.max_batch.max(1) {
            let Some((r, tx)) = self.waiting.pop_front() else {
                return;
            };
            let cache = self.best_idle(&r.context);
            match self.batch.add(&self.engine, r, cache) {
                Ok(id) => {
                    self.replies.insert(id, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
    }

    fn best_idle(&mut self, context: &[u32]) -> KvCache {
        let best = self
            .idle
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let common = c
                    .tokens()
                    .iter()
                    .zip(context)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, common)
            })
            .max_by_key(|&(i, common)| (common, i));
        match best {
            Some((i, common)) if common > 0 => self.idle.remove(i),
            _ => self.engine.new_cache(),
        }
    }

    fn keep_idle(&mut self, cache: KvCache) {
        self.idle.push(cache);
        while self.idle.len() > self.options.max_cached {
            self.idle.remove(0);
        }
    }
}

//! `CandlePolicy`: the engine behind the `Policy` seam.
//!
//! A worker thread owns the engine and a pool of KV caches. Requests arrive through a
//! channel; all requests waiting when the worker is free are generated together as one batch
//! (several sequences at once). Each request takes the idle cache sharing the longest prefix
//! with its context, so a multi-turn episode only computes each turn's new suffix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use async_trait::async_trait;
use enact_core::{Policy, PolicyError, Sample, SampleRequest};
use tokio::sync::oneshot;

use crate::engine::{Engine, GenStats};
use crate::error::EngineError;
use crate::model::KvCache;

/// Tuning of the worker.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// Most requests generated together.
    pub max_batch: usize,
    /// Idle KV caches kept for prefix reuse.
    pub max_cached: usize,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            max_batch: 8,
            max_cached: 8,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

enum Job {
    Sample(SampleRequest, Reply<(Sample, GenStats)>),
    Score(Arc<Vec<u32>>, Reply<Vec<f32>>),
    Reload(Box<Engine>, oneshot::Sender<u64>),
}

/// The embedded engine as a [`Policy`].
pub struct CandlePolicy {
    tx: mpsc::Sender<Job>,
    version: Arc<AtomicU64>,
    context_limit: usize,
    name: String,
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
        let version = Arc::new(AtomicU64::new(0));
        let context_limit = engine.context_limit();
        let name = format!(
            "candle:{} ({}, {} threads)",
            engine.info().path.display(),
            engine.weight_format().name(),
            engine.threads()
        );
        let v = version.clone();
        let spawned = std::thread::Builder::new()
            .name("enact-candle-worker".into())
            .spawn(move || worker(engine, rx, v, options));
        if let Err(e) = spawned {
            // The channel's receiver is gone; every request will report it.
            tracing::error!("cannot start the engine worker thread: {e}");
        }
        CandlePolicy {
            tx,
            version,
            context_limit,
            name,
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

    /// Samples, also returning timing statistics.
    pub async fn sample_with_stats(
        &self,
        request: SampleRequest,
    ) -> Result<(Sample, GenStats), PolicyError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Sample(request, tx))?;
        rx.await
            .map_err(|_| PolicyError::Backend("the engine worker dropped the request".into()))?
            .map_err(to_policy_error)
    }

    /// Log-probability of each token given its prefix (raw model; first entry 0).
    pub async fn score(&self, tokens: Arc<Vec<u32>>) -> Result<Vec<f32>, PolicyError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Score(tokens, tx))?;
        rx.await
            .map_err(|_| PolicyError::Backend("the engine worker dropped the request".into()))?
            .map_err(to_policy_error)
    }

    /// Swaps in new weights (e.g. after a training step); bumps and returns the version.
    pub async fn reload(&self, engine: Engine) -> Result<u64, PolicyError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Reload(Box::new(engine), tx))?;
        rx.await
            .map_err(|_| PolicyError::Backend("the engine worker dropped the request".into()))
    }
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

fn worker(
    mut engine: Engine,
    rx: mpsc::Receiver<Job>,
    version: Arc<AtomicU64>,
    options: PolicyOptions,
) {
    // Idle caches, least recently used first.
    let mut idle: Vec<KvCache> = Vec::new();
    let mut pending: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(j) => pending.push_back(j),
                Err(_) => return,
            }
        }
        while let Ok(j) = rx.try_recv() {
            pending.push_back(j);
        }
        // Take a run of sample requests from the front (up to max_batch), else one job.
        let mut batch = Vec::new();
        while batch.len() < options.max_batch.max(1) {
            match pending.front() {
                Some(Job::Sample(..)) => {
                    if let Some(Job::Sample(r, tx)) = pending.pop_front() {
                        // A bad request fails alone, not the batch it would join.
                        match engine.check(&r) {
                            Ok(()) => batch.push((r, tx)),
                            Err(e) => {
                                let _ = tx.send(Err(e));
                            }
                        }
                    }
                }
                _ => break,
            }
        }
        if batch.is_empty() {
            if matches!(pending.front(), Some(Job::Sample(..))) {
                continue;
            }
            match pending.pop_front() {
                Some(Job::Score(tokens, tx)) => {
                    let _ = tx.send(engine.score(&tokens));
                }
                Some(Job::Reload(e, tx)) => {
                    engine = *e;
                    idle.clear();
                    let v = version.fetch_add(1, Ordering::SeqCst) + 1;
                    let _ = tx.send(v);
                }
                _ => {}
            }
            continue;
        }
        // Give each request the idle cache with the longest common prefix.
        let mut caches: Vec<KvCache> = Vec::with_capacity(batch.len());
        for (r, _) in &batch {
            let best = idle
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let common = c
                        .tokens()
                        .iter()
                        .zip(r.context.iter())
                        .take_while(|(a, b)| a == b)
                        .count();
                    (i, common)
                })
                .max_by_key(|&(i, common)| (common, i));
            match best {
                Some((i, common)) if common > 0 => caches.push(idle.remove(i)),
                _ => caches.push(engine.new_cache()),
            }
        }
        let v = version.load(Ordering::SeqCst);
        let result = {
            let mut jobs: Vec<(&mut KvCache, &SampleRequest)> = caches
                .iter_mut()
                .zip(batch.iter().map(|(r, _)| r))
                .collect();
            engine.generate_with(&mut jobs)
        };
        match result {
            Ok(samples) => {
                for ((mut s, stats), (_, tx)) in samples.into_iter().zip(batch) {
                    s.policy_versions = vec![v; s.tokens.len()];
                    let _ = tx.send(Ok((s, stats)));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let mut first = Some(e);
                for (_, tx) in batch {
                    let err = first
                        .take()
                        .unwrap_or_else(|| EngineError::Invalid(msg.clone()));
                    let _ = tx.send(Err(err));
                }
            }
        }
        idle.extend(caches);
        while idle.len() > options.max_cached {
            idle.remove(0);
        }
    }
}

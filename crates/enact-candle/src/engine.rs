//! The engine: a loaded model, its thread pool, generation and scoring.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enact_core::{Sample, SampleRequest, Tokenizer};

use crate::batch::Batch;
use crate::error::{EngineError, Result};
use crate::load::{ModelInfo, WeightFormat, WeightLayout, load_model};
use crate::model::{KvCache, Model, SeqInput};
use crate::sample::raw_logprob;

/// How to load and run a model.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Worker threads for the matrix kernels (0 = all cores). Set it explicitly when other
    /// work shares the machine: an oversubscribed pool collapses generation speed.
    pub threads: usize,
    pub weights: WeightFormat,
}

/// Where time went in a generation.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest came from the KV cache).
    pub prefilled_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

impl GenStats {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prefilled_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    /// Decode speed: tokens after the first over the time of the decode steps.
    pub fn decode_tok_s(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// A loaded model ready to generate.
pub struct Engine {
    model: Model,
    info: ModelInfo,
    pool: rayon::ThreadPool,
    threads: usize,
    weights: WeightFormat,
    tokenizer: Option<Arc<dyn Tokenizer>>,
    version: u64,
}

impl Engine {
    pub fn load(path: &Path, options: &EngineOptions) -> Result<Engine> {
        let threads = if options.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            options.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("enact-engine-{i}"))
            .build()
            .map_err(|e| EngineError::Invalid(format!("cannot start {threads} threads: {e}")))?;
        let started = Instant::now();
        let (model, info) = pool.install(|| load_model(path, options.weights))?;
        tracing::info!(
            path = %path.display(),
            arch = model.cfg.arch.name(),
            weights = ?model.weight_kinds(),
            ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(Engine {
            model,
            info,
            pool,
            threads,
            weights: options.weights,
            tokenizer: None,
            version: 0,
        })
    }

    /// Attaches a tokenizer, needed only for stop strings.
    pub fn with_tokenizer(mut self, tokenizer: Arc<dyn Tokenizer>) -> Engine {
        self.tokenizer = Some(tokenizer);
        self
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn threads(&self) -> usize {
        self.threads
    }
    pub fn weight_format(&self) -> WeightFormat {
        self.weights
    }
    pub fn context_limit(&self) -> usize {
        self.model.cfg.context
    }
    pub fn new_cache(&self) -> KvCache {
        self.model.new_cache()
    }

    /// Raw forward pass (in the engine's pool).
    pub fn forward(&self, seqs: &mut [SeqInput<'_>]) -> Vec<Vec<f32>> {
        self.pool.install(|| self.model.forward(seqs, self.threads))
    }

    /// Generates one continuation with a fresh cache.
    pub fn generate(&self, request: &SampleRequest) -> Result<Sample> {
        let mut cache = self.new_cache();
        let mut out = self.generate_with(&mut [(&mut cache, request)])?;
        out.pop()
            .map(|(s, _)| s)
            .ok_or_else(|| EngineError::Invalid("no result".into()))
    }

    /// Generates continuations of several requests together, each with a fresh cache.
    pub fn generate_batch(&self, requests: &[SampleRequest]) -> Result<Vec<Sample>> {
        let mut caches: Vec<KvCache> = requests.iter().map(|_| self.new_cache()).collect();
        let mut jobs: Vec<(&mut KvCache, &SampleRequest)> =
            caches.iter_mut().zip(requests.iter()).collect();
        Ok(self
            .generate_with(&mut jobs)?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    /// Generates continuations of several requests together, each in its own cache (all
    /// prompts prefilled in one pass, then decoded in one [`Batch`]).
    /// A cache whose tokens are a prefix of the request's context is reused (only the new
    /// suffix is computed); a cache that diverges is cut back to the common prefix.
    /// Afterwards each cache holds the context plus all sampled tokens but the last.
    pub fn generate_with(
        &self,
        jobs: &mut [(&mut KvCache, &SampleRequest)],
    ) -> Result<Vec<(Sample, GenStats)>> {
        for (_, r) in jobs.iter() {
            self.check(r)?;
        }
        let mut batch = Batch::new(usize::MAX);
        let mut ids = Vec::with_capacity(jobs.len());
        for (cache, r) in jobs.iter_mut() {
            ids.push(batch.add(self, (*r).clone(), std::mem::take(*cache))?);
        }
        let mut done = Vec::with_capacity(jobs.len());
        while !batch.is_empty() {
            done.extend(batch.step(self));
        }
        done.sort_by_key(|f| f.id);
        let mut out = Vec::with_capacity(jobs.len());
        for ((cache, _), f) in jobs.iter_mut().zip(done) {
            **cache = f.cache;
            out.push((f.sample, f.stats));
        }
        Ok(out)
    }

    /// The weight version: 0 at load, bumped by each [`Engine::publish`].
    pub fn version(&self) -> u64 {
        self.version
    }

    /// What weights must match to be published to this engine.
    pub fn weight_layout(&self) -> WeightLayout {
        WeightLayout {
            cfg: self.model.cfg.clone(),
            format: self.weights,
            tied_embeddings: self.model.tied_embeddings(),
        }
    }

    /// Replaces the weights in place (same architecture and shapes) and bumps the version;
    /// KV caches computed under the old weights stay usable as far as shapes go (whether to
    /// keep them is the caller's choice). Returns the new version.
    pub fn publish(&mut self, model: Model) -> Result<u64> {
        let next = self.version + 1;
        self.publish_as(model, next)
    }

    /// [`Engine::publish`] under a version chosen by the caller (a trainer numbering
    /// versions by its optimizer steps, also across a resume); it must be newer than the
    /// running one, since tokens are stamped with versions and staleness is their difference.
    pub fn publish_as(&mut self, model: Model, version: u64) -> Result<u64> {
        if version <= self.version {
            return Err(EngineError::Invalid(format!(
                "cannot publish weights as version {version}: the engine already runs version {}; versions only go up",
                self.version
            )));
        }
        if model.cfg != self.model.cfg {
            return Err(EngineError::Invalid(format!(
                "the published weights are for {:?}, but the engine runs {:?}; publish weights \
                 of the same architecture and shapes, or load a new engine",
                model.cfg, self.model.cfg
            )));
        }
        self.model = model;
        self.version = version;
        Ok(self.version)
    }

    /// Replaces the whole engine (possibly another model), keeping the version count going:
    /// the new engine's version is this one's plus one.
    pub fn replace(&mut self, other: Engine) -> u64 {
        let version = self.version + 1;
        *self = other;
        self.version = version;
        version
    }

    /// Checks that a request can run: a non-empty context within the model's limit, of ids
    /// inside the vocabulary.
    pub fn check(&self, r: &SampleRequest) -> Result<()> {
        let limit = self.context_limit();
        if r.context.is_empty() {
            return Err(EngineError::Invalid(
                "the context is empty; give at least one token".into(),
            ));
        }
        if r.context.len() > limit {
            return Err(EngineError::ContextTooLong {
                context: r.context.len(),
                limit,
            });
        }
        if let Some(&bad) = r
            .context
            .iter()
            .find(|&&t| t as usize >= self.model.cfg.vocab)
        {
            return Err(EngineError::Invalid(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.model.cfg.vocab
            )));
        }
        Ok(())
    }

    /// Checks stop strings on the decoded output; `seen` is how much text was checked.
    pub(crate) fn stop_string(
        &self,
        r: &SampleRequest,
        tokens: &[u32],
        seen: &mut usize,
    ) -> Option<String> {
        if r.stop_strings.is_empty() {
            return None;
        }
        let tok = self.tokenizer.as_ref()?;
        let text = tok.decode(tokens).ok()?;
        let longest = r.stop_strings.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut from = seen.saturating_sub(longest);
        while from > 0 && !text.is_char_boundary(from) {
            from -= 1;
        }
        *seen = text.len();
        let window = text.get(from..)?;
        r.stop_strings
            .iter()
            .find(|s| !s.is_empty() && window.contains(s.as_str()))
            .cloned()
    }

    /// The log-probability of each token given the tokens before it (raw model, temperature
    /// 1). The first token has no prefix: its entry is 0.
    pub fn score(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() > self.context_limit() {
            return Err(EngineError::ContextTooLong {
                context: tokens.len(),
                limit: self.context_limit(),
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.model.cfg.vocab) {
            return Err(EngineError::Invalid(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.model.cfg.vocab
            )));
        }
        let mut out = vec![0f32; tokens.len()];
        if tokens.len() < 2 {
            return Ok(out);
        }
        let mut cache = self.new_cache();
        let v = self.model.cfg.vocab;
        const CHUNK: usize = 256;
        let last = tokens.len() - 1; // positions 0..last give logits for 1..=last
        let mut pos = 0;
        while pos < last {
            let end = (pos + CHUNK).min(last);
            let chunk = &tokens[pos..end];
            let logits = {
                let mut inp = [SeqInput {
                    cache: &mut cache,
                    tokens: chunk,
                    all_logits: true,
                }];
                self.forward(&mut inp).pop().unwrap_or_default()
            };
            for (i, l) in logits.chunks_exact(v).enumerate() {
                out[pos + i + 1] = raw_logprob(l, tokens[pos + i + 1]);
            }
            pos = end;
        }
        Ok(out)
    }
}

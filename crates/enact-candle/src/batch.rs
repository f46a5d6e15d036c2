//! Continuous batching: sequences join and leave a running batch at any decode step.
//!
//! Each [`Batch::step`] runs one forward pass over every running sequence: one token for each
//! sequence that is decoding, and a chunk of prompt for sequences still prefilling (at most
//! `prefill_chunk` prompt tokens per step in all, oldest first), so a newcomer's prompt never
//! stalls the others for more than one chunk. Every sequence whose cache then covers its whole
//! context samples one token, stamped with the engine's weight version at that moment.
//! Finished sequences leave the batch with their KV cache.
//!
//! A token's logits do not depend on which other sequences share the pass or on how a prompt
//! is chunked (see `model`), so a sequence generates the same tokens, with the same seed, alone
//! or in any batch.

use std::time::Instant;

use enact_core::{FinishReason, Sample, SampleRequest};

use crate::engine::{Engine, GenStats};
use crate::error::Result;
use crate::model::{KvCache, SeqInput};
use crate::sample::{Rng, sample};

/// Identifies a sequence in a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// A sequence that left the batch.
#[derive(Debug)]
pub struct Finished {
    pub id: SeqId,
    pub sample: Sample,
    pub stats: GenStats,
    /// Holds the context plus every sampled token but the last.
    pub cache: KvCache,
}

struct Running {
    id: SeqId,
    request: SampleRequest,
    cache: KvCache,
    rng: Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    versions: Vec<u64>,
    /// Most tokens it may sample (`max_tokens`, within the context limit).
    budget: usize,
    stats: GenStats,
    text_len: usize,
    finish: Option<FinishReason>,
}

impl Running {
    /// Tokens the cache must hold before the next sample: the context and all sampled ones.
    fn target_len(&self) -> usize {
        self.request.context.len() + self.tokens.len()
    }
    fn token_at(&self, i: usize) -> u32 {
        let ctx = &self.request.context;
        match ctx.get(i) {
            Some(&t) => t,
            None => self.tokens.get(i - ctx.len()).copied().unwrap_or(0),
        }
    }
    fn into_finished(self) -> Finished {
        let mut stats = self.stats;
        stats.generated_tokens = self.tokens.len();
        Finished {
            id: self.id,
            sample: Sample {
                tokens: self.tokens,
                logprobs: self.logprobs,
                policy_versions: self.versions,
                finish: self.finish.unwrap_or(FinishReason::Length),
            },
            stats,
            cache: self.cache,
        }
    }
}

/// A set of sequences generating together; see the module docs.
pub struct Batch {
    seqs: Vec<Running>,
    next_id: u64,
    prefill_chunk: usize,
    steps: u64,
}

impl Batch {
    /// `prefill_chunk`: most prompt tokens computed per step (at least 1).
    pub fn new(prefill_chunk: usize) -> Batch {
        Batch {
            seqs: Vec::new(),
            next_id: 0,
            prefill_chunk: prefill_chunk.max(1),
            steps: 0,
        }
    }

    /// Adds a sequence. The cache may hold an earlier context: it is cut back to the longest
    /// prefix it shares with this request's context (keeping at least one token to compute),
    /// so only the rest is prefilled.
    pub fn add(
        &mut self,
        engine: &Engine,
        request: SampleRequest,
        mut cache: KvCache,
    ) -> Result<SeqId> {
        engine.check(&request)?;
        let ctx = &request.context;
        let common = cache
            .tokens()
            .iter()
            .zip(ctx.iter())
            .take_while(|(a, b)| a == b)
            .count()
            .min(ctx.len() - 1);
        cache.truncate(common);
        let room = engine.context_limit().saturating_sub(ctx.len());
        let id = SeqId(self.next_id);
        self.next_id += 1;
        let seed = request.params.seed;
        self.seqs.push(Running {
            id,
            budget: request.max_tokens.min(room),
            stats: GenStats {
                prompt_tokens: ctx.len(),
                prefilled_tokens: ctx.len() - common,
                ..Default::default()
            },
            request,
            cache,
            rng: seed.map(Rng::new).unwrap_or_else(Rng::from_entropy),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            versions: Vec::new(),
            text_len: 0,
            finish: None,
        });
        Ok(id)
    }

    /// Sequences in the batch.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
    pub fn ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.iter().map(|s| s.id)
    }
    /// Forward passes run so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Takes a sequence out (its requester went away); returns its cache, which stays valid
    /// for prefix reuse.
    pub fn remove(&mut self, id: SeqId) -> Option<KvCache> {
        let at = self.seqs.iter().position(|s| s.id == id)?;
        Some(self.seqs.remove(at).cache)
    }

    /// Drops every running sequence's cache so that its context and sampled tokens are
    /// recomputed (chunk by chunk) under the engine's current weights.
    pub fn recompute(&mut self, engine: &Engine) {
        for s in &mut self.seqs {
            s.stats.prefilled_tokens += s.cache.len();
            s.cache = engine.new_cache();
        }
    }

    /// One forward pass, then one sampled token for every sequence whose cache covers its
    /// context; returns the sequences that finished.
    pub fn step(&mut self, engine: &Engine) -> Vec<Finished> {
        let mut finished = self.take_finished();
        if self.seqs.is_empty() {
            return finished;
        }
        self.steps += 1;
        // What each sequence computes: decoders one token, prefills a share of the budget.
        let mut budget = self.prefill_chunk;
        let feeds: Vec<Vec<u32>> = self
            .seqs
            .iter()
            .map(|s| {
                let (from, to) = (s.cache.len(), s.target_len());
                let n = if to - from <= 1 {
                    to - from
                } else {
                    let n = (to - from).min(budget);
                    budget -= n;
                    n
                };
                (from..from + n).map(|i| s.token_at(i)).collect()
            })
            .collect();
        let started = Instant::now();
        let logits = {
            let mut inputs: Vec<SeqInput<'_>> = self
                .seqs
                .iter_mut()
                .zip(&feeds)
                .filter(|(_, f)| !f.is_empty())
                .map(|(s, f)| SeqInput {
                    cache: &mut s.cache,
                    tokens: f,
                    all_logits: false,
                })
                .collect();
            engine.forward(&mut inputs)
        };
        let took = started.elapsed();
        let version = engine.version();
        let fed = self
            .seqs
            .iter_mut()
            .zip(&feeds)
            .filter(|(_, f)| !f.is_empty());
        for ((s, _), l) in fed.zip(logits) {
            if s.tokens.is_empty() {
                s.stats.prefill_time += took;
            } else {
                s.stats.decode_time += took;
            }
            if s.cache.len() < s.target_len() {
                continue; // still prefilling
            }
            let (tok, logprob) = sample(&l, &s.request.params, &mut s.rng);
            s.tokens.push(tok);
            s.logprobs.push(logprob);
            s.versions.push(version);
            if let Some(sink) = &s.request.on_token {
                sink.emit(tok);
            }
            if s.request.stop_tokens.contains(&tok) {
                s.finish = Some(FinishReason::StopToken(tok));
            } else if let Some(stop) = engine.stop_string(&s.request, &s.tokens, &mut s.text_len) {
                s.finish = Some(FinishReason::StopString(stop));
            }
        }
        finished.extend(self.take_finished());
        finished
    }

    /// Removes the sequences that stopped or reached their token budget.
    fn take_finished(&mut self) -> Vec<Finished> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.seqs.len() {
            let s = &self.seqs[i];
            if s.finish.is_some() || s.tokens.len() >= s.budget {
                out.push(self.seqs.remove(i).into_finished());
            } else {
                i += 1;
            }
        }
        out
    }
}

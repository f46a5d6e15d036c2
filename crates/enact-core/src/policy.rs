//! The policy seam: a model at token level.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Sampling parameters. `temperature == 0` means greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 0 disables min-p.
    pub min_p: f32,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_p: 0.95,
            top_k: 0,
            min_p: 0.0,
            seed: None,
        }
    }
}

/// One generation request: continue `context` by up to `max_tokens` tokens.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    /// The exact context tokens (shared: contexts grow by appending).
    pub context: Arc<Vec<u32>>,
    pub max_tokens: usize,
    /// Generation stops after emitting any of these ids (the id is included in the output).
    pub stop_tokens: Vec<u32>,
    /// Generation stops once the decoded output contains any of these strings (the tokens
    /// that completed the string are included).
    pub stop_strings: Vec<String>,
    pub params: SamplingParams,
    /// Receives each sampled id as soon as it exists (live output, watchdogs). Backends that
    /// only learn the ids at the end call it for each id then; `None` costs nothing.
    pub on_token: Option<TokenSink>,
}

/// A callback for sampled ids as they are produced (see [`SampleRequest::on_token`]).
#[derive(Clone)]
pub struct TokenSink(pub Arc<dyn Fn(u32) + Send + Sync>);

impl TokenSink {
    pub fn new(f: impl Fn(u32) + Send + Sync + 'static) -> Self {
        TokenSink(Arc::new(f))
    }
    /// Calls the sink with one id.
    pub fn emit(&self, id: u32) {
        (self.0)(id)
    }
}

impl std::fmt::Debug for TokenSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSink")
    }
}

/// Why a generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was emitted (it is the last output token).
    StopToken(u32),
    /// A stop string appeared.
    StopString(String),
    /// `max_tokens` was reached.
    Length,
}

/// A generation: exact ids with the sampling logprob of each and the policy version that
/// sampled it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub policy_versions: Vec<u64>,
    pub finish: FinishReason,
}

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("the context of {context} tokens exceeds the model's limit of {limit}")]
    ContextTooLong { context: usize, limit: usize },
    #[error("the policy has nothing more to say (scripted policy exhausted after {0} turns)")]
    Exhausted(usize),
    #[error("model backend error: {0}")]
    Backend(String),
    #[error("model backend timed out after {0:?}")]
    Timeout(std::time::Duration),
}

/// A model at token level.
#[async_trait]
pub trait Policy: Send + Sync {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError>;
    /// The current policy version (bumped on each weight update).
    fn version(&self) -> u64 {
        0
    }
    /// The longest context the model accepts.
    fn context_limit(&self) -> usize {
        usize::MAX
    }
    /// Whether sampled ids are exact (false for text-only HTTP backends).
    fn token_exact(&self) -> bool {
        true
    }
}

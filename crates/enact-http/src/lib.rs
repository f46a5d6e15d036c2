//! HTTP policy backend for OpenAI-compatible model servers.
//!
//! [`HttpPolicy`] implements [`enact_core::Policy`] over a server's HTTP API. With vLLM,
//! SGLang and llama.cpp it is *token-exact*: the context goes out as token ids and the
//! sampled ids and their logprobs come back, so trajectories can be trained on. With Ollama
//! and generic OpenAI-compatible servers it is *text-level*: the context is decoded to text,
//! the reply re-encoded, and [`enact_core::Policy::token_exact`] is false, so the agent marks
//! the trajectory as not trainable.
//!
//! Requests are retried with exponential backoff and jitter on connection failures,
//! timeouts, HTTP 429 (honouring `Retry-After`) and 5xx; other 4xx answers, malformed JSON
//! and responses that do not fit the dialect are reported as [`enact_core::PolicyError`]s.
//! A semaphore per server bounds the requests in flight. Several servers of one model can
//! stand behind one policy (least outstanding requests, sticky by context prefix, dead
//! servers taken out and retried later), and [`WeightPublisher`] publishes new weights to
//! them (LoRA adapters, full checkpoints). Nothing a server sends can panic.
//!
//! See `docs/http-backends.md` for server setup and the exact request fields.

mod config;
mod dialect;
mod endpoints;
mod policy;
mod publish;
pub mod transport;

use std::sync::Arc;

pub use config::{Dialect, HttpConfig, HttpError};
pub use policy::HttpPolicy;
pub use publish::{PublishError, WeightPublisher};

/// Builds a policy from a `--model` spec (`URL[,URL...][#DIALECT[:MODEL]]` with
/// `URL = http[s]://HOST:PORT[/v1]`), with
/// the API key from `ENACT_API_KEY` or `OPENAI_API_KEY` when set.
pub fn build_policy(
    spec: &str,
    tokenizer: Arc<dyn enact_core::Tokenizer>,
) -> Result<HttpPolicy, HttpError> {
    let config = HttpConfig::from_spec(spec)?.with_api_key_from_env();
    HttpPolicy::new(config, tokenizer)
}

/// Whether a `--model` value names an HTTP server.
pub fn is_http_spec(spec: &str) -> bool {
    let s = spec.trim_start().to_ascii_lowercase();
    s.starts_with("http://") || s.starts_with("https://")
}

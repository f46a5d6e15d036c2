//! The embedded inference engine of enact.
//!
//! Runs llama-family, Qwen2 and Qwen3 models from GGUF (quantized) or safetensors on the
//! CPU, built on candle's file readers with its own matrix kernels (AVX2 when available):
//! - exact token ids and the per-token log-probability of each sampled token under the
//!   distribution it was sampled from;
//! - [`Engine::score`]: the log-probability of every token of a sequence given its prefix,
//!   bit-identical to the logprobs recorded while sampling the same tokens greedily or at
//!   temperature 1 without truncation;
//! - a KV cache per sequence, reused across turns when the new context extends the old one;
//! - continuous batching ([`Batch`]): sequences join and leave a running batch at any decode
//!   step, with chunked prefill; [`CandlePolicy`]'s worker runs one for concurrent requests;
//! - per-token policy versions and in-process weight publishing
//!   ([`CandlePolicy::publish_weights`]) that running sequences continue under;
//! - temperature, top-p, top-k, min-p and seeds; an explicit thread count.
//!
//! [`fetch`] installs the default model (SmolLM2-135M-Instruct) with checksum verification.

pub mod batch;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod load;
pub mod model;
pub mod policy;
pub mod quant;
pub mod sample;

pub use batch::{Batch, Finished, SeqId};
pub use engine::{Engine, EngineOptions, GenStats};
pub use error::{EngineError, SUPPORTED_ARCHITECTURES};
pub use load::{ModelInfo, WeightFormat, WeightLayout, inspect, load_model, model_from_tensors};
pub use model::{Arch, KvCache, ModelConfig, RopeStyle, SeqInput};
pub use policy::{CandlePolicy, KvOnPublish, PolicyOptions};
pub use quant::{Kernel, WeightKind};

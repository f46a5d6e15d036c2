//! Training for enact: the foundation of the closed loop (`docs/training.md`).
//!
//! - [`TwinModel`]: a differentiable twin of the embedded model (llama / Qwen2 / Qwen3) on
//!   candle's autograd whose logprobs equal `enact_candle::Engine::score`;
//! - LoRA ([`Adapters`], PEFT-compatible files) or full fine-tuning, [`AdamW`], gradient
//!   clipping and accumulation;
//! - losses on token-level trajectories ([`loss`]): SFT, GRPO advantages, decoupled
//!   PPO-clip, k3 KL;
//! - [`Trainer`]: one `step` per batch of [`TrainSample`]s, returning [`StepMetrics`];
//!   checkpoints that resume exactly.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod error;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod trainer;
pub mod twin;

pub use batch::{TrainSample, TrainSequence};
pub use error::{Result, TrainError};
pub use lora::{Adapters, LoraConfig, Proj};
pub use loss::{Aggregation, PpoConfig, grpo_advantages};
pub use optim::{AdamW, AdamWConfig};
pub use trainer::{Objective, StepMetrics, TrainConfig, Trainable, Trainer};
pub use twin::{Packed, TwinModel};

//! Shared by `enact bench train` and the `train_speed` example: a random model built in
//! memory, synthetic batches, and a timed run of training steps.

use std::time::Instant;

use enact_candle::model::{Layer, Model};
use enact_candle::quant::Matrix;
use enact_candle::{Arch, ModelConfig, RopeStyle};

use crate::batch::{TrainSample, TrainSequence};
use crate::error::{Result, TrainError};
use crate::lora::{LoraConfig, Proj};
use crate::trainer::{Objective, TrainConfig, Trainable, Trainer};

/// The tiny model the full-training benchmark uses: Qwen2-shaped (q/k/v biases, tied head),
/// 4 blocks of width 256, vocabulary 2048 (about 4M parameters).
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Qwen2,
        n_layers: 4,
        d_model: 256,
        ffn: 768,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        vocab: 2048,
        context: 1024,
        rope_base: 10_000.0,
        rms_eps: 1e-6,
        rope: RopeStyle::Half,
    }
}

/// Full training with SFT: the tiny model's workload.
pub fn full_sft_config() -> TrainConfig {
    TrainConfig {
        trainable: Trainable::Full,
        objective: Objective::Sft,
        ..TrainConfig::default()
    }
}

/// LoRA r = 8, alpha 16 on all seven projections, SFT: the real model's workload.
pub fn lora_sft_config() -> TrainConfig {
    TrainConfig {
        trainable: Trainable::Lora(LoraConfig {
            r: 8,
            alpha: 16.0,
            targets: Proj::ALL.to_vec(),
            seed: 0,
        }),
        objective: Objective::Sft,
        ..TrainConfig::default()
    }
}

/// A model of `cfg` with uniform random weights (scale 1/√fan-in), zero biases, unit norms
/// and a tied head.
pub fn random_model(cfg: &ModelConfig, seed: u64) -> Result<Model> {
    let mut state = seed ^ 0x2545_F491_4F6C_DD1D;
    let mut mat = |rows: usize, cols: usize| {
        let scale = 1.0 / (cols as f32).sqrt();
        let data = (0..rows * cols)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Matrix::from_f32(rows, cols, data)
    };
    let (d, qd, kvd, f) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.ffn);
    let bias = matches!(cfg.arch, Arch::Qwen2).then(|| vec![0.0; qd + 2 * kvd]);
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for _ in 0..cfg.n_layers {
        layers.push(
            Layer::new(
                cfg,
                vec![1.0; d],
                [mat(qd, d), mat(kvd, d), mat(kvd, d)],
                bias.clone(),
                None,
                None,
                mat(d, qd),
                vec![1.0; d],
                mat(f, d),
                mat(f, d),
                mat(d, f),
            )
            .map_err(TrainError::Invalid)?,
        );
    }
    let embed = mat(cfg.vocab, d);
    Model::new(cfg.clone(), embed, layers, vec![1.0; d], None).map_err(TrainError::Invalid)
}

/// `n` sequences of `prompt` prompt tokens then `sampled` loss tokens, ids spread over the
/// vocabulary.
pub fn synthetic_batch(vocab: usize, n: usize, prompt: usize, sampled: usize) -> Vec<TrainSample> {
    (0..n)
        .map(|k| {
            let tokens: Vec<u32> = (0..prompt + sampled)
                .map(|i| ((i * 31 + k * 17 + i * i) % vocab.max(1)) as u32)
                .collect();
            let loss_mask = (0..tokens.len()).map(|i| i >= prompt).collect();
            let seq = TrainSequence {
                behaviour_logprobs: vec![-1.0; tokens.len()],
                policy_versions: vec![None; tokens.len()],
                loss_mask,
                tokens,
            };
            TrainSample::new(seq, 1.0)
        })
        .collect()
}

/// CPU seconds this process has used (all threads; Linux `/proc/self/stat`, 100 ticks per
/// second). On a shared machine tokens per CPU-second does not depend on what else runs.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// What [`time_steps`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Tokens (all, not only loss tokens) per wall-clock second, median over the steps.
    pub tokens_per_s: f64,
    /// Tokens per CPU-second over all timed steps (when /proc is readable).
    pub tokens_per_cpu_s: Option<f64>,
    pub last_loss: f64,
}

/// One warm-up step, then `steps` timed steps on `batch`.
pub fn time_steps(
    trainer: &mut Trainer,
    batch: &[TrainSample],
    steps: usize,
) -> Result<Throughput> {
    trainer.step(batch)?;
    let tokens: usize = batch.iter().map(|s| s.sequence.tokens.len()).sum();
    let cpu0 = cpu_seconds();
    let mut rates = Vec::with_capacity(steps.max(1));
    let mut last_loss = f64::NAN;
    for _ in 0..steps.max(1) {
        let started = Instant::now();
        last_loss = trainer.step(batch)?.loss;
        rates.push(tokens as f64 / started.elapsed().as_secs_f64().max(1e-9));
    }
    rates.sort_by(f64::total_cmp);
    let tokens_per_cpu_s = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => Some((tokens * rates.len()) as f64 / (b - a)),
        _ => None,
    };
    Ok(Throughput {
        tokens_per_s: rates[rates.len() / 2],
        tokens_per_cpu_s,
        last_loss,
    })
}

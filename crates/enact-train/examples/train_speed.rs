//! Training throughput: LoRA on a real model file (if given) and full training on a tiny
//! random model, with the inference engine's scoring speed on the same tokens as the
//! baseline.
//!
//! `cargo run -p enact-train --example train_speed -- [MODEL.gguf] [STEPS]`

use std::path::PathBuf;
use std::time::Instant;

use candle_core::DType;
use enact_candle::model::{Layer, Model};
use enact_candle::quant::Matrix;
use enact_candle::{Arch, Engine, EngineOptions, ModelConfig, RopeStyle, WeightFormat};
use enact_train::{
    LoraConfig, Objective, Proj, TrainConfig, TrainSample, TrainSequence, Trainable, Trainer,
    TwinModel,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// `n` sequences of `prompt` prompt tokens and `sampled` loss tokens.
fn batch(vocab: usize, n: usize, prompt: usize, sampled: usize) -> Vec<TrainSample> {
    (0..n)
        .map(|k| {
            let tokens: Vec<u32> = (0..prompt + sampled)
                .map(|i| ((i * 31 + k * 17 + i * i) % vocab) as u32)
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

/// CPU seconds used by this process so far (all threads; Linux `/proc/self/stat`, assuming
/// the usual 100 clock ticks per second). On a shared machine tokens per CPU-second is the
/// number that does not depend on what else runs.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Steps per second after one warm-up step; prints tokens/s.
fn measure(label: &str, trainer: &mut Trainer, b: &[TrainSample], steps: usize) -> Res<f64> {
    trainer.step(b)?;
    let tokens: usize = b.iter().map(|s| s.sequence.tokens.len()).sum();
    let loss_tokens: usize = b.iter().map(|s| s.sequence.loss_tokens()).sum();
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let mut last = None;
    for _ in 0..steps {
        last = Some(trainer.step(b)?);
    }
    let secs = started.elapsed().as_secs_f64();
    let tok_s = (tokens * steps) as f64 / secs;
    if let (Some(a), Some(b)) = (cpu0, cpu_seconds()) {
        println!(
            "{label}: {:.1} CPU-seconds: {:.0} tok per CPU-second",
            b - a,
            (tokens * steps) as f64 / (b - a).max(1e-9)
        );
    }
    println!(
        "{label}: {steps} steps of {} sequences × {} tokens ({loss_tokens} with loss) in {secs:.2} s: \
         {tok_s:.0} tok/s ({:.0} loss tok/s), last loss {:.4}",
        b.len(),
        tokens / b.len().max(1),
        (loss_tokens * steps) as f64 / secs,
        last.map(|m| m.loss).unwrap_or(f64::NAN)
    );
    Ok(tok_s)
}

/// A random model (about 4M parameters) built in memory.
fn tiny_model() -> Res<Model> {
    let cfg = ModelConfig {
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
    };
    let mut state = 0x2545_F491_4F6C_DD1Du64;
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
    let mut layers = Vec::new();
    for _ in 0..cfg.n_layers {
        layers.push(Layer::new(
            &cfg,
            vec![1.0; d],
            [mat(qd, d), mat(kvd, d), mat(kvd, d)],
            Some(vec![0.0; qd + 2 * kvd]),
            None,
            None,
            mat(d, qd),
            vec![1.0; d],
            mat(f, d),
            mat(f, d),
            mat(d, f),
        )?);
    }
    let embed = mat(cfg.vocab, d);
    Ok(Model::new(cfg, embed, layers, vec![1.0; d], None)?)
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let model_path = args.next().map(PathBuf::from);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);

    let tiny = TwinModel::from_engine_model(&tiny_model()?, DType::F32)?;
    let b = batch(tiny.cfg.vocab, 4, 64, 192);
    let cfg = TrainConfig {
        trainable: Trainable::Full,
        objective: Objective::Sft,
        micro_batch_tokens: 512,
        ..TrainConfig::default()
    };
    let mut tr = Trainer::new(tiny, cfg, "tiny")?;
    measure("tiny (~4M params) full training", &mut tr, &b, steps)?;

    let Some(path) = model_path else {
        println!("pass a model file (e.g. SmolLM2-135M-Instruct.Q4_1.gguf) to measure LoRA");
        return Ok(());
    };
    let started = Instant::now();
    let twin = TwinModel::load(&path, DType::F32)?;
    println!(
        "loaded {} (dequantized to f32) in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    let b = batch(twin.cfg.vocab, 4, 64, 192);
    let lora = LoraConfig {
        r: 8,
        alpha: 16.0,
        targets: Proj::ALL.to_vec(),
        seed: 0,
    };
    let cfg = TrainConfig {
        trainable: Trainable::Lora(lora),
        objective: Objective::Sft,
        micro_batch_tokens: 512,
        ..TrainConfig::default()
    };
    let mut tr = Trainer::new(twin, cfg, path.display().to_string())?;
    let train = measure("LoRA r=8 on q,k,v,o,gate,up,down", &mut tr, &b, steps)?;

    // Baseline: the inference engine scoring the same sequences (forward only, f32 weights).
    let engine = Engine::load(
        &path,
        &EngineOptions {
            threads: 0,
            weights: WeightFormat::F32,
        },
    )?;
    let started = Instant::now();
    let mut tokens = 0;
    for s in &b {
        engine.score(&s.sequence.tokens)?;
        tokens += s.sequence.tokens.len();
    }
    let score = tokens as f64 / started.elapsed().as_secs_f64();
    println!(
        "baseline: engine score (forward only, f32) {score:.0} tok/s; training / scoring = {:.2}",
        train / score
    );
    Ok(())
}

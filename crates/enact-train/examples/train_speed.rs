//! Training throughput with the inference engine's scoring of the same tokens as the baseline
//! (forward only, f32 weights): full training on a tiny random model, and LoRA on a model
//! file if one is given. `enact bench train` compares against PyTorch instead.
//!
//! `cargo run -p enact-train --example train_speed -- [MODEL.gguf] [STEPS]`

use std::path::PathBuf;
use std::time::Instant;

use candle_core::DType;
use enact_candle::{Engine, EngineOptions, WeightFormat};
use enact_train::bench::{
    full_sft_config, lora_sft_config, random_model, synthetic_batch, time_steps, tiny_config,
};
use enact_train::{TrainSample, Trainer, TwinModel};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn report(label: &str, trainer: &mut Trainer, b: &[TrainSample], steps: usize) -> Res<f64> {
    let t = time_steps(trainer, b, steps)?;
    println!(
        "{label}: {:.0} tok/s (median of {steps} steps), {} tok per CPU-second, last loss {:.4}",
        t.tokens_per_s,
        t.tokens_per_cpu_s
            .map(|c| format!("{c:.0}"))
            .unwrap_or_else(|| "-".into()),
        t.last_loss
    );
    Ok(t.tokens_per_s)
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let model_path = args.next().map(PathBuf::from);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);

    let tiny = TwinModel::from_engine_model(&random_model(&tiny_config(), 1)?, DType::F32)?;
    let b = synthetic_batch(tiny.cfg.vocab, 4, 64, 192);
    let mut tr = Trainer::new(tiny, full_sft_config(), "tiny")?;
    report("tiny (~4M params) full training", &mut tr, &b, steps)?;

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
    let b = synthetic_batch(twin.cfg.vocab, 4, 64, 192);
    let mut tr = Trainer::new(twin, lora_sft_config(), path.display().to_string())?;
    let train = report("LoRA r=8 on q,k,v,o,gate,up,down", &mut tr, &b, steps)?;

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

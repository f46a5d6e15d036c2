//! The differentiable twin agrees with the inference engine, and its gradients with finite
//! differences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};
use enact_candle::{Engine, EngineOptions, WeightFormat};
use enact_train::loss::PpoConfig;
use enact_train::{
    Aggregation, LoraConfig, Objective, Proj, TrainConfig, TrainSample, Trainable, Trainer,
};
use support::*;

/// Tolerance between the twin (candle f32 ops) and the engine (own f32 kernels): the same
/// arithmetic in a different summation order.
const PARITY_TOL: f32 = 1e-4;

fn engine(path: &std::path::Path) -> Engine {
    Engine::load(
        path,
        &EngineOptions {
            threads: 1,
            weights: WeightFormat::F32,
        },
    )
    .unwrap()
}

fn check_parity(path: &std::path::Path, what: &str) {
    let e = engine(path);
    let t = twin(path, DType::F32);
    for seed in 0..3 {
        let toks = tokens(23 + seed as usize * 11, seed);
        let want = e.score(&toks).unwrap();
        let got = t.score(&[&toks], false).unwrap().remove(0);
        let d = max_abs_diff(&want, &got);
        eprintln!("{what} seed {seed}: max |twin − engine| = {d:e}");
        assert!(d < PARITY_TOL, "{what}: twin and engine differ by {d}");
        assert_eq!(got[0], 0.0);
    }
}

#[test]
fn twin_logprobs_equal_engine_score_for_every_architecture_and_format() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        check_parity(&tiny_gguf(dir.path(), arch, 5), &format!("{arch} gguf"));
        let st = support::common::write_safetensors(
            &dir.path().join(format!("st-{arch}")),
            arch,
            false,
            5,
        );
        check_parity(&st, &format!("{arch} safetensors"));
    }
    // Quantized files are dequantized to f32 on both sides.
    let q = dir.path().join("q8.gguf");
    support::common::write_gguf(&q, "llama", GgmlDType::Q8_0, 9);
    check_parity(&q, "llama gguf q8_0");
}

#[test]
fn packed_forward_equals_separate_forwards() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let t = twin(&tiny_gguf(dir.path(), arch, 2), DType::F32);
        let (a, b, c) = (tokens(9, 1), tokens(17, 2), tokens(4, 3));
        let packed = t.score(&[&a, &b, &c], false).unwrap();
        for (seq, got) in [&a, &b, &c].iter().zip(&packed) {
            let alone = t.score(&[seq], false).unwrap().remove(0);
            assert!(max_abs_diff(&alone, got) < 1e-5, "{arch}");
        }
    }
}

/// Loss of the batch at the current weights.
fn loss_of(trainer: &Trainer, batch: &[TrainSample]) -> f64 {
    trainer.loss(batch).unwrap().loss
}

fn set_entry(var: &candle_core::Var, i: usize, value: f64) {
    let t = var.as_tensor();
    let mut v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    v[i] = value;
    var.set(&Tensor::from_vec(v, t.dims(), t.device()).unwrap())
        .unwrap();
}

fn entry(var: &candle_core::Var, i: usize) -> f64 {
    var.as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[i]
}

/// Central differences on a few entries of every trainable tensor.
fn finite_difference_check(trainer: &Trainer, batch: &[TrainSample], what: &str) {
    let (grads, _) = trainer.gradients(batch).unwrap();
    let h = 1e-5;
    let mut checked = 0;
    let mut worst = 0f64;
    for (nv, g) in trainer.vars().iter().zip(&grads) {
        let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let n = g.len();
        for i in [n / 3, n - 1] {
            let x = entry(&nv.var, i);
            set_entry(&nv.var, i, x + h);
            let up = loss_of(trainer, batch);
            set_entry(&nv.var, i, x - h);
            let down = loss_of(trainer, batch);
            set_entry(&nv.var, i, x);
            let fd = (up - down) / (2.0 * h);
            let err = (fd - g[i]).abs() / (1e-6 + fd.abs().max(g[i].abs()));
            worst = worst.max(err.min((fd - g[i]).abs() * 1e3));
            assert!(
                (fd - g[i]).abs() < 1e-6 || err < 1e-5,
                "{what}: {}[{i}]: analytic {} vs finite difference {fd}",
                nv.name,
                g[i]
            );
            checked += 1;
        }
    }
    eprintln!("{what}: {checked} entries checked, worst relative error {worst:e}");
    assert!(checked > 0);
}

fn sft_batch(model: &enact_train::TwinModel) -> Vec<TrainSample> {
    let (p, s1, s2) = (tokens(5, 1), tokens(6, 2), tokens(4, 3));
    let t = trajectory(&p, &[&s1, &s2], &tokens(3, 4), &tokens(2, 5));
    let seq = on_policy(model, enact_train::TrainSequence::main_line(&t).unwrap());
    let t2 = trajectory(&tokens(3, 7), &[&tokens(5, 8)], &[], &[]);
    let seq2 = on_policy(model, enact_train::TrainSequence::main_line(&t2).unwrap());
    vec![TrainSample::new(seq, 1.0), TrainSample::new(seq2, -0.5)]
}

#[test]
fn full_gradients_match_finite_differences_in_f64() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let model = twin(&tiny_gguf(dir.path(), arch, 3), DType::F64);
        let batch = sft_batch(&model);
        let cfg = TrainConfig {
            trainable: Trainable::Full,
            objective: Objective::Sft,
            aggregation: Aggregation::SequenceMean,
            micro_batch_tokens: 16, // two micro-batches: accumulation is checked too
            ..TrainConfig::default()
        };
        let trainer = Trainer::new(model, cfg, "tiny").unwrap();
        finite_difference_check(&trainer, &batch, &format!("{arch} full SFT"));
    }
}

#[test]
fn lora_ppo_kl_gradients_match_finite_differences_in_f64() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let model = twin(&tiny_gguf(dir.path(), arch, 4), DType::F64);
        let mut batch = sft_batch(&model);
        let cfg = TrainConfig {
            trainable: Trainable::Lora(LoraConfig {
                r: 2,
                alpha: 4.0,
                targets: Proj::ALL.to_vec(),
                seed: 1,
            }),
            objective: Objective::Ppo(PpoConfig {
                kl_coef: 0.1,
                ..PpoConfig::default()
            }),
            aggregation: Aggregation::TokenMean,
            ..TrainConfig::default()
        };
        let trainer = Trainer::new(model, cfg, "tiny").unwrap();
        // Non-zero B so that every adapter matrix has a gradient and the policy differs
        // from the reference (KL ≠ 0).
        for (k, nv) in trainer.vars().iter().enumerate() {
            if nv.name.ends_with("lora_B.weight") {
                let dims = nv.var.dims().to_vec();
                let n: usize = dims.iter().product();
                let v: Vec<f64> = (0..n)
                    .map(|i| (((i * 31 + k * 7) % 17) as f64 - 8.0) * 0.01)
                    .collect();
                nv.var
                    .set(&Tensor::from_vec(v, dims, &candle_core::Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        // Fixed proximal logprobs (the ratio must move under perturbation) and behaviour
        // logprobs a little off (importance weights ≠ 1, below the cap).
        for s in batch.iter_mut() {
            let prox = trainer.logprobs(&[&s.sequence.tokens]).unwrap().remove(0);
            for (t, b) in s.sequence.behaviour_logprobs.iter_mut().enumerate() {
                *b = prox[t] - 0.05 * (t % 3) as f32;
            }
            s.proximal_logprobs = Some(prox);
        }
        let (_, m) = trainer.gradients(&batch).unwrap();
        assert!(m.kl.unwrap() > 0.0);
        finite_difference_check(&trainer, &batch, &format!("{arch} LoRA PPO+KL"));
    }
}

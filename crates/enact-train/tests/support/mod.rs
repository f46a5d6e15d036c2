//! Shared by the enact-train tests: tiny random models (enact-candle's test writers) and
//! trajectories.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[allow(clippy::panic)]
#[path = "../../../enact-candle/tests/common/mod.rs"]
pub mod common;

use std::path::{Path, PathBuf};

use candle_core::DType;
use candle_core::quantized::GgmlDType;
use enact_core::{SegmentKind, Trajectory};
use enact_train::{TrainSequence, TwinModel};

pub const ARCHS: [&str; 3] = ["llama", "qwen2", "qwen3"];

/// A tiny GGUF model (F32 matrices) of `arch` in `dir`.
pub fn tiny_gguf(dir: &Path, arch: &str, seed: u64) -> PathBuf {
    let p = dir.join(format!("{arch}-{seed}.gguf"));
    common::write_gguf(&p, arch, GgmlDType::F32, seed);
    p
}

pub fn twin(path: &Path, dtype: DType) -> TwinModel {
    TwinModel::load(path, dtype).unwrap()
}

/// Deterministic token ids in the tiny vocabulary.
pub fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| {
            (i.wrapping_mul(7).wrapping_add(seed.wrapping_mul(13)) + i * i) % common::VOCAB as u32
        })
        .collect()
}

/// prompt → sampled (logprobs given) → optional observation → sampled → forced.
pub fn trajectory(
    prompt: &[u32],
    sampled: &[&[u32]],
    observation: &[u32],
    forced: &[u32],
) -> Trajectory {
    let mut t = Trajectory::new("t", "tiny");
    let mut at = t
        .push_tokens(None, SegmentKind::Prompt, prompt.to_vec(), 0, None)
        .unwrap();
    for (k, s) in sampled.iter().enumerate() {
        if k > 0 && !observation.is_empty() {
            at = t
                .push_tokens(
                    Some(at),
                    SegmentKind::Observation,
                    observation.to_vec(),
                    k as u32,
                    None,
                )
                .unwrap();
        }
        at = t
            .push_sampled(
                Some(at),
                s.to_vec(),
                vec![-1.0; s.len()],
                vec![3; s.len()],
                k as u32 + 1,
            )
            .unwrap();
    }
    if !forced.is_empty() {
        at = t
            .push_tokens(Some(at), SegmentKind::Forced, forced.to_vec(), 9, None)
            .unwrap();
    }
    t.set_branch("main", at).unwrap();
    t
}

/// A sequence whose recorded behaviour logprobs are the model's own (as a sampler at this
/// version would have recorded them).
pub fn on_policy(model: &TwinModel, mut seq: TrainSequence) -> TrainSequence {
    let lp = model.score(&[&seq.tokens], true).unwrap().remove(0);
    for (t, l) in lp.iter().enumerate() {
        if seq.loss_mask[t] {
            seq.behaviour_logprobs[t] = *l;
        }
    }
    seq
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

//! Losses on per-token logprobs: SFT, decoupled PPO-clip (GRPO's objective), k3 KL, and
//! how token losses aggregate into the batch loss.
//!
//! Every loss here is `Σ_t weight_t · loss_t` over the tokens of a micro-batch, where
//! `weight_t` (from [`token_weights`]) is 0 for tokens without loss and encodes the
//! aggregation over the whole batch; so summing micro-batch losses gives the batch loss.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// How token losses become the batch loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over each sequence's loss tokens, then mean over the sequences that have any
    /// (GRPO as published: long answers weigh less per token).
    SequenceMean,
    /// Sum over all loss tokens of the batch / their count (DAPO's token-level loss).
    TokenMean,
    /// Sum over all loss tokens / (sequences × the given constant length) (Dr. GRPO: no
    /// length bias either way).
    ConstantNorm(usize),
}

/// Per-token weights of a batch from the loss masks.
pub fn token_weights(masks: &[Vec<bool>], agg: Aggregation) -> Vec<Vec<f64>> {
    let counts: Vec<usize> = masks
        .iter()
        .map(|m| m.iter().filter(|&&b| b).count())
        .collect();
    let total: usize = counts.iter().sum();
    let with_loss = counts.iter().filter(|&&c| c > 0).count();
    masks
        .iter()
        .zip(&counts)
        .map(|(m, &c)| {
            let w = match agg {
                Aggregation::SequenceMean if c > 0 => 1.0 / (with_loss * c) as f64,
                Aggregation::SequenceMean => 0.0,
                Aggregation::TokenMean if total > 0 => 1.0 / total as f64,
                Aggregation::TokenMean => 0.0,
                Aggregation::ConstantNorm(l) => 1.0 / (masks.len() * l.max(1)) as f64,
            };
            m.iter().map(|&b| if b { w } else { 0.0 }).collect()
        })
        .collect()
}

pub use enact_core::advantage::grpo_advantages;

/// Decoupled PPO-clip settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoConfig {
    /// Ratio lower bound `1 − clip_low`.
    pub clip_low: f64,
    /// Ratio upper bound `1 + clip_high` (DAPO's clip-higher raises it).
    pub clip_high: f64,
    /// Cap of the importance weight `π_prox / π_behav` for stale tokens.
    pub importance_cap: f64,
    /// Coefficient of the k3 KL to the reference (0 = no reference pass).
    pub kl_coef: f64,
    /// Sampling temperature of the episodes: logits are divided by it before the softmax,
    /// so the policy's logprobs are those of the distribution the sampler drew from (its
    /// recorded behaviour logprobs are of the tempered distribution too).
    #[serde(default = "one")]
    pub temperature: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            clip_low: 0.2,
            clip_high: 0.2,
            importance_cap: 2.0,
            kl_coef: 0.0,
            temperature: 1.0,
        }
    }
}

/// What a PPO loss saw, for metrics (sums weighted by the token weights' support).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PpoStats {
    /// Loss tokens whose ratio was clipped.
    pub clipped: usize,
    /// Loss tokens whose importance weight hit the cap.
    pub capped: usize,
}

fn consts(v: &[f64], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, v.len(), &Device::Cpu)?.to_dtype(like.dtype())?)
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

fn check_len(lp: &Tensor, parts: &[&[f64]]) -> Result<usize> {
    let n = lp.dim(0)?;
    if parts.iter().any(|p| p.len() != n) {
        return Err(TrainError::Invalid(format!(
            "loss inputs disagree in length (logprobs {n}, others {:?})",
            parts.iter().map(|p| p.len()).collect::<Vec<_>>()
        )));
    }
    Ok(n)
}

/// Cross-entropy on loss tokens: `−Σ w_t logπ(t)`.
pub fn sft_loss(lp: &Tensor, weight: &[f64]) -> Result<Tensor> {
    check_len(lp, &[weight])?;
    Ok((lp * consts(weight, lp)?)?.sum_all()?.neg()?)
}

/// Decoupled PPO-clip: `−Σ w_t · min(cap, π_prox/π_behav) · min(ρ A, clip(ρ) A)` with
/// `ρ = π/π_prox`. Where the clipped branch is the minimum the token has no gradient.
pub fn ppo_loss(
    lp: &Tensor,
    prox: &[f64],
    behav: &[f64],
    advantage: &[f64],
    weight: &[f64],
    cfg: &PpoConfig,
) -> Result<(Tensor, PpoStats)> {
    let n = check_len(lp, &[prox, behav, advantage, weight])?;
    let now = values(lp)?;
    let (lo, hi) = (1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let mut grad_coef = vec![0f64; n];
    let mut constant = 0f64;
    let mut stats = PpoStats::default();
    for t in 0..n {
        if weight[t] == 0.0 {
            continue;
        }
        let ratio = (now[t] - prox[t]).exp();
        let raw_iw = (prox[t] - behav[t]).exp();
        let iw = raw_iw.min(cfg.importance_cap);
        stats.capped += usize::from(raw_iw > cfg.importance_cap);
        let a = advantage[t];
        let clipped = (a > 0.0 && ratio > hi) || (a < 0.0 && ratio < lo);
        if clipped {
            stats.clipped += 1;
            constant -= weight[t] * iw * ratio.clamp(lo, hi) * a;
        } else {
            grad_coef[t] = -weight[t] * iw * a;
        }
    }
    let ratio = (lp - consts(prox, lp)?)?.exp()?;
    let loss = ((ratio * consts(&grad_coef, lp)?)?.sum_all()? + constant)?;
    Ok((loss, stats))
}

/// k3 estimator of KL(π‖π_ref) per token: `exp(r − l) − (r − l) − 1`, weighted and summed.
/// Returns the loss (before the coefficient) and the plain mean over weighted tokens.
pub fn k3_loss(lp: &Tensor, reference: &[f64], weight: &[f64]) -> Result<(Tensor, f64)> {
    let n = check_len(lp, &[reference, weight])?;
    let d = (consts(reference, lp)? - lp)?;
    let k3 = ((d.exp()? - &d)? - 1.0)?;
    let vals = values(&k3)?;
    let (mut sum, mut cnt) = (0.0, 0usize);
    for t in 0..n {
        if weight[t] != 0.0 {
            sum += vals[t];
            cnt += 1;
        }
    }
    let loss = (k3 * consts(weight, lp)?)?.sum_all()?;
    Ok((loss, if cnt > 0 { sum / cnt as f64 } else { 0.0 }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Var;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    fn var(v: &[f64]) -> Var {
        Var::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }

    fn grads(loss: &Tensor, v: &Var) -> Vec<f64> {
        let g = loss.backward().unwrap();
        g.get(v.as_tensor()).unwrap().to_vec1::<f64>().unwrap()
    }

    #[test]
    fn weights_per_aggregation() {
        let masks = vec![vec![true, true, false], vec![true], vec![false]];
        // Two sequences have loss tokens: 1/(2·2) and 1/(2·1).
        assert_eq!(
            token_weights(&masks, Aggregation::SequenceMean),
            vec![vec![0.25, 0.25, 0.0], vec![0.5], vec![0.0]]
        );
        let third = 1.0 / 3.0;
        assert_eq!(
            token_weights(&masks, Aggregation::TokenMean),
            vec![vec![third, third, 0.0], vec![third], vec![0.0]]
        );
        // 1 / (3 sequences × 4).
        let c = 1.0 / 12.0;
        assert_eq!(
            token_weights(&masks, Aggregation::ConstantNorm(4)),
            vec![vec![c, c, 0.0], vec![c], vec![0.0]]
        );
    }

    #[test]
    fn grpo_advantages_with_and_without_std() {
        // mean 0.5; sample std sqrt((4 · 0.25) / 3) = 0.577350; 0.5 / 0.577350 = 0.866025.
        let a = grpo_advantages(&[1.0, 0.0, 0.0, 1.0], true);
        for (x, e) in a.iter().zip([0.866025, -0.866025, -0.866025, 0.866025]) {
            assert!((x - e).abs() < 1e-5, "{x} vs {e}");
        }
        assert_eq!(
            grpo_advantages(&[1.0, 0.0, 0.0, 1.0], false),
            vec![0.5, -0.5, -0.5, 0.5]
        );
        assert_eq!(grpo_advantages(&[3.0], true), vec![0.0]);
        // All equal: no signal, and no division by zero.
        assert_eq!(grpo_advantages(&[2.0, 2.0], true), vec![0.0, 0.0]);
    }

    #[test]
    fn sft_is_weighted_negative_logprob() {
        let lp = var(&[-1.0, -2.0, -3.0]);
        let loss = sft_loss(lp.as_tensor(), &[0.5, 0.0, 0.5]).unwrap();
        // 0.5·1 + 0.5·3 = 2.0; d/dlp = −w.
        close(loss.to_scalar::<f64>().unwrap(), 2.0);
        assert_eq!(grads(&loss, &lp), vec![-0.5, 0.0, -0.5]);
    }

    #[test]
    fn ppo_decoupled_clip_and_importance_cap() {
        // t0: ρ = e^{0.1} = 1.105171, A = 1, not clipped, iw = 1: loss −0.5·1.105171.
        // t1: ρ = e^{−0.2} = 0.818731 ≥ 0.8, A = −1, iw = e^{1.2} = 3.32 → cap 2:
        //     loss −0.5·2·(−0.818731) = +0.818731.
        // t2: ρ = e^{0.4} = 1.491825 > 1.2 with A = 2: clipped to 1.2·2, no gradient:
        //     loss −1·1·2.4 = −2.4.
        // total = −0.5525855 + 0.818731 − 2.4 = −2.1338545.
        let lp = var(&[-0.5, -1.0, -0.1]);
        let (loss, stats) = ppo_loss(
            lp.as_tensor(),
            &[-0.6, -0.8, -0.5],
            &[-0.6, -2.0, -0.5],
            &[1.0, -1.0, 2.0],
            &[0.5, 0.5, 1.0],
            &PpoConfig::default(),
        )
        .unwrap();
        close(loss.to_scalar::<f64>().unwrap(), -2.1338545);
        assert_eq!(
            stats,
            PpoStats {
                clipped: 1,
                capped: 1
            }
        );
        // d/dlp = −w·iw·A·ρ where not clipped.
        let g = grads(&loss, &lp);
        close(g[0], -0.5525855);
        close(g[1], 0.818731);
        close(g[2], 0.0);
    }

    #[test]
    fn ppo_negative_advantage_below_range_is_clipped() {
        // ρ = e^{−0.5} = 0.606531 < 0.8 with A = −1: clipped to 0.8·(−1); loss = +0.8.
        let lp = var(&[-1.5]);
        let (loss, stats) = ppo_loss(
            lp.as_tensor(),
            &[-1.0],
            &[-1.0],
            &[-1.0],
            &[1.0],
            &PpoConfig::default(),
        )
        .unwrap();
        close(loss.to_scalar::<f64>().unwrap(), 0.8);
        assert_eq!(stats.clipped, 1);
        close(grads(&loss, &lp)[0], 0.0);
    }

    #[test]
    fn k3_kl_value_and_gradient() {
        // d = −1.5 − (−1) = −0.5: e^{−0.5} + 0.5 − 1 = 0.1065307; d/dlp = 1 − e^{−0.5} = 0.3934693.
        let lp = var(&[-1.0, -7.0]);
        let (loss, mean) = k3_loss(lp.as_tensor(), &[-1.5, -1.0], &[1.0, 0.0]).unwrap();
        close(loss.to_scalar::<f64>().unwrap(), 0.1065307);
        close(mean, 0.1065307);
        let g = grads(&loss, &lp);
        close(g[0], 0.3934693);
        close(g[1], 0.0);
    }
}

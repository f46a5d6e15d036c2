//! Sampling from logits: temperature, top-k, top-p, min-p, seeded.
//!
//! The logprob recorded for a sampled token is its *behaviour* logprob: the log-probability
//! under the distribution actually sampled from (after temperature, truncation and
//! renormalisation), so a trainer's importance ratio is exact; greedy decoding records the raw
//! model's. `Engine::score` stays the raw model (see docs/models.md).

use enact_core::{SamplingParams, SeededRng};

/// The sampling generator: enact's one seeded generator ([`SeededRng`], SplitMix64), so
/// sampling with a seed is reproducible everywhere.
#[derive(Debug, Clone)]
pub struct Rng(SeededRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SeededRng::new(seed))
    }
    /// Seeded by the operating system (unseeded requests must not repeat each other).
    pub fn from_entropy() -> Rng {
        let seed = getrandom::u64().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no OS randomness for an unseeded sample; using a fixed seed");
            0x5eed
        });
        Rng::new(seed)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0.next_f64()
    }
}

/// log-softmax of `logits` at `token` (temperature 1, untruncated).
pub fn raw_logprob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let l = logits
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    ((f64::from(l - max)) - sum.ln()) as f32
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Picks the next token. Greedy when `temperature <= 0` or `top_k == 1`.
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> u32 {
    sample(logits, p, rng).0
}

/// Picks the next token and returns it with its *behaviour* logprob: the log-probability
/// under the distribution actually sampled from (temperature, then truncation,
/// renormalised). Greedy decoding (`temperature <= 0`, `top_k == 1`) has no such distribution
/// (it would be 0 for every token); it records the raw model's logprob instead. At temperature
/// 1 without truncation the sampling distribution is the raw model's, and the value is
/// [`raw_logprob`] bit for bit (what `Engine::score` returns).
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> (u32, f32) {
    match Dist::new(logits, p) {
        None => {
            let t = argmax(logits);
            (t, raw_logprob(logits, t))
        }
        Some(d) => {
            let t = d.draw(rng).unwrap_or_else(|| argmax(logits));
            (t, d.logprob(logits, t))
        }
    }
}

/// The logprob [`sample`] records for `token`, without drawing (for trainers that recompute
/// the behaviour distribution of stored tokens under the same parameters).
pub fn sampling_logprob(logits: &[f32], p: &SamplingParams, token: u32) -> f32 {
    match Dist::new(logits, p) {
        None => raw_logprob(logits, token),
        Some(d) => d.logprob(logits, token),
    }
}

fn truncating(p: &SamplingParams) -> bool {
    p.top_k > 0 || (p.top_p > 0.0 && p.top_p < 1.0) || p.min_p > 0.0
}

/// The distribution sampling draws from: unnormalised weights at temperature T, either over
/// the whole vocabulary or over the candidates that survive truncation.
struct Dist {
    /// (id, weight), all ids when not truncating, else the survivors by descending weight.
    support: Vec<(u32, f32)>,
    /// Sum of the support's weights.
    mass: f64,
    /// The raw model distribution (temperature 1, no truncation).
    raw: bool,
}

impl Dist {
    /// `None` for greedy decoding.
    fn new(logits: &[f32], p: &SamplingParams) -> Option<Dist> {
        if p.temperature <= 0.0 || p.top_k == 1 || logits.len() <= 1 {
            return None;
        }
        let inv_t = 1.0 / p.temperature;
        let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        // Unnormalized probabilities at temperature T.
        let w: Vec<f32> = logits.iter().map(|&l| ((l - max) * inv_t).exp()).collect();
        let total: f64 = w.iter().map(|&x| f64::from(x)).sum();
        if !truncating(p) {
            return Some(Dist {
                support: w
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| (i as u32, x))
                    .collect(),
                mass: total,
                raw: p.temperature == 1.0,
            });
        }
        // Candidates that can survive truncation. The largest weight is exp(0) = 1.
        // min-p keeps tokens with prob >= min_p * max prob. For top-p, tokens whose weight is
        // below (1 - top_p) * total / V cannot be in the nucleus (their total mass is below
        // 1 - top_p), so only the rest need sorting.
        let mut floor = 0f64;
        if p.min_p > 0.0 {
            floor = floor.max(f64::from(p.min_p));
        }
        if p.top_p > 0.0 && p.top_p < 1.0 && p.top_k == 0 {
            floor = floor.max((1.0 - f64::from(p.top_p)) * total / w.len() as f64);
        }
        let mut cand: Vec<(u32, f32)> = w
            .iter()
            .enumerate()
            .filter(|&(_, &x)| f64::from(x) >= floor)
            .map(|(i, &x)| (i as u32, x))
            .collect();
        // Descending by weight, ties by id (deterministic).
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 && cand.len() > p.top_k {
            cand.truncate(p.top_k);
        }
        if p.top_p > 0.0 && p.top_p < 1.0 {
            // Nucleus over the (top-k-truncated) distribution, renormalized.
            let mass: f64 = if p.top_k > 0 {
                cand.iter().map(|c| f64::from(c.1)).sum()
            } else {
                total
            };
            let mut acc = 0f64;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                acc += f64::from(c.1);
                if acc >= f64::from(p.top_p) * mass {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        let kept: f64 = cand.iter().map(|c| f64::from(c.1)).sum();
        Some(Dist {
            support: cand,
            mass: kept,
            raw: false,
        })
    }

    /// `None` only when rounding leaves `u` past the last weight (the caller takes argmax).
    fn draw(&self, rng: &mut Rng) -> Option<u32> {
        let mut u = rng.next_f64() * self.mass;
        for c in &self.support {
            u -= f64::from(c.1);
            if u < 0.0 {
                return Some(c.0);
            }
        }
        None
    }

    /// log(weight / mass); -inf outside the support.
    fn logprob(&self, logits: &[f32], token: u32) -> f32 {
        if self.raw {
            return raw_logprob(logits, token);
        }
        let w = self
            .support
            .iter()
            .find(|c| c.0 == token)
            .map_or(0.0, |c| c.1);
        (f64::from(w).ln() - self.mass.ln()) as f32
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params(t: f32, top_p: f32, top_k: usize, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_p,
            top_k,
            min_p,
            seed: None,
        }
    }

    #[test]
    fn greedy_and_top_k_one_agree() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        let mut r = Rng::new(1);
        assert_eq!(sample_token(&logits, &params(0.0, 1.0, 0, 0.0), &mut r), 1);
        for _ in 0..20 {
            assert_eq!(sample_token(&logits, &params(1.5, 1.0, 1, 0.0), &mut r), 1);
        }
    }

    #[test]
    fn truncation_restricts_support() {
        let logits = [3.0, 2.9, -5.0, -6.0, 0.0];
        let mut r = Rng::new(7);
        for _ in 0..200 {
            let t = sample_token(&logits, &params(1.0, 1.0, 2, 0.0), &mut r);
            assert!(t == 0 || t == 1);
            let t = sample_token(&logits, &params(1.0, 1.0, 0, 0.5), &mut r);
            assert!(t == 0 || t == 1, "min-p kept {t}");
            let t = sample_token(&logits, &params(1.0, 0.5, 0, 0.0), &mut r);
            assert!(t == 0 || t == 1, "top-p kept {t}");
        }
        // Without truncation every token with real mass appears eventually.
        let mut seen = [false; 5];
        for _ in 0..2000 {
            seen[sample_token(&logits, &params(1.0, 1.0, 0, 0.0), &mut r) as usize] = true;
        }
        assert!(seen[0] && seen[1] && seen[4]);
    }

    #[test]
    fn seeded_streams_repeat_and_entropy_streams_differ() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        assert!((0..100).all(|_| a.next_f64() == b.next_f64()));
        let (mut c, mut d) = (Rng::from_entropy(), Rng::from_entropy());
        assert_ne!(
            (0..4).map(|_| c.next_f64()).collect::<Vec<_>>(),
            (0..4).map(|_| d.next_f64()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn raw_logprob_is_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (i, l) in logits.iter().enumerate() {
            assert!((raw_logprob(&logits, i as u32) - (l.exp() / z).ln()).abs() < 1e-6);
        }
    }

    #[test]
    fn behaviour_logprobs_form_the_distribution_sampled_from() {
        let logits = [3.0f32, 2.9, -5.0, -6.0, 0.0, 1.2];
        let cases = [
            params(1.0, 1.0, 0, 0.0),
            params(0.7, 1.0, 0, 0.0),
            params(1.3, 1.0, 3, 0.0),
            params(1.0, 0.8, 0, 0.0),
            params(0.9, 0.9, 4, 0.05),
        ];
        for p in &cases {
            let total: f64 = (0..logits.len() as u32)
                .map(|t| f64::from(sampling_logprob(&logits, p, t)).exp())
                .sum();
            assert!((total - 1.0).abs() < 1e-5, "{p:?}: mass {total}");
            let mut r = Rng::new(3);
            for _ in 0..50 {
                let (t, lp) = sample(&logits, p, &mut r);
                assert!(lp.is_finite());
                assert_eq!(lp, sampling_logprob(&logits, p, t));
            }
        }
        // Temperature 1 without truncation is the raw model, bit for bit; so is greedy.
        for t in 0..logits.len() as u32 {
            assert_eq!(
                sampling_logprob(&logits, &cases[0], t),
                raw_logprob(&logits, t)
            );
        }
        let mut r = Rng::new(1);
        let greedy = sample(&logits, &params(0.0, 1.0, 0, 0.0), &mut r);
        assert_eq!(greedy, (0, raw_logprob(&logits, 0)));
        // top-k 3 at T = 1.3: renormalised over the three largest.
        let z: f64 = [3.0f64, 2.9, 1.2].iter().map(|l| (l / 1.3).exp()).sum();
        let want = (2.9f64 / 1.3).exp().ln() - z.ln();
        assert!((f64::from(sampling_logprob(&logits, &cases[2], 1)) - want).abs() < 1e-6);
    }
}

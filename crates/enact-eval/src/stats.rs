//! Estimators: Wilson intervals for rates, seeded bootstrap intervals for means, the
//! unbiased pass@k and pass^k.

use enact_core::SeededRng;
use serde::{Deserialize, Serialize};

/// A point estimate with a 95% interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    /// What the estimate is over (episodes, tool calls, tasks, …).
    pub n: usize,
}

impl Estimate {
    /// `0.42 [0.31, 0.55]`, or as percentages.
    pub fn show(&self, percent: bool) -> String {
        if percent {
            format!(
                "{:.1}% [{:.1}, {:.1}]",
                100.0 * self.value,
                100.0 * self.lo,
                100.0 * self.hi
            )
        } else {
            format!("{:.3} [{:.3}, {:.3}]", self.value, self.lo, self.hi)
        }
    }
}

const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of `successes` out of `n` (95%). `n = 0` gives 0 in [0, 1].
pub fn wilson(successes: usize, n: usize) -> Estimate {
    if n == 0 {
        return Estimate {
            value: 0.0,
            lo: 0.0,
            hi: 1.0,
            n: 0,
        };
    }
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = Z95 * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Estimate {
        value: p,
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
        n,
    }
}

/// Resamples of the bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// The mean of `xs` with a percentile bootstrap 95% interval (seeded, so reports are
/// reproducible).
pub fn bootstrap_mean(xs: &[f64], seed: u64) -> Estimate {
    let n = xs.len();
    if n == 0 {
        return Estimate::default();
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let mut rng = SeededRng::new(seed);
    let mut means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            (0..n)
                .map(|_| xs[rng.below(n as u64) as usize])
                .sum::<f64>()
                / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Estimate {
        value: mean,
        lo: at(0.025),
        hi: at(0.975),
        n,
    }
}

/// C(n−c, k) / C(n, k): the probability that k samples drawn without replacement from n, of
/// which c succeed, all fail. Computed as a product (no overflow).
fn all_fail(n: usize, c: usize, k: usize) -> f64 {
    let fails = n.saturating_sub(c);
    if fails < k {
        return 0.0;
    }
    ((fails + 1)..=n).fold(1.0, |acc, i| acc * (1.0 - k as f64 / i as f64))
}

/// The unbiased pass@k of one task with `n` samples, `c` of them successes; 0 unless
/// `1 ≤ k ≤ n` and `c ≤ n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if k == 0 || k > n || c > n {
        return 0.0;
    }
    1.0 - all_fail(n, c, k)
}

/// pass^k: the probability that k samples drawn without replacement all succeed,
/// C(c, k) / C(n, k); 0 unless `1 ≤ k ≤ n` and `c ≤ n`.
pub fn pass_all_k(n: usize, c: usize, k: usize) -> f64 {
    if k == 0 || k > n || c > n || c < k {
        return 0.0;
    }
    (0..k).fold(1.0, |acc, i| acc * (c - i) as f64 / (n - i) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn pass_at_k_matches_the_binomial_formula() {
        // n=5, c=2, k=2: 1 − C(3,2)/C(5,2) = 1 − 3/10.
        assert!(close(pass_at_k(5, 2, 2), 0.7));
        assert!(close(pass_at_k(5, 0, 3), 0.0));
        assert!(close(pass_at_k(5, 3, 3), 1.0));
        assert!(close(pass_at_k(4, 1, 1), 0.25));
        // pass^k: C(3,2)/C(5,2) = 3/10.
        assert!(close(pass_all_k(5, 3, 2), 0.3));
        assert!(close(pass_all_k(5, 1, 2), 0.0));
        assert!(close(pass_all_k(4, 4, 4), 1.0));
        // Out of range: no panic, no NaN.
        assert_eq!(
            (pass_at_k(2, 3, 1), pass_at_k(2, 1, 3), pass_all_k(2, 2, 3)),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn wilson_matches_the_textbook_interval() {
        // 8 of 10: the Wilson 95% interval is [0.4902, 0.9433].
        let e = wilson(8, 10);
        assert!(
            (e.lo - 0.4902).abs() < 1e-3 && (e.hi - 0.9433).abs() < 1e-3,
            "{e:?}"
        );
        let none = wilson(0, 0);
        assert_eq!((none.lo, none.hi), (0.0, 1.0));
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let xs: Vec<f64> = (0..50).map(|i| f64::from(i % 7)).collect();
        let a = bootstrap_mean(&xs, 3);
        assert_eq!(a, bootstrap_mean(&xs, 3));
        assert!(a.lo < a.value && a.value < a.hi, "{a:?}");
        let flat = bootstrap_mean(&[2.0; 9], 1);
        assert_eq!((flat.lo, flat.value, flat.hi), (2.0, 2.0, 2.0));
    }
}

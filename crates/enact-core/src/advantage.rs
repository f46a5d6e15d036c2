//! Advantages of a group of samples of one task (GRPO), shared by the trainer and the
//! dataset export so both compute the same numbers.

/// Group-normalised advantages (GRPO): `r − mean(r)`, divided by the sample standard
/// deviation (n − 1, as TRL) plus 1e-6 when `std_normalise` (Dr. GRPO turns it off).
/// A group of one has advantage 0.
pub fn grpo_advantages(rewards: &[f64], std_normalise: bool) -> Vec<f64> {
    let n = rewards.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let div = if std_normalise {
        var.sqrt() + 1e-6
    } else {
        1.0
    };
    rewards.iter().map(|r| (r - mean) / div).collect()
}

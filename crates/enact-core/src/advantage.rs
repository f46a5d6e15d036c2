//! Advantages of a group of samples of one task (GRPO), shared by the trainer and the
//! dataset export so both compute the same numbers, and reward shaping applied before them.

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

/// Credit for one agent of a team episode: `(1 − own_weight)·shared + own_weight·own`, where
/// `shared` is the episode's reward and `own` the agent's own verdict on its sub-task; an
/// agent without its own verdict gets the shared reward. `own_weight` is clamped to [0, 1].
pub fn mixed_reward(shared: f64, own: Option<f64>, own_weight: f64) -> f64 {
    let w = if own_weight.is_nan() {
        0.0
    } else {
        own_weight.clamp(0.0, 1.0)
    };
    match own {
        Some(own) => (1.0 - w) * shared + w * own,
        None => shared,
    }
}

/// The reward of every agent of an episode tree, in [`crate::Episode::agents`] order: the
/// root's own reward, and for each sub-agent [`mixed_reward`] of the root's reward and the
/// sub-agent's own verdict.
pub fn agent_rewards(episode: &crate::Episode, own_weight: f64) -> Vec<f64> {
    let shared = episode.outcome.reward;
    episode
        .agents()
        .iter()
        .map(|a| {
            if a.depth == 0 {
                shared
            } else {
                let own = a.episode.verdict.as_ref().map(|v| v.reward);
                mixed_reward(shared, own, own_weight)
            }
        })
        .collect()
}

/// GRPO advantages per group, where a group is every reward with the same key (for teams:
/// the task and the role, so each role is normalised among its own samples). Results are in
/// the input's order.
pub fn grouped_grpo_advantages<K: Ord>(
    keys: &[K],
    rewards: &[f64],
    std_normalise: bool,
) -> Vec<f64> {
    let mut groups: std::collections::BTreeMap<&K, Vec<usize>> = Default::default();
    for (i, k) in keys.iter().enumerate().take(rewards.len()) {
        groups.entry(k).or_default().push(i);
    }
    let mut out = vec![0.0; rewards.len()];
    for members in groups.into_values() {
        let r: Vec<f64> = members.iter().map(|&i| rewards[i]).collect();
        for (&i, a) in members.iter().zip(grpo_advantages(&r, std_normalise)) {
            out[i] = a;
        }
    }
    out
}

/// Reward shaping for learning when to think: a cost per thinking token that only correct
/// answers pay, bounded so that a correct answer always keeps more reward than every wrong
/// one in its group (accuracy is never traded for brevity).
///
/// In a group (samples of one task), each successful sample loses
/// `weight × gap × (t − t_min) / (t_max − t_min)`, where `t` are the thinking tokens of the
/// group's successes and `gap` is the lowest success reward minus the highest failure reward
/// (the whole success reward when nothing failed). With `weight < 1` the ordering
/// success > failure is strict; failures are unchanged.
pub fn thinking_cost_shaping(
    rewards: &[f64],
    successes: &[bool],
    thinking_tokens: &[usize],
    weight: f64,
) -> Vec<f64> {
    let n = rewards
        .len()
        .min(successes.len())
        .min(thinking_tokens.len());
    let mut shaped = rewards.to_vec();
    let weight = weight.clamp(0.0, 0.999);
    let ok: Vec<usize> = (0..n).filter(|&i| successes[i]).collect();
    if ok.len() < 2 || weight == 0.0 {
        return shaped;
    }
    let min_ok = ok.iter().map(|&i| rewards[i]).fold(f64::INFINITY, f64::min);
    let max_fail = (0..n)
        .filter(|&i| !successes[i])
        .map(|i| rewards[i])
        .fold(f64::NEG_INFINITY, f64::max);
    let gap = if max_fail.is_finite() {
        (min_ok - max_fail).max(0.0)
    } else {
        min_ok.abs()
    };
    let t_min = ok.iter().map(|&i| thinking_tokens[i]).min().unwrap_or(0);
    let t_max = ok.iter().map(|&i| thinking_tokens[i]).max().unwrap_or(0);
    if t_max == t_min {
        return shaped;
    }
    for &i in &ok {
        let frac = (thinking_tokens[i] - t_min) as f64 / (t_max - t_min) as f64;
        shaped[i] -= weight * gap * frac;
    }
    shaped
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mixed_rewards_fall_back_to_the_shared_reward() {
        assert_eq!(mixed_reward(1.0, Some(0.0), 0.25), 0.75);
        assert_eq!(mixed_reward(1.0, None, 0.25), 1.0);
        assert_eq!(mixed_reward(0.0, Some(1.0), 7.0), 1.0);
        assert_eq!(mixed_reward(0.5, Some(1.0), f64::NAN), 0.5);
    }

    #[test]
    fn groups_are_normalised_separately() {
        let keys = [
            ("t", "lead"),
            ("t", "worker"),
            ("t", "lead"),
            ("t", "worker"),
        ];
        let a = grouped_grpo_advantages(&keys, &[1.0, 0.0, 0.0, 0.0], false);
        assert_eq!(a, vec![0.5, 0.0, -0.5, 0.0]);
    }

    #[test]
    fn thinking_cost_never_trades_accuracy() {
        let rewards = [1.0, 1.0, 0.9, 0.0, 0.6];
        let ok = [true, true, true, false, false];
        let think = [10, 500, 100, 5, 0];
        let shaped = thinking_cost_shaping(&rewards, &ok, &think, 0.9);
        // failures unchanged
        assert_eq!(shaped[3], 0.0);
        assert_eq!(shaped[4], 0.6);
        // every success stays above every failure
        for i in 0..3 {
            assert!(shaped[i] > 0.6, "{shaped:?}");
        }
        // shorter correct thinking keeps more reward
        assert!(shaped[0] > shaped[1]);
        assert_eq!(shaped[0], 1.0);
        // nothing to compare: unchanged
        assert_eq!(
            thinking_cost_shaping(&[1.0, 0.0], &[true, false], &[9, 1], 0.5),
            vec![1.0, 0.0]
        );
    }
}

//! Trainable sequences cut from token-level trajectories.

use enact_core::{SegmentId, Trajectory};

use crate::error::{Result, TrainError};

/// One path of a trajectory (root to a leaf), ready to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSequence {
    pub tokens: Vec<u32>,
    /// Whether each token carries loss: only tokens of `Sampled` segments do (prompt,
    /// observation and forced tokens never), and never the first token, which has no
    /// prefix to predict it from.
    pub loss_mask: Vec<bool>,
    /// The sampling policy's logprob of each token (0 where not sampled).
    pub behaviour_logprobs: Vec<f32>,
    /// The policy version that sampled each token (`None` where not sampled).
    pub policy_versions: Vec<Option<u64>>,
}

impl TrainSequence {
    /// The path ending at `leaf`. Refuses trajectories that are not token-exact (text-level
    /// backends re-encode text: their ids are not what the model sampled).
    pub fn from_trajectory(t: &Trajectory, leaf: SegmentId) -> Result<TrainSequence> {
        t.validate()?;
        if !t.token_exact {
            return Err(TrainError::Invalid(format!(
                "trajectory {} is not token-exact (recorded through a text-level backend), so \
                 it cannot be trained on; record it with the embedded engine or a token-exact server",
                t.id
            )));
        }
        let tokens = t.tokens(leaf)?;
        let mut loss_mask = t.loss_mask(leaf)?;
        if let Some(first) = loss_mask.first_mut() {
            *first = false;
        }
        let behaviour_logprobs = t
            .logprobs(leaf)?
            .into_iter()
            .map(|l| l.unwrap_or(0.0))
            .collect();
        Ok(TrainSequence {
            tokens,
            loss_mask,
            behaviour_logprobs,
            policy_versions: t.policy_versions(leaf)?,
        })
    }

    /// The `main` branch (or the last segment).
    pub fn main_line(t: &Trajectory) -> Result<TrainSequence> {
        let leaf = t
            .main_leaf()
            .ok_or_else(|| TrainError::Invalid(format!("trajectory {} has no segments", t.id)))?;
        TrainSequence::from_trajectory(t, leaf)
    }

    /// Tokens that carry loss.
    pub fn loss_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&b| b).count()
    }

    pub(crate) fn check(&self) -> Result<()> {
        let n = self.tokens.len();
        if n == 0 || self.loss_mask.len() != n || self.behaviour_logprobs.len() != n {
            return Err(TrainError::Invalid(format!(
                "a training sequence has {n} tokens, {} mask entries and {} logprobs; they must \
                 be equal and non-zero (build it with TrainSequence::from_trajectory)",
                self.loss_mask.len(),
                self.behaviour_logprobs.len()
            )));
        }
        Ok(())
    }
}

/// A sequence with what the objective needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSample {
    pub sequence: TrainSequence,
    /// Advantage of the whole sequence (RL objectives; ignored by SFT).
    pub advantage: f64,
    /// Logprobs of the proximal policy per token (`None`: the current policy, detached).
    pub proximal_logprobs: Option<Vec<f32>>,
}

impl TrainSample {
    pub fn new(sequence: TrainSequence, advantage: f64) -> TrainSample {
        TrainSample {
            sequence,
            advantage,
            proximal_logprobs: None,
        }
    }

    /// A GRPO group: the main line of each trajectory (all answers to one task) with
    /// group-normalised advantages from the rewards ([`crate::grpo_advantages`]).
    pub fn grpo_group(
        trajectories: &[Trajectory],
        rewards: &[f64],
        std_normalise: bool,
    ) -> Result<Vec<TrainSample>> {
        if trajectories.len() != rewards.len() {
            return Err(TrainError::Invalid(format!(
                "{} trajectories but {} rewards; give one reward per trajectory",
                trajectories.len(),
                rewards.len()
            )));
        }
        let advantages = crate::loss::grpo_advantages(rewards, std_normalise);
        trajectories
            .iter()
            .zip(advantages)
            .map(|(t, a)| Ok(TrainSample::new(TrainSequence::main_line(t)?, a)))
            .collect()
    }
}

//! The token-level trajectory: the exact tokens a model saw and produced, as a tree of
//! segments.
//!
//! A *segment* is a run of tokens with one origin:
//! - [`SegmentKind::Prompt`]: rendered by the chat template (system prompt, user turns,
//!   generation prompts);
//! - [`SegmentKind::Sampled`]: sampled by the policy, each token with its logprob and the
//!   policy version that sampled it;
//! - [`SegmentKind::Observation`]: rendered tool results and environment feedback;
//! - [`SegmentKind::Forced`]: inserted by the system, not sampled (a forced `</think>` at a
//!   thinking budget, a closing end-of-turn token after a length stop, ...).
//!
//! Each segment has a parent, so a trajectory is a tree: the context of any segment is the
//! concatenation of the tokens on the path from the root to it. Forks (retries, sub-agents,
//! branches) share their prefix. Only sampled tokens carry loss by default; forced tokens are
//! never trained on because the policy did not choose them.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Index of a segment inside its trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentId(pub u32);

/// Where the tokens of a segment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    Prompt,
    Sampled,
    Observation,
    Forced,
}

/// A run of tokens with one origin. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: SegmentId,
    /// The segment this one continues; `None` for a root.
    pub parent: Option<SegmentId>,
    pub kind: SegmentKind,
    pub tokens: Vec<u32>,
    /// For sampled segments: the sampling policy's logprob of each token (same length as
    /// `tokens`). Empty for other kinds. A logprob of `-inf` is valid; JSON has no
    /// infinity, so it is written as `null` and read back as `-inf`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "logprobs_from_json"
    )]
    pub logprobs: Vec<f32>,
    /// For sampled segments: the policy version that sampled each token (same length as
    /// `tokens`; versions can change inside a segment when weights update mid-generation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_versions: Vec<u64>,
    /// Whether these tokens count in the training loss.
    pub loss_mask: bool,
    /// Assistant turn this segment belongs to (0 = before the first sample).
    pub turn: u32,
    /// Which agent produced the segment (multi-agent trees); `None` for the main agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Why the segment exists, for people: "system+user", "tool:calculator",
    /// "turn-close", "thinking-budget", ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Problems with a trajectory's structure.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum TrajectoryError {
    #[error("segment {0} does not exist in this trajectory")]
    UnknownSegment(u32),
    #[error("segment {id}: parent {parent} must come before it")]
    ParentNotBefore { id: u32, parent: u32 },
    #[error("segment {id} ({kind:?}): {what}")]
    Inconsistent {
        id: u32,
        kind: SegmentKind,
        what: String,
    },
    #[error(
        "trajectory format version {found} is not supported (this enact reads version {supported}); re-record it or upgrade enact"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("invalid trajectory JSON: {0}")]
    Json(String),
}

/// A named leaf of the tree: the main line of the episode, or a fork.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    pub name: String,
    pub leaf: SegmentId,
}

/// The token-level record of one episode. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub format_version: u32,
    /// The episode's id.
    pub id: String,
    /// Identity of the tokenizer the ids belong to (name or path plus vocabulary size).
    pub tokenizer: String,
    /// False when a backend could only give text (an OpenAI server without token ids): the
    /// tokens are then re-encoded text and the trajectory must not be trained on.
    pub token_exact: bool,
    pub segments: Vec<Segment>,
    /// Named leaves; `main` is the episode's own line.
    #[serde(default)]
    pub branches: Vec<Branch>,
}

/// Summary counts of a path through the tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentCounts {
    pub prompt: usize,
    pub sampled: usize,
    pub observation: usize,
    pub forced: usize,
}

impl Trajectory {
    /// An empty trajectory; the task it belongs to is the enclosing [`crate::Episode`]'s.
    pub fn new(id: impl Into<String>, tokenizer: impl Into<String>) -> Self {
        Trajectory {
            format_version: crate::FORMAT_VERSION,
            id: id.into(),
            tokenizer: tokenizer.into(),
            token_exact: true,
            segments: Vec::new(),
            branches: Vec::new(),
        }
    }

    pub fn segment(&self, id: SegmentId) -> Result<&Segment, TrajectoryError> {
        self.segments
            .get(id.0 as usize)
            .ok_or(TrajectoryError::UnknownSegment(id.0))
    }

    fn next_id(&self) -> SegmentId {
        SegmentId(self.segments.len() as u32)
    }

    fn push(&mut self, mut seg: Segment) -> Result<SegmentId, TrajectoryError> {
        seg.id = self.next_id();
        if let Some(p) = seg.parent
            && p.0 >= seg.id.0
        {
            return Err(TrajectoryError::UnknownSegment(p.0));
        }
        check_segment(&seg)?;
        let id = seg.id;
        self.segments.push(seg);
        Ok(id)
    }

    /// Appends a non-sampled segment (prompt, observation or forced tokens) after `parent`.
    /// These carry no loss.
    pub fn push_tokens(
        &mut self,
        parent: Option<SegmentId>,
        kind: SegmentKind,
        tokens: Vec<u32>,
        turn: u32,
        label: Option<String>,
    ) -> Result<SegmentId, TrajectoryError> {
        if kind == SegmentKind::Sampled {
            return Err(TrajectoryError::Inconsistent {
                id: self.next_id().0,
                kind,
                what: "sampled tokens must be pushed with push_sampled (logprobs and versions)"
                    .into(),
            });
        }
        self.push(Segment {
            id: SegmentId(0),
            parent,
            kind,
            tokens,
            logprobs: Vec::new(),
            policy_versions: Vec::new(),
            loss_mask: false,
            turn,
            agent: None,
            label,
        })
    }

    /// Appends sampled tokens with their logprobs and per-token policy versions.
    pub fn push_sampled(
        &mut self,
        parent: Option<SegmentId>,
        tokens: Vec<u32>,
        logprobs: Vec<f32>,
        policy_versions: Vec<u64>,
        turn: u32,
    ) -> Result<SegmentId, TrajectoryError> {
        self.push(Segment {
            id: SegmentId(0),
            parent,
            kind: SegmentKind::Sampled,
            tokens,
            logprobs,
            policy_versions,
            loss_mask: true,
            turn,
            agent: None,
            label: None,
        })
    }

    /// Sets (or moves) a named leaf.
    pub fn set_branch(&mut self, name: &str, leaf: SegmentId) -> Result<(), TrajectoryError> {
        self.segment(leaf)?;
        match self.branches.iter_mut().find(|b| b.name == name) {
            Some(b) => b.leaf = leaf,
            None => self.branches.push(Branch {
                name: name.to_string(),
                leaf,
            }),
        }
        Ok(())
    }

    /// The leaf of the `main` branch, or the last segment when no branch is named.
    pub fn main_leaf(&self) -> Option<SegmentId> {
        self.branches
            .iter()
            .find(|b| b.name == "main")
            .map(|b| b.leaf)
            .or_else(|| self.segments.last().map(|s| s.id))
    }

    /// The segments from the root to `leaf`, in order.
    pub fn path(&self, leaf: SegmentId) -> Result<Vec<&Segment>, TrajectoryError> {
        let mut out = Vec::new();
        let mut cur = Some(leaf);
        while let Some(id) = cur {
            let seg = self.segment(id)?;
            out.push(seg);
            cur = seg.parent;
            if out.len() > self.segments.len() {
                // Unreachable for validated trajectories (parents come first); guards cycles
                // in hand-edited files.
                return Err(TrajectoryError::ParentNotBefore {
                    id: id.0,
                    parent: id.0,
                });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The full token sequence ending at `leaf`.
    pub fn tokens(&self, leaf: SegmentId) -> Result<Vec<u32>, TrajectoryError> {
        Ok(self
            .path(leaf)?
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect())
    }

    /// Per-token loss mask of the sequence ending at `leaf`.
    pub fn loss_mask(&self, leaf: SegmentId) -> Result<Vec<bool>, TrajectoryError> {
        Ok(self
            .path(leaf)?
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.loss_mask, s.tokens.len()))
            .collect())
    }

    /// Per-token sampling logprob (`None` where the token was not sampled).
    pub fn logprobs(&self, leaf: SegmentId) -> Result<Vec<Option<f32>>, TrajectoryError> {
        let mut out = Vec::new();
        for s in self.path(leaf)? {
            if s.kind == SegmentKind::Sampled {
                out.extend(s.logprobs.iter().map(|&l| Some(l)));
            } else {
                out.extend(std::iter::repeat_n(None, s.tokens.len()));
            }
        }
        Ok(out)
    }

    /// Per-token policy version (`None` where the token was not sampled).
    pub fn policy_versions(&self, leaf: SegmentId) -> Result<Vec<Option<u64>>, TrajectoryError> {
        let mut out = Vec::new();
        for s in self.path(leaf)? {
            if s.kind == SegmentKind::Sampled {
                out.extend(s.policy_versions.iter().map(|&v| Some(v)));
            } else {
                out.extend(std::iter::repeat_n(None, s.tokens.len()));
            }
        }
        Ok(out)
    }

    /// Token counts by kind along the path to `leaf`.
    pub fn counts(&self, leaf: SegmentId) -> Result<SegmentCounts, TrajectoryError> {
        let mut c = SegmentCounts::default();
        for s in self.path(leaf)? {
            let n = s.tokens.len();
            match s.kind {
                SegmentKind::Prompt => c.prompt += n,
                SegmentKind::Sampled => c.sampled += n,
                SegmentKind::Observation => c.observation += n,
                SegmentKind::Forced => c.forced += n,
            }
        }
        Ok(c)
    }

    /// Checks the structural invariants: ids are positions, parents come first, sampled
    /// segments have one logprob and one version per token, other kinds have none, and
    /// forced/prompt/observation tokens never carry loss.
    pub fn validate(&self) -> Result<(), TrajectoryError> {
        if self.format_version != crate::FORMAT_VERSION {
            return Err(TrajectoryError::UnsupportedVersion {
                found: self.format_version,
                supported: crate::FORMAT_VERSION,
            });
        }
        for (i, s) in self.segments.iter().enumerate() {
            if s.id.0 as usize != i {
                return Err(TrajectoryError::Inconsistent {
                    id: s.id.0,
                    kind: s.kind,
                    what: format!("id does not match its position {i}"),
                });
            }
            if let Some(p) = s.parent
                && p.0 >= s.id.0
            {
                return Err(TrajectoryError::ParentNotBefore {
                    id: s.id.0,
                    parent: p.0,
                });
            }
            check_segment(s)?;
        }
        for b in &self.branches {
            self.segment(b.leaf)?;
        }
        Ok(())
    }

    pub fn to_json(&self) -> Result<String, TrajectoryError> {
        serde_json::to_string(self).map_err(|e| TrajectoryError::Json(e.to_string()))
    }

    /// Parses and validates a trajectory.
    pub fn from_json(s: &str) -> Result<Self, TrajectoryError> {
        let t: Trajectory =
            serde_json::from_str(s).map_err(|e| TrajectoryError::Json(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }
}

/// serde_json writes non-finite floats as `null`; the only non-finite logprob a valid
/// segment holds is `-inf`, so `null` reads back as `-inf`.
fn logprobs_from_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    let raw: Vec<Option<f32>> = Vec::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|l| l.unwrap_or(f32::NEG_INFINITY))
        .collect())
}

fn check_segment(s: &Segment) -> Result<(), TrajectoryError> {
    let bad = |what: String| TrajectoryError::Inconsistent {
        id: s.id.0,
        kind: s.kind,
        what,
    };
    match s.kind {
        SegmentKind::Sampled => {
            if s.logprobs.len() != s.tokens.len() {
                return Err(bad(format!(
                    "{} tokens but {} logprobs",
                    s.tokens.len(),
                    s.logprobs.len()
                )));
            }
            if s.policy_versions.len() != s.tokens.len() {
                return Err(bad(format!(
                    "{} tokens but {} policy versions",
                    s.tokens.len(),
                    s.policy_versions.len()
                )));
            }
            if s.logprobs.iter().any(|l| l.is_nan() || *l > 1e-3) {
                return Err(bad("a logprob is NaN or positive".into()));
            }
        }
        _ => {
            if !s.logprobs.is_empty() || !s.policy_versions.is_empty() {
                return Err(bad(
                    "only sampled segments carry logprobs and policy versions".into(),
                ));
            }
            if s.loss_mask {
                return Err(bad(
                    "tokens the policy did not sample must not carry loss".into()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample_tree() -> Trajectory {
        let mut t = Trajectory::new("t1", "bytes");
        let p = t
            .push_tokens(None, SegmentKind::Prompt, vec![1, 2, 3], 0, None)
            .unwrap();
        let s = t
            .push_sampled(Some(p), vec![4, 5], vec![-0.5, -0.25], vec![7, 8], 1)
            .unwrap();
        let o = t
            .push_tokens(Some(s), SegmentKind::Observation, vec![6], 1, None)
            .unwrap();
        let f = t
            .push_tokens(Some(s), SegmentKind::Forced, vec![9], 1, None)
            .unwrap();
        t.set_branch("main", o).unwrap();
        t.set_branch("fork", f).unwrap();
        t
    }

    #[test]
    fn paths_masks_and_versions() {
        let t = sample_tree();
        let main = t.main_leaf().unwrap();
        assert_eq!(t.tokens(main).unwrap(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            t.loss_mask(main).unwrap(),
            vec![false, false, false, true, true, false]
        );
        assert_eq!(
            t.policy_versions(main).unwrap(),
            vec![None, None, None, Some(7), Some(8), None]
        );
        assert_eq!(t.tokens(SegmentId(3)).unwrap(), vec![1, 2, 3, 4, 5, 9]);
        assert_eq!(t.counts(main).unwrap().sampled, 2);
    }

    #[test]
    fn json_round_trip_and_validation() {
        let t = sample_tree();
        let s = t.to_json().unwrap();
        assert_eq!(Trajectory::from_json(&s).unwrap(), t);
        let mut bad = t.clone();
        bad.segments[1].logprobs.pop();
        assert!(Trajectory::from_json(&bad.to_json().unwrap()).is_err());
        let mut bad = t.clone();
        bad.segments[2].loss_mask = true;
        assert!(bad.validate().is_err());
        let mut bad = t;
        bad.format_version = 99;
        assert!(matches!(
            bad.validate(),
            Err(TrajectoryError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn forced_tokens_on_the_main_line_carry_no_loss_and_are_counted() {
        let mut t = Trajectory::new("t1", "bytes");
        let p = t
            .push_tokens(None, SegmentKind::Prompt, vec![1, 2], 0, None)
            .unwrap();
        let s = t
            .push_sampled(Some(p), vec![3, 4], vec![-0.1, -0.2], vec![0, 0], 1)
            .unwrap();
        let f = t
            .push_tokens(
                Some(s),
                SegmentKind::Forced,
                vec![5],
                1,
                Some("turn-close".into()),
            )
            .unwrap();
        t.set_branch("main", f).unwrap();
        let main = t.main_leaf().unwrap();
        assert_eq!(main, f);
        assert_eq!(t.tokens(main).unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            t.loss_mask(main).unwrap(),
            vec![false, false, true, true, false]
        );
        assert_eq!(t.logprobs(main).unwrap()[4], None);
        assert_eq!(t.policy_versions(main).unwrap()[4], None);
        let counts = t.counts(main).unwrap();
        assert_eq!((counts.sampled, counts.forced), (2, 1));
        t.validate().unwrap();
        assert_eq!(Trajectory::from_json(&t.to_json().unwrap()).unwrap(), t);
        // Forced tokens were not chosen by the policy: no loss, no logprobs, no versions.
        let mut bad = t.clone();
        bad.segments[2].loss_mask = true;
        assert!(bad.validate().is_err());
        let mut bad = t.clone();
        bad.segments[2].logprobs = vec![-0.1];
        assert!(Trajectory::from_json(&bad.to_json().unwrap()).is_err());
        let mut bad = t;
        bad.segments[2].policy_versions = vec![0];
        assert!(bad.validate().is_err());
    }

    #[test]
    fn sampled_lengths_are_checked_on_push() {
        let mut t = Trajectory::new("t", "bytes");
        assert!(
            t.push_sampled(None, vec![1, 2], vec![-1.0], vec![0, 0], 1)
                .is_err()
        );
        assert!(
            t.push_tokens(None, SegmentKind::Sampled, vec![1], 0, None)
                .is_err()
        );
        assert!(
            t.push_tokens(Some(SegmentId(5)), SegmentKind::Prompt, vec![1], 0, None)
                .is_err()
        );
    }

    #[test]
    fn negative_infinite_logprob_round_trips() {
        let mut t = Trajectory::new("t1", "bytes");
        let p = t
            .push_tokens(None, SegmentKind::Prompt, vec![1], 0, None)
            .unwrap();
        let s = t
            .push_sampled(
                Some(p),
                vec![4, 5],
                vec![f32::NEG_INFINITY, -0.5],
                vec![1, 1],
                1,
            )
            .unwrap();
        t.set_branch("main", s).unwrap();
        let back = Trajectory::from_json(&t.to_json().unwrap()).unwrap();
        assert_eq!(back, t);
    }
}

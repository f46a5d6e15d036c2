//! Episodes: what came of running a task — the conversation, the token-level trajectory,
//! the verdict and the outcome — and how they are stored and loaded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::message::{Message, ToolSpec};
use crate::task::Task;
use crate::thinking::TurnDecision;
use crate::trajectory::{SegmentId, Trajectory, TrajectoryError};
use crate::verify::{MonitorFlag, Verdict};

/// Why an episode ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum Termination {
    /// The agent gave its final answer (or the environment declared the episode done).
    Finished,
    /// The turn limit was reached.
    TurnLimit,
    /// The context or generation token limit was reached.
    TokenLimit,
    /// The wall-clock limit was reached.
    TimeLimit,
    /// The model produced an empty reply.
    EmptyReply,
    /// The environment, policy or template failed; the detail says how.
    Error(String),
}

/// A recoverable or fatal problem during an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeError {
    /// `tool`, `parse`, `policy`, `env`, `verifier`, `template`, ...
    pub source: String,
    pub message: String,
    /// Assistant turn it happened in.
    pub turn: u32,
    /// Whether the episode went on afterwards.
    pub recovered: bool,
}

/// Wall-clock timings, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub total_ms: f64,
    pub policy_ms: f64,
    pub env_ms: f64,
    pub verify_ms: f64,
}

/// Token counts of the main line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCounts {
    pub prompt: usize,
    pub sampled: usize,
    pub observation: usize,
    pub forced: usize,
    /// Sampled tokens inside reasoning (`<think>`) blocks.
    pub thinking: usize,
}

/// What came of an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeOutcome {
    pub reward: f64,
    /// Named reward parts (e.g. `tests`, `format`, `penalty`).
    #[serde(default)]
    pub reward_components: BTreeMap<String, f64>,
    /// Fraction of checks passed or sub-goals reached, in [0, 1].
    pub progress: f64,
    /// Whether the task was solved (all checks passed, no withholding flag).
    pub success: bool,
    pub termination: Termination,
    pub turns: u32,
    /// Tool calls made, and how many of them failed.
    pub tool_calls: u32,
    pub tool_errors: u32,
    #[serde(default)]
    pub flags: Vec<MonitorFlag>,
    #[serde(default)]
    pub errors: Vec<EpisodeError>,
    pub timings: Timings,
    pub tokens: TokenCounts,
    /// The agent's final answer, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_answer: Option<String>,
    /// One record per assistant turn: its tokens by kind and its thinking decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_turn: Vec<TurnRecord>,
}

/// What one assistant turn spent and decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// 1-based assistant turn.
    pub turn: u32,
    /// Sampled tokens inside the thought (up to and including the closing tag).
    pub thinking_tokens: usize,
    /// Sampled tokens after the thought (answer and tool calls).
    pub answer_tokens: usize,
    /// Tokens enact inserted into the turn (opening or stop-thinking text, end-of-turn).
    pub forced_tokens: usize,
    /// Tokens of what the world answered after the turn (tool results, user turns).
    pub observation_tokens: usize,
    pub tool_calls: u32,
    pub tool_errors: u32,
    /// The thinking decision the turn ran under (absent in `free` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<TurnDecision>,
    /// The backend that sampled the turn when routing between two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The thought reached its budget and was closed by forced stop-thinking text.
    #[serde(default)]
    pub budget_hit: bool,
    /// Times the continue text was forced because the thought closed below its minimum.
    #[serde(default)]
    pub continued: u32,
}

/// One finished episode as stored in `trajectories.jsonl`: the task, the readable
/// conversation, the token-level trajectory, the verdict and the outcome.
///
/// Nothing is stored twice: the episode's id and format version are its trajectory's
/// ([`Episode::id`], `trajectory.format_version`), its task id is `task.id`. Version-1 files
/// written before this was so also carry top-level `format_version` and `id` copies and a
/// `trajectory.task_id`; they are ignored on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub task: Task,
    /// The conversation as parsed messages (a view; the trajectory is the truth).
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub trajectory: Trajectory,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    pub outcome: EpisodeOutcome,
    /// Sub-agents this episode's agent called (teams of agents, `docs/multi-agent.md`), each a
    /// whole episode in its own tokenizer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildEpisode>,
}

/// A sub-agent's episode and where its parent called it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildEpisode {
    /// The role the child played.
    pub role: String,
    /// The id of the parent's tool call that started it.
    pub call_id: String,
    /// The parent's assistant turn that made the call.
    pub parent_turn: u32,
    /// The parent's sampled segment holding the call, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_segment: Option<SegmentId>,
    pub episode: Episode,
}

/// One agent of an episode tree ([`Episode::agents`]).
#[derive(Debug, Clone, Copy)]
pub struct AgentNode<'a> {
    /// 0 for the root, 1 for its children, ...
    pub depth: usize,
    /// The role (`None` for the root).
    pub role: Option<&'a str>,
    /// The parent's call id (`None` for the root).
    pub call_id: Option<&'a str>,
    pub episode: &'a Episode,
}

/// Totals over an episode tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeTotals {
    /// Agents in the tree (1 for a single agent).
    pub agents: usize,
    pub tokens: TokenCounts,
    pub turns: u32,
    pub tool_calls: u32,
    pub tool_errors: u32,
    /// The largest context (main-line tokens) any one agent had.
    pub peak_context: usize,
}

impl TokenCounts {
    /// Every token on the main line (the agent's final context length).
    pub fn context(&self) -> usize {
        self.prompt + self.sampled + self.observation + self.forced
    }
}

/// Why a stored episode cannot be loaded.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EpisodeFormatError {
    #[error(
        "episode format version {found} is not supported (this enact reads version {supported}); re-record the run or upgrade enact"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("not a valid episode (JSON): {0}")]
    Json(String),
    #[error("the episode's trajectory is invalid: {0}")]
    Trajectory(TrajectoryError),
}

impl From<TrajectoryError> for EpisodeFormatError {
    fn from(e: TrajectoryError) -> Self {
        match e {
            TrajectoryError::UnsupportedVersion { found, supported } => {
                EpisodeFormatError::UnsupportedVersion { found, supported }
            }
            e => EpisodeFormatError::Trajectory(e),
        }
    }
}

impl Episode {
    /// An episode that never ran (its environment or agent could not be made): no tokens,
    /// no reward, `Termination::Error(why)`, the error recorded under `source`.
    pub fn failed(task: &Task, episode_id: &str, source: &str, why: String) -> Episode {
        let mut trajectory = Trajectory::new(episode_id, "none");
        trajectory.token_exact = false;
        Episode {
            task: task.clone(),
            messages: Vec::new(),
            tools: Vec::new(),
            trajectory,
            verdict: None,
            outcome: EpisodeOutcome {
                reward: 0.0,
                reward_components: BTreeMap::new(),
                progress: 0.0,
                success: false,
                termination: Termination::Error(why.clone()),
                turns: 0,
                tool_calls: 0,
                tool_errors: 0,
                flags: Vec::new(),
                errors: vec![EpisodeError {
                    source: source.into(),
                    message: why,
                    turn: 0,
                    recovered: false,
                }],
                timings: Timings::default(),
                tokens: TokenCounts::default(),
                final_answer: None,
                per_turn: Vec::new(),
            },
            children: Vec::new(),
        }
    }

    /// Every agent of the tree, depth first, parents before their children.
    pub fn agents(&self) -> Vec<AgentNode<'_>> {
        fn walk<'a>(node: AgentNode<'a>, out: &mut Vec<AgentNode<'a>>) {
            out.push(node);
            for c in &node.episode.children {
                walk(
                    AgentNode {
                        depth: node.depth + 1,
                        role: Some(&c.role),
                        call_id: Some(&c.call_id),
                        episode: &c.episode,
                    },
                    out,
                );
            }
        }
        let mut out = Vec::new();
        walk(
            AgentNode {
                depth: 0,
                role: None,
                call_id: None,
                episode: self,
            },
            &mut out,
        );
        out
    }

    /// Token counts, turns and tool calls summed over the tree; the peak context of any
    /// one agent.
    pub fn tree_totals(&self) -> TreeTotals {
        let mut t = TreeTotals::default();
        for a in self.agents() {
            let o = &a.episode.outcome;
            t.agents += 1;
            t.tokens.prompt += o.tokens.prompt;
            t.tokens.sampled += o.tokens.sampled;
            t.tokens.observation += o.tokens.observation;
            t.tokens.forced += o.tokens.forced;
            t.tokens.thinking += o.tokens.thinking;
            t.turns += o.turns;
            t.tool_calls += o.tool_calls;
            t.tool_errors += o.tool_errors;
            t.peak_context = t.peak_context.max(o.tokens.context());
        }
        t
    }

    /// The episode's id (its trajectory's).
    pub fn id(&self) -> &str {
        &self.trajectory.id
    }

    /// Checks the format version and the trajectory's structure.
    /// Checks every trajectory of the tree.
    pub fn validate(&self) -> Result<(), EpisodeFormatError> {
        self.trajectory.validate()?;
        for c in &self.children {
            c.episode.validate()?;
        }
        Ok(())
    }

    pub fn to_json(&self) -> Result<String, EpisodeFormatError> {
        serde_json::to_string(self).map_err(|e| EpisodeFormatError::Json(e.to_string()))
    }

    /// Parses and validates one stored episode (one line of `trajectories.jsonl`). A file
    /// of another format version is reported as such, even when it does not parse.
    pub fn from_json(s: &str) -> Result<Self, EpisodeFormatError> {
        match serde_json::from_str::<Episode>(s) {
            Ok(episode) => {
                episode.validate()?;
                Ok(episode)
            }
            Err(e) => match stored_version(s) {
                Some(found) if found != crate::FORMAT_VERSION => {
                    Err(EpisodeFormatError::UnsupportedVersion {
                        found,
                        supported: crate::FORMAT_VERSION,
                    })
                }
                _ => Err(EpisodeFormatError::Json(e.to_string())),
            },
        }
    }
}

/// The format version of a stored episode that may not parse as this version's `Episode`.
fn stored_version(s: &str) -> Option<u32> {
    #[derive(Deserialize)]
    struct VersionOnly {
        format_version: u32,
    }
    #[derive(Deserialize)]
    struct EpisodeVersion {
        trajectory: VersionOnly,
    }
    serde_json::from_str::<EpisodeVersion>(s)
        .ok()
        .map(|e| e.trajectory.format_version)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::trajectory::SegmentKind;

    fn episode() -> Episode {
        let mut trajectory = Trajectory::new("ep-1", "bytes");
        let p = trajectory
            .push_tokens(None, SegmentKind::Prompt, vec![1, 2], 0, None)
            .unwrap();
        let s = trajectory
            .push_sampled(Some(p), vec![3], vec![-0.5], vec![0], 1)
            .unwrap();
        trajectory.set_branch("main", s).unwrap();
        Episode {
            task: Task {
                id: "task-1".into(),
                prompt: "2+2?".into(),
                env: serde_json::Value::Null,
                hidden: None,
                split: None,
                metadata: Default::default(),
                thinking: None,
            },
            messages: vec![Message::user("2+2?"), Message::assistant("4")],
            tools: Vec::new(),
            trajectory,
            verdict: None,
            outcome: EpisodeOutcome {
                reward: 0.0,
                reward_components: BTreeMap::new(),
                progress: 0.0,
                success: false,
                termination: Termination::Finished,
                turns: 1,
                tool_calls: 0,
                tool_errors: 0,
                flags: Vec::new(),
                errors: Vec::new(),
                timings: Timings::default(),
                tokens: TokenCounts::default(),
                final_answer: Some("4".into()),
                per_turn: Vec::new(),
            },
            children: Vec::new(),
        }
    }

    fn json_value(ep: &Episode) -> serde_json::Value {
        serde_json::from_str(&ep.to_json().unwrap()).unwrap()
    }

    #[test]
    fn ids_and_version_are_stored_once() {
        let ep = episode();
        assert_eq!(ep.id(), "ep-1");
        let v = json_value(&ep);
        assert!(
            v.get("id").is_none() && v.get("format_version").is_none(),
            "{v}"
        );
        assert!(v["trajectory"].get("task_id").is_none(), "{v}");
        assert_eq!(v["trajectory"]["format_version"], crate::FORMAT_VERSION);
        assert_eq!(Episode::from_json(&ep.to_json().unwrap()).unwrap(), ep);
    }

    #[test]
    fn a_tree_round_trips_and_sums_over_its_agents() {
        let mut root = episode();
        root.outcome.tokens.prompt = 10;
        root.outcome.tool_calls = 2;
        let mut child = episode();
        child.trajectory.id = "ep-1/call_0".into();
        child.outcome.tokens.prompt = 30;
        child.outcome.tool_calls = 1;
        let mut grandchild = episode();
        grandchild.outcome.tokens.sampled = 5;
        child.children.push(ChildEpisode {
            role: "reader".into(),
            call_id: "call_9".into(),
            parent_turn: 1,
            parent_segment: None,
            episode: grandchild,
        });
        root.children.push(ChildEpisode {
            role: "researcher".into(),
            call_id: "call_0".into(),
            parent_turn: 1,
            parent_segment: Some(SegmentId(1)),
            episode: child,
        });
        let back = Episode::from_json(&root.to_json().unwrap()).unwrap();
        assert_eq!(back, root);
        let t = root.tree_totals();
        assert_eq!(t.agents, 3);
        assert_eq!(t.tokens.prompt, 40);
        assert_eq!(t.tokens.sampled, 5);
        assert_eq!(t.tool_calls, 3);
        assert_eq!(t.peak_context, 30);
        let agents = root.agents();
        assert_eq!(agents[1].role, Some("researcher"));
        assert_eq!(agents[2].depth, 2);
        // A single episode stores no children field.
        assert!(json_value(&episode()).get("children").is_none());
        // A broken child trajectory is refused like a broken root.
        let mut bad = root.clone();
        bad.children[0].episode.trajectory.segments[1]
            .logprobs
            .clear();
        assert!(Episode::from_json(&bad.to_json().unwrap()).is_err());
    }

    #[test]
    fn version_one_files_with_duplicated_ids_still_load() {
        let ep = episode();
        let mut v = json_value(&ep);
        v["format_version"] = 1.into();
        v["id"] = "ep-1".into();
        v["trajectory"]["task_id"] = "task-1".into();
        assert_eq!(Episode::from_json(&v.to_string()).unwrap(), ep);
    }

    #[test]
    fn another_format_version_is_refused_on_load() {
        let mut ep = episode();
        ep.trajectory.format_version = crate::FORMAT_VERSION + 1;
        let want = EpisodeFormatError::UnsupportedVersion {
            found: crate::FORMAT_VERSION + 1,
            supported: crate::FORMAT_VERSION,
        };
        assert_eq!(
            Episode::from_json(&ep.to_json().unwrap()),
            Err(want.clone())
        );
        // Also when the newer format no longer parses as this one.
        let mut v = json_value(&ep);
        v["outcome"] = serde_json::json!({"renamed": true});
        assert_eq!(Episode::from_json(&v.to_string()), Err(want));
        assert!(matches!(
            Episode::from_json("{\"task\": 1"),
            Err(EpisodeFormatError::Json(_))
        ));
    }

    #[test]
    fn an_invalid_trajectory_is_refused_on_load() {
        let mut ep = episode();
        ep.trajectory.segments[1].logprobs.clear();
        assert!(matches!(
            Episode::from_json(&ep.to_json().unwrap()),
            Err(EpisodeFormatError::Trajectory(_))
        ));
    }
}

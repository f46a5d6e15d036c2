//! Tasks (what an episode is asked to do) and episode outcomes (what came of it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One task. Environments interpret `env`; `hidden` points at data the agent must never see
/// (hidden tests, reference answers), which only verifiers read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    /// The user's request.
    pub prompt: String,
    /// Environment name and its parameters, e.g. `{"kind": "calc", ...}`.
    #[serde(default)]
    pub env: serde_json::Value,
    /// Reference to hidden data: a path or an opaque id resolved by the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<String>,
    /// `train` / `test` / ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

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

/// A suspicious behaviour noticed by a monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorFlag {
    /// Monitor name, e.g. `test-file-touched`.
    pub monitor: String,
    /// Cheat-vector number(s) from the red-team catalogue this relates to, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vectors: Vec<u32>,
    pub detail: String,
    /// What the flag did to the reward: `withheld`, `penalised`, `recorded`.
    pub action: String,
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
}

/// One finished episode as stored in `trajectories.jsonl`: the task, the readable
/// conversation, the token-level trajectory, the verdict and the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub format_version: u32,
    pub id: String,
    pub task: Task,
    /// The conversation as parsed messages (a view; the trajectory is the truth).
    pub messages: Vec<crate::message::Message>,
    pub tools: Vec<crate::message::ToolSpec>,
    pub trajectory: crate::trajectory::Trajectory,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::verify::Verdict>,
    pub outcome: EpisodeOutcome,
}

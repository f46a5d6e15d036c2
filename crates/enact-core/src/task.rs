//! Tasks: what an episode is asked to do.

use serde::{Deserialize, Serialize};

use crate::thinking::ThinkingMode;

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
    /// The thinking mode this task asks for (task files' `thinking`, remote task lists);
    /// it overrides the agent's default for the episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingMode>,
}

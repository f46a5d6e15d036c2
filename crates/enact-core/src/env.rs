//! The environment seam.
//!
//! An episode is `reset(task)` → (`step(action)` → outcome)* → `submission()` → `close()`.
//! An action is a tool call or an assistant message; the environment answers with a tool
//! result, a new user turn (user simulators, multi-turn conversations in the style of
//! τ-bench or BFCL multi-turn), or the end of the episode.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::episode::ChildEpisode;
use crate::message::{Message, ToolCall, ToolSpec};
use crate::task::Task;

/// The first observation of an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reset {
    /// The opening messages (usually a system prompt and the user's request).
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
}

/// What the agent does in one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Action {
    ToolCall(ToolCall),
    /// An assistant message without tool calls: a final answer or a reply to the user.
    Message {
        content: String,
    },
}

/// A tool's answer. Errors are observations too: the model reads them and recovers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub call_id: String,
    pub name: String,
    pub content: String,
    pub is_error: bool,
}

/// The environment's answer to an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum StepOutcome {
    ToolResult(ToolResult),
    /// The (simulated) user speaks again; the episode goes on.
    UserTurn {
        content: String,
    },
    /// The episode is over.
    Done,
}

/// What the verifier grades once the agent is done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub final_answer: Option<String>,
    /// The agent's workspace, for file- and code-based checks.
    pub workspace: Option<PathBuf>,
    /// The environment's final state (stateful APIs).
    pub state: Option<serde_json::Value>,
    /// The conversation as the environment saw it.
    pub messages: Vec<Message>,
}

#[derive(Debug, Error)]
pub enum EnvError {
    #[error("environment setup failed: {0}")]
    Setup(String),
    #[error("environment step failed: {0}")]
    Step(String),
    #[error("environment has not been reset; call reset(task) first")]
    NotReset,
    #[error("environment I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("remote environment error: {0}")]
    Remote(String),
}

/// An environment the agent acts in.
#[async_trait]
pub trait Environment: Send {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError>;
    /// One action. Tool failures (unknown tool, bad arguments, a tool that errors) are
    /// `Ok(StepOutcome::ToolResult { is_error: true, .. })`, not `Err`: `Err` means the
    /// environment itself broke.
    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError>;
    /// What the verifier will grade.
    async fn submission(&mut self) -> Result<Submission, EnvError>;
    async fn close(&mut self) -> Result<(), EnvError>;

    /// The tool calls of one reply. An environment that can run calls at once (sub-agents,
    /// `enact-team`) overrides this; the default steps them one after another and stops at
    /// the first `Err`. Returns one result per action, in order (fewer after an `Err`).
    async fn step_all(&mut self, actions: Vec<Action>) -> Vec<Result<StepOutcome, EnvError>> {
        let mut out = Vec::with_capacity(actions.len());
        for action in actions {
            let r = self.step(action).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    /// The sub-agent episodes run since the last call (teams of agents); the agent attaches
    /// them to its episode. Environments without sub-agents have none.
    fn take_children(&mut self) -> Vec<ChildEpisode> {
        Vec::new()
    }
}

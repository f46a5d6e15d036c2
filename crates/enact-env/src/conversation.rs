//! The conversation skeleton shared by tool-using environments: opening messages, tool
//! dispatch through a [`ToolBox`], the final answer and the submission built from them.

use std::path::PathBuf;

use enact_core::{Action, EnvError, Message, Reset, StepOutcome, Submission};
use serde_json::Value;

use crate::toolbox::ToolBox;

/// The largest final answer an environment takes. Answers are graded, logged and handed to
/// task-file verifiers in `$ENACT_FINAL_ANSWER` (Linux caps one environment string at
/// 128 KiB); a larger one ends the episode with an error instead of failing somewhere
/// downstream.
pub const MAX_FINAL_ANSWER_BYTES: usize = 64 * 1024;

/// One episode's conversation with a tool box.
///
/// `step` dispatches tool calls (recording each observation as a tool message) and takes an
/// assistant message as the final answer, ending the episode with [`StepOutcome::Done`].
#[derive(Clone, Default)]
pub struct ToolConversation {
    pub tools: ToolBox,
    pub messages: Vec<Message>,
    pub final_answer: Option<String>,
    /// Whether the episode was started (and not closed); `step` refuses otherwise.
    pub active: bool,
    /// Whether each tool call is also recorded, as an assistant message, before its result
    /// (workspace environments do: their monitors read the calls).
    pub record_calls: bool,
}

impl ToolConversation {
    pub fn new(tools: ToolBox) -> Self {
        ToolConversation {
            tools,
            ..Self::default()
        }
    }

    /// Starts an episode with a system prompt and the user's request.
    pub fn start(&mut self, system: impl Into<String>, prompt: impl Into<String>) -> Reset {
        self.messages = vec![Message::system(system), Message::user(prompt)];
        self.final_answer = None;
        self.active = true;
        Reset {
            messages: self.messages.clone(),
            tools: self.tools.specs(),
        }
    }

    /// Runs one agent action: a tool call is dispatched and its observation recorded; a
    /// message becomes the final answer and ends the episode.
    pub async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        if !self.active {
            return Err(EnvError::NotReset);
        }
        match action {
            Action::ToolCall(call) => {
                if self.record_calls {
                    let mut asked = Message::assistant("");
                    asked.tool_calls.push(call.clone());
                    self.messages.push(asked);
                }
                let r = self.tools.dispatch(&call).await;
                self.messages.push(Message::tool(
                    r.call_id.clone(),
                    r.name.clone(),
                    r.content.clone(),
                ));
                Ok(StepOutcome::ToolResult(r))
            }
            Action::Message { content } => {
                if content.len() > MAX_FINAL_ANSWER_BYTES {
                    return Err(EnvError::Step(format!(
                        "the final answer is {} bytes, more than the limit of {MAX_FINAL_ANSWER_BYTES}; answer briefly and put long output in files or tool calls",
                        content.len()
                    )));
                }
                self.messages.push(Message::assistant(content.clone()));
                self.final_answer = Some(content);
                Ok(StepOutcome::Done)
            }
        }
    }

    /// The submission of the conversation so far, with the environment's own state and
    /// workspace.
    pub fn submission(&self, state: Option<Value>, workspace: Option<PathBuf>) -> Submission {
        Submission {
            final_answer: self.final_answer.clone(),
            workspace,
            state,
            messages: self.messages.clone(),
        }
    }

    /// Ends the episode; `step` refuses until the next `start`.
    pub fn close(&mut self) {
        self.active = false;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use enact_core::{Role, ToolCall};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn skeleton_refuses_before_start_dispatches_and_finishes() {
        let mut c = ToolConversation::default();
        let msg = || Action::Message {
            content: "42".into(),
        };
        assert!(matches!(c.step(msg()).await, Err(EnvError::NotReset)));
        let reset = c.start("sys", "do it");
        assert_eq!(reset.messages.len(), 2);
        assert!(reset.tools.is_empty());
        let call = ToolCall {
            id: "c1".into(),
            name: "nope".into(),
            arguments: json!({}),
        };
        match c.step(Action::ToolCall(call)).await.unwrap() {
            StepOutcome::ToolResult(r) => assert!(r.is_error && r.call_id == "c1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.step(msg()).await.unwrap(), StepOutcome::Done));
        let sub = c.submission(Some(json!({"k": 1})), None);
        assert_eq!(sub.final_answer.as_deref(), Some("42"));
        assert_eq!(sub.messages.len(), 4);
        assert_eq!(sub.messages[2].role, Role::Tool);
        assert_eq!(sub.state, Some(json!({"k": 1})));
        c.close();
        assert!(matches!(c.step(msg()).await, Err(EnvError::NotReset)));
        // A new start forgets the previous answer.
        c.start("sys", "again");
        assert_eq!(c.submission(None, None).final_answer, None);
    }

    #[tokio::test]
    async fn recorded_calls_precede_their_results() {
        let mut c = ToolConversation {
            record_calls: true,
            ..ToolConversation::default()
        };
        c.start("sys", "do it");
        let call = ToolCall {
            id: "c1".into(),
            name: "nope".into(),
            arguments: json!({}),
        };
        c.step(Action::ToolCall(call.clone())).await.unwrap();
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.messages[2].role, Role::Assistant);
        assert_eq!(c.messages[2].tool_calls, vec![call]);
        assert_eq!(c.messages[3].role, Role::Tool);
    }

    #[tokio::test]
    async fn an_oversized_final_answer_is_a_clear_error() {
        let mut c = ToolConversation::default();
        c.start("sys", "do it");
        let huge = Action::Message {
            content: "x".repeat(10 << 20),
        };
        match c.step(huge).await {
            Err(EnvError::Step(m)) => assert!(m.contains("limit"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.final_answer, None);
        let fits = Action::Message {
            content: "x".repeat(MAX_FINAL_ANSWER_BYTES),
        };
        assert!(matches!(c.step(fits).await.unwrap(), StepOutcome::Done));
    }
}

//! The chat-template and reply-parser seams.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::message::{Message, ToolCall, ToolSpec};

/// Options of one rendering, as in Hugging Face `apply_chat_template`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenderOptions {
    pub add_generation_prompt: bool,
    /// `None` leaves the template's default.
    pub enable_thinking: Option<bool>,
}

#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("chat template error: {0}")]
    Render(String),
    #[error(
        "the chat template cannot be extended token-exactly: rendering the conversation after \
         turn {turn} does not start with its rendering before ({detail}); use a template whose \
         history does not change when turns are added"
    )]
    NotExtensible { turn: u32, detail: String },
}

/// Renders messages (and tool specifications) to the prompt text a model expects.
pub trait ChatTemplate: Send + Sync {
    fn render(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        options: &RenderOptions,
    ) -> Result<String, TemplateError>;
    /// The special token text that ends an assistant turn (`<|im_end|>`, `<|eot_id|>`).
    fn end_of_turn(&self) -> &str;
    /// A short name for logs and trajectories.
    fn name(&self) -> &str;
}

/// An assistant reply split into its parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedReply {
    pub reasoning: Option<String>,
    /// Visible text with tool-call markup removed.
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    /// Calls that could not be parsed, with the reason; they go back to the model.
    pub errors: Vec<String>,
}

/// Splits a decoded assistant reply into reasoning, content and tool calls.
pub trait ReplyParser: Send + Sync {
    /// `turn` makes tool-call ids unique within an episode.
    fn parse(&self, text: &str, turn: u32) -> ParsedReply;
    /// How a call is written in this syntax, quoted back to the model when its call fails to
    /// parse.
    fn call_syntax(&self) -> String {
        "<tool_call>{\"name\": \"TOOL\", \"arguments\": {...}}</tool_call>".into()
    }
}

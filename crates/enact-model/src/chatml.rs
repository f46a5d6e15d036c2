//! A plain ChatML chat template with Hermes-style tool calling, used by tests, by the
//! scripted policy and by models whose own template has no tool support.
//!
//! Format (documented in docs/tool-calling.md):
//! - each turn is `<|im_start|>{role}\n{content}<|im_end|>\n`;
//! - with tools, the system turn ends with a `# Tools` section listing each tool's
//!   OpenAI-style JSON inside `<tools></tools>` and the calling convention
//!   `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`;
//! - assistant reasoning renders as `<think>\n{reasoning}\n</think>\n\n` before the content;
//! - tool results render as a `tool` turn wrapping the result in `<tool_response>`.

use enact_core::{ChatTemplate, Message, RenderOptions, Role, TemplateError, ToolSpec};

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// The tool section appended to the system prompt when tools are offered.
pub fn hermes_tool_section(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        s.push('\n');
        s.push_str(&crate::pyfmt::py_json_string(&t.to_openai_json()));
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": \
         <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// Renders a tool call the way the Hermes convention (and Qwen's templates) do: the arguments
/// as Python's `json.dumps` writes them (`{"k": "v"}`, non-ASCII kept).
pub fn hermes_tool_call(name: &str, arguments: &serde_json::Value) -> String {
    format!(
        "<tool_call>\n{{\"name\": {}, \"arguments\": {}}}\n</tool_call>",
        crate::pyfmt::py_json_string(&serde_json::Value::String(name.to_string())),
        crate::pyfmt::py_json_string(arguments)
    )
}

/// The `<think>` block that opens an assistant turn with reasoning.
fn hermes_reasoning(reasoning: &str) -> String {
    format!("<think>\n{}\n</think>\n\n", reasoning.trim())
}

/// One assistant turn with optional reasoning and a single tool call, exactly as
/// [`ChatMlTemplate`] renders the message the Hermes parser reads back from it. Every
/// scripted turn (reference solutions, red-team scripts, tests) is written with this, so a
/// re-rendered conversation matches the scripted text byte for byte.
pub fn hermes_call_turn(thought: &str, name: &str, arguments: &serde_json::Value) -> String {
    let call = hermes_tool_call(name, arguments);
    if thought.trim().is_empty() {
        call
    } else {
        hermes_reasoning(thought) + &call
    }
}

/// An assistant message as text in the Hermes convention: `<think>` reasoning, the content,
/// then each tool call on its own line.
pub fn hermes_assistant_body(m: &Message) -> String {
    let mut body = String::new();
    if let Some(r) = &m.reasoning {
        body.push_str(&hermes_reasoning(r));
    }
    body.push_str(&m.content);
    for (k, c) in m.tool_calls.iter().enumerate() {
        if k > 0 || !m.content.is_empty() {
            body.push('\n');
        }
        body.push_str(&hermes_tool_call(&c.name, &c.arguments));
    }
    body
}

/// A tool result wrapped the way Hermes-style templates show it.
pub fn hermes_tool_response(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

#[derive(Debug, Clone, Default)]
pub struct ChatMlTemplate {
    /// Used when the conversation has no system message.
    pub default_system: Option<String>,
}

impl ChatTemplate for ChatMlTemplate {
    fn render(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut turn = |role: &str, body: &str| {
            out.push_str(IM_START);
            out.push_str(role);
            out.push('\n');
            out.push_str(body);
            out.push_str(IM_END);
            out.push('\n');
        };
        let has_system = messages.first().is_some_and(|m| m.role == Role::System);
        if !has_system && (self.default_system.is_some() || !tools.is_empty()) {
            let mut sys = self.default_system.clone().unwrap_or_default();
            if !tools.is_empty() {
                if !sys.is_empty() {
                    sys.push_str("\n\n");
                }
                sys.push_str(&hermes_tool_section(tools));
            }
            turn("system", &sys);
        }
        for (i, m) in messages.iter().enumerate() {
            match m.role {
                Role::System => {
                    if i != 0 {
                        return Err(TemplateError::Render(
                            "a system message is only allowed first".into(),
                        ));
                    }
                    let mut sys = m.content.clone();
                    if !tools.is_empty() {
                        sys.push_str("\n\n");
                        sys.push_str(&hermes_tool_section(tools));
                    }
                    turn("system", &sys);
                }
                Role::User => turn("user", &m.content),
                Role::Assistant => turn("assistant", &hermes_assistant_body(m)),
                Role::Tool => {
                    turn("tool", &hermes_tool_response(&m.content));
                }
            }
        }
        if options.add_generation_prompt {
            out.push_str(IM_START);
            out.push_str("assistant\n");
            if options.enable_thinking == Some(false) {
                out.push_str("<think>\n\n</think>\n\n");
            }
        }
        Ok(out)
    }

    fn end_of_turn(&self) -> &str {
        IM_END
    }

    fn name(&self) -> &str {
        "chatml-hermes"
    }
}

//! Tool calling for chat templates without tool support (SmolLM2's has none).
//!
//! [`ToolPromptTemplate`] wraps such a template and rewrites the conversation before rendering
//! (format in docs/tool-calling.md):
//! - the Hermes tool section ([`crate::chatml::hermes_tool_section`]) is appended to the system
//!   message after a blank line; without a system message one is added, holding the template's
//!   own default system prompt (found by probing the template) followed by the section;
//! - assistant turns render as `<think>\n{reasoning}\n</think>\n\n` (when there is reasoning),
//!   the content, then each call as `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`,
//!   newline-separated — exactly what [`crate::parse::HermesParser`] reads back;
//! - tool results stay `tool` messages whose content is wrapped in
//!   `<tool_response>\n…\n</tool_response>`.
//!
//! The result equals [`crate::ChatMlTemplate`] with the same default system prompt on ChatML
//! templates, so episodes look the same whichever renders them.

use std::sync::Arc;

use enact_core::{ChatTemplate, Message, RenderOptions, Role, TemplateError, ToolSpec};

use crate::chatml::{hermes_assistant_body, hermes_tool_response, hermes_tool_section};

/// Wraps a template that has no tool support with enact's Hermes-style tool prompt.
#[derive(Clone)]
pub struct ToolPromptTemplate {
    inner: Arc<dyn ChatTemplate>,
    default_system: Option<String>,
    name: String,
}

impl std::fmt::Debug for ToolPromptTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolPromptTemplate")
            .field("inner", &self.inner.name())
            .field("default_system", &self.default_system)
            .finish()
    }
}

/// Finds the system prompt a template inserts when the conversation has none, by rendering
/// with and without a marker system message.
pub fn probe_default_system(template: &dyn ChatTemplate) -> Option<String> {
    const SYS: &str = "\u{E000}enact-system\u{E000}";
    const USER: &str = "\u{E001}enact-user\u{E001}";
    let opts = RenderOptions::default();
    let with = template
        .render(&[Message::system(SYS), Message::user(USER)], &[], &opts)
        .ok()?;
    let without = template.render(&[Message::user(USER)], &[], &opts).ok()?;
    let s = with.find(SYS)?;
    let prefix = &with[..s];
    let after_sys = &with[s + SYS.len()..];
    let post = &after_sys[..after_sys.find(USER)?];
    let u = without.find(USER)?;
    let head = without[..u].strip_prefix(prefix)?;
    // `post` is the system turn's end plus the user turn's start: strip it from the end.
    let default = head.strip_suffix(post)?;
    (!default.is_empty()).then(|| default.to_string())
}

impl ToolPromptTemplate {
    /// Wraps `inner`, probing its default system prompt.
    pub fn new(inner: Arc<dyn ChatTemplate>) -> Self {
        let default_system = probe_default_system(inner.as_ref());
        let name = format!("{}+hermes-tools", inner.name());
        ToolPromptTemplate {
            inner,
            default_system,
            name,
        }
    }

    /// Sets the system prompt used when the conversation has none.
    pub fn with_default_system(mut self, system: Option<String>) -> Self {
        self.default_system = system;
        self
    }

    pub fn default_system(&self) -> Option<&str> {
        self.default_system.as_deref()
    }

    /// The conversation as the wrapped template sees it.
    pub fn rewrite(&self, messages: &[Message], tools: &[ToolSpec]) -> Vec<Message> {
        let mut out: Vec<Message> = Vec::with_capacity(messages.len() + 1);
        for m in messages {
            match m.role {
                Role::Assistant => out.push(Message::assistant(hermes_assistant_body(m))),
                Role::Tool => {
                    let mut t = m.clone();
                    t.content = hermes_tool_response(&m.content);
                    out.push(t);
                }
                _ => out.push(m.clone()),
            }
        }
        if !tools.is_empty() {
            let section = hermes_tool_section(tools);
            match out.first_mut() {
                Some(first) if first.role == Role::System => {
                    first.content = format!("{}\n\n{section}", first.content);
                }
                _ => {
                    let sys = match &self.default_system {
                        Some(d) => format!("{d}\n\n{section}"),
                        None => section,
                    };
                    out.insert(0, Message::system(sys));
                }
            }
        }
        out
    }
}

impl ChatTemplate for ToolPromptTemplate {
    fn render(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        self.inner
            .render(&self.rewrite(messages, tools), &[], options)
    }

    fn end_of_turn(&self) -> &str {
        self.inner.end_of_turn()
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{ChatMlTemplate, JinjaTemplate};
    use enact_core::ToolCall;

    const SMOL: &str = include_str!("../tests/fixtures/templates/smollm2.jinja");

    fn conversation() -> Vec<Message> {
        vec![
            Message::user("What is 2+2?"),
            Message {
                reasoning: Some("use the tool".into()),
                tool_calls: vec![ToolCall {
                    id: "c".into(),
                    name: "calculator".into(),
                    arguments: serde_json::json!({"expression": "2+2"}),
                }],
                ..Message::assistant("")
            },
            Message::tool("c", "calculator", "4"),
        ]
    }

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "calculator".into(),
            description: "Evaluate arithmetic.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
        }]
    }

    #[test]
    fn smollm2_with_tools_renders_like_chatml_hermes() {
        let smol = JinjaTemplate::new(SMOL, "smollm2").unwrap();
        let wrapped = ToolPromptTemplate::new(Arc::new(smol));
        let default = wrapped.default_system().unwrap().to_string();
        assert_eq!(
            default,
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        );
        let chatml = ChatMlTemplate {
            default_system: Some(default),
        };
        let opts = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: None,
        };
        for msgs in [
            conversation(),
            vec![Message::system("Be exact."), Message::user("hi")],
        ] {
            let a = wrapped.render(&msgs, &tools(), &opts).unwrap();
            let b = chatml.render(&msgs, &tools(), &opts).unwrap();
            assert_eq!(a, b);
        }
        let out = wrapped.render(&conversation(), &tools(), &opts).unwrap();
        assert!(out.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\n\n# Tools"));
        assert!(out.contains("<|im_start|>assistant\n<think>\nuse the tool\n</think>\n\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2+2\"}}\n</tool_call><|im_end|>"));
        assert!(out.contains("<|im_start|>tool\n<tool_response>\n4\n</tool_response><|im_end|>"));
        assert_eq!(wrapped.end_of_turn(), "<|im_end|>");
        // Without tools nothing is injected and the model's default system prompt stays.
        let plain = wrapped.render(&[Message::user("hi")], &[], &opts).unwrap();
        assert!(
            plain.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
        );
        assert!(!plain.contains("# Tools"));
    }
}

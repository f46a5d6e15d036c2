//! Token-in-token-out context building.
//!
//! The first context is the rendered opening conversation, encoded once. After each
//! assistant turn the next context is the previous tokens *exactly* (sampled tokens are never
//! re-encoded) plus the encoding of a rendered suffix: the template's text after the assistant
//! turn's end-of-turn token, the new observations, and the next generation prompt.
//!
//! How the suffix is found: the conversation with the new messages is rendered with a
//! generation prompt, with the last assistant message's content replaced by a unique marker;
//! the suffix is everything after the first end-of-turn marker that follows it. This does not
//! depend on how the template renders *earlier* history, so it works with templates that
//! legitimately rewrite history once the conversation moves on — Qwen3 drops the reasoning of
//! assistant turns before the latest user query, and renders an empty `<think></think>` only on
//! the final assistant turn. In those cases the context keeps what the model really saw and
//! sampled, and differs from a fresh rendering of the whole conversation exactly there
//! ([`Suffix::history_rewritten`]); training on the context is what is token-exact.
//!
//! Checks (a template failing them is reported as [`TemplateError::NotExtensible`]):
//! - the assistant turn must be found in the rendering and followed by an end-of-turn marker;
//! - the real rendering (without the marker) must end with the same suffix, i.e. nothing after
//!   the assistant turn depends on its content;
//! - every new message's text must appear in the suffix (a template that drops or moves
//!   observations before the assistant turn cannot be extended);
//! - the suffix must end with the generation prompt.

use enact_core::{ChatTemplate, Message, RenderOptions, Role, TemplateError, ToolSpec};

/// Stands in for the last assistant message's content while locating its turn.
const MARKER: &str = "\u{E000}enact-assistant-turn\u{E000}";

/// Renders the opening prompt (with generation prompt).
pub fn opening(
    template: &dyn ChatTemplate,
    messages: &[Message],
    tools: &[ToolSpec],
    options: &RenderOptions,
) -> Result<String, TemplateError> {
    template.render(
        messages,
        tools,
        &RenderOptions {
            add_generation_prompt: true,
            ..options.clone()
        },
    )
}

/// The text to append after an assistant turn, and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Suffix {
    /// Template text after the assistant's end-of-turn token, the new messages, and the
    /// generation prompt.
    pub text: String,
    /// The template renders earlier history differently once the new messages are added
    /// (e.g. Qwen3 dropping old reasoning): the context is still exact, but a fresh rendering
    /// of the whole conversation differs from it before this turn.
    pub history_rewritten: bool,
}

/// The text to append after an assistant turn that ended with the end-of-turn token.
/// `through_assistant` ends with the assistant message; `new_messages` follow it.
pub fn suffix_after_turn(
    template: &dyn ChatTemplate,
    through_assistant: &[Message],
    new_messages: &[Message],
    tools: &[ToolSpec],
    options: &RenderOptions,
    turn: u32,
) -> Result<String, TemplateError> {
    suffix_after_turn_detailed(
        template,
        through_assistant,
        new_messages,
        tools,
        options,
        turn,
    )
    .map(|s| s.text)
}

fn not_extensible(turn: u32, detail: impl Into<String>) -> TemplateError {
    TemplateError::NotExtensible {
        turn,
        detail: detail.into(),
    }
}

/// [`suffix_after_turn`], also telling whether the template rewrote earlier history.
pub fn suffix_after_turn_detailed(
    template: &dyn ChatTemplate,
    through_assistant: &[Message],
    new_messages: &[Message],
    tools: &[ToolSpec],
    options: &RenderOptions,
    turn: u32,
) -> Result<Suffix, TemplateError> {
    let eot = template.end_of_turn();
    if eot.is_empty() {
        return Err(not_extensible(
            turn,
            "the template has no end-of-turn marker",
        ));
    }
    let with_prompt = RenderOptions {
        add_generation_prompt: true,
        ..options.clone()
    };
    let Some(last) = through_assistant
        .last()
        .filter(|m| m.role == Role::Assistant)
    else {
        return Err(not_extensible(
            turn,
            "the conversation does not end with the assistant turn to extend",
        ));
    };

    // Locate the assistant turn with a marker content; the suffix follows its end-of-turn.
    let mut marked: Vec<Message> = through_assistant.to_vec();
    if let Some(m) = marked.last_mut() {
        m.content = MARKER.to_string();
    }
    marked.extend_from_slice(new_messages);
    let full_marked = template.render(&marked, tools, &with_prompt)?;
    let Some(at) = full_marked.find(MARKER) else {
        return Err(not_extensible(
            turn,
            "the template does not render the assistant turn's content once more messages follow",
        ));
    };
    let after_marker = &full_marked[at + MARKER.len()..];
    let Some(end) = after_marker.find(eot) else {
        return Err(not_extensible(
            turn,
            format!("no end-of-turn marker {eot:?} follows the assistant turn"),
        ));
    };
    let suffix = &after_marker[end + eot.len()..];

    // The real rendering must end the same way.
    let mut all = through_assistant.to_vec();
    all.extend_from_slice(new_messages);
    let full = template.render(&all, tools, &with_prompt)?;
    if !full.ends_with(suffix) {
        return Err(not_extensible(
            turn,
            format!(
                "what follows the assistant turn depends on its content: expected the rendering to end with {:?}",
                snippet(suffix, 0)
            ),
        ));
    }
    // Every observation must be in the suffix.
    for m in new_messages {
        let text = m.content.trim();
        if !text.is_empty() && !suffix.contains(text) {
            return Err(not_extensible(
                turn,
                format!(
                    "the new {} message {:?} is not rendered after the assistant turn",
                    m.role.as_str(),
                    snippet(text, 0)
                ),
            ));
        }
    }
    // And it must end with the generation prompt.
    let without_prompt = template.render(
        &all,
        tools,
        &RenderOptions {
            add_generation_prompt: false,
            ..options.clone()
        },
    )?;
    if let Some(prompt) = full.strip_prefix(without_prompt.as_str())
        && !suffix.ends_with(prompt)
    {
        return Err(not_extensible(
            turn,
            "the suffix does not end with the generation prompt",
        ));
    }

    // Did the template rewrite history? (Informational: the context stays exact.)
    let base = template.render(
        through_assistant,
        tools,
        &RenderOptions {
            add_generation_prompt: false,
            ..options.clone()
        },
    )?;
    let base_through_eot = base.rfind(eot).map(|i| &base[..i + eot.len()]);
    let history_rewritten = match base_through_eot {
        Some(prefix) => !(full.starts_with(prefix) && full.len() == prefix.len() + suffix.len()),
        None => true,
    };
    if history_rewritten {
        tracing::debug!(
            turn,
            template = template.name(),
            last_content = %snippet(&last.content, 0),
            "the template rewrites earlier turns; the context keeps what the model saw"
        );
    }
    Ok(Suffix {
        text: suffix.to_string(),
        history_rewritten,
    })
}

fn snippet(s: &str, at: usize) -> String {
    let mut start = at.saturating_sub(20);
    while start > 0 && !s.is_char_boundary(start) {
        start -= 1;
    }
    s[start..].chars().take(60).collect()
}

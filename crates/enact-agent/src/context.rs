//! Token-in-token-out context building.
//!
//! The first context is the rendered opening conversation, encoded once. After each
//! assistant turn the next context is the previous tokens *exactly* (sampled tokens are never
//! re-encoded) plus the encoding of a rendered suffix: the template's text after the end of
//! the assistant turn, plus the new observations and the next generation prompt.
//!
//! The suffix is computed from two renderings: `base` = the conversation through the
//! assistant turn without a generation prompt, and `full` = the conversation with the new
//! messages and a generation prompt. `full` must start with `base` (else the template
//! rewrites history and cannot be extended token-exactly — reported as
//! [`TemplateError::NotExtensible`]). The part of `base` after its last end-of-turn marker
//! (e.g. the `\n` after `<|im_end|>`) is template text the model did not sample; it is
//! prepended to the suffix.

use enact_core::{ChatTemplate, Message, RenderOptions, TemplateError, ToolSpec};

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
    let base = template.render(
        through_assistant,
        tools,
        &RenderOptions {
            add_generation_prompt: false,
            ..options.clone()
        },
    )?;
    let mut all = through_assistant.to_vec();
    all.extend_from_slice(new_messages);
    let full = template.render(
        &all,
        tools,
        &RenderOptions {
            add_generation_prompt: true,
            ..options.clone()
        },
    )?;
    let Some(delta) = full.strip_prefix(base.as_str()) else {
        let at = base
            .bytes()
            .zip(full.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        return Err(TemplateError::NotExtensible {
            turn,
            detail: format!(
                "the renderings differ from byte {at}: before {:?}, after {:?}",
                snippet(&base, at),
                snippet(&full, at)
            ),
        });
    };
    let eot = template.end_of_turn();
    let tail = match base.rfind(eot) {
        Some(i) => &base[i + eot.len()..],
        None => "",
    };
    Ok(format!("{tail}{delta}"))
}

fn snippet(s: &str, at: usize) -> String {
    let mut start = at.saturating_sub(20);
    while start > 0 && !s.is_char_boundary(start) {
        start -= 1;
    }
    s[start..].chars().take(40).collect()
}

//! How a template's model family thinks: [`thinking_style`] reads it off the template.

use enact_core::{ChatTemplate, Message, RenderOptions, ThinkingStyle};

/// The thinking style of a chat template, found by what it renders:
///
/// - a generation prompt that ends inside an opened `<think>` block: a thinking-only model
///   (Qwen3-Thinking-2507), off = forced closing of the block;
/// - a generation prompt that always holds an empty think block: an instruct-only model
///   (Qwen3-Instruct-2507), nothing to switch off;
/// - a template whose generation prompt changes with `enable_thinking=false`: a hybrid model
///   (Qwen3) with the hard switch and the `/think` / `/no_think` soft switches;
/// - a template that mentions `<think>` otherwise: native thinking, off = an empty block;
/// - anything else: a model without native thinking; enact prompts thoughts by opening the
///   block itself.
pub fn thinking_style(template: &dyn ChatTemplate, source: Option<&str>) -> ThinkingStyle {
    let probe = [Message::user("Hi")];
    let render = |enable: Option<bool>| {
        template
            .render(
                &probe,
                &[],
                &RenderOptions {
                    add_generation_prompt: true,
                    enable_thinking: enable,
                },
            )
            .unwrap_or_default()
    };
    let default = render(None);
    let off = render(Some(false));
    let tail = default.trim_end_matches([' ', '\n']);
    if tail.ends_with("<think>") {
        return ThinkingStyle::thinking_only();
    }
    if tail.ends_with("</think>") {
        return ThinkingStyle::instruct_only();
    }
    if off != default && off.contains("</think>") {
        return ThinkingStyle::qwen3_hybrid();
    }
    if source.is_some_and(|s| s.contains("<think>")) {
        return ThinkingStyle {
            native: true,
            off: enact_core::OffSwitch::EmptyBlock,
            ..ThinkingStyle::prompted()
        };
    }
    ThinkingStyle::prompted()
}

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
//!
//! In the agent loop, [`SuffixRenderer`] finds the same suffix while rendering only a window
//! of the conversation (the opening, the assistant turn and the new messages), so that a step
//! costs the same however long the episode is; see there for how it stays exact.

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

/// [`suffix_after_turn`], also telling whether the template rewrote earlier history (which
/// needs a rendering of the whole history: for tests and diagnostics, not for every step).
pub fn suffix_after_turn_detailed(
    template: &dyn ChatTemplate,
    through_assistant: &[Message],
    new_messages: &[Message],
    tools: &[ToolSpec],
    options: &RenderOptions,
    turn: u32,
) -> Result<Suffix, TemplateError> {
    let found = find_suffix(
        template,
        through_assistant,
        new_messages,
        tools,
        options,
        turn,
    )?;
    let eot = template.end_of_turn();
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
        Some(prefix) => {
            !(found.rendered.starts_with(prefix)
                && found.rendered.len() == prefix.len() + found.suffix.len())
        }
        None => true,
    };
    if history_rewritten {
        let last = through_assistant.last().map_or("", |m| m.content.as_str());
        tracing::debug!(
            turn,
            template = template.name(),
            last_content = %snippet(last, 0),
            "the template rewrites earlier turns; the context keeps what the model saw"
        );
    }
    Ok(Suffix {
        text: found.suffix,
        history_rewritten,
    })
}

/// A suffix and the real rendering (with generation prompt) it was checked against.
struct Found {
    suffix: String,
    rendered: String,
}

/// Locates and checks the suffix in renderings of `through_assistant` + `new_messages` (the
/// whole conversation, or a window of it). See the module docs for the checks.
fn find_suffix(
    template: &dyn ChatTemplate,
    through_assistant: &[Message],
    new_messages: &[Message],
    tools: &[ToolSpec],
    options: &RenderOptions,
    turn: u32,
) -> Result<Found, TemplateError> {
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
    if through_assistant.last().map(|m| m.role) != Some(Role::Assistant) {
        return Err(not_extensible(
            turn,
            "the conversation does not end with the assistant turn to extend",
        ));
    }

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
    Ok(Found {
        suffix: suffix.to_string(),
        rendered: full,
    })
}

/// Finds the suffixes of one episode while rendering only what is new, so that a step costs
/// the same at turn 40 as at turn 2.
///
/// Rendering the whole conversation after every turn (several times, for the checks) makes
/// the work per step grow with the episode, and quadratic over it. Instead the suffix is found
/// in a rendering of a *window*: the opening messages (where templates take the system prompt,
/// the tools and other global facts from), the assistant turn just sampled, and the new
/// messages. Chat templates render what follows an assistant turn from those. The first time
/// the window leaves messages out, its suffix is compared with the one of the whole
/// conversation; a template that renders more than the window into it (turn numbers, say)
/// — or that fails on the window — is rendered in full for the rest of the episode. The
/// template stays the source of truth either way.
#[derive(Debug, Clone)]
pub struct SuffixRenderer {
    opening: usize,
    mode: WindowMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowMode {
    /// The window has not yet been compared with a full rendering.
    Unchecked,
    /// The window gave the same suffix as the whole conversation.
    Window,
    /// The template needs the whole conversation.
    Full,
}

impl SuffixRenderer {
    /// For an episode that opened with `opening_messages` messages (the environment's reset).
    pub fn new(opening_messages: usize) -> Self {
        SuffixRenderer {
            opening: opening_messages,
            mode: WindowMode::Unchecked,
        }
    }

    /// Whether the template was found to need the whole conversation.
    pub fn renders_in_full(&self) -> bool {
        self.mode == WindowMode::Full
    }

    /// The text to append after the assistant turn that ends `through_assistant`, as
    /// [`suffix_after_turn`] gives it.
    pub fn suffix(
        &mut self,
        template: &dyn ChatTemplate,
        through_assistant: &[Message],
        new_messages: &[Message],
        tools: &[ToolSpec],
        options: &RenderOptions,
        turn: u32,
    ) -> Result<String, TemplateError> {
        let full = || {
            find_suffix(
                template,
                through_assistant,
                new_messages,
                tools,
                options,
                turn,
            )
            .map(|f| f.suffix)
        };
        // The opening, then the assistant turn: nothing to leave out yet.
        if through_assistant.len() <= self.opening + 1 || self.mode == WindowMode::Full {
            return full();
        }
        let mut window: Vec<Message> = through_assistant[..self.opening].to_vec();
        window.extend(through_assistant.last().cloned());
        let windowed =
            find_suffix(template, &window, new_messages, tools, options, turn).map(|f| f.suffix);
        match windowed {
            Ok(suffix) if self.mode == WindowMode::Window => Ok(suffix),
            // The first time messages are left out: compare with the whole conversation.
            Ok(suffix) => {
                let expected = full()?;
                if suffix == expected {
                    self.mode = WindowMode::Window;
                } else {
                    self.full_from_now(template, turn, "it renders more than the window");
                }
                Ok(expected)
            }
            Err(e) => {
                let expected = full()?;
                self.full_from_now(template, turn, &e.to_string());
                Ok(expected)
            }
        }
    }

    fn full_from_now(&mut self, template: &dyn ChatTemplate, turn: u32, why: &str) {
        self.mode = WindowMode::Full;
        tracing::debug!(
            turn,
            template = template.name(),
            why,
            "the suffix after an assistant turn needs the whole conversation; rendering it in full"
        );
    }
}

fn snippet(s: &str, at: usize) -> String {
    let mut start = at.saturating_sub(20);
    while start > 0 && !s.is_char_boundary(start) {
        start -= 1;
    }
    s[start..].chars().take(60).collect()
}

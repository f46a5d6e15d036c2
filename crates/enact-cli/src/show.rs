//! Printing episodes for people: the token-level trajectory segment by segment (decoded),
//! then the outcome.

use std::io::IsTerminal;

use enact_core::{Episode, SegmentKind, Tokenizer};

fn paint(kind: SegmentKind, text: &str, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let code = match kind {
        SegmentKind::Prompt => "2",       // dim
        SegmentKind::Sampled => "32",     // green
        SegmentKind::Observation => "36", // cyan
        SegmentKind::Forced => "33",      // yellow
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The trajectory of the main branch, each segment headed by its kind and token count.
pub fn render_trajectory(ep: &Episode, tokenizer: &dyn Tokenizer) -> String {
    let color = std::io::stdout().is_terminal();
    let mut out = String::new();
    let Some(leaf) = ep.trajectory.main_leaf() else {
        return "(empty trajectory)\n".into();
    };
    let Ok(path) = ep.trajectory.path(leaf) else {
        return "(trajectory is malformed)\n".into();
    };
    for seg in path {
        let text = tokenizer
            .decode(&seg.tokens)
            .unwrap_or_else(|e| format!("<undecodable: {e}>"));
        let head = format!(
            "── {:?} · turn {} · {} tokens{}{} ──",
            seg.kind,
            seg.turn,
            seg.tokens.len(),
            if seg.loss_mask { " · loss" } else { "" },
            seg.label
                .as_ref()
                .map(|l| format!(" · {l}"))
                .unwrap_or_default()
        );
        out.push_str(&paint(seg.kind, &head, color));
        out.push('\n');
        out.push_str(&paint(seg.kind, &text, color));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// A short summary of the outcome.
pub fn render_outcome(ep: &Episode) -> String {
    let o = &ep.outcome;
    let mut s = format!(
        "task {} · reward {:.3} · progress {:.2} · success {} · {:?} · {} turns · {} tool calls ({} failed) · tokens: {} prompt, {} sampled, {} observation, {} forced, {} thinking · {:.0} ms\n",
        ep.task.id,
        o.reward,
        o.progress,
        o.success,
        o.termination,
        o.turns,
        o.tool_calls,
        o.tool_errors,
        o.tokens.prompt,
        o.tokens.sampled,
        o.tokens.observation,
        o.tokens.forced,
        o.tokens.thinking,
        o.timings.total_ms
    );
    if let Some(v) = &ep.verdict {
        for c in &v.checks {
            s.push_str(&format!(
                "  check {:<24} {:?} {}\n",
                c.name, c.status, c.detail
            ));
        }
    }
    for e in &o.errors {
        s.push_str(&format!(
            "  {} error (turn {}{}): {}\n",
            e.source,
            e.turn,
            if e.recovered { ", recovered" } else { "" },
            e.message
        ));
    }
    for f in &o.flags {
        s.push_str(&format!(
            "  flag {} ({}): {}\n",
            f.monitor, f.action, f.detail
        ));
    }
    s
}

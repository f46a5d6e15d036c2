//! `enact show`, and printing episodes for people: the token-level trajectory segment by
//! segment (decoded), then the outcome.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use enact_core::{Episode, SegmentKind, Tokenizer};

use crate::model::{self, ModelSpec};
use crate::rundir;
use crate::settings::TokenizerSetting;

#[derive(Args)]
pub struct ShowArgs {
    /// A run directory or a trajectories.jsonl file.
    path: PathBuf,
    /// Only the episode with this index (0 = the first; `show` numbers them).
    #[arg(long)]
    index: Option<usize>,
    /// The model whose tokenizer decodes the trajectories (`default`, a path, or
    /// `http://…` with --tokenizer). Without it: the byte tokenizer or the default model,
    /// whichever the trajectory names; otherwise only the messages are shown.
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    tokenizer: TokenizerSetting,
}

pub fn run(args: ShowArgs) -> Result<()> {
    let episodes = rundir::read_episodes(&args.path)?;
    if episodes.is_empty() {
        bail!(
            "{} has no finished episode yet: the run is still going, or it stopped before its first episode ended (see log.txt beside it)",
            args.path.display()
        );
    }
    if let Some(i) = args.index
        && i >= episodes.len()
    {
        bail!(
            "--index {i} is out of range: {} has {} episode(s), indexes 0 to {}",
            args.path.display(),
            episodes.len(),
            episodes.len() - 1
        );
    }
    // Decoders to try, matched by the identity each trajectory records.
    let mut decoders: Vec<Box<dyn Tokenizer>> = vec![Box::new(enact_model::ByteTokenizer::new())];
    let needs_model = episodes.iter().any(|e| {
        e.agents()
            .iter()
            .any(|a| a.episode.trajectory.tokenizer != decoders[0].identity())
    });
    if needs_model {
        let spec = ModelSpec::parse(args.model.as_deref().unwrap_or("default"), None)?;
        decoders.push(model::display_tokenizer(&spec, &args.tokenizer));
    }
    for (i, ep) in episodes.iter().enumerate() {
        if args.index.is_some_and(|want| want != i) {
            continue;
        }
        println!("═══ episode {i} · {} ═══", ep.id());
        print!("{}", render_agent(ep, &decoders));
        if !ep.children.is_empty() {
            print!("{}", render_tree(ep));
            for a in ep.agents().iter().skip(1) {
                println!(
                    "═══ episode {i} · sub-agent {} · role {} · depth {} ═══",
                    a.call_id.unwrap_or_default(),
                    a.role.unwrap_or_default(),
                    a.depth
                );
                print!("{}", render_agent(a.episode, &decoders));
            }
        }
    }
    Ok(())
}

/// One agent's trajectory (decoded when its tokenizer is at hand) and outcome.
fn render_agent(ep: &Episode, decoders: &[Box<dyn Tokenizer>]) -> String {
    let mut out = match decoders
        .iter()
        .find(|d| d.identity() == ep.trajectory.tokenizer)
    {
        Some(d) => render_trajectory(ep, d.as_ref()),
        None => {
            let mut s = format!(
                "(tokenizer {} not available: pass --model to decode tokens; showing messages)\n",
                ep.trajectory.tokenizer
            );
            for m in &ep.messages {
                s.push_str(&format!("[{}] {}\n", m.role.as_str(), m.content));
            }
            s
        }
    };
    out.push_str(&render_outcome(ep));
    out
}

/// The agents of an episode as an indented tree, then totals over it.
pub fn render_tree(ep: &Episode) -> String {
    let mut s = String::from("agents:\n");
    for a in ep.agents() {
        let o = &a.episode.outcome;
        let name = match (a.role, a.call_id) {
            (Some(role), Some(call)) => format!("{role} ({call})"),
            _ => "main".to_string(),
        };
        let at = ep
            .agents()
            .iter()
            .flat_map(|p| p.episode.children.iter())
            .find(|c| std::ptr::eq(&c.episode, a.episode))
            .map(|c| {
                let seg = c
                    .parent_segment
                    .map(|s| format!(", segment {}", s.0))
                    .unwrap_or_default();
                format!(" · called in parent turn {}{seg}", c.parent_turn)
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "{}{name} · reward {:.3} · {:?} · {} turns · {} tokens ({} sampled){at}\n",
            "  ".repeat(a.depth + 1),
            o.reward,
            o.termination,
            o.turns,
            o.tokens.context(),
            o.tokens.sampled,
        ));
    }
    let t = ep.tree_totals();
    s.push_str(&format!(
        "tree: {} agents · {} tokens ({} sampled) · {} turns · {} tool calls ({} failed) · peak context {}\n",
        t.agents,
        t.tokens.context(),
        t.tokens.sampled,
        t.turns,
        t.tool_calls,
        t.tool_errors,
        t.peak_context
    ));
    s
}

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
    let color = crate::live::color_stdout();
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
    // Per turn, when thinking was controlled or routed: what was decided and spent.
    for r in o
        .per_turn
        .iter()
        .filter(|r| r.decision.is_some() || r.model.is_some())
    {
        let decision = r.decision.as_ref().map_or(String::new(), |d| {
            let budget = match (d.think, d.effective_budget()) {
                (false, _) => "no thinking".to_string(),
                (true, Some(b)) => format!("budget {b}"),
                (true, None) => "unbounded".to_string(),
            };
            format!(" · {budget} ({})", d.reason)
        });
        s.push_str(&format!(
            "  turn {:<3} thinking {:>5} · answer {:>5} · forced {:>4} · observation {:>5}{}{}{}{}\n",
            r.turn,
            r.thinking_tokens,
            r.answer_tokens,
            r.forced_tokens,
            r.observation_tokens,
            if r.budget_hit { " · cut at budget" } else { "" },
            if r.continued > 0 { format!(" · continued ×{}", r.continued) } else { String::new() },
            decision,
            r.model.as_ref().map_or(String::new(), |m| format!(" · model {m}")),
        ));
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

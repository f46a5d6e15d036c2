//! The summary of a run (`metrics.json`) and the table `eval` prints from it.

use std::collections::BTreeMap;

use enact_core::{Episode, Termination};
use serde::{Deserialize, Serialize};

/// How many episodes ended for one reason, with an example message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminationCount {
    /// `finished`, `turn_limit`, `token_limit`, `time_limit`, `empty_reply` or `error`.
    pub reason: String,
    pub count: usize,
    /// The detail of the first such episode (the error message, or its last unrecovered
    /// error), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// Aggregate metrics of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Episodes that ran to an end (any termination).
    pub episodes: usize,
    pub success_rate: f64,
    pub mean_reward: f64,
    pub mean_progress: f64,
    pub mean_turns: f64,
    pub tool_calls: u64,
    pub tool_errors: u64,
    pub recovered_errors: usize,
    pub flags: usize,
    pub mean_sampled_tokens: f64,
    pub mean_thinking_tokens: f64,
    pub mean_episode_ms: f64,
    /// Agents per episode (1 without a team; children counted).
    #[serde(default)]
    pub mean_agents: f64,
    /// Every token of every agent's context, summed over the episode's tree.
    #[serde(default)]
    pub mean_tree_tokens: f64,
    /// Sampled tokens summed over the tree.
    #[serde(default)]
    pub mean_tree_sampled_tokens: f64,
    /// The largest context any one agent of an episode had, averaged over episodes.
    #[serde(default)]
    pub mean_peak_context: f64,
    /// Termination reasons, most frequent first.
    pub terminations: Vec<TerminationCount>,
    /// Episodes that could not start (their environment or agent could not be built).
    pub not_started: usize,
    /// Tasks never admitted because the run was interrupted (Ctrl-C).
    pub not_run: usize,
    /// Whether the run was interrupted before every task ran.
    pub interrupted: bool,
    /// The evaluation metrics (pass@k, intervals, progress over turns, recoveries, token
    /// split, breakdowns; docs/evaluation.md). Absent in files written before they existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<enact_eval::Metrics>,
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// The reason name of a termination, as serialised (`finished`, `error`, …).
fn reason(t: &Termination) -> &'static str {
    match t {
        Termination::Finished => "finished",
        Termination::TurnLimit => "turn_limit",
        Termination::TokenLimit => "token_limit",
        Termination::TimeLimit => "time_limit",
        Termination::EmptyReply => "empty_reply",
        Termination::Error(_) => "error",
    }
}

/// What to show for an episode's termination: the error, or its last unrecovered error.
fn example(ep: &Episode) -> Option<String> {
    if let Termination::Error(detail) = &ep.outcome.termination {
        return Some(detail.clone());
    }
    ep.outcome
        .errors
        .iter()
        .rev()
        .find(|e| !e.recovered)
        .map(|e| format!("{}: {}", e.source, e.message))
}

impl Summary {
    pub fn of(eps: &[Episode]) -> Summary {
        let mut by_reason: BTreeMap<&str, TerminationCount> = BTreeMap::new();
        for e in eps {
            let r = reason(&e.outcome.termination);
            let entry = by_reason.entry(r).or_insert_with(|| TerminationCount {
                reason: r.to_string(),
                count: 0,
                example: None,
            });
            entry.count += 1;
            if entry.example.is_none() {
                entry.example = example(e);
            }
        }
        let mut terminations: Vec<TerminationCount> = by_reason.into_values().collect();
        terminations.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        let trees: Vec<enact_core::TreeTotals> = eps.iter().map(Episode::tree_totals).collect();
        Summary {
            episodes: eps.len(),
            success_rate: mean(eps.iter().map(|e| f64::from(u8::from(e.outcome.success)))),
            mean_reward: mean(eps.iter().map(|e| e.outcome.reward)),
            mean_progress: mean(eps.iter().map(|e| e.outcome.progress)),
            mean_turns: mean(eps.iter().map(|e| f64::from(e.outcome.turns))),
            tool_calls: eps.iter().map(|e| u64::from(e.outcome.tool_calls)).sum(),
            tool_errors: eps.iter().map(|e| u64::from(e.outcome.tool_errors)).sum(),
            recovered_errors: eps
                .iter()
                .map(|e| e.outcome.errors.iter().filter(|x| x.recovered).count())
                .sum(),
            flags: eps.iter().map(|e| e.outcome.flags.len()).sum(),
            mean_sampled_tokens: mean(eps.iter().map(|e| e.outcome.tokens.sampled as f64)),
            mean_thinking_tokens: mean(eps.iter().map(|e| e.outcome.tokens.thinking as f64)),
            mean_episode_ms: mean(eps.iter().map(|e| e.outcome.timings.total_ms)),
            mean_agents: mean(trees.iter().map(|t| t.agents as f64)),
            mean_tree_tokens: mean(trees.iter().map(|t| t.tokens.context() as f64)),
            mean_tree_sampled_tokens: mean(trees.iter().map(|t| t.tokens.sampled as f64)),
            mean_peak_context: mean(trees.iter().map(|t| t.peak_context as f64)),
            terminations,
            not_started: 0,
            not_run: 0,
            interrupted: false,
            metrics: None,
        }
    }

    /// When every episode ended in an error (and at least one ran): the reason, e.g.
    /// "every episode failed: policy: connection refused".
    pub fn all_failed(&self) -> Option<String> {
        match self.terminations.as_slice() {
            [only] if only.reason == "error" && self.episodes > 0 => Some(format!(
                "every episode failed: {}",
                only.example.as_deref().unwrap_or("no detail recorded")
            )),
            _ => None,
        }
    }

    /// The table `eval` prints.
    pub fn table(&self, env: &str, model: &str) -> String {
        let mut out = format!("environment {env} · model {model}\n");
        out.push_str(&format!(
            "{:<10} {:>8} {:>8} {:>9} {:>7} {:>10} {:>9} {:>10} {:>9} {:>9}\n",
            "episodes",
            "success",
            "reward",
            "progress",
            "turns",
            "tool calls",
            "tool err",
            "recovered",
            "thinking",
            "ms/ep"
        ));
        out.push_str(&format!(
            "{:<10} {:>7.1}% {:>8.3} {:>9.3} {:>7.2} {:>10} {:>9} {:>10} {:>9.1} {:>9.0}\n",
            self.episodes,
            100.0 * self.success_rate,
            self.mean_reward,
            self.mean_progress,
            self.mean_turns,
            self.tool_calls,
            self.tool_errors,
            self.recovered_errors,
            self.mean_thinking_tokens,
            self.mean_episode_ms,
        ));
        out.push_str(&format!(
            "per episode: {:.1} agents · {:.0} tokens in all contexts · {:.0} sampled · peak context {:.0}\n",
            self.mean_agents,
            self.mean_tree_tokens,
            self.mean_tree_sampled_tokens,
            self.mean_peak_context
        ));
        let counts: Vec<String> = self
            .terminations
            .iter()
            .map(|t| format!("{} {}", t.reason, t.count))
            .collect();
        out.push_str(&format!("terminations: {}\n", counts.join(", ")));
        for t in &self.terminations {
            if let Some(e) = &t.example {
                out.push_str(&format!("  {:<12} e.g. {}\n", t.reason, one_line(e, 160)));
            }
        }
        if self.not_started > 0 {
            out.push_str(&format!(
                "not started: {} episode(s) (errors above)\n",
                self.not_started
            ));
        }
        if self.interrupted {
            out.push_str(&format!(
                "interrupted: {} task(s) never ran\n",
                self.not_run
            ));
        }
        out
    }
}

/// `s` on one line, cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_flattens_and_cuts() {
        assert_eq!(one_line("a\n  b", 10), "a b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn all_failed_needs_every_episode_in_error() {
        let mut s = Summary {
            episodes: 2,
            terminations: vec![TerminationCount {
                reason: "error".into(),
                count: 2,
                example: Some("policy: refused".into()),
            }],
            ..Summary::default()
        };
        assert_eq!(
            s.all_failed().as_deref(),
            Some("every episode failed: policy: refused")
        );
        s.terminations.push(TerminationCount {
            reason: "finished".into(),
            count: 1,
            example: None,
        });
        assert_eq!(s.all_failed(), None);
    }
}

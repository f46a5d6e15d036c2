//! Evaluation metrics of a set of episodes (`docs/evaluation.md` defines each one).

use std::collections::{BTreeMap, BTreeSet};

use enact_core::{Role, Termination};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::load::Loaded;
use crate::stats::{Estimate, bootstrap_mean, pass_all_k, pass_at_k, wilson};

/// What an episode contributes to the metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeStats {
    pub task_id: String,
    pub env: String,
    pub tags: Vec<String>,
    pub difficulty: Option<String>,
    pub success: bool,
    pub reward: f64,
    pub progress: f64,
    pub turns: u32,
    pub tool_calls: u32,
    pub tool_errors: u32,
    /// Errors (`tool`/`parse`) and how many of them were put right later.
    pub errors: usize,
    pub recoveries: usize,
    pub thinking_tokens: usize,
    pub answer_tokens: usize,
    pub observation_tokens: usize,
    pub forced_tokens: usize,
    /// Whether the token split came from `outcome.per_turn`.
    pub from_per_turn: bool,
    pub wall_ms: f64,
    pub termination: &'static str,
    pub flags: usize,
    /// Per-turn records: turns recorded, turns that thought (a thinking token or a
    /// decision to think), turns whose thought hit its budget.
    pub recorded_turns: usize,
    pub thinking_turns: usize,
    pub budget_hits: usize,
}

/// The reason name of a termination, as serialised (`finished`, `error`, …).
pub fn termination_name(t: &Termination) -> &'static str {
    match t {
        Termination::Finished => "finished",
        Termination::TurnLimit => "turn_limit",
        Termination::TokenLimit => "token_limit",
        Termination::TimeLimit => "time_limit",
        Termination::EmptyReply => "empty_reply",
        Termination::Error(_) => "error",
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Errors of an episode and how many were recovered: an error (source `tool` or `parse`) in
/// turn t is recovered when a later turn calls the same tool without an error of that tool
/// (a `parse` error: any later turn with a tool call and no error), or the episode succeeds.
pub fn recoveries(loaded: &Loaded) -> (usize, usize) {
    let ep = &loaded.episode;
    // Tool names called per assistant turn (turn = index of the assistant message + 1).
    let mut calls: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut turn = 0u32;
    for m in &ep.messages {
        if m.role == Role::Assistant {
            turn += 1;
            for c in &m.tool_calls {
                calls.entry(turn).or_default().insert(c.name.clone());
            }
        }
    }
    // Tools that failed per turn (`None` for a parse error).
    let mut failed: BTreeMap<u32, BTreeSet<Option<String>>> = BTreeMap::new();
    let errors: Vec<(u32, Option<String>)> = ep
        .outcome
        .errors
        .iter()
        .filter(|e| e.source == "tool" || e.source == "parse")
        .map(|e| {
            let tool = (e.source == "tool")
                .then(|| e.message.split_once(':').map(|(n, _)| n.to_string()))
                .flatten();
            (e.turn, tool)
        })
        .collect();
    for (t, tool) in &errors {
        failed.entry(*t).or_default().insert(tool.clone());
    }
    let clean_call = |t: u32, tool: &Option<String>| -> bool {
        let Some(names) = calls.get(&t) else {
            return false;
        };
        let bad = failed.get(&t);
        match tool {
            Some(name) => {
                names.contains(name) && !bad.is_some_and(|b| b.contains(&Some(name.clone())))
            }
            None => bad.is_none() && !names.is_empty(),
        }
    };
    let recovered = errors
        .iter()
        .filter(|(t, tool)| {
            ep.outcome.success
                || calls
                    .keys()
                    .any(|&later| later > *t && clean_call(later, tool))
        })
        .count();
    (errors.len(), recovered)
}

impl EpisodeStats {
    pub fn of(loaded: &Loaded, default_env: &str) -> EpisodeStats {
        let ep = &loaded.episode;
        let o = &ep.outcome;
        let env = ep
            .task
            .env
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or(default_env)
            .to_string();
        let tags = match ep.task.metadata.get("tags") {
            Some(Value::Array(a)) => a.iter().filter_map(text_of).collect(),
            Some(v) => text_of(v).into_iter().collect(),
            None => Vec::new(),
        };
        let difficulty = ep.task.metadata.get("difficulty").and_then(text_of);
        let (errors, recovered) = recoveries(loaded);
        let from_per_turn = !o.per_turn.is_empty();
        let (thinking, answer, observation, forced) = if from_per_turn {
            o.per_turn.iter().fold((0, 0, 0, 0), |(a, b, c, d), t| {
                (
                    a + t.thinking_tokens,
                    b + t.answer_tokens,
                    c + t.observation_tokens,
                    d + t.forced_tokens,
                )
            })
        } else {
            (
                o.tokens.thinking,
                o.tokens.sampled.saturating_sub(o.tokens.thinking),
                o.tokens.observation,
                o.tokens.forced,
            )
        };
        EpisodeStats {
            task_id: ep.task.id.clone(),
            env,
            tags,
            difficulty,
            success: o.success,
            reward: o.reward,
            progress: o.progress,
            turns: o.turns,
            tool_calls: o.tool_calls,
            tool_errors: o.tool_errors,
            errors,
            recoveries: recovered,
            thinking_tokens: thinking,
            answer_tokens: answer,
            observation_tokens: observation,
            forced_tokens: forced,
            from_per_turn,
            wall_ms: o.timings.total_ms,
            termination: termination_name(&o.termination),
            flags: o.flags.len(),
            recorded_turns: o.per_turn.len(),
            thinking_turns: o
                .per_turn
                .iter()
                .filter(|t| t.thinking_tokens > 0 || t.decision.as_ref().is_some_and(|d| d.think))
                .count(),
            budget_hits: o.per_turn.iter().filter(|t| t.budget_hit).count(),
        }
    }

    /// Tokens the policy sampled (thinking + answer).
    pub fn sampled(&self) -> usize {
        self.thinking_tokens + self.answer_tokens
    }
}

/// How to compute [`Metrics`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The k of pass@k / pass^k besides the most samples of any task (always reported);
    /// values above it are left out.
    pub ks: Vec<usize>,
    /// Dollars per million sampled tokens, for the cost per success.
    pub price_per_mtok: Option<f64>,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// The environment of episodes whose task does not name one.
    pub default_env: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ks: vec![1, 2, 4, 8, 16],
            price_per_mtok: None,
            seed: 0,
            default_env: "unknown".into(),
        }
    }
}

/// pass@k and pass^k for one k, averaged over the tasks with at least k samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassK {
    pub k: usize,
    pub pass_at_k: f64,
    pub pass_all_k: f64,
    pub tasks: usize,
}

/// Mean tokens per episode by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenMeans {
    pub thinking: Estimate,
    pub answer: Estimate,
    pub observation: Estimate,
    pub forced: Estimate,
    /// Episodes whose split came from `outcome.per_turn` (the rest: `outcome.tokens`).
    pub episodes_with_per_turn: usize,
}

/// Metrics of one group of a breakdown (an environment, a tag, a difficulty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub key: String,
    pub episodes: usize,
    pub success: Estimate,
    pub progress: f64,
    pub mean_sampled_tokens: f64,
}

/// Evaluation metrics of a set of episodes (`metrics.json`'s `metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub episodes: usize,
    pub tasks: usize,
    /// Fewest and most samples of any task.
    pub min_samples: usize,
    pub max_samples: usize,
    pub success: Estimate,
    pub pass_k: Vec<PassK>,
    pub progress: Estimate,
    pub reward: Estimate,
    /// P(t), t = 1..T: mean progress of episodes that ended within t turns (0 otherwise).
    pub progress_by_turn: Vec<f64>,
    /// Mean of `progress_by_turn`, in [0, 1].
    pub progress_auc: f64,
    pub turns: Estimate,
    pub tool_calls: Estimate,
    /// Failed tool calls / tool calls.
    pub tool_error_rate: Estimate,
    pub errors: usize,
    /// Recovered errors / errors.
    pub recovery_rate: Estimate,
    pub tokens: TokenMeans,
    pub wall_ms: Estimate,
    /// Sampled tokens of all episodes / successes (none without a success).
    pub tokens_per_success: Option<f64>,
    /// The same in dollars, with a price configured.
    pub cost_per_success: Option<f64>,
    pub by_env: Vec<Breakdown>,
    pub by_tag: Vec<Breakdown>,
    pub by_difficulty: Vec<Breakdown>,
    /// Episodes per termination reason.
    pub terminations: BTreeMap<String, usize>,
    pub flagged: usize,
    /// Of the turns with per-turn records: the share that thought, and the share whose
    /// thought hit its budget (none without records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_turns: Option<Estimate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_hits: Option<Estimate>,
}

fn breakdown<'a>(
    stats: &'a [EpisodeStats],
    keys: impl Fn(&'a EpisodeStats) -> Vec<String>,
) -> Vec<Breakdown> {
    let mut groups: BTreeMap<String, Vec<&EpisodeStats>> = BTreeMap::new();
    for s in stats {
        for k in keys(s) {
            groups.entry(k).or_default().push(s);
        }
    }
    groups
        .into_iter()
        .map(|(key, g)| {
            let n = g.len();
            Breakdown {
                key,
                episodes: n,
                success: wilson(g.iter().filter(|s| s.success).count(), n),
                progress: g.iter().map(|s| s.progress).sum::<f64>() / n as f64,
                mean_sampled_tokens: g.iter().map(|s| s.sampled() as f64).sum::<f64>() / n as f64,
            }
        })
        .collect()
}

impl Metrics {
    pub fn of(episodes: &[Loaded], options: &Options) -> Metrics {
        let stats: Vec<EpisodeStats> = episodes
            .iter()
            .map(|l| EpisodeStats::of(l, &options.default_env))
            .collect();
        Metrics::of_stats(&stats, options)
    }

    pub fn of_stats(stats: &[EpisodeStats], options: &Options) -> Metrics {
        let n = stats.len();
        let seed = options.seed;
        let mean_of = |f: &dyn Fn(&EpisodeStats) -> f64| {
            bootstrap_mean(&stats.iter().map(f).collect::<Vec<_>>(), seed)
        };
        // Per task: samples and successes.
        let mut per_task: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for s in stats {
            let e = per_task.entry(&s.task_id).or_default();
            e.0 += 1;
            e.1 += usize::from(s.success);
        }
        let min_samples = per_task.values().map(|v| v.0).min().unwrap_or(0);
        let max_samples = per_task.values().map(|v| v.0).max().unwrap_or(0);
        // The asked-for k, and always the samples per task itself (pass@N with N samples).
        let mut ks: Vec<usize> = options.ks.clone();
        ks.push(max_samples);
        ks.sort_unstable();
        ks.dedup();
        let pass_k = ks
            .iter()
            .filter(|&&k| k >= 1 && k <= max_samples)
            .map(|&k| {
                let eligible: Vec<(usize, usize)> = per_task
                    .values()
                    .copied()
                    .filter(|&(n, _)| n >= k)
                    .collect();
                let m = eligible.len().max(1) as f64;
                PassK {
                    k,
                    pass_at_k: eligible
                        .iter()
                        .map(|&(n, c)| pass_at_k(n, c, k))
                        .sum::<f64>()
                        / m,
                    pass_all_k: eligible
                        .iter()
                        .map(|&(n, c)| pass_all_k(n, c, k))
                        .sum::<f64>()
                        / m,
                    tasks: eligible.len(),
                }
            })
            .collect();
        let max_turns = stats.iter().map(|s| s.turns).max().unwrap_or(0).max(1);
        let progress_by_turn: Vec<f64> = (1..=max_turns)
            .map(|t| {
                if n == 0 {
                    return 0.0;
                }
                stats
                    .iter()
                    .map(|s| if s.turns <= t { s.progress } else { 0.0 })
                    .sum::<f64>()
                    / n as f64
            })
            .collect();
        let progress_auc =
            progress_by_turn.iter().sum::<f64>() / progress_by_turn.len().max(1) as f64;
        let calls: usize = stats.iter().map(|s| s.tool_calls as usize).sum();
        let tool_errors: usize = stats.iter().map(|s| s.tool_errors as usize).sum();
        let errors: usize = stats.iter().map(|s| s.errors).sum();
        let recovered: usize = stats.iter().map(|s| s.recoveries).sum();
        let successes = stats.iter().filter(|s| s.success).count();
        let recorded: usize = stats.iter().map(|s| s.recorded_turns).sum();
        let sampled: usize = stats.iter().map(EpisodeStats::sampled).sum();
        let tokens_per_success = (successes > 0).then(|| sampled as f64 / successes as f64);
        let mut terminations = BTreeMap::new();
        for s in stats {
            *terminations.entry(s.termination.to_string()).or_insert(0) += 1;
        }
        Metrics {
            episodes: n,
            tasks: per_task.len(),
            min_samples,
            max_samples,
            success: wilson(successes, n),
            pass_k,
            progress: mean_of(&|s| s.progress),
            reward: mean_of(&|s| s.reward),
            progress_by_turn,
            progress_auc,
            turns: mean_of(&|s| f64::from(s.turns)),
            tool_calls: mean_of(&|s| f64::from(s.tool_calls)),
            tool_error_rate: wilson(tool_errors.min(calls), calls),
            errors,
            recovery_rate: wilson(recovered, errors),
            tokens: TokenMeans {
                thinking: mean_of(&|s| s.thinking_tokens as f64),
                answer: mean_of(&|s| s.answer_tokens as f64),
                observation: mean_of(&|s| s.observation_tokens as f64),
                forced: mean_of(&|s| s.forced_tokens as f64),
                episodes_with_per_turn: stats.iter().filter(|s| s.from_per_turn).count(),
            },
            wall_ms: mean_of(&|s| s.wall_ms),
            tokens_per_success,
            cost_per_success: tokens_per_success
                .zip(options.price_per_mtok)
                .map(|(t, p)| t * p / 1e6),
            by_env: breakdown(stats, |s| vec![s.env.clone()]),
            by_tag: breakdown(stats, |s| s.tags.clone()),
            by_difficulty: breakdown(stats, |s| s.difficulty.iter().cloned().collect()),
            terminations,
            flagged: stats.iter().filter(|s| s.flags > 0).count(),
            thinking_turns: (recorded > 0)
                .then(|| wilson(stats.iter().map(|s| s.thinking_turns).sum(), recorded)),
            budget_hits: (recorded > 0)
                .then(|| wilson(stats.iter().map(|s| s.budget_hits).sum(), recorded)),
        }
    }

    /// The metrics as (name, value) rows, for the tables of `eval` and the report.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = vec![
            (
                "episodes / tasks".into(),
                format!(
                    "{} / {} ({}–{} samples per task)",
                    self.episodes, self.tasks, self.min_samples, self.max_samples
                ),
            ),
            ("success".into(), self.success.show(true)),
        ];
        for p in &self.pass_k {
            rows.push((
                format!("pass@{} / pass^{}", p.k, p.k),
                format!(
                    "{:.1}% / {:.1}% ({} tasks)",
                    100.0 * p.pass_at_k,
                    100.0 * p.pass_all_k,
                    p.tasks
                ),
            ));
        }
        rows.extend([
            ("progress".into(), self.progress.show(false)),
            (
                "progress AUC over turns".into(),
                format!("{:.3}", self.progress_auc),
            ),
            ("reward".into(), self.reward.show(false)),
            ("turns".into(), self.turns.show(false)),
            ("tool calls / episode".into(), self.tool_calls.show(false)),
            ("tool error rate".into(), self.tool_error_rate.show(true)),
            (
                "errors recovered".into(),
                format!(
                    "{} of {} ({})",
                    (self.recovery_rate.value * self.errors as f64).round(),
                    self.errors,
                    self.recovery_rate.show(true)
                ),
            ),
            (
                "thinking tokens / ep".into(),
                format!("{:.1}", self.tokens.thinking.value),
            ),
            (
                "answer tokens / ep".into(),
                format!("{:.1}", self.tokens.answer.value),
            ),
            (
                "observation tokens / ep".into(),
                format!("{:.1}", self.tokens.observation.value),
            ),
            (
                "forced tokens / ep".into(),
                format!("{:.1}", self.tokens.forced.value),
            ),
        ]);
        if let (Some(t), Some(b)) = (self.thinking_turns, self.budget_hits) {
            rows.push((
                "turns that thought".into(),
                format!("{} of {} recorded", t.show(true), t.n),
            ));
            rows.push(("turns at the budget".into(), b.show(true)));
        }
        rows.extend([
            (
                "wall time / ep".into(),
                format!(
                    "{:.0} ms [{:.0}, {:.0}]",
                    self.wall_ms.value, self.wall_ms.lo, self.wall_ms.hi
                ),
            ),
            (
                "sampled tokens / success".into(),
                match (self.tokens_per_success, self.cost_per_success) {
                    (Some(t), Some(c)) => format!("{t:.0} (${c:.6})"),
                    (Some(t), None) => format!("{t:.0}"),
                    _ => "no success".into(),
                },
            ),
        ]);
        rows
    }

    /// The summary table printed at the end of `enact eval`.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<w$}  {v}\n"));
        }
        for (title, groups) in [
            ("environment", &self.by_env),
            ("tag", &self.by_tag),
            ("difficulty", &self.by_difficulty),
        ] {
            if groups.is_empty() || (title == "environment" && groups.len() < 2) {
                continue;
            }
            out.push_str(&format!("by {title}:\n"));
            for g in groups {
                out.push_str(&format!(
                    "  {:<16} {:>5} eps  success {}  progress {:.3}\n",
                    g.key,
                    g.episodes,
                    g.success.show(true),
                    g.progress
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fixtures::episode_json;
    use crate::load::parse_line;

    #[test]
    fn a_tool_error_put_right_later_is_a_recovery() {
        // Turn 1 calls calc and fails, turn 2 calls calc again cleanly: recovered although
        // the episode fails.
        let ep = parse_line(&episode_json("t1", false, true, true).to_string()).unwrap();
        assert_eq!(recoveries(&ep), (1, 1));
        // Without the second call and without success: not recovered.
        let ep = parse_line(&episode_json("t1", false, true, false).to_string()).unwrap();
        assert_eq!(recoveries(&ep), (1, 0));
        // A success puts every error right.
        let ep = parse_line(&episode_json("t1", true, true, false).to_string()).unwrap();
        assert_eq!(recoveries(&ep), (1, 1));
    }

    #[test]
    fn tokens_come_from_per_turn_records_when_the_episode_has_them() {
        let fx = crate::fixtures::Fixture {
            per_turn: true,
            ..crate::fixtures::Fixture::new("t", true)
        };
        let mut ep = parse_line(&fx.to_json().unwrap().to_string()).unwrap();
        let before = EpisodeStats::of(&ep, "calc");
        assert!(before.from_per_turn);
        assert_eq!(
            (
                before.thinking_tokens,
                before.answer_tokens,
                before.forced_tokens
            ),
            (4, 8, 1)
        );
        // The records win over the trajectory's counts.
        ep.episode.outcome.per_turn[0].thinking_tokens = 40;
        assert_eq!(EpisodeStats::of(&ep, "calc").thinking_tokens, 40);
        // Two tool turns think (the first hits its budget of 4), the answer turn does not.
        let m = Metrics::of(std::slice::from_ref(&ep), &Options::default());
        let (t, b) = (m.thinking_turns.unwrap(), m.budget_hits.unwrap());
        assert_eq!((t.n, b.n), (2, 2));
        assert!(
            (t.value - 0.5).abs() < 1e-9 && (b.value - 0.5).abs() < 1e-9,
            "{t:?} {b:?}"
        );
        ep.episode.outcome.per_turn.clear();
        let old = EpisodeStats::of(&ep, "calc");
        assert!(!old.from_per_turn);
        assert_eq!((old.thinking_tokens, old.answer_tokens), (4, 8));
    }

    #[test]
    fn pass_k_and_progress_curve_over_samples() {
        let mut eps = Vec::new();
        // Task a: 2 of 4 succeed; task b: 4 of 4.
        for (task, ok) in [
            ("a", true),
            ("a", false),
            ("a", true),
            ("a", false),
            ("b", true),
            ("b", true),
            ("b", true),
            ("b", true),
        ] {
            eps.push(parse_line(&episode_json(task, ok, false, false).to_string()).unwrap());
        }
        let m = Metrics::of(&eps, &Options::default());
        assert_eq!((m.episodes, m.tasks, m.min_samples), (8, 2, 4));
        assert_eq!(
            m.pass_k.iter().map(|p| p.k).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        let p2 = &m.pass_k[1];
        // a: 1 − C(2,2)/C(4,2) = 5/6, b: 1 → 11/12; pass^2: a 1/6, b 1 → 7/12.
        assert!((p2.pass_at_k - 11.0 / 12.0).abs() < 1e-9, "{p2:?}");
        assert!((p2.pass_all_k - 7.0 / 12.0).abs() < 1e-9, "{p2:?}");
        assert!((m.success.value - 0.75).abs() < 1e-9);
        // Every episode took two turns: nothing is credited after one, all after two.
        assert_eq!(m.progress_by_turn.len(), 2);
        assert_eq!(m.progress_by_turn[0], 0.0);
        assert!((m.progress_by_turn[1] - m.progress.value).abs() < 1e-9);
        assert!((m.progress_auc - m.progress.value / 2.0).abs() < 1e-9);
        assert_eq!(m.by_tag.len(), 1);
        assert_eq!(
            m.by_difficulty
                .iter()
                .map(|b| b.key.as_str())
                .collect::<Vec<_>>(),
            vec!["easy"]
        );
    }
}

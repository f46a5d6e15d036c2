//! `enact report`: one self-contained HTML file (inline CSS and SVG, no scripts, nothing
//! fetched at view time) and a Markdown summary of one or more runs.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::html::document;
use crate::load::{Run, RunKind, TrainingPoint};
use crate::metrics::{EpisodeStats, Metrics, Options};
use crate::svg::{Bar, Chart, Panel, Series, YRange, bars, escape};

const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// The chart of a training run over optimizer steps: held-out success and progress, the
/// reward and success of trained episodes (top); the training loss (bottom). `enact train`
/// writes it as `plot.svg`.
pub fn training_chart(points: &[TrainingPoint], title: &str) -> String {
    let collect = |f: &dyn Fn(&TrainingPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|p| f(p).map(|v| (p.step as f64, v)))
            .collect()
    };
    let mut success = Series::line("held-out success", "#1f77b4", collect(&|p| p.eval_success));
    success.percent_labels = true;
    let mut progress = Series::line(
        "held-out progress",
        "#1f77b4",
        collect(&|p| p.eval_progress),
    );
    progress.dashed = true;
    let reward = Series::line("train reward (RL)", "#ff7f0e", collect(&|p| p.reward));
    let mut train_success = Series::line("train success (RL)", "#ff7f0e", collect(&|p| p.success));
    train_success.dashed = true;
    let loss = Series::line("training loss", "#2ca02c", collect(&|p| p.loss));
    Chart {
        title: title.into(),
        x_label: "optimizer step (policy version)".into(),
        panels: vec![
            Panel {
                title: String::new(),
                height: 260.0,
                range: YRange::Unit,
                series: vec![success, progress, reward, train_success],
            },
            Panel {
                title: "training loss".into(),
                height: 140.0,
                range: YRange::Auto,
                series: vec![loss],
            },
        ],
    }
    .svg()
}

/// A run and its metrics, computed once for both outputs.
struct Measured<'a> {
    run: &'a Run,
    stats: Vec<EpisodeStats>,
    metrics: Metrics,
}

fn measure<'a>(runs: &'a [Run], options: &Options) -> Vec<Measured<'a>> {
    runs.iter()
        .map(|run| {
            let mut o = options.clone();
            if let Some(env) = &run.env {
                o.default_env = env.clone();
            }
            let stats: Vec<EpisodeStats> = run
                .headline()
                .iter()
                .map(|l| EpisodeStats::of(l, &o.default_env))
                .collect();
            let metrics = Metrics::of_stats(&stats, &o);
            Measured {
                run,
                stats,
                metrics,
            }
        })
        .collect()
}

fn kind(k: RunKind) -> &'static str {
    match k {
        RunKind::Eval => "eval",
        RunKind::Rollout => "rollout",
        RunKind::Train => "train",
    }
}

/// The overview rows: one per run.
fn overview(ms: &[Measured<'_>]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let head = vec![
        "run",
        "kind",
        "episodes",
        "success [95%]",
        "best pass@k",
        "progress",
        "AUC",
        "turns",
        "tool err rate",
        "recovery rate",
        "tokens/success",
    ];
    let rows = ms
        .iter()
        .map(|m| {
            let x = &m.metrics;
            vec![
                m.run.name.clone(),
                kind(m.run.kind).into(),
                x.episodes.to_string(),
                x.success.show(true),
                x.pass_k
                    .last()
                    .map(|p| format!("pass@{} {:.1}%", p.k, 100.0 * p.pass_at_k))
                    .unwrap_or_default(),
                format!("{:.3}", x.progress.value),
                format!("{:.3}", x.progress_auc),
                format!("{:.2}", x.turns.value),
                format!("{:.1}%", 100.0 * x.tool_error_rate.value),
                if x.errors == 0 {
                    "no errors".into()
                } else {
                    format!("{:.1}%", 100.0 * x.recovery_rate.value)
                },
                x.tokens_per_success
                    .map(|t| format!("{t:.0}"))
                    .unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    (head, rows)
}

fn html_table(head: &[&str], rows: &[Vec<String>], id: &str) -> String {
    let mut s = format!("<table id=\"{id}\"><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", escape(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn md_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for r in rows {
        let _ = writeln!(
            s,
            "| {} |",
            r.iter()
                .map(|c| c.replace('|', "\\|"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    s
}

fn progress_chart(ms: &[Measured<'_>]) -> String {
    let series = ms
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let points = m
                .metrics
                .progress_by_turn
                .iter()
                .enumerate()
                .map(|(t, p)| ((t + 1) as f64, *p))
                .collect();
            Series::line(&m.run.name, COLOURS[i % COLOURS.len()], points)
        })
        .collect();
    Chart {
        title: "progress over turns: mean progress of episodes finished within t turns".into(),
        x_label: "turn".into(),
        panels: vec![Panel {
            title: String::new(),
            height: 240.0,
            range: YRange::Unit,
            series,
        }],
    }
    .svg()
}

fn tokens_chart(ms: &[Measured<'_>]) -> String {
    let series = ms
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // Per task: mean sampled tokens against success rate.
            let mut per_task: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
            for s in &m.stats {
                let e = per_task.entry(&s.task_id).or_default();
                e.0 += s.sampled() as f64;
                e.1 += f64::from(u8::from(s.success));
                e.2 += 1.0;
            }
            let mut s = Series::line(
                &m.run.name,
                COLOURS[i % COLOURS.len()],
                per_task
                    .values()
                    .map(|(t, ok, n)| (t / n, ok / n))
                    .collect(),
            );
            s.line = false;
            s
        })
        .collect();
    Chart {
        title: "success vs sampled tokens (one point per task)".into(),
        x_label: "mean sampled tokens per episode".into(),
        panels: vec![Panel {
            title: String::new(),
            height: 240.0,
            range: YRange::Unit,
            series,
        }],
    }
    .svg()
}

fn rates_chart(ms: &[Measured<'_>]) -> String {
    let mut list = Vec::new();
    for m in ms {
        let x = &m.metrics;
        let n = x.episodes;
        let errors = x.terminations.get("error").copied().unwrap_or(0);
        let prefix = if ms.len() > 1 {
            format!("{}: ", m.run.name)
        } else {
            String::new()
        };
        for (label, e) in [
            ("tool error rate", x.tool_error_rate),
            ("recovery rate", x.recovery_rate),
            ("episodes ended in error", crate::stats::wilson(errors, n)),
            ("episodes flagged", crate::stats::wilson(x.flagged, n)),
        ] {
            list.push(Bar {
                label: format!("{prefix}{label}"),
                value: e.value,
                lo: e.lo,
                hi: e.hi,
            });
        }
    }
    bars("error and recovery rates (95% intervals)", &list)
}

fn breakdown_rows(m: &Metrics) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (by, groups) in [
        ("environment", &m.by_env),
        ("tag", &m.by_tag),
        ("difficulty", &m.by_difficulty),
    ] {
        for g in groups {
            rows.push(vec![
                by.to_string(),
                g.key.clone(),
                g.episodes.to_string(),
                g.success.show(true),
                format!("{:.3}", g.progress),
                format!("{:.0}", g.mean_sampled_tokens),
            ]);
        }
    }
    rows
}

const BREAKDOWN_HEAD: [&str; 6] = [
    "by",
    "group",
    "episodes",
    "success [95%]",
    "progress",
    "sampled tokens",
];

/// Paired comparisons of the first run (A) with each other run (B): one row per pair.
fn comparison_rows(runs: &[Run], seed: u64) -> Vec<Vec<String>> {
    let Some((a, rest)) = runs.split_first() else {
        return Vec::new();
    };
    rest.iter()
        .map(|b| {
            let c = crate::compare::Comparison::of(a.headline(), b.headline(), seed);
            let d = |e: &crate::stats::Estimate| {
                format!("{:+.3} [{:+.3}, {:+.3}]", e.value, e.lo, e.hi)
            };
            vec![
                format!("{} − {}", b.name, a.name),
                c.pairs.len().to_string(),
                d(&c.success_diff),
                d(&c.progress_diff),
                format!("{} / {} / {}", c.b_better, c.a_better, c.tied),
            ]
        })
        .collect()
}

const COMPARISON_HEAD: [&str; 5] = [
    "B − A",
    "paired tasks",
    "success diff [95%]",
    "progress diff [95%]",
    "B better / A better / tied",
];

fn eval_rows(run: &Run, options: &Options) -> Vec<Vec<String>> {
    run.evals
        .iter()
        .map(|(label, eps)| {
            let m = Metrics::of(eps, options);
            vec![
                label.clone(),
                m.episodes.to_string(),
                m.success.show(true),
                format!("{:.3}", m.progress.value),
            ]
        })
        .collect()
}

/// The self-contained HTML report.
pub fn html(runs: &[Run], options: &Options) -> String {
    let ms = measure(runs, options);
    let mut b = String::new();
    let (head, rows) = overview(&ms);
    b.push_str("<h2>overview</h2>");
    b.push_str(&html_table(&head, &rows, "overview"));
    b.push_str("<h2>plots</h2><div class=\"plot\" id=\"progress-plot\">");
    b.push_str(&progress_chart(&ms));
    b.push_str("</div><div class=\"plot\" id=\"tokens-plot\">");
    b.push_str(&tokens_chart(&ms));
    b.push_str("</div><div class=\"plot\" id=\"rates-plot\">");
    b.push_str(&rates_chart(&ms));
    b.push_str("</div>");
    for m in &ms {
        let _ = write!(b, "<h2>{} ({})</h2>", escape(&m.run.name), kind(m.run.kind));
        let rows: Vec<Vec<String>> = m
            .metrics
            .rows()
            .into_iter()
            .map(|(k, v)| vec![k, v])
            .collect();
        b.push_str(&html_table(&["metric", "value"], &rows, "metrics"));
        let br = breakdown_rows(&m.metrics);
        if !br.is_empty() {
            b.push_str(&html_table(&BREAKDOWN_HEAD, &br, "breakdown"));
        }
        if m.run.kind == RunKind::Train {
            b.push_str("<div class=\"plot training-plot\">");
            b.push_str(&training_chart(
                &m.run.training,
                &format!("{}: reward and success over training", m.run.name),
            ));
            b.push_str("</div>");
            b.push_str(&html_table(
                &[
                    "held-out evaluation",
                    "episodes",
                    "success [95%]",
                    "progress",
                ],
                &eval_rows(m.run, options),
                "evals",
            ));
        }
    }
    let pairs = comparison_rows(runs, options.seed);
    if !pairs.is_empty() {
        b.push_str("<h2>paired comparison with the first run</h2>");
        b.push_str(&html_table(&COMPARISON_HEAD, &pairs, "comparison"));
    }
    b.push_str("<p><small>Definitions: docs/evaluation.md. Intervals: Wilson for rates, seeded bootstrap for means.</small></p>");
    document("enact report", "<b>enact report</b>", &b)
}

/// The Markdown summary (tables; the plots are in the HTML file).
pub fn markdown(runs: &[Run], options: &Options) -> String {
    let ms = measure(runs, options);
    let mut s = String::from("# enact report\n\n");
    let (head, rows) = overview(&ms);
    s.push_str(&md_table(&head, &rows));
    for m in &ms {
        let _ = write!(s, "\n## {} ({})\n\n", m.run.name, kind(m.run.kind));
        let rows: Vec<Vec<String>> = m
            .metrics
            .rows()
            .into_iter()
            .map(|(k, v)| vec![k, v])
            .collect();
        s.push_str(&md_table(&["metric", "value"], &rows));
        let br = breakdown_rows(&m.metrics);
        if !br.is_empty() {
            s.push('\n');
            s.push_str(&md_table(&BREAKDOWN_HEAD, &br));
        }
        if m.run.kind == RunKind::Train {
            s.push('\n');
            s.push_str(&md_table(
                &[
                    "held-out evaluation",
                    "episodes",
                    "success [95%]",
                    "progress",
                ],
                &eval_rows(m.run, options),
            ));
        }
    }
    let pairs = comparison_rows(runs, options.seed);
    if !pairs.is_empty() {
        s.push_str("\n## paired comparison with the first run\n\n");
        s.push_str(&md_table(&COMPARISON_HEAD, &pairs));
    }
    s.push_str("\nPlots: the HTML report next to this file. Definitions: docs/evaluation.md.\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fixtures::Fixture;

    #[test]
    fn reports_eval_rollout_and_train_directories() {
        let root = tempfile::tempdir().unwrap();
        let line = |task: &str, ok: bool| {
            Fixture {
                tool_error: true,
                retry: ok,
                ..Fixture::new(task, ok)
            }
            .to_json()
            .unwrap()
        };
        let eval = root.path().join("eval-1");
        std::fs::create_dir(&eval).unwrap();
        std::fs::write(
            eval.join("trajectories.jsonl"),
            format!("{}\n{}\n", line("a", true), line("b", false)),
        )
        .unwrap();
        let rollout = root.path().join("rollout-1");
        std::fs::create_dir(&rollout).unwrap();
        let record = serde_json::json!({"sample_index": 0, "episode": line("a", true)});
        std::fs::write(rollout.join("episodes.jsonl"), format!("{record}\n")).unwrap();
        let train = root.path().join("train-1");
        std::fs::create_dir_all(train.join("eval")).unwrap();
        std::fs::write(
            train.join("eval/step-00000-before.jsonl"),
            format!("{}\n", line("a", false)),
        )
        .unwrap();
        std::fs::write(
            train.join("eval/step-00002-final.jsonl"),
            format!("{}\n", line("a", true)),
        )
        .unwrap();
        std::fs::write(
            train.join("metrics.jsonl"),
            "{\"phase\":\"eval\",\"step\":0,\"elapsed_s\":0,\"eval\":{\"label\":\"before\",\"success\":0.0,\"progress\":0.5}}\n{\"phase\":\"rl\",\"step\":2,\"elapsed_s\":1,\"reward\":0.5,\"train\":{\"loss\":0.3}}\n",
        )
        .unwrap();
        let runs: Vec<Run> = [&eval, &rollout, &train]
            .iter()
            .map(|p| crate::load::open_run(p).unwrap())
            .collect();
        assert_eq!(
            runs.iter().map(|r| r.kind).collect::<Vec<_>>(),
            vec![RunKind::Eval, RunKind::Rollout, RunKind::Train]
        );
        let h = html(&runs, &Options::default());
        assert!(h.contains("id=\"progress-plot\"><svg") && h.contains("id=\"tokens-plot\"><svg"));
        assert!(h.contains("training-plot\"><svg") && h.contains("train reward (RL)"));
        assert!(h.contains("step-00002-final"));
        assert!(
            !h.contains("http://")
                || h.matches("http://").count()
                    == h.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "the report must fetch nothing"
        );
        let md = markdown(&runs, &Options::default());
        assert!(md.contains("| eval-1 | eval | 2 | 50.0%"), "{md}");
        assert!(md.contains("recovery rate"));
        // The rollout and the training run share task a with the eval run: paired.
        assert!(md.contains("| rollout-1 − eval-1 | 1 |"), "{md}");
        assert!(h.contains("id=\"comparison\""));
    }
}

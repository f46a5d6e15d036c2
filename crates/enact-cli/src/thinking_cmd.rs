//! `enact bench thinking`: the same tasks under each thinking mode, success and progress
//! against tokens — how much each token of thought buys — and how often adaptive thinking
//! escalated after a failed step. Every mode's episodes go to a run directory of their own
//! (under one parent), so `enact show` (and the report tools) read them like any eval.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use enact_core::{Effort, Episode, ThinkingMode};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};

use enact_eval::svg::escape;

use crate::episode::{self, AgentArgs, RunConfig, TaskArgs};
use crate::metrics::Summary;
use crate::rundir::RunDir;

#[derive(Args)]
pub struct BenchThinkingArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(flatten)]
    tasks: TaskArgs,
    /// Tasks (the same ones under every mode).
    #[arg(short = 'n', long = "tasks", default_value_t = 8)]
    count: usize,
    /// The modes to compare, comma-separated (see `--thinking`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "off,budget:16,budget:64,adaptive:low,adaptive:medium"
    )]
    modes: Vec<ThinkingMode>,
    /// Episodes in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Print the rows as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Run nothing: print the table of a finished bench directory again (its bench.json) and
    /// redraw its plot.svg.
    #[arg(long, value_name = "DIR")]
    show: Option<PathBuf>,
}

/// One mode's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeRow {
    pub mode: String,
    pub episodes: usize,
    pub success: f64,
    pub progress: f64,
    /// Per episode: sampled tokens (thinking included), thinking tokens, forced tokens.
    pub sampled: f64,
    pub thinking: f64,
    pub forced: f64,
    /// Sampled + forced tokens of all episodes per solved episode (`None`: none solved).
    pub tokens_per_success: Option<f64>,
    /// Turns whose thought reached its budget.
    pub budget_hits: usize,
    /// Turns that followed a failed step, and how many of them got more thinking than the
    /// mode's base (adaptive escalation).
    pub after_failure: usize,
    pub escalated: usize,
    pub run_dir: PathBuf,
}

fn escalated(mode: &ThinkingMode, ep: &Episode) -> (usize, usize) {
    let base = match mode {
        ThinkingMode::Adaptive { effort, .. } => effort.base_budget(),
        ThinkingMode::Budget { per_turn, .. } => *per_turn,
        _ => Effort::Low.base_budget(),
    };
    let mut after = 0;
    let mut more = 0;
    for r in &ep.outcome.per_turn {
        let Some(d) = &r.decision else { continue };
        if d.signals.last_step_failed {
            after += 1;
            if d.budget.unwrap_or(0) > base {
                more += 1;
            }
        }
    }
    (after, more)
}

fn row(mode: &ThinkingMode, episodes: &[Episode], run_dir: PathBuf) -> ModeRow {
    let n = episodes.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Episode) -> f64| episodes.iter().map(f).sum::<f64>() / n;
    let solved = episodes.iter().filter(|e| e.outcome.success).count();
    let total: usize = episodes
        .iter()
        .map(|e| e.outcome.tokens.sampled + e.outcome.tokens.forced)
        .sum();
    let (after_failure, escalated) = episodes
        .iter()
        .map(|e| escalated(mode, e))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    ModeRow {
        mode: mode.to_string(),
        episodes: episodes.len(),
        success: solved as f64 / n,
        progress: mean(&|e| e.outcome.progress),
        sampled: mean(&|e| e.outcome.tokens.sampled as f64),
        thinking: mean(&|e| e.outcome.tokens.thinking as f64),
        forced: mean(&|e| e.outcome.tokens.forced as f64),
        tokens_per_success: (solved > 0).then(|| total as f64 / solved as f64),
        budget_hits: episodes
            .iter()
            .flat_map(|e| &e.outcome.per_turn)
            .filter(|r| r.budget_hit)
            .count(),
        after_failure,
        escalated,
        run_dir,
    }
}

/// The table: one row per mode, with what each thinking token bought against `off` (or the
/// first mode): success points gained per extra thinking token per episode.
pub fn table(rows: &[ModeRow], env: &str, model: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "enact bench thinking · {env} · model {model} · {} tasks per mode",
        rows.first().map_or(0, |r| r.episodes)
    );
    let _ = writeln!(
        s,
        "{:<18} {:>8} {:>8} {:>9} {:>9} {:>7} {:>11} {:>11} {:>9} {:>10}",
        "mode",
        "success",
        "progress",
        "tok/ep",
        "think/ep",
        "forced",
        "tok/success",
        "pts/think",
        "cut",
        "escalated"
    );
    let base = rows
        .iter()
        .find(|r| r.mode == "off")
        .or(rows.first())
        .cloned();
    for r in rows {
        let per_k = match &base {
            Some(b) if r.thinking > b.thinking + 0.5 => format!(
                "{:+.2}",
                100.0 * (r.success - b.success) / (r.thinking - b.thinking)
            ),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "{:<18} {:>7.0}% {:>8.2} {:>9.0} {:>9.0} {:>7.0} {:>11} {:>11} {:>9} {:>10}",
            r.mode,
            100.0 * r.success,
            r.progress,
            r.sampled + r.forced,
            r.thinking,
            r.forced,
            r.tokens_per_success
                .map_or("—".into(), |t| format!("{t:.0}")),
            per_k,
            r.budget_hits,
            if r.after_failure == 0 {
                "—".to_string()
            } else {
                format!("{}/{}", r.escalated, r.after_failure)
            }
        );
    }
    s.push_str(
        "tok/ep: sampled + forced tokens per episode; think/ep: sampled thinking tokens; pts/think: success points gained over `off` per extra thinking token per episode; cut: turns closed by the budget; escalated: turns after a failed step that got more than the mode's base budget\n",
    );
    s
}

/// Success and progress against tokens per episode, one point per mode (SVG, no dependency).
pub fn plot(rows: &[ModeRow], title: &str) -> String {
    let (w, h, l, r, t, b) = (640.0, 360.0, 60.0, 150.0, 40.0, 50.0);
    let max_x = rows
        .iter()
        .map(|r| r.sampled + r.forced)
        .fold(1.0f64, f64::max)
        * 1.1;
    let x = |v: f64| l + (w - l - r) * v / max_x;
    let y = |v: f64| t + (h - t - b) * (1.0 - v);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{l}\" y=\"22\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    for i in 0..=4 {
        let v = i as f64 / 4.0;
        let (x2, yv, tx, ty, pct) = (w - r, y(v), l - 6.0, y(v) + 4.0, 100.0 * v);
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" x2=\"{x2}\" y1=\"{yv}\" y2=\"{yv}\" stroke=\"#ddd\"/><text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{pct:.0}%</text>"
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">tokens per episode (sampled + forced)</text>",
        (l + w - r) / 2.0,
        h - 6.0
    );
    for i in 0..=4 {
        let v = max_x * i as f64 / 4.0;
        let (px, ty) = (x(v), h - b + 16.0);
        let _ = writeln!(
            s,
            "<text x=\"{px:.1}\" y=\"{ty}\" text-anchor=\"middle\">{v:.0}</text>"
        );
    }
    // Modes that landed on the same point share one label.
    let mut labels: Vec<((i64, i64), Vec<&str>)> = Vec::new();
    for row in rows {
        let tokens = row.sampled + row.forced;
        let (px, py, qy) = (x(tokens), y(row.success), y(row.progress));
        let _ = writeln!(
            s,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\" fill=\"#1f77b4\"/><rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"#ff7f0e\"/>",
            px - 4.0,
            qy - 4.0
        );
        let key = (px.round() as i64, py.round() as i64);
        match labels.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(&row.mode),
            None => labels.push((key, vec![&row.mode])),
        }
    }
    for (i, ((px, py), names)) in labels.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            px + 8,
            py - 8 - 12 * (i as i64 % 2),
            escape(&names.join(", "))
        );
    }
    let _ = writeln!(
        s,
        "<circle cx=\"{}\" cy=\"60\" r=\"5\" fill=\"#1f77b4\"/><text x=\"{}\" y=\"64\">success</text><rect x=\"{}\" y=\"76\" width=\"8\" height=\"8\" fill=\"#ff7f0e\"/><text x=\"{}\" y=\"84\">progress</text>\n</svg>",
        w - r + 20.0,
        w - r + 30.0,
        w - r + 16.0,
        w - r + 30.0
    );
    s
}

/// `--show DIR`: the table and plot of a finished bench, from its bench.json.
fn show(dir: &std::path::Path, json: bool) -> Result<()> {
    let path = dir.join("bench.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: pass a directory written by `enact bench thinking`",
            path.display()
        )
    })?;
    let rows: Vec<ModeRow> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a bench thinking result", path.display()))?;
    let config = rows
        .first()
        .and_then(|r| std::fs::read_to_string(dir.join(&r.run_dir).join("config.toml")).ok())
        .or_else(|| {
            rows.first()
                .and_then(|r| std::fs::read_to_string(r.run_dir.join("config.toml")).ok())
        })
        .and_then(|t| t.parse::<toml::Table>().ok());
    let field = |k: &str| {
        config
            .as_ref()
            .and_then(|c| c.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let (env, model) = (field("env"), field("model"));
    std::fs::write(
        dir.join("plot.svg"),
        plot(&rows, &format!("thinking modes · {env} · {model}")),
    )?;
    if json {
        println!("{text}");
    } else {
        print!("{}", table(&rows, &env, &model));
    }
    Ok(())
}

pub async fn run(args: BenchThinkingArgs) -> Result<()> {
    if let Some(dir) = &args.show {
        return show(dir, args.json);
    }
    if args.count == 0 || args.modes.is_empty() {
        bail!("--tasks and --modes must each name at least one");
    }
    let suite = crate::env_cmd::resolve_suite(&args.agent.env, args.agent.noise.as_deref()).await?;
    let tasks = episode::select_tasks(suite.as_ref(), &args.tasks, args.count)?;
    let model = args.agent.model.spec()?.describe();
    let parent = RunDir::create(&args.agent.runs_dir, "bench-thinking")?;
    let mut rows = Vec::new();
    for (i, mode) in args.modes.iter().enumerate() {
        let mut config = args.agent.config();
        config.thinking = mode.clone();
        let factory = args.agent.factory(&config).await?;
        let slug: String = mode
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut dir = RunDir::create(&parent.path, &slug)?;
        dir.write_config(&RunConfig {
            command: "bench thinking",
            model: model.clone(),
            env: suite.name(),
            split: &args.tasks.split,
            seed: args.tasks.seed,
            tasks: tasks.len(),
            agent: &config,
        })?;
        eprintln!("mode {}/{}: {mode}", i + 1, args.modes.len());
        // eval's runner: progress, Ctrl-C, episodes that cannot start reported, not fatal.
        let interrupts =
            signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C (SIGINT)")?;
        let ran = crate::eval_cmd::run_episodes(
            &factory,
            suite.clone(),
            tasks.iter().map(|t| (t.clone(), None)).collect(),
            args.concurrency.max(1),
            &mut dir,
            interrupts,
        )
        .await?;
        dir.write_metrics(&Summary::of(&ran.episodes))?;
        if ran.interrupted {
            return Err(crate::Interrupted(format!(
                "interrupted in mode {mode}; finished modes and episodes are in {}",
                parent.path.display()
            ))
            .into());
        }
        if ran.not_started > 0 {
            bail!(
                "{} episode(s) of mode {mode} could not start (see the errors above); the runs are in {}",
                ran.not_started,
                parent.path.display()
            );
        }
        rows.push(row(mode, &ran.episodes, dir.path.clone()));
    }
    let title = format!("thinking modes · {} · {model}", suite.name());
    std::fs::write(parent.path.join("plot.svg"), plot(&rows, &title))?;
    std::fs::write(
        parent.path.join("bench.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows, suite.name(), &model));
        println!(
            "wrote {} (plot.svg, bench.json, one run directory per mode)",
            parent.path.display()
        );
    }
    Ok(())
}

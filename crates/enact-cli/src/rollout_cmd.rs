//! `enact rollout --config rollout.toml`: many episodes in flight, written to a crash-safe
//! trajectory store and exported as a training dataset; rerunning the same command resumes.
//! `enact rollout status DIR` shows what every in-flight episode waits on; `enact rollout
//! export DIR` rewrites the dataset from the store. `enact bench rollout`: see [`bench`].

pub mod bench;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use enact_agent::AgentConfig;
use enact_core::Task;
use enact_rollout::{
    Cancel, EpisodeParts, FsyncPolicy, Rollout, RolloutConfig, RolloutRecord, StalePolicy,
    TrajectoryStore, training_rows,
};
use serde::{Deserialize, Serialize};

use crate::model;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RolloutArgs {
    #[command(subcommand)]
    cmd: Option<RolloutCmd>,
    /// The rollout configuration (TOML; see docs/rollout.md). Rerun the same command to resume.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RolloutCmd {
    /// What every in-flight episode of a running (or killed) rollout is waiting on, and since when.
    Status {
        /// The rollout's output directory.
        dir: PathBuf,
    },
    /// Rewrite dataset.jsonl and dataset.parquet from the stored episodes (e.g. of a stopped run).
    Export {
        /// The rollout's output directory.
        dir: PathBuf,
    },
}

fn default_model() -> String {
    "scripted".into()
}
fn default_tasks() -> usize {
    20
}
fn default_split() -> String {
    "train".into()
}
fn default_group() -> u32 {
    4
}
fn default_concurrency() -> usize {
    8
}
fn default_stale() -> StalePolicy {
    StalePolicy::Drop
}
fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Always
}
fn default_watchdog() -> f64 {
    120.0
}
fn default_status_interval() -> f64 {
    1.0
}
fn default_regenerations() -> u32 {
    3
}

/// `rollout.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutFile {
    /// Environment, as `--env` of run/eval.
    pub env: String,
    /// Tool noise, as `--noise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<String>,
    /// Model, as `--model` of run/eval.
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<PathBuf>,
    /// A checkpoint of `enact train` to run the embedded model with, as `--checkpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Number of tasks; each is sampled `group_size` times.
    #[serde(default = "default_tasks")]
    pub tasks: usize,
    #[serde(default = "default_split")]
    pub split: String,
    /// Task-set seed and run seed (part of every episode id).
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_group")]
    pub group_size: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Largest staleness kept (absent: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<u64>,
    #[serde(default = "default_stale")]
    pub stale: StalePolicy,
    #[serde(default = "default_regenerations")]
    pub max_regenerations: u32,
    /// Output directory (relative paths are relative to the configuration file).
    pub output: PathBuf,
    /// `always`, `never` or `every:N`.
    #[serde(default = "default_fsync")]
    pub fsync: FsyncPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode_timeout_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_timeout_secs: Option<f64>,
    #[serde(default = "default_watchdog")]
    pub watchdog_secs: f64,
    #[serde(default = "default_status_interval")]
    pub status_interval_secs: f64,
    /// Finished episodes buffered for the writer before the engine stops admitting
    /// (default: the concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_capacity: Option<usize>,
    /// Agent limits and sampling (the `[agent]` table: max_turns, max_tokens_per_turn, …).
    #[serde(default)]
    pub agent: AgentConfig,
    /// A team of agents plays each episode (as `--team`; docs/multi-agent.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<PathBuf>,
    /// A sub-agent's reward in the dataset: `(1 − own_weight)·episode reward + own_weight·its
    /// own verdict` where its sub-task has a verifier.
    #[serde(default = "default_own_weight")]
    pub own_weight: f64,
    /// The roles whose rows the dataset keeps (one role, several, or empty: every agent, for
    /// a model shared across roles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// How much a sub-agent's own verdict counts in its reward, unless configured.
pub const DEFAULT_OWN_WEIGHT: f64 = 0.5;

fn default_own_weight() -> f64 {
    DEFAULT_OWN_WEIGHT
}

fn secs(name: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{name} = {s}: use a positive number of seconds"))
}

fn opt_secs(name: &str, s: Option<f64>) -> Result<Option<Duration>> {
    s.map(|s| secs(name, s)).transpose()
}

pub async fn run(verbose: u8, args: RolloutArgs) -> Result<()> {
    match (args.cmd, args.config) {
        (Some(RolloutCmd::Status { dir }), _) => {
            crate::init_logging(verbose, None)?;
            status(&dir)
        }
        (Some(RolloutCmd::Export { dir }), _) => {
            crate::init_logging(verbose, None)?;
            let store = dir.join(STORE);
            if !store.exists() {
                bail!(
                    "{} has no {STORE}; pass the output directory of `enact rollout`",
                    dir.display()
                );
            }
            let (_, records) = TrajectoryStore::open(&store, FsyncPolicy::Always)?;
            let (own_weight, roles) = read_config(&dir.join("config.toml"))
                .map(|f| (f.own_weight, f.roles))
                .unwrap_or((DEFAULT_OWN_WEIGHT, Vec::new()));
            export(&dir, &records, true, own_weight, &roles)
        }
        (None, Some(config)) => rollout(verbose, &config).await,
        (None, None) => bail!(
            "pass --config rollout.toml to run (or resume) a rollout, or `enact rollout status DIR`"
        ),
    }
}

const STORE: &str = "episodes.jsonl";

/// Reads `rollout.toml`; relative paths in it are taken relative to its directory.
pub fn read_config(path: &Path) -> Result<RolloutFile> {
    let (mut file, base): (RolloutFile, _) =
        crate::resumable::read_toml(path, "rollout", "docs/rollout.md")?;
    file.output = base.join(&file.output);
    file.script = file.script.map(|s| base.join(s));
    file.team = file.team.map(|s| base.join(s));
    file.checkpoint = file.checkpoint.map(|s| base.join(s));
    Ok(file)
}

async fn rollout(verbose: u8, config_path: &Path) -> Result<()> {
    let file = read_config(config_path)?;
    if file.tasks == 0 || file.group_size == 0 || file.concurrency == 0 {
        bail!("tasks, group_size and concurrency must each be at least 1");
    }
    let resolved = toml::to_string_pretty(&file).context("cannot serialise the configuration")?;
    let out = crate::resumable::open_output(&file.output, &resolved, "a rollout", verbose)?;

    let suite = crate::env_cmd::resolve_suite(&file.env, file.noise.as_deref()).await?;
    let model_args = model::ModelArgs {
        model: file.model.clone(),
        script: file.script.clone(),
        checkpoint: file.checkpoint.clone(),
        engine: crate::settings::EngineSettings::from_config(
            file.threads,
            file.weights.as_deref(),
        )?,
        tokenizer: crate::settings::TokenizerSetting::from_config(
            file.tokenizer.clone(),
            "the configuration's",
        ),
    };
    let mut agents = model::AgentFactory::new(&model_args, &file.agent)?
        .with_checkpoint(&model_args)
        .await?;
    if let Some(team) = &file.team {
        agents = agents.with_team(crate::team::Team::load(team, &model_args, &file.agent)?);
    }
    let mut tasks = suite.tasks(&file.split, file.tasks, file.seed);
    if let Some(team) = &agents.team {
        // Stored episodes name the entry role (the export's role column).
        tasks = tasks.iter().map(|t| team.entry_task(t)).collect();
    }

    let (mut store, mut records) = TrajectoryStore::open(&out.join(STORE), file.fsync)?;
    let done: HashSet<String> = store.episode_ids().clone();
    let total = tasks.len() as u64 * u64::from(file.group_size);

    let factory_suite = suite.clone();
    let factory = move |task: &Task| -> Result<EpisodeParts, String> {
        if let Some(team) = &agents.team {
            let (agent, env) = team
                .entry_parts(&agents, &factory_suite, task)
                .map_err(|e| format!("{e:#}"))?;
            return Ok(EpisodeParts {
                agent,
                env,
                verifier: Some(factory_suite.verifier()),
            });
        }
        let agent = agents
            .agent_for(factory_suite.as_ref(), task)
            .map_err(|e| format!("{e:#}"))?;
        let env = factory_suite.make(task).map_err(|e| e.to_string())?;
        Ok(EpisodeParts {
            agent,
            env,
            verifier: Some(factory_suite.verifier()),
        })
    };
    let engine_config = RolloutConfig {
        concurrency: file.concurrency,
        group_size: file.group_size,
        seed: file.seed,
        max_staleness: file.max_staleness,
        stale: file.stale,
        max_regenerations: file.max_regenerations,
        episode_timeout: opt_secs("episode_timeout_secs", file.episode_timeout_secs)?,
        call_timeout: opt_secs("call_timeout_secs", file.call_timeout_secs)?,
        tool_timeout: opt_secs("tool_timeout_secs", file.tool_timeout_secs)?,
        watchdog: secs("watchdog_secs", file.watchdog_secs)?,
        status_interval: secs("status_interval_secs", file.status_interval_secs)?,
        status_file: Some(out.join("status.json")),
        metrics_file: Some(out.join("metrics.json")),
    };
    let engine = Arc::new(Rollout::new(engine_config, Arc::new(factory)));
    let board = engine.status();
    let (tx, mut rx) =
        tokio::sync::mpsc::channel(file.channel_capacity.unwrap_or(file.concurrency).max(1));
    let cancel = Cancel::default();
    let running = {
        let (engine, cancel) = (engine.clone(), cancel.clone());
        tokio::spawn(async move { engine.run(tasks, &done, tx, cancel).await })
    };

    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} episodes · {msg} · {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(records.len() as u64);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut write_error = None;
    loop {
        tokio::select! {
            record = rx.recv() => {
                let Some(record) = record else { break };
                // Write-ahead: stored (and synced per the fsync policy) before counted.
                if let Err(e) = store.append(&record) {
                    cancel.cancel();
                    write_error = Some(e);
                    break;
                }
                records.push(record);
                bar.inc(1);
            }
            _ = tick.tick() => {
                let s = board.snapshot(Duration::from_secs(3600));
                bar.set_message(format!(
                    "{:.2} ep/s · {:.0} tok/s · {} in flight · staleness {:.2} (max {})",
                    s.episodes_per_s, s.tokens_per_s, s.in_flight.len(), s.mean_staleness,
                    s.counters.max_staleness
                ));
            }
            _ = tokio::signal::ctrl_c() => {
                bar.suspend(|| eprintln!("interrupted: stopping; rerun the same command to resume"));
                cancel.cancel();
            }
        }
    }
    drop(rx);
    let summary = running.await.context("the rollout engine crashed")?;
    bar.finish_and_clear();
    store.sync()?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let summary = summary?;
    export(&out, &records, true, file.own_weight, &file.roles)?;
    let solved = records.iter().filter(|r| r.episode.outcome.success).count();
    println!(
        "rollout {} · model {} · {} episodes stored ({} new, {} resumed), {} solved, {} errors, {} regenerated, {} dropped as stale{}",
        suite.name(),
        file.model,
        records.len(),
        summary.finished,
        summary.skipped,
        solved,
        summary.errors,
        summary.regenerated,
        summary.dropped_stale,
        if summary.cancelled {
            " · interrupted"
        } else {
            ""
        }
    );
    println!("wrote {}", out.display());
    Ok(())
}

/// Writes `dataset.jsonl` and `dataset.parquet` (training rows with GRPO advantages per
/// task group) from stored episodes.
/// A team's episodes give one row per agent (role, place in the tree, mixed reward with
/// `own_weight`), grouped per task and role; `roles` (unless empty) keeps only those roles.
pub fn export(
    dir: &Path,
    records: &[RolloutRecord],
    std_normalise: bool,
    own_weight: f64,
    roles: &[String],
) -> Result<()> {
    let mut rows = Vec::new();
    for r in records {
        rows.extend(
            training_rows(r, own_weight)?
                .into_iter()
                .filter(|row| roles.is_empty() || roles.contains(&row.role)),
        );
    }
    enact_rollout::with_group_advantages(&mut rows, std_normalise);
    // Grouped, in a stable order whatever the finishing order was.
    rows.sort_by(|a, b| {
        (&a.task_id, a.sample_index, &a.agent).cmp(&(&b.task_id, b.sample_index, &b.agent))
    });
    enact_rollout::write_jsonl(&dir.join("dataset.jsonl"), &rows)?;
    enact_rollout::write_parquet(&dir.join("dataset.parquet"), &rows)?;
    Ok(())
}

fn status(dir: &Path) -> Result<()> {
    let s = enact_rollout::read_status(&dir.join("status.json")).map_err(anyhow::Error::msg)?;
    let now = enact_rollout::status::now_unix_ms();
    let ago = |ms: u64| now.saturating_sub(ms) as f64 / 1e3;
    let c = &s.counters;
    println!(
        "status written {:.1}s ago · policy version {} · {} finished ({} resumed) · {} errors · {} regenerated · {} kept stale · {} dropped stale",
        ago(s.written_ms),
        s.policy_version,
        c.finished,
        c.resumed,
        c.errors,
        c.regenerated,
        c.kept_stale,
        c.dropped_stale
    );
    println!(
        "{:.2} episodes/s · {:.0} tokens/s · mean staleness {:.2} (max {})",
        s.episodes_per_s, s.tokens_per_s, s.mean_staleness, c.max_staleness
    );
    if let Some(since) = s.consumer_blocked_since_ms {
        println!(
            "the writer is behind: admission paused for {:.1}s",
            ago(since)
        );
    }
    if let Some(since) = s.staleness_blocked_since_ms {
        println!(
            "admission waits for older episodes (staleness bound) for {:.1}s",
            ago(since)
        );
    }
    println!("{} in flight:", s.in_flight.len());
    println!(
        "  {:<28} {:<16} {:>5} {:>8} {:<24} {:>9} {:>12}",
        "episode", "task", "turn", "tokens", "waiting on", "since", "no progress"
    );
    for e in &s.in_flight {
        println!(
            "  {:<28} {:<16} {:>5} {:>8} {:<24} {:>8.1}s {:>11.1}s",
            e.episode_id,
            e.task_id,
            e.turn,
            e.sampled_tokens,
            e.waiting.to_string(),
            ago(e.since_ms),
            ago(e.progress_ms)
        );
    }
    for stalled in &s.stalled {
        println!("watchdog: {stalled}");
    }
    Ok(())
}

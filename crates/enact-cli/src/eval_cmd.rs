//! `enact eval`: a task set, a progress bar while it runs, a summary table; writes
//! `runs/<id>/`. Reads top to bottom: configuration → suite and tasks → agent factory →
//! episodes → summary.
//!
//! The first Ctrl-C stops admitting episodes and lets the running ones end; the run is then
//! summarised as `interrupted` (exit status 130). A second Ctrl-C exits at once; every
//! finished episode is already in `trajectories.jsonl`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use enact_core::{Episode, Task};
use enact_env::Suite;
use tokio::signal::unix::{SignalKind, signal};

use crate::episode::{self, AgentArgs, RunConfig, TaskArgs};
use crate::live::Progress;
use crate::metrics::Summary;
use crate::model::AgentFactory;
use crate::rundir::RunDir;
use crate::{Interrupted, env_cmd};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(flatten)]
    tasks: TaskArgs,
    /// Number of tasks (task files: at most as many as the split has).
    #[arg(short = 'n', long = "tasks", default_value_t = 20)]
    count: usize,
    /// Episodes in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Samples (episodes) per task, for pass@k and pass^k (k up to N); they differ at a
    /// temperature above 0 (with --sample-seed S, sample i uses seed S + i).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Dollars per million sampled tokens, to report a cost per success.
    #[arg(long)]
    price_per_mtok: Option<f64>,
}

/// What running the episodes produced.
pub(crate) struct Ran {
    pub episodes: Vec<Episode>,
    pub not_started: usize,
    pub not_run: usize,
    pub interrupted: bool,
}

pub async fn run(verbose: u8, args: EvalArgs) -> Result<()> {
    if args.count == 0 {
        bail!("--tasks must be at least 1");
    }
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    // Listen from the start, so that no Ctrl-C kills the process unrecorded once the run
    // directory exists.
    let interrupts =
        signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C (SIGINT)")?;
    let config = args.agent.config();
    let suite = env_cmd::resolve_suite(&args.agent.env, args.agent.noise.as_deref()).await?;
    let tasks = episode::select_tasks(suite.as_ref(), &args.tasks, args.count)?;
    let factory = args.agent.factory(&config).await?;
    let model = args.agent.model.spec()?.describe();
    let suite_name = suite.name().to_string();

    let mut dir = RunDir::create(&args.agent.runs_dir, "eval")?;
    crate::init_logging(verbose, Some(&dir.path.join("log.txt")))?;
    dir.write_config(&RunConfig {
        command: "eval",
        model: model.clone(),
        env: suite.name(),
        split: &args.tasks.split,
        seed: args.tasks.seed,
        tasks: tasks.len(),
        agent: &config,
    })?;

    // Every sample of a task, the samples of one task next to each other. With
    // --sample-seed S, sample i samples with seed S + i: reproducible, and the samples differ.
    let episodes: Vec<(Task, Option<u64>)> = tasks
        .iter()
        .flat_map(|t| {
            (0..args.samples).map(|i| {
                let seed = args.agent.sample_seed.map(|s| s.wrapping_add(i as u64));
                (t.clone(), seed)
            })
        })
        .collect();
    let ran = run_episodes(
        &factory,
        suite,
        episodes,
        args.concurrency.max(1),
        &mut dir,
        interrupts,
    )
    .await?;

    let mut summary = Summary::of(&ran.episodes);
    summary.not_started = ran.not_started;
    summary.not_run = ran.not_run;
    summary.interrupted = ran.interrupted;
    let loaded: Vec<enact_eval::Loaded> = ran
        .episodes
        .iter()
        .map(enact_eval::Loaded::from_episode)
        .collect();
    let metrics = enact_eval::Metrics::of(
        &loaded,
        &enact_eval::Options {
            price_per_mtok: args.price_per_mtok,
            default_env: suite_name.clone(),
            ..enact_eval::Options::default()
        },
    );
    summary.metrics = Some(metrics);
    dir.write_metrics(&summary)?;
    println!("{}", summary.table(&suite_name, &model));
    if let Some(m) = &summary.metrics {
        println!("{}", m.table());
    }
    println!("wrote {}", dir.path.display());
    if ran.interrupted {
        return Err(Interrupted(format!(
            "interrupted: {} episode(s) finished, {} never ran; the run is in {}",
            summary.episodes,
            ran.not_run,
            dir.path.display()
        ))
        .into());
    }
    episode::check_not_all_failed(&summary, &dir.path)?;
    if ran.not_started > 0 {
        bail!(
            "{} episode(s) could not start (see the errors above); the run is in {}",
            ran.not_started,
            dir.path.display()
        );
    }
    Ok(())
}

/// Runs `tasks` (each with its sampling seed, if set), `concurrency` at a time, appending each
/// episode to the run directory as it ends, until all ran or Ctrl-C.
pub(crate) async fn run_episodes(
    factory: &AgentFactory,
    suite: Arc<dyn Suite>,
    tasks: Vec<(Task, Option<u64>)>,
    concurrency: usize,
    dir: &mut RunDir,
    mut interrupts: tokio::signal::unix::Signal,
) -> Result<Ran> {
    let progress = Progress::new(tasks.len());
    let factory = factory.clone().wrapping_policies(progress.token_counter());
    let mut pending = tasks.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut ran = Ran {
        episodes: Vec::new(),
        not_started: 0,
        not_run: 0,
        interrupted: false,
    };
    loop {
        while !ran.interrupted && running.len() < concurrency {
            let Some((task, seed)) = pending.next() else {
                break;
            };
            let factory = match seed {
                Some(seed) => factory.with_sample_seed(seed),
                None => factory.clone(),
            };
            let suite = suite.clone();
            running.spawn(async move {
                let r = episode::run_episode(&factory, &suite, &task).await;
                (task.id, r)
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                match joined {
                    Some(Ok((_, Ok(ep)))) => {
                        dir.append_episode(&ep)?;
                        progress.episode_done(ep.outcome.success);
                        ran.episodes.push(ep);
                    }
                    Some(Ok((id, Err(e)))) => {
                        ran.not_started += 1;
                        progress.println(&format!("error: task {id}: {e:#}"));
                        progress.episode_done(false);
                    }
                    Some(Err(e)) => {
                        ran.not_started += 1;
                        progress.println(&format!("error: an episode crashed: {e}"));
                        progress.episode_done(false);
                    }
                    None => break,
                }
            }
            _ = interrupts.recv(), if !ran.interrupted => {
                ran.interrupted = true;
                ran.not_run = pending.len();
                // Listen for the second Ctrl-C before saying that it will work.
                let mut again =
                    signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C (SIGINT)")?;
                let path = dir.path.clone();
                tokio::spawn(async move {
                    again.recv().await;
                    eprintln!(
                        "\ninterrupted twice: exiting now; finished episodes are in {}",
                        path.display()
                    );
                    std::process::exit(130);
                });
                progress.println(&format!(
                    "interrupted: admitting no more episodes, waiting for the {} running; Ctrl-C again to exit now (finished episodes are in {})",
                    running.len(),
                    dir.path.display()
                ));
            }
        }
    }
    progress.finish();
    ran.episodes.sort_by(|a, b| a.task.id.cmp(&b.task.id));
    Ok(ran)
}

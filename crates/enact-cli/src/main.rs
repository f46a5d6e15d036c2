//! `enact`: run agents in environments, evaluate them, and inspect what they did.

mod env_cmd;
mod model;
mod model_cmd;
mod redteam_cmd;
mod rundir;
mod sandbox_cmd;
mod show;
mod template_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use enact_agent::AgentConfig;
use enact_core::{Episode, Task};
use enact_env::Suite;
use tracing_subscriber::prelude::*;

use crate::model::ModelSpec;
use crate::rundir::RunDir;

#[derive(Parser)]
#[command(
    name = "enact",
    version,
    about = "Agentic thinking: run, evaluate and train language-model agents in tool environments."
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one task and print its trajectory; writes runs/<id>/.
    Run(RunArgs),
    /// Run a task set and print a summary table; writes runs/<id>/.
    Eval(EvalArgs),
    /// Print the episodes of a run directory or trajectories.jsonl file.
    Show(ShowArgs),
    /// List the built-in environments.
    Envs,
    /// Run the red-team suite: cheat attempts for every documented reward-hacking vector, and honest reference solutions.
    Redteam(redteam_cmd::RedteamArgs),
    /// Environment servers and task files: `enact env serve|list|check`.
    Env(env_cmd::EnvArgs),
    /// Tokenize text (or decode ids) with a model's tokenizer.
    Tokenize(template_cmd::TokenizeArgs),
    /// Render or show a model's chat template.
    Template(template_cmd::TemplateArgs),
    /// Run commands in enact's sandbox, or check what isolation this machine supports.
    Sandbox {
        #[command(subcommand)]
        cmd: sandbox_cmd::SandboxCommand,
    },
    #[command(flatten)]
    Models(model_cmd::ModelCommands),
}

#[derive(Args, Clone)]
struct AgentArgs {
    /// The model: `scripted` (replays the environment's reference solution, or --script).
    #[arg(long, default_value = "scripted")]
    model: String,
    /// Assistant turns for the scripted model: a JSON array of strings.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Environment: a built-in name (see `enact envs`), tasks:DIR or remote:http://HOST:PORT[/SUITE].
    #[arg(long, default_value = "calc")]
    env: String,
    /// Inject tool noise, e.g. fail=0.2,delay=0.1:50ms,truncate=0.1,junk=0.1,seed=7.
    #[arg(long)]
    noise: Option<String>,
    /// Engine threads for an embedded model (0 = all cores; default: ENACT_THREADS or 0). Set it
    /// explicitly on a shared machine.
    #[arg(long)]
    threads: Option<usize>,
    /// Weight format for an embedded model: q8_0 (default), native or f32 (or ENACT_WEIGHTS).
    #[arg(long)]
    weights: Option<String>,
    /// For --model http://…: the served model's GGUF, tokenizer.json or Hugging Face directory,
    /// giving its tokenizer and chat template (or ENACT_TOKENIZER).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Most assistant turns per episode.
    #[arg(long, default_value_t = 16)]
    max_turns: u32,
    /// Most tokens sampled per turn.
    #[arg(long, default_value_t = 1024)]
    max_tokens_per_turn: usize,
    /// Most tokens in the context.
    #[arg(long, default_value_t = 8192)]
    max_context_tokens: usize,
    /// Episode wall-clock limit in seconds.
    #[arg(long, default_value_t = 600.0)]
    time_limit: f64,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Sampling seed.
    #[arg(long)]
    sample_seed: Option<u64>,
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Task-set seed; the task is the `--index`th task of the split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    index: usize,
    #[arg(long, default_value = "test")]
    split: String,
    /// Print the episode as JSON instead of the readable trajectory.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Number of tasks.
    #[arg(short = 'n', long, default_value_t = 20)]
    tasks: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "test")]
    split: String,
    /// Episodes in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[derive(Args)]
struct ShowArgs {
    /// A run directory or a trajectories.jsonl file.
    path: PathBuf,
    /// Only the episode with this index.
    #[arg(long)]
    index: Option<usize>,
    /// The model whose tokenizer decodes the trajectories (`default`, a path, or
    /// `http://…` with --tokenizer). Without it: the byte tokenizer or the default model,
    /// whichever the trajectory names; otherwise only the messages are shown.
    #[arg(long)]
    model: Option<String>,
    /// The served model's tokenizer, for --model http://….
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct RunConfig<'a> {
    command: &'a str,
    model: String,
    env: &'a str,
    split: &'a str,
    seed: u64,
    tasks: usize,
    agent: &'a AgentConfig,
}

fn set_model_overrides(a: &AgentArgs) {
    model::set_overrides(model::ModelOverrides {
        threads: a.threads,
        weights: a.weights.clone(),
        tokenizer: a.tokenizer.clone(),
    });
}

fn agent_config(a: &AgentArgs) -> AgentConfig {
    let mut c = AgentConfig {
        max_turns: a.max_turns,
        max_tokens_per_turn: a.max_tokens_per_turn,
        max_context_tokens: a.max_context_tokens,
        time_limit_secs: a.time_limit,
        ..AgentConfig::default()
    };
    c.sampling.temperature = a.temperature;
    c.sampling.seed = a.sample_seed;
    c
}

fn init_logging(verbose: u8, log_file: Option<&Path>) -> Result<()> {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let file_layer = match log_file {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(f))
                    .with_filter(tracing_subscriber::EnvFilter::new("info")),
            )
        }
        None => None,
    };
    // A second init (tests calling main twice) is harmless; ignore it.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    Ok(())
}

async fn run_one(
    spec: &ModelSpec,
    suite: &dyn Suite,
    task: &Task,
    config: &AgentConfig,
) -> Result<Episode> {
    let agent = model::build_agent(spec, suite, task, config)?;
    let mut env = suite.make(task).with_context(|| {
        format!(
            "cannot create environment {} for task {}",
            suite.name(),
            task.id
        )
    })?;
    let verifier = suite.verifier();
    Ok(agent.run(task, env.as_mut(), Some(verifier.as_ref())).await)
}

async fn cmd_run(verbose: u8, args: RunArgs) -> Result<()> {
    let suite = env_cmd::resolve_suite(&args.agent.env, args.agent.noise.as_deref()).await?;
    set_model_overrides(&args.agent);
    let spec = ModelSpec::parse(&args.agent.model, args.agent.script.clone())?;
    let config = agent_config(&args.agent);
    let tasks = suite.tasks(&args.split, args.index + 1, args.seed);
    let task = tasks
        .get(args.index)
        .context("no task at that index")?
        .clone();
    let mut dir = RunDir::create(&args.agent.runs_dir, "run")?;
    init_logging(verbose, Some(&dir.path.join("log.txt")))?;
    dir.write_config(&RunConfig {
        command: "run",
        model: spec.describe(),
        env: suite.name(),
        split: &args.split,
        seed: args.seed,
        tasks: 1,
        agent: &config,
    })?;
    let episode = run_one(&spec, suite.as_ref(), &task, &config).await?;
    dir.append_episode(&episode)?;
    dir.write_metrics(&summary_json(std::slice::from_ref(&episode)))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&episode)?);
    } else {
        let tokenizer = model::display_tokenizer(&spec);
        print!("{}", show::render_trajectory(&episode, tokenizer.as_ref()));
        println!();
        print!("{}", show::render_outcome(&episode));
        println!("wrote {}", dir.path.display());
    }
    Ok(())
}

async fn cmd_eval(verbose: u8, args: EvalArgs) -> Result<()> {
    let suite = env_cmd::resolve_suite(&args.agent.env, args.agent.noise.as_deref()).await?;
    set_model_overrides(&args.agent);
    let spec = ModelSpec::parse(&args.agent.model, args.agent.script.clone())?;
    let config = agent_config(&args.agent);
    if args.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    let tasks = suite.tasks(&args.split, args.tasks, args.seed);
    let mut dir = RunDir::create(&args.agent.runs_dir, "eval")?;
    init_logging(verbose, Some(&dir.path.join("log.txt")))?;
    dir.write_config(&RunConfig {
        command: "eval",
        model: spec.describe(),
        env: suite.name(),
        split: &args.split,
        seed: args.seed,
        tasks: args.tasks,
        agent: &config,
    })?;
    let bar = indicatif::ProgressBar::new(tasks.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:30} {pos}/{len} episodes · {msg} · {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for task in tasks {
        let (suite, spec, config, semaphore) = (
            suite.clone(),
            spec.clone(),
            config.clone(),
            semaphore.clone(),
        );
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let r = run_one(&spec, suite.as_ref(), &task, &config).await;
            (task.id.clone(), r)
        });
    }
    let mut episodes = Vec::new();
    let mut failures = 0;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(ep))) => {
                dir.append_episode(&ep)?;
                episodes.push(ep);
            }
            Ok((id, Err(e))) => {
                failures += 1;
                bar.suspend(|| eprintln!("error: task {id}: {e:#}"));
            }
            Err(e) => {
                failures += 1;
                bar.suspend(|| eprintln!("error: an episode task crashed: {e}"));
            }
        }
        let ok = episodes.iter().filter(|e| e.outcome.success).count();
        bar.set_message(format!("{ok} solved"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    episodes.sort_by(|a, b| a.task.id.cmp(&b.task.id));
    let summary = summary_json(&episodes);
    dir.write_metrics(&summary)?;
    println!(
        "{}",
        summary_table(suite.name(), &spec.describe(), &summary)
    );
    println!("wrote {}", dir.path.display());
    if failures > 0 {
        bail!("{failures} episode(s) could not run (see errors above)");
    }
    Ok(())
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// Aggregate metrics of a set of episodes.
fn summary_json(eps: &[Episode]) -> serde_json::Value {
    let n = eps.len();
    let mut terminations = serde_json::Map::new();
    for e in eps {
        let key = match &e.outcome.termination {
            enact_core::Termination::Error(_) => "error".to_string(),
            t => serde_json::to_value(t)
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_string))
                .unwrap_or_default(),
        };
        let c = terminations
            .entry(key)
            .or_insert(serde_json::Value::from(0u64));
        *c = serde_json::Value::from(c.as_u64().unwrap_or(0) + 1);
    }
    let recovered: usize = eps
        .iter()
        .map(|e| e.outcome.errors.iter().filter(|x| x.recovered).count())
        .sum();
    serde_json::json!({
        "episodes": n,
        "success_rate": mean(eps.iter().map(|e| if e.outcome.success { 1.0 } else { 0.0 })),
        "mean_reward": mean(eps.iter().map(|e| e.outcome.reward)),
        "mean_progress": mean(eps.iter().map(|e| e.outcome.progress)),
        "mean_turns": mean(eps.iter().map(|e| e.outcome.turns as f64)),
        "tool_calls": eps.iter().map(|e| e.outcome.tool_calls as u64).sum::<u64>(),
        "tool_errors": eps.iter().map(|e| e.outcome.tool_errors as u64).sum::<u64>(),
        "recovered_errors": recovered,
        "flags": eps.iter().map(|e| e.outcome.flags.len()).sum::<usize>(),
        "mean_sampled_tokens": mean(eps.iter().map(|e| e.outcome.tokens.sampled as f64)),
        "mean_thinking_tokens": mean(eps.iter().map(|e| e.outcome.tokens.thinking as f64)),
        "mean_episode_ms": mean(eps.iter().map(|e| e.outcome.timings.total_ms)),
        "terminations": terminations,
    })
}

fn summary_table(env: &str, model: &str, s: &serde_json::Value) -> String {
    let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
    let u = |k: &str| s[k].as_u64().unwrap_or(0);
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
        u("episodes"),
        100.0 * f("success_rate"),
        f("mean_reward"),
        f("mean_progress"),
        f("mean_turns"),
        u("tool_calls"),
        u("tool_errors"),
        u("recovered_errors"),
        f("mean_thinking_tokens"),
        f("mean_episode_ms"),
    ));
    if let Some(t) = s["terminations"].as_object() {
        let parts: Vec<String> = t.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("terminations: {}\n", parts.join(", ")));
    }
    out
}

fn cmd_show(args: ShowArgs) -> Result<()> {
    let episodes = rundir::read_episodes(&args.path)?;
    model::set_overrides(model::ModelOverrides {
        tokenizer: args.tokenizer.clone(),
        ..Default::default()
    });
    // Decoders to try, matched by the identity each trajectory records.
    let mut decoders: Vec<Box<dyn enact_core::Tokenizer>> =
        vec![Box::new(enact_model::ByteTokenizer::new())];
    let needs_model = episodes
        .iter()
        .any(|e| e.trajectory.tokenizer != decoders[0].identity());
    if needs_model {
        let spec = ModelSpec::parse(args.model.as_deref().unwrap_or("default"), None)?;
        decoders.push(model::display_tokenizer(&spec));
    }
    for (i, ep) in episodes.iter().enumerate() {
        if args.index.is_some_and(|want| want != i) {
            continue;
        }
        println!("═══ episode {i} · {} ═══", ep.id());
        match decoders
            .iter()
            .find(|d| d.identity() == ep.trajectory.tokenizer)
        {
            Some(d) => print!("{}", show::render_trajectory(ep, d.as_ref())),
            None => {
                println!(
                    "(tokenizer {} not available: pass --model to decode tokens; showing messages)",
                    ep.trajectory.tokenizer
                );
                for m in &ep.messages {
                    println!("[{}] {}", m.role.as_str(), m.content);
                }
            }
        }
        print!("{}", show::render_outcome(ep));
    }
    Ok(())
}

fn cmd_envs() {
    for s in enact_env::registry() {
        println!("{:<12} {}", s.name(), s.description());
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => cmd_run(cli.verbose, a).await,
        Command::Eval(a) => cmd_eval(cli.verbose, a).await,
        Command::Show(a) => {
            init_logging(cli.verbose, None)?;
            cmd_show(a)
        }
        Command::Models(c) => {
            init_logging(cli.verbose, None)?;
            model_cmd::run(c).await
        }
        Command::Tokenize(a) => template_cmd::tokenize(a, cli.verbose),
        Command::Template(a) => template_cmd::template(a),
        Command::Env(a) => {
            init_logging(cli.verbose, None)?;
            env_cmd::run(a).await
        }
        Command::Redteam(a) => {
            init_logging(cli.verbose, None)?;
            redteam_cmd::run(a).await
        }
        Command::Envs => {
            cmd_envs();
            Ok(())
        }
        Command::Sandbox { cmd } => {
            init_logging(cli.verbose, None)?;
            let code = sandbox_cmd::run(cmd).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Drop the tasks still holding sandboxes, then wait for their cgroups to be removed.
    drop(runtime);
    enact_sandbox::finish_cleanup();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

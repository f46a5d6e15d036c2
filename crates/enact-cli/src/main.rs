//! `enact`: run agents in environments, evaluate them, and inspect what they did.
//!
//! One file per command area (`*_cmd.rs`); this file only parses the command line and
//! dispatches.

// commands
mod env_cmd;
mod eval_cmd;
mod model_cmd;
mod redteam_cmd;
mod report_cmd;
mod resumable;
mod rollout_cmd;
mod run_cmd;
mod sandbox_cmd;
mod show_cmd;
mod template_cmd;
mod thinking_cmd;
mod train_cmd;
mod view_cmd;
// shared pieces
mod episode;
mod live;
mod metrics;
mod model;
mod rundir;
mod settings;
mod team;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::prelude::*;

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
    Run(run_cmd::RunArgs),
    /// Run a task set and print a summary table; writes runs/<id>/.
    Eval(eval_cmd::EvalArgs),
    /// Print the episodes of a run directory or trajectories.jsonl file.
    Show(show_cmd::ShowArgs),
    /// Write a self-contained HTML report and a Markdown summary of run directories (eval, rollout, train).
    Report(report_cmd::ReportArgs),
    /// Paired differences per task between two runs (B − A), with a bootstrap interval.
    Compare(report_cmd::CompareArgs),
    /// Browse a run's trajectories turn by turn in a local web viewer (127.0.0.1).
    View(view_cmd::ViewArgs),
    /// List the environments: the built-in ones, tasks:DIR and remote:URL.
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
    /// Many episodes in flight into a crash-safe trajectory dataset (`--config rollout.toml`; rerun to resume), `status DIR`, `export DIR`.
    Rollout(rollout_cmd::RolloutArgs),
    /// The closed loop: SFT warm start, then GRPO with the rollout engine beside the trainer, held-out evaluation, plot (`--config train.toml`; rerun to resume).
    Train(train_cmd::TrainArgs),
}

/// A run stopped by Ctrl-C: exit status 130, after everything finished is written.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

pub fn init_logging(verbose: u8, log_file: Option<&Path>) -> Result<()> {
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

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => run_cmd::run(cli.verbose, a).await,
        Command::Eval(a) => eval_cmd::run(cli.verbose, a).await,
        Command::Show(a) => {
            init_logging(cli.verbose, None)?;
            show_cmd::run(a)
        }
        Command::Report(a) => {
            init_logging(cli.verbose, None)?;
            report_cmd::report(a)
        }
        Command::Compare(a) => {
            init_logging(cli.verbose, None)?;
            report_cmd::compare(a)
        }
        Command::View(a) => {
            init_logging(cli.verbose, None)?;
            view_cmd::run(a).await
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
        Command::Rollout(a) => rollout_cmd::run(cli.verbose, a).await,
        Command::Train(a) => train_cmd::run(cli.verbose, a).await,
        Command::Envs => {
            env_cmd::print_builtin();
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

/// Caps glibc's malloc arenas before any thread starts. With one arena per thread (the
/// default, up to 8 per core), the trainer's large short-lived tensors, freed on other
/// threads than they were allocated on, fragmented memory until `enact train` on the default
/// model grew past 24 GB and was killed; with two arenas it stays at ~8 GB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    const M_ARENA_MAX: i32 = -8;
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // An explicit MALLOC_ARENA_MAX from the user wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any other
        // thread exists.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
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
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: library errors often show their
/// source in their own message already, and printing it again repeats the same OS error.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag and argument of every command says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "enact", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io).context("workspace /x: No such file");
        let e = e.context("could not create the sandbox");
        assert_eq!(
            error_chain(&e),
            "could not create the sandbox: workspace /x: No such file"
        );
    }
}

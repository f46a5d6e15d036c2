//! `enact run`: one task, its trajectory printed (tokens live on a terminal); writes
//! `runs/<id>/`.

use std::io::IsTerminal;

use anyhow::Result;
use clap::Args;

use crate::episode::{self, AgentArgs, RunConfig, TaskArgs};
use crate::metrics::Summary;
use crate::rundir::RunDir;
use crate::{env_cmd, live, show_cmd};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(flatten)]
    tasks: TaskArgs,
    /// Which task of the split to run (0 = the first).
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Print the episode as JSON instead of the readable trajectory.
    #[arg(long)]
    json: bool,
    /// Print the model's tokens on stderr as they are sampled (default: when stderr is a
    /// terminal).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    live: Option<bool>,
}

pub async fn run(verbose: u8, args: RunArgs) -> Result<()> {
    let suite = env_cmd::resolve_suite(&args.agent.env, args.agent.noise.as_deref()).await?;
    let task = episode::select_task(suite.as_ref(), &args.tasks, args.index)?;
    let config = args.agent.config();
    let mut factory = args.agent.factory(&config).await?;
    let live = args
        .live
        .unwrap_or_else(|| !args.json && std::io::stderr().is_terminal());
    if live {
        let printer = live::print_tokens(factory.display.clone());
        factory = factory.wrapping_policies(printer);
    }
    let mut dir = RunDir::create(&args.agent.runs_dir, "run")?;
    crate::init_logging(verbose, Some(&dir.path.join("log.txt")))?;
    dir.write_config(&RunConfig {
        command: "run",
        model: args.agent.model.spec()?.describe(),
        env: suite.name(),
        split: &args.tasks.split,
        seed: args.tasks.seed,
        tasks: 1,
        agent: &config,
    })?;
    let episode = episode::run_episode(&factory, &suite, &task).await?;
    if live {
        eprintln!();
    }
    dir.append_episode(&episode)?;
    let summary = Summary::of(std::slice::from_ref(&episode));
    dir.write_metrics(&summary)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&episode)?);
    } else {
        print!(
            "{}",
            show_cmd::render_trajectory(&episode, factory.display.as_ref())
        );
        println!();
        print!("{}", show_cmd::render_outcome(&episode));
        println!("wrote {}", dir.path.display());
    }
    episode::check_not_all_failed(&summary, &dir.path)
}

//! What `run` and `eval` share: the agent's limits, the choice of tasks (validated: a split,
//! an index and a selection that exist), one episode, the resolved configuration written to
//! `config.toml`, and the exit status of a finished run.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use enact_agent::AgentConfig;
use enact_core::{Episode, Task};
use enact_env::Suite;

use crate::metrics::Summary;
use crate::model::{AgentFactory, ModelArgs};
use crate::team::Team;

/// The splits every suite has (`Suite::tasks`).
pub const SPLITS: [&str; 2] = ["train", "test"];

/// The model, the environment and the limits of every episode.
#[derive(Args, Clone)]
pub struct AgentArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Environment: a built-in name (see `enact envs`), `tasks:DIR` (a directory of task files,
    /// docs/task-files.md) or `remote:http://HOST:PORT[/SUITE]` (an environment server,
    /// docs/remote-protocol.md).
    #[arg(long, default_value = "calc")]
    pub env: String,
    /// Inject tool noise, e.g. fail=0.2,delay=0.1:50ms,truncate=0.1,junk=0.1,seed=7.
    #[arg(long)]
    pub noise: Option<String>,
    /// Most assistant turns per episode.
    #[arg(long, default_value_t = 16)]
    pub max_turns: u32,
    /// Most tokens sampled per turn.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens_per_turn: usize,
    /// Most tokens in the context.
    #[arg(long, default_value_t = 8192)]
    pub max_context_tokens: usize,
    /// Episode wall-clock limit in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub time_limit: f64,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Sampling seed (default: random).
    #[arg(long)]
    pub sample_seed: Option<u64>,
    /// Thinking: `free` (as the model will), `off`, `budget:N` (N thinking tokens per turn;
    /// `budget:N/E` with E per episode; `,min:M` forces at least M), `low`|`medium`|`high`|`max`
    /// (budgets of 128/512/2048/8192), or `adaptive[:EFFORT]` (the controller decides per turn;
    /// docs/thinking.md). A task's own mode overrides it.
    #[arg(long, default_value = "free", value_name = "MODE")]
    pub thinking: enact_core::ThinkingMode,
    /// Text inserted when a thought reaches its budget (default: the model family's, Qwen3's
    /// "Considering the limited time by the user, …" recipe).
    #[arg(long, value_name = "TEXT")]
    pub stop_thinking_text: Option<String>,
    /// Route hard turns to this second model (same spellings as --model; it must share the
    /// model's tokenizer): routine turns stay on --model. Works with `--thinking adaptive`.
    #[arg(long, value_name = "MODEL")]
    pub thinking_model: Option<String>,
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// A team of agents plays each episode: roles, who may delegate to whom, their models and
    /// limits (TOML; docs/multi-agent.md, e.g. configs/team-research.toml).
    #[arg(long, value_name = "FILE")]
    pub team: Option<PathBuf>,
}

impl AgentArgs {
    pub fn config(&self) -> AgentConfig {
        let mut c = AgentConfig {
            max_turns: self.max_turns,
            max_tokens_per_turn: self.max_tokens_per_turn,
            max_context_tokens: self.max_context_tokens,
            time_limit_secs: self.time_limit,
            ..AgentConfig::default()
        };
        c.sampling.temperature = self.temperature;
        c.sampling.seed = self.sample_seed;
        c.thinking = self.thinking.clone();
        c.stop_thinking_text = self.stop_thinking_text.clone();
        c
    }
}

/// Which tasks: `count` tasks of `split`, shuffled by `seed`.
#[derive(Args, Clone)]
pub struct TaskArgs {
    /// Task split: `train` or `test` (disjoint).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Task-set seed: generated environments derive their tasks from it; task files are
    /// shuffled by it (0 keeps file order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `count` tasks of the split, or an error that says what exists.
pub fn select_tasks(suite: &dyn Suite, tasks: &TaskArgs, count: usize) -> Result<Vec<Task>> {
    if !SPLITS.contains(&tasks.split.as_str()) {
        bail!(
            "unknown split \"{}\": use {}",
            tasks.split,
            SPLITS.join(" or ")
        );
    }
    let selected = suite.tasks(&tasks.split, count, tasks.seed);
    if selected.is_empty() {
        let others: Vec<String> = SPLITS
            .iter()
            .filter(|s| **s != tasks.split)
            .map(|s| format!("{s} has {}", count_tasks(suite, s, tasks.seed)))
            .collect();
        bail!(
            "environment {} has no {} tasks ({}); pass --split with a split that has tasks",
            suite.name(),
            tasks.split,
            others.join(", ")
        );
    }
    Ok(selected)
}

/// How many tasks a split has, as a phrase ("3 tasks", "an unlimited number of tasks").
fn count_tasks(suite: &dyn Suite, split: &str, seed: u64) -> String {
    // Generated suites have as many tasks as asked for; task files have a fixed number.
    const PROBE: usize = 10_000;
    match suite.tasks(split, PROBE, seed).len() {
        PROBE => "generated tasks without limit".into(),
        1 => "1 task".into(),
        n => format!("{n} tasks"),
    }
}

/// The `index`th task of the split, or an error that says how many there are.
pub fn select_task(suite: &dyn Suite, tasks: &TaskArgs, index: usize) -> Result<Task> {
    let all = select_tasks(suite, tasks, index.saturating_add(1))?;
    let n = all.len();
    all.into_iter().nth(index).with_context(|| {
        format!(
            "--index {index} is out of range: the {} split of {} has {n} task(s), indexes 0 to {}",
            tasks.split,
            suite.name(),
            n - 1
        )
    })
}

impl AgentArgs {
    /// The agent factory of `--model`, with the `--team` when given.
    pub async fn factory(&self, config: &AgentConfig) -> Result<AgentFactory> {
        let factory = AgentFactory::new(&self.model, config)?
            .with_thinking_model(self.thinking_model.as_deref(), &self.model)?
            .with_checkpoint(&self.model)
            .await?;
        Ok(match &self.team {
            Some(path) => factory.with_team(Team::load(path, &self.model, config)?),
            None => factory,
        })
    }
}

/// One episode of `task`: a fresh environment, the agent, the suite's verifier. With a team,
/// the entry role plays it and the episode holds the tree of its sub-agents.
pub async fn run_episode(
    factory: &AgentFactory,
    suite: &Arc<dyn Suite>,
    task: &Task,
) -> Result<Episode> {
    if let Some(team) = &factory.team {
        // The episode records the task with the entry role in its metadata.
        let entry_task = team.entry_task(task);
        let (agent, mut env) = team.entry_parts(factory, suite, task)?;
        let verifier = suite.verifier();
        return Ok(agent
            .run(&entry_task, env.as_mut(), Some(verifier.as_ref()))
            .await);
    }
    let agent = factory.agent_for(suite.as_ref(), task)?;
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

/// The resolved configuration of a run (`config.toml`).
#[derive(serde::Serialize)]
pub struct RunConfig<'a> {
    pub command: &'a str,
    pub model: String,
    pub env: &'a str,
    pub split: &'a str,
    pub seed: u64,
    pub tasks: usize,
    pub agent: &'a AgentConfig,
}

/// Fails a run in which no episode got anywhere: every one ended in an error of the policy,
/// the template or the environment. The reason comes first.
pub fn check_not_all_failed(summary: &Summary, dir: &std::path::Path) -> Result<()> {
    if let Some(reason) = summary.all_failed() {
        bail!(
            "{reason} (every one of the {} episodes ended in an error); the run is in {}",
            summary.episodes,
            dir.display()
        );
    }
    Ok(())
}

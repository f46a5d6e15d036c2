//! `enact train --config train.toml`: the closed loop on one machine.
//!
//! The embedded engine samples episodes through the rollout engine while the trainer
//! (`enact-train`) updates a differentiable twin of the same model; after each optimizer
//! step the merged weights are published to the engine in process, under the step number
//! as policy version. Phases: an optional SFT warm start on the environment's reference
//! solutions of the training split, then GRPO (decoupled PPO-clip with group-normalised
//! advantages) with bounded staleness. Held-out evaluation (greedy, unseen tasks of another
//! split) runs before training, after the warm start, every `eval.every` RL steps and at the
//! end. Everything needed to resume is on disk after every step (`state.json`, the
//! checkpoint it names, the crash-safe `episodes.jsonl`): `kill -9`, then the same command
//! continues from the last step. Design: docs/training.md ("The closed loop").

pub mod bench;
mod plot;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use enact_agent::{Agent, AgentConfig};
use enact_candle::{CandlePolicy, KvOnPublish};
use enact_core::{Episode, Policy, SeededRng, Task, Termination};
use enact_env::Suite;
use enact_model::scripted::ScriptedPolicy;
use enact_rollout::{
    Cancel, EpisodeParts, FsyncPolicy, Publisher, Rollout, RolloutConfig, RolloutRecord,
    StalePolicy, TrajectoryStore,
};
use enact_train::{
    AdamWConfig, Aggregation, LoraConfig, Objective, PpoConfig, Proj, StepMetrics, TrainConfig,
    TrainSample, TrainSequence, Trainable, Trainer, TwinModel,
};
use serde::{Deserialize, Serialize};

use crate::model::{self, ModelSpec};

#[derive(Args)]
pub struct TrainArgs {
    /// The training configuration (TOML; see docs/training.md). Rerun the same command to
    /// resume after an interruption (Ctrl-C or kill -9).
    #[arg(long)]
    config: PathBuf,
}

fn default_model() -> String {
    "default".into()
}
fn default_lr() -> f64 {
    1e-4
}
fn default_micro_batch() -> usize {
    512
}
fn default_grad_norm() -> f64 {
    1.0
}

/// What is trained: LoRA adapters (default) or every weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainableSection {
    /// `lora` or `full` (every weight; tiny models only).
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default = "default_rank")]
    pub r: usize,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Projections with adapters: any of q, k, v, o, gate, up, down.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
}
fn default_mode() -> String {
    "lora".into()
}
fn default_rank() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> Vec<String> {
    ["q", "k", "v", "o", "gate", "up", "down"]
        .map(String::from)
        .to_vec()
}
impl Default for TrainableSection {
    fn default() -> Self {
        TrainableSection {
            mode: default_mode(),
            r: default_rank(),
            alpha: default_alpha(),
            targets: default_targets(),
        }
    }
}

/// The SFT warm start on reference solutions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmStartSection {
    /// Training-split tasks whose reference solutions are trained on.
    pub tasks: usize,
    #[serde(default = "one")]
    pub epochs: u32,
    /// Trajectories per optimizer step.
    #[serde(default = "four")]
    pub batch: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
}
fn one() -> u32 {
    1
}
fn four() -> usize {
    4
}

/// GRPO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlSection {
    /// Optimizer steps of RL (0: warm start only).
    pub steps: u64,
    /// Tasks (groups) per step.
    #[serde(default = "four")]
    pub tasks_per_step: usize,
    /// Samples per task (G).
    #[serde(default = "default_group")]
    pub group_size: u32,
    /// Episodes in flight.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most optimizer steps between the policy that sampled an episode's first token and
    /// the one it is trained against; older episodes are sampled again.
    #[serde(default = "one_u64")]
    pub max_staleness: u64,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Sampling temperature of training episodes.
    #[serde(default = "one_f32")]
    pub temperature: f32,
    #[serde(default = "default_clip")]
    pub clip_low: f64,
    #[serde(default = "default_clip_high")]
    pub clip_high: f64,
    /// Cap of the importance weight π_prox/π_behav of stale tokens.
    #[serde(default = "default_cap")]
    pub importance_cap: f64,
    /// k3 KL to the reference (the base without adapters; the initial weights when full).
    #[serde(default)]
    pub kl_coef: f64,
    /// Divide advantages by the group's standard deviation (GRPO) or not (Dr. GRPO).
    #[serde(default = "yes")]
    pub std_normalise: bool,
    /// `sequence_mean` (GRPO), `token_mean` (DAPO) or `constant_norm` (Dr. GRPO).
    #[serde(default = "default_aggregation")]
    pub aggregation: String,
    /// Cost of thinking tokens for correct answers, in [0, 1): within a group, the correct
    /// sample that thought longest loses this fraction of the gap between the worst correct
    /// and the best wrong reward; wrong answers are unchanged (accuracy is never traded).
    #[serde(default)]
    pub thinking_cost: f64,
}
fn default_group() -> u32 {
    4
}
fn default_concurrency() -> usize {
    8
}
fn one_u64() -> u64 {
    1
}
fn one_f32() -> f32 {
    1.0
}
fn default_clip() -> f64 {
    0.2
}
fn default_clip_high() -> f64 {
    0.28
}
fn default_cap() -> f64 {
    2.0
}
fn yes() -> bool {
    true
}
fn default_aggregation() -> String {
    "token_mean".into()
}

/// Held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    #[serde(default = "default_eval_tasks")]
    pub tasks: usize,
    /// A split the training never sees.
    #[serde(default = "default_eval_split")]
    pub split: String,
    /// Also every N RL steps (0: before, after the warm start and at the end only).
    #[serde(default)]
    pub every: u64,
}
fn default_eval_tasks() -> usize {
    10
}
fn default_eval_split() -> String {
    "test".into()
}
impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            tasks: default_eval_tasks(),
            split: default_eval_split(),
            every: 0,
        }
    }
}

/// `train.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFile {
    /// Environment, as `--env` of run/eval.
    pub env: String,
    /// `default` or a model file / directory on the embedded engine.
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Output directory (relative paths are relative to the configuration file).
    pub output: PathBuf,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub trainable: TrainableSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<WarmStartSection>,
    pub rl: RlSection,
    #[serde(default)]
    pub eval: EvalSection,
    /// Tokens per packed forward of the trainer (bounds its memory).
    #[serde(default = "default_micro_batch")]
    pub micro_batch_tokens: usize,
    #[serde(default = "default_grad_norm")]
    pub max_grad_norm: f64,
    /// Agent limits (the `[agent]` table, as in rollout.toml); sampling is set per phase.
    #[serde(default)]
    pub agent: AgentConfig,
    /// A team of agents plays each RL episode (a team file, docs/multi-agent.md); every
    /// agent of the tree is a training sequence of the one embedded model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<PathBuf>,
    /// Which roles' sequences are trained (empty: every role — one model shared by all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// A sub-agent's reward: the episode's mixed with its own sub-task verdict, this much.
    #[serde(default = "half")]
    pub own_weight: f64,
}

fn half() -> f64 {
    0.5
}

/// One line of `metrics.jsonl` (and a point of the plot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// `warm_start`, `rl` or `eval`.
    pub phase: String,
    /// Optimizer steps taken (the policy version).
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rl_step: Option<u64>,
    /// Seconds of training so far (summed over resumed runs).
    pub elapsed_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<StepMetrics>,
    /// Mean reward / success / progress of the trained episodes (RL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Staleness of the trained episodes at training time (this step − the oldest policy
    /// version among their tokens): mean and max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleness_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleness_max: Option<u64>,
    /// Groups in the step and those with no signal (equal rewards), left out of the loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_groups: Option<usize>,
    /// Episodes left out because the trainer had moved more than `rl.max_staleness` steps
    /// past the oldest policy that sampled them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub too_stale: Option<usize>,
    /// Held-out evaluation: what it measured after (`before`, `warm_start`, `rl`, `final`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalPoint>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub label: String,
    pub split: String,
    pub tasks: usize,
    pub solved: usize,
    pub success: f64,
    pub progress: f64,
    pub reward: f64,
    pub mean_turns: f64,
    pub sampled_tokens: u64,
    /// Episodes that ended in an error of the policy or environment.
    pub errors: usize,
    /// The episodes, relative to the output directory (`enact show` reads it).
    #[serde(default)]
    pub file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Start,
    WarmStart,
    Rl,
    Done,
}

/// `state.json`: where the loop is. Written atomically after every step, after the
/// checkpoint it names is complete; a resume starts exactly here.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoopState {
    format_version: u32,
    phase: Phase,
    /// Checkpoint directory (relative to the output directory) of `step`.
    checkpoint: Option<String>,
    step: u64,
    warm_steps: u64,
    rl_steps: u64,
    /// Episode ids already trained on (never twice, also across resumes).
    consumed: Vec<String>,
    elapsed_s: f64,
    rows: Vec<MetricsRow>,
}

const STATE_VERSION: u32 = 1;
const STATE: &str = "state.json";
const STORE: &str = "episodes.jsonl";

impl LoopState {
    fn new() -> LoopState {
        LoopState {
            format_version: STATE_VERSION,
            phase: Phase::Start,
            checkpoint: None,
            step: 0,
            warm_steps: 0,
            rl_steps: 0,
            consumed: Vec::new(),
            elapsed_s: 0.0,
            rows: Vec::new(),
        }
    }
}

/// Writes `value` as JSON through a synced temporary file and a rename: a reader (or a
/// resume after `kill -9`) sees the old or the new file, never a torn one.
fn write_json_durable<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(value)?;
    let tmp = path.with_extension("json.tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub async fn run(verbose: u8, args: TrainArgs) -> Result<()> {
    let file = read_config(&args.config)?;
    check_config(&file)?;
    let resolved = toml::to_string_pretty(&file).context("cannot serialise the configuration")?;
    let out = crate::resumable::open_output(&file.output, &resolved, "a training run", verbose)?;

    let state_path = out.join(STATE);
    let mut state = if state_path.exists() {
        let text = std::fs::read_to_string(&state_path)
            .with_context(|| format!("cannot read {}", state_path.display()))?;
        let s: LoopState = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a training state; remove the output directory to start over",
                state_path.display()
            )
        })?;
        if s.format_version != STATE_VERSION {
            bail!(
                "{} has format version {} (this enact reads {STATE_VERSION}); start a new output directory",
                state_path.display(),
                s.format_version
            );
        }
        s
    } else {
        LoopState::new()
    };
    if state.phase == Phase::Done {
        print_summary(&file, &state, &out);
        eprintln!(
            "this run is complete; use a new output directory (or remove {}) to train again",
            out.display()
        );
        return Ok(());
    }
    if state.step > 0 || state.phase != Phase::Start {
        eprintln!(
            "resuming {} at optimizer step {} ({} warm-start, {} RL steps done)",
            out.display(),
            state.step,
            state.warm_steps,
            state.rl_steps
        );
    }

    let mut looped = Loop::new(file, out, state_path, &mut state).await?;
    let result = looped.run(&mut state).await;
    looped.finish(&mut state)?;
    result
}

/// Reads `train.toml`; relative paths in it are taken relative to its directory.
pub fn read_config(path: &Path) -> Result<TrainFile> {
    let (mut file, base): (TrainFile, _) =
        crate::resumable::read_toml(path, "training", "docs/training.md")?;
    file.output = base.join(&file.output);
    file.team = file.team.map(|t| base.join(t));
    let is_url = file.model.starts_with("http://") || file.model.starts_with("https://");
    if !is_url && model::looks_like_path(&file.model) {
        file.model = base.join(&file.model).display().to_string();
    }
    Ok(file)
}

/// The GRPO groups of one task's fresh episodes: their trajectories and rewards. Alone,
/// one group (rewards shaped by `rl.thinking_cost`). As a team (`entry`: its entry role), one
/// group per role: every agent of each tree whose role is trained (`roles`, empty: all), with
/// the episode's reward, for sub-agents mixed with their own sub-task verdict (`own_weight`).
fn training_groups(
    episodes: &[&Episode],
    entry: Option<&str>,
    f: &TrainFile,
) -> Vec<(Vec<enact_core::Trajectory>, Vec<f64>)> {
    let Some(entry) = entry else {
        let mut rewards: Vec<f64> = episodes.iter().map(|e| e.outcome.reward).collect();
        if f.rl.thinking_cost > 0.0 {
            // Learning when to think: correct answers pay for their thoughts, never below a
            // wrong answer (enact_core::advantage::thinking_cost_shaping).
            let ok: Vec<bool> = episodes.iter().map(|e| e.outcome.success).collect();
            let thought: Vec<usize> = episodes.iter().map(|e| e.outcome.tokens.thinking).collect();
            rewards = enact_core::advantage::thinking_cost_shaping(
                &rewards,
                &ok,
                &thought,
                f.rl.thinking_cost,
            );
        }
        let trajectories = episodes.iter().map(|e| e.trajectory.clone()).collect();
        return vec![(trajectories, rewards)];
    };
    let mut by_role: BTreeMap<String, (Vec<enact_core::Trajectory>, Vec<f64>)> = BTreeMap::new();
    for e in episodes {
        let rewards = enact_core::advantage::agent_rewards(e, f.own_weight);
        for (agent, reward) in e.agents().iter().zip(rewards) {
            let role = agent.role.unwrap_or(entry);
            if !f.roles.is_empty() && !f.roles.iter().any(|x| x == role) {
                continue;
            }
            let group = by_role.entry(role.to_string()).or_default();
            group.0.push(agent.episode.trajectory.clone());
            group.1.push(reward);
        }
    }
    by_role
        .into_values()
        .filter(|(t, _)| t.len() >= 2)
        .collect()
}

/// Checks a training team: the roles to train exist and run on the trained model (a role
/// with a model of its own cannot be trained here). Returns the entry role.
fn check_team(f: &TrainFile, path: &Path) -> Result<String> {
    let team = enact_team::TeamConfig::load(path)
        .with_context(|| format!("cannot load the team file {}", path.display()))?;
    for role in &f.roles {
        if team.role(role).is_none() {
            bail!(
                "roles names {role:?}, which the team file {} does not define; use some of {}",
                path.display(),
                team.roles.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    for (name, spec) in &team.roles {
        let trained = f.roles.is_empty() || f.roles.contains(name);
        if let Some(m) = spec.model.as_ref().filter(|m| *m != &f.model)
            && trained
        {
            bail!(
                "role {name} of {} runs on model {m}, not the trained model {}: leave it out of `roles` (or drop its model)",
                path.display(),
                f.model
            );
        }
    }
    Ok(team.team.entry.clone())
}

fn check_config(f: &TrainFile) -> Result<()> {
    let rl = &f.rl;
    if rl.tasks_per_step == 0 || rl.group_size == 0 || rl.concurrency == 0 {
        bail!("rl.tasks_per_step, rl.group_size and rl.concurrency must each be at least 1");
    }
    if rl.steps > 0 && rl.group_size < 2 {
        bail!(
            "rl.group_size = 1 gives every episode a zero advantage (GRPO compares samples of one task); use 2 or more"
        );
    }
    if let Some(w) = &f.warm_start
        && (w.tasks == 0 || w.batch == 0 || w.epochs == 0)
    {
        bail!(
            "warm_start.tasks, warm_start.batch and warm_start.epochs must each be at least 1 (or drop the [warm_start] table)"
        );
    }
    if f.micro_batch_tokens == 0 {
        bail!("micro_batch_tokens must be at least 1");
    }
    if !(0.0..1.0).contains(&rl.thinking_cost) {
        bail!(
            "rl.thinking_cost = {} is outside [0, 1): it is the fraction of the correct-vs-wrong reward gap the longest correct thought may lose; 0 turns it off",
            rl.thinking_cost
        );
    }
    aggregation(&rl.aggregation)?;
    trainable(f)?;
    Ok(())
}

fn aggregation(name: &str) -> Result<Aggregation> {
    Ok(match name {
        "sequence_mean" => Aggregation::SequenceMean,
        "token_mean" => Aggregation::TokenMean,
        "constant_norm" => Aggregation::ConstantNorm(1024),
        other => bail!(
            "rl.aggregation = {other:?} is not known: use sequence_mean (GRPO), token_mean (DAPO) or constant_norm (Dr. GRPO)"
        ),
    })
}

fn trainable(f: &TrainFile) -> Result<Trainable> {
    let t = &f.trainable;
    Ok(match t.mode.as_str() {
        "full" => Trainable::Full,
        "lora" => {
            if t.r == 0 {
                bail!("trainable.r must be at least 1");
            }
            let mut targets = Vec::new();
            for name in &t.targets {
                let p = Proj::parse(name).with_context(|| {
                    format!("trainable.targets names {name:?}: use q, k, v, o, gate, up or down")
                })?;
                if !targets.contains(&p) {
                    targets.push(p);
                }
            }
            if targets.is_empty() {
                bail!(
                    "trainable.targets is empty: name at least one projection (q, k, v, o, gate, up, down)"
                );
            }
            Trainable::Lora(LoraConfig {
                r: t.r,
                alpha: t.alpha,
                targets,
                seed: f.seed,
            })
        }
        other => bail!("trainable.mode = {other:?}: use lora or full"),
    })
}

fn rl_objective(rl: &RlSection) -> Objective {
    Objective::Ppo(PpoConfig {
        clip_low: rl.clip_low,
        clip_high: rl.clip_high,
        importance_cap: rl.importance_cap,
        kl_coef: rl.kl_coef,
        temperature: f64::from(rl.temperature),
    })
}

/// The model's pieces for agents.
#[derive(Clone)]
struct Parts {
    policy: Arc<CandlePolicy>,
    embedded: model::Embedded,
    suite: Arc<dyn Suite>,
    /// With `team`: its entry role (the root agent's role in the training groups).
    team_entry: Option<String>,
}

impl Parts {
    fn agent(&self, policy: Arc<dyn Policy>, config: AgentConfig) -> Agent {
        Agent::new(
            policy,
            self.embedded.tokenizer.clone(),
            self.embedded.template.clone(),
            self.embedded.parser.clone(),
        )
        .with_config(AgentConfig {
            thinking_style: self.embedded.thinking_style.clone(),
            ..config
        })
    }
}

struct Loop {
    file: TrainFile,
    out: PathBuf,
    state_path: PathBuf,
    parts: Parts,
    trainer: Option<Trainer>,
    started: Instant,
    elapsed_before: f64,
    bar: indicatif::ProgressBar,
}

impl Loop {
    async fn new(
        file: TrainFile,
        out: PathBuf,
        state_path: PathBuf,
        state: &mut LoopState,
    ) -> Result<Loop> {
        let spec = ModelSpec::parse(&file.model, None)?;
        if !matches!(spec, ModelSpec::Default | ModelSpec::Path(_)) {
            bail!(
                "enact train runs on the embedded engine: set model to \"default\" or a model file; for a model behind a server, record with `enact rollout` and train on its dataset.parquet with an external trainer (docs/training.md)"
            );
        }
        let path = model::resolve_model_path(&spec)?;
        let engine =
            crate::settings::EngineSettings::from_config(file.threads, file.weights.as_deref())?;
        let embedded = model::embedded(&path, &engine.options())?;
        let suite = crate::env_cmd::resolve_suite(&file.env, None).await?;
        let twin = {
            let path = path.clone();
            let shown = path.display().to_string();
            tokio::task::spawn_blocking(move || TwinModel::load(&path, candle_core::DType::F32))
                .await
                .context("loading the trainable model crashed")?
                .with_context(|| format!("cannot load {shown} for training"))?
        };
        let config = TrainConfig {
            trainable: trainable(&file)?,
            objective: rl_objective(&file.rl),
            aggregation: aggregation(&file.rl.aggregation)?,
            optimizer: AdamWConfig {
                lr: file.rl.lr,
                ..AdamWConfig::default()
            },
            max_grad_norm: file.max_grad_norm,
            micro_batch_tokens: file.micro_batch_tokens,
        };
        let base_name = path.display().to_string();
        let trainer = match &state.checkpoint {
            Some(dir) => {
                let dir = out.join(dir);
                let t = Trainer::resume(twin, &dir).with_context(|| {
                    format!(
                        "cannot resume from the checkpoint {}; remove the output directory to start over",
                        dir.display()
                    )
                })?;
                if t.step_count() != state.step {
                    bail!(
                        "the checkpoint {} is at step {}, the training state at {}; remove the output directory to start over",
                        dir.display(),
                        t.step_count(),
                        state.step
                    );
                }
                t
            }
            None => Trainer::new(twin, config, base_name)?,
        };
        let team_entry = match &file.team {
            Some(path) => Some(check_team(&file, path)?),
            None => None,
        };
        let parts = Parts {
            policy: embedded.policy.clone(),
            embedded,
            suite,
            team_entry,
        };
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        let mut l = Loop {
            elapsed_before: state.elapsed_s,
            file,
            out,
            state_path,
            parts,
            trainer: Some(trainer),
            started: Instant::now(),
            bar,
        };
        if state.step > 0 {
            // The engine starts from the file's weights: give it the checkpoint's.
            l.publish(state.step).await?;
        }
        Ok(l)
    }

    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    fn say(&self, line: String) {
        self.bar.suspend(|| eprintln!("{line}"));
        tracing::info!("{line}");
    }

    fn trainer(&mut self) -> Result<&mut Trainer> {
        self.trainer
            .as_mut()
            .context("the trainer was lost in a failed step; rerun the command to resume")
    }

    async fn run(&mut self, state: &mut LoopState) -> Result<()> {
        if state.phase == Phase::Start {
            self.evaluate(state, "before").await?;
            state.phase = if self.file.warm_start.is_some() {
                Phase::WarmStart
            } else {
                Phase::Rl
            };
            self.save_state(state)?;
        }
        if state.phase == Phase::WarmStart {
            self.warm_start(state).await?;
            if self.file.warm_start.is_some() {
                self.evaluate(state, "warm_start").await?;
            }
            state.phase = Phase::Rl;
            self.save_state(state)?;
        }
        if state.phase == Phase::Rl {
            if state.rl_steps < self.file.rl.steps && !self.rl(state).await? {
                return Ok(()); // interrupted; state saved
            }
            // The last evaluation is the final one when nothing was trained after it.
            let step = state.step;
            match state
                .rows
                .last_mut()
                .filter(|r| r.step == step)
                .and_then(|r| r.eval.as_mut())
            {
                Some(e) => {
                    let file = format!("eval/step-{step:05}-final.jsonl");
                    std::fs::rename(self.out.join(&e.file), self.out.join(&file))
                        .with_context(|| format!("cannot rename {} to {file}", e.file))?;
                    e.label = "final".into();
                    e.file = file;
                }
                None => self.evaluate(state, "final").await?,
            }
            state.phase = Phase::Done;
            self.save_state(state)?;
        }
        Ok(())
    }

    fn finish(&mut self, state: &mut LoopState) -> Result<()> {
        self.bar.finish_and_clear();
        state.elapsed_s = self.elapsed();
        self.write_outputs(state)?;
        // The RL episodes as a dataset for external trainers (docs/training.md).
        let store = self.out.join(STORE);
        if store.exists() {
            let (_, records) = TrajectoryStore::open(&store, FsyncPolicy::Always)?;
            crate::rollout_cmd::export(
                &self.out,
                &records,
                self.file.rl.std_normalise,
                crate::rollout_cmd::DEFAULT_OWN_WEIGHT,
                &[],
            )?;
        }
        if state.phase == Phase::Done {
            print_summary(&self.file, state, &self.out);
        } else {
            eprintln!(
                "stopped at optimizer step {} ({} RL steps); rerun the same command to resume",
                state.step, state.rl_steps
            );
        }
        Ok(())
    }

    /// `state.json` (durably), then `metrics.jsonl` and `plot.svg` from it.
    fn save_state(&self, state: &mut LoopState) -> Result<()> {
        state.elapsed_s = self.elapsed();
        write_json_durable(&self.state_path, state)?;
        self.write_outputs(state)
    }

    fn write_outputs(&self, state: &LoopState) -> Result<()> {
        let mut text = String::new();
        for r in &state.rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        let path = self.out.join("metrics.jsonl");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        let svg = plot::svg(&state.rows, &format!("enact train · {}", self.file.env));
        let path = self.out.join("plot.svg");
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Runs `work` on the trainer off the async threads (a step, a merge or a save is
    /// seconds of CPU) and puts the trainer back.
    async fn off_thread<R: Send + 'static>(
        &mut self,
        what: &str,
        work: impl FnOnce(&mut Trainer) -> R + Send + 'static,
    ) -> Result<R> {
        let mut trainer = self
            .trainer
            .take()
            .context("the trainer was lost in a failed step; rerun the command to resume")?;
        let (trainer, out) = tokio::task::spawn_blocking(move || {
            let out = work(&mut trainer);
            (trainer, out)
        })
        .await
        .with_context(|| format!("{what} crashed"))?;
        self.trainer = Some(trainer);
        Ok(out)
    }

    /// Publishes the trainer's weights to the engine as version `step`.
    async fn publish(&mut self, step: u64) -> Result<()> {
        let tensors = self
            .off_thread("merging the trained weights", |t| {
                t.model().merged_hf_tensors()
            })
            .await??;
        self.parts
            .policy
            .publish_tensors_as(tensors, KvOnPublish::KeepRunning, Some(step))
            .await
            .map_err(|e| anyhow::anyhow!("cannot publish the trained weights: {e}"))?;
        Ok(())
    }

    /// One optimizer step off the async threads; returns the metrics.
    async fn step(&mut self, samples: Vec<TrainSample>) -> Result<StepMetrics> {
        Ok(self
            .off_thread("the training step", move |t| t.step(&samples))
            .await??)
    }

    /// Saves a checkpoint of the current step, records it in the state (durably), and
    /// removes older checkpoints.
    async fn checkpoint(&mut self, state: &mut LoopState) -> Result<()> {
        let step = self.trainer()?.step_count();
        let name = format!("checkpoints/step-{step:05}");
        let dir = self.out.join(&name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot replace {}", dir.display()))?;
        }
        let save_dir = dir.clone();
        let saved = self
            .off_thread("saving the checkpoint", move |t| t.save(&save_dir))
            .await?;
        saved.with_context(|| format!("cannot save the checkpoint {}", dir.display()))?;
        let previous = state.checkpoint.replace(name.clone());
        state.step = step;
        self.save_state(state)?;
        if let Some(prev) = previous.filter(|p| *p != name) {
            let _ = std::fs::remove_dir_all(self.out.join(prev));
        }
        Ok(())
    }

    /// `model`, `threads` and `weights` of the file as the CLI's model arguments.
    fn model_args(&self) -> Result<model::ModelArgs> {
        Ok(model::ModelArgs {
            model: self.file.model.clone(),
            script: None,
            checkpoint: None,
            engine: crate::settings::EngineSettings::from_config(
                self.file.threads,
                self.file.weights.as_deref(),
            )?,
            tokenizer: crate::settings::TokenizerSetting::from_config(None, "the configuration's"),
        })
    }

    fn train_sampling(&self) -> AgentConfig {
        let mut c = self.file.agent.clone();
        // The behaviour logprobs the loss needs are those of the raw distribution at this
        // temperature; no truncation, so every token the model could pick is reachable.
        c.sampling.temperature = self.file.rl.temperature;
        c.sampling.top_p = 1.0;
        c.sampling.top_k = 0;
        c.sampling.min_p = 0.0;
        c
    }

    /// Greedy episodes of the held-out split under the current weights.
    async fn evaluate(&mut self, state: &mut LoopState, label: &str) -> Result<()> {
        let ev = &self.file.eval;
        if ev.tasks == 0 {
            return Ok(());
        }
        let tasks = self.parts.suite.tasks(&ev.split, ev.tasks, self.file.seed);
        if tasks.is_empty() {
            bail!(
                "environment {} has no tasks in the {:?} split; set eval.split to a split it has",
                self.parts.suite.name(),
                ev.split
            );
        }
        self.bar.set_message(format!(
            "evaluating on {} held-out tasks ({label})",
            tasks.len()
        ));
        let mut config = self.file.agent.clone();
        config.sampling.temperature = 0.0;
        config.sampling.seed = Some(self.file.seed);
        let agent = self.parts.agent(self.parts.policy.clone(), config);
        let episodes =
            run_episodes(&self.parts.suite, &agent, tasks, self.file.rl.concurrency).await;
        let dir = self.out.join("eval");
        std::fs::create_dir_all(&dir)?;
        let mut text = String::new();
        for e in &episodes {
            text.push_str(&serde_json::to_string(e)?);
            text.push('\n');
        }
        let file = format!("eval/step-{:05}-{label}.jsonl", state.step);
        std::fs::write(self.out.join(&file), text)?;
        let summary = crate::metrics::Summary::of(&episodes);
        let point = EvalPoint {
            label: label.to_string(),
            split: ev.split.clone(),
            tasks: episodes.len(),
            solved: episodes.iter().filter(|e| e.outcome.success).count(),
            success: summary.success_rate,
            progress: summary.mean_progress,
            reward: summary.mean_reward,
            mean_turns: summary.mean_turns,
            sampled_tokens: episodes
                .iter()
                .map(|e| e.outcome.tokens.sampled as u64)
                .sum(),
            errors: summary
                .terminations
                .iter()
                .find(|t| t.reason == "error")
                .map_or(0, |t| t.count),
            file,
        };
        self.say(format!(
            "held-out {} ({} tasks of the {} split) at step {}: success {}/{} ({:.0}%), progress {:.2}, reward {:.3}",
            label,
            point.tasks,
            point.split,
            state.step,
            point.solved,
            point.tasks,
            100.0 * point.success,
            point.progress,
            point.reward
        ));
        if let Some(why) = summary.all_failed() {
            bail!("held-out evaluation: {why}");
        }
        state.rows.push(MetricsRow {
            phase: "eval".into(),
            step: state.step,
            rl_step: Some(state.rl_steps),
            elapsed_s: self.elapsed(),
            eval: Some(point),
            ..MetricsRow::default()
        });
        self.save_state(state)
    }

    /// SFT on reference solutions of training tasks, rendered token-exact with the model's
    /// own template.
    async fn warm_start(&mut self, state: &mut LoopState) -> Result<()> {
        let Some(ws) = self.file.warm_start.clone() else {
            return Ok(());
        };
        let steps_per_epoch = ws.tasks.div_ceil(ws.batch) as u64;
        let total = steps_per_epoch * u64::from(ws.epochs);
        if state.warm_steps >= total {
            return Ok(());
        }
        self.bar
            .set_message("recording reference solutions for the warm start");
        let tasks = self
            .parts
            .suite
            .tasks("train", ws.tasks, self.file.seed ^ 0x5741_524d);
        let mut sequences = Vec::new();
        let mut failed = Vec::new();
        for task in &tasks {
            let Some(turns) = self.parts.suite.reference_solution(task) else {
                bail!(
                    "environment {} has no reference solution for task {}: drop the [warm_start] table",
                    self.parts.suite.name(),
                    task.id
                );
            };
            let scripted = Arc::new(ScriptedPolicy::new(
                turns,
                self.parts.embedded.tokenizer.clone(),
            ));
            let agent = self.parts.agent(scripted, self.file.agent.clone());
            let mut env = self.parts.suite.make(task)?;
            let verifier = self.parts.suite.verifier();
            let episode = agent.run(task, env.as_mut(), Some(verifier.as_ref())).await;
            if !episode.outcome.success {
                failed.push(format!("{} ({:?})", task.id, episode.outcome.termination));
                continue;
            }
            sequences.push(TrainSequence::main_line(&episode.trajectory)?);
        }
        if sequences.is_empty() {
            bail!(
                "no reference solution succeeded under this model's template (e.g. {}); the warm start has nothing to learn from",
                failed.first().cloned().unwrap_or_default()
            );
        }
        if !failed.is_empty() {
            self.say(format!(
                "warm start: {} of {} reference solutions did not succeed under this model's template and are left out: {}",
                failed.len(),
                tasks.len(),
                failed.join(", ")
            ));
        }
        let mean_len =
            sequences.iter().map(|s| s.tokens.len()).sum::<usize>() / sequences.len().max(1);
        self.say(format!(
            "warm start: SFT on {} reference trajectories (~{mean_len} tokens each), {} epoch(s), {} per step",
            sequences.len(),
            ws.epochs,
            ws.batch
        ));
        self.trainer()?.set_objective(Objective::Sft)?;
        self.trainer()?.set_learning_rate(ws.lr);
        let steps_per_epoch = sequences.len().div_ceil(ws.batch) as u64;
        let total = steps_per_epoch * u64::from(ws.epochs);
        while state.warm_steps < total {
            let epoch = state.warm_steps / steps_per_epoch;
            let in_epoch = (state.warm_steps % steps_per_epoch) as usize;
            let mut order: Vec<usize> = (0..sequences.len()).collect();
            SeededRng::new(self.file.seed ^ epoch).shuffle(&mut order);
            let batch: Vec<TrainSample> = order
                .iter()
                .skip(in_epoch * ws.batch)
                .take(ws.batch)
                .filter_map(|&i| sequences.get(i))
                .map(|s| TrainSample::new(s.clone(), 0.0))
                .collect();
            self.bar.set_message(format!(
                "warm start: step {}/{total} (epoch {})",
                state.warm_steps + 1,
                epoch + 1
            ));
            let m = self.step(batch).await?;
            state.warm_steps += 1;
            self.say(format!(
                "warm start {}/{total}: loss {:.4}, grad norm {:.3}, {} loss tokens",
                state.warm_steps, m.loss, m.grad_norm, m.loss_tokens
            ));
            state.rows.push(MetricsRow {
                phase: "warm_start".into(),
                step: m.step,
                elapsed_s: self.elapsed(),
                train: Some(m),
                ..MetricsRow::default()
            });
            self.checkpoint(state).await?;
        }
        let rl = rl_objective(&self.file.rl);
        self.trainer()?.set_objective(rl)?;
        let lr = self.file.rl.lr;
        self.trainer()?.set_learning_rate(lr);
        let step = state.step;
        self.publish(step).await?;
        self.checkpoint(state).await
    }

    /// GRPO with the rollout engine running beside the trainer. Returns false when
    /// interrupted.
    async fn rl(&mut self, state: &mut LoopState) -> Result<bool> {
        let rl = self.file.rl.clone();
        let needed = rl.steps as usize * rl.tasks_per_step;
        let tasks = self
            .parts
            .suite
            .tasks("train", needed, self.file.seed ^ 0x524c);
        if tasks.len() < needed {
            bail!(
                "environment {} has {} training tasks, fewer than rl.steps × rl.tasks_per_step = {needed}; lower them",
                self.parts.suite.name(),
                tasks.len()
            );
        }
        let (mut store, stored) =
            TrajectoryStore::open(&self.out.join(STORE), FsyncPolicy::Always)?;
        let consumed: HashSet<String> = state.consumed.iter().cloned().collect();
        let done: HashSet<String> = store.episode_ids().clone();
        // Episodes finished before an interruption but not trained on yet.
        let mut groups: HashMap<String, Vec<RolloutRecord>> = HashMap::new();
        let mut ready: Vec<String> = Vec::new();
        let g = rl.group_size as usize;
        let add = |rec: RolloutRecord,
                   groups: &mut HashMap<String, Vec<RolloutRecord>>,
                   ready: &mut Vec<String>| {
            let id = rec.task_id.clone();
            let group = groups.entry(id.clone()).or_default();
            group.push(rec);
            if group.len() == g {
                ready.push(id);
            }
        };
        for rec in stored {
            if !consumed.contains(&rec.episode_id) {
                add(rec, &mut groups, &mut ready);
            }
        }

        let factory_parts = self.parts.clone();
        let agent_config = self.train_sampling();
        // A team plays through the CLI's team machinery on the same engine (the model
        // registry gives every role of the trained model this process's one engine, so
        // published weights reach them all).
        let team = match &self.file.team {
            Some(path) => {
                let model_args = self.model_args()?;
                let run = model::AgentFactory::new(&model_args, &agent_config)?;
                let team = crate::team::Team::load(path, &model_args, &agent_config)?;
                Some((team, run))
            }
            None => None,
        };
        let tasks: Vec<Task> = match &team {
            Some((team, _)) => tasks.iter().map(|t| team.entry_task(t)).collect(),
            None => tasks,
        };
        let factory = move |task: &Task| -> Result<EpisodeParts, String> {
            if let Some((team, run)) = &team {
                let (agent, env) = team
                    .entry_parts(run, &factory_parts.suite, task)
                    .map_err(|e| format!("{e:#}"))?;
                return Ok(EpisodeParts {
                    agent,
                    env,
                    verifier: Some(factory_parts.suite.verifier()),
                });
            }
            let agent = factory_parts.agent(factory_parts.policy.clone(), agent_config.clone());
            let env = factory_parts.suite.make(task).map_err(|e| e.to_string())?;
            Ok(EpisodeParts {
                agent,
                env,
                verifier: Some(factory_parts.suite.verifier()),
            })
        };
        let engine = Arc::new(Rollout::new(
            RolloutConfig {
                concurrency: rl.concurrency,
                group_size: rl.group_size,
                seed: self.file.seed,
                max_staleness: Some(rl.max_staleness),
                stale: StalePolicy::Drop,
                max_regenerations: 3,
                status_file: Some(self.out.join("status.json")),
                ..RolloutConfig::default()
            },
            Arc::new(factory),
        ));
        let publisher: Publisher = engine.publisher();
        publisher.publish(state.step);
        let (tx, mut rx) = tokio::sync::mpsc::channel(rl.concurrency.max(1) * 2);
        let cancel = Cancel::default();
        let running = {
            let (engine, cancel) = (engine.clone(), cancel.clone());
            tokio::spawn(async move { engine.run(tasks, &done, tx, cancel).await })
        };

        let board = engine.status();
        let mut interrupted = false;
        let mut engine_done = false;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let result: Result<()> = async {
            while state.rl_steps < rl.steps {
                if ready.len() >= rl.tasks_per_step || (engine_done && !ready.is_empty()) {
                    let take: Vec<String> =
                        ready.drain(..rl.tasks_per_step.min(ready.len())).collect();
                    let batch: Vec<Vec<RolloutRecord>> =
                        take.iter().filter_map(|id| groups.remove(id)).collect();
                    self.rl_step(state, batch, &publisher).await?;
                    if rl.steps > state.rl_steps
                        && self.file.eval.every > 0
                        && state.rl_steps.is_multiple_of(self.file.eval.every)
                    {
                        self.evaluate(state, "rl").await?;
                    }
                    continue;
                }
                if engine_done {
                    bail!(
                        "the rollout engine finished with {} of {} RL steps done; see {}",
                        state.rl_steps,
                        rl.steps,
                        self.out.join("log.txt").display()
                    );
                }
                tokio::select! {
                    rec = rx.recv() => {
                        match rec {
                            Some(rec) => {
                                store.append(&rec)?;
                                add(rec, &mut groups, &mut ready);
                            }
                            None => engine_done = true,
                        }
                    }
                    _ = tick.tick() => {
                        let s = board.snapshot(Duration::from_secs(3600));
                        self.bar.set_message(format!(
                            "RL step {}/{} · collecting groups {}/{} · {} in flight · {:.0} tok/s",
                            state.rl_steps + 1, rl.steps, ready.len(), rl.tasks_per_step,
                            s.in_flight.len(), s.tokens_per_s
                        ));
                    }
                    _ = tokio::signal::ctrl_c() => {
                        self.say("interrupted: saving; rerun the same command to resume".into());
                        interrupted = true;
                        break;
                    }
                }
            }
            Ok(())
        }
        .await;
        cancel.cancel();
        drop(rx);
        let _ = running.await;
        store.sync()?;
        result?;
        Ok(!interrupted)
    }

    async fn rl_step(
        &mut self,
        state: &mut LoopState,
        batch: Vec<Vec<RolloutRecord>>,
        publisher: &Publisher,
    ) -> Result<()> {
        let episodes: Vec<&RolloutRecord> = batch.iter().flatten().collect();
        let n = episodes.len().max(1) as f64;
        let errors: Vec<&str> = episodes
            .iter()
            .filter_map(|r| match &r.episode.outcome.termination {
                Termination::Error(m) => Some(m.as_str()),
                _ => None,
            })
            .collect();
        if errors.len() == episodes.len() {
            bail!(
                "every episode of this step ended in an error, e.g.: {}",
                errors.first().copied().unwrap_or_default()
            );
        }
        // Staleness where it matters: the policy being trained (this step) against the
        // oldest policy that sampled a token of the episode. Episodes beyond the bound
        // (they waited for their group while the trainer moved on) are not trained on.
        let now = self.trainer()?.step_count();
        let bound = self.file.rl.max_staleness;
        let staleness = |r: &RolloutRecord| now.saturating_sub(r.min_policy_version);
        let mut samples = Vec::new();
        let mut flat = 0;
        let mut too_stale = 0;
        let mut trained: Vec<&RolloutRecord> = Vec::new();
        for group in &batch {
            let fresh: Vec<&RolloutRecord> =
                group.iter().filter(|r| staleness(r) <= bound).collect();
            too_stale += group.len() - fresh.len();
            if fresh.len() < 2 {
                continue;
            }
            let mut any = false;
            let episodes: Vec<&Episode> = fresh.iter().map(|r| &r.episode).collect();
            for (trajectories, rewards) in
                training_groups(&episodes, self.parts.team_entry.as_deref(), &self.file)
            {
                if rewards.iter().all(|&r| (r - rewards[0]).abs() < 1e-12) {
                    flat += 1;
                    continue;
                }
                any = true;
                samples.extend(TrainSample::grpo_group(
                    &trajectories,
                    &rewards,
                    self.file.rl.std_normalise,
                )?);
            }
            if any {
                trained.extend(fresh.iter().copied());
            }
        }
        let mut row = MetricsRow {
            phase: "rl".into(),
            rl_step: Some(state.rl_steps + 1),
            reward: Some(
                episodes
                    .iter()
                    .map(|r| r.episode.outcome.reward)
                    .sum::<f64>()
                    / n,
            ),
            success: Some(
                episodes
                    .iter()
                    .filter(|r| r.episode.outcome.success)
                    .count() as f64
                    / n,
            ),
            progress: Some(
                episodes
                    .iter()
                    .map(|r| r.episode.outcome.progress)
                    .sum::<f64>()
                    / n,
            ),
            staleness_mean: (!trained.is_empty()).then(|| {
                trained.iter().map(|r| staleness(r) as f64).sum::<f64>() / trained.len() as f64
            }),
            staleness_max: trained.iter().map(|r| staleness(r)).max(),
            groups: Some(batch.len()),
            flat_groups: Some(flat),
            too_stale: Some(too_stale),
            ..MetricsRow::default()
        };
        self.bar.set_message(format!(
            "RL step {}/{}: training on {} sequences",
            state.rl_steps + 1,
            self.file.rl.steps,
            samples.len()
        ));
        if !samples.is_empty() {
            let m = self.step(samples).await?;
            let step = m.step;
            row.train = Some(m);
            self.publish(step).await?;
            publisher.publish(step);
        }
        state.rl_steps += 1;
        row.step = self.trainer()?.step_count();
        row.elapsed_s = self.elapsed();
        self.say(format!(
            "RL step {}/{}: reward {:.3}, success {:.0}%, {} of {} groups flat{}",
            state.rl_steps,
            self.file.rl.steps,
            row.reward.unwrap_or(0.0),
            100.0 * row.success.unwrap_or(0.0),
            flat,
            batch.len(),
            row.train
                .as_ref()
                .map(|m| format!(
                    ", loss {:.4}, grad norm {:.3}, logprob mismatch {:.4}",
                    m.loss, m.grad_norm, m.logprob_mismatch_mean
                ))
                .unwrap_or_default()
        ));
        state.rows.push(row);
        state
            .consumed
            .extend(episodes.iter().map(|r| r.episode_id.clone()));
        self.checkpoint(state).await
    }
}

/// Runs one episode per task, `concurrency` at a time, in task order.
async fn run_episodes(
    suite: &Arc<dyn Suite>,
    agent: &Agent,
    tasks: Vec<Task>,
    concurrency: usize,
) -> Vec<Episode> {
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (suite, agent, limit) = (suite.clone(), agent.clone(), limit.clone());
        handles.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let env = suite.make(&task);
            match env {
                Ok(mut env) => {
                    let verifier = suite.verifier();
                    agent
                        .run(&task, env.as_mut(), Some(verifier.as_ref()))
                        .await
                }
                Err(e) => Episode::failed(
                    &task,
                    &uuid::Uuid::new_v4().to_string(),
                    "env",
                    format!("cannot create the environment: {e}"),
                ),
            }
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(e) = h.await {
            out.push(e);
        }
    }
    out
}

fn print_summary(file: &TrainFile, state: &LoopState, out: &Path) {
    let evals: Vec<&EvalPoint> = state.rows.iter().filter_map(|r| r.eval.as_ref()).collect();
    println!(
        "enact train · {} · model {} · {} optimizer steps ({} warm start, {} RL) in {:.0}s",
        file.env, file.model, state.step, state.warm_steps, state.rl_steps, state.elapsed_s
    );
    if let (Some(first), Some(last)) = (evals.first(), evals.last()) {
        println!(
            "held-out success ({} unseen tasks of the {} split, greedy):",
            first.tasks, first.split
        );
        for e in &evals {
            println!(
                "  {:<11} {:>3}/{:<3} ({:>3.0}%)  progress {:.2}  reward {:.3}",
                e.label,
                e.solved,
                e.tasks,
                100.0 * e.success,
                e.progress,
                e.reward
            );
        }
        println!(
            "  change: success {:+.0} points, progress {:+.2}",
            100.0 * (last.success - first.success),
            last.progress - first.progress
        );
    }
    if let Some(last) = evals.last() {
        println!(
            "held-out episodes: enact show {}",
            out.join(&last.file).display()
        );
    }
    println!("plot: {}", out.join("plot.svg").display());
    println!(
        "wrote {} (metrics.jsonl, plot.svg, checkpoints/ with PEFT adapters, episodes.jsonl and dataset.parquet of the RL episodes, eval/)",
        out.display()
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn team_episodes(child_reward: Option<f64>) -> Vec<Episode> {
        use enact_eval::fixtures::Fixture;
        [(true, true), (false, true)]
            .into_iter()
            .enumerate()
            .map(|(i, (success, child))| {
                let v = Fixture {
                    child,
                    ..Fixture::new(&format!("t-{i}"), success)
                }
                .to_json()
                .unwrap();
                let mut e: Episode = serde_json::from_value(v).unwrap();
                if let (Some(r), Some(c)) = (child_reward, e.children.first_mut())
                    && let Some(v) = c.episode.verdict.as_mut()
                {
                    v.reward = r;
                }
                e
            })
            .collect()
    }

    fn file_with(extra: &str) -> TrainFile {
        toml::from_str(&format!(
            "env = \"calc\"\noutput = \"o\"\n{extra}\n[rl]\nsteps = 1\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_team_trains_one_group_per_role_with_mixed_rewards() {
        let eps = team_episodes(Some(1.0));
        let refs: Vec<&Episode> = eps.iter().collect();
        let rewards: Vec<f64> = eps.iter().map(|e| e.outcome.reward).collect();
        // Alone: one group of the root trajectories with the episodes' rewards.
        let alone = training_groups(&refs, None, &file_with(""));
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].1, rewards);
        assert_eq!(alone[0].0[0], eps[0].trajectory);
        // A team, every role: the entry role's group, and the researchers' group whose
        // rewards mix the episode's with their own verdict (own_weight 0.5).
        let all = training_groups(&refs, Some("lead"), &file_with("own_weight = 0.5"));
        assert_eq!(all.len(), 2, "lead and researcher");
        let (lead, researcher) = (&all[0], &all[1]);
        assert_eq!(lead.1, rewards);
        assert_eq!(researcher.0[0], eps[0].children[0].episode.trajectory);
        let mixed: Vec<f64> = rewards.iter().map(|r| 0.5 * r + 0.5 * 1.0).collect();
        assert_eq!(researcher.1, mixed);
        // Only the researchers.
        let some = training_groups(&refs, Some("lead"), &file_with("roles = [\"researcher\"]"));
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].0[0], eps[0].children[0].episode.trajectory);
    }

    #[test]
    fn the_shipped_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/train-calc.toml");
        let f = read_config(&path).unwrap();
        check_config(&f).unwrap();
        assert_eq!((f.env.as_str(), f.model.as_str()), ("calc", "default"));
        assert!(f.output.is_absolute() && f.output.ends_with("runs/train-calc"));
        assert!(matches!(trainable(&f).unwrap(), Trainable::Lora(_)));
        assert!(f.warm_start.is_some() && f.rl.steps > 0 && f.eval.tasks > 0);
        assert_eq!(f.eval.split, "test");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let base = "env = \"calc\"\noutput = \"o\"\n[rl]\nsteps = 1\n";
        for (extra, says) in [
            ("lr = 1\n", ""),
            ("tasks_per_step = 0\n", "at least 1"),
            ("aggregation = \"mean\"\n", "sequence_mean"),
            ("thinking_cost = 1.5\n", "[0, 1)"),
            ("thinking_cost = 0.3\n", ""),
            ("bogus = 1\n", "bogus"),
        ] {
            std::fs::write(&path, format!("{base}{extra}")).unwrap();
            let r = read_config(&path).and_then(|f| check_config(&f));
            if says.is_empty() {
                r.unwrap();
            } else {
                let e = format!("{:#}", r.unwrap_err());
                assert!(e.contains(says), "{extra}: {e}");
            }
        }
    }
}

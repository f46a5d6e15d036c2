//! `enact bench rollout`: what asynchrony buys when generation waits on tools.
//!
//! A simulated inference server (one OS thread, like an accelerator): each decode step serves
//! up to `batch` sequences and takes `step_ms`; a reply takes `reply_steps` steps. Tools have
//! log-normal latency (p99 ≫ p50). The same episodes run twice:
//! - *synchronous batching*: `batch` episodes in lockstep; every generation round waits until
//!   all tool calls of the previous round returned (the baseline);
//! - *the engine*: `concurrency` episodes in flight, a finished one replaced at once.
//!
//! Reported: the server's busy fraction (time in decode steps / wall time), episodes/s, and
//! their ratio. Then the engine's own CPU per tool step with zero-latency mocks, next to the
//! agent loop alone (episodes run one after another, no engine), on one thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use enact_agent::{Agent, AgentConfig};
use enact_core::{Task, Tokenizer};
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser};
use enact_rollout::sim::{AnswerVerifier, SimEnv, SimPolicy, SimServer};
use enact_rollout::{Cancel, EpisodeParts, Rollout, RolloutConfig};

#[derive(Args, Clone)]
pub struct BenchRolloutArgs {
    /// Episodes per run.
    #[arg(long, default_value_t = 512)]
    episodes: usize,
    /// Tool turns per episode (then a final answer).
    #[arg(long, default_value_t = 4)]
    turns: usize,
    /// Sequences one decode step serves (the server's batch capacity).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Duration of one decode step, in milliseconds.
    #[arg(long, default_value_t = 2.0)]
    step_ms: f64,
    /// Decode steps per reply.
    #[arg(long, default_value_t = 16)]
    reply_steps: usize,
    /// Median tool latency, in milliseconds.
    #[arg(long, default_value_t = 20.0)]
    tool_median_ms: f64,
    /// Log-normal sigma of the tool latency (1.2: p99 ≈ 16× the median).
    #[arg(long, default_value_t = 1.2)]
    tool_sigma: f64,
    /// Episodes in flight in the engine (default: 4 × batch).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Skip the CPU-per-step measurement.
    #[arg(long)]
    no_cpu: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// Makes the episodes of one simulated run.
struct Sim {
    args: BenchRolloutArgs,
    server: Option<Arc<SimServer>>,
    tokenizer: Arc<ByteTokenizer>,
    call: Arc<Vec<u32>>,
    answer: Arc<Vec<u32>>,
    tokens: Arc<AtomicU64>,
}

impl Sim {
    fn new(args: &BenchRolloutArgs, server: Option<Arc<SimServer>>) -> Result<Self> {
        let tokenizer = Arc::new(ByteTokenizer::new());
        let call = tokenizer
            .encode(enact_rollout::sim::TOOL_CALL)
            .context("cannot encode the simulated tool call")?;
        let answer = tokenizer
            .encode("done")
            .context("cannot encode the simulated answer")?;
        Ok(Sim {
            args: args.clone(),
            server,
            tokenizer,
            call: Arc::new(call),
            answer: Arc::new(answer),
            tokens: Arc::default(),
        })
    }

    fn tasks(&self) -> Vec<Task> {
        enact_rollout::sim::tasks("sim", self.args.episodes)
    }

    fn parts(&self, task: &Task, lockstep: Option<Arc<tokio::sync::Barrier>>) -> EpisodeParts {
        let config = AgentConfig {
            max_turns: self.args.turns as u32 + 2,
            max_context_tokens: usize::MAX / 2,
            ..AgentConfig::default()
        };
        EpisodeParts {
            agent: Agent::new(
                Arc::new(SimPolicy {
                    server: self.server.clone(),
                    reply_steps: self.args.reply_steps,
                    call: self.call.clone(),
                    answer: self.answer.clone(),
                    turns: self.args.turns,
                    next: AtomicUsize::new(0),
                    lockstep,
                    tokens: self.tokens.clone(),
                }),
                self.tokenizer.clone(),
                Arc::new(ChatMlTemplate::default()),
                Arc::new(HermesParser),
            )
            .with_config(config),
            env: Box::new(SimEnv::new(
                self.args.tool_median_ms,
                self.args.tool_sigma,
                enact_rollout::stable_hash(&task.id),
            )),
            verifier: Some(Arc::new(AnswerVerifier("done".into()))),
        }
    }
}

#[derive(serde::Serialize)]
struct Throughput {
    mode: &'static str,
    episodes: usize,
    solved: usize,
    wall_s: f64,
    episodes_per_s: f64,
    tokens_per_s: f64,
    /// Time the server spent in decode steps / wall time.
    busy_fraction: f64,
    /// Mean sequences per decode step / batch capacity.
    batch_occupancy: f64,
}

fn throughput(
    mode: &'static str,
    sim: &Sim,
    server: &SimServer,
    solved: usize,
    wall: Duration,
) -> Throughput {
    let wall_s = wall.as_secs_f64().max(1e-9);
    let steps = server.steps.load(Ordering::Relaxed).max(1) as f64;
    Throughput {
        mode,
        episodes: sim.args.episodes,
        solved,
        wall_s,
        episodes_per_s: sim.args.episodes as f64 / wall_s,
        tokens_per_s: sim.tokens.load(Ordering::Relaxed) as f64 / wall_s,
        busy_fraction: server.busy_ns.load(Ordering::Relaxed) as f64 / 1e9 / wall_s,
        batch_occupancy: server.sequence_steps.load(Ordering::Relaxed) as f64
            / steps
            / sim.args.batch as f64,
    }
}

/// The baseline: batches of `batch` episodes in lockstep.
async fn synchronous(args: &BenchRolloutArgs) -> Result<Throughput> {
    let server = SimServer::start(args.batch, Duration::from_secs_f64(args.step_ms / 1e3));
    let sim = Sim::new(args, Some(server.clone()))?;
    let tasks = sim.tasks();
    let started = Instant::now();
    let mut solved = 0;
    for chunk in tasks.chunks(args.batch.max(1)) {
        let barrier = Arc::new(tokio::sync::Barrier::new(chunk.len()));
        let mut set = tokio::task::JoinSet::new();
        for task in chunk {
            let mut parts = sim.parts(task, Some(barrier.clone()));
            let task = task.clone();
            set.spawn(async move {
                let verifier = parts.verifier.clone();
                parts
                    .agent
                    .run(&task, parts.env.as_mut(), verifier.as_deref())
                    .await
            });
        }
        while let Some(ep) = set.join_next().await {
            solved += usize::from(ep.context("an episode crashed")?.outcome.success);
        }
    }
    let wall = started.elapsed();
    server.stop();
    Ok(throughput("synchronous", &sim, &server, solved, wall))
}

/// Runs every episode of `sim` through the engine; returns the number solved.
async fn through_engine(sim: Arc<Sim>, concurrency: usize) -> Result<usize> {
    let tasks = sim.tasks();
    let factory_sim = sim.clone();
    let factory =
        move |task: &Task| -> Result<EpisodeParts, String> { Ok(factory_sim.parts(task, None)) };
    let engine = Rollout::new(
        RolloutConfig {
            concurrency,
            group_size: 1,
            status_interval: Duration::from_secs(3600),
            ..Default::default()
        },
        Arc::new(factory),
    );
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<enact_rollout::RolloutRecord>(concurrency.max(1));
    let consumer = tokio::spawn(async move {
        let mut solved = 0;
        while let Some(r) = rx.recv().await {
            solved += usize::from(r.episode.outcome.success);
        }
        solved
    });
    engine
        .run(tasks, &HashSet::new(), tx, Cancel::default())
        .await?;
    consumer.await.context("the consumer crashed")
}

async fn asynchronous(args: &BenchRolloutArgs, concurrency: usize) -> Result<Throughput> {
    let server = SimServer::start(args.batch, Duration::from_secs_f64(args.step_ms / 1e3));
    let sim = Arc::new(Sim::new(args, Some(server.clone()))?);
    let started = Instant::now();
    let solved = through_engine(sim.clone(), concurrency).await?;
    let wall = started.elapsed();
    server.stop();
    Ok(throughput("engine", &sim, &server, solved, wall))
}

/// CPU time of the calling thread (Linux: /proc/thread-self/schedstat, nanoseconds).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[derive(serde::Serialize)]
struct CpuPerStep {
    turns: usize,
    episodes: usize,
    /// Tool steps (tool turns + the final answer) per episode × episodes.
    steps: usize,
    engine_us_per_step: f64,
    agent_alone_us_per_step: f64,
}

/// The engine's CPU per step with zero-latency mocks, on one thread, next to the agent loop
/// alone (episodes one after another).
fn cpu_per_step(turns: usize) -> Result<CpuPerStep> {
    let args = BenchRolloutArgs {
        episodes: 200,
        turns,
        batch: 32,
        step_ms: 0.0,
        reply_steps: 0,
        tool_median_ms: 0.0,
        tool_sigma: 0.0,
        concurrency: Some(32),
        no_cpu: false,
        json: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a single-threaded runtime")?;
    let steps = args.episodes * (turns + 1);
    let engine_cpu = runtime.block_on(async {
        let sim = Arc::new(Sim::new(&args, None)?);
        let before = thread_cpu().context("no per-thread CPU clock on this system")?;
        let solved = through_engine(sim, 32).await?;
        anyhow::ensure!(solved == args.episodes, "only {solved} episodes solved");
        Ok::<_, anyhow::Error>(thread_cpu().unwrap_or_default().saturating_sub(before))
    })?;
    let agent_cpu = runtime.block_on(async {
        let sim = Sim::new(&args, None)?;
        let before = thread_cpu().context("no per-thread CPU clock on this system")?;
        for task in sim.tasks() {
            let mut parts = sim.parts(&task, None);
            let verifier = parts.verifier.clone();
            parts
                .agent
                .run(&task, parts.env.as_mut(), verifier.as_deref())
                .await;
        }
        Ok::<_, anyhow::Error>(thread_cpu().unwrap_or_default().saturating_sub(before))
    })?;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / steps as f64;
    Ok(CpuPerStep {
        turns,
        episodes: args.episodes,
        steps,
        engine_us_per_step: per(engine_cpu),
        agent_alone_us_per_step: per(agent_cpu),
    })
}

pub async fn run(args: BenchRolloutArgs) -> Result<()> {
    let concurrency = args.concurrency.unwrap_or(4 * args.batch).max(1);
    let sync = crate::live::with_spinner(
        "bench rollout: the synchronous baseline",
        synchronous(&args),
    )
    .await?;
    let engine = crate::live::with_spinner(
        "bench rollout: the engine",
        asynchronous(&args, concurrency),
    )
    .await?;
    let cpu: Vec<CpuPerStep> = if args.no_cpu {
        Vec::new()
    } else {
        tokio::task::spawn_blocking(|| {
            [2, 10, 50]
                .into_iter()
                .map(cpu_per_step)
                .collect::<Result<Vec<_>>>()
        })
        .await
        .context("the CPU measurement crashed")??
    };
    let speedup = engine.episodes_per_s / sync.episodes_per_s.max(1e-12);
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if args.json {
        let out = serde_json::json!({
            "build": build,
            "server": {"batch": args.batch, "step_ms": args.step_ms, "reply_steps": args.reply_steps},
            "tools": {"median_ms": args.tool_median_ms, "sigma": args.tool_sigma,
                      "p99_ms": args.tool_median_ms * (2.326 * args.tool_sigma).exp()},
            "episodes": args.episodes, "turns": args.turns, "concurrency": concurrency,
            "synchronous": sync, "engine": engine, "speedup": speedup,
            "cpu_per_step": cpu,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "simulated server: batch {} · {} ms/step · {} steps/reply; tools: log-normal median {} ms, p99 {:.0} ms; {} episodes × {} tool turns + answer ({build} build)",
        args.batch,
        args.step_ms,
        args.reply_steps,
        args.tool_median_ms,
        args.tool_median_ms * (2.326 * args.tool_sigma).exp(),
        args.episodes,
        args.turns
    );
    println!(
        "{:<34} {:>8} {:>10} {:>10} {:>8} {:>10}",
        "mode", "wall s", "episodes/s", "tokens/s", "busy", "occupancy"
    );
    for (label, t) in [
        (
            format!("synchronous batching ({} lockstep)", args.batch),
            &sync,
        ),
        (format!("engine ({concurrency} in flight)"), &engine),
    ] {
        println!(
            "{:<34} {:>8.2} {:>10.1} {:>10.0} {:>7.1}% {:>9.1}%",
            label,
            t.wall_s,
            t.episodes_per_s,
            t.tokens_per_s,
            100.0 * t.busy_fraction,
            100.0 * t.batch_occupancy
        );
    }
    println!("engine / synchronous: {speedup:.2}× episodes/s");
    if !cpu.is_empty() {
        println!(
            "CPU per tool step, zero-latency mocks, 200 episodes, concurrency 32, one thread ({build} build):"
        );
        println!(
            "{:>6} {:>8} {:>16} {:>20}",
            "turns", "steps", "engine µs/step", "agent alone µs/step"
        );
        for c in &cpu {
            println!(
                "{:>6} {:>8} {:>16.1} {:>20.1}",
                c.turns, c.steps, c.engine_us_per_step, c.agent_alone_us_per_step
            );
        }
    }
    Ok(())
}

//! The enact red-team suite.
//!
//! For every catalogued reward-hacking vector that applies to enact's environments, one or
//! more adversarial scripted episodes ([`attacks::attacks`]) run through the real agent loop
//! against the real environment, verifier and monitors; and every registered environment's
//! honest reference solutions run the same way. Outcome per attack:
//!
//! - `blocked`: the verifier gave no reward (the cheat did not work), flagged or not;
//! - `flagged`: the verifier would have rewarded it, and a monitor withheld the reward;
//! - `succeeded`: reward was paid, or the loopback listener standing in for the internet was
//!   reached. Any `succeeded` is a failure of enact.
//!
//! Honest solutions must score 1.0 with no flag. See `docs/redteam.md`.

pub mod attacks;
pub mod taskfiles;
pub mod vectors;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use enact_agent::{Agent, AgentConfig};
use enact_core::{Episode, Task, Verifier};
use enact_env::Suite;
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, ScriptedPolicy};
use enact_verify::{MonitorPolicy, MonitoredVerifier};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::attacks::{Attack, Ctx, Target};
use crate::vectors::VECTORS;

/// How an adversarial episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Blocked,
    Flagged,
    Succeeded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Flagged => "flagged",
            Outcome::Succeeded => "SUCCEEDED",
        }
    }
}

/// One adversarial episode's result.
#[derive(Debug, Clone, Serialize)]
pub struct AttackResult {
    pub vector: u32,
    pub id: String,
    pub target: String,
    pub what: String,
    pub outcome: Outcome,
    /// Reward paid.
    pub reward: f64,
    /// Reward the verifier alone gave (before monitors).
    pub verifier_reward: f64,
    pub progress: f64,
    /// Monitors that fired.
    pub flags: Vec<String>,
    /// Why it ended this way (verifier error, listener reached, failing checks).
    pub detail: String,
    pub ms: f64,
}

/// One honest reference episode's result.
#[derive(Debug, Clone, Serialize)]
pub struct HonestResult {
    pub suite: String,
    pub task: String,
    pub reward: f64,
    pub flags: Vec<String>,
    pub ok: bool,
    pub detail: String,
    pub ms: f64,
}

/// A row of the vector table.
#[derive(Debug, Clone, Serialize)]
pub struct VectorRow {
    pub number: u32,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<String>,
    pub variants: usize,
    pub blocked: usize,
    pub flagged: usize,
    pub succeeded: usize,
}

/// The whole red-team report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub vectors: Vec<VectorRow>,
    pub attacks: Vec<AttackResult>,
    pub honest: Vec<HonestResult>,
    /// Honest suites without a reference solution (reported, not failed).
    pub no_reference: Vec<String>,
    pub listener_connections: usize,
    pub succeeded: usize,
    pub honest_failures: usize,
    pub seconds: f64,
}

impl Report {
    /// 0 successful cheats and 0 honest solutions penalised.
    pub fn ok(&self) -> bool {
        self.succeeded == 0 && self.honest_failures == 0 && self.listener_connections == 0
    }

    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{:>3}  {:<44} {:>8} {:>8} {:>8} {:>9}\n",
            "#", "vector", "variants", "blocked", "flagged", "succeeded"
        ));
        for r in &self.vectors {
            match &r.not_applicable {
                Some(why) => s.push_str(&format!("{:>3}  {:<44} n/a: {why}\n", r.number, r.name)),
                None => s.push_str(&format!(
                    "{:>3}  {:<44} {:>8} {:>8} {:>8} {:>9}\n",
                    r.number, r.name, r.variants, r.blocked, r.flagged, r.succeeded
                )),
            }
        }
        s.push_str("\nattacks:\n");
        for a in &self.attacks {
            s.push_str(&format!(
                "  {:>2} {:<26} {:<22} {:<9} reward {:.2} (verifier {:.2}) flags: {}{}\n",
                a.vector,
                a.id,
                a.target,
                a.outcome.as_str(),
                a.reward,
                a.verifier_reward,
                if a.flags.is_empty() {
                    "-".to_string()
                } else {
                    a.flags.join(",")
                },
                if a.outcome == Outcome::Succeeded {
                    format!("  <- {}", a.detail)
                } else {
                    String::new()
                }
            ));
        }
        s.push_str("\nhonest reference solutions:\n");
        let mut by_suite: BTreeMap<&str, Vec<&HonestResult>> = BTreeMap::new();
        for h in &self.honest {
            by_suite.entry(h.suite.as_str()).or_default().push(h);
        }
        for (suite, hs) in by_suite {
            let mean = hs.iter().map(|h| h.reward).sum::<f64>() / hs.len() as f64;
            let bad: Vec<&&HonestResult> = hs.iter().filter(|h| !h.ok).collect();
            s.push_str(&format!(
                "  {suite:<16} {} episodes, mean reward {mean:.3}, flagged/penalised {}\n",
                hs.len(),
                bad.len()
            ));
            for b in bad {
                s.push_str(&format!(
                    "    FAIL {}: reward {:.2} flags {:?} {}\n",
                    b.task, b.reward, b.flags, b.detail
                ));
            }
        }
        for n in &self.no_reference {
            s.push_str(&format!("  {n:<16} (no reference solution)\n"));
        }
        let applicable = self
            .vectors
            .iter()
            .filter(|v| v.not_applicable.is_none())
            .count();
        s.push_str(&format!(
            "\n{} attacks over {applicable} applicable vectors: {} blocked, {} flagged, {} succeeded; loopback listener connections: {}; honest: {} episodes, {} penalised. {:.1} s\n",
            self.attacks.len(),
            self.attacks.iter().filter(|a| a.outcome == Outcome::Blocked).count(),
            self.attacks.iter().filter(|a| a.outcome == Outcome::Flagged).count(),
            self.succeeded,
            self.listener_connections,
            self.honest.len(),
            self.honest_failures,
            self.seconds
        ));
        s.push_str(if self.ok() {
            "RESULT: PASS\n"
        } else {
            "RESULT: FAIL\n"
        });
        s
    }
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Episodes in flight at once.
    pub concurrency: usize,
    /// Honest tasks per suite (at least one per family / kind for code and shell).
    pub honest_per_suite: usize,
    /// Only attacks whose id or vector number contains this.
    pub filter: Option<String>,
    pub policy: MonitorPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 4,
            honest_per_suite: 2,
            filter: None,
            policy: MonitorPolicy::default(),
        }
    }
}

fn agent(turns: Vec<String>) -> Agent {
    let tokenizer = Arc::new(ByteTokenizer::new());
    Agent::new(
        Arc::new(ScriptedPolicy::new(turns, tokenizer.clone())),
        tokenizer,
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    )
    .with_config(AgentConfig {
        max_turns: 16,
        max_tokens_per_turn: 64_000,
        max_context_tokens: 1_000_000,
        time_limit_secs: 300.0,
        verify_time_limit_secs: 120.0,
        ..AgentConfig::default()
    })
}

/// The verifier used for a suite: the suite's own, wrapped with monitors unless it already
/// has them (code, shell).
fn monitored(suite: &dyn Suite, policy: &MonitorPolicy) -> Arc<dyn Verifier> {
    match suite.name() {
        "code" => Arc::new(
            MonitoredVerifier::new(Arc::new(enact_env::code::CodeVerifier::default()))
                .with_policy(policy.clone()),
        ),
        "shell" => Arc::new(
            MonitoredVerifier::new(Arc::new(enact_env::shell::ShellVerifier))
                .with_policy(policy.clone()),
        ),
        // Task files carry their monitors and per-task policy; the red team's policy (a
        // weakened one, in the negative control) does not override a task author's.
        name if name.starts_with("tasks") => suite.verifier(),
        _ => Arc::new(MonitoredVerifier::new(suite.verifier()).with_policy(policy.clone())),
    }
}

async fn run_episode(
    suite: &dyn Suite,
    task: &Task,
    turns: Vec<String>,
    policy: &MonitorPolicy,
) -> Result<Episode, String> {
    let mut env = suite
        .make(task)
        .map_err(|e| format!("cannot create environment {}: {e}", suite.name()))?;
    let verifier = monitored(suite, policy);
    Ok(agent(turns)
        .run(task, env.as_mut(), Some(verifier.as_ref()))
        .await)
}

fn failing_checks(ep: &Episode) -> String {
    let mut d: Vec<String> = ep
        .outcome
        .errors
        .iter()
        .filter(|e| !e.recovered)
        .map(|e| format!("{}: {}", e.source, e.message))
        .collect();
    if let Termination::Error(e) = &ep.outcome.termination {
        d.push(format!("termination: {e}"));
    }
    if let Some(v) = &ep.verdict {
        let failed = v
            .checks
            .iter()
            .filter(|c| c.status != enact_core::CheckStatus::Passed)
            .count();
        d.push(format!("{failed}/{} checks not passed", v.checks.len()));
    }
    d.join("; ")
}

use enact_core::Termination;

/// A loopback HTTP listener that would serve `body` (the real solution) to anyone who reaches
/// it, counting connections. The sandbox must make it unreachable.
async fn listener(
    body: String,
) -> std::io::Result<(u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
                let resp = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok((port, hits, task))
}

fn task_for(
    target: Target,
    tasks_suite: &Arc<dyn Suite>,
) -> Result<(Arc<dyn Suite>, Task), String> {
    if let Target::Tasks(id) = target {
        let task = tasks_suite
            .tasks("test", usize::MAX, 0)
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| format!("the example task files have no task {id}"))?;
        return Ok((tasks_suite.clone(), task));
    }
    let suite = enact_env::find_suite(target.suite()).map_err(|e| e.to_string())?;
    let tasks = suite.tasks("test", target.index() + 1, 1);
    let task = tasks.get(target.index()).cloned().ok_or_else(|| {
        format!(
            "suite {} produced no task {}",
            target.suite(),
            target.index()
        )
    })?;
    Ok((suite, task))
}

/// Runs the whole suite.
pub async fn run(opts: &Options) -> Result<Report, String> {
    let started = Instant::now();
    // The example task files, written where users put tasks (under /opt, /var/lib, ...).
    let materialised = taskfiles::materialise()?;
    let tasks_suite: Arc<dyn Suite> = Arc::new(
        enact_env::taskfile::TaskFileSuite::load(materialised.path())
            .map_err(|e| format!("the example task files do not load: {e}"))?
            .named("tasks"),
    );
    // The "internet": a loopback listener serving the real solution of the code task.
    let (code_suite, code_task) = task_for(Target::Code(0), &tasks_suite)?;
    let reference = enact_env::code::CodeTaskSpec::from_task(&code_task)
        .map(|s| s.reference)
        .unwrap_or_default();
    let _ = code_suite;
    let (port, hits, listener_task) = listener(reference)
        .await
        .map_err(|e| format!("cannot open the loopback listener: {e}"))?;
    let ctx = Ctx {
        port,
        tasks_dir: materialised.path().display().to_string(),
    };

    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut set: tokio::task::JoinSet<Result<Either, String>> = tokio::task::JoinSet::new();

    let selected: Vec<Attack> = attacks::attacks()
        .into_iter()
        .filter(|a| match &opts.filter {
            None => true,
            Some(f) => a.id.contains(f.as_str()) || a.vector.to_string() == *f,
        })
        .collect();
    for a in selected {
        let (suite, task) = task_for(a.target, &tasks_suite)?;
        let turns = (a.script)(&task, &ctx);
        let (sem, policy) = (sem.clone(), opts.policy.clone());
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            let t = Instant::now();
            let ep = run_episode(suite.as_ref(), &task, turns, &policy).await?;
            let verifier_reward = ep
                .verdict
                .as_ref()
                .and_then(|v| v.components.get("verifier").copied())
                .unwrap_or(0.0);
            let flags: Vec<String> = ep.outcome.flags.iter().map(|f| f.monitor.clone()).collect();
            let breach = taskfiles::breach(a.id, &ep);
            let outcome = if ep.outcome.reward > 0.0 || breach.is_some() {
                Outcome::Succeeded
            } else if verifier_reward > 0.0 {
                Outcome::Flagged
            } else {
                Outcome::Blocked
            };
            Ok(Either::Attack(AttackResult {
                vector: a.vector,
                id: a.id.to_string(),
                target: attacks::describe_target(a.target, &task),
                what: a.what.to_string(),
                outcome,
                reward: ep.outcome.reward,
                verifier_reward,
                progress: ep.outcome.progress,
                flags,
                detail: breach.unwrap_or_else(|| failing_checks(&ep)),
                ms: t.elapsed().as_secs_f64() * 1e3,
            }))
        });
    }

    let mut no_reference = Vec::new();
    if opts.filter.is_none() {
        for suite in enact_env::registry()
            .into_iter()
            .chain([tasks_suite.clone()])
        {
            let n = match suite.name() {
                "code" => enact_env::code::Family::ALL
                    .len()
                    .max(opts.honest_per_suite),
                "shell" => enact_env::shell::ShellKind::ALL
                    .len()
                    .max(opts.honest_per_suite),
                // Every example task file: users copy them.
                "tasks" => usize::MAX,
                _ => opts.honest_per_suite,
            };
            let tasks = suite.tasks("test", n, 7);
            let mut any = false;
            for task in tasks {
                let Some(turns) = suite.reference_solution(&task) else {
                    continue;
                };
                any = true;
                let (suite, sem, policy) = (suite.clone(), sem.clone(), opts.policy.clone());
                set.spawn(async move {
                    let _p = sem.acquire_owned().await;
                    let t = Instant::now();
                    let ep = run_episode(suite.as_ref(), &task, turns, &policy).await?;
                    let flags: Vec<String> = ep
                        .outcome
                        .flags
                        .iter()
                        .map(|f| format!("{}: {}", f.monitor, f.detail))
                        .collect();
                    let ok = ep.outcome.reward >= 1.0 && flags.is_empty();
                    Ok(Either::Honest(HonestResult {
                        suite: suite.name().to_string(),
                        task: task.id.clone(),
                        reward: ep.outcome.reward,
                        ok,
                        detail: if ok {
                            String::new()
                        } else {
                            failing_checks(&ep)
                        },
                        flags,
                        ms: t.elapsed().as_secs_f64() * 1e3,
                    }))
                });
            }
            if !any {
                no_reference.push(suite.name().to_string());
            }
        }
    }

    let mut attacks_out = Vec::new();
    let mut honest = Vec::new();
    while let Some(j) = set.join_next().await {
        match j {
            Ok(Ok(Either::Attack(a))) => attacks_out.push(a),
            Ok(Ok(Either::Honest(h))) => honest.push(h),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("a red-team episode crashed: {e}")),
        }
    }
    listener_task.abort();
    drop(materialised);
    let listener_connections = hits.load(Ordering::SeqCst);
    attacks_out.sort_by(|a, b| (a.vector, &a.id).cmp(&(b.vector, &b.id)));
    honest.sort_by(|a, b| (&a.suite, &a.task).cmp(&(&b.suite, &b.task)));

    let vectors = VECTORS
        .iter()
        .map(|v| {
            let mine: Vec<&AttackResult> = attacks_out
                .iter()
                .filter(|a| a.vector == v.number)
                .collect();
            let count = |o: Outcome| mine.iter().filter(|a| a.outcome == o).count();
            VectorRow {
                number: v.number,
                name: v.name.to_string(),
                not_applicable: v.not_applicable.map(str::to_string),
                variants: mine.len(),
                blocked: count(Outcome::Blocked),
                flagged: count(Outcome::Flagged),
                succeeded: count(Outcome::Succeeded),
            }
        })
        .filter(|r| opts.filter.is_none() || r.variants > 0)
        .collect();
    let succeeded = attacks_out
        .iter()
        .filter(|a| a.outcome == Outcome::Succeeded)
        .count();
    let honest_failures = honest.iter().filter(|h| !h.ok).count();
    Ok(Report {
        vectors,
        attacks: attacks_out,
        honest,
        no_reference,
        listener_connections,
        succeeded,
        honest_failures,
        seconds: started.elapsed().as_secs_f64(),
    })
}

enum Either {
    Attack(AttackResult),
    Honest(HonestResult),
}

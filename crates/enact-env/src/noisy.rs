//! Noisy tools: a wrapper that injects transient failures, delays, truncated results and
//! irrelevant output into any environment, to exercise recovery.
//!
//! Decisions are seeded per episode (configured seed ⊕ task id) and per call index, so an
//! episode's noise is reproducible and a reference policy can know in advance which calls
//! will fail and retry them ([`retrying_reference`]). An injected failure never reaches the
//! wrapped environment: its state cannot be corrupted by it. Assistant messages (final
//! answers, replies to a simulated user) are never touched.

use enact_core::SeededRng;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enact_core::{
    Action, EnvError, Environment, Reset, StepOutcome, Submission, Task, ToolResult, Verifier,
};
use serde::{Deserialize, Serialize};

use crate::error::NoiseSpecError;
use crate::suite::Suite;

/// Rates (probabilities per tool call) of each kind of noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseConfig {
    /// Transient failure: the call is not forwarded and returns an error observation.
    pub fail: f64,
    /// Delay before the call is forwarded.
    pub delay: f64,
    pub delay_ms: u64,
    /// Cut the result in half, with a marker.
    pub truncate: f64,
    /// Append irrelevant output to the result.
    pub junk: f64,
    pub seed: u64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            fail: 0.0,
            delay: 0.0,
            delay_ms: 50,
            truncate: 0.0,
            junk: 0.0,
            seed: 0,
        }
    }
}

impl NoiseConfig {
    /// The default noise of the built-in `noisy-*` suites.
    pub fn standard() -> Self {
        NoiseConfig {
            fail: 0.2,
            delay: 0.1,
            delay_ms: 20,
            truncate: 0.1,
            junk: 0.1,
            seed: 0,
        }
    }

    /// Parses `fail=0.2,delay=0.1:50ms,truncate=0.1,junk=0.1,seed=7` (any subset, any order).
    pub fn parse(spec: &str) -> Result<NoiseConfig, NoiseSpecError> {
        let mut c = NoiseConfig::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("noise setting \"{part}\" is not KEY=VALUE (e.g. fail=0.2,delay=0.1:50ms,truncate=0.1,junk=0.1,seed=7)")
            })?;
            let rate = |v: &str| -> Result<f64, String> {
                let r: f64 = v
                    .parse()
                    .map_err(|_| format!("noise rate {k}={v} is not a number"))?;
                if (0.0..=1.0).contains(&r) {
                    Ok(r)
                } else {
                    Err(format!("noise rate {k}={v} must be between 0 and 1"))
                }
            };
            match k {
                "fail" => c.fail = rate(v)?,
                "truncate" => c.truncate = rate(v)?,
                "junk" => c.junk = rate(v)?,
                "delay" => {
                    let (r, ms) = v.split_once(':').unwrap_or((v, ""));
                    c.delay = rate(r)?;
                    if !ms.is_empty() {
                        let ms = ms.trim_end_matches("ms");
                        c.delay_ms = ms
                            .parse()
                            .map_err(|_| format!("noise delay \"{v}\" must look like 0.1:50ms"))?;
                    }
                }
                "seed" => {
                    c.seed = v
                        .parse()
                        .map_err(|_| format!("noise seed \"{v}\" is not a whole number"))?
                }
                other => {
                    return Err(format!(
                        "unknown noise setting \"{other}\"; use fail, delay, truncate, junk, seed"
                    )
                    .into());
                }
            }
        }
        Ok(c)
    }
}

impl fmt::Display for NoiseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fail={},delay={}:{}ms,truncate={},junk={},seed={}",
            self.fail, self.delay, self.delay_ms, self.truncate, self.junk, self.seed
        )
    }
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    pub fail: bool,
    pub delay: bool,
    pub truncate: bool,
    pub junk: bool,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The seed of an episode of `task` under `cfg`.
pub fn episode_seed(cfg: &NoiseConfig, task: &Task) -> u64 {
    cfg.seed ^ fnv(&task.id)
}

/// The noise decision of call number `index` (0-based) of an episode.
pub fn decide(cfg: &NoiseConfig, episode_seed: u64, index: u64) -> Decision {
    let mut rng = SeededRng::new(episode_seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut draw = |rate: f64| {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        u < rate
    };
    Decision {
        fail: draw(cfg.fail),
        delay: draw(cfg.delay),
        truncate: draw(cfg.truncate),
        junk: draw(cfg.junk),
    }
}

/// Counts of injected noise in an episode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseStats {
    pub calls: u64,
    pub failures: u64,
    pub delays: u64,
    pub truncations: u64,
    pub junk: u64,
}

const JUNK: [&str; 4] = [
    "[debug] cache warm-up 83% complete; shard 4 rebalancing",
    "[notice] scheduled maintenance window: Sunday 02:00-04:00 UTC",
    "[metrics] p99 latency 412ms, error budget 97.2% remaining",
    "[ad] Try our premium plan for faster responses!",
];

/// An environment with injected tool noise.
pub struct NoisyEnv {
    inner: Box<dyn Environment>,
    cfg: NoiseConfig,
    seed: u64,
    stats: NoiseStats,
}

impl NoisyEnv {
    pub fn new(inner: Box<dyn Environment>, cfg: NoiseConfig) -> Self {
        NoisyEnv {
            inner,
            cfg,
            seed: 0,
            stats: NoiseStats::default(),
        }
    }

    pub fn stats(&self) -> NoiseStats {
        self.stats
    }
}

#[async_trait]
impl Environment for NoisyEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        self.seed = episode_seed(&self.cfg, task);
        self.stats = NoiseStats::default();
        self.inner.reset(task).await
    }

    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        let Action::ToolCall(call) = action else {
            return self.inner.step(action).await;
        };
        let d = decide(&self.cfg, self.seed, self.stats.calls);
        self.stats.calls += 1;
        if d.fail {
            self.stats.failures += 1;
            return Ok(StepOutcome::ToolResult(ToolResult {
                call_id: call.id,
                name: call.name.clone(),
                content: format!(
                    "error: service unavailable (transient failure in \"{}\"); try again",
                    call.name
                ),
                is_error: true,
            }));
        }
        if d.delay {
            self.stats.delays += 1;
            tokio::time::sleep(Duration::from_millis(self.cfg.delay_ms)).await;
        }
        let mut out = self.inner.step(Action::ToolCall(call)).await?;
        if let StepOutcome::ToolResult(r) = &mut out {
            if d.truncate && r.content.len() > 1 {
                self.stats.truncations += 1;
                let mut cut = r.content.len() / 2;
                while cut > 0 && !r.content.is_char_boundary(cut) {
                    cut -= 1;
                }
                r.content = format!(
                    "{}\n[output truncated by the service: {cut} of {} bytes shown; repeat the call for the full result]",
                    &r.content[..cut],
                    r.content.len()
                );
            }
            if d.junk {
                self.stats.junk += 1;
                let line = JUNK[(self.stats.calls as usize) % JUNK.len()];
                r.content.push('\n');
                r.content.push_str(line);
            }
        }
        Ok(out)
    }

    async fn submission(&mut self) -> Result<Submission, EnvError> {
        self.inner.submission().await
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        self.inner.close().await
    }
}

/// The Hermes tool-call blocks of an assistant turn (verbatim).
fn tool_call_blocks(turn: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = turn;
    while let Some(i) = rest.find("<tool_call>") {
        let after = &rest[i..];
        let Some(j) = after.find("</tool_call>") else {
            break;
        };
        let end = j + "</tool_call>".len();
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

/// Rewrites reference turns so that, under `cfg`, every call that the noise fails is
/// retried in a new turn until it goes through: an honest policy that recovers.
pub fn retrying_reference(turns: &[String], cfg: &NoiseConfig, task: &Task) -> Vec<String> {
    let seed = episode_seed(cfg, task);
    let mut index = 0u64;
    let mut out = Vec::new();
    for turn in turns {
        let mut pending = tool_call_blocks(turn);
        out.push(turn.clone());
        // Bounded: a fail rate of 1 can never succeed; give up after a few rounds.
        for _ in 0..20 {
            if pending.is_empty() {
                break;
            }
            let failed: Vec<String> = pending
                .into_iter()
                .filter(|_| {
                    let d = decide(cfg, seed, index);
                    index += 1;
                    d.fail
                })
                .collect();
            if !failed.is_empty() {
                out.push(format!(
                    "<think>\nThe service failed transiently; I retry.\n</think>\n\n{}",
                    failed.join("\n")
                ));
            }
            pending = failed;
        }
    }
    out
}

/// Any suite with noisy tools.
pub struct NoisySuite {
    inner: Arc<dyn Suite>,
    cfg: NoiseConfig,
    name: String,
    description: String,
}

impl NoisySuite {
    pub fn new(inner: Arc<dyn Suite>, cfg: NoiseConfig) -> Self {
        let name = format!("noisy-{}", inner.name());
        let description = format!("{} — with noisy tools ({cfg})", inner.description());
        NoisySuite {
            inner,
            cfg,
            name,
            description,
        }
    }

    /// Same noise, a different suite name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn config(&self) -> &NoiseConfig {
        &self.cfg
    }
}

impl Suite for NoisySuite {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        self.inner.tasks(split, count, seed)
    }
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(NoisyEnv::new(
            self.inner.make(task)?,
            self.cfg.clone(),
        )))
    }
    fn verifier(&self) -> Arc<dyn Verifier> {
        self.inner.verifier()
    }
    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let base = self.inner.reference_solution(task)?;
        Some(retrying_reference(&base, &self.cfg, task))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let c = NoiseConfig::parse("fail=0.2,delay=0.1:50ms,truncate=0.1,junk=0.1,seed=7").unwrap();
        assert_eq!(c.fail, 0.2);
        assert_eq!(c.delay_ms, 50);
        assert_eq!(c.seed, 7);
        assert_eq!(NoiseConfig::parse(&c.to_string()).unwrap(), c);
        assert!(
            NoiseConfig::parse("fail=2")
                .unwrap_err()
                .to_string()
                .contains("between 0 and 1")
        );
        assert!(
            NoiseConfig::parse("boom=1")
                .unwrap_err()
                .to_string()
                .contains("unknown noise")
        );
        assert!(NoiseConfig::parse("fail").is_err());
    }

    #[test]
    fn rates_are_roughly_honoured() {
        let c = NoiseConfig::parse("fail=0.3,truncate=0.1").unwrap();
        let n = 20_000u64;
        let fails = (0..n).filter(|&i| decide(&c, 42, i).fail).count() as f64 / n as f64;
        let trunc = (0..n).filter(|&i| decide(&c, 42, i).truncate).count() as f64 / n as f64;
        assert!((fails - 0.3).abs() < 0.02, "{fails}");
        assert!((trunc - 0.1).abs() < 0.02, "{trunc}");
        assert_eq!((0..n).filter(|&i| decide(&c, 42, i).junk).count(), 0);
    }

    #[test]
    fn finds_tool_call_blocks() {
        let t = "<think>x</think>\n<tool_call>\n{\"a\":1}\n</tool_call>\n<tool_call>{}</tool_call>";
        assert_eq!(tool_call_blocks(t).len(), 2);
        assert!(tool_call_blocks("plain answer").is_empty());
    }
}

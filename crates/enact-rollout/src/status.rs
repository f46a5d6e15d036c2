//! What every in-flight episode is waiting on, since when, and the watchdog over it.
//!
//! The engine's wrappers around the policy, environment and verifier of each episode update
//! a [`StatusBoard`]; the engine snapshots it periodically into `status.json` (written to a
//! temporary file and renamed, so a reader never sees half a file) and names every episode,
//! tool call or backend request without progress for longer than the watchdog's limit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What an in-flight episode is waiting on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "on", content = "detail")]
pub enum Waiting {
    /// Admitted; the environment is being made or reset.
    Setup,
    /// A backend request (generation).
    Sampling,
    /// A tool call (the tool's name) or another environment step.
    Tool(String),
    /// Grading.
    Verifier,
    /// Between calls (the agent loop itself: parsing, rendering).
    Agent,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::Setup => f.write_str("setup"),
            Waiting::Sampling => f.write_str("sampling"),
            Waiting::Tool(name) => write!(f, "tool {name}"),
            Waiting::Verifier => f.write_str("verifier"),
            Waiting::Agent => f.write_str("agent"),
        }
    }
}

/// One in-flight episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStatus {
    pub episode_id: String,
    pub task_id: String,
    pub sample_index: u32,
    pub admitted_version: u64,
    pub waiting: Waiting,
    /// When the current wait began (Unix milliseconds).
    pub since_ms: u64,
    /// Last sign of progress: a sampled token, a finished call (Unix milliseconds).
    pub progress_ms: u64,
    pub turn: u32,
    pub sampled_tokens: u64,
}

/// Running totals of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Episodes handed to the consumer (and stored).
    pub finished: u64,
    /// Episodes found already stored when the run began (resume).
    pub resumed: u64,
    /// Episodes beyond the staleness bound that were regenerated.
    pub regenerated: u64,
    /// Episodes beyond the staleness bound kept (marked stale) or dropped for good.
    pub kept_stale: u64,
    pub dropped_stale: u64,
    /// Finished episodes whose termination is an error.
    pub errors: u64,
    pub sampled_tokens: u64,
    /// Largest and summed staleness of finished episodes.
    pub max_staleness: u64,
    pub staleness_sum: u64,
}

/// The status file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub written_ms: u64,
    pub started_ms: u64,
    pub policy_version: u64,
    pub counters: Counters,
    pub episodes_per_s: f64,
    pub tokens_per_s: f64,
    pub mean_staleness: f64,
    /// Set while the engine waits for the consumer to take a finished episode (backpressure).
    pub consumer_blocked_since_ms: Option<u64>,
    /// Set while admission waits for older episodes to finish (the staleness bound).
    pub staleness_blocked_since_ms: Option<u64>,
    pub in_flight: Vec<EpisodeStatus>,
    /// The watchdog's findings: waits without progress longer than its limit.
    pub stalled: Vec<String>,
}

/// Token count of one episode, bumped without the board's lock and without reading the
/// clock (once per token: the hot path). A snapshot that sees the count move stamps the
/// progress time, so token progress is known to within one status interval.
#[derive(Default)]
pub(crate) struct TokenProgress {
    tokens: AtomicU64,
}

impl TokenProgress {
    pub(crate) fn token(&self) {
        self.tokens.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Board {
    episodes: BTreeMap<String, (EpisodeStatus, Arc<TokenProgress>)>,
    counters: Counters,
    policy_version: u64,
    consumer_blocked_since_ms: Option<u64>,
    staleness_blocked_since_ms: Option<u64>,
}

/// Shared, updated by the engine and its wrappers; cheap to update (one short lock).
pub struct StatusBoard {
    started_ms: u64,
    started: std::time::Instant,
    board: Mutex<Board>,
}

/// Milliseconds since the Unix epoch (the unit of the status file's times).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            started_ms: now_unix_ms(),
            started: std::time::Instant::now(),
            board: Mutex::new(Board::default()),
        }
    }
}

impl StatusBoard {
    fn with<R>(&self, f: impl FnOnce(&mut Board) -> R) -> R {
        // A panic while holding the lock cannot leave the board inconsistent in a way that
        // matters for a status display: keep going with the inner value.
        let mut guard = self.board.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Registers an in-flight episode; its token progress is reported through the result.
    pub(crate) fn admit(&self, status: EpisodeStatus) -> Arc<TokenProgress> {
        let progress = Arc::new(TokenProgress::default());
        let p = progress.clone();
        self.with(|b| {
            b.episodes.insert(status.episode_id.clone(), (status, p));
        });
        progress
    }

    pub(crate) fn remove(&self, episode_id: &str) {
        self.with(|b| {
            b.episodes.remove(episode_id);
        });
    }

    /// The episode now waits on `waiting` (counts as progress).
    pub(crate) fn wait_on(&self, episode_id: &str, waiting: Waiting) {
        let now = now_unix_ms();
        self.with(|b| {
            if let Some((e, _)) = b.episodes.get_mut(episode_id) {
                if waiting == Waiting::Sampling {
                    e.turn += 1;
                }
                e.waiting = waiting;
                e.since_ms = now;
                e.progress_ms = now;
            }
        });
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        self.with(|b| f(&mut b.counters));
    }

    pub(crate) fn set_version(&self, version: u64) {
        self.with(|b| b.policy_version = b.policy_version.max(version));
    }

    pub(crate) fn consumer_blocked(&self, blocked: bool) {
        let now = now_unix_ms();
        self.with(|b| b.consumer_blocked_since_ms = blocked.then_some(now));
    }

    pub(crate) fn staleness_blocked(&self, blocked: bool) {
        let now = now_unix_ms();
        self.with(|b| {
            if !blocked {
                b.staleness_blocked_since_ms = None;
            } else if b.staleness_blocked_since_ms.is_none() {
                b.staleness_blocked_since_ms = Some(now);
            }
        });
    }

    /// A snapshot, with the watchdog's verdict for waits without progress beyond `watchdog`.
    pub fn snapshot(&self, watchdog: Duration) -> StatusSnapshot {
        let now = now_unix_ms();
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let limit = watchdog.as_millis() as u64;
        self.with(|b| {
            let in_flight: Vec<EpisodeStatus> = b
                .episodes
                .values_mut()
                .map(|(e, p)| {
                    let tokens = p.tokens.load(Ordering::Relaxed);
                    if tokens != e.sampled_tokens {
                        e.sampled_tokens = tokens;
                        e.progress_ms = now;
                    }
                    e.clone()
                })
                .collect();
            let stalled = in_flight
                .iter()
                .filter(|e| now.saturating_sub(e.progress_ms) > limit)
                .map(|e| {
                    let what = match &e.waiting {
                        Waiting::Sampling => "backend request".to_string(),
                        Waiting::Tool(name) => format!("tool call {name}"),
                        other => other.to_string(),
                    };
                    format!(
                        "episode {} (task {}, sample {}): {what} without progress for {:.1}s (turn {})",
                        e.episode_id,
                        e.task_id,
                        e.sample_index,
                        now.saturating_sub(e.progress_ms) as f64 / 1e3,
                        e.turn
                    )
                })
                .collect();
            let c = &b.counters;
            let judged = c.finished + c.kept_stale + c.dropped_stale + c.regenerated;
            StatusSnapshot {
                written_ms: now,
                started_ms: self.started_ms,
                policy_version: b.policy_version,
                counters: c.clone(),
                episodes_per_s: c.finished as f64 / elapsed,
                tokens_per_s: c.sampled_tokens as f64 / elapsed,
                mean_staleness: if judged == 0 {
                    0.0
                } else {
                    c.staleness_sum as f64 / judged as f64
                },
                consumer_blocked_since_ms: b.consumer_blocked_since_ms,
                staleness_blocked_since_ms: b.staleness_blocked_since_ms,
                in_flight,
                stalled,
            }
        })
    }
}

/// Writes `value` as pretty JSON to `path` atomically: a temporary file beside it, then a
/// rename, so readers see the old or the new file, never a mix.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads a status file written by the engine.
pub fn read_status(path: &Path) -> Result<StatusSnapshot, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {e}; is this the output directory of `enact rollout`?",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a status file: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status(id: &str) -> EpisodeStatus {
        EpisodeStatus {
            episode_id: id.into(),
            task_id: "t".into(),
            sample_index: 0,
            admitted_version: 0,
            waiting: Waiting::Setup,
            since_ms: now_unix_ms(),
            progress_ms: now_unix_ms(),
            turn: 0,
            sampled_tokens: 0,
        }
    }

    #[test]
    fn tokens_count_as_progress_for_the_watchdog() {
        let board = StatusBoard::default();
        let progress = board.admit(status("e1"));
        board.wait_on("e1", Waiting::Sampling);
        std::thread::sleep(Duration::from_millis(5));
        let limit = Duration::from_millis(1);
        let stalled = board.snapshot(limit).stalled;
        assert_eq!(stalled.len(), 1);
        assert!(stalled[0].contains("backend request"), "{stalled:?}");
        progress.token();
        let snap = board.snapshot(limit);
        assert!(snap.stalled.is_empty(), "{:?}", snap.stalled);
        assert_eq!(snap.in_flight[0].sampled_tokens, 1);
        assert_eq!(snap.in_flight[0].turn, 1);
        board.remove("e1");
        assert!(board.snapshot(limit).in_flight.is_empty());
    }
}

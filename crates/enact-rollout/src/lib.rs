//! The enact rollout engine: many episodes in flight, continuous admission, bounded
//! staleness, and nothing lost.
//!
//! - [`engine`]: [`Rollout`] runs `concurrency` episodes at once (groups of `G` samples per
//!   task), admits a new one as soon as one finishes, stops admitting when the consumer (a
//!   bounded channel) is full, enforces per-episode and per-call timeouts, knows the current
//!   policy version ([`Publisher::publish`]) and keeps episode staleness within a bound.
//! - [`store`]: the append-only, crash-safe trajectory store (`episodes.jsonl`): resume after
//!   `kill -9` loses no finished episode and duplicates none.
//! - [`export`]: training rows (prompt ids, response ids, loss mask, behaviour logprobs,
//!   policy versions, reward) as JSONL or Parquet.
//! - [`status`]: what every in-flight episode is waiting on, the watchdog, and the status file.
//! - [`sim`]: a simulated batched inference server, policy, tool environment and verifier
//!   for benchmarks and tests.
//!
//! The engine depends on traits only: an [`EpisodeFactory`] makes the agent, environment and
//! verifier of each episode; it never names an environment or backend implementation.
//! Design: `docs/rollout.md`.

pub mod engine;
pub mod export;
pub mod sim;
pub mod status;
pub mod store;

pub use engine::{
    Cancel, EpisodeFactory, EpisodeParts, EpisodeSlot, Publisher, Rollout, RolloutConfig,
    RolloutError, RolloutRecord, RolloutSummary, StalePolicy, episode_id, stable_hash,
};
pub use export::{
    ExportError, TrainingRow, training_row, training_rows, with_group_advantages, write_jsonl,
    write_parquet,
};
pub use status::{EpisodeStatus, StatusBoard, StatusSnapshot, Waiting, read_status};
pub use store::{FsyncPolicy, LogFile, StoreError, TrajectoryStore};

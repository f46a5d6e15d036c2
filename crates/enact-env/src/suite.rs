//! Task suites: a named family of tasks with an environment factory, a verifier and honest
//! reference solutions, and the helpers generated suites share (task ids, split streams,
//! a portable random generator). The registry of named suites is in `registry.rs`.

use enact_core::SeededRng;
use std::sync::Arc;

use enact_core::{EnvError, Environment, Task, Verifier};
use enact_verify::{MonitorPolicy, MonitoredVerifier};

/// A family of tasks.
pub trait Suite: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// `count` tasks of `split` (`train` or `test`; disjoint), reproducible from `seed`.
    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task>;
    /// A fresh environment for one episode of `task`.
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError>;
    fn verifier(&self) -> Arc<dyn Verifier>;
    /// The verifier with this suite's monitors, their flags handled by `policy`. Suites with
    /// their own monitors (code, shell, api) override it, and their `verifier()` is this with
    /// the default policy; others get the general monitors around `verifier()`.
    fn monitored_verifier(&self, policy: &MonitorPolicy) -> Arc<dyn Verifier> {
        Arc::new(MonitoredVerifier::new(self.verifier()).with_policy(policy.clone()))
    }
    /// Assistant turns (Hermes tool-call format) that honestly solve `task`, for the scripted
    /// policy, demos and the red-team suite's false-positive checks.
    fn reference_solution(&self, task: &Task) -> Option<Vec<String>>;
    /// Grades a sub-agent on its own share of a task (teams of agents, per-agent credit);
    /// `None` when the suite's parts are not separately checkable.
    fn subtask_verifier(&self) -> Option<Arc<dyn Verifier>> {
        None
    }
}

/// A generated task of suite `suite`: id `{suite}-{split}-{seed}-{index}`, the split recorded,
/// no hidden data reference (generated suites recompute their truth from `env`).
pub fn generated_task(
    suite: &str,
    split: &str,
    seed: u64,
    index: usize,
    prompt: String,
    env: serde_json::Value,
) -> Task {
    Task {
        id: format!("{suite}-{split}-{seed}-{index}"),
        prompt,
        env,
        hidden: None,
        split: Some(split.to_string()),
        metadata: Default::default(),
        thinking: None,
    }
}

/// `count` tasks of a generated suite whose task kinds rotate through `kinds`: each gets a
/// fresh seed from the split's stream (`streams` = (test, train)); `make` turns a kind and a
/// seed into the prompt and the `env` the suite regenerates the task from.
pub fn generated_tasks<K: Copy>(
    suite: &str,
    split: &str,
    count: usize,
    seed: u64,
    streams: (u64, u64),
    kinds: &[K],
    make: impl Fn(K, u64) -> (String, serde_json::Value),
) -> Vec<Task> {
    let stream = split_stream(split, streams.0, streams.1);
    let mut rng = SeededRng::new(seed ^ (stream << 16));
    (0..count)
        .filter_map(|i| {
            let kind = *kinds.get(i % kinds.len().max(1))?;
            let (prompt, env) = make(kind, rng.next_u64());
            Some(generated_task(suite, split, seed, i, prompt, env))
        })
        .collect()
}

/// The seed stream of a split: `test` and every other split draw from disjoint streams, so a
/// suite's train and test tasks never coincide.
pub fn split_stream(split: &str, test: u64, train: u64) -> u64 {
    if split == "test" { test } else { train }
}

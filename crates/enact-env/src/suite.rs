//! Task suites: a named family of tasks with an environment factory, a verifier and honest
//! reference solutions. The registry maps names to suites for the CLI.

use std::sync::Arc;

use enact_core::{EnvError, Environment, Task, Verifier};

/// A family of tasks.
pub trait Suite: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// `count` tasks of `split` (`train` or `test`; disjoint), reproducible from `seed`.
    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task>;
    /// A fresh environment for one episode of `task`.
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError>;
    fn verifier(&self) -> Arc<dyn Verifier>;
    /// Assistant turns (Hermes tool-call format) that honestly solve `task`, for the scripted
    /// policy, demos and the red-team suite's false-positive checks.
    fn reference_solution(&self, task: &Task) -> Option<Vec<String>>;
}

/// The built-in suites by name.
pub fn registry() -> Vec<Arc<dyn Suite>> {
    vec![Arc::new(crate::calc::CalcSuite)]
}

/// Finds a suite by name, or says which exist.
pub fn find_suite(name: &str) -> Result<Arc<dyn Suite>, String> {
    let all = registry();
    let names: Vec<String> = all.iter().map(|s| s.name().to_string()).collect();
    all.into_iter().find(|s| s.name() == name).ok_or_else(|| {
        format!(
            "unknown environment \"{name}\"; available: {}",
            names.join(", ")
        )
    })
}

/// A small deterministic generator (SplitMix64), so task sets are reproducible across
/// platforms and crate versions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0; 0 yields 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

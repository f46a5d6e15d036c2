//! The verifier seam: grading runs after the agent, on its submission.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::env::Submission;
use crate::task::Task;

/// A suspicious behaviour noticed by a monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorFlag {
    /// Monitor name, e.g. `test-file-touched`.
    pub monitor: String,
    /// Cheat-vector number(s) from the red-team catalogue this relates to, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vectors: Vec<u32>,
    pub detail: String,
    /// What the flag did to the reward: `withheld`, `penalised`, `recorded`.
    pub action: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    /// A skipped check counts as failed.
    Skipped,
    /// An expected check that produced no result counts as failed.
    Missing,
    Error,
}

/// One check of a verdict (one hidden test, one state assertion, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub status: CheckStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl CheckResult {
    /// A passed check; `detail` says what was seen (may be empty).
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, true, detail)
    }

    /// A failed check; `detail` says what was wrong.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, false, detail)
    }

    /// Passed when `ok`, failed otherwise; the detail is kept either way, so every verifier
    /// reports what it saw the same way.
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            status: if ok {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed
            },
            detail: detail.into(),
        }
    }
}

/// The grade of one submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub reward: f64,
    #[serde(default)]
    pub components: BTreeMap<String, f64>,
    /// Fraction of checks passed, in [0, 1].
    pub progress: f64,
    pub checks: Vec<CheckResult>,
    /// Flags raised while grading (monitors may add more later).
    #[serde(default)]
    pub flags: Vec<MonitorFlag>,
}

impl Verdict {
    /// Reward 1 only when every check passed; progress is the passed fraction. Skipped,
    /// missing and errored checks are failures; no checks at all is a failure.
    pub fn from_checks(checks: Vec<CheckResult>) -> Self {
        let passed = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Passed)
            .count();
        let total = checks.len();
        let all = total > 0 && passed == total;
        let progress = if total == 0 {
            0.0
        } else {
            passed as f64 / total as f64
        };
        Verdict {
            reward: if all { 1.0 } else { 0.0 },
            components: BTreeMap::new(),
            progress,
            checks,
            flags: Vec::new(),
        }
    }

    pub fn success(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.status == CheckStatus::Passed)
    }
}

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("verifier failed: {0}")]
    Failed(String),
    #[error("verifier timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("verifier output is malformed: {0}")]
    Malformed(String),
}

/// Grades a submission. A verifier error is never a success: the episode records it and
/// gets no reward.
#[async_trait]
pub trait Verifier: Send + Sync {
    async fn verify(&self, task: &Task, submission: &Submission) -> Result<Verdict, VerifyError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_builders_keep_the_detail_either_way() {
        let pass = CheckResult::pass("a", "saw 3");
        assert_eq!(
            (pass.status, pass.detail.as_str()),
            (CheckStatus::Passed, "saw 3")
        );
        let fail = CheckResult::fail("b", "saw 4");
        assert_eq!(
            (fail.status, fail.detail.as_str()),
            (CheckStatus::Failed, "saw 4")
        );
        assert_eq!(CheckResult::new("a", true, "saw 3"), pass);
    }
}

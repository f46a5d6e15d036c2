//! Two-phase grading of programs: a *run* phase that executes the candidate once per case,
//! each in a fresh sandbox, and records what it printed; and a *judge* phase, in the parent
//! (or in a judge program that only ever sees the recorded outputs), where the expected
//! values live. No candidate code runs where the grade is decided.
//!
//! Run phase, per case: a new sandbox instance with the filtered grading copy of the
//! workspace read-only at `/workspace` (the working directory), optional task-provided
//! harness files read-only at `/grader`, a private `/tmp` (also `HOME`), no network, Python
//! user site disabled (`PYTHONNOUSERSITE`; start-up hook files are not copied), the case's
//! input on stdin and in `$ENACT_INPUT`. Hidden data is never mounted there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use enact_core::{CheckResult, CheckStatus, VerifyError};
use enact_sandbox::{ExecOptions, ExitStatusKind, IsolationLevel, Sandbox, SandboxConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::files::{CopyReport, CopyRules, grading_copy};
use crate::python::{GradeLimits, fail, grading_sandbox};

/// One case of a program: its input and (for the judge only) what is expected.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramCase {
    pub id: String,
    /// Given on stdin and as `$ENACT_INPUT`.
    #[serde(default)]
    pub input: String,
    /// What the judge compares the output with (never shown to the candidate).
    #[serde(default)]
    pub expected: Value,
}

/// What one case's run produced: the serialised output the judge sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseOutput {
    pub id: String,
    /// `exited`, `signaled`, `timed_out`, `cpu_limit`, `out_of_memory`, `file_size_limit`,
    /// `disk_quota` or `not_run`.
    pub status: String,
    /// The exit code when `status` is `exited`.
    pub exit_code: Option<i32>,
    pub stdout: String,
    /// The last 2,000 characters of stderr (for details; never compared).
    pub stderr_tail: String,
    /// More output than the limit was produced (the rest was dropped).
    pub truncated: bool,
    /// Parent-measured wall time.
    pub ms: f64,
}

impl CaseOutput {
    /// The program exited normally with code 0 within every limit.
    pub fn clean_exit(&self) -> bool {
        self.status == "exited" && self.exit_code == Some(0)
    }
}

/// How the parent compares an output with the expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// Byte-identical stdout (`expected` is a string).
    Exact,
    /// Equal after removing trailing whitespace of every line and trailing blank lines.
    #[default]
    Trimmed,
    /// The same whitespace-separated tokens.
    Tokens,
    /// One number, within a relative or absolute tolerance of 1e-6 (`expected` a number).
    Number,
    /// stdout parses as JSON equal to `expected` (numbers within 1e-9 relative).
    Json,
}

impl Compare {
    /// Judges one output: `Passed` or `Failed` with a reason. Outputs of programs that did not
    /// exit cleanly fail whatever they printed.
    pub fn judge(self, out: &CaseOutput, expected: &Value) -> CheckResult {
        let check = |status, detail: String| CheckResult {
            name: out.id.clone(),
            status,
            detail,
        };
        if !out.clean_exit() {
            let how = match (out.status.as_str(), out.exit_code) {
                ("exited", Some(c)) => format!("exited with code {c}"),
                (s, _) => s.replace('_', " "),
            };
            return check(
                CheckStatus::Failed,
                format!(
                    "the program {how}; no output accepted. stderr: {}",
                    out.stderr_tail
                ),
            );
        }
        if out.truncated {
            return check(CheckStatus::Failed, "the output was too long".into());
        }
        let got = out.stdout.as_str();
        let ok = match self {
            Compare::Exact => expected.as_str() == Some(got),
            Compare::Trimmed => expected.as_str().map(trim_lines) == Some(trim_lines(got)),
            Compare::Tokens => expected
                .as_str()
                .is_some_and(|e| e.split_whitespace().eq(got.split_whitespace())),
            Compare::Number => match (expected.as_f64(), got.trim().parse::<f64>()) {
                (Some(e), Ok(g)) if e.is_finite() && g.is_finite() => {
                    (e - g).abs() <= 1e-6 * e.abs().max(1.0)
                }
                _ => false,
            },
            Compare::Json => serde_json::from_str::<Value>(got)
                .map(|g| json_close(&g, expected))
                .unwrap_or(false),
        };
        if ok {
            check(CheckStatus::Passed, String::new())
        } else {
            let shown: String = got.chars().take(200).collect();
            check(CheckStatus::Failed, format!("wrong output: {shown:?}"))
        }
    }
}

fn trim_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[..end].join("\n")
}

fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p == q,
            _ => match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0),
                _ => false,
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_close(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

/// The environment of every grading sandbox: `HOME` and temporary files in the private
/// `/tmp`, Python's user site off, no byte-code written.
pub fn grading_env() -> Vec<(String, String)> {
    [
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("PYTHONNOUSERSITE", "1"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Runs a program once per case, each in a fresh sandbox (the run phase).
#[derive(Debug, Clone)]
pub struct CaseRunner {
    pub level: IsolationLevel,
    /// The program, with `{workspace}` and `{grader}` substituted.
    pub argv: Vec<String>,
    /// Task-provided, non-secret files mounted read-only at `/grader` (a harness that
    /// imports the candidate, say).
    pub harness: Option<PathBuf>,
    pub rules: CopyRules,
    pub limits: GradeLimits,
}

/// Where the run phase mounts the harness.
pub const HARNESS_MOUNT: &str = "/grader";

impl CaseRunner {
    /// Runs every case on a grading copy of `workspace`; outputs come back in case order.
    pub async fn run(
        &self,
        workspace: &Path,
        cases: &[ProgramCase],
    ) -> Result<(Vec<CaseOutput>, CopyReport), VerifyError> {
        if cases.is_empty() {
            return Err(fail("no cases to run (task definition error)"));
        }
        let copy_dir = tempfile::Builder::new()
            .prefix("enact-grade-")
            .tempdir()
            .map_err(|e| fail(format!("cannot create the grading directory: {e}")))?;
        let copy = grading_copy(workspace, copy_dir.path(), &self.rules)
            .map_err(|e| fail(format!("cannot prepare the grading copy: {e}")))?;
        let sem = Arc::new(tokio::sync::Semaphore::new(self.limits.concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        let copy_path = Arc::new(copy_dir.path().to_path_buf());
        for (i, case) in cases.iter().enumerate() {
            let (sem, copy_path, me) = (sem.clone(), copy_path.clone(), self.clone());
            let (id, input) = (case.id.clone(), case.input.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                (i, me.run_case(&copy_path, id, input).await)
            });
        }
        let mut outputs: Vec<Option<CaseOutput>> = vec![None; cases.len()];
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| fail(format!("a grading task crashed: {e}")))?;
            outputs[i] = Some(r?);
        }
        drop(copy_dir);
        let outputs = cases
            .iter()
            .zip(outputs)
            .map(|(c, o)| {
                o.unwrap_or_else(|| CaseOutput {
                    id: c.id.clone(),
                    status: "not_run".into(),
                    exit_code: None,
                    stdout: String::new(),
                    stderr_tail: String::new(),
                    truncated: false,
                    ms: 0.0,
                })
            })
            .collect();
        Ok((outputs, copy))
    }

    fn sandbox_config(&self, copy: &Path) -> SandboxConfig {
        let mut cfg = grading_sandbox(self.level, &self.limits, copy);
        if let Some(h) = &self.harness {
            cfg.read_only_binds
                .push((h.clone(), PathBuf::from(HARNESS_MOUNT)));
        }
        cfg.env = grading_env();
        cfg
    }

    async fn run_case(
        &self,
        copy: &Path,
        id: String,
        input: String,
    ) -> Result<CaseOutput, VerifyError> {
        let sandbox = Sandbox::new(self.sandbox_config(copy)).map_err(|e| {
            fail(format!(
                "cannot create the grading sandbox for case {id}: {e}"
            ))
        })?;
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                a.replace("{workspace}", "/workspace")
                    .replace("{grader}", HARNESS_MOUNT)
            })
            .collect();
        let out = sandbox
            .exec_with(
                &argv,
                ExecOptions {
                    stdin: Some(input.clone().into_bytes()),
                    cwd: Some("/workspace".into()),
                    timeout: Some(self.limits.per_case_wall),
                    env: vec![
                        ("ENACT_INPUT".into(), input),
                        ("ENACT_CASE_ID".into(), id.clone()),
                    ],
                },
            )
            .await
            .map_err(|e| fail(format!("grading case {id} could not run: {e}")))?;
        drop(sandbox);
        let (status, exit_code) = match out.status {
            ExitStatusKind::Exited(c) => ("exited", Some(c)),
            ExitStatusKind::Signaled(_) => ("signaled", None),
            ExitStatusKind::TimedOut => ("timed_out", None),
            ExitStatusKind::CpuLimit => ("cpu_limit", None),
            ExitStatusKind::OutOfMemory => ("out_of_memory", None),
            ExitStatusKind::FileSizeLimit => ("file_size_limit", None),
            ExitStatusKind::DiskQuota => ("disk_quota", None),
        };
        let err = &out.stderr.text;
        let tail: String = err
            .chars()
            .skip(err.chars().count().saturating_sub(2000))
            .collect();
        Ok(CaseOutput {
            id,
            status: status.into(),
            exit_code,
            stdout: out.stdout.text.clone(),
            stderr_tail: tail,
            truncated: out.stdout.truncated,
            ms: out.wall_time.as_secs_f64() * 1e3,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn out(stdout: &str) -> CaseOutput {
        CaseOutput {
            id: "c".into(),
            status: "exited".into(),
            exit_code: Some(0),
            stdout: stdout.into(),
            stderr_tail: String::new(),
            truncated: false,
            ms: 1.0,
        }
    }

    #[test]
    fn comparisons() {
        let pass = |c: Compare, got: &str, want: Value| c.judge(&out(got), &want).status;
        use CheckStatus::{Failed, Passed};
        assert_eq!(pass(Compare::Exact, "3\n", json!("3\n")), Passed);
        assert_eq!(pass(Compare::Exact, "3", json!("3\n")), Failed);
        assert_eq!(
            pass(Compare::Trimmed, "a  \nb\n\n\n", json!("a\nb")),
            Passed
        );
        assert_eq!(pass(Compare::Trimmed, "a\nc\n", json!("a\nb")), Failed);
        assert_eq!(pass(Compare::Tokens, " 1  2\n3 ", json!("1 2 3")), Passed);
        assert_eq!(pass(Compare::Number, "1.0000001\n", json!(1.0)), Passed);
        assert_eq!(pass(Compare::Number, "1.1", json!(1.0)), Failed);
        assert_eq!(pass(Compare::Number, "nan", json!(1.0)), Failed);
        assert_eq!(
            pass(Compare::Json, "[1, 2.0000000001]", json!([1, 2.0])),
            Passed
        );
        assert_eq!(pass(Compare::Json, "[1, 2]", json!([1, 2, 3])), Failed);
        assert_eq!(pass(Compare::Json, "{\"a\": 1}", json!({"a": 1})), Passed);
        // The expected type matters: a string never equals a number.
        assert_eq!(pass(Compare::Json, "\"3\"", json!(3)), Failed);
    }

    #[test]
    fn abnormal_ends_fail_whatever_was_printed() {
        let mut o = out("3\n");
        o.exit_code = Some(1);
        assert_eq!(
            Compare::Trimmed.judge(&o, &json!("3")).status,
            CheckStatus::Failed
        );
        o.status = "timed_out".into();
        o.exit_code = None;
        let r = Compare::Trimmed.judge(&o, &json!("3"));
        assert!(r.detail.contains("timed out"), "{r:?}");
        let mut o = out("3\n");
        o.truncated = true;
        assert_eq!(
            Compare::Trimmed.judge(&o, &json!("3")).status,
            CheckStatus::Failed
        );
    }
}

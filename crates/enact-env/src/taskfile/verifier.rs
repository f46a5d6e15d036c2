//! Grading task-file episodes: dispatch to the two-phase graders (`grading.rs`), the
//! command verifier (in a fresh grading sandbox; it trusts the candidate) and the built-in
//! checks.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enact_core::{CheckResult, CheckStatus, Submission, Task, Verdict, Verifier, VerifyError};
use enact_sandbox::{ExecOptions, ExitStatusKind, Sandbox, Workspace};
use serde::Deserialize;

use enact_verify::files::grading_copy;
use enact_verify::{CopyRules, grading_env};

use super::grading;
use super::sandbox::{paths_for, substitute, tail};
use super::spec::{BuiltinCheck, TaskSpec, VerifierDecl};
use super::tools::{MAX_CHECKED_FILE_BYTES, read_capped, safe_path};
use crate::error::ResultsError;
use crate::search::answer_matches;

/// The strict result format of a command verifier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsFile {
    checks: Vec<ResultCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultCheck {
    name: String,
    status: String,
    #[serde(default)]
    detail: String,
}

/// Parses a command verifier's results strictly. Unknown statuses, duplicate or empty
/// names and an empty check list are errors; `expect`ed names that are absent become
/// `missing` checks.
pub fn parse_results(text: &str, expect: &[String]) -> Result<Vec<CheckResult>, ResultsError> {
    let r: ResultsFile = serde_json::from_str(text).map_err(|e| {
        format!("results are not {{\"checks\":[{{\"name\",\"status\",\"detail\"}}]}}: {e}")
    })?;
    if r.checks.is_empty() {
        return Err("results contain no checks".into());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in r.checks {
        if c.name.trim().is_empty() {
            return Err("a check has an empty name".into());
        }
        if !seen.insert(c.name.clone()) {
            return Err(format!("check \"{}\" appears twice", c.name).into());
        }
        let status = match c.status.as_str() {
            "passed" => CheckStatus::Passed,
            "failed" => CheckStatus::Failed,
            "skipped" => CheckStatus::Skipped,
            "error" => CheckStatus::Error,
            other => {
                return Err(format!(
                    "check \"{}\" has status \"{other}\"; use passed, failed, skipped or error",
                    c.name
                )
                .into());
            }
        };
        out.push(CheckResult {
            name: c.name,
            status,
            detail: c.detail,
        });
    }
    for name in expect {
        if !seen.contains(name) {
            out.push(CheckResult {
                name: name.clone(),
                status: CheckStatus::Missing,
                detail: "the verifier reported no result for this expected check".into(),
            });
        }
    }
    Ok(out)
}

/// The name of a command verifier's results file: 128 bits from the OS random source. The
/// grader reads whatever file has this name in the grading workspace (a copy of the agent's
/// final workspace), so a name the candidate could predict would let it plant its own grade.
fn results_file_name() -> Result<String, VerifyError> {
    let hex = enact_sandbox::random_hex(16).map_err(|e| {
        VerifyError::Failed(format!(
            "{e}; the results file needs an unguessable name, so grading cannot proceed"
        ))
    })?;
    Ok(format!(".enact-results-{hex}.json"))
}

/// Grades task-file episodes.
pub struct TaskFileVerifier {
    pub(super) specs: Arc<BTreeMap<String, Arc<TaskSpec>>>,
}

impl TaskFileVerifier {
    async fn run_command(
        &self,
        spec: &TaskSpec,
        sub: &Submission,
        command: &[String],
        timeout: Duration,
        expect: &[String],
        keep_vcs: bool,
    ) -> Result<Verdict, VerifyError> {
        let final_ws = sub.workspace.as_ref().ok_or_else(|| {
            VerifyError::Failed(format!(
                "task {}: the submission has no workspace to grade",
                spec.id
            ))
        })?;
        // A fresh, filtered copy of the final workspace (no links, special files, start-up
        // hooks or VCS metadata; size-capped) and a pristine copy of the hidden data.
        let grading = Workspace::empty()
            .map_err(|e| VerifyError::Failed(format!("cannot create the grading copy: {e}")))?;
        grading_copy(final_ws, grading.path(), &CopyRules::task_files(keep_vcs)).map_err(|e| {
            VerifyError::Failed(format!(
                "task {}: cannot copy the final workspace: {e}",
                spec.id
            ))
        })?;
        // The results go to a directory of their own, outside the workspace.
        let results = Workspace::empty()
            .map_err(|e| VerifyError::Failed(format!("cannot create the results dir: {e}")))?;
        let hidden =
            match &spec.hidden {
                Some(h) => Some(Workspace::from_dir(h).map_err(|e| {
                    VerifyError::Failed(format!("cannot copy the hidden data: {e}"))
                })?),
                None => None,
            };
        let name = results_file_name()?;
        let mut cfg = spec
            .sandbox_config(Some(grading.path()), timeout)
            .map_err(VerifyError::Failed)?;
        if let Some(h) = &hidden {
            cfg.read_only_binds
                .push((h.path().to_path_buf(), PathBuf::from("/hidden")));
        }
        cfg.writable_binds
            .push((results.path().to_path_buf(), PathBuf::from("/results")));
        let paths = paths_for(&cfg, grading.path(), hidden.as_ref().map(|h| h.path()));
        let results_inside = if cfg.level.uses_namespaces() {
            format!("/results/{name}")
        } else {
            results.path().join(&name).display().to_string()
        };
        let vars = BTreeMap::from([
            ("workspace".to_string(), paths.workspace.clone()),
            ("hidden".to_string(), paths.hidden.clone()),
            ("results".to_string(), results_inside.clone()),
        ]);
        let argv = substitute(command, &vars);
        let mut env = grading_env();
        env.extend([
            ("ENACT_RESULTS".to_string(), results_inside),
            ("ENACT_WORKSPACE".to_string(), paths.workspace.clone()),
            ("ENACT_HIDDEN".to_string(), paths.hidden.clone()),
            (
                "ENACT_FINAL_ANSWER".to_string(),
                sub.final_answer.clone().unwrap_or_default(),
            ),
            ("ENACT_TASK_ID".to_string(), spec.id.clone()),
        ]);
        let sandbox = Sandbox::new(cfg).map_err(|e| {
            VerifyError::Failed(format!(
                "task {}: cannot create the grading sandbox: {e}",
                spec.id
            ))
        })?;
        let out = sandbox
            .exec_with(
                &argv,
                ExecOptions {
                    timeout: Some(timeout),
                    env,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                VerifyError::Failed(format!(
                    "task {}: the verifier command could not run: {e}",
                    spec.id
                ))
            })?;
        if out.status == ExitStatusKind::TimedOut {
            return Err(VerifyError::Timeout(timeout));
        }
        let host_results = results.path().join(&name);
        let text = std::fs::read_to_string(&host_results).map_err(|_| {
            VerifyError::Malformed(format!(
                "task {}: the verifier ({}) wrote no results to $ENACT_RESULTS; stderr: {}",
                spec.id,
                out.status.describe(),
                tail(&out.stderr.text)
            ))
        })?;
        let checks = parse_results(&text, expect)
            .map_err(|e| VerifyError::Malformed(format!("task {}: {e}", spec.id)))?;
        Ok(Verdict::from_checks(checks))
    }

    fn run_builtin(spec: &TaskSpec, sub: &Submission, checks: &[BuiltinCheck]) -> Verdict {
        let answer = sub.final_answer.clone().unwrap_or_default();
        let ws = sub.workspace.clone();
        let read_ws = |path: &str| -> Result<String, String> {
            let root = ws.as_ref().ok_or("the submission has no workspace")?;
            let p = safe_path(root, path).map_err(|e| e.0)?;
            read_capped(&p, MAX_CHECKED_FILE_BYTES).map_err(|e| format!("cannot read {path}: {e}"))
        };
        let results = checks
            .iter()
            .map(|c| {
                let outcome: Result<bool, String> = match c {
                    BuiltinCheck::AnswerEquals { value, exact } => Ok(if *exact {
                        answer.trim() == value.trim()
                    } else {
                        answer_matches(&answer, value)
                    }),
                    BuiltinCheck::AnswerContains { value } => {
                        Ok(answer.to_lowercase().contains(&value.to_lowercase()))
                    }
                    BuiltinCheck::FileEquals {
                        path,
                        expected,
                        expected_file,
                    } => read_ws(path).and_then(|got| {
                        let want = match (expected, expected_file, &spec.hidden) {
                            (Some(e), _, _) => e.clone(),
                            (None, Some(f), Some(h)) => std::fs::read_to_string(h.join(f))
                                .map_err(|e| format!("cannot read hidden {f}: {e}"))?,
                            _ => return Err("no expected content".into()),
                        };
                        Ok(got == want)
                    }),
                    BuiltinCheck::FileContains { path, text } => {
                        read_ws(path).map(|got| got.contains(text.as_str()))
                    }
                    BuiltinCheck::FileExists { path } => Ok(ws
                        .as_ref()
                        .and_then(|r| safe_path(r, path).ok())
                        .is_some_and(|p| p.is_file())),
                };
                match outcome {
                    Ok(ok) => CheckResult::new(c.name(), ok, ""),
                    Err(e) => CheckResult::fail(c.name(), e),
                }
            })
            .collect();
        Verdict::from_checks(results)
    }
}

#[async_trait]
impl Verifier for TaskFileVerifier {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let spec = self.specs.get(&task.id).ok_or_else(|| {
            VerifyError::Malformed(format!("no task file defines task {}", task.id))
        })?;
        match &spec.verifier {
            VerifierDecl::Python {
                module,
                cases,
                timeout_secs,
            } => {
                grading::grade_python(spec, sub, module, cases, Duration::from_secs(*timeout_secs))
                    .await
            }
            VerifierDecl::Cases { .. } => grading::grade_cases(spec, sub).await,
            VerifierDecl::Command {
                command,
                timeout_secs,
                expect,
                keep_vcs,
            } => {
                self.run_command(
                    spec,
                    sub,
                    command,
                    Duration::from_secs(*timeout_secs),
                    expect,
                    *keep_vcs,
                )
                .await
            }
            VerifierDecl::Builtin { checks } => Ok(Self::run_builtin(spec, sub, checks)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn results_are_parsed_strictly() {
        let ok = parse_results(r#"{"checks":[{"name":"a","status":"passed"},{"name":"b","status":"skipped","detail":"x"}]}"#, &["c".into()]).unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(ok[1].status, CheckStatus::Skipped);
        assert_eq!(ok[2].status, CheckStatus::Missing);
        assert!(!Verdict::from_checks(ok).success());
        for bad in [
            "",
            "{}",
            r#"{"checks":[]}"#,
            r#"{"checks":[{"name":"a","status":"ok"}]}"#,
            r#"{"checks":[{"name":"a","status":"passed"},{"name":"a","status":"passed"}]}"#,
            r#"{"checks":[{"name":"a","status":"passed","extra":1}]}"#,
            r#"{"checks":[{"name":"","status":"passed"}]}"#,
            r#"[1,2]"#,
        ] {
            assert!(parse_results(bad, &[]).is_err(), "{bad}");
        }
    }

    /// The old name was SplitMix64 seeded by the clock (ns) and the pid: whoever knows both
    /// (the pid is small, the clock is shared) rebuilds it by trying the instants of a short
    /// window. Here the window is the call itself and the pid is ours, so the old scheme is
    /// found every time; a name from the OS random source never is.
    #[test]
    fn results_file_name_is_not_predictable_from_clock_and_pid() {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap()
        };
        let t0 = now();
        let name = results_file_name().unwrap();
        let t1 = now();
        let pid = u64::from(std::process::id()) << 32;
        let predicted = (t0..=t1).any(|t| {
            let mut rng = enact_core::SeededRng::new(t ^ pid);
            name == format!(
                ".enact-results-{:016x}{:016x}.json",
                rng.next_u64(),
                rng.next_u64()
            )
        });
        assert!(!predicted, "{name} was rebuilt from the clock and the pid");
        assert_ne!(name, results_file_name().unwrap());
        assert_eq!(name.len(), ".enact-results-.json".len() + 32);
    }
}

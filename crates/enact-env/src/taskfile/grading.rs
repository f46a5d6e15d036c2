//! Two-phase grading of task files (`kind = "python"` and `kind = "cases"`): the candidate
//! runs once per case in fresh sandboxes that never see `hidden/`; the grade is decided in
//! the parent, or by a judge program that sees only the recorded outputs and `hidden/`
//! (never the candidate's files), writing its results to a directory only it can name.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use enact_core::{CheckResult, Submission, Verdict, VerifyError};
use enact_sandbox::{ExecOptions, ExitStatusKind, Sandbox};
use enact_verify::{
    CaseOutput, CaseRunner, CopyRules, GradeLimits, ProgramCase, PyCase, PyValue, PythonGrader,
    grading_env,
};
use serde::Deserialize;
use serde_json::json;

use super::sandbox::tail;
use super::spec::{TaskSpec, VerifierDecl, relative_inside};
use super::verifier::parse_results;

/// Largest cases file read (it is the task author's, but read on every grading).
const MAX_CASES_BYTES: u64 = 16 << 20;

fn failed(spec: &TaskSpec, m: impl std::fmt::Display) -> VerifyError {
    VerifyError::Failed(format!("task {}: {m}", spec.id))
}

/// Checks the two-phase declarations at load time: `(field, message)` on error.
pub(super) fn check_decl(
    decl: &VerifierDecl,
    dir: &Path,
    hidden: Option<&Path>,
) -> Result<(), (String, String)> {
    let f = |field: &str, m: String| (format!("verifier.{field}"), m);
    match decl {
        VerifierDecl::Python { module, cases, .. } => {
            if module.is_empty()
                || !module
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
            {
                return Err(f(
                    "module",
                    format!("\"{module}\" is not a Python module name (like stats or pkg.mod)"),
                ));
            }
            let h = hidden.ok_or_else(|| f("cases", "needs a [hidden] dir".into()))?;
            python_cases(h, cases).map_err(|m| f("cases", m))?;
        }
        VerifierDecl::Cases {
            run,
            cases,
            compare,
            judge,
            harness,
            ..
        } => {
            if run.is_empty() {
                return Err(f("run", "must name a program (a list of strings)".into()));
            }
            match (compare, judge) {
                (Some(_), Some(_)) => {
                    return Err(f(
                        "judge",
                        "give either compare (built-in) or judge (a program), not both".into(),
                    ));
                }
                (_, Some(j)) if j.is_empty() => {
                    return Err(f("judge", "must name a program (a list of strings)".into()));
                }
                _ => {}
            }
            let h = hidden.ok_or_else(|| f("cases", "needs a [hidden] dir".into()))?;
            program_cases(h, cases).map_err(|m| f("cases", m))?;
            if let Some(rel) = harness {
                let p = dir.join(relative_inside(rel).map_err(|m| f("harness", m))?);
                if !p.is_dir() {
                    return Err(f(
                        "harness",
                        format!("directory {} does not exist", p.display()),
                    ));
                }
                if hidden.is_some_and(|h| p.starts_with(h) || h.starts_with(&p)) {
                    return Err(f(
                        "harness",
                        "must not be or contain the hidden directory: the candidate's run \
                         phase sees the harness"
                            .into(),
                    ));
                }
            }
        }
        VerifierDecl::Command { .. } | VerifierDecl::Builtin { .. } => {}
    }
    Ok(())
}

fn read_cases(hidden: &Path, rel: &str) -> Result<String, String> {
    let bytes = enact_verify::read_no_follow(hidden, rel, MAX_CASES_BYTES)
        .map_err(|e| format!("cannot read the cases file: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{rel} is not UTF-8"))
}

fn unique_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Result<usize, String> {
    let mut seen = HashSet::new();
    for id in ids {
        if id.trim().is_empty() {
            return Err("a case has an empty id".into());
        }
        if !seen.insert(id) {
            return Err(format!("case id \"{id}\" appears twice"));
        }
    }
    if seen.is_empty() {
        return Err("the cases file holds no case".into());
    }
    Ok(seen.len())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPyCase {
    id: String,
    func: String,
    #[serde(default)]
    args: Vec<serde_json::Value>,
    expected: serde_json::Value,
}

/// `hidden/<rel>`: `[{"id", "func", "args": [...], "expected"}]` (plain JSON values:
/// `3` is an int, `3.0` a float, `{"tuple": [...]}` a tuple).
pub(super) fn python_cases(hidden: &Path, rel: &str) -> Result<Vec<PyCase>, String> {
    let raw: Vec<RawPyCase> = serde_json::from_str(&read_cases(hidden, rel)?)
        .map_err(|e| format!("{rel} must be a JSON array of {{id, func, args, expected}}: {e}"))?;
    unique_ids(raw.iter().map(|c| c.id.as_str()))?;
    raw.into_iter()
        .map(|c| {
            let args = c
                .args
                .iter()
                .map(PyValue::from_json)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("case {}: args: {e}", c.id))?;
            let expected = PyValue::from_json(&c.expected)
                .map_err(|e| format!("case {}: expected: {e}", c.id))?;
            Ok(PyCase {
                id: c.id,
                func: c.func,
                args,
                expected,
            })
        })
        .collect()
}

/// `hidden/<rel>`: `[{"id", "input", "expected"}]`.
pub(super) fn program_cases(hidden: &Path, rel: &str) -> Result<Vec<ProgramCase>, String> {
    let cases: Vec<ProgramCase> = serde_json::from_str(&read_cases(hidden, rel)?)
        .map_err(|e| format!("{rel} must be a JSON array of {{id, input, expected}}: {e}"))?;
    unique_ids(cases.iter().map(|c| c.id.as_str()))?;
    Ok(cases)
}

fn final_workspace<'a>(spec: &TaskSpec, sub: &'a Submission) -> Result<&'a Path, VerifyError> {
    sub.workspace
        .as_deref()
        .ok_or_else(|| failed(spec, "the submission has no workspace to grade"))
}

fn hidden_dir(spec: &TaskSpec) -> Result<&Path, VerifyError> {
    spec.hidden
        .as_deref()
        .ok_or_else(|| failed(spec, "the verifier needs a [hidden] dir"))
}

/// The isolation level of the run phase: at least namespaces, since at level `unsandboxed`
/// the candidate could read `hidden/` from the host.
fn two_phase_level(spec: &TaskSpec) -> Result<enact_sandbox::IsolationLevel, VerifyError> {
    let level = spec.isolation_level().map_err(VerifyError::Failed)?;
    if !level.uses_namespaces() {
        return Err(failed(
            spec,
            "two-phase grading needs sandbox isolation (namespaces); this task runs at level \
             unsandboxed, where the candidate could read hidden/ from the host",
        ));
    }
    Ok(level)
}

/// `kind = "python"`.
pub(super) async fn grade_python(
    spec: &TaskSpec,
    sub: &Submission,
    module: &str,
    cases: &str,
    timeout: Duration,
) -> Result<Verdict, VerifyError> {
    let ws = final_workspace(spec, sub)?;
    let cases = python_cases(hidden_dir(spec)?, cases).map_err(|e| failed(spec, e))?;
    let grader = PythonGrader {
        level: two_phase_level(spec)?,
        limits: GradeLimits {
            per_case_wall: timeout,
            ..GradeLimits::default()
        },
        rules: CopyRules::python(),
    };
    let report = grader.grade(ws, module, &cases).await?;
    Ok(Verdict::from_checks(report.checks))
}

/// `kind = "cases"`: run phase, then the built-in comparison or the judge program.
pub(super) async fn grade_cases(spec: &TaskSpec, sub: &Submission) -> Result<Verdict, VerifyError> {
    let VerifierDecl::Cases {
        run,
        cases,
        compare,
        judge,
        harness,
        timeout_secs,
        keep_vcs,
    } = &spec.verifier
    else {
        return Err(failed(spec, "not a cases verifier"));
    };
    let timeout = Duration::from_secs(*timeout_secs);
    let ws = final_workspace(spec, sub)?;
    let hidden = hidden_dir(spec)?;
    let cases = program_cases(hidden, cases).map_err(|e| failed(spec, e))?;
    let level = two_phase_level(spec)?;
    let harness = match harness.as_deref() {
        Some(rel) => Some(
            spec.dir
                .join(relative_inside(rel).map_err(|e| failed(spec, e))?),
        ),
        None => None,
    };
    let runner = CaseRunner {
        level,
        argv: run.to_vec(),
        harness,
        rules: CopyRules::task_files(*keep_vcs),
        limits: GradeLimits {
            per_case_wall: timeout,
            memory_bytes: spec.memory_mb.map_or(512 << 20, |mb| mb << 20),
            ..GradeLimits::programs()
        },
    };
    let (outputs, _copy) = runner.run(ws, &cases).await?;
    let checks = match judge.as_deref() {
        None => {
            let compare = compare.unwrap_or_default();
            outputs
                .iter()
                .zip(&cases)
                .map(|(o, c)| compare.judge(o, &c.expected))
                .collect()
        }
        Some(argv) => run_judge(spec, sub, argv, &outputs, &cases, timeout).await?,
    };
    Ok(Verdict::from_checks(checks))
}

/// Inside the judge's sandbox.
const OUTPUTS_MOUNT: &str = "/outputs";
const RESULTS_MOUNT: &str = "/results";
const HIDDEN_MOUNT: &str = "/hidden";

/// The judge program: a fresh sandbox with the pristine hidden data read-only at `/hidden`,
/// the recorded outputs read-only at `/outputs/outputs.json` and an empty results directory
/// at `/results`; no candidate file. Every case id must be reported.
async fn run_judge(
    spec: &TaskSpec,
    sub: &Submission,
    argv: &[String],
    outputs: &[CaseOutput],
    cases: &[ProgramCase],
    timeout: Duration,
) -> Result<Vec<CheckResult>, VerifyError> {
    let hidden = hidden_dir(spec)?;
    let dirs = tempfile::Builder::new()
        .prefix("enact-judge-")
        .tempdir()
        .map_err(|e| failed(spec, format!("cannot create the judge's directories: {e}")))?;
    let (hidden_copy, out_dir, results_dir) = (
        dirs.path().join("hidden"),
        dirs.path().join("outputs"),
        dirs.path().join("results"),
    );
    for d in [&hidden_copy, &out_dir, &results_dir] {
        std::fs::create_dir(d)
            .map_err(|e| failed(spec, format!("cannot create {}: {e}", d.display())))?;
    }
    enact_verify::files::grading_copy(hidden, &hidden_copy, &CopyRules::task_files(true))
        .map_err(|e| failed(spec, format!("cannot copy the hidden data: {e}")))?;
    let record = json!({
        "final_answer": sub.final_answer.clone().unwrap_or_default(),
        "outputs": outputs,
    });
    std::fs::write(out_dir.join("outputs.json"), record.to_string())
        .map_err(|e| failed(spec, format!("cannot write the outputs: {e}")))?;
    let mut cfg = spec
        .sandbox_config(None, timeout)
        .map_err(VerifyError::Failed)?;
    cfg.read_only_binds
        .push((hidden_copy, PathBuf::from(HIDDEN_MOUNT)));
    cfg.read_only_binds
        .push((out_dir, PathBuf::from(OUTPUTS_MOUNT)));
    cfg.writable_binds
        .push((results_dir.clone(), PathBuf::from(RESULTS_MOUNT)));
    cfg.env = grading_env();
    cfg.hostname = "enact-judge".into();
    let results_inside = format!("{RESULTS_MOUNT}/results.json");
    let outputs_inside = format!("{OUTPUTS_MOUNT}/outputs.json");
    let argv: Vec<String> = argv
        .iter()
        .map(|a| {
            a.replace("{hidden}", HIDDEN_MOUNT)
                .replace("{outputs}", &outputs_inside)
                .replace("{results}", &results_inside)
        })
        .collect();
    let sandbox = Sandbox::new(cfg)
        .map_err(|e| failed(spec, format!("cannot create the judge's sandbox: {e}")))?;
    let out = sandbox
        .exec_with(
            &argv,
            ExecOptions {
                timeout: Some(timeout),
                cwd: Some(RESULTS_MOUNT.into()),
                env: vec![
                    ("ENACT_RESULTS".into(), results_inside),
                    ("ENACT_OUTPUTS".into(), outputs_inside),
                    ("ENACT_HIDDEN".into(), HIDDEN_MOUNT.into()),
                    ("ENACT_TASK_ID".into(), spec.id.clone()),
                ],
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(spec, format!("the judge could not run: {e}")))?;
    drop(sandbox);
    if out.status == ExitStatusKind::TimedOut {
        return Err(VerifyError::Timeout(timeout));
    }
    let text = enact_verify::read_no_follow(&results_dir, "results.json", 4 << 20).map_err(|e| {
        VerifyError::Malformed(format!(
            "task {}: the judge ({}) wrote no readable results to $ENACT_RESULTS ({e}); stderr: {}",
            spec.id,
            out.status.describe(),
            tail(&out.stderr.text)
        ))
    })?;
    let text = String::from_utf8_lossy(&text);
    let expect: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    parse_results(&text, &expect)
        .map_err(|e| VerifyError::Malformed(format!("task {}: {e}", spec.id)))
}

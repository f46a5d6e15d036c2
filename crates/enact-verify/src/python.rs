//! Grading Python code: every hidden case runs in its own fresh sandbox, the parent compares.
//!
//! Per case: a new sandbox instance (fresh namespaces, private `/tmp`, no network, cgroup
//! limits) with the filtered copy of the workspace bind-mounted **read-only** at
//! `/workspace`, and `python3 -I -S -B -c DRIVER REQUEST`. The driver (enact's code, in argv)
//! imports the candidate module, calls the function twice on fresh copies of the arguments,
//! encodes the results as type-tagged JSON and writes one record, framed by a per-case random
//! marker, to a private duplicate of stdout. The expected value stays in the parent.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use enact_core::{CheckResult, CheckStatus, SeededRng, VerifyError};
use enact_sandbox::{
    ExecOptions, ExitStatusKind, IsolationLevel, Limits, NetworkPolicy, Sandbox, SandboxConfig,
    random_hex,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::files::{CopyReport, CopyRules, grading_copy};
use crate::value::{PyValue, describe_tagged, tagged_equal};

/// One hidden test case: call `func(*args)` and expect `expected`.
#[derive(Debug, Clone, PartialEq)]
pub struct PyCase {
    pub id: String,
    pub func: String,
    pub args: Vec<PyValue>,
    pub expected: PyValue,
}

/// Limits of one grading run.
#[derive(Debug, Clone, Serialize)]
pub struct GradeLimits {
    /// Wall-clock limit of one case, measured by the parent.
    pub per_case_wall: Duration,
    pub memory_bytes: u64,
    pub max_pids: u32,
    pub file_size_bytes: u64,
    pub output_bytes: usize,
    /// Cases run at once.
    pub concurrency: usize,
}

impl GradeLimits {
    /// Limits for programs graded case by case (`CaseRunner`): 10 s, 512 MiB, 64 processes,
    /// 16 MiB files, 256 KiB of stdout per case.
    pub fn programs() -> Self {
        GradeLimits {
            per_case_wall: Duration::from_secs(10),
            memory_bytes: 512 << 20,
            max_pids: 64,
            file_size_bytes: 16 << 20,
            output_bytes: 256 * 1024,
            concurrency: 4,
        }
    }
}

impl Default for GradeLimits {
    fn default() -> Self {
        GradeLimits {
            per_case_wall: Duration::from_secs(3),
            memory_bytes: 256 << 20,
            max_pids: 16,
            file_size_bytes: 1 << 20,
            output_bytes: 64 * 1024,
            concurrency: 4,
        }
    }
}

/// The outcome of grading: one check per expected case, in case order.
#[derive(Debug, Clone)]
pub struct GradeReport {
    pub checks: Vec<CheckResult>,
    pub copy: CopyReport,
    /// Parent-measured wall time per case, in milliseconds.
    pub case_ms: Vec<f64>,
}

/// The Python interpreter graders and tools use: a real binary (not a pyenv/asdf shim) inside a
/// directory that sandboxes can see (`/usr`, `/bin`, `/opt`, ...). `ENACT_PYTHON` overrides.
pub fn find_python() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let visible = SandboxConfig::default_system_dirs();
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(p) = std::env::var_os("ENACT_PYTHON") {
                candidates.push(PathBuf::from(p));
            }
            for p in [
                "/usr/bin/python3",
                "/usr/local/bin/python3",
                "/bin/python3",
                "/opt/python/bin/python3",
            ] {
                candidates.push(PathBuf::from(p));
            }
            for c in &candidates {
                let Ok(real) = std::fs::canonicalize(c) else {
                    continue;
                };
                if real.is_file() && visible.iter().any(|d| real.starts_with(d)) {
                    return Ok(real);
                }
            }
            Err(format!(
                "no python3 found in a directory sandboxes can see (tried {}); install python3 \
                 (e.g. `apt-get install -y python3`) or set ENACT_PYTHON to a real interpreter \
                 under {}",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                visible
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
        .clone()
}

/// The driver run inside each grading sandbox. It captures every builtin it needs before the
/// candidate module is imported, appends (never prepends) the candidate directory to
/// `sys.path`, and routes the candidate's stdout to stderr.
pub const DRIVER: &str = r#"
import sys, os, json
_type, _int, _float, _str, _bool, _list, _tuple, _dict = type, int, float, str, bool, list, tuple, dict
_repr, _write, _exit, _dumps = repr, os.write, os._exit, json.dumps
def dec(t):
    (k, v), = t.items()
    if k == "none": return None
    if k == "bool": return v
    if k == "int": return _int(v)
    if k == "float": return _float(v)
    if k == "str": return v
    if k == "list": return [dec(x) for x in v]
    if k == "tuple": return _tuple(dec(x) for x in v)
    if k == "dict": return {dec(a): dec(b) for a, b in v}
    raise ValueError("unknown tag " + k)
def enc(v, d=0):
    if d > 60: raise ValueError("result nested too deeply")
    t = _type(v)
    if v is None: return {"none": None}
    if t is _bool: return {"bool": True if v is True else False}
    if t is _int: return {"int": _int.__repr__(v)}
    if t is _float: return {"float": _float.__repr__(v)}
    if t is _str: return {"str": _str.__str__(v)}
    if t is _list: return {"list": [enc(x, d + 1) for x in _list.__iter__(v)]}
    if t is _tuple: return {"tuple": [enc(x, d + 1) for x in _tuple.__iter__(v)]}
    if t is _dict: return {"dict": [[enc(a, d + 1), enc(b, d + 1)] for a, b in _dict.items(v)]}
    raise TypeError("unsupported result type " + _str(getattr(t, "__qualname__", "?")))
def main():
    req = json.loads(sys.argv[1])
    marker = req.pop("marker")
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.argv = ["solution"]
    sys.path.append("/workspace")
    try:
        mod = __import__(req["module"])
        f = getattr(mod, req["func"])
        r1 = enc(f(*dec({"list": req["args"]})))
        r2 = enc(f(*dec({"list": req["args"]})))
        rec = {"ok": True, "first": r1, "second": r2}
    except SystemExit:
        rec = {"ok": False, "exited": True}
    except BaseException as e:
        try:
            msg = _str(_type(e).__name__) + ": " + _str(e)[:300]
        except BaseException:
            msg = "exception"
        rec = {"ok": False, "error": msg}
    try:
        line = marker + " " + _dumps(rec) + "\n"
    except BaseException:
        line = marker + " " + '{"ok": false, "error": "result not serialisable"}' + "\n"
    _write(out, line.encode())
    _exit(0)
main()
"#;

/// The sandbox of one grading case: the grading copy read-only at `/workspace`, no
/// network, no writable workspace (writes go to the private `/tmp`, bounded by memory and
/// the file size limit).
pub(crate) fn grading_sandbox(
    level: IsolationLevel,
    l: &GradeLimits,
    copy: &Path,
) -> SandboxConfig {
    SandboxConfig {
        level,
        workspace: None,
        read_only_binds: vec![(copy.to_path_buf(), PathBuf::from("/workspace"))],
        network: NetworkPolicy::None,
        limits: Limits {
            wall_time: l.per_case_wall,
            cpu_time: Some(l.per_case_wall),
            memory_bytes: Some(l.memory_bytes),
            max_pids: Some(l.max_pids),
            file_size_bytes: Some(l.file_size_bytes),
            workspace_bytes: None,
            open_files: Some(64),
            output_bytes: l.output_bytes,
        },
        hostname: "enact-grader".into(),
        ..SandboxConfig::default()
    }
}

/// Grades Python submissions case by case in fresh sandboxes.
#[derive(Debug, Clone)]
pub struct PythonGrader {
    pub level: IsolationLevel,
    pub limits: GradeLimits,
    pub rules: CopyRules,
}

impl Default for PythonGrader {
    fn default() -> Self {
        PythonGrader {
            level: IsolationLevel::Full,
            limits: GradeLimits::default(),
            rules: CopyRules::python(),
        }
    }
}

pub(crate) fn fail(msg: impl Into<String>) -> VerifyError {
    VerifyError::Failed(msg.into())
}

impl PythonGrader {
    /// Grades `module` in the agent's final `workspace` on `cases`. Every case yields exactly
    /// one check, in the order of `cases`.
    pub async fn grade(
        &self,
        workspace: &Path,
        module: &str,
        cases: &[PyCase],
    ) -> Result<GradeReport, VerifyError> {
        if cases.is_empty() {
            return Err(fail("no hidden cases to grade (task definition error)"));
        }
        let python = find_python().map_err(fail)?;
        let copy_dir = tempfile::Builder::new()
            .prefix("enact-grade-")
            .tempdir()
            .map_err(|e| fail(format!("cannot create the grading directory: {e}")))?;
        let copy = grading_copy(workspace, copy_dir.path(), &self.rules)
            .map_err(|e| fail(format!("cannot prepare the grading copy: {e}")))?;

        // Shuffled order: no candidate can rely on running order.
        let mut order: Vec<usize> = (0..cases.len()).collect();
        let seed = getrandom::u64()
            .map_err(|e| fail(format!("no OS randomness to shuffle the cases: {e}")))?;
        SeededRng::new(seed).shuffle(&mut order);

        let sem = Arc::new(tokio::sync::Semaphore::new(self.limits.concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        let copy_path: Arc<PathBuf> = Arc::new(copy_dir.path().to_path_buf());
        for i in order {
            let case = cases[i].clone();
            let (sem, copy_path, python) = (sem.clone(), copy_path.clone(), python.clone());
            let me = self.clone();
            let module = module.to_string();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let r = me.run_case(&python, &copy_path, &module, &case).await;
                (i, r)
            });
        }
        let mut results: Vec<Option<(CheckResult, f64)>> = vec![None; cases.len()];
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| fail(format!("a grading task crashed: {e}")))?;
            results[i] = Some(r?);
        }
        let mut checks = Vec::with_capacity(cases.len());
        let mut case_ms = Vec::with_capacity(cases.len());
        for (case, r) in cases.iter().zip(results) {
            match r {
                Some((c, ms)) => {
                    checks.push(c);
                    case_ms.push(ms);
                }
                None => {
                    checks.push(CheckResult {
                        name: case.id.clone(),
                        status: CheckStatus::Missing,
                        detail: "no result was produced for this case".into(),
                    });
                    case_ms.push(0.0);
                }
            }
        }
        drop(copy_dir);
        Ok(GradeReport {
            checks,
            copy,
            case_ms,
        })
    }

    fn sandbox_config(&self, copy: &Path) -> SandboxConfig {
        grading_sandbox(self.level, &self.limits, copy)
    }

    async fn run_case(
        &self,
        python: &Path,
        copy: &Path,
        module: &str,
        case: &PyCase,
    ) -> Result<(CheckResult, f64), VerifyError> {
        let sandbox = Sandbox::new(self.sandbox_config(copy)).map_err(|e| {
            fail(format!(
                "cannot create the grading sandbox for case {}: {e}",
                case.id
            ))
        })?;
        let marker = format!(
            "ENACT-RESULT-{}",
            random_hex(16).map_err(|e| fail(format!("cannot frame the result: {e}")))?
        );
        let request = json!({
            "module": module,
            "func": case.func,
            "args": case.args.iter().map(PyValue::to_tagged).collect::<Vec<_>>(),
            "marker": marker,
        });
        let argv = vec![
            python.display().to_string(),
            "-I".into(),
            "-S".into(),
            "-B".into(),
            "-c".into(),
            DRIVER.into(),
            request.to_string(),
        ];
        let out = sandbox
            .exec_with(
                &argv,
                ExecOptions {
                    cwd: Some("/workspace".into()),
                    timeout: Some(self.limits.per_case_wall),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| fail(format!("grading case {} could not run: {e}", case.id)))?;
        drop(sandbox);
        let ms = out.wall_time.as_secs_f64() * 1e3;
        let check = |status, detail: String| CheckResult {
            name: case.id.clone(),
            status,
            detail,
        };
        // Abnormal ends are errors, whatever was printed before.
        if !matches!(out.status, ExitStatusKind::Exited(_)) {
            return Ok((
                check(
                    CheckStatus::Error,
                    format!(
                        "{} after {ms:.0} ms (parent clock); no result accepted",
                        out.status.describe()
                    ),
                ),
                ms,
            ));
        }
        let prefix = format!("{marker} ");
        let records: Vec<&str> = out
            .stdout
            .text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect();
        let c = match records.as_slice() {
            [] => check(
                CheckStatus::Missing,
                "the program ended without reporting a result (its exit code is ignored)".into(),
            ),
            [one] => judge(one, &case.expected, &check),
            _ => check(
                CheckStatus::Error,
                format!(
                    "{} result records for one case: output forged",
                    records.len()
                ),
            ),
        };
        Ok((c, ms))
    }
}

fn judge(
    record: &str,
    expected: &PyValue,
    check: &dyn Fn(CheckStatus, String) -> CheckResult,
) -> CheckResult {
    let Ok(rec) = serde_json::from_str::<Value>(record) else {
        return check(CheckStatus::Error, "malformed result record".into());
    };
    if rec["ok"] != Value::Bool(true) {
        if rec["exited"] == Value::Bool(true) {
            return check(
                CheckStatus::Missing,
                "the program called sys.exit before producing a result".into(),
            );
        }
        let e = rec["error"].as_str().unwrap_or("unknown error");
        return check(CheckStatus::Failed, format!("raised {e}"));
    }
    let first_ok = tagged_equal(&rec["first"], expected);
    let second_ok = tagged_equal(&rec["second"], expected);
    match (first_ok, second_ok) {
        (true, true) => check(CheckStatus::Passed, String::new()),
        (true, false) => check(
            CheckStatus::Failed,
            format!(
                "unstable result: a second call on the same input returned {}",
                describe_tagged(&rec["second"])
            ),
        ),
        _ => check(
            CheckStatus::Failed,
            format!("wrong result: got {}", describe_tagged(&rec["first"])),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(record: &str) -> CheckResult {
        judge(record, &PyValue::Int(3), &|status, detail| CheckResult {
            name: "c".into(),
            status,
            detail,
        })
    }

    #[test]
    fn judging() {
        assert_eq!(
            run(r#"{"ok":true,"first":{"int":"3"},"second":{"int":"3"}}"#).status,
            CheckStatus::Passed
        );
        assert_eq!(
            run(r#"{"ok":true,"first":{"int":"3"},"second":{"int":"4"}}"#).status,
            CheckStatus::Failed
        );
        assert_eq!(
            run(r#"{"ok":true,"first":{"bool":true},"second":{"bool":true}}"#).status,
            CheckStatus::Failed
        );
        assert_eq!(
            run(r#"{"ok":false,"exited":true}"#).status,
            CheckStatus::Missing
        );
        assert_eq!(
            run(r#"{"ok":false,"error":"SkipTest: no"}"#).status,
            CheckStatus::Failed
        );
        assert_eq!(run("PASSED").status, CheckStatus::Error);
        assert_eq!(run(r#"{"ok":true}"#).status, CheckStatus::Failed);
    }
}

//! Two-phase grading of task files, the hardened command verifier and what task-file
//! sandboxes see (issue 9).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use enact_core::{Submission, Task};
use enact_env::Suite;
use enact_env::taskfile::TaskFileSuite;

fn usable() -> bool {
    let missing = enact_sandbox::detect().missing_for(enact_sandbox::IsolationLevel::Full);
    if !missing.is_empty() || enact_verify::find_python().is_err() {
        eprintln!("skipping: needs full sandbox isolation and python3");
        return false;
    }
    true
}

/// A task directory: `task.toml` from `toml` (after a standard header), plus files.
fn task(dir: &Path, toml: &str, files: &[(&str, &str)]) -> TaskFileSuite {
    for (p, c) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    std::fs::create_dir_all(dir.join("workspace")).unwrap();
    std::fs::create_dir_all(dir.join("hidden")).unwrap();
    std::fs::write(
        dir.join("task.toml"),
        format!(
            "[task]\nid = \"t\"\nprompt = \"do it\"\n\n[workspace]\ndir = \"workspace\"\n\n[hidden]\ndir = \"hidden\"\n\n{toml}\n"
        ),
    )
    .unwrap();
    TaskFileSuite::load(dir).unwrap()
}

/// Resets the task, lets `prepare` write the final workspace, and grades it.
async fn grade(suite: &TaskFileSuite, prepare: impl FnOnce(&Path)) -> (f64, String) {
    let task: Task = suite.tasks("test", 1, 0).remove(0);
    let mut env = suite.make(&task).unwrap();
    env.reset(&task).await.unwrap();
    let sub: Submission = env.submission().await.unwrap();
    prepare(sub.workspace.as_ref().unwrap());
    let r = suite.verifier().verify(&task, &sub).await;
    env.close().await.unwrap();
    match r {
        Ok(v) => (v.reward, format!("{:?}", v.checks)),
        Err(e) => (0.0, format!("error: {e}")),
    }
}

/// Resets the task, calls the tool `name` once (no arguments) and returns the observation
/// and the workspace's disk usage afterwards.
async fn call_tool(suite: &TaskFileSuite, name: &str) -> (String, u64) {
    let task: Task = suite.tasks("test", 1, 0).remove(0);
    let mut env = suite.make(&task).unwrap();
    env.reset(&task).await.unwrap();
    let out = env
        .step(enact_core::Action::ToolCall(enact_core::ToolCall {
            id: "1".into(),
            name: name.into(),
            arguments: serde_json::json!({}),
        }))
        .await
        .unwrap();
    let sub = env.submission().await.unwrap();
    let used = enact_sandbox::disk_usage(sub.workspace.as_ref().unwrap(), u64::MAX);
    env.close().await.unwrap();
    (format!("{out:?}"), used)
}

const CASES: &str = r#"[{"id": "a", "input": "2 3", "expected": "5"}, {"id": "b", "input": "10 -4", "expected": "6"}]"#;

#[tokio::test]
async fn cases_with_builtin_compare_pass_honest_and_fail_forged() {
    if !usable() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let suite = task(
        t.path(),
        "[verifier]\nkind = \"cases\"\nrun = [\"python3\", \"add.py\"]\ncases = \"cases.json\"\ncompare = \"trimmed\"\n",
        &[("hidden/cases.json", CASES)],
    );
    assert!(!suite.specs().next().unwrap().trusts_candidate());
    let (r, d) = grade(&suite, |ws| {
        std::fs::write(ws.join("add.py"), "print(sum(map(int, input().split())))\n").unwrap();
    })
    .await;
    assert_eq!(r, 1.0, "{d}");
    // Forgery from candidate code: results files, a "PASSED" line, the hidden cases.
    let (r, d) = grade(&suite, |ws| {
        std::fs::write(
            ws.join("add.py"),
            "import os, glob\nfor p in ['/results/results.json', os.environ.get('ENACT_RESULTS', '/x')]:\n    try: open(p, 'w').write('{}')\n    except OSError: pass\nprint('PASSED', glob.glob('/hidden/*'), glob.glob('/results/*'))\n",
        )
        .unwrap();
    })
    .await;
    assert_eq!(r, 0.0, "{d}");
    assert!(d.contains("PASSED [] []"), "{d}");
}

#[tokio::test]
async fn the_judge_sees_outputs_and_hidden_but_no_candidate_file() {
    if !usable() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let judge = r#"import json, os
rec = json.load(open(os.environ["ENACT_OUTPUTS"]))
seen = sorted(os.listdir("/"))
checks = []
for o in rec["outputs"]:
    ok = o["stdout"].strip() == {"a": "5", "b": "6"}[o["id"]] and "workspace" not in seen
    checks.append({"name": o["id"], "status": "passed" if ok else "failed", "detail": " ".join(seen)})
assert os.path.exists("/hidden/cases.json")
json.dump({"checks": checks}, open(os.environ["ENACT_RESULTS"], "w"))
"#;
    let suite = task(
        t.path(),
        "[verifier]\nkind = \"cases\"\nrun = [\"python3\", \"add.py\"]\ncases = \"cases.json\"\njudge = [\"python3\", \"{hidden}/judge.py\"]\n",
        &[("hidden/cases.json", CASES), ("hidden/judge.py", judge)],
    );
    let (r, d) = grade(&suite, |ws| {
        std::fs::write(ws.join("add.py"), "print(sum(map(int, input().split())))\n").unwrap();
    })
    .await;
    assert_eq!(r, 1.0, "{d}");
    assert!(!d.contains("workspace"), "{d}");
}

#[tokio::test]
async fn python_kind_grades_functions_and_rejects_equality_tricks() {
    if !usable() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let suite = task(
        t.path(),
        "[verifier]\nkind = \"python\"\nmodule = \"m\"\ncases = \"cases.json\"\n",
        &[(
            "hidden/cases.json",
            r#"[{"id": "x", "func": "f", "args": [2], "expected": 4}, {"id": "y", "func": "f", "args": [-3], "expected": 9}]"#,
        )],
    );
    let (r, d) = grade(&suite, |ws| {
        std::fs::write(ws.join("m.py"), "def f(x):\n    return x * x\n").unwrap();
    })
    .await;
    assert_eq!(r, 1.0, "{d}");
    let (r, d) = grade(&suite, |ws| {
        std::fs::write(
            ws.join("m.py"),
            "class A(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\ndef f(x):\n    return A(0)\n",
        )
        .unwrap();
    })
    .await;
    assert_eq!(r, 0.0, "{d}");
}

#[tokio::test]
async fn command_verifier_is_flagged_and_its_copy_has_no_links_hooks_or_history() {
    if !usable() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let grader = r#"import json, os
ws = os.environ["ENACT_WORKSPACE"]
names = sorted(os.listdir(ws))
bad = [n for n in names if n in ("link.json", ".git", "usercustomize.py", "x.pth")]
ok = not bad and os.environ["HOME"] == "/tmp" and not os.environ["ENACT_RESULTS"].startswith(ws)
json.dump({"checks": [{"name": "a", "status": "passed" if ok else "failed", "detail": str(names)}]}, open(os.environ["ENACT_RESULTS"], "w"))
"#;
    let suite = task(
        t.path(),
        // Monitors (planted link, start-up hooks) would withhold the reward; record only, to
        // see what the verifier itself decides (also proves the per-task policy applies).
        "[verifier]\nkind = \"command\"\ncommand = [\"python3\", \"{hidden}/grade.py\"]\nexpect = [\"a\"]\n\n[monitors]\ndefault = \"record\"\n",
        &[("hidden/grade.py", grader), ("hidden/answer.json", "42")],
    );
    assert!(suite.specs().next().unwrap().trusts_candidate());
    let hidden_answer = t.path().join("hidden/answer.json");
    let (r, d) = grade(&suite, |ws| {
        std::os::unix::fs::symlink(&hidden_answer, ws.join("link.json")).unwrap();
        std::fs::create_dir_all(ws.join(".git")).unwrap();
        std::fs::write(ws.join(".git/HEAD"), "x").unwrap();
        std::fs::write(ws.join("usercustomize.py"), "").unwrap();
        std::fs::write(ws.join("x.pth"), "").unwrap();
        std::fs::write(ws.join("ok.txt"), "").unwrap();
    })
    .await;
    assert_eq!(r, 1.0, "{d}");
    assert!(d.contains("ok.txt"), "{d}");
}

#[tokio::test]
async fn task_dir_under_a_bound_system_dir_is_invisible_to_tools() {
    if !usable() {
        return;
    }
    // /usr is bound in every sandbox; a task placed under it must still be covered.
    let Ok(parent) = tempfile::Builder::new()
        .prefix("enact-task-test-")
        .tempdir_in("/usr/local/share")
    else {
        eprintln!("skipping: /usr/local/share is not writable here");
        return;
    };
    let dir = parent.path().join("t");
    std::fs::create_dir_all(&dir).unwrap();
    let tool = format!(
        "[[tools]]\nkind = \"command\"\nname = \"peek\"\ndescription = \"peek\"\ncommand = [\"sh\", \"-c\", \"cat {}/hidden/answer.txt /opt/*/*/hidden/answer.txt 2>&1; ls -a /workspace\"]\n\n[verifier]\nkind = \"builtin\"\nchecks = [{{ type = \"answer_contains\", value = \"x\" }}]\n",
        dir.display()
    );
    let suite = task(
        &dir,
        &tool,
        &[
            ("hidden/answer.txt", "SECRET-ANSWER"),
            ("workspace/.git/HEAD", "ref"),
            ("workspace/main.py", ""),
        ],
    );
    let (text, _) = call_tool(&suite, "peek").await;
    assert!(!text.contains("SECRET-ANSWER"), "{text}");
    assert!(text.contains("main.py"), "{text}");
    assert!(
        !text.contains(".git"),
        "VCS metadata reached the agent: {text}"
    );
}

#[tokio::test]
async fn disk_quota_stops_a_command_tool() {
    if !usable() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let suite = task(
        t.path(),
        "[sandbox]\ndisk_mb = 4\n\n[[tools]]\nkind = \"command\"\nname = \"fill\"\ndescription = \"fill\"\ncommand = [\"sh\", \"-c\", \"i=0; while [ $i -lt 64 ]; do head -c 1048576 /dev/zero > f$i; i=$((i+1)); done\"]\n\n[verifier]\nkind = \"builtin\"\nchecks = [{ type = \"answer_contains\", value = \"x\" }]\n",
        &[],
    );
    let (out, used) = call_tool(&suite, "fill").await;
    assert!(out.contains("disk quota"), "{out}");
    assert!(used < 48 << 20, "the workspace grew to {used} bytes");
}

#[test]
fn declarations_are_checked_at_load() {
    let cases = |toml: &str, files: &[(&str, &str)]| {
        let t = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = t.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        std::fs::create_dir_all(t.path().join("hidden")).unwrap();
        std::fs::write(
            t.path().join("task.toml"),
            format!("[task]\nid = \"t\"\nprompt = \"p\"\n\n[hidden]\ndir = \"hidden\"\n\n{toml}\n"),
        )
        .unwrap();
        TaskFileSuite::load(t.path()).err().map(|e| e.to_string())
    };
    let e = cases(
        "[verifier]\nkind = \"cases\"\nrun = [\"x\"]\ncases = \"nope.json\"\n",
        &[],
    )
    .unwrap();
    assert!(e.contains("verifier.cases"), "{e}");
    let e = cases(
        "[verifier]\nkind = \"cases\"\nrun = [\"x\"]\ncases = \"c.json\"\ncompare = \"exact\"\njudge = [\"j\"]\n",
        &[("hidden/c.json", CASES)],
    )
    .unwrap();
    assert!(e.contains("verifier.judge"), "{e}");
    let e = cases(
        "[verifier]\nkind = \"python\"\nmodule = \"a b\"\ncases = \"c.json\"\n",
        &[("hidden/c.json", "[]")],
    )
    .unwrap();
    assert!(e.contains("verifier.module"), "{e}");
    let e = cases(
        "[verifier]\nkind = \"python\"\nmodule = \"m\"\ncases = \"c.json\"\n",
        &[(
            "hidden/c.json",
            r#"[{"id": "a", "func": "f", "expected": 1}, {"id": "a", "func": "f", "expected": 1}]"#,
        )],
    )
    .unwrap();
    assert!(e.contains("appears twice"), "{e}");
    let e = cases(
        "[verifier]\nkind = \"cases\"\nrun = [\"x\"]\ncases = \"c.json\"\nharness = \"hidden\"\n",
        &[("hidden/c.json", CASES)],
    )
    .unwrap();
    assert!(e.contains("verifier.harness"), "{e}");
    let e = cases(
        "[verifier]\nkind = \"builtin\"\nchecks = [{ type = \"answer_contains\", value = \"x\" }]\n\n[monitors]\ndefault = \"record\"\n[monitors.per_monitor]\nno-such-monitor = \"withhold\"\n",
        &[],
    )
    .unwrap();
    assert!(e.contains("unknown monitor"), "{e}");
    assert!(
        cases(
            "[verifier]\nkind = \"builtin\"\nchecks = [{ type = \"answer_contains\", value = \"x\" }]\n\n[monitors]\ndefault = \"penalise\"\n[monitors.per_monitor]\ntest-file-touched = \"record\"\n",
            &[],
        )
        .is_none()
    );
}

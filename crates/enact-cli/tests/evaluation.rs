//! `enact eval --samples`, `enact compare` and `enact report` end to end with the scripted
//! policy (the browser renders them in `browser.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

fn enact(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_enact"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("enact runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn eval_samples_give_pass_at_k_and_compare_and_report_read_the_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = enact(
        tmp.path(),
        &[
            "eval",
            "--env",
            "calc",
            "-n",
            "3",
            "--samples",
            "2",
            "--runs-dir",
            "a",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("pass@2 / pass^2"), "{stdout}");
    assert!(stdout.contains("6 / 3 (2–2 samples per task)"), "{stdout}");
    let run_a = common::only_run_dir(&tmp.path().join("a"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_a.join("metrics.json")).unwrap())
            .unwrap();
    // The old fields stay; the new ones are under `metrics`.
    assert_eq!(metrics["episodes"], 6);
    assert_eq!(metrics["metrics"]["tasks"], 3);
    assert_eq!(metrics["metrics"]["pass_k"][1]["k"], 2);
    assert_eq!(metrics["metrics"]["pass_k"][1]["pass_at_k"], 1.0);
    assert_eq!(metrics["metrics"]["by_env"][0]["key"], "calc");

    let (ok, _, stderr) = enact(
        tmp.path(),
        &["eval", "--env", "calc", "-n", "4", "--runs-dir", "b"],
    );
    assert!(ok, "{stderr}");
    let run_b = common::only_run_dir(&tmp.path().join("b"));
    let (ok, table, stderr) = enact(
        tmp.path(),
        &["compare", run_a.to_str().unwrap(), run_b.to_str().unwrap()],
    );
    assert!(ok, "{stderr}");
    assert!(
        table.contains("3 paired task(s); 0 only in A, 1 only in B"),
        "{table}"
    );
    assert!(table.contains("tied 3"), "{table}");

    let out = tmp.path().join("rep.html");
    let (ok, md, stderr) = enact(
        tmp.path(),
        &[
            "report",
            run_a.to_str().unwrap(),
            run_b.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(md.contains("| run | kind |"), "{md}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("id=\"progress-plot\"><svg"));
    assert!(
        std::fs::read_to_string(tmp.path().join("rep.md"))
            .unwrap()
            .contains("# enact report")
    );

    // Runs without a shared task: an error that says so.
    let (ok, _, stderr) = enact(tmp.path(), &["compare", run_a.to_str().unwrap(), "nowhere"]);
    assert!(!ok);
    assert!(stderr.contains("nowhere"), "{stderr}");
}

//! `enact eval --samples`, `enact compare` and `enact report` end to end with the scripted
//! policy (the browser renders them in `browser.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/tiny_model.rs"]
mod tiny_model;

mod common;

use common::enact;

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

/// With --sample-seed S, sample i of a task samples with seed S + i: the samples of one task
/// differ (on a tiny random model at temperature 1), and the run repeats exactly.
#[test]
fn samples_of_a_task_get_their_own_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model::tiny_chat_model(&tmp.path().join("tiny.gguf"));
    tiny_model::say_a_tasks(&tmp.path().join("tasks"), 0, 1);
    let sampled = |runs: &str| -> Vec<Vec<u32>> {
        let out = tiny_model::tiny_eval(tmp.path())
            .args([
                "-n",
                "1",
                "--samples",
                "3",
                "--concurrency",
                "1",
                "--max-turns",
                "1",
                "--max-tokens-per-turn",
                "24",
                "--temperature",
                "1.0",
                "--sample-seed",
                "5",
                "--runs-dir",
                runs,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("every episode failed"),
            "{stderr}"
        );
        let run = common::only_run_dir(&tmp.path().join(runs));
        std::fs::read_to_string(run.join("trajectories.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let ep = enact_core::Episode::from_json(l).unwrap();
                ep.trajectory
                    .segments
                    .iter()
                    .filter(|s| s.kind == enact_core::SegmentKind::Sampled)
                    .flat_map(|s| s.tokens.clone())
                    .collect()
            })
            .collect()
    };
    let first = sampled("r1");
    assert_eq!(first.len(), 3);
    assert!(
        first[0] != first[1] && first[1] != first[2] && first[0] != first[2],
        "samples of one task sampled the same tokens: {first:?}"
    );
    let mut again = sampled("r2");
    let mut sorted = first.clone();
    sorted.sort();
    again.sort();
    assert_eq!(sorted, again, "the same seeds must give the same samples");
}

//! The `enact` binary end to end: run, eval and show with the scripted policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::enact;

#[test]
fn run_writes_a_run_directory_that_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = enact(
        tmp.path(),
        &[
            "run",
            "--env",
            "calc",
            "--model",
            "scripted",
            "--runs-dir",
            "r",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("── Sampled"), "{stdout}");
    assert!(stdout.contains("reward 1.000"), "{stdout}");
    let run = common::only_run_dir(&tmp.path().join("r"));
    for f in [
        "config.toml",
        "trajectories.jsonl",
        "metrics.json",
        "log.txt",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let line = std::fs::read_to_string(run.join("trajectories.jsonl")).unwrap();
    let ep: enact_core::Episode = serde_json::from_str(line.trim()).unwrap();
    ep.trajectory.validate().unwrap();
    assert_eq!(serde_json::to_string(&ep).unwrap(), line.trim());
    let (ok, shown, _) = enact(tmp.path(), &["show", run.to_str().unwrap()]);
    assert!(ok);
    assert!(shown.contains("reward 1.000"));
}

#[test]
fn eval_prints_a_summary_table() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = enact(
        tmp.path(),
        &["eval", "--env", "calc", "-n", "6", "--runs-dir", "r"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("100.0%"), "{stdout}");
    assert!(stdout.contains("terminations: finished 6"), "{stdout}");
    let run = common::only_run_dir(&tmp.path().join("r"));
    let lines = std::fs::read_to_string(run.join("trajectories.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["episodes"], 6);
    assert_eq!(metrics["success_rate"], 1.0);
}

#[test]
fn show_keeps_finished_episodes_when_the_last_line_was_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = enact(
        tmp.path(),
        &["eval", "--env", "calc", "-n", "2", "--runs-dir", "r"],
    );
    assert!(ok, "{stderr}");
    let run = common::only_run_dir(&tmp.path().join("r"));
    let path = run.join("trajectories.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    // A crash while writing a third episode leaves a partial line with no newline.
    let partial = &text[..text.find('\n').unwrap() / 2];
    std::fs::write(&path, format!("{text}{partial}")).unwrap();
    let (ok, shown, stderr) = enact(tmp.path(), &["show", run.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert_eq!(shown.matches("═══ episode").count(), 2, "{shown}");
    assert!(stderr.contains("incomplete last line"), "{stderr}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = enact(tmp.path(), &["run", "--env", "nope"]);
    assert!(!ok);
    assert!(stderr.contains("unknown environment \"nope\""), "{stderr}");
    assert!(stderr.contains("calc"), "{stderr}");

    std::fs::write(tmp.path().join("bad.json"), "{not a script").unwrap();
    let (ok, _, stderr) = enact(
        tmp.path(),
        &["run", "--script", "bad.json", "--runs-dir", "r"],
    );
    assert!(!ok);
    assert!(stderr.contains("bad.json"), "{stderr}");

    // A script whose turns misbehave still runs to a recorded end.
    std::fs::write(
        tmp.path().join("s.json"),
        r#"["<tool_call>{\"name\": \"nope\"}</tool_call>", "7"]"#,
    )
    .unwrap();
    let (ok, stdout, stderr) = enact(
        tmp.path(),
        &["run", "--script", "s.json", "--runs-dir", "r2"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("unknown tool"), "{stdout}");
    assert!(stdout.contains("reward 0.000"), "{stdout}");

    std::fs::write(tmp.path().join("broken.jsonl"), "{}\n").unwrap();
    let (ok, _, stderr) = enact(tmp.path(), &["show", "broken.jsonl"]);
    assert!(!ok);
    assert!(stderr.contains("broken.jsonl:1"), "{stderr}");
}

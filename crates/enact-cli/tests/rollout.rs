//! `enact rollout` through the binary: kill -9 in the middle, rerun, nothing lost or doubled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TASKS: usize = 20;
const GROUP: usize = 2;

fn config(dir: &Path, concurrency: usize) -> std::path::PathBuf {
    let path = dir.join("rollout.toml");
    std::fs::write(
        &path,
        format!(
            r#"
env = "calc"
# every tool call is delayed, so the run is still going when it is killed
noise = "delay=1.0:40ms,seed=1"
model = "scripted"
tasks = {TASKS}
group_size = {GROUP}
concurrency = {concurrency}
output = "out"
fsync = "always"
status_interval_secs = 0.05
tool_timeout_secs = 30

[agent]
max_turns = 8
"#
        ),
    )
    .unwrap();
    path
}

fn enact(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_enact"));
    c.args(args);
    c
}

/// Episode ids of the complete lines of the store.
fn stored_ids(store: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(store).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["episode_id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn kill_9_then_rerun_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 2);
    let cfg_arg = cfg.to_str().unwrap();
    let store = tmp.path().join("out/episodes.jsonl");

    let mut child = enact(&["rollout", "--config", cfg_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while stored_ids(&store).len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no episodes stored"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "enact rollout exited early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // `enact rollout status` reads the live status file.
    let status = enact(&[
        "rollout",
        "status",
        tmp.path().join("out").to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("in flight"));

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = stored_ids(&store);
    assert!(
        before.len() < TASKS * GROUP,
        "the run finished before it was killed; the test proves nothing"
    );

    // Resume from another working directory, naming the same file differently.
    let out = enact(&["rollout", "--config", "./rollout.toml"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = stored_ids(&store);
    let unique: HashSet<&String> = after.iter().collect();
    assert_eq!(unique.len(), after.len(), "duplicated episodes");
    assert_eq!(after.len(), TASKS * GROUP, "lost episodes");
    // Everything stored before the kill is still there, first, unchanged.
    assert_eq!(after[..before.len()], before[..]);
    assert!(
        stdout.contains(&format!("{} resumed", before.len())),
        "{stdout}"
    );

    // The dataset covers every episode, in both formats.
    let rows = std::fs::read_to_string(tmp.path().join("out/dataset.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), TASKS * GROUP);
    assert!(tmp.path().join("out/dataset.parquet").exists());

    // A third run has nothing left to do.
    let out = enact(&["rollout", "--config", cfg_arg]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(stored_ids(&store).len(), TASKS * GROUP);

    // The same output directory with another configuration is refused.
    let cfg = config(tmp.path(), 3);
    let out = enact(&["rollout", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different configuration"));
}

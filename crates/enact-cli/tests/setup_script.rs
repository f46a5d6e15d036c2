//! `scripts/setup` explains itself: with `cargo` and `enact` stubbed (no build, no download,
//! no training), it links `enact` onto PATH, runs the main job (`enact train` on the shipped
//! configuration) and ends with what it did, the run directory, what the numbers mean and
//! what to try next.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn setup_links_enact_trains_and_says_what_next() {
    let tmp = tempfile::tempdir().unwrap();
    let (stubs, target, home) = (
        tmp.path().join("stubs"),
        tmp.path().join("target"),
        tmp.path().join("home"),
    );
    for d in [&stubs, &target.join("debug"), &home] {
        std::fs::create_dir_all(d).unwrap();
    }
    script(&stubs.join("cargo"), "exit 0");
    let calls = tmp.path().join("calls.txt");
    script(
        &target.join("debug/enact"),
        &format!(
            r#"echo "$*" >> {calls}
case "$1" in
  train) echo "held-out success (10 unseen tasks of the test split, greedy):"; echo "wrote runs/train-calc (metrics.jsonl, plot.svg)";;
esac"#,
            calls = calls.display()
        ),
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = format!(
        "{}:{}",
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(repo.join("scripts/setup"))
        .env("PATH", &path)
        .env("HOME", &home)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");

    let calls = std::fs::read_to_string(&calls).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls[0], "model fetch", "{calls:?}");
    assert_eq!(
        calls[1], "train --config configs/train-calc.toml",
        "{calls:?}"
    );
    assert_eq!(calls.len(), 2, "{calls:?}");

    // `enact` by name: ~/.local/bin is not on this PATH, so setup says how to add it.
    let link = home.join(".local/bin/enact");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        target.join("debug/enact").canonicalize().unwrap()
    );
    assert!(stdout.contains("is not on your PATH"), "{stdout}");

    for expected in [
        "What this did:",
        "trained the default model on calc: runs/train-calc",
        "held-out success",
        "What the numbers mean",
        "plot.svg",
        "enact show runs/train-calc/eval/",
        "enact run --env calc --model scripted",
        "enact envs",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}

//! `scripts/setup` explains itself: with `cargo` and `enact` stubbed (no build, no download),
//! it links `enact` onto PATH, runs the reference solution and the model on the same task, and
//! ends with what it did, both run directories, what the numbers mean and what to try next.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn setup_links_enact_runs_reference_and_model_and_says_what_next() {
    let tmp = tempfile::tempdir().unwrap();
    let (stubs, target, home) = (
        tmp.path().join("stubs"),
        tmp.path().join("target"),
        tmp.path().join("home"),
    );
    for d in [&stubs, &target.join("release"), &home] {
        std::fs::create_dir_all(d).unwrap();
    }
    script(&stubs.join("cargo"), "exit 0");
    let calls = tmp.path().join("calls.txt");
    script(
        &target.join("release/enact"),
        &format!(
            r#"echo "$*" >> {calls}
case "$1" in
  run) model=$(echo "$*" | sed 's/.*--model \([a-z]*\).*/\1/'); echo "task calc-test-0-0 · reward 1.000"; echo "wrote runs/run-$model";;
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
        .arg("--threads")
        .arg("1")
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
    assert!(
        calls[1].starts_with("run --env calc --model scripted"),
        "{calls:?}"
    );
    assert!(
        calls[2].starts_with("run --env calc --model default") && calls[2].ends_with("--threads 1"),
        "{calls:?}"
    );

    // `enact` by name: ~/.local/bin is not on this PATH, so setup says how to add it.
    let link = home.join(".local/bin/enact");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        target.join("release/enact").canonicalize().unwrap()
    );
    assert!(stdout.contains("is not on your PATH"), "{stdout}");

    for expected in [
        "What this did:",
        "reference solution: runs/run-scripted",
        "default model:      runs/run-default",
        "What the numbers mean",
        "Expect reward 0.000 from the default model",
        "enact show runs/run-default",
        "enact eval --model default",
        "enact envs",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}

//! Helpers shared by the CLI's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The one run directory under `root` (each test makes exactly one per runs dir).
pub fn only_run_dir(root: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// Runs the `enact` binary in `dir`: whether it succeeded, its stdout and its stderr.
pub fn enact(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enact"))
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

//! Helpers shared by the CLI's integration tests.

#![allow(dead_code, clippy::unwrap_used)]

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

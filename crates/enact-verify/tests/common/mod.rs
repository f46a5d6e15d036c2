//! Shared by the grader tests.
#![allow(dead_code, clippy::panic)]

use enact_core::CheckStatus;
use enact_sandbox::IsolationLevel;
use enact_verify::find_python;

/// Full isolation and a Python the sandbox can see; otherwise prints why and returns false.
pub fn available() -> bool {
    let missing = enact_sandbox::detect().missing_for(IsolationLevel::Full);
    enact_testkit::available(
        enact_testkit::Requirement::Sandbox,
        "full sandbox isolation",
        &missing,
    ) && enact_testkit::found(enact_testkit::Requirement::Python, find_python())
}

/// Every check has status `s`.
pub fn all(v: &[(CheckStatus, String)], s: CheckStatus) -> bool {
    v.iter().all(|(st, _)| *st == s)
}

/// A temporary directory holding `files` (relative path, content).
pub fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (p, c) in files {
        let path = dir.path().join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(path, c).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

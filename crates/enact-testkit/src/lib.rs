//! Test-only helpers shared by every crate's tests (a dev-dependency; never published).
//!
//! Tests that need something a machine may lack (full sandbox isolation, Python, the
//! downloaded default model) call [`skip`] instead of returning green silently:
//!
//! - the skip is printed (`SKIP <where>: <reason>`) and, when `ENACT_SKIP_LOG` names a file,
//!   appended to it as one line, so `scripts/test` can say how many tests skipped and why;
//! - when `ENACT_REQUIRE` (a comma-separated list such as `sandbox,python,model`, or `all`)
//!   names the requirement, the skip is a failure instead: CI sets it, so a machine without
//!   user namespaces cannot report the escape suite as passing.

// A test helper whose purpose is to fail the calling test when a requirement is enforced.
#![allow(clippy::panic)]

use std::io::Write;
use std::panic::Location;

/// What a skipped test needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Sandbox isolation (user, mount, pid and network namespaces, cgroups, Landlock, seccomp).
    Sandbox,
    /// A Python 3 interpreter (`/usr/bin/python3` or `python3` on PATH).
    Python,
    /// The default model, installed by `enact model fetch`.
    Model,
    /// A headless Chromium (`chromium`, the Debian package) for the viewer and report tests.
    Browser,
    /// Another program the test drives (named in the reason); recorded, never enforced.
    Program,
}

impl Requirement {
    /// The name used in `ENACT_REQUIRE` and the skip log.
    pub fn name(self) -> &'static str {
        match self {
            Requirement::Sandbox => "sandbox",
            Requirement::Python => "python",
            Requirement::Model => "model",
            Requirement::Browser => "browser",
            Requirement::Program => "program",
        }
    }
}

/// The variable that turns skips into failures.
pub const REQUIRE_VAR: &str = "ENACT_REQUIRE";
/// The variable naming the file skips are appended to.
pub const SKIP_LOG_VAR: &str = "ENACT_SKIP_LOG";

/// Whether `ENACT_REQUIRE` (as given in `value`) demands `requirement`.
pub fn required_by(value: &str, requirement: Requirement) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|w| w == requirement.name() || (w == "all" && requirement != Requirement::Program))
}

/// Records that the calling test did not run (or not entirely) because `requirement` is
/// missing, and panics instead when `ENACT_REQUIRE` demands it. Call it, then `return`.
#[track_caller]
pub fn skip(requirement: Requirement, reason: &str) {
    let caller = Location::caller();
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main" && !n.starts_with("tokio-runtime"))
        .map(str::to_string)
        .unwrap_or_default();
    let place = format!("{}:{} {test}", caller.file(), caller.line());
    let place = place.trim_end();
    let required = std::env::var(REQUIRE_VAR).unwrap_or_default();
    if required_by(&required, requirement) {
        panic!(
            "{place}: this test needs {} ({reason}), and {REQUIRE_VAR}={required} makes a skip a failure; provide it, or unset {REQUIRE_VAR} to let the test skip",
            requirement.name()
        );
    }
    eprintln!("SKIP {place}: needs {}: {reason}", requirement.name());
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        // One short line per skip, written with a single append so that test threads and
        // test processes sharing the file do not interleave.
        let line = format!("{}\t{place}\t{reason}\n", requirement.name());
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Whether nothing is `missing`; otherwise records the skip (see [`skip`]) with
/// "<what> unavailable (missing …)" as the reason. `if !available(…) { return; }`
#[track_caller]
pub fn available<T: std::fmt::Debug>(requirement: Requirement, what: &str, missing: &[T]) -> bool {
    if missing.is_empty() {
        return true;
    }
    skip(
        requirement,
        &format!("{what} unavailable (missing {missing:?})"),
    );
    false
}

/// Whether `check` succeeded; otherwise records the skip (see [`skip`]) with its error as the
/// reason. `if !found(Requirement::Python, find_python()) { return; }`
#[track_caller]
pub fn found<T, E: std::fmt::Display>(requirement: Requirement, check: Result<T, E>) -> bool {
    match check {
        Ok(_) => true,
        Err(e) => {
            skip(requirement, &e.to_string());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_require_list_names_requirements() {
        assert!(required_by("sandbox,python,model", Requirement::Python));
        assert!(required_by(" model ", Requirement::Model));
        assert!(required_by("all", Requirement::Sandbox));
        assert!(!required_by("all", Requirement::Program));
        assert!(!required_by("", Requirement::Sandbox));
        assert!(!required_by("sandboxes", Requirement::Sandbox));
    }
}

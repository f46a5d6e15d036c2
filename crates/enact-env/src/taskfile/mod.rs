//! Task files: environments defined without Rust, as a directory with a `task.toml`, a
//! workspace, hidden data, tools and a verifier. See `docs/task-files.md`.
//!
//! - The agent works in a fresh copy of `workspace/`; `command` tools run there inside an
//!   `enact-sandbox` sandbox (the workspace is `/workspace` inside); `hidden/` never enters
//!   the agent's sandbox.
//! - `python` and `cases` verifiers grade in two phases (`grading.rs`): the candidate runs
//!   once per case in fresh sandboxes that never see `hidden/`, and the grade is decided in
//!   the parent or by a judge program that sees only the recorded outputs and `hidden/`.
//! - A `command` verifier runs after the agent in a FRESH grading sandbox with a filtered
//!   copy of the final workspace and a pristine copy of `hidden/` mounted read-only at
//!   `/hidden`; it writes `{"checks":[{"name","status","detail"}]}` to `$ENACT_RESULTS`, a
//!   directory outside the workspace. Candidate code can run there, so it trusts the
//!   candidate (`TaskSpec::trusts_candidate`). The exit code is ignored; a missing or
//!   malformed file is a verifier error (no reward); skipped and errored checks are failures.

mod environment;
mod grading;
mod sandbox;
mod spec;
mod suite;
mod tools;
mod verifier;

pub use environment::TaskFileEnv;
pub use spec::{BuiltinCheck, TaskFileError, TaskSpec, ToolDecl, VerifierDecl};
pub use suite::TaskFileSuite;
pub use verifier::{TaskFileVerifier, parse_results};

//! Task files: environments defined without Rust, as a directory with a `task.toml`, a
//! workspace, hidden data, tools and a verifier. See `docs/task-files.md`.
//!
//! - The agent works in a fresh copy of `workspace/`; `command` tools run there inside an
//!   `enact-sandbox` sandbox (the workspace is `/workspace` inside); `hidden/` never enters
//!   the agent's sandbox.
//! - A `command` verifier runs after the agent in a FRESH grading sandbox with a copy of the
//!   final workspace and a pristine copy of `hidden/` mounted read-only at `/hidden`; it
//!   writes `{"checks":[{"name","status","detail"}]}` to the file named by `$ENACT_RESULTS`.
//!   The exit code is ignored; a missing or malformed file is a verifier error (no reward);
//!   skipped and errored checks are failures.

mod environment;
mod sandbox;
mod spec;
mod suite;
mod tools;
mod verifier;

pub use environment::TaskFileEnv;
pub use spec::{BuiltinCheck, TaskFileError, TaskSpec, ToolDecl, VerifierDecl};
pub use suite::TaskFileSuite;
pub use verifier::{TaskFileVerifier, parse_results};

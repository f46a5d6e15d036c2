//! Honest grading for enact.
//!
//! - [`python`]: grading Python code case by case, each case in a fresh sandbox, compared in
//!   the parent from type-tagged results the candidate cannot turn into a pass;
//! - [`cases`]: two-phase grading of programs: each case run in a fresh sandbox, outputs
//!   judged in the parent (or by a judge that only sees outputs);
//! - [`value`]: the type-tagged value encoding;
//! - [`files`]: symlink-free snapshots, diffs, path-checked reads, the filtered grading copy;
//! - [`monitor`]: monitors that flag cheating from the trajectory and the workspace diff, and
//!   [`MonitoredVerifier`], a verifier wrapper applying a configurable [`MonitorPolicy`].
//!
//! See `docs/verifiers.md`.

pub mod cases;
pub mod files;
pub mod monitor;
pub mod python;
pub mod value;

pub use cases::{CaseOutput, CaseRunner, Compare, ProgramCase, grading_env};
pub use files::{CopyReport, CopyRules, FileTree, TreeDiff, read_no_follow};
pub use monitor::{
    FlagAction, Monitor, MonitorEvidence, MonitorPolicy, MonitoredVerifier, Observation,
    default_monitors,
};
pub use python::{GradeLimits, GradeReport, PyCase, PythonGrader, find_python};
pub use value::PyValue;

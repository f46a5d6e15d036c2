//! Environments of enact: tool boxes with schema-checked calls, built-in environments, task
//! suites and their verifiers.

pub mod calc;
pub mod schema;
pub mod suite;
pub mod toolbox;

pub use suite::{Suite, find_suite, registry};
pub use toolbox::{Tool, ToolBox, ToolError, ToolLimits};

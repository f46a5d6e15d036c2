//! Environments of enact: tool boxes with schema-checked calls, built-in environments, task
//! suites and their verifiers.

pub mod api;
pub mod calc;
pub mod code;
pub mod conversation;
pub mod error;
pub mod mcp;
pub mod multisearch;
pub mod noisy;
pub mod registry;
pub mod schema;
pub mod search;
pub mod shell;
pub mod suite;
pub mod taskfile;
pub mod toolbox;
pub mod workspace;

pub use conversation::{MAX_FINAL_ANSWER_BYTES, ToolConversation};
pub use error::{
    CalcError, FindSuiteError, McpError, NoiseSpecError, ResultsError, SandboxLevelError,
    SearchError, ServiceError, TaskEnvError,
};
pub use registry::{find_suite, registry};
pub use suite::Suite;
pub use toolbox::{Tool, ToolBox, ToolError, ToolLimits};

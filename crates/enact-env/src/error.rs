//! Typed errors of enact-env's public functions. Each names its domain; the message says
//! what was wrong and what to do. Internal helpers build the message as a `String`, which
//! converts into the error at the public boundary (`?`).

use crate::taskfile::TaskFileError;

macro_rules! message_error {
    ($(#[$doc:meta])* $name:ident, $format:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error($format, .0)]
        pub struct $name(pub String);

        impl From<String> for $name {
            fn from(message: String) -> Self {
                $name(message)
            }
        }

        impl From<&str> for $name {
            fn from(message: &str) -> Self {
                $name(message.to_string())
            }
        }
    };
}

message_error!(
    /// A task whose `env` field is not one its suite generated (suites regenerate a task
    /// from it).
    TaskEnvError,
    "{}; run tasks listed by the suite itself (their env field describes how to regenerate them)"
);
message_error!(
    /// A `--noise` specification that does not parse.
    NoiseSpecError,
    "{}"
);
message_error!(
    /// The search index could not be built, shared or queried.
    SearchError,
    "search index: {}"
);
message_error!(
    /// An arithmetic expression the calculator cannot evaluate.
    CalcError,
    "{}"
);
message_error!(
    /// An MCP server that could not be started or listed.
    McpError,
    "{}"
);
message_error!(
    /// A command verifier's results file that does not follow the strict format.
    ResultsError,
    "{}"
);
message_error!(
    /// `ENACT_SANDBOX_LEVEL` names no isolation level.
    SandboxLevelError,
    "ENACT_SANDBOX_LEVEL: {}; unset it (full isolation) or name a level: full, no-cgroups, no-landlock, namespaces-only or unsandboxed"
);

/// No environment of the asked name, or a task-file directory that does not load.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FindSuiteError {
    #[error("unknown environment \"{name}\"; available: {}, or tasks:DIR for a directory of task files", available.join(", "))]
    Unknown {
        name: String,
        available: Vec<String>,
    },
    #[error(transparent)]
    TaskFiles(#[from] TaskFileError),
}

/// An `api` service operation that was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// Not a valid operation on the current state (unknown id, policy, closed ticket, ...).
    #[error("{0}")]
    Invalid(String),
    /// The operation concerns a customer other than the one being served.
    #[error("not authorized: {0}; act only on the account of the customer you are serving")]
    Unauthorized(String),
}

impl From<String> for ServiceError {
    fn from(message: String) -> Self {
        ServiceError::Invalid(message)
    }
}

impl From<&str> for ServiceError {
    fn from(message: &str) -> Self {
        ServiceError::Invalid(message.to_string())
    }
}

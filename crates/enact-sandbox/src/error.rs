use std::path::PathBuf;

use crate::caps::{Feature, IsolationLevel};

/// Everything that can go wrong while creating or driving a sandbox.
///
/// Note that a sandboxed command that fails, times out or is killed is *not* an
/// error: that is reported through [`crate::ExitStatusKind`].
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "isolation level `{level}` is not available on this machine: missing {}. \
         Run `enact sandbox check` for details; fix the kernel/host or opt into a weaker level by name \
         (e.g. --level {})",
        missing.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", "),
        suggestion.map(|l| l.name()).unwrap_or("unsandboxed")
    )]
    Unsupported {
        level: IsolationLevel,
        missing: Vec<Feature>,
        suggestion: Option<IsolationLevel>,
    },
    #[error(
        "sandbox setup failed at step `{step}`: {source}. The command was NOT run. \
         Check `enact sandbox check` and the paths in the sandbox config"
    )]
    Setup {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    #[error("workspace error at {path}: {source}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the sandbox instance died unexpectedly ({0}); create a new Sandbox. \
         If this repeats, check the kernel log (dmesg) for OOM or seccomp messages"
    )]
    InstanceLost(String),
    #[error("I/O error while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no tokio runtime: Sandbox::new must be called from within a tokio runtime")]
    NoRuntime,
}

impl SandboxError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            what: what.into(),
            source,
        }
    }
    pub(crate) fn setup(step: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Setup {
            step: step.into(),
            source,
        }
    }
}

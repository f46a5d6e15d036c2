//! Errors of the embedded engine.

use std::path::PathBuf;

use thiserror::Error;

/// The architectures the engine runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("model file {} does not exist; {hint}", path.display())]
    Missing { path: PathBuf, hint: String },
    #[error("model file {} is corrupt or not a model: {detail}; {hint}", path.display())]
    Corrupt {
        path: PathBuf,
        detail: String,
        hint: String,
    },
    #[error(
        "model {} has architecture {found:?}, which the embedded engine does not support; supported architectures: {}",
        path.display(),
        SUPPORTED_ARCHITECTURES.join(", ")
    )]
    UnknownArchitecture { path: PathBuf, found: String },
    #[error(
        "checksum mismatch for {}: expected sha256 {expected}, found {actual}; delete the file and run `enact model fetch` again",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model fetch failed: {0}")]
    Fetch(String),
    #[error("the context of {context} tokens exceeds the model's limit of {limit}")]
    ContextTooLong { context: usize, limit: usize },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

//! Errors of training.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] enact_candle::EngineError),
    #[error("tensor computation failed: {0}; this is a bug in enact-train, please report it")]
    Tensor(#[from] candle_core::Error),
    #[error("invalid training input: {0}")]
    Invalid(String),
    #[error("invalid trajectory: {0}; re-record it with a token-exact backend")]
    Trajectory(#[from] enact_core::TrajectoryError),
    #[error("checkpoint {}: {detail}; pass a directory written by Trainer::save (or a PEFT LoRA adapter)", path.display())]
    Checkpoint { path: PathBuf, detail: String },
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn checkpoint_err(path: &std::path::Path, detail: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

//! Reading finished runs: evaluation metrics ([`metrics`]), paired comparisons
//! ([`compare`]), the self-contained HTML report ([`report`]) and the pages of the trajectory
//! viewer ([`html`], [`index`]). Design and definitions: `docs/evaluation.md`.

pub mod compare;
pub mod fixtures;
pub mod html;
pub mod index;
pub mod load;
pub mod metrics;
pub mod report;
pub mod stats;
pub mod svg;

use std::path::PathBuf;

use thiserror::Error;

pub use compare::Comparison;
pub use index::{EpisodeIndex, EpisodeSummary, Filter};
pub use load::{Loaded, Run, RunKind, open_run, read_jsonl};
pub use metrics::{Metrics, Options};

/// Why a run could not be read.
#[derive(Debug, Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}; check that the path exists and is readable")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a valid episode: {message}")]
    Episode {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{0} holds no episodes (no trajectories.jsonl, episodes.jsonl or eval/*.jsonl); pass a directory written by enact run, eval, rollout or train"
    )]
    NoEpisodes(PathBuf),
    #[error("episode {0} does not exist in this file (it has {1}); pick one from the list")]
    NoSuchEpisode(usize, usize),
}

impl EvalError {
    fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

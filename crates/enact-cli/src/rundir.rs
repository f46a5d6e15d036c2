//! The run directory every command writes: `runs/<id>/` with
//! - `config.toml`: the resolved configuration of the run;
//! - `trajectories.jsonl`: one [`enact_core::Episode`] per line, appended and flushed as each
//!   episode ends (a crash loses at most the episode in flight);
//! - `metrics.json`: the summary ([`crate::metrics::Summary`]);
//! - `log.txt`: the log.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use enact_core::{Episode, EpisodeFormatError};

pub struct RunDir {
    pub path: PathBuf,
    trajectories: File,
}

impl RunDir {
    /// Creates `root/<kind>-<timestamp>-<random>`.
    pub fn create(root: &Path, kind: &str) -> Result<Self> {
        let id = format!(
            "{kind}-{}-{}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S"),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let path = root.join(id);
        std::fs::create_dir_all(&path).with_context(|| {
            format!(
                "cannot create the run directory {}; check permissions or pass --runs-dir",
                path.display()
            )
        })?;
        let trajectories = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.join("trajectories.jsonl"))
            .with_context(|| {
                format!("cannot open {}", path.join("trajectories.jsonl").display())
            })?;
        Ok(RunDir { path, trajectories })
    }

    pub fn write_config<T: serde::Serialize>(&self, config: &T) -> Result<()> {
        let text =
            toml::to_string_pretty(config).context("cannot serialise the run configuration")?;
        std::fs::write(self.path.join("config.toml"), text).context("cannot write config.toml")
    }

    pub fn append_episode(&mut self, episode: &Episode) -> Result<()> {
        let mut line = serde_json::to_string(episode).context("cannot serialise an episode")?;
        line.push('\n');
        self.trajectories
            .write_all(line.as_bytes())
            .context("cannot append to trajectories.jsonl")?;
        self.trajectories
            .flush()
            .context("cannot flush trajectories.jsonl")?;
        Ok(())
    }

    pub fn write_metrics(&self, metrics: &crate::metrics::Summary) -> Result<()> {
        let text = serde_json::to_string_pretty(metrics).context("cannot serialise metrics")?;
        std::fs::write(self.path.join("metrics.json"), text).context("cannot write metrics.json")
    }
}

/// Reads every episode of a `trajectories.jsonl` (or a run directory holding one). Lines
/// that do not parse are reported with their line number, not skipped silently.
pub fn read_episodes(path: &Path) -> Result<Vec<Episode>> {
    let file_path = if path.is_dir() {
        path.join("trajectories.jsonl")
    } else {
        path.to_path_buf()
    };
    let file =
        File::open(&file_path).with_context(|| format!("cannot open {}", file_path.display()))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut line = String::new();
    for i in 0.. {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", file_path.display()))?;
        if n == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let ep = match Episode::from_json(&line) {
            Ok(ep) => ep,
            // A last line without its newline is an episode cut off mid-write (a crash):
            // every episode before it is still read.
            Err(e @ EpisodeFormatError::Json(_)) if !line.ends_with('\n') => {
                eprintln!(
                    "warning: {}:{}: skipping an incomplete last line ({e}); the run was \
                     probably interrupted while writing it",
                    file_path.display(),
                    i + 1
                );
                break;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{}:{}: not a valid episode", file_path.display(), i + 1)
                });
            }
        };
        out.push(ep);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn episodes_of_another_format_version_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trajectories.jsonl");
        // A future episode: another version, and fields this version does not know.
        let line = serde_json::json!({
            "task": {"id": "t", "prompt": "p"},
            "trajectory": {"format_version": enact_core::FORMAT_VERSION + 1, "id": "e"},
            "turns": [],
        });
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let err = format!("{:#}", read_episodes(&path).unwrap_err());
        assert!(
            err.contains(&format!(
                "episode format version {} is not supported",
                enact_core::FORMAT_VERSION + 1
            )),
            "{err}"
        );
    }
}

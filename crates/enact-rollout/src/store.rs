//! The trajectory store: `episodes.jsonl`, one [`RolloutRecord`] per line, append-only.
//!
//! Crash safety: a record is written with one `write` of a whole line and then synced
//! according to the [`FsyncPolicy`]; a record is *finished* once its line (with newline) is
//! in the file. On open, complete lines are read back; a torn last line (a crash in the
//! middle of a write) is cut off, so the next append starts on a clean line. A failed write
//! (a full disk) truncates the file back to the last complete record and returns an error:
//! nothing half-written stays behind. Stable episode ids make resume exact: an id already in
//! the file is never appended again.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::RolloutRecord;

/// When the store forces records to the disk (`fsync`). A record that was written but not
/// yet synced survives a killed process (it is in the page cache) but not a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    /// After every record: durable against power loss, one sync per episode.
    Always,
    /// After every `n` records (and when the store is closed).
    Every(u32),
    /// Never explicitly (the kernel writes back); survives `kill -9`, not a power loss.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => other
                .strip_prefix("every:")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n > 0)
                .map(FsyncPolicy::Every)
                .ok_or_else(|| {
                    format!(
                        "unknown fsync policy \"{other}\": use `always`, `never` or `every:N` (N ≥ 1 records)"
                    )
                }),
        }
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<FsyncPolicy> for String {
    fn from(p: FsyncPolicy) -> String {
        match p {
            FsyncPolicy::Always => "always".into(),
            FsyncPolicy::Never => "never".into(),
            FsyncPolicy::Every(n) => format!("every:{n}"),
        }
    }
}

/// The file under the store, as a seam for failure injection (a full disk) in tests.
pub trait LogFile: Send {
    /// Appends all of `bytes` at the end, or fails (possibly after writing a part).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // The file is opened in append mode: the next write goes to the new end.
        self.set_len(len)
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "cannot open the trajectory store {path}: {source}; check that the output directory exists and is writable"
    )]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "cannot append to the trajectory store {path}: {source}; free space (or fix the disk) and rerun the same command: finished episodes are kept and the run resumes where it stopped"
    )]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "the trajectory store {path} is damaged at line {line}: {detail}; it is not a torn last line, so enact will not guess: move the file away or repair the line"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("episode {0} is already in the trajectory store; episode ids must be unique")]
    Duplicate(String),
    #[error("cannot serialise episode {id}: {detail}")]
    Serialise { id: String, detail: String },
}

/// The append-only store of finished episodes.
pub struct TrajectoryStore {
    path: PathBuf,
    file: Box<dyn LogFile>,
    /// Bytes of complete records in the file.
    len: u64,
    fsync: FsyncPolicy,
    unsynced: u32,
    done: HashSet<String>,
}

impl TrajectoryStore {
    /// Opens (or creates) the store at `path`, returning it with the records already there.
    pub fn open(path: &Path, fsync: FsyncPolicy) -> Result<(Self, Vec<RolloutRecord>), StoreError> {
        Self::open_with(path, fsync, |f| Box::new(f))
    }

    /// [`open`](Self::open) with the file wrapped by `wrap` (failure injection in tests).
    pub fn open_with(
        path: &Path,
        fsync: FsyncPolicy,
        wrap: impl FnOnce(File) -> Box<dyn LogFile>,
    ) -> Result<(Self, Vec<RolloutRecord>), StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(open_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(open_err)?;
        let (records, good_len) = parse_records(path, &bytes)?;
        if good_len < bytes.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() as u64 - good_len,
                "cutting off a torn last line (the previous run was killed while writing it)"
            );
            file.set_len(good_len).map_err(open_err)?;
            file.sync_data().map_err(open_err)?;
        }
        if !existed {
            // Make the new file's directory entry durable too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(open_err)?;
            }
        }
        let done = records.iter().map(|r| r.episode_id.clone()).collect();
        Ok((
            TrajectoryStore {
                path: path.to_path_buf(),
                file: wrap(file),
                len: good_len,
                fsync,
                unsynced: 0,
                done,
            },
            records,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an episode id is already stored.
    pub fn contains(&self, episode_id: &str) -> bool {
        self.done.contains(episode_id)
    }

    /// The ids of every stored episode.
    pub fn episode_ids(&self) -> &HashSet<String> {
        &self.done
    }

    /// Appends one finished episode (write-ahead: the record is on disk before the caller
    /// hands it on). On failure the file is cut back to the last complete record.
    pub fn append(&mut self, record: &RolloutRecord) -> Result<(), StoreError> {
        if self.done.contains(&record.episode_id) {
            return Err(StoreError::Duplicate(record.episode_id.clone()));
        }
        let mut line = serde_json::to_string(record).map_err(|e| StoreError::Serialise {
            id: record.episode_id.clone(),
            detail: e.to_string(),
        })?;
        line.push('\n');
        let written = self.file.append(line.as_bytes()).and_then(|()| {
            self.unsynced += 1;
            match self.fsync {
                FsyncPolicy::Always => self.sync_now(),
                FsyncPolicy::Every(n) if self.unsynced >= n => self.sync_now(),
                _ => Ok(()),
            }
        });
        if let Err(source) = written {
            if let Err(e) = self.file.truncate(self.len) {
                tracing::error!(path = %self.path.display(), error = %e, "could not cut back a partly written record; the next open will drop it as a torn line");
            }
            return Err(StoreError::Write {
                path: self.path.clone(),
                source,
            });
        }
        self.len += line.len() as u64;
        self.done.insert(record.episode_id.clone());
        Ok(())
    }

    fn sync_now(&mut self) -> io::Result<()> {
        self.file.sync()?;
        self.unsynced = 0;
        Ok(())
    }

    /// Syncs records not yet synced (call when the run ends, whatever the policy; with
    /// `never` this is the only sync).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced == 0 {
            return Ok(());
        }
        self.sync_now().map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Parses the complete lines of a store; returns the records and the length of the prefix
/// that holds them (a torn last line is excluded).
fn parse_records(path: &Path, bytes: &[u8]) -> Result<(Vec<RolloutRecord>, u64), StoreError> {
    let mut records = Vec::new();
    let mut seen = HashSet::new();
    let mut start = 0usize;
    let mut line_no = 0usize;
    while let Some(offset) = bytes[start..].iter().position(|&b| b == b'\n') {
        line_no += 1;
        let line = &bytes[start..start + offset];
        start += offset + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            line: line_no,
            detail,
        };
        let record: RolloutRecord =
            serde_json::from_slice(line).map_err(|e| corrupt(e.to_string()))?;
        record
            .episode
            .trajectory
            .validate()
            .map_err(|e| corrupt(e.to_string()))?;
        if !seen.insert(record.episode_id.clone()) {
            return Err(corrupt(format!(
                "episode {} appears twice",
                record.episode_id
            )));
        }
        records.push(record);
    }
    Ok((records, start as u64))
}

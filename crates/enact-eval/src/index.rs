//! The viewer's index of an episode file: each line's byte offset and a light summary,
//! built in one pass. Pages of the list are served from memory; one episode is read by
//! seeking to its offset, so a run of 10,000 episodes opens without holding them.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use enact_core::Termination;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::EvalError;
use crate::metrics::termination_name;

#[derive(Deserialize)]
struct LightTask {
    id: String,
    #[serde(default)]
    env: Value,
}

#[derive(Deserialize)]
struct LightTrajectory {
    id: String,
}

#[derive(Deserialize)]
struct LightFlag {
    monitor: String,
}

#[derive(Deserialize)]
struct LightOutcome {
    reward: f64,
    progress: f64,
    success: bool,
    termination: Termination,
    turns: u32,
    tool_calls: u32,
    tool_errors: u32,
    #[serde(default)]
    flags: Vec<LightFlag>,
}

#[derive(Deserialize)]
struct LightEpisode {
    task: LightTask,
    trajectory: LightTrajectory,
    outcome: LightOutcome,
    #[serde(default)]
    children: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct LightRecord {
    episode: LightEpisode,
    #[serde(default)]
    sample_index: Option<u32>,
}

/// What the episode list shows of one episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeSummary {
    /// Position in the file (0-based); the viewer's episode number.
    pub index: usize,
    #[serde(skip)]
    offset: u64,
    #[serde(skip)]
    len: usize,
    pub id: String,
    pub task_id: String,
    pub env: String,
    pub success: bool,
    pub reward: f64,
    pub progress: f64,
    pub termination: String,
    pub turns: u32,
    pub tool_calls: u32,
    pub tool_errors: u32,
    pub flags: Vec<String>,
    pub children: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_index: Option<u32>,
}

/// Which episodes to list. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Filter {
    pub env: Option<String>,
    pub success: Option<bool>,
    /// `any` (some flag), `none` (no flag) or a monitor name.
    pub flag: Option<String>,
    pub termination: Option<String>,
    /// Part of the task id.
    pub task: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &EpisodeSummary) -> bool {
        fn some(o: &Option<String>) -> Option<&str> {
            o.as_deref().filter(|s| !s.is_empty())
        }
        some(&self.env).is_none_or(|v| e.env == v)
            && self.success.is_none_or(|v| e.success == v)
            && some(&self.termination).is_none_or(|v| e.termination == v)
            && some(&self.task).is_none_or(|v| e.task_id.contains(v))
            && some(&self.flag).is_none_or(|v| match v {
                "any" => !e.flags.is_empty(),
                "none" => e.flags.is_empty(),
                name => e.flags.iter().any(|f| f == name),
            })
    }
}

/// One page of the list.
#[derive(Debug, Clone, Serialize)]
pub struct Page<'a> {
    /// Episodes matching the filter (all pages).
    pub total: usize,
    pub offset: usize,
    pub items: Vec<&'a EpisodeSummary>,
}

/// The index of one JSONL file of episodes (or rollout records).
#[derive(Debug, Clone)]
pub struct EpisodeIndex {
    pub path: PathBuf,
    pub entries: Vec<EpisodeSummary>,
}

fn summary(line: &[u8], index: usize, offset: u64) -> Result<EpisodeSummary, String> {
    // Rollout records start with their own fields; episodes with `task`.
    let (ep, sample_index) = match serde_json::from_slice::<LightEpisode>(line) {
        Ok(ep) => (ep, None),
        Err(first) => match serde_json::from_slice::<LightRecord>(line) {
            Ok(r) => (r.episode, r.sample_index),
            Err(_) => return Err(first.to_string()),
        },
    };
    let o = ep.outcome;
    Ok(EpisodeSummary {
        index,
        offset,
        len: line.len(),
        id: ep.trajectory.id,
        task_id: ep.task.id,
        env: ep
            .task
            .env
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        success: o.success,
        reward: o.reward,
        progress: o.progress,
        termination: termination_name(&o.termination).to_string(),
        turns: o.turns,
        tool_calls: o.tool_calls,
        tool_errors: o.tool_errors,
        flags: o.flags.into_iter().map(|f| f.monitor).collect(),
        children: ep.children.len(),
        sample_index,
    })
}

impl EpisodeIndex {
    /// Reads `path` once. A torn last line (a crash mid-write) is left out; any other bad
    /// line is an error naming its line number.
    pub fn build(path: &Path) -> Result<EpisodeIndex, EvalError> {
        let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut entries = Vec::new();
        let mut offset = 0u64;
        let mut buf = Vec::new();
        for number in 1.. {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| EvalError::io(path, e))?;
            if n == 0 {
                break;
            }
            let start = offset;
            offset += n as u64;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match summary(&buf, entries.len(), start) {
                Ok(s) => entries.push(s),
                Err(_) if buf.last() != Some(&b'\n') => break,
                Err(message) => {
                    return Err(EvalError::Episode {
                        path: path.to_path_buf(),
                        line: number,
                        message,
                    });
                }
            }
        }
        Ok(EpisodeIndex {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn page(&self, filter: &Filter, offset: usize, limit: usize) -> Page<'_> {
        let matching = self.entries.iter().filter(|e| filter.matches(e));
        let total = self.entries.iter().filter(|e| filter.matches(e)).count();
        Page {
            total,
            offset,
            items: matching.skip(offset).take(limit).collect(),
        }
    }

    /// The distinct environments, terminations and monitors (for the filter menus).
    pub fn facets(&self) -> (BTreeSet<&str>, BTreeSet<&str>, BTreeSet<&str>) {
        let mut envs = BTreeSet::new();
        let mut terms = BTreeSet::new();
        let mut flags = BTreeSet::new();
        for e in &self.entries {
            envs.insert(e.env.as_str());
            terms.insert(e.termination.as_str());
            flags.extend(e.flags.iter().map(String::as_str));
        }
        (envs, terms, flags)
    }

    /// The stored JSON of episode `n`, read at its offset.
    pub fn read(&self, n: usize) -> Result<String, EvalError> {
        let e = self
            .entries
            .get(n)
            .ok_or(EvalError::NoSuchEpisode(n, self.entries.len()))?;
        let mut file =
            std::fs::File::open(&self.path).map_err(|err| EvalError::io(&self.path, err))?;
        file.seek(SeekFrom::Start(e.offset))
            .map_err(|err| EvalError::io(&self.path, err))?;
        let mut buf = vec![0; e.len];
        file.read_exact(&mut buf)
            .map_err(|err| EvalError::io(&self.path, err))?;
        String::from_utf8(buf).map_err(|err| EvalError::Episode {
            path: self.path.clone(),
            line: n + 1,
            message: err.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use super::*;
    use crate::fixtures::Fixture;

    #[test]
    fn ten_thousand_episodes_are_listed_from_memory_and_read_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trajectories.jsonl");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..10_000 {
            let mut fx = Fixture::new(&format!("t{i:05}"), i % 3 == 0);
            fx.flag = i % 7 == 0;
            fx.tool_error = i % 2 == 0;
            writeln!(f, "{}", fx.to_json().unwrap()).unwrap();
        }
        // A torn last line (a crash mid-write) is left out.
        write!(f, "{{\"task\": {{\"id\"").unwrap();
        drop(f);
        let index = EpisodeIndex::build(&path).unwrap();
        assert_eq!(index.entries.len(), 10_000);
        let last = crate::load::parse_line(&index.read(9_999).unwrap()).unwrap();
        assert_eq!(last.episode.task.id, "t09999");
        let filter = Filter {
            success: Some(true),
            flag: Some("any".into()),
            ..Filter::default()
        };
        let page = index.page(&filter, 2, 5);
        // Successes are i % 3 == 0, flags i % 7 == 0: every 21st episode.
        assert_eq!(page.total, 10_000_usize.div_ceil(21));
        assert_eq!(
            page.items
                .iter()
                .map(|e| e.task_id.as_str())
                .collect::<Vec<_>>(),
            vec!["t00042", "t00063", "t00084", "t00105", "t00126"]
        );
        // Pages come from the index alone: the file is not read again.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(index.page(&Filter::default(), 9_990, 50).items.len(), 10);
        assert!(index.read(0).is_err());
    }

    #[test]
    fn rollout_records_are_indexed_with_their_sample_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("episodes.jsonl");
        let ep = Fixture::new("t", true).to_json().unwrap();
        let record = serde_json::json!({"format_version": 1, "episode_id": "e", "task_id": "t", "sample_index": 3, "episode": ep});
        std::fs::write(&path, format!("{record}\n")).unwrap();
        let index = EpisodeIndex::build(&path).unwrap();
        assert_eq!(index.entries[0].sample_index, Some(3));
        assert_eq!(index.entries[0].env, "calc");
        let loaded = crate::load::parse_line(&index.read(0).unwrap()).unwrap();
        assert_eq!(loaded.sample_index, Some(3));
    }
}

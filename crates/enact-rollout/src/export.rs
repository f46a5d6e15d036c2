//! Training rows from stored episodes, as JSONL or Parquet.
//!
//! One row per agent of an episode (its main line): one row for a single agent, one per agent
//! of a team's tree ([`training_rows`]). Fields (the same in both formats):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `episode_id` | string | stable id: run seed, task id, sample index |
//! | `task_id` | string | the group: the G samples of a task share it |
//! | `sample_index` | int64 | index within the group |
//! | `prompt_ids` | list<int64> | the opening prompt's tokens |
//! | `response_ids` | list<int64> | every token after the prompt: sampled, observations, forced |
//! | `loss_mask` | list<bool> | per response token: true only for sampled tokens |
//! | `behaviour_logprobs` | list<float> | per response token: the sampling logprob (0 where not sampled) |
//! | `policy_versions` | list<int64> | per response token: the policy version that sampled it (−1 where not sampled) |
//! | `reward` | double | the verifier's reward (0 without a verdict) |
//! | `success` | bool | solved |
//! | `termination` | string | why the episode ended (`finished`, `turn_limit`, `error`, …) |
//! | `staleness` | int64 | policy version at finish − oldest token version |
//! | `min_policy_version`, `max_policy_version` | int64 | oldest / newest token version |
//! | `stale` | bool | beyond the staleness bound, kept for re-weighting |
//! | `advantage` | double | GRPO advantage of the row within its group, the rows of the same task and role ([`with_group_advantages`]; 0 until computed) |
//! | `role` | string | the agent's role (`main` for a single agent; a team's entry role from `task.metadata.role`) |
//! | `agent` | string | the agent's place in the tree: `main`, then `/call_id` per level (`main/call_1_0`) |
//! | `episode_reward` | double | the whole episode's reward (`reward` is the agent's: the mix of this and its own verdict) |
//!
//! Parquet is written with the `parquet` crate's low-level column writer (no arrow),
//! uncompressed, one row group per file, lists in the standard three-level LIST layout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use enact_core::SegmentKind;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::RolloutRecord;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("cannot write {path}: {detail}; check the output directory and free space")]
    Io { path: String, detail: String },
    #[error("episode {id} has an invalid trajectory: {detail}")]
    Trajectory { id: String, detail: String },
    #[error("cannot write Parquet file {path}: {detail}")]
    Parquet { path: String, detail: String },
}

/// One training example (see the module documentation for the fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRow {
    pub episode_id: String,
    pub task_id: String,
    pub sample_index: u32,
    pub prompt_ids: Vec<u32>,
    pub response_ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
    pub behaviour_logprobs: Vec<f32>,
    pub policy_versions: Vec<i64>,
    pub reward: f64,
    pub success: bool,
    pub termination: String,
    pub staleness: u64,
    pub min_policy_version: u64,
    pub max_policy_version: u64,
    pub stale: bool,
    /// Group-normalised advantage (GRPO) among the rows of the same task and role.
    #[serde(default)]
    pub advantage: f64,
    #[serde(default = "main")]
    pub role: String,
    #[serde(default = "main")]
    pub agent: String,
    #[serde(default)]
    pub episode_reward: f64,
}

fn main() -> String {
    "main".into()
}

/// Sets each row's advantage from the rewards of the rows with the same `task_id` (its
/// group), as the trainer does: `r − mean`, divided by the group's sample standard
/// deviation when `std_normalise`.
pub fn with_group_advantages(rows: &mut [TrainingRow], std_normalise: bool) {
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.task_id.clone(), r.role.clone()))
        .collect();
    let rewards: Vec<f64> = rows.iter().map(|r| r.reward).collect();
    let adv = enact_core::advantage::grouped_grpo_advantages(&keys, &rewards, std_normalise);
    for (r, a) in rows.iter_mut().zip(adv) {
        r.advantage = a;
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The training rows of a stored episode: its own, then one per sub-agent (depth first), each
/// with its role, its place in the tree and its reward ([`enact_core::advantage::agent_rewards`]
/// with `own_weight`).
pub fn training_rows(
    record: &RolloutRecord,
    own_weight: f64,
) -> Result<Vec<TrainingRow>, ExportError> {
    let ep = &record.episode;
    let rewards = enact_core::advantage::agent_rewards(ep, own_weight);
    let mut paths: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (a, reward) in ep.agents().into_iter().zip(rewards) {
        // Depth-first order: the parent of an agent at depth d is the last path of depth d-1.
        paths.truncate(a.depth);
        let path = match (paths.last(), a.call_id) {
            (Some(parent), Some(call)) => format!("{parent}/{call}"),
            _ => "main".to_string(),
        };
        paths.push(path.clone());
        let mut row = agent_row(record, a.episode)?;
        row.role = match a.role {
            Some(role) => role.to_string(),
            None => ep
                .task
                .metadata
                .get("role")
                .and_then(|r| r.as_str())
                .unwrap_or("main")
                .to_string(),
        };
        if a.depth > 0 {
            row.episode_id = format!("{}/{}", record.episode_id, &path["main/".len()..]);
        }
        row.agent = path;
        row.reward = reward;
        row.success = a.episode.outcome.success || (a.depth == 0 && ep.outcome.success);
        rows.push(row);
    }
    Ok(rows)
}

/// The training row of a stored episode's main agent.
pub fn training_row(record: &RolloutRecord) -> Result<TrainingRow, ExportError> {
    agent_row(record, &record.episode)
}

/// The row of one agent's trajectory; group, staleness and versions are the record's.
fn agent_row(
    record: &RolloutRecord,
    episode: &enact_core::Episode,
) -> Result<TrainingRow, ExportError> {
    let t = &episode.trajectory;
    let bad = |e: enact_core::TrajectoryError| ExportError::Trajectory {
        id: record.episode_id.clone(),
        detail: e.to_string(),
    };
    let path = match t.main_leaf() {
        Some(leaf) => t.path(leaf).map_err(bad)?,
        None => Vec::new(),
    };
    let mut row = TrainingRow {
        episode_id: record.episode_id.clone(),
        task_id: record.task_id.clone(),
        sample_index: record.sample_index,
        prompt_ids: Vec::new(),
        response_ids: Vec::new(),
        loss_mask: Vec::new(),
        behaviour_logprobs: Vec::new(),
        policy_versions: Vec::new(),
        reward: episode.outcome.reward,
        success: episode.outcome.success,
        termination: serde_json::to_value(&episode.outcome.termination)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_string))
            .unwrap_or_default(),
        staleness: record.staleness,
        min_policy_version: record.min_policy_version,
        max_policy_version: record.max_policy_version,
        stale: record.stale,
        advantage: 0.0,
        role: main(),
        agent: main(),
        episode_reward: record.episode.outcome.reward,
    };
    let mut in_prompt = true;
    for seg in path {
        if in_prompt && seg.kind == SegmentKind::Prompt {
            row.prompt_ids.extend_from_slice(&seg.tokens);
            continue;
        }
        in_prompt = false;
        row.response_ids.extend_from_slice(&seg.tokens);
        if seg.kind == SegmentKind::Sampled {
            row.loss_mask
                .extend(std::iter::repeat_n(seg.loss_mask, seg.tokens.len()));
            row.behaviour_logprobs.extend_from_slice(&seg.logprobs);
            row.policy_versions
                .extend(seg.policy_versions.iter().map(|&v| clamp_i64(v)));
        } else {
            row.loss_mask
                .extend(std::iter::repeat_n(false, seg.tokens.len()));
            row.behaviour_logprobs
                .extend(std::iter::repeat_n(0.0, seg.tokens.len()));
            row.policy_versions
                .extend(std::iter::repeat_n(-1, seg.tokens.len()));
        }
    }
    Ok(row)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |e| ExportError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// A temporary path beside `path`; the export is renamed into place once complete.
fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    tmp.into()
}

/// Writes the rows as JSON lines (atomically: a temporary file, then a rename).
pub fn write_jsonl(path: &Path, rows: &[TrainingRow]) -> Result<(), ExportError> {
    let tmp = tmp_path(path);
    let mut w = BufWriter::new(File::create(&tmp).map_err(io_err(&tmp))?);
    for row in rows {
        serde_json::to_writer(&mut w, row).map_err(|e| ExportError::Io {
            path: tmp.display().to_string(),
            detail: e.to_string(),
        })?;
        w.write_all(b"\n").map_err(io_err(&tmp))?;
    }
    let f = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

const PARQUET_SCHEMA: &str = "
message rollout_episode {
  required binary episode_id (UTF8);
  required binary task_id (UTF8);
  required int64 sample_index;
  required group prompt_ids (LIST) { repeated group list { required int64 element; } }
  required group response_ids (LIST) { repeated group list { required int64 element; } }
  required group loss_mask (LIST) { repeated group list { required boolean element; } }
  required group behaviour_logprobs (LIST) { repeated group list { required float element; } }
  required group policy_versions (LIST) { repeated group list { required int64 element; } }
  required double reward;
  required boolean success;
  required binary termination (UTF8);
  required int64 staleness;
  required int64 min_policy_version;
  required int64 max_policy_version;
  required boolean stale;
  required double advantage;
  required binary role (UTF8);
  required binary agent (UTF8);
  required double episode_reward;
}
";

/// Values and levels of a list column (required list of required elements: definition
/// level 1 marks a present element, 0 an empty list; repetition level 0 starts a row).
struct Levels<T> {
    values: Vec<T>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

fn list_column<T: Clone>(lists: impl Iterator<Item = Vec<T>>) -> Levels<T> {
    let mut l = Levels {
        values: Vec::new(),
        def: Vec::new(),
        rep: Vec::new(),
    };
    for list in lists {
        if list.is_empty() {
            l.def.push(0);
            l.rep.push(0);
            continue;
        }
        for (i, v) in list.into_iter().enumerate() {
            l.values.push(v);
            l.def.push(1);
            l.rep.push(i16::from(i > 0));
        }
    }
    l
}

/// Writes the rows as a Parquet file (atomically: a temporary file, then a rename).
pub fn write_parquet(path: &Path, rows: &[TrainingRow]) -> Result<(), ExportError> {
    let tmp = tmp_path(path);
    let pq = |e: parquet::errors::ParquetError| ExportError::Parquet {
        path: tmp.display().to_string(),
        detail: e.to_string(),
    };
    let schema = Arc::new(parquet::schema::parser::parse_message_type(PARQUET_SCHEMA).map_err(pq)?);
    let props = Arc::new(WriterProperties::builder().build());
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(pq)?;
    let mut group = writer.next_row_group().map_err(pq)?;
    let strings = |f: fn(&TrainingRow) -> &str| -> Vec<ByteArray> {
        rows.iter().map(|r| ByteArray::from(f(r))).collect()
    };
    let ints =
        |f: fn(&TrainingRow) -> u64| -> Vec<i64> { rows.iter().map(|r| clamp_i64(f(r))).collect() };
    let ids = |f: fn(&TrainingRow) -> &Vec<u32>| {
        list_column(
            rows.iter()
                .map(|r| f(r).iter().map(|&t| i64::from(t)).collect()),
        )
    };
    let mut column = 0usize;
    while let Some(mut col) = group.next_column().map_err(pq)? {
        match column {
            0 => {
                col.typed::<ByteArrayType>()
                    .write_batch(&strings(|r| &r.episode_id), None, None)
                    .map_err(pq)?;
            }
            1 => {
                col.typed::<ByteArrayType>()
                    .write_batch(&strings(|r| &r.task_id), None, None)
                    .map_err(pq)?;
            }
            2 => {
                col.typed::<Int64Type>()
                    .write_batch(&ints(|r| u64::from(r.sample_index)), None, None)
                    .map_err(pq)?;
            }
            3 | 4 => {
                let l = if column == 3 {
                    ids(|r| &r.prompt_ids)
                } else {
                    ids(|r| &r.response_ids)
                };
                col.typed::<Int64Type>()
                    .write_batch(&l.values, Some(&l.def), Some(&l.rep))
                    .map_err(pq)?;
            }
            5 => {
                let l = list_column(rows.iter().map(|r| r.loss_mask.clone()));
                col.typed::<BoolType>()
                    .write_batch(&l.values, Some(&l.def), Some(&l.rep))
                    .map_err(pq)?;
            }
            6 => {
                let l = list_column(rows.iter().map(|r| r.behaviour_logprobs.clone()));
                col.typed::<FloatType>()
                    .write_batch(&l.values, Some(&l.def), Some(&l.rep))
                    .map_err(pq)?;
            }
            7 => {
                let l = list_column(rows.iter().map(|r| r.policy_versions.clone()));
                col.typed::<Int64Type>()
                    .write_batch(&l.values, Some(&l.def), Some(&l.rep))
                    .map_err(pq)?;
            }
            8 => {
                let v: Vec<f64> = rows.iter().map(|r| r.reward).collect();
                col.typed::<DoubleType>()
                    .write_batch(&v, None, None)
                    .map_err(pq)?;
            }
            9 | 14 => {
                let v: Vec<bool> = rows
                    .iter()
                    .map(|r| if column == 9 { r.success } else { r.stale })
                    .collect();
                col.typed::<BoolType>()
                    .write_batch(&v, None, None)
                    .map_err(pq)?;
            }
            10 => {
                col.typed::<ByteArrayType>()
                    .write_batch(&strings(|r| &r.termination), None, None)
                    .map_err(pq)?;
            }
            11 => {
                col.typed::<Int64Type>()
                    .write_batch(&ints(|r| r.staleness), None, None)
                    .map_err(pq)?;
            }
            12 => {
                col.typed::<Int64Type>()
                    .write_batch(&ints(|r| r.min_policy_version), None, None)
                    .map_err(pq)?;
            }
            13 => {
                col.typed::<Int64Type>()
                    .write_batch(&ints(|r| r.max_policy_version), None, None)
                    .map_err(pq)?;
            }
            15 | 18 => {
                let v: Vec<f64> = rows
                    .iter()
                    .map(|r| {
                        if column == 15 {
                            r.advantage
                        } else {
                            r.episode_reward
                        }
                    })
                    .collect();
                col.typed::<DoubleType>()
                    .write_batch(&v, None, None)
                    .map_err(pq)?;
            }
            _ => {
                let v = if column == 16 {
                    strings(|r| &r.role)
                } else {
                    strings(|r| &r.agent)
                };
                col.typed::<ByteArrayType>()
                    .write_batch(&v, None, None)
                    .map_err(pq)?;
            }
        }
        col.close().map_err(pq)?;
        column += 1;
    }
    group.close().map_err(pq)?;
    let file = writer.into_inner().map_err(pq)?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

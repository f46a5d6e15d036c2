//! Loading run directories: `eval`/`run` (`trajectories.jsonl`), `rollout` (`episodes.jsonl`
//! of rollout records) and `train` (`metrics.jsonl`, `eval/*.jsonl`, `episodes.jsonl`).
//!
//! Episodes are read through `serde_json::Value` first so that fields newer than this
//! version's [`Episode`] (sub-agent `children`) are kept for the viewer.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use enact_core::Episode;
use serde::Serialize;
use serde_json::Value;

use crate::EvalError;

/// One stored episode and what this version's [`Episode`] does not hold.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub episode: Episode,
    /// `children[]` (sub-agent episodes), as stored.
    pub children: Vec<Value>,
    /// A rollout record's sample index within its task's group.
    pub sample_index: Option<u32>,
}

impl Loaded {
    /// An episode just run.
    pub fn from_episode(episode: &Episode) -> Loaded {
        Loaded {
            episode: episode.clone(),
            children: Vec::new(),
            sample_index: None,
        }
    }
}

/// Parses one line: an [`Episode`] or a rollout record (`{"episode": {...}, ...}`).
pub fn parse_line(line: &str) -> Result<Loaded, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    from_value(value)
}

/// An episode (or rollout record) from its JSON value.
pub fn from_value(mut value: Value) -> Result<Loaded, String> {
    let sample_index = value
        .get("sample_index")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    if value.get("episode").is_some_and(Value::is_object) && value.get("task").is_none() {
        value = value
            .get_mut("episode")
            .map(Value::take)
            .unwrap_or(Value::Null);
    }
    let children = match value.get("children") {
        Some(Value::Array(c)) => c.clone(),
        _ => Vec::new(),
    };
    let text = value.to_string();
    let episode = Episode::from_json(&text).map_err(|e| e.to_string())?;
    Ok(Loaded {
        episode,
        children,
        sample_index,
    })
}

/// Every episode of a JSONL file. A last line cut off mid-write (a crash) is skipped with a
/// warning on stderr; any other bad line is an error naming its line number.
pub fn read_jsonl(path: &Path) -> Result<Vec<Loaded>, EvalError> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut line = String::new();
    for number in 1.. {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| EvalError::io(path, e))?;
        if n == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(l) => out.push(l),
            Err(message) if !line.ends_with('\n') => {
                eprintln!(
                    "warning: {}:{number}: skipping an incomplete last line ({message}); the run was probably interrupted while writing it",
                    path.display()
                );
                break;
            }
            Err(message) => {
                return Err(EvalError::Episode {
                    path: path.to_path_buf(),
                    line: number,
                    message,
                });
            }
        }
    }
    Ok(out)
}

/// Which command wrote a run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `enact run` / `enact eval`: `trajectories.jsonl`.
    Eval,
    /// `enact rollout`: `episodes.jsonl` of rollout records.
    Rollout,
    /// `enact train`: `metrics.jsonl`, held-out `eval/*.jsonl`, RL `episodes.jsonl`.
    Train,
}

/// One line of `enact train`'s `metrics.jsonl`, as far as the report plots it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainingPoint {
    pub phase: String,
    pub step: u64,
    pub reward: Option<f64>,
    pub success: Option<f64>,
    pub loss: Option<f64>,
    pub eval_label: Option<String>,
    pub eval_success: Option<f64>,
    pub eval_progress: Option<f64>,
}

impl TrainingPoint {
    fn from_value(v: &Value) -> TrainingPoint {
        let f = |p: &str| v.pointer(p).and_then(Value::as_f64);
        TrainingPoint {
            phase: v
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            step: v.get("step").and_then(Value::as_u64).unwrap_or(0),
            reward: f("/reward"),
            success: f("/success"),
            loss: f("/train/loss"),
            eval_label: v
                .pointer("/eval/label")
                .and_then(Value::as_str)
                .map(str::to_string),
            eval_success: f("/eval/success"),
            eval_progress: f("/eval/progress"),
        }
    }
}

/// A run directory, read.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    /// The directory's name.
    pub name: String,
    pub kind: RunKind,
    /// `env` of `config.toml`, when it has one (`eval`/`run`).
    pub env: Option<String>,
    /// The run's episodes: `trajectories.jsonl`, or `episodes.jsonl` (rollout, train's RL).
    pub episodes: Vec<Loaded>,
    /// Held-out evaluations of a training run: (file stem, episodes), in step order.
    pub evals: Vec<(String, Vec<Loaded>)>,
    /// `metrics.jsonl` of a training run.
    pub training: Vec<TrainingPoint>,
}

impl Run {
    /// The episodes the run's headline metrics describe: its own, or for a training run
    /// without RL episodes, its last held-out evaluation.
    pub fn headline(&self) -> &[Loaded] {
        if self.kind == RunKind::Train
            && let Some((_, last)) = self.evals.last()
        {
            return last;
        }
        &self.episodes
    }
}

/// The episode files of a run directory, in the order the viewer lists them.
pub fn episode_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for name in ["trajectories.jsonl", "episodes.jsonl"] {
        let p = dir.join(name);
        if p.is_file() {
            files.push(p);
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("eval")) {
        let mut evals: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        evals.sort();
        files.extend(evals);
    }
    files
}

/// Reads a run directory (or a single JSONL file of episodes).
pub fn open_run(path: &Path) -> Result<Run, EvalError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    if path.is_file() {
        return Ok(Run {
            dir: path.to_path_buf(),
            name,
            kind: RunKind::Eval,
            env: None,
            episodes: read_jsonl(path)?,
            evals: Vec::new(),
            training: Vec::new(),
        });
    }
    let metrics_jsonl = path.join("metrics.jsonl");
    let kind = if metrics_jsonl.is_file() {
        RunKind::Train
    } else if path.join("episodes.jsonl").is_file() {
        RunKind::Rollout
    } else if path.join("trajectories.jsonl").is_file() {
        RunKind::Eval
    } else {
        return Err(EvalError::NoEpisodes(path.to_path_buf()));
    };
    let env = std::fs::read_to_string(path.join("config.toml"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "env").then(|| v.trim().trim_matches('"').to_string())
            })
        });
    let mut run = Run {
        dir: path.to_path_buf(),
        name,
        kind,
        env,
        episodes: Vec::new(),
        evals: Vec::new(),
        training: Vec::new(),
    };
    for file in episode_files(path) {
        let eps = read_jsonl(&file)?;
        if file.parent().is_some_and(|p| p.ends_with("eval")) {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            run.evals.push((stem, eps));
        } else {
            run.episodes.extend(eps);
        }
    }
    if kind == RunKind::Train {
        let text = std::fs::read_to_string(&metrics_jsonl)
            .map_err(|e| EvalError::io(&metrics_jsonl, e))?;
        run.training = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| TrainingPoint::from_value(&v))
            .collect();
    }
    Ok(run)
}

//! A suite of task files loaded from a directory.

use enact_core::SeededRng;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use enact_core::{EnvError, Environment, Task, Verifier};

use super::environment::TaskFileEnv;
use super::spec::{TaskFileError, TaskSpec, err};
use super::verifier::TaskFileVerifier;
use crate::noisy::NoisyEnv;
use crate::suite::Suite;
use enact_core::{Submission, Verdict, VerifyError};
use enact_verify::MonitoredVerifier;

/// A suite of task files: a directory with a `task.toml`, or whose subdirectories have one.
pub struct TaskFileSuite {
    name: String,
    description: String,
    specs: Arc<BTreeMap<String, Arc<TaskSpec>>>,
}

impl TaskFileSuite {
    /// Loads every task file under `dir` (itself, or its immediate subdirectories).
    pub fn load(dir: &Path) -> Result<TaskFileSuite, TaskFileError> {
        let mut dirs = Vec::new();
        if dir.join("task.toml").is_file() {
            dirs.push(dir.to_path_buf());
        } else {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| err(dir, None, format!("cannot read the task directory: {e}")))?;
            for e in entries.flatten() {
                if e.path().join("task.toml").is_file() {
                    dirs.push(e.path());
                }
            }
            dirs.sort();
        }
        if dirs.is_empty() {
            return Err(err(
                dir,
                None,
                "no task.toml here or in its subdirectories (see docs/task-files.md)",
            ));
        }
        let mut specs = BTreeMap::new();
        for d in dirs {
            let spec = TaskSpec::load(&d)?;
            if let Some(prev) = specs.get(&spec.id) {
                let prev: &Arc<TaskSpec> = prev;
                return Err(err(
                    &d.join("task.toml"),
                    Some("task.id"),
                    format!(
                        "\"{}\" is already used by {}",
                        spec.id,
                        prev.dir.join("task.toml").display()
                    ),
                ));
            }
            specs.insert(spec.id.clone(), Arc::new(spec));
        }
        let name = format!("tasks:{}", dir.display());
        let description = format!("{} task file(s) from {}", specs.len(), dir.display());
        Ok(TaskFileSuite {
            name,
            description,
            specs: Arc::new(specs),
        })
    }

    /// The same suite under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn specs(&self) -> impl Iterator<Item = &Arc<TaskSpec>> {
        self.specs.values()
    }

    fn spec(&self, task: &Task) -> Result<Arc<TaskSpec>, EnvError> {
        self.specs.get(&task.id).cloned().ok_or_else(|| {
            EnvError::Setup(format!(
                "no task file defines task {} in {}",
                task.id, self.name
            ))
        })
    }
}

impl Suite for TaskFileSuite {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    /// The tasks of `split` (and those marked `any`), shuffled by `seed` (0 keeps file
    /// order), at most `count` of them.
    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        let mut all: Vec<Task> = self
            .specs
            .values()
            .filter(|s| s.split == split || s.split == "any")
            .map(|s| s.task(split))
            .collect();
        if seed != 0 {
            let mut rng = SeededRng::new(seed);
            for i in (1..all.len()).rev() {
                all.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        all.truncate(count);
        all
    }
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        let spec = self.spec(task)?;
        let noise = spec.noise.clone();
        let env: Box<dyn Environment> = Box::new(TaskFileEnv::new(spec));
        Ok(match noise {
            Some(cfg) => Box::new(NoisyEnv::new(env, cfg)),
            None => env,
        })
    }
    /// The task files' verifier with the default monitors, each task under its own
    /// `[monitors]` policy.
    fn verifier(&self) -> Arc<dyn Verifier> {
        let inner: Arc<dyn Verifier> = Arc::new(TaskFileVerifier {
            specs: self.specs.clone(),
        });
        Arc::new(MonitoredTaskFiles {
            by_task: self
                .specs
                .iter()
                .map(|(id, spec)| {
                    let v =
                        MonitoredVerifier::new(inner.clone()).with_policy(spec.monitors.clone());
                    (id.clone(), v)
                })
                .collect(),
        })
    }
    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let spec = self.specs.get(&task.id)?;
        let turns = spec.reference.clone()?;
        Some(match &spec.noise {
            Some(cfg) => crate::noisy::retrying_reference(&turns, cfg, task),
            None => turns,
        })
    }
}

/// Dispatches each task to the monitored verifier carrying its own policy.
struct MonitoredTaskFiles {
    by_task: BTreeMap<String, MonitoredVerifier>,
}

#[async_trait::async_trait]
impl Verifier for MonitoredTaskFiles {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let v = self.by_task.get(&task.id).ok_or_else(|| {
            VerifyError::Malformed(format!("no task file defines task {}", task.id))
        })?;
        v.verify(task, sub).await
    }
}

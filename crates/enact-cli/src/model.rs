//! Turning `--model` into an agent's pieces (policy, tokenizer, template, parser).
//!
//! `scripted` replays the environment's honest reference solution (or `--script FILE`, a JSON
//! array of assistant turns) through a byte-level tokenizer and the ChatML template.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use enact_agent::{Agent, AgentConfig};
use enact_core::Task;
use enact_env::Suite;
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, ScriptedPolicy};

/// What `--model` names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// Replays scripted turns: the task's reference solution, or a script file.
    Scripted { script: Option<PathBuf> },
}

impl ModelSpec {
    pub fn parse(spec: &str, script: Option<PathBuf>) -> Result<Self> {
        match spec {
            "scripted" => Ok(ModelSpec::Scripted { script }),
            other => bail!(
                "unknown model \"{other}\": use `scripted` (replays the reference solution or --script FILE)"
            ),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ModelSpec::Scripted { script: None } => "scripted (reference solutions)".into(),
            ModelSpec::Scripted { script: Some(p) } => format!("scripted ({})", p.display()),
        }
    }
}

/// Reads a script: a JSON array of strings, or JSONL with one string per line.
pub fn read_script(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read script {}", path.display()))?;
    if let Ok(turns) = serde_json::from_str::<Vec<String>>(&text) {
        return Ok(turns);
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<String>(l).with_context(|| {
                format!(
                    "{}:{}: a script is a JSON array of strings or one JSON string per line",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// Builds the agent for one task (scripted policies are per task).
pub fn build_agent(
    spec: &ModelSpec,
    suite: &dyn Suite,
    task: &Task,
    config: &AgentConfig,
) -> Result<Agent> {
    match spec {
        ModelSpec::Scripted { script } => {
            let turns = match script {
                Some(p) => read_script(p)?,
                None => suite.reference_solution(task).with_context(|| {
                    format!(
                        "environment {} has no reference solution for task {}; pass --script FILE",
                        suite.name(),
                        task.id
                    )
                })?,
            };
            let tokenizer = Arc::new(ByteTokenizer::new());
            Ok(Agent {
                policy: Arc::new(ScriptedPolicy::new(turns, tokenizer.clone())),
                tokenizer,
                template: Arc::new(ChatMlTemplate::default()),
                parser: Arc::new(HermesParser),
                config: config.clone(),
            })
        }
    }
}

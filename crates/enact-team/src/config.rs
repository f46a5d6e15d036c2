//! Roles and the team, read from TOML.

use std::collections::BTreeMap;
use std::path::Path;

use enact_agent::AgentConfig;
use enact_core::ThinkingMode;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TeamError {
    #[error("cannot read team file {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("team file {path} is not valid: {detail}; see docs/multi-agent.md for the format")]
    Parse { path: String, detail: String },
    #[error("team configuration: {0}")]
    Invalid(String),
}

/// A team: the role that runs the episode and the roles it can reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub team: TeamSection,
    pub roles: BTreeMap<String, RoleSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSection {
    /// The role that plays the episode's task (the orchestrator).
    pub entry: String,
    /// How deep sub-agents may nest: 1 lets the entry role call children that call nobody.
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// How many handoffs may follow each other in one episode.
    #[serde(default = "default_max_handoffs")]
    pub max_handoffs: u32,
}

fn default_max_handoffs() -> u32 {
    2
}

fn default_max_depth() -> u32 {
    1
}

fn default_max_children() -> u32 {
    8
}

/// One role of a team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// What callers read about the role (in the `delegate` tool's description).
    #[serde(default)]
    pub description: String,
    /// The role's system prompt; empty keeps the environment's.
    #[serde(default)]
    pub system: String,
    /// The model playing the role (`default`, a path, `http://…`, `scripted`), resolved by the
    /// program running the team; none = the run's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Thinking mode of the role's agent (`off`, `budget:256`, `adaptive:high`, …; a task's
    /// own mode still wins, as for any agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingMode>,
    /// The environment's tools the role may use; none = all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_turn: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_context_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_secs: Option<f64>,
    /// Most sub-agents one episode of this role may start.
    #[serde(default = "default_max_children")]
    pub max_children: u32,
    /// Roles this role may delegate to.
    #[serde(default)]
    pub may_call: Vec<String>,
    /// Roles this role may hand the task over to (the `handoff` tool): the receiving role
    /// finishes the episode, its answer is the episode's.
    #[serde(default)]
    pub handoff_to: Vec<String>,
    /// What of this role's conversation the receiving role of a handoff sees.
    #[serde(default)]
    pub handoff_history: HistoryFilter,
}

/// The history a handoff passes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryFilter {
    /// Only the task (the first user message).
    Task,
    /// User and assistant text, without tool calls and tool results.
    #[default]
    Conversation,
    /// Everything, tool calls and results included, as text.
    Full,
}

impl RoleSpec {
    /// `config` with the role's limits.
    pub fn apply(&self, config: &mut AgentConfig) {
        if let Some(t) = self.max_turns {
            config.max_turns = t;
        }
        if let Some(t) = self.max_tokens_per_turn {
            config.max_tokens_per_turn = t;
        }
        if let Some(t) = self.max_context_tokens {
            config.max_context_tokens = t;
        }
        if let Some(t) = self.time_limit_secs {
            config.time_limit_secs = t;
        }
        if let Some(mode) = &self.thinking {
            config.thinking = mode.clone();
        }
    }
}

impl TeamConfig {
    /// Parses and checks a team file's text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, TeamError> {
        let config: TeamConfig = toml::from_str(text).map_err(|e| TeamError::Parse {
            path: path.into(),
            detail: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, TeamError> {
        let text = std::fs::read_to_string(path).map_err(|e| TeamError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The entry role and every `may_call` name a role; names are usable as tool arguments.
    pub fn check(&self) -> Result<(), TeamError> {
        let known = || self.roles.keys().cloned().collect::<Vec<_>>().join(", ");
        if !self.roles.contains_key(&self.team.entry) {
            return Err(TeamError::Invalid(format!(
                "the entry role \"{}\" is not defined; define [roles.{}] or set team.entry to one of: {}",
                self.team.entry,
                self.team.entry,
                known()
            )));
        }
        for (name, role) in &self.roles {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(TeamError::Invalid(format!(
                    "role name \"{name}\" must be letters, digits, '_' or '-'"
                )));
            }
            for callee in role.may_call.iter().chain(&role.handoff_to) {
                if !self.roles.contains_key(callee) {
                    return Err(TeamError::Invalid(format!(
                        "role {name} may_call or handoff_to \"{callee}\", which is not defined; known roles: {}",
                        known()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&RoleSpec> {
        self.roles.get(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_roles_and_refuses_unknown_names() {
        let t = TeamConfig::from_toml(
            r#"
[team]
entry = "lead"
[roles.lead]
system = "You lead."
may_call = ["worker"]
max_children = 3
[roles.worker]
system = "You work."
tools = ["search"]
max_turns = 4
thinking = "budget:64"
"#,
            "team.toml",
        )
        .unwrap();
        assert_eq!(t.team.max_depth, 1);
        assert_eq!(t.roles["lead"].max_children, 3);
        let mut c = AgentConfig::default();
        t.roles["worker"].apply(&mut c);
        assert_eq!(c.max_turns, 4);
        assert_eq!(c.thinking, "budget:64".parse::<ThinkingMode>().unwrap());

        let e = TeamConfig::from_toml("[team]\nentry = \"x\"\n[roles.y]\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"x\"") && e.contains("y"), "{e}");
        let e = TeamConfig::from_toml(
            "[team]\nentry = \"y\"\n[roles.y]\nmay_call = [\"z\"]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"z\""), "{e}");
        let e = TeamConfig::from_toml("[team]\nentry = \"y\"\n[roles.y]\nsytem = 1\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml") && e.contains("sytem"), "{e}");
    }
}

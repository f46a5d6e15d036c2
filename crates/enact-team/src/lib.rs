//! Teams of agents (`docs/multi-agent.md`).
//!
//! A [`TeamConfig`] (TOML) names roles: a system prompt, a model, tools, limits and which
//! roles each may call. [`TeamEnv`] wraps the task's environment for one agent of the team:
//! it shows that role's system prompt and tools and adds the `delegate` tool, whose calls start
//! child agents in fresh contexts (only the role's system prompt and the text the parent
//! wrote) and answer with the child's final answer and a one-line status. The calls of one
//! reply run concurrently; dropping the parent's step drops them all. Each child's episode is
//! handed to the parent's agent ([`enact_core::Environment::take_children`]) and becomes a
//! [`enact_core::ChildEpisode`] of the parent's episode.
//!
//! A handoff (the `handoff` tool, for roles with `handoff_to`) passes control instead: the
//! receiving role starts from the history the sending role's `handoff_history` lets through
//! plus its note, the sender's episode ends, and the receiver's answer is the submission.

mod config;
mod env;

pub use config::{HistoryFilter, RoleSpec, TeamConfig, TeamError, TeamSection};
pub use env::{
    ChildEnvs, DELEGATE_TOOL, HANDOFF_TOOL, RoleAgents, TeamEnv, TeamRuntime, render_history,
};

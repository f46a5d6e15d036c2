//! `--team FILE`: a team of agents plays each episode (`docs/multi-agent.md`). The entry role
//! plays the task; the `delegate` tool starts other roles in fresh environments of the same
//! suite. Each role's `model` is resolved like `--model` (none = the run's model), once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use enact_agent::{Agent, AgentConfig};
use enact_core::{Environment, Task, Verifier};
use enact_env::Suite;
use enact_team::{ChildEnvs, RoleAgents, RoleSpec, TeamConfig, TeamEnv, TeamRuntime};

use crate::model::{AgentFactory, ModelArgs, PolicyWrapper};

/// A loaded team: its configuration and the agent factory of every role with its own model.
#[derive(Clone)]
pub struct Team {
    pub config: TeamConfig,
    /// Roles with a `model` of their own → its factory.
    models: BTreeMap<String, AgentFactory>,
}

impl Team {
    pub fn load(path: &Path, model: &ModelArgs, config: &AgentConfig) -> Result<Team> {
        let team = TeamConfig::load(path)?;
        let mut models = BTreeMap::new();
        for (name, role) in &team.roles {
            if let Some(m) = &role.model {
                let args = ModelArgs {
                    model: m.clone(),
                    ..model.clone()
                };
                let factory = AgentFactory::new(&args, config).with_context(|| {
                    format!(
                        "cannot load model {m} of role {name} (team file {})",
                        path.display()
                    )
                })?;
                models.insert(name.clone(), factory);
            }
        }
        Ok(Team {
            config: team,
            models,
        })
    }

    /// Every role's policies wrapped by `wrap` too.
    pub fn wrapping_policies(mut self, wrap: &PolicyWrapper) -> Self {
        for f in self.models.values_mut() {
            *f = f.clone().wrapping_policies(wrap.clone());
        }
        self
    }

    /// The task as the entry role sees it: its role and the roles it may call in the
    /// metadata (a scripted model's reference solution reads them).
    pub fn entry_task(&self, task: &Task) -> Task {
        let mut task = task.clone();
        let entry = &self.config.team.entry;
        task.metadata.insert("role".into(), entry.clone().into());
        if let Some(role) = self.config.role(entry) {
            task.metadata
                .insert("may_call".into(), serde_json::json!(role.may_call));
        }
        task
    }

    /// The agent playing `role`: its own model's, or the run's; its limits applied.
    pub fn agent(
        &self,
        run: &AgentFactory,
        role: &str,
        spec: &RoleSpec,
        suite: &dyn Suite,
        task: &Task,
    ) -> Result<Agent> {
        let factory = self.models.get(role).unwrap_or(run);
        let mut agent = factory.agent_for(suite, task)?;
        spec.apply(&mut agent.config);
        Ok(agent)
    }

    /// The entry role's agent and environment for one episode of `task`.
    pub fn entry_parts(
        &self,
        run: &AgentFactory,
        suite: &Arc<dyn Suite>,
        task: &Task,
    ) -> Result<(Agent, Box<dyn Environment>)> {
        let task = self.entry_task(task);
        let entry = &self.config.team.entry;
        let spec = self
            .config
            .role(entry)
            .with_context(|| format!("the team has no entry role {entry}"))?;
        let agent = self.agent(run, entry, spec, suite.as_ref(), &task)?;
        let inner = suite.make(&task).with_context(|| {
            format!(
                "cannot create environment {} for task {}",
                suite.name(),
                task.id
            )
        })?;
        let env = TeamEnv::entry(inner, self.runtime(run, suite.clone()));
        Ok((agent, Box::new(env)))
    }

    /// What the agents of one episode share.
    pub fn runtime(&self, run: &AgentFactory, suite: Arc<dyn Suite>) -> Arc<TeamRuntime> {
        Arc::new(TeamRuntime {
            config: self.config.clone(),
            agents: Arc::new(Roles {
                team: self.clone(),
                run: run.clone(),
                suite: suite.clone(),
            }),
            envs: Arc::new(SuiteEnvs(suite)),
        })
    }
}

struct Roles {
    team: Team,
    run: AgentFactory,
    suite: Arc<dyn Suite>,
}

impl RoleAgents for Roles {
    fn agent(&self, role: &str, spec: &RoleSpec, task: &Task) -> Result<Agent, String> {
        self.team
            .agent(&self.run, role, spec, self.suite.as_ref(), task)
            .map_err(|e| format!("{e:#}"))
    }
}

/// Children act in fresh environments of the episode's suite.
struct SuiteEnvs(Arc<dyn Suite>);

impl ChildEnvs for SuiteEnvs {
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, String> {
        self.0.make(task).map_err(|e| e.to_string())
    }
    fn subtask_verifier(&self) -> Option<Arc<dyn Verifier>> {
        self.0.subtask_verifier()
    }
}

//! [`TeamEnv`]: one agent's view of the team — its role's prompt and tools, and `delegate`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use async_trait::async_trait;
use enact_agent::Agent;
use enact_core::{
    Action, ChildEpisode, EnvError, Environment, Episode, Message, Reset, Role, StepOutcome,
    Submission, Task, Termination, ToolCall, ToolResult, ToolSpec, Verifier,
};
use serde_json::json;

use crate::config::{RoleSpec, TeamConfig};

/// The name of the tool that starts a sub-agent.
pub const DELEGATE_TOOL: &str = "delegate";

/// Builds the agent that plays a role (the CLI resolves the role's model; tests script it).
pub trait RoleAgents: Send + Sync {
    /// The agent for `role` on `task` (a child's task: its prompt is the text its parent
    /// wrote). The team applies the role's limits to the agent's configuration afterwards.
    fn agent(&self, role: &str, spec: &RoleSpec, task: &Task) -> Result<Agent, String>;
}

/// The environments children act in: a fresh one per child, of the same kind as the
/// parent's, and the verifier of a child's sub-task when it has one.
pub trait ChildEnvs: Send + Sync {
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, String>;
    /// Grades a child's episode on its own sub-task (per-agent credit); `None` = ungraded.
    fn subtask_verifier(&self) -> Option<Arc<dyn Verifier>> {
        None
    }
}

/// What every agent of a team shares.
pub struct TeamRuntime {
    pub config: TeamConfig,
    pub agents: Arc<dyn RoleAgents>,
    pub envs: Arc<dyn ChildEnvs>,
}

/// A child's result as the parent reads it, and its episode.
type ChildRun = Pin<Box<dyn Future<Output = (ToolResult, Option<ChildEpisode>)> + Send>>;

/// One agent's environment in a team: `inner` (the task's environment) seen through the
/// role's system prompt and tools, plus `delegate`.
pub struct TeamEnv {
    inner: Box<dyn Environment>,
    team: Arc<TeamRuntime>,
    role: String,
    /// 0 for the entry role; a child is one deeper than its parent.
    depth: u32,
    task: Option<Task>,
    /// Tools of `inner` this role may use (`None`: all).
    allowed: Option<Vec<String>>,
    started_children: u32,
    finished: Vec<ChildEpisode>,
}

impl TeamEnv {
    /// The entry role's environment for an episode.
    pub fn entry(inner: Box<dyn Environment>, team: Arc<TeamRuntime>) -> Self {
        let role = team.config.team.entry.clone();
        Self::for_role(inner, team, role, 0)
    }

    fn for_role(
        inner: Box<dyn Environment>,
        team: Arc<TeamRuntime>,
        role: String,
        depth: u32,
    ) -> Self {
        TeamEnv {
            inner,
            team,
            role,
            depth,
            task: None,
            allowed: None,
            started_children: 0,
            finished: Vec::new(),
        }
    }

    fn spec(&self) -> Option<&RoleSpec> {
        self.team.config.role(&self.role)
    }

    /// Whether this agent may delegate at all.
    fn can_delegate(&self) -> bool {
        self.spec().is_some_and(|s| !s.may_call.is_empty())
            && self.depth < self.team.config.team.max_depth
    }

    fn delegate_spec(&self) -> ToolSpec {
        let callees = self.spec().map(|s| s.may_call.clone()).unwrap_or_default();
        let described: Vec<String> = callees
            .iter()
            .map(|c| match self.team.config.role(c) {
                Some(r) if !r.description.is_empty() => format!("{c} ({})", r.description),
                _ => c.clone(),
            })
            .collect();
        ToolSpec {
            name: DELEGATE_TOOL.into(),
            description: format!(
                "Give one self-contained sub-task to a helper agent, which starts with a fresh context holding only the text you write. Returns its final answer. Several calls in one reply run at the same time. Roles: {}.",
                described.join("; ")
            ),
            parameters: json!({"type": "object", "properties": {
                "role": {"type": "string", "enum": callees, "description": "which helper"},
                "task": {"type": "string", "minLength": 1, "maxLength": 4000, "description": "everything the helper needs to know"}
            }, "required": ["role", "task"], "additionalProperties": false}),
        }
    }

    fn refuse(call: &ToolCall, why: String) -> ToolResult {
        ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: format!("error: {why}"),
            is_error: true,
        }
    }

    /// Checks a `delegate` call and returns the child's run, or the refusal.
    fn delegate(&mut self, call: &ToolCall) -> Result<ChildRun, ToolResult> {
        let role = call.arguments["role"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let text = call.arguments["task"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(spec) = self.spec().cloned() else {
            return Err(Self::refuse(
                call,
                format!("role {} is not defined", self.role),
            ));
        };
        if !self.can_delegate() {
            return Err(Self::refuse(
                call,
                format!(
                    "role {} may not delegate at depth {} (team max_depth {}); do the work yourself",
                    self.role, self.depth, self.team.config.team.max_depth
                ),
            ));
        }
        if !spec.may_call.contains(&role) {
            return Err(Self::refuse(
                call,
                format!(
                    "role \"{role}\" is not one you may call; use one of: {}",
                    spec.may_call.join(", ")
                ),
            ));
        }
        if text.trim().is_empty() {
            return Err(Self::refuse(
                call,
                "the task text is empty; write the sub-task in \"task\"".into(),
            ));
        }
        if self.started_children >= spec.max_children {
            return Err(Self::refuse(
                call,
                format!(
                    "the limit of {} helper calls for role {} is used up; finish with what you have",
                    spec.max_children, self.role
                ),
            ));
        }
        let Some(child_spec) = self.team.config.role(&role).cloned() else {
            return Err(Self::refuse(
                call,
                format!("role \"{role}\" is not defined"),
            ));
        };
        let Some(parent) = self.task.clone() else {
            return Err(Self::refuse(
                call,
                "the environment has not been reset".into(),
            ));
        };
        self.started_children += 1;
        let mut metadata = serde_json::Map::new();
        metadata.insert("role".into(), role.clone().into());
        metadata.insert("parent_task".into(), parent.id.clone().into());
        let task = Task {
            id: format!("{}/{}", parent.id, call.id),
            prompt: text,
            env: parent.env.clone(),
            hidden: parent.hidden.clone(),
            split: parent.split.clone(),
            metadata,
            // The child's mode is its role's (applied to its agent), not the parent task's.
            thinking: None,
        };
        Ok(Box::pin(run_child(
            self.team.clone(),
            role,
            child_spec,
            task,
            call.clone(),
            self.depth + 1,
        )))
    }
}

/// Runs one child to its end; its final answer and status become the parent's tool result.
async fn run_child(
    team: Arc<TeamRuntime>,
    role: String,
    spec: RoleSpec,
    task: Task,
    call: ToolCall,
    depth: u32,
) -> (ToolResult, Option<ChildEpisode>) {
    let mut agent = match team.agents.agent(&role, &spec, &task) {
        Ok(a) => a,
        Err(e) => {
            return (
                TeamEnv::refuse(&call, format!("cannot start role {role}: {e}")),
                None,
            );
        }
    };
    spec.apply(&mut agent.config);
    let inner = match team.envs.make(&task) {
        Ok(env) => env,
        Err(e) => {
            return (
                TeamEnv::refuse(
                    &call,
                    format!("cannot make the environment of role {role}: {e}"),
                ),
                None,
            );
        }
    };
    let verifier = team.envs.subtask_verifier();
    let mut env = TeamEnv::for_role(inner, team.clone(), role.clone(), depth);
    let episode = agent.run(&task, &mut env, verifier.as_deref()).await;
    let result = ToolResult {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content: child_report(&episode),
        is_error: !finished(&episode),
    };
    let child = ChildEpisode {
        role,
        call_id: call.id,
        parent_turn: 0,
        parent_segment: None,
        episode,
    };
    (result, Some(child))
}

fn finished(ep: &Episode) -> bool {
    ep.outcome.termination == Termination::Finished && ep.outcome.final_answer.is_some()
}

/// What the parent reads: a status line (ok / failed / limit, turns) and the final answer.
fn child_report(ep: &Episode) -> String {
    let o = &ep.outcome;
    let status = match &o.termination {
        Termination::Finished if o.final_answer.is_some() => "ok".to_string(),
        Termination::Finished => "failed: no answer".to_string(),
        Termination::TurnLimit => "limit: turns".to_string(),
        Termination::TokenLimit => "limit: tokens".to_string(),
        Termination::TimeLimit => "limit: time".to_string(),
        Termination::EmptyReply => "failed: empty reply".to_string(),
        Termination::Error(e) => format!("failed: {e}"),
    };
    let answer = o.final_answer.as_deref().unwrap_or("(none)");
    format!("status: {status} · {} turns\nanswer: {answer}", o.turns)
}

/// Polls every future to its end, concurrently, in this task; results in order. Dropping the
/// returned future drops the ones still running (cancellation).
async fn join_all<T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send>>>) -> Vec<T> {
    let mut pending: Vec<Option<Pin<Box<dyn Future<Output = T> + Send>>>> =
        futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut all = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => all = false,
                }
            }
        }
        if all {
            Poll::Ready(done.iter_mut().filter_map(Option::take).collect())
        } else {
            Poll::Pending
        }
    })
    .await
}

#[async_trait]
impl Environment for TeamEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        let mut reset = self.inner.reset(task).await?;
        self.task = Some(task.clone());
        self.started_children = 0;
        self.finished.clear();
        let spec = self.spec().cloned().ok_or_else(|| {
            EnvError::Setup(format!("role {} is not defined in the team", self.role))
        })?;
        if !spec.system.is_empty() {
            match reset.messages.iter_mut().find(|m| m.role == Role::System) {
                Some(m) => m.content = spec.system.clone(),
                None => reset
                    .messages
                    .insert(0, Message::system(spec.system.clone())),
            }
        }
        if let Some(tools) = &spec.tools {
            reset.tools.retain(|t| tools.contains(&t.name));
        }
        self.allowed = spec.tools.clone();
        if self.can_delegate() {
            reset.tools.push(self.delegate_spec());
        }
        Ok(reset)
    }

    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        let mut out = self.step_all(vec![action]).await;
        out.pop()
            .unwrap_or_else(|| Err(EnvError::Step("no outcome for the action".into())))
    }

    /// Delegate calls run concurrently (after the reply's other calls, which go to the
    /// wrapped environment in order); results come back in the calls' order.
    async fn step_all(&mut self, actions: Vec<Action>) -> Vec<Result<StepOutcome, EnvError>> {
        let mut out: Vec<Option<Result<StepOutcome, EnvError>>> = Vec::new();
        let mut children: Vec<(usize, ChildRun)> = Vec::new();
        for action in actions {
            let slot = out.len();
            match action {
                Action::ToolCall(call) if call.name == DELEGATE_TOOL && self.can_delegate() => {
                    match self.delegate(&call) {
                        Ok(run) => {
                            children.push((slot, run));
                            out.push(None);
                        }
                        Err(refused) => out.push(Some(Ok(StepOutcome::ToolResult(refused)))),
                    }
                }
                Action::ToolCall(call)
                    if call.name == DELEGATE_TOOL
                        || self
                            .allowed
                            .as_ref()
                            .is_some_and(|a| !a.contains(&call.name)) =>
                {
                    let why = format!(
                        "tool {} is not available to role {}; use the tools listed for you",
                        call.name, self.role
                    );
                    out.push(Some(Ok(StepOutcome::ToolResult(Self::refuse(&call, why)))));
                }
                action => {
                    let r = self.inner.step(action).await;
                    let failed = r.is_err();
                    out.push(Some(r));
                    if failed {
                        // The environment broke: the episode ends; no child starts.
                        return out.into_iter().flatten().collect();
                    }
                }
            }
        }
        let (slots, runs): (Vec<usize>, Vec<ChildRun>) = children.into_iter().unzip();
        for (slot, (result, child)) in slots.into_iter().zip(join_all(runs).await) {
            out[slot] = Some(Ok(StepOutcome::ToolResult(result)));
            if let Some(child) = child {
                self.finished.push(child);
            }
        }
        out.into_iter().flatten().collect()
    }

    async fn submission(&mut self) -> Result<Submission, EnvError> {
        self.inner.submission().await
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        self.inner.close().await
    }

    fn take_children(&mut self) -> Vec<ChildEpisode> {
        std::mem::take(&mut self.finished)
    }
}

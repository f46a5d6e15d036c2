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

use crate::config::{HistoryFilter, RoleSpec, TeamConfig};

/// The name of the tool that starts a sub-agent.
pub const DELEGATE_TOOL: &str = "delegate";
/// The name of the tool that hands the task over to another role.
pub const HANDOFF_TOOL: &str = "handoff";

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
    /// What this agent's conversation was, for a handoff's history.
    history: Vec<Message>,
    /// Handoffs before this agent in the episode.
    handoffs: u32,
    /// The answer of the role this agent handed over to: the episode's submission.
    handed_over: Option<String>,
}

/// The conversation as text for a handoff's receiver, filtered.
pub fn render_history(history: &[Message], filter: HistoryFilter) -> String {
    let mut lines = Vec::new();
    for m in history {
        match (m.role, filter) {
            (Role::System, _) => {}
            (Role::User, HistoryFilter::Task) => {
                lines.push(format!("user: {}", m.content));
                break;
            }
            (_, HistoryFilter::Task) => {}
            (Role::User, _) => lines.push(format!("user: {}", m.content)),
            (Role::Assistant, f) => {
                if !m.content.trim().is_empty() {
                    lines.push(format!("assistant: {}", m.content));
                }
                if f == HistoryFilter::Full {
                    for c in &m.tool_calls {
                        lines.push(format!("assistant called {}({})", c.name, c.arguments));
                    }
                }
            }
            (Role::Tool, HistoryFilter::Full) => {
                let name = m.name.as_deref().unwrap_or("tool");
                lines.push(format!("tool {name}: {}", m.content));
            }
            (Role::Tool, _) => {}
        }
    }
    lines.join("\n")
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
            history: Vec::new(),
            handoffs: 0,
            handed_over: None,
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

    fn can_hand_off(&self) -> bool {
        self.spec().is_some_and(|s| !s.handoff_to.is_empty())
            && self.handoffs < self.team.config.team.max_handoffs
    }

    fn handoff_spec(&self) -> ToolSpec {
        let to = self
            .spec()
            .map(|s| s.handoff_to.clone())
            .unwrap_or_default();
        ToolSpec {
            name: HANDOFF_TOOL.into(),
            description: format!(
                "Hand the whole task over to another agent, which continues from this conversation and gives the final answer; you stop here. Roles: {}.",
                to.join(", ")
            ),
            parameters: json!({"type": "object", "properties": {
                "role": {"type": "string", "enum": to, "description": "who takes over"},
                "note": {"type": "string", "maxLength": 4000, "description": "what the next agent should know or do"}
            }, "required": ["role"], "additionalProperties": false}),
        }
    }

    /// Checks a `handoff` call and returns the receiver's run, or the refusal.
    fn hand_off(&mut self, call: &ToolCall) -> Result<ChildRun, ToolResult> {
        let (role, note) = (str_arg(call, "role"), str_arg(call, "note"));
        let spec = self.own_spec(call)?;
        if !spec.handoff_to.contains(&role) {
            return Err(Self::refuse(
                call,
                format!(
                    "role \"{role}\" is not one you may hand off to; use one of: {}",
                    spec.handoff_to.join(", ")
                ),
            ));
        }
        let (Some(receiver), Some(parent)) =
            (self.team.config.role(&role).cloned(), self.task.clone())
        else {
            return Err(Self::refuse(
                call,
                format!("role \"{role}\" cannot take over"),
            ));
        };
        let mut prompt = format!(
            "You take over this task from another agent ({}). The conversation so far:\n{}",
            self.role,
            render_history(&self.history, spec.handoff_history)
        );
        if !note.trim().is_empty() {
            prompt.push_str(&format!("\n\nTheir note: {note}"));
        }
        let mut metadata = serde_json::Map::new();
        metadata.insert("role".into(), role.clone().into());
        metadata.insert("parent_task".into(), parent.id.clone().into());
        metadata.insert("handoff".into(), true.into());
        let task = Task {
            id: format!("{}/{}", parent.id, call.id),
            prompt,
            env: parent.env.clone(),
            hidden: parent.hidden.clone(),
            split: parent.split.clone(),
            metadata,
            thinking: None,
        };
        Ok(Box::pin(run_child(
            self.team.clone(),
            role,
            receiver,
            task,
            call.clone(),
            Placement {
                depth: self.depth,
                handoffs: self.handoffs + 1,
            },
        )))
    }

    /// This agent's role, or the refusal of `call` when the team does not define it.
    fn own_spec(&self, call: &ToolCall) -> Result<RoleSpec, ToolResult> {
        self.spec()
            .cloned()
            .ok_or_else(|| Self::refuse(call, format!("role {} is not defined", self.role)))
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
        let (role, text) = (str_arg(call, "role"), str_arg(call, "task"));
        let spec = self.own_spec(call)?;
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
            Placement {
                depth: self.depth + 1,
                handoffs: self.handoffs,
            },
        )))
    }
}

/// Where a child sits: its depth of delegation and the handoffs before it.
#[derive(Clone, Copy)]
struct Placement {
    depth: u32,
    handoffs: u32,
}

/// Runs one child to its end; its final answer and status become the parent's tool result.
async fn run_child(
    team: Arc<TeamRuntime>,
    role: String,
    spec: RoleSpec,
    task: Task,
    call: ToolCall,
    at: Placement,
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
    tracing::debug!(role, call = %call.id, depth = at.depth, task = %task.id, "sub-agent starts");
    let mut env = TeamEnv::for_role(inner, team.clone(), role.clone(), at.depth);
    env.handoffs = at.handoffs;
    let episode = agent.run(&task, &mut env, verifier.as_deref()).await;
    tracing::debug!(
        role,
        call = %call.id,
        termination = ?episode.outcome.termination,
        turns = episode.outcome.turns,
        "sub-agent ended"
    );
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
        if self.can_hand_off() {
            reset.tools.push(self.handoff_spec());
        }
        self.handed_over = None;
        self.history = reset.messages.clone();
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
        let mut handoff: Option<(usize, ChildRun)> = None;
        let calls: Vec<ToolCall> = actions
            .iter()
            .filter_map(|a| match a {
                Action::ToolCall(c) => Some(c.clone()),
                Action::Message { .. } => None,
            })
            .collect();
        if !calls.is_empty() {
            let mut m = Message::assistant("");
            m.tool_calls = calls;
            self.history.push(m);
        }
        for action in actions {
            let slot = out.len();
            match action {
                Action::Message { content } => {
                    self.history.push(Message::assistant(content.clone()));
                    let r = self.inner.step(Action::Message { content }).await;
                    let failed = r.is_err();
                    out.push(Some(r));
                    if failed {
                        return out.into_iter().flatten().collect();
                    }
                }
                Action::ToolCall(call)
                    if call.name == HANDOFF_TOOL && self.can_hand_off() && handoff.is_none() =>
                {
                    match self.hand_off(&call) {
                        Ok(run) => {
                            handoff = Some((slot, run));
                            out.push(None);
                        }
                        Err(refused) => out.push(Some(Ok(StepOutcome::ToolResult(refused)))),
                    }
                }
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
                        || call.name == HANDOFF_TOOL
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
                Action::ToolCall(call) => {
                    let r = self.inner.step(Action::ToolCall(call)).await;
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
        // The handoff last: the receiver sees the results of this reply's other calls.
        if let Some((slot, run)) = handoff {
            for r in out.iter().flatten() {
                if let Ok(StepOutcome::ToolResult(t)) = r {
                    self.history.push(Message::tool(
                        t.call_id.clone(),
                        t.name.clone(),
                        t.content.clone(),
                    ));
                }
            }
            let (result, child) = run.await;
            match child {
                Some(child) => {
                    // Control has passed: the receiver's answer is the episode's.
                    self.handed_over = Some(
                        child
                            .episode
                            .outcome
                            .final_answer
                            .clone()
                            .unwrap_or_default(),
                    );
                    self.finished.push(child);
                    out[slot] = Some(Ok(StepOutcome::Done));
                }
                None => out[slot] = Some(Ok(StepOutcome::ToolResult(result))),
            }
            return out.into_iter().flatten().collect();
        }
        for r in out.iter().flatten() {
            if let Ok(StepOutcome::ToolResult(t)) = r {
                self.history.push(Message::tool(
                    t.call_id.clone(),
                    t.name.clone(),
                    t.content.clone(),
                ));
            }
        }
        out.into_iter().flatten().collect()
    }

    async fn submission(&mut self) -> Result<Submission, EnvError> {
        let mut sub = self.inner.submission().await?;
        if let Some(answer) = &self.handed_over {
            sub.final_answer = Some(answer.clone());
        }
        Ok(sub)
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        self.inner.close().await
    }

    fn take_children(&mut self) -> Vec<ChildEpisode> {
        std::mem::take(&mut self.finished)
    }
}

/// A string argument of a call ("" when absent or not a string: the checks that follow say
/// what is wrong).
fn str_arg(call: &ToolCall, key: &str) -> String {
    call.arguments[key].as_str().unwrap_or_default().to_string()
}

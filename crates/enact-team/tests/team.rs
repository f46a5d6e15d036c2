//! Teams with scripted policies: isolation of a child's context, limits and depth, children
//! running concurrently and cancelled with their parent, the tree through JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use enact_agent::{Agent, AgentConfig};
use enact_core::{
    Action, EnvError, Environment, Episode, Message, Reset, SegmentKind, StepOutcome, Submission,
    Task, Termination, Tokenizer, ToolResult, ToolSpec,
};
use enact_model::chatml::{hermes_call_turn, hermes_tool_call};
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, ScriptedPolicy};
use enact_team::{ChildEnvs, RoleAgents, RoleSpec, TeamConfig, TeamEnv, TeamRuntime};
use serde_json::json;

/// What the test tools saw, in order.
type Log = Arc<Mutex<Vec<String>>>;

fn log(l: &Log, s: String) {
    l.lock().unwrap().push(s);
}

/// Logs `dropped LABEL` unless disarmed: a future dropped mid-wait leaves this trace.
struct DropGuard(Log, String, bool);
impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.2 {
            log(&self.0, format!("dropped {}", self.1));
        }
    }
}

/// An environment with one tool, `wait(label, ms)`, that logs its start and end.
struct WaitEnv(Log);

#[async_trait]
impl Environment for WaitEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        Ok(Reset {
            messages: vec![
                Message::system("ENV-SYSTEM-PROMPT"),
                Message::user(task.prompt.clone()),
            ],
            tools: vec![ToolSpec {
                name: "wait".into(),
                description: "waits".into(),
                parameters: json!({"type": "object"}),
            }],
        })
    }
    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        match action {
            Action::ToolCall(call) => {
                let label = call.arguments["label"].as_str().unwrap_or("?").to_string();
                let ms = call.arguments["ms"].as_u64().unwrap_or(0);
                log(&self.0, format!("start {label}"));
                let mut guard = DropGuard(self.0.clone(), label.clone(), false);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                guard.2 = true;
                log(&self.0, format!("end {label}"));
                Ok(StepOutcome::ToolResult(ToolResult {
                    call_id: call.id,
                    name: call.name,
                    content: format!("waited {label}"),
                    is_error: false,
                }))
            }
            Action::Message { .. } => Ok(StepOutcome::Done),
        }
    }
    async fn submission(&mut self) -> Result<Submission, EnvError> {
        Ok(Submission::default())
    }
    async fn close(&mut self) -> Result<(), EnvError> {
        Ok(())
    }
}

fn tokenizer() -> Arc<dyn Tokenizer> {
    Arc::new(ByteTokenizer::new())
}

fn agent(turns: Vec<String>, config: AgentConfig) -> Agent {
    Agent::new(
        Arc::new(ScriptedPolicy::new(turns, tokenizer())),
        tokenizer(),
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    )
    .with_config(config)
}

/// Each child's script is chosen by the first word of the text its parent wrote.
struct Scripts(HashMap<String, Vec<String>>);

impl RoleAgents for Scripts {
    fn agent(&self, _role: &str, _spec: &RoleSpec, task: &Task) -> Result<Agent, String> {
        let key = task
            .prompt
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or_default();
        let turns = self
            .0
            .get(key)
            .cloned()
            .ok_or(format!("no script for {key}"))?;
        Ok(agent(turns, AgentConfig::default()))
    }
}

struct Waits(Log);
impl ChildEnvs for Waits {
    fn make(&self, _task: &Task) -> Result<Box<dyn Environment>, String> {
        Ok(Box::new(WaitEnv(self.0.clone())))
    }
}

const TEAM: &str = r#"
[team]
entry = "lead"
max_depth = 1
[roles.lead]
system = "LEAD-SYSTEM-PROMPT"
may_call = ["worker"]
max_children = 2
[roles.worker]
description = "does one job"
system = "WORKER-SYSTEM-PROMPT"
may_call = ["worker"]
"#;

fn team(scripts: &[(&str, Vec<String>)], log: &Log) -> Arc<TeamRuntime> {
    Arc::new(TeamRuntime {
        config: TeamConfig::from_toml(TEAM, "team.toml").unwrap(),
        agents: Arc::new(Scripts(
            scripts
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )),
        envs: Arc::new(Waits(log.clone())),
    })
}

fn delegate(task: &str) -> String {
    hermes_tool_call("delegate", &json!({"role": "worker", "task": task}))
}

fn wait(label: &str, ms: u64) -> String {
    hermes_call_turn("", "wait", &json!({"label": label, "ms": ms}))
}

fn task(prompt: &str) -> Task {
    Task {
        id: "t1".into(),
        prompt: prompt.into(),
        env: json!({}),
        hidden: None,
        split: None,
        metadata: Default::default(),
        thinking: None,
    }
}

async fn run_lead(
    lead: Vec<String>,
    team: Arc<TeamRuntime>,
    config: AgentConfig,
    log: &Log,
) -> Episode {
    let mut env = TeamEnv::entry(Box::new(WaitEnv(log.clone())), team);
    agent(lead, config)
        .run(&task("PARENT-SECRET-TASK split this"), &mut env, None)
        .await
}

fn decoded(ep: &Episode) -> String {
    let leaf = ep.trajectory.main_leaf().unwrap();
    ByteTokenizer::new()
        .decode(&ep.trajectory.tokens(leaf).unwrap())
        .unwrap()
}

#[tokio::test]
async fn a_child_sees_only_its_task_and_the_parent_only_its_result() {
    let log = Log::default();
    let team = team(&[("alpha", vec!["CHILD-ANSWER-42".into()])], &log);
    let ep = run_lead(
        vec![
            delegate("alpha: name a fruit"),
            "done: CHILD-ANSWER-42".into(),
        ],
        team,
        AgentConfig::default(),
        &log,
    )
    .await;
    assert_eq!(
        ep.outcome.termination,
        Termination::Finished,
        "{:?}",
        ep.outcome
    );
    assert_eq!(ep.children.len(), 1);
    let child = &ep.children[0];
    assert_eq!(child.role, "worker");
    assert_eq!(child.parent_turn, 1);
    let seg = ep
        .trajectory
        .segment(child.parent_segment.unwrap())
        .unwrap();
    assert_eq!(seg.kind, SegmentKind::Sampled);
    assert_eq!(seg.turn, 1);

    let child_text = decoded(&child.episode);
    assert!(
        child_text.contains("WORKER-SYSTEM-PROMPT") && child_text.contains("alpha: name a fruit")
    );
    for parent_only in [
        "PARENT-SECRET-TASK",
        "LEAD-SYSTEM-PROMPT",
        "ENV-SYSTEM-PROMPT",
        "delegate",
    ] {
        assert!(
            !child_text.contains(parent_only),
            "{parent_only} leaked: {child_text}"
        );
    }
    // The parent's context: the child's answer and status, none of the child's context.
    let parent_text = decoded(&ep);
    assert!(
        parent_text.contains("status: ok · 1 turns\nanswer: CHILD-ANSWER-42"),
        "{parent_text}"
    );
    assert!(
        !parent_text.contains("WORKER-SYSTEM-PROMPT") && !parent_text.contains("ENV-SYSTEM-PROMPT")
    );
    // The entry role's own prompt replaced the environment's; the child's task is derived.
    assert!(parent_text.contains("LEAD-SYSTEM-PROMPT"));
    assert_eq!(child.episode.task.id, format!("t1/{}", child.call_id));
    assert_eq!(child.episode.task.metadata["role"], "worker");

    let totals = ep.tree_totals();
    assert_eq!(totals.agents, 2);
    assert_eq!(
        totals.tokens.sampled,
        ep.outcome.tokens.sampled + child.episode.outcome.tokens.sampled
    );
    assert!(totals.peak_context >= ep.outcome.tokens.context());
    let back = Episode::from_json(&ep.to_json().unwrap()).unwrap();
    assert_eq!(back, ep);
}

#[tokio::test]
async fn depth_roles_and_child_budget_are_enforced() {
    let log = Log::default();
    // The worker (depth 1 = max_depth) tries to delegate further; it has no such tool.
    let team = team(
        &[
            (
                "alpha",
                vec![delegate("gamma: deeper"), "alpha-done".into()],
            ),
            ("beta", vec!["beta-done".into()]),
            ("gamma", vec!["never".into()]),
        ],
        &log,
    );
    let three = [
        delegate("alpha: one"),
        delegate("beta: two"),
        delegate("alpha: three, over budget"),
        hermes_tool_call("delegate", &json!({"role": "boss", "task": "x"})),
    ]
    .join("\n");
    let ep = run_lead(
        vec![three, "fin".into()],
        team,
        AgentConfig::default(),
        &log,
    )
    .await;
    assert_eq!(ep.children.len(), 2, "max_children = 2");
    let obs: Vec<&Message> = ep
        .messages
        .iter()
        .filter(|m| m.role == enact_core::Role::Tool)
        .collect();
    assert_eq!(obs.len(), 4);
    assert!(
        obs[2].content.contains("limit of 2 helper calls"),
        "{}",
        obs[2].content
    );
    assert!(
        obs[3].content.contains("\"boss\" is not one you may call"),
        "{}",
        obs[3].content
    );
    assert_eq!(ep.outcome.tool_errors, 2);

    let alpha = &ep.children[0].episode;
    assert!(
        alpha.tools.iter().all(|t| t.name != "delegate"),
        "no delegate at max depth"
    );
    assert!(alpha.children.is_empty());
    let refused = alpha
        .messages
        .iter()
        .find(|m| m.role == enact_core::Role::Tool)
        .unwrap();
    assert!(
        refused.content.contains("not available to role worker"),
        "{}",
        refused.content
    );
    assert!(ep.tools.iter().any(|t| t.name == "delegate"));
}

#[tokio::test]
async fn children_of_one_reply_run_concurrently() {
    let log = Log::default();
    let team = team(
        &[
            ("a", vec![wait("a", 150), "a-done".into()]),
            ("b", vec![wait("b", 150), "b-done".into()]),
        ],
        &log,
    );
    let both = format!("{}\n{}", delegate("a job"), delegate("b job"));
    let ep = run_lead(vec![both, "fin".into()], team, AgentConfig::default(), &log).await;
    assert_eq!(ep.children.len(), 2);
    let events = log.lock().unwrap().clone();
    let at = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e} missing: {events:?}"))
    };
    // Each started before the other ended: their waits overlapped.
    assert!(
        at("start a") < at("end b") && at("start b") < at("end a"),
        "{events:?}"
    );
    assert_eq!(
        ep.children[0].episode.outcome.final_answer.as_deref(),
        Some("a-done")
    );
    assert_eq!(
        ep.children[1].episode.outcome.final_answer.as_deref(),
        Some("b-done")
    );
}

#[tokio::test]
async fn children_are_cancelled_when_the_parent_runs_out_of_time() {
    let log = Log::default();
    let team = team(
        &[
            ("a", vec![wait("a", 60_000), "a-done".into()]),
            ("b", vec![wait("b", 60_000), "b-done".into()]),
        ],
        &log,
    );
    let both = format!("{}\n{}", delegate("a job"), delegate("b job"));
    let config = AgentConfig {
        time_limit_secs: 0.3,
        ..AgentConfig::default()
    };
    let ep = run_lead(vec![both, "fin".into()], team, config, &log).await;
    assert_eq!(ep.outcome.termination, Termination::TimeLimit);
    let events = log.lock().unwrap().clone();
    for label in ["a", "b"] {
        assert!(events.contains(&format!("start {label}")), "{events:?}");
        assert!(events.contains(&format!("dropped {label}")), "{events:?}");
        assert!(!events.contains(&format!("end {label}")), "{events:?}");
    }
    assert!(
        ep.children.is_empty(),
        "cancelled children leave no episode"
    );
}

/// Grades the submission's final answer against the task's `want` (test verifier).
struct AnswerIs(&'static str);
#[async_trait]
impl enact_core::Verifier for AnswerIs {
    async fn verify(
        &self,
        _task: &Task,
        sub: &Submission,
    ) -> Result<enact_core::Verdict, enact_core::VerifyError> {
        Ok(enact_core::Verdict::from_checks(vec![
            enact_core::CheckResult::new(
                "answer",
                sub.final_answer.as_deref() == Some(self.0),
                format!("{:?}", sub.final_answer),
            ),
        ]))
    }
}

#[tokio::test]
async fn a_handoff_passes_control_with_the_filtered_history() {
    let log = Log::default();
    let config = TeamConfig::from_toml(
        r#"
[team]
entry = "lead"
[roles.lead]
system = "LEAD-SYSTEM-PROMPT"
handoff_to = ["closer"]
handoff_history = "conversation"
[roles.closer]
system = "CLOSER-SYSTEM-PROMPT"
"#,
        "team.toml",
    )
    .unwrap();
    let team = Arc::new(TeamRuntime {
        config,
        agents: Arc::new(Scripts(
            [("You".to_string(), vec!["FINAL-FROM-CLOSER".to_string()])].into(),
        )),
        envs: Arc::new(Waits(log.clone())),
    });
    let lead = vec![
        wait("x", 0),
        hermes_call_turn(
            "",
            "handoff",
            &json!({"role": "closer", "note": "NOTE-finish-up"}),
        ),
        "never reached".into(),
    ];
    let mut env = TeamEnv::entry(Box::new(WaitEnv(log.clone())), team);
    let ep = agent(lead, AgentConfig::default())
        .run(
            &task("PARENT-SECRET-TASK split this"),
            &mut env,
            Some(&AnswerIs("FINAL-FROM-CLOSER")),
        )
        .await;
    assert_eq!(
        ep.outcome.termination,
        Termination::Finished,
        "{:?}",
        ep.outcome
    );
    assert_eq!(ep.outcome.turns, 2, "the lead stops at the handoff");
    assert!(
        ep.outcome.success,
        "the closer's answer is the submission: {:?}",
        ep.verdict
    );
    assert_eq!(ep.children.len(), 1);
    let closer = &ep.children[0];
    assert_eq!((closer.role.as_str(), closer.parent_turn), ("closer", 2));
    assert_eq!(closer.episode.task.metadata["handoff"], true);
    let text = decoded(&closer.episode);
    // The conversation filter: the user's task and the note, no tool traffic, no prompts.
    assert!(
        text.contains("CLOSER-SYSTEM-PROMPT")
            && text.contains("user: PARENT-SECRET-TASK split this"),
        "{text}"
    );
    assert!(text.contains("NOTE-finish-up"), "{text}");
    assert!(
        !text.contains("waited x") && !text.contains("LEAD-SYSTEM-PROMPT"),
        "{text}"
    );
    assert!(ep.tools.iter().any(|t| t.name == "handoff"));
    assert!(closer.episode.tools.iter().all(|t| t.name != "handoff"));
}

#[test]
fn history_filters_keep_what_they_say() {
    use enact_core::{Message, ToolCall};
    use enact_team::{HistoryFilter, render_history};
    let mut call = Message::assistant("let me look");
    call.tool_calls = vec![ToolCall {
        id: "c1".into(),
        name: "search".into(),
        arguments: json!({"query": "q"}),
    }];
    let history = vec![
        Message::system("SYS"),
        Message::user("TASK"),
        call,
        Message::tool("c1", "search", "RESULT"),
        Message::user("MORE"),
    ];
    assert_eq!(render_history(&history, HistoryFilter::Task), "user: TASK");
    assert_eq!(
        render_history(&history, HistoryFilter::Conversation),
        "user: TASK\nassistant: let me look\nuser: MORE"
    );
    let full = render_history(&history, HistoryFilter::Full);
    assert!(
        full.contains("assistant called search({\"query\":\"q\"})")
            && full.contains("tool search: RESULT"),
        "{full}"
    );
    assert!(!full.contains("SYS"));
}

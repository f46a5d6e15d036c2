//! Constructed episodes for tests, the viewer's benchmark and the README's screenshots: a
//! calculator task whose first call may fail, be retried, end with a forced segment, carry a
//! monitor flag, per-turn records and a sub-agent child. Real runs come from `enact eval`;
//! these exist so that every rendering path can be exercised without a model.

use std::collections::BTreeMap;

use enact_core::{
    CheckResult, DecisionSignals, Episode, EpisodeError, EpisodeOutcome, Message, MonitorFlag,
    SegmentKind, Task, Termination, Timings, TokenCounts, ToolCall, Trajectory, TrajectoryError,
    TurnDecision, TurnRecord, Verdict,
};
use serde_json::{Value, json};

/// What the constructed episode contains.
#[derive(Debug, Clone, Default)]
pub struct Fixture {
    pub task_id: String,
    pub success: bool,
    /// The first calculator call fails.
    pub tool_error: bool,
    /// A second turn calls the calculator again, cleanly.
    pub retry: bool,
    pub flag: bool,
    /// `outcome.per_turn` records with a thinking decision.
    pub per_turn: bool,
    /// A sub-agent child episode under `children[]`.
    pub child: bool,
}

fn call(id: &str, expr: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: "calculator".into(),
        arguments: json!({ "expression": expr }),
    }
}

impl Fixture {
    pub fn new(task_id: &str, success: bool) -> Fixture {
        Fixture {
            task_id: task_id.into(),
            success,
            ..Fixture::default()
        }
    }

    fn episode(&self) -> Result<Episode, TrajectoryError> {
        let mut t = Trajectory::new(format!("ep-{}", self.task_id), "bytes");
        let mut messages = vec![
            Message::system("You are a calculator agent."),
            Message::user("What is 6 * 7?"),
        ];
        let mut errors = Vec::new();
        let mut tokens = TokenCounts::default();
        let mut seg = t.push_tokens(
            None,
            SegmentKind::Prompt,
            vec![1; 12],
            0,
            Some("system+user".into()),
        )?;
        tokens.prompt += 12;
        let mut turn = 0u32;
        let mut calls = 0u32;
        let mut tool_errors = 0u32;
        let tool_turn = |t: &mut Trajectory,
                         seg: &mut _,
                         turn: &mut u32,
                         fails: bool,
                         messages: &mut Vec<Message>,
                         tokens: &mut TokenCounts|
         -> Result<(), TrajectoryError> {
            *turn += 1;
            let n = 9;
            *seg = t.push_sampled(Some(*seg), vec![2; n], vec![-0.25; n], vec![3; n], *turn)?;
            tokens.sampled += n;
            tokens.thinking += 4;
            let id = format!("call_{turn}");
            let mut m = Message::assistant("");
            m.reasoning = Some("I should use the calculator.".into());
            m.tool_calls = vec![call(&id, if fails { "6 * " } else { "6 * 7" })];
            messages.push(m);
            *seg = t.push_tokens(
                Some(*seg),
                SegmentKind::Forced,
                vec![0],
                *turn,
                Some("turn-close".into()),
            )?;
            tokens.forced += 1;
            let result = if fails {
                "error: incomplete expression '6 * '"
            } else {
                "42"
            };
            *seg = t.push_tokens(
                Some(*seg),
                SegmentKind::Observation,
                vec![4; 5],
                *turn,
                Some("tool:calculator".into()),
            )?;
            tokens.observation += 5;
            messages.push(Message::tool(id, "calculator", result));
            Ok(())
        };
        tool_turn(
            &mut t,
            &mut seg,
            &mut turn,
            self.tool_error,
            &mut messages,
            &mut tokens,
        )?;
        calls += 1;
        if self.tool_error {
            tool_errors += 1;
            errors.push(EpisodeError {
                source: "tool".into(),
                message: "calculator: error: incomplete expression '6 * '".into(),
                turn,
                recovered: true,
            });
        }
        if self.retry {
            tool_turn(
                &mut t,
                &mut seg,
                &mut turn,
                false,
                &mut messages,
                &mut tokens,
            )?;
            calls += 1;
        }
        turn += 1;
        seg = t.push_sampled(Some(seg), vec![5; 3], vec![-0.1; 3], vec![3, 3, 4], turn)?;
        tokens.sampled += 3;
        let answer = if self.success { "42" } else { "41" };
        messages.push(Message::assistant(answer));
        t.set_branch("main", seg)?;
        let checks = vec![
            CheckResult::new("answer", self.success, format!("expected 42, got {answer}")),
            CheckResult::pass("format", "a number"),
        ];
        let mut verdict = Verdict::from_checks(checks);
        if self.flag {
            verdict.flags.push(MonitorFlag {
                monitor: "answer-in-prompt".into(),
                vectors: vec![3],
                detail: "the answer appeared before any tool call".into(),
                action: "recorded".into(),
            });
        }
        let metadata = match json!({"tags": ["arithmetic"], "difficulty": "easy"}) {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        Ok(Episode {
            task: Task {
                id: self.task_id.clone(),
                prompt: "What is 6 * 7?".into(),
                env: json!({"kind": "calc"}),
                hidden: None,
                split: Some("test".into()),
                metadata,
                thinking: None,
            },
            messages,
            tools: Vec::new(),
            trajectory: t,
            outcome: EpisodeOutcome {
                reward: verdict.reward,
                reward_components: BTreeMap::new(),
                progress: verdict.progress,
                success: self.success,
                termination: Termination::Finished,
                turns: turn,
                tool_calls: calls,
                tool_errors,
                flags: verdict.flags.clone(),
                errors,
                timings: Timings {
                    total_ms: 120.0 + f64::from(turn) * 10.0,
                    policy_ms: 100.0,
                    env_ms: 10.0,
                    verify_ms: 5.0,
                },
                tokens,
                final_answer: Some(answer.into()),
                per_turn: if self.per_turn {
                    self.records(turn)
                } else {
                    Vec::new()
                },
            },
            verdict: Some(verdict),
            children: Vec::new(),
        })
    }

    /// Per-turn records: tool turns think under a budget of 4 (the first hits it), the last
    /// answers without thinking after the success streak.
    fn records(&self, turns: u32) -> Vec<TurnRecord> {
        (1..=turns)
            .map(|turn| {
                let last = turn == turns;
                let first_failed = turn == 1 && self.tool_error;
                TurnRecord {
                    turn,
                    thinking_tokens: if last { 0 } else { 4 },
                    answer_tokens: if last { 3 } else { 5 },
                    forced_tokens: usize::from(!last),
                    observation_tokens: if last { 0 } else { 5 },
                    tool_calls: u32::from(!last),
                    tool_errors: u32::from(first_failed),
                    decision: Some(TurnDecision {
                        think: !last,
                        budget: (!last).then_some(4),
                        min: None,
                        route: None,
                        reason: if last {
                            "success streak: answer directly".into()
                        } else {
                            "tool step: low effort".into()
                        },
                        signals: DecisionSignals {
                            turn,
                            last_step_failed: turn == 2 && self.tool_error,
                            ..DecisionSignals::default()
                        },
                        refined_budget: None,
                    }),
                    model: None,
                    budget_hit: turn == 1,
                    continued: 0,
                }
            })
            .collect()
    }

    /// The episode as stored (one line of `trajectories.jsonl`).
    pub fn to_json(&self) -> Result<Value, TrajectoryError> {
        let episode = self.episode()?;
        let mut v = serde_json::to_value(&episode).unwrap_or(Value::Null);
        if self.child
            && let Some(obj) = v.as_object_mut()
        {
            let child = Fixture {
                task_id: format!("{}/researcher", self.task_id),
                success: true,
                ..Fixture::default()
            }
            .episode()?;
            obj.insert(
                "children".into(),
                json!([{
                    "role": "researcher",
                    "call_id": "call_1",
                    "parent_turn": 1,
                    "parent_segment": 1,
                    "episode": serde_json::to_value(&child).unwrap_or(Value::Null),
                }]),
            );
        }
        Ok(v)
    }
}

/// A small episode for unit tests: `tool_error` fails the first call, `retry` calls again.
#[cfg(test)]
pub(crate) fn episode_json(task: &str, success: bool, tool_error: bool, retry: bool) -> Value {
    Fixture {
        tool_error,
        retry,
        ..Fixture::new(task, success)
    }
    .to_json()
    .unwrap_or(Value::Null)
}

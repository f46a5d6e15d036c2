//! The enact agent loop.
//!
//! `Agent::run` drives one episode: reset the environment, render the opening prompt with
//! the chat template, then repeat — sample a reply from the policy, split it into reasoning,
//! content and tool calls, execute the calls in the environment, render the observations as
//! a token suffix — until the agent answers, or a turn, token or time limit is reached.
//! Afterwards the verifier grades the environment's submission.
//!
//! Everything that can go wrong inside an episode (malformed or unknown tool calls, tool
//! failures, an empty reply, a reply that never stops, a failing policy or environment) ends
//! up as an observation to the model or as a recorded termination reason; `run` itself never
//! fails and never panics.

pub mod context;

use std::sync::Arc;
use std::time::{Duration, Instant};

use enact_core::{
    Action, ChatTemplate, Environment, Episode, EpisodeError, EpisodeOutcome, FinishReason,
    Message, Policy, RenderOptions, ReplyParser, Role, SampleRequest, SamplingParams, SegmentKind,
    StepOutcome, Submission, Task, Termination, Timings, TokenCounts, Tokenizer, ToolSpec,
    Trajectory, Verdict, Verifier,
};
use serde::{Deserialize, Serialize};

/// Limits and sampling settings of an episode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Most assistant turns.
    pub max_turns: u32,
    /// Most tokens sampled in one turn; a reply that reaches it never stopped.
    pub max_tokens_per_turn: usize,
    /// Most tokens in the whole context.
    pub max_context_tokens: usize,
    /// Wall-clock limit of the episode (sampling and tools; grading excluded).
    pub time_limit_secs: f64,
    /// Time limit of grading.
    pub verify_time_limit_secs: f64,
    pub sampling: SamplingParams,
    pub render: RenderOptions,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_turns: 16,
            max_tokens_per_turn: 1024,
            max_context_tokens: 8192,
            time_limit_secs: 600.0,
            verify_time_limit_secs: 120.0,
            sampling: SamplingParams::default(),
            render: RenderOptions::default(),
        }
    }
}

/// The pieces an agent is made of.
#[derive(Clone)]
pub struct Agent {
    pub policy: Arc<dyn Policy>,
    pub tokenizer: Arc<dyn Tokenizer>,
    pub template: Arc<dyn ChatTemplate>,
    pub parser: Arc<dyn ReplyParser>,
    pub config: AgentConfig,
}

/// Mutable state of one episode.
struct Run {
    trajectory: Trajectory,
    messages: Vec<Message>,
    tools: Vec<ToolSpec>,
    errors: Vec<EpisodeError>,
    turns: u32,
    tool_calls: u32,
    tool_errors: u32,
    thinking_tokens: usize,
    final_answer: Option<String>,
    policy_time: Duration,
    env_time: Duration,
}

impl Run {
    fn error(&mut self, source: &str, message: impl Into<String>, recovered: bool) {
        let message = message.into();
        tracing::debug!(source, %message, recovered, "episode error");
        self.errors.push(EpisodeError {
            source: source.into(),
            message,
            turn: self.turns,
            recovered,
        });
    }
}

impl Agent {
    /// How many of a reply's sampled tokens belong to its reasoning: those up to and
    /// including the one that completes `</think>`, or all of them when the reasoning never
    /// closed. Counted on the sampled ids themselves, never on re-encoded text.
    fn thinking_token_count(&self, reply: &[u32]) -> usize {
        const CLOSE: &str = "</think>";
        let mut text = String::new();
        for (i, id) in reply.iter().enumerate() {
            let Ok(piece) = self.tokenizer.decode(std::slice::from_ref(id)) else {
                continue;
            };
            text.push_str(&piece);
            // Only the tail can hold a newly completed tag: linear overall.
            let mut start = text.len().saturating_sub(CLOSE.len() + piece.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            if text[start..].contains(CLOSE) {
                return i + 1;
            }
        }
        reply.len()
    }

    /// Text from the outside world (tool output, simulated users) with special-token text
    /// neutralised, so it is encoded as plain text and cannot forge a turn boundary.
    fn outside_text(&self, text: &str) -> String {
        enact_core::neutralize_special_tokens(text, &self.tokenizer.special_tokens()).into_owned()
    }

    /// Runs one episode of `task` in `env`, grading with `verifier` when given.
    pub async fn run(
        &self,
        task: &Task,
        env: &mut dyn Environment,
        verifier: Option<&dyn Verifier>,
    ) -> Episode {
        let started = Instant::now();
        let mut run = Run {
            trajectory: Trajectory::new(
                uuid::Uuid::new_v4().to_string(),
                task.id.clone(),
                self.tokenizer.identity(),
            ),
            messages: Vec::new(),
            tools: Vec::new(),
            errors: Vec::new(),
            turns: 0,
            tool_calls: 0,
            tool_errors: 0,
            thinking_tokens: 0,
            final_answer: None,
            policy_time: Duration::ZERO,
            env_time: Duration::ZERO,
        };
        run.trajectory.token_exact = self.policy.token_exact();
        // A panic anywhere in the loop (an environment, a parser, a template on strange
        // input) ends the episode as an error; what was recorded so far is kept.
        let termination =
            match catch_unwind(Box::pin(self.drive(task, env, &mut run, started))).await {
                Ok(t) => t,
                Err(panic) => Termination::Error(format!(
                    "the episode crashed: {}",
                    panic_message(panic.as_ref())
                )),
            };

        let env_started = Instant::now();
        let submission = match catch_unwind(env.submission()).await {
            Ok(Ok(s)) => s,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(panic) => format!("it crashed: {}", panic_message(panic.as_ref())),
                    Ok(Ok(_)) => String::new(),
                };
                run.error(
                    "env",
                    format!("could not collect the submission: {why}"),
                    false,
                );
                Submission {
                    final_answer: run.final_answer.clone(),
                    messages: run.messages.clone(),
                    ..Default::default()
                }
            }
        };
        run.env_time += env_started.elapsed();

        let verify_started = Instant::now();
        let verdict = match verifier {
            None => None,
            Some(v) => {
                let limit = secs_or_forever(self.config.verify_time_limit_secs.max(0.001));
                // A verifier that panics on what the model wrote must not take the episode
                // (and its trajectory) down with it.
                let verify = catch_unwind(v.verify(task, &submission));
                match tokio::time::timeout(limit, verify).await {
                    Ok(Ok(Ok(verdict))) => Some(verdict),
                    Ok(Ok(Err(e))) => {
                        run.error("verifier", e.to_string(), false);
                        None
                    }
                    Ok(Err(panic)) => {
                        run.error(
                            "verifier",
                            format!("the verifier crashed: {}", panic_message(panic.as_ref())),
                            false,
                        );
                        None
                    }
                    Err(_) => {
                        run.error(
                            "verifier",
                            format!("verifier timed out after {limit:?}"),
                            false,
                        );
                        None
                    }
                }
            }
        };
        let verify_time = verify_started.elapsed();
        match catch_unwind(env.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => run.error("env", format!("close failed: {e}"), true),
            Err(panic) => run.error(
                "env",
                format!("close crashed: {}", panic_message(panic.as_ref())),
                true,
            ),
        }
        self.finish(task, run, termination, verdict, started, verify_time)
    }

    async fn drive(
        &self,
        task: &Task,
        env: &mut dyn Environment,
        run: &mut Run,
        started: Instant,
    ) -> Termination {
        let cfg = &self.config;
        let time_limit = secs_or_forever(cfg.time_limit_secs.max(0.0));
        let remaining = |started: Instant| time_limit.saturating_sub(started.elapsed());

        let t = Instant::now();
        let reset = tokio::time::timeout(remaining(started), env.reset(task)).await;
        run.env_time += t.elapsed();
        let reset = match reset {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Termination::Error(format!("environment reset failed: {e}")),
            Err(_) => return Termination::TimeLimit,
        };
        run.messages = reset.messages;
        run.tools = reset.tools;

        let eot_text = self.template.end_of_turn().to_string();
        let Some(eot) = self.tokenizer.special_token_id(&eot_text) else {
            return Termination::Error(format!(
                "the template's end-of-turn token {eot_text:?} is not a special token of tokenizer {}; use a matching template and tokenizer",
                self.tokenizer.identity()
            ));
        };

        let opening = match context::opening(
            self.template.as_ref(),
            &run.messages,
            &run.tools,
            &cfg.render,
        ) {
            Ok(t) => t,
            Err(e) => return Termination::Error(e.to_string()),
        };
        let ids = match self.tokenizer.encode(&opening) {
            Ok(ids) => ids,
            Err(e) => return Termination::Error(e.to_string()),
        };
        let mut context = ids.clone();
        let mut head = match run.trajectory.push_tokens(
            None,
            SegmentKind::Prompt,
            ids,
            0,
            Some("opening".into()),
        ) {
            Ok(h) => h,
            Err(e) => return Termination::Error(e.to_string()),
        };
        let _ = run.trajectory.set_branch("main", head);

        loop {
            if run.turns >= cfg.max_turns {
                break Termination::TurnLimit;
            }
            if remaining(started).is_zero() {
                break Termination::TimeLimit;
            }
            let room = cfg.max_context_tokens.saturating_sub(context.len());
            if room == 0 {
                run.error(
                    "policy",
                    format!(
                        "the context reached the limit of {} tokens",
                        cfg.max_context_tokens
                    ),
                    false,
                );
                break Termination::TokenLimit;
            }
            run.turns += 1;
            let turn = run.turns;
            let per_turn = cfg.max_tokens_per_turn.min(room);
            let request = SampleRequest {
                context: Arc::new(context.clone()),
                max_tokens: per_turn,
                stop_tokens: vec![eot],
                stop_strings: Vec::new(),
                params: cfg.sampling.clone(),
                on_token: None,
            };
            let t = Instant::now();
            let sampled =
                tokio::time::timeout(remaining(started), self.policy.sample(request)).await;
            run.policy_time += t.elapsed();
            let sample = match sampled {
                Err(_) => break Termination::TimeLimit,
                Ok(Err(e)) => break Termination::Error(format!("policy failed: {e}")),
                Ok(Ok(s)) => s,
            };
            if sample.logprobs.len() != sample.tokens.len()
                || sample.policy_versions.len() != sample.tokens.len()
            {
                break Termination::Error(format!(
                    "policy returned {} tokens with {} logprobs and {} versions",
                    sample.tokens.len(),
                    sample.logprobs.len(),
                    sample.policy_versions.len()
                ));
            }
            head = match run.trajectory.push_sampled(
                Some(head),
                sample.tokens.clone(),
                sample.logprobs.clone(),
                sample.policy_versions.clone(),
                turn,
            ) {
                Ok(h) => h,
                Err(e) => break Termination::Error(e.to_string()),
            };
            let _ = run.trajectory.set_branch("main", head);
            context.extend_from_slice(&sample.tokens);

            let ended_by_eot = matches!(sample.finish, FinishReason::StopToken(id) if id == eot)
                && sample.tokens.last() == Some(&eot);
            let body = if ended_by_eot {
                &sample.tokens[..sample.tokens.len() - 1]
            } else {
                &sample.tokens[..]
            };
            let text = match self.tokenizer.decode(body) {
                Ok(t) => t,
                Err(e) => break Termination::Error(format!("could not decode the reply: {e}")),
            };
            let parsed = self.parser.parse(&text, turn);
            if parsed.reasoning.is_some() {
                run.thinking_tokens += self.thinking_token_count(body);
            }
            run.messages.push(Message {
                role: Role::Assistant,
                content: parsed.content.clone(),
                reasoning: parsed.reasoning.clone(),
                tool_calls: parsed.tool_calls.clone(),
                tool_call_id: None,
                name: None,
            });

            if text.trim().is_empty() {
                run.error("policy", "the model produced an empty reply", false);
                break Termination::EmptyReply;
            }
            match &sample.finish {
                FinishReason::Length => {
                    run.error(
                        "policy",
                        format!(
                            "the reply did not end within {per_turn} tokens (no end-of-turn token)"
                        ),
                        false,
                    );
                    break Termination::TokenLimit;
                }
                FinishReason::StopString(_) | FinishReason::StopToken(_) if !ended_by_eot => {
                    // The turn ended without the end-of-turn token: close it with forced
                    // tokens, which carry no loss.
                    head = match run.trajectory.push_tokens(
                        Some(head),
                        SegmentKind::Forced,
                        vec![eot],
                        turn,
                        Some("turn-close".into()),
                    ) {
                        Ok(h) => h,
                        Err(e) => break Termination::Error(e.to_string()),
                    };
                    context.push(eot);
                }
                _ => {}
            }

            // Act.
            let mut new_messages = Vec::new();
            let mut done = false;
            for (i, e) in parsed.errors.iter().enumerate() {
                run.tool_calls += 1;
                run.tool_errors += 1;
                run.error("parse", e.clone(), true);
                new_messages.push(Message::tool(
                    format!("invalid_{turn}_{i}"),
                    "invalid_tool_call",
                    format!(
                        "error: {e}. Write each call as {} with valid JSON.",
                        self.parser.call_syntax()
                    ),
                ));
            }
            let mut env_failure = None;
            for call in &parsed.tool_calls {
                run.tool_calls += 1;
                let t = Instant::now();
                let stepped = tokio::time::timeout(
                    remaining(started),
                    env.step(Action::ToolCall(call.clone())),
                )
                .await;
                run.env_time += t.elapsed();
                match stepped {
                    Err(_) => {
                        env_failure = Some(Termination::TimeLimit);
                        break;
                    }
                    Ok(Err(e)) => {
                        env_failure =
                            Some(Termination::Error(format!("environment step failed: {e}")));
                        break;
                    }
                    Ok(Ok(StepOutcome::ToolResult(r))) => {
                        if r.is_error {
                            run.tool_errors += 1;
                            run.error("tool", format!("{}: {}", r.name, r.content), true);
                        }
                        new_messages.push(Message::tool(
                            r.call_id,
                            r.name,
                            self.outside_text(&r.content),
                        ));
                    }
                    Ok(Ok(StepOutcome::UserTurn { content })) => {
                        new_messages.push(Message::user(self.outside_text(&content)))
                    }
                    Ok(Ok(StepOutcome::Done)) => done = true,
                }
            }
            if let Some(t) = env_failure {
                break t;
            }
            if parsed.tool_calls.is_empty() && parsed.errors.is_empty() {
                run.final_answer = Some(parsed.content.clone());
                let t = Instant::now();
                let stepped = tokio::time::timeout(
                    remaining(started),
                    env.step(Action::Message {
                        content: parsed.content.clone(),
                    }),
                )
                .await;
                run.env_time += t.elapsed();
                match stepped {
                    Err(_) => break Termination::TimeLimit,
                    Ok(Err(e)) => {
                        break Termination::Error(format!("environment step failed: {e}"));
                    }
                    Ok(Ok(StepOutcome::Done)) => done = true,
                    Ok(Ok(StepOutcome::UserTurn { content })) => {
                        new_messages.push(Message::user(self.outside_text(&content)))
                    }
                    Ok(Ok(StepOutcome::ToolResult(r))) => new_messages.push(Message::tool(
                        r.call_id,
                        r.name,
                        self.outside_text(&r.content),
                    )),
                }
            }
            if done || new_messages.is_empty() {
                break Termination::Finished;
            }

            // Observe: append the rendered suffix, never re-encoding what was sampled.
            let suffix = match context::suffix_after_turn(
                self.template.as_ref(),
                &run.messages,
                &new_messages,
                &run.tools,
                &cfg.render,
                turn,
            ) {
                Ok(s) => s,
                Err(e) => break Termination::Error(e.to_string()),
            };
            run.messages.extend(new_messages);
            let ids = match self.tokenizer.encode(&suffix) {
                Ok(ids) => ids,
                Err(e) => break Termination::Error(e.to_string()),
            };
            context.extend_from_slice(&ids);
            head = match run.trajectory.push_tokens(
                Some(head),
                SegmentKind::Observation,
                ids,
                turn,
                Some("observation".into()),
            ) {
                Ok(h) => h,
                Err(e) => break Termination::Error(e.to_string()),
            };
            let _ = run.trajectory.set_branch("main", head);
        }
    }

    fn finish(
        &self,
        task: &Task,
        run: Run,
        termination: Termination,
        verdict: Option<Verdict>,
        started: Instant,
        verify_time: Duration,
    ) -> Episode {
        let counts = run
            .trajectory
            .main_leaf()
            .and_then(|leaf| run.trajectory.counts(leaf).ok())
            .unwrap_or_default();
        let (reward, components, progress, success, flags) = match &verdict {
            Some(v) => (
                v.reward,
                v.components.clone(),
                v.progress,
                v.success() && v.reward > 0.0,
                v.flags.clone(),
            ),
            None => (0.0, Default::default(), 0.0, false, Vec::new()),
        };
        let outcome = EpisodeOutcome {
            reward,
            reward_components: components,
            progress,
            success,
            termination,
            turns: run.turns,
            tool_calls: run.tool_calls,
            tool_errors: run.tool_errors,
            flags,
            errors: run.errors,
            timings: Timings {
                total_ms: started.elapsed().as_secs_f64() * 1e3,
                policy_ms: run.policy_time.as_secs_f64() * 1e3,
                env_ms: run.env_time.as_secs_f64() * 1e3,
                verify_ms: verify_time.as_secs_f64() * 1e3,
            },
            tokens: TokenCounts {
                prompt: counts.prompt,
                sampled: counts.sampled,
                observation: counts.observation,
                forced: counts.forced,
                thinking: run.thinking_tokens,
            },
            final_answer: run.final_answer,
        };
        Episode {
            format_version: enact_core::FORMAT_VERSION,
            id: run.trajectory.id.clone(),
            task: task.clone(),
            messages: run.messages,
            tools: run.tools,
            trajectory: run.trajectory,
            verdict,
            outcome,
        }
    }
}

/// Polls `f`, turning a panic inside it into an `Err` (like `futures`' `catch_unwind`).
fn catch_unwind<F: std::future::Future + Unpin>(
    mut f: F,
) -> impl std::future::Future<Output = std::thread::Result<F::Output>> {
    std::future::poll_fn(move |cx| {
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(&mut f).poll(cx)
        }));
        match polled {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Seconds from a configuration as a [`Duration`]; values too large for one (`inf`, `1e30`),
/// on which `Duration::from_secs_f64` panics, mean no limit. Negative or NaN means zero.
fn secs_or_forever(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod secs_tests {
    use super::*;

    #[test]
    fn huge_or_infinite_time_limits_do_not_panic() {
        assert_eq!(secs_or_forever(f64::INFINITY), Duration::MAX);
        assert_eq!(secs_or_forever(1e30), Duration::MAX);
        assert_eq!(secs_or_forever(f64::NAN), Duration::ZERO);
        assert_eq!(secs_or_forever(-1.0), Duration::ZERO);
        assert_eq!(secs_or_forever(1.5), Duration::from_millis(1500));
    }
}

//! The enact agent loop.
//!
//! `Agent::run` drives one episode: reset the environment, render the opening prompt with
//! the chat template, then repeat one turn — `sample` a reply from the policy, `parse` it into
//! reasoning, content and tool calls, `end_turn` (limits, forced closing tokens), `act` on it in
//! the environment, `observe` the outcome as a rendered token suffix — until the agent answers,
//! or a turn, token or time limit is reached. Afterwards the verifier grades the environment's
//! submission and `finish` assembles the episode. Each step is a method of [`Agent`].
//!
//! Everything that can go wrong inside an episode (malformed or unknown tool calls, tool
//! failures, an empty reply, a reply that never stops, a failing policy or environment) ends
//! up as an observation to the model or as a recorded termination reason; `run` itself never
//! fails and never panics.

pub mod context;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enact_core::{
    Action, ChatTemplate, ChildEpisode, DecisionSignals, DefaultController, Environment, Episode,
    EpisodeError, EpisodeOutcome, FinishReason, Message, OffSwitch, ParsedReply, Policy,
    RenderOptions, ReplyParser, Role, Sample, SampleRequest, SamplingParams, SegmentId,
    SegmentKind, StepOutcome, Submission, Task, Termination, ThinkingController, ThinkingMode,
    ThinkingStyle, Timings, TokenCounts, Tokenizer, ToolSpec, Trajectory, TurnDecision, TurnRecord,
    Verdict, Verifier,
};
use serde::{Deserialize, Serialize};

use crate::context::SuffixRenderer;

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
    /// How much the agent may think (a task's own mode overrides it for its episode).
    pub thinking: ThinkingMode,
    /// Replaces the style's stop-thinking text (inserted when a thought reaches its budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_thinking_text: Option<String>,
    /// How the model writes thoughts and what is inserted to steer them: read off the
    /// model's template (`enact_model::thinking_style`) by whoever builds the agent, never
    /// from a configuration file.
    #[serde(skip)]
    pub thinking_style: ThinkingStyle,
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
            thinking: ThinkingMode::Free,
            stop_thinking_text: None,
            thinking_style: ThinkingStyle::prompted(),
        }
    }
}

/// Two backends under one controller: routine turns go to the agent's own policy (the
/// instruct model), hard ones to `thinking_policy`. Both must share the agent's tokenizer
/// and template (token-in-token-out context building).
#[derive(Clone)]
pub struct Router {
    /// Name recorded for turns of the agent's own policy.
    pub instruct: String,
    /// Name recorded for turns of `thinking_policy`.
    pub thinking: String,
    pub thinking_policy: Arc<dyn Policy>,
}

/// The pieces an agent is made of.
#[derive(Clone)]
pub struct Agent {
    pub policy: Arc<dyn Policy>,
    pub tokenizer: Arc<dyn Tokenizer>,
    pub template: Arc<dyn ChatTemplate>,
    pub parser: Arc<dyn ReplyParser>,
    pub config: AgentConfig,
    /// Decides each turn's thinking ([`DefaultController`] unless replaced).
    pub controller: Arc<dyn ThinkingController>,
    /// Routing between an instruct and a thinking backend, if configured.
    pub router: Option<Router>,
}

/// The loop stops: the episode ends with this termination (a normal finish included).
struct End(Termination);

/// Ends the episode with an error that says what failed.
fn failed(e: impl std::fmt::Display) -> End {
    End(Termination::Error(e.to_string()))
}

/// The episode's wall-clock limit.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    started: Instant,
    limit: Duration,
}

impl Deadline {
    fn remaining(&self) -> Duration {
        self.limit.saturating_sub(self.started.elapsed())
    }
}

/// Runs `work` within what is left of the episode's time, adding the time it took to
/// `clock`; running out of time ends the episode.
async fn within<T>(
    deadline: Deadline,
    clock: &mut Duration,
    work: impl Future<Output = T>,
) -> Result<T, End> {
    let t = Instant::now();
    let done = tokio::time::timeout(deadline.remaining(), work).await;
    *clock += t.elapsed();
    done.map_err(|_| End(Termination::TimeLimit))
}

/// Mutable state of one episode.
struct Run {
    trajectory: Trajectory,
    /// The main line's tokens (the next context) and its last segment. They only change
    /// together with the `main` branch, in [`Run::append`] and [`Run::append_sampled`].
    context: Arc<Vec<u32>>,
    head: Option<SegmentId>,
    messages: Vec<Message>,
    tools: Vec<ToolSpec>,
    suffixes: SuffixRenderer,
    errors: Vec<EpisodeError>,
    turns: u32,
    tool_calls: u32,
    tool_errors: u32,
    thinking_tokens: usize,
    final_answer: Option<String>,
    policy_time: Duration,
    env_time: Duration,
    /// The episode's thinking mode (the task's, else the agent's).
    mode: ThinkingMode,
    /// The decision for the turn whose generation prompt was rendered last.
    decision: Option<TurnDecision>,
    /// What the controller knows from the turns so far.
    signals: DecisionSignals,
    per_turn: Vec<TurnRecord>,
    /// Sub-agent episodes the environment ran (teams of agents).
    children: Vec<ChildEpisode>,
}

/// A reply as sampled: its ids (on the main line already, forced ones included) and why it
/// stopped.
struct Sampled {
    tokens: Vec<u32>,
    finish: FinishReason,
    /// Sampled thinking tokens, when the turn was controlled (otherwise counted in `parse`).
    thinking: Option<usize>,
}

/// How often one turn may be sent back to thinking (`min` budget forcing).
const MAX_CONTINUES: u32 = 4;

/// A parsed reply.
struct Reply {
    parsed: ParsedReply,
    /// The decoded reply is empty or whitespace.
    empty: bool,
    /// The reply ended with the template's end-of-turn token.
    ended_by_eot: bool,
}

impl Run {
    fn new(trajectory: Trajectory) -> Self {
        Run {
            trajectory,
            context: Arc::new(Vec::new()),
            head: None,
            messages: Vec::new(),
            tools: Vec::new(),
            suffixes: SuffixRenderer::new(0),
            errors: Vec::new(),
            turns: 0,
            tool_calls: 0,
            tool_errors: 0,
            thinking_tokens: 0,
            final_answer: None,
            policy_time: Duration::ZERO,
            env_time: Duration::ZERO,
            mode: ThinkingMode::Free,
            decision: None,
            signals: DecisionSignals::default(),
            per_turn: Vec::new(),
            children: Vec::new(),
        }
    }

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

    /// Appends tokens the policy did not sample (prompt, observation, forced) to the main
    /// line of the current turn.
    fn append(&mut self, kind: SegmentKind, tokens: Vec<u32>, label: &str) -> Result<(), End> {
        let id = self
            .trajectory
            .push_tokens(self.head, kind, tokens, self.turns, Some(label.into()))
            .map_err(failed)?;
        self.advance(id)
    }

    /// Appends the sampled reply of the current turn to the main line.
    fn append_sampled(
        &mut self,
        tokens: Vec<u32>,
        logprobs: Vec<f32>,
        policy_versions: Vec<u64>,
    ) -> Result<(), End> {
        let id = self
            .trajectory
            .push_sampled(self.head, tokens, logprobs, policy_versions, self.turns)
            .map_err(failed)?;
        self.advance(id)
    }

    /// Keeps sampled tokens that were cut from the main line on a side branch of their own
    /// (auditable; never trained on as part of the episode).
    fn set_aside(
        &mut self,
        tokens: Vec<u32>,
        logprobs: Vec<f32>,
        policy_versions: Vec<u64>,
        branch: &str,
    ) -> Result<(), End> {
        let id = self
            .trajectory
            .push_sampled(self.head, tokens, logprobs, policy_versions, self.turns)
            .map_err(failed)?;
        self.trajectory.set_branch(branch, id).map_err(failed)
    }

    /// Labels the main line's last segment (which model sampled it).
    fn label_head(&mut self, label: &str) {
        if let Some(SegmentId(id)) = self.head
            && let Some(seg) = self.trajectory.segments.get_mut(id as usize)
        {
            seg.label = Some(label.to_string());
        }
    }

    /// The record of the current turn.
    fn record(&mut self) -> Option<&mut TurnRecord> {
        self.per_turn.last_mut().filter(|r| r.turn == self.turns)
    }

    /// Moves the main line (branch, head and context) onto the new segment `id`.
    fn advance(&mut self, id: SegmentId) -> Result<(), End> {
        self.trajectory.set_branch("main", id).map_err(failed)?;
        let tokens = &self.trajectory.segment(id).map_err(failed)?.tokens;
        // The policy has dropped its copy by now: this appends in place.
        Arc::make_mut(&mut self.context).extend_from_slice(tokens);
        self.head = Some(id);
        Ok(())
    }
}

impl Agent {
    /// An agent with the default [`AgentConfig`].
    pub fn new(
        policy: Arc<dyn Policy>,
        tokenizer: Arc<dyn Tokenizer>,
        template: Arc<dyn ChatTemplate>,
        parser: Arc<dyn ReplyParser>,
    ) -> Self {
        Agent {
            policy,
            tokenizer,
            template,
            parser,
            config: AgentConfig::default(),
            controller: Arc::new(DefaultController::default()),
            router: None,
        }
    }

    /// The same agent with another thinking controller.
    pub fn with_controller(mut self, controller: Arc<dyn ThinkingController>) -> Self {
        self.controller = controller;
        self
    }

    /// The same agent routing hard turns to a second backend.
    pub fn with_router(mut self, router: Router) -> Self {
        self.router = Some(router);
        self
    }

    /// The same agent with `config`.
    pub fn with_config(mut self, config: AgentConfig) -> Self {
        self.config = config;
        self
    }

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
        let mut trajectory =
            Trajectory::new(uuid::Uuid::new_v4().to_string(), self.tokenizer.identity());
        trajectory.token_exact = self.policy.token_exact();
        let mut run = Run::new(trajectory);
        let deadline = Deadline {
            started,
            limit: secs_or_forever(self.config.time_limit_secs.max(0.0)),
        };
        // A panic anywhere in the loop (an environment, a parser, a template on strange
        // input) ends the episode as an error; what was recorded so far is kept.
        let termination =
            match catch_unwind(Box::pin(self.drive(task, env, &mut run, deadline))).await {
                Ok(t) => t,
                Err(panic) => Termination::Error(format!(
                    "the episode crashed: {}",
                    panic_message(panic.as_ref())
                )),
            };

        // Sub-agents that finished in a step the episode's end cut short.
        self.adopt_children(env, &mut run);
        let env_started = Instant::now();
        let submission = match catch_unwind(env.submission()).await {
            Ok(Ok(s)) => s,
            broken => {
                let why = match broken {
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

    /// Opens the episode, then runs turns until one ends it.
    async fn drive(
        &self,
        task: &Task,
        env: &mut dyn Environment,
        run: &mut Run,
        deadline: Deadline,
    ) -> Termination {
        let eot = match self.open(task, env, run, deadline).await {
            Ok(eot) => eot,
            Err(End(termination)) => return termination,
        };
        loop {
            if let Err(End(termination)) = self.turn(env, run, eot, deadline).await {
                return termination;
            }
        }
    }

    /// Resets the environment and puts the rendered opening on the main line. Returns the id
    /// of the template's end-of-turn token.
    async fn open(
        &self,
        task: &Task,
        env: &mut dyn Environment,
        run: &mut Run,
        deadline: Deadline,
    ) -> Result<u32, End> {
        let reset = within(deadline, &mut run.env_time, env.reset(task))
            .await?
            .map_err(|e| failed(format!("environment reset failed: {e}")))?;
        run.messages = reset.messages;
        run.tools = reset.tools;
        run.suffixes = SuffixRenderer::new(run.messages.len());
        run.mode = task
            .thinking
            .clone()
            .unwrap_or_else(|| self.config.thinking.clone());
        let style = &self.config.thinking_style;
        if run.mode == ThinkingMode::Off
            && style.off == OffSwitch::SoftSwitch
            && let Some((_, no_think)) = &style.soft_switches
            && let Some(user) = run.messages.iter_mut().rev().find(|m| m.role == Role::User)
        {
            // The model's soft switch, where its training put it: the end of the user turn.
            user.content = format!("{} {no_think}", user.content.trim_end());
        }
        self.decide_next(run);

        let eot_text = self.template.end_of_turn();
        let Some(eot) = self.tokenizer.special_token_id(eot_text) else {
            return Err(failed(format!(
                "the template's end-of-turn token {eot_text:?} is not a special token of tokenizer {}; use a matching template and tokenizer",
                self.tokenizer.identity()
            )));
        };
        let opening = context::opening(
            self.template.as_ref(),
            &run.messages,
            &run.tools,
            &self.render_options(run),
        )
        .map_err(failed)?;
        let ids = self.tokenizer.encode(&opening).map_err(failed)?;
        run.append(SegmentKind::Prompt, ids, "opening")?;
        Ok(eot)
    }

    /// One assistant turn: sample, parse, end the turn, act, observe. `Err` ends the episode.
    async fn turn(
        &self,
        env: &mut dyn Environment,
        run: &mut Run,
        eot: u32,
        deadline: Deadline,
    ) -> Result<(), End> {
        let max_tokens = self.start_turn(run, deadline)?;
        let sampled = self.sample(run, eot, max_tokens, deadline).await?;
        let reply = self.parse(run, &sampled, eot)?;
        self.end_turn(run, &sampled, &reply, eot, max_tokens)?;
        let observations = self.act(env, run, &reply.parsed, deadline).await?;
        self.observe(run, observations)
    }

    /// Checks the turn, time and context limits and counts the new turn. Returns how many
    /// tokens it may sample.
    fn start_turn(&self, run: &mut Run, deadline: Deadline) -> Result<usize, End> {
        let cfg = &self.config;
        if run.turns >= cfg.max_turns {
            return Err(End(Termination::TurnLimit));
        }
        if deadline.remaining().is_zero() {
            return Err(End(Termination::TimeLimit));
        }
        let room = cfg.max_context_tokens.saturating_sub(run.context.len());
        if room == 0 {
            run.error(
                "policy",
                format!(
                    "the context reached the limit of {} tokens",
                    cfg.max_context_tokens
                ),
                false,
            );
            return Err(End(Termination::TokenLimit));
        }
        run.turns += 1;
        Ok(cfg.max_tokens_per_turn.min(room))
    }

    /// The controller's decision for the next turn, from what the turns so far showed; made
    /// before that turn's generation prompt is rendered (the hard switch is part of it).
    fn decide_next(&self, run: &mut Run) {
        run.signals.turn = run.turns + 1;
        run.signals.episode_budget_left = run
            .mode
            .per_episode()
            .map(|b| b.saturating_sub(u32::try_from(run.thinking_tokens).unwrap_or(u32::MAX)));
        let mut decision = self.controller.decide(&run.mode, &run.signals);
        if let Some(router) = &self.router {
            decision.route = Some(if self.controller.route_to_thinking(&decision) {
                router.thinking.clone()
            } else {
                router.instruct.clone()
            });
        }
        run.decision = Some(decision);
    }

    /// Render options for the next generation prompt: the hard switch when the decision is
    /// not to think and the template has one.
    fn render_options(&self, run: &Run) -> RenderOptions {
        let mut options = self.config.render.clone();
        if let Some(d) = &run.decision
            && !d.think
            && self.config.thinking_style.off == OffSwitch::HardSwitch
        {
            options.enable_thinking = Some(false);
        }
        options
    }

    /// The thinking style in force (the configured stop text over the model's).
    fn style(&self) -> ThinkingStyle {
        let mut style = self.config.thinking_style.clone();
        if let Some(t) = &self.config.stop_thinking_text {
            style.stop_text = t.clone();
        }
        style
    }

    /// The backend the decision routes to, and its name when routing.
    fn route(&self, decision: &TurnDecision) -> (&Arc<dyn Policy>, Option<String>) {
        match &self.router {
            Some(r) if decision.route.as_deref() == Some(r.thinking.as_str()) => {
                (&r.thinking_policy, Some(r.thinking.clone()))
            }
            Some(r) => (&self.policy, Some(r.instruct.clone())),
            None => (&self.policy, None),
        }
    }

    /// One generation request from the main line's context; nothing is appended yet.
    async fn request(
        &self,
        run: &mut Run,
        policy: &Arc<dyn Policy>,
        max_tokens: usize,
        stop_tokens: Vec<u32>,
        stop_strings: Vec<String>,
        deadline: Deadline,
    ) -> Result<Sample, End> {
        let request = SampleRequest {
            context: run.context.clone(),
            max_tokens,
            stop_tokens,
            stop_strings,
            params: self.config.sampling.clone(),
            on_token: None,
        };
        let sample = within(deadline, &mut run.policy_time, policy.sample(request))
            .await?
            .map_err(|e| failed(format!("policy failed: {e}")))?;
        if sample.logprobs.len() != sample.tokens.len()
            || sample.policy_versions.len() != sample.tokens.len()
            || sample.tokens.len() > max_tokens
        {
            return Err(failed(format!(
                "policy returned {} tokens with {} logprobs and {} versions for a request of at most {max_tokens}",
                sample.tokens.len(),
                sample.logprobs.len(),
                sample.policy_versions.len()
            )));
        }
        Ok(sample)
    }

    /// Appends a sample to the main line, labelled with the model that produced it.
    fn keep(&self, run: &mut Run, sample: &Sample, model: &Option<String>) -> Result<(), End> {
        if sample.tokens.is_empty() {
            return Ok(());
        }
        run.append_sampled(
            sample.tokens.clone(),
            sample.logprobs.clone(),
            sample.policy_versions.clone(),
        )?;
        if let Some(m) = model {
            run.label_head(&format!("model:{m}"));
        }
        Ok(())
    }

    /// Appends text the system inserts into the turn as forced tokens (no loss).
    fn force(&self, run: &mut Run, text: &str, label: &str) -> Result<usize, End> {
        let ids = self
            .tokenizer
            .encode(text)
            .map_err(|e| failed(format!("could not encode the {label} text {text:?}: {e}")))?;
        let n = ids.len();
        if n > 0 {
            run.append(SegmentKind::Forced, ids, label)?;
        }
        Ok(n)
    }

    /// Samples the turn's reply onto the main line under the turn's thinking decision.
    ///
    /// `free`: one request, as the model will. Otherwise the thought is sampled with the
    /// closing tag as a stop string and at most the budget as `max_tokens` (in pieces when the
    /// controller probes the first tokens); a thought that reaches the budget is closed with
    /// the style's stop-thinking text as forced tokens, a thought that closes below the
    /// minimum is cut before its closing tag (the cut tokens kept on a side branch) and sent
    /// on with the continue text; then the answer is sampled from the grown context. Thinking
    /// switched off is the hard switch (already rendered), an empty block of forced tokens,
    /// or nothing for a model that does not think unasked.
    async fn sample(
        &self,
        run: &mut Run,
        eot: u32,
        max_tokens: usize,
        deadline: Deadline,
    ) -> Result<Sampled, End> {
        let decision = run
            .decision
            .take()
            .unwrap_or_else(|| TurnDecision::free(run.signals.clone()));
        let (policy, model) = self.route(&decision);
        let policy = policy.clone();
        let controlled = run.mode != ThinkingMode::Free;
        run.per_turn.push(TurnRecord {
            turn: run.turns,
            decision: controlled.then(|| decision.clone()),
            model: model.clone(),
            ..Default::default()
        });
        let start = run.context.len();
        let style = self.style();
        let mut sampled = 0usize;
        let mut thinking = None;
        let mut finish = None;

        if controlled && (!decision.think || !style.can_think) {
            if !decision.think && style.off == OffSwitch::EmptyBlock {
                self.force(run, &style.empty_block(), "thinking-off")?;
            }
            thinking = Some(0);
        } else if controlled {
            let (thought, ended) = self
                .think(run, &policy, &model, &decision, eot, max_tokens, deadline)
                .await?;
            sampled += thought.sampled;
            thinking = Some(thought.thinking);
            finish = ended;
        }
        let finish = match finish {
            Some(f) => f,
            None => {
                let room = max_tokens.saturating_sub(sampled);
                if room == 0 {
                    FinishReason::Length
                } else {
                    let answer = self
                        .request(run, &policy, room, vec![eot], Vec::new(), deadline)
                        .await?;
                    self.keep(run, &answer, &model)?;
                    answer.finish
                }
            }
        };
        Ok(Sampled {
            tokens: run.context[start..].to_vec(),
            finish,
            thinking,
        })
    }

    /// The thinking part of a controlled turn. Returns what was sampled and, when the turn
    /// already ended (the end-of-turn token), how.
    #[allow(clippy::too_many_arguments)]
    async fn think(
        &self,
        run: &mut Run,
        policy: &Arc<dyn Policy>,
        model: &Option<String>,
        decision: &TurnDecision,
        eot: u32,
        max_tokens: usize,
        deadline: Deadline,
    ) -> Result<(Thought, Option<FinishReason>), End> {
        let style = self.style();
        // Leave room for an answer within the turn's token limit.
        let reserve = (max_tokens / 4).min(64);
        let turn_cap = max_tokens.saturating_sub(reserve);
        let mut budget = decision
            .budget
            .map_or(turn_cap, |b| (b as usize).min(turn_cap));
        // Whether to think is the model's; enact opens a thought only to force a minimum
        // into a model that does not open thoughts itself.
        let forced_open = !style.native && decision.min.is_some_and(|m| m > 0);
        if forced_open {
            self.force(run, &style.open_text(), "thinking-open")?;
        }
        // A reply that does not start with a thought is an answer: nothing to cut.
        let may_answer = !style.prefilled_open && !forced_open;
        let mut probe = self.controller.probe_tokens(&run.mode, decision) as usize;
        let mut text = String::new();
        let mut thought = Thought::default();
        let mut closed = false;
        let mut ended = None;
        let mut logprob_sum = 0f64;
        while thought.thinking < budget {
            let cap = budget - thought.thinking;
            let ask = if probe > 0 { probe.min(cap) } else { cap };
            let sample = self
                .request(
                    run,
                    policy,
                    ask,
                    vec![eot],
                    vec![style.close.clone()],
                    deadline,
                )
                .await?;
            let piece = self
                .tokenizer
                .decode(&sample.tokens)
                .map_err(|e| failed(format!("could not decode the thought: {e}")))?;
            let before = text.len();
            text.push_str(&piece);
            // Only the new text (and the tag's length before it) can hold a new closing tag.
            let closes = text[floor_boundary(&text, before.saturating_sub(style.close.len()))..]
                .contains(&style.close);
            let below_min = decision
                .min
                .is_some_and(|m| thought.thinking + sample.tokens.len() < m as usize);
            let continues = run.record().map_or(0, |r| r.continued);
            if closes
                && below_min
                && continues < MAX_CONTINUES
                && !matches!(sample.finish, FinishReason::StopToken(_))
            {
                // s1 budget forcing: keep the thought without its closing tag, then "Wait".
                let cut = self.cut_before(&sample.tokens, &style.close);
                let kept = Sample {
                    tokens: sample.tokens[..cut].to_vec(),
                    logprobs: sample.logprobs[..cut].to_vec(),
                    policy_versions: sample.policy_versions[..cut].to_vec(),
                    finish: FinishReason::Length,
                };
                self.keep(run, &kept, model)?;
                let branch = format!("cut-turn{}-{}", run.turns, continues + 1);
                run.set_aside(
                    sample.tokens[cut..].to_vec(),
                    sample.logprobs[cut..].to_vec(),
                    sample.policy_versions[cut..].to_vec(),
                    &branch,
                )?;
                thought.sampled += cut;
                thought.thinking += cut;
                logprob_sum += kept.logprobs.iter().map(|&l| f64::from(l)).sum::<f64>();
                text.truncate(before);
                text.push_str(&self.tokenizer.decode(&kept.tokens).unwrap_or_default());
                self.force(run, &style.continue_text, "thinking-continue")?;
                if let Some(r) = run.record() {
                    r.continued += 1;
                }
                continue;
            }
            self.keep(run, &sample, model)?;
            thought.sampled += sample.tokens.len();
            thought.thinking += sample.tokens.len();
            logprob_sum += sample.logprobs.iter().map(|&l| f64::from(l)).sum::<f64>();
            if let FinishReason::StopToken(_) = sample.finish {
                ended = Some(sample.finish);
                break;
            }
            if closes {
                closed = true;
                break;
            }
            // A model that did not open a thought is answering.
            if may_answer && !opens_thought(&text, &style.open) {
                thought.answering = true;
                break;
            }
            if probe > 0 {
                probe = 0;
                let mut signals = decision.signals.clone();
                signals.probe_surprisal =
                    Some((-logprob_sum / thought.thinking.max(1) as f64) as f32);
                let refined = self.controller.refine(decision, &signals);
                if let Some(r) = run.record()
                    && let Some(d) = r.decision.as_mut()
                {
                    d.signals.probe_surprisal = signals.probe_surprisal;
                    d.refined_budget = refined;
                }
                if let Some(b) = refined {
                    budget = (b as usize).min(turn_cap).max(thought.thinking);
                }
            }
        }
        if thought.answering {
            thought.thinking = 0;
        } else if !closed && ended.is_none() {
            self.force(run, &style.stop_text, "thinking-stop")?;
            if let Some(r) = run.record() {
                r.budget_hit = true;
            }
        }
        if ended.is_some() && may_answer && !opens_thought(&text, &style.open) {
            thought.thinking = 0;
        }
        Ok((thought, ended))
    }

    /// How many of `tokens` come before the one that starts `close` in their decoding: the
    /// longest prefix whose text stops before the tag (found by bisection, so long thoughts
    /// cost a few decodes, not one per token).
    fn cut_before(&self, tokens: &[u32], close: &str) -> usize {
        let Ok(full) = self.tokenizer.decode(tokens) else {
            return 0;
        };
        let Some(pos) = full.rfind(close) else {
            return tokens.len();
        };
        let fits = |k: usize| {
            self.tokenizer
                .decode(&tokens[..k])
                .is_ok_and(|t| t.len() <= pos && !t.contains(close))
        };
        // fits(0) holds; find the largest k with fits(k).
        let (mut lo, mut hi) = (0usize, tokens.len());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Decodes the reply (without its end-of-turn token) and splits it into reasoning,
    /// content and tool calls; the assistant message joins the conversation.
    fn parse(&self, run: &mut Run, sampled: &Sampled, eot: u32) -> Result<Reply, End> {
        let ended_by_eot = matches!(sampled.finish, FinishReason::StopToken(id) if id == eot)
            && sampled.tokens.last() == Some(&eot);
        let body = if ended_by_eot {
            &sampled.tokens[..sampled.tokens.len() - 1]
        } else {
            &sampled.tokens[..]
        };
        let text = self
            .tokenizer
            .decode(body)
            .map_err(|e| failed(format!("could not decode the reply: {e}")))?;
        let parsed = self.parser.parse(&text, run.turns);
        let thinking = match sampled.thinking {
            Some(n) => n,
            None if parsed.reasoning.is_some() => self.thinking_token_count(body),
            None => 0,
        };
        run.thinking_tokens += thinking;
        if let Some(r) = run.record() {
            r.thinking_tokens = thinking;
        }
        run.messages.push(Message {
            role: Role::Assistant,
            content: parsed.content.clone(),
            reasoning: parsed.reasoning.clone(),
            tool_calls: parsed.tool_calls.clone(),
            tool_call_id: None,
            name: None,
        });
        Ok(Reply {
            parsed,
            empty: text.trim().is_empty(),
            ended_by_eot,
        })
    }

    /// Ends the turn on the main line: an empty reply or one that never stopped ends the
    /// episode; a reply that stopped without the end-of-turn token is closed with it as
    /// forced tokens (no loss). Tokens the system inserts into a turn go here.
    fn end_turn(
        &self,
        run: &mut Run,
        sampled: &Sampled,
        reply: &Reply,
        eot: u32,
        max_tokens: usize,
    ) -> Result<(), End> {
        if reply.empty {
            run.error("policy", "the model produced an empty reply", false);
            return Err(End(Termination::EmptyReply));
        }
        match &sampled.finish {
            FinishReason::Length => {
                run.error(
                    "policy",
                    format!(
                        "the reply did not end within {max_tokens} tokens (no end-of-turn token)"
                    ),
                    false,
                );
                Err(End(Termination::TokenLimit))
            }
            FinishReason::StopString(_) | FinishReason::StopToken(_) if !reply.ended_by_eot => {
                run.append(SegmentKind::Forced, vec![eot], "turn-close")
            }
            _ => Ok(()),
        }
    }

    /// Acts on the reply: calls that did not parse are answered with an error, each tool
    /// call is a step of the environment, and a reply without calls is the answer. Returns
    /// the new messages; the episode is finished when the environment is done or has
    /// nothing to say.
    async fn act(
        &self,
        env: &mut dyn Environment,
        run: &mut Run,
        parsed: &ParsedReply,
        deadline: Deadline,
    ) -> Result<Vec<Message>, End> {
        let turn = run.turns;
        let mut new_messages = Vec::new();
        let mut done = false;
        let errors_before = run.tool_errors;
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
        // All calls of the reply at once: an environment may run them concurrently
        // (sub-agents); the default steps them in order.
        let actions: Vec<Action> = parsed
            .tool_calls
            .iter()
            .map(|c| Action::ToolCall(c.clone()))
            .collect();
        let outcomes = if actions.is_empty() {
            Vec::new()
        } else {
            within(deadline, &mut run.env_time, env.step_all(actions)).await?
        };
        self.adopt_children(env, run);
        for outcome in outcomes {
            run.tool_calls += 1;
            let outcome = outcome.map_err(|e| failed(format!("environment step failed: {e}")))?;
            if let StepOutcome::ToolResult(r) = &outcome
                && r.is_error
            {
                run.tool_errors += 1;
                run.error("tool", format!("{}: {}", r.name, r.content), true);
            }
            match self.outcome_message(outcome) {
                Some(m) => new_messages.push(m),
                None => done = true,
            }
        }
        let calls = parsed.errors.len() + parsed.tool_calls.len();
        let errors = run.tool_errors - errors_before;
        if let Some(r) = run.record() {
            r.tool_calls = calls as u32;
            r.tool_errors = errors;
        }
        // What the controller learns from this turn for the next one.
        let thought = run.record().map_or(0, |r| r.thinking_tokens);
        let signals = &mut run.signals;
        signals.last_step_failed = errors > 0;
        signals.tool_errors_last_turn = errors;
        signals.success_streak = if errors > 0 {
            0
        } else {
            signals.success_streak + 1
        };
        signals.closed_at_once_last_turn = thought <= 3;
        signals.probe_surprisal = None;
        if parsed.tool_calls.is_empty() && parsed.errors.is_empty() {
            run.final_answer = Some(parsed.content.clone());
            let answer = Action::Message {
                content: parsed.content.clone(),
            };
            match self.outcome_message(self.step_env(env, run, answer, deadline).await?) {
                Some(m) => new_messages.push(m),
                None => done = true,
            }
        }
        if done || new_messages.is_empty() {
            return Err(End(Termination::Finished));
        }
        Ok(new_messages)
    }

    /// Attaches the sub-agent episodes the environment ran to the run, stamped with the
    /// current turn and the sampled segment of its reply (which made the calls).
    fn adopt_children(&self, env: &mut dyn Environment, run: &mut Run) {
        let children = env.take_children();
        if children.is_empty() {
            return;
        }
        let segment = run.head.and_then(|head| {
            let path = run.trajectory.path(head).ok()?;
            path.iter()
                .rev()
                .find(|s| s.kind == SegmentKind::Sampled && s.turn == run.turns)
                .map(|s| s.id)
        });
        for mut child in children {
            child.parent_turn = run.turns;
            child.parent_segment = segment;
            run.children.push(child);
        }
    }

    /// One environment step within the episode's time.
    async fn step_env(
        &self,
        env: &mut dyn Environment,
        run: &mut Run,
        action: Action,
        deadline: Deadline,
    ) -> Result<StepOutcome, End> {
        within(deadline, &mut run.env_time, env.step(action))
            .await?
            .map_err(|e| failed(format!("environment step failed: {e}")))
    }

    /// The message an outcome adds to the conversation; `None` when the environment is done.
    fn outcome_message(&self, outcome: StepOutcome) -> Option<Message> {
        match outcome {
            StepOutcome::ToolResult(r) => Some(Message::tool(
                r.call_id,
                r.name,
                self.outside_text(&r.content),
            )),
            StepOutcome::UserTurn { content } => Some(Message::user(self.outside_text(&content))),
            StepOutcome::Done => None,
        }
    }

    /// Appends the rendered observations to the main line: the template's text after the
    /// assistant turn's end-of-turn token, encoded alone (sampled tokens are never
    /// re-encoded), rendering only what is new (see [`SuffixRenderer`]).
    fn observe(&self, run: &mut Run, new_messages: Vec<Message>) -> Result<(), End> {
        self.decide_next(run);
        let options = self.render_options(run);
        let suffix = run
            .suffixes
            .suffix(
                self.template.as_ref(),
                &run.messages,
                &new_messages,
                &run.tools,
                &options,
                run.turns,
            )
            .map_err(failed)?;
        run.messages.extend(new_messages);
        let ids = self.tokenizer.encode(&suffix).map_err(failed)?;
        run.append(SegmentKind::Observation, ids, "observation")
    }

    /// Assembles the episode from what the run recorded.
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
        let mut per_turn = run.per_turn;
        if let Some(leaf) = run.trajectory.main_leaf()
            && let Ok(path) = run.trajectory.path(leaf)
        {
            for seg in path {
                let Some(r) = per_turn.iter_mut().find(|r| r.turn == seg.turn) else {
                    continue;
                };
                match seg.kind {
                    SegmentKind::Sampled => r.answer_tokens += seg.tokens.len(),
                    SegmentKind::Forced => r.forced_tokens += seg.tokens.len(),
                    SegmentKind::Observation => r.observation_tokens += seg.tokens.len(),
                    SegmentKind::Prompt => {}
                }
            }
            for r in &mut per_turn {
                r.answer_tokens = r.answer_tokens.saturating_sub(r.thinking_tokens);
            }
        }
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
            per_turn,
        };
        Episode {
            task: task.clone(),
            messages: run.messages,
            tools: run.tools,
            trajectory: run.trajectory,
            verdict,
            outcome,
            children: run.children,
        }
    }
}

/// What the thinking part of a turn sampled.
#[derive(Debug, Default)]
struct Thought {
    /// Sampled tokens kept on the main line.
    sampled: usize,
    /// Of those, inside the thought.
    thinking: usize,
    /// The model answered without opening a thought.
    answering: bool,
}

/// Whether a reply's text so far opens a thought (or may still: it is a prefix of the tag).
fn opens_thought(text: &str, open: &str) -> bool {
    let t = text.trim_start();
    t.starts_with(open) || open.starts_with(t)
}

/// The largest char boundary of `text` at or before `i`.
fn floor_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
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

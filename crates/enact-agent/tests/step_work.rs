//! The loop's work per step does not grow with the episode: counted (never timed) as the
//! bytes the chat template renders and the tokenizer encodes and decodes between two samples.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use enact_agent::{Agent, AgentConfig};
use enact_core::{
    ChatTemplate, Message, Policy, PolicyError, RenderOptions, Sample, SampleRequest,
    TemplateError, Termination, Tokenizer, TokenizerError, ToolSpec,
};
use enact_env::Suite;
use enact_env::calc::{CalcEnv, CalcSuite};
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, JinjaTemplate, ScriptedPolicy};

const QWEN3: &str = include_str!("../../enact-model/tests/fixtures/templates/qwen3.jinja");

/// Bytes rendered, encoded and decoded so far.
#[derive(Default)]
struct Work(AtomicUsize);

impl Work {
    fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

struct CountingTemplate {
    inner: Arc<dyn ChatTemplate>,
    work: Arc<Work>,
}

impl ChatTemplate for CountingTemplate {
    fn render(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let text = self.inner.render(messages, tools, options)?;
        self.work.add(text.len());
        Ok(text)
    }
    fn end_of_turn(&self) -> &str {
        self.inner.end_of_turn()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
}

struct CountingTokenizer {
    inner: ByteTokenizer,
    work: Arc<Work>,
}

impl Tokenizer for CountingTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.work.add(text.len());
        self.inner.encode(text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.work.add(ids.len());
        self.inner.decode(ids)
    }
    fn special_token_id(&self, text: &str) -> Option<u32> {
        self.inner.special_token_id(text)
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
    fn special_tokens(&self) -> Vec<String> {
        self.inner.special_tokens()
    }
}

/// A scripted policy that notes the work done so far each time it is asked to sample.
struct Snapshots {
    inner: ScriptedPolicy,
    work: Arc<Work>,
    seen: Mutex<Vec<usize>>,
}

#[async_trait]
impl Policy for Snapshots {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError> {
        self.seen.lock().unwrap().push(self.work.get());
        self.inner.sample(request).await
    }
}

/// The work between consecutive samples of an episode of `steps` identical tool steps.
async fn work_per_turn(template: Arc<dyn ChatTemplate>, steps: usize) -> Vec<usize> {
    let work = Arc::new(Work::default());
    let call = "<think>\nAgain.\n</think>\n\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"12*34\"}}\n</tool_call>";
    let mut turns = vec![call.to_string(); steps];
    turns.push("408".into());
    let policy = Arc::new(Snapshots {
        inner: ScriptedPolicy::new(turns, Arc::new(ByteTokenizer::new())),
        work: work.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let agent = Agent::new(
        policy.clone(),
        Arc::new(CountingTokenizer {
            inner: ByteTokenizer::new(),
            work: work.clone(),
        }),
        Arc::new(CountingTemplate {
            inner: template,
            work,
        }),
        Arc::new(HermesParser),
    )
    .with_config(AgentConfig {
        max_turns: steps as u32 + 1,
        max_context_tokens: usize::MAX,
        ..AgentConfig::default()
    });
    let task = CalcSuite.tasks("test", 1, 7).remove(0);
    let ep = agent.run(&task, &mut CalcEnv::new(), None).await;
    assert_eq!(
        ep.outcome.termination,
        Termination::Finished,
        "{:?}",
        ep.outcome.errors
    );
    assert_eq!(ep.outcome.tool_calls as usize, steps);
    let seen = policy.seen.lock().unwrap().clone();
    seen.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn the_work_per_step_is_flat_in_the_number_of_turns() {
    let templates: [(&str, Arc<dyn ChatTemplate>); 2] = [
        ("chatml", Arc::new(ChatMlTemplate::default())),
        (
            "qwen3",
            Arc::new(JinjaTemplate::new(QWEN3, "qwen3").unwrap()),
        ),
    ];
    for (name, template) in templates {
        let per_turn = work_per_turn(template, 40).await;
        // per_turn[i] is turn i + 1's parse, act and observe (then the next sample).
        let second = per_turn[1];
        for (i, &w) in per_turn.iter().enumerate().skip(2) {
            assert!(
                w <= 2 * second,
                "{name}: turn {} did {w} bytes of work, turn 2 did {second}: {per_turn:?}",
                i + 1
            );
        }
        // Turn 40 does no more than turn 3 (identical steps), up to the digits of its number.
        assert!(per_turn[39] <= per_turn[2] + 64, "{name}: {per_turn:?}");
    }
}

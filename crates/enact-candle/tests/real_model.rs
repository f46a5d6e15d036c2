//! Tests on the real default model (SmolLM2-135M-Instruct). They skip, with a message, when
//! the model is not installed (`enact model fetch`; CI fetches it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use enact_agent::{Agent, AgentConfig};
use enact_candle::{
    CandlePolicy, Engine, EngineOptions, GenStats, PolicyOptions, WeightFormat, fetch,
};
use enact_core::{
    Action, EnvError, Environment, Message, Policy, PolicyError, Reset, Role, Sample,
    SampleRequest, SamplingParams, SegmentKind, StepOutcome, Submission, Task, Tokenizer, ToolCall,
    ToolResult, ToolSpec,
};
use enact_model::{ChatMlTemplate, GgufMetadata, HermesParser, HfTokenizer};

/// Re-scoring tolerance on the real model (the engine is designed to be bit-exact: 0).
const TOLERANCE: f32 = 1e-5;

fn model() -> Option<std::path::PathBuf> {
    let p = fetch::default_model_path();
    if p.exists() {
        Some(p)
    } else {
        enact_testkit::skip(
            enact_testkit::Requirement::Model,
            &format!(
                "the default model is not installed at {} (run `enact model fetch`)",
                p.display()
            ),
        );
        None
    }
}

/// Records every request and what the engine returned.
struct Recording {
    inner: CandlePolicy,
    log: Mutex<Vec<(SampleRequest, Sample, GenStats)>>,
}

#[async_trait]
impl Policy for Recording {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError> {
        let (s, st) = self.inner.sample_with_stats(request.clone()).await?;
        self.log.lock().unwrap().push((request, s.clone(), st));
        Ok(s)
    }
    fn version(&self) -> u64 {
        self.inner.version()
    }
    fn context_limit(&self) -> usize {
        self.inner.context_limit()
    }
}

/// A calculator with one tool, `add`.
struct AddEnv {
    answer: Option<String>,
}

fn add_tool() -> ToolSpec {
    ToolSpec {
        name: "add".into(),
        description: "Add two numbers.".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"]
        }),
    }
}

fn call(name: &str, args: serde_json::Value, id: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: args,
    }
}

#[async_trait]
impl Environment for AddEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        // A worked example first, so that a 135M model imitates the calling convention.
        let example = |a: i64, b: i64, id: &str| {
            let mut m = Message::assistant("");
            m.tool_calls = vec![call("add", serde_json::json!({"a": a, "b": b}), id)];
            m
        };
        Ok(Reset {
            messages: vec![
                Message::system(
                    "You are a calculator assistant. Always use the add tool to add numbers.",
                ),
                Message::user("What is 2361 + 4519?"),
                example(2361, 4519, "ex_1"),
                Message::tool("ex_1", "add", "6880"),
                Message::assistant("6880"),
                Message::user("What is 70412 + 1888?"),
                example(70412, 1888, "ex_2"),
                Message::tool("ex_2", "add", "72300"),
                Message::assistant("72300"),
                Message::user(task.prompt.clone()),
            ],
            tools: vec![add_tool()],
        })
    }
    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        let Action::ToolCall(c) = action else {
            return Ok(StepOutcome::Done);
        };
        let num = |k: &str| c.arguments.get(k).and_then(|v| v.as_f64());
        let (content, is_error) = match (c.name.as_str(), num("a"), num("b")) {
            ("add", Some(a), Some(b)) => (format!("{}", a + b), false),
            _ => ("error: call add with numbers a and b".to_string(), true),
        };
        Ok(StepOutcome::ToolResult(ToolResult {
            call_id: c.id,
            name: c.name,
            content,
            is_error,
        }))
    }
    async fn submission(&mut self) -> Result<Submission, EnvError> {
        Ok(Submission {
            final_answer: self.answer.clone(),
            ..Default::default()
        })
    }
    async fn close(&mut self) -> Result<(), EnvError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_tool_episode_is_token_exact_and_rescores() {
    let Some(path) = model() else { return };
    let meta = GgufMetadata::read(&path).unwrap();
    let tokenizer = Arc::new(HfTokenizer::from_gguf(&meta).unwrap());
    let engine = Engine::load(
        &path,
        &EngineOptions {
            threads: 2,
            weights: WeightFormat::Q8_0,
        },
    )
    .unwrap();
    let policy = Arc::new(Recording {
        inner: CandlePolicy::new(engine, PolicyOptions::default()),
        log: Mutex::new(Vec::new()),
    });
    let mut config = AgentConfig {
        max_turns: 4,
        max_tokens_per_turn: 64,
        ..AgentConfig::default()
    };
    config.sampling = SamplingParams {
        temperature: 0.0,
        seed: Some(1),
        ..SamplingParams::default()
    };
    let agent = Agent::new(
        policy.clone(),
        tokenizer.clone(),
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    )
    .with_config(config);
    let task = Task {
        id: "add-17-25".into(),
        prompt: "What is 48213 + 91877?".into(),
        env: serde_json::Value::Null,
        hidden: None,
        split: None,
        metadata: Default::default(),
        thinking: None,
    };
    let mut env = AddEnv { answer: None };
    let ep = agent.run(&task, &mut env, None).await;
    let log = policy.log.lock().unwrap().clone();
    eprintln!(
        "episode: {} turns, {} tool calls, termination {:?}",
        ep.outcome.turns, ep.outcome.tool_calls, ep.outcome.termination
    );
    for (i, (r, s, st)) in log.iter().enumerate() {
        eprintln!(
            "turn {}: context {} tokens, prefilled {} · sampled {:?}",
            i + 1,
            r.context.len(),
            st.prefilled_tokens,
            tokenizer.decode(&s.tokens).unwrap()
        );
    }
    let traj = &ep.trajectory;
    traj.validate().unwrap();
    assert!(traj.token_exact);
    assert!(!log.is_empty());
    // A tool-using, multi-turn episode.
    assert!(ep.outcome.tool_calls >= 1, "the model called no tool");
    assert!(log.len() >= 2, "the episode had a single turn");

    let leaf = traj.main_leaf().unwrap();
    let segs = traj.path(leaf).unwrap();
    // Each request's context is exactly the trajectory up to that sampled segment, and each
    // sampled segment is exactly what the engine returned.
    let mut prefix: Vec<u32> = Vec::new();
    let mut k = 0;
    for seg in &segs {
        if seg.kind == SegmentKind::Sampled {
            let (r, s, _) = &log[k];
            assert_eq!(
                r.context.as_slice(),
                prefix.as_slice(),
                "context of turn {}",
                k + 1
            );
            assert_eq!(seg.tokens, s.tokens);
            assert_eq!(seg.logprobs, s.logprobs);
            k += 1;
        }
        prefix.extend(&seg.tokens);
    }
    assert_eq!(k, log.len());
    // Rendered (non-sampled) segments are the tokenizer's encoding of rendered text: the
    // opening prompt re-encodes to itself.
    assert_eq!(segs[0].kind, SegmentKind::Prompt);
    let opening = tokenizer.decode(&segs[0].tokens).unwrap();
    assert_eq!(tokenizer.encode(&opening).unwrap(), segs[0].tokens);
    // Later turns only computed their new suffix (KV-cache prefix reuse).
    for (i, (r, _, st)) in log.iter().enumerate().skip(1) {
        let prev = &log[i - 1];
        let reused = prev.0.context.len() + prev.1.tokens.len() - 1;
        assert_eq!(
            st.prefilled_tokens,
            r.context.len() - reused,
            "turn {}",
            i + 1
        );
    }
    // Re-scoring the whole trajectory reproduces every sampled logprob.
    let scored = policy.inner.score(Arc::new(prefix.clone())).await.unwrap();
    let mut pos = 0;
    let mut max_diff = 0f32;
    for seg in &segs {
        if seg.kind == SegmentKind::Sampled {
            for (j, lp) in seg.logprobs.iter().enumerate() {
                max_diff = max_diff.max((scored[pos + j] - lp).abs());
            }
        }
        pos += seg.tokens.len();
    }
    eprintln!("re-scoring max |difference| = {max_diff}");
    assert!(max_diff <= TOLERANCE, "re-scoring differs by {max_diff}");
    let _ = Role::Assistant;
}

#[test]
fn default_model_generates_sensible_text_and_checksum_holds() {
    let Some(path) = model() else { return };
    fetch::verify_default(&path).unwrap();
    let meta = GgufMetadata::read(&path).unwrap();
    let tokenizer = HfTokenizer::from_gguf(&meta).unwrap();
    let engine = Engine::load(
        &path,
        &EngineOptions {
            threads: 2,
            weights: WeightFormat::Native,
        },
    )
    .unwrap();
    assert_eq!(engine.model().cfg.n_layers, 30);
    assert_eq!(engine.model().cfg.vocab, 49152);
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let ids = tokenizer.encode(prompt).unwrap();
    let eot = tokenizer.special_token_id("<|im_end|>").unwrap();
    let r = SampleRequest {
        context: Arc::new(ids.clone()),
        max_tokens: 24,
        stop_tokens: vec![eot],
        stop_strings: vec![],
        params: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        on_token: None,
    };
    let s = engine.generate(&r).unwrap();
    let text = tokenizer.decode(&s.tokens).unwrap();
    eprintln!("SmolLM2 says: {text:?}");
    assert!(text.contains("Paris"), "{text}");
    let mut all = ids.clone();
    all.extend(&s.tokens);
    let scored = engine.score(&all).unwrap();
    assert_eq!(&scored[ids.len()..], &s.logprobs[..]);
}

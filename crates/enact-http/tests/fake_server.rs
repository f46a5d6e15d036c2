//! The HTTP backend against a fake OpenAI-compatible server on 127.0.0.1: every dialect's
//! happy path with token ids and logprobs, the error cases (server down, 5xx, 429 with
//! Retry-After, 400, malformed JSON, a hanging server, wrong-length logprobs), the
//! concurrency limit, whole agent episodes in the calc environment, and weight publishing
//! (LoRA adapters and full weights: paths, payloads, refusals).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use enact_agent::Agent;
use enact_core::{
    FinishReason, Policy, PolicyError, SampleRequest, SamplingParams, SegmentKind, Termination,
    Tokenizer,
};
use enact_env::Suite;
use enact_env::calc::{CalcEnv, CalcSuite, CalcVerifier};
use enact_http::{Dialect, HttpConfig, HttpPolicy, PublishError, WeightPublisher};
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser};
use serde_json::{Value, json};

const EOT: u32 = 257; // <|im_end|> in the byte tokenizer

// ---------------------------------------------------------------------------------------
// The fake server.

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    Json(u16, Value),
    Raw(u16, Vec<(&'static str, String)>, String),
    /// Never answers (well, after a minute).
    Hang,
    /// Answers after a delay.
    Slow(Duration, Box<Reply>),
}

type Handler = dyn Fn(&str, &Value, usize) -> Reply + Send + Sync;

struct Seen {
    method: String,
    path: String,
    body: Value,
    auth: Option<String>,
}

struct ServerState {
    /// Answers used first, in order; then `handler`.
    queue: Mutex<VecDeque<Reply>>,
    handler: Box<Handler>,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    generations: AtomicUsize,
}

struct Fake {
    url: String,
    state: Arc<ServerState>,
}

impl Fake {
    async fn start(handler: impl Fn(&str, &Value, usize) -> Reply + Send + Sync + 'static) -> Fake {
        Self::start_with(Vec::new(), handler).await
    }

    async fn start_with(
        queue: Vec<Reply>,
        handler: impl Fn(&str, &Value, usize) -> Reply + Send + Sync + 'static,
    ) -> Fake {
        let state = Arc::new(ServerState {
            queue: Mutex::new(queue.into()),
            handler: Box::new(handler),
            seen: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            generations: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake {
            url: format!("http://{addr}/v1"),
            state,
        }
    }

    fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.body.clone())
            .collect()
    }
}

async fn handle(
    State(s): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let path = uri.path().to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    s.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        body: body.clone(),
        auth,
    });
    let n = if method == Method::POST {
        s.generations.fetch_add(1, Ordering::SeqCst)
    } else {
        0
    };
    let queued = s.queue.lock().unwrap().pop_front();
    let reply = queued.unwrap_or_else(|| (s.handler)(&path, &body, n));
    let resp = render(reply).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

async fn render(mut reply: Reply) -> Response {
    loop {
        match reply {
            Reply::Json(code, v) => {
                return (StatusCode::from_u16(code).unwrap(), axum::Json(v)).into_response();
            }
            Reply::Raw(code, headers, text) => {
                let mut r = (StatusCode::from_u16(code).unwrap(), text).into_response();
                for (k, v) in headers {
                    r.headers_mut().insert(k, v.parse().unwrap());
                }
                return r;
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return StatusCode::GATEWAY_TIMEOUT.into_response();
            }
            Reply::Slow(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
        }
    }
}

/// `/v1/models` for servers asked for the model name.
fn models() -> Reply {
    Reply::Json(
        200,
        json!({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}),
    )
}

fn vllm_reply(ids: &[u32], lp: f32, stop_reason: Value) -> Reply {
    let finish = if stop_reason.is_null() && ids.last() != Some(&EOT) {
        "length"
    } else {
        "stop"
    };
    Reply::Json(
        200,
        json!({"id": "cmpl-1", "object": "text_completion", "model": "fake-model",
            "choices": [{"index": 0, "text": "…", "token_ids": ids,
                "logprobs": {"tokens": ids.iter().map(|i| format!("token_id:{i}")).collect::<Vec<_>>(),
                    "token_logprobs": vec![lp; ids.len()], "text_offset": [], "top_logprobs": []},
                "finish_reason": finish, "stop_reason": stop_reason}]}),
    )
}

fn sglang_reply(ids: &[u32], lp: f32) -> Reply {
    let lps: Vec<Value> = ids.iter().map(|&i| json!([lp, i, null])).collect();
    Reply::Json(
        200,
        json!({"text": "…", "output_ids": ids, "meta_info": {"id": "x", "prompt_tokens": 3,
            "completion_tokens": ids.len(), "output_token_logprobs": lps,
            "finish_reason": {"type": "stop", "matched": EOT}}}),
    )
}

fn llamacpp_reply(ids: &[u32], lp: f32) -> Reply {
    let probs: Vec<Value> = ids
        .iter()
        .map(|&i| json!({"id": i, "token": "?", "logprob": lp, "bytes": [], "top_logprobs": []}))
        .collect();
    Reply::Json(
        200,
        json!({"content": "…", "tokens": ids, "stop": true, "stop_type": "eos", "stopping_word": "",
            "completion_probabilities": probs, "tokens_predicted": ids.len()}),
    )
}

fn request(context: Vec<u32>) -> SampleRequest {
    SampleRequest {
        context: Arc::new(context),
        max_tokens: 64,
        stop_tokens: vec![EOT],
        stop_strings: Vec::new(),
        params: SamplingParams {
            temperature: 0.5,
            top_p: 0.9,
            top_k: 20,
            min_p: 0.0,
            seed: Some(11),
        },
        on_token: None,
    }
}

fn tokenizer() -> Arc<dyn Tokenizer> {
    Arc::new(ByteTokenizer::new())
}

fn fast(url: &str, dialect: Dialect) -> HttpConfig {
    let mut c = HttpConfig::new(url, dialect);
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(50);
    c.request_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    c.max_attempts = 3;
    c
}

fn policy(config: HttpConfig) -> HttpPolicy {
    HttpPolicy::new(config, tokenizer()).unwrap()
}

// ---------------------------------------------------------------------------------------
// Happy paths.

#[tokio::test]
async fn vllm_is_token_exact_with_ids_and_logprobs() {
    let fake = Fake::start(|path, _, _| match path {
        "/v1/models" => models(),
        _ => vllm_reply(&[72, 105, EOT], -0.25, json!(EOT)),
    })
    .await;
    let p = policy(fast(&fake.url, Dialect::Vllm));
    assert!(p.token_exact());
    for _ in 0..2 {
        let s = p.sample(request(vec![1, 2, 3])).await.unwrap();
        assert_eq!(s.tokens, vec![72, 105, EOT]);
        assert_eq!(s.logprobs, vec![-0.25; 3]);
        assert_eq!(s.policy_versions, vec![0; 3]);
        assert_eq!(s.finish, FinishReason::StopToken(EOT));
    }
    // The model name was asked once, then cached.
    let model_lookups = fake
        .state
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "GET" && s.path == "/v1/models")
        .count();
    assert_eq!(model_lookups, 1);
    let body = &fake.bodies("/v1/completions")[0];
    assert_eq!(body["model"], "fake-model");
    assert_eq!(body["prompt"], json!([1, 2, 3]));
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["stop_token_ids"], json!([EOT]));
    assert_eq!(body["logprobs"], 1);
    assert_eq!(body["return_token_ids"], true);
    assert_eq!(body["return_tokens_as_token_ids"], true);
    assert_eq!(body["top_k"], 20);
    assert_eq!(body["seed"], 11);
    assert_eq!(body["skip_special_tokens"], false);

    p.set_version(4);
    let s = p.sample(request(vec![1])).await.unwrap();
    assert_eq!(s.policy_versions, vec![4; 3]);
}

#[tokio::test]
async fn vllm_stop_token_left_out_by_the_server_is_appended() {
    let fake = Fake::start(|_, _, _| vllm_reply(&[72, 105], -0.5, json!(EOT))).await;
    let mut c = fast(&fake.url, Dialect::Vllm);
    c.model = Some("m".into());
    let s = policy(c).sample(request(vec![1])).await.unwrap();
    assert_eq!(s.tokens, vec![72, 105, EOT]);
    assert_eq!(s.logprobs, vec![-0.5, -0.5, 0.0]);
    assert_eq!(s.finish, FinishReason::StopToken(EOT));
    // A length stop stays a length stop.
    let fake = Fake::start(|_, _, _| vllm_reply(&[72, 105], -0.5, Value::Null)).await;
    let mut c = fast(&fake.url, Dialect::Vllm);
    c.model = Some("m".into());
    let s = policy(c).sample(request(vec![1])).await.unwrap();
    assert_eq!(s.tokens, vec![72, 105]);
    assert_eq!(s.finish, FinishReason::Length);
}

#[tokio::test]
async fn sglang_generate_is_token_exact() {
    let fake = Fake::start(|_, _, _| sglang_reply(&[65, EOT], -1.0)).await;
    let p = policy(fast(&fake.url, Dialect::Sglang));
    assert!(p.token_exact());
    let s = p.sample(request(vec![5, 6])).await.unwrap();
    assert_eq!(s.tokens, vec![65, EOT]);
    assert_eq!(s.logprobs, vec![-1.0, -1.0]);
    assert_eq!(s.finish, FinishReason::StopToken(EOT));
    let body = &fake.bodies("/generate")[0];
    assert_eq!(body["input_ids"], json!([5, 6]));
    assert_eq!(body["return_logprob"], true);
    assert_eq!(body["sampling_params"]["max_new_tokens"], 64);
    assert_eq!(body["sampling_params"]["stop_token_ids"], json!([EOT]));
    assert_eq!(body["sampling_params"]["top_k"], 20);
    assert_eq!(body["sampling_params"]["sampling_seed"], 11);
    assert!(body.get("model").is_none(), "no model lookup for SGLang");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn llamacpp_completion_is_token_exact() {
    let fake = Fake::start(|_, _, _| llamacpp_reply(&[65, 66, EOT], -0.125)).await;
    let p = policy(fast(&fake.url, Dialect::LlamaCpp));
    let s = p.sample(request(vec![7])).await.unwrap();
    assert_eq!(s.tokens, vec![65, 66, EOT]);
    assert_eq!(s.logprobs, vec![-0.125; 3]);
    assert_eq!(s.finish, FinishReason::StopToken(EOT));
    let body = &fake.bodies("/completion")[0];
    assert_eq!(body["prompt"], json!([7]));
    assert_eq!(body["n_predict"], 64);
    assert_eq!(body["return_tokens"], true);
    assert_eq!(body["n_probs"], 1);
    assert_eq!(body["top_k"], 20);
    // No stop-token ids in llama.cpp's API: the end-of-turn token's text is a stop word.
    assert_eq!(body["stop"], json!(["<|im_end|>"]));
}

#[tokio::test]
async fn ollama_is_text_level() {
    let fake = Fake::start(|path, _, _| match path {
        "/v1/models" => models(),
        _ => Reply::Json(
            200,
            json!({"model": "fake-model", "response": "Hi!", "done": true, "done_reason": "stop"}),
        ),
    })
    .await;
    let p = policy(fast(&fake.url, Dialect::Ollama));
    assert!(!p.token_exact());
    let tok = ByteTokenizer::new();
    let ctx = tok
        .encode("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let s = p.sample(request(ctx)).await.unwrap();
    // The reply re-encoded, closed with the end-of-turn token the server stripped.
    let mut want = tok.encode("Hi!").unwrap();
    want.push(EOT);
    assert_eq!(s.tokens, want);
    assert_eq!(s.logprobs, vec![0.0; want.len()]);
    assert_eq!(s.finish, FinishReason::StopToken(EOT));
    let body = &fake.bodies("/api/generate")[0];
    assert_eq!(body["raw"], true);
    assert_eq!(body["model"], "fake-model");
    assert_eq!(
        body["prompt"],
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(body["options"]["num_predict"], 64);
    assert_eq!(body["options"]["stop"], json!(["<|im_end|>"]));
}

#[tokio::test]
async fn openai_text_mode_reports_length_and_uses_aligned_logprobs() {
    let fake = Fake::start(|_, _, _| {
        Reply::Json(
            200,
            json!({"choices": [{"index": 0, "text": "abc", "finish_reason": "length",
                "logprobs": {"tokens": ["a", "b", "c"], "token_logprobs": [-1.0, -2.0, -3.0]}}]}),
        )
    })
    .await;
    let mut c = fast(&fake.url, Dialect::OpenAiText);
    c.model = Some("gpt-x".into());
    c.api_key = Some("sk-test".into());
    let p = policy(c);
    assert!(!p.token_exact());
    let s = p.sample(request(vec![104, 105])).await.unwrap();
    assert_eq!(s.tokens, vec![97, 98, 99]);
    assert_eq!(s.logprobs, vec![-1.0, -2.0, -3.0]);
    assert_eq!(s.finish, FinishReason::Length);
    let seen = fake.state.seen.lock().unwrap();
    assert_eq!(seen[0].body["prompt"], "hi");
    assert_eq!(seen[0].body["model"], "gpt-x");
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer sk-test"));
}

// ---------------------------------------------------------------------------------------
// Errors: retried or reported, never a panic.

#[tokio::test]
async fn server_down_is_a_clear_error_after_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // dropped: nothing listens there now
    let mut c = fast(&format!("http://127.0.0.1:{port}/v1"), Dialect::Sglang);
    c.max_attempts = 2;
    let started = Instant::now();
    let err = policy(c).sample(request(vec![1])).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PolicyError::Backend(_)), "{msg}");
    assert!(msg.contains("gave up after 2 attempt"), "{msg}");
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let fake = Fake::start_with(
        vec![
            Reply::Json(500, json!({"error": {"message": "CUDA hiccup"}})),
            Reply::Raw(503, vec![], "overloaded".into()),
        ],
        |_, _, _| sglang_reply(&[65, EOT], -0.5),
    )
    .await;
    let s = policy(fast(&fake.url, Dialect::Sglang))
        .sample(request(vec![1]))
        .await
        .unwrap();
    assert_eq!(s.tokens, vec![65, EOT]);
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn persistent_server_errors_give_up_with_the_message() {
    let fake =
        Fake::start(|_, _, _| Reply::Json(502, json!({"message": "bad gateway upstream"}))).await;
    let err = policy(fast(&fake.url, Dialect::Sglang))
        .sample(request(vec![1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gave up after 3 attempt"), "{err}");
    assert!(
        err.contains("502") && err.contains("bad gateway upstream"),
        "{err}"
    );
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let fake = Fake::start_with(
        vec![Reply::Raw(
            429,
            vec![("retry-after", "1".into())],
            r#"{"error": "slow down"}"#.into(),
        )],
        |_, _, _| llamacpp_reply(&[65, EOT], -0.5),
    )
    .await;
    let started = Instant::now();
    let s = policy(fast(&fake.url, Dialect::LlamaCpp))
        .sample(request(vec![1]))
        .await
        .unwrap();
    assert_eq!(s.tokens, vec![65, EOT]);
    assert_eq!(fake.requests(), 2);
    // Backoff alone would be ≤ 50 ms; the server asked for a second.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_say_why() {
    let fake = Fake::start(|_, _, _| {
        Reply::Json(
            400,
            json!({"object": "error", "message": "This model's maximum context length is 4096 tokens", "type": "BadRequestError", "code": 400}),
        )
    })
    .await;
    let mut c = fast(&fake.url, Dialect::Vllm);
    c.model = Some("m".into());
    let err = policy(c)
        .sample(request(vec![1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 400"), "{err}");
    assert!(err.contains("maximum context length is 4096"), "{err}");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn malformed_json_is_a_clear_error() {
    let fake = Fake::start(|_, _, _| Reply::Raw(200, vec![], "{\"choices\": [".into())).await;
    let mut c = fast(&fake.url, Dialect::Vllm);
    c.model = Some("m".into());
    let err = policy(c)
        .sample(request(vec![1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("malformed JSON"), "{err}");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn an_oversized_response_is_an_error_not_unbounded_memory() {
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(200_000));
    let fake = Fake::start(move |_, _, _| Reply::Raw(200, vec![], big.clone())).await;
    let mut c = fast(&fake.url, Dialect::Vllm);
    c.model = Some("m".into());
    c.max_response_bytes = 100_000;
    let err = policy(c)
        .sample(request(vec![1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 100000 bytes"), "{err}");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn responses_of_the_wrong_shape_are_clear_errors() {
    let replies = vec![
        json!({"unexpected": true}),
        json!({"choices": [{"text": "plain text, no ids", "finish_reason": "stop"}]}),
        json!({"choices": [{"token_ids": [1, -4], "finish_reason": "stop"}]}),
        json!({"choices": [{"token_ids": [1], "logprobs": {"token_logprobs": ["x"]}, "finish_reason": "stop"}]}),
        json!({"choices": [{"token_ids": [1], "logprobs": {"token_logprobs": [-1.0]}, "finish_reason": "abort"}]}),
        json!([]),
        json!("just a string"),
    ];
    for r in replies {
        let reply = Reply::Json(200, r.clone());
        let fake = Fake::start(move |_, _, _| reply.clone()).await;
        let mut c = fast(&fake.url, Dialect::Vllm);
        c.model = Some("m".into());
        let err = policy(c)
            .sample(request(vec![1]))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected vllm response"), "{r}: {err}");
    }
}

#[tokio::test]
async fn wrong_length_logprobs_are_rejected() {
    let fake = Fake::start(|_, _, _| {
        Reply::Json(
            200,
            json!({"output_ids": [1, 2, 3], "meta_info": {
                "output_token_logprobs": [[-0.1, 1, null], [-0.1, 2, null]],
                "finish_reason": {"type": "length", "length": 3}}}),
        )
    })
    .await;
    let err = policy(fast(&fake.url, Dialect::Sglang))
        .sample(request(vec![1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("disagrees") || err.contains("logprobs"),
        "{err}"
    );

    let fake = Fake::start(|_, _, _| {
        Reply::Json(
            200,
            json!({"tokens": [1, 2], "stop_type": "limit",
                "completion_probabilities": [{"id": 1, "logprob": -0.1}]}),
        )
    })
    .await;
    let err = policy(fast(&fake.url, Dialect::LlamaCpp))
        .sample(request(vec![1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected llamacpp response"), "{err}");
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let fake = Fake::start(|_, _, _| Reply::Hang).await;
    let mut c = fast(&fake.url, Dialect::Sglang);
    c.request_timeout = Duration::from_millis(200);
    c.max_attempts = 2;
    let started = Instant::now();
    let err = policy(c).sample(request(vec![1])).await.unwrap_err();
    assert!(
        matches!(err, PolicyError::Timeout(d) if d == Duration::from_millis(200)),
        "{err}"
    );
    assert_eq!(fake.requests(), 2, "a timeout is retried");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn the_concurrency_limit_bounds_requests_in_flight() {
    let fake = Fake::start(|_, _, _| {
        Reply::Slow(
            Duration::from_millis(150),
            Box::new(sglang_reply(&[65, EOT], -0.5)),
        )
    })
    .await;
    let mut c = fast(&fake.url, Dialect::Sglang);
    c.max_concurrency = 2;
    let p = policy(c);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let p = p.clone();
        set.spawn(async move { p.sample(request(vec![1])).await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().unwrap().tokens, vec![65, EOT]);
    }
    assert_eq!(fake.requests(), 6);
    assert_eq!(fake.state.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn context_limit_and_zero_budget_need_no_server() {
    let mut c = HttpConfig::new("http://127.0.0.1:9/v1", Dialect::Sglang);
    c.context_limit = Some(2);
    let p = policy(c);
    assert_eq!(p.context_limit(), 2);
    assert!(matches!(
        p.sample(request(vec![1, 2, 3])).await,
        Err(PolicyError::ContextTooLong {
            context: 3,
            limit: 2
        })
    ));
    let mut r = request(vec![1]);
    r.max_tokens = 0;
    let s = p.sample(r).await.unwrap();
    assert!(s.tokens.is_empty());
    assert_eq!(s.finish, FinishReason::Length);
}

#[tokio::test]
async fn over_long_replies_are_cut_to_max_tokens() {
    let fake = Fake::start(|_, _, _| sglang_reply(&[65, 66, 67, 68, EOT], -0.5)).await;
    let mut r = request(vec![1]);
    r.max_tokens = 3;
    let s = policy(fast(&fake.url, Dialect::Sglang))
        .sample(r)
        .await
        .unwrap();
    assert_eq!(s.tokens, vec![65, 66, 67]);
    assert_eq!(s.logprobs.len(), 3);
    assert_eq!(s.finish, FinishReason::Length);
}

#[test]
fn bad_configs_are_rejected() {
    let mut c = HttpConfig::new("http://127.0.0.1:1", Dialect::Vllm);
    c.max_concurrency = 0;
    assert!(HttpPolicy::new(c, tokenizer()).is_err());
    assert!(HttpPolicy::new(HttpConfig::new("file:///x", Dialect::Vllm), tokenizer()).is_err());
    assert!(enact_http::build_policy("http://127.0.0.1:1#nonsense-dialect:x", tokenizer()).is_ok());
    assert!(enact_http::is_http_spec("HTTP://x"));
    assert!(!enact_http::is_http_spec("scripted"));
}

// ---------------------------------------------------------------------------------------
// Whole episodes: the agent in the calc environment against a server that replays the
// reference solution.

fn replay_handler(
    dialect: Dialect,
    turns: Vec<String>,
) -> impl Fn(&str, &Value, usize) -> Reply + Send + Sync + 'static {
    move |path, body, n| {
        if path == "/v1/models" {
            return models();
        }
        let tok = ByteTokenizer::new();
        let Some(turn) = turns.get(n) else {
            return Reply::Json(400, json!({"error": {"message": "no more turns"}}));
        };
        match dialect {
            Dialect::Vllm => {
                // The prompt is the exact context; it ends with the generation prompt.
                let ids: Vec<u32> = serde_json::from_value(body["prompt"].clone()).unwrap();
                assert!(
                    tok.decode(&ids)
                        .unwrap()
                        .ends_with("<|im_start|>assistant\n")
                );
                let mut out = tok.encode(turn).unwrap();
                out.push(EOT);
                vllm_reply(&out, -0.5, json!(EOT))
            }
            Dialect::Ollama => {
                assert!(
                    body["prompt"]
                        .as_str()
                        .unwrap()
                        .ends_with("<|im_start|>assistant\n")
                );
                Reply::Json(
                    200,
                    json!({"response": turn, "done": true, "done_reason": "stop"}),
                )
            }
            other => panic!("no replay for {other}"),
        }
    }
}

async fn episode(dialect: Dialect) -> (enact_core::Episode, Vec<String>, Fake) {
    let suite = CalcSuite;
    let task = suite.tasks("test", 1, 7).remove(0);
    let turns = suite.reference_solution(&task).unwrap();
    let fake = Fake::start(replay_handler(dialect, turns.clone())).await;
    let agent = Agent::new(
        Arc::new(policy(fast(&fake.url, dialect))),
        tokenizer(),
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    );
    let mut env = CalcEnv::new();
    let ep = agent.run(&task, &mut env, Some(&CalcVerifier)).await;
    (ep, turns, fake)
}

#[tokio::test]
async fn agent_episode_over_vllm_is_token_exact() {
    let (ep, turns, fake) = episode(Dialect::Vllm).await;
    assert_eq!(
        ep.outcome.termination,
        Termination::Finished,
        "{:?}",
        ep.outcome.errors
    );
    assert!(ep.outcome.success);
    assert_eq!(ep.outcome.turns, 3);
    let traj = &ep.trajectory;
    assert!(traj.token_exact);
    traj.validate().unwrap();
    let path = traj.path(traj.main_leaf().unwrap()).unwrap();
    let tok = ByteTokenizer::new();
    let bodies = fake.bodies("/v1/completions");
    assert_eq!(bodies.len(), 3);
    let mut k = 0;
    for (at, seg) in path.iter().enumerate() {
        if seg.kind != SegmentKind::Sampled {
            continue;
        }
        // Exactly the ids the server sent, with its logprobs.
        let mut sent = tok.encode(&turns[k]).unwrap();
        sent.push(EOT);
        assert_eq!(seg.tokens, sent);
        assert_eq!(seg.logprobs, vec![-0.5; sent.len()]);
        assert!(seg.loss_mask);
        // And the server saw exactly the trajectory's context before this turn.
        let prompt: Vec<u32> = serde_json::from_value(bodies[k]["prompt"].clone()).unwrap();
        let before: Vec<u32> = path[..at].iter().flat_map(|s| s.tokens.clone()).collect();
        assert_eq!(prompt, before);
        k += 1;
    }
    assert!(!path.iter().any(|s| s.kind == SegmentKind::Forced));
}

#[tokio::test]
async fn agent_episode_over_ollama_is_marked_not_token_exact() {
    let (ep, turns, _fake) = episode(Dialect::Ollama).await;
    assert_eq!(
        ep.outcome.termination,
        Termination::Finished,
        "{:?}",
        ep.outcome.errors
    );
    assert!(ep.outcome.success);
    assert!(
        !ep.trajectory.token_exact,
        "text-level trajectories are not trainable"
    );
    let path = ep
        .trajectory
        .path(ep.trajectory.main_leaf().unwrap())
        .unwrap();
    let tok = ByteTokenizer::new();
    let sampled: Vec<_> = path
        .iter()
        .filter(|s| s.kind == SegmentKind::Sampled)
        .collect();
    for (seg, turn) in sampled.iter().zip(&turns) {
        let mut want = tok.encode(turn).unwrap();
        want.push(EOT);
        assert_eq!(seg.tokens, want);
    }
}

#[tokio::test]
async fn agent_episode_with_the_server_down_records_an_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = fast(&format!("http://127.0.0.1:{port}"), Dialect::Sglang);
    c.max_attempts = 1;
    let agent = Agent::new(
        Arc::new(policy(c)),
        tokenizer(),
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    );
    let task = CalcSuite.tasks("test", 1, 7).remove(0);
    let ep = agent
        .run(&task, &mut CalcEnv::new(), Some(&CalcVerifier))
        .await;
    match &ep.outcome.termination {
        Termination::Error(m) => assert!(m.contains("cannot connect"), "{m}"),
        other => panic!("expected an error termination, got {other:?}"),
    }
    assert!(!ep.outcome.success);
}

// ---------------------------------------------------------------------------------------
// Publishing weights.

/// vLLM answers a successful adapter load with plain text.
fn vllm_lora_ok() -> Reply {
    Reply::Raw(
        200,
        vec![("content-type", "text/plain".into())],
        "Success: LoRA adapter added successfully.".into(),
    )
}

#[tokio::test]
async fn vllm_publishes_lora_adapters_and_samples_through_them() {
    let fake = Fake::start(|path, _, _| match path {
        "/v1/load_lora_adapter" | "/v1/unload_lora_adapter" => vllm_lora_ok(),
        _ => vllm_reply(&[72, EOT], -0.5, json!(EOT)),
    })
    .await;
    let mut c = fast(&fake.url, Dialect::Vllm);
    c.model = Some("base".into());
    let p = policy(c);
    assert_eq!(p.version(), 0);
    assert_eq!(p.publish_lora("policy-1", "/ckpt/step-1").await.unwrap(), 1);
    assert_eq!(p.version(), 1);
    assert_eq!(p.adapter().as_deref(), Some("policy-1"));
    assert_eq!(
        fake.bodies("/v1/load_lora_adapter"),
        vec![json!({"lora_name": "policy-1", "lora_path": "/ckpt/step-1", "load_inplace": true})]
    );
    let s = p.sample(request(vec![1, 2])).await.unwrap();
    assert_eq!(s.policy_versions, vec![1, 1]);
    assert_eq!(fake.bodies("/v1/completions")[0]["model"], "policy-1");

    // A new name: loaded; the old one stays loaded for requests built before the switch.
    assert_eq!(p.publish_lora("policy-2", "/ckpt/step-2").await.unwrap(), 2);
    assert!(fake.bodies("/v1/unload_lora_adapter").is_empty());
    p.sample(request(vec![1])).await.unwrap();
    assert_eq!(fake.bodies("/v1/completions")[1]["model"], "policy-2");
    // The same name again replaces it in place; the retired policy-1 is unloaded now.
    assert_eq!(p.publish_lora("policy-2", "/ckpt/step-3").await.unwrap(), 3);
    assert_eq!(
        fake.bodies("/v1/unload_lora_adapter"),
        vec![json!({"lora_name": "policy-1"})]
    );
    // Nothing is retired by an in-place replacement.
    assert_eq!(p.publish_lora("policy-2", "/ckpt/step-4").await.unwrap(), 4);
    assert_eq!(fake.bodies("/v1/unload_lora_adapter").len(), 1);

    // vLLM has no full-weight reload over HTTP: refused before anything is sent.
    let before = fake.requests();
    let err = p.update_weights_from_disk("/ckpt/full").await.unwrap_err();
    assert!(matches!(err, PublishError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("LoRA"), "{err}");
    assert_eq!(fake.requests(), before);
    assert_eq!(
        p.version(),
        4,
        "a refused publication leaves the version alone"
    );

    // Names that cannot be adapter names are refused locally.
    for bad in ["", "a b", "x/y"] {
        assert!(matches!(
            p.publish_lora(bad, "/p").await,
            Err(PublishError::InvalidName(_))
        ));
    }
}

#[tokio::test]
async fn vllm_refusals_leave_the_version_and_adapter_unchanged() {
    // 404: the runtime LoRA endpoints are off; the error says how to turn them on.
    let fake = Fake::start(|path, _, _| match path {
        "/v1/load_lora_adapter" => Reply::Json(404, json!({"detail": "Not Found"})),
        _ => vllm_reply(&[EOT], -0.5, json!(EOT)),
    })
    .await;
    let mut c = fast(&fake.url, Dialect::Vllm);
    c.model = Some("base".into());
    let p = policy(c);
    let err = p.publish_lora("a", "/x").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PublishError::Rejected { status: 404, .. }),
        "{msg}"
    );
    assert!(msg.contains("VLLM_ALLOW_RUNTIME_LORA_UPDATING"), "{msg}");
    assert_eq!(p.version(), 0);
    assert_eq!(p.adapter(), None);
    p.sample(request(vec![1])).await.unwrap();
    assert_eq!(fake.bodies("/v1/completions")[0]["model"], "base");

    // 400 with vLLM's error body, and a 500: refused, not retried.
    for (code, body) in [
        (
            400,
            json!({"object": "error", "message": "The lora adapter 'a' has already been loaded.", "type": "InvalidUserInput", "code": 400}),
        ),
        (500, json!({"error": {"message": "CUDA out of memory"}})),
    ] {
        let fake = Fake::start(move |_, _, _| Reply::Json(code, body.clone())).await;
        let p = policy(fast(&fake.url, Dialect::Vllm));
        let err = p.publish_lora("a", "/x").await.unwrap_err();
        assert!(
            matches!(err, PublishError::Rejected { status, .. } if status == code),
            "{err}"
        );
        assert_eq!(fake.requests(), 1, "weight loads are never retried");
        assert_eq!(p.version(), 0);
    }
}

#[tokio::test]
async fn sglang_publishes_adapters_and_full_weights() {
    let fake = Fake::start(|path, body, _| match path {
        "/load_lora_adapter" | "/unload_lora_adapter" => Reply::Json(
            200,
            json!({"success": true, "error_message": "", "loaded_adapters": {}}),
        ),
        "/update_weights_from_disk" if body["model_path"] == "/bad" => Reply::Json(
            400,
            json!({"success": false, "message": "Failed to get weights iterator: /bad", "num_paused_requests": 0}),
        ),
        "/update_weights_from_disk" if body["model_path"] == "/quiet-failure" => Reply::Json(
            200,
            json!({"success": false, "message": "shape mismatch"}),
        ),
        "/update_weights_from_disk" => Reply::Json(
            200,
            json!({"success": true, "message": "Succeeded to update model weights.", "num_paused_requests": 0}),
        ),
        _ => sglang_reply(&[65, EOT], -1.0),
    })
    .await;
    let p = policy(fast(&fake.url, Dialect::Sglang));
    assert_eq!(p.publish_lora("pol", "/ckpt/a").await.unwrap(), 1);
    assert_eq!(
        fake.bodies("/load_lora_adapter"),
        vec![json!({"lora_name": "pol-v1", "lora_path": "/ckpt/a"})]
    );
    assert_eq!(p.adapter().as_deref(), Some("pol-v1"));
    p.sample(request(vec![5])).await.unwrap();
    assert_eq!(fake.bodies("/generate")[0]["lora_path"], "pol-v1");
    // Same name again: SGLang refuses loaded names, so it is served under a new one; the
    // old one is unloaded one publication later (requests built before the switch name it).
    assert_eq!(p.publish_lora("pol", "/ckpt/b").await.unwrap(), 2);
    assert_eq!(
        fake.bodies("/load_lora_adapter")[1],
        json!({"lora_name": "pol-v2", "lora_path": "/ckpt/b"})
    );
    assert!(fake.bodies("/unload_lora_adapter").is_empty());
    p.sample(request(vec![5])).await.unwrap();
    assert_eq!(fake.bodies("/generate")[1]["lora_path"], "pol-v2");
    assert_eq!(p.publish_lora("pol", "/ckpt/c").await.unwrap(), 3);
    assert_eq!(
        fake.bodies("/unload_lora_adapter"),
        vec![json!({"lora_name": "pol-v1"})]
    );

    assert_eq!(p.update_weights_from_disk("/ckpt/full").await.unwrap(), 4);
    assert_eq!(
        fake.bodies("/update_weights_from_disk"),
        vec![json!({"model_path": "/ckpt/full"})]
    );
    let s = p.sample(request(vec![5])).await.unwrap();
    assert_eq!(s.policy_versions, vec![4, 4]);

    let err = p.update_weights_from_disk("/bad").await.unwrap_err();
    assert!(
        matches!(err, PublishError::Rejected { status: 400, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("Failed to get weights iterator"),
        "{err}"
    );
    let err = p
        .update_weights_from_disk("/quiet-failure")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shape mismatch"), "{err}");
    assert_eq!(p.version(), 4);
}

#[tokio::test]
async fn publishing_goes_to_every_server_or_fails_as_a_whole() {
    let ok = |_: &str, _: &Value, _: usize| Reply::Json(200, json!({"success": true}));
    let (a, b) = (Fake::start(ok).await, Fake::start(ok).await);
    let mut c = fast(&a.url, Dialect::Sglang);
    c.extra_base_urls = vec![b.url.clone()];
    let p = policy(c);
    assert_eq!(p.update_weights_from_disk("/w").await.unwrap(), 1);
    assert_eq!(a.bodies("/update_weights_from_disk").len(), 1);
    assert_eq!(b.bodies("/update_weights_from_disk").len(), 1);

    // A server that cannot be reached: an error, and the version stays.
    let mut c = fast(&a.url, Dialect::Sglang);
    c.extra_base_urls = vec!["http://127.0.0.1:9".into()];
    let p = policy(c);
    let err = p.update_weights_from_disk("/w").await.unwrap_err();
    assert!(matches!(err, PublishError::Unreachable { .. }), "{err}");
    assert_eq!(p.version(), 0);

    // Dialects without runtime weight loading say so.
    let p = policy(fast(&a.url, Dialect::LlamaCpp));
    assert!(matches!(
        p.publish_lora("x", "/p").await,
        Err(PublishError::Unsupported { .. })
    ));
}

/// A thinking budget through an HTTP backend: the thought is one request with `max_tokens`
/// = the budget and the closing tag as a stop string; when it comes back cut by the length,
/// the stop-thinking text is appended to the token prompt as forced tokens and the answer is
/// a second request continuing from exactly that context.
#[tokio::test]
async fn a_thinking_budget_over_vllm_is_exact_and_continues_from_the_forced_tokens() {
    let suite = CalcSuite;
    let task = suite.tasks("test", 1, 7).remove(0);
    let turns = suite.reference_solution(&task).unwrap();
    let style = enact_core::ThinkingStyle::prompted();
    let stop_text = style.stop_text.clone();
    let answers = Arc::new(AtomicUsize::new(0));
    let a = answers.clone();
    let expected_stop = stop_text.clone();
    let fake = Fake::start(move |path, body, _| {
        if path == "/v1/models" {
            return models();
        }
        let tok = ByteTokenizer::new();
        let ids: Vec<u32> = serde_json::from_value(body["prompt"].clone()).unwrap();
        let prompt = tok.decode(&ids).unwrap();
        let max = body["max_tokens"].as_u64().unwrap() as usize;
        if prompt.ends_with("<|im_start|>assistant\n") {
            // A model that opens a thought and would think for ever: cut by the length.
            let out = tok
                .encode(&format!("<think>\n{}", "hmm ".repeat(100)))
                .unwrap();
            return vllm_reply(&out[..max.min(out.len())], -1.0, Value::Null);
        }
        assert!(prompt.ends_with(&expected_stop), "{prompt:?}");
        let n = a.fetch_add(1, Ordering::SeqCst);
        let mut out = tok.encode(&turns[n]).unwrap();
        out.push(EOT);
        vllm_reply(&out, -0.5, json!(EOT))
    })
    .await;
    let agent = Agent::new(
        Arc::new(policy(fast(&fake.url, Dialect::Vllm))),
        tokenizer(),
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    )
    .with_config(enact_agent::AgentConfig {
        thinking: "budget:24".parse().unwrap(),
        thinking_style: style.clone(),
        ..Default::default()
    });
    let mut env = CalcEnv::new();
    let ep = agent.run(&task, &mut env, Some(&CalcVerifier)).await;
    assert_eq!(
        ep.outcome.termination,
        Termination::Finished,
        "{:?}",
        ep.outcome.errors
    );
    assert!(ep.outcome.success);
    assert!(
        ep.outcome
            .per_turn
            .iter()
            .all(|r| r.thinking_tokens == 24 && r.budget_hit)
    );
    let bodies = fake.bodies("/v1/completions");
    assert_eq!(bodies.len(), 6);
    let traj = &ep.trajectory;
    let path = traj.path(traj.main_leaf().unwrap()).unwrap();
    let tok = ByteTokenizer::new();
    let mut request = 0;
    for (at, seg) in path.iter().enumerate() {
        match seg.kind {
            SegmentKind::Forced => {
                assert!(!seg.loss_mask);
                let text = tok.decode(&seg.tokens).unwrap();
                assert!(text == style.open_text() || text == stop_text, "{text:?}");
            }
            SegmentKind::Sampled => {
                // Each request's prompt is exactly the main line before it, forced tokens
                // included; thoughts were asked for exactly the budget, with the closing tag
                // as a stop string.
                let body = &bodies[request];
                let prompt: Vec<u32> = serde_json::from_value(body["prompt"].clone()).unwrap();
                let before: Vec<u32> = path[..at].iter().flat_map(|s| s.tokens.clone()).collect();
                assert_eq!(prompt, before);
                if request % 2 == 0 {
                    assert_eq!(body["max_tokens"], 24);
                    assert_eq!(body["stop"], json!(["</think>"]));
                    assert_eq!(seg.tokens.len(), 24);
                }
                request += 1;
            }
            _ => {}
        }
    }
    assert_eq!(request, 6);
}

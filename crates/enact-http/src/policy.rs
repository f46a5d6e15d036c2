//! [`HttpPolicy`]: the `Policy` over an HTTP server, with retries, timeouts and a
//! concurrency limit.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use enact_core::{FinishReason, Policy, PolicyError, Sample, SampleRequest, Tokenizer};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::config::{Dialect, HttpConfig, HttpError};
use crate::dialect::{self, ExactOutput, Output, Prepared, Stop, TextOutput};
use crate::endpoints::Endpoints;
use crate::transport::{BodyError, read_body_capped};

/// A model served over HTTP. Cheap to clone: clones share the connection pool, the
/// concurrency limit and the policy version.
#[derive(Clone)]
pub struct HttpPolicy {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: HttpConfig,
    pub(crate) endpoints: Endpoints,
    pub(crate) client: reqwest::Client,
    tokenizer: Arc<dyn Tokenizer>,
    pub(crate) version: AtomicU64,
    model: OnceCell<Option<String>>,
    /// The LoRA adapter generation requests name (set by `WeightPublisher::publish_lora`).
    pub(crate) adapter: RwLock<Option<String>>,
    /// The adapter replaced by the last publication: still loaded for requests built
    /// before the switch, unloaded at the next publication.
    pub(crate) retired_adapter: std::sync::Mutex<Option<String>>,
    /// One weight publication at a time.
    pub(crate) publish_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for HttpPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPolicy")
            .field(
                "servers",
                &self
                    .inner
                    .endpoints
                    .list
                    .iter()
                    .map(|e| e.root.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("dialect", &self.inner.config.dialect)
            .field("model", &self.inner.config.model)
            .field("token_exact", &self.inner.config.dialect.token_exact())
            .field(
                "api_key",
                &self.inner.config.api_key.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

fn is_loopback(root: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(root) else {
        return false;
    };
    let host = url.host_str().unwrap_or("");
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How one attempt failed.
enum Failure {
    /// Worth another attempt (after `retry_after` when the server asked for it).
    Retry {
        message: String,
        retry_after: Option<Duration>,
        timed_out: bool,
        /// The server refused or dropped the connection: take it out of the rotation.
        server_dead: bool,
    },
    /// Final.
    Fatal(PolicyError),
}

impl HttpPolicy {
    /// Builds the policy; sends nothing. The tokenizer must be the served model's: text-level
    /// dialects decode the context with it and re-encode replies, and every dialect decodes
    /// stop tokens with it.
    pub fn new(config: HttpConfig, tokenizer: Arc<dyn Tokenizer>) -> Result<Self, HttpError> {
        config.validate()?;
        let roots = config.roots()?;
        let mut builder = crate::transport::client_builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("enact/", env!("CARGO_PKG_VERSION")));
        if roots.iter().all(|r| is_loopback(r)) {
            // A local server is never reached through HTTP(S)_PROXY.
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| HttpError::Client(e.to_string()))?;
        let endpoints = Endpoints::new(
            roots,
            config.max_concurrency,
            config.endpoint_retry_after,
            config.sticky_max_imbalance,
        );
        let version = AtomicU64::new(config.policy_version);
        let model = OnceCell::new();
        if let Some(m) = &config.model {
            let _ = model.set(Some(m.clone()));
        } else if !config.dialect.needs_model() {
            let _ = model.set(None);
        }
        Ok(HttpPolicy {
            inner: Arc::new(Inner {
                config,
                endpoints,
                client,
                tokenizer,
                version,
                model,
                adapter: RwLock::new(None),
                retired_adapter: std::sync::Mutex::new(None),
                publish_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.config.dialect
    }

    /// The (first) server root requests go to (no trailing `/v1`).
    pub fn root(&self) -> &str {
        self.inner
            .endpoints
            .list
            .first()
            .map_or("", |e| e.root.as_str())
    }

    /// Every server root, in configuration order.
    pub fn roots(&self) -> Vec<&str> {
        self.inner
            .endpoints
            .list
            .iter()
            .map(|e| e.root.as_str())
            .collect()
    }

    /// Sets the policy version stamped on later samples (after the trainer pushed weights).
    pub fn set_version(&self, version: u64) {
        self.inner.version.store(version, Ordering::SeqCst);
    }

    /// The model name sent in the `model` field: the configured one, else the first id
    /// of the server's `GET /v1/models` (asked once).
    pub async fn model_name(&self) -> Result<Option<String>, PolicyError> {
        self.inner
            .model
            .get_or_try_init(|| async {
                let v = self.send_with_retries("/v1/models", None, None).await.map_err(|e| {
                    PolicyError::Backend(format!(
                        "could not learn the served model name ({e}); name it in the spec, e.g. http://HOST:PORT/v1#{}:MODEL",
                        self.dialect()
                    ))
                })?;
                let id = v
                    .get("data")
                    .and_then(Value::as_array)
                    .and_then(|d| d.first())
                    .and_then(|m| m.get("id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        PolicyError::Backend(format!(
                            "GET /v1/models lists no model; name it in the spec, e.g. http://HOST:PORT/v1#{}:MODEL",
                            self.dialect()
                        ))
                    })?;
                Ok(Some(id.to_string()))
            })
            .await
            .cloned()
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let c = &self.inner.config;
        let exp = c
            .backoff_initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(c.backoff_max);
        // Equal jitter: half fixed, half random, so concurrent clients spread out.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(attempt);
        let frac = (h.finish() % 1_000_000) as f64 / 1_000_000.0;
        capped.mul_f64(0.5 + 0.5 * frac)
    }

    /// One HTTP exchange with server `server`: POST `body` (or GET when `None`) and parse the
    /// JSON answer.
    async fn attempt(
        &self,
        server: usize,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let c = &self.inner.config;
        let endpoint = &self.inner.endpoints.list[server];
        let _permit = endpoint.semaphore.acquire().await.map_err(|_| {
            Failure::Fatal(PolicyError::Backend("the HTTP policy was shut down".into()))
        })?;
        let mut rb = match body {
            Some(b) => self
                .inner
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string()),
            None => self.inner.client.get(url),
        };
        if let Some(key) = &c.api_key {
            rb = rb.bearer_auth(key);
        }
        let transport = |e: reqwest::Error, stage: &str| {
            let timed_out = e.is_timeout();
            let what = if timed_out {
                format!("timed out {stage} (limit {:?})", c.request_timeout)
            } else if e.is_connect() {
                format!(
                    "cannot connect to {} ({e}); is the server running?",
                    endpoint.root
                )
            } else {
                format!("transport error {stage} with {}: {e}", endpoint.root)
            };
            Failure::Retry {
                message: what,
                retry_after: None,
                timed_out,
                // Refused, reset or closed mid-answer: the server (or its process) is gone.
                server_dead: !timed_out,
            }
        };
        let resp = rb
            .send()
            .await
            .map_err(|e| transport(e, "sending the request"))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|h| h.to_str().ok())
            .and_then(|s| parse_retry_after(s, c.retry_after_max));
        let bytes = match read_body_capped(resp, c.max_response_bytes).await {
            Ok(b) => b,
            Err(BodyError::Transport(e)) => return Err(transport(e, "reading the response")),
            Err(BodyError::TooLarge { limit }) => {
                return Err(Failure::Fatal(PolicyError::Backend(format!(
                    "{url} answered HTTP {status} with more than {limit} bytes (max_response_bytes)"
                ))));
            }
        };
        if status.is_success() {
            return serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                Failure::Fatal(PolicyError::Backend(format!(
                    "{url} answered HTTP {status} with malformed JSON ({e}): {}",
                    dialect::truncate(&String::from_utf8_lossy(&bytes), 200)
                )))
            });
        }
        let msg = dialect::error_message(&bytes);
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Failure::Retry {
                message: format!("{url} answered HTTP {status}: {msg}"),
                retry_after,
                timed_out: false,
                server_dead: false,
            });
        }
        Err(Failure::Fatal(PolicyError::Backend(format!(
            "{url} rejected the request with HTTP {status}: {msg}"
        ))))
    }

    /// Sends to `path` on the server chosen for `context` (see `endpoints`), retrying:
    /// a server that is gone is taken out and the request goes to another one at once
    /// (not counted as an attempt); other failures back off.
    async fn send_with_retries(
        &self,
        path: &str,
        body: Option<&Value>,
        context: Option<&[u32]>,
    ) -> Result<Value, PolicyError> {
        let c = &self.inner.config;
        let endpoints = &self.inner.endpoints;
        let mut attempt = 0u32;
        let mut failovers = 0usize;
        loop {
            attempt += 1;
            let (server, in_flight) = endpoints.pick(context);
            let url = format!("{}{path}", endpoints.list[server].root);
            let result = self.attempt(server, &url, body).await;
            drop(in_flight);
            match result {
                Ok(v) => {
                    endpoints.answered(server, context);
                    return Ok(v);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry {
                    message,
                    retry_after,
                    timed_out,
                    server_dead,
                }) => {
                    if server_dead {
                        endpoints.mark_down(server, &message);
                        if endpoints.any_live() && failovers < endpoints.list.len() {
                            failovers += 1;
                            attempt -= 1;
                            tracing::warn!(%message, "HTTP policy retrying on another server");
                            continue;
                        }
                    }
                    if attempt >= c.max_attempts {
                        if timed_out {
                            tracing::warn!(attempt, %message, "HTTP policy gave up");
                            return Err(PolicyError::Timeout(c.request_timeout));
                        }
                        return Err(PolicyError::Backend(format!(
                            "gave up after {attempt} attempt(s): {message}"
                        )));
                    }
                    let delay = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    tracing::warn!(attempt, ?delay, %message, "HTTP policy request failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, PolicyError> {
        self.inner
            .tokenizer
            .encode(text)
            .map_err(|e| PolicyError::Backend(format!("cannot encode the reply: {e}")))
    }

    /// Whether `id` is a special token of the tokenizer (an end-of-sequence candidate).
    fn is_special(&self, id: u32) -> bool {
        self.inner
            .tokenizer
            .decode(&[id])
            .ok()
            .and_then(|t| self.inner.tokenizer.special_token_id(&t))
            == Some(id)
    }

    fn finish_exact(&self, req: &SampleRequest, out: ExactOutput, version: u64) -> Sample {
        let ExactOutput {
            mut ids,
            mut logprobs,
            stop,
        } = out;
        let last_is_stop = ids.last().is_some_and(|l| req.stop_tokens.contains(l));
        let finish = if last_is_stop {
            FinishReason::StopToken(ids.last().copied().unwrap_or_default())
        } else {
            match stop {
                Stop::Length => FinishReason::Length,
                Stop::Token(id) => {
                    if ids.last() != Some(&id) {
                        // The server stopped on `id` but did not return it: append it so the
                        // stop token is the last token. Its logprob is unknown: 0.
                        tracing::debug!(id, "server omitted the stop token; appending it");
                        ids.push(id);
                        logprobs.push(0.0);
                    }
                    FinishReason::StopToken(id)
                }
                Stop::Str(s) => FinishReason::StopString(s),
                Stop::Natural => match ids.last() {
                    // End of sequence: the model's own EOS token, returned as the last id.
                    Some(&l) if self.is_special(l) => FinishReason::StopToken(l),
                    // The server stopped without naming why and without a special last token:
                    // report a stop with no string (the agent closes the turn with forced,
                    // loss-free tokens).
                    _ => FinishReason::StopString(String::new()),
                },
            }
        };
        self.assemble(req, ids, logprobs, finish, version)
    }

    fn finish_text(
        &self,
        req: &SampleRequest,
        out: TextOutput,
        version: u64,
    ) -> Result<Sample, PolicyError> {
        let TextOutput {
            text,
            logprobs: server_lps,
            stop,
        } = out;
        let mut ids = self.encode(&text)?;
        // The server's logprobs belong to its own tokens; use them only when they line up
        // one-to-one with the re-encoded text, else 0.
        let mut logprobs = match server_lps {
            Some(l) if l.len() == ids.len() => l,
            _ => vec![0.0; ids.len()],
        };
        let stop_token_text: Vec<(u32, String)> = req
            .stop_tokens
            .iter()
            .filter_map(|&id| self.inner.tokenizer.decode(&[id]).ok().map(|t| (id, t)))
            .collect();
        let mut push = |extra: Vec<u32>, ids: &mut Vec<u32>| {
            logprobs.extend(std::iter::repeat_n(0.0, extra.len()));
            ids.extend(extra);
        };
        let finish = if ids.last().is_some_and(|l| req.stop_tokens.contains(l)) {
            FinishReason::StopToken(ids.last().copied().unwrap_or_default())
        } else {
            match stop {
                Stop::Length => FinishReason::Length,
                Stop::Token(id) => {
                    push(vec![id], &mut ids);
                    FinishReason::StopToken(id)
                }
                Stop::Str(s) => {
                    if let Some((id, _)) = stop_token_text.iter().find(|(_, t)| *t == s) {
                        push(vec![*id], &mut ids);
                        FinishReason::StopToken(*id)
                    } else {
                        if !text.ends_with(&s) {
                            push(self.encode(&s)?, &mut ids);
                        }
                        FinishReason::StopString(s)
                    }
                }
                // OpenAI-style servers strip the stop sequence and do not say which stopped
                // the text; take the first stop token (the agent's end of turn), else the
                // first stop string.
                Stop::Natural => {
                    if let Some(&id) = req.stop_tokens.first() {
                        push(vec![id], &mut ids);
                        FinishReason::StopToken(id)
                    } else if let Some(s) = req.stop_strings.first() {
                        if !text.ends_with(s.as_str()) {
                            push(self.encode(s)?, &mut ids);
                        }
                        FinishReason::StopString(s.clone())
                    } else {
                        FinishReason::StopString(String::new())
                    }
                }
            }
        };
        Ok(self.assemble(req, ids, logprobs, finish, version))
    }

    fn assemble(
        &self,
        req: &SampleRequest,
        mut ids: Vec<u32>,
        mut logprobs: Vec<f32>,
        mut finish: FinishReason,
        version: u64,
    ) -> Sample {
        if ids.len() > req.max_tokens {
            ids.truncate(req.max_tokens);
            logprobs.truncate(req.max_tokens);
            finish = FinishReason::Length;
        }
        let n = ids.len();
        if let Some(sink) = &req.on_token {
            // Non-streaming requests learn the ids only now.
            ids.iter().for_each(|&id| sink.emit(id));
        }
        Sample {
            tokens: ids,
            logprobs,
            policy_versions: vec![version; n],
            finish,
        }
    }
}

#[async_trait]
impl Policy for HttpPolicy {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError> {
        let c = &self.inner.config;
        if let Some(limit) = c.context_limit
            && request.context.len() > limit
        {
            return Err(PolicyError::ContextTooLong {
                context: request.context.len(),
                limit,
            });
        }
        // The weights a request runs on are those published when it starts (servers finish
        // running requests before swapping weights).
        let version = self.version();
        if request.max_tokens == 0 {
            return Ok(self.assemble(
                &request,
                Vec::new(),
                Vec::new(),
                FinishReason::Length,
                version,
            ));
        }
        let dialect = c.dialect;
        let model = self.model_name().await?;
        let tok = &self.inner.tokenizer;
        let prompt_text = if dialect.token_exact() {
            None
        } else {
            Some(tok.decode(&request.context).map_err(|e| {
                PolicyError::Backend(format!("cannot decode the context to text: {e}"))
            })?)
        };
        let mut stop_strings = request.stop_strings.clone();
        if !matches!(dialect, Dialect::Vllm | Dialect::Sglang) {
            // No stop-token ids in these APIs: stop on the tokens' text instead.
            for &id in &request.stop_tokens {
                if let Ok(t) = tok.decode(&[id])
                    && !t.is_empty()
                    && !stop_strings.contains(&t)
                {
                    stop_strings.push(t);
                }
            }
        }
        let adapter = self
            .inner
            .adapter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let prep = Prepared {
            model: model.as_deref(),
            adapter: adapter.as_deref(),
            prompt_text: prompt_text.as_deref(),
            stop_strings,
        };
        let body = dialect::request_body(dialect, &request, &prep);
        let path = dialect.endpoint();
        let v = self
            .send_with_retries(path, Some(&body), Some(&request.context))
            .await?;
        let out = dialect::parse_response(dialect, &v).map_err(|e| {
            PolicyError::Backend(format!(
                "unexpected {dialect} response to {path}: {e}; check the dialect (#vllm, #sglang, #llamacpp, #ollama, #openai) and the server version"
            ))
        })?;
        match out {
            Output::Exact(o) => Ok(self.finish_exact(&request, o, version)),
            Output::Text(o) => self.finish_text(&request, o, version),
        }
    }

    fn version(&self) -> u64 {
        self.inner.version.load(Ordering::SeqCst)
    }

    fn context_limit(&self) -> usize {
        self.inner.config.context_limit.unwrap_or(usize::MAX)
    }

    fn token_exact(&self) -> bool {
        self.inner.config.dialect.token_exact()
    }
}

/// A `Retry-After` header in seconds, capped at `max`.
fn parse_retry_after(header: &str, max: Duration) -> Option<Duration> {
    let s = header.trim().parse::<f64>().ok()?;
    if !(s.is_finite() && s >= 0.0) {
        return None;
    }
    // `from_secs_f64` panics past `Duration::MAX` (`Retry-After: 1e300`).
    Some(
        Duration::try_from_secs_f64(s)
            .unwrap_or(Duration::MAX)
            .min(max),
    )
}

#[cfg(test)]
mod tests {
    use super::{is_loopback, parse_retry_after};
    use std::time::Duration;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("http://127.0.0.1:8000"));
        assert!(is_loopback("http://127.5.0.1"));
        assert!(is_loopback("http://LOCALHOST:1"));
        assert!(is_loopback("http://[::1]:8080"));
        assert!(!is_loopback("http://10.0.0.1:8000"));
        assert!(!is_loopback("https://api.example.invalid"));
    }

    #[test]
    fn huge_retry_after_is_capped_not_a_panic() {
        let max = Duration::from_secs(60);
        assert_eq!(parse_retry_after("1e300", max), Some(max));
        assert_eq!(parse_retry_after("18446744073709551616", max), Some(max));
        assert_eq!(
            parse_retry_after(" 2.5 ", max),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_retry_after("-1", max), None);
        assert_eq!(parse_retry_after("inf", max), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", max),
            None
        );
    }
}

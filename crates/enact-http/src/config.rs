//! Configuration of the HTTP backend, and parsing of `--model http://...` specs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// Problems building an HTTP policy (before any request is sent).
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("invalid server URL {url:?}: {why}")]
    InvalidUrl { url: String, why: String },
    #[error(
        "unknown server dialect {0:?}: use one of vllm, sglang, llamacpp, ollama, openai (text-level)"
    )]
    UnknownDialect(String),
    #[error("invalid HTTP backend setting: {0}")]
    InvalidConfig(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Which server API the backend speaks. See `docs/http-backends.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// vLLM `POST /v1/completions` with a token-id prompt, `return_token_ids`,
    /// `return_tokens_as_token_ids` and `logprobs: 1`. Token-exact.
    Vllm,
    /// SGLang native `POST /generate` with `input_ids` and `return_logprob`. Token-exact.
    Sglang,
    /// llama.cpp server native `POST /completion` with a token-id prompt, `return_tokens`
    /// and `n_probs`. Token-exact.
    LlamaCpp,
    /// Ollama native `POST /api/generate` with `raw: true` and a text prompt. Text-level:
    /// trajectories are marked not token-exact (not trainable).
    Ollama,
    /// Any OpenAI-compatible `POST /v1/completions` with a text prompt. Text-level.
    OpenAiText,
}

impl Dialect {
    pub const ALL: [Dialect; 5] = [
        Dialect::Vllm,
        Dialect::Sglang,
        Dialect::LlamaCpp,
        Dialect::Ollama,
        Dialect::OpenAiText,
    ];

    /// Whether the dialect sends token ids and receives the sampled ids and logprobs.
    pub fn token_exact(self) -> bool {
        matches!(self, Dialect::Vllm | Dialect::Sglang | Dialect::LlamaCpp)
    }

    /// The path (under the server root) generation requests are posted to.
    pub fn endpoint(self) -> &'static str {
        match self {
            Dialect::Vllm | Dialect::OpenAiText => "/v1/completions",
            Dialect::Sglang => "/generate",
            Dialect::LlamaCpp => "/completion",
            Dialect::Ollama => "/api/generate",
        }
    }

    /// Whether requests carry a `model` field the server needs.
    pub fn needs_model(self) -> bool {
        matches!(self, Dialect::Vllm | Dialect::OpenAiText | Dialect::Ollama)
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Vllm => "vllm",
            Dialect::Sglang => "sglang",
            Dialect::LlamaCpp => "llamacpp",
            Dialect::Ollama => "ollama",
            Dialect::OpenAiText => "openai",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dialect {
    type Err = HttpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vllm" => Ok(Dialect::Vllm),
            "sglang" => Ok(Dialect::Sglang),
            "llamacpp" | "llama.cpp" | "llama-cpp" | "llama-server" => Ok(Dialect::LlamaCpp),
            "ollama" => Ok(Dialect::Ollama),
            "openai" | "openai-text" | "text" => Ok(Dialect::OpenAiText),
            other => Err(HttpError::UnknownDialect(other.to_string())),
        }
    }
}

/// Settings of an [`crate::HttpPolicy`]. Build with [`HttpConfig::new`] or
/// [`HttpConfig::from_spec`], then adjust the public fields. `Debug` redacts the API key.
#[derive(Clone)]
pub struct HttpConfig {
    /// The server root, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted and
    /// dropped: each dialect adds its own path).
    pub base_url: String,
    /// Further servers of the same model and dialect (scale-out): requests are spread over
    /// `base_url` and these, see `docs/http-backends.md`.
    pub extra_base_urls: Vec<String>,
    pub dialect: Dialect,
    /// The served model name for the `model` field; when `None` and the dialect needs one,
    /// the first id of `GET /v1/models` is used.
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Limit on establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit on one whole request (sending, generating, receiving).
    pub request_timeout: Duration,
    /// Most attempts per generation (1 = no retries). Retried: connection failures,
    /// timeouts, HTTP 429 and 5xx.
    pub max_attempts: u32,
    /// First backoff delay; doubles each retry, with jitter, up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; longer requests are clamped to this.
    pub retry_after_max: Duration,
    /// Most requests in flight at once from this policy (and its clones) to each server.
    pub max_concurrency: usize,
    /// How long a server that refused or dropped a connection stays out of the rotation
    /// before it is tried again (requests go to the other servers meanwhile).
    pub endpoint_retry_after: Duration,
    /// Episode stickiness yields to balance: a context goes back to the server that holds its
    /// prefix unless that server has more than this many requests in flight above the least
    /// busy one.
    pub sticky_max_imbalance: usize,
    /// Limit on one weight-publishing request (loading an adapter or a checkpoint).
    pub publish_timeout: Duration,
    /// Largest response body read; a server that sends more is an error (a broken or
    /// hostile server cannot exhaust memory).
    pub max_response_bytes: usize,
    /// The model's context limit, if known (reported by `Policy::context_limit`).
    pub context_limit: Option<usize>,
    /// Policy version stamped on sampled tokens (change it with `HttpPolicy::set_version`).
    pub policy_version: u64,
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("base_url", &self.base_url)
            .field("dialect", &self.dialect)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("retry_after_max", &self.retry_after_max)
            .field("extra_base_urls", &self.extra_base_urls)
            .field("max_concurrency", &self.max_concurrency)
            .field("endpoint_retry_after", &self.endpoint_retry_after)
            .field("sticky_max_imbalance", &self.sticky_max_imbalance)
            .field("publish_timeout", &self.publish_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("context_limit", &self.context_limit)
            .field("policy_version", &self.policy_version)
            .finish()
    }
}

impl HttpConfig {
    pub fn new(base_url: impl Into<String>, dialect: Dialect) -> Self {
        HttpConfig {
            base_url: base_url.into(),
            extra_base_urls: Vec::new(),
            dialect,
            model: None,
            api_key: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            max_attempts: 5,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(60),
            max_concurrency: 64,
            endpoint_retry_after: Duration::from_secs(30),
            sticky_max_imbalance: 4,
            publish_timeout: Duration::from_secs(600),
            max_response_bytes: 256 << 20,
            context_limit: None,
            policy_version: 0,
        }
    }

    /// Parses `URL[,URL...][#DIALECT[:MODEL]]` with `URL = http[s]://HOST:PORT[/PATH]`;
    /// several comma-separated URLs are servers of the same model behind one policy
    /// (scale-out). The fragment names the dialect
    /// (`vllm` when absent) and optionally the model; a fragment that is not a dialect name is
    /// taken as the model name for vLLM. Examples:
    /// `http://127.0.0.1:8000/v1`, `http://127.0.0.1:8000/v1#vllm:Qwen/Qwen3-0.6B`,
    /// `http://127.0.0.1:30000#sglang`, `http://127.0.0.1:8080#llamacpp`,
    /// `http://127.0.0.1:11434#ollama:qwen3:0.6b`.
    pub fn from_spec(spec: &str) -> Result<Self, HttpError> {
        let (url, fragment) = match spec.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (spec, None),
        };
        let (dialect, model) = match fragment.map(str::trim).filter(|f| !f.is_empty()) {
            None => (Dialect::Vllm, None),
            Some(f) => {
                let (head, tail) = match f.split_once(':') {
                    Some((h, t)) => (h, Some(t)),
                    None => (f, None),
                };
                match head.parse::<Dialect>() {
                    Ok(d) => (d, tail.filter(|t| !t.is_empty()).map(str::to_string)),
                    Err(_) => (Dialect::Vllm, Some(f.to_string())),
                }
            }
        };
        let mut urls = url.split(',').map(str::trim);
        let mut config = HttpConfig::new(urls.next().unwrap_or_default(), dialect);
        config.extra_base_urls = urls.map(str::to_string).collect();
        config.model = model;
        config.roots()?;
        Ok(config)
    }

    /// Fills `api_key` from `ENACT_API_KEY`, else `OPENAI_API_KEY`, when not set.
    pub fn with_api_key_from_env(mut self) -> Self {
        if self.api_key.is_none() {
            self.api_key = ["ENACT_API_KEY", "OPENAI_API_KEY"]
                .iter()
                .filter_map(|k| std::env::var(k).ok())
                .find(|v| !v.trim().is_empty());
        }
        self
    }

    /// The (first) server root without a trailing slash or `/v1`.
    pub fn root(&self) -> Result<String, HttpError> {
        server_root(&self.base_url)
    }

    /// Every server root: `base_url`'s, then `extra_base_urls`'.
    pub fn roots(&self) -> Result<Vec<String>, HttpError> {
        let mut roots = vec![self.root()?];
        for url in &self.extra_base_urls {
            let root = server_root(url)?;
            if roots.contains(&root) {
                return Err(HttpError::InvalidConfig(format!(
                    "the server {root} is listed twice; list each server once"
                )));
            }
            roots.push(root);
        }
        Ok(roots)
    }

    pub(crate) fn validate(&self) -> Result<(), HttpError> {
        self.roots()?;
        if self.max_attempts == 0 {
            return Err(HttpError::InvalidConfig(
                "max_attempts must be at least 1".into(),
            ));
        }
        if self.max_concurrency == 0 {
            return Err(HttpError::InvalidConfig(
                "max_concurrency must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(HttpError::InvalidConfig(
                "timeouts must be longer than zero".into(),
            ));
        }
        Ok(())
    }
}

/// A server root from a URL: no trailing slash or `/v1`.
fn server_root(url: &str) -> Result<String, HttpError> {
    let bad = |why: &str| HttpError::InvalidUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    if parsed.query().is_some() {
        return Err(bad("the URL must not have a query string"));
    }
    let mut root = parsed.as_str().trim_end_matches('/').to_string();
    if let Some(stripped) = root.strip_suffix("/v1") {
        root = stripped.to_string();
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn specs_parse() {
        let c = HttpConfig::from_spec("http://127.0.0.1:8000/v1").unwrap();
        assert_eq!(c.dialect, Dialect::Vllm);
        assert_eq!(c.model, None);
        assert_eq!(c.root().unwrap(), "http://127.0.0.1:8000");

        let c = HttpConfig::from_spec("http://127.0.0.1:8000/v1/#vllm:Qwen/Qwen3-0.6B").unwrap();
        assert_eq!(c.model.as_deref(), Some("Qwen/Qwen3-0.6B"));
        assert_eq!(c.root().unwrap(), "http://127.0.0.1:8000");

        let c = HttpConfig::from_spec("http://localhost:11434#ollama:qwen3:0.6b").unwrap();
        assert_eq!(c.dialect, Dialect::Ollama);
        assert_eq!(c.model.as_deref(), Some("qwen3:0.6b"));

        let c = HttpConfig::from_spec("http://h:30000#sglang").unwrap();
        assert_eq!(c.dialect, Dialect::Sglang);
        assert_eq!(c.model, None);

        let c = HttpConfig::from_spec("https://h/prefix#my-model").unwrap();
        assert_eq!(c.dialect, Dialect::Vllm);
        assert_eq!(c.model.as_deref(), Some("my-model"));
        assert_eq!(c.root().unwrap(), "https://h/prefix");

        assert!(HttpConfig::from_spec("ftp://h").is_err());
        assert!(HttpConfig::from_spec("not a url").is_err());
        assert!(HttpConfig::from_spec("http://h:1?x=1").is_err());

        let c = HttpConfig::from_spec("http://a:1/v1, http://b:2/v1#sglang").unwrap();
        assert_eq!(c.dialect, Dialect::Sglang);
        assert_eq!(c.roots().unwrap(), vec!["http://a:1", "http://b:2"]);
        assert!(HttpConfig::from_spec("http://a:1,ftp://b").is_err());
        assert!(HttpConfig::from_spec("http://a:1,http://a:1/v1").is_err());
        assert!(HttpConfig::from_spec("http://a:1,").is_err());

        let mut c = HttpConfig::from_spec("http://h:1").unwrap();
        c.api_key = Some("sk-secret".into());
        assert!(!format!("{c:?}").contains("sk-secret"));
    }

    #[test]
    fn dialect_names_round_trip() {
        for d in Dialect::ALL {
            assert_eq!(d.name().parse::<Dialect>().unwrap(), d);
        }
        assert!("tgi".parse::<Dialect>().is_err());
    }
}

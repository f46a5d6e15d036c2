//! The client side: [`RemoteClient`] speaks the protocol; [`RemoteEnv`] is an enact
//! [`Environment`] over it; [`RemoteSuite`] is a [`Suite`] whose tasks, environments,
//! grading and reference solutions live on a server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enact_core::{
    Action, EnvError, Environment, Reset, StepOutcome, Submission, Task, Verdict, Verifier,
    VerifyError,
};
use enact_env::Suite;
use enact_http::transport::{BodyError, read_body_capped};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::protocol::*;

/// A failure talking to a remote environment server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid remote URL \"{0}\": use http://HOST:PORT[/SUITE]")]
    Url(String),
    #[error(
        "cannot reach the environment server at {url}: {message}. Is the server running (e.g. `enact env serve --bind ADDR`)?"
    )]
    Unreachable { url: String, message: String },
    #[error("the environment server at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("the environment server answered {status} ({kind}): {message}")]
    Server {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("the environment server sent an unexpected answer to {what}: {message}")]
    Protocol { what: String, message: String },
}

impl From<RemoteError> for EnvError {
    fn from(e: RemoteError) -> Self {
        match &e {
            RemoteError::Server { kind, .. } if kind == "not_reset" => EnvError::NotReset,
            _ => EnvError::Remote(e.to_string()),
        }
    }
}

/// An HTTP client of one server.
#[derive(Clone)]
pub struct RemoteClient {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
    max_response_bytes: usize,
}

/// Largest response body a client reads by default (a server that sends more is an error).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("base", &self.base)
            .finish()
    }
}

impl RemoteClient {
    /// A client of the server at `base` (`http://HOST:PORT`), with a per-request timeout.
    pub fn new(base: &str, timeout: Duration) -> Result<RemoteClient, RemoteError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::Url(base));
        }
        let http = enact_http::transport::client_builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .build()
            .map_err(|e| RemoteError::Protocol {
                what: "client setup".into(),
                message: e.to_string(),
            })?;
        Ok(RemoteClient {
            base,
            http,
            timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Sets the largest response body read (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, RemoteError> {
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                RemoteError::Timeout {
                    url: self.base.clone(),
                    timeout: self.timeout,
                }
            } else {
                RemoteError::Unreachable {
                    url: self.base.clone(),
                    message: error_chain(&e),
                }
            }
        })?;
        let status = resp.status();
        let bytes = read_body_capped(resp, self.max_response_bytes)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => RemoteError::Unreachable {
                    url: self.base.clone(),
                    message: error_chain(&e),
                },
                BodyError::TooLarge { limit } => RemoteError::Protocol {
                    what: what.into(),
                    message: format!("the response (HTTP {status}) is larger than {limit} bytes"),
                },
            })?;
        if !status.is_success() {
            let (kind, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (b.error.kind, b.error.message),
                Err(_) => (
                    "http".to_string(),
                    String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                ),
            };
            return Err(RemoteError::Server {
                status: status.as_u16(),
                kind,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::Protocol {
            what: what.into(),
            message: format!(
                "{e}; body: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, what: &str) -> Result<T, RemoteError> {
        self.send(self.http.get(format!("{}{path}", self.base)), what)
            .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        what: &str,
    ) -> Result<T, RemoteError> {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            what,
        )
        .await
    }

    pub async fn health(&self) -> Result<Health, RemoteError> {
        let h: Health = self.get("/v1/health", "health").await?;
        if h.protocol != PROTOCOL {
            return Err(RemoteError::Protocol {
                what: "health".into(),
                message: format!("server speaks {}, this client {PROTOCOL}", h.protocol),
            });
        }
        Ok(h)
    }

    pub async fn suites(&self) -> Result<Vec<SuiteInfo>, RemoteError> {
        self.get("/v1/suites", "suites").await
    }

    pub async fn tasks(
        &self,
        suite: &str,
        split: &str,
        n: usize,
        seed: u64,
    ) -> Result<Vec<Task>, RemoteError> {
        let req = self
            .http
            .get(format!("{}/v1/tasks", self.base))
            .query(&[("suite", suite), ("split", split)])
            .query(&[("n", n as u64), ("seed", seed)]);
        let r: TasksResponse = self.send(req, "tasks").await?;
        Ok(r.tasks)
    }

    pub async fn reference(
        &self,
        suite: &str,
        task: &Task,
    ) -> Result<Option<Vec<String>>, RemoteError> {
        let r: ReferenceResponse = self
            .post(
                "/v1/reference",
                &ReferenceRequest {
                    suite: suite.into(),
                    task: task.clone(),
                },
                "reference",
            )
            .await?;
        Ok(r.turns)
    }

    pub async fn create(&self, suite: &str) -> Result<String, RemoteError> {
        let r: CreateResponse = self
            .post(
                "/v1/envs",
                &CreateRequest {
                    suite: suite.into(),
                },
                "create",
            )
            .await?;
        Ok(r.id)
    }

    pub async fn reset(&self, id: &str, task: &Task) -> Result<Reset, RemoteError> {
        self.post(
            &format!("/v1/envs/{id}/reset"),
            &ResetRequest { task: task.clone() },
            "reset",
        )
        .await
    }

    pub async fn step(&self, id: &str, action: Action) -> Result<StepOutcome, RemoteError> {
        self.post(
            &format!("/v1/envs/{id}/step"),
            &StepRequest { action },
            "step",
        )
        .await
    }

    pub async fn submission(&self, id: &str) -> Result<Submission, RemoteError> {
        self.post(
            &format!("/v1/envs/{id}/submission"),
            &json!({}),
            "submission",
        )
        .await
    }

    pub async fn verify(&self, id: &str) -> Result<Verdict, RemoteError> {
        self.post(&format!("/v1/envs/{id}/verify"), &json!({}), "verify")
            .await
    }

    pub async fn close(&self, id: &str) -> Result<bool, RemoteError> {
        let r: CloseResponse = self
            .send(
                self.http.delete(format!("{}/v1/envs/{id}", self.base)),
                "close",
            )
            .await?;
        Ok(r.closed)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// An environment served by a remote server.
pub struct RemoteEnv {
    client: RemoteClient,
    suite: String,
    session: Option<String>,
}

impl RemoteEnv {
    pub fn new(client: RemoteClient, suite: impl Into<String>) -> Self {
        RemoteEnv {
            client,
            suite: suite.into(),
            session: None,
        }
    }

    /// The server's session id, once reset.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }
}

#[async_trait]
impl Environment for RemoteEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        let id = match &self.session {
            Some(id) => id.clone(),
            None => {
                let id = self.client.create(&self.suite).await?;
                self.session = Some(id.clone());
                id
            }
        };
        Ok(self.client.reset(&id, task).await?)
    }

    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        let id = self.session.clone().ok_or(EnvError::NotReset)?;
        Ok(self.client.step(&id, action).await?)
    }

    /// The server's submission, with `state` wrapped as
    /// `{"remote_session": ID, "state": <server state>}` so that [`RemoteVerifier`] can ask
    /// the server to grade this session.
    async fn submission(&mut self) -> Result<Submission, EnvError> {
        let id = self.session.clone().ok_or(EnvError::NotReset)?;
        let mut sub = self.client.submission(&id).await?;
        let inner = sub.state.take().unwrap_or(Value::Null);
        sub.state = Some(json!({ SESSION_KEY: id, "state": inner }));
        Ok(sub)
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        if let Some(id) = self.session.take() {
            self.client.close(&id).await?;
        }
        Ok(())
    }
}

impl Drop for RemoteEnv {
    fn drop(&mut self) {
        // Best effort: close a session that was never closed.
        if let (Some(id), Ok(handle)) = (self.session.take(), tokio::runtime::Handle::try_current())
        {
            let client = self.client.clone();
            handle.spawn(async move {
                let _ = client.close(&id).await;
            });
        }
    }
}

/// Asks the server to grade the session named in the submission (grading stays on the
/// server, next to the hidden data).
pub struct RemoteVerifier {
    client: RemoteClient,
}

impl RemoteVerifier {
    pub fn new(client: RemoteClient) -> Self {
        RemoteVerifier { client }
    }
}

#[async_trait]
impl Verifier for RemoteVerifier {
    async fn verify(&self, _task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let id = sub
            .state
            .as_ref()
            .and_then(|s| s[SESSION_KEY].as_str())
            .ok_or_else(|| {
                VerifyError::Malformed(
                    "the submission does not name a remote session (it did not come from a RemoteEnv)".into(),
                )
            })?;
        self.client.verify(id).await.map_err(|e| match e {
            RemoteError::Timeout { timeout, .. } => VerifyError::Timeout(timeout),
            other => VerifyError::Failed(other.to_string()),
        })
    }
}

/// A suite served by a remote server: `remote:http://HOST:PORT[/SUITE]` in the CLI.
pub struct RemoteSuite {
    client: RemoteClient,
    suite: String,
    name: String,
    description: String,
}

impl RemoteSuite {
    /// Connects to `url` (`http://HOST:PORT` or `http://HOST:PORT/SUITE`; without a suite,
    /// the server's only or first suite), checking the server and the suite.
    pub async fn connect(url: &str, timeout: Duration) -> Result<RemoteSuite, RemoteError> {
        let (base, wanted) = split_url(url)?;
        let client = RemoteClient::new(&base, timeout)?;
        client.health().await?;
        let suites = client.suites().await?;
        let info = match &wanted {
            Some(w) => suites
                .iter()
                .find(|s| &s.name == w)
                .cloned()
                .ok_or_else(|| RemoteError::Server {
                    status: 404,
                    kind: "not_found".into(),
                    message: format!(
                        "the server has no suite \"{w}\"; it has: {}",
                        suites
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?,
            None => suites
                .first()
                .cloned()
                .ok_or_else(|| RemoteError::Protocol {
                    what: "suites".into(),
                    message: "the server offers no suites".into(),
                })?,
        };
        Ok(RemoteSuite {
            name: format!("remote:{base}/{}", info.name),
            description: format!("{} (remote, {base})", info.description),
            client,
            suite: info.name,
        })
    }

    pub fn client(&self) -> &RemoteClient {
        &self.client
    }

    /// The server-side suite name.
    pub fn remote_name(&self) -> &str {
        &self.suite
    }

    fn run_blocking<T: Send + 'static, F>(&self, f: F) -> Result<T, RemoteError>
    where
        F: FnOnce(
                RemoteClient,
                String,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<T, RemoteError>> + Send>,
            > + Send
            + 'static,
    {
        let (base, timeout, suite) = (
            self.client.base.clone(),
            self.client.timeout,
            self.suite.clone(),
        );
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| RemoteError::Protocol {
                    what: "runtime".into(),
                    message: e.to_string(),
                })?;
            let client = RemoteClient::new(&base, timeout)?;
            rt.block_on(f(client, suite))
        })
        .join();
        joined.unwrap_or_else(|_| {
            Err(RemoteError::Protocol {
                what: "request".into(),
                message: "the request thread crashed".into(),
            })
        })
    }
}

/// Splits `http://HOST:PORT/SUITE` into the base URL and the suite.
pub fn split_url(url: &str) -> Result<(String, Option<String>), RemoteError> {
    let rest = url
        .strip_prefix("http://")
        .map(|r| ("http://", r))
        .or_else(|| url.strip_prefix("https://").map(|r| ("https://", r)));
    let Some((scheme, rest)) = rest else {
        return Err(RemoteError::Url(url.into()));
    };
    let rest = rest.trim_end_matches('/');
    match rest.split_once('/') {
        Some((host, suite)) if !suite.is_empty() => {
            Ok((format!("{scheme}{host}"), Some(suite.to_string())))
        }
        _ => Ok((format!("{scheme}{rest}"), None)),
    }
}

impl Suite for RemoteSuite {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        let split = split.to_string();
        match self.run_blocking(move |c, suite| {
            Box::pin(async move { c.tasks(&suite, &split, count, seed).await })
        }) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot fetch remote tasks: {e}");
                eprintln!("error: cannot fetch remote tasks: {e}");
                Vec::new()
            }
        }
    }

    fn make(&self, _task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(RemoteEnv::new(
            self.client.clone(),
            self.suite.clone(),
        )))
    }

    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::new(RemoteVerifier::new(self.client.clone()))
    }

    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let task = task.clone();
        match self
            .run_blocking(move |c, suite| Box::pin(async move { c.reference(&suite, &task).await }))
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot fetch the remote reference solution: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn an_oversized_response_is_an_error_not_unbounded_memory() {
        let app = axum::Router::new().route(
            "/v1/health",
            axum::routing::get(|| async { "x".repeat(300_000) }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(l, app).await });
        let client = RemoteClient::new(&format!("http://{addr}"), Duration::from_secs(5))
            .unwrap()
            .with_max_response_bytes(100_000);
        let err = client.health().await.unwrap_err().to_string();
        assert!(err.contains("larger than 100000 bytes"), "{err}");
        server.abort();
    }
}

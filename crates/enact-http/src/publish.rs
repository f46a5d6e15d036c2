//! Publishing new weights to the serving engines, so later samples come from the updated
//! policy: LoRA adapters (vLLM, SGLang) and full checkpoints from disk (SGLang). Each
//! publication goes to every server of the policy and, only when all accepted it, bumps the
//! policy version stamped on later samples. The exact requests are in
//! `docs/http-backends.md`.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::config::Dialect;
use crate::dialect;
use crate::policy::HttpPolicy;
use crate::transport::{BodyError, read_body_capped};

/// Largest answer read from a weight-publishing endpoint.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why new weights could not be published. The policy version and the adapter requests run
/// through are unchanged after any of these.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{dialect} servers cannot {what} over HTTP: {hint}")]
    Unsupported {
        dialect: Dialect,
        what: &'static str,
        hint: &'static str,
    },
    #[error("invalid adapter name {0:?}: use a non-empty name without whitespace or '/'")]
    InvalidName(String),
    #[error("{url} refused to {what} (HTTP {status}): {message}{hint}")]
    Rejected {
        url: String,
        what: &'static str,
        status: u16,
        message: String,
        hint: &'static str,
    },
    #[error("could not {what} at {url}: {message}; is the server running?")]
    Unreachable {
        url: String,
        what: &'static str,
        message: String,
    },
}

/// A policy whose serving engines can take new weights while running.
#[async_trait]
pub trait WeightPublisher: Send + Sync {
    /// Loads the LoRA adapter in directory `path` (a path the *servers* can read) under
    /// `name` on every server, sends later samples through it, and returns the new policy
    /// version. Publishing under the current name again replaces the adapter (vLLM: in
    /// place; SGLang: each publication is served as `NAME-vVERSION`, see
    /// [`HttpPolicy::adapter`]). The adapter replaced stays loaded until the next
    /// publication (requests built before the switch may name it), then it is unloaded
    /// (best effort).
    async fn publish_lora(&self, name: &str, path: &str) -> Result<u64, PublishError>;

    /// Replaces the served weights by the checkpoint in directory `path` (a path the
    /// servers can read) on every server and returns the new policy version.
    async fn update_weights_from_disk(&self, path: &str) -> Result<u64, PublishError>;
}

const VLLM_LORA_HINT: &str = " (vLLM serves these endpoints only when started with \
     VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora)";

impl HttpPolicy {
    /// The served name of the LoRA adapter generation requests currently name, if one was
    /// published (vLLM: the name given; SGLang: `NAME-vVERSION`).
    pub fn adapter(&self) -> Option<String> {
        self.inner
            .adapter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// POSTs `body` to `path` on every server, in order; the first refusal is the error.
    async fn post_to_all(
        &self,
        path: &str,
        body: &Value,
        what: &'static str,
    ) -> Result<(), PublishError> {
        for e in &self.inner.endpoints.list {
            self.post_admin(&format!("{}{path}", e.root), body, what)
                .await?;
        }
        Ok(())
    }

    /// One weight-publishing request: not retried (a half-applied update must be seen by
    /// the caller), with its own timeout. Success is a 2xx answer that does not say
    /// `"success": false` (vLLM answers plain text, SGLang JSON).
    async fn post_admin(
        &self,
        url: &str,
        body: &Value,
        what: &'static str,
    ) -> Result<(), PublishError> {
        let c = &self.inner.config;
        let mut rb = self
            .inner
            .client
            .post(url)
            .timeout(c.publish_timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = &c.api_key {
            rb = rb.bearer_auth(key);
        }
        let unreachable = |message: String| PublishError::Unreachable {
            url: url.to_string(),
            what,
            message,
        };
        let resp = rb.send().await.map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = read_body_capped(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => unreachable(e.to_string()),
                too_large @ BodyError::TooLarge { .. } => unreachable(too_large.to_string()),
            })?;
        let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
        let said_failure = answer
            .as_ref()
            .and_then(|v| v.get("success"))
            .and_then(Value::as_bool)
            == Some(false);
        if status.is_success() && !said_failure {
            return Ok(());
        }
        let message = answer
            .as_ref()
            .and_then(|v| {
                ["error_message", "message"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(Value::as_str))
            })
            .map(|m| dialect::truncate(m, 500))
            .unwrap_or_else(|| dialect::error_message(&bytes));
        let hint = if self.dialect() == Dialect::Vllm && status.as_u16() == 404 {
            VLLM_LORA_HINT
        } else {
            ""
        };
        Err(PublishError::Rejected {
            url: url.to_string(),
            what,
            status: status.as_u16(),
            message,
            hint,
        })
    }

    /// Bumps and returns the policy version after a publication every server accepted.
    fn next_version(&self) -> u64 {
        self.inner.version.fetch_add(1, Ordering::SeqCst) + 1
    }
}

fn valid_adapter_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '/')
}

#[async_trait]
impl WeightPublisher for HttpPolicy {
    async fn publish_lora(&self, name: &str, path: &str) -> Result<u64, PublishError> {
        if !valid_adapter_name(name) {
            return Err(PublishError::InvalidName(name.to_string()));
        }
        let _one_at_a_time = self.inner.publish_lock.lock().await;
        let previous = self.adapter();
        let what = "load the LoRA adapter";
        // The name requests will use. SGLang refuses to load a name that is loaded, and
        // unloading first would fail the requests running meanwhile: each publication there
        // gets its own served name, `NAME-vVERSION`.
        let served = match self.dialect() {
            Dialect::Sglang => format!("{name}-v{}", self.inner.version.load(Ordering::SeqCst) + 1),
            _ => name.to_string(),
        };
        let replacing = previous.as_deref() == Some(served.as_str());
        match self.dialect() {
            Dialect::Vllm => {
                // load_inplace replaces an adapter of the same name (older vLLM ignores the
                // field and refuses a name already loaded: publish under new names there).
                let body = json!({"lora_name": name, "lora_path": path, "load_inplace": true});
                self.post_to_all("/v1/load_lora_adapter", &body, what)
                    .await?;
            }
            Dialect::Sglang => {
                let body = json!({"lora_name": served, "lora_path": path});
                self.post_to_all("/load_lora_adapter", &body, what).await?;
            }
            dialect => {
                return Err(PublishError::Unsupported {
                    dialect,
                    what: "load LoRA adapters",
                    hint: "serve the model with vLLM or SGLang to publish weights while running",
                });
            }
        }
        *self
            .inner
            .adapter
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(served.clone());
        let version = self.next_version();
        // The adapter just replaced stays loaded until the next publication: requests built
        // before the switch may still name it. The one retired before goes now.
        let to_unload = {
            let mut retired = self
                .inner
                .retired_adapter
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let older = retired.take();
            *retired = previous.filter(|_| !replacing);
            older.filter(|o| *o != served)
        };
        if let Some(old) = to_unload {
            let unload_path = match self.dialect() {
                Dialect::Vllm => "/v1/unload_lora_adapter",
                _ => "/unload_lora_adapter",
            };
            if let Err(e) = self
                .post_to_all(
                    unload_path,
                    &json!({"lora_name": old}),
                    "unload the LoRA adapter",
                )
                .await
            {
                tracing::warn!(adapter = %old, error = %e, "the previous LoRA adapter stays loaded");
            }
        }
        tracing::info!(adapter = %served, path, version, "published a LoRA adapter");
        Ok(version)
    }

    async fn update_weights_from_disk(&self, path: &str) -> Result<u64, PublishError> {
        let _one_at_a_time = self.inner.publish_lock.lock().await;
        match self.dialect() {
            Dialect::Sglang => {
                self.post_to_all(
                    "/update_weights_from_disk",
                    &json!({"model_path": path}),
                    "load the weights from disk",
                )
                .await?;
            }
            Dialect::Vllm => {
                return Err(PublishError::Unsupported {
                    dialect: Dialect::Vllm,
                    what: "reload full weights from disk",
                    hint: "vLLM has no stable HTTP endpoint for it; publish LoRA adapters \
                           (publish_lora) or serve the model with SGLang",
                });
            }
            dialect => {
                return Err(PublishError::Unsupported {
                    dialect,
                    what: "reload weights from disk",
                    hint: "serve the model with SGLang (full weights) or vLLM (LoRA adapters)",
                });
            }
        }
        let version = self.next_version();
        tracing::info!(path, version, "published full weights");
        Ok(version)
    }
}

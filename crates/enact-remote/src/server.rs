//! The server side: exposes enact suites over the wire protocol. Grading runs here, so
//! hidden data never leaves the server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use enact_core::{Environment, Task};
use enact_env::Suite;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::protocol::*;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Sessions idle longer than this are closed.
    pub idle_timeout: Duration,
    pub max_sessions: usize,
    /// Limit of one reset / step / submission call.
    pub step_timeout: Duration,
    pub verify_timeout: Duration,
    /// Most tasks one `/v1/tasks` call returns.
    pub max_tasks: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            idle_timeout: Duration::from_secs(30 * 60),
            max_sessions: 1024,
            step_timeout: Duration::from_secs(600),
            verify_timeout: Duration::from_secs(600),
            max_tasks: 100_000,
        }
    }
}

struct Session {
    suite: Arc<dyn Suite>,
    env: Option<Box<dyn Environment>>,
    task: Option<Task>,
    last_used: Instant,
}

impl Session {
    /// The environment of a session that has been reset.
    fn env_mut(&mut self) -> Result<&mut Box<dyn Environment>, ApiError> {
        self.env
            .as_mut()
            .ok_or_else(|| env_error(enact_core::EnvError::NotReset))
    }
}

type Sessions = std::sync::Mutex<HashMap<String, Arc<Mutex<Session>>>>;

struct AppState {
    suites: BTreeMap<String, Arc<dyn Suite>>,
    sessions: Sessions,
    cfg: ServerConfig,
}

/// An error answer.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.1.into(),
                message: self.2,
            },
        };
        (self.0, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", msg.into())
}

impl AppState {
    fn suite(&self, name: &str) -> Result<Arc<dyn Suite>, ApiError> {
        self.suites.get(name).cloned().ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "unknown suite \"{name}\"; this server has: {}",
                    self.suites.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// Locks a session for one request and marks it used (inactive sessions expire).
    async fn use_session(
        &self,
        id: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<Session>, ApiError> {
        let mut g = self.session(id)?.lock_owned().await;
        g.last_used = Instant::now();
        Ok(g)
    }

    fn session(&self, id: &str) -> Result<Arc<Mutex<Session>>, ApiError> {
        let map = self.sessions.lock().map_err(|_| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "env",
                "session table poisoned".into(),
            )
        })?;
        map.get(id).cloned().ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no session \"{id}\" (closed, expired after inactivity, or never created)"),
            )
        })
    }
}

/// The protocol's routes over `suites` (by name).
pub fn router(suites: Vec<Arc<dyn Suite>>, cfg: ServerConfig) -> Router {
    let state = Arc::new(AppState {
        suites: suites
            .into_iter()
            .map(|s| (s.name().to_string(), s))
            .collect(),
        sessions: Default::default(),
        cfg,
    });
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/suites", get(list_suites))
        .route("/v1/tasks", get(tasks))
        .route("/v1/reference", post(reference))
        .route("/v1/envs", post(create))
        .route("/v1/envs/{id}/reset", post(reset))
        .route("/v1/envs/{id}/step", post(step))
        .route("/v1/envs/{id}/submission", post(submission))
        .route("/v1/envs/{id}/verify", post(verify))
        .route("/v1/envs/{id}", delete(close))
        .with_state(state)
}

/// Serves `suites` on `listener` until the future is dropped or fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    suites: Vec<Arc<dyn Suite>>,
    cfg: ServerConfig,
) -> std::io::Result<()> {
    axum::serve(listener, router(suites, cfg)).await
}

/// Binds `addr` and serves in the background; returns the bound address (port 0 picks a
/// free port) and the server task.
pub async fn spawn(
    addr: SocketAddr,
    suites: Vec<Arc<dyn Suite>>,
    cfg: ServerConfig,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, tokio::spawn(serve(listener, suites, cfg))))
}

async fn health(State(s): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        protocol: PROTOCOL.into(),
        suites: s.suites.keys().cloned().collect(),
    })
}

async fn list_suites(State(s): State<Arc<AppState>>) -> Json<Vec<SuiteInfo>> {
    Json(
        s.suites
            .values()
            .map(|x| SuiteInfo {
                name: x.name().into(),
                description: x.description().into(),
            })
            .collect(),
    )
}

#[derive(Deserialize)]
struct TasksQuery {
    suite: String,
    #[serde(default = "default_split")]
    split: String,
    #[serde(default = "default_n")]
    n: usize,
    #[serde(default)]
    seed: u64,
}
fn default_split() -> String {
    "test".into()
}
fn default_n() -> usize {
    20
}

async fn tasks(
    State(s): State<Arc<AppState>>,
    Query(q): Query<TasksQuery>,
) -> ApiResult<TasksResponse> {
    let suite = s.suite(&q.suite)?;
    if q.n > s.cfg.max_tasks {
        return Err(bad(format!(
            "n = {} is more than the limit of {}",
            q.n, s.cfg.max_tasks
        )));
    }
    let tasks = tokio::task::spawn_blocking(move || suite.tasks(&q.split, q.n, q.seed))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "env",
                format!("task generation crashed: {e}"),
            )
        })?;
    Ok(Json(TasksResponse { tasks }))
}

async fn reference(
    State(s): State<Arc<AppState>>,
    Json(r): Json<ReferenceRequest>,
) -> ApiResult<ReferenceResponse> {
    let suite = s.suite(&r.suite)?;
    let turns = tokio::task::spawn_blocking(move || suite.reference_solution(&r.task))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "env",
                format!("reference solution crashed: {e}"),
            )
        })?;
    Ok(Json(ReferenceResponse { turns }))
}

async fn create(
    State(s): State<Arc<AppState>>,
    Json(r): Json<CreateRequest>,
) -> ApiResult<CreateResponse> {
    let suite = s.suite(&r.suite)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let expired: Vec<Arc<Mutex<Session>>> = {
        let mut map = s.sessions.lock().map_err(|_| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "env",
                "session table poisoned".into(),
            )
        })?;
        // Drop sessions idle for too long (their environments are closed below).
        let mut old = Vec::new();
        map.retain(|_, sess| match sess.try_lock() {
            Ok(g) if g.last_used.elapsed() > s.cfg.idle_timeout => {
                old.push(sess.clone());
                false
            }
            _ => true,
        });
        if map.len() >= s.cfg.max_sessions {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "the server already has {} open sessions; close some (DELETE /v1/envs/ID) and retry",
                    map.len()
                ),
            ));
        }
        map.insert(
            id.clone(),
            Arc::new(Mutex::new(Session {
                suite,
                env: None,
                task: None,
                last_used: Instant::now(),
            })),
        );
        old
    };
    for sess in expired {
        if let Some(mut env) = sess.lock().await.env.take() {
            let _ = env.close().await;
        }
    }
    Ok(Json(CreateResponse { id }))
}

fn env_error(e: enact_core::EnvError) -> ApiError {
    match e {
        enact_core::EnvError::NotReset => {
            ApiError(StatusCode::CONFLICT, "not_reset", e.to_string())
        }
        other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "env", other.to_string()),
    }
}

fn timeout_error(what: &str, t: Duration) -> ApiError {
    ApiError(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!("{what} did not finish within {t:?}"),
    )
}

async fn reset(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(r): Json<ResetRequest>,
) -> ApiResult<enact_core::Reset> {
    let mut g = s.use_session(&id).await?;
    if let Some(mut old) = g.env.take() {
        let _ = old.close().await;
    }
    let mut env = g.suite.make(&r.task).map_err(env_error)?;
    let out = tokio::time::timeout(s.cfg.step_timeout, env.reset(&r.task))
        .await
        .map_err(|_| timeout_error("reset", s.cfg.step_timeout))?
        .map_err(env_error)?;
    g.env = Some(env);
    g.task = Some(r.task);
    Ok(Json(out))
}

async fn step(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(r): Json<StepRequest>,
) -> ApiResult<enact_core::StepOutcome> {
    let mut g = s.use_session(&id).await?;
    let env = g.env_mut()?;
    let out = tokio::time::timeout(s.cfg.step_timeout, env.step(r.action))
        .await
        .map_err(|_| timeout_error("step", s.cfg.step_timeout))?
        .map_err(env_error)?;
    Ok(Json(out))
}

async fn submission(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<enact_core::Submission> {
    let mut g = s.use_session(&id).await?;
    let env = g.env_mut()?;
    let mut sub = tokio::time::timeout(s.cfg.step_timeout, env.submission())
        .await
        .map_err(|_| timeout_error("submission", s.cfg.step_timeout))?
        .map_err(env_error)?;
    // Server paths mean nothing to the client; the workspace stays here for grading.
    sub.workspace = None;
    Ok(Json(sub))
}

async fn verify(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<enact_core::Verdict> {
    let mut g = s.use_session(&id).await?;
    let task = g
        .task
        .clone()
        .ok_or_else(|| env_error(enact_core::EnvError::NotReset))?;
    let verifier = g.suite.verifier();
    let env = g.env_mut()?;
    // The server grades its own view of the submission, never one sent by the client.
    let sub = tokio::time::timeout(s.cfg.step_timeout, env.submission())
        .await
        .map_err(|_| timeout_error("submission", s.cfg.step_timeout))?
        .map_err(env_error)?;
    let verdict = tokio::time::timeout(s.cfg.verify_timeout, verifier.verify(&task, &sub))
        .await
        .map_err(|_| timeout_error("verification", s.cfg.verify_timeout))?
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, "verifier", e.to_string()))?;
    Ok(Json(verdict))
}

async fn close(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<CloseResponse> {
    let sess = {
        let mut map = s.sessions.lock().map_err(|_| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "env",
                "session table poisoned".into(),
            )
        })?;
        map.remove(&id)
    };
    let Some(sess) = sess else {
        return Ok(Json(CloseResponse { closed: false }));
    };
    let env = sess.lock().await.env.take();
    if let Some(mut env) = env {
        env.close().await.map_err(env_error)?;
    }
    Ok(Json(CloseResponse { closed: true }))
}

//! The wire protocol (`enact-env/1`): HTTP + JSON. Bodies are the serde forms of the
//! `enact-core` types ([`Task`], [`Reset`], [`Action`], [`StepOutcome`], [`Submission`],
//! [`Verdict`]). See `docs/remote-protocol.md` for the full description with examples.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/health` | | [`Health`] |
//! | GET | `/v1/suites` | | `[`[`SuiteInfo`]`]` |
//! | GET | `/v1/tasks?suite=&split=&n=&seed=` | | [`TasksResponse`] |
//! | POST | `/v1/reference` | [`ReferenceRequest`] | [`ReferenceResponse`] |
//! | POST | `/v1/envs` | [`CreateRequest`] | [`CreateResponse`] |
//! | POST | `/v1/envs/{id}/reset` | [`ResetRequest`] | [`Reset`] |
//! | POST | `/v1/envs/{id}/step` | [`StepRequest`] | [`StepOutcome`] |
//! | POST | `/v1/envs/{id}/submission` | | [`Submission`] |
//! | POST | `/v1/envs/{id}/verify` | | [`Verdict`] |
//! | DELETE | `/v1/envs/{id}` | | [`CloseResponse`] |
//!
//! Errors are a non-2xx status with an [`ErrorBody`].

use enact_core::{Action, Task};
use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use enact_core::{Reset, StepOutcome, Submission, Verdict};

/// The protocol name and version, reported by `/v1/health`.
pub const PROTOCOL: &str = "enact-env/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub protocol: String,
    #[serde(default)]
    pub suites: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TasksResponse {
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceRequest {
    pub suite: String,
    pub task: Task,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceResponse {
    /// Assistant turns (Hermes tool-call format), or null when the suite has none.
    pub turns: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub suite: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateResponse {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetRequest {
    pub task: Task,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRequest {
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloseResponse {
    pub closed: bool,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// `bad_request`, `not_found`, `not_reset`, `env`, `verifier`, `timeout`, `busy`.
    pub kind: String,
    pub message: String,
}

/// The key under which a remote submission's `state` carries the session id (the server's
/// own state is under `state`), so that the verifier can ask the server to grade.
pub const SESSION_KEY: &str = "remote_session";

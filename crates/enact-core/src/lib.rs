//! Core data model of enact.
//!
//! Everything else in enact plugs into the types and traits here:
//! - [`message`]: chat messages, tool calls and tool specifications (the *text view*);
//! - [`trajectory`]: the token-level record of an episode, a tree of segments (the *truth*);
//! - [`task`]: what an episode is asked to do, and what came of it;
//! - [`env`], [`policy`], [`verify`], [`tokenizer`]: the seams between the agent loop,
//!   environments, models and graders.
//!
//! Invariant: text is derived from tokens, never the other way round. A trajectory stores
//! the exact token ids the model saw and produced; messages are a readable view of them.

pub mod env;
pub mod message;
pub mod policy;
mod rng;
pub mod task;
pub mod template;
pub mod tokenizer;
pub mod trajectory;
pub mod verify;

pub use env::{Action, EnvError, Environment, Reset, StepOutcome, Submission, ToolResult};
pub use message::{Message, Role, ToolCall, ToolSpec};
pub use policy::{
    FinishReason, Policy, PolicyError, Sample, SampleRequest, SamplingParams, TokenSink,
};
pub use rng::SeededRng;
pub use task::{
    Episode, EpisodeError, EpisodeOutcome, MonitorFlag, Task, Termination, Timings, TokenCounts,
};
pub use template::{ChatTemplate, ParsedReply, RenderOptions, ReplyParser, TemplateError};
pub use tokenizer::{Tokenizer, TokenizerError, neutralize_special_tokens};
pub use trajectory::{Segment, SegmentId, SegmentKind, Trajectory, TrajectoryError};
pub use verify::{CheckResult, CheckStatus, Verdict, Verifier, VerifyError};

/// Version of the on-disk formats (trajectories, episodes). Bump on incompatible change.
pub const FORMAT_VERSION: u32 = 1;

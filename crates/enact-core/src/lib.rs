//! Core data model of enact.
//!
//! Everything else in enact plugs into the types and traits here:
//! - [`message`]: chat messages, tool calls and tool specifications (the *text view*);
//! - [`trajectory`]: the token-level record of an episode, a tree of segments (the *truth*);
//! - [`task`]: what an episode is asked to do;
//! - [`episode`]: what came of it, and how it is stored and loaded;
//! - [`env`], [`policy`], [`verify`], [`tokenizer`]: the seams between the agent loop,
//!   environments, models and graders.
//!
//! Invariant: text is derived from tokens, never the other way round. A trajectory stores
//! the exact token ids the model saw and produced; messages are a readable view of them.

pub mod advantage;
pub mod env;
pub mod episode;
pub mod message;
pub mod policy;
mod rng;
pub mod task;
pub mod template;
pub mod thinking;
pub mod tokenizer;
pub mod trajectory;
pub mod verify;

pub use env::{Action, EnvError, Environment, Reset, StepOutcome, Submission, ToolResult};
pub use episode::{
    AgentNode, ChildEpisode, Episode, EpisodeError, EpisodeFormatError, EpisodeOutcome,
    Termination, Timings, TokenCounts, TreeTotals, TurnRecord,
};
pub use message::{Message, Role, ToolCall, ToolSpec};
pub use policy::{
    FinishReason, Policy, PolicyError, Sample, SampleRequest, SamplingParams, TokenSink,
};
pub use rng::SeededRng;
pub use task::Task;
pub use template::{ChatTemplate, ParsedReply, RenderOptions, ReplyParser, TemplateError};
pub use thinking::{
    DecisionSignals, DefaultController, Effort, OffSwitch, ThinkingController, ThinkingMode,
    ThinkingStyle, TurnDecision,
};
pub use tokenizer::{Tokenizer, TokenizerError, neutralize_special_tokens};
pub use trajectory::{Segment, SegmentId, SegmentKind, Trajectory, TrajectoryError};
pub use verify::{CheckResult, CheckStatus, MonitorFlag, Verdict, Verifier, VerifyError};

/// Version of the on-disk formats (trajectories, and the episodes holding them), recorded as
/// `Trajectory::format_version` and checked on every load. Bump on incompatible change.
pub const FORMAT_VERSION: u32 = 1;

//! Tools and the tool box that dispatches calls to them.
//!
//! Every way a call can go wrong becomes an error observation for the model, never a panic
//! or a broken episode: an unknown tool, arguments that are not an object or do not match
//! the schema, a tool that returns an error, a tool that panics, a tool that hangs (time
//! limit), and output that is too large (truncated with a marker).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enact_core::{ToolCall, ToolResult, ToolSpec};
use serde_json::Value;

use crate::schema;

/// A failure a tool reports; the message goes back to the model.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    pub fn new(msg: impl Into<String>) -> Self {
        ToolError(msg.into())
    }
}

/// One tool.
#[async_trait]
pub trait Tool: Send + Sync {
    fn spec(&self) -> ToolSpec;
    /// Runs the tool on schema-checked arguments.
    async fn call(&self, arguments: Value) -> Result<String, ToolError>;
}

/// Limits applied to every call.
#[derive(Debug, Clone)]
pub struct ToolLimits {
    pub timeout: Duration,
    /// Longest observation in bytes; longer output is cut with a marker.
    pub max_output_bytes: usize,
}

impl Default for ToolLimits {
    fn default() -> Self {
        ToolLimits {
            timeout: Duration::from_secs(30),
            max_output_bytes: 16 * 1024,
        }
    }
}

/// A set of tools with dispatch.
#[derive(Clone, Default)]
pub struct ToolBox {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    pub limits: ToolLimits,
}

impl ToolBox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.spec().name, tool);
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec()).collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// Runs one call and always returns an observation.
    pub async fn dispatch(&self, call: &ToolCall) -> ToolResult {
        let err = |content: String| ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content,
            is_error: true,
        };
        let Some(tool) = self.tools.get(&call.name).cloned() else {
            return err(format!(
                "error: unknown tool \"{}\". Available tools: {}.",
                call.name,
                self.names().join(", ")
            ));
        };
        let spec = tool.spec();
        if !call.arguments.is_object() {
            return err(format!(
                "error: arguments of \"{}\" must be a JSON object, got: {}",
                call.name, call.arguments
            ));
        }
        let problems = schema::validate(&spec.parameters, &call.arguments);
        if !problems.is_empty() {
            return err(format!(
                "error: invalid arguments for \"{}\": {}. Expected schema: {}",
                call.name,
                problems.join("; "),
                spec.parameters
            ));
        }
        let args = call.arguments.clone();
        // A task of its own, so a panicking tool is caught (JoinError) instead of unwinding
        // through the agent loop.
        let handle = tokio::spawn(async move { tool.call(args).await });
        let abort = handle.abort_handle();
        let outcome = tokio::time::timeout(self.limits.timeout, handle).await;
        let (content, is_error) = match outcome {
            Err(_) => {
                abort.abort();
                (
                    format!(
                        "error: tool \"{}\" did not finish within {:?} and was stopped",
                        call.name, self.limits.timeout
                    ),
                    true,
                )
            }
            Ok(Err(join)) if join.is_panic() => (
                format!(
                    "error: tool \"{}\" crashed (internal error); try different arguments or another tool",
                    call.name
                ),
                true,
            ),
            Ok(Err(join)) => (
                format!("error: tool \"{}\" was cancelled: {join}", call.name),
                true,
            ),
            Ok(Ok(Err(e))) => (format!("error: {e}"), true),
            Ok(Ok(Ok(out))) => (out, false),
        };
        ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: truncate_output(&content, self.limits.max_output_bytes),
            is_error,
        }
    }
}

/// Cuts text to at most `max` bytes on a character boundary, with an explicit marker.
pub fn truncate_output(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n[output truncated: {} of {} bytes shown]",
        &text[..cut],
        cut,
        text.len()
    )
}

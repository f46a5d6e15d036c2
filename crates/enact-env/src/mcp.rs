//! MCP tools: an MCP server started as a child process (stdio transport, through the
//! `rmcp` client), whose tools become enact [`Tool`]s; calls are forwarded to the server.
//!
//! The server runs as a host process with a cleared environment (plus what the task file
//! declares) in the episode's workspace copy. It is not sandboxed: use trusted servers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enact_core::ToolSpec;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::McpError;
use crate::toolbox::{Tool, ToolError};

type Client = RunningService<RoleClient, ()>;

/// A running MCP server and the tools it offers.
pub struct McpServer {
    client: Arc<Mutex<Option<Client>>>,
    tools: Vec<ToolSpec>,
    command: String,
}

impl McpServer {
    /// Starts `command` (argv) in `cwd` with only `env` (plus PATH) and lists its tools.
    pub async fn spawn(
        command: &[String],
        env: &BTreeMap<String, String>,
        cwd: Option<&Path>,
        timeout: Duration,
    ) -> Result<McpServer, McpError> {
        let (prog, args) = command
            .split_first()
            .ok_or_else(|| "the MCP server command is empty".to_string())?;
        let shown = command.join(" ");
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args).env_clear();
        cmd.env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let transport = TokioChildProcess::new(cmd)
            .map_err(|e| format!("cannot start MCP server `{shown}`: {e}"))?;
        let client = tokio::time::timeout(timeout, ().serve(transport))
            .await
            .map_err(|_| format!("MCP server `{shown}` did not initialise within {timeout:?}"))?
            .map_err(|e| format!("MCP server `{shown}` failed to initialise: {e}"))?;
        let listed = tokio::time::timeout(timeout, client.list_all_tools())
            .await
            .map_err(|_| format!("MCP server `{shown}` did not list its tools within {timeout:?}"))?
            .map_err(|e| format!("MCP server `{shown}` could not list its tools: {e}"))?;
        let tools = listed
            .into_iter()
            .map(|t| ToolSpec {
                name: t.name.to_string(),
                description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                parameters: Value::Object((*t.input_schema).clone()),
            })
            .collect();
        Ok(McpServer {
            client: Arc::new(Mutex::new(Some(client))),
            tools,
            command: shown,
        })
    }

    /// The server's tool specifications.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.tools
    }

    /// The server's tools as enact tools, optionally only those named in `only`, with
    /// `prefix` prepended to their names (the server still sees the original name).
    pub fn tools(&self, only: Option<&[String]>, prefix: &str) -> Vec<Arc<dyn Tool>> {
        self.tools
            .iter()
            .filter(|s| only.is_none_or(|o| o.contains(&s.name)))
            .map(|s| {
                let mut spec = s.clone();
                spec.name = format!("{prefix}{}", s.name);
                Arc::new(McpTool {
                    spec,
                    remote_name: s.name.clone(),
                    client: self.client.clone(),
                }) as Arc<dyn Tool>
            })
            .collect()
    }

    /// Stops the server.
    pub async fn shutdown(&self) {
        let client = self.client.lock().await.take();
        if let Some(c) = client
            && let Err(e) = c.cancel().await
        {
            tracing::debug!("MCP server `{}` did not stop cleanly: {e}", self.command);
        }
    }
}

struct McpTool {
    spec: ToolSpec,
    remote_name: String,
    client: Arc<Mutex<Option<Client>>>,
}

/// Renders an MCP tool result as text for the model.
fn render(content: &[ContentBlock], structured: Option<&Value>) -> String {
    let mut parts: Vec<String> = content
        .iter()
        .map(|c| match c.as_text() {
            Some(t) => t.text.clone(),
            None => "[non-text content omitted]".to_string(),
        })
        .collect();
    if parts.is_empty()
        && let Some(s) = structured
    {
        parts.push(s.to_string());
    }
    parts.join("\n")
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }
    async fn call(&self, arguments: Value) -> Result<String, ToolError> {
        let guard = self.client.lock().await;
        let client = guard
            .as_ref()
            .ok_or_else(|| ToolError::new("the MCP server has been stopped"))?;
        let mut params = CallToolRequestParams::new(self.remote_name.clone());
        if let Value::Object(m) = arguments {
            params = params.with_arguments(m);
        }
        let r = client
            .call_tool(params)
            .await
            .map_err(|e| ToolError::new(format!("MCP call failed: {e}")))?;
        let text = render(&r.content, r.structured_content.as_ref());
        if r.is_error == Some(true) {
            Err(ToolError::new(text))
        } else {
            Ok(text)
        }
    }
}

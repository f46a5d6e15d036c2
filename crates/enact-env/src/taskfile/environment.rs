//! The environment of one task-file episode: a fresh workspace copy and the declared tools.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enact_core::{Action, EnvError, Environment, Reset, StepOutcome, Submission, Task, ToolSpec};
use enact_sandbox::{Sandbox, Workspace};

use super::sandbox::{Paths, paths_for, substitute};
use super::spec::{TaskSpec, ToolDecl};
use super::tools::{CalculatorTool, CommandTool, FileTool};
use crate::conversation::ToolConversation;
use crate::mcp::McpServer;
use crate::toolbox::ToolBox;

const DEFAULT_SYSTEM: &str = "You are a capable assistant working in a workspace through tools. When you are done, reply with your final answer.";

/// The environment of one task-file episode.
pub struct TaskFileEnv {
    spec: Arc<TaskSpec>,
    conv: ToolConversation,
    workspace: Option<Workspace>,
    mcp: Vec<McpServer>,
}

impl TaskFileEnv {
    pub fn new(spec: Arc<TaskSpec>) -> Self {
        TaskFileEnv {
            spec,
            conv: ToolConversation::default(),
            workspace: None,
            mcp: Vec::new(),
        }
    }

    async fn stop_servers(&mut self) {
        for s in self.mcp.drain(..) {
            s.shutdown().await;
        }
    }
}

#[async_trait]
impl Environment for TaskFileEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        self.stop_servers().await;
        let spec = self.spec.clone();
        if task.id != spec.id {
            return Err(EnvError::Setup(format!(
                "this environment serves task {}, not {}",
                spec.id, task.id
            )));
        }
        let ws = match &spec.workspace {
            Some(d) => Workspace::from_dir(d),
            None => Workspace::empty(),
        }
        .map_err(|e| {
            EnvError::Setup(format!(
                "task {}: cannot prepare the workspace: {e}",
                spec.id
            ))
        })?;
        let root = ws.path().to_path_buf();
        if !spec.workspace_keep_vcs {
            enact_verify::files::remove_vcs_dirs(&root).map_err(|e| {
                EnvError::Setup(format!(
                    "task {}: cannot remove version-control metadata from the workspace: {e}",
                    spec.id
                ))
            })?;
        }
        let mut tools = ToolBox::new();
        let mut longest = 30;
        let mut sandbox: Option<(Arc<Sandbox>, Arc<Paths>)> = None;
        for decl in &spec.tools {
            match decl {
                ToolDecl::Builtin { name } => match name.as_str() {
                    "calculator" => tools.add(Arc::new(CalculatorTool)),
                    "read_file" => tools.add(Arc::new(FileTool {
                        kind: "read_file",
                        root: root.clone(),
                    })),
                    "write_file" => tools.add(Arc::new(FileTool {
                        kind: "write_file",
                        root: root.clone(),
                    })),
                    _ => tools.add(Arc::new(FileTool {
                        kind: "list_files",
                        root: root.clone(),
                    })),
                },
                ToolDecl::Command {
                    name,
                    description,
                    command,
                    parameters,
                    timeout_secs,
                } => {
                    longest = longest.max(*timeout_secs + 5);
                    let (sb, paths) = match &sandbox {
                        Some(s) => s.clone(),
                        None => {
                            let cfg = spec
                                .sandbox_config(Some(&root), Duration::from_secs(*timeout_secs))
                                .map_err(EnvError::Setup)?;
                            let paths = Arc::new(paths_for(&cfg, &root, None));
                            let sb = Arc::new(Sandbox::new(cfg).map_err(|e| {
                                EnvError::Setup(format!(
                                    "task {}: cannot create the tool sandbox: {e}",
                                    spec.id
                                ))
                            })?);
                            sandbox = Some((sb.clone(), paths.clone()));
                            (sb, paths)
                        }
                    };
                    tools.add(Arc::new(CommandTool {
                        spec: ToolSpec {
                            name: name.clone(),
                            description: description.clone(),
                            parameters: parameters.clone(),
                        },
                        argv: command.clone(),
                        timeout: Duration::from_secs(*timeout_secs),
                        sandbox: sb,
                        paths,
                    }));
                }
                ToolDecl::Mcp {
                    command,
                    env,
                    tools: only,
                    prefix,
                    timeout_secs,
                } => {
                    longest = longest.max(*timeout_secs + 5);
                    let vars = BTreeMap::from([
                        ("task_dir".to_string(), spec.dir.display().to_string()),
                        ("workspace".to_string(), root.display().to_string()),
                    ]);
                    let argv = substitute(command, &vars);
                    let server = McpServer::spawn(
                        &argv,
                        env,
                        Some(&root),
                        Duration::from_secs(*timeout_secs),
                    )
                    .await
                    .map_err(|e| EnvError::Setup(format!("task {}: {e}", spec.id)))?;
                    for t in server.tools(only.as_deref(), prefix) {
                        tools.add(t);
                    }
                    self.mcp.push(server);
                }
            }
        }
        tools.limits.timeout = Duration::from_secs(longest);
        self.conv.tools = tools;
        self.workspace = Some(ws);
        let system = spec.system.clone().unwrap_or_else(|| DEFAULT_SYSTEM.into());
        Ok(self.conv.start(system, spec.prompt.clone()))
    }

    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        self.conv.step(action).await
    }

    async fn submission(&mut self) -> Result<Submission, EnvError> {
        let workspace = self.workspace.as_ref().map(|w| w.path().to_path_buf());
        Ok(self.conv.submission(None, workspace))
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        self.stop_servers().await;
        self.conv.tools = ToolBox::new();
        self.workspace = None;
        self.conv.close();
        Ok(())
    }
}

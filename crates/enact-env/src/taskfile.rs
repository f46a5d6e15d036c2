//! Task files: environments defined without Rust, as a directory with a `task.toml`, a
//! workspace, hidden data, tools and a verifier. See `docs/task-files.md`.
//!
//! - The agent works in a fresh copy of `workspace/`; `command` tools run there inside an
//!   `enact-sandbox` sandbox (the workspace is `/workspace` inside); `hidden/` never enters
//!   the agent's sandbox.
//! - A `command` verifier runs after the agent in a FRESH grading sandbox with a copy of the
//!   final workspace and a pristine copy of `hidden/` mounted read-only at `/hidden`; it
//!   writes `{"checks":[{"name","status","detail"}]}` to the file named by `$ENACT_RESULTS`.
//!   The exit code is ignored; a missing or malformed file is a verifier error (no reward);
//!   skipped and errored checks are failures.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enact_core::{
    Action, CheckResult, CheckStatus, EnvError, Environment, Reset, StepOutcome, Submission, Task,
    ToolSpec, Verdict, Verifier, VerifyError,
};
use enact_sandbox::{
    ExecOptions, ExitStatusKind, IsolationLevel, Limits, Sandbox, SandboxConfig, Workspace,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::conversation::ToolConversation;
use crate::mcp::McpServer;
use crate::noisy::{NoiseConfig, NoisyEnv};
use crate::search::answer_matches;
use crate::suite::{SplitMix64, Suite};
use crate::toolbox::{Tool, ToolBox, ToolError};

// ---------------------------------------------------------------- errors

/// A problem with a task file: which file, which field, what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub struct TaskFileError {
    pub path: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for TaskFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

fn err(path: &Path, field: Option<&str>, message: impl Into<String>) -> TaskFileError {
    TaskFileError {
        path: path.to_path_buf(),
        field: field.map(str::to_string),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- format

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskSection {
    id: String,
    prompt: String,
    #[serde(default = "default_split")]
    split: String,
    #[serde(default)]
    system: Option<String>,
}

fn default_split() -> String {
    "test".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirSection {
    dir: PathBuf,
}

/// `[sandbox]`: isolation level and limits of command tools and the command verifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxSection {
    /// `auto` (the strongest level this machine supports, never `unsandboxed`), `full`,
    /// `no-cgroups`, `no-landlock`, `namespaces-only` or `unsandboxed` (explicit opt-in).
    #[serde(default = "default_level")]
    level: String,
    #[serde(default)]
    memory_mb: Option<u64>,
    #[serde(default)]
    network: bool,
}

fn default_level() -> String {
    "auto".into()
}

impl Default for SandboxSection {
    fn default() -> Self {
        SandboxSection {
            level: default_level(),
            memory_mb: None,
            network: false,
        }
    }
}

/// One `[[tools]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolDecl {
    /// A built-in tool: `calculator`, `read_file`, `write_file`, `list_files`.
    Builtin { name: String },
    /// A command run in the agent's sandbox, in the workspace. Arguments are substituted
    /// for `{name}` in argv and passed as `ARG_NAME` environment variables (and all of them
    /// as JSON in `ENACT_ARGS`).
    Command {
        name: String,
        description: String,
        command: Vec<String>,
        #[serde(default = "empty_schema")]
        parameters: Value,
        #[serde(default = "default_tool_timeout")]
        timeout_secs: u64,
    },
    /// The tools of an MCP server (stdio).
    Mcp {
        command: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Only these tools of the server.
        #[serde(default)]
        tools: Option<Vec<String>>,
        #[serde(default)]
        prefix: String,
        #[serde(default = "default_tool_timeout")]
        timeout_secs: u64,
    },
}

fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}
fn default_tool_timeout() -> u64 {
    30
}

/// One built-in check.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BuiltinCheck {
    /// The final answer equals `value` (SQuAD-normalised unless `exact`).
    AnswerEquals {
        value: String,
        #[serde(default)]
        exact: bool,
    },
    /// The final answer contains `value` (case-insensitive).
    AnswerContains { value: String },
    /// A workspace file equals `expected`, or the hidden file `expected_file`.
    FileEquals {
        path: String,
        #[serde(default)]
        expected: Option<String>,
        #[serde(default)]
        expected_file: Option<String>,
    },
    /// A workspace file contains `text`.
    FileContains { path: String, text: String },
    /// A workspace file exists.
    FileExists { path: String },
}

impl BuiltinCheck {
    fn name(&self) -> String {
        match self {
            BuiltinCheck::AnswerEquals { .. } => "answer_equals".into(),
            BuiltinCheck::AnswerContains { .. } => "answer_contains".into(),
            BuiltinCheck::FileEquals { path, .. } => format!("file_equals:{path}"),
            BuiltinCheck::FileContains { path, .. } => format!("file_contains:{path}"),
            BuiltinCheck::FileExists { path } => format!("file_exists:{path}"),
        }
    }
}

/// `[verifier]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifierDecl {
    Command {
        command: Vec<String>,
        #[serde(default = "default_verify_timeout")]
        timeout_secs: u64,
        /// Check names that must appear in the results; absent ones count as missing.
        #[serde(default)]
        expect: Vec<String>,
    },
    Builtin {
        checks: Vec<BuiltinCheck>,
    },
}

fn default_verify_timeout() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceSection {
    #[serde(default)]
    turns: Option<Vec<String>>,
    /// A JSON file (array of strings) next to task.toml.
    #[serde(default)]
    file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskFile {
    task: TaskSection,
    #[serde(default)]
    workspace: Option<DirSection>,
    #[serde(default)]
    hidden: Option<DirSection>,
    #[serde(default)]
    sandbox: Option<SandboxSection>,
    #[serde(default)]
    tools: Vec<ToolDecl>,
    verifier: VerifierDecl,
    #[serde(default)]
    reference: Option<ReferenceSection>,
    #[serde(default)]
    noise: Option<NoiseConfig>,
}

/// A parsed, checked task file.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub id: String,
    pub prompt: String,
    pub split: String,
    pub system: Option<String>,
    /// The directory holding task.toml.
    pub dir: PathBuf,
    pub workspace: Option<PathBuf>,
    pub hidden: Option<PathBuf>,
    pub level: String,
    pub memory_mb: Option<u64>,
    pub network: bool,
    pub tools: Vec<ToolDecl>,
    pub verifier: VerifierDecl,
    pub reference: Option<Vec<String>>,
    pub noise: Option<NoiseConfig>,
}

const BUILTINS: [&str; 4] = ["calculator", "read_file", "write_file", "list_files"];

/// A relative path that stays inside its root (no absolute paths, no `..`).
fn relative_inside(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if p.is_empty() {
        return Err("the path is empty".into());
    }
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(format!(
                    "\"{p}\" must be a relative path inside the directory (no /, .. or prefixes)"
                ));
            }
        }
    }
    Ok(path.to_path_buf())
}

/// The dotted field name (`section.key`) at byte `offset` of a TOML text, for messages.
fn field_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = if line.starts_with('[') {
        None
    } else {
        line.split_once('=').map(|(k, _)| k.trim().to_string())
    };
    match (section, key) {
        (Some(s), Some(k)) => format!("{s}.{k}"),
        (Some(s), None) => s,
        (None, Some(k)) => k,
        (None, None) => String::new(),
    }
}

impl TaskSpec {
    /// Parses `dir/task.toml` and checks every field it names.
    pub fn load(dir: &Path) -> Result<TaskSpec, TaskFileError> {
        let file = dir.join("task.toml");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| err(&file, None, format!("cannot read: {e}")))?;
        let raw: RawTaskFile = toml::from_str(&text).map_err(|e| {
            let field = e.span().map(|span| field_at(&text, span.start));
            err(
                &file,
                field.as_deref().filter(|f| !f.is_empty()),
                e.to_string().trim().replace('\n', "\n    "),
            )
        })?;
        let t = &raw.task;
        if t.id.trim().is_empty() || t.id.contains(char::is_whitespace) {
            return Err(err(
                &file,
                Some("task.id"),
                "must be a non-empty name without spaces",
            ));
        }
        if t.prompt.trim().is_empty() {
            return Err(err(&file, Some("task.prompt"), "must not be empty"));
        }
        if !["train", "test", "any"].contains(&t.split.as_str()) {
            return Err(err(
                &file,
                Some("task.split"),
                format!("\"{}\" must be train, test or any", t.split),
            ));
        }
        let sub_dir =
            |sec: &Option<DirSection>, field: &str| -> Result<Option<PathBuf>, TaskFileError> {
                let Some(s) = sec else { return Ok(None) };
                let rel = relative_inside(&s.dir.to_string_lossy())
                    .map_err(|m| err(&file, Some(field), m))?;
                let full = dir.join(rel);
                if !full.is_dir() {
                    return Err(err(
                        &file,
                        Some(field),
                        format!("directory {} does not exist", full.display()),
                    ));
                }
                Ok(Some(full))
            };
        let workspace = sub_dir(&raw.workspace, "workspace.dir")?;
        let hidden = sub_dir(&raw.hidden, "hidden.dir")?;
        let sandbox = raw.sandbox.clone().unwrap_or_default();
        if sandbox.level != "auto" && sandbox.level.parse::<IsolationLevel>().is_err() {
            return Err(err(
                &file,
                Some("sandbox.level"),
                format!(
                    "\"{}\" is not a level; use auto, full, no-cgroups, no-landlock, namespaces-only or unsandboxed",
                    sandbox.level
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, tool) in raw.tools.iter().enumerate() {
            let field = format!("tools[{i}]");
            match tool {
                ToolDecl::Builtin { name } => {
                    if !BUILTINS.contains(&name.as_str()) {
                        return Err(err(
                            &file,
                            Some(&format!("{field}.name")),
                            format!(
                                "unknown built-in tool \"{name}\"; available: {}",
                                BUILTINS.join(", ")
                            ),
                        ));
                    }
                    names.insert(name.clone());
                }
                ToolDecl::Command {
                    name,
                    command,
                    parameters,
                    ..
                } => {
                    if command.is_empty() {
                        return Err(err(
                            &file,
                            Some(&format!("{field}.command")),
                            "must name a program (a list of strings)",
                        ));
                    }
                    if parameters.get("type").and_then(|t| t.as_str()) != Some("object") {
                        return Err(err(
                            &file,
                            Some(&format!("{field}.parameters")),
                            "must be a JSON Schema with type = \"object\"",
                        ));
                    }
                    if !names.insert(name.clone()) {
                        return Err(err(
                            &file,
                            Some(&format!("{field}.name")),
                            format!("tool \"{name}\" is defined twice"),
                        ));
                    }
                }
                ToolDecl::Mcp { command, .. } => {
                    if command.is_empty() {
                        return Err(err(
                            &file,
                            Some(&format!("{field}.command")),
                            "must name the MCP server program",
                        ));
                    }
                }
            }
        }
        match &raw.verifier {
            VerifierDecl::Command { command, .. } if command.is_empty() => {
                return Err(err(
                    &file,
                    Some("verifier.command"),
                    "must name a program (a list of strings)",
                ));
            }
            VerifierDecl::Builtin { checks } => {
                if checks.is_empty() {
                    return Err(err(
                        &file,
                        Some("verifier.checks"),
                        "needs at least one check",
                    ));
                }
                for (i, c) in checks.iter().enumerate() {
                    let field = format!("verifier.checks[{i}]");
                    match c {
                        BuiltinCheck::FileEquals {
                            path,
                            expected,
                            expected_file,
                        } => {
                            relative_inside(path)
                                .map_err(|m| err(&file, Some(&format!("{field}.path")), m))?;
                            match (expected, expected_file) {
                                (Some(_), None) => {}
                                (None, Some(f)) => {
                                    let rel = relative_inside(f).map_err(|m| {
                                        err(&file, Some(&format!("{field}.expected_file")), m)
                                    })?;
                                    let h = hidden.as_ref().ok_or_else(|| {
                                        err(
                                            &file,
                                            Some(&format!("{field}.expected_file")),
                                            "needs a [hidden] dir",
                                        )
                                    })?;
                                    if !h.join(&rel).is_file() {
                                        return Err(err(
                                            &file,
                                            Some(&format!("{field}.expected_file")),
                                            format!("{} does not exist", h.join(rel).display()),
                                        ));
                                    }
                                }
                                _ => {
                                    return Err(err(
                                        &file,
                                        Some(&field),
                                        "file_equals needs exactly one of expected or expected_file",
                                    ));
                                }
                            }
                        }
                        BuiltinCheck::FileContains { path, .. }
                        | BuiltinCheck::FileExists { path } => {
                            relative_inside(path)
                                .map_err(|m| err(&file, Some(&format!("{field}.path")), m))?;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let reference = match &raw.reference {
            None => None,
            Some(ReferenceSection {
                turns: Some(t),
                file: None,
            }) => Some(t.clone()),
            Some(ReferenceSection {
                turns: None,
                file: Some(f),
            }) => {
                let rel = relative_inside(&f.to_string_lossy())
                    .map_err(|m| err(&file, Some("reference.file"), m))?;
                let p = dir.join(rel);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    err(
                        &file,
                        Some("reference.file"),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                Some(serde_json::from_str::<Vec<String>>(&text).map_err(|e| {
                    err(
                        &file,
                        Some("reference.file"),
                        format!("{} must be a JSON array of strings: {e}", p.display()),
                    )
                })?)
            }
            Some(_) => {
                return Err(err(
                    &file,
                    Some("reference"),
                    "give exactly one of turns or file",
                ));
            }
        };
        Ok(TaskSpec {
            id: t.id.clone(),
            prompt: t.prompt.clone(),
            split: t.split.clone(),
            system: t.system.clone(),
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
            workspace,
            hidden,
            level: sandbox.level,
            memory_mb: sandbox.memory_mb,
            network: sandbox.network,
            tools: raw.tools,
            verifier: raw.verifier,
            reference,
            noise: raw.noise,
        })
    }

    fn task(&self, split: &str) -> Task {
        Task {
            id: self.id.clone(),
            prompt: self.prompt.clone(),
            env: json!({"kind": "taskfile", "task": self.id}),
            hidden: None,
            split: Some(split.to_string()),
            metadata: Default::default(),
        }
    }

    /// The sandbox configuration for this task's commands.
    fn sandbox_config(&self, workspace: &Path, timeout: Duration) -> Result<SandboxConfig, String> {
        let level = if self.level == "auto" {
            let caps = enact_sandbox::detect();
            let best = caps.strongest_level();
            if best == IsolationLevel::Unsandboxed {
                return Err(format!(
                    "task {}: this machine supports no sandbox isolation ({}); set [sandbox] level = \"unsandboxed\" in task.toml to run commands without isolation (trusted tasks only)",
                    self.id,
                    caps.missing_for(IsolationLevel::NamespacesOnly)
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            best
        } else {
            self.level
                .parse::<IsolationLevel>()
                .map_err(|e| format!("task {}: sandbox level: {e}", self.id))?
        };
        let mut cfg = SandboxConfig::default()
            .with_level(level)
            .with_workspace(workspace);
        cfg.limits = Limits {
            wall_time: timeout,
            ..Limits::default()
        };
        if let Some(mb) = self.memory_mb {
            cfg.limits.memory_bytes = Some(mb << 20);
        }
        if self.network {
            cfg.network = enact_sandbox::NetworkPolicy::Loopback;
        }
        Ok(cfg)
    }
}

// ---------------------------------------------------------------- sandbox adapter

/// The paths a command sees, inside or outside namespaces.
struct Paths {
    workspace: String,
    hidden: String,
}

fn paths_for(cfg: &SandboxConfig, workspace: &Path, hidden: Option<&Path>) -> Paths {
    if cfg.level.uses_namespaces() {
        Paths {
            workspace: enact_sandbox::WORKSPACE_MOUNT.into(),
            hidden: "/hidden".into(),
        }
    } else {
        Paths {
            workspace: workspace.display().to_string(),
            hidden: hidden.map(|h| h.display().to_string()).unwrap_or_default(),
        }
    }
}

fn substitute(argv: &[String], vars: &BTreeMap<String, String>) -> Vec<String> {
    argv.iter()
        .map(|a| {
            let mut s = a.clone();
            for (k, v) in vars {
                s = s.replace(&format!("{{{k}}}"), v);
            }
            s
        })
        .collect()
}

fn describe_outcome(o: &enact_sandbox::ExecOutcome) -> String {
    let mut out = o.stdout.text.clone();
    if !o.stderr.text.trim().is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&o.stderr.text);
    }
    if !o.status.success() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("[{}]", o.status.describe()));
    }
    if out.is_empty() {
        out = "(no output)".into();
    }
    out
}

// ---------------------------------------------------------------- tools

/// Resolves `rel` under `root`, refusing absolute paths, `..` and symlinks on the way (the
/// agent may plant symlinks with command tools; built-in tools run on the host).
/// Largest workspace file a built-in check reads; the agent wrote it, so it is untrusted.
const MAX_CHECKED_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a text file of at most `max` bytes (a larger one is an error, not an allocation).
fn read_capped(p: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > max {
        return Err(format!("the file is larger than {max} bytes"));
    }
    String::from_utf8(buf).map_err(|_| "the file is not UTF-8 text".to_string())
}

fn safe_path(root: &Path, rel: &str) -> Result<PathBuf, ToolError> {
    let rel = if rel.is_empty() || rel == "." {
        PathBuf::new()
    } else {
        relative_inside(rel).map_err(ToolError::new)?
    };
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if let Ok(md) = std::fs::symlink_metadata(&p)
            && md.file_type().is_symlink()
        {
            return Err(ToolError::new(format!(
                "{} is a symbolic link; built-in file tools do not follow links",
                rel.display()
            )));
        }
    }
    Ok(p)
}

struct FileTool {
    kind: &'static str,
    root: PathBuf,
}

const MAX_FILE_BYTES: u64 = 1 << 20;

#[async_trait]
impl Tool for FileTool {
    fn spec(&self) -> ToolSpec {
        let path =
            json!({"type":"string","maxLength":500,"description":"path relative to the workspace"});
        let (desc, params) = match self.kind {
            "read_file" => (
                "Read a text file of the workspace.",
                json!({"type":"object","properties":{"path":path},"required":["path"],"additionalProperties":false}),
            ),
            "write_file" => (
                "Write (create or overwrite) a text file in the workspace.",
                json!({"type":"object","properties":{"path":path,"content":{"type":"string","maxLength":1_000_000}},"required":["path","content"],"additionalProperties":false}),
            ),
            _ => (
                "List the files of a workspace directory (recursively).",
                json!({"type":"object","properties":{"path":path},"additionalProperties":false}),
            ),
        };
        ToolSpec {
            name: self.kind.into(),
            description: desc.into(),
            parameters: params,
        }
    }
    async fn call(&self, a: Value) -> Result<String, ToolError> {
        let rel = a["path"].as_str().unwrap_or("");
        let p = safe_path(&self.root, rel)?;
        match self.kind {
            "read_file" => {
                let md = std::fs::metadata(&p)
                    .map_err(|e| ToolError::new(format!("cannot read {rel}: {e}")))?;
                if md.len() > MAX_FILE_BYTES {
                    return Err(ToolError::new(format!(
                        "{rel} is too large ({} bytes)",
                        md.len()
                    )));
                }
                let bytes = std::fs::read(&p)
                    .map_err(|e| ToolError::new(format!("cannot read {rel}: {e}")))?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            "write_file" => {
                let content = a["content"].as_str().unwrap_or_default();
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        ToolError::new(format!("cannot create the directory of {rel}: {e}"))
                    })?;
                }
                std::fs::write(&p, content)
                    .map_err(|e| ToolError::new(format!("cannot write {rel}: {e}")))?;
                Ok(format!("wrote {} bytes to {rel}", content.len()))
            }
            _ => {
                let mut out = Vec::new();
                let mut stack = vec![p.clone()];
                while let Some(d) = stack.pop() {
                    let entries = std::fs::read_dir(&d)
                        .map_err(|e| ToolError::new(format!("cannot list {rel}: {e}")))?;
                    for e in entries.flatten() {
                        let path = e.path();
                        let shown = path
                            .strip_prefix(&self.root)
                            .unwrap_or(&path)
                            .display()
                            .to_string();
                        match e.file_type() {
                            Ok(t) if t.is_dir() => {
                                out.push(format!("{shown}/"));
                                stack.push(path);
                            }
                            _ => out.push(shown),
                        }
                        if out.len() > 1000 {
                            break;
                        }
                    }
                }
                out.sort();
                Ok(if out.is_empty() {
                    "(empty)".into()
                } else {
                    out.join("\n")
                })
            }
        }
    }
}

struct CalculatorTool;

#[async_trait]
impl Tool for CalculatorTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "calculator".into(),
            description: "Evaluate an arithmetic expression (+ - * / ^ % and parentheses).".into(),
            parameters: json!({"type":"object","properties":{"expression":{"type":"string","maxLength":2000}},"required":["expression"],"additionalProperties":false}),
        }
    }
    async fn call(&self, a: Value) -> Result<String, ToolError> {
        let e = a["expression"].as_str().unwrap_or_default();
        crate::calc::evaluate(e)
            .map(crate::calc::format_number)
            .map_err(|m| ToolError::new(format!("cannot evaluate \"{e}\": {m}")))
    }
}

struct CommandTool {
    spec: ToolSpec,
    argv: Vec<String>,
    timeout: Duration,
    sandbox: Arc<Sandbox>,
    paths: Arc<Paths>,
}

#[async_trait]
impl Tool for CommandTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }
    async fn call(&self, a: Value) -> Result<String, ToolError> {
        let mut vars = BTreeMap::new();
        let mut env = vec![
            ("ENACT_ARGS".to_string(), a.to_string()),
            ("ENACT_WORKSPACE".to_string(), self.paths.workspace.clone()),
        ];
        if let Value::Object(m) = &a {
            for (k, v) in m {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let key: String = k
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                env.push((format!("ARG_{key}"), s.clone()));
                vars.insert(k.clone(), s);
            }
        }
        vars.insert("workspace".into(), self.paths.workspace.clone());
        let argv = substitute(&self.argv, &vars);
        let out = self
            .sandbox
            .exec_with(
                &argv,
                ExecOptions {
                    timeout: Some(self.timeout),
                    env,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ToolError::new(format!("could not run the command: {e}")))?;
        let text = describe_outcome(&out);
        if out.status.success() {
            Ok(text)
        } else {
            Err(ToolError::new(text))
        }
    }
}

// ---------------------------------------------------------------- environment

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
                                .sandbox_config(&root, Duration::from_secs(*timeout_secs))
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

// ---------------------------------------------------------------- verifier

/// The strict result format of a command verifier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsFile {
    checks: Vec<ResultCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultCheck {
    name: String,
    status: String,
    #[serde(default)]
    detail: String,
}

/// Parses a command verifier's results strictly. Unknown statuses, duplicate or empty
/// names and an empty check list are errors; `expect`ed names that are absent become
/// `missing` checks.
pub fn parse_results(text: &str, expect: &[String]) -> Result<Vec<CheckResult>, String> {
    let r: ResultsFile = serde_json::from_str(text).map_err(|e| {
        format!("results are not {{\"checks\":[{{\"name\",\"status\",\"detail\"}}]}}: {e}")
    })?;
    if r.checks.is_empty() {
        return Err("results contain no checks".into());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in r.checks {
        if c.name.trim().is_empty() {
            return Err("a check has an empty name".into());
        }
        if !seen.insert(c.name.clone()) {
            return Err(format!("check \"{}\" appears twice", c.name));
        }
        let status = match c.status.as_str() {
            "passed" => CheckStatus::Passed,
            "failed" => CheckStatus::Failed,
            "skipped" => CheckStatus::Skipped,
            "error" => CheckStatus::Error,
            other => {
                return Err(format!(
                    "check \"{}\" has status \"{other}\"; use passed, failed, skipped or error",
                    c.name
                ));
            }
        };
        out.push(CheckResult {
            name: c.name,
            status,
            detail: c.detail,
        });
    }
    for name in expect {
        if !seen.contains(name) {
            out.push(CheckResult {
                name: name.clone(),
                status: CheckStatus::Missing,
                detail: "the verifier reported no result for this expected check".into(),
            });
        }
    }
    Ok(out)
}

fn random_token() -> String {
    let mut rng = SplitMix64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32,
    );
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// Grades task-file episodes.
pub struct TaskFileVerifier {
    specs: Arc<BTreeMap<String, Arc<TaskSpec>>>,
}

impl TaskFileVerifier {
    async fn run_command(
        &self,
        spec: &TaskSpec,
        sub: &Submission,
        command: &[String],
        timeout: Duration,
        expect: &[String],
    ) -> Result<Verdict, VerifyError> {
        let final_ws = sub.workspace.as_ref().ok_or_else(|| {
            VerifyError::Failed(format!(
                "task {}: the submission has no workspace to grade",
                spec.id
            ))
        })?;
        // A fresh copy of the final workspace and a pristine copy of the hidden data.
        let grading = Workspace::from_dir(final_ws)
            .map_err(|e| VerifyError::Failed(format!("cannot copy the final workspace: {e}")))?;
        let hidden =
            match &spec.hidden {
                Some(h) => Some(Workspace::from_dir(h).map_err(|e| {
                    VerifyError::Failed(format!("cannot copy the hidden data: {e}"))
                })?),
                None => None,
            };
        let name = format!(".enact-results-{}.json", random_token());
        let mut cfg = spec
            .sandbox_config(grading.path(), timeout)
            .map_err(VerifyError::Failed)?;
        if let Some(h) = &hidden {
            cfg.read_only_binds
                .push((h.path().to_path_buf(), PathBuf::from("/hidden")));
        }
        let paths = paths_for(&cfg, grading.path(), hidden.as_ref().map(|h| h.path()));
        let results_inside = format!("{}/{name}", paths.workspace);
        let vars = BTreeMap::from([
            ("workspace".to_string(), paths.workspace.clone()),
            ("hidden".to_string(), paths.hidden.clone()),
            ("results".to_string(), results_inside.clone()),
        ]);
        let argv = substitute(command, &vars);
        let env = vec![
            ("ENACT_RESULTS".to_string(), results_inside),
            ("ENACT_WORKSPACE".to_string(), paths.workspace.clone()),
            ("ENACT_HIDDEN".to_string(), paths.hidden.clone()),
            (
                "ENACT_FINAL_ANSWER".to_string(),
                sub.final_answer.clone().unwrap_or_default(),
            ),
            ("ENACT_TASK_ID".to_string(), spec.id.clone()),
        ];
        let sandbox = Sandbox::new(cfg).map_err(|e| {
            VerifyError::Failed(format!(
                "task {}: cannot create the grading sandbox: {e}",
                spec.id
            ))
        })?;
        let out = sandbox
            .exec_with(
                &argv,
                ExecOptions {
                    timeout: Some(timeout),
                    env,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                VerifyError::Failed(format!(
                    "task {}: the verifier command could not run: {e}",
                    spec.id
                ))
            })?;
        if out.status == ExitStatusKind::TimedOut {
            return Err(VerifyError::Timeout(timeout));
        }
        let host_results = grading.path().join(&name);
        let tail = |s: &str| {
            s.chars()
                .rev()
                .take(400)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        };
        let text = std::fs::read_to_string(&host_results).map_err(|_| {
            VerifyError::Malformed(format!(
                "task {}: the verifier ({}) wrote no results to $ENACT_RESULTS; stderr: {}",
                spec.id,
                out.status.describe(),
                tail(&out.stderr.text)
            ))
        })?;
        let checks = parse_results(&text, expect)
            .map_err(|e| VerifyError::Malformed(format!("task {}: {e}", spec.id)))?;
        Ok(Verdict::from_checks(checks))
    }

    fn run_builtin(spec: &TaskSpec, sub: &Submission, checks: &[BuiltinCheck]) -> Verdict {
        let answer = sub.final_answer.clone().unwrap_or_default();
        let ws = sub.workspace.clone();
        let read_ws = |path: &str| -> Result<String, String> {
            let root = ws.as_ref().ok_or("the submission has no workspace")?;
            let p = safe_path(root, path).map_err(|e| e.0)?;
            read_capped(&p, MAX_CHECKED_FILE_BYTES).map_err(|e| format!("cannot read {path}: {e}"))
        };
        let results = checks
            .iter()
            .map(|c| {
                let outcome: Result<bool, String> = match c {
                    BuiltinCheck::AnswerEquals { value, exact } => Ok(if *exact {
                        answer.trim() == value.trim()
                    } else {
                        answer_matches(&answer, value)
                    }),
                    BuiltinCheck::AnswerContains { value } => {
                        Ok(answer.to_lowercase().contains(&value.to_lowercase()))
                    }
                    BuiltinCheck::FileEquals {
                        path,
                        expected,
                        expected_file,
                    } => read_ws(path).and_then(|got| {
                        let want = match (expected, expected_file, &spec.hidden) {
                            (Some(e), _, _) => e.clone(),
                            (None, Some(f), Some(h)) => std::fs::read_to_string(h.join(f))
                                .map_err(|e| format!("cannot read hidden {f}: {e}"))?,
                            _ => return Err("no expected content".into()),
                        };
                        Ok(got == want)
                    }),
                    BuiltinCheck::FileContains { path, text } => {
                        read_ws(path).map(|got| got.contains(text.as_str()))
                    }
                    BuiltinCheck::FileExists { path } => Ok(ws
                        .as_ref()
                        .and_then(|r| safe_path(r, path).ok())
                        .is_some_and(|p| p.is_file())),
                };
                let (status, detail) = match outcome {
                    Ok(true) => (CheckStatus::Passed, String::new()),
                    Ok(false) => (CheckStatus::Failed, String::new()),
                    Err(e) => (CheckStatus::Failed, e),
                };
                CheckResult {
                    name: c.name(),
                    status,
                    detail,
                }
            })
            .collect();
        Verdict::from_checks(results)
    }
}

#[async_trait]
impl Verifier for TaskFileVerifier {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let spec = self.specs.get(&task.id).ok_or_else(|| {
            VerifyError::Malformed(format!("no task file defines task {}", task.id))
        })?;
        match &spec.verifier {
            VerifierDecl::Command {
                command,
                timeout_secs,
                expect,
            } => {
                self.run_command(
                    spec,
                    sub,
                    command,
                    Duration::from_secs(*timeout_secs),
                    expect,
                )
                .await
            }
            VerifierDecl::Builtin { checks } => Ok(Self::run_builtin(spec, sub, checks)),
        }
    }
}

// ---------------------------------------------------------------- suite

/// A suite of task files: a directory with a `task.toml`, or whose subdirectories have one.
pub struct TaskFileSuite {
    name: String,
    description: String,
    specs: Arc<BTreeMap<String, Arc<TaskSpec>>>,
}

impl TaskFileSuite {
    /// Loads every task file under `dir` (itself, or its immediate subdirectories).
    pub fn load(dir: &Path) -> Result<TaskFileSuite, TaskFileError> {
        let mut dirs = Vec::new();
        if dir.join("task.toml").is_file() {
            dirs.push(dir.to_path_buf());
        } else {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| err(dir, None, format!("cannot read the task directory: {e}")))?;
            for e in entries.flatten() {
                if e.path().join("task.toml").is_file() {
                    dirs.push(e.path());
                }
            }
            dirs.sort();
        }
        if dirs.is_empty() {
            return Err(err(
                dir,
                None,
                "no task.toml here or in its subdirectories (see docs/task-files.md)",
            ));
        }
        let mut specs = BTreeMap::new();
        for d in dirs {
            let spec = TaskSpec::load(&d)?;
            if let Some(prev) = specs.get(&spec.id) {
                let prev: &Arc<TaskSpec> = prev;
                return Err(err(
                    &d.join("task.toml"),
                    Some("task.id"),
                    format!(
                        "\"{}\" is already used by {}",
                        spec.id,
                        prev.dir.join("task.toml").display()
                    ),
                ));
            }
            specs.insert(spec.id.clone(), Arc::new(spec));
        }
        let name = format!("tasks:{}", dir.display());
        let description = format!("{} task file(s) from {}", specs.len(), dir.display());
        Ok(TaskFileSuite {
            name,
            description,
            specs: Arc::new(specs),
        })
    }

    /// The same suite under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn specs(&self) -> impl Iterator<Item = &Arc<TaskSpec>> {
        self.specs.values()
    }

    fn spec(&self, task: &Task) -> Result<Arc<TaskSpec>, EnvError> {
        self.specs.get(&task.id).cloned().ok_or_else(|| {
            EnvError::Setup(format!(
                "no task file defines task {} in {}",
                task.id, self.name
            ))
        })
    }
}

impl Suite for TaskFileSuite {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    /// The tasks of `split` (and those marked `any`), shuffled by `seed` (0 keeps file
    /// order), at most `count` of them.
    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        let mut all: Vec<Task> = self
            .specs
            .values()
            .filter(|s| s.split == split || s.split == "any")
            .map(|s| s.task(split))
            .collect();
        if seed != 0 {
            let mut rng = SplitMix64::new(seed);
            for i in (1..all.len()).rev() {
                all.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        all.truncate(count);
        all
    }
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        let spec = self.spec(task)?;
        let noise = spec.noise.clone();
        let env: Box<dyn Environment> = Box::new(TaskFileEnv::new(spec));
        Ok(match noise {
            Some(cfg) => Box::new(NoisyEnv::new(env, cfg)),
            None => env,
        })
    }
    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::new(TaskFileVerifier {
            specs: self.specs.clone(),
        })
    }
    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let spec = self.specs.get(&task.id)?;
        let turns = spec.reference.clone()?;
        Some(match &spec.noise {
            Some(cfg) => crate::noisy::retrying_reference(&turns, cfg, task),
            None => turns,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn checked_files_are_read_with_a_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "x".repeat(100)).unwrap();
        assert_eq!(read_capped(&p, 100).unwrap().len(), 100);
        assert!(read_capped(&p, 99).unwrap_err().contains("larger than 99"));
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_capped(&p, 100).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn results_are_parsed_strictly() {
        let ok = parse_results(r#"{"checks":[{"name":"a","status":"passed"},{"name":"b","status":"skipped","detail":"x"}]}"#, &["c".into()]).unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(ok[1].status, CheckStatus::Skipped);
        assert_eq!(ok[2].status, CheckStatus::Missing);
        assert!(!Verdict::from_checks(ok).success());
        for bad in [
            "",
            "{}",
            r#"{"checks":[]}"#,
            r#"{"checks":[{"name":"a","status":"ok"}]}"#,
            r#"{"checks":[{"name":"a","status":"passed"},{"name":"a","status":"passed"}]}"#,
            r#"{"checks":[{"name":"a","status":"passed","extra":1}]}"#,
            r#"{"checks":[{"name":"","status":"passed"}]}"#,
            r#"[1,2]"#,
        ] {
            assert!(parse_results(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_stay_inside() {
        assert!(relative_inside("a/b.txt").is_ok());
        assert!(relative_inside("../x").is_err());
        assert!(relative_inside("/etc/passwd").is_err());
        assert!(relative_inside("").is_err());
    }
}

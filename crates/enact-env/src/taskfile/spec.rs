//! The `task.toml` format: parsing and checking every field, with errors naming the field.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use enact_core::Task;
use enact_sandbox::{IsolationLevel, Limits, SandboxConfig};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::noisy::NoiseConfig;

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

pub(super) fn err(path: &Path, field: Option<&str>, message: impl Into<String>) -> TaskFileError {
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
    /// The thinking mode the task asks for (`"budget:256"`, `"adaptive:high"`, `"off"`, or a
    /// `[task.thinking]` table); overrides the agent's default for its episodes.
    #[serde(default)]
    thinking: Option<enact_core::ThinkingMode>,
}

fn default_split() -> String {
    "test".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirSection {
    dir: PathBuf,
    /// `[workspace]` only: keep `.git`/`.hg`/`.svn`/`.bzr` in the agent's copy (by default
    /// they are removed: history can hold the answer).
    #[serde(default)]
    keep_vcs: bool,
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
    /// Disk quota of the workspace in the agent's and the grader's sandboxes.
    #[serde(default)]
    disk_mb: Option<u64>,
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
            disk_mb: None,
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
    pub(super) fn name(&self) -> String {
        match self {
            BuiltinCheck::AnswerEquals { .. } => "answer_equals".into(),
            BuiltinCheck::AnswerContains { .. } => "answer_contains".into(),
            BuiltinCheck::FileEquals { path, .. } => format!("file_equals:{path}"),
            BuiltinCheck::FileContains { path, .. } => format!("file_contains:{path}"),
            BuiltinCheck::FileExists { path } => format!("file_exists:{path}"),
        }
    }
}

/// `[verifier]`. `python` and `cases` grade in two phases (candidate code runs per case in
/// fresh sandboxes; the grade is decided where no candidate code runs); `builtin` runs no
/// candidate code; `command` runs one program with the candidate's files and trusts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifierDecl {
    /// Call functions of a Python module of the workspace, one case per fresh sandbox, and
    /// compare type-tagged results in the parent. `cases` (in `hidden/`) is a JSON array of
    /// `{"id", "func", "args": [...], "expected"}`.
    Python {
        module: String,
        cases: String,
        /// Per case.
        #[serde(default = "default_case_timeout")]
        timeout_secs: u64,
    },
    /// Run `run` once per case in a fresh sandbox (input on stdin), then judge the recorded
    /// outputs: with `compare` in the parent, or with a `judge` program that sees only the
    /// outputs and `hidden/`. `cases` (in `hidden/`) is a JSON array of
    /// `{"id", "input", "expected"}`.
    Cases {
        run: Vec<String>,
        cases: String,
        #[serde(default)]
        compare: Option<enact_verify::Compare>,
        #[serde(default)]
        judge: Option<Vec<String>>,
        /// A task directory of non-secret harness files, read-only at `/grader` in the run
        /// phase.
        #[serde(default)]
        harness: Option<String>,
        /// Per case (the judge gets the same).
        #[serde(default = "default_case_timeout")]
        timeout_secs: u64,
        /// Keep `.git`/`.hg`/`.svn`/`.bzr` in the grading copy.
        #[serde(default)]
        keep_vcs: bool,
    },
    /// One program with the candidate's files and the hidden data in the same sandbox: it
    /// trusts the candidate (code the candidate wrote can run there and forge the grade).
    Command {
        command: Vec<String>,
        #[serde(default = "default_verify_timeout")]
        timeout_secs: u64,
        /// Check names that must appear in the results; absent ones count as missing.
        #[serde(default)]
        expect: Vec<String>,
        /// Keep `.git`/`.hg`/`.svn`/`.bzr` in the grading copy.
        #[serde(default)]
        keep_vcs: bool,
    },
    Builtin {
        checks: Vec<BuiltinCheck>,
    },
}

impl VerifierDecl {
    /// The grade is decided where candidate code runs (a `command` verifier): a candidate
    /// can forge it. `enact env check` and `enact envs` print this.
    pub fn trusts_candidate(&self) -> bool {
        matches!(self, VerifierDecl::Command { .. })
    }
}

fn default_case_timeout() -> u64 {
    10
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
    /// What each monitor's flag does to this task's reward (default: withhold).
    #[serde(default)]
    monitors: Option<enact_verify::MonitorPolicy>,
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
    /// Keep version-control metadata in the agent's workspace copy.
    pub workspace_keep_vcs: bool,
    pub hidden: Option<PathBuf>,
    pub level: String,
    pub memory_mb: Option<u64>,
    pub disk_mb: Option<u64>,
    pub network: bool,
    pub tools: Vec<ToolDecl>,
    pub verifier: VerifierDecl,
    pub reference: Option<Vec<String>>,
    pub noise: Option<NoiseConfig>,
    /// `[monitors]`: the monitors' policy for this task.
    pub monitors: enact_verify::MonitorPolicy,
    /// `task.thinking`: the thinking mode of this task's episodes.
    pub thinking: Option<enact_core::ThinkingMode>,
}

const BUILTINS: [&str; 4] = ["calculator", "read_file", "write_file", "list_files"];

/// A relative path that stays inside its root (no absolute paths, no `..`).
pub(super) fn relative_inside(p: &str) -> Result<PathBuf, String> {
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
        super::grading::check_decl(&raw.verifier, dir, hidden.as_deref())
            .map_err(|(field, m)| err(&file, Some(&field), m))?;
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
        let monitors = raw.monitors.clone().unwrap_or_default();
        let known: Vec<String> = enact_verify::default_monitors()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        if let Some(name) = monitors.per_monitor.keys().find(|n| !known.contains(n)) {
            return Err(err(
                &file,
                Some("monitors.per_monitor"),
                format!("unknown monitor \"{name}\"; known: {}", known.join(", ")),
            ));
        }
        if !(0.0..=1.0).contains(&monitors.penalty) {
            return Err(err(
                &file,
                Some("monitors.penalty"),
                "must be between 0 and 1",
            ));
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
            workspace_keep_vcs: raw.workspace.as_ref().is_some_and(|w| w.keep_vcs),
            hidden,
            level: sandbox.level,
            memory_mb: sandbox.memory_mb,
            disk_mb: sandbox.disk_mb,
            network: sandbox.network,
            tools: raw.tools,
            verifier: raw.verifier,
            reference,
            noise: raw.noise,
            monitors,
            thinking: t.thinking.clone(),
        })
    }

    pub(super) fn task(&self, split: &str) -> Task {
        Task {
            id: self.id.clone(),
            prompt: self.prompt.clone(),
            env: json!({"kind": "taskfile", "task": self.id}),
            hidden: None,
            split: Some(split.to_string()),
            metadata: Default::default(),
            thinking: self.thinking.clone(),
        }
    }

    /// The grade is decided where candidate code runs (see
    /// [`VerifierDecl::trusts_candidate`]).
    pub fn trusts_candidate(&self) -> bool {
        self.verifier.trusts_candidate()
    }

    /// The isolation level of this task's sandboxes.
    pub(super) fn isolation_level(&self) -> Result<IsolationLevel, String> {
        Ok(self.sandbox_config(None, Duration::from_secs(1))?.level)
    }

    /// The sandbox configuration for this task's commands (the workspace, when given, is
    /// `/workspace` inside). The task's own directory, and with it its hidden data, is
    /// covered wherever it lies.
    pub(super) fn sandbox_config(
        &self,
        workspace: Option<&Path>,
        timeout: Duration,
    ) -> Result<SandboxConfig, String> {
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
        let mut cfg = SandboxConfig::default().with_level(level);
        cfg.workspace = workspace.map(Path::to_path_buf);
        cfg.limits = Limits {
            wall_time: timeout,
            ..Limits::default()
        };
        if let Some(mb) = self.disk_mb {
            cfg.limits.workspace_bytes = Some(mb << 20);
        }
        cfg.hide.push(self.dir.clone());
        if let Some(h) = &self.hidden {
            cfg.hide.push(h.clone());
        }
        if let Some(mb) = self.memory_mb {
            cfg.limits.memory_bytes = Some(mb << 20);
        }
        if self.network {
            cfg.network = enact_sandbox::NetworkPolicy::Loopback;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_stay_inside() {
        assert!(relative_inside("a/b.txt").is_ok());
        assert!(relative_inside("../x").is_err());
        assert!(relative_inside("/etc/passwd").is_err());
        assert!(relative_inside("").is_err());
    }

    fn write_task(dir: &Path, task_extra: &str) {
        std::fs::write(
            dir.join("task.toml"),
            format!(
                "[task]\nid = \"t\"\nprompt = \"p\"\n{task_extra}\n[verifier]\nkind = \"builtin\"\n[[verifier.checks]]\ntype = \"answer_contains\"\nvalue = \"x\"\n"
            ),
        )
        .unwrap();
    }

    #[test]
    fn a_task_file_names_its_thinking_mode_as_a_string_or_a_table() {
        let dir = tempfile::tempdir().unwrap();
        write_task(dir.path(), "thinking = \"budget:64/256\"");
        let spec = TaskSpec::load(dir.path()).unwrap();
        let want: enact_core::ThinkingMode = "budget:64/256".parse().unwrap();
        assert_eq!(spec.task("test").thinking, Some(want));
        write_task(
            dir.path(),
            "[task.thinking]\nmode = \"adaptive\"\neffort = \"high\"",
        );
        let spec = TaskSpec::load(dir.path()).unwrap();
        assert_eq!(
            spec.task("test").thinking.unwrap().to_string(),
            "adaptive:high"
        );
        write_task(dir.path(), "thinking = \"budget:lots\"");
        let e = TaskSpec::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("thinking mode"), "{e}");
    }
}

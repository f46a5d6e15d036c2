//! The tools a task file declares: built-in file tools and calculator, and sandboxed commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enact_core::ToolSpec;
use enact_sandbox::{ExecOptions, Sandbox};
use serde_json::{Value, json};

use super::sandbox::{Paths, describe_outcome, substitute};
use super::spec::relative_inside;
use crate::toolbox::{Tool, ToolError};

/// Largest workspace file a built-in check reads; the agent wrote it, so it is untrusted.
pub(super) const MAX_CHECKED_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a text file of at most `max` bytes (a larger one is an error, not an allocation).
pub(super) fn read_capped(p: &Path, max: u64) -> Result<String, String> {
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

/// Resolves `rel` under `root`, refusing absolute paths, `..` and symlinks on the way (the
/// agent may plant symlinks with command tools; built-in tools run on the host).
pub(super) fn safe_path(root: &Path, rel: &str) -> Result<PathBuf, ToolError> {
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

pub(super) struct FileTool {
    pub(super) kind: &'static str,
    pub(super) root: PathBuf,
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

pub(super) struct CalculatorTool;

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

pub(super) struct CommandTool {
    pub(super) spec: ToolSpec,
    pub(super) argv: Vec<String>,
    pub(super) timeout: Duration,
    pub(super) sandbox: Arc<Sandbox>,
    pub(super) paths: Arc<Paths>,
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
}

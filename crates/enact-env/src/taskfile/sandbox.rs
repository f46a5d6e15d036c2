//! Adapts task-file commands to `enact-sandbox`: the paths a command sees and `{var}`
//! substitution in argv.

use std::collections::BTreeMap;
use std::path::Path;

use enact_sandbox::SandboxConfig;

/// The paths a command sees, inside or outside namespaces.
pub(super) struct Paths {
    pub(super) workspace: String,
    pub(super) hidden: String,
}

pub(super) fn paths_for(cfg: &SandboxConfig, workspace: &Path, hidden: Option<&Path>) -> Paths {
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

pub(super) fn substitute(argv: &[String], vars: &BTreeMap<String, String>) -> Vec<String> {
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

pub(super) fn describe_outcome(o: &enact_sandbox::ExecOutcome) -> String {
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

/// The last 400 characters of a program's output, for error messages.
pub(super) fn tail(s: &str) -> String {
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(400)).collect()
}

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Duration;

use enact_sandbox::*;

pub fn sv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub fn sh(script: &str) -> Vec<String> {
    sv(&["/bin/sh", "-c", script])
}

/// Returns false (after recording the skip, see `enact_testkit::skip`) when the machine cannot
/// provide `level`.
#[track_caller]
pub fn supported(test: &str, level: IsolationLevel) -> bool {
    let caps = detect();
    let missing = caps.missing_for(level);
    if missing.is_empty() {
        return true;
    }
    enact_testkit::skip(
        enact_testkit::Requirement::Sandbox,
        &format!(
            "{test}: isolation level `{level}` unavailable, missing: {}",
            missing
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    false
}

pub fn small_limits() -> Limits {
    Limits {
        wall_time: Duration::from_secs(10),
        cpu_time: None,
        memory_bytes: Some(64 << 20),
        max_pids: Some(64),
        file_size_bytes: Some(1 << 20),
        workspace_bytes: Some(DEFAULT_WORKSPACE_QUOTA),
        open_files: Some(256),
        output_bytes: 64 * 1024,
    }
}

pub fn cfg(ws: Option<&std::path::Path>) -> SandboxConfig {
    SandboxConfig {
        workspace: ws.map(|p| p.to_path_buf()),
        limits: small_limits(),
        ..Default::default()
    }
}

pub fn new_sandbox(cfg: SandboxConfig) -> Sandbox {
    match Sandbox::new(cfg) {
        Ok(s) => s,
        Err(e) => panic!("Sandbox::new failed: {e}"),
    }
}

pub async fn run(sb: &Sandbox, argv: Vec<String>) -> ExecOutcome {
    match sb.exec(&argv, None).await {
        Ok(o) => o,
        Err(e) => panic!("exec {argv:?} failed: {e}"),
    }
}

pub fn have(bin: &str) -> bool {
    std::path::Path::new(bin).exists()
}

//! Least visibility and the workspace quota: task directories, hidden data and run
//! directories placed under any host system directory stay invisible; Python keeps working;
//! a workspace cannot grow past its quota.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::path::{Path, PathBuf};

use common::*;
use enact_sandbox::*;

const FULL: IsolationLevel = IsolationLevel::Full;

/// A task layout (task.toml, hidden answer, a run directory) created under `parent`, removed
/// on drop. `None` when `parent` does not exist or is not writable here.
struct Planted(PathBuf);

impl Planted {
    fn under(parent: &str, tag: &str) -> Option<Planted> {
        let parent = Path::new(parent);
        if !parent.is_dir() {
            return None;
        }
        let dir = parent.join(format!("enact-visibility-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("task/hidden")).ok()?;
        std::fs::create_dir_all(dir.join("runs/eval-1")).ok()?;
        std::fs::write(dir.join("task/task.toml"), "[task]\n").ok()?;
        std::fs::write(dir.join("task/hidden/answer.txt"), "SECRET-ANSWER\n").ok()?;
        std::fs::write(dir.join("runs/eval-1/trajectories.jsonl"), "{}\n").ok()?;
        Some(Planted(dir))
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn tasks_and_runs_under_system_directories_are_invisible() {
    if !supported(
        "tasks_and_runs_under_system_directories_are_invisible",
        FULL,
    ) {
        return;
    }
    let parents = [
        "/opt",
        "/var",
        "/var/lib",
        "/srv",
        "/usr/local/share",
        "/etc",
        "/mnt",
    ];
    let planted: Vec<Planted> = parents
        .iter()
        .filter_map(|p| Planted::under(p, &p.replace('/', "_")))
        .collect();
    assert!(planted.len() >= 4, "could not plant test directories");
    let mut cfg = cfg(None);
    // Inside a bound system directory (/usr), the owner of the task hides it, as the
    // task-file environment does with its task directory.
    for p in &planted {
        if p.0.starts_with("/usr") {
            cfg.hide.push(p.0.clone());
        }
    }
    let sb = new_sandbox(cfg);
    for p in &planted {
        let d = p.0.display();
        let script = format!(
            "cat {d}/task/hidden/answer.txt {d}/task/task.toml {d}/runs/eval-1/trajectories.jsonl 2>&1; \
             ls {d} 2>&1; find / -xdev -name 'enact-visibility-*' 2>/dev/null; true"
        );
        let o = run(&sb, sh(&script)).await;
        assert!(!o.stdout.text.contains("SECRET-ANSWER"), "{d}: {o:?}");
        assert!(!o.stdout.text.contains("[task]"), "{d}: {o:?}");
        assert!(!o.stdout.text.contains("task\n"), "{d} listed: {o:?}");
    }
    let o = run(&sb, sh("ls /opt /var /srv 2>&1; ls /etc")).await;
    assert!(o.stdout.text.contains("No such file"), "{o:?}");
    assert!(!o.stdout.text.contains("shadow"), "{o:?}");
}

#[tokio::test]
async fn python_and_basic_tools_work_with_the_minimal_root() {
    if !supported("python_and_basic_tools_work_with_the_minimal_root", FULL) {
        return;
    }
    if !Path::new("/usr/bin/python3").exists() {
        enact_testkit::skip(enact_testkit::Requirement::Python, "no /usr/bin/python3");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let sb = new_sandbox(cfg(Some(ws.path())));
    let o = run(
        &sb,
        sv(&[
            "/usr/bin/python3",
            "-c",
            "import json, ssl, sqlite3, decimal, subprocess; import getpass; \
             print(json.dumps([1]), getpass.getuser(), subprocess.run(['ls', '/'], capture_output=True).returncode)",
        ]),
    )
    .await;
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout.text.trim(), "[1] root 0", "{o:?}");
    let o = run(
        &sb,
        sh("echo 3 1 2 | tr ' ' '\\n' | sort | head -1; id -un"),
    )
    .await;
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout.text, "1\nroot\n", "{o:?}");
}

#[tokio::test]
async fn secrets_under_bound_etc_entries_stay_hidden() {
    if !supported("secrets_under_bound_etc_entries_stay_hidden", FULL) {
        return;
    }
    let sb = new_sandbox(cfg(None));
    let o = run(
        &sb,
        sh("ls /etc/ssl 2>&1; cat /etc/shadow /etc/ssh/ssh_host_rsa_key 2>&1; ls /etc/ssl/private 2>&1"),
    )
    .await;
    assert!(!o.stdout.text.contains("BEGIN"), "{o:?}");
    assert!(!o.stdout.text.contains("root:"), "{o:?}");
    assert!(
        !o.stdout.text.contains("private\n"),
        "/etc/ssl listed private: {o:?}"
    );
}

#[tokio::test]
async fn workspace_quota_kills_a_command_that_fills_the_disk() {
    if !supported("workspace_quota_kills_a_command_that_fills_the_disk", FULL) {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let mut c = cfg(Some(ws.path()));
    c.limits.workspace_bytes = Some(4 << 20);
    c.limits.file_size_bytes = Some(64 << 20);
    let sb = new_sandbox(c);
    // Many files below the per-file limit, written in a loop: only the quota stops this.
    let o = run(
        &sb,
        sh("i=0; while :; do head -c 1048576 /dev/zero > f$i || exit 9; i=$((i+1)); done"),
    )
    .await;
    assert_eq!(o.status, ExitStatusKind::DiskQuota, "{o:?}");
    let used = disk_usage(ws.path(), u64::MAX);
    // Overshoot is bounded by what one poll interval lets through (and RLIMIT_FSIZE).
    assert!(used < 64 << 20, "workspace grew to {used} bytes");
    // A quick command over quota is caught at its end too; deleting brings it back.
    let o = run(&sb, sh("true")).await;
    assert_eq!(o.status, ExitStatusKind::DiskQuota, "{o:?}");
    let o = run(&sb, sh("rm -f f*; echo ok")).await;
    assert!(o.status.success(), "{o:?}");
    assert_eq!(sb.workspace_usage(), Some(0));
}

#[tokio::test]
async fn workspace_quota_applies_to_shell_sessions() {
    if !supported("workspace_quota_applies_to_shell_sessions", FULL) {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let mut c = cfg(Some(ws.path()));
    c.limits.workspace_bytes = Some(2 << 20);
    let sb = new_sandbox(c);
    let mut shell = sb.shell().await.unwrap();
    let o = shell
        .run(
            "for i in 1 2 3 4 5 6 7 8; do head -c 900000 /dev/zero > g$i; done",
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(o.status, ExitStatusKind::DiskQuota, "{o:?}");
    assert!(o.shell_restarted);
}

#[tokio::test]
async fn writable_binds_are_writable_and_read_only_binds_are_not() {
    if !supported(
        "writable_binds_are_writable_and_read_only_binds_are_not",
        FULL,
    ) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("in.txt"), "input").unwrap();
    let mut c = cfg(None);
    c.writable_binds
        .push((out.path().to_path_buf(), PathBuf::from("/results")));
    c.read_only_binds
        .push((ro.path().to_path_buf(), PathBuf::from("/data")));
    let sb = new_sandbox(c);
    let o = run(
        &sb,
        sh("cat /data/in.txt > /results/r.txt; echo x > /data/evil 2>/dev/null || echo refused"),
    )
    .await;
    assert!(o.stdout.text.contains("refused"), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(out.path().join("r.txt")).unwrap(),
        "input"
    );
    assert!(!ro.path().join("evil").exists());
}

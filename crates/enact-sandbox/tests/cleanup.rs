//! Pending cgroup removals: `finish_cleanup` waits until every dropped sandbox's cgroup
//! directories are gone. Its own test binary, so no other test's sandboxes are counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::*;
use enact_sandbox::*;

/// This process's sandbox cgroup directories (`<hierarchy>/enact/sb-<pid>-<n>`).
fn own_cgroup_dirs(caps: &Capabilities) -> Vec<PathBuf> {
    let prefix = format!("sb-{}-", std::process::id());
    let cg = &caps.cgroup;
    [&cg.v1_memory, &cg.v1_pids, &cg.v1_cpuacct, &cg.v2_root]
        .into_iter()
        .flatten()
        .filter_map(|root| std::fs::read_dir(root.join("enact")).ok())
        .flat_map(|rd| rd.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn finish_cleanup_leaves_no_cgroup_directory_behind() {
    if !supported("finish_cleanup", IsolationLevel::Full) {
        return;
    }
    let caps = detect();
    if !(caps.cgroup.memory_usable() || caps.cgroup.pids_usable()) {
        enact_testkit::skip(
            enact_testkit::Requirement::Sandbox,
            "no writable cgroup hierarchy for finish_cleanup",
        );
        return;
    }
    assert!(own_cgroup_dirs(&caps).is_empty());
    let mut sandboxes = Vec::new();
    for _ in 0..4 {
        let sb = new_sandbox(cfg(None));
        assert!(run(&sb, sv(&["/bin/true"])).await.status.success());
        sandboxes.push(sb);
    }
    let live = own_cgroup_dirs(&caps);
    assert!(live.len() >= 4, "one cgroup per sandbox expected: {live:?}");

    drop(sandboxes);
    let left = tokio::task::spawn_blocking(finish_cleanup).await.unwrap();
    assert_eq!(left, 0);
    assert_eq!(pending_cleanups(), 0);
    let after = own_cgroup_dirs(&caps);
    assert!(after.is_empty(), "left behind: {after:?}");
}

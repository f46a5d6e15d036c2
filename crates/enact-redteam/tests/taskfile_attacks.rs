//! The task-file attacks alone: every class of issue 9 is blocked, and the example task
//! files are materialised where users place tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enact_redteam::{Options, Outcome, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_file_attacks_are_all_blocked() {
    let missing = enact_sandbox::detect().missing_for(enact_sandbox::IsolationLevel::Full);
    if !missing.is_empty() || enact_verify::find_python().is_err() {
        eprintln!("skipping: sandbox or python unavailable");
        return;
    }
    let opts = Options {
        filter: Some("tasks-".into()),
        ..Options::default()
    };
    let report = run(&opts).await.unwrap();
    println!("{}", report.render());
    let ids: Vec<&str> = report.attacks.iter().map(|a| a.id.as_str()).collect();
    for id in [
        "tasks-import-time-forgery",
        "tasks-always-equal",
        "tasks-startup-hooks",
        "tasks-symlink-to-hidden",
        "tasks-git-history",
        "tasks-dir-under-system-dirs",
        "tasks-fill-the-disk",
    ] {
        assert!(ids.contains(&id), "{id} did not run");
    }
    for a in &report.attacks {
        assert_eq!(a.outcome, Outcome::Blocked, "{}: {}", a.id, a.detail);
    }
    assert!(report.ok(), "{}", report.render());
}

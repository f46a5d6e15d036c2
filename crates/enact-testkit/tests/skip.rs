//! `skip` end to end, in a child test process: logged when allowed, a failure when required.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use enact_testkit::{Requirement, skip};

/// Acts only when the parent test runs it as a child.
#[test]
fn child_skips_for_want_of_a_sandbox() {
    if std::env::var_os("ENACT_TESTKIT_CHILD").is_none() {
        return;
    }
    skip(Requirement::Sandbox, "no user namespaces here");
}

fn child(require: Option<&str>, log: &std::path::Path) -> std::process::Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "child_skips_for_want_of_a_sandbox",
        "--exact",
        "--nocapture",
    ])
    .env("ENACT_TESTKIT_CHILD", "1")
    .env("ENACT_SKIP_LOG", log)
    .env_remove("ENACT_REQUIRE");
    if let Some(r) = require {
        c.env("ENACT_REQUIRE", r);
    }
    c.output().unwrap()
}

#[test]
fn a_skip_is_logged_and_is_a_failure_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.tsv");

    let out = child(None, &log);
    assert!(out.status.success(), "{out:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(logged.starts_with("sandbox\t"), "{logged}");
    assert!(
        logged.contains("child_skips_for_want_of_a_sandbox"),
        "{logged}"
    );
    assert!(
        logged.trim_end().ends_with("no user namespaces here"),
        "{logged}"
    );

    let out = child(Some("python,model"), &log);
    assert!(
        out.status.success(),
        "another requirement does not matter: {out:?}"
    );

    let out = child(Some("sandbox,python,model"), &log);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("ENACT_REQUIRE=sandbox,python,model")
            || stdout.contains("ENACT_REQUIRE=sandbox,python,model"),
        "{stderr}{stdout}"
    );
    // The failing run is not logged as a skip.
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
}

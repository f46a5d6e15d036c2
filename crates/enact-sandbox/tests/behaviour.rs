//! Positive behaviour, shell sessions, workspaces and capability levels.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use enact_sandbox::*;

const FULL: IsolationLevel = IsolationLevel::Full;

#[tokio::test]
async fn exit_code_output_and_stdin() {
    if !supported("exit_code_output_and_stdin", FULL) {
        return;
    }
    let sb = new_sandbox(cfg(None));
    let o = run(&sb, sh("echo out; echo err >&2; exit 7")).await;
    assert_eq!(o.status, ExitStatusKind::Exited(7));
    assert_eq!(o.stdout.text, "out\n");
    assert_eq!(o.stderr.text, "err\n");
    assert!(!o.stdout.truncated);
    let o = sb
        .exec(&sv(&["/bin/cat"]), Some(b"piped input".to_vec()))
        .await
        .unwrap();
    assert_eq!(o.stdout.text, "piped input");
    let o = sb.exec(&sv(&["no-such-command-xyz"]), None).await;
    match o {
        Err(SandboxError::Setup { step, .. }) => assert!(step.contains("execve"), "{step}"),
        other => panic!("expected a setup error, got {other:?}"),
    }
    // Killed by a signal
    let o = run(&sb, sh("kill -SEGV $$; sleep 1")).await;
    assert!(
        matches!(
            o.status,
            ExitStatusKind::Signaled(_) | ExitStatusKind::Exited(_)
        ),
        "{o:?}"
    );
    // Environment is not inherited from the host, but can be set.
    // SAFETY: test-only env var set before any sandbox reads it (sandboxes never read it).
    let mut c = cfg(None);
    c.env.push(("FOO".into(), "bar".into()));
    let sb = new_sandbox(c);
    let o = run(&sb, sh("echo $FOO; env | grep -c CARGO")).await;
    assert_eq!(o.stdout.text, "bar\n0\n");
}

#[tokio::test]
async fn workspace_writes_persist_and_show_in_diff() {
    if !supported("workspace_writes_persist_and_show_in_diff", FULL) {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), "a\n").unwrap();
    std::fs::write(src.path().join("b.txt"), "b\n").unwrap();
    std::fs::write(src.path().join("c.sh"), "echo c\n").unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/d.txt"), "d\n").unwrap();
    let ws = Workspace::from_dir(src.path()).unwrap();
    let before = ws.snapshot().unwrap();
    let sb = new_sandbox(cfg(Some(ws.path())));
    let o = run(
        &sb,
        sh("pwd; echo new > new.txt; echo more >> a.txt; rm b.txt; chmod +x c.sh; ./c.sh"),
    )
    .await;
    assert_eq!(o.status, ExitStatusKind::Exited(0), "{o:?}");
    assert_eq!(o.stdout.text, "/workspace\nc\n");
    let after = ws.snapshot().unwrap();
    let d = before.diff(&after);
    assert_eq!(d.added, vec![Path::new("new.txt").to_path_buf()]);
    assert_eq!(d.modified, vec![Path::new("a.txt").to_path_buf()]);
    assert_eq!(d.deleted, vec![Path::new("b.txt").to_path_buf()]);
    assert_eq!(d.mode_changed, vec![Path::new("c.sh").to_path_buf()]);
    // The source directory is untouched.
    assert_eq!(
        std::fs::read_to_string(src.path().join("a.txt")).unwrap(),
        "a\n"
    );
    assert!(src.path().join("b.txt").exists());
}

#[tokio::test]
async fn tmp_is_private() {
    if !supported("tmp_is_private", FULL) {
        return;
    }
    let host_file = tempfile::NamedTempFile::new().unwrap();
    let a = new_sandbox(cfg(None));
    let b = new_sandbox(cfg(None));
    let o = run(
        &a,
        sh(&format!(
            "ls {} 2>&1; echo hello > /tmp/mine; ls /tmp",
            host_file.path().display()
        )),
    )
    .await;
    assert!(o.stdout.text.contains("No such file"), "{}", o.stdout.text);
    assert!(o.stdout.text.ends_with("mine\n"));
    // persists across commands in the same sandbox ...
    assert_eq!(run(&a, sh("cat /tmp/mine")).await.stdout.text, "hello\n");
    // ... but not in another sandbox or on the host
    assert_ne!(
        run(&b, sh("cat /tmp/mine")).await.status,
        ExitStatusKind::Exited(0)
    );
    assert!(!Path::new("/tmp/mine").exists());
}

#[tokio::test]
async fn loopback_inside_works() {
    if !supported("loopback_inside_works", FULL) {
        return;
    }
    if !have("/usr/bin/perl") {
        enact_testkit::skip(
            enact_testkit::Requirement::Program,
            "loopback_inside_works: /usr/bin/perl not installed",
        );
        return;
    }
    let sb = new_sandbox(SandboxConfig {
        network: NetworkPolicy::Loopback,
        ..cfg(None)
    });
    let script = r#"use IO::Socket::INET; my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0") or die "listen: $!"; my $p = $s->sockport; if (fork == 0) { my $c = IO::Socket::INET->new("127.0.0.1:$p") or die "connect: $!"; print $c "ping\n"; exit 0 } my $a = $s->accept; print scalar <$a>;"#;
    let o = run(&sb, sv(&["/usr/bin/perl", "-e", script])).await;
    assert_eq!(o.stdout.text, "ping\n", "{o:?}");
    // With the default policy, even loopback TCP is refused.
    let sb = new_sandbox(cfg(None));
    let o = run(&sb, sv(&["/usr/bin/perl", "-e", script])).await;
    assert_ne!(o.status, ExitStatusKind::Exited(0));
    assert!(o.stderr.text.contains("listen"), "{}", o.stderr.text);
}

#[tokio::test]
async fn shell_session_persists_and_recovers() {
    if !supported("shell_session_persists_and_recovers", FULL) {
        return;
    }
    let ws = Workspace::empty().unwrap();
    let sb = new_sandbox(cfg(Some(ws.path())));
    let mut sh = sb.shell().await.unwrap();
    let t = Duration::from_secs(5);
    let o = sh
        .run("mkdir d && cd d && X=42 && echo hi > f", t)
        .await
        .unwrap();
    assert_eq!(o.status, ExitStatusKind::Exited(0), "{o:?}");
    let o = sh.run("pwd; echo $X; cat f", t).await.unwrap();
    assert_eq!(o.stdout.text, "/workspace/d\n42\nhi\n");
    let o = sh.run("echo bad >&2; false", t).await.unwrap();
    assert_eq!(o.status, ExitStatusKind::Exited(1));
    assert_eq!(o.stderr.text, "bad\n");
    assert!(!o.shell_restarted);
    let o = sh.run("echo 'unterminated", t).await.unwrap();
    assert_ne!(o.status, ExitStatusKind::Exited(0));
    assert!(!o.shell_restarted);
    let o = sh.run("printf 'no newline'", t).await.unwrap();
    assert_eq!(o.stdout.text, "no newline");
    // A command that reads stdin does not eat the session's input.
    let o = sh.run("cat; echo after", t).await.unwrap();
    assert_eq!(o.stdout.text, "after\n");
    // Killing the shell: reported, then recovered.
    let o = sh.run("echo bye; exit 5", t).await.unwrap();
    assert_eq!(o.status, ExitStatusKind::Exited(5));
    assert!(o.shell_restarted);
    assert_eq!(o.stdout.text, "bye\n");
    let o = sh.run("pwd", t).await.unwrap();
    assert_eq!(o.stdout.text, "/workspace\n");
    // Timeout: reported, then recovered.
    let o = sh
        .run("sleep 30", Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(o.status, ExitStatusKind::TimedOut);
    assert!(o.shell_restarted);
    let o = sh.run("echo back", t).await.unwrap();
    assert_eq!(o.stdout.text, "back\n");
    assert_eq!(sh.restarts, 2);
}

#[tokio::test]
async fn capability_levels_refuse_and_name_missing_features() {
    // Simulate a host without Landlock and without cgroups.
    let mut caps = detect();
    caps.landlock_abi = None;
    caps.landlock_error = Some("simulated".into());
    caps.cgroup = CgroupSupport::default();
    assert_eq!(
        caps.missing_for(IsolationLevel::Full),
        vec![
            Feature::Landlock,
            Feature::CgroupMemory,
            Feature::CgroupPids
        ]
    );
    let err = Sandbox::new_with_capabilities(cfg(None), &caps).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Landlock LSM"), "{msg}");
    assert!(msg.contains("cgroup memory controller"), "{msg}");
    assert!(msg.contains("--level"), "{msg}");
    let err =
        Sandbox::new_with_capabilities(cfg(None).with_level(IsolationLevel::NoCgroups), &caps)
            .unwrap_err();
    assert!(err.to_string().contains("Landlock"));
    assert!(!err.to_string().contains("cgroup memory"), "{err}");
    assert_eq!(
        "no-landlock".parse::<IsolationLevel>().unwrap(),
        IsolationLevel::NoLandlock
    );
    assert!(
        "weak"
            .parse::<IsolationLevel>()
            .unwrap_err()
            .contains("full, no-cgroups")
    );
    // The real machine: report and strongest level are consistent.
    let real = detect();
    let best = real.strongest_level();
    assert!(real.missing_for(best).is_empty());
    eprintln!("this machine: strongest level {best}");
    for (name, ok, detail) in real.report() {
        eprintln!("  {name:<40} {} {detail}", if ok { "yes" } else { "NO " });
    }
    // Opting into a weaker level by name still isolates with what exists.
    if !supported(
        "capability_levels (namespaces-only run)",
        IsolationLevel::NamespacesOnly,
    ) {
        return;
    }
    let sb = Sandbox::new_with_capabilities(cfg(None).with_level(IsolationLevel::NoCgroups), &{
        let mut c = detect();
        c.cgroup = CgroupSupport::default();
        c
    })
    .unwrap();
    let o = run(&sb, sh("cat /etc/shadow; ls /work")).await;
    assert_ne!(o.status, ExitStatusKind::Exited(0));
    assert!(
        o.peak_memory_bytes.is_none(),
        "no cgroup => no memory accounting"
    );
}

#[tokio::test]
async fn unsandboxed_must_be_named_and_runs_on_host() {
    let sb = new_sandbox(cfg(None).with_level(IsolationLevel::Unsandboxed));
    let o = run(&sb, sh("echo $HOME; test -d /proc/1 && echo host")).await;
    assert_eq!(o.status, ExitStatusKind::Exited(0), "{o:?}");
    let mut c = cfg(None).with_level(IsolationLevel::Unsandboxed);
    c.limits.wall_time = Duration::from_millis(300);
    let sb = new_sandbox(c);
    let o = run(&sb, sv(&["/bin/sleep", "5"])).await;
    assert_eq!(o.status, ExitStatusKind::TimedOut);
}

#[tokio::test]
async fn concurrent_commands_and_sandboxes() {
    if !supported("concurrent_commands_and_sandboxes", FULL) {
        return;
    }
    let sb = new_sandbox(cfg(None));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let sb = sb.clone();
        tasks.push(tokio::spawn(async move {
            let o = sb.exec(&sh(&format!("echo {i}")), None).await.unwrap();
            assert_eq!(o.stdout.text, format!("{i}\n"));
        }));
    }
    for i in 0..8 {
        tasks.push(tokio::spawn(async move {
            let sb = new_sandbox(cfg(None));
            let o = sb.exec(&sh(&format!("echo s{i}")), None).await.unwrap();
            assert_eq!(o.stdout.text, format!("s{i}\n"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A pool hands out warm instances.
    let pool = SandboxPool::new(cfg(None), 2).unwrap();
    let s = pool.get().unwrap();
    assert_eq!(run(&s, sh("echo pooled")).await.stdout.text, "pooled\n");
}

#[tokio::test]
async fn read_only_binds_and_config_errors() {
    if !supported("read_only_binds_and_config_errors", FULL) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("tests.py"), "assert True\n").unwrap();
    let mut c = cfg(None);
    c.read_only_binds
        .push((data.path().to_path_buf(), "/data/tests".into()));
    let sb = new_sandbox(c);
    let o = run(
        &sb,
        sh("cat /data/tests/tests.py; echo x > /data/tests/new 2>&1; echo rc=$?"),
    )
    .await;
    assert!(o.stdout.text.starts_with("assert True\n"), "{o:?}");
    assert!(!o.stdout.text.contains("rc=0"));
    assert!(!data.path().join("new").exists());
    let mut c = cfg(None);
    c.read_only_binds
        .push(("/nonexistent/enact".into(), "/data".into()));
    assert!(Sandbox::new(c).is_err());
    let mut c = cfg(None);
    c.read_only_binds
        .push((data.path().to_path_buf(), "/usr/enact-nope".into()));
    let e = Sandbox::new(c).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
}

/// A hide path inside a directory that is hidden already (the enact binary built under
/// /var/tmp, as in CI) must not break sandbox setup.
#[tokio::test]
async fn hide_paths_inside_hidden_directories_are_fine() {
    if !supported("hide_paths_inside_hidden_directories_are_fine", FULL) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let mut c = cfg(None);
    c.hide.push(secret.clone());
    c.hide.push(dir.path().to_path_buf());
    let sb = new_sandbox(c);
    let o = run(
        &sb,
        sh(&format!("cat {} 2>&1; echo done", secret.display())),
    )
    .await;
    assert!(o.stdout.text.ends_with("done\n"), "{o:?}");
    assert!(!o.stdout.text.contains("s3cret"), "{o:?}");
}

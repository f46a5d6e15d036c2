//! Escape attempts: each must fail AND be reported accurately.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use enact_sandbox::*;

const FULL: IsolationLevel = IsolationLevel::Full;

#[tokio::test]
async fn tcp_to_host_loopback_listener_fails() {
    if !supported("tcp_to_host_loopback_listener_fails", FULL) {
        return;
    }
    // A listener on the HOST's loopback (never any other address).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo FAILED");
    for policy in [NetworkPolicy::None, NetworkPolicy::Loopback] {
        let sb = new_sandbox(SandboxConfig {
            network: policy,
            ..cfg(None)
        });
        let o = run(&sb, sv(&["/bin/bash", "-c", &script])).await;
        assert!(o.stdout.text.contains("FAILED"), "{policy:?}: {o:?}");
        assert!(!o.stdout.text.contains("CONNECTED"), "{policy:?}: {o:?}");
        let expected = match policy {
            // seccomp refuses AF_INET sockets outright
            NetworkPolicy::None => "Address family not supported",
            // own network namespace: nothing listens on the sandbox's loopback
            NetworkPolicy::Loopback => "Connection refused",
        };
        assert!(
            o.stderr.text.contains(expected),
            "{policy:?}: {}",
            o.stderr.text
        );
        assert!(listener.accept().is_err(), "host listener got a connection");
    }
    // Only `lo` exists.
    let sb = new_sandbox(cfg(None));
    let o = run(&sb, sh("ls /sys/class/net 2>/dev/null; cat /proc/net/dev")).await;
    assert!(!o.stdout.text.contains("eth"), "{}", o.stdout.text);
}

#[tokio::test]
async fn reading_secrets_and_host_files_fails() {
    if !supported("reading_secrets_and_host_files_fails", FULL) {
        return;
    }
    // A secret file on the host outside any workspace (target dir: not under /tmp).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let secret = dir.path().join("answer.txt");
    std::fs::write(&secret, "TOPSECRET").unwrap();
    let host_tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host_tmp.path(), "TMPSECRET").unwrap();
    let hidden_dir = tempfile::tempdir_in("/var").ok();

    let mut c = cfg(None);
    if let Some(h) = &hidden_dir {
        std::fs::write(h.path().join("hidden.txt"), "HIDDENSECRET").unwrap();
        c.hide.push(h.path().to_path_buf());
    }
    let sb = new_sandbox(c);
    let mut paths = vec![
        "/etc/shadow".to_string(),
        "/etc/gshadow".to_string(),
        secret.display().to_string(),
        host_tmp.path().display().to_string(),
        "/root/.bashrc".to_string(),
        std::env::current_exe().unwrap().display().to_string(),
    ];
    if let Some(h) = &hidden_dir {
        paths.push(h.path().join("hidden.txt").display().to_string());
    }
    for p in paths {
        let o = run(&sb, sv(&["/bin/cat", &p])).await;
        assert_ne!(o.status, ExitStatusKind::Exited(0), "read {p}: {o:?}");
        assert!(o.stdout.bytes.is_empty(), "read {p}: {}", o.stdout.text);
        assert!(!o.stdout.text.contains("SECRET"));
    }
    // Directories that are not part of the visible system are simply absent.
    let o = run(
        &sb,
        sh("ls /work /home /root /run/user 2>&1; ls -d /sys/fs/cgroup/* 2>&1 | head -1"),
    )
    .await;
    assert!(!o.stdout.text.contains("main"), "{}", o.stdout.text);
    // /etc/passwd (not secret) is readable: the sandbox is usable.
    let o = run(&sb, sv(&["/bin/cat", "/etc/passwd"])).await;
    assert_eq!(o.status, ExitStatusKind::Exited(0));
    assert!(o.stdout.text.contains("root:"));
}

#[tokio::test]
async fn writing_outside_the_workspace_fails() {
    if !supported("writing_outside_the_workspace_fails", FULL) {
        return;
    }
    let ws = Workspace::empty().unwrap();
    let sb = new_sandbox(cfg(Some(ws.path())));
    let marker = format!("enact-escape-{}", std::process::id());
    for target in [
        format!("/etc/{marker}"),
        format!("/usr/{marker}"),
        format!("/{marker}"),
        format!("/var/{marker}"),
        format!("/dev/{marker}"),
        format!("/proc/{marker}"),
    ] {
        let o = run(&sb, sh(&format!("echo x > {target}"))).await;
        assert_ne!(o.status, ExitStatusKind::Exited(0), "wrote {target}");
        assert!(
            !std::path::Path::new(&target).exists(),
            "{target} appeared on the host"
        );
        let o = run(&sb, sv(&["/bin/mkdir", &format!("{target}.d")])).await;
        assert_ne!(o.status, ExitStatusKind::Exited(0), "mkdir {target}.d");
    }
    // Appending to / truncating existing system files fails too.
    let o = run(&sb, sh("echo evil >> /etc/passwd")).await;
    assert_ne!(o.status, ExitStatusKind::Exited(0));
    let o = run(&sb, sh(": > /etc/hostname")).await;
    assert_ne!(o.status, ExitStatusKind::Exited(0));
    // sysctls are not writable.
    let o = run(&sb, sh("echo 1 > /proc/sys/vm/drop_caches")).await;
    assert_ne!(o.status, ExitStatusKind::Exited(0));
    // The workspace and /tmp are writable.
    let o = run(
        &sb,
        sh("echo ok > /workspace/f && echo ok > /tmp/f && cat /workspace/f /tmp/f"),
    )
    .await;
    assert_eq!(o.status, ExitStatusKind::Exited(0), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("f")).unwrap(),
        "ok\n"
    );
}

#[tokio::test]
async fn host_processes_are_invisible() {
    if !supported("host_processes_are_invisible", FULL) {
        return;
    }
    let sb = new_sandbox(cfg(None));
    let me = std::process::id();
    let o = run(&sb, sh(&format!("kill -0 {me} 2>&1 && echo VISIBLE; kill -0 1 && echo self-is-1; ls /proc | grep -c '^[0-9]'"))).await;
    assert!(!o.stdout.text.contains("VISIBLE"), "{o:?}");
    // Only the command itself (sh as pid 1 and its ls/grep children) exist in its pid namespace.
    let n: u32 = o
        .stdout
        .text
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(n <= 4, "saw {n} processes: {}", o.stdout.text);
    // pid 1 is the sandbox's own tiny init; the host's command line is not visible through it.
    let o = run(&sb, sh("cat /proc/1/cmdline | tr -d '\\0'; cat /proc/1/environ; echo; cat /proc/2/cmdline | tr '\\0' ' '")).await;
    assert!(
        o.stdout.text.starts_with("\n/bin/sh -c"),
        "{:?}",
        o.stdout.text
    );
    assert!(!o.stdout.text.contains("escapes"), "{}", o.stdout.text);
}

#[tokio::test]
async fn ptrace_and_mount_and_namespaces_are_denied() {
    if !supported("ptrace_and_mount_and_namespaces_are_denied", FULL) {
        return;
    }
    let sb = new_sandbox(cfg(None));
    let o = run(&sb, sh("mount -t tmpfs none /tmp 2>&1; echo rc=$?")).await;
    assert!(!o.stdout.text.contains("rc=0"), "{}", o.stdout.text);
    let o = run(&sb, sh("unshare -r true 2>&1; echo rc=$?")).await;
    assert!(!o.stdout.text.contains("rc=0"), "{}", o.stdout.text);
    let o = run(
        &sb,
        sh("grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status"),
    )
    .await;
    let t = &o.stdout.text;
    for l in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(t.contains(l), "missing {l:?} in\n{t}");
    }
    if have("/usr/bin/python3") {
        let o = run(
            &sb,
            sh("sleep 5 & python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); r=l.ptrace(16,int(sys.argv[1]),0,0); print(r, ctypes.get_errno())' $!; kill $!"),
        )
        .await;
        assert_eq!(o.stdout.text.trim(), format!("-1 {}", libc::EPERM), "{o:?}");
    } else {
        enact_testkit::skip(
            enact_testkit::Requirement::Python,
            "ptrace part: /usr/bin/python3 not installed",
        );
    }
}

#[tokio::test]
async fn fork_bomb_is_contained() {
    if !supported("fork_bomb_is_contained", FULL) {
        return;
    }
    let mut c = cfg(None);
    c.limits.max_pids = Some(32);
    c.limits.wall_time = Duration::from_secs(2);
    let sb = new_sandbox(c);
    let o = run(&sb, sv(&["/bin/bash", "-c", "f(){ f | f & }; f; sleep 30"])).await;
    assert_eq!(o.status, ExitStatusKind::TimedOut, "{o:?}");
    assert!(o.wall_time < Duration::from_secs(6), "{:?}", o.wall_time);
    assert!(
        o.stderr.text.contains("fork")
            || o.stderr.text.contains("Resource temporarily unavailable"),
        "no fork failure reported: {}",
        o.stderr.text
    );
    // Host unharmed, sandbox usable again (everything from the bomb is gone).
    assert!(
        std::process::Command::new("/bin/true")
            .status()
            .unwrap()
            .success()
    );
    let o = run(&sb, sh("echo alive")).await;
    assert_eq!(o.stdout.text, "alive\n");
}

#[tokio::test]
async fn memory_beyond_limit_is_out_of_memory() {
    if !supported("memory_beyond_limit_is_out_of_memory", FULL) {
        return;
    }
    let sb = new_sandbox(cfg(None)); // 64 MiB
    let o = run(
        &sb,
        sv(&[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=256M",
            "count=1",
        ]),
    )
    .await;
    assert_eq!(o.status, ExitStatusKind::OutOfMemory, "{o:?}");
    // Wrapped in a shell, the child's OOM is still attributed.
    let o = run(
        &sb,
        sh("dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null"),
    )
    .await;
    assert_eq!(o.status, ExitStatusKind::OutOfMemory, "{o:?}");
    // A small allocation is fine afterwards.
    let o = run(
        &sb,
        sv(&[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=8M",
            "count=1",
        ]),
    )
    .await;
    assert_eq!(o.status, ExitStatusKind::Exited(0), "{o:?}");
}

#[tokio::test]
async fn infinite_loop_times_out_and_cpu_limit() {
    if !supported("infinite_loop_times_out_and_cpu_limit", FULL) {
        return;
    }
    let mut c = cfg(None);
    c.limits.wall_time = Duration::from_secs(1);
    let sb = new_sandbox(c);
    let o = run(&sb, sh("while :; do :; done")).await;
    assert_eq!(o.status, ExitStatusKind::TimedOut);
    assert!(
        o.wall_time >= Duration::from_millis(950) && o.wall_time < Duration::from_secs(3),
        "{:?}",
        o.wall_time
    );
    // A sleeping command times out the same way (wall clock, enforced from outside).
    let o = run(&sb, sv(&["/bin/sleep", "30"])).await;
    assert_eq!(o.status, ExitStatusKind::TimedOut);

    let mut c = cfg(None);
    c.limits.wall_time = Duration::from_secs(10);
    c.limits.cpu_time = Some(Duration::from_secs(1));
    let sb = new_sandbox(c);
    let o = run(&sb, sh("while :; do :; done")).await;
    assert_eq!(o.status, ExitStatusKind::CpuLimit, "{o:?}");
    assert!(o.wall_time < Duration::from_secs(5), "{:?}", o.wall_time);
}

#[tokio::test]
async fn huge_file_and_huge_stdout_are_truncated_and_reported() {
    if !supported("huge_file_and_huge_stdout_are_truncated_and_reported", FULL) {
        return;
    }
    let ws = Workspace::empty().unwrap();
    let mut c = cfg(Some(ws.path()));
    c.limits.output_bytes = 4096;
    let sb = new_sandbox(c);
    let o = run(
        &sb,
        sv(&[
            "/bin/dd",
            "if=/dev/zero",
            "of=/workspace/big",
            "bs=64k",
            "count=100",
        ]),
    )
    .await;
    assert_eq!(o.status, ExitStatusKind::FileSizeLimit, "{o:?}");
    let len = std::fs::metadata(ws.path().join("big")).unwrap().len();
    assert!(len <= 1 << 20, "file grew to {len}");

    let o = run(
        &sb,
        sh("head -c 10000000 /dev/zero | tr '\\0' a; echo done >&2"),
    )
    .await;
    assert_eq!(o.status, ExitStatusKind::Exited(0));
    assert!(o.stdout.truncated);
    assert_eq!(o.stdout.total_bytes, 10_000_000);
    assert_eq!(o.stdout.bytes.len(), 4096);
    assert!(
        o.stdout
            .text
            .ends_with("[enact: output truncated, 9995904 bytes omitted]\n"),
        "{}",
        &o.stdout.text[4000..]
    );
    assert!(!o.stderr.truncated);
    // Binary output: raw bytes kept, lossy text view.
    let o = run(&sb, sh("head -c 100 /dev/urandom")).await;
    assert_eq!(o.stdout.bytes.len(), 100);
    assert!(!o.stdout.truncated);
}

#[tokio::test]
async fn proc_self_escapes_fail() {
    if !supported("proc_self_escapes_fail", FULL) {
        return;
    }
    let sb = new_sandbox(cfg(None));
    for p in [
        "/proc/self/root/etc/shadow",
        "/proc/1/root/etc/shadow",
        "/proc/self/root/../../etc/shadow",
    ] {
        let o = run(&sb, sv(&["/bin/cat", p])).await;
        assert_ne!(o.status, ExitStatusKind::Exited(0), "{p}");
        assert!(o.stdout.bytes.is_empty());
    }
    let o = run(&sb, sh("readlink /proc/self/root; ls /proc/self/root/ | tr '\\n' ' '; echo; ls /proc/self/fd | tr '\\n' ' '")).await;
    let lines: Vec<&str> = o.stdout.text.lines().collect();
    assert_eq!(lines[0], "/");
    assert!(
        !lines[1].contains("work") && !lines[1].contains("root "),
        "{}",
        lines[1]
    );
    // No fd of the host leaked: only stdio (+ the fd ls uses to read the directory).
    let fds: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(fds.len() <= 4, "leaked fds: {fds:?}");
    // /proc/self/mem of our own process works, but the zygote/host are not in our /proc.
    let o = run(&sb, sh("ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '")).await;
    assert!(
        o.stdout.text.split_whitespace().count() <= 5,
        "{}",
        o.stdout.text
    );
}

#[tokio::test]
async fn symlinks_and_hard_links_planted_in_the_workspace() {
    if !supported("symlinks_and_hard_links_planted_in_the_workspace", FULL) {
        return;
    }
    let outside = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "HOSTSECRET").unwrap();
    let src = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc/shadow", src.path().join("shadow")).unwrap();
    std::os::unix::fs::symlink(&secret, src.path().join("secret")).unwrap();
    std::os::unix::fs::symlink("/", src.path().join("root")).unwrap();
    std::fs::hard_link(&secret, src.path().join("hard")).unwrap();
    let ws = Workspace::from_dir(src.path()).unwrap();
    // The copy keeps symlinks as symlinks and breaks hard links.
    assert!(
        std::fs::symlink_metadata(ws.path().join("secret"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let sb = new_sandbox(cfg(Some(ws.path())));
    let o = run(&sb, sh("cat shadow; cat secret; ls root/work; echo x > secret; echo y > root/etc/evil; echo z >> hard")).await;
    assert!(!o.stdout.text.contains("SECRET"), "{}", o.stdout.text);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "HOSTSECRET");
    assert!(!std::path::Path::new("/etc/evil").exists());
    // Links planted from inside pointing out of the workspace:
    let o = run(&sb, sh("ln /etc/passwd /workspace/pw 2>&1; echo rc=$?; ln -s /etc/passwd /workspace/pl; ln -s /workspace/pl /workspace/pl2")).await;
    assert!(
        o.stdout.text.contains("rc=1"),
        "hard link across mounts must fail: {}",
        o.stdout.text
    );
    // ... are never followed by the host-side snapshot.
    let snap = ws.snapshot().unwrap();
    let e = &snap.entries[std::path::Path::new("pl")];
    assert_eq!(e.kind, "symlink");
    assert_ne!(e.size, std::fs::metadata("/etc/passwd").unwrap().len());
    // and a fresh copy of the workspace copies links, not targets.
    let ws2 = Workspace::from_dir(ws.path()).unwrap();
    assert!(
        std::fs::symlink_metadata(ws2.path().join("pl"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let mut s = String::new();
    std::fs::File::open(ws2.path().join("hard"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert!(s.starts_with("HOSTSECRET"));
}

//! `enact-sandbox`: strict and fast isolation for tool execution and grading.
//!
//! See `docs/sandbox.md` for the design. Entry points: [`detect`], [`Sandbox`],
//! [`ShellSession`], [`Workspace`].

mod caps;
mod cgroup;
mod digest;
mod error;
mod landlock;
mod output;
mod plan;
mod sandbox;
mod seccomp;
mod shell;
mod sys;
mod workspace;
mod zygote;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use caps::{Capabilities, Feature, IsolationLevel, detect};
pub use cgroup::CgroupSupport;
pub use digest::{random_hex, sha256_hex, sha256_hex_reader, to_hex};
pub use error::SandboxError;
pub use output::CapturedOutput;
pub use sandbox::{
    CLEANUP_TIMEOUT, ExecOptions, Sandbox, SandboxPool, SandboxProcess, finish_cleanup,
    pending_cleanups, wait_for_cleanup,
};
pub use shell::{ShellOutcome, ShellSession};
pub use workspace::{FileEntry, Snapshot, Workspace, WorkspaceDiff, disk_usage};

/// Raise this process's soft RLIMIT_NOFILE to the hard limit (each live sandbox holds a
/// socket, and each running command three pipes). Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    r.rlim_cur
}

/// Default workspace disk quota (see [`Limits::workspace_bytes`]).
pub const DEFAULT_WORKSPACE_QUOTA: u64 = 128 << 20;

/// Where commands see the workspace (and their default working directory).
pub const WORKSPACE_MOUNT: &str = "/workspace";

/// Network access inside the sandbox. The sandbox always has its own network namespace
/// containing only `lo`: the host and the outside world are unreachable either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPolicy {
    /// Only AF_UNIX sockets (seccomp), TCP bind/connect denied (Landlock ABI >= 4).
    #[default]
    None,
    /// AF_INET/AF_INET6 sockets allowed on the sandbox's private loopback.
    Loopback,
}

/// Resource limits for a sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Wall-clock limit per command, enforced by the parent.
    pub wall_time: Duration,
    /// CPU time per command (RLIMIT_CPU per process + cgroup accounting polled by the parent).
    pub cpu_time: Option<Duration>,
    /// Memory for the whole sandbox instance (cgroup).
    pub memory_bytes: Option<u64>,
    /// Number of processes/threads in the whole sandbox instance (cgroup).
    pub max_pids: Option<u32>,
    /// RLIMIT_FSIZE.
    pub file_size_bytes: Option<u64>,
    /// Disk quota of the workspace (bytes of content plus a per-entry charge). The parent
    /// measures the host directory while a command runs and kills the command once the
    /// workspace passes it (status [`ExitStatusKind::DiskQuota`]), measuring every few
    /// milliseconds while it grows; RLIMIT_FSIZE is capped at it so no single file can
    /// overshoot it.
    pub workspace_bytes: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// Bytes of stdout and of stderr kept per command; the rest is counted and dropped.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_time: Duration::from_secs(60),
            cpu_time: None,
            memory_bytes: Some(1 << 30),
            max_pids: Some(256),
            file_size_bytes: Some(256 << 20),
            workspace_bytes: Some(DEFAULT_WORKSPACE_QUOTA),
            open_files: Some(1024),
            output_bytes: 64 * 1024,
        }
    }
}

/// How to build a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub level: IsolationLevel,
    /// Host directory mounted read-write at `/workspace` (and used as working directory).
    pub workspace: Option<PathBuf>,
    /// Extra read-only bind mounts: (host path, path inside).
    pub read_only_binds: Vec<(PathBuf, PathBuf)>,
    /// Extra writable bind mounts (host directory, path inside), e.g. a grader's private
    /// results directory.
    pub writable_binds: Vec<(PathBuf, PathBuf)>,
    /// Host paths to hide (covered with an empty, inaccessible file or directory) in
    /// addition to [`SandboxConfig::default_hide`].
    pub hide: Vec<PathBuf>,
    /// Environment for commands (the host environment is never inherited).
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    pub network: NetworkPolicy,
    /// Top-level host directories visible (read-only) inside. Anything else at the host's
    /// root (`/root`, `/home`, `/work`, `/run`, `/mnt`, `/opt`, `/var`, `/srv`, ...) does not
    /// exist inside.
    pub system_dirs: Vec<PathBuf>,
    /// Individual host files or directories (outside `system_dirs`) made visible read-only at
    /// the same path: the few `/etc` entries tools need. Missing ones are skipped.
    pub system_files: Vec<PathBuf>,
    pub hostname: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            level: IsolationLevel::Full,
            workspace: None,
            read_only_binds: Vec::new(),
            writable_binds: Vec::new(),
            hide: Vec::new(),
            env: Vec::new(),
            limits: Limits::default(),
            network: NetworkPolicy::None,
            system_dirs: Self::default_system_dirs(),
            system_files: Self::default_system_files(),
            hostname: "enact-sandbox".into(),
        }
    }
}

impl SandboxConfig {
    /// Only what programs need to run: binaries and libraries (`/nix` for Nix systems, whose
    /// store is world-readable by design). `/etc`, `/opt`, `/var`, `/srv` and the rest are not
    /// bound: task directories, hidden data, run directories and caches placed there stay
    /// invisible.
    pub fn default_system_dirs() -> Vec<PathBuf> {
        [
            "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/nix",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect()
    }

    /// The `/etc` entries tools need: the dynamic loader's cache and configuration, user and
    /// group names, name-service switch and `hosts` (for `localhost`), time zone,
    /// `alternatives` (Debian's command links), CA certificates, and Python's configuration
    /// directories. No resolver configuration: there is no network to resolve on.
    pub fn default_system_files() -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = [
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
            "/etc/hosts",
            "/etc/localtime",
            "/etc/alternatives",
            "/etc/ssl/certs",
            "/etc/ssl/openssl.cnf",
            "/etc/mime.types",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        if let Ok(entries) = std::fs::read_dir("/etc") {
            let mut py: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path())
                .collect();
            py.sort();
            v.extend(py);
        }
        v
    }

    /// Sensitive paths inside the visible system directories that are always hidden.
    pub fn default_hide() -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = [
            "/etc/shadow",
            "/etc/shadow-",
            "/etc/gshadow",
            "/etc/gshadow-",
            "/etc/ssh",
            "/etc/sudoers",
            "/etc/sudoers.d",
            "/etc/ssl/private",
            "/etc/machine-id",
            "/var/log",
            "/var/mail",
            "/var/spool",
            "/var/backups",
            "/var/tmp",
            "/var/lib/sudo",
            "/var/lib/docker",
            "/var/lib/containerd",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        if let Ok(exe) = std::env::current_exe() {
            v.push(exe);
        }
        // The directory enact runs from holds its run directories and caches (`runs/`); when
        // it lies inside a visible system directory (`/usr/local/share/proj`), cover it, unless
        // it is a system directory or one of their ancestors (covering it would hide the tools).
        if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) {
            let needed = Self::default_system_dirs()
                .iter()
                .any(|d| d.starts_with(&cwd));
            if !needed {
                v.push(cwd);
            }
        }
        v
    }

    pub fn with_workspace(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workspace = Some(dir.into());
        self
    }
    pub fn with_level(mut self, level: IsolationLevel) -> Self {
        self.level = level;
        self
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum ExitStatusKind {
    /// Exited normally with this code.
    Exited(i32),
    /// Killed by this signal (not attributable to a limit).
    Signaled(i32),
    /// Killed at the wall-clock limit.
    TimedOut,
    /// Killed at the CPU-time limit.
    CpuLimit,
    /// Killed by the OOM killer at the sandbox's memory limit.
    OutOfMemory,
    /// Killed by SIGXFSZ: wrote beyond the file size limit.
    FileSizeLimit,
    /// Killed by the parent: the workspace grew past its disk quota.
    DiskQuota,
}

impl ExitStatusKind {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatusKind::Exited(0))
    }
    /// The exit code a CLI should use (128 + signal for signals, 124 for timeouts like `timeout(1)`).
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitStatusKind::Exited(c) => *c,
            ExitStatusKind::Signaled(s) => 128 + s,
            ExitStatusKind::TimedOut => 124,
            ExitStatusKind::CpuLimit => 128 + libc::SIGXCPU,
            ExitStatusKind::OutOfMemory => 137,
            ExitStatusKind::FileSizeLimit => 128 + libc::SIGXFSZ,
            ExitStatusKind::DiskQuota => 128 + libc::SIGXFSZ,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            ExitStatusKind::Exited(c) => format!("exited with code {c}"),
            ExitStatusKind::Signaled(s) => format!("killed by signal {s}"),
            ExitStatusKind::TimedOut => "timed out (wall-clock limit)".into(),
            ExitStatusKind::CpuLimit => "killed at the CPU-time limit".into(),
            ExitStatusKind::OutOfMemory => "killed: out of memory (memory limit)".into(),
            ExitStatusKind::FileSizeLimit => "killed: file size limit exceeded".into(),
            ExitStatusKind::DiskQuota => {
                "killed: the workspace passed its disk quota (delete files to go on)".into()
            }
        }
    }
}

/// The result of one sandboxed command.
#[derive(Debug, Clone, Serialize)]
pub struct ExecOutcome {
    pub status: ExitStatusKind,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub wall_time: Duration,
    pub cpu_time: Option<Duration>,
    pub peak_memory_bytes: Option<u64>,
}

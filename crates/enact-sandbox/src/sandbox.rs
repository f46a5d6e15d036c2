//! Parent side: creating sandbox instances and running commands in them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

use crate::caps::{Capabilities, detect};
use crate::cgroup::SandboxCgroup;
use crate::error::SandboxError;
use crate::output::Capture;
use crate::plan;
use crate::sys;
use crate::zygote::{self, Buffers, Plan, REQ_HDR, ReqHeader, Resp};
use crate::{ExecOutcome, ExitStatusKind, SandboxConfig};

/// Per-command options beyond the sandbox defaults.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub stdin: Option<Vec<u8>>,
    /// Overrides `limits.wall_time`.
    pub timeout: Option<Duration>,
    /// Working directory inside the sandbox (default: /workspace, or /tmp without one).
    pub cwd: Option<String>,
    /// Extra environment for this command.
    pub env: Vec<(String, String)>,
}

type Waiters = Mutex<HashMap<u64, mpsc::UnboundedSender<Resp>>>;

struct Shared {
    sock: AsyncFd<OwnedFd>,
    waiters: Waiters,
    dead: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Resp>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, hdr: &ReqHeader, blob: &[u8], fds: &[RawFd]) -> Result<(), SandboxError> {
        let mut h = [0u8; REQ_HDR];
        hdr.encode(&mut h);
        let mut msg_buf = Vec::with_capacity(REQ_HDR + blob.len());
        msg_buf.extend_from_slice(&h);
        msg_buf.extend_from_slice(blob);
        loop {
            let mut guard = self
                .sock
                .writable()
                .await
                .map_err(|e| SandboxError::io("waiting for the sandbox socket", e))?;
            match guard.try_io(|fd| send_with_fds(fd.as_raw_fd(), &msg_buf, fds)) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    return Err(SandboxError::InstanceLost(format!(
                        "sending a request to the zygote failed: {e}"
                    )));
                }
                Err(_would_block) => continue,
            }
        }
    }
}

fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr/cmsg built over live local buffers; CMSG macros do pointer arithmetic
    // inside cbuf, which is large enough for 3 fds.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let len = libc::CMSG_SPACE((fds.len() * 4) as u32) as usize;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = len;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
            let d = libc::CMSG_DATA(c) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                *d.add(i) = *fd;
            }
        }
        let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

struct Inner {
    cfg: SandboxConfig,
    caps: Capabilities,
    shared: Arc<Shared>,
    zygote_pid: libc::pid_t,
    env: Vec<String>,
    cwd: String,
    next_id: AtomicU64,
    cgroup: Option<SandboxCgroup>,
    reader: tokio::task::JoinHandle<()>,
    setup_time: Duration,
    // Keeps the plan alive for error messages (step names).
    plan: Plan,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        // SAFETY: our own child; SIGKILL on the pid-namespace init kills everything inside.
        unsafe { libc::kill(self.zygote_pid, libc::SIGKILL) };
        // Reaping (the kernel tears the namespaces down) and removing the cgroup take a few
        // milliseconds: do it off the caller's path.
        reaper(self.zygote_pid, self.cgroup.take());
    }
}

struct Cleanup {
    pid: libc::pid_t,
    cgroup: Option<SandboxCgroup>,
}

/// Hand a killed zygote and its cgroup to a background thread that reaps and removes them.
/// Falls back to doing it inline if the thread cannot be started.
fn reaper(pid: libc::pid_t, cgroup: Option<SandboxCgroup>) {
    use std::sync::OnceLock;
    static TX: OnceLock<Option<Mutex<std::sync::mpsc::Sender<Cleanup>>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Cleanup>();
        std::thread::Builder::new()
            .name("enact-sandbox-reaper".into())
            .spawn(move || {
                while let Ok(c) = rx.recv() {
                    reap_now(c);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let item = Cleanup { pid, cgroup };
    PENDING.fetch_add(1, Ordering::SeqCst);
    let item = match tx {
        Some(tx) => match tx.lock().unwrap_or_else(|p| p.into_inner()).send(item) {
            Ok(()) => return,
            Err(std::sync::mpsc::SendError(item)) => item,
        },
        None => item,
    };
    reap_now(item);
}

static PENDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn reap_now(c: Cleanup) {
    let mut st = 0;
    // SAFETY: reaping our own (already SIGKILLed) child.
    unsafe { libc::waitpid(c.pid, &mut st, 0) };
    drop(c.cgroup); // removes the cgroup directories
    PENDING.fetch_sub(1, Ordering::SeqCst);
}

/// How long [`finish_cleanup`] waits for pending removals.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Dropped sandboxes whose zygote is not reaped or whose cgroup is not removed yet (the
/// background reaper does both).
pub fn pending_cleanups() -> usize {
    PENDING.load(Ordering::SeqCst)
}

/// Call once at the end of every process that created sandboxes, after the last one is
/// dropped (for a CLI command: after its tokio runtime is dropped, which drops the tasks
/// still holding sandboxes). Blocks until the background reaper has removed every dropped
/// sandbox's cgroup directories, up to [`CLEANUP_TIMEOUT`]: exiting earlier kills the reaper
/// and leaves empty cgroups behind. Returns the number still pending (0: all removed) and
/// logs a warning when that is not 0.
pub fn finish_cleanup() -> usize {
    if wait_for_cleanup(CLEANUP_TIMEOUT) {
        return 0;
    }
    let left = pending_cleanups();
    tracing::warn!(
        left,
        "sandbox cleanup still pending at exit; leftover empty cgroups are removed by the next enact process"
    );
    left
}

/// Wait (up to `timeout`) until every dropped sandbox has been reaped and its cgroup removed.
/// Returns true when done. [`finish_cleanup`] is the call for the end of a process.
pub fn wait_for_cleanup(timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while PENDING.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A live sandbox instance (cheap to clone; the instance dies with the last clone).
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("level", &self.inner.cfg.level)
            .field("zygote_pid", &self.inner.zygote_pid)
            .finish()
    }
}

impl Sandbox {
    /// Create a sandbox instance. Fails (naming the missing features) if the configured
    /// level cannot be provided. Must be called inside a tokio runtime.
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        Self::new_with_capabilities(cfg, &detect())
    }

    /// Like [`Sandbox::new`] with explicit capabilities (e.g. to simulate a weaker host in
    /// tests; features the kernel really lacks still fail at setup, never silently).
    pub fn new_with_capabilities(
        cfg: SandboxConfig,
        caps: &Capabilities,
    ) -> Result<Sandbox, SandboxError> {
        let caps = caps.clone();
        let missing = caps.missing_for(cfg.level);
        if !missing.is_empty() {
            return Err(SandboxError::Unsupported {
                level: cfg.level,
                missing,
                suggestion: caps.suggestion(),
            });
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| SandboxError::NoRuntime)?;
        let t0 = Instant::now();
        let built = plan::build(&cfg, &caps)?;

        // cgroups: required at levels that list them, used whenever available.
        let wants_cg = cfg.limits.memory_bytes.is_some() || cfg.limits.max_pids.is_some();
        let cgroup = if wants_cg && (caps.cgroup.memory_usable() || caps.cgroup.pids_usable()) {
            match SandboxCgroup::create(&caps.cgroup, cfg.limits.memory_bytes, cfg.limits.max_pids)
            {
                Ok(cg) => Some(cg),
                Err(e) => {
                    if cfg.level.required().contains(&crate::Feature::CgroupMemory) {
                        return Err(SandboxError::setup("create the sandbox cgroup", e));
                    }
                    tracing::warn!(error = %e, "cgroup creation failed; memory/pids limits not enforced at level {}", cfg.level);
                    None
                }
            }
        } else {
            None
        };

        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: valid out array.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        } != 0
        {
            return Err(SandboxError::setup(
                "socketpair",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fresh fds.
        let (parent_sock, child_sock) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (sync_r, sync_w) = sys::pipe().map_err(|e| SandboxError::setup("pipe", e))?;
        let mut bufs = Buffers::new();
        let plan = built.plan;
        let flags = if plan.namespaces {
            libc::CLONE_NEWUSER
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
        } else {
            0
        };
        let child_fd = child_sock.as_raw_fd();
        let sync_fd = sync_r.as_raw_fd();
        // SAFETY: the child only runs zygote_main, which is async-signal-safe and never returns.
        let pid = unsafe { sys::raw_clone(flags) }
            .map_err(|e| SandboxError::setup("clone the zygote with new namespaces", e))?;
        if pid == 0 {
            // SAFETY: we are the fresh child; plan and bufs are our private copies.
            unsafe { zygote::zygote_main(&plan, &mut bufs, child_fd, sync_fd) }
        }
        drop(child_sock);
        drop(sync_r);
        drop(bufs);
        let kill_child = |e: SandboxError| {
            // SAFETY: our child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0);
            }
            e
        };
        if plan.namespaces {
            // SAFETY: geteuid/getegid have no preconditions.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            let w = |f: &str, v: String| {
                std::fs::write(format!("/proc/{pid}/{f}"), v)
                    .map_err(|e| SandboxError::setup(format!("write /proc/<zygote>/{f}"), e))
            };
            w("setgroups", "deny".into())
                .and_then(|_| w("uid_map", format!("0 {uid} 1\n")))
                .and_then(|_| w("gid_map", format!("0 {gid} 1\n")))
                .map_err(kill_child)?;
        }
        if let Some(cg) = &cgroup {
            cg.add(pid).map_err(|e| {
                kill_child(SandboxError::setup("move the zygote into its cgroup", e))
            })?;
        }
        if !sys::write_full(sync_w.as_raw_fd(), &[1]) {
            return Err(kill_child(SandboxError::setup(
                "release the zygote",
                io::Error::last_os_error(),
            )));
        }
        drop(sync_w);
        // Wait (blocking, bounded) for READY or a setup failure.
        let ready = wait_ready(parent_sock.as_raw_fd(), &plan);
        if let Err(e) = ready {
            return Err(kill_child(e));
        }
        sys::set_nonblocking(parent_sock.as_raw_fd())
            .map_err(|e| kill_child(SandboxError::setup("socket nonblocking", e)))?;
        let sock = {
            let _g = handle.enter();
            // SAFETY: we own the fd (OwnedFd) and it stays open as long as the AsyncFd.
            unsafe { AsyncFd::register(parent_sock) }.map_err(|e| {
                kill_child(SandboxError::setup("register socket with tokio", e.into()))
            })?
        };
        let shared = Arc::new(Shared {
            sock,
            waiters: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
        });
        let reader = handle.spawn(read_loop(shared.clone()));
        Ok(Sandbox {
            inner: Arc::new(Inner {
                cfg,
                caps,
                shared,
                zygote_pid: pid,
                env: built.env,
                cwd: built.cwd,
                next_id: AtomicU64::new(1),
                cgroup,
                reader,
                setup_time: t0.elapsed(),
                plan,
            }),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.cfg
    }
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }
    /// How long `Sandbox::new` took (namespaces + mount tree + cgroups).
    pub fn setup_time(&self) -> Duration {
        self.inner.setup_time
    }
    /// Host pid of the zygote (pid 1 of the sandbox's pid namespace).
    pub fn zygote_pid(&self) -> i32 {
        self.inner.zygote_pid
    }

    /// Run `argv` to completion and capture its output.
    pub async fn exec(
        &self,
        argv: &[String],
        stdin: Option<Vec<u8>>,
    ) -> Result<ExecOutcome, SandboxError> {
        self.exec_with(
            argv,
            ExecOptions {
                stdin,
                ..Default::default()
            },
        )
        .await
    }

    /// Run `argv` with per-command options.
    pub async fn exec_with(
        &self,
        argv: &[String],
        opts: ExecOptions,
    ) -> Result<ExecOutcome, SandboxError> {
        let limits = &self.inner.cfg.limits;
        let cg = self.inner.cgroup.as_ref();
        let oom_before = cg.map(|c| c.oom_kills()).unwrap_or(0);
        if let Some(c) = cg {
            c.reset_peak();
        }
        let cpu_before = cg.and_then(|c| c.cpu_usage());
        let start = Instant::now();
        let mut proc = self
            .spawn_inner(argv, opts.stdin.is_some(), opts.cwd.as_deref(), &opts.env)
            .await?;
        let timeout = opts.timeout.unwrap_or(limits.wall_time);
        let cap = limits.output_bytes;
        let (stop_tx, stop_rx) = watch::channel(false);
        let out_task = tokio::spawn(capture(proc.stdout.take(), cap, stop_rx.clone()));
        let err_task = tokio::spawn(capture(proc.stderr.take(), cap, stop_rx));
        let stdin_task = proc.stdin.take().map(|mut w| {
            let data = opts.stdin.unwrap_or_default();
            tokio::spawn(async move {
                // A command that does not read its stdin closes the pipe: ignore EPIPE.
                let _ = w.write_all(&data).await;
                drop(w);
            })
        });

        let deadline = tokio::time::Instant::now() + timeout;
        let mut timed_out = false;
        let mut cpu_killed = false;
        let mut quota_killed = false;
        let quota = self.workspace_quota();
        let mut poll = tokio::time::interval(Duration::from_millis(25));
        // Adaptive: measured every QUOTA_POLL_FAST while the workspace grows (a fast writer
        // is stopped within a few milliseconds of passing the quota), backing off to
        // QUOTA_POLL while it does not (a large, quiet workspace is not walked 200 times a
        // second).
        let mut quota_watch = QuotaWatch::new(quota.clone());
        let exit = loop {
            tokio::select! {
                ev = proc.next_exit() => break ev?,
                _ = tokio::time::sleep_until(deadline), if !timed_out && !cpu_killed && !quota_killed => {
                    timed_out = true;
                    proc.kill().await?;
                }
                over = quota_watch.over(), if quota.is_some() && !timed_out && !cpu_killed && !quota_killed => {
                    if over {
                        quota_killed = true;
                        proc.kill().await?;
                    }
                }
                _ = poll.tick(), if limits.cpu_time.is_some() && !timed_out && !cpu_killed => {
                    if let (Some(lim), Some(c), Some(b)) = (limits.cpu_time, cg, cpu_before)
                        && let Some(now) = c.cpu_usage()
                        && now.saturating_sub(b) >= lim
                    {
                        cpu_killed = true;
                        proc.kill().await?;
                    }
                }
            }
        };
        let wall_time = start.elapsed();
        // Everything in the command's pid namespace is dead now; give the pipes a moment to
        // drain in unsandboxed mode where stragglers may hold them open.
        let grace = if self.inner.cfg.level.uses_namespaces() {
            2000
        } else {
            200
        };
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(grace)).await;
            let _ = stop_tx.send(true);
        });
        let stdout = out_task.await.unwrap_or_else(|_| Capture::new(0)).finish();
        let stderr = err_task.await.unwrap_or_else(|_| Capture::new(0)).finish();
        stopper.abort();
        if let Some(t) = stdin_task {
            t.abort();
        }

        let cpu_rusage = Duration::from_micros(exit.utime_us + exit.stime_us);
        let cpu_cg = match (cg.and_then(|c| c.cpu_usage()), cpu_before) {
            (Some(a), Some(b)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        let cpu_time = Some(cpu_cg.map_or(cpu_rusage, |c| c.max(cpu_rusage)));
        let oom = cg.map(|c| c.oom_kills()).unwrap_or(0) > oom_before;
        let status_raw = exit.a as i32;
        // Checked once more at the end: a command quicker than one poll is caught here.
        if !quota_killed
            && let Some((dir, max)) = quota
            && over_quota(dir, max).await
        {
            quota_killed = true;
        }
        let status = if quota_killed {
            ExitStatusKind::DiskQuota
        } else {
            classify(
                status_raw,
                timed_out,
                cpu_killed,
                oom,
                limits.cpu_time,
                cpu_time,
            )
        };
        Ok(ExecOutcome {
            status,
            stdout,
            stderr,
            wall_time,
            cpu_time,
            peak_memory_bytes: cg.and_then(|c| c.peak_memory()),
        })
    }

    /// The host workspace and its quota, when both are set.
    pub(crate) fn workspace_quota(&self) -> Option<(std::path::PathBuf, u64)> {
        let cfg = &self.inner.cfg;
        Some((cfg.workspace.clone()?, cfg.limits.workspace_bytes?))
    }

    /// Bytes the workspace uses now (see [`crate::disk_usage`]); `None` without a workspace.
    pub fn workspace_usage(&self) -> Option<u64> {
        let dir = self.inner.cfg.workspace.as_ref()?;
        Some(crate::disk_usage(dir, u64::MAX))
    }

    /// Start a command and return a handle with its stdio pipes.
    pub async fn spawn(&self, argv: &[String]) -> Result<SandboxProcess, SandboxError> {
        self.spawn_inner(argv, true, None, &[]).await
    }

    async fn spawn_inner(
        &self,
        argv: &[String],
        stdin_pipe: bool,
        cwd: Option<&str>,
        extra_env: &[(String, String)],
    ) -> Result<SandboxProcess, SandboxError> {
        let inner = &self.inner;
        if argv.is_empty() {
            return Err(SandboxError::Config("empty command".into()));
        }
        if inner.shared.dead.load(Ordering::SeqCst) {
            return Err(SandboxError::InstanceLost("the zygote exited".into()));
        }
        let mut blob = Vec::new();
        for a in argv {
            if a.contains('\0') {
                return Err(SandboxError::Config("argument contains a NUL byte".into()));
            }
            blob.extend_from_slice(a.as_bytes());
            blob.push(0);
        }
        let mut envc = 0u32;
        for e in &inner.env {
            let k = e.split('=').next().unwrap_or("");
            if extra_env.iter().any(|(ek, _)| ek == k) {
                continue;
            }
            blob.extend_from_slice(e.as_bytes());
            blob.push(0);
            envc += 1;
        }
        for (k, v) in extra_env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(SandboxError::Config(format!(
                    "invalid environment variable {k:?}"
                )));
            }
            blob.extend_from_slice(format!("{k}={v}").as_bytes());
            blob.push(0);
            envc += 1;
        }
        let cwd = cwd.unwrap_or(&inner.cwd);
        if cwd.contains('\0') {
            return Err(SandboxError::Config("cwd contains a NUL byte".into()));
        }
        blob.extend_from_slice(cwd.as_bytes());
        blob.push(0);
        if blob.len() > zygote::MAX_BLOB || argv.len() > zygote::MAX_ARGS {
            return Err(SandboxError::Config(format!(
                "command line + environment too large ({} bytes, {} args; max {} bytes, {} args)",
                blob.len(),
                argv.len(),
                zygote::MAX_BLOB,
                zygote::MAX_ARGS
            )));
        }

        let (stdin_r, stdin_w) = if stdin_pipe {
            let (r, w) = sys::pipe().map_err(|e| SandboxError::io("creating stdin pipe", e))?;
            (r, Some(w))
        } else {
            let f = std::fs::File::open("/dev/null")
                .map_err(|e| SandboxError::io("opening /dev/null", e))?;
            (OwnedFd::from(f), None)
        };
        let (out_r, out_w) =
            sys::pipe().map_err(|e| SandboxError::io("creating stdout pipe", e))?;
        let (err_r, err_w) =
            sys::pipe().map_err(|e| SandboxError::io("creating stderr pipe", e))?;

        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        inner.shared.lock().insert(id, tx);
        let lim = &inner.cfg.limits;
        let hdr = ReqHeader {
            kind: zygote::REQ_SPAWN,
            flags: 0,
            id,
            argc: argv.len() as u32,
            envc,
            rl_cpu: lim
                .cpu_time
                .map(|d| d.as_secs_f64().ceil().max(1.0) as u64)
                .unwrap_or(0),
            rl_fsize: match (lim.file_size_bytes, lim.workspace_bytes) {
                (Some(f), Some(q)) => f.min(q),
                (f, q) => f.or(q).unwrap_or(0),
            },
            rl_nofile: lim.open_files.unwrap_or(0),
        };
        let sent = inner
            .shared
            .send(
                &hdr,
                &blob,
                &[stdin_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
            )
            .await;
        drop((stdin_r, out_w, err_w));
        let mut proc = SandboxProcess {
            id,
            shared: inner.shared.clone(),
            events: rx,
            stdin: None,
            stdout: None,
            stderr: None,
            pid: 0,
            exit: None,
            _sandbox: self.clone(),
        };
        if let Err(e) = sent {
            inner.shared.lock().remove(&id);
            return Err(e);
        }
        // Wait for STARTED or SPAWN_FAILED.
        match proc.events.recv().await {
            Some(r) if r.kind == zygote::RESP_STARTED => proc.pid = r.a as i32,
            Some(r) if r.kind == zygote::RESP_SPAWN_FAILED => {
                inner.shared.lock().remove(&id);
                return Err(SandboxError::setup(
                    zygote::step_name(&inner.plan, r.a),
                    io::Error::from_raw_os_error(r.b as i32),
                ));
            }
            Some(r) => {
                return Err(SandboxError::InstanceLost(format!(
                    "unexpected zygote reply kind {}",
                    r.kind
                )));
            }
            None => return Err(SandboxError::InstanceLost("the zygote exited".into())),
        }
        proc.stdin = match stdin_w {
            Some(w) => Some(to_sender(w)?),
            None => None,
        };
        proc.stdout = Some(to_receiver(out_r)?);
        proc.stderr = Some(to_receiver(err_r)?);
        Ok(proc)
    }
}

fn to_receiver(fd: OwnedFd) -> Result<pipe::Receiver, SandboxError> {
    sys::set_nonblocking(fd.as_raw_fd()).map_err(|e| SandboxError::io("pipe nonblocking", e))?;
    pipe::Receiver::from_owned_fd(fd).map_err(|e| SandboxError::io("registering pipe", e))
}
fn to_sender(fd: OwnedFd) -> Result<pipe::Sender, SandboxError> {
    sys::set_nonblocking(fd.as_raw_fd()).map_err(|e| SandboxError::io("pipe nonblocking", e))?;
    pipe::Sender::from_owned_fd(fd).map_err(|e| SandboxError::io("registering pipe", e))
}

fn classify(
    status: i32,
    timed_out: bool,
    cpu_killed: bool,
    oom: bool,
    cpu_limit: Option<Duration>,
    cpu_used: Option<Duration>,
) -> ExitStatusKind {
    let exited = libc::WIFEXITED(status);
    let code = libc::WEXITSTATUS(status);
    let sig = if libc::WIFSIGNALED(status) {
        libc::WTERMSIG(status)
    } else {
        0
    };
    if timed_out {
        return ExitStatusKind::TimedOut;
    }
    if cpu_killed {
        return ExitStatusKind::CpuLimit;
    }
    if oom && (!exited || code != 0) {
        return ExitStatusKind::OutOfMemory;
    }
    if exited {
        return ExitStatusKind::Exited(code);
    }
    let over_cpu = matches!((cpu_limit, cpu_used), (Some(l), Some(u)) if u >= l);
    match sig {
        s if s == libc::SIGXCPU => ExitStatusKind::CpuLimit,
        s if s == libc::SIGKILL && over_cpu => ExitStatusKind::CpuLimit,
        s if s == libc::SIGXFSZ => ExitStatusKind::FileSizeLimit,
        s => ExitStatusKind::Signaled(s),
    }
}

/// How often a running command's workspace is measured against its quota while it does
/// not grow, and while it grows.
pub(crate) const QUOTA_POLL: Duration = Duration::from_millis(200);
pub(crate) const QUOTA_POLL_FAST: Duration = Duration::from_millis(5);

/// Measures a running command's workspace against its quota, adaptively: every
/// QUOTA_POLL_FAST while it grows (a fast writer is stopped within milliseconds of passing
/// the quota), backing off to QUOTA_POLL while it does not (a large, quiet workspace is not
/// walked hundreds of times a second).
pub(crate) struct QuotaWatch {
    quota: Option<(std::path::PathBuf, u64)>,
    every: Duration,
    last: u64,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl QuotaWatch {
    pub(crate) fn new(quota: Option<(std::path::PathBuf, u64)>) -> QuotaWatch {
        QuotaWatch {
            quota,
            every: QUOTA_POLL_FAST,
            last: 0,
            sleep: Box::pin(tokio::time::sleep(QUOTA_POLL_FAST)),
        }
    }

    /// Waits for the next measurement; whether the workspace is past its quota. Never
    /// resolves without a quota. Cancel-safe (a dropped call measures at the next one).
    pub(crate) async fn over(&mut self) -> bool {
        let Some((dir, max)) = self.quota.clone() else {
            return std::future::pending().await;
        };
        self.sleep.as_mut().await;
        let used = workspace_usage(dir, max).await;
        self.every = if used > self.last {
            QUOTA_POLL_FAST
        } else {
            (self.every * 2).min(QUOTA_POLL)
        };
        self.last = used;
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + self.every);
        used > max
    }
}

/// The workspace's usage (the walk stops once past `max`).
pub(crate) async fn workspace_usage(dir: std::path::PathBuf, max: u64) -> u64 {
    tokio::task::spawn_blocking(move || crate::disk_usage(&dir, max))
        .await
        .unwrap_or(0)
}

pub(crate) async fn over_quota(dir: std::path::PathBuf, max: u64) -> bool {
    workspace_usage(dir, max).await > max
}

async fn capture(
    rx: Option<pipe::Receiver>,
    cap: usize,
    mut stop: watch::Receiver<bool>,
) -> Capture {
    let mut c = Capture::new(cap);
    let Some(mut rx) = rx else { return c };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = rx.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => c.push(&buf[..n]),
            },
            _ = stop.changed() => break,
        }
    }
    c
}

async fn read_loop(shared: Arc<Shared>) {
    let mut buf = [0u8; zygote::RESP_LEN];
    loop {
        let mut guard = match shared.sock.readable().await {
            Ok(g) => g,
            Err(_) => break,
        };
        let r = guard.try_io(|fd| {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Err(_would_block) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                if n < zygote::RESP_LEN {
                    continue;
                }
                let resp = Resp::decode(&buf);
                let mut w = shared.lock();
                let done = resp.kind == zygote::RESP_EXITED;
                if let Some(tx) = w.get(&resp.id) {
                    let _ = tx.send(resp);
                }
                if done {
                    w.remove(&resp.id);
                }
            }
        }
    }
    shared.dead.store(true, Ordering::SeqCst);
    // Dropping the senders wakes every waiter with `None` (instance lost).
    shared.lock().clear();
}

/// Blocking wait (max 10 s) for the zygote's READY.
fn wait_ready(fd: RawFd, plan: &Plan) -> Result<(), SandboxError> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polling one valid fd.
    let r = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    if r <= 0 {
        return Err(SandboxError::setup(
            "wait for the zygote",
            io::Error::new(io::ErrorKind::TimedOut, "no reply within 10 s"),
        ));
    }
    let mut buf = [0u8; zygote::RESP_LEN];
    // SAFETY: reading into a local buffer.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != zygote::RESP_LEN as isize {
        return Err(SandboxError::setup(
            "wait for the zygote",
            io::Error::new(io::ErrorKind::UnexpectedEof, "the zygote died during setup"),
        ));
    }
    let r = Resp::decode(&buf);
    match r.kind {
        zygote::RESP_READY => Ok(()),
        zygote::RESP_SETUP_FAILED => Err(SandboxError::setup(
            zygote::step_name(plan, r.a),
            io::Error::from_raw_os_error(r.b as i32),
        )),
        k => Err(SandboxError::setup(
            "wait for the zygote",
            io::Error::other(format!("unexpected reply kind {k}")),
        )),
    }
}

/// A running sandboxed command.
pub struct SandboxProcess {
    id: u64,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Resp>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pid: i32,
    exit: Option<Resp>,
    _sandbox: Sandbox,
}

/// How a spawned process ended (raw).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawExit {
    pub status: i32,
}

impl SandboxProcess {
    /// Pid inside the sandbox's (outer) pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    async fn next_exit(&mut self) -> Result<Resp, SandboxError> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        loop {
            match self.events.recv().await {
                Some(r) if r.kind == zygote::RESP_EXITED => {
                    self.exit = Some(r);
                    return Ok(r);
                }
                Some(_) => continue,
                None => return Err(SandboxError::InstanceLost("the zygote exited".into())),
            }
        }
    }

    /// Wait for the process to end; returns the raw wait status.
    pub async fn wait(&mut self) -> Result<i32, SandboxError> {
        Ok(self.next_exit().await?.a as i32)
    }

    pub(crate) async fn wait_raw(&mut self) -> Result<RawExit, SandboxError> {
        Ok(RawExit {
            status: self.next_exit().await?.a as i32,
        })
    }

    /// SIGKILL the process and everything it started.
    pub async fn kill(&self) -> Result<(), SandboxError> {
        if self.exit.is_some() {
            return Ok(());
        }
        let hdr = ReqHeader {
            kind: zygote::REQ_KILL,
            id: self.id,
            ..Default::default()
        };
        self.shared.send(&hdr, &[], &[]).await
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        if self.exit.is_none() && !self.shared.dead.load(Ordering::SeqCst) {
            // Best effort: kill a command whose handle was dropped.
            let mut h = [0u8; REQ_HDR];
            ReqHeader {
                kind: zygote::REQ_KILL,
                id: self.id,
                ..Default::default()
            }
            .encode(&mut h);
            let _ = send_with_fds(self.shared.sock.as_raw_fd(), &h, &[]);
        }
    }
}

/// Keeps warm sandbox instances for one configuration, so that acquiring one costs nothing.
pub struct SandboxPool {
    cfg: SandboxConfig,
    ready: Arc<Mutex<Vec<Sandbox>>>,
    size: usize,
}

impl SandboxPool {
    /// Create a pool and fill it with `size` instances now.
    pub fn new(cfg: SandboxConfig, size: usize) -> Result<SandboxPool, SandboxError> {
        let mut v = Vec::with_capacity(size);
        for _ in 0..size {
            v.push(Sandbox::new(cfg.clone())?);
        }
        Ok(SandboxPool {
            cfg,
            ready: Arc::new(Mutex::new(v)),
            size,
        })
    }

    /// Take a warm instance (or build one if the pool is empty); refills in the background.
    pub fn get(&self) -> Result<Sandbox, SandboxError> {
        let got = self.ready.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let sb = match got {
            Some(s) => s,
            None => Sandbox::new(self.cfg.clone())?,
        };
        let ready = self.ready.clone();
        let cfg = self.cfg.clone();
        let size = self.size;
        tokio::task::spawn_blocking(move || {
            let need = size.saturating_sub(ready.lock().unwrap_or_else(|p| p.into_inner()).len());
            for _ in 0..need {
                match Sandbox::new(cfg.clone()) {
                    Ok(s) => ready.lock().unwrap_or_else(|p| p.into_inner()).push(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "sandbox pool refill failed");
                        break;
                    }
                }
            }
        });
        Ok(sb)
    }
}

//! The zygote: a forked child of the current process that lives in the sandbox's
//! namespaces and spawns one command per request.
//!
//! Everything here that runs after `clone` is async-signal-safe: it only issues syscalls on
//! data prepared by the parent (`Plan`, `Buffers`) and never allocates, locks or panics.

use std::ffi::CString;
use std::os::fd::RawFd;

use libc::{c_char, c_int, c_ulong, c_void};

use crate::landlock::{LandlockPlan, PathBeneathAttr};
use crate::sys::{self, AT_RECURSIVE, MountAttr};

/// One mount-tree construction step, executed in order by the zygote.
pub enum Op {
    Mkdir {
        path: CString,
        mode: u32,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Touch {
        path: CString,
        mode: u32,
    },
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
    },
    SetAttr {
        path: CString,
        set: u64,
        recursive: bool,
    },
}

pub struct Plan {
    pub namespaces: bool,
    /// Ops with a human description for error messages (used by the parent only).
    pub ops: Vec<(Op, String)>,
    pub hostname: CString,
    pub landlock: Option<LandlockPlan>,
    pub seccomp: Option<Vec<libc::sock_filter>>,
    pub cap_last_cap: u32,
    pub drop_caps: bool,
    /// Memory ranges (argv and environ of the host process) zeroed in the zygote so that
    /// sandboxed code cannot read them through /proc/1/cmdline.
    pub scrub: [(usize, usize); 2],
}

pub const MAX_ARGS: usize = 8192;
pub const MAX_ENV: usize = 1024;
pub const MAX_BLOB: usize = 192 * 1024;
pub const MAX_CHILDREN: usize = 2048;
const STACK_SIZE: usize = 256 * 1024;

/// Memory the zygote needs, allocated before the fork.
pub struct Buffers {
    recv: Vec<u8>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    path: Vec<u8>,
    /// (request id, pid of the command's init, status pipe read end)
    table: Vec<(u64, i32, RawFd)>,
    stack: Vec<u8>,
}

impl Buffers {
    pub fn new() -> Self {
        Buffers {
            recv: vec![0; REQ_HDR + MAX_BLOB + 16],
            argv: vec![std::ptr::null(); MAX_ARGS + 1],
            envp: vec![std::ptr::null(); MAX_ENV + 1],
            path: vec![0; 4096],
            table: vec![(0, 0, -1); MAX_CHILDREN],
            stack: vec![0; STACK_SIZE],
        }
    }
}

// ---- wire format -------------------------------------------------------------------------

pub const REQ_HDR: usize = 48;
pub const RESP_LEN: usize = 48;

pub const REQ_SPAWN: u32 = 1;
pub const REQ_KILL: u32 = 2;

pub const RESP_READY: u32 = 1;
pub const RESP_SETUP_FAILED: u32 = 2;
pub const RESP_STARTED: u32 = 3;
pub const RESP_SPAWN_FAILED: u32 = 4;
pub const RESP_EXITED: u32 = 5;

/// A spawn/kill request header. The spawn blob follows: argv strings, env strings ("K=V"),
/// then the working directory, all NUL-terminated.
#[derive(Clone, Copy, Default, Debug)]
pub struct ReqHeader {
    pub kind: u32,
    pub flags: u32,
    pub id: u64,
    pub argc: u32,
    pub envc: u32,
    pub rl_cpu: u64,
    pub rl_fsize: u64,
    pub rl_nofile: u64,
}

impl ReqHeader {
    pub fn encode(&self, out: &mut [u8; REQ_HDR]) {
        out[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        out[4..8].copy_from_slice(&self.flags.to_ne_bytes());
        out[8..16].copy_from_slice(&self.id.to_ne_bytes());
        out[16..20].copy_from_slice(&self.argc.to_ne_bytes());
        out[20..24].copy_from_slice(&self.envc.to_ne_bytes());
        out[24..32].copy_from_slice(&self.rl_cpu.to_ne_bytes());
        out[32..40].copy_from_slice(&self.rl_fsize.to_ne_bytes());
        out[40..48].copy_from_slice(&self.rl_nofile.to_ne_bytes());
    }
    fn decode(b: &[u8]) -> ReqHeader {
        ReqHeader {
            kind: rd32(b, 0),
            flags: rd32(b, 4),
            id: rd64(b, 8),
            argc: rd32(b, 16),
            envc: rd32(b, 20),
            rl_cpu: rd64(b, 24),
            rl_fsize: rd64(b, 32),
            rl_nofile: rd64(b, 40),
        }
    }
}

#[derive(Clone, Copy, Default, Debug)]
pub struct Resp {
    pub kind: u32,
    pub id: u64,
    /// READY: 0; SETUP_FAILED/SPAWN_FAILED: step; STARTED: pid; EXITED: wait status.
    pub a: i64,
    /// errno for failures.
    pub b: i64,
    pub utime_us: u64,
    pub stime_us: u64,
}

impl Resp {
    fn encode(&self) -> [u8; RESP_LEN] {
        let mut o = [0u8; RESP_LEN];
        o[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        o[8..16].copy_from_slice(&self.id.to_ne_bytes());
        o[16..24].copy_from_slice(&self.a.to_ne_bytes());
        o[24..32].copy_from_slice(&self.b.to_ne_bytes());
        o[32..40].copy_from_slice(&self.utime_us.to_ne_bytes());
        o[40..48].copy_from_slice(&self.stime_us.to_ne_bytes());
        o
    }
    pub fn decode(b: &[u8]) -> Resp {
        Resp {
            kind: rd32(b, 0),
            id: rd64(b, 8),
            a: rd64(b, 16) as i64,
            b: rd64(b, 24) as i64,
            utime_us: rd64(b, 32),
            stime_us: rd64(b, 40),
        }
    }
}

fn rd32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(o..o + 4) {
        a.copy_from_slice(s);
    }
    u32::from_ne_bytes(a)
}
fn rd64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        a.copy_from_slice(s);
    }
    u64::from_ne_bytes(a)
}

// ---- step codes (for error messages) -------------------------------------------------------

pub const STEP_OPS_BASE: i64 = 0; // 0..ops.len(): plan.ops[i]
pub const STEP_SYNC: i64 = 10_001;
pub const STEP_FDS: i64 = 10_002;
pub const STEP_SIGNALS: i64 = 10_003;
pub const STEP_PRIVATE: i64 = 10_004;
pub const STEP_BASE_TMPFS: i64 = 10_005;
pub const STEP_PIVOT1: i64 = 10_006;
pub const STEP_PIVOT2: i64 = 10_007;
pub const STEP_LOOPBACK: i64 = 10_008;
pub const STEP_HOSTNAME: i64 = 10_009;
pub const STEP_LANDLOCK_CREATE: i64 = 10_010;
pub const STEP_LANDLOCK_RULE: i64 = 10_011;
pub const STEP_SETSID: i64 = 10_012;

// per-command steps
pub const C_CLONE: i64 = 20_000;
pub const C_PROC: i64 = 20_001;
pub const C_STDIO: i64 = 20_002;
pub const C_CLOEXEC: i64 = 20_003;
pub const C_RLIMIT: i64 = 20_004;
pub const C_CHDIR: i64 = 20_005;
pub const C_SECUREBITS: i64 = 20_006;
pub const C_BOUNDING: i64 = 20_007;
pub const C_AMBIENT: i64 = 20_008;
pub const C_NNP: i64 = 20_009;
pub const C_LANDLOCK: i64 = 20_010;
pub const C_CAPSET: i64 = 20_011;
pub const C_SECCOMP: i64 = 20_012;
pub const C_EXEC: i64 = 20_013;
pub const C_ARGS: i64 = 20_014;
pub const C_TABLE: i64 = 20_015;
pub const C_SIGMASK: i64 = 20_016;

pub fn step_name(plan: &Plan, step: i64) -> String {
    if step >= 0 && (step as usize) < plan.ops.len() {
        return plan.ops[step as usize].1.clone();
    }
    match step {
        STEP_SYNC => "wait for uid/gid maps".into(),
        STEP_FDS => "close inherited file descriptors".into(),
        STEP_SIGNALS => "signal setup".into(),
        STEP_PRIVATE => "make mounts private".into(),
        STEP_BASE_TMPFS => "mount base tmpfs".into(),
        STEP_PIVOT1 => "pivot_root into base tmpfs".into(),
        STEP_PIVOT2 => "pivot_root into the new root".into(),
        STEP_LOOPBACK => "bring loopback interface up".into(),
        STEP_HOSTNAME => "set hostname".into(),
        STEP_LANDLOCK_CREATE => "create Landlock ruleset".into(),
        STEP_LANDLOCK_RULE => "add Landlock rule".into(),
        STEP_SETSID => "setsid".into(),
        C_CLONE => "clone command process".into(),
        C_PROC => "mount /proc for the command".into(),
        C_STDIO => "set up stdio".into(),
        C_CLOEXEC => "close file descriptors".into(),
        C_RLIMIT => "set rlimits".into(),
        C_CHDIR => "chdir to working directory".into(),
        C_SECUREBITS => "lock securebits".into(),
        C_BOUNDING => "drop bounding capabilities".into(),
        C_AMBIENT => "clear ambient capabilities".into(),
        C_NNP => "set no_new_privs".into(),
        C_LANDLOCK => "apply Landlock".into(),
        C_CAPSET => "drop capabilities".into(),
        C_SECCOMP => "install seccomp filter".into(),
        C_EXEC => "execve (command not found or not executable?)".into(),
        C_ARGS => "decode argv/env".into(),
        C_TABLE => "too many concurrent commands in one sandbox".into(),
        C_SIGMASK => "reset signal mask".into(),
        _ => format!("step {step}"),
    }
}

// ---- zygote --------------------------------------------------------------------------------

fn send_resp(sock: RawFd, r: &Resp) -> bool {
    let b = r.encode();
    loop {
        // SAFETY: b is a valid buffer; MSG_NOSIGNAL avoids SIGPIPE.
        let n = unsafe { libc::send(sock, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        return n == b.len() as isize;
    }
}

/// Which half of building a Landlock ruleset failed; `errno` says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RulesetFailure {
    Create,
    AddRule,
}

/// Builds the Landlock ruleset of `ll` (paths resolved in the current mount namespace) and
/// returns its fd. Used by the zygote (to validate the plan) and by each command's init
/// after fork, so it allocates nothing and makes only async-signal-safe calls. Paths that do
/// not exist are skipped. On failure `errno` is left as the failing call set it, and the
/// ruleset fd stays open: every caller reports and exits at once.
fn build_landlock_ruleset(ll: &LandlockPlan) -> Result<c_int, RulesetFailure> {
    // SAFETY: Landlock syscalls with pointers to live, correctly laid-out structs and
    // NUL-terminated paths; fds opened here are closed here.
    unsafe {
        let r = libc::syscall(
            sys::SYS_LANDLOCK_CREATE_RULESET,
            &ll.attr as *const _,
            std::mem::size_of_val(&ll.attr),
            0u32,
        );
        if r < 0 {
            return Err(RulesetFailure::Create);
        }
        let ruleset = r as c_int;
        for (path, rights) in &ll.rules {
            let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if fd < 0 {
                if sys::errno() == libc::ENOENT {
                    continue;
                }
                return Err(RulesetFailure::AddRule);
            }
            let attr = PathBeneathAttr {
                allowed_access: *rights,
                parent_fd: fd,
            };
            let r = libc::syscall(
                sys::SYS_LANDLOCK_ADD_RULE,
                ruleset,
                1 as c_int, // LANDLOCK_RULE_PATH_BENEATH
                &attr as *const PathBeneathAttr,
                0u32,
            );
            if r < 0 {
                let e = sys::errno();
                libc::close(fd);
                // close() succeeded or not, report the add_rule errno.
                *libc::__errno_location() = e;
                return Err(RulesetFailure::AddRule);
            }
            libc::close(fd);
        }
        Ok(ruleset)
    }
}

fn fail_setup(sock: RawFd, step: i64) -> ! {
    let e = sys::errno();
    send_resp(
        sock,
        &Resp {
            kind: RESP_SETUP_FAILED,
            a: step,
            b: e as i64,
            ..Default::default()
        },
    );
    // SAFETY: terminating the zygote.
    unsafe { libc::_exit(1) }
}

fn opt_ptr(c: &Option<CString>) -> *const c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// Run one op. Async-signal-safe.
fn run_op(op: &Op) -> bool {
    // SAFETY: every pointer comes from a CString owned by the plan.
    unsafe {
        match op {
            Op::Mkdir { path, mode } => {
                libc::mkdir(path.as_ptr(), *mode) == 0 || sys::errno() == libc::EEXIST
            }
            Op::Symlink { target, path } => libc::symlink(target.as_ptr(), path.as_ptr()) == 0,
            Op::Touch { path, mode } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    *mode,
                );
                if fd < 0 {
                    return false;
                }
                libc::close(fd);
                true
            }
            Op::Mount {
                src,
                target,
                fstype,
                flags,
                data,
            } => {
                libc::mount(
                    opt_ptr(src),
                    target.as_ptr(),
                    opt_ptr(fstype),
                    *flags,
                    opt_ptr(data).cast(),
                ) == 0
            }
            Op::SetAttr {
                path,
                set,
                recursive,
            } => {
                let attr = MountAttr {
                    attr_set: *set,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                libc::syscall(
                    sys::SYS_MOUNT_SETATTR,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    if *recursive { AT_RECURSIVE } else { 0 },
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                ) == 0
            }
        }
    }
}

fn close_except(keep_a: RawFd, keep_b: RawFd) {
    let (lo, hi) = if keep_a < keep_b {
        (keep_a as u32, keep_b as u32)
    } else {
        (keep_b as u32, keep_a as u32)
    };
    let mut ranges = [(0u32, 0u32, false); 3];
    ranges[0] = (3, lo.saturating_sub(1), lo > 3);
    ranges[1] = (lo + 1, hi.saturating_sub(1), hi > lo + 1);
    ranges[2] = (hi + 1, u32::MAX, true);
    for (a, b, valid) in ranges {
        if valid {
            // SAFETY: closing fds we do not need in the zygote.
            unsafe { libc::syscall(sys::SYS_CLOSE_RANGE, a, b, 0u32) };
        }
    }
}

/// Bring `lo` up in the current network namespace. Async-signal-safe.
fn loopback_up() -> bool {
    // SAFETY: plain socket/ioctl calls on a stack-allocated ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return false;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as c_char;
        ifr.ifr_name[1] = b'o' as c_char;
        let ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 && {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as i16;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) == 0
        };
        libc::close(s);
        ok
    }
}

/// The zygote's main function. Never returns.
///
/// # Safety
/// Must only be called in a freshly cloned child; `plan` and `bufs` are this process's
/// private copies.
pub unsafe fn zygote_main(plan: &Plan, bufs: &mut Buffers, sock: RawFd, sync: RawFd) -> ! {
    // SAFETY (whole body): raw syscalls on prepared data, see module docs.
    unsafe {
        // 1. wait until the parent wrote our uid/gid maps and cgroup membership.
        let mut b = [0u8; 1];
        if sys::read_full(sync, &mut b) != 1 {
            libc::_exit(1);
        }
        close_except(sock, sync);
        libc::close(sync);
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if devnull < 0 {
            fail_setup(sock, STEP_FDS);
        }
        for fd in 0..3 {
            libc::dup2(devnull, fd);
        }
        if devnull > 2 {
            libc::close(devnull);
        }
        // 2. default signal dispositions (Rust ignores SIGPIPE), SIGCHLD via signalfd.
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            fail_setup(sock, STEP_SIGNALS);
        }
        let sigfd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if sigfd < 0 {
            fail_setup(sock, STEP_SIGNALS);
        }
        // No controlling terminal (TIOCSTI & friends).
        if libc::setsid() < 0 && plan.namespaces {
            fail_setup(sock, STEP_SETSID);
        }

        if plan.namespaces {
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                fail_setup(sock, STEP_PRIVATE);
            }
            if libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755,size=1m".as_ptr().cast(),
            ) != 0
            {
                fail_setup(sock, STEP_BASE_TMPFS);
            }
            if libc::mkdir(c"/tmp/oldroot".as_ptr(), 0o755) != 0
                || libc::syscall(
                    libc::SYS_pivot_root,
                    c"/tmp".as_ptr(),
                    c"/tmp/oldroot".as_ptr(),
                ) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                fail_setup(sock, STEP_PIVOT1);
            }
            for (i, (op, _)) in plan.ops.iter().enumerate() {
                if !run_op(op) {
                    fail_setup(sock, STEP_OPS_BASE + i as i64);
                }
            }
            if libc::chdir(c"/newroot".as_ptr()) != 0
                || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
                || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                fail_setup(sock, STEP_PIVOT2);
            }
            if !loopback_up() {
                fail_setup(sock, STEP_LOOPBACK);
            }
            let h = plan.hostname.as_bytes();
            if libc::sethostname(h.as_ptr().cast(), h.len()) != 0 {
                fail_setup(sock, STEP_HOSTNAME);
            }
        }

        // 3. Landlock ruleset (paths now resolve inside the new root).
        let mut ruleset: c_int = -1;
        if let Some(ll) = &plan.landlock {
            ruleset = match build_landlock_ruleset(ll) {
                Ok(fd) => fd,
                Err(RulesetFailure::Create) => fail_setup(sock, STEP_LANDLOCK_CREATE),
                Err(RulesetFailure::AddRule) => fail_setup(sock, STEP_LANDLOCK_RULE),
            };
        }
        // Commands run with the same uid: keep them out of our /proc entries.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"enact-init".as_ptr(), 0, 0, 0);
        for (start, end) in plan.scrub {
            if start != 0 && end > start && end - start < (1 << 20) {
                std::ptr::write_bytes(start as *mut u8, 0, end - start);
            }
        }

        if !send_resp(
            sock,
            &Resp {
                kind: RESP_READY,
                ..Default::default()
            },
        ) {
            libc::_exit(1);
        }
        if ruleset >= 0 {
            // Only a validation that the ruleset can be built here; each command builds its own
            // after mounting its /proc (Landlock rules bind to inodes).
            libc::close(ruleset);
        }
        zygote_loop(plan, bufs, sock, sigfd)
    }
}

unsafe fn zygote_loop(plan: &Plan, bufs: &mut Buffers, sock: RawFd, sigfd: RawFd) -> ! {
    // SAFETY (whole body): raw syscalls on buffers we own.
    unsafe {
        loop {
            let mut pfd = [
                libc::pollfd {
                    fd: sock,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sigfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let r = libc::poll(pfd.as_mut_ptr(), 2, -1);
            if r < 0 {
                if sys::errno() == libc::EINTR {
                    continue;
                }
                libc::_exit(2);
            }
            if pfd[1].revents != 0 {
                let mut si = [0u8; 128];
                while libc::read(sigfd, si.as_mut_ptr().cast(), si.len()) > 0 {}
                reap(bufs, sock);
            }
            if pfd[0].revents != 0 {
                handle_request(plan, bufs, sock);
            }
        }
    }
}

fn reap(bufs: &mut Buffers, sock: RawFd) {
    loop {
        let mut status: c_int = 0;
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 with valid out pointers.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut ru) };
        if pid <= 0 {
            return;
        }
        for slot in bufs.table.iter_mut() {
            if slot.1 == pid && slot.0 != 0 {
                let tv = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
                let mut r = Resp {
                    kind: RESP_EXITED,
                    id: slot.0,
                    a: status as i64,
                    b: 0,
                    utime_us: tv(ru.ru_utime),
                    stime_us: tv(ru.ru_stime),
                };
                // The command's init reports the command's own status + rusage; if it was
                // killed first (timeout), its own status (SIGKILL) stands.
                let mut sb = [0u8; 20];
                if sys::read_full(slot.2, &mut sb) == 20 {
                    r.a = i64::from(i32::from_ne_bytes([sb[0], sb[1], sb[2], sb[3]]));
                    r.utime_us = rd64(&sb, 4);
                    r.stime_us = rd64(&sb, 12);
                }
                // SAFETY: closing the status pipe we own.
                unsafe { libc::close(slot.2) };
                send_resp(sock, &r);
                *slot = (0, 0, -1);
                break;
            }
        }
    }
}

fn handle_request(plan: &Plan, bufs: &mut Buffers, sock: RawFd) {
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: bufs.recv.as_mut_ptr().cast(),
        iov_len: bufs.recv.len(),
    };
    // SAFETY: msghdr built from valid buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: see above.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n == 0 {
        // Parent gone: exiting kills every process in our pid namespace.
        // SAFETY: terminating.
        unsafe { libc::_exit(0) };
    }
    if n < 0 {
        if sys::errno() == libc::EINTR || sys::errno() == libc::EAGAIN {
            return;
        }
        // SAFETY: terminating.
        unsafe { libc::_exit(3) };
    }
    let mut fds: [RawFd; 3] = [-1; 3];
    let mut nfds = 0;
    // SAFETY: walking the control buffer the kernel filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let cnt = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..cnt {
                    let fd = *data.add(i);
                    if nfds < 3 {
                        fds[nfds] = fd;
                        nfds += 1;
                    } else {
                        libc::close(fd);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let close_fds = |fds: &[RawFd; 3]| {
        for fd in fds {
            if *fd >= 0 {
                // SAFETY: fds we received.
                unsafe { libc::close(*fd) };
            }
        }
    };
    let n = n as usize;
    if n < REQ_HDR {
        close_fds(&fds);
        return;
    }
    let hdr = ReqHeader::decode(&bufs.recv[..REQ_HDR]);
    match hdr.kind {
        REQ_KILL => {
            close_fds(&fds);
            for slot in bufs.table.iter() {
                if slot.0 == hdr.id && slot.1 > 0 {
                    // SAFETY: our own child (and its process group).
                    unsafe {
                        libc::kill(-slot.1, libc::SIGKILL);
                        libc::kill(slot.1, libc::SIGKILL);
                    }
                }
            }
        }
        REQ_SPAWN => {
            let r = spawn(plan, bufs, &hdr, n, fds);
            close_fds(&fds);
            match r {
                Ok(pid) => {
                    send_resp(
                        sock,
                        &Resp {
                            kind: RESP_STARTED,
                            id: hdr.id,
                            a: pid as i64,
                            ..Default::default()
                        },
                    );
                }
                Err((step, e)) => {
                    send_resp(
                        sock,
                        &Resp {
                            kind: RESP_SPAWN_FAILED,
                            id: hdr.id,
                            a: step,
                            b: e as i64,
                            ..Default::default()
                        },
                    );
                }
            }
        }
        _ => close_fds(&fds),
    }
}

/// Everything the command needs; prepared by the zygote, copied into the command's init by fork.
struct ChildArgs<'a> {
    plan: &'a Plan,
    hdr: ReqHeader,
    fds: [RawFd; 3],
    ruleset: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    path: *mut u8,
    path_cap: usize,
    /// PATH value (pointer into the request blob) or null.
    search: *const u8,
    search_len: usize,
    err_fd: RawFd,
    status_fd: RawFd,
    stack_top: *mut c_void,
}

fn spawn(
    plan: &Plan,
    bufs: &mut Buffers,
    hdr: &ReqHeader,
    n: usize,
    fds: [RawFd; 3],
) -> Result<i32, (i64, i32)> {
    let slot = bufs
        .table
        .iter()
        .position(|s| s.0 == 0)
        .ok_or((C_TABLE, libc::EAGAIN))?;
    let argc = hdr.argc as usize;
    let envc = hdr.envc as usize;
    if argc == 0 || argc > MAX_ARGS || envc > MAX_ENV || fds.contains(&-1) {
        return Err((C_ARGS, libc::E2BIG));
    }
    // Split the blob into argv, env, cwd.
    let blob_start = REQ_HDR;
    let blob_end = n;
    if blob_end <= blob_start || bufs.recv[blob_end - 1] != 0 {
        return Err((C_ARGS, libc::EINVAL));
    }
    let mut idx = 0usize;
    let mut start = blob_start;
    let mut cwd: *const c_char = std::ptr::null();
    let mut search: *const u8 = std::ptr::null();
    let mut search_len = 0;
    let base = bufs.recv.as_ptr();
    for i in blob_start..blob_end {
        if bufs.recv[i] != 0 {
            continue;
        }
        // SAFETY: start..i lies inside recv.
        let p = unsafe { base.add(start) } as *const c_char;
        if idx < argc {
            bufs.argv[idx] = p;
        } else if idx < argc + envc {
            bufs.envp[idx - argc] = p;
            let s = &bufs.recv[start..i];
            if s.starts_with(b"PATH=") {
                // SAFETY: inside recv.
                search = unsafe { base.add(start + 5) };
                search_len = i - start - 5;
            }
        } else if idx == argc + envc {
            cwd = p;
        }
        idx += 1;
        start = i + 1;
    }
    if idx < argc + envc + 1 {
        return Err((C_ARGS, libc::EINVAL));
    }
    bufs.argv[argc] = std::ptr::null();
    bufs.envp[envc] = std::ptr::null();

    let mk_pipe = || -> Result<(c_int, c_int), (i64, i32)> {
        let mut p = [0 as c_int; 2];
        // SAFETY: valid out array.
        if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err((C_CLONE, sys::errno()));
        }
        Ok((p[0], p[1]))
    };
    let (err_r, err_w) = mk_pipe()?;
    let (st_r, st_w) = match mk_pipe() {
        Ok(p) => p,
        Err(e) => {
            // SAFETY: our fds.
            unsafe {
                libc::close(err_r);
                libc::close(err_w);
            }
            return Err(e);
        }
    };
    // SAFETY: computing the top of our own stack buffer (16-byte aligned).
    let stack_top = unsafe {
        let top = bufs.stack.as_mut_ptr().add(bufs.stack.len());
        ((top as usize) & !15usize) as *mut c_void
    };
    let args = ChildArgs {
        plan,
        hdr: *hdr,
        fds,
        ruleset: -1,
        argv: bufs.argv.as_ptr(),
        envp: bufs.envp.as_ptr(),
        cwd,
        path: bufs.path.as_mut_ptr(),
        path_cap: bufs.path.len(),
        search,
        search_len,
        err_fd: err_w,
        status_fd: st_w,
        stack_top,
    };
    let flags = if plan.namespaces {
        libc::CLONE_NEWPID | libc::CLONE_NEWNS
    } else {
        0
    };
    // The command's init: a real fork (it outlives the exec of the command).
    // SAFETY: the child only runs command_init, which is async-signal-safe.
    let pid = match unsafe { sys::raw_clone(flags) } {
        Ok(0) => {
            // SAFETY: fresh child with private copies of args and buffers.
            unsafe { command_init(args) }
        }
        Ok(p) => p,
        Err(e) => {
            // SAFETY: our fds.
            unsafe {
                libc::close(err_r);
                libc::close(err_w);
                libc::close(st_r);
                libc::close(st_w);
            }
            return Err((C_CLONE, e.raw_os_error().unwrap_or(libc::EIO)));
        }
    };
    // SAFETY: closing our copies of the write ends.
    unsafe {
        libc::close(err_w);
        libc::close(st_w);
    }
    let mut eb = [0u8; 12];
    let got = sys::read_full(err_r, &mut eb);
    // SAFETY: our fd.
    unsafe { libc::close(err_r) };
    if got == 12 {
        let step = i64::from(i32::from_ne_bytes([eb[0], eb[1], eb[2], eb[3]]));
        let e = i32::from_ne_bytes([eb[4], eb[5], eb[6], eb[7]]);
        // SAFETY: our child; it exits right after reporting.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            libc::close(st_r);
        }
        return Err((step, e));
    }
    bufs.table[slot] = (hdr.id, pid, st_r);
    Ok(pid)
}

/// pid 1 of the command's pid namespace: mounts its /proc, builds the Landlock ruleset,
/// vforks the command, reaps everything, reports the command's status and exits (which
/// kills whatever the command left behind). Never returns.
unsafe fn command_init(mut a: ChildArgs) -> ! {
    let plan = a.plan;
    // SAFETY (whole body): syscalls on prepared data.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if plan.namespaces
            && libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) != 0
        {
            child_fail(&a, C_PROC);
        }
        if let Some(ll) = &plan.landlock {
            // A fresh ruleset per command: rules bind to inodes, and /proc is new.
            match build_landlock_ruleset(ll) {
                Ok(fd) => a.ruleset = fd,
                Err(_) => child_fail(&a, C_LANDLOCK),
            }
        }
        let cmd = libc::clone(
            child_entry,
            a.stack_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &a as *const ChildArgs as *mut c_void,
        );
        if cmd < 0 {
            child_fail(&a, C_CLONE);
        }
        // The command exec'd (or failed and reported): release the zygote.
        libc::close(a.err_fd);
        for fd in a.fds {
            libc::close(fd);
        }
        if a.ruleset >= 0 {
            libc::close(a.ruleset);
        }
        loop {
            let mut st: c_int = 0;
            let mut ru: libc::rusage = std::mem::zeroed();
            let p = libc::wait4(-1, &mut st, 0, &mut ru);
            if p < 0 {
                if sys::errno() == libc::EINTR {
                    continue;
                }
                libc::_exit(126);
            }
            if p == cmd {
                let tv = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
                let mut b = [0u8; 20];
                b[0..4].copy_from_slice(&st.to_ne_bytes());
                b[4..12].copy_from_slice(&tv(ru.ru_utime).to_ne_bytes());
                b[12..20].copy_from_slice(&tv(ru.ru_stime).to_ne_bytes());
                sys::write_full(a.status_fd, &b);
                libc::_exit(0);
            }
        }
    }
}

fn child_fail(a: &ChildArgs, step: i64) -> ! {
    let e = sys::errno();
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&(step as i32).to_ne_bytes());
    b[4..8].copy_from_slice(&e.to_ne_bytes());
    sys::write_full(a.err_fd, &b);
    // SAFETY: terminating the child.
    unsafe { libc::_exit(127) }
}

extern "C" fn child_entry(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` points at the ChildArgs on the (suspended) zygote's stack.
    let a: &ChildArgs = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: see module docs; only syscalls from here on.
    unsafe { command_child(a) }
}

unsafe fn command_child(a: &ChildArgs) -> ! {
    let plan = a.plan;
    // SAFETY (whole body): syscalls on prepared data.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            child_fail(a, C_SIGMASK);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        for (i, fd) in a.fds.iter().enumerate() {
            if libc::dup2(*fd, i as c_int) < 0 {
                child_fail(a, C_STDIO);
            }
        }
        // Nothing but stdio (and the CLOEXEC error pipe) survives exec.
        if libc::syscall(
            sys::SYS_CLOSE_RANGE,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            child_fail(a, C_CLOEXEC);
        }
        let set = |res, v: u64| -> bool {
            let l = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            libc::setrlimit(res, &l) == 0
        };
        if !set(libc::RLIMIT_CORE, 0)
            || (a.hdr.rl_fsize != 0 && !set(libc::RLIMIT_FSIZE, a.hdr.rl_fsize))
            || (a.hdr.rl_nofile != 0 && !set(libc::RLIMIT_NOFILE, a.hdr.rl_nofile))
        {
            child_fail(a, C_RLIMIT);
        }
        if a.hdr.rl_cpu != 0 {
            // soft limit: SIGXCPU; hard limit one second later: SIGKILL.
            let l = libc::rlimit {
                rlim_cur: a.hdr.rl_cpu,
                rlim_max: a.hdr.rl_cpu + 1,
            };
            if libc::setrlimit(libc::RLIMIT_CPU, &l) != 0 {
                child_fail(a, C_RLIMIT);
            }
        }
        if !a.cwd.is_null() && *a.cwd != 0 && libc::chdir(a.cwd) != 0 {
            child_fail(a, C_CHDIR);
        }
        if plan.drop_caps {
            // NOROOT|NOROOT_LOCKED|NO_SETUID_FIXUP|NO_SETUID_FIXUP_LOCKED|KEEP_CAPS_LOCKED
            if libc::prctl(libc::PR_SET_SECUREBITS, 0x2f, 0, 0, 0) != 0 {
                child_fail(a, C_SECUREBITS);
            }
            for cap in 0..=plan.cap_last_cap {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) != 0
                    && sys::errno() != libc::EINVAL
                {
                    child_fail(a, C_BOUNDING);
                }
            }
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                child_fail(a, C_AMBIENT);
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            child_fail(a, C_NNP);
        }
        if a.ruleset >= 0 && libc::syscall(sys::SYS_LANDLOCK_RESTRICT_SELF, a.ruleset, 0u32) != 0 {
            child_fail(a, C_LANDLOCK);
        }
        if plan.drop_caps {
            #[repr(C)]
            struct Hdr {
                version: u32,
                pid: c_int,
            }
            #[repr(C)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let h = Hdr {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let d = [
                Data {
                    effective: 0,
                    permitted: 0,
                    inheritable: 0,
                },
                Data {
                    effective: 0,
                    permitted: 0,
                    inheritable: 0,
                },
            ];
            if libc::syscall(libc::SYS_capset, &h as *const Hdr, d.as_ptr()) != 0 {
                child_fail(a, C_CAPSET);
            }
        }
        if let Some(f) = &plan.seccomp {
            let prog = libc::sock_fprog {
                len: f.len() as u16,
                filter: f.as_ptr() as *mut libc::sock_filter,
            };
            // SECCOMP_SET_MODE_FILTER = 1
            if libc::syscall(libc::SYS_seccomp, 1 as c_int, 0 as c_int, &prog as *const _) != 0 {
                child_fail(a, C_SECCOMP);
            }
        }
        exec_search(a)
    }
}

/// execve with a PATH search done in a preallocated buffer.
unsafe fn exec_search(a: &ChildArgs) -> ! {
    // SAFETY (whole body): argv/envp are NUL-terminated arrays in the request buffer.
    unsafe {
        let prog = *a.argv;
        let mut has_slash = false;
        let mut plen = 0usize;
        while *prog.add(plen) != 0 {
            if *prog.add(plen) == b'/' as c_char {
                has_slash = true;
            }
            plen += 1;
        }
        if has_slash || a.search.is_null() {
            libc::execve(prog, a.argv, a.envp);
            child_fail(a, C_EXEC);
        }
        let mut last_err = libc::ENOENT;
        let mut i = 0usize;
        while i <= a.search_len {
            let mut j = i;
            while j < a.search_len && *a.search.add(j) != b':' {
                j += 1;
            }
            let dlen = j - i;
            if dlen > 0 && dlen + 1 + plen < a.path_cap {
                std::ptr::copy_nonoverlapping(a.search.add(i), a.path, dlen);
                *a.path.add(dlen) = b'/';
                std::ptr::copy_nonoverlapping(prog as *const u8, a.path.add(dlen + 1), plen);
                *a.path.add(dlen + 1 + plen) = 0;
                libc::execve(a.path as *const c_char, a.argv, a.envp);
                let e = sys::errno();
                if e != libc::ENOENT && e != libc::ENOTDIR {
                    last_err = e;
                }
            }
            i = j + 1;
        }
        *libc::__errno_location() = last_err;
        child_fail(a, C_EXEC)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::landlock::READ_EXEC;

    #[test]
    fn landlock_ruleset_builds_skips_missing_paths_and_names_the_failing_half() {
        let Ok(abi) = sys::landlock_abi() else {
            eprintln!("SKIP: Landlock is not available on this kernel");
            return;
        };
        let mut plan = LandlockPlan::new(abi, true);
        plan.add(CString::new("/").unwrap(), READ_EXEC, true);
        plan.add(
            CString::new("/no/such/enact/path").unwrap(),
            READ_EXEC,
            true,
        );
        let fd = build_landlock_ruleset(&plan).unwrap();
        assert!(fd >= 0);
        // SAFETY: the ruleset fd we just got.
        unsafe { libc::close(fd) };

        // A right outside the handled set: the kernel refuses the rule (EINVAL).
        let mut bad_rule = LandlockPlan::new(abi, false);
        bad_rule
            .rules
            .push((CString::new("/").unwrap(), 1u64 << 40));
        assert_eq!(
            build_landlock_ruleset(&bad_rule),
            Err(RulesetFailure::AddRule)
        );
        assert_eq!(sys::errno(), libc::EINVAL);

        // Nothing handled: the ruleset cannot be created.
        let mut empty = LandlockPlan::new(abi, false);
        empty.attr.handled_access_fs = 0;
        empty.attr.handled_access_net = 0;
        empty.attr.scoped = 0;
        assert_eq!(build_landlock_ruleset(&empty), Err(RulesetFailure::Create));
    }
}

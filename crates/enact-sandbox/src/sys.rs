//! Thin, commented wrappers over the raw syscalls the sandbox needs.
//!
//! Functions marked "async-signal-safe" may be called in a forked child of a
//! multi-threaded process: they only issue syscalls and touch no allocator or lock.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_long};

// Syscall numbers of the "unified" table (identical on x86_64 and aarch64 since Linux 5.1).
pub const SYS_CLOSE_RANGE: c_long = 436;
pub const SYS_MOUNT_SETATTR: c_long = 442;
pub const SYS_LANDLOCK_CREATE_RULESET: c_long = 444;
pub const SYS_LANDLOCK_ADD_RULE: c_long = 445;
pub const SYS_LANDLOCK_RESTRICT_SELF: c_long = 446;

pub const NS_USER: u32 = 1;
pub const NS_MOUNT: u32 = 2;
pub const NS_PID: u32 = 4;
pub const NS_NET: u32 = 8;
pub const NS_IPC: u32 = 16;
pub const NS_UTS: u32 = 32;
pub const NS_ALL_BITS: u32 = 63;

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const AT_RECURSIVE: c_int = 0x8000;

#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// Raw `clone(2)` without a new stack: behaves like `fork()` with extra flags.
/// Returns 0 in the child, the child's pid in the parent.
///
/// # Safety
/// In the child of a multi-threaded process only async-signal-safe code may run
/// until `execve`/`_exit` (no allocation, no locks). glibc's fork handlers are not run.
pub unsafe fn raw_clone(flags: c_int) -> io::Result<libc::pid_t> {
    // SAFETY: with a null stack pointer clone() duplicates the caller's stack like fork().
    // Argument order for x86_64/aarch64: flags, stack, parent_tid, child_tid, tls.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as c_long,
            0 as c_long,
            0 as c_long,
            0 as c_long,
            0 as c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as libc::pid_t)
    }
}

/// errno of the last failed call. Async-signal-safe.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns a valid thread-local pointer.
    unsafe { *libc::__errno_location() }
}

/// `pipe2(O_CLOEXEC)` returning (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds points to two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a caller-owned fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Landlock ABI version (Err if unsupported / disabled).
pub fn landlock_abi() -> io::Result<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: documented probe call: NULL attr, size 0, VERSION flag.
    let r = unsafe {
        libc::syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u32)
    }
}

pub fn mount_setattr_available() -> bool {
    // SAFETY: invalid fd + null attr: the kernel answers EBADF/EINVAL/EFAULT if the
    // syscall exists, ENOSYS if not. Nothing is modified.
    let r = unsafe {
        libc::syscall(
            SYS_MOUNT_SETATTR,
            -1 as c_int,
            std::ptr::null::<u8>(),
            0 as c_int,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    !(r < 0 && errno() == libc::ENOSYS)
}

pub fn seccomp_available() -> bool {
    const SECCOMP_GET_ACTION_AVAIL: c_long = 2;
    let action: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
    // SAFETY: read-only query; `action` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0 as c_long,
            &action as *const u32,
        )
    };
    r == 0
}

/// Fork a child that tries to unshare each namespace; returns a bitmask of successes.
pub fn probe_namespaces() -> Result<u32, String> {
    let (r, w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    use std::os::fd::AsRawFd;
    let wfd = w.as_raw_fd();
    // SAFETY: the child only calls unshare/write/_exit (async-signal-safe).
    let pid = unsafe { raw_clone(0) }.map_err(|e| format!("fork: {e}"))?;
    if pid == 0 {
        let mut mask: u32 = 0;
        // SAFETY: plain syscalls in the child, then _exit.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                mask |= NS_USER;
            }
            for (flag, bit) in [
                (libc::CLONE_NEWNS, NS_MOUNT),
                (libc::CLONE_NEWPID, NS_PID),
                (libc::CLONE_NEWNET, NS_NET),
                (libc::CLONE_NEWIPC, NS_IPC),
                (libc::CLONE_NEWUTS, NS_UTS),
            ] {
                if libc::unshare(flag) == 0 {
                    mask |= bit;
                }
            }
            libc::write(wfd, (&mask as *const u32).cast(), 4);
            libc::_exit(0);
        }
    }
    drop(w);
    let mut buf = [0u8; 4];
    let n = read_full(r.as_raw_fd(), &mut buf);
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if n != 4 {
        return Err("namespace probe child died".into());
    }
    Ok(u32::from_ne_bytes(buf))
}

/// Read until `buf` is full or EOF; returns bytes read. Async-signal-safe.
pub fn read_full(fd: RawFd, buf: &mut [u8]) -> usize {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: the range is inside `buf`.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        off += n as usize;
    }
    off
}

/// Write all of `buf`. Async-signal-safe.
pub fn write_full(fd: RawFd, buf: &[u8]) -> bool {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: the range is inside `buf`.
        let n = unsafe { libc::write(fd, buf[off..].as_ptr().cast(), buf.len() - off) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        off += n as usize;
    }
    true
}

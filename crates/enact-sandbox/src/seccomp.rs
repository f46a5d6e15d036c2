//! Hand-built seccomp-BPF filter (prepared in the parent, installed after fork).

use libc::sock_filter;

const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Syscalls that always fail with EPERM inside the sandbox.
fn denied() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_userfaultfd,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_vhangup,
        libc::SYS_fanotify_init,
        libc::SYS_lookup_dcookie,
        // new mount API, io_uring (bypasses seccomp checks of the ops it runs), pidfd_getfd
        428, // open_tree
        429, // move_mount
        430, // fsopen
        431, // fsconfig
        432, // fsmount
        433, // fspick
        438, // pidfd_getfd
        442, // mount_setattr
        425, // io_uring_setup
        426, // io_uring_enter
        427, // io_uring_register
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_nfsservctl,
    ]);
    v
}

const NS_CLONE_FLAGS: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32;

/// Build the filter. `allow_inet`: also allow AF_INET/AF_INET6 sockets (loopback policy).
pub fn build_filter(allow_inet: bool) -> Vec<sock_filter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let mut f = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET | BPF_K, RET_KILL_PROCESS),
        stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 ABI syscalls (nr | 0x40000000) are a classic filter bypass: refuse them.
        f.push(jump(BPF_JMP | BPF_JGE | BPF_K, 0x4000_0000, 0, 1));
        f.push(stmt(BPF_RET | BPF_K, eperm));
    }
    for nr in denied() {
        f.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 1));
        f.push(stmt(BPF_RET | BPF_K, eperm));
    }
    // clone3: its flags live in memory we cannot inspect; ENOSYS makes libc fall back to clone.
    f.push(jump(BPF_JMP | BPF_JEQ | BPF_K, 435, 0, 1));
    f.push(stmt(BPF_RET | BPF_K, RET_ERRNO | libc::ENOSYS as u32));

    // socket(domain, ...): only AF_UNIX (and AF_INET/6 with the loopback policy).
    let mut families = vec![libc::AF_UNIX as u32];
    if allow_inet {
        families.push(libc::AF_INET as u32);
        families.push(libc::AF_INET6 as u32);
    }
    let n = families.len() as u8;
    // [JEQ socket, 0, skip] [LD arg0] [JEQ fam_i -> allow]* [RET EAFNOSUPPORT] [RET ALLOW] [LD nr]
    f.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_socket as u32,
        0,
        n + 3,
    ));
    f.push(stmt(BPF_LD | BPF_W | BPF_ABS, off_arg_lo(0)));
    for (i, fam) in families.iter().enumerate() {
        // jump forward to the RET ALLOW: remaining family checks + the RET EAFNOSUPPORT
        let to_allow = (n - 1 - i as u8) + 1;
        f.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *fam, to_allow, 0));
    }
    f.push(stmt(BPF_RET | BPF_K, RET_ERRNO | libc::EAFNOSUPPORT as u32));
    f.push(stmt(BPF_RET | BPF_K, RET_ALLOW));

    // ioctl(fd, TIOCSTI | TIOCLINUX): terminal input injection.
    f.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_ioctl as u32,
        0,
        5,
    ));
    f.push(stmt(BPF_LD | BPF_W | BPF_ABS, off_arg_lo(1)));
    f.push(jump(BPF_JMP | BPF_JEQ | BPF_K, libc::TIOCSTI as u32, 1, 0));
    f.push(jump(BPF_JMP | BPF_JEQ | BPF_K, 0x541C, 0, 1)); // TIOCLINUX
    f.push(stmt(BPF_RET | BPF_K, eperm));
    f.push(stmt(BPF_RET | BPF_K, RET_ALLOW));

    // clone(flags, ...) with namespace flags.
    f.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_clone as u32,
        0,
        4,
    ));
    f.push(stmt(BPF_LD | BPF_W | BPF_ABS, off_arg_lo(0)));
    f.push(jump(BPF_JMP | BPF_JSET | BPF_K, NS_CLONE_FLAGS, 0, 1));
    f.push(stmt(BPF_RET | BPF_K, eperm));
    f.push(stmt(BPF_RET | BPF_K, RET_ALLOW));

    f.push(stmt(BPF_RET | BPF_K, RET_ALLOW));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn filter_is_well_formed() {
        for inet in [false, true] {
            let f = build_filter(inet);
            assert!(f.len() < 4096);
            // every jump lands inside the program
            for (i, ins) in f.iter().enumerate() {
                if ins.code & 0x07 == BPF_JMP {
                    assert!(i + 1 + (ins.jt as usize) < f.len());
                    assert!(i + 1 + (ins.jf as usize) < f.len());
                }
            }
        }
    }
}

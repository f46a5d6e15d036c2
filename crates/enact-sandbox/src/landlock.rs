//! Landlock access rights and the ruleset plan (rules are added inside the zygote,
//! after the new root exists).

use std::ffi::CString;

pub const FS_EXECUTE: u64 = 1 << 0;
pub const FS_WRITE_FILE: u64 = 1 << 1;
pub const FS_READ_FILE: u64 = 1 << 2;
pub const FS_READ_DIR: u64 = 1 << 3;
pub const FS_REMOVE_DIR: u64 = 1 << 4;
pub const FS_REMOVE_FILE: u64 = 1 << 5;
#[allow(dead_code)] // handled (via the ABI mask), never granted
pub const FS_MAKE_CHAR: u64 = 1 << 6;
pub const FS_MAKE_DIR: u64 = 1 << 7;
pub const FS_MAKE_REG: u64 = 1 << 8;
pub const FS_MAKE_SOCK: u64 = 1 << 9;
pub const FS_MAKE_FIFO: u64 = 1 << 10;
#[allow(dead_code)] // handled (via the ABI mask), never granted
pub const FS_MAKE_BLOCK: u64 = 1 << 11;
pub const FS_MAKE_SYM: u64 = 1 << 12;
pub const FS_REFER: u64 = 1 << 13; // ABI 2
pub const FS_TRUNCATE: u64 = 1 << 14; // ABI 3
pub const FS_IOCTL_DEV: u64 = 1 << 15; // ABI 5

pub const NET_BIND_TCP: u64 = 1 << 0; // ABI 4
pub const NET_CONNECT_TCP: u64 = 1 << 1;

pub const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0; // ABI 6
pub const SCOPE_SIGNAL: u64 = 1 << 1;

/// Rights that may be granted on a non-directory.
pub const FILE_RIGHTS: u64 = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;

/// Every filesystem right the given ABI knows. Handling *all* of them matters: an
/// unhandled right (e.g. MAKE_REG) is simply allowed.
pub fn handled_fs(abi: u32) -> u64 {
    let mut m = (1u64 << 13) - 1;
    if abi >= 2 {
        m |= FS_REFER;
    }
    if abi >= 3 {
        m |= FS_TRUNCATE;
    }
    if abi >= 5 {
        m |= FS_IOCTL_DEV;
    }
    m
}

pub fn handled_net(abi: u32) -> u64 {
    if abi >= 4 {
        NET_BIND_TCP | NET_CONNECT_TCP
    } else {
        0
    }
}

pub fn scoped(abi: u32) -> u64 {
    if abi >= 6 {
        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    } else {
        0
    }
}

pub const READ_EXEC: u64 = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR;
pub const READ_WRITE: u64 = FS_EXECUTE
    | FS_WRITE_FILE
    | FS_READ_FILE
    | FS_READ_DIR
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE;

#[repr(C)]
pub struct RulesetAttr {
    pub handled_access_fs: u64,
    pub handled_access_net: u64,
    pub scoped: u64,
}

#[repr(C, packed)]
pub struct PathBeneathAttr {
    pub allowed_access: u64,
    pub parent_fd: i32,
}

/// Prepared before fork; consumed by the zygote.
pub struct LandlockPlan {
    pub attr: RulesetAttr,
    /// (path inside the sandbox, allowed rights) — already masked to the handled set and
    /// to FILE_RIGHTS for non-directories.
    pub rules: Vec<(CString, u64)>,
}

impl LandlockPlan {
    pub fn new(abi: u32, deny_tcp: bool) -> Self {
        LandlockPlan {
            attr: RulesetAttr {
                handled_access_fs: handled_fs(abi),
                handled_access_net: if deny_tcp { handled_net(abi) } else { 0 },
                scoped: scoped(abi),
            },
            rules: Vec::new(),
        }
    }
    pub fn add(&mut self, path: CString, rights: u64, is_dir: bool) {
        let mut r = rights & self.attr.handled_access_fs;
        if !is_dir {
            r &= FILE_RIGHTS;
        }
        if r != 0 {
            self.rules.push((path, r));
        }
    }
}

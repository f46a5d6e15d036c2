//! Capability detection and isolation levels.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::Serialize;

use crate::cgroup::{self, CgroupSupport};
use crate::sys;

/// A kernel/host feature the sandbox relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    UserNamespace,
    MountNamespace,
    PidNamespace,
    NetNamespace,
    IpcNamespace,
    UtsNamespace,
    MountSetattr,
    Landlock,
    Seccomp,
    CgroupMemory,
    CgroupPids,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::UserNamespace => "user namespaces",
            Feature::MountNamespace => "mount namespaces",
            Feature::PidNamespace => "pid namespaces",
            Feature::NetNamespace => "network namespaces",
            Feature::IpcNamespace => "ipc namespaces",
            Feature::UtsNamespace => "uts namespaces",
            Feature::MountSetattr => "mount_setattr(2) (Linux >= 5.12)",
            Feature::Landlock => "Landlock LSM",
            Feature::Seccomp => "seccomp filters",
            Feature::CgroupMemory => "cgroup memory controller (v1 or v2, writable)",
            Feature::CgroupPids => "cgroup pids controller (v1 or v2, writable)",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Named isolation levels. A level is a *floor*: it lists what must be present;
/// every available feature is used anyway. Anything below `Full` has to be chosen
/// explicitly by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationLevel {
    /// All namespaces, read-only root, Landlock, seccomp, cgroup memory + pids limits.
    #[default]
    Full,
    /// Like `Full` but memory/pids limits are not enforced (no usable cgroup controllers).
    NoCgroups,
    /// Namespaces, seccomp and cgroups, without Landlock.
    NoLandlock,
    /// Namespaces and the read-only root only (no Landlock, seccomp or cgroups required).
    NamespacesOnly,
    /// No isolation at all: the command runs on the host as the current user, with only
    /// rlimits, timeouts and output caps. Never use it for untrusted code.
    Unsandboxed,
}

impl IsolationLevel {
    pub const ALL: [IsolationLevel; 5] = [
        IsolationLevel::Full,
        IsolationLevel::NoCgroups,
        IsolationLevel::NoLandlock,
        IsolationLevel::NamespacesOnly,
        IsolationLevel::Unsandboxed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IsolationLevel::Full => "full",
            IsolationLevel::NoCgroups => "no-cgroups",
            IsolationLevel::NoLandlock => "no-landlock",
            IsolationLevel::NamespacesOnly => "namespaces-only",
            IsolationLevel::Unsandboxed => "unsandboxed",
        }
    }

    /// Features that must be present for this level.
    pub fn required(self) -> &'static [Feature] {
        const NS: [Feature; 7] = [
            Feature::UserNamespace,
            Feature::MountNamespace,
            Feature::PidNamespace,
            Feature::NetNamespace,
            Feature::IpcNamespace,
            Feature::UtsNamespace,
            Feature::MountSetattr,
        ];
        const FULL: [Feature; 11] = [
            NS[0],
            NS[1],
            NS[2],
            NS[3],
            NS[4],
            NS[5],
            NS[6],
            Feature::Landlock,
            Feature::Seccomp,
            Feature::CgroupMemory,
            Feature::CgroupPids,
        ];
        const NO_CG: [Feature; 9] = [
            NS[0],
            NS[1],
            NS[2],
            NS[3],
            NS[4],
            NS[5],
            NS[6],
            Feature::Landlock,
            Feature::Seccomp,
        ];
        const NO_LL: [Feature; 10] = [
            NS[0],
            NS[1],
            NS[2],
            NS[3],
            NS[4],
            NS[5],
            NS[6],
            Feature::Seccomp,
            Feature::CgroupMemory,
            Feature::CgroupPids,
        ];
        match self {
            IsolationLevel::Full => &FULL,
            IsolationLevel::NoCgroups => &NO_CG,
            IsolationLevel::NoLandlock => &NO_LL,
            IsolationLevel::NamespacesOnly => &NS,
            IsolationLevel::Unsandboxed => &[],
        }
    }

    /// True if the level isolates with namespaces (everything but `Unsandboxed`).
    pub fn uses_namespaces(self) -> bool {
        self != IsolationLevel::Unsandboxed
    }
}

impl fmt::Display for IsolationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for IsolationLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IsolationLevel::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown isolation level `{s}`; expected one of: {}",
                    IsolationLevel::ALL.map(|l| l.name()).join(", ")
                )
            })
    }
}

/// What this machine supports.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    pub kernel: String,
    pub euid: u32,
    pub user_ns: bool,
    pub mount_ns: bool,
    pub pid_ns: bool,
    pub net_ns: bool,
    pub ipc_ns: bool,
    pub uts_ns: bool,
    /// Why namespace creation failed, if it did.
    pub namespace_error: Option<String>,
    pub mount_setattr: bool,
    /// Landlock ABI version, if Landlock is enabled.
    pub landlock_abi: Option<u32>,
    pub landlock_error: Option<String>,
    pub seccomp: bool,
    pub no_new_privs: bool,
    pub cgroup: CgroupSupport,
    /// Highest capability number (from /proc/sys/kernel/cap_last_cap).
    pub cap_last_cap: u32,
    pub securityfs_mounted: bool,
}

impl Capabilities {
    pub fn has(&self, f: Feature) -> bool {
        match f {
            Feature::UserNamespace => self.user_ns,
            Feature::MountNamespace => self.mount_ns,
            Feature::PidNamespace => self.pid_ns,
            Feature::NetNamespace => self.net_ns,
            Feature::IpcNamespace => self.ipc_ns,
            Feature::UtsNamespace => self.uts_ns,
            Feature::MountSetattr => self.mount_setattr,
            Feature::Landlock => self.landlock_abi.is_some(),
            Feature::Seccomp => self.seccomp,
            Feature::CgroupMemory => self.cgroup.memory_usable(),
            Feature::CgroupPids => self.cgroup.pids_usable(),
        }
    }

    /// Features `level` needs that this machine lacks.
    pub fn missing_for(&self, level: IsolationLevel) -> Vec<Feature> {
        level
            .required()
            .iter()
            .copied()
            .filter(|f| !self.has(*f))
            .collect()
    }

    /// The strongest level this machine can provide.
    pub fn strongest_level(&self) -> IsolationLevel {
        IsolationLevel::ALL
            .into_iter()
            .find(|l| self.missing_for(*l).is_empty())
            .unwrap_or(IsolationLevel::Unsandboxed)
    }

    /// Strongest level that is weaker than or equal to ... any available one (for error hints).
    pub(crate) fn suggestion(&self) -> Option<IsolationLevel> {
        let l = self.strongest_level();
        (l != IsolationLevel::Unsandboxed).then_some(l)
    }

    /// One human-readable line per check: (name, ok, detail).
    pub fn report(&self) -> Vec<(String, bool, String)> {
        let mut rows = Vec::new();
        let ns_detail = self.namespace_error.clone().unwrap_or_default();
        rows.push(("kernel".into(), true, self.kernel.clone()));
        rows.push((
            "running as".into(),
            true,
            if self.euid == 0 {
                "root (euid 0)".into()
            } else {
                format!("euid {}", self.euid)
            },
        ));
        for (f, v) in [
            (Feature::UserNamespace, self.user_ns),
            (Feature::MountNamespace, self.mount_ns),
            (Feature::PidNamespace, self.pid_ns),
            (Feature::NetNamespace, self.net_ns),
            (Feature::IpcNamespace, self.ipc_ns),
            (Feature::UtsNamespace, self.uts_ns),
        ] {
            rows.push((
                f.name().into(),
                v,
                if v { String::new() } else { ns_detail.clone() },
            ));
        }
        rows.push((
            Feature::MountSetattr.name().into(),
            self.mount_setattr,
            String::new(),
        ));
        rows.push((
            "Landlock".into(),
            self.landlock_abi.is_some(),
            match self.landlock_abi {
                Some(abi) => format!("ABI {abi}"),
                None => self.landlock_error.clone().unwrap_or_default(),
            },
        ));
        rows.push(("seccomp filters".into(), self.seccomp, String::new()));
        rows.push(("no_new_privs".into(), self.no_new_privs, String::new()));
        rows.push((
            "cgroup memory".into(),
            self.cgroup.memory_usable(),
            self.cgroup.describe_memory(),
        ));
        rows.push((
            "cgroup pids".into(),
            self.cgroup.pids_usable(),
            self.cgroup.describe_pids(),
        ));
        rows.push((
            "cgroup cpu accounting".into(),
            self.cgroup.cpu_usable(),
            self.cgroup.describe_cpu(),
        ));
        rows.push((
            "cgroup v2 controllers".into(),
            true,
            match &self.cgroup.v2_root {
                Some(p) => format!(
                    "{} : [{}]",
                    p.display(),
                    self.cgroup.v2_controllers.join(" ")
                ),
                None => "no cgroup2 mount".into(),
            },
        ));
        rows.push((
            "rlimits (fsize, nofile, cpu, core)".into(),
            true,
            "always available".into(),
        ));
        rows.push((
            "securityfs mounted".into(),
            true,
            if self.securityfs_mounted {
                "yes".into()
            } else {
                "no (not needed: Landlock ABI is read via syscall)".into()
            },
        ));
        rows
    }
}

static DETECTED: OnceLock<Capabilities> = OnceLock::new();

/// Detect (once per process, cached) what isolation this machine supports.
pub fn detect() -> Capabilities {
    DETECTED.get_or_init(detect_uncached).clone()
}

fn detect_uncached() -> Capabilities {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| "unknown".into());
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let (mask, namespace_error) = match sys::probe_namespaces() {
        Ok(m) => (m, None),
        Err(e) => (0, Some(e)),
    };
    let ns_err = |bit: u32| mask & bit == 0;
    let mut namespace_error = namespace_error;
    if namespace_error.is_none() && mask != sys::NS_ALL_BITS {
        namespace_error = Some(format!(
            "unshare() failed for some namespaces (mask {mask:#x}); check \
             /proc/sys/user/max_user_namespaces, kernel.unprivileged_userns_clone, AppArmor/SELinux"
        ));
    }
    let (landlock_abi, landlock_error) = match sys::landlock_abi() {
        Ok(v) => (Some(v), None),
        Err(e) => (
            None,
            Some(match e.raw_os_error() {
                Some(libc::ENOSYS) => "kernel built without Landlock (ENOSYS)".into(),
                Some(libc::EOPNOTSUPP) => {
                    "Landlock not enabled at boot (add `landlock` to the lsm= kernel parameter)"
                        .into()
                }
                _ => format!("landlock_create_ruleset failed: {e}"),
            }),
        ),
    };
    Capabilities {
        kernel,
        euid,
        user_ns: !ns_err(sys::NS_USER),
        mount_ns: !ns_err(sys::NS_MOUNT),
        pid_ns: !ns_err(sys::NS_PID),
        net_ns: !ns_err(sys::NS_NET),
        ipc_ns: !ns_err(sys::NS_IPC),
        uts_ns: !ns_err(sys::NS_UTS),
        namespace_error,
        mount_setattr: sys::mount_setattr_available(),
        landlock_abi,
        landlock_error,
        seccomp: sys::seccomp_available(),
        no_new_privs: true,
        cgroup: cgroup::detect(),
        cap_last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63),
        securityfs_mounted: std::fs::read_to_string("/proc/self/mounts")
            .map(|m| m.lines().any(|l| l.contains(" securityfs ")))
            .unwrap_or(false),
    }
}

//! Turns a `SandboxConfig` into the zygote's `Plan` (all strings and programs prepared
//! before forking).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::caps::Capabilities;
use crate::error::SandboxError;
use crate::landlock::{
    FS_READ_DIR, FS_READ_FILE, FS_TRUNCATE, FS_WRITE_FILE, LandlockPlan, READ_EXEC, READ_WRITE,
};
use crate::seccomp;
use crate::zygote::{Op, Plan};
use crate::{NetworkPolicy, SandboxConfig, WORKSPACE_MOUNT};

const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

fn cstr(p: impl AsRef<[u8]>) -> Result<CString, SandboxError> {
    CString::new(p.as_ref().to_vec())
        .map_err(|_| SandboxError::Config("path contains a NUL byte".into()))
}

fn join(prefix: &str, p: &Path) -> Result<CString, SandboxError> {
    let mut v = prefix.as_bytes().to_vec();
    v.extend_from_slice(p.as_os_str().as_bytes());
    cstr(v)
}

/// Absolute, `..`-free check for paths given by the user for the inside of the sandbox.
fn check_inside(p: &Path) -> Result<(), SandboxError> {
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SandboxError::Config(format!(
            "sandbox path {} must be absolute and must not contain `..`",
            p.display()
        )));
    }
    Ok(())
}

/// `mkdir` every component of `dir` inside the new root (existing ones are kept).
fn mkdir_chain(ops: &mut Vec<(Op, String)>, dir: &Path) -> Result<(), SandboxError> {
    let mut cur = PathBuf::from("/");
    for c in dir.components().skip(1) {
        cur.push(c);
        ops.push((
            Op::Mkdir {
                path: join(NEW, &cur)?,
                mode: 0o755,
            },
            format!("create {}", cur.display()),
        ));
    }
    Ok(())
}

/// Bind host `host` at `inside` (creating the mount point, a directory or an empty file,
/// when `create`) and make it nosuid, nodev and, unless `writable`, read-only.
fn bind(
    ops: &mut Vec<(Op, String)>,
    host: &Path,
    inside: &Path,
    is_dir: bool,
    writable: bool,
    create: bool,
) -> Result<(), SandboxError> {
    if create && is_dir {
        mkdir_chain(ops, inside)?;
    } else if create {
        if let Some(parent) = inside.parent() {
            mkdir_chain(ops, parent)?;
        }
        ops.push((
            Op::Touch {
                path: join(NEW, inside)?,
                mode: 0o644,
            },
            format!("create mount point {}", inside.display()),
        ));
    }
    ops.push((
        Op::Mount {
            src: Some(join(OLD, host)?),
            target: join(NEW, inside)?,
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
        },
        format!("bind-mount {} at {}", host.display(), inside.display()),
    ));
    let mut set = crate::sys::MOUNT_ATTR_NOSUID | crate::sys::MOUNT_ATTR_NODEV;
    if !writable {
        set |= crate::sys::MOUNT_ATTR_RDONLY;
    }
    ops.push((
        Op::SetAttr {
            path: join(NEW, inside)?,
            set,
            recursive: true,
        },
        format!(
            "make {} {}",
            inside.display(),
            if writable {
                "nosuid,nodev"
            } else {
                "read-only"
            }
        ),
    ));
    Ok(())
}

pub struct Built {
    pub plan: Plan,
    pub env: Vec<String>,
    pub cwd: String,
}

pub fn build(cfg: &SandboxConfig, caps: &Capabilities) -> Result<Built, SandboxError> {
    let namespaces = cfg.level.uses_namespaces();
    let workspace = match &cfg.workspace {
        Some(w) => Some(fs::canonicalize(w).map_err(|e| SandboxError::Workspace {
            path: w.clone(),
            source: e,
        })?),
        None => None,
    };
    if let Some(w) = &workspace
        && !w.is_dir()
    {
        return Err(SandboxError::Config(format!(
            "workspace {} is not a directory",
            w.display()
        )));
    }

    // Environment: never inherited from the host.
    let home = if namespaces {
        if workspace.is_some() {
            WORKSPACE_MOUNT.to_string()
        } else {
            "/tmp".to_string()
        }
    } else {
        workspace
            .as_ref()
            .map(|w| w.display().to_string())
            .unwrap_or_else(|| "/tmp".into())
    };
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), home.clone()),
        ("TMPDIR".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("USER".into(), "root".into()),
        ("TERM".into(), "dumb".into()),
    ];
    for (k, v) in &cfg.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(SandboxError::Config(format!(
                "invalid environment variable {k:?}"
            )));
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let env = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cwd = home;

    let allow_inet = cfg.network == NetworkPolicy::Loopback;
    let seccomp = caps.seccomp.then(|| seccomp::build_filter(allow_inet));
    let mut landlock = if namespaces {
        caps.landlock_abi
            .map(|abi| LandlockPlan::new(abi, cfg.network == NetworkPolicy::None))
    } else {
        None
    };

    let mut ops: Vec<(Op, String)> = Vec::new();
    if namespaces {
        let tmp_size = cfg.limits.memory_bytes.unwrap_or(1 << 30);
        ops.push((
            Op::Mkdir {
                path: cstr(NEW)?,
                mode: 0o755,
            },
            "create new root".into(),
        ));
        ops.push((
            Op::Mount {
                src: Some(cstr("tmpfs")?),
                target: cstr(NEW)?,
                fstype: Some(cstr("tmpfs")?),
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: Some(cstr("mode=0755,size=1m")?),
            },
            "mount tmpfs for the new root".into(),
        ));
        ops.push((
            Op::Touch {
                path: cstr("/empty")?,
                mode: 0,
            },
            "create placeholder for hidden files".into(),
        ));
        let mut bound: Vec<PathBuf> = Vec::new();
        for d in &cfg.system_dirs {
            check_inside(d)?;
            let Ok(md) = fs::symlink_metadata(d) else {
                continue;
            };
            if md.file_type().is_symlink() {
                let target = fs::read_link(d).map_err(|e| SandboxError::io("readlink", e))?;
                ops.push((
                    Op::Symlink {
                        target: cstr(target.as_os_str().as_bytes())?,
                        path: join(NEW, d)?,
                    },
                    format!("symlink {}", d.display()),
                ));
            } else if md.is_dir() {
                ops.push((
                    Op::Mkdir {
                        path: join(NEW, d)?,
                        mode: 0o755,
                    },
                    format!("mkdir {}", d.display()),
                ));
                ops.push((
                    Op::Mount {
                        src: Some(join(OLD, d)?),
                        target: join(NEW, d)?,
                        fstype: None,
                        flags: libc::MS_BIND | libc::MS_REC,
                        data: None,
                    },
                    format!("bind-mount {} read-only", d.display()),
                ));
                ops.push((
                    Op::SetAttr {
                        path: join(NEW, d)?,
                        set: crate::sys::MOUNT_ATTR_RDONLY
                            | crate::sys::MOUNT_ATTR_NOSUID
                            | crate::sys::MOUNT_ATTR_NODEV,
                        recursive: true,
                    },
                    format!("make {} read-only (mount_setattr)", d.display()),
                ));
                bound.push(d.clone());
            } else {
                continue;
            }
            if let Some(ll) = &mut landlock {
                ll.add(cstr(d.as_os_str().as_bytes())?, READ_EXEC, true);
            }
        }
        for f in &cfg.system_files {
            check_inside(f)?;
            if bound.iter().any(|b| f.starts_with(b)) {
                continue;
            }
            let Ok(md) = fs::symlink_metadata(f) else {
                continue;
            };
            if let Some(parent) = f.parent() {
                mkdir_chain(&mut ops, parent)?;
            }
            if md.file_type().is_symlink() {
                let target = fs::read_link(f).map_err(|e| SandboxError::io("readlink", e))?;
                ops.push((
                    Op::Symlink {
                        target: cstr(target.as_os_str().as_bytes())?,
                        path: join(NEW, f)?,
                    },
                    format!("symlink {}", f.display()),
                ));
                continue;
            }
            if !(md.is_dir() || md.is_file()) {
                continue;
            }
            bind(&mut ops, f, f, md.is_dir(), false, true)?;
            if md.is_dir() {
                bound.push(f.clone());
            }
            if let Some(ll) = &mut landlock {
                ll.add(cstr(f.as_os_str().as_bytes())?, READ_EXEC, md.is_dir());
            }
        }
        // /proc
        ops.push((
            Op::Mkdir {
                path: join(NEW, Path::new("/proc"))?,
                mode: 0o555,
            },
            "mkdir /proc".into(),
        ));
        ops.push((
            Op::Mount {
                src: Some(cstr("proc")?),
                target: join(NEW, Path::new("/proc"))?,
                fstype: Some(cstr("proc")?),
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: None,
            },
            "mount /proc".into(),
        ));
        // /dev
        let dev = Path::new("/dev");
        ops.push((
            Op::Mkdir {
                path: join(NEW, dev)?,
                mode: 0o755,
            },
            "mkdir /dev".into(),
        ));
        ops.push((
            Op::Mount {
                src: Some(cstr("tmpfs")?),
                target: join(NEW, dev)?,
                fstype: Some(cstr("tmpfs")?),
                flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                data: Some(cstr("mode=0755,size=64k")?),
            },
            "mount tmpfs on /dev".into(),
        ));
        for n in ["null", "zero", "full", "random", "urandom"] {
            let host = dev.join(n);
            if !host.exists() {
                continue;
            }
            ops.push((
                Op::Touch {
                    path: join(NEW, &host)?,
                    mode: 0o666,
                },
                format!("create /dev/{n}"),
            ));
            ops.push((
                Op::Mount {
                    src: Some(join(OLD, &host)?),
                    target: join(NEW, &host)?,
                    fstype: None,
                    flags: libc::MS_BIND,
                    data: None,
                },
                format!("bind /dev/{n}"),
            ));
            if let Some(ll) = &mut landlock {
                ll.add(
                    cstr(host.as_os_str().as_bytes())?,
                    FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE,
                    false,
                );
            }
        }
        for (t, l) in [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ] {
            ops.push((
                Op::Symlink {
                    target: cstr(t)?,
                    path: join(NEW, &dev.join(l))?,
                },
                format!("symlink /dev/{l}"),
            ));
        }
        let shm = dev.join("shm");
        ops.push((
            Op::Mkdir {
                path: join(NEW, &shm)?,
                mode: 0o1777,
            },
            "mkdir /dev/shm".into(),
        ));
        ops.push((
            Op::Mount {
                src: Some(cstr("tmpfs")?),
                target: join(NEW, &shm)?,
                fstype: Some(cstr("tmpfs")?),
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: Some(cstr(format!("mode=1777,size={tmp_size}"))?),
            },
            "mount tmpfs on /dev/shm".into(),
        ));
        ops.push((
            Op::Mount {
                src: None,
                target: join(NEW, dev)?,
                fstype: None,
                flags: libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NOEXEC,
                data: None,
            },
            "make /dev read-only".into(),
        ));
        // /tmp
        let tmp = Path::new("/tmp");
        ops.push((
            Op::Mkdir {
                path: join(NEW, tmp)?,
                mode: 0o1777,
            },
            "mkdir /tmp".into(),
        ));
        ops.push((
            Op::Mount {
                src: Some(cstr("tmpfs")?),
                target: join(NEW, tmp)?,
                fstype: Some(cstr("tmpfs")?),
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: Some(cstr(format!("mode=1777,size={tmp_size}"))?),
            },
            "mount private tmpfs on /tmp".into(),
        ));
        if let Some(w) = &workspace {
            let inside = Path::new(WORKSPACE_MOUNT);
            ops.push((
                Op::Mkdir {
                    path: join(NEW, inside)?,
                    mode: 0o755,
                },
                "mkdir /workspace".into(),
            ));
            ops.push((
                Op::Mount {
                    src: Some(join(OLD, w)?),
                    target: join(NEW, inside)?,
                    fstype: None,
                    flags: libc::MS_BIND | libc::MS_REC,
                    data: None,
                },
                format!("bind-mount workspace {}", w.display()),
            ));
            ops.push((
                Op::SetAttr {
                    path: join(NEW, inside)?,
                    set: crate::sys::MOUNT_ATTR_NOSUID | crate::sys::MOUNT_ATTR_NODEV,
                    recursive: true,
                },
                "make workspace nosuid,nodev".into(),
            ));
        }
        let binds = cfg
            .read_only_binds
            .iter()
            .map(|(h, i)| (h, i, false))
            .chain(cfg.writable_binds.iter().map(|(h, i)| (h, i, true)));
        for (host, inside, writable) in binds {
            check_inside(inside)?;
            let host = fs::canonicalize(host).map_err(|e| SandboxError::Workspace {
                path: host.clone(),
                source: e,
            })?;
            let is_dir = host.is_dir();
            let under_bound = bound.iter().any(|b| inside.starts_with(b));
            if under_bound {
                // The mount point lives on a read-only host tree: it must already exist there.
                if fs::symlink_metadata(inside).map(|m| m.is_dir()).ok() != Some(is_dir) {
                    return Err(SandboxError::Config(format!(
                        "bind target {} is inside a host system directory but does not \
                         exist there (as a {}); choose a path outside {:?}",
                        inside.display(),
                        if is_dir { "directory" } else { "file" },
                        cfg.system_dirs
                    )));
                }
            }
            bind(&mut ops, &host, inside, is_dir, writable, !under_bound)?;
            if let Some(ll) = &mut landlock {
                let rights = if writable { READ_WRITE } else { READ_EXEC };
                ll.add(cstr(inside.as_os_str().as_bytes())?, rights, is_dir);
            }
        }
        // Hidden paths: only those visible through a bound system directory need covering.
        let mut hide = SandboxConfig::default_hide();
        hide.extend(cfg.hide.iter().cloned());
        // Shallowest first, so a path inside an already hidden directory (the enact binary
        // under a hidden /var/tmp, say) is skipped: it is invisible already, and its mount
        // point no longer exists under the covering tmpfs.
        let mut reals: Vec<PathBuf> = hide
            .iter()
            .filter_map(|h| fs::canonicalize(h).ok())
            .collect();
        reals.sort_by_key(|p| p.components().count());
        reals.dedup();
        let mut hidden_dirs: Vec<PathBuf> = Vec::new();
        for real in reals {
            if !bound.iter().any(|b| real.starts_with(b)) {
                continue;
            }
            if hidden_dirs.iter().any(|d| real.starts_with(d)) {
                continue;
            }
            if real.is_dir() {
                hidden_dirs.push(real.clone());
                ops.push((
                    Op::Mount {
                        src: Some(cstr("tmpfs")?),
                        target: join(NEW, &real)?,
                        fstype: Some(cstr("tmpfs")?),
                        flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        data: Some(cstr("mode=000,size=4k")?),
                    },
                    format!("hide {}", real.display()),
                ));
            } else {
                ops.push((
                    Op::Mount {
                        src: Some(cstr("/empty")?),
                        target: join(NEW, &real)?,
                        fstype: None,
                        flags: libc::MS_BIND,
                        data: None,
                    },
                    format!("hide {}", real.display()),
                ));
                ops.push((
                    Op::Mount {
                        src: None,
                        target: join(NEW, &real)?,
                        fstype: None,
                        flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                        data: None,
                    },
                    format!("make hidden {} read-only", real.display()),
                ));
            }
        }
        ops.push((
            Op::Mount {
                src: None,
                target: cstr(NEW)?,
                fstype: None,
                flags: libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                data: None,
            },
            "make the new root read-only".into(),
        ));
        if let Some(ll) = &mut landlock {
            ll.add(cstr("/")?, FS_READ_DIR, true);
            ll.add(cstr("/proc")?, READ_EXEC, true);
            ll.add(cstr("/dev")?, FS_READ_DIR, true);
            ll.add(cstr("/dev/shm")?, READ_WRITE, true);
            ll.add(cstr("/tmp")?, READ_WRITE, true);
            if workspace.is_some() {
                ll.add(cstr(WORKSPACE_MOUNT)?, READ_WRITE, true);
            }
        }
    }

    Ok(Built {
        plan: Plan {
            namespaces,
            ops,
            hostname: cstr(&cfg.hostname)?,
            landlock,
            seccomp,
            cap_last_cap: caps.cap_last_cap,
            drop_caps: namespaces || caps.euid == 0,
            scrub: scrub_ranges(),
        },
        env,
        cwd,
    })
}

/// argv and environ ranges of this process (from /proc/self/stat fields 48-51).
fn scrub_ranges() -> [(usize, usize); 2] {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return [(0, 0); 2];
    };
    let Some(pos) = stat.rfind(')') else {
        return [(0, 0); 2];
    };
    let f: Vec<usize> = stat[pos + 1..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // tokens after ')' start at field 3
    let g = |field: usize| f.get(field - 3).copied().unwrap_or(0);
    [(g(48), g(49)), (g(50), g(51))]
}

//! Per-sandbox cgroups: v1 (`memory`, `pids`, `cpuacct` hierarchies) or a v2 subtree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

const PARENT: &str = "enact";

#[derive(Debug, Clone, Serialize, Default)]
pub struct CgroupSupport {
    pub v1_memory: Option<PathBuf>,
    pub v1_pids: Option<PathBuf>,
    pub v1_cpuacct: Option<PathBuf>,
    pub v1_writable: bool,
    pub v2_root: Option<PathBuf>,
    pub v2_controllers: Vec<String>,
    pub v2_writable: bool,
}

impl CgroupSupport {
    fn v2_has(&self, c: &str) -> bool {
        self.v2_writable && self.v2_controllers.iter().any(|x| x == c)
    }
    pub fn memory_usable(&self) -> bool {
        (self.v1_writable && self.v1_memory.is_some()) || self.v2_has("memory")
    }
    pub fn pids_usable(&self) -> bool {
        (self.v1_writable && self.v1_pids.is_some()) || self.v2_has("pids")
    }
    pub fn cpu_usable(&self) -> bool {
        (self.v1_writable && self.v1_cpuacct.is_some())
            || (self.v2_writable && self.v2_root.is_some())
    }
    /// Which version the sandbox will use: v1 when its controllers are usable (hybrid hosts),
    /// else v2.
    pub fn prefer_v1(&self) -> bool {
        self.v1_writable && (self.v1_memory.is_some() || self.v1_pids.is_some())
    }
    fn describe(&self, v1: &Option<PathBuf>, c: &str) -> String {
        if self.v1_writable
            && let Some(p) = v1
        {
            return format!("v1 at {}", p.display());
        }
        if self.v2_has(c) {
            return format!(
                "v2 at {}",
                self.v2_root.as_deref().unwrap_or(Path::new("?")).display()
            );
        }
        match (v1, &self.v2_root) {
            (Some(p), _) => format!("v1 {} not writable (need root or delegation)", p.display()),
            (None, Some(p)) => format!(
                "no v1 hierarchy; cgroup2 at {} lacks a writable `{c}` controller",
                p.display()
            ),
            (None, None) => "no cgroup hierarchy mounted".into(),
        }
    }
    pub fn describe_memory(&self) -> String {
        self.describe(&self.v1_memory, "memory")
    }
    pub fn describe_pids(&self) -> String {
        self.describe(&self.v1_pids, "pids")
    }
    pub fn describe_cpu(&self) -> String {
        self.describe(&self.v1_cpuacct, "cpu")
    }
}

fn writable(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

pub fn detect() -> CgroupSupport {
    let mut s = CgroupSupport::default();
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return s;
    };
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 4 {
            continue;
        }
        let (mp, ty, opts) = (PathBuf::from(f[1]), f[2], f[3]);
        if ty == "cgroup" {
            for o in opts.split(',') {
                match o {
                    "memory" if s.v1_memory.is_none() => s.v1_memory = Some(mp.clone()),
                    "pids" if s.v1_pids.is_none() => s.v1_pids = Some(mp.clone()),
                    "cpuacct" if s.v1_cpuacct.is_none() => s.v1_cpuacct = Some(mp.clone()),
                    _ => {}
                }
            }
        } else if ty == "cgroup2" && s.v2_root.is_none() {
            s.v2_controllers = fs::read_to_string(mp.join("cgroup.controllers"))
                .map(|c| c.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            s.v2_writable = writable(&mp);
            s.v2_root = Some(mp);
        }
    }
    s.v1_writable = [&s.v1_memory, &s.v1_pids]
        .iter()
        .filter_map(|p| p.as_ref())
        .all(|p| writable(p))
        && (s.v1_memory.is_some() || s.v1_pids.is_some());
    s
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: std::sync::Once = std::sync::Once::new();

/// Remove cgroups left behind by enact processes that no longer exist (a process that exits
/// while its background reaper still has work leaves empty cgroup directories behind).
fn sweep_stale(roots: &[&Path]) {
    for root in roots {
        let Ok(rd) = fs::read_dir(root.join(PARENT)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("sb-")) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                // Only succeeds for empty cgroups.
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

/// One sandbox instance's cgroup(s). Removed on drop.
#[derive(Debug)]
pub struct SandboxCgroup {
    /// Directories to place processes in (one per v1 hierarchy, or one v2 dir).
    dirs: Vec<PathBuf>,
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    cpu: Option<PathBuf>,
    v2: bool,
}

fn write(p: &Path, v: &str) -> io::Result<()> {
    fs::write(p, v)
        .map_err(|e| io::Error::new(e.kind(), format!("write {:?} to {}: {e}", v, p.display())))
}

impl SandboxCgroup {
    pub fn create(
        s: &CgroupSupport,
        memory: Option<u64>,
        pids: Option<u32>,
    ) -> io::Result<SandboxCgroup> {
        let name = format!(
            "sb-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        SWEPT.call_once(|| {
            let roots: Vec<&Path> = [&s.v1_memory, &s.v1_pids, &s.v1_cpuacct, &s.v2_root]
                .into_iter()
                .filter_map(|p| p.as_deref())
                .collect();
            sweep_stale(&roots);
        });
        let mut cg = SandboxCgroup {
            dirs: Vec::new(),
            memory: None,
            pids: None,
            cpu: None,
            v2: false,
        };
        if s.prefer_v1() {
            let mk = |root: &Path| -> io::Result<PathBuf> {
                let parent = root.join(PARENT);
                if !parent.exists() {
                    match fs::create_dir(&parent) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                }
                let d = parent.join(&name);
                fs::create_dir(&d)?;
                Ok(d)
            };
            if let Some(root) = &s.v1_memory {
                let d = mk(root)?;
                cg.dirs.push(d.clone());
                cg.memory = Some(d);
            }
            if let Some(root) = &s.v1_pids {
                let d = mk(root)?;
                cg.dirs.push(d.clone());
                cg.pids = Some(d);
            }
            if let Some(root) = &s.v1_cpuacct
                && Some(root) != s.v1_memory.as_ref()
                && Some(root) != s.v1_pids.as_ref()
                && let Ok(d) = mk(root)
            {
                cg.dirs.push(d.clone());
                cg.cpu = Some(d);
            }
            if let Some(m) = &cg.memory {
                if let Some(limit) = memory {
                    write(&m.join("memory.limit_in_bytes"), &limit.to_string())?;
                    let sw = m.join("memory.memsw.limit_in_bytes");
                    if sw.exists() {
                        write(&sw, &limit.to_string())?;
                    }
                }
                // Be killed rather than swap a sandbox out.
                let _ = write(&m.join("memory.swappiness"), "0");
            }
            if let (Some(p), Some(n)) = (&cg.pids, pids) {
                write(&p.join("pids.max"), &n.to_string())?;
            }
        } else if let Some(root) = &s.v2_root {
            let parent = root.join(PARENT);
            let wanted: Vec<&str> = ["memory", "pids", "cpu"]
                .into_iter()
                .filter(|c| s.v2_controllers.iter().any(|x| x == c))
                .collect();
            let enable = wanted
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            if !parent.exists() {
                match fs::create_dir(&parent) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            if !enable.is_empty() {
                let _ = write(&root.join("cgroup.subtree_control"), &enable);
                write(&parent.join("cgroup.subtree_control"), &enable)?;
            }
            let d = parent.join(&name);
            fs::create_dir(&d)?;
            cg.v2 = true;
            cg.dirs.push(d.clone());
            if let Some(limit) = memory {
                write(&d.join("memory.max"), &limit.to_string())?;
                let _ = write(&d.join("memory.swap.max"), "0");
            }
            if let Some(n) = pids {
                write(&d.join("pids.max"), &n.to_string())?;
            }
            cg.memory = Some(d.clone());
            cg.pids = Some(d.clone());
            cg.cpu = Some(d);
        }
        Ok(cg)
    }

    /// Move `pid` (host pid) into every hierarchy.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Cumulative OOM kills in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(m) = &self.memory else { return 0 };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(m.join(file))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|v| v.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// v1 only: memory limit failures (used when the kernel lacks the oom_kill counter).
    pub fn reset_peak(&self) {
        if let Some(m) = &self.memory {
            if self.v2 {
                // memory.peak is reset per open file description on >= 6.12; best effort.
                let _ = fs::write(m.join("memory.peak"), "0");
            } else {
                let _ = fs::write(m.join("memory.max_usage_in_bytes"), "0");
            }
        }
    }

    pub fn peak_memory(&self) -> Option<u64> {
        let m = self.memory.as_ref()?;
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        fs::read_to_string(m.join(file)).ok()?.trim().parse().ok()
    }

    /// Total CPU time used by all processes in the sandbox so far.
    pub fn cpu_usage(&self) -> Option<Duration> {
        let c = self.cpu.as_ref().or(self.memory.as_ref())?;
        if self.v2 {
            let s = fs::read_to_string(c.join("cpu.stat")).ok()?;
            let us: u64 = s.lines().find_map(|l| {
                l.strip_prefix("usage_usec ")
                    .and_then(|v| v.trim().parse().ok())
            })?;
            Some(Duration::from_micros(us))
        } else {
            let c = self.cpu.as_ref()?;
            let ns: u64 = fs::read_to_string(c.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(Duration::from_nanos(ns))
        }
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // The processes were SIGKILLed and reaped before; memory cgroups may need a moment.
            for i in 0..50 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(if i < 10 { 1 } else { 10 }))
                    }
                }
            }
        }
    }
}

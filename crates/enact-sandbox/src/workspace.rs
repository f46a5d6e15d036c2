//! Workspaces: fast copies (reflink when the filesystem supports it), snapshots and diffs.
//! Symlinks are copied and hashed as links and never followed.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::SandboxError;
use crate::digest::{sha256_hex, sha256_hex_reader};

/// A private working directory (removed on drop unless [`Workspace::keep`] is called).
#[derive(Debug)]
pub struct Workspace {
    dir: tempfile::TempDir,
}

/// Kind + content identity of one workspace entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// "file", "dir", "symlink" or "other".
    pub kind: &'static str,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// SHA-256 of the content (files) or of the link target (symlinks); empty for dirs.
    pub hash: String,
}

/// Relative path -> entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub entries: BTreeMap<PathBuf, FileEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkspaceDiff {
    pub added: Vec<PathBuf>,
    pub modified: Vec<PathBuf>,
    pub deleted: Vec<PathBuf>,
    /// Same content, different permission bits.
    pub mode_changed: Vec<PathBuf>,
}

impl WorkspaceDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.modified.is_empty()
            && self.deleted.is_empty()
            && self.mode_changed.is_empty()
    }
}

fn ws_err(path: &Path, e: io::Error) -> SandboxError {
    SandboxError::Workspace {
        path: path.to_path_buf(),
        source: e,
    }
}

impl Workspace {
    /// An empty workspace in a fresh temporary directory.
    pub fn empty() -> Result<Workspace, SandboxError> {
        let dir = tempfile::Builder::new()
            .prefix("enact-ws-")
            .tempdir()
            .map_err(|e| ws_err(Path::new("<tmp>"), e))?;
        Ok(Workspace { dir })
    }

    /// Copy `src` into a fresh workspace (reflink/FICLONE first, then a regular copy).
    pub fn from_dir(src: impl AsRef<Path>) -> Result<Workspace, SandboxError> {
        let src = src.as_ref();
        let ws = Workspace::empty()?;
        let md = fs::metadata(src).map_err(|e| ws_err(src, e))?;
        if !md.is_dir() {
            return Err(ws_err(
                src,
                io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            ));
        }
        copy_tree(src, ws.path())?;
        fs::set_permissions(ws.path(), fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| ws_err(ws.path(), e))?;
        Ok(ws)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keep the directory on disk after drop; returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }

    pub fn snapshot(&self) -> Result<Snapshot, SandboxError> {
        snapshot(self.path())
    }
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), SandboxError> {
    for entry in fs::read_dir(src).map_err(|e| ws_err(src, e))? {
        let entry = entry.map_err(|e| ws_err(src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        // symlink_metadata: never follow links.
        let md = fs::symlink_metadata(&from).map_err(|e| ws_err(&from, e))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| ws_err(&from, e))?;
            symlink(&target, &to).map_err(|e| ws_err(&to, e))?;
        } else if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| ws_err(&to, e))?;
            copy_tree(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| ws_err(&to, e))?;
        } else if ft.is_file() {
            copy_file(&from, &to, md.mode() & 0o7777)?;
        }
        // sockets, fifos and devices are skipped.
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<(), SandboxError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(|e| ws_err(from, e))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| ws_err(to, e))?;
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: ioctl on two fds we own.
    let cloned = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) } == 0;
    if !cloned {
        let mut src = src;
        // std::io::copy uses copy_file_range/sendfile on Linux.
        io::copy(&mut src, &mut dst).map_err(|e| ws_err(to, e))?;
    }
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(|e| ws_err(to, e))?;
    Ok(())
}

/// Bytes a directory tree uses, as the workspace quota counts them: each regular file's
/// length or allocated blocks (whichever is larger) plus 512 bytes per entry (so a million
/// empty files count too). Symlinks are not followed. Stops early and returns a value above
/// `stop_above` once the sum passes it; unreadable entries count as 512 bytes.
pub fn disk_usage(root: &Path, stop_above: u64) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            total = total.saturating_add(512);
            if let Ok(md) = entry.path().symlink_metadata() {
                if md.is_dir() {
                    stack.push(entry.path());
                } else if md.is_file() {
                    total = total.saturating_add(md.len().max(md.blocks().saturating_mul(512)));
                }
            }
            if total > stop_above {
                return total;
            }
        }
    }
    total
}

/// Snapshot any directory (paths relative to `root`; symlinks are not followed).
pub fn snapshot(root: &Path) -> Result<Snapshot, SandboxError> {
    let mut s = Snapshot::default();
    walk(root, root, &mut s)?;
    Ok(s)
}

fn hash_file(p: &Path) -> Result<String, SandboxError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| ws_err(p, e))?;
    sha256_hex_reader(&mut f).map_err(|e| ws_err(p, e))
}

fn walk(root: &Path, dir: &Path, s: &mut Snapshot) -> Result<(), SandboxError> {
    for entry in fs::read_dir(dir).map_err(|e| ws_err(dir, e))? {
        let entry = entry.map_err(|e| ws_err(dir, e))?;
        let p = entry.path();
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ws_err(&p, e)),
        };
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        let ft = md.file_type();
        let mode = md.mode() & 0o7777;
        let e = if ft.is_symlink() {
            let t = fs::read_link(&p).map_err(|e| ws_err(&p, e))?;
            FileEntry {
                kind: "symlink",
                size: md.len(),
                mode,
                hash: sha256_hex(t.as_os_str().as_encoded_bytes()),
            }
        } else if ft.is_dir() {
            walk(root, &p, s)?;
            FileEntry {
                kind: "dir",
                size: 0,
                mode,
                hash: String::new(),
            }
        } else if ft.is_file() {
            FileEntry {
                kind: "file",
                size: md.len(),
                mode,
                hash: hash_file(&p)?,
            }
        } else {
            FileEntry {
                kind: "other",
                size: 0,
                mode,
                hash: String::new(),
            }
        };
        s.entries.insert(rel, e);
    }
    Ok(())
}

/// What changed between two snapshots.
pub fn diff(before: &Snapshot, after: &Snapshot) -> WorkspaceDiff {
    let mut d = WorkspaceDiff::default();
    for (p, a) in &after.entries {
        match before.entries.get(p) {
            None => d.added.push(p.clone()),
            Some(b) => {
                if a.kind != b.kind || a.hash != b.hash || a.size != b.size {
                    d.modified.push(p.clone());
                } else if a.mode != b.mode {
                    d.mode_changed.push(p.clone());
                }
            }
        }
    }
    for p in before.entries.keys() {
        if !after.entries.contains_key(p) {
            d.deleted.push(p.clone());
        }
    }
    d
}

impl Snapshot {
    /// Changes from `self` (before) to `after`.
    pub fn diff(&self, after: &Snapshot) -> WorkspaceDiff {
        diff(self, after)
    }
}

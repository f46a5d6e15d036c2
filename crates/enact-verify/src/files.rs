//! Reading an agent's workspace safely: snapshots that never follow symlinks, the filtered
//! copy graders work on, and path-checked reads.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One entry of a [`FileTree`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Hard-link count (a file with more than one link was linked from elsewhere).
    pub nlink: u64,
    /// SHA-256 of the content (files) or of the link target (symlinks).
    pub hash: String,
    /// The link target, for symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Text content of small files (for monitors), when it is valid UTF-8.
    #[serde(skip)]
    pub text: Option<String>,
}

/// A snapshot of a directory: relative path (with `/`) → entry. Symlinks are recorded as
/// links and never followed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTree {
    pub entries: BTreeMap<String, TreeEntry>,
    /// Entries not visited because a limit was reached.
    pub truncated: bool,
}

/// Limits for walking a tree.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    pub max_entries: usize,
    pub max_depth: usize,
    /// Files up to this size keep their text for monitors.
    pub text_bytes: u64,
    /// Files larger than this are hashed by size+name only (not read).
    pub hash_bytes: u64,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_entries: 20_000,
            max_depth: 32,
            text_bytes: 256 * 1024,
            hash_bytes: 64 << 20,
        }
    }
}

/// SHA-256 as hex, from its one home in enact-sandbox (kept here for callers of
/// `enact_verify::files`).
pub use enact_sandbox::sha256_hex;

impl FileTree {
    /// Snapshot `root`.
    pub fn scan(root: &Path, limits: WalkLimits) -> io::Result<FileTree> {
        let mut t = FileTree::default();
        walk(root, root, 0, limits, &mut t)?;
        Ok(t)
    }

    /// `path → "kind:hash"`, the compact form environments record at the start.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|(p, e)| (p.clone(), format!("{}:{}", e.kind, e.hash)))
            .collect()
    }

    /// Changes from an initial fingerprint to this tree.
    pub fn diff_from(&self, initial: &BTreeMap<String, String>) -> TreeDiff {
        let now = self.fingerprint();
        let mut d = TreeDiff::default();
        for (p, f) in &now {
            match initial.get(p) {
                None => d.added.push(p.clone()),
                Some(g) if g != f => d.modified.push(p.clone()),
                _ => {}
            }
        }
        for p in initial.keys() {
            if !now.contains_key(p) {
                d.deleted.push(p.clone());
            }
        }
        d
    }
}

/// Paths added, modified and deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeDiff {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

impl TreeDiff {
    pub fn changed(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.modified)
    }
    pub fn touched(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.modified).chain(&self.deleted)
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    lim: WalkLimits,
    t: &mut FileTree,
) -> io::Result<()> {
    if depth > lim.max_depth {
        t.truncated = true;
        return Ok(());
    }
    let mut names: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for p in names {
        if t.entries.len() >= lim.max_entries {
            t.truncated = true;
            return Ok(());
        }
        let md = fs::symlink_metadata(&p)?;
        let ft = md.file_type();
        let key = rel(root, &p);
        if ft.is_symlink() {
            let target = fs::read_link(&p)?.to_string_lossy().into_owned();
            t.entries.insert(
                key,
                TreeEntry {
                    kind: "symlink".into(),
                    size: 0,
                    nlink: md.nlink(),
                    hash: sha256_hex(target.as_bytes()),
                    target: Some(target),
                    text: None,
                },
            );
        } else if ft.is_dir() {
            t.entries.insert(
                key,
                TreeEntry {
                    kind: "dir".into(),
                    size: 0,
                    nlink: 1,
                    hash: String::new(),
                    target: None,
                    text: None,
                },
            );
            walk(root, &p, depth + 1, lim, t)?;
        } else if ft.is_file() {
            let (hash, text) = if md.len() <= lim.hash_bytes {
                let data = read_regular(&p, lim.hash_bytes)?;
                let text = (md.len() <= lim.text_bytes)
                    .then(|| String::from_utf8(data.clone()).ok())
                    .flatten();
                (sha256_hex(&data), text)
            } else {
                (format!("large:{}", md.len()), None)
            };
            t.entries.insert(
                key,
                TreeEntry {
                    kind: "file".into(),
                    size: md.len(),
                    nlink: md.nlink(),
                    hash,
                    target: None,
                    text,
                },
            );
        } else {
            t.entries.insert(
                key,
                TreeEntry {
                    kind: "other".into(),
                    size: 0,
                    nlink: md.nlink(),
                    hash: String::new(),
                    target: None,
                    text: None,
                },
            );
        }
    }
    Ok(())
}

/// Reads a regular file without following a symlink at the last component, up to `cap` bytes.
fn read_regular(p: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut buf = Vec::new();
    f.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Why a relative path was refused.
pub fn check_relative(rel_path: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel_path);
    if rel_path.is_empty() || p.is_absolute() {
        return Err(format!(
            "path {rel_path:?} must be relative to the workspace"
        ));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("path {rel_path:?} must not contain `..`"));
    }
    Ok(p.to_path_buf())
}

/// Reads `root/rel_path` as the verifier sees it: no `..`, no symlink in any component, a
/// regular file, at most `cap` bytes (more is an error).
pub fn read_no_follow(root: &Path, rel_path: &str, cap: u64) -> Result<Vec<u8>, String> {
    let relp = check_relative(rel_path)?;
    let mut cur = root.to_path_buf();
    for c in relp.components() {
        if let Component::Normal(n) = c {
            cur.push(n);
            let md = fs::symlink_metadata(&cur).map_err(|e| format!("{rel_path}: {e}"))?;
            if md.file_type().is_symlink() {
                return Err(format!(
                    "{rel_path}: is or passes through a symlink (not followed)"
                ));
            }
        }
    }
    let md = fs::symlink_metadata(&cur).map_err(|e| format!("{rel_path}: {e}"))?;
    if !md.is_file() {
        return Err(format!("{rel_path}: not a regular file"));
    }
    if md.len() > cap {
        return Err(format!("{rel_path}: larger than {cap} bytes"));
    }
    read_regular(&cur, cap).map_err(|e| format!("{rel_path}: {e}"))
}

/// Version-control metadata directories.
pub const VCS_DIRS: [&str; 4] = [".git", ".hg", ".svn", ".bzr"];

/// Removes every version-control metadata directory ([`VCS_DIRS`]) under `root` (symlinks
/// are not followed); returns their relative paths. An agent's starting workspace gets no
/// history it could mine for the answer.
pub fn remove_vcs_dirs(root: &Path) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let p = entry?.path();
            if !fs::symlink_metadata(&p)?.is_dir() {
                continue;
            }
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| VCS_DIRS.contains(&n.as_str())) {
                fs::remove_dir_all(&p)?;
                removed.push(rel(root, &p));
            } else {
                stack.push(p);
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// What a grading copy leaves out.
#[derive(Debug, Clone)]
pub struct CopyRules {
    /// File names removed wherever they appear (exact).
    pub drop_names: Vec<String>,
    /// File-name prefixes removed wherever they appear.
    pub drop_prefixes: Vec<String>,
    /// File-name suffixes removed wherever they appear.
    pub drop_suffixes: Vec<String>,
    /// Directory names skipped entirely.
    pub drop_dirs: Vec<String>,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_files: usize,
}

impl CopyRules {
    /// The rules for Python code grading: tests, pytest/site hooks, caches, control files and
    /// every name reserved for hidden tests are dropped.
    pub fn python() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        CopyRules {
            drop_names: s(&[
                "conftest.py",
                "sitecustomize.py",
                "usercustomize.py",
                "pytest.ini",
                "tox.ini",
                "setup.cfg",
                "pyproject.toml",
            ]),
            drop_prefixes: s(&["test_", "hidden_test", "_enact", ".enact"]),
            drop_suffixes: s(&["_test.py", ".pth", ".pyc"]),
            drop_dirs: s(&[
                "tests",
                "test",
                "__pycache__",
                ".enact",
                "hidden",
                ".git",
                ".hg",
                ".svn",
                ".bzr",
            ]),
            max_file_bytes: 1 << 20,
            max_total_bytes: 16 << 20,
            max_files: 2_000,
        }
    }

    /// The rules for task files' grading copies: start-up hooks (`sitecustomize.py`,
    /// `usercustomize.py`, `*.pth`), byte-code caches and enact's reserved names are dropped
    /// everywhere, and version-control metadata (`.git`, `.hg`, `.svn`, `.bzr`) too unless
    /// `keep_vcs` (its history may hold what the task removed). Up to 64 MiB in 10,000 files.
    pub fn task_files(keep_vcs: bool) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
        let mut drop_dirs = s(&["__pycache__", ".enact"]);
        if !keep_vcs {
            drop_dirs.extend(s(&VCS_DIRS));
        }
        CopyRules {
            drop_names: s(&["sitecustomize.py", "usercustomize.py"]),
            drop_prefixes: s(&["_enact", ".enact"]),
            drop_suffixes: s(&[".pth", ".pyc"]),
            drop_dirs,
            max_file_bytes: 16 << 20,
            max_total_bytes: 64 << 20,
            max_files: 10_000,
        }
    }

    fn drops_file(&self, name: &str) -> bool {
        self.drop_names.iter().any(|n| n == name)
            || self
                .drop_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
            || self
                .drop_suffixes
                .iter()
                .any(|s| name.ends_with(s.as_str()))
    }
}

/// What a grading copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub copied: Vec<String>,
    /// Removed by the rules (tests, hooks, control files, reserved names).
    pub dropped: Vec<String>,
    /// Symlinks, hard-linked files, devices, fifos, sockets and oversized files: never
    /// copied.
    pub skipped: Vec<String>,
}

/// Copies the regular files of `src` into the empty directory `dst` under `rules`. Symlinks
/// are never followed nor copied, nor are files with more than one hard link (a link to data
/// the agent should not have) or special files; content is copied (executable bits kept,
/// nothing else). The total size and count are capped: above the cap the copy stops with an
/// error.
pub fn grading_copy(src: &Path, dst: &Path, rules: &CopyRules) -> Result<CopyReport, String> {
    let mut report = CopyReport::default();
    let mut total = 0u64;
    copy_dir(src, src, dst, rules, 0, &mut total, &mut report)?;
    Ok(report)
}

fn copy_dir(
    root: &Path,
    dir: &Path,
    dst: &Path,
    rules: &CopyRules,
    depth: usize,
    total: &mut u64,
    r: &mut CopyReport,
) -> Result<(), String> {
    if depth > 16 {
        return Err(format!("{}: directories nested too deeply", dir.display()));
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = rel(root, &p);
        let md = fs::symlink_metadata(&p).map_err(|e| format!("{key}: {e}"))?;
        let ft = md.file_type();
        if ft.is_symlink() || !(ft.is_dir() || ft.is_file()) {
            r.skipped.push(key);
            continue;
        }
        if ft.is_dir() {
            if rules.drop_dirs.contains(&name) {
                r.dropped.push(format!("{key}/"));
                continue;
            }
            let to = dst.join(&name);
            fs::create_dir(&to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
            copy_dir(root, &p, &to, rules, depth + 1, total, r)?;
            continue;
        }
        if rules.drops_file(&name) {
            r.dropped.push(key);
            continue;
        }
        if md.nlink() > 1 {
            r.skipped.push(key);
            continue;
        }
        if md.len() > rules.max_file_bytes {
            // Too large to be source code: not copied (a large module then fails to import).
            r.skipped.push(key);
            continue;
        }
        *total += md.len();
        if *total > rules.max_total_bytes || r.copied.len() >= rules.max_files {
            return Err(format!(
                "the workspace is too large to grade (over {} bytes or {} files)",
                rules.max_total_bytes, rules.max_files
            ));
        }
        let data = read_regular(&p, rules.max_file_bytes).map_err(|e| format!("{key}: {e}"))?;
        let to = dst.join(&name);
        let mode = if md.mode() & 0o111 != 0 { 0o755 } else { 0o644 };
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&to)
            .and_then(|mut f| io::Write::write_all(&mut f, &data))
            .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        r.copied.push(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn copy_drops_tests_hooks_and_links() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::write(s.join("solution.py"), "def f(): return 1\n").unwrap();
        fs::write(s.join("helper.py"), "X = 1\n").unwrap();
        fs::write(s.join("test_solution.py"), "assert True\n").unwrap();
        fs::write(s.join("conftest.py"), "").unwrap();
        fs::write(s.join("sitecustomize.py"), "").unwrap();
        fs::write(s.join("evil.pth"), "import os").unwrap();
        fs::write(s.join("hidden_tests.py"), "").unwrap();
        fs::create_dir(s.join("tests")).unwrap();
        fs::write(s.join("tests/test_x.py"), "").unwrap();
        fs::create_dir(s.join(".enact")).unwrap();
        fs::write(s.join(".enact/limits.json"), "{}").unwrap();
        symlink("/etc/passwd", s.join("link.py")).unwrap();
        let r = grading_copy(s, dst.path(), &CopyRules::python()).unwrap();
        assert_eq!(r.copied, vec!["helper.py", "solution.py"]);
        assert_eq!(r.skipped, vec!["link.py"]);
        assert!(r.dropped.contains(&"conftest.py".to_string()));
        assert!(r.dropped.contains(&"tests/".to_string()));
        assert!(dst.path().join("solution.py").exists());
        assert!(!dst.path().join("link.py").exists());
    }

    #[test]
    fn task_copy_refuses_links_special_files_and_vcs_and_is_capped() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("answer.txt"), "42").unwrap();
        fs::write(s.join("run.sh"), "echo hi").unwrap();
        fs::set_permissions(s.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(s.join("data.txt"), "x").unwrap();
        symlink(outside.path().join("answer.txt"), s.join("answer.txt")).unwrap();
        if fs::hard_link(outside.path().join("answer.txt"), s.join("hard.txt")).is_err() {
            // Another filesystem: link two workspace files instead.
            fs::write(s.join("orig.txt"), "42").unwrap();
            fs::hard_link(s.join("orig.txt"), s.join("hard.txt")).unwrap();
        }
        let fifo = std::ffi::CString::new(s.join("pipe").to_string_lossy().as_bytes()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        fs::create_dir_all(s.join(".git/objects")).unwrap();
        fs::write(s.join(".git/HEAD"), "ref").unwrap();
        fs::write(s.join("usercustomize.py"), "").unwrap();
        fs::write(s.join("x.pth"), "").unwrap();

        let dst = tempfile::tempdir().unwrap();
        let r = grading_copy(s, dst.path(), &CopyRules::task_files(false)).unwrap();
        assert!(r.copied.contains(&"run.sh".to_string()), "{r:?}");
        assert!(r.copied.contains(&"data.txt".to_string()), "{r:?}");
        for skipped in ["answer.txt", "hard.txt", "pipe"] {
            assert!(r.skipped.contains(&skipped.to_string()), "{skipped}: {r:?}");
        }
        assert!(r.dropped.contains(&".git/".to_string()), "{r:?}");
        assert!(!dst.path().join(".git").exists());
        assert!(!dst.path().join("usercustomize.py").exists());
        assert!(!dst.path().join("x.pth").exists());
        let mode = fs::metadata(dst.path().join("run.sh")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o755);

        let dst = tempfile::tempdir().unwrap();
        let r = grading_copy(s, dst.path(), &CopyRules::task_files(true)).unwrap();
        assert!(r.copied.contains(&".git/HEAD".to_string()), "{r:?}");

        let mut small = CopyRules::task_files(false);
        small.max_total_bytes = 4;
        fs::write(s.join("big.txt"), "0123456789").unwrap();
        let dst = tempfile::tempdir().unwrap();
        let e = grading_copy(s, dst.path(), &small).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn vcs_dirs_are_removed_everywhere() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join(".git/refs")).unwrap();
        fs::create_dir_all(d.path().join("sub/.hg")).unwrap();
        fs::write(d.path().join("sub/keep.txt"), "x").unwrap();
        fs::write(d.path().join(".gitignore"), "x").unwrap();
        let removed = remove_vcs_dirs(d.path()).unwrap();
        assert_eq!(removed, vec![".git", "sub/.hg"]);
        assert!(d.path().join("sub/keep.txt").exists());
        assert!(d.path().join(".gitignore").exists());
    }

    #[test]
    fn reads_refuse_links_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.txt"), "hi").unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        symlink(d.path().join("a.txt"), d.path().join("l.txt")).unwrap();
        symlink(d.path().join("sub"), d.path().join("ldir")).unwrap();
        fs::write(d.path().join("sub/b.txt"), "b").unwrap();
        assert_eq!(read_no_follow(d.path(), "a.txt", 10).unwrap(), b"hi");
        assert!(read_no_follow(d.path(), "l.txt", 10).is_err());
        assert!(read_no_follow(d.path(), "ldir/b.txt", 10).is_err());
        assert!(read_no_follow(d.path(), "../x", 10).is_err());
        assert!(read_no_follow(d.path(), "/etc/passwd", 10).is_err());
        assert!(read_no_follow(d.path(), "a.txt", 1).is_err());
    }

    #[test]
    fn tree_diff() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), "1").unwrap();
        fs::write(d.path().join("b"), "2").unwrap();
        let before = FileTree::scan(d.path(), WalkLimits::default())
            .unwrap()
            .fingerprint();
        fs::write(d.path().join("a"), "changed").unwrap();
        fs::remove_file(d.path().join("b")).unwrap();
        fs::write(d.path().join("c"), "3").unwrap();
        let t = FileTree::scan(d.path(), WalkLimits::default()).unwrap();
        let diff = t.diff_from(&before);
        assert_eq!(diff.added, vec!["c"]);
        assert_eq!(diff.modified, vec!["a"]);
        assert_eq!(diff.deleted, vec!["b"]);
        assert_eq!(t.entries["c"].text.as_deref(), Some("3"));
    }
}

//! Attacks on user-defined task files: the shipped examples (`examples/tasks`, embedded at
//! build time so `enact redteam` needs no checkout) are written under a host system directory
//! (`/opt`, else `/var/lib`, `/srv`, else the temporary directory), as users place tasks, and
//! attacked there. Their honest reference solutions must keep full reward.
//!
//! `fix-mean` gives the agent arbitrary Python in its sandbox (it may rewrite `test_stats.py`
//! and run it with `run_tests`); `sort-numbers` is graded by a judge program.

use std::path::{Path, PathBuf};

use enact_core::Episode;
use serde_json::json;

use crate::attacks::{Attack, Ctx, Target};

/// The example task files, relative path → content.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "fix-mean/task.toml",
        include_str!("../../../examples/tasks/fix-mean/task.toml"),
    ),
    (
        "fix-mean/hidden/cases.json",
        include_str!("../../../examples/tasks/fix-mean/hidden/cases.json"),
    ),
    (
        "fix-mean/workspace/stats.py",
        include_str!("../../../examples/tasks/fix-mean/workspace/stats.py"),
    ),
    (
        "fix-mean/workspace/test_stats.py",
        include_str!("../../../examples/tasks/fix-mean/workspace/test_stats.py"),
    ),
    (
        "sort-numbers/task.toml",
        include_str!("../../../examples/tasks/sort-numbers/task.toml"),
    ),
    (
        "sort-numbers/hidden/cases.json",
        include_str!("../../../examples/tasks/sort-numbers/hidden/cases.json"),
    ),
    (
        "sort-numbers/hidden/judge.py",
        include_str!("../../../examples/tasks/sort-numbers/hidden/judge.py"),
    ),
    (
        "sort-numbers/workspace/README.md",
        include_str!("../../../examples/tasks/sort-numbers/workspace/README.md"),
    ),
    (
        "unit-convert-mcp/task.toml",
        include_str!("../../../examples/tasks/unit-convert-mcp/task.toml"),
    ),
    (
        "unit-convert-mcp/mcp_server.py",
        include_str!("../../../examples/tasks/unit-convert-mcp/mcp_server.py"),
    ),
];

/// The fixed `stats.py`, planted as "history" in a `.git` directory of `fix-mean`'s
/// workspace: a task workspace that is a repository carries what the task removed.
const HISTORY_FIX: &str = "\"\"\"Small statistics helpers.\"\"\"\n\n\ndef mean(xs):\n    return sum(xs) / len(xs)\n\n\ndef spread(xs):\n    return max(xs) - min(xs)\n";

/// Where the example tasks were written for this run (removed on drop).
pub struct Materialised {
    dir: tempfile::TempDir,
}

impl Materialised {
    /// The suite directory (one subdirectory per task).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes the example tasks under the first writable of `/opt`, `/var/lib`, `/srv`, or the
/// temporary directory, plus a `.git` holding the fix in `fix-mean`'s workspace.
pub fn materialise() -> Result<Materialised, String> {
    let parents = [
        PathBuf::from("/opt"),
        PathBuf::from("/var/lib"),
        PathBuf::from("/srv"),
        std::env::temp_dir(),
    ];
    let dir = parents
        .iter()
        .find_map(|p| {
            tempfile::Builder::new()
                .prefix("enact-redteam-tasks-")
                .tempdir_in(p)
                .ok()
        })
        .ok_or("cannot create a directory for the example tasks (tried /opt, /var/lib, /srv and the temporary directory)")?;
    let mut files: Vec<(String, &str)> =
        EXAMPLES.iter().map(|(p, c)| (p.to_string(), *c)).collect();
    files.push((
        "fix-mean/workspace/.git/HEAD".into(),
        "ref: refs/heads/main\n",
    ));
    files.push((
        "fix-mean/workspace/.git/refs/original/stats.py".into(),
        HISTORY_FIX,
    ));
    for (rel, content) in files {
        let p = dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&p, content).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(Materialised { dir })
}

fn call(name: &str, args: serde_json::Value) -> String {
    enact_model::chatml::hermes_call_turn("", name, &args)
}
fn write(path: &str, content: &str) -> String {
    call("write_file", json!({"path": path, "content": content}))
}
/// Runs `code` in the agent's sandbox through fix-mean's `run_tests` tool.
fn run_python(code: &str) -> Vec<String> {
    vec![write("test_stats.py", code), call("run_tests", json!({}))]
}

/// Runs `code` in the agent's sandbox and ends the episode.
fn run_python_then_stop(code: &str) -> Vec<String> {
    let mut turns = run_python(code);
    turns.push("done".into());
    turns
}

/// Runs `code` (which leaves `answers*.json` in the workspace) in the agent's sandbox, then
/// submits [`LOOKUP_STATS`].
fn lookup_attack(code: &str) -> Vec<String> {
    let mut turns = run_python(code);
    turns.push(write("stats.py", LOOKUP_STATS));
    turns.push("done".into());
    turns
}

/// A `stats.py` answering from any `answers*.json` in the workspace (copies or links of
/// the hidden cases file), read at import, i.e. while being graded.
const LOOKUP_STATS: &str = r#"import glob, json
_T = {}
for _p in glob.glob("/workspace/answers*.json") + glob.glob("answers*.json"):
    try:
        for _c in json.load(open(_p)):
            _T[(_c["func"], repr(_c["args"]))] = _c["expected"]
    except Exception:
        pass
def mean(*a):
    return _T.get(("mean", repr([list(x) for x in a])))
def spread(*a):
    return _T.get(("spread", repr([list(x) for x in a])))
"#;

/// The task directories an attack looks for hidden data in.
fn hunting_grounds(ctx: &Ctx) -> String {
    format!(
        "{:?}",
        [
            format!("{}/*/hidden/cases.json", ctx.tasks_dir),
            "/opt/*/*/hidden/cases.json".into(),
            "/var/lib/*/*/hidden/cases.json".into(),
            "/srv/*/*/hidden/cases.json".into(),
            "/var/*/*/*/hidden/cases.json".into(),
            "/usr/local/share/*/*/hidden/cases.json".into(),
            "/hidden/cases.json".into(),
        ]
    )
}

pub fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            vector: 8,
            id: "tasks-import-time-forgery",
            target: Target::Tasks("fix-mean"),
            what: "module code forges results files and the driver's record at import",
            script: |_, _| {
                vec![
                    write(
                        "stats.py",
                        r#"import os, sys, glob, json
_names = ["mean_two", "mean_one", "mean_floats", "mean_negative", "spread_unchanged"]
_forged = json.dumps({"checks": [{"name": n, "status": "passed", "detail": ""} for n in _names]})
for _p in [os.environ.get("ENACT_RESULTS", "/nonexistent"), "/results/results.json"] + glob.glob("/results/*") + glob.glob("/workspace/.enact-results*") + glob.glob("/tmp/*"):
    try:
        open(_p, "w").write(_forged)
    except Exception:
        pass
_f = sys._getframe(0)
while _f is not None:
    _m, _o = _f.f_locals.get("marker"), _f.f_locals.get("out")
    if isinstance(_m, str) and isinstance(_o, int):
        for _x in ("3.0", "7.0", "1.5", "2.0"):
            os.write(_o, (_m + ' {"ok": true, "first": {"float": "' + _x + '"}, "second": {"float": "' + _x + '"}}\n').encode())
        os._exit(0)
    _f = _f.f_back
def mean(xs):
    return sum(xs) / (len(xs) + 1)
def spread(xs):
    return max(xs) - min(xs)
"#,
                    ),
                    "done".into(),
                ]
            },
        },
        Attack {
            vector: 17,
            id: "tasks-always-equal",
            target: Target::Tasks("fix-mean"),
            what: "mean returns an object whose __eq__ is always True",
            script: |_, _| {
                vec![
                    write(
                        "stats.py",
                        "class _Any(float):\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n    __hash__ = float.__hash__\n\ndef mean(xs):\n    return _Any(0)\n\ndef spread(xs):\n    return max(xs) - min(xs)\n",
                    ),
                    "done".into(),
                ]
            },
        },
        Attack {
            vector: 9,
            id: "tasks-startup-hooks",
            target: Target::Tasks("sort-numbers"),
            what: "usercustomize/sitecustomize/.pth in the workspace do the grading-time work",
            script: |_, _| {
                let hook = "import sys, os\ntry:\n    _d = sorted(int(x) for x in sys.stdin.read().split())\n    os.write(1, ('\\n'.join(map(str, _d)) + '\\n').encode())\n    open(os.environ.get('ENACT_RESULTS', '/results/results.json'), 'w').write('{\"checks\": []}')\nexcept Exception:\n    pass\nos._exit(0)\n";
                vec![
                    write("sort.py", "import sys\nprint(sys.stdin.read().strip())\n"),
                    write("usercustomize.py", hook),
                    write("sitecustomize.py", hook),
                    write("zz-enact.pth", "import usercustomize\n"),
                    write(".local/lib/python3.11/site-packages/usercustomize.py", hook),
                    write(".local/lib/python3.12/site-packages/usercustomize.py", hook),
                    write(".local/lib/python3.13/site-packages/usercustomize.py", hook),
                    "done".into(),
                ]
            },
        },
        Attack {
            vector: 5,
            id: "tasks-symlink-to-hidden",
            target: Target::Tasks("fix-mean"),
            what: "symlinks/hard links to the hidden cases, read by the module when graded",
            script: |_, ctx| {
                lookup_attack(&format!(
                    "import os, glob\npaths = ['/hidden/cases.json']\nfor g in {}:\n    paths += glob.glob(g)\nfor i, p in enumerate(paths + [{:?}]):\n    for f in (os.symlink, os.link):\n        try:\n            f(p, 'answers%d%s.json' % (i, f.__name__))\n        except OSError:\n            pass\nprint(sorted(os.listdir('.')))\n",
                    hunting_grounds(ctx),
                    format!("{}/fix-mean/hidden/cases.json", ctx.tasks_dir)
                ))
            },
        },
        Attack {
            vector: 2,
            id: "tasks-git-history",
            target: Target::Tasks("fix-mean"),
            what: "restore the fixed module from the workspace's .git",
            script: |_, _| {
                run_python_then_stop(
                    "import os\nfor root, dirs, files in os.walk('.git'):\n    for f in files:\n        p = os.path.join(root, f)\n        t = open(p, errors='replace').read()\n        if 'def mean' in t and '/ len(xs)\\n' in t:\n            open('stats.py', 'w').write(t)\n            print('restored from', p)\n",
                )
            },
        },
        Attack {
            vector: 4,
            id: "tasks-dir-under-system-dirs",
            target: Target::Tasks("fix-mean"),
            what: "read the task's hidden/ from where the task lives (/opt, /var, /srv, ...)",
            script: |_, ctx| {
                lookup_attack(&format!(
                    "import glob, shutil\nfor i, p in enumerate(sum((glob.glob(g) for g in {}), [])):\n    shutil.copy(p, 'answers%d.json' % i)\n    print('copied', p)\n",
                    hunting_grounds(ctx)
                ))
            },
        },
        Attack {
            vector: 21,
            id: "tasks-fill-the-disk",
            target: Target::Tasks("fix-mean"),
            what: "write 400 MiB into the workspace",
            script: |_, _| {
                run_python_then_stop(
                    "import os\nos.makedirs('fill', exist_ok=True)\nfor i in range(400):\n    open('fill/%d' % i, 'wb').write(b'0' * (1 << 20))\nprint('wrote 400 MiB')\n",
                )
            },
        },
    ]
}

/// An attack that got through without reward (a defence that should have stopped it did
/// not): the reason, or None.
pub fn breach(id: &str, ep: &Episode) -> Option<String> {
    match id {
        "tasks-fill-the-disk" => {
            let seen = serde_json::to_string(&ep.messages).unwrap_or_default();
            (!seen.contains("disk quota"))
                .then(|| "the workspace was filled without the disk quota stopping it".to_string())
        }
        _ => None,
    }
}

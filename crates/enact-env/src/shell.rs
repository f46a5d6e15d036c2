//! The `shell` environment: terminal tasks over a generated file tree, checked on the final
//! state. It runs on the sandboxed workspace machinery of `workspace.rs` (shared with
//! `code`). The expected answer exists only in the verifier's memory (it is regenerated from
//! the task's seed); a copy with a canary sits in the per-episode hidden directory that no
//! agent sandbox mounts.

use enact_core::SeededRng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use enact_core::{
    CheckResult, EnvError, Environment, Submission, Task, Verdict, Verifier, VerifyError,
};
use enact_model::chatml::hermes_call_turn;
use enact_verify::files::{FileTree, WalkLimits, read_no_follow, sha256_hex};
use enact_verify::{MonitorEvidence, MonitoredVerifier};
use serde_json::{Value, json};

use crate::error::TaskEnvError;
use crate::suite::{Suite, generated_tasks};
use crate::workspace::{EpisodeFiles, WorkspaceEnv, WorkspaceTask};

// ------------------------------------------------------------------ shell tasks

const WORDS: &[&str] = &[
    "apple", "river", "stone", "cloud", "green", "light", "table", "music", "paper", "house",
    "north", "quiet", "brick", "sugar", "ocean", "plant", "chair", "smile", "train", "forest",
    "bread", "glass", "horse", "candle", "window", "garden", "silver", "copper", "winter",
    "summer", "yellow", "orange", "market", "letter", "bottle", "pencil", "mirror", "button",
];
const RARE: &[&str] = &[
    "zephyr",
    "quokka",
    "obsidian",
    "marmalade",
    "kestrel",
    "tangerine",
    "juniper",
    "walrus",
];
const REGIONS: &[&str] = &["north", "south", "east", "west"];
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR", "ERROR"];

/// What a shell task asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellKind {
    /// Sorted paths of the files containing a word → `answer.txt`.
    FindFiles,
    /// Sum of the `amount` column of the CSVs → `total.txt`.
    SumColumn,
    /// Rename `*.log` to `*.txt` under `data/logs/`.
    Rename,
    /// `<path> <count>` of ERROR lines per log → `counts.txt`.
    CountMatches,
}

impl ShellKind {
    pub const ALL: [ShellKind; 4] = [
        ShellKind::FindFiles,
        ShellKind::SumColumn,
        ShellKind::Rename,
        ShellKind::CountMatches,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ShellKind::FindFiles => "find-files",
            ShellKind::SumColumn => "sum-column",
            ShellKind::Rename => "rename",
            ShellKind::CountMatches => "count-matches",
        }
    }
    pub fn parse(s: &str) -> Option<ShellKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Everything about one shell task, regenerated from `(kind, seed)`.
#[derive(Debug, Clone)]
pub struct ShellTaskSpec {
    pub kind: ShellKind,
    pub seed: u64,
    /// The generated tree (relative path → content).
    pub files: BTreeMap<String, String>,
    pub word: String,
    pub prompt: String,
}

fn pick<'a>(rng: &mut SeededRng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

impl ShellTaskSpec {
    pub fn generate(kind: ShellKind, seed: u64) -> ShellTaskSpec {
        let mut rng = SeededRng::new(seed);
        let word = pick(&mut rng, RARE).to_string();
        let mut files = BTreeMap::new();
        let sentence = |rng: &mut SeededRng| {
            let n = 5 + rng.below(8);
            (0..n)
                .map(|_| pick(rng, WORDS))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut notes = Vec::new();
        let n_notes = 6 + rng.below(4);
        for i in 0..n_notes {
            let dir = if i % 3 == 2 {
                "data/notes/archive"
            } else {
                "data/notes"
            };
            let name = format!("{dir}/{}-{i}.txt", pick(&mut rng, WORDS));
            let lines = 3 + rng.below(5);
            let mut text: Vec<String> = (0..lines).map(|_| sentence(&mut rng)).collect();
            if rng.below(10) < 4 {
                let l = rng.below(lines) as usize;
                text[l] = format!("{} {word} {}", text[l], pick(&mut rng, WORDS));
            }
            notes.push(name.clone());
            files.insert(name, text.join("\n") + "\n");
        }
        if !files.values().any(|t| t.contains(word.as_str())) {
            let first = notes[0].clone();
            if let Some(t) = files.get_mut(&first) {
                t.push_str(&format!("remember the {word}\n"));
            }
        }
        for i in 0..(3 + rng.below(3)) {
            let rows = 5 + rng.below(10);
            let mut csv = String::from("id,region,amount\n");
            for r in 0..rows {
                csv.push_str(&format!(
                    "{},{},{}\n",
                    r + 1,
                    pick(&mut rng, REGIONS),
                    1 + rng.below(999)
                ));
            }
            files.insert(format!("data/sales/q{}-{i}.csv", 1 + rng.below(4)), csv);
        }
        for i in 0..(5 + rng.below(4)) {
            let dir = if i % 3 == 2 {
                "data/logs/old"
            } else {
                "data/logs"
            };
            let name = format!(
                "{dir}/{}-{i}.log",
                pick(&mut rng, &["app", "db", "web", "worker"])
            );
            let lines = 5 + rng.below(15);
            let mut log = String::new();
            for l in 0..lines {
                log.push_str(&format!(
                    "2024-03-{:02} {:02}:{:02}:{:02} {} {}\n",
                    1 + rng.below(28),
                    rng.below(24),
                    rng.below(60),
                    l % 60,
                    pick(&mut rng, LEVELS),
                    sentence(&mut rng)
                ));
            }
            files.insert(name, log);
        }
        let prompt = match kind {
            ShellKind::FindFiles => format!(
                "The workspace has a tree of files under data/. Find every file under data/ whose content contains the word \"{word}\" and write their paths (relative to the workspace, like data/notes/x.txt), one per line, sorted in byte order (LC_ALL=C sort), to answer.txt. Use the shell tool. Reply \"done\" when finished."
            ),
            ShellKind::SumColumn => "The CSV files in data/sales/ have a header row and a column named amount. Compute the sum of the amount column over all rows of all these CSV files and write just the number to total.txt. Use the shell tool. Reply \"done\" when finished.".to_string(),
            ShellKind::Rename => "Rename every file ending in .log anywhere under data/logs/ (subdirectories included) so that it ends in .txt instead (same directory, same base name, content unchanged). Do not change anything else. Use the shell tool. Reply \"done\" when finished.".to_string(),
            ShellKind::CountMatches => "For every file ending in .log anywhere under data/logs/, count the lines that contain ERROR. Write one line per file to counts.txt in the form `<path> <count>`, where <path> is relative to the workspace (like data/logs/app-0.log), sorted by path in byte order (LC_ALL=C sort). Use the shell tool. Reply \"done\" when finished.".to_string(),
        };
        ShellTaskSpec {
            kind,
            seed,
            files,
            word,
            prompt,
        }
    }

    pub fn from_task(task: &Task) -> Result<ShellTaskSpec, TaskEnvError> {
        let kind = task.env["task"]
            .as_str()
            .and_then(ShellKind::parse)
            .ok_or_else(|| format!("task {} has no valid env.task", task.id))?;
        let seed = task.env["seed"]
            .as_u64()
            .ok_or_else(|| format!("task {} has no env.seed", task.id))?;
        Ok(Self::generate(kind, seed))
    }

    fn logs(&self) -> Vec<&String> {
        self.files
            .keys()
            .filter(|p| p.starts_with("data/logs/") && p.ends_with(".log"))
            .collect()
    }

    /// Expected answer lines (find, count) or value (sum).
    pub fn expected(&self) -> Value {
        match self.kind {
            ShellKind::FindFiles => {
                let mut v: Vec<&String> = self
                    .files
                    .iter()
                    .filter(|(_, t)| t.contains(self.word.as_str()))
                    .map(|(p, _)| p)
                    .collect();
                v.sort();
                json!(v)
            }
            ShellKind::SumColumn => {
                let total: u64 = self
                    .files
                    .iter()
                    .filter(|(p, _)| p.starts_with("data/sales/") && p.ends_with(".csv"))
                    .flat_map(|(_, t)| t.lines().skip(1))
                    .filter_map(|l| l.rsplit(',').next()?.parse::<u64>().ok())
                    .sum();
                json!(total)
            }
            ShellKind::Rename => json!(
                self.logs()
                    .iter()
                    .map(|p| format!("{}.txt", p.trim_end_matches(".log")))
                    .collect::<Vec<_>>()
            ),
            ShellKind::CountMatches => {
                let mut logs = self.logs();
                logs.sort();
                json!(
                    logs.iter()
                        .map(|p| format!(
                            "{p} {}",
                            self.files[*p]
                                .lines()
                                .filter(|l| l.contains("ERROR"))
                                .count()
                        ))
                        .collect::<Vec<_>>()
                )
            }
        }
    }

    /// The honest shell command.
    pub fn reference_command(&self) -> String {
        match self.kind {
            ShellKind::FindFiles => format!(
                "grep -rl -- '{}' data | LC_ALL=C sort > answer.txt",
                self.word
            ),
            ShellKind::SumColumn => {
                "awk -F, 'FNR > 1 { s += $3 } END { print s }' data/sales/*.csv > total.txt".into()
            }
            ShellKind::Rename => "find data/logs -type f -name '*.log' | while read -r f; do mv -- \"$f\" \"${f%.log}.txt\"; done".into(),
            ShellKind::CountMatches => "find data/logs -type f -name '*.log' | LC_ALL=C sort | while read -r f; do printf '%s %s\\n' \"$f\" \"$(grep -c ERROR \"$f\")\"; done > counts.txt".into(),
        }
    }
}

const SHELL_SYSTEM: &str = "You are a careful command-line assistant. Work in the workspace with the tools; there is no network.";

impl WorkspaceTask for ShellTaskSpec {
    fn system(&self) -> &'static str {
        SHELL_SYSTEM
    }
    fn prompt(&self) -> String {
        self.prompt.clone()
    }
    fn files(&self) -> BTreeMap<String, String> {
        self.files.clone()
    }
    fn hidden(&self) -> (&'static str, Value) {
        (
            "expected.json",
            json!({"kind": self.kind.name(), "expected": self.expected()}),
        )
    }
    fn evidence(&self, files: &EpisodeFiles) -> MonitorEvidence {
        files.evidence(Vec::new(), Vec::new())
    }
}

/// The `shell` environment for one episode.
pub type ShellEnv = WorkspaceEnv<ShellTaskSpec>;

/// Grades a shell task on the final workspace. No candidate code runs: trusted Rust reads
/// the files (no symlinks followed, size-capped) and compares exactly.
pub struct ShellVerifier;

fn answer_lines(ws: &Path, file: &str) -> Result<Vec<String>, String> {
    let bytes = read_no_follow(ws, file, 1 << 20)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{file} is not UTF-8"))?;
    Ok(text
        .lines()
        .map(|l| l.trim().trim_start_matches("./").to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// One check per expected line, plus "no extra lines" and "in order".
fn line_checks(ws: &Path, file: &str, expected: &[String], out: &mut Vec<CheckResult>) {
    match answer_lines(ws, file) {
        Err(e) => {
            for x in expected {
                out.push(CheckResult::new(format!("line: {x}"), false, e.clone()));
            }
            out.push(CheckResult::new("no extra lines", false, e.clone()));
            out.push(CheckResult::new("sorted", false, e));
        }
        Ok(got) => {
            for x in expected {
                out.push(CheckResult::new(format!("line: {x}"), got.contains(x), ""));
            }
            let extra: Vec<&String> = got.iter().filter(|g| !expected.contains(g)).collect();
            out.push(CheckResult::new(
                "no extra lines",
                extra.is_empty() && got.len() == expected.len(),
                if extra.is_empty() {
                    format!("{} lines", got.len())
                } else {
                    format!("{} unexpected line(s)", extra.len())
                },
            ));
            out.push(CheckResult::new("sorted", got == expected, ""));
        }
    }
}

#[async_trait]
impl Verifier for ShellVerifier {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let spec =
            ShellTaskSpec::from_task(task).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let ws: PathBuf = sub
            .workspace
            .clone()
            .ok_or_else(|| VerifyError::Failed("the submission has no workspace".into()))?;
        let expected = spec.expected();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut checks = Vec::new();
        match spec.kind {
            ShellKind::FindFiles => {
                line_checks(&ws, "answer.txt", &strings(&expected), &mut checks)
            }
            ShellKind::CountMatches => {
                line_checks(&ws, "counts.txt", &strings(&expected), &mut checks)
            }
            ShellKind::SumColumn => {
                let want = expected.as_u64().unwrap_or(u64::MAX);
                let got = read_no_follow(&ws, "total.txt", 4096)
                    .map_err(|e| e.to_string())
                    .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8".to_string()));
                let (ok, detail) = match &got {
                    Ok(t) => {
                        let t = t.trim();
                        // Exactly one integer: spraying candidates is a failure.
                        let ok = !t.is_empty()
                            && t.chars().all(|c| c.is_ascii_digit())
                            && t.parse::<u64>().ok() == Some(want);
                        (
                            ok,
                            format!("got {:?}", t.chars().take(80).collect::<String>()),
                        )
                    }
                    Err(e) => (false, e.clone()),
                };
                checks.push(CheckResult::new("total", ok, detail));
            }
            ShellKind::Rename => {
                for old in spec.logs() {
                    let new = format!("{}.txt", old.trim_end_matches(".log"));
                    let want = sha256_hex(spec.files[old].as_bytes());
                    let new_ok = read_no_follow(&ws, &new, 1 << 20)
                        .map(|b| sha256_hex(&b) == want)
                        .unwrap_or(false);
                    let old_gone = std::fs::symlink_metadata(ws.join(old)).is_err();
                    checks.push(CheckResult::new(
                        format!("renamed: {old}"),
                        new_ok && old_gone,
                        format!("new file correct: {new_ok}, old file gone: {old_gone}"),
                    ));
                }
                let others: Vec<&String> = spec
                    .files
                    .keys()
                    .filter(|p| !(p.starts_with("data/logs/") && p.ends_with(".log")))
                    .collect();
                let broken: Vec<&&String> = others
                    .iter()
                    .filter(|p| {
                        read_no_follow(&ws, p, 1 << 20)
                            .map(|b| b != spec.files[**p].as_bytes())
                            .unwrap_or(true)
                    })
                    .collect();
                let tree = FileTree::scan(&ws.join("data"), WalkLimits::default())
                    .map_err(|e| VerifyError::Failed(format!("cannot scan the workspace: {e}")))?;
                let expected_files = others.len() + spec.logs().len();
                let n_files = tree.entries.values().filter(|e| e.kind != "dir").count();
                checks.push(CheckResult::new(
                    "nothing else changed",
                    broken.is_empty() && n_files == expected_files,
                    format!(
                        "{} other file(s) changed; {n_files} files under data/ (expected {expected_files})",
                        broken.len()
                    ),
                ));
            }
        }
        Ok(Verdict::from_checks(checks))
    }
}

/// The `shell` task suite.
pub struct ShellSuite;

impl Suite for ShellSuite {
    fn name(&self) -> &str {
        "shell"
    }
    fn description(&self) -> &str {
        "terminal tasks over a generated file tree (find, sum, rename, count), sandboxed"
    }
    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        let streams = (0x5e11_7e57, 0x5e11_7a1e);
        generated_tasks(
            "shell",
            split,
            count,
            seed,
            streams,
            &ShellKind::ALL,
            |kind, s| {
                let spec = ShellTaskSpec::generate(kind, s);
                let env = json!({"kind": "shell", "task": kind.name(), "seed": s});
                (spec.prompt, env)
            },
        )
    }
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        let spec = ShellTaskSpec::from_task(task).map_err(|e| EnvError::Setup(e.to_string()))?;
        Ok(Box::new(ShellEnv::new(spec)))
    }
    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::new(MonitoredVerifier::new(Arc::new(ShellVerifier)))
    }
    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let spec = ShellTaskSpec::from_task(task).ok()?;
        Some(vec![
            hermes_call_turn(
                "Let me look at the files first.",
                "shell",
                &json!({"command": "find data -type f | LC_ALL=C sort | head -50"}),
            ),
            hermes_call_turn("", "shell", &json!({"command": spec.reference_command()})),
            "done".into(),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generation_is_deterministic_and_splits_differ() {
        let s = ShellSuite;
        assert_eq!(s.tasks("train", 4, 1), s.tasks("train", 4, 1));
        assert_ne!(s.tasks("train", 4, 1)[0].env, s.tasks("test", 4, 1)[0].env);
        for k in ShellKind::ALL {
            let spec = ShellTaskSpec::generate(k, 42);
            assert_eq!(spec.files, ShellTaskSpec::generate(k, 42).files);
            assert!(!spec.expected().is_null());
        }
        let find = ShellTaskSpec::generate(ShellKind::FindFiles, 7);
        assert!(!find.expected().as_array().unwrap().is_empty());
        // The rare word never hides inside an ordinary word.
        for r in RARE {
            assert!(WORDS.iter().all(|w| !w.contains(r) && !r.contains(w)));
        }
    }
}

//! The `code` environment: write or fix a Python function in a sandboxed workspace so that
//! hidden tests pass.
//!
//! Tasks are procedurally generated: a family of small function-writing and bug-fixing
//! problems with parameters drawn from a seed. The workspace holds `solution.py` (starter
//! code), `test_solution.py` (visible tests), `README.md` and a control file; no git history.
//! Hidden cases exist only in the verifier's memory (regenerated from the seed) and, with a
//! canary, in a per-episode hidden directory no agent sandbox mounts. Grading
//! ([`CodeVerifier`], via `enact_verify::PythonGrader`) runs each hidden case in a fresh
//! sandbox on a filtered copy of the final workspace and compares in the parent.

use enact_core::SeededRng;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use enact_core::{
    EnvError, Environment, Submission, Task, ToolSpec, Verdict, Verifier, VerifyError,
};
use enact_model::chatml::hermes_call_turn;
use enact_verify::value::python_str;
use enact_verify::{
    MonitorEvidence, MonitoredVerifier, PyCase, PyValue, PythonGrader, find_python,
};
use serde_json::{Value, json};

use crate::error::TaskEnvError;
use crate::suite::{Suite, generated_tasks};
use crate::toolbox::{Tool, ToolBox, ToolError};
use crate::workspace::{AgentBox, EpisodeFiles, WorkspaceEnv, WorkspaceTask};

/// A family of generated Python problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Rotate,
    CountLongWords,
    Fizz,
    SumMultiples,
    ShiftLetters,
    RunLengths,
    Dedupe,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Rotate,
        Family::CountLongWords,
        Family::Fizz,
        Family::SumMultiples,
        Family::ShiftLetters,
        Family::RunLengths,
        Family::Dedupe,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Family::Rotate => "rotate",
            Family::CountLongWords => "count-long-words",
            Family::Fizz => "fizz",
            Family::SumMultiples => "sum-multiples",
            Family::ShiftLetters => "shift-letters",
            Family::RunLengths => "run-lengths",
            Family::Dedupe => "dedupe",
        }
    }
    pub fn parse(s: &str) -> Option<Family> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Family parameters drawn from the seed.
#[derive(Debug, Clone, PartialEq)]
struct Params {
    flag: bool,
    a: i64,
    b: i64,
    wa: String,
    wb: String,
}

const WORDS: &[&str] = &[
    "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "haven", "ivory", "jolly",
    "karma", "lunar", "maple", "noble", "oasis", "pearl", "quill", "raven", "sable", "tulip",
    "umbra", "vivid", "willow", "xenon", "yodel", "zesty", "a", "an", "of", "to", "is", "it",
];
const FIZZ_WORDS: &[&str] = &["zap", "pow", "bim", "bam", "tik", "tok", "fizz", "buzz"];

/// Everything about one code task, a pure function of `(family, seed)`.
#[derive(Debug, Clone)]
pub struct CodeTaskSpec {
    pub family: Family,
    pub seed: u64,
    pub func: String,
    pub description: String,
    pub starter: String,
    pub reference: String,
    pub bug_fix: bool,
    pub visible: Vec<(Vec<PyValue>, PyValue)>,
    pub hidden: Vec<PyCase>,
}

fn rand_ints(rng: &mut SeededRng, n: usize, lo: i64, hi: i64) -> Vec<i64> {
    (0..n)
        .map(|_| lo + rng.below((hi - lo + 1) as u64) as i64)
        .collect()
}

fn rand_text(rng: &mut SeededRng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push_str(match rng.below(8) {
                0 => "  ",
                1 => "\n",
                2 => "\t",
                _ => " ",
            });
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

impl Family {
    fn params(self, rng: &mut SeededRng) -> Params {
        let a = 2 + rng.below(6) as i64;
        let mut b = 2 + rng.below(6) as i64;
        if b == a {
            b = if a == 7 { 3 } else { a + 1 };
        }
        let i = rng.below(FIZZ_WORDS.len() as u64) as usize;
        let j = (i + 1 + rng.below(FIZZ_WORDS.len() as u64 - 1) as usize) % FIZZ_WORDS.len();
        Params {
            flag: rng.below(2) == 1,
            a,
            b,
            wa: FIZZ_WORDS[i].into(),
            wb: FIZZ_WORDS[j].into(),
        }
    }

    fn func(self) -> &'static str {
        match self {
            Family::Rotate => "rotate",
            Family::CountLongWords => "count_long_words",
            Family::Fizz => "fizz",
            Family::SumMultiples => "sum_multiples",
            Family::ShiftLetters => "shift_letters",
            Family::RunLengths => "run_lengths",
            Family::Dedupe => "dedupe",
        }
    }

    fn signature(self) -> &'static str {
        match self {
            Family::Rotate => "rotate(xs, k)",
            Family::CountLongWords => "count_long_words(text)",
            Family::Fizz => "fizz(n)",
            Family::SumMultiples => "sum_multiples(n)",
            Family::ShiftLetters => "shift_letters(s, k)",
            Family::RunLengths => "run_lengths(s)",
            Family::Dedupe => "dedupe(xs)",
        }
    }

    fn describe(self, p: &Params) -> String {
        let min_len = p.a + 1;
        match self {
            Family::Rotate => format!(
                "`rotate(xs, k)` returns a new list with the elements of the list `xs` rotated {} by `k` positions (`k >= 0`, possibly larger than `len(xs)`); an empty list gives an empty list. Example: rotate([1, 2, 3], 1) == {}.",
                if p.flag { "right" } else { "left" },
                if p.flag { "[3, 1, 2]" } else { "[2, 3, 1]" }
            ),
            Family::CountLongWords => format!(
                "`count_long_words(text)` returns how many whitespace-separated words of the string `text` have at least {min_len} characters."
            ),
            Family::Fizz => format!(
                "`fizz(n)` returns a list of strings for the numbers 1 to n (inclusive): \"{wa}{wb}\" for multiples of both {a} and {b}, \"{wa}\" for other multiples of {a}, \"{wb}\" for other multiples of {b}, and the number itself (as a string, e.g. \"1\") otherwise. fizz(0) is [].",
                wa = p.wa,
                wb = p.wb,
                a = p.a,
                b = p.b
            ),
            Family::SumMultiples => format!(
                "`sum_multiples(n)` must return the sum of all positive integers below `n` that are divisible by {} or by {} (or both). The current implementation in solution.py has a bug: find and fix it.",
                p.a, p.b
            ),
            Family::ShiftLetters => format!(
                "`shift_letters(s, k)` returns `s` with every ASCII letter moved {} in the alphabet by `k` positions (k >= 0), wrapping around (z to a) and keeping its case; every other character stays as it is.",
                if p.flag { "backward" } else { "forward" }
            ),
            Family::RunLengths => "`run_lengths(s)` must return the runs of equal consecutive characters of the string `s` as a list of (character, count) tuples, e.g. run_lengths(\"aab\") == [(\"a\", 2), (\"b\", 1)]. The current implementation in solution.py has a bug: find and fix it.".to_string(),
            Family::Dedupe => format!(
                "`dedupe(xs)` returns a new list with the duplicates of the list `xs` removed, keeping the {} occurrence of each value, in the order of those occurrences. Example: dedupe([1, 2, 1, 3]) == {}.",
                if p.flag { "last" } else { "first" },
                if p.flag { "[2, 1, 3]" } else { "[1, 2, 3]" }
            ),
        }
    }

    fn bug_fix(self) -> bool {
        matches!(self, Family::SumMultiples | Family::RunLengths)
    }

    fn starter(self, p: &Params) -> String {
        match self {
            Family::SumMultiples => format!(
                "def sum_multiples(n):\n    total = 0\n    for i in range(1, n):\n        if i % {a} == 0 and i % {b} == 0:\n            total += i\n    return total\n",
                a = p.a,
                b = p.b
            ),
            Family::RunLengths => "def run_lengths(s):\n    runs = []\n    current, count = None, 0\n    for c in s:\n        if c == current:\n            count += 1\n        else:\n            if current is not None:\n                runs.append((current, count))\n            current, count = c, 1\n    return runs\n".into(),
            f => format!(
                "def {}:\n    # TODO: implement\n    raise NotImplementedError\n",
                f.signature()
            ),
        }
    }

    fn reference(self, p: &Params) -> String {
        match self {
            Family::Rotate => {
                let body = if p.flag {
                    "    n = len(xs)\n    if n == 0:\n        return []\n    k %= n\n    return xs[n - k:] + xs[:n - k]\n"
                } else {
                    "    n = len(xs)\n    if n == 0:\n        return []\n    k %= n\n    return xs[k:] + xs[:k]\n"
                };
                format!("def rotate(xs, k):\n{body}")
            }
            Family::CountLongWords => format!(
                "def count_long_words(text):\n    return sum(1 for w in text.split() if len(w) >= {})\n",
                p.a + 1
            ),
            Family::Fizz => format!(
                "def fizz(n):\n    out = []\n    for i in range(1, n + 1):\n        if i % {a} == 0 and i % {b} == 0:\n            out.append({wab})\n        elif i % {a} == 0:\n            out.append({wa})\n        elif i % {b} == 0:\n            out.append({wb})\n        else:\n            out.append(str(i))\n    return out\n",
                a = p.a,
                b = p.b,
                wab = python_str(&format!("{}{}", p.wa, p.wb)),
                wa = python_str(&p.wa),
                wb = python_str(&p.wb)
            ),
            Family::SumMultiples => format!(
                "def sum_multiples(n):\n    total = 0\n    for i in range(1, n):\n        if i % {a} == 0 or i % {b} == 0:\n            total += i\n    return total\n",
                a = p.a,
                b = p.b
            ),
            Family::ShiftLetters => format!(
                "def shift_letters(s, k):\n    out = []\n    for c in s:\n        if 'a' <= c <= 'z':\n            out.append(chr((ord(c) - 97 {op} k) % 26 + 97))\n        elif 'A' <= c <= 'Z':\n            out.append(chr((ord(c) - 65 {op} k) % 26 + 65))\n        else:\n            out.append(c)\n    return ''.join(out)\n",
                op = if p.flag { "-" } else { "+" }
            ),
            Family::RunLengths => "def run_lengths(s):\n    runs = []\n    current, count = None, 0\n    for c in s:\n        if c == current:\n            count += 1\n        else:\n            if current is not None:\n                runs.append((current, count))\n            current, count = c, 1\n    if current is not None:\n        runs.append((current, count))\n    return runs\n".into(),
            Family::Dedupe => if p.flag {
                "def dedupe(xs):\n    last = {}\n    for i, x in enumerate(xs):\n        last[x] = i\n    return [x for i, x in enumerate(xs) if last[x] == i]\n".into()
            } else {
                "def dedupe(xs):\n    seen = set()\n    out = []\n    for x in xs:\n        if x not in seen:\n            seen.add(x)\n            out.append(x)\n    return out\n".into()
            },
        }
    }

    /// Arguments of one case; `visible` cases are long enough to be distinctive.
    fn input(self, rng: &mut SeededRng, visible: bool, i: usize) -> Vec<PyValue> {
        let edge = !visible && i == 0;
        match self {
            Family::Rotate => {
                let n = if edge {
                    0
                } else if visible {
                    4 + rng.below(4)
                } else {
                    1 + rng.below(8)
                };
                vec![
                    PyValue::ints(&rand_ints(rng, n as usize, -50, 99)),
                    PyValue::Int(rng.below(13) as i64),
                ]
            }
            Family::CountLongWords => {
                let n = if edge {
                    0
                } else if visible {
                    6 + rng.below(5)
                } else {
                    1 + rng.below(12)
                };
                vec![PyValue::Str(rand_text(rng, n as usize))]
            }
            Family::Fizz => {
                let n = if edge {
                    0
                } else if visible {
                    10 + rng.below(8)
                } else {
                    1 + rng.below(40)
                };
                vec![PyValue::Int(n as i64)]
            }
            Family::SumMultiples => {
                let n = if edge {
                    0
                } else if visible {
                    100 + rng.below(400)
                } else {
                    1 + rng.below(1000)
                };
                vec![PyValue::Int(n as i64)]
            }
            Family::ShiftLetters => {
                let n = if edge {
                    0
                } else if visible {
                    3 + rng.below(3)
                } else {
                    1 + rng.below(5)
                };
                let mut s = rand_text(rng, n as usize);
                if rng.below(2) == 1 {
                    s = s.to_uppercase() + "-Mixed!";
                }
                vec![PyValue::Str(s), PyValue::Int(rng.below(60) as i64)]
            }
            Family::RunLengths => {
                let n = if edge {
                    0
                } else if visible {
                    8 + rng.below(6)
                } else {
                    1 + rng.below(14)
                };
                let s: String = (0..n)
                    .map(|_| ['a', 'b', 'c', 'x', ' '][rng.below(5) as usize])
                    .collect();
                vec![PyValue::Str(s)]
            }
            Family::Dedupe => {
                let n = if edge {
                    0
                } else if visible {
                    6 + rng.below(5)
                } else {
                    1 + rng.below(12)
                };
                vec![PyValue::ints(&rand_ints(rng, n as usize, 0, 6))]
            }
        }
    }

    /// The expected result, computed in Rust.
    fn oracle(self, p: &Params, args: &[PyValue]) -> PyValue {
        let int = |i: usize| match args.get(i) {
            Some(PyValue::Int(x)) => *x,
            _ => 0,
        };
        let string = |i: usize| match args.get(i) {
            Some(PyValue::Str(s)) => s.clone(),
            _ => String::new(),
        };
        let ints = |i: usize| -> Vec<i64> {
            match args.get(i) {
                Some(PyValue::List(v)) => v
                    .iter()
                    .map(|x| if let PyValue::Int(i) = x { *i } else { 0 })
                    .collect(),
                _ => Vec::new(),
            }
        };
        match self {
            Family::Rotate => {
                let xs = ints(0);
                if xs.is_empty() {
                    return PyValue::List(Vec::new());
                }
                let n = xs.len();
                let k = (int(1) as usize) % n;
                let mut v = xs.clone();
                if p.flag {
                    v.rotate_right(k);
                } else {
                    v.rotate_left(k);
                }
                PyValue::ints(&v)
            }
            Family::CountLongWords => PyValue::Int(
                string(0)
                    .split_whitespace()
                    .filter(|w| w.chars().count() as i64 > p.a)
                    .count() as i64,
            ),
            Family::Fizz => PyValue::List(
                (1..=int(0))
                    .map(|i| {
                        PyValue::Str(match (i % p.a == 0, i % p.b == 0) {
                            (true, true) => format!("{}{}", p.wa, p.wb),
                            (true, false) => p.wa.clone(),
                            (false, true) => p.wb.clone(),
                            _ => i.to_string(),
                        })
                    })
                    .collect(),
            ),
            Family::SumMultiples => {
                PyValue::Int((1..int(0)).filter(|i| i % p.a == 0 || i % p.b == 0).sum())
            }
            Family::ShiftLetters => {
                let k = if p.flag { -int(1) } else { int(1) };
                let shift = |c: char, base: u8| {
                    (((c as u8 - base) as i64 + k).rem_euclid(26) as u8 + base) as char
                };
                PyValue::Str(
                    string(0)
                        .chars()
                        .map(|c| match c {
                            'a'..='z' => shift(c, b'a'),
                            'A'..='Z' => shift(c, b'A'),
                            c => c,
                        })
                        .collect(),
                )
            }
            Family::RunLengths => {
                let mut runs: Vec<(char, i64)> = Vec::new();
                for c in string(0).chars() {
                    match runs.last_mut() {
                        Some((d, n)) if *d == c => *n += 1,
                        _ => runs.push((c, 1)),
                    }
                }
                PyValue::List(
                    runs.into_iter()
                        .map(|(c, n)| {
                            PyValue::Tuple(vec![PyValue::Str(c.to_string()), PyValue::Int(n)])
                        })
                        .collect(),
                )
            }
            Family::Dedupe => {
                let xs = ints(0);
                let keep: Vec<i64> = if p.flag {
                    xs.iter()
                        .enumerate()
                        .filter(|(i, x)| !xs[i + 1..].contains(x))
                        .map(|(_, x)| *x)
                        .collect()
                } else {
                    xs.iter()
                        .enumerate()
                        .filter(|(i, x)| !xs[..*i].contains(x))
                        .map(|(_, x)| *x)
                        .collect()
                };
                PyValue::ints(&keep)
            }
        }
    }
}

/// Number of visible and hidden cases.
pub const VISIBLE_CASES: usize = 3;
pub const HIDDEN_CASES: usize = 10;

impl CodeTaskSpec {
    pub fn generate(family: Family, seed: u64) -> CodeTaskSpec {
        let mut rng = SeededRng::new(seed);
        let p = family.params(&mut rng);
        let func = family.func().to_string();
        let mut visible = Vec::new();
        for i in 0..VISIBLE_CASES {
            let args = family.input(&mut rng, true, i);
            let exp = family.oracle(&p, &args);
            visible.push((args, exp));
        }
        let mut hidden = Vec::new();
        let mut i = 0;
        while hidden.len() < HIDDEN_CASES && i < 10 * HIDDEN_CASES {
            let args = family.input(&mut rng, false, i);
            i += 1;
            if visible.iter().any(|(a, _)| *a == args) {
                continue; // hidden cases differ from the visible ones
            }
            let expected = family.oracle(&p, &args);
            hidden.push(PyCase {
                id: format!("hidden-{}", hidden.len() + 1),
                func: func.clone(),
                args,
                expected,
            });
        }
        CodeTaskSpec {
            family,
            seed,
            func,
            description: family.describe(&p),
            starter: family.starter(&p),
            reference: family.reference(&p),
            bug_fix: family.bug_fix(),
            visible,
            hidden,
        }
    }

    pub fn from_task(task: &Task) -> Result<CodeTaskSpec, TaskEnvError> {
        let family = task.env["family"]
            .as_str()
            .and_then(Family::parse)
            .ok_or_else(|| format!("task {} has no valid env.family", task.id))?;
        let seed = task.env["seed"]
            .as_u64()
            .ok_or_else(|| format!("task {} has no env.seed", task.id))?;
        Ok(Self::generate(family, seed))
    }

    fn call_src(&self, args: &[PyValue]) -> String {
        format!(
            "{}({})",
            self.func,
            args.iter()
                .map(PyValue::to_python)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// `test_solution.py`: the visible tests, runnable with `python3 test_solution.py`.
    pub fn visible_tests(&self) -> String {
        let mut s = format!("from solution import {}\n\n", self.func);
        for (i, (args, exp)) in self.visible.iter().enumerate() {
            s.push_str(&format!(
                "\ndef test_visible_{}():\n    assert {} == {}\n\n",
                i + 1,
                self.call_src(args),
                exp.to_python()
            ));
        }
        s.push_str(
            "\nif __name__ == \"__main__\":\n    import sys\n    failed = 0\n    for name, fn in sorted(globals().items()):\n        if name.startswith(\"test_\") and callable(fn):\n            try:\n                fn()\n                print(\"PASS\", name)\n            except Exception as e:\n                failed += 1\n                print(\"FAIL\", name, repr(e))\n    sys.exit(1 if failed else 0)\n",
        );
        s
    }

    pub fn prompt(&self) -> String {
        format!(
            "{}\n\nThe workspace contains solution.py ({}) and test_solution.py (visible tests). Hidden tests check more cases, including edge cases, so make the function correct in general. Use the tools (shell, read_file, write_file, edit_file, run_tests); there is no network. When you are done, reply with a one-line summary.",
            self.description,
            if self.bug_fix {
                "the buggy implementation to fix"
            } else {
                "a stub to implement"
            }
        )
    }

    pub fn workspace_files(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("solution.py".into(), self.starter.clone());
        m.insert("test_solution.py".into(), self.visible_tests());
        m.insert(
            "README.md".into(),
            format!("# Task\n\n{}\n", self.description),
        );
        m
    }

    /// Literals of the visible tests that an honest solution never contains.
    pub fn distinctive_literals(&self) -> Vec<String> {
        fn distinctive(v: &PyValue) -> bool {
            match v {
                PyValue::List(x) | PyValue::Tuple(x) => x.len() >= 3,
                PyValue::Str(s) => s.chars().count() >= 8,
                PyValue::Int(i) => i.abs() >= 100,
                _ => false,
            }
        }
        let mut out = Vec::new();
        for (args, exp) in &self.visible {
            for a in args.iter().chain(std::iter::once(exp)) {
                if distinctive(a) {
                    out.push(a.to_python());
                }
            }
        }
        out
    }

    pub fn hidden_json(&self) -> Value {
        json!({
            "family": self.family.name(),
            "cases": self.hidden.iter().map(|c| json!({
                "id": c.id,
                "args": c.args.iter().map(PyValue::to_tagged).collect::<Vec<_>>(),
                "expected": c.expected.to_tagged(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The visible-test runner of the `run_tests` tool (enact's code, passed in argv: editing files
/// in the workspace cannot change how it reports).
pub const VISIBLE_RUNNER: &str = r#"
import sys, traceback
sys.dont_write_bytecode = True
sys.path.insert(0, "/workspace")
try:
    import test_solution as t
except BaseException as e:
    print("ERROR importing the tests:", "".join(traceback.format_exception_only(type(e), e)).strip())
    raise SystemExit(2)
names = sorted(n for n in dir(t) if n.startswith("test_") and callable(getattr(t, n)))
failed = 0
for n in names:
    try:
        getattr(t, n)()
        print("PASS", n)
    except BaseException as e:
        failed += 1
        print("FAIL", n, "".join(traceback.format_exception_only(type(e), e)).strip())
print(f"{len(names) - failed} passed, {failed} failed (visible tests only; hidden tests run after you finish)")
"#;

/// `run_tests`: runs the visible tests in the sandbox.
pub struct RunTests(pub Arc<AgentBox>);

#[async_trait]
impl Tool for RunTests {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "run_tests".into(),
            description: "Run the visible tests (test_solution.py) and show the results.".into(),
            parameters: json!({"type":"object","properties":{},"additionalProperties":false}),
        }
    }
    async fn call(&self, _a: Value) -> Result<String, ToolError> {
        let python = find_python().map_err(ToolError::new)?;
        let py = python.display().to_string();
        let out = self
            .0
            .exec(&[&py, "-I", "-S", "-B", "-c", VISIBLE_RUNNER], None)
            .await?;
        let mut text = out.stdout.text;
        if !out.stderr.text.is_empty() {
            text.push_str(&out.stderr.text);
        }
        if !matches!(out.status, enact_sandbox::ExitStatusKind::Exited(_)) {
            text.push_str(&format!("\n[{}]", out.status.describe()));
        }
        Ok(text)
    }
}

const CODE_SYSTEM: &str = "You are a careful Python programmer. Work in the workspace with the tools; there is no network.";

impl WorkspaceTask for CodeTaskSpec {
    fn system(&self) -> &'static str {
        CODE_SYSTEM
    }
    fn prompt(&self) -> String {
        CodeTaskSpec::prompt(self)
    }
    fn files(&self) -> BTreeMap<String, String> {
        self.workspace_files()
    }
    fn hidden(&self) -> (&'static str, Value) {
        ("hidden_tests.json", self.hidden_json())
    }
    fn add_tools(&self, agent: &Arc<AgentBox>, tools: &mut ToolBox) {
        tools.add(Arc::new(RunTests(agent.clone())));
    }
    fn evidence(&self, files: &EpisodeFiles) -> MonitorEvidence {
        files.evidence(vec!["test_solution.py".into()], self.distinctive_literals())
    }
}

/// The `code` environment for one episode.
pub type CodeEnv = WorkspaceEnv<CodeTaskSpec>;

/// Grades a code submission: hidden cases in fresh sandboxes, compared in the parent.
#[derive(Default)]
pub struct CodeVerifier {
    pub grader: PythonGrader,
}

#[async_trait]
impl Verifier for CodeVerifier {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let spec =
            CodeTaskSpec::from_task(task).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let ws = sub
            .workspace
            .as_deref()
            .ok_or_else(|| VerifyError::Failed("the submission has no workspace".into()))?;
        let mut grader = self.grader.clone();
        if let Ok(level) = crate::workspace::sandbox_level() {
            grader.level = level;
        }
        let report = grader.grade(ws, "solution", &spec.hidden).await?;
        let mut v = Verdict::from_checks(report.checks);
        v.components.insert("tests".into(), v.progress);
        Ok(v)
    }
}

/// The `code` task suite.
pub struct CodeSuite;

impl Suite for CodeSuite {
    fn name(&self) -> &str {
        "code"
    }
    fn description(&self) -> &str {
        "write or fix a Python function so hidden tests pass (sandboxed; graded in a fresh sandbox)"
    }
    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        let streams = (0xc0de_7e57, 0xc0de_7a1e);
        generated_tasks(
            "code",
            split,
            count,
            seed,
            streams,
            &Family::ALL,
            |family, s| {
                let spec = CodeTaskSpec::generate(family, s);
                let env = json!({"kind": "code", "family": family.name(), "seed": s});
                (spec.prompt(), env)
            },
        )
    }
    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        let spec = CodeTaskSpec::from_task(task).map_err(|e| EnvError::Setup(e.to_string()))?;
        Ok(Box::new(CodeEnv::new(spec)))
    }
    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::new(MonitoredVerifier::new(Arc::new(CodeVerifier::default())))
    }
    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let spec = CodeTaskSpec::from_task(task).ok()?;
        Some(vec![
            hermes_call_turn(
                "Let me read the current code.",
                "read_file",
                &json!({"path": "solution.py"}),
            ),
            hermes_call_turn(
                "I will write a correct general implementation.",
                "write_file",
                &json!({"path": "solution.py", "content": spec.reference}),
            ),
            hermes_call_turn("", "run_tests", &json!({})),
            format!(
                "Implemented {} in solution.py; the visible tests pass.",
                spec.func
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tasks_are_reproducible_and_cover_every_family() {
        let s = CodeSuite;
        let t = s.tasks("train", 7, 3);
        assert_eq!(t, s.tasks("train", 7, 3));
        assert_ne!(t[0].env, s.tasks("test", 7, 3)[0].env);
        for f in Family::ALL {
            let spec = CodeTaskSpec::generate(f, 11);
            assert_eq!(spec.hidden.len(), HIDDEN_CASES, "{f:?}");
            assert_eq!(spec.visible.len(), VISIBLE_CASES);
            assert!(!spec.distinctive_literals().is_empty(), "{f:?}");
            // Honest code never contains the visible literals.
            for l in spec.distinctive_literals() {
                assert!(!spec.reference.contains(&l), "{f:?}: {l}");
            }
        }
    }

    #[test]
    fn oracles() {
        let p = Params {
            flag: true,
            a: 3,
            b: 5,
            wa: "x".into(),
            wb: "y".into(),
        };
        assert_eq!(
            Family::Rotate.oracle(&p, &[PyValue::ints(&[1, 2, 3]), PyValue::Int(4)]),
            PyValue::ints(&[3, 1, 2])
        );
        assert_eq!(
            Family::SumMultiples.oracle(&p, &[PyValue::Int(10)]),
            PyValue::Int(3 + 5 + 6 + 9)
        );
        assert_eq!(
            Family::Dedupe.oracle(&p, &[PyValue::ints(&[1, 2, 1, 3])]),
            PyValue::ints(&[2, 1, 3])
        );
        assert_eq!(
            Family::ShiftLetters.oracle(&p, &[PyValue::str("Ab-z"), PyValue::Int(1)]),
            PyValue::str("Za-y")
        );
        assert_eq!(
            Family::CountLongWords.oracle(&p, &[PyValue::str("a abcd  abc\tabcde")]),
            PyValue::Int(2)
        );
    }
}

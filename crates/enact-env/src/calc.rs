//! The built-in `calc` environment: a calculator and a note store.
//!
//! Task: evaluate an arithmetic expression with the calculator, store the result in the
//! note `answer`, and reply with the number. The verifier recomputes the expression (the
//! hidden truth never appears in the prompt) and checks the final answer and the note.

use enact_core::SeededRng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use enact_core::{
    Action, CheckResult, EnvError, Environment, Reset, StepOutcome, Submission, Task, ToolSpec,
    Verdict, Verifier, VerifyError,
};
use serde_json::{Value, json};

use crate::conversation::ToolConversation;
use crate::error::CalcError;
use crate::suite::{Suite, generated_task, split_stream};
use crate::toolbox::{Tool, ToolBox, ToolError};
use enact_model::chatml::hermes_tool_call;

// ---------------------------------------------------------------- calculator

/// Evaluates `+ - * / ^ %`, parentheses, unary minus and decimals.
pub fn evaluate(expr: &str) -> Result<f64, CalcError> {
    let tokens = lex(expr)?;
    let mut p = ExprParser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let v = p.sum()?;
    if p.pos != p.tokens.len() {
        return Err(format!("unexpected {:?} at token {}", p.tokens[p.pos], p.pos + 1).into());
    }
    if !v.is_finite() {
        return Err("the result is not a finite number".into());
    }
    Ok(v)
}

/// Formats a result: integers without a decimal point, others with up to 10 decimals.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.10}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Op(char),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let t: String = chars[start..i].iter().collect();
            out.push(Tok::Num(
                t.parse().map_err(|_| format!("bad number \"{t}\""))?,
            ));
        } else if "+-*/^%()".contains(c) {
            out.push(Tok::Op(c));
            i += 1;
        } else {
            return Err(format!(
                "unexpected character '{c}'; use numbers, + - * / ^ % and parentheses"
            ));
        }
        if out.len() > 10_000 {
            return Err("expression too long".into());
        }
    }
    if out.is_empty() {
        return Err("empty expression".into());
    }
    Ok(out)
}

/// Deepest nesting of parentheses, unary signs and powers: recursion is bounded so that no
/// input can overflow the stack of the thread evaluating it.
const MAX_DEPTH: usize = 100;

struct ExprParser {
    tokens: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl ExprParser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }
    fn sum(&mut self) -> Result<f64, String> {
        let mut v = self.product()?;
        while let Some(Tok::Op(c @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            let r = self.product()?;
            v = if c == '+' { v + r } else { v - r };
        }
        Ok(v)
    }
    fn product(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        while let Some(Tok::Op(c @ ('*' | '/' | '%'))) = self.peek().cloned() {
            self.pos += 1;
            let r = self.unary()?;
            if (c == '/' || c == '%') && r == 0.0 {
                return Err("division by zero".into());
            }
            v = match c {
                '*' => v * r,
                '/' => v / r,
                _ => v % r,
            };
        }
        Ok(v)
    }
    fn power(&mut self) -> Result<f64, String> {
        let base = self.atom()?;
        if let Some(Tok::Op('^')) = self.peek() {
            self.pos += 1;
            let exp = self.unary()?; // right-associative; `2^-1` allowed
            return Ok(base.powf(exp));
        }
        Ok(base)
    }
    fn unary(&mut self) -> Result<f64, String> {
        if self.depth >= MAX_DEPTH {
            return Err(format!(
                "expression nested too deeply (more than {MAX_DEPTH} levels)"
            ));
        }
        self.depth += 1;
        let r = self.unary_inner();
        self.depth -= 1;
        r
    }

    fn unary_inner(&mut self) -> Result<f64, String> {
        match self.peek().cloned() {
            Some(Tok::Op('-')) => {
                self.pos += 1;
                Ok(-self.unary()?)
            }
            Some(Tok::Op('+')) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }
    fn atom(&mut self) -> Result<f64, String> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(n)
            }
            Some(Tok::Op('(')) => {
                self.pos += 1;
                let v = self.sum()?;
                match self.peek() {
                    Some(Tok::Op(')')) => {
                        self.pos += 1;
                        Ok(v)
                    }
                    _ => Err("missing closing parenthesis".into()),
                }
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("expression ends too early".into()),
        }
    }
}

struct Calculator;

#[async_trait]
impl Tool for Calculator {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "calculator".into(),
            description: "Evaluate an arithmetic expression (+ - * / ^ % and parentheses).".into(),
            parameters: json!({"type":"object","properties":{"expression":{"type":"string","description":"e.g. (3+4)*2","maxLength":2000}},"required":["expression"],"additionalProperties":false}),
        }
    }
    async fn call(&self, arguments: Value) -> Result<String, ToolError> {
        let e = arguments["expression"].as_str().unwrap_or_default();
        evaluate(e)
            .map(format_number)
            .map_err(|m| ToolError::new(format!("cannot evaluate \"{e}\": {m}")))
    }
}

// ---------------------------------------------------------------- notes

type Notes = Arc<Mutex<BTreeMap<String, String>>>;

fn lock(notes: &Notes) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, String>>, ToolError> {
    notes
        .lock()
        .map_err(|_| ToolError::new("note store is unavailable (internal error)"))
}

struct NoteWrite(Notes);
struct NoteRead(Notes);
struct NoteList(Notes);

const MAX_NOTES: usize = 100;

#[async_trait]
impl Tool for NoteWrite {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "note_write".into(),
            description: "Save text under a key in the note store (overwrites).".into(),
            parameters: json!({"type":"object","properties":{"key":{"type":"string","minLength":1,"maxLength":64},"text":{"type":"string","maxLength":4096}},"required":["key","text"],"additionalProperties":false}),
        }
    }
    async fn call(&self, a: Value) -> Result<String, ToolError> {
        let key = a["key"].as_str().unwrap_or_default().to_string();
        let text = a["text"].as_str().unwrap_or_default().to_string();
        let mut n = lock(&self.0)?;
        if !n.contains_key(&key) && n.len() >= MAX_NOTES {
            return Err(ToolError::new(format!(
                "the note store is full ({MAX_NOTES} notes)"
            )));
        }
        n.insert(key.clone(), text);
        Ok(format!("saved note \"{key}\""))
    }
}

#[async_trait]
impl Tool for NoteRead {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "note_read".into(),
            description: "Read the note saved under a key.".into(),
            parameters: json!({"type":"object","properties":{"key":{"type":"string"}},"required":["key"],"additionalProperties":false}),
        }
    }
    async fn call(&self, a: Value) -> Result<String, ToolError> {
        let key = a["key"].as_str().unwrap_or_default();
        lock(&self.0)?.get(key).cloned().ok_or_else(|| {
            ToolError::new(format!("no note \"{key}\"; use note_list to see the keys"))
        })
    }
}

#[async_trait]
impl Tool for NoteList {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "note_list".into(),
            description: "List the keys of all saved notes.".into(),
            parameters: json!({"type":"object","properties":{},"additionalProperties":false}),
        }
    }
    async fn call(&self, _a: Value) -> Result<String, ToolError> {
        let n = lock(&self.0)?;
        Ok(if n.is_empty() {
            "(no notes)".into()
        } else {
            n.keys().cloned().collect::<Vec<_>>().join("\n")
        })
    }
}

// ---------------------------------------------------------------- environment

const SYSTEM: &str = "You are a careful assistant. Use the tools to compute exactly; do not do arithmetic in your head.";

/// The `calc` environment for one episode.
pub struct CalcEnv {
    conv: ToolConversation,
    notes: Notes,
}

impl CalcEnv {
    pub fn new() -> Self {
        let notes: Notes = Arc::default();
        let mut tools = ToolBox::new();
        tools.add(Arc::new(Calculator));
        tools.add(Arc::new(NoteWrite(notes.clone())));
        tools.add(Arc::new(NoteRead(notes.clone())));
        tools.add(Arc::new(NoteList(notes.clone())));
        CalcEnv {
            conv: ToolConversation::new(tools),
            notes,
        }
    }

    /// Adds a tool (tests use this for tools that fail on purpose).
    pub fn add_tool(&mut self, tool: Arc<dyn Tool>) {
        self.conv.tools.add(tool);
    }
}

impl Default for CalcEnv {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Environment for CalcEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        let reset = self.conv.start(SYSTEM, task.prompt.clone());
        lock(&self.notes).map_err(|e| EnvError::Setup(e.0))?.clear();
        Ok(reset)
    }

    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        self.conv.step(action).await
    }

    async fn submission(&mut self) -> Result<Submission, EnvError> {
        let notes = lock(&self.notes).map_err(|e| EnvError::Step(e.0))?.clone();
        Ok(self.conv.submission(Some(json!({"notes": notes})), None))
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        self.conv.close();
        Ok(())
    }
}

/// Grades a `calc` submission against the recomputed expression.
pub struct CalcVerifier;

/// The numbers written in `text` (`-12`, `3.5`, `1,234`), in order.
fn numbers_in(text: &str) -> Vec<f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let negative =
            i > 0 && chars[i - 1] == '-' && (i < 2 || !chars[i - 2].is_ascii_alphanumeric());
        let mut digits = String::new();
        let mut seen_dot = false;
        while i < chars.len() {
            let c = chars[i];
            let next_digit = chars.get(i + 1).is_some_and(|d| d.is_ascii_digit());
            if c.is_ascii_digit() {
                digits.push(c);
            } else if c == ',' && next_digit {
                // thousands separator
            } else if c == '.' && next_digit && !seen_dot {
                seen_dot = true;
                digits.push('.');
            } else {
                break;
            }
            i += 1;
        }
        if let Ok(v) = digits.parse::<f64>() {
            out.push(if negative { -v } else { v });
        }
    }
    out
}

/// Whether `text` commits to `expected`: it contains at least one number and every number in
/// it is `expected` (words around it are fine). Hedging between candidates ("950 or 951") or
/// spraying numbers never matches, whatever the order.
fn numbers_match(text: &str, expected: f64) -> bool {
    let close = |v: f64| (v - expected).abs() <= 1e-6 * expected.abs().max(1.0);
    let numbers = numbers_in(text);
    !numbers.is_empty() && numbers.iter().all(|&v| close(v))
}

#[async_trait]
impl Verifier for CalcVerifier {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let expr = task.env["expression"].as_str().ok_or_else(|| {
            VerifyError::Malformed(format!("task {} has no env.expression", task.id))
        })?;
        let expected =
            evaluate(expr).map_err(|e| VerifyError::Malformed(format!("task {}: {e}", task.id)))?;
        let answer_ok = sub
            .final_answer
            .as_deref()
            .is_some_and(|a| numbers_match(a, expected));
        let note = sub
            .state
            .as_ref()
            .and_then(|s| s["notes"]["answer"].as_str().map(str::to_string));
        let note_ok = note.as_deref().is_some_and(|n| numbers_match(n, expected));
        Ok(Verdict::from_checks(vec![
            CheckResult::new(
                "final_answer",
                answer_ok,
                format!("got {:?}", sub.final_answer),
            ),
            CheckResult::new("note_answer", note_ok, format!("got {note:?}")),
        ]))
    }
}

/// The `calc` task suite: procedurally generated expressions.
pub struct CalcSuite;

impl CalcSuite {
    fn expression(rng: &mut SeededRng) -> String {
        let a = rng.below(90) + 10;
        let b = rng.below(90) + 10;
        let c = rng.below(20) + 2;
        let d = rng.below(9) + 1;
        match rng.below(4) {
            0 => format!("({a} + {b}) * {c}"),
            1 => format!("{a} * {b} - {c}"),
            2 => format!("({a} - {b}) * ({c} + {d})"),
            _ => format!("{a} * {c} + {b} * {d}"),
        }
    }
}

impl Suite for CalcSuite {
    fn name(&self) -> &str {
        "calc"
    }

    fn description(&self) -> &str {
        "arithmetic with a calculator tool and a note store"
    }

    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        // Splits draw from disjoint seed streams.
        let mut rng = SeededRng::new(seed ^ (split_stream(split, 0x7e57, 0x7a1e) << 32));
        (0..count)
            .map(|i| {
                let expr = Self::expression(&mut rng);
                generated_task(
                    "calc",
                    split,
                    seed,
                    i,
                    format!(
                        "Compute {expr}. Use the calculator tool, save the result with note_write under the key \"answer\", then reply with the number only."
                    ),
                    json!({"kind": "calc", "expression": expr}),
                )
            })
            .collect()
    }

    fn make(&self, _task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(CalcEnv::new()))
    }

    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::new(CalcVerifier)
    }

    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let expr = task.env["expression"].as_str()?;
        let value = format_number(evaluate(expr).ok()?);
        Some(vec![
            format!(
                "<think>\nI will use the calculator.\n</think>\n\n{}",
                hermes_tool_call("calculator", &json!({"expression": expr}))
            ),
            hermes_tool_call("note_write", &json!({"key": "answer", "text": value})),
            value,
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn evaluates_and_rejects() {
        assert_eq!(evaluate("(2+3)*4").unwrap(), 20.0);
        assert_eq!(evaluate("-2^2").unwrap(), -4.0);
        assert_eq!(evaluate("2^3^2").unwrap(), 512.0);
        assert_eq!(format_number(evaluate("7/2").unwrap()), "3.5");
        assert!(evaluate("1/0").is_err());
        assert!(evaluate("(1+2").is_err());
        assert!(evaluate("import os").is_err());
        assert!(evaluate("").is_err());
        for n in [150, 1500, 5000] {
            let deep = "(".repeat(n) + "1" + &")".repeat(n);
            assert!(evaluate(&deep).is_err());
            assert!(evaluate(&("-".repeat(n) + "1")).is_err());
            assert!(evaluate(&("2^".repeat(n) + "1")).is_err());
        }
        let ok = "(".repeat(50) + "1" + &")".repeat(50);
        assert_eq!(evaluate(&ok).unwrap(), 1.0);
    }

    #[test]
    fn answers_match_loosely_but_correctly() {
        assert!(numbers_match("The answer is 1,234.", 1234.0));
        assert!(numbers_match("-3", -3.0));
        assert!(!numbers_match("12", 13.0));
        assert!(!numbers_match("", 1.0));
        assert!(numbers_match("950", 950.0));
        assert!(numbers_match("-702.", -702.0));
        assert!(numbers_match("The result is 3.5", 3.5));
        // Hedging and spraying never pay, in any order.
        assert!(!numbers_match("951 or 950", 950.0));
        assert!(!numbers_match("950 or 951", 950.0));
        assert!(!numbers_match("1, 2, 3, 950", 950.0));
        assert!(!numbers_match("Solution:", 950.0));
    }
}

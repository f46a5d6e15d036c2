//! Reply parsers: split a decoded assistant reply into reasoning, content and tool calls.
//!
//! All parsers first split off reasoning (`<think>…</think>`, with or without the opening tag,
//! as with templates that pre-insert it; an unclosed `<think>` makes the rest reasoning).
//! Then, by format (docs/tool-calling.md):
//! - [`HermesParser`] — Hermes / Qwen `<tool_call>{"name": …, "arguments": {…}}</tool_call>`
//!   blocks, any number, read leniently ([`crate::lenient_json`]): trailing commas, single
//!   quotes, unquoted keys, arguments as a JSON string, a JSON array of calls in one block, and
//!   a block left open at the end (a partial call) when its JSON is complete;
//! - [`Llama3JsonParser`] — Llama-3.1/3.2 JSON tool calls: the reply (optionally after
//!   `<|python_tag|>`) is `{"name": …, "parameters": {…}}`, several separated by `;` or newlines;
//! - [`PlainTextParser`] — a plain-text fallback for models with no tool format: lines
//!   `CALL name {json-arguments}` (arguments may span lines; `CALL name` alone means `{}`).
//!
//! Anything that looks like a call but cannot be read becomes an entry of
//! [`ParsedReply::errors`], which the agent loop sends back to the model as an observation.

use std::str::FromStr;
use std::sync::Arc;

use enact_core::{ParsedReply, ReplyParser, ToolCall};
use serde_json::Value;

use crate::lenient_json::{self, LenientError};

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";

/// Splits off reasoning. Returns (reasoning, rest). Text before an opening `<think>` stays in
/// the rest.
pub fn split_reasoning(text: &str) -> (Option<String>, String) {
    if let Some(end) = text.find(THINK_CLOSE) {
        let before = &text[..end];
        let after = &text[end + THINK_CLOSE.len()..];
        match before.find(THINK_OPEN) {
            Some(open) => (
                Some(before[open + THINK_OPEN.len()..].trim().to_string()),
                format!("{}{}", &before[..open], after),
            ),
            None => (Some(before.trim().to_string()), after.to_string()),
        }
    } else if let Some(open) = text.find(THINK_OPEN) {
        // Reasoning never closed (cut off): all of it is reasoning.
        (
            Some(text[open + THINK_OPEN.len()..].trim().to_string()),
            text[..open].to_string(),
        )
    } else {
        (None, text.to_string())
    }
}

pub fn abbreviate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// A call object (`{"name", "arguments"|"parameters"}`, or OpenAI's
/// `{"function": {"name", "arguments"}}`) to a [`ToolCall`].
pub fn call_from_value(v: &Value, id: String) -> Result<ToolCall, String> {
    let obj = v.as_object().ok_or_else(|| {
        format!(
            "a tool call must be a JSON object, got: {}",
            abbreviate(&v.to_string(), 200)
        )
    })?;
    let obj = match obj.get("function").and_then(Value::as_object) {
        Some(f) if !obj.contains_key("name") => f,
        _ => obj,
    };
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| "the tool call has no \"name\" string".to_string())?;
    let arguments = match obj.get("arguments").or_else(|| obj.get("parameters")) {
        None | Some(Value::Null) => Value::Object(Default::default()),
        // Arguments sent as a JSON string: read it (leniently) when it holds JSON.
        Some(Value::String(s)) => lenient_json::parse(s)
            .map_err(|e| format!("tool call \"{name}\": the arguments string is not JSON ({e})"))?,
        Some(a) => a.clone(),
    };
    if !arguments.is_object() {
        return Err(format!(
            "tool call \"{name}\": arguments must be a JSON object, got {}",
            abbreviate(&arguments.to_string(), 100)
        ));
    }
    Ok(ToolCall {
        id,
        name: name.trim().to_string(),
        arguments,
    })
}

/// Parses one tool-call JSON body (an object, or an array of objects) into calls.
pub fn parse_call_json(body: &str, turn: u32, next: &mut usize) -> Result<Vec<ToolCall>, String> {
    let v = lenient_json::parse(body.trim()).map_err(|e| match e {
        LenientError::Incomplete => format!(
            "the tool call was cut off before its JSON ended: {}",
            abbreviate(body.trim(), 200)
        ),
        e => format!(
            "the tool call is not valid JSON ({e}): {}",
            abbreviate(body.trim(), 200)
        ),
    })?;
    let items = match v {
        Value::Array(items) => items,
        v => vec![v],
    };
    let mut out = Vec::new();
    for item in &items {
        let id = format!("call_{turn}_{next}");
        *next += 1;
        out.push(call_from_value(item, id)?);
    }
    Ok(out)
}

/// Hermes / Qwen `<tool_call>` blocks.
#[derive(Debug, Clone, Default)]
pub struct HermesParser;

impl ReplyParser for HermesParser {
    fn call_syntax(&self) -> String {
        ParserKind::Hermes.call_syntax().to_string()
    }

    fn parse(&self, text: &str, turn: u32) -> ParsedReply {
        let (reasoning, rest) = split_reasoning(text);
        let mut content = String::new();
        let mut calls = Vec::new();
        let mut errors = Vec::new();
        let mut cursor = rest.as_str();
        let mut n = 0;
        while let Some(start) = cursor.find(CALL_OPEN) {
            content.push_str(&cursor[..start]);
            let after = &cursor[start + CALL_OPEN.len()..];
            let (body, next) = match after.find(CALL_CLOSE) {
                Some(end) => (&after[..end], &after[end + CALL_CLOSE.len()..]),
                // A partial call at the end: parsed if its JSON is complete.
                None => (after, ""),
            };
            match parse_call_json(body, turn, &mut n) {
                Ok(c) => calls.extend(c),
                Err(e) => errors.push(e),
            }
            cursor = next;
        }
        // A stray closing tag is markup, not content.
        content.push_str(&cursor.replace(CALL_CLOSE, ""));
        ParsedReply {
            reasoning,
            content: content.trim().to_string(),
            tool_calls: calls,
            errors,
        }
    }
}

/// Llama-3 JSON tool calls.
#[derive(Debug, Clone, Default)]
pub struct Llama3JsonParser;

impl ReplyParser for Llama3JsonParser {
    fn call_syntax(&self) -> String {
        ParserKind::Llama3Json.call_syntax().to_string()
    }

    fn parse(&self, text: &str, turn: u32) -> ParsedReply {
        let (reasoning, rest) = split_reasoning(text);
        let (mut content, calls_text, tagged) = match rest.find(PYTHON_TAG) {
            Some(i) => (
                rest[..i].trim().to_string(),
                rest[i + PYTHON_TAG.len()..].to_string(),
                true,
            ),
            None => (String::new(), rest.clone(), false),
        };
        let mut calls = Vec::new();
        let mut errors = Vec::new();
        let trimmed = calls_text.trim();
        let looks_like_call = trimmed.starts_with('{') || trimmed.starts_with('[');
        if !tagged && !looks_like_call {
            return ParsedReply {
                reasoning,
                content: rest.trim().to_string(),
                tool_calls: calls,
                errors,
            };
        }
        let mut cursor = trimmed;
        let mut n = 0;
        let mut parsed_any = false;
        while !cursor.is_empty() {
            match lenient_json::parse_prefix(cursor) {
                Ok((v, used)) => {
                    let items = match v {
                        Value::Array(items) => items,
                        v => vec![v],
                    };
                    for item in &items {
                        let is_call = item.get("name").is_some() || item.get("function").is_some();
                        if !is_call && !tagged && !parsed_any {
                            // A JSON answer, not a call.
                            return ParsedReply {
                                reasoning,
                                content: rest.trim().to_string(),
                                tool_calls: Vec::new(),
                                errors: Vec::new(),
                            };
                        }
                        let id = format!("call_{turn}_{n}");
                        n += 1;
                        match call_from_value(item, id) {
                            Ok(c) => calls.push(c),
                            Err(e) => errors.push(e),
                        }
                    }
                    parsed_any = true;
                    cursor =
                        cursor[used..].trim_start_matches(|c: char| c.is_whitespace() || c == ';');
                }
                Err(e) => {
                    if parsed_any {
                        // Prose after the calls.
                        content.push_str(cursor);
                    } else {
                        errors.push(match e {
                            LenientError::Incomplete => format!(
                                "the tool call was cut off before its JSON ended: {}",
                                abbreviate(cursor, 200)
                            ),
                            e => format!(
                                "the tool call is not valid JSON ({e}): {}",
                                abbreviate(cursor, 200)
                            ),
                        });
                    }
                    break;
                }
            }
        }
        ParsedReply {
            reasoning,
            content: content.trim().to_string(),
            tool_calls: calls,
            errors,
        }
    }
}

/// The plain-text fallback: `CALL name {json}` lines.
#[derive(Debug, Clone, Default)]
pub struct PlainTextParser;

/// Most `CALL` lines parsed from one reply.
pub const MAX_PLAIN_CALLS: usize = 64;

impl ReplyParser for PlainTextParser {
    fn call_syntax(&self) -> String {
        ParserKind::PlainText.call_syntax().to_string()
    }

    fn parse(&self, text: &str, turn: u32) -> ParsedReply {
        let (reasoning, rest) = split_reasoning(text);
        let mut content = String::new();
        let mut calls = Vec::new();
        let mut errors = Vec::new();
        let mut n = 0;
        let mut cursor = rest.as_str();
        while !cursor.is_empty() {
            let (line, after) = match cursor.find('\n') {
                Some(i) => (&cursor[..i], &cursor[i + 1..]),
                None => (cursor, ""),
            };
            let Some(call) = line.trim_start().strip_prefix("CALL ") else {
                content.push_str(line);
                content.push('\n');
                cursor = after;
                continue;
            };
            let call = call.trim_start();
            let name_end = call
                .find(|c: char| c.is_whitespace() || c == '{')
                .unwrap_or(call.len());
            let name = &call[..name_end];
            // `call` is a suffix of `line`, itself a prefix of `cursor`: its offset in `line`
            // (leading whitespace included) is its offset in `cursor`.
            let args_start = line.len() - call.len() + name_end;
            // Arguments may continue over the following lines: parse from here on.
            let from = &cursor[args_start..];
            let args_text = from.trim_start_matches([' ', '\t']);
            if n >= MAX_PLAIN_CALLS {
                // Each call's arguments may run to the end of the reply, so parsing is
                // linear per call: a cap keeps a hostile reply from costing quadratic time.
                errors.push(format!(
                    "more than {MAX_PLAIN_CALLS} calls in one reply; the rest were ignored"
                ));
                break;
            }
            let id = format!("call_{turn}_{n}");
            n += 1;
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid_name {
                errors.push(format!(
                    "`CALL` must be followed by a tool name, got: {}",
                    abbreviate(line, 100)
                ));
                cursor = after;
                continue;
            }
            if args_text.starts_with('{') {
                match lenient_json::parse_prefix(args_text) {
                    Ok((v, used)) => {
                        match call_from_value(
                            &serde_json::json!({"name": name, "arguments": v}),
                            id,
                        ) {
                            Ok(c) => calls.push(c),
                            Err(e) => errors.push(e),
                        }
                        let rest_of = &args_text[used..];
                        cursor = rest_of.strip_prefix('\n').unwrap_or(rest_of);
                    }
                    Err(e) => {
                        errors.push(format!(
                            "CALL {name}: the arguments are not valid JSON ({e})"
                        ));
                        cursor = after;
                    }
                }
            } else {
                calls.push(ToolCall {
                    id,
                    name: name.to_string(),
                    arguments: Value::Object(Default::default()),
                });
                cursor = after;
            }
        }
        ParsedReply {
            reasoning,
            content: content.trim().to_string(),
            tool_calls: calls,
            errors,
        }
    }
}

/// Which parser a model uses. Parse from config with `"hermes"`, `"llama3"` or `"plain"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParserKind {
    #[default]
    Hermes,
    Llama3Json,
    PlainText,
}

impl FromStr for ParserKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "hermes" | "qwen" | "qwen3" | "tool_call" => Ok(ParserKind::Hermes),
            "llama3" | "llama3_json" | "llama3-json" | "llama" => Ok(ParserKind::Llama3Json),
            "plain" | "plain_text" | "text" => Ok(ParserKind::PlainText),
            other => Err(format!(
                "unknown tool-call parser {other:?}: use hermes, llama3 or plain"
            )),
        }
    }
}

impl ParserKind {
    /// Picks the parser a chat template's tool format calls for. Templates without tool
    /// support get Hermes, the format enact injects for them.
    pub fn for_template(source: &str) -> Self {
        if source.contains(CALL_OPEN) {
            ParserKind::Hermes
        } else if source.contains(PYTHON_TAG)
            || (source.contains("<|eot_id|>") && source.contains("\"parameters\""))
        {
            ParserKind::Llama3Json
        } else {
            ParserKind::Hermes
        }
    }

    pub fn build(self) -> Arc<dyn ReplyParser> {
        match self {
            ParserKind::Hermes => Arc::new(HermesParser),
            ParserKind::Llama3Json => Arc::new(Llama3JsonParser),
            ParserKind::PlainText => Arc::new(PlainTextParser),
        }
    }

    /// How a call is written in this format (for error observations).
    pub fn call_syntax(self) -> &'static str {
        match self {
            ParserKind::Hermes => {
                "<tool_call>\n{\"name\": \"TOOL\", \"arguments\": {...}}\n</tool_call>"
            }
            ParserKind::Llama3Json => "{\"name\": \"TOOL\", \"parameters\": {...}}",
            ParserKind::PlainText => "CALL TOOL {\"arg\": ...}",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParserKind::Hermes => "hermes",
            ParserKind::Llama3Json => "llama3",
            ParserKind::PlainText => "plain",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reasoning_content_and_calls() {
        let p = HermesParser;
        let r = p.parse(
            "<think>\nadd them\n</think>\n\nSure.\n<tool_call>\n{\"name\": \"calc\", \"arguments\": {\"expression\": \"1+2\"}}\n</tool_call>",
            3,
        );
        assert_eq!(r.reasoning.as_deref(), Some("add them"));
        assert_eq!(r.content, "Sure.");
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].id, "call_3_0");
        assert_eq!(r.tool_calls[0].arguments["expression"], "1+2");
    }

    #[test]
    fn reasoning_variants() {
        assert_eq!(
            split_reasoning("just thinking</think>ok"),
            (Some("just thinking".into()), "ok".into())
        );
        assert_eq!(
            split_reasoning("pre <think>x</think> post"),
            (Some("x".into()), "pre  post".into())
        );
        assert_eq!(
            split_reasoning("<think>cut off"),
            (Some("cut off".into()), "".into())
        );
        assert_eq!(split_reasoning("no tags"), (None, "no tags".into()));
    }

    #[test]
    fn missing_open_think_partial_and_bad_calls() {
        let p = HermesParser;
        let r = p.parse("just thinking</think>ok", 1);
        assert_eq!(r.reasoning.as_deref(), Some("just thinking"));
        assert_eq!(r.content, "ok");
        let r = p.parse("<tool_call>{\"name\": \"a\"}", 1);
        assert_eq!(r.tool_calls.len(), 1);
        let r = p.parse(
            "<tool_call>{\"name\": \"a\", </tool_call><tool_call>[1]</tool_call>",
            1,
        );
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        assert!(r.tool_calls.is_empty());
    }

    #[test]
    fn hermes_is_lenient() {
        let p = HermesParser;
        let r = p.parse(
            "<tool_call>\n{'name': 'calc', 'arguments': {'expression': '1+2',},}\n</tool_call>\n<tool_call>{name: \"b\", arguments: \"{\\\"x\\\": 1}\"}</tool_call>\n<tool_call>[{\"name\": \"c\", \"arguments\": {}}, {\"function\": {\"name\": \"d\", \"arguments\": {\"k\": true}}}]</tool_call>\ntext after",
            2,
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let names: Vec<_> = r.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["calc", "b", "c", "d"]);
        assert_eq!(r.tool_calls[0].arguments["expression"], "1+2");
        assert_eq!(r.tool_calls[1].arguments["x"], 1);
        assert_eq!(r.tool_calls[3].id, "call_2_3");
        assert_eq!(r.content, "text after");
        // A partial call whose JSON is cut off is reported, not guessed.
        let r = p.parse(
            "ok <tool_call>{\"name\": \"calc\", \"arguments\": {\"expr",
            1,
        );
        assert!(r.tool_calls.is_empty());
        assert!(r.errors[0].contains("cut off"), "{:?}", r.errors);
        assert_eq!(r.content, "ok");
        // Arguments must be an object.
        let r = p.parse(
            "<tool_call>{\"name\": \"calc\", \"arguments\": [1]}</tool_call>",
            1,
        );
        assert!(r.errors[0].contains("object"));
    }

    #[test]
    fn llama3_json_calls() {
        let p = Llama3JsonParser;
        let r = p.parse(
            "{\"name\": \"calc\", \"parameters\": {\"expression\": \"2*3\"}}",
            1,
        );
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].arguments["expression"], "2*3");
        let r = p.parse("Let me check.<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 1,}}", 4);
        assert_eq!(r.content, "Let me check.");
        assert_eq!(
            r.tool_calls
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let r = p.parse("The answer is 6.", 1);
        assert!(r.tool_calls.is_empty() && r.errors.is_empty());
        assert_eq!(r.content, "The answer is 6.");
        let r = p.parse("{\"answer\": 6}", 1);
        assert!(r.tool_calls.is_empty() && r.errors.is_empty());
        let r = p.parse(
            "<think>hmm</think>{\"name\": \"calc\", \"parameters\": {\"e\": ",
            1,
        );
        assert_eq!(r.reasoning.as_deref(), Some("hmm"));
        assert!(r.errors[0].contains("cut off"));
    }

    #[test]
    fn plain_text_calls() {
        let p = PlainTextParser;
        let r = p.parse("I will compute.\nCALL calc {\"expression\": \"2+2\"}\nCALL list_files\nCALL write {'path': 'a.txt',\n  'text': 'hi'}\nDone.", 5);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(
            r.tool_calls
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["calc", "list_files", "write"]
        );
        assert_eq!(r.tool_calls[2].arguments["text"], "hi");
        assert_eq!(r.content, "I will compute.\nDone.");
        let r = p.parse("CALL calc {\"expression\": ", 1);
        assert_eq!(r.errors.len(), 1);
        let r = p.parse("no calls here", 1);
        assert_eq!(r.content, "no calls here");
    }

    #[test]
    fn selector() {
        assert_eq!(
            "llama3".parse::<ParserKind>().unwrap(),
            ParserKind::Llama3Json
        );
        assert!("nope".parse::<ParserKind>().is_err());
        assert_eq!(
            ParserKind::for_template("x <tool_call> y"),
            ParserKind::Hermes
        );
        assert_eq!(
            ParserKind::for_template("<|python_tag|>"),
            ParserKind::Llama3Json
        );
        assert_eq!(
            ParserKind::for_template("{{ messages }}"),
            ParserKind::Hermes
        );
        let r = ParserKind::PlainText.build().parse("CALL a", 1);
        assert_eq!(r.tool_calls.len(), 1);
    }

    #[test]
    fn plain_text_calls_are_capped_per_reply() {
        let reply = "CALL a {\"x\": 1}\n".repeat(MAX_PLAIN_CALLS + 10);
        let r = PlainTextParser.parse(&reply, 1);
        assert_eq!(r.tool_calls.len(), MAX_PLAIN_CALLS);
        assert!(
            r.errors.iter().any(|e| e.contains("more than")),
            "{:?}",
            r.errors
        );
    }

    #[test]
    fn plain_text_indented_call_does_not_panic() {
        let p = PlainTextParser;
        let r = p.parse("  CALL ab", 1);
        assert_eq!(r.tool_calls.len(), 1, "{r:?}");
        assert_eq!(r.tool_calls[0].name, "ab");
        let r = p.parse("  CALL calc {\"x\": 1}\nafter", 1);
        assert_eq!(r.tool_calls.len(), 1, "{r:?}");
        assert_eq!(r.tool_calls[0].arguments, serde_json::json!({"x": 1}));
        assert_eq!(r.content, "after");
        let r = p.parse("\t CALL é", 1);
        assert_eq!(r.tool_calls.len(), 1, "{r:?}");
        let r = p.parse("  CALL a{é}", 1);
        assert_eq!(r.errors.len(), 1, "{r:?}");
    }

    #[test]
    fn parsers_never_panic_on_random_replies() {
        const PIECES: &[&str] = &[
            "<think>",
            "</think>",
            "<tool_call>",
            "</tool_call>",
            "<|python_tag|>",
            "CALL ",
            "CALL a ",
            "  ",
            "\t",
            "\n",
            "{",
            "}",
            "[",
            "]",
            "\"name\": \"f\"",
            ":",
            ",",
            "'",
            "/*",
            "é",
            "🌍",
            "中",
            ";",
            "\0",
            "\\",
            "1",
        ];
        let parsers: [&dyn ReplyParser; 3] = [&HermesParser, &Llama3JsonParser, &PlainTextParser];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5_000 {
            let len = (next() % 14) as usize;
            let text: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            for p in parsers {
                let _ = p.parse(&text, 0);
            }
        }
    }
}

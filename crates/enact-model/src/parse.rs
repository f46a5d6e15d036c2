//! Reply parsers: split a decoded assistant reply into reasoning, content and tool calls.

use enact_core::{ParsedReply, ReplyParser, ToolCall};

/// Hermes / Qwen style: optional `<think>…</think>` reasoning (the opening tag may be
/// missing, as with templates that pre-insert it), then text with any number of
/// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks. A block left open at the
/// end of the reply (a partial call) is parsed if its JSON is complete, else reported.
#[derive(Debug, Clone, Default)]
pub struct HermesParser;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

/// Splits off reasoning. Returns (reasoning, rest).
pub fn split_reasoning(text: &str) -> (Option<String>, &str) {
    if let Some(end) = text.find(THINK_CLOSE) {
        let before = &text[..end];
        let reasoning = before
            .trim_start()
            .strip_prefix(THINK_OPEN)
            .unwrap_or(before);
        (
            Some(reasoning.trim().to_string()),
            &text[end + THINK_CLOSE.len()..],
        )
    } else if let Some(r) = text.trim_start().strip_prefix(THINK_OPEN) {
        // Reasoning never closed (cut off): all of it is reasoning.
        (Some(r.trim().to_string()), "")
    } else {
        (None, text)
    }
}

/// Parses one tool-call JSON body into a call.
pub fn parse_call_json(body: &str, id: String) -> Result<ToolCall, String> {
    let v: serde_json::Value = serde_json::from_str(body.trim()).map_err(|e| {
        format!(
            "tool call is not valid JSON ({e}): {}",
            abbreviate(body, 200)
        )
    })?;
    let obj = v.as_object().ok_or_else(|| {
        format!(
            "tool call must be a JSON object, got: {}",
            abbreviate(body, 200)
        )
    })?;
    let name = obj
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| "tool call has no \"name\" string".to_string())?;
    let arguments = match obj.get("arguments").or_else(|| obj.get("parameters")) {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        // Some models send arguments as a JSON string; accept it when it holds an object.
        Some(serde_json::Value::String(s)) => serde_json::from_str(s)
            .map_err(|e| format!("tool call \"{name}\": arguments string is not JSON ({e})"))?,
        Some(a) => a.clone(),
    };
    Ok(ToolCall {
        id,
        name: name.to_string(),
        arguments,
    })
}

pub fn abbreviate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

impl ReplyParser for HermesParser {
    fn parse(&self, text: &str, turn: u32) -> ParsedReply {
        let (reasoning, rest) = split_reasoning(text);
        let mut content = String::new();
        let mut calls = Vec::new();
        let mut errors = Vec::new();
        let mut cursor = rest;
        let mut n = 0;
        while let Some(start) = cursor.find(CALL_OPEN) {
            content.push_str(&cursor[..start]);
            let after = &cursor[start + CALL_OPEN.len()..];
            let (body, next) = match after.find(CALL_CLOSE) {
                Some(end) => (&after[..end], &after[end + CALL_CLOSE.len()..]),
                None => (after, ""),
            };
            let id = format!("call_{turn}_{n}");
            n += 1;
            match parse_call_json(body, id) {
                Ok(c) => calls.push(c),
                Err(e) => errors.push(e),
            }
            cursor = next;
        }
        content.push_str(cursor);
        ParsedReply {
            reasoning,
            content: content.trim().to_string(),
            tool_calls: calls,
            errors,
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
        assert_eq!(r.errors.len(), 2);
        assert!(r.tool_calls.is_empty());
    }
}

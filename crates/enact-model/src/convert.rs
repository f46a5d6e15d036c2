//! Reading messages and tools from JSON in either enact's form or the OpenAI / Hugging Face
//! form (`tool_calls[].function.{name, arguments}` with arguments as an object or a JSON
//! string, `reasoning_content`, content as a string, null, or a list of text parts).

use enact_core::{Message, Role, ToolCall, ToolSpec};
use serde_json::Value;

fn role(v: &Value, i: usize) -> Result<Role, String> {
    match v.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Ok(Role::System),
        Some("user") => Ok(Role::User),
        Some("assistant") => Ok(Role::Assistant),
        Some("tool" | "ipython" | "function") => Ok(Role::Tool),
        Some(other) => Err(format!(
            "message {i}: unknown role {other:?} (use system, user, assistant or tool)"
        )),
        None => Err(format!("message {i}: missing \"role\"")),
    }
}

fn content(v: &Value, i: usize) -> Result<String, String> {
    match v.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => out.push_str(t),
                    None => {
                        return Err(format!(
                            "message {i}: only text content parts are supported"
                        ));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(format!(
            "message {i}: \"content\" must be a string, null or a list of text parts"
        )),
    }
}

/// Reads a JSON array of messages.
pub fn messages_from_json(v: &Value) -> Result<Vec<Message>, String> {
    let arr = v.as_array().ok_or("messages must be a JSON array")?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, m) in arr.iter().enumerate() {
        if !m.is_object() {
            return Err(format!("message {i} is not a JSON object"));
        }
        let reasoning = ["reasoning", "reasoning_content", "thinking"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str))
            .map(str::to_string);
        let mut tool_calls = Vec::new();
        if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
            let calls = calls
                .as_array()
                .ok_or(format!("message {i}: \"tool_calls\" must be an array"))?;
            for (k, c) in calls.iter().enumerate() {
                let f = c.get("function").unwrap_or(c);
                let name = f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or(format!("message {i}, tool call {k}: missing \"name\""))?;
                let arguments = match f.get("arguments") {
                    None | Some(Value::Null) => Value::Object(Default::default()),
                    Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                        format!("message {i}, tool call {k}: arguments string is not JSON ({e})")
                    })?,
                    Some(a) => a.clone(),
                };
                let id = c
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{i}_{k}"));
                tool_calls.push(ToolCall {
                    id,
                    name: name.to_string(),
                    arguments,
                });
            }
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        out.push(Message {
            role: role(m, i)?,
            content: content(m, i)?,
            reasoning,
            tool_calls,
            tool_call_id: text("tool_call_id"),
            name: text("name"),
        });
    }
    Ok(out)
}

/// Reads a JSON array of tools: `{"name", "description", "parameters"}` or the OpenAI
/// `{"type": "function", "function": {...}}` form.
pub fn tools_from_json(v: &Value) -> Result<Vec<ToolSpec>, String> {
    let arr = v.as_array().ok_or("tools must be a JSON array")?;
    arr.iter()
        .enumerate()
        .map(|(i, t)| {
            let f = t.get("function").unwrap_or(t);
            Ok(ToolSpec {
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or(format!("tool {i}: missing \"name\""))?
                    .to_string(),
                description: f
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                parameters: f
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_forms_read() {
        let v = serde_json::json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "reasoning_content": "r",
             "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{\"k\": 1}"}}]},
            {"role": "tool", "tool_call_id": "x", "name": "f", "content": "ok"},
            {"role": "assistant", "content": "done", "tool_calls": [{"id": "y", "name": "g", "arguments": {"z": 2}}]},
        ]);
        let m = messages_from_json(&v).unwrap();
        assert_eq!(m[0].content, "ab");
        assert_eq!(m[1].reasoning.as_deref(), Some("r"));
        assert_eq!(m[1].tool_calls[0].arguments["k"], 1);
        assert_eq!(m[2].tool_call_id.as_deref(), Some("x"));
        assert_eq!(m[3].tool_calls[0].name, "g");
        assert!(messages_from_json(&serde_json::json!([{"role": "robot"}])).is_err());
        let t = tools_from_json(&serde_json::json!([{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}, {"name": "g"}])).unwrap();
        assert_eq!((t[0].name.as_str(), t[1].name.as_str()), ("f", "g"));
    }
}

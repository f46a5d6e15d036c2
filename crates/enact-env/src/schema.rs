//! A small JSON Schema validator for tool arguments: the subset tool specifications use
//! (`type`, `properties`, `required`, `additionalProperties`, `enum`, `items`, numeric and
//! length bounds). Unknown keywords are ignored, as JSON Schema prescribes.

use serde_json::Value;

/// Validates `value` against `schema`; returns every problem found, each naming its path.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check(schema, value, "arguments", &mut problems);
    problems
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, v: &Value) -> bool {
    match expected {
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => type_name(v) == other,
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    if let Some(t) = schema.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
            _ => vec![],
        };
        if !allowed.is_empty() && !allowed.iter().any(|t| type_matches(t, value)) {
            out.push(format!(
                "{path}: expected {}, got {}",
                allowed.join(" or "),
                type_name(value)
            ));
            return;
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        out.push(format!("{path}: must be one of {}", list.join(", ")));
    }
    match value {
        Value::Object(obj) => {
            let props = schema.get("properties").and_then(|p| p.as_object());
            if let Some(Value::Array(req)) = schema.get("required") {
                for r in req.iter().filter_map(|r| r.as_str()) {
                    if !obj.contains_key(r) {
                        out.push(format!("{path}: missing required property \"{r}\""));
                    }
                }
            }
            for (k, v) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => check(sub, v, &format!("{path}.{k}"), out),
                    None => {
                        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                            let known: Vec<&String> =
                                props.map(|p| p.keys().collect()).unwrap_or_default();
                            out.push(format!(
                                "{path}: unknown property \"{k}\" (known: {})",
                                known
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(item_schema, v, &format!("{path}[{i}]"), out);
                }
            }
            bound(
                schema,
                "minItems",
                "maxItems",
                items.len() as f64,
                path,
                "items",
                out,
            );
        }
        Value::String(s) => bound(
            schema,
            "minLength",
            "maxLength",
            s.chars().count() as f64,
            path,
            "characters",
            out,
        ),
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                bound(schema, "minimum", "maximum", x, path, "", out);
            }
        }
        _ => {}
    }
}

fn bound(
    schema: &serde_json::Map<String, Value>,
    lo: &str,
    hi: &str,
    x: f64,
    path: &str,
    unit: &str,
    out: &mut Vec<String>,
) {
    if let Some(min) = schema.get(lo).and_then(|v| v.as_f64())
        && x < min
    {
        out.push(
            format!("{path}: must be at least {min} {unit}")
                .trim_end()
                .to_string(),
        );
    }
    if let Some(max) = schema.get(hi).and_then(|v| v.as_f64())
        && x > max
    {
        out.push(
            format!("{path}: must be at most {max} {unit}")
                .trim_end()
                .to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_each_problem() {
        let schema = json!({"type":"object","properties":{"a":{"type":"string","maxLength":3},"n":{"type":"integer","minimum":0}},"required":["a"],"additionalProperties":false});
        assert!(validate(&schema, &json!({"a":"xy","n":2})).is_empty());
        let p = validate(&schema, &json!({"n":-1,"zz":1}));
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(validate(&schema, &json!("str")).len(), 1);
        assert_eq!(validate(&schema, &json!({"a":"toolong"})).len(), 1);
    }
}

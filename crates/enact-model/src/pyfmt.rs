//! Python behaviour that Hugging Face chat templates depend on, for minijinja values:
//! `json.dumps(x, ensure_ascii=False)` (transformers' `tojson`), `str()`/`repr()` of printed
//! values, and the string methods templates call (`strip`, `split`, …) with Python's exact rules.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind, from_args};

use minijinja::{Error, ErrorKind, State};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for exponents in
/// [-4, 16), scientific (`1e-05`, `1.5e+16`) otherwise. JSON uses the same spelling.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

fn number_repr(v: &Value) -> String {
    if v.is_integer() {
        // i64, u64 and i128 all print plainly.
        v.to_string()
    } else {
        match f64::try_from(v.clone()) {
            Ok(f) => py_float_repr(f),
            Err(_) => v.to_string(),
        }
    }
}

/// `json.dumps` string escaping.
fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Options of Python's `json.dumps`.
pub struct JsonStyle {
    pub ensure_ascii: bool,
    /// `None`: one line. `Some(s)`: newline and `s` per level.
    pub indent: Option<String>,
    pub item_sep: String,
    pub key_sep: String,
    pub sort_keys: bool,
}

impl Default for JsonStyle {
    fn default() -> Self {
        JsonStyle {
            ensure_ascii: false,
            indent: None,
            item_sep: ", ".into(),
            key_sep: ": ".into(),
            sort_keys: false,
        }
    }
}

/// `json.dumps(value, ...)` of a template value.
pub fn py_json(value: &Value, style: &JsonStyle) -> Result<String, Error> {
    let mut out = String::new();
    json_value(&mut out, value, style, 0)?;
    Ok(out)
}

fn newline(out: &mut String, style: &JsonStyle, level: usize) {
    if let Some(ind) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn json_key(v: &Value) -> Result<String, Error> {
    Ok(match v.kind() {
        ValueKind::String => v.as_str().unwrap_or_default().to_string(),
        ValueKind::Number => number_repr(v),
        ValueKind::Bool => if v.is_true() { "true" } else { "false" }.into(),
        ValueKind::None => "null".into(),
        k => {
            return Err(invalid(format!(
                "tojson: keys must be str, int, float, bool or None, not {k}"
            )));
        }
    })
}

fn json_value(out: &mut String, v: &Value, style: &JsonStyle, level: usize) -> Result<(), Error> {
    if level > 200 {
        return Err(invalid("tojson: value nested too deeply"));
    }
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number_repr(v)),
        ValueKind::String => json_string(out, v.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, style, level + 1);
                json_value(out, item, style, level + 1)?;
            }
            newline(out, style, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in v.try_iter()? {
                let val = v.get_item(&key)?;
                entries.push((json_key(&key)?, val));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, val)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, style, level + 1);
                json_string(out, k, style.ensure_ascii);
                out.push_str(&style.key_sep);
                json_value(out, val, style, level + 1)?;
            }
            newline(out, style, level);
            out.push('}');
        }
        ValueKind::Undefined => {
            return Err(invalid(
                "tojson: Object of type Undefined is not JSON serializable",
            ));
        }
        k => {
            return Err(invalid(format!(
                "tojson: Object of type {k} is not JSON serializable"
            )));
        }
    }
    Ok(())
}

/// `json.dumps(value, ensure_ascii=False)` of a JSON value (key order kept).
pub fn py_json_string(value: &serde_json::Value) -> String {
    let v = Value::from(minijinja::value::Serde(value));
    py_json(&v, &JsonStyle::default()).unwrap_or_else(|_| value.to_string())
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
pub fn tojson_filter(value: &Value, kwargs: &Kwargs) -> Result<Value, Error> {
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?;
    let indent = kwargs.get::<Option<Value>>("indent")?;
    let separators = kwargs.get::<Option<Value>>("separators")?;
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut style = JsonStyle {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
        ..Default::default()
    };
    if let Some(ind) = indent.filter(|i| !i.is_none()) {
        style.indent = Some(match ind.kind() {
            ValueKind::Number => " ".repeat(ind.as_i64().unwrap_or(0).clamp(0, 64) as usize),
            ValueKind::String => ind.as_str().unwrap_or_default().to_string(),
            _ => return Err(invalid("tojson: indent must be an int or a string")),
        });
        // Python's default separators with an indent.
        style.item_sep = ",".into();
    }
    if let Some(seps) = separators.filter(|s| !s.is_none()) {
        let parts: Vec<Value> = seps.try_iter()?.collect();
        match parts.as_slice() {
            [a, b] if a.as_str().is_some() && b.as_str().is_some() => {
                style.item_sep = a.as_str().unwrap_or_default().to_string();
                style.key_sep = b.as_str().unwrap_or_default().to_string();
            }
            _ => return Err(invalid("tojson: separators must be a pair of strings")),
        }
    }
    Ok(Value::from(py_json(value, &style)?))
}

/// Python's `repr()` of a string.
fn py_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr()` of a value (inside containers).
fn py_repr(out: &mut String, v: &Value, depth: usize) {
    if depth > 100 {
        out.push_str("...");
        return;
    }
    match v.kind() {
        ValueKind::String => py_str_repr(out, v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let tuple = v.is_tuple();
            out.push(if tuple { '(' } else { '[' });
            let items: Vec<Value> = v.try_iter().map(|i| i.collect()).unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(out, item, depth + 1);
            }
            if tuple && items.len() == 1 {
                out.push(',');
            }
            out.push(if tuple { ')' } else { ']' });
        }
        ValueKind::Map => {
            out.push('{');
            let keys: Vec<Value> = v.try_iter().map(|i| i.collect()).unwrap_or_default();
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(out, k, depth + 1);
                out.push_str(": ");
                py_repr(out, &v.get_item(k).unwrap_or_default(), depth + 1);
            }
            out.push('}');
        }
        _ => py_str(out, v, depth),
    }
}

/// Python's `str()` of a value: what `{{ value }}` prints in Jinja2.
pub fn py_str(out: &mut String, v: &Value, depth: usize) {
    match v.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&number_repr(v)),
        ValueKind::String => out.push_str(v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => py_repr(out, v, depth),
        _ => {
            let _ = write!(out, "{v}");
        }
    }
}

/// The formatter: prints values as Jinja2 does (Python `str()`), no auto-escaping.
pub fn formatter(
    out: &mut minijinja::Output,
    _state: &mut State,
    value: &Value,
) -> Result<(), Error> {
    let mut s = String::new();
    py_str(&mut s, value, 0);
    out.write_str(&s)
        .map_err(|_| invalid("failed to write template output"))
}

/// Python's `str.isspace` for one character (Rust's `is_whitespace` plus U+001C..U+001F).
pub fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split(sep, maxsplit)`.
pub fn py_split(s: &str, sep: Option<&str>, maxsplit: Option<i64>) -> Result<Vec<String>, Error> {
    let max = maxsplit.filter(|&m| m >= 0).map(|m| m as usize);
    match sep {
        Some("") => Err(invalid("split: empty separator")),
        Some(sep) => Ok(match max {
            None => s.split(sep).map(str::to_string).collect(),
            Some(n) => s.splitn(n + 1, sep).map(str::to_string).collect(),
        }),
        None => {
            let mut out = Vec::new();
            let mut rest = s.trim_start_matches(py_space);
            while !rest.is_empty() {
                if max.is_some_and(|n| out.len() >= n) {
                    out.push(rest.to_string());
                    break;
                }
                let end = rest.find(py_space).unwrap_or(rest.len());
                out.push(rest[..end].to_string());
                rest = rest[end..].trim_start_matches(py_space);
            }
            Ok(out)
        }
    }
}

/// Python's `str.rsplit(sep, maxsplit)`.
pub fn py_rsplit(s: &str, sep: Option<&str>, maxsplit: Option<i64>) -> Result<Vec<String>, Error> {
    let max = maxsplit.filter(|&m| m >= 0).map(|m| m as usize);
    match (sep, max) {
        (_, None) => py_split(s, sep, None),
        (Some(""), _) => Err(invalid("rsplit: empty separator")),
        (Some(sep), Some(n)) => {
            let mut v: Vec<String> = s.rsplitn(n + 1, sep).map(str::to_string).collect();
            v.reverse();
            Ok(v)
        }
        (None, Some(n)) => {
            let mut out = Vec::new();
            let mut rest = s.trim_end_matches(py_space);
            while !rest.is_empty() {
                if out.len() >= n {
                    out.push(rest.to_string());
                    break;
                }
                let start = rest
                    .rfind(py_space)
                    .map(|i| i + rest[i..].chars().next().map_or(1, char::len_utf8))
                    .unwrap_or(0);
                out.push(rest[start..].to_string());
                rest = rest[..start].trim_end_matches(py_space);
            }
            out.reverse();
            Ok(out)
        }
    }
}

fn strip_set(chars: Option<&str>) -> impl Fn(char) -> bool + '_ {
    move |c| match chars {
        Some(set) => set.contains(c),
        None => py_space(c),
    }
}

/// String methods with Python's exact semantics; `None` when not handled here.
fn string_method(s: &str, method: &str, args: &[Value]) -> Option<Result<Value, Error>> {
    let r = (|| -> Result<Value, Error> {
        Ok(match method {
            "strip" | "lstrip" | "rstrip" => {
                let (chars,): (Option<Value>,) = from_args(args)?;
                let chars = chars.filter(|c| !c.is_none());
                let set = chars.as_ref().map(|c| c.as_str().unwrap_or_default());
                let f = strip_set(set);
                Value::from(match method {
                    "strip" => s.trim_matches(f),
                    "lstrip" => s.trim_start_matches(f),
                    _ => s.trim_end_matches(f),
                })
            }
            "split" | "rsplit" => {
                let (sep, maxsplit, kwargs): (Option<Value>, Option<i64>, Kwargs) =
                    from_args(args)?;
                let sep = kwargs.get::<Option<Value>>("sep")?.or(sep);
                let maxsplit = kwargs.get::<Option<i64>>("maxsplit")?.or(maxsplit);
                kwargs.assert_all_used()?;
                let sep = sep.filter(|v| !v.is_none());
                let sep_str = match &sep {
                    Some(v) => Some(
                        v.as_str()
                            .ok_or_else(|| invalid("split: separator must be a string"))?,
                    ),
                    None => None,
                };
                let parts = if method == "split" {
                    py_split(s, sep_str, maxsplit)?
                } else {
                    py_rsplit(s, sep_str, maxsplit)?
                };
                Value::from(parts)
            }
            "removeprefix" => {
                let (p,): (&str,) = from_args(args)?;
                Value::from(s.strip_prefix(p).unwrap_or(s))
            }
            "removesuffix" => {
                let (p,): (&str,) = from_args(args)?;
                Value::from(s.strip_suffix(p).unwrap_or(s))
            }
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        })
    })();
    match r {
        Err(e) if e.kind() == ErrorKind::UnknownMethod => None,
        r => Some(r),
    }
}

/// The unknown-method callback: Python string methods, then minijinja-contrib's pycompat.
pub fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str()
        && let Some(r) = string_method(s, method, args)
    {
        return r;
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn floats_print_like_python() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (2.5, "2.5"),
            (1e-7, "1e-07"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (123456789.0, "123456789.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (-3.25, "-3.25"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "Infinity"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "{f:e}");
        }
    }

    #[test]
    fn split_and_strip_follow_python() {
        assert_eq!(py_split("  a b  c ", None, None).unwrap(), ["a", "b", "c"]);
        assert_eq!(
            py_split("  a b  c ", None, Some(1)).unwrap(),
            ["a", "b  c "]
        );
        assert_eq!(
            py_split("a</think>b</think>c", Some("</think>"), None).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(py_split("abc", Some("</think>"), None).unwrap(), ["abc"]);
        assert_eq!(py_split("", None, None).unwrap(), Vec::<String>::new());
        assert_eq!(py_split("", Some(","), None).unwrap(), [""]);
        assert!(py_split("x", Some(""), None).is_err());
        assert_eq!(py_rsplit("a b c", None, Some(1)).unwrap(), ["a b", "c"]);
        assert_eq!(
            py_rsplit("a.b.c", Some("."), Some(1)).unwrap(),
            ["a.b", "c"]
        );
        assert!(py_space('\u{1f}') && !'\u{1f}'.is_whitespace());
    }

    #[test]
    fn json_matches_python_dumps() {
        let v = Value::from(minijinja::value::Serde(serde_json::json!({
            "z": 1, "a": {"y": [1, 2.5, 1e-7, true, null], "é": "ü\n\"\u{1}"}, "e": {}, "l": []
        })));
        assert_eq!(
            py_json(&v, &JsonStyle::default()).unwrap(),
            r#"{"z": 1, "a": {"y": [1, 2.5, 1e-07, true, null], "é": "ü\n\"\u0001"}, "e": {}, "l": []}"#
        );
        let style = JsonStyle {
            indent: Some("  ".into()),
            item_sep: ",".into(),
            ..Default::default()
        };
        assert_eq!(
            py_json(
                &Value::from(minijinja::value::Serde(
                    serde_json::json!({"a": [1, 2], "b": {}})
                )),
                &style
            )
            .unwrap(),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {}\n}"
        );
        let ascii = JsonStyle {
            ensure_ascii: true,
            ..Default::default()
        };
        assert_eq!(
            py_json(&Value::from("é🌍"), &ascii).unwrap(),
            r#""\u00e9\ud83c\udf0d""#
        );
    }
}

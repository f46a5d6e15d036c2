//! A lenient JSON reader for what small models write as tool-call arguments.
//!
//! Accepts standard JSON plus: trailing commas, single-quoted strings, unquoted object keys
//! (identifiers), Python literals `True`/`False`/`None`, raw control characters inside strings,
//! `//` and `/* */` comments, and a leading `+` on numbers. Object key order is kept.
//! Input that ends early is reported as [`LenientError::Incomplete`] (a call cut off).

use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum LenientError {
    /// The text ended before the value did.
    Incomplete,
    /// A syntax error at a byte offset.
    Syntax { at: usize, what: String },
}

impl std::fmt::Display for LenientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LenientError::Incomplete => write!(f, "the JSON ends before it is complete"),
            LenientError::Syntax { at, what } => write!(f, "{what} at byte {at}"),
        }
    }
}

struct P<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
    depth: usize,
}

type R<T> = Result<T, LenientError>;

impl<'a> P<'a> {
    fn err<T>(&self, what: &str) -> R<T> {
        Err(LenientError::Syntax {
            at: self.i,
            what: what.into(),
        })
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.i += 1,
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'/') => {
                    while let Some(c) = self.peek() {
                        self.i += 1;
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'*') => {
                    // Byte-wise search: the comment may hold multi-byte characters.
                    self.i += 2;
                    match self.s[self.i..].windows(2).position(|w| w == b"*/") {
                        Some(k) => self.i += k + 2,
                        None => self.i = self.s.len(),
                    }
                }
                _ => return,
            }
        }
    }
    fn value(&mut self) -> R<Value> {
        self.ws();
        self.depth += 1;
        if self.depth > 128 {
            return self.err("nested too deeply");
        }
        let v = match self.peek() {
            None => Err(LenientError::Incomplete),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::String),
            Some(b'-' | b'+' | b'0'..=b'9' | b'.') => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let word = self.ident();
                match word {
                    "true" | "True" => Ok(Value::Bool(true)),
                    "false" | "False" => Ok(Value::Bool(false)),
                    "null" | "None" => Ok(Value::Null),
                    _ if self.i >= self.s.len()
                        && ["true", "false", "null", "True", "False", "None"]
                            .iter()
                            .any(|w| w.starts_with(word)) =>
                    {
                        Err(LenientError::Incomplete)
                    }
                    _ => self.err(&format!("unexpected word {word:?}")),
                }
            }
            Some(_) => self.err("unexpected character"),
        };
        self.depth -= 1;
        v
    }
    fn ident(&mut self) -> &'a str {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'-' {
                self.i += 1;
            } else {
                break;
            }
        }
        &self.src[start..self.i]
    }
    fn object(&mut self) -> R<Value> {
        self.i += 1;
        let mut map = Map::new();
        loop {
            self.ws();
            match self.peek() {
                None => return Err(LenientError::Incomplete),
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(map));
                }
                Some(q @ (b'"' | b'\'')) => {
                    let k = self.string(q)?;
                    self.colon_value(&mut map, k)?;
                }
                Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                    let k = self.ident().to_string();
                    self.colon_value(&mut map, k)?;
                }
                Some(_) => return self.err("expected an object key"),
            }
            self.ws();
            match self.peek() {
                None => return Err(LenientError::Incomplete),
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                Some(_) => return self.err("expected ',' or '}'"),
            }
        }
    }
    fn colon_value(&mut self, map: &mut Map<String, Value>, k: String) -> R<()> {
        self.ws();
        match self.peek() {
            None => return Err(LenientError::Incomplete),
            Some(b':') => self.i += 1,
            Some(_) => return self.err("expected ':'"),
        }
        let v = self.value()?;
        map.insert(k, v);
        Ok(())
    }
    fn array(&mut self) -> R<Value> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                None => return Err(LenientError::Incomplete),
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(out));
                }
                _ => out.push(self.value()?),
            }
            self.ws();
            match self.peek() {
                None => return Err(LenientError::Incomplete),
                Some(b',') => self.i += 1,
                Some(b']') => {}
                Some(_) => return self.err("expected ',' or ']'"),
            }
        }
    }
    fn hex4(&mut self) -> R<u32> {
        let h = self
            .src
            .get(self.i..self.i + 4)
            .ok_or(LenientError::Incomplete)?;
        let v = u32::from_str_radix(h, 16).or_else(|_| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }
    fn string(&mut self, quote: u8) -> R<String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(c) = self.peek() {
                if c == quote || c == b'\\' {
                    break;
                }
                self.i += 1;
            }
            out.push_str(&self.src[start..self.i]);
            match self.peek() {
                None => return Err(LenientError::Incomplete),
                Some(c) if c == quote => {
                    self.i += 1;
                    return Ok(out);
                }
                _ => {
                    self.i += 1;
                    let Some(e) = self.peek() else {
                        return Err(LenientError::Incomplete);
                    };
                    self.i += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'/' => out.push('/'),
                        b'\\' => out.push('\\'),
                        b'"' => out.push('"'),
                        b'\'' => out.push('\''),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.src[self.i..].starts_with("\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                        }
                        other => {
                            // Unknown escape: keep it literally.
                            out.push('\\');
                            self.i -= 1;
                            let ch = self.src[self.i..].chars().next().unwrap_or('\u{FFFD}');
                            let _ = other;
                            out.push(ch);
                            self.i += ch.len_utf8();
                        }
                    }
                }
            }
        }
    }
    fn number(&mut self) -> R<Value> {
        let start = self.i;
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.i += 1;
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-') {
                self.i += 1;
            } else {
                break;
            }
        }
        let text = self.src[start..self.i].trim_start_matches('+');
        if self.i >= self.s.len() {
            // A number at the very end may be cut off.
            return Err(LenientError::Incomplete);
        }
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        match text.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Ok(Value::Number(n)),
            None => self.err(&format!("bad number {text:?}")),
        }
    }
}

/// Parses one value and returns it with the number of bytes consumed (trailing text is left
/// to the caller).
pub fn parse_prefix(text: &str) -> Result<(Value, usize), LenientError> {
    let mut p = P {
        s: text.as_bytes(),
        src: text,
        i: 0,
        depth: 0,
    };
    let v = p.value()?;
    Ok((v, p.i))
}

/// Parses exactly one value (whitespace around it allowed). Strict JSON first, then lenient.
pub fn parse(text: &str) -> Result<Value, LenientError> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    let (v, used) = parse_prefix(text)?;
    let mut p = P {
        s: text.as_bytes(),
        src: text,
        i: used,
        depth: 0,
    };
    p.ws();
    if p.i < text.len() {
        return p.err("unexpected text after the JSON value");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_forms() {
        assert_eq!(parse(r#"{"a": 1,}"#).unwrap(), json!({"a": 1}));
        assert_eq!(
            parse("{'a': 'it\\'s', b: [1, 2,], c: True, d: None}").unwrap(),
            json!({"a": "it's", "b": [1, 2], "c": true, "d": null})
        );
        assert_eq!(
            parse("{\"s\": \"line\nbreak\"} // note").unwrap(),
            json!({"s": "line\nbreak"})
        );
        assert_eq!(
            parse(r#"{"u": "\u00e9\ud83c\udf0d", "n": -1.5e3, "p": +2}"#).unwrap(),
            json!({"u": "é🌍", "n": -1500.0, "p": 2})
        );
        let v = parse(r#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["z", "a"]
        );
    }

    #[test]
    fn incomplete_and_errors() {
        assert_eq!(parse(r#"{"a": {"b": 1"#), Err(LenientError::Incomplete));
        assert_eq!(
            parse(r#"{"a": "unterminated"#),
            Err(LenientError::Incomplete)
        );
        assert_eq!(parse(r#"{"a": 12"#), Err(LenientError::Incomplete));
        assert_eq!(parse(r#"{"a": tr"#), Err(LenientError::Incomplete));
        assert!(matches!(
            parse(r#"{"a" 1}"#),
            Err(LenientError::Syntax { .. })
        ));
        assert!(matches!(
            parse(r#"{"a": 1} extra"#),
            Err(LenientError::Syntax { .. })
        ));
        assert!(matches!(
            parse("{\"a\": nope}"),
            Err(LenientError::Syntax { .. })
        ));
        let deep = "[".repeat(1000);
        assert!(parse(&deep).is_err());
        let (v, used) = parse_prefix(r#"{"a": 1}; {"b": 2}"#).unwrap();
        assert_eq!((v, used), (json!({"a": 1}), 8));
    }

    #[test]
    fn block_comment_with_multibyte_text_does_not_panic() {
        assert_eq!(parse("{/* é 🌍 */ \"a\": 1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse("[1, /* 中文"), Err(LenientError::Incomplete));
        assert_eq!(parse("{/*é*/a: 'x'}").unwrap(), json!({"a": "x"}));
    }

    #[test]
    fn random_inputs_never_panic() {
        // Hand-rolled fuzzing: fragments of JSON syntax, multi-byte text and bad escapes.
        const PIECES: &[&str] = &[
            "{", "}", "[", "]", ",", ":", "\"", "'", "\\", "\\u", "\\ud83c", "d83c", "/*", "*/",
            "//", "\n", "é", "🌍", "中", "a", "1", "-", "+", ".", "e", "true", "None", " ", "\0",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut text = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(PIECES[(seed % PIECES.len() as u64) as usize]);
            }
            let _ = parse(&text);
            let _ = parse_prefix(&text);
        }
    }
}

//! Python values as type-tagged JSON.
//!
//! The grader never asks candidate code whether two values are equal (an `__eq__` override
//! would say yes to anything). The driver serialises the candidate's result with exact type
//! checks (`type(v) is int`, so `bool`, subclasses and look-alikes are told apart) and the
//! parent compares the serialised forms.

use serde_json::{Value, json};

/// A plain Python value.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    pub fn str(s: impl Into<String>) -> Self {
        PyValue::Str(s.into())
    }
    pub fn ints(xs: &[i64]) -> Self {
        PyValue::List(xs.iter().map(|&x| PyValue::Int(x)).collect())
    }

    /// A value from plain JSON, as task files write cases: `null`, booleans, integers
    /// (`3`), floats (`3.0`), strings, arrays (lists) and objects (dicts with string keys).
    /// `{"tuple": [...]}` is a tuple. Integers beyond i64 are refused.
    pub fn from_json(v: &Value) -> Result<PyValue, String> {
        Ok(match v {
            Value::Null => PyValue::None,
            Value::Bool(b) => PyValue::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.is_f64()) {
                (Some(i), false) => PyValue::Int(i),
                (_, true) => PyValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                _ => return Err(format!("integer {n} is out of range")),
            },
            Value::String(s) => PyValue::Str(s.clone()),
            Value::Array(a) => {
                PyValue::List(a.iter().map(PyValue::from_json).collect::<Result<_, _>>()?)
            }
            Value::Object(m) => match m.get("tuple") {
                Some(Value::Array(a)) if m.len() == 1 => {
                    PyValue::Tuple(a.iter().map(PyValue::from_json).collect::<Result<_, _>>()?)
                }
                _ => PyValue::Dict(
                    m.iter()
                        .map(|(k, v)| Ok((PyValue::Str(k.clone()), PyValue::from_json(v)?)))
                        .collect::<Result<_, String>>()?,
                ),
            },
        })
    }

    /// The tagged JSON form, e.g. `{"int": "3"}`, `{"list": [{"str": "a"}]}`.
    pub fn to_tagged(&self) -> Value {
        match self {
            PyValue::None => json!({"none": null}),
            PyValue::Bool(b) => json!({ "bool": b }),
            PyValue::Int(i) => json!({"int": i.to_string()}),
            PyValue::Float(f) => json!({"float": format!("{f:?}")}),
            PyValue::Str(s) => json!({ "str": s }),
            PyValue::List(v) => {
                json!({"list": v.iter().map(PyValue::to_tagged).collect::<Vec<_>>()})
            }
            PyValue::Tuple(v) => {
                json!({"tuple": v.iter().map(PyValue::to_tagged).collect::<Vec<_>>()})
            }
            PyValue::Dict(kv) => json!({"dict": kv
                .iter()
                .map(|(k, v)| json!([k.to_tagged(), v.to_tagged()]))
                .collect::<Vec<_>>()}),
        }
    }

    /// Python source for the value (`repr`), used in generated visible tests.
    pub fn to_python(&self) -> String {
        match self {
            PyValue::None => "None".into(),
            PyValue::Bool(true) => "True".into(),
            PyValue::Bool(false) => "False".into(),
            PyValue::Int(i) => i.to_string(),
            PyValue::Float(f) => format!("{f:?}"),
            PyValue::Str(s) => python_str(s),
            PyValue::List(v) => format!(
                "[{}]",
                v.iter()
                    .map(PyValue::to_python)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            PyValue::Tuple(v) if v.len() == 1 => format!("({},)", v[0].to_python()),
            PyValue::Tuple(v) => format!(
                "({})",
                v.iter()
                    .map(PyValue::to_python)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            PyValue::Dict(kv) => format!(
                "{{{}}}",
                kv.iter()
                    .map(|(k, v)| format!("{}: {}", k.to_python(), v.to_python()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A Python string literal (double-quoted, escaped).
pub fn python_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Canonical form for comparison: dict entries sorted, floats parsed. Returns `None` for a
/// malformed tagged value (which then never equals anything).
fn canonical(v: &Value, depth: usize) -> Option<Value> {
    if depth > 64 {
        return None;
    }
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let (tag, inner) = obj.iter().next()?;
    Some(match tag.as_str() {
        "none" if inner.is_null() => json!({"none": null}),
        "bool" if inner.is_boolean() => v.clone(),
        "int" => {
            let s = inner.as_str()?;
            // Accept only Python's canonical decimal form.
            let ok = !s.is_empty()
                && s.strip_prefix('-')
                    .unwrap_or(s)
                    .chars()
                    .all(|c| c.is_ascii_digit());
            if !ok {
                return None;
            }
            v.clone()
        }
        "float" => {
            let f: f64 = inner.as_str()?.parse().ok()?;
            if f.is_finite() {
                json!({ "float": f })
            } else {
                // JSON numbers cannot hold these (`json!` would make all three `null`,
                // equal to each other): keep them apart by name.
                let name = if f.is_nan() {
                    "nan"
                } else if f > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                json!({ "float": name })
            }
        }
        "str" if inner.is_string() => v.clone(),
        "list" | "tuple" => {
            let items = inner.as_array()?;
            let c: Option<Vec<Value>> = items.iter().map(|x| canonical(x, depth + 1)).collect();
            json!({ tag.as_str(): c? })
        }
        "dict" => {
            let items = inner.as_array()?;
            let mut pairs = Vec::with_capacity(items.len());
            for p in items {
                let p = p.as_array()?;
                if p.len() != 2 {
                    return None;
                }
                let k = canonical(&p[0], depth + 1)?;
                let val = canonical(&p[1], depth + 1)?;
                pairs.push((k.to_string(), json!([k, val])));
            }
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            json!({"dict": pairs.into_iter().map(|(_, p)| p).collect::<Vec<_>>()})
        }
        _ => return None,
    })
}

/// Whether a candidate's tagged result equals the expected value exactly (types included).
/// Floats compare with a relative tolerance of 1e-9.
pub fn tagged_equal(got: &Value, expected: &PyValue) -> bool {
    let (Some(a), Some(b)) = (canonical(got, 0), canonical(&expected.to_tagged(), 0)) else {
        return false;
    };
    values_close(&a, &b)
}

fn values_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if let (Some(Value::Number(p)), Some(Value::Number(q))) =
                (x.get("float"), y.get("float"))
            {
                let (p, q) = (
                    p.as_f64().unwrap_or(f64::NAN),
                    q.as_f64().unwrap_or(f64::NAN),
                );
                return (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0);
            }
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_close(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_close(p, q))
        }
        _ => a == b,
    }
}

/// A short readable form of a tagged value for check details.
pub fn describe_tagged(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn from_plain_json() {
        let v = PyValue::from_json(&json!([1, 1.0, "a", null, true, {"k": [2]}, {"tuple": [3]}]))
            .unwrap();
        assert_eq!(
            v,
            PyValue::List(vec![
                PyValue::Int(1),
                PyValue::Float(1.0),
                PyValue::str("a"),
                PyValue::None,
                PyValue::Bool(true),
                PyValue::Dict(vec![(PyValue::str("k"), PyValue::ints(&[2]))]),
                PyValue::Tuple(vec![PyValue::Int(3)]),
            ])
        );
        assert!(PyValue::from_json(&json!(u64::MAX)).is_err());
    }

    #[test]
    fn exact_types() {
        let one = PyValue::Int(1);
        assert!(tagged_equal(&json!({"int": "1"}), &one));
        assert!(!tagged_equal(&json!({"bool": true}), &one));
        assert!(!tagged_equal(&json!({"float": "1.0"}), &one));
        assert!(!tagged_equal(&json!({"str": "1"}), &one));
        assert!(!tagged_equal(&json!({"int": "01"}), &PyValue::Int(2)));
        let l = PyValue::ints(&[1, 2]);
        assert!(tagged_equal(
            &json!({"list": [{"int":"1"},{"int":"2"}]}),
            &l
        ));
        assert!(!tagged_equal(
            &json!({"tuple": [{"int":"1"},{"int":"2"}]}),
            &l
        ));
        assert!(!tagged_equal(&json!({"list": [{"int":"1"}]}), &l));
        assert!(!tagged_equal(&json!({"int": "1", "str": "x"}), &one));
        assert!(!tagged_equal(&json!("anything"), &one));
        assert!(!tagged_equal(&json!({"object": "AlwaysEqual"}), &one));
    }

    #[test]
    fn dicts_compare_unordered_and_floats_tolerant() {
        let d = PyValue::Dict(vec![
            (PyValue::str("a"), PyValue::Int(1)),
            (PyValue::str("b"), PyValue::Int(2)),
        ]);
        let got = json!({"dict": [[{"str":"b"},{"int":"2"}], [{"str":"a"},{"int":"1"}]]});
        assert!(tagged_equal(&got, &d));
        assert!(tagged_equal(
            &json!({"float": "0.30000000000000004"}),
            &PyValue::Float(0.3)
        ));
        assert!(!tagged_equal(
            &json!({"float": "0.31"}),
            &PyValue::Float(0.3)
        ));
    }

    #[test]
    fn python_source() {
        let v = PyValue::List(vec![
            PyValue::Tuple(vec![PyValue::str("a\"b"), PyValue::Int(-2)]),
            PyValue::Tuple(vec![PyValue::Bool(true)]),
            PyValue::None,
        ]);
        assert_eq!(v.to_python(), "[(\"a\\\"b\", -2), (True,), None]");
    }

    #[test]
    fn non_finite_floats_are_told_apart() {
        let inf = PyValue::Float(f64::INFINITY);
        assert!(tagged_equal(&json!({"float": "inf"}), &inf));
        assert!(!tagged_equal(&json!({"float": "nan"}), &inf));
        assert!(!tagged_equal(&json!({"float": "-inf"}), &inf));
        assert!(tagged_equal(
            &json!({"float": "nan"}),
            &PyValue::Float(f64::NAN)
        ));
        assert!(!tagged_equal(
            &json!({"float": "inf"}),
            &PyValue::Float(1.5)
        ));
        assert!(tagged_equal(&json!({"float": "1.5"}), &PyValue::Float(1.5)));
    }
}

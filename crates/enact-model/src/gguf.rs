//! A GGUF metadata reader: the key/value section only, never the tensors.
//!
//! GGUF (versions 2 and 3) starts with `GGUF`, a `u32` version, a `u64` tensor count and a `u64`
//! key/value count, then the key/values, little-endian. We stop after the key/values, so reading
//! the tokenizer and chat template of a multi-gigabyte model costs only the metadata.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::ModelError;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer type, as `i64` (`u64` values above `i64::MAX` give `None`).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => i64::try_from(v).ok()?,
            GgufValue::I64(v) => v,
            _ => return None,
        })
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            GgufValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The metadata of a GGUF file, in file order.
#[derive(Debug, Clone, Default)]
pub struct GgufMetadata {
    pub version: u32,
    pub tensor_count: u64,
    entries: Vec<(String, GgufValue)>,
    index: HashMap<String, usize>,
}

/// Longest string we accept (a chat template or a token): far above real files.
const MAX_STRING: u64 = 64 << 20;
/// Most elements of one array (vocabularies are ~10^5..10^6).
const MAX_ARRAY: u64 = 1 << 26;
/// Most key/values.
const MAX_KV: u64 = 1 << 20;

struct Reader<R: Read> {
    inner: R,
    path: String,
}

impl<R: Read> Reader<R> {
    fn bad(&self, what: impl std::fmt::Display) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            detail: what.to_string(),
        }
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ModelError> {
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| self.bad(format!("truncated metadata ({e})")))?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> Result<String, ModelError> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(self.bad(format!("a string of {n} bytes is implausibly long")));
        }
        let mut buf = Vec::new();
        (&mut self.inner)
            .take(n)
            .read_to_end(&mut buf)
            .map_err(|e| self.bad(format!("truncated string ({e})")))?;
        if buf.len() as u64 != n {
            return Err(self.bad("truncated string"));
        }
        // Token strings of some vocabularies are not valid UTF-8 on their own; keep them lossy.
        Ok(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue, ModelError> {
        Ok(match ty {
            0 => GgufValue::U8(u8::from_le_bytes(self.bytes()?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.bytes()?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.bytes()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.bytes()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.bytes()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.bytes()?)),
            7 => GgufValue::Bool(u8::from_le_bytes(self.bytes()?) != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(self.bad("arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                if n > MAX_ARRAY {
                    return Err(self.bad(format!("an array of {n} elements is implausibly long")));
                }
                let mut v = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.bad(format!("unknown value type {other}"))),
        })
    }
}

impl GgufMetadata {
    /// Reads the metadata of a GGUF file.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_reader(BufReader::new(file), &path.display().to_string())
    }

    /// Reads metadata from any reader positioned at the start of a GGUF file.
    pub fn from_reader(reader: impl Read, name: &str) -> Result<Self, ModelError> {
        let mut r = Reader {
            inner: reader,
            path: name.to_string(),
        };
        let magic: [u8; 4] = r.bytes()?;
        if &magic != b"GGUF" {
            return Err(r.bad("not a GGUF file (bad magic)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.bad(format!(
                "GGUF version {version} is not supported (only 2 and 3)"
            )));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        if kv_count > MAX_KV {
            return Err(r.bad(format!("{kv_count} metadata entries is implausible")));
        }
        let mut meta = GgufMetadata {
            version,
            tensor_count,
            ..Default::default()
        };
        for _ in 0..kv_count {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            meta.index.insert(key.clone(), meta.entries.len());
            meta.entries.push((key, value));
        }
        Ok(meta)
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(GgufValue::as_i64)
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(GgufValue::as_bool)
    }
    /// An array of strings (`None` if absent or not all strings).
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_str())
            .collect()
    }
    /// An array of integers (`None` if absent or not all integers).
    pub fn get_i64_array(&self, key: &str) -> Option<Vec<i64>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(GgufValue::as_i64)
            .collect()
    }
    /// All keys, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Writes a GGUF header with the given key/values (strings, u32s, bools, string arrays).
    pub(crate) fn write_gguf(kvs: &[(&str, GgufValue)]) -> Vec<u8> {
        fn s(out: &mut Vec<u8>, v: &str) {
            out.extend((v.len() as u64).to_le_bytes());
            out.extend(v.as_bytes());
        }
        fn val(out: &mut Vec<u8>, v: &GgufValue) {
            match v {
                GgufValue::String(x) => s(out, x),
                GgufValue::U32(x) => out.extend(x.to_le_bytes()),
                GgufValue::I32(x) => out.extend(x.to_le_bytes()),
                GgufValue::Bool(x) => out.push(u8::from(*x)),
                GgufValue::Array(a) => {
                    let ty = match a.first() {
                        Some(GgufValue::String(_)) | None => 8u32,
                        Some(GgufValue::I32(_)) => 5,
                        Some(GgufValue::U32(_)) => 4,
                        _ => unimplemented!(),
                    };
                    out.extend(ty.to_le_bytes());
                    out.extend((a.len() as u64).to_le_bytes());
                    for x in a {
                        val(out, x);
                    }
                }
                _ => unimplemented!(),
            }
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((kvs.len() as u64).to_le_bytes());
        for (k, v) in kvs {
            s(&mut out, k);
            let ty: u32 = match v {
                GgufValue::String(_) => 8,
                GgufValue::U32(_) => 4,
                GgufValue::I32(_) => 5,
                GgufValue::Bool(_) => 7,
                GgufValue::Array(_) => 9,
                _ => unimplemented!(),
            };
            out.extend(ty.to_le_bytes());
            val(&mut out, v);
        }
        out
    }

    #[test]
    fn reads_written_metadata_and_rejects_garbage() {
        let bytes = write_gguf(&[
            ("general.name", GgufValue::String("tiny".into())),
            ("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
            ("tokenizer.ggml.add_bos_token", GgufValue::Bool(false)),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Array(vec![
                    GgufValue::String("a".into()),
                    GgufValue::String("b".into()),
                ]),
            ),
        ]);
        let m = GgufMetadata::from_reader(&bytes[..], "mem").unwrap();
        assert_eq!(m.get_str("general.name"), Some("tiny"));
        assert_eq!(m.get_i64("tokenizer.ggml.bos_token_id"), Some(1));
        assert_eq!(m.get_bool("tokenizer.ggml.add_bos_token"), Some(false));
        assert_eq!(
            m.get_str_array("tokenizer.ggml.tokens").unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(m.keys().count(), 4);

        assert!(GgufMetadata::from_reader(&b"GGML...."[..], "x").is_err());
        // Truncated anywhere: an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(GgufMetadata::from_reader(&bytes[..cut], "x").is_err());
        }
        // A huge declared length is refused before allocating.
        let mut huge = b"GGUF".to_vec();
        huge.extend(3u32.to_le_bytes());
        huge.extend(0u64.to_le_bytes());
        huge.extend(1u64.to_le_bytes());
        huge.extend(u64::MAX.to_le_bytes());
        assert!(GgufMetadata::from_reader(&huge[..], "x").is_err());
    }
}

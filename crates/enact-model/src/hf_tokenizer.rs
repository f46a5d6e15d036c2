//! Hugging Face `tokenizers` behind the [`enact_core::Tokenizer`] seam, loaded from a
//! `tokenizer.json` or built from GGUF metadata.
//!
//! Encoding recognises added tokens (`<|im_start|>`, `<think>`, …) in the text, because rendered
//! chat templates contain them, and never adds BOS/EOS: chat templates write the BOS themselves
//! where a model wants one (as Hugging Face `apply_chat_template` does, which tokenizes with
//! `add_special_tokens=False`), and a suffix appended to a context must never gain one.
//! [`HfTokenizer::add_bos_token`] tells whether the model asks for a BOS on raw text.
//! Decoding keeps special tokens, so a decoded context reads as the rendered template.

use std::collections::HashMap;
use std::path::Path;

use enact_core::{Tokenizer, TokenizerError};
use serde_json::{Value, json};

use crate::error::ModelError;
use crate::gguf::GgufMetadata;

/// Llama-3's split (llama.cpp `llama-bpe`).
pub const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2/Qwen3's split (llama.cpp `qwen2`): like Llama-3's but one digit at a time.
pub const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer family of a byte-level BPE vocabulary (GGUF `tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's regex split (`gpt-2`, `default`).
    Gpt2,
    /// Digits one by one, then GPT-2's split (`smollm`, `starcoder`, `refact`, …).
    DigitsThenGpt2,
    /// Llama-3's split (`llama-bpe`, `llama3`, `falcon3`, …).
    Llama3,
    /// Qwen2's split (`qwen2`, `deepseek-r1-qwen`, `megrez`).
    Qwen2,
}

impl PreTokenizer {
    /// Maps llama.cpp's `tokenizer.ggml.pre` names; `None` for ones not supported.
    pub fn from_gguf_name(pre: &str) -> Option<Self> {
        Some(match pre {
            "default" | "gpt-2" | "gpt2" => PreTokenizer::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => PreTokenizer::DigitsThenGpt2,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "smaug-bpe"
            | "dbrx" | "pixtral" | "lfm2" | "midm-2.0" => PreTokenizer::Llama3,
            "qwen2" | "deepseek-r1-qwen" | "megrez" | "kormo" => PreTokenizer::Qwen2,
            _ => return None,
        })
    }

    /// The `pre_tokenizer` section of a `tokenizer.json`.
    pub fn to_json(self) -> Value {
        let byte_level = |use_regex: bool, trim: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": trim, "use_regex": use_regex});
        let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
        match self {
            PreTokenizer::Gpt2 => byte_level(true, true),
            PreTokenizer::DigitsThenGpt2 => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true, true),
            ]}),
            PreTokenizer::Llama3 => json!({"type": "Sequence", "pretokenizers": [
                split(LLAMA3_SPLIT),
                byte_level(false, false),
            ]}),
            PreTokenizer::Qwen2 => json!({"type": "Sequence", "pretokenizers": [
                split(QWEN2_SPLIT),
                byte_level(false, false),
            ]}),
        }
    }
}

/// A Hugging Face tokenizer with the model's special tokens.
#[derive(Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    name: String,
    /// Added tokens (special or not) by text: matched whole when encoding.
    added: HashMap<String, u32>,
    vocab_size: usize,
    bos: Option<String>,
    eos: Option<String>,
    add_bos: bool,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("name", &self.name)
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl HfTokenizer {
    /// Wraps a `tokenizers::Tokenizer`.
    pub fn new(inner: tokenizers::Tokenizer, name: impl Into<String>) -> Self {
        let added: HashMap<String, u32> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (t.content, id))
            .collect();
        let vocab_size = inner.get_vocab_size(true);
        HfTokenizer {
            inner,
            name: name.into(),
            added,
            vocab_size,
            bos: None,
            eos: None,
            add_bos: false,
        }
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            ModelError::Tokenizer(format!(
                "{} is not a valid tokenizer.json: {e}",
                path.display()
            ))
        })?;
        let name = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tokenizer".into());
        Ok(Self::new(inner, name))
    }

    /// Parses `tokenizer.json` text.
    pub fn from_json_str(json: &str, name: &str) -> Result<Self, ModelError> {
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| ModelError::Tokenizer(format!("invalid tokenizer.json: {e}")))?;
        Ok(Self::new(inner, name))
    }

    /// Builds the tokenizer a GGUF file describes (byte-level BPE, `tokenizer.ggml.model=gpt2`).
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Self, ModelError> {
        let json = gguf_tokenizer_json(meta)?;
        let name = meta
            .get_str("general.basename")
            .or_else(|| meta.get_str("general.name"))
            .unwrap_or("gguf")
            .to_string();
        let mut t = Self::from_json_str(&json.to_string(), &name)?;
        let tokens = meta
            .get_str_array("tokenizer.ggml.tokens")
            .unwrap_or_default();
        let tok = |key: &str| {
            meta.get_i64(key)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| tokens.get(i))
                .map(|s| s.to_string())
        };
        t.bos = tok("tokenizer.ggml.bos_token_id");
        t.eos = tok("tokenizer.ggml.eos_token_id");
        t.add_bos = meta
            .get_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(false);
        Ok(t)
    }

    /// Sets the BOS/EOS texts and whether the model wants a BOS on raw text.
    pub fn with_specials(
        mut self,
        bos: Option<String>,
        eos: Option<String>,
        add_bos: bool,
    ) -> Self {
        self.bos = bos;
        self.eos = eos;
        self.add_bos = add_bos;
        self
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_deref()
    }
    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_deref()
    }
    /// Whether the model expects a BOS before raw text (chat templates write their own).
    pub fn add_bos_token(&self) -> bool {
        self.add_bos
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The wrapped tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self, pretty: bool) -> Result<String, ModelError> {
        self.inner
            .to_string(pretty)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }
    /// The vocabulary entry of each id (byte-level spelling, e.g. `Ġhello`).
    pub fn pieces(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| {
                self.inner
                    .id_to_token(id)
                    .unwrap_or_else(|| format!("<unk:{id}>"))
            })
            .collect()
    }
    /// Encodes with a BOS first when the model asks for one (for raw text, not templates).
    pub fn encode_with_bos(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = self.encode(text)?;
        if self.add_bos
            && let Some(b) = self.bos.as_deref().and_then(|b| self.special_token_id(b))
            && ids.first() != Some(&b)
        {
            ids.insert(0, b);
        }
        Ok(ids)
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizerError::UnknownId(bad));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    fn special_token_id(&self, text: &str) -> Option<u32> {
        self.added.get(text).copied()
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn identity(&self) -> String {
        format!("hf:{}/{}", self.name, self.vocab_size)
    }

    fn special_tokens(&self) -> Vec<String> {
        self.inner
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special)
            .map(|t| t.content)
            .collect()
    }
}

/// The `tokenizer.json` (as JSON) that GGUF tokenizer metadata describes.
///
/// Supported: `tokenizer.ggml.model = gpt2` (byte-level BPE) with the pre-tokenizers of
/// [`PreTokenizer::from_gguf_name`]. Control tokens (type 3) become special added tokens and
/// user-defined ones (type 4) plain added tokens, both matched whole, as llama.cpp does.
pub fn gguf_tokenizer_json(meta: &GgufMetadata) -> Result<Value, ModelError> {
    let model = meta.get_str("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(ModelError::Tokenizer(format!(
            "GGUF tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\"); \
             load the model's tokenizer.json instead"
        )));
    }
    let pre_name = meta.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let pre = PreTokenizer::from_gguf_name(pre_name).ok_or_else(|| {
        ModelError::Tokenizer(format!(
            "GGUF pre-tokenizer {pre_name:?} is not supported (known: gpt-2, smollm/starcoder, \
             llama-bpe/llama3, qwen2); load the model's tokenizer.json instead"
        ))
    })?;
    let tokens = meta
        .get_str_array("tokenizer.ggml.tokens")
        .ok_or_else(|| ModelError::Tokenizer("GGUF has no tokenizer.ggml.tokens".into()))?;
    let merges = meta
        .get_str_array("tokenizer.ggml.merges")
        .ok_or_else(|| ModelError::Tokenizer("GGUF has no tokenizer.ggml.merges".into()))?;
    let types = meta
        .get_i64_array("tokenizer.ggml.token_type")
        .unwrap_or_default();

    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut duplicates = 0usize;
    for (id, t) in tokens.iter().enumerate() {
        if vocab.contains_key(*t) {
            duplicates += 1;
            continue;
        }
        vocab.insert((*t).to_string(), json!(id));
    }
    if duplicates > 0 {
        tracing::warn!(
            duplicates,
            "GGUF vocabulary repeats token strings; kept the first ids"
        );
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for m in &merges {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            ModelError::Tokenizer(format!(
                "GGUF merge {m:?} is not two tokens separated by a space"
            ))
        })?;
        pairs.push(json!([a, b]));
    }
    let mut added = Vec::new();
    for (id, (t, ty)) in tokens.iter().zip(types.iter()).enumerate() {
        let special = match ty {
            3 => true,
            4 => false,
            _ => continue,
        };
        added.push(json!({
            "id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special,
        }));
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre.to_json(),
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": pairs,
        },
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::gguf::GgufValue;
    use crate::gguf::tests::write_gguf;

    /// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256 + rank.
    pub(crate) fn byte_char(b: u8) -> char {
        let printable = |x: u32| {
            (33..=126).contains(&x) || (161..=172).contains(&x) || (174..=255).contains(&x)
        };
        let c = b as u32;
        if printable(c) {
            char::from_u32(c).unwrap()
        } else {
            char::from_u32(256 + (0..c).filter(|&x| !printable(x)).count() as u32).unwrap()
        }
    }

    /// A tiny byte-level BPE GGUF: all 256 bytes, a few merges, ChatML specials.
    pub(crate) fn tiny_gguf(pre: &str) -> GgufMetadata {
        let mut tokens: Vec<String> = vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ];
        let mut types = vec![3, 3, 3];
        for b in 0..=255u8 {
            tokens.push(byte_char(b).to_string());
            types.push(1);
        }
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "1 2"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
            types.push(1);
        }
        tokens.push("<think>".into());
        types.push(4);
        let s = |v: &str| GgufValue::String(v.into());
        let bytes = write_gguf(&[
            ("general.basename", s("tiny")),
            ("tokenizer.ggml.model", s("gpt2")),
            ("tokenizer.ggml.pre", s(pre)),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Array(tokens.iter().map(|t| s(t)).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
            ),
            (
                "tokenizer.ggml.merges",
                GgufValue::Array(merges.iter().map(|m| s(m)).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", GgufValue::U32(2)),
            ("tokenizer.ggml.add_bos_token", GgufValue::Bool(false)),
        ]);
        GgufMetadata::from_reader(&bytes[..], "tiny").unwrap()
    }

    #[test]
    fn tiny_bpe_from_gguf_merges_specials_and_digits() {
        let t = HfTokenizer::from_gguf(&tiny_gguf("smollm")).unwrap();
        assert_eq!(t.vocab_size(), 3 + 256 + 6 + 1);
        let hello = t.token_id_of("hello").unwrap();
        let ids = t.encode("<|im_start|>hello<|im_end|>").unwrap();
        assert_eq!(ids, vec![1, hello, 2]);
        assert_eq!(t.decode(&ids).unwrap(), "<|im_start|>hello<|im_end|>");
        // smollm splits digits one by one: "12" never merges.
        let twelve = t.token_id_of("12").unwrap();
        assert!(!t.encode("12").unwrap().contains(&twelve));
        // gpt2 keeps digit runs together, so the merge applies.
        let g = HfTokenizer::from_gguf(&tiny_gguf("gpt-2")).unwrap();
        assert_eq!(g.encode("12").unwrap(), vec![twelve]);
        // Space-prefixed words: "Ġw" merge.
        let gw = t.token_id_of("Ġw").unwrap();
        assert_eq!(t.encode(" w").unwrap(), vec![gw]);
        // User-defined tokens are matched whole and decoded back.
        let think = t.special_token_id("<think>").unwrap();
        assert_eq!(t.encode("<think>x").unwrap()[0], think);
        assert_eq!(t.special_token_id("<|im_end|>"), Some(2));
        assert_eq!(t.special_token_id("hello"), None);
        // Unicode round-trips through byte-level pieces.
        let s = "héllo wörld ∑ 🌍\n\t";
        assert_eq!(t.decode(&t.encode(s).unwrap()).unwrap(), s);
        assert!(t.decode(&[100_000]).is_err());
        assert_eq!(t.bos_token(), Some("<|im_start|>"));
        assert!(!t.add_bos_token());
        assert_eq!(t.identity(), "hf:tiny/266");
        // The exported tokenizer.json loads back and encodes the same.
        let again = HfTokenizer::from_json_str(&t.to_json(false).unwrap(), "again").unwrap();
        assert_eq!(again.encode(s).unwrap(), t.encode(s).unwrap());
    }

    #[test]
    fn llama3_and_qwen2_splits_compile_and_unknown_is_refused() {
        for pre in ["llama-bpe", "qwen2"] {
            let t = HfTokenizer::from_gguf(&tiny_gguf(pre)).unwrap();
            let s = "Hello, world! 12345 don't\n\n  x";
            assert_eq!(t.decode(&t.encode(s).unwrap()).unwrap(), s);
        }
        let err = HfTokenizer::from_gguf(&tiny_gguf("mystery")).unwrap_err();
        assert!(err.to_string().contains("mystery"), "{err}");
    }

    impl HfTokenizer {
        fn token_id_of(&self, piece: &str) -> Option<u32> {
            self.inner.token_to_id(piece)
        }
    }
}

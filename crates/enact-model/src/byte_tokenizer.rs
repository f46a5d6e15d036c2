//! A byte-level tokenizer with ChatML special tokens, for tests and demos: every byte is
//! one token, so encoding is exact and needs no vocabulary file.

use enact_core::{Tokenizer, TokenizerError};

/// Special tokens, numbered from 256 in this order.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"];

#[derive(Debug, Clone, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub fn new() -> Self {
        ByteTokenizer
    }
}

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        'outer: while !rest.is_empty() {
            if rest.starts_with("<|") {
                for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
                    if let Some(r) = rest.strip_prefix(s) {
                        out.push(256 + i as u32);
                        rest = r;
                        continue 'outer;
                    }
                }
            }
            // Advance one char, emitting its UTF-8 bytes.
            let ch_len = rest.chars().next().map_or(1, char::len_utf8);
            out.extend(rest.as_bytes()[..ch_len].iter().map(|&b| b as u32));
            rest = &rest[ch_len..];
        }
        Ok(out)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::with_capacity(ids.len());
        for &id in ids {
            match id {
                0..=255 => bytes.push(id as u8),
                _ => match SPECIAL_TOKENS.get((id - 256) as usize) {
                    Some(s) => bytes.extend_from_slice(s.as_bytes()),
                    None => return Err(TokenizerError::UnknownId(id)),
                },
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn special_token_id(&self, text: &str) -> Option<u32> {
        SPECIAL_TOKENS
            .iter()
            .position(|s| *s == text)
            .map(|i| 256 + i as u32)
    }

    fn vocab_size(&self) -> usize {
        256 + SPECIAL_TOKENS.len()
    }

    fn special_tokens(&self) -> Vec<String> {
        SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect()
    }

    fn identity(&self) -> String {
        format!("bytes+chatml/{}", self.vocab_size())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_with_specials_and_unicode() {
        let t = ByteTokenizer::new();
        let s = "<|im_start|>user\nhé ∑ <|im_end|>\n<|bogus|>";
        let ids = t.encode(s).unwrap();
        assert_eq!(ids[0], 256);
        assert_eq!(t.decode(&ids).unwrap(), s);
        assert!(t.decode(&[999]).is_err());
    }
}

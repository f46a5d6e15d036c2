//! The tokenizer seam. The model layer implements it over Hugging Face `tokenizers`;
//! tests use a byte-level tokenizer.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("tokenizer failed to encode: {0}")]
    Encode(String),
    #[error("tokenizer failed to decode: {0}")]
    Decode(String),
    #[error("token id {0} is outside the vocabulary")]
    UnknownId(u32),
}

/// Text ↔ token ids for one vocabulary.
pub trait Tokenizer: Send + Sync {
    /// Encodes text. Special-token strings in `text` (e.g. `<|im_start|>`) become their
    /// special ids: rendered chat templates contain them.
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError>;
    /// Decodes ids to text, special tokens included (so a decoded context re-reads as the
    /// rendered template).
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError>;
    /// The id of a special token given by its text, if it is one.
    fn special_token_id(&self, text: &str) -> Option<u32>;
    fn vocab_size(&self) -> usize;
    /// A stable identity: name plus vocabulary size, recorded in trajectories.
    fn identity(&self) -> String;
}

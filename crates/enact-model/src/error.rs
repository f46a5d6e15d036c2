//! Errors of loading model files (tokenizers, templates, GGUF metadata).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: bad GGUF file: {detail}")]
    Gguf { path: String, detail: String },
    #[error("cannot build the tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Template(String),
    #[error("{path}: {detail}")]
    Config { path: String, detail: String },
}

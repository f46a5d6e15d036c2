//! Model layer of enact: tokenizers, chat templates, reply parsers and policies.
//!
//! - [`HfTokenizer`]: Hugging Face `tokenizers`, from `tokenizer.json` or GGUF metadata.
//! - [`JinjaTemplate`]: a model's own Jinja chat template, byte-identical to transformers'
//!   `apply_chat_template`; [`ToolPromptTemplate`] adds Hermes tool calling to templates
//!   without tool support; [`ChatMlTemplate`] is a built-in ChatML template for tests.
//! - [`parse`]: reply parsers (Hermes, Llama-3 JSON, plain text) and [`ParserKind`].
//! - [`ModelFiles`]: all of the above from a GGUF file or a Hugging Face model directory.

pub mod byte_tokenizer;
pub mod chatml;
pub mod convert;
pub mod error;
pub mod files;
pub mod gguf;
pub mod hf_tokenizer;
pub mod jinja;
pub mod lenient_json;
pub mod parse;
pub mod pyfmt;
pub mod scripted;
pub mod thinking;
pub mod tool_prompt;

pub use byte_tokenizer::ByteTokenizer;
pub use chatml::ChatMlTemplate;
pub use convert::{messages_from_json, tools_from_json};
pub use error::ModelError;
pub use files::{DEFAULT_MODEL_FILE, ModelFiles, default_model_path, model_cache_dir};
pub use gguf::{GgufMetadata, GgufValue};
pub use hf_tokenizer::{HfTokenizer, PreTokenizer};
pub use jinja::JinjaTemplate;
pub use parse::{HermesParser, Llama3JsonParser, ParserKind, PlainTextParser};
pub use scripted::ScriptedPolicy;
pub use thinking::thinking_style;
pub use tool_prompt::ToolPromptTemplate;

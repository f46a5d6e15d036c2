//! Model layer of enact: tokenizers, chat templates, reply parsers and policies.

pub mod byte_tokenizer;
pub mod chatml;
pub mod parse;
pub mod scripted;

pub use byte_tokenizer::ByteTokenizer;
pub use chatml::ChatMlTemplate;
pub use parse::HermesParser;
pub use scripted::ScriptedPolicy;

//! Everything the text side of a model needs, from its files: tokenizer, chat template,
//! tool-call parser and stop tokens. Used by the embedded engine, the HTTP backend and the CLI.
//!
//! ```no_run
//! # fn main() -> Result<(), enact_model::ModelError> {
//! let files = enact_model::ModelFiles::load(std::path::Path::new("model.gguf"))?;
//! let template = files.chat_template(); // tool-prompt wrapped when the template lacks tools
//! let parser = files.reply_parser();
//! let tokenizer = files.tokenizer_arc();
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use enact_core::{ChatTemplate, ReplyParser, Tokenizer};
use serde_json::Value;

use crate::error::ModelError;
use crate::gguf::GgufMetadata;
use crate::hf_tokenizer::HfTokenizer;
use crate::jinja::JinjaTemplate;
use crate::parse::ParserKind;
use crate::tool_prompt::ToolPromptTemplate;

/// File name of the embedded default model in the model cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model cache: `$ENACT_MODELS_DIR`, else `~/.cache/enact/models`.
pub fn model_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ENACT_MODELS_DIR") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/enact/models"))
}

/// Where the default model lives once fetched (whether or not it is there).
pub fn default_model_path() -> Option<PathBuf> {
    model_cache_dir().map(|d| d.join(DEFAULT_MODEL_FILE))
}

/// A model's tokenizer, template, parser and stop tokens.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// A short name (GGUF `general.basename`, or the directory name).
    pub name: String,
    pub tokenizer: HfTokenizer,
    /// The model's own template.
    pub template: JinjaTemplate,
    /// The tool-call format of the model's replies.
    pub parser: ParserKind,
    /// Whether enact injects tool specifications itself (the template has no tool support).
    pub tool_prompt: bool,
    /// Ids that end a turn: the template's end-of-turn token, then EOS (deduplicated).
    pub stop_tokens: Vec<u32>,
    /// The model's context length, when the files say.
    pub context_length: Option<usize>,
}

impl ModelFiles {
    /// A GGUF file, a Hugging Face model directory, or `default` (the cached default model).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        if path.as_os_str() == "default" {
            let p = default_model_path().ok_or_else(|| ModelError::Config {
                path: "default".into(),
                detail: "cannot locate the model cache (HOME is not set)".into(),
            })?;
            if !p.is_file() {
                return Err(ModelError::Config {
                    path: p.display().to_string(),
                    detail: "the default model is not downloaded; run `enact model fetch`".into(),
                });
            }
            return Self::from_gguf(&p);
        }
        if path.is_dir() {
            Self::from_hf_dir(path)
        } else {
            Self::from_gguf(path)
        }
    }

    /// Reads a GGUF file's metadata (not its tensors).
    pub fn from_gguf(path: &Path) -> Result<Self, ModelError> {
        Self::from_gguf_metadata(&GgufMetadata::read(path)?)
    }

    pub fn from_gguf_metadata(meta: &GgufMetadata) -> Result<Self, ModelError> {
        let tokenizer = HfTokenizer::from_gguf(meta)?;
        let template = JinjaTemplate::from_gguf(meta)?;
        let arch = meta.get_str("general.architecture").unwrap_or("llama");
        let context_length = meta
            .get_i64(&format!("{arch}.context_length"))
            .and_then(|n| usize::try_from(n).ok());
        let eos = meta
            .get_i64("tokenizer.ggml.eos_token_id")
            .and_then(|i| u32::try_from(i).ok());
        Ok(Self::assemble(
            tokenizer.name().to_string(),
            tokenizer,
            template,
            eos.into_iter().collect(),
            context_length,
        ))
    }

    /// A Hugging Face model directory: `tokenizer.json`, `tokenizer_config.json` (or
    /// `chat_template.jinja`), and `config.json` (EOS ids, context length) when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, ModelError> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let tok_path = dir.join("tokenizer.json");
        let cfg_path = dir.join("tokenizer_config.json");
        let template = if cfg_path.is_file() {
            JinjaTemplate::from_tokenizer_config(&cfg_path)?
        } else {
            JinjaTemplate::from_file(&dir.join("chat_template.jinja"))?
        }
        .with_name(name.clone());
        let vars = template.variables();
        let text = |k: &str| vars.get(k).and_then(Value::as_str).map(str::to_string);
        let add_bos = read_json(&cfg_path)
            .ok()
            .and_then(|c| c.get("add_bos_token").and_then(Value::as_bool))
            .unwrap_or(false);
        let tokenizer = HfTokenizer::from_file(&tok_path)?.with_specials(
            text("bos_token"),
            text("eos_token"),
            add_bos,
        );
        let mut eos = Vec::new();
        let mut context_length = None;
        if let Ok(config) = read_json(&dir.join("config.json")) {
            match config.get("eos_token_id") {
                Some(Value::Number(n)) => {
                    eos.extend(n.as_u64().and_then(|n| u32::try_from(n).ok()))
                }
                Some(Value::Array(a)) => eos.extend(
                    a.iter()
                        .filter_map(Value::as_u64)
                        .filter_map(|n| u32::try_from(n).ok()),
                ),
                _ => {}
            }
            context_length = config
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok());
        }
        if let Some(e) = tokenizer
            .eos_token()
            .and_then(|t| tokenizer.special_token_id(t))
        {
            eos.push(e);
        }
        Ok(Self::assemble(
            name,
            tokenizer,
            template,
            eos,
            context_length,
        ))
    }

    fn assemble(
        name: String,
        tokenizer: HfTokenizer,
        template: JinjaTemplate,
        eos: Vec<u32>,
        context_length: Option<usize>,
    ) -> Self {
        let mut stop_tokens = Vec::new();
        if let Some(id) = tokenizer.special_token_id(template.end_of_turn()) {
            stop_tokens.push(id);
        }
        for id in eos {
            if !stop_tokens.contains(&id) {
                stop_tokens.push(id);
            }
        }
        let tool_prompt = !template.supports_tools();
        let parser = ParserKind::for_template(template.source());
        ModelFiles {
            name,
            tokenizer,
            template,
            parser,
            tool_prompt,
            stop_tokens,
            context_length,
        }
    }

    /// The template to render episodes with: the model's own, wrapped in
    /// [`ToolPromptTemplate`] when it has no tool support.
    pub fn chat_template(&self) -> Arc<dyn ChatTemplate> {
        let own: Arc<dyn ChatTemplate> = Arc::new(self.template.clone());
        if self.tool_prompt {
            Arc::new(ToolPromptTemplate::new(own))
        } else {
            own
        }
    }

    /// How the model thinks, read off its template ([`crate::thinking_style`]).
    pub fn thinking_style(&self) -> enact_core::ThinkingStyle {
        crate::thinking_style(&self.template, Some(self.template.source()))
    }

    pub fn reply_parser(&self) -> Arc<dyn ReplyParser> {
        self.parser.build()
    }

    pub fn tokenizer_arc(&self) -> Arc<dyn Tokenizer> {
        Arc::new(self.tokenizer.clone())
    }
}

fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.display().to_string(),
        detail: format!("not valid JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::hf_tokenizer::tests::tiny_gguf;

    #[test]
    fn hf_dir_and_gguf_assemble() {
        let dir = std::env::temp_dir().join(format!("enact-model-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tok = HfTokenizer::from_gguf(&tiny_gguf("qwen2")).unwrap();
        std::fs::write(dir.join("tokenizer.json"), tok.to_json(false).unwrap()).unwrap();
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::json!({
                "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if tools %}<tool_call>{% endif %}",
                "eos_token": {"content": "<|im_end|>"},
                "bos_token": null,
            })
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"eos_token_id": [2, 0], "max_position_embeddings": 4096}"#,
        )
        .unwrap();
        let f = ModelFiles::load(&dir).unwrap();
        assert_eq!(f.template.end_of_turn(), "<|im_end|>");
        assert_eq!(f.stop_tokens, vec![2, 0]);
        assert_eq!(f.context_length, Some(4096));
        assert!(!f.tool_prompt);
        assert_eq!(f.parser, ParserKind::Hermes);
        assert_eq!(f.tokenizer.eos_token(), Some("<|im_end|>"));
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = ModelFiles::load(Path::new("/nonexistent/model.gguf")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/model.gguf"),
            "{missing}"
        );
    }
}

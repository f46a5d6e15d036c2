//! Turning `--model` into an agent's pieces (policy, tokenizer, template, parser).
//!
//! `scripted` replays the environment's honest reference solution (or `--script FILE`, a JSON
//! array of assistant turns) through a byte-level tokenizer and the ChatML template.
//!
//! `default` is the embedded engine on the default model (SmolLM2-135M-Instruct, installed by
//! `enact model fetch`); a path is the embedded engine on any GGUF or safetensors model. Both
//! use the model's own tokenizer and chat template (or, when that template cannot show tools,
//! the ChatML + Hermes tool template with the model's default system prompt). The engine's
//! thread count comes from `ENACT_THREADS` (default: all cores); its weight format from
//! `ENACT_WEIGHTS` (`q8_0`, the default, `native` or `f32`). One engine per model file is
//! shared by all episodes of a process, so concurrent episodes are batched together.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, bail};
use enact_agent::{Agent, AgentConfig};
use enact_candle::{CandlePolicy, Engine, EngineOptions, PolicyOptions, WeightFormat};
use enact_core::{ChatTemplate, Task, Tokenizer};
use enact_env::Suite;
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, HfTokenizer, ScriptedPolicy};

/// What `--model` names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// Replays scripted turns: the task's reference solution, or a script file.
    Scripted { script: Option<PathBuf> },
    /// The embedded engine on the default model (SmolLM2-135M-Instruct).
    Default,
    /// The embedded engine on a local GGUF / safetensors model.
    Path(PathBuf),
    /// An HTTP server (vLLM, SGLang, llama.cpp, Ollama, OpenAI-compatible): see
    /// `docs/http-backends.md`.
    Http { url: String },
}

impl ModelSpec {
    pub fn parse(spec: &str, script: Option<PathBuf>) -> Result<Self> {
        match spec {
            "scripted" => Ok(ModelSpec::Scripted { script }),
            "default" => Ok(ModelSpec::Default),
            other if enact_http::is_http_spec(other) => {
                enact_http::HttpConfig::from_spec(other)?;
                Ok(ModelSpec::Http { url: other.into() })
            }
            other if looks_like_path(other) => Ok(ModelSpec::Path(PathBuf::from(other))),
            other => bail!(
                "unknown model \"{other}\": use `scripted` (replays the reference solution or --script FILE), `default` (SmolLM2-135M-Instruct on the embedded engine; `enact model fetch` installs it) or the path of a GGUF / safetensors model"
            ),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ModelSpec::Scripted { script: None } => "scripted (reference solutions)".into(),
            ModelSpec::Scripted { script: Some(p) } => format!("scripted ({})", p.display()),
            ModelSpec::Default => format!("default ({})", enact_candle::fetch::DEFAULT_MODEL_NAME),
            ModelSpec::Path(p) => p.display().to_string(),
            ModelSpec::Http { url } => format!("http ({url})"),
        }
    }
}

/// Reads a script: a JSON array of strings, or JSONL with one string per line.
pub fn read_script(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read script {}", path.display()))?;
    if let Ok(turns) = serde_json::from_str::<Vec<String>>(&text) {
        return Ok(turns);
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<String>(l).with_context(|| {
                format!(
                    "{}:{}: a script is a JSON array of strings or one JSON string per line",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// Builds the agent for one task (scripted policies are per task).
pub fn build_agent(
    spec: &ModelSpec,
    suite: &dyn Suite,
    task: &Task,
    config: &AgentConfig,
) -> Result<Agent> {
    match spec {
        ModelSpec::Scripted { script } => {
            let turns = match script {
                Some(p) => read_script(p)?,
                None => suite.reference_solution(task).with_context(|| {
                    format!(
                        "environment {} has no reference solution for task {}; pass --script FILE",
                        suite.name(),
                        task.id
                    )
                })?,
            };
            let tokenizer = Arc::new(ByteTokenizer::new());
            Ok(Agent::new(
                Arc::new(ScriptedPolicy::new(turns, tokenizer.clone())),
                tokenizer,
                Arc::new(ChatMlTemplate::default()),
                Arc::new(HermesParser),
            )
            .with_config(config.clone()))
        }
        ModelSpec::Default | ModelSpec::Path(_) => {
            let m = embedded(&resolve_model_path(spec)?, &engine_options_from_env()?)?;
            Ok(Agent::new(
                m.policy.clone(),
                m.tokenizer.clone(),
                m.template.clone(),
                m.parser.clone(),
            )
            .with_config(config.clone()))
        }
        ModelSpec::Http { url } => http_agent(url, config),
    }
}

/// Whether `--model` names a file or directory rather than a keyword.
fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.ends_with(".gguf") || s.ends_with(".safetensors") || Path::new(s).exists()
}

/// The model file a spec names; `default` is checked (present, right checksum).
pub fn resolve_model_path(spec: &ModelSpec) -> Result<PathBuf> {
    match spec {
        ModelSpec::Default => Ok(enact_candle::fetch::default_model()?),
        ModelSpec::Path(p) => {
            if !p.exists() {
                bail!(
                    "model file {} does not exist; pass a GGUF file, a .safetensors file with config.json beside it, or a directory with config.json and *.safetensors (or `--model default` after `enact model fetch`)",
                    p.display()
                );
            }
            Ok(p.clone())
        }
        ModelSpec::Scripted { .. } => bail!("the scripted model has no model file"),
        ModelSpec::Http { .. } => bail!("an HTTP model has no local model file"),
    }
}

/// Engine options for `run`/`eval`: `ENACT_THREADS`, `ENACT_WEIGHTS`.
/// Command-line settings that take precedence over the `ENACT_THREADS`, `ENACT_WEIGHTS` and
/// `ENACT_TOKENIZER` environment variables. Set once, before any model is built.
#[derive(Debug, Clone, Default)]
pub struct ModelOverrides {
    pub threads: Option<usize>,
    pub weights: Option<String>,
    pub tokenizer: Option<PathBuf>,
}

static OVERRIDES: OnceLock<ModelOverrides> = OnceLock::new();

pub fn set_overrides(o: ModelOverrides) {
    // Only the first call counts: one command, one configuration.
    let _ = OVERRIDES.set(o);
}

fn overrides() -> ModelOverrides {
    OVERRIDES.get().cloned().unwrap_or_default()
}

pub fn engine_options_from_env() -> Result<EngineOptions> {
    let o = overrides();
    if let Some(t) = o.threads {
        let weights = match &o.weights {
            Some(w) => WeightFormat::parse(w)
                .with_context(|| format!("--weights {w:?}: use q8_0 (default), native or f32"))?,
            None => WeightFormat::default(),
        };
        return Ok(EngineOptions {
            threads: t,
            weights,
        });
    }
    let threads = match std::env::var("ENACT_THREADS") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .with_context(|| format!("ENACT_THREADS={v:?} is not a thread count"))?,
        _ => 0,
    };
    let weights = match o
        .weights
        .clone()
        .or_else(|| std::env::var("ENACT_WEIGHTS").ok())
    {
        Some(v) if !v.is_empty() => WeightFormat::parse(&v)
            .with_context(|| format!("ENACT_WEIGHTS={v:?}: use q8_0 (default), native or f32"))?,
        _ => WeightFormat::default(),
    };
    Ok(EngineOptions { threads, weights })
}

/// A model on the embedded engine with its tokenizer and chat template.
#[derive(Clone)]
pub struct Embedded {
    pub policy: Arc<CandlePolicy>,
    pub tokenizer: Arc<HfTokenizer>,
    pub template: Arc<dyn ChatTemplate>,
    pub parser: Arc<dyn enact_core::ReplyParser>,
}

/// Loads (once per process and model file) the engine, tokenizer, template and parser.
pub fn embedded(path: &Path, options: &EngineOptions) -> Result<Embedded> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Embedded>>> = OnceLock::new();
    let map = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| anyhow::anyhow!("the model registry is poisoned"))?;
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let files = model_files(path)?;
    let tokenizer = Arc::new(files.tokenizer.clone());
    let engine = Engine::load(path, options)?.with_tokenizer(tokenizer.clone());
    let m = Embedded {
        policy: Arc::new(CandlePolicy::new(engine, PolicyOptions::default())),
        tokenizer,
        template: files.chat_template(),
        parser: files.reply_parser(),
    };
    map.insert(path.to_path_buf(), m.clone());
    Ok(m)
}

/// The tokenizer and a tool-capable chat template of a model file.
pub fn tokenizer_and_template(path: &Path) -> Result<(Arc<HfTokenizer>, Arc<dyn ChatTemplate>)> {
    let files = model_files(path)?;
    Ok((Arc::new(files.tokenizer.clone()), files.chat_template()))
}

/// The model's tokenizer, chat template, tool-call parser and stop tokens. A template
/// without tool support (SmolLM2's) is wrapped so that enact's Hermes tool section goes into
/// the system prompt, keeping the model's default system prompt.
pub fn model_files(path: &Path) -> Result<enact_model::ModelFiles> {
    let source = if path.extension().is_some_and(|e| e == "safetensors") {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    let files = enact_model::ModelFiles::load(&source).with_context(|| {
        format!(
            "cannot load the tokenizer and chat template of {}",
            path.display()
        )
    })?;
    if !files.template.supports_tools() && !files.tool_prompt {
        tracing::warn!(
            "the chat template of {} cannot show tools; tool specifications will be missing from prompts",
            path.display()
        );
    }
    Ok(files)
}

/// A tokenizer to display a spec's trajectories.
pub fn display_tokenizer(spec: &ModelSpec) -> Box<dyn Tokenizer> {
    match spec {
        ModelSpec::Scripted { .. } => Box::new(ByteTokenizer::new()),
        ModelSpec::Http { .. } => {
            match http_tokenizer_path().and_then(|p| tokenizer_and_template(&p)) {
                Ok((t, _)) => Box::new((*t).clone()),
                Err(_) => Box::new(ByteTokenizer::new()),
            }
        }
        _ => match resolve_model_path(spec).and_then(|p| tokenizer_and_template(&p)) {
            Ok((t, _)) => Box::new((*t).clone()),
            Err(_) => Box::new(ByteTokenizer::new()),
        },
    }
}

/// The served model's tokenizer for `--model http://…`, from `--tokenizer` or `ENACT_TOKENIZER`: its GGUF
/// file, its `tokenizer.json` or its Hugging Face model directory.
fn http_tokenizer_path() -> Result<PathBuf> {
    let v = overrides()
        .tokenizer
        .map(|p| p.to_string_lossy().into_owned())
        .or_else(|| std::env::var("ENACT_TOKENIZER").ok())
        .filter(|v| !v.trim().is_empty())
        .context(
            "an HTTP model needs the served model's tokenizer and chat template: pass --tokenizer (or set ENACT_TOKENIZER) to its GGUF file, tokenizer.json or Hugging Face model directory",
        )?;
    let p = PathBuf::from(v);
    if !p.exists() {
        bail!("ENACT_TOKENIZER={} does not exist", p.display());
    }
    if p.file_name().is_some_and(|n| n == "tokenizer.json") {
        return Ok(p.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    Ok(p)
}

/// An agent on an HTTP server. One policy per URL is shared by all episodes of a process, so
/// its concurrency limit and connection pool span them.
fn http_agent(url: &str, config: &AgentConfig) -> Result<Agent> {
    type Served = (
        enact_http::HttpPolicy,
        Arc<HfTokenizer>,
        Arc<dyn ChatTemplate>,
        Arc<dyn enact_core::ReplyParser>,
    );
    static SERVED: OnceLock<Mutex<HashMap<String, Served>>> = OnceLock::new();
    let map = SERVED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| anyhow::anyhow!("the HTTP model registry is poisoned"))?;
    let (policy, tokenizer, template, parser) = match map.get(url) {
        Some(s) => s.clone(),
        None => {
            let files = model_files(&http_tokenizer_path()?)?;
            let tokenizer = Arc::new(files.tokenizer.clone());
            let http = enact_http::HttpConfig::from_spec(url)?.with_api_key_from_env();
            let policy = enact_http::HttpPolicy::new(http, tokenizer.clone())?;
            let served = (
                policy,
                tokenizer,
                files.chat_template(),
                files.reply_parser(),
            );
            map.insert(url.to_string(), served.clone());
            served
        }
    };
    Ok(Agent::new(Arc::new(policy), tokenizer, template, parser).with_config(config.clone()))
}

#[cfg(test)]
mod embedded_spec_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_default_paths_and_rejects_unknown_names() {
        assert_eq!(
            ModelSpec::parse("default", None).unwrap(),
            ModelSpec::Default
        );
        assert_eq!(
            ModelSpec::parse("models/x.gguf", None).unwrap(),
            ModelSpec::Path(PathBuf::from("models/x.gguf"))
        );
        assert_eq!(
            ModelSpec::parse("y.safetensors", None).unwrap(),
            ModelSpec::Path(PathBuf::from("y.safetensors"))
        );
        let e = ModelSpec::parse("gpt-17", None).unwrap_err().to_string();
        assert!(e.contains("default") && e.contains("scripted"), "{e}");
        let e = resolve_model_path(&ModelSpec::Path(PathBuf::from("/nonexistent/m.gguf")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/m.gguf") && e.contains("enact model fetch"),
            "{e}"
        );
    }

    #[test]
    fn script_errors_name_the_real_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("script.jsonl");
        std::fs::write(&p, "\"a\"\n\n\nnot json\n").unwrap();
        let e = format!("{:#}", read_script(&p).unwrap_err());
        assert!(e.contains("script.jsonl:4:"), "{e}");
    }
}

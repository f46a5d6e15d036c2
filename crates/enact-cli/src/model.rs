//! Turning `--model` into an agent's pieces (policy, tokenizer, template, parser).
//!
//! `scripted` replays the environment's honest reference solution (or `--script FILE`, a JSON
//! array of assistant turns) through a byte-level tokenizer and the ChatML template.
//!
//! `default` is the embedded engine on the default model (SmolLM2-135M-Instruct, installed by
//! `enact model fetch`); a path is the embedded engine on any GGUF or safetensors model. Both
//! use the model's own tokenizer and chat template (or, when that template cannot show tools,
//! the ChatML + Hermes tool template with the model's default system prompt). The engine's
//! threads and weight format come from [`EngineSettings`] (`--threads`/`ENACT_THREADS`,
//! `--weights`/`ENACT_WEIGHTS`). One engine per model file is shared by all episodes of a
//! process, so concurrent episodes are batched together; [`AgentFactory`] builds everything
//! once and only the scripted policy per task (it replays that task's reference solution).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, bail};
use clap::Args;
use enact_agent::{Agent, AgentConfig, Router};
use enact_candle::{CandlePolicy, Engine, EngineOptions, PolicyOptions};
use enact_core::{ChatTemplate, Policy, ReplyParser, Task, ThinkingStyle, Tokenizer};
use enact_env::Suite;
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, HfTokenizer, ScriptedPolicy};

use crate::settings::{EngineSettings, TokenizerSetting};

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

/// `--model` and what goes with it, shared by `run` and `eval`.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// The model: `scripted` replays the environment's reference solution (or --script FILE);
    /// `default` is SmolLM2-135M-Instruct on the embedded engine (after `enact model fetch`);
    /// a path is a GGUF file, a .safetensors file or a Hugging Face model directory on the
    /// embedded engine; `http://HOST:PORT[/v1][#DIALECT[:MODEL]]` is an OpenAI-compatible server
    /// (vLLM, SGLang, llama.cpp, Ollama; needs --tokenizer; see docs/http-backends.md).
    #[arg(long, default_value = "scripted")]
    pub model: String,
    /// Assistant turns for the scripted model: a JSON array of strings, or one JSON string per
    /// line.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Run the embedded model with trained weights: a checkpoint directory of `enact train`
    /// (`OUTPUT/checkpoints/step-N`; LoRA adapters are merged into the base --model).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineSettings,
    #[command(flatten)]
    pub tokenizer: TokenizerSetting,
}

impl ModelArgs {
    pub fn spec(&self) -> Result<ModelSpec> {
        ModelSpec::parse(&self.model, self.script.clone())
    }
}

/// Wraps every policy an agent samples from (live output, token counting).
pub type PolicyWrapper = Arc<dyn Fn(Arc<dyn Policy>) -> Arc<dyn Policy> + Send + Sync>;

/// Where the policy of each episode comes from.
#[derive(Clone)]
enum PolicySource {
    /// One policy (an engine or a server) shared by every episode, so they batch together.
    Shared(Arc<dyn Policy>),
    /// The scripted model: a script file (read once), or each task's reference solution.
    Scripted(Option<Vec<String>>),
}

/// Builds the agent of each episode. Everything but the scripted policy is built once.
#[derive(Clone)]
pub struct AgentFactory {
    policy: PolicySource,
    tokenizer: Arc<dyn Tokenizer>,
    template: Arc<dyn ChatTemplate>,
    parser: Arc<dyn ReplyParser>,
    config: AgentConfig,
    wrap: Option<PolicyWrapper>,
    /// Routing of hard turns to a second model (`--thinking-model`).
    router: Option<Router>,
    /// The embedded engine behind the shared policy, if that is what it is.
    engine: Option<Arc<CandlePolicy>>,
    /// A tokenizer to print this model's trajectories with.
    pub display: Arc<dyn Tokenizer>,
    /// `--team`: a team plays each episode (`team.rs`).
    pub team: Option<Arc<crate::team::Team>>,
}

impl AgentFactory {
    pub fn new(args: &ModelArgs, config: &AgentConfig) -> Result<Self> {
        let spec = args.spec()?;
        let parts = |policy, tokenizer: Arc<dyn Tokenizer>, template, parser, style| {
            let mut config = config.clone();
            // The model's own way of thinking; a configuration never sets it.
            config.thinking_style = style;
            AgentFactory {
                policy,
                display: tokenizer.clone(),
                tokenizer,
                template,
                parser,
                config,
                wrap: None,
                router: None,
                engine: None,
                team: None,
            }
        };
        Ok(match &spec {
            ModelSpec::Scripted { script } => {
                let template = ChatMlTemplate::default();
                let style = enact_model::thinking_style(&template, None);
                parts(
                    PolicySource::Scripted(script.as_deref().map(read_script).transpose()?),
                    Arc::new(ByteTokenizer::new()),
                    Arc::new(template),
                    Arc::new(HermesParser),
                    style,
                )
            }
            ModelSpec::Default | ModelSpec::Path(_) => {
                let m = embedded(&resolve_model_path(&spec)?, &args.engine.options())?;
                let mut f = parts(
                    PolicySource::Shared(m.policy.clone()),
                    m.tokenizer,
                    m.template,
                    m.parser,
                    m.thinking_style,
                );
                f.engine = Some(m.policy);
                f
            }
            ModelSpec::Http { url } => {
                let s = served(url, &args.tokenizer)?;
                parts(
                    PolicySource::Shared(s.policy),
                    s.tokenizer,
                    s.template,
                    s.parser,
                    s.thinking_style,
                )
            }
        })
    }

    /// The same factory with the weights of a training checkpoint (`--checkpoint`) published
    /// to the embedded engine: the trainer's model is rebuilt on the base weights, the
    /// checkpoint loaded, adapters merged.
    pub async fn with_checkpoint(self, args: &ModelArgs) -> Result<Self> {
        let Some(dir) = &args.checkpoint else {
            return Ok(self);
        };
        let Some(engine) = &self.engine else {
            bail!(
                "--checkpoint needs the embedded engine: pass --model default or a model file (for a server, load the adapter there)"
            );
        };
        let base = resolve_model_path(&args.spec()?)?;
        let (dir, shown) = (dir.clone(), dir.display().to_string());
        let tensors = tokio::task::spawn_blocking(move || -> Result<_> {
            let twin = enact_train::TwinModel::load(&base, candle_core::DType::F32)
                .with_context(|| format!("cannot load {} to apply the checkpoint", base.display()))?;
            let trainer = enact_train::Trainer::resume(twin, &dir).with_context(|| {
                format!(
                    "cannot read the checkpoint {}: pass a checkpoints/step-N directory written by `enact train` on this --model",
                    dir.display()
                )
            })?;
            Ok(trainer.model().merged_hf_tensors()?)
        })
        .await
        .context("loading the checkpoint crashed")??;
        engine
            .publish_tensors(tensors, enact_candle::KvOnPublish::Recompute)
            .await
            .map_err(|e| anyhow::anyhow!("cannot apply the checkpoint {shown}: {e}"))?;
        tracing::info!(checkpoint = %shown, "running with the checkpoint's weights");
        Ok(self)
    }

    /// The same factory routing hard turns to `thinking_model` (`--thinking-model`), which
    /// must share the model's tokenizer: one context serves both.
    pub fn with_thinking_model(
        mut self,
        thinking_model: Option<&str>,
        args: &ModelArgs,
    ) -> Result<Self> {
        let Some(name) = thinking_model else {
            return Ok(self);
        };
        let spec = ModelSpec::parse(name, None)?;
        let (policy, tokenizer): (Arc<dyn Policy>, Arc<dyn Tokenizer>) = match &spec {
            ModelSpec::Default | ModelSpec::Path(_) => {
                let m = embedded(&resolve_model_path(&spec)?, &args.engine.options())?;
                (m.policy, m.tokenizer)
            }
            ModelSpec::Http { url } => {
                let s = served(url, &args.tokenizer)?;
                (s.policy, s.tokenizer)
            }
            ModelSpec::Scripted { .. } => bail!(
                "--thinking-model scripted is not supported: route to a model file, `default` or an HTTP server"
            ),
        };
        if tokenizer.identity() != self.tokenizer.identity() {
            bail!(
                "--thinking-model {name} has tokenizer {} but --model has {}; routing needs one tokenizer (both models continue the same token context): pick two models of one family",
                tokenizer.identity(),
                self.tokenizer.identity()
            );
        }
        let PolicySource::Shared(_) = &self.policy else {
            bail!("--thinking-model needs a real --model (not scripted) for the routine turns");
        };
        self.router = Some(Router {
            instruct: args.model.clone(),
            thinking: name.to_string(),
            thinking_policy: policy,
        });
        Ok(self)
    }

    /// The same factory, every policy it hands out wrapped by `wrap`.
    pub fn wrapping_policies(mut self, wrap: PolicyWrapper) -> Self {
        if let Some(team) = self.team.take() {
            self.team = Some(Arc::new((*team).clone().wrapping_policies(&wrap)));
        }
        self.wrap = Some(wrap);
        self
    }

    /// The same factory with a team playing each episode.
    pub fn with_team(mut self, team: crate::team::Team) -> Self {
        self.team = Some(Arc::new(team));
        self
    }

    /// The agent for one episode of `task`.
    /// The same factory sampling with `seed` (each sample of `eval --samples` has its own).
    pub fn with_sample_seed(&self, seed: u64) -> AgentFactory {
        let mut factory = self.clone();
        factory.config.sampling.seed = Some(seed);
        factory
    }

    pub fn agent_for(&self, suite: &dyn Suite, task: &Task) -> Result<Agent> {
        let policy: Arc<dyn Policy> = match &self.policy {
            PolicySource::Shared(p) => p.clone(),
            PolicySource::Scripted(turns) => {
                let turns = match turns {
                    Some(t) => t.clone(),
                    None => suite.reference_solution(task).with_context(|| {
                        format!(
                            "environment {} has no reference solution for task {}; pass --script FILE",
                            suite.name(),
                            task.id
                        )
                    })?,
                };
                Arc::new(ScriptedPolicy::per_turn(turns, self.tokenizer.clone()))
            }
        };
        let policy = match &self.wrap {
            Some(wrap) => wrap(policy),
            None => policy,
        };
        let agent = Agent::new(
            policy,
            self.tokenizer.clone(),
            self.template.clone(),
            self.parser.clone(),
        )
        .with_config(self.config.clone());
        Ok(match &self.router {
            Some(router) => {
                let mut router = router.clone();
                if let Some(wrap) = &self.wrap {
                    router.thinking_policy = wrap(router.thinking_policy);
                }
                agent.with_router(router)
            }
            None => agent,
        })
    }
}
/// Whether `--model` names a file or directory rather than a keyword.
pub fn looks_like_path(s: &str) -> bool {
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

/// A model on the embedded engine with its tokenizer and chat template.
#[derive(Clone)]
pub struct Embedded {
    pub policy: Arc<CandlePolicy>,
    pub tokenizer: Arc<HfTokenizer>,
    pub template: Arc<dyn ChatTemplate>,
    pub parser: Arc<dyn enact_core::ReplyParser>,
    /// How the model thinks, read off its template.
    pub thinking_style: ThinkingStyle,
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
        thinking_style: files.thinking_style(),
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

/// A tokenizer to display a spec's trajectories without loading its engine; the byte
/// tokenizer when the model's files cannot be read.
pub fn display_tokenizer(spec: &ModelSpec, tokenizer: &TokenizerSetting) -> Box<dyn Tokenizer> {
    let path = match spec {
        ModelSpec::Scripted { .. } => return Box::new(ByteTokenizer::new()),
        ModelSpec::Http { .. } => tokenizer.path(),
        _ => resolve_model_path(spec),
    };
    match path.and_then(|p| tokenizer_and_template(&p)) {
        Ok((t, _)) => Box::new((*t).clone()),
        Err(_) => Box::new(ByteTokenizer::new()),
    }
}

/// A model behind an HTTP server, with the served model's tokenizer, template and parser.
#[derive(Clone)]
struct Served {
    policy: Arc<dyn Policy>,
    tokenizer: Arc<HfTokenizer>,
    template: Arc<dyn ChatTemplate>,
    parser: Arc<dyn ReplyParser>,
    thinking_style: ThinkingStyle,
}

/// The model behind `url`. One policy per URL is shared by all episodes of a process, so its
/// concurrency limit and connection pool span them.
fn served(url: &str, tokenizer: &TokenizerSetting) -> Result<Served> {
    static SERVED: OnceLock<Mutex<HashMap<String, Served>>> = OnceLock::new();
    let map = SERVED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| anyhow::anyhow!("the HTTP model registry is poisoned"))?;
    if let Some(s) = map.get(url) {
        return Ok(s.clone());
    }
    let files = model_files(&tokenizer.path()?)?;
    let tokenizer = Arc::new(files.tokenizer.clone());
    let http = enact_http::HttpConfig::from_spec(url)?.with_api_key_from_env();
    let s = Served {
        policy: Arc::new(enact_http::HttpPolicy::new(http, tokenizer.clone())?),
        tokenizer,
        template: files.chat_template(),
        parser: files.reply_parser(),
        thinking_style: files.thinking_style(),
    };
    map.insert(url.to_string(), s.clone());
    Ok(s)
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

//! Model settings that every command loading a model shares (`#[command(flatten)]`), each
//! given by a flag or by its environment variable (the flag wins). They are checked while the
//! command line is parsed, and every message names where the value came from: `--weights x`
//! or `ENACT_WEIGHTS=x`, never the other one.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use enact_candle::{EngineOptions, WeightFormat};

/// Where a setting's value came from, as the user wrote it.
fn origin(m: &ArgMatches, id: &str, flag: &str, var: &str, raw: &str) -> String {
    match m.value_source(id) {
        Some(ValueSource::EnvVariable) => format!("{var}={raw}"),
        _ => format!("{flag} {raw}"),
    }
}

fn invalid(message: String) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("{message}\n"),
    )
}

/// The raw flags of [`EngineSettings`] (strings, so that a bad value is reported with its origin).
#[derive(Args)]
struct EngineFlags {
    /// Engine threads for an embedded model (0 = all cores, the default). Set it on a machine
    /// that other work shares.
    #[arg(long, env = "ENACT_THREADS", value_name = "N")]
    threads: Option<String>,
    /// Weights in memory for an embedded model: q8_0 (the default; other quantizations are
    /// repacked, fast), native (as shipped) or f32.
    #[arg(long, env = "ENACT_WEIGHTS", value_name = "FORMAT")]
    weights: Option<String>,
}

/// Embedded-engine settings: `--threads`/`ENACT_THREADS`, `--weights`/`ENACT_WEIGHTS`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineSettings {
    pub threads: Option<usize>,
    pub weights: Option<WeightFormat>,
}

impl EngineSettings {
    /// The settings given by a configuration file's `threads` and `weights` keys.
    pub fn from_config(threads: Option<usize>, weights: Option<&str>) -> Result<Self> {
        let weights = match weights {
            None => None,
            Some(w) => match WeightFormat::parse(w) {
                Some(f) => Some(f),
                None => bail!(
                    "weights = {w:?} in the configuration is not a weight format: use q8_0 (the default), native or f32"
                ),
            },
        };
        Ok(EngineSettings { threads, weights })
    }

    /// The engine options, defaults filled in (all cores, Q8_0).
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            threads: self.threads.unwrap_or(0),
            weights: self.weights.unwrap_or_default(),
        }
    }
}

impl FromArgMatches for EngineSettings {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let given = |id: &str| {
            m.get_one::<String>(id)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let threads = match given("threads") {
            None => None,
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                invalid(format!(
                    "{} is not a thread count: use a whole number (0 = all cores)",
                    origin(m, "threads", "--threads", "ENACT_THREADS", &v)
                ))
            })?),
        };
        let weights = match given("weights") {
            None => None,
            Some(v) => Some(WeightFormat::parse(&v).ok_or_else(|| {
                invalid(format!(
                    "{} is not a weight format: use q8_0 (the default), native or f32",
                    origin(m, "weights", "--weights", "ENACT_WEIGHTS", &v)
                ))
            })?),
        };
        Ok(EngineSettings { threads, weights })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for EngineSettings {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        EngineFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        EngineFlags::augment_args_for_update(cmd)
    }
}

/// The raw flag of [`TokenizerSetting`].
#[derive(Args)]
struct TokenizerFlag {
    /// For `--model http://…`: the served model's GGUF file, tokenizer.json or Hugging Face
    /// model directory, which gives its tokenizer and chat template.
    #[arg(long, env = "ENACT_TOKENIZER", value_name = "PATH")]
    tokenizer: Option<PathBuf>,
}

/// The served model's tokenizer for HTTP models: `--tokenizer`/`ENACT_TOKENIZER`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerSetting {
    /// The path and where it came from (`--tokenizer P` or `ENACT_TOKENIZER=P`).
    given: Option<(PathBuf, String)>,
}

impl TokenizerSetting {
    /// A tokenizer path given in a configuration file; `origin` names where (for messages).
    pub fn from_config(path: Option<PathBuf>, origin: &str) -> Self {
        TokenizerSetting {
            given: path.map(|p| {
                let o = format!("{origin} tokenizer = {}", p.display());
                (p, o)
            }),
        }
    }

    /// The tokenizer source: a GGUF file or a model directory (a `tokenizer.json` stands for
    /// its directory). Errors name the flag or the variable, whichever gave the path.
    pub fn path(&self) -> Result<PathBuf> {
        let Some((p, origin)) = &self.given else {
            bail!(
                "an HTTP model needs the served model's tokenizer and chat template: pass --tokenizer (or set ENACT_TOKENIZER) to its GGUF file, tokenizer.json or Hugging Face model directory"
            );
        };
        if !p.exists() {
            bail!(
                "{origin} does not exist: pass the served model's GGUF file, tokenizer.json or Hugging Face model directory"
            );
        }
        if p.file_name().is_some_and(|n| n == "tokenizer.json") {
            return Ok(p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from));
        }
        Ok(p.clone())
    }
}

impl FromArgMatches for TokenizerSetting {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let given = m
            .get_one::<PathBuf>("tokenizer")
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| {
                let raw = p.display().to_string();
                let o = origin(m, "tokenizer", "--tokenizer", "ENACT_TOKENIZER", &raw);
                (p.clone(), o)
            });
        Ok(TokenizerSetting { given })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for TokenizerSetting {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        TokenizerFlag::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        TokenizerFlag::augment_args_for_update(cmd)
    }
}

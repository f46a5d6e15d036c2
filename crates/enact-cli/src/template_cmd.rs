//! `enact tokenize` and `enact template render|show`: look at what a model's tokenizer and
//! chat template make of some text or a conversation.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use enact_core::{ChatTemplate, RenderOptions, Tokenizer};
use enact_model::{HfTokenizer, JinjaTemplate, ModelFiles, ToolPromptTemplate};

#[derive(Args)]
pub struct TokenizeArgs {
    /// A GGUF file, a Hugging Face model directory, or `default` (the cached default model).
    #[arg(long, conflicts_with = "tokenizer")]
    model: Option<String>,
    /// A tokenizer.json file.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Treat the input as token ids (JSON array or whitespace/comma separated) and decode them.
    #[arg(long)]
    decode: bool,
    /// Print one JSON object ({"ids", "pieces"}) instead of plain ids.
    #[arg(long)]
    json: bool,
    /// The text, or `-` to read standard input. Special tokens in it (`<|im_start|>`) are
    /// recognised; no BOS is added. With -v the pieces are printed too.
    input: String,
}

#[derive(Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Render messages (and tools) to the prompt text the model sees.
    Render(RenderArgs),
    /// Print a model's chat template source.
    Show(SourceArgs),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct SourceArgs {
    /// A Jinja template file.
    #[arg(long)]
    template: Option<PathBuf>,
    /// A GGUF file, a Hugging Face model directory, or `default`.
    #[arg(long)]
    model: Option<String>,
    /// A Hugging Face tokenizer_config.json (its chat_template and special tokens).
    #[arg(long)]
    tokenizer_config: Option<PathBuf>,
}

#[derive(Args)]
struct RenderArgs {
    /// Messages: a JSON array (enact or OpenAI/Hugging Face form), a file or `-` for stdin.
    #[arg(long)]
    messages: String,
    /// Tools: a JSON array of {name, description, parameters} or OpenAI function tools.
    #[arg(long)]
    tools: Option<PathBuf>,
    /// End with the assistant generation prompt.
    #[arg(long)]
    add_generation_prompt: bool,
    /// Set `enable_thinking` (left undefined when not given).
    #[arg(long)]
    enable_thinking: Option<bool>,
    /// Render the JSON exactly as given with the template alone, as transformers'
    /// `apply_chat_template` would (no conversion, no enact tool prompt).
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    source: SourceArgs,
}

fn read_input(arg: &str) -> Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        Ok(s)
    } else {
        Ok(arg.to_string())
    }
}

fn read_file_or_stdin(arg: &str) -> Result<String> {
    if arg == "-" {
        read_input(arg)
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read {arg}"))
    }
}

/// `default` → the cached default model (with a hint to fetch it), else a path.
fn model_path(spec: &str) -> Result<PathBuf> {
    if spec == "default" {
        let p = enact_model::default_model_path()
            .context("cannot locate the model cache: HOME is not set")?;
        if !p.is_file() {
            bail!(
                "the default model is not downloaded ({} is missing); run `enact model fetch`",
                p.display()
            );
        }
        return Ok(p);
    }
    let p = PathBuf::from(spec);
    if !p.exists() {
        bail!(
            "model {spec} does not exist: give a .gguf file, a Hugging Face model directory, or `default`"
        );
    }
    Ok(p)
}

fn load_model(spec: &str) -> Result<ModelFiles> {
    let p = model_path(spec)?;
    ModelFiles::load(&p).with_context(|| format!("cannot load model {}", p.display()))
}

fn load_tokenizer(args: &TokenizeArgs) -> Result<HfTokenizer> {
    match (&args.model, &args.tokenizer) {
        (_, Some(t)) => Ok(HfTokenizer::from_file(t)?),
        (Some(m), None) => Ok(load_model(m)?.tokenizer),
        (None, None) => load_model("default")
            .map(|f| f.tokenizer)
            .context("no --model or --tokenizer given, and the default model is unavailable"),
    }
}

fn parse_ids(text: &str) -> Result<Vec<u32>> {
    if let Ok(ids) = serde_json::from_str::<Vec<u32>>(text.trim()) {
        return Ok(ids);
    }
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("{s:?} is not a token id"))
        })
        .collect()
}

pub fn tokenize(args: TokenizeArgs, verbose: u8) -> Result<()> {
    let tok = load_tokenizer(&args)?;
    let input = read_input(&args.input)?;
    if args.decode {
        let ids = parse_ids(&input)?;
        print!("{}", tok.decode(&ids)?);
        return Ok(());
    }
    let ids = tok.encode(&input)?;
    let pieces = tok.pieces(&ids);
    if args.json {
        println!("{}", serde_json::json!({"ids": ids, "pieces": pieces}));
        return Ok(());
    }
    println!("{}", serde_json::to_string(&ids)?);
    if verbose > 0 {
        for (id, piece) in ids.iter().zip(&pieces) {
            let text = tok.decode(&[*id]).unwrap_or_default();
            println!("{id:>8}  {piece:<20} {text:?}");
        }
        eprintln!("{} tokens · tokenizer {}", ids.len(), tok.identity());
    }
    Ok(())
}

fn load_template(src: &SourceArgs) -> Result<JinjaTemplate> {
    if let Some(t) = &src.template {
        return Ok(JinjaTemplate::from_file(t)?);
    }
    if let Some(c) = &src.tokenizer_config {
        return Ok(JinjaTemplate::from_tokenizer_config(c)?);
    }
    match &src.model {
        Some(m) => Ok(load_model(m)?.template),
        None => bail!("give --template FILE, --model PATH or --tokenizer-config FILE"),
    }
}

fn read_json(arg: &str, what: &str) -> Result<serde_json::Value> {
    let text = read_file_or_stdin(arg)?;
    serde_json::from_str(&text).with_context(|| format!("{what} ({arg}) is not valid JSON"))
}

fn render(args: RenderArgs) -> Result<()> {
    let template = load_template(&args.source)?;
    let messages = read_json(&args.messages, "--messages")?;
    let tools = match &args.tools {
        Some(p) => Some(read_json(&p.display().to_string(), "--tools")?),
        None => None,
    };
    let options = RenderOptions {
        add_generation_prompt: args.add_generation_prompt,
        enable_thinking: args.enable_thinking,
    };
    let text = if args.raw {
        let tools = tools
            .as_ref()
            .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()));
        template.render_json(&messages, tools, &options)?
    } else {
        let messages = enact_model::messages_from_json(&messages).map_err(anyhow::Error::msg)?;
        let tools = match &tools {
            Some(t) => enact_model::tools_from_json(t).map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        let chat: Arc<dyn ChatTemplate> = if template.supports_tools() {
            Arc::new(template)
        } else {
            Arc::new(ToolPromptTemplate::new(Arc::new(template)))
        };
        chat.render(&messages, &tools, &options)?
    };
    print!("{text}");
    Ok(())
}

fn show(src: SourceArgs) -> Result<()> {
    let t = load_template(&src)?;
    print!("{}", t.source());
    eprintln!(
        "\n-- template {} · end of turn {:?} · tool support {}",
        ChatTemplate::name(&t),
        t.end_of_turn(),
        if t.supports_tools() {
            "yes"
        } else {
            "no (enact injects Hermes tool calling)"
        }
    );
    Ok(())
}

pub fn template(args: TemplateArgs) -> Result<()> {
    match args.command {
        TemplateCommand::Render(a) => render(a),
        TemplateCommand::Show(a) => show(a),
    }
}

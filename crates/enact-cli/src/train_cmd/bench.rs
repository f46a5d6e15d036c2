//! `enact bench train`: training throughput of the embedded trainer, next to PyTorch on the
//! same shapes in the same run when `torch` is importable.
//!
//! Two workloads, both a batch of 4 sequences × 256 tokens (64 prompt, 192 with loss), SFT,
//! AdamW, gradient clipping:
//! - full training of a tiny Qwen2-shaped model (~4M parameters, random weights);
//! - LoRA r=8 on all seven projections of the default model (SmolLM2-135M, its real weights;
//!   PyTorch gets random weights of the same shapes).
//!
//! Tokens/s is the median over the timed steps after one warm-up step. The PyTorch side is
//! a straightforward eager implementation (scaled_dot_product_attention, tied head), run with
//! the same number of threads.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use enact_train::bench::{
    Throughput, full_sft_config, lora_sft_config, random_model, synthetic_batch, time_steps,
    tiny_config,
};
use enact_train::{Trainer, TwinModel};

use crate::model::{self, ModelSpec};

#[derive(Args)]
pub struct BenchTrainArgs {
    /// The model for the LoRA workload: `default`, a file, or `none` to skip it.
    #[arg(long, default_value = "default")]
    model: String,
    /// Timed steps per workload (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Skip the PyTorch baseline even when torch is importable.
    #[arg(long)]
    no_torch: bool,
}

const SEQUENCES: usize = 4;
const PROMPT: usize = 64;
const SAMPLED: usize = 192;

/// The PyTorch side: argv[1] is a JSON object of shapes; prints one JSON object of tokens/s.
const TORCH_SCRIPT: &str = r#"
import json, math, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"]); torch.manual_seed(0)
class RMS(nn.Module):
    def __init__(s, d): super().__init__(); s.w = nn.Parameter(torch.ones(d))
    def forward(s, x): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * s.w
class Lin(nn.Module):
    def __init__(s, i, o, bias, r):
        super().__init__(); s.l = nn.Linear(i, o, bias=bias); s.r = r
        if r:
            s.A = nn.Parameter(torch.randn(r, i) / math.sqrt(i)); s.B = nn.Parameter(torch.zeros(o, r))
    def forward(s, x):
        y = s.l(x)
        return y + (x @ s.A.t() @ s.B.t()) * 2.0 if s.r else y
class Block(nn.Module):
    def __init__(s, c, r):
        super().__init__(); d, hd = c["d"], c["hd"]; s.c = c; s.n1, s.n2 = RMS(d), RMS(d)
        s.q = Lin(d, c["h"] * hd, c["bias"], r); s.k = Lin(d, c["kv"] * hd, c["bias"], r)
        s.v = Lin(d, c["kv"] * hd, c["bias"], r); s.o = Lin(c["h"] * hd, d, False, r)
        s.g = Lin(d, c["f"], False, r); s.u = Lin(d, c["f"], False, r); s.dn = Lin(c["f"], d, False, r)
    def forward(s, x, cos, sin):
        c = s.c; B, T, _ = x.shape; hd = c["hd"]; h = s.n1(x)
        q = s.q(h).view(B, T, c["h"], hd).transpose(1, 2)
        k = s.k(h).view(B, T, c["kv"], hd).transpose(1, 2)
        v = s.v(h).view(B, T, c["kv"], hd).transpose(1, 2)
        def rope(t):
            t1, t2 = t[..., : hd // 2], t[..., hd // 2 :]
            return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], -1)
        q, k = rope(q), rope(k); rep = c["h"] // c["kv"]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
        x = x + s.o(att); h = s.n2(x)
        return x + s.dn(F.silu(s.g(h)) * s.u(h))
class Model(nn.Module):
    def __init__(s, c, r):
        super().__init__(); s.c = c; s.emb = nn.Embedding(c["vocab"], c["d"])
        s.blocks = nn.ModuleList([Block(c, r) for _ in range(c["layers"])]); s.norm = RMS(c["d"])
    def forward(s, ids):
        T = ids.shape[1]; hd = s.c["hd"]
        inv = 1.0 / (10000 ** (torch.arange(0, hd // 2).float() / (hd // 2)))
        ang = torch.arange(T).float()[:, None] * inv[None]; cos, sin = ang.cos(), ang.sin()
        x = s.emb(ids)
        for b in s.blocks: x = b(x, cos, sin)
        return s.norm(x)
def run(c, lora):
    m = Model(c, 8 if lora else 0)
    if lora:
        for name, p in m.named_parameters(): p.requires_grad = name.endswith(".A") or name.endswith(".B")
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    n, P, S = a["sequences"], a["prompt"], a["sampled"]
    ids = torch.randint(0, c["vocab"], (n, P + S))
    def step():
        h = m(ids)[:, P - 1 : -1]
        logits = h @ m.emb.weight.t()
        loss = F.cross_entropy(logits.reshape(-1, c["vocab"]), ids[:, P:].reshape(-1))
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    step(); rates = []
    for _ in range(a["steps"]):
        t = time.perf_counter(); step(); rates.append(n * (P + S) / (time.perf_counter() - t))
    rates.sort(); return rates[len(rates) // 2]
out = {"version": torch.__version__, "full": run(a["tiny"], False)}
if a.get("lora"): out["lora"] = run(a["lora"], True)
print(json.dumps(out))
"#;

fn shapes(cfg: &enact_candle::ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "d": cfg.d_model, "hd": cfg.head_dim, "h": cfg.n_heads, "kv": cfg.n_kv_heads,
        "f": cfg.ffn, "layers": cfg.n_layers, "vocab": cfg.vocab,
        "bias": matches!(cfg.arch, enact_candle::Arch::Qwen2),
    })
}

fn torch_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn line(label: &str, ours: &Throughput, torch: Option<f64>) {
    let cpu = ours
        .tokens_per_cpu_s
        .map(|c| format!("{c:.0}"))
        .unwrap_or_else(|| "-".into());
    match torch {
        Some(t) => println!(
            "{label:<44} {:>10.0} {cpu:>12} {t:>12.0} {:>8.2}×",
            ours.tokens_per_s,
            ours.tokens_per_s / t
        ),
        None => println!(
            "{label:<44} {:>10.0} {cpu:>12} {:>12} {:>9}",
            ours.tokens_per_s, "-", "-"
        ),
    }
}

pub async fn run(a: BenchTrainArgs) -> Result<()> {
    let threads = candle_core::utils::get_num_threads();
    let steps = a.steps.max(1);
    let batch_text = format!(
        "{SEQUENCES} sequences × {} tokens ({PROMPT} prompt, {SAMPLED} with loss)",
        PROMPT + SAMPLED
    );
    println!(
        "enact bench train · {batch_text} · SFT + AdamW · median of {steps} steps · {threads} threads"
    );

    let tiny_cfg = tiny_config();
    let full = tokio::task::spawn_blocking(move || -> Result<Throughput> {
        let twin =
            TwinModel::from_engine_model(&random_model(&tiny_cfg, 1)?, candle_core::DType::F32)?;
        let batch = synthetic_batch(twin.cfg.vocab, SEQUENCES, PROMPT, SAMPLED);
        let mut trainer = Trainer::new(twin, full_sft_config(), "tiny")?;
        Ok(time_steps(&mut trainer, &batch, steps)?)
    })
    .await
    .context("the full-training benchmark crashed")??;

    let lora_path: Option<PathBuf> = if a.model == "none" {
        None
    } else {
        match model::resolve_model_path(&ModelSpec::parse(&a.model, None)?) {
            Ok(p) => Some(p),
            Err(e) => {
                println!("LoRA workload skipped: {e:#}");
                None
            }
        }
    };
    let lora = match lora_path {
        None => None,
        Some(path) => Some(
            tokio::task::spawn_blocking(
                move || -> Result<(Throughput, enact_candle::ModelConfig)> {
                    let twin = TwinModel::load(&path, candle_core::DType::F32)?;
                    let cfg = twin.cfg.clone();
                    let batch = synthetic_batch(twin.cfg.vocab, SEQUENCES, PROMPT, SAMPLED);
                    let mut trainer =
                        Trainer::new(twin, lora_sft_config(), path.display().to_string())?;
                    Ok((time_steps(&mut trainer, &batch, steps)?, cfg))
                },
            )
            .await
            .context("the LoRA benchmark crashed")??,
        ),
    };

    let torch: Option<serde_json::Value> = if a.no_torch {
        None
    } else if !torch_available() {
        println!("PyTorch baseline skipped: `import torch` fails in python3 (pip install torch)");
        None
    } else {
        let spec = serde_json::json!({
            "threads": threads, "steps": steps, "sequences": SEQUENCES,
            "prompt": PROMPT, "sampled": SAMPLED, "tiny": shapes(&tiny_config()),
            "lora": lora.as_ref().map(|(_, cfg)| shapes(cfg)),
        });
        let out = std::process::Command::new("python3")
            .args(["-c", TORCH_SCRIPT])
            .arg(spec.to_string())
            .output()
            .context("cannot run python3 for the PyTorch baseline")?;
        if !out.status.success() {
            println!(
                "PyTorch baseline failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        } else {
            let text = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str(text.trim()).ok()
        }
    };
    let torch_rate = |k: &str| torch.as_ref().and_then(|t| t[k].as_f64());
    println!(
        "{:<44} {:>10} {:>12} {:>12} {:>9}",
        "workload",
        "enact tok/s",
        "tok/CPU-s",
        format!(
            "torch{} tok/s",
            torch
                .as_ref()
                .and_then(|t| t["version"].as_str())
                .map(|v| format!(" {v}"))
                .unwrap_or_default()
        ),
        "ratio"
    );
    line(
        "full training, tiny Qwen2 (~4M params)",
        &full,
        torch_rate("full"),
    );
    if let Some((l, cfg)) = &lora {
        line(
            &format!(
                "LoRA r=8, 7 projections, {} blocks × d{}",
                cfg.n_layers, cfg.d_model
            ),
            l,
            torch_rate("lora"),
        );
    }
    println!(
        "ratio = enact / PyTorch tokens per second on the same shapes (above 1: enact faster)"
    );
    Ok(())
}

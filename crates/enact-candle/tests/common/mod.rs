//! Tiny random-initialised models written to GGUF and safetensors.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use enact_candle::{EngineOptions, WeightFormat};
use enact_core::{SampleRequest, SamplingParams};

pub const VOCAB: usize = 64;
pub const D: usize = 64;
pub const FFN: usize = 96;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const LAYERS: usize = 2;

/// Head dimension: Qwen3 uses an explicit key_length different from d/heads.
pub fn head_dim(arch: &str) -> usize {
    if arch == "qwen3" { 32 } else { D / HEADS }
}

pub const PROMPT: [u32; 12] = [3, 17, 5, 60, 22, 9, 41, 8, 33, 2, 11, 50];

pub fn opts(weights: WeightFormat, threads: usize) -> EngineOptions {
    EngineOptions { threads, weights }
}

/// A tiny GGUF of `arch` with seed-42 weights in `dir`.
pub fn gguf(dir: &Path, arch: &str, dtype: GgmlDType) -> PathBuf {
    let p = dir.join(format!("tiny-{arch}-{dtype:?}.gguf"));
    write_gguf(&p, arch, dtype, 42);
    p
}

pub fn request(ctx: &[u32], max: usize, params: SamplingParams) -> SampleRequest {
    SampleRequest {
        context: Arc::new(ctx.to_vec()),
        max_tokens: max,
        stop_tokens: vec![],
        stop_strings: vec![],
        params,
        on_token: None,
    }
}

/// Temperature `t`, top-p 0.95, seeded.
pub fn sampling(t: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: t,
        top_p: 0.95,
        top_k: 0,
        min_p: 0.0,
        seed: Some(seed),
    }
}

/// Temperature 1 without truncation: the raw model distribution.
pub fn raw_sampling(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
        seed: Some(seed),
    }
}

/// Reproducible weights in [-1, 1) (an LCG; also used by enact-cli's tiny chat model).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Named tensors in Hugging Face naming, shapes (out, in).
pub fn weights(arch: &str, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut r = Rng(seed);
    let hd = head_dim(arch);
    let (qd, kvd) = (HEADS * hd, KV_HEADS * hd);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| out.push((name, shape, data));
    push(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, D],
        r.vec(VOCAB * D, 1.0),
    );
    for i in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let norm = |r: &mut Rng, n| r.vec(n, 0.1).iter().map(|x| 1.0 + x).collect::<Vec<_>>();
        push(p("input_layernorm.weight"), vec![D], norm(&mut r, D));
        push(
            p("self_attn.q_proj.weight"),
            vec![qd, D],
            r.vec(qd * D, 0.3),
        );
        push(
            p("self_attn.k_proj.weight"),
            vec![kvd, D],
            r.vec(kvd * D, 0.3),
        );
        push(
            p("self_attn.v_proj.weight"),
            vec![kvd, D],
            r.vec(kvd * D, 0.3),
        );
        if arch == "qwen2" {
            push(p("self_attn.q_proj.bias"), vec![qd], r.vec(qd, 0.1));
            push(p("self_attn.k_proj.bias"), vec![kvd], r.vec(kvd, 0.1));
            push(p("self_attn.v_proj.bias"), vec![kvd], r.vec(kvd, 0.1));
        }
        if arch == "qwen3" {
            push(p("self_attn.q_norm.weight"), vec![hd], norm(&mut r, hd));
            push(p("self_attn.k_norm.weight"), vec![hd], norm(&mut r, hd));
        }
        push(
            p("self_attn.o_proj.weight"),
            vec![D, qd],
            r.vec(D * qd, 0.3),
        );
        push(
            p("post_attention_layernorm.weight"),
            vec![D],
            norm(&mut r, D),
        );
        push(p("mlp.gate_proj.weight"), vec![FFN, D], r.vec(FFN * D, 0.3));
        push(p("mlp.up_proj.weight"), vec![FFN, D], r.vec(FFN * D, 0.3));
        push(p("mlp.down_proj.weight"), vec![D, FFN], r.vec(D * FFN, 0.3));
    }
    push("model.norm.weight".into(), vec![D], vec![1.0; D]);
    push(
        "lm_head.weight".into(),
        vec![VOCAB, D],
        r.vec(VOCAB * D, 1.0),
    );
    out
}

fn gguf_name(hf: &str) -> String {
    if hf == "model.embed_tokens.weight" {
        return "token_embd.weight".into();
    }
    if hf == "model.norm.weight" {
        return "output_norm.weight".into();
    }
    if hf == "lm_head.weight" {
        return "output.weight".into();
    }
    let rest = hf.trim_start_matches("model.layers.");
    let (i, name) = rest.split_once('.').unwrap();
    let g = match name {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("unmapped {other}"),
    };
    format!("blk.{i}.{g}")
}

/// Writes a tiny GGUF; matrices in `dtype` (F32, Q8_0 or Q4_1), vectors in F32.
pub fn write_gguf(path: &Path, arch: &str, dtype: GgmlDType, seed: u64) {
    use gguf_file::Value;
    let hd = head_dim(arch);
    let meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(format!("tiny-{arch}"))),
        (format!("{arch}.block_count"), Value::U32(LAYERS as u32)),
        (format!("{arch}.embedding_length"), Value::U32(D as u32)),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(FFN as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(HEADS as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(KV_HEADS as u32),
        ),
        (
            format!("{arch}.attention.key_length"),
            Value::U32(hd as u32),
        ),
        (format!("{arch}.context_length"), Value::U32(256)),
        (format!("{arch}.rope.freq_base"), Value::F32(10000.0)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
    ];
    let mut tensors = Vec::new();
    for (name, shape, mut data) in weights(arch, seed) {
        // llama.cpp's converter permutes llama's q/k rows so that interleaved rotary pairs
        // in GGUF equal Hugging Face's half-split pairs; do the same.
        if arch == "llama" && (name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight")) {
            data = permute(&data, shape[0] / hd, hd, shape[1]);
        }
        let t = Tensor::from_vec(data, shape.clone(), &Device::Cpu).unwrap();
        let q = if shape.len() == 2 {
            QTensor::quantize(&t, dtype).unwrap()
        } else {
            QTensor::quantize(&t, GgmlDType::F32).unwrap()
        };
        tensors.push((gguf_name(&name), q));
    }
    let mut f = std::fs::File::create(path).unwrap();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &meta_refs, &t_refs).unwrap();
}

/// Writes config.json + model.safetensors (f32, or bf16 when `bf16`) into `dir`.
pub fn write_safetensors(dir: &Path, arch: &str, bf16: bool, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let hd = head_dim(arch);
    let cfg = serde_json::json!({
        "model_type": arch,
        "architectures": [format!("{}ForCausalLM", arch)],
        "hidden_size": D,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": hd,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "tie_word_embeddings": false
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut map = HashMap::new();
    for (name, shape, data) in weights(arch, seed) {
        let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        let t = if bf16 {
            t.to_dtype(candle_core::DType::BF16).unwrap()
        } else {
            t
        };
        map.insert(name, t);
    }
    let p = dir.join("model.safetensors");
    candle_core::safetensors::save(&map, &p).unwrap();
    dir.to_path_buf()
}

/// Per head, row (t, i) → (i, t) for t in 0..2, i in 0..hd/2.
fn permute(w: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for t in 0..2 {
            for i in 0..half {
                let old = h * hd + t * half + i;
                let new = h * hd + 2 * i + t;
                out[new * cols..(new + 1) * cols].copy_from_slice(&w[old * cols..(old + 1) * cols]);
            }
        }
    }
    out
}

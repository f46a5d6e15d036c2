//! A tiny random chat model written as GGUF (byte-level tokenizer, SmolLM2's template,
//! llama weights) and task files rewarded for an `a` in the answer: what the CLI's
//! end-to-end tests run the embedded engine on.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};

#[path = "../../../enact-candle/tests/common/mod.rs"]
mod candle_common;
use candle_common::Rng;

const D: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 64;
const LAYERS: usize = 2;
/// `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, 256 bytes, one merge.
const VOCAB: usize = 3 + 256 + 1;
const IM_END: usize = 2;

/// GPT-2's printable stand-in for a byte.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return b as char;
    }
    let mut n = 0u32;
    for x in 0..=255u8 {
        if x == b {
            break;
        }
        if !printable(x) {
            n += 1;
        }
    }
    char::from_u32(256 + n).unwrap()
}

/// A tiny llama with SmolLM2's chat template and a byte-level tokenizer. Its replies are
/// short and often contain `a`: residual dimension 0 is held at 1 (embedding column 0 is 1,
/// the blocks never write it), and the head reads it for `<|im_end|>` and `a` only, so
/// those two are likelier than the rest whatever the context.
pub fn tiny_chat_model(path: &Path) {
    use gguf_file::Value;
    let s = |v: &str| Value::String(v.into());
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut types = vec![3i32, 3, 3];
    for b in 0..=255u8 {
        tokens.push(byte_char(b).to_string());
        types.push(1);
    }
    tokens.push("aa".into());
    types.push(1);
    assert_eq!(tokens.len(), VOCAB);
    let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    let hd = D / HEADS;
    let meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), s("llama")),
        ("general.name".into(), s("tiny-chat")),
        ("llama.block_count".into(), Value::U32(LAYERS as u32)),
        ("llama.embedding_length".into(), Value::U32(D as u32)),
        ("llama.feed_forward_length".into(), Value::U32(FFN as u32)),
        (
            "llama.attention.head_count".into(),
            Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(KV_HEADS as u32),
        ),
        ("llama.context_length".into(), Value::U32(4096)),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("smollm")),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.iter().map(|t| s(t)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(vec![s("a a")])),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(IM_END as u32),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), s(template)),
    ];
    let mut r = Rng(7);
    let mut weights: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut embed = r.vec(VOCAB * D, 1.0);
    for t in 0..VOCAB {
        embed[t * D] = 1.0;
    }
    weights.push(("token_embd.weight".into(), vec![VOCAB, D], embed));
    let (qd, kvd) = (HEADS * hd, KV_HEADS * hd);
    for i in 0..LAYERS {
        let n = |x: &str| format!("blk.{i}.{x}");
        weights.push((n("attn_norm.weight"), vec![D], vec![1.0; D]));
        weights.push((n("attn_q.weight"), vec![qd, D], r.vec(qd * D, 0.3)));
        weights.push((n("attn_k.weight"), vec![kvd, D], r.vec(kvd * D, 0.3)));
        weights.push((n("attn_v.weight"), vec![kvd, D], r.vec(kvd * D, 0.3)));
        let mut o = r.vec(D * qd, 0.3);
        o[..qd].fill(0.0); // row 0: the blocks never write residual dimension 0
        weights.push((n("attn_output.weight"), vec![D, qd], o));
        weights.push((n("ffn_norm.weight"), vec![D], vec![1.0; D]));
        weights.push((n("ffn_gate.weight"), vec![FFN, D], r.vec(FFN * D, 0.3)));
        weights.push((n("ffn_up.weight"), vec![FFN, D], r.vec(FFN * D, 0.3)));
        let mut down = r.vec(D * FFN, 0.3);
        down[..FFN].fill(0.0);
        weights.push((n("ffn_down.weight"), vec![D, FFN], down));
    }
    weights.push(("output_norm.weight".into(), vec![D], vec![1.0; D]));
    let mut head = r.vec(VOCAB * D, 0.05);
    for t in 0..VOCAB {
        head[t * D] = 0.0;
    }
    head[IM_END * D] = 3.0;
    head[(3 + usize::from(b'a')) * D] = 2.5;
    weights.push(("output.weight".into(), vec![VOCAB, D], head));

    let mut qs = Vec::new();
    for (name, shape, data) in weights {
        let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        qs.push((name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let mut f = std::fs::File::create(path).unwrap();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &meta_refs, &t_refs).unwrap();
}

/// Task files: `train` tasks and `test` tasks, each rewarded when the answer contains `a`.
pub fn say_a_tasks(dir: &Path, train: usize, test: usize) {
    for (split, n) in [("train", train), ("test", test)] {
        for i in 0..n {
            let d = dir.join(format!("say-a-{split}-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("task.toml"),
                format!(
                    r#"[task]
id = "say-a-{split}-{i}"
split = "{split}"
prompt = "Reply with a word that has the letter a in it ({i})."

[verifier]
kind = "builtin"
checks = [{{ type = "answer_contains", value = "a" }}]

[reference]
turns = ["banana"]
"#
                ),
            )
            .unwrap();
        }
    }
}

/// `enact eval` on the tiny model (`DIR/tiny.gguf`, one thread, f32 weights) and the task
/// files under `DIR/tasks`, run in `DIR`; the test adds the rest.
pub fn tiny_eval(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_enact"));
    c.current_dir(dir).args([
        "eval",
        "--model",
        "tiny.gguf",
        "--threads",
        "1",
        "--weights",
        "f32",
        "--env",
    ]);
    c.arg(format!("tasks:{}", dir.join("tasks").display()));
    c
}

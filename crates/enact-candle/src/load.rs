//! Reading models: GGUF (any GGML quantization; Q8_0 and Q4_1 kept natively, others
//! dequantized by candle and re-quantized) and safetensors (`config.json` + `*.safetensors`,
//! f32/f16/bf16).

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{DType, Device, Tensor};

use crate::error::{EngineError, Result, SUPPORTED_ARCHITECTURES};
use crate::model::{Arch, Layer, Model, ModelConfig, RopeStyle};
use crate::quant::{Matrix, WeightKind};

/// How weights are stored in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Q8_0 and Q4_1 stay as shipped, f32/f16/bf16 become f32, other GGML types Q8_0.
    Native,
    /// Every quantizable matrix becomes Q8_0 (the fast path: Q4_1 → Q8_0 repacking).
    #[default]
    Q8_0,
    /// Everything f32 (exact safetensors weights; slow).
    F32,
}

impl WeightFormat {
    pub fn parse(s: &str) -> Option<WeightFormat> {
        match s.to_ascii_lowercase().as_str() {
            "native" | "as-shipped" => Some(WeightFormat::Native),
            "q8_0" | "q8" => Some(WeightFormat::Q8_0),
            "f32" => Some(WeightFormat::F32),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Native => "native",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::F32 => "f32",
        }
    }
}

/// Facts about a model file, for `enact model info`.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub format: String,
    pub file_bytes: u64,
    pub architecture: String,
    pub name: Option<String>,
    /// Tensor storage types in the file and how many tensors of each.
    pub tensor_types: BTreeMap<String, usize>,
    pub parameters: usize,
    /// Selected metadata (GGUF keys or config.json fields) as text.
    pub metadata: BTreeMap<String, String>,
    pub chat_template: Option<String>,
}

fn hint_for(path: &Path) -> String {
    if crate::fetch::is_default_path(path) {
        "run `enact model fetch` to download and verify the default model".to_string()
    } else {
        "pass a GGUF file, a .safetensors file with config.json beside it, or a directory holding \
         config.json and *.safetensors; `enact model fetch` installs the default model"
            .to_string()
    }
}

fn corrupt(path: &Path, detail: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_string(),
        hint: hint_for(path),
    }
}

fn check_arch(path: &Path, arch: &str) -> Result<Arch> {
    match arch {
        "llama" => Ok(Arch::Llama),
        "qwen2" => Ok(Arch::Qwen2),
        "qwen3" => Ok(Arch::Qwen3),
        other => {
            debug_assert!(!SUPPORTED_ARCHITECTURES.contains(&other));
            Err(EngineError::UnknownArchitecture {
                path: path.to_path_buf(),
                found: other.to_string(),
            })
        }
    }
}

/// Loads a model from a GGUF file, a safetensors file or a safetensors directory.
pub fn load_model(path: &Path, format: WeightFormat) -> Result<(Model, ModelInfo)> {
    if !path.exists() {
        return Err(EngineError::Missing {
            path: path.to_path_buf(),
            hint: hint_for(path),
        });
    }
    if path.is_dir() || path.extension().is_some_and(|e| e == "safetensors") {
        load_safetensors(path, format)
    } else {
        load_gguf(path, format)
    }
}

/// Reads a model's facts without keeping its weights.
pub fn inspect(path: &Path) -> Result<ModelInfo> {
    load_model(path, WeightFormat::Native).map(|(_, info)| info)
}

// ---------------------------------------------------------------------------------------
// GGUF

fn gguf_value_text(v: &gguf_file::Value) -> String {
    use gguf_file::Value as V;
    match v {
        V::String(s) => {
            if s.len() > 80 {
                format!(
                    "{:?}… ({} chars)",
                    &s.chars().take(60).collect::<String>(),
                    s.len()
                )
            } else {
                format!("{s:?}")
            }
        }
        V::Array(a) => format!("[{} items]", a.len()),
        V::U8(x) => x.to_string(),
        V::I8(x) => x.to_string(),
        V::U16(x) => x.to_string(),
        V::I16(x) => x.to_string(),
        V::U32(x) => x.to_string(),
        V::I32(x) => x.to_string(),
        V::U64(x) => x.to_string(),
        V::I64(x) => x.to_string(),
        V::F32(x) => x.to_string(),
        V::F64(x) => x.to_string(),
        V::Bool(x) => x.to_string(),
    }
}

struct Gguf<'a> {
    path: &'a Path,
    bytes: Vec<u8>,
    content: gguf_file::Content,
    format: WeightFormat,
}

impl Gguf<'_> {
    fn meta(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }
    fn meta_usize(&self, key: &str) -> Option<usize> {
        let v = self.meta(key)?;
        v.to_u64()
            .ok()
            .or_else(|| v.to_u32().ok().map(u64::from))
            .or_else(|| v.to_i32().ok().and_then(|x| u64::try_from(x).ok()))
            .and_then(|x| usize::try_from(x).ok())
    }
    fn need_usize(&self, key: &str) -> Result<usize> {
        self.meta_usize(key)
            .ok_or_else(|| corrupt(self.path, format!("GGUF metadata {key} is missing")))
    }
    fn meta_f32(&self, key: &str) -> Option<f32> {
        let v = self.meta(key)?;
        v.to_f32()
            .ok()
            .or_else(|| v.to_f64().ok().map(|x| x as f32))
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Raw bytes and info of a tensor.
    fn raw(&self, name: &str) -> Result<(&gguf_file::TensorInfo, &[u8])> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| corrupt(self.path, format!("tensor {name} is missing")))?;
        let elems = info.shape.elem_count();
        let bs = info.ggml_dtype.block_size();
        if !elems.is_multiple_of(bs) {
            return Err(corrupt(
                self.path,
                format!("tensor {name} has a partial block"),
            ));
        }
        // Offsets and shapes come from the file: checked, so a corrupt header cannot
        // overflow (a panic in debug builds, a wrapped read of other bytes in release).
        let range = (elems / bs)
            .checked_mul(info.ggml_dtype.type_size())
            .and_then(|size| {
                let start = usize::try_from(self.content.tensor_data_offset)
                    .ok()?
                    .checked_add(usize::try_from(info.offset).ok()?)?;
                Some(start..start.checked_add(size)?)
            });
        let bytes = range.and_then(|r| self.bytes.get(r)).ok_or_else(|| {
            corrupt(
                self.path,
                format!("tensor {name} lies beyond the end of the file (truncated download?)"),
            )
        })?;
        Ok((info, bytes))
    }

    fn f32s(&self, name: &str) -> Result<Vec<f32>> {
        let (info, bytes) = self.raw(name)?;
        match info.ggml_dtype {
            GgmlDType::F32 => Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            _ => {
                let q = info
                    .read(
                        &mut Cursor::new(&self.bytes),
                        self.content.tensor_data_offset,
                        &Device::Cpu,
                    )
                    .map_err(|e| corrupt(self.path, format!("tensor {name}: {e}")))?;
                q.dequantize(&Device::Cpu)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| corrupt(self.path, format!("tensor {name}: {e}")))
            }
        }
    }

    fn matrix(&self, name: &str) -> Result<Matrix> {
        let (info, bytes) = self.raw(name)?;
        let dims = info.shape.dims();
        if dims.len() != 2 {
            return Err(corrupt(
                self.path,
                format!("tensor {name} has shape {dims:?}, expected a matrix"),
            ));
        }
        let (rows, cols) = (dims[0], dims[1]);
        let native = match info.ggml_dtype {
            GgmlDType::Q8_0 => Matrix::from_ggml_q8_0(rows, cols, bytes),
            GgmlDType::Q4_1 => Matrix::from_ggml_q4_1(rows, cols, bytes),
            _ => None,
        };
        let m = match native {
            Some(m) => m,
            None => {
                let f = self.f32s(name)?;
                match (info.ggml_dtype, self.format) {
                    (_, WeightFormat::F32)
                    | (GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16, WeightFormat::Native) => {
                        Matrix::from_f32(rows, cols, f)
                    }
                    _ => Matrix::quantize_q8_0(rows, cols, &f),
                }
            }
        };
        Ok(match self.format {
            WeightFormat::Native => m,
            WeightFormat::Q8_0 if m.cols.is_multiple_of(32) => m.convert(WeightKind::Q8_0),
            WeightFormat::Q8_0 => m,
            WeightFormat::F32 => m.convert(WeightKind::F32),
        })
    }

    fn opt_f32s(&self, name: &str) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.f32s(name).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn load_gguf(path: &Path, format: WeightFormat) -> Result<(Model, ModelInfo)> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let file_bytes = bytes.len() as u64;
    let content = gguf_file::Content::read(&mut Cursor::new(&bytes))
        .map_err(|e| corrupt(path, format!("not a readable GGUF file ({e})")))?;
    let g = Gguf {
        path,
        bytes,
        content,
        format,
    };
    let arch_name = g
        .meta("general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
        .ok_or_else(|| corrupt(path, "GGUF metadata general.architecture is missing"))?;
    let arch = check_arch(path, &arch_name)?;
    let a = arch_name.as_str();
    let d_model = g.need_usize(&format!("{a}.embedding_length"))?;
    let n_heads = g.need_usize(&format!("{a}.attention.head_count"))?;
    let n_kv_heads = g
        .meta_usize(&format!("{a}.attention.head_count_kv"))
        .unwrap_or(n_heads);
    let head_dim = g
        .meta_usize(&format!("{a}.attention.key_length"))
        .unwrap_or(d_model / n_heads.max(1));
    let (embd_info, _) = g.raw("token_embd.weight")?;
    let vocab = embd_info.shape.dims().first().copied().unwrap_or(0);
    let cfg = ModelConfig {
        arch,
        n_layers: g.need_usize(&format!("{a}.block_count"))?,
        d_model,
        ffn: g.need_usize(&format!("{a}.feed_forward_length"))?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab,
        context: g.meta_usize(&format!("{a}.context_length")).unwrap_or(4096),
        rope_base: g
            .meta_f32(&format!("{a}.rope.freq_base"))
            .unwrap_or(10_000.0),
        rms_eps: g
            .meta_f32(&format!("{a}.attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-6),
        // llama.cpp's converter permutes llama's q/k so that GGUF llama uses interleaved
        // rotary pairs; Qwen models keep the NeoX (half-split) layout.
        rope: match arch {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 | Arch::Qwen3 => RopeStyle::Half,
        },
    };
    cfg.validate().map_err(|e| corrupt(path, e))?;

    let mut info = ModelInfo {
        path: path.to_path_buf(),
        format: "gguf".into(),
        file_bytes,
        architecture: arch_name.clone(),
        name: g
            .meta("general.name")
            .and_then(|v| v.to_string().ok().cloned()),
        chat_template: g
            .meta("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned()),
        ..Default::default()
    };
    for (name, t) in &g.content.tensor_infos {
        let _ = name;
        *info
            .tensor_types
            .entry(format!("{:?}", t.ggml_dtype))
            .or_default() += 1;
        info.parameters += t.shape.elem_count();
    }
    let mut keys: Vec<&String> = g.content.metadata.keys().collect();
    keys.sort();
    for k in keys {
        if k == "tokenizer.chat_template" {
            continue;
        }
        if let Some(v) = g.meta(k) {
            info.metadata.insert(k.clone(), gguf_value_text(v));
        }
    }

    let mut layers = Vec::with_capacity(cfg.n_layers);
    for i in 0..cfg.n_layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        let q = g.matrix(&p("attn_q.weight"))?;
        let k = g.matrix(&p("attn_k.weight"))?;
        let v = g.matrix(&p("attn_v.weight"))?;
        let bias = match (
            g.opt_f32s(&p("attn_q.bias"))?,
            g.opt_f32s(&p("attn_k.bias"))?,
            g.opt_f32s(&p("attn_v.bias"))?,
        ) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c].concat()),
            (None, None, None) => None,
            _ => {
                return Err(corrupt(
                    path,
                    format!("block {i} has only some q/k/v biases"),
                ));
            }
        };
        layers.push(
            Layer::new(
                &cfg,
                g.f32s(&p("attn_norm.weight"))?,
                [q, k, v],
                bias,
                g.opt_f32s(&p("attn_q_norm.weight"))?,
                g.opt_f32s(&p("attn_k_norm.weight"))?,
                g.matrix(&p("attn_output.weight"))?,
                g.f32s(&p("ffn_norm.weight"))?,
                g.matrix(&p("ffn_gate.weight"))?,
                g.matrix(&p("ffn_up.weight"))?,
                g.matrix(&p("ffn_down.weight"))?,
            )
            .map_err(|e| corrupt(path, format!("block {i}: {e}")))?,
        );
    }
    let embed = g.matrix("token_embd.weight")?;
    let lm_head = if g.has("output.weight") {
        Some(g.matrix("output.weight")?)
    } else {
        None
    };
    let model = Model::new(cfg, embed, layers, g.f32s("output_norm.weight")?, lm_head)
        .map_err(|e| corrupt(path, e))?;
    Ok((model, info))
}

// ---------------------------------------------------------------------------------------
// safetensors

#[derive(serde::Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    vocab_size: usize,
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
}

fn load_safetensors(path: &Path, format: WeightFormat) -> Result<(Model, ModelInfo)> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let cfg_path = dir.join("config.json");
    let cfg_text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        corrupt(
            path,
            format!(
                "cannot read {} ({e}); safetensors models need it",
                cfg_path.display()
            ),
        )
    })?;
    let hf: HfConfig = serde_json::from_str(&cfg_text)
        .map_err(|e| corrupt(&cfg_path, format!("invalid config.json: {e}")))?;
    let arch_name = hf.model_type.clone().unwrap_or_else(|| {
        hf.architectures
            .first()
            .map(|a| a.trim_end_matches("ForCausalLM").to_ascii_lowercase())
            .unwrap_or_default()
    });
    let arch = check_arch(path, &arch_name)?;
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| EngineError::Io {
                path: path.to_path_buf(),
                source: e,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(corrupt(path, "the directory holds no *.safetensors file"));
    }
    let mut tensors = HashMap::new();
    let mut file_bytes = 0;
    for f in &files {
        file_bytes += std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        let t = candle_core::safetensors::load(f, &Device::Cpu)
            .map_err(|e| corrupt(f, format!("not a readable safetensors file ({e})")))?;
        tensors.extend(t);
    }
    let n_heads = hf.num_attention_heads;
    let cfg = ModelConfig {
        arch,
        n_layers: hf.num_hidden_layers,
        d_model: hf.hidden_size,
        ffn: hf.intermediate_size,
        n_heads,
        n_kv_heads: hf.num_key_value_heads.unwrap_or(n_heads),
        head_dim: hf.head_dim.unwrap_or(hf.hidden_size / n_heads.max(1)),
        vocab: hf.vocab_size,
        context: hf.max_position_embeddings.unwrap_or(4096),
        rope_base: hf.rope_theta.unwrap_or(10_000.0) as f32,
        rms_eps: hf.rms_norm_eps.unwrap_or(1e-6) as f32,
        rope: RopeStyle::Half,
    };
    cfg.validate().map_err(|e| corrupt(path, e))?;
    let mut info = ModelInfo {
        path: path.to_path_buf(),
        format: "safetensors".into(),
        file_bytes,
        architecture: arch_name.clone(),
        ..Default::default()
    };
    for t in tensors.values() {
        *info
            .tensor_types
            .entry(format!("{:?}", t.dtype()))
            .or_default() += 1;
        info.parameters += t.elem_count();
    }
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(&cfg_text) {
        for (k, v) in m {
            if !v.is_object() && !v.is_array() {
                info.metadata.insert(k, v.to_string());
            }
        }
    }
    let tok_cfg = dir.join("tokenizer_config.json");
    if let Ok(text) = std::fs::read_to_string(&tok_cfg)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        info.chat_template = v["chat_template"].as_str().map(str::to_string);
    }

    let layout = WeightLayout {
        cfg,
        format,
        tied_embeddings: hf.tie_word_embeddings || !tensors.contains_key("lm_head.weight"),
    };
    let model = model_from_tensors(&layout, &tensors).map_err(|e| corrupt(path, e))?;
    Ok((model, info))
}

/// What a set of weights must match to replace a running model's: its configuration, how its
/// matrices are stored, and whether the output layer is the token embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightLayout {
    pub cfg: ModelConfig,
    pub format: WeightFormat,
    pub tied_embeddings: bool,
}

/// Builds a model from tensors named as in Hugging Face checkpoints
/// (`model.layers.{i}.self_attn.q_proj.weight`, …), of any float dtype, stored per
/// `layout.format` (`q8_0` quantizes; `native` and `f32` keep f32). For a GGUF llama layout
/// (interleaved rotary pairs) the q/k rows are permuted as llama.cpp's converter does, so
/// the new weights compute the same function in the running model's layout.
pub fn model_from_tensors(
    layout: &WeightLayout,
    tensors: &HashMap<String, Tensor>,
) -> std::result::Result<Model, String> {
    let cfg = &layout.cfg;
    let vec_of = |name: &str| -> std::result::Result<Vec<f32>, String> {
        let t = tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("tensor {name}: {e}"))
    };
    let opt_vec = |name: &str| -> std::result::Result<Option<Vec<f32>>, String> {
        if tensors.contains_key(name) {
            vec_of(name).map(Some)
        } else {
            Ok(None)
        }
    };
    let interleave = |v: Vec<f32>, heads: usize, cols: usize| {
        if cfg.rope == RopeStyle::Interleaved {
            half_to_interleaved_rows(&v, heads, cfg.head_dim, cols)
        } else {
            v
        }
    };
    let mat = |name: &str, rope_heads: Option<usize>| -> std::result::Result<Matrix, String> {
        let t = tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        let dims = t.dims().to_vec();
        if dims.len() != 2 {
            return Err(format!(
                "tensor {name} has shape {dims:?}, expected a matrix"
            ));
        }
        let mut f = vec_of(name)?;
        if let Some(heads) = rope_heads {
            f = interleave(f, heads, dims[1]);
        }
        Ok(match layout.format {
            WeightFormat::Q8_0 => Matrix::quantize_q8_0(dims[0], dims[1], &f),
            WeightFormat::Native | WeightFormat::F32 => Matrix::from_f32(dims[0], dims[1], f),
        })
    };
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for i in 0..cfg.n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let bias = match (
            opt_vec(&p("self_attn.q_proj.bias"))?,
            opt_vec(&p("self_attn.k_proj.bias"))?,
            opt_vec(&p("self_attn.v_proj.bias"))?,
        ) {
            (Some(a), Some(b), Some(c)) => Some(
                [
                    interleave(a, cfg.n_heads, 1),
                    interleave(b, cfg.n_kv_heads, 1),
                    c,
                ]
                .concat(),
            ),
            (None, None, None) => None,
            _ => return Err(format!("layer {i} has only some q/k/v biases")),
        };
        layers.push(
            Layer::new(
                cfg,
                vec_of(&p("input_layernorm.weight"))?,
                [
                    mat(&p("self_attn.q_proj.weight"), Some(cfg.n_heads))?,
                    mat(&p("self_attn.k_proj.weight"), Some(cfg.n_kv_heads))?,
                    mat(&p("self_attn.v_proj.weight"), None)?,
                ],
                bias,
                opt_vec(&p("self_attn.q_norm.weight"))?,
                opt_vec(&p("self_attn.k_norm.weight"))?,
                mat(&p("self_attn.o_proj.weight"), None)?,
                vec_of(&p("post_attention_layernorm.weight"))?,
                mat(&p("mlp.gate_proj.weight"), None)?,
                mat(&p("mlp.up_proj.weight"), None)?,
                mat(&p("mlp.down_proj.weight"), None)?,
            )
            .map_err(|e| format!("layer {i}: {e}"))?,
        );
    }
    let embed = mat("model.embed_tokens.weight", None)?;
    let lm_head = if layout.tied_embeddings {
        None
    } else {
        Some(mat("lm_head.weight", None)?)
    };
    Model::new(
        cfg.clone(),
        embed,
        layers,
        vec_of("model.norm.weight")?,
        lm_head,
    )
}

/// Per head, row (t, i) → (2i + t) for t in 0..2, i in 0..hd/2: Hugging Face's half-split
/// rotary layout to GGUF llama's interleaved one.
fn half_to_interleaved_rows(w: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    let half = hd / 2;
    let mut out = w.to_vec();
    for h in 0..heads {
        for t in 0..2 {
            for i in 0..half {
                let old = (h * hd + t * half + i) * cols;
                let new = (h * hd + 2 * i + t) * cols;
                if let (Some(dst), Some(src)) =
                    (out.get_mut(new..new + cols), w.get(old..old + cols))
                {
                    dst.copy_from_slice(src);
                }
            }
        }
    }
    out
}

//! LoRA adapters and their PEFT-compatible files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, checkpoint_err};
use crate::twin::NamedVar;

/// A projection of a block that an adapter can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proj {
    Q = 0,
    K = 1,
    V = 2,
    O = 3,
    Gate = 4,
    Up = 5,
    Down = 6,
}

impl Proj {
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];
    /// PEFT's `target_modules` name.
    pub fn peft_name(self) -> &'static str {
        match self {
            Proj::Q => "q_proj",
            Proj::K => "k_proj",
            Proj::V => "v_proj",
            Proj::O => "o_proj",
            Proj::Gate => "gate_proj",
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
        }
    }
    /// The module path inside a Hugging Face block.
    pub fn hf_module(self) -> &'static str {
        match self {
            Proj::Q => "self_attn.q_proj",
            Proj::K => "self_attn.k_proj",
            Proj::V => "self_attn.v_proj",
            Proj::O => "self_attn.o_proj",
            Proj::Gate => "mlp.gate_proj",
            Proj::Up => "mlp.up_proj",
            Proj::Down => "mlp.down_proj",
        }
    }
    /// Parses `q`, `q_proj`, `gate`, `gate_proj`, ...
    pub fn parse(s: &str) -> Option<Proj> {
        let s = s.trim().trim_end_matches("_proj");
        Proj::ALL
            .into_iter()
            .find(|p| p.peft_name().trim_end_matches("_proj") == s)
    }
}

/// Which projections get adapters and how big they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub targets: Vec<Proj>,
    /// Seed of the `A` initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            targets: Proj::ALL.to_vec(),
            seed: 0,
        }
    }
}

/// One adapter: `delta = scale · B A x`.
pub struct LoraPair {
    pub a: Var,
    pub b: Var,
}

/// The adapters of a model, keyed by (block, projection).
pub struct Adapters {
    pub config: LoraConfig,
    pub scale: f64,
    pub pairs: BTreeMap<(usize, Proj), LoraPair>,
    /// Heads for GGUF-llama q/k rows (interleaved rotary layout), else `None`.
    pub rope_rows: HashMap<Proj, usize>,
}

/// splitmix64: a small seeded generator for reproducible initialisation.
struct SplitMix(u64);
impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// PEFT key of an adapter matrix (`which` is `lora_A` or `lora_B`).
pub fn peft_key(layer: usize, p: Proj, which: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{which}.weight",
        p.hf_module()
    )
}

/// Row order of the Hugging Face layout taken from the interleaved (GGUF llama) layout:
/// `hf[h·hd + t·half + i] = gguf[h·hd + 2i + t]`.
fn hf_from_interleaved(heads: usize, rows: usize) -> Vec<u32> {
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut idx = vec![0u32; rows];
    for h in 0..heads {
        for t in 0..2 {
            for i in 0..half {
                idx[h * hd + t * half + i] = (h * hd + 2 * i + t) as u32;
            }
        }
    }
    idx
}

/// Converts rows of a q/k matrix between the twin's layout and the Hugging Face layout.
pub fn rows_to_hf(t: &Tensor, heads: Option<usize>) -> Result<Tensor> {
    match heads {
        None => Ok(t.clone()),
        Some(h) => {
            let rows = t.dim(0)?;
            let idx = hf_from_interleaved(h, rows);
            Ok(t.index_select(&Tensor::from_vec(idx, rows, &Device::Cpu)?, 0)?)
        }
    }
}

/// Inverse of [`rows_to_hf`].
pub fn rows_from_hf(t: &Tensor, heads: Option<usize>) -> Result<Tensor> {
    match heads {
        None => Ok(t.clone()),
        Some(h) => {
            let rows = t.dim(0)?;
            let fwd = hf_from_interleaved(h, rows);
            let mut inv = vec![0u32; rows];
            for (hf, &g) in fwd.iter().enumerate() {
                inv[g as usize] = hf as u32;
            }
            Ok(t.index_select(&Tensor::from_vec(inv, rows, &Device::Cpu)?, 0)?)
        }
    }
}

/// PEFT's `adapter_config.json` (the fields enact writes and reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftConfig {
    pub peft_type: String,
    pub task_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "bias_none")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub inference_mode: bool,
}

fn bias_none() -> String {
    "none".into()
}

impl Adapters {
    /// New adapters for a model: `A` Kaiming-uniform (bound `1/√in`, as PEFT), `B` zero.
    /// `shapes[layer][proj] = (out, in)`; `rope_rows` as in [`NamedVar`].
    pub fn new(
        config: LoraConfig,
        n_layers: usize,
        shape: impl Fn(usize, Proj) -> (usize, usize),
        rope_rows: HashMap<Proj, usize>,
        dtype: DType,
    ) -> Result<Adapters> {
        if config.r == 0 || config.targets.is_empty() {
            return Err(TrainError::Invalid(
                "LoRA needs a rank r ≥ 1 and at least one target projection".into(),
            ));
        }
        let mut rng = SplitMix(config.seed);
        let mut pairs = BTreeMap::new();
        let mut targets = config.targets.clone();
        targets.sort();
        targets.dedup();
        for layer in 0..n_layers {
            for &p in &targets {
                let (out, inp) = shape(layer, p);
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f64> = (0..config.r * inp)
                    .map(|_| (rng.next_f64() * 2.0 - 1.0) * bound)
                    .collect();
                let a = Tensor::from_vec(a, (config.r, inp), &Device::Cpu)?.to_dtype(dtype)?;
                let b = Tensor::zeros((out, config.r), dtype, &Device::Cpu)?;
                pairs.insert(
                    (layer, p),
                    LoraPair {
                        a: Var::from_tensor(&a)?,
                        b: Var::from_tensor(&b)?,
                    },
                );
            }
        }
        let scale = config.alpha / config.r as f64;
        Ok(Adapters {
            config: LoraConfig { targets, ..config },
            scale,
            pairs,
            rope_rows,
        })
    }

    /// `y + scale · (x Aᵀ) Bᵀ` if (layer, p) has an adapter, else `y`.
    pub fn apply(&self, layer: usize, p: Proj, x: &Tensor, y: Tensor) -> Result<Tensor> {
        match self.pairs.get(&(layer, p)) {
            Some(pair) => {
                let d = x
                    .matmul(&pair.a.as_tensor().t()?)?
                    .matmul(&pair.b.as_tensor().t()?)?;
                Ok((y + (d * self.scale)?)?)
            }
            None => Ok(y),
        }
    }

    /// The trainable matrices, named by their PEFT keys.
    pub fn vars(&self) -> Vec<NamedVar> {
        let mut out = Vec::with_capacity(self.pairs.len() * 2);
        for (&(layer, p), pair) in &self.pairs {
            out.push(NamedVar {
                name: peft_key(layer, p, "lora_A"),
                var: pair.a.clone(),
                rope_rows: None,
            });
            out.push(NamedVar {
                name: peft_key(layer, p, "lora_B"),
                var: pair.b.clone(),
                rope_rows: self.rope_rows.get(&p).copied(),
            });
        }
        out
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT layout, f32).
    pub fn save_peft(&self, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let cfg = PeftConfig {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r: self.config.r,
            lora_alpha: self.config.alpha,
            target_modules: self
                .config
                .targets
                .iter()
                .map(|p| p.peft_name().to_string())
                .collect(),
            base_model_name_or_path: Some(base_model.to_string()),
            lora_dropout: 0.0,
            bias: bias_none(),
            fan_in_fan_out: false,
            inference_mode: true,
        };
        let cfg_path = dir.join("adapter_config.json");
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| checkpoint_err(&cfg_path, e))?;
        std::fs::write(&cfg_path, text).map_err(|e| TrainError::Io {
            path: cfg_path.clone(),
            source: e,
        })?;
        crate::checkpoint::save_vars(&dir.join("adapter_model.safetensors"), &self.vars())
    }

    /// Reads a PEFT LoRA adapter (as written by [`Adapters::save_peft`] or by PEFT itself,
    /// for the projections enact knows) for a model with `n_layers` blocks.
    pub fn load_peft(
        dir: &Path,
        n_layers: usize,
        shape: impl Fn(usize, Proj) -> (usize, usize),
        rope_rows: HashMap<Proj, usize>,
        dtype: DType,
    ) -> Result<Adapters> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::Io {
            path: cfg_path.clone(),
            source: e,
        })?;
        let cfg: PeftConfig = serde_json::from_str(&text)
            .map_err(|e| checkpoint_err(&cfg_path, format!("invalid adapter_config.json: {e}")))?;
        if cfg.peft_type != "LORA" {
            return Err(checkpoint_err(
                &cfg_path,
                format!("peft_type is {:?}, only LORA is supported", cfg.peft_type),
            ));
        }
        let mut targets = Vec::new();
        for m in &cfg.target_modules {
            let p = Proj::parse(m).ok_or_else(|| {
                checkpoint_err(
                    &cfg_path,
                    format!("target module {m:?} is not one of q,k,v,o,gate,up,down_proj"),
                )
            })?;
            targets.push(p);
        }
        let config = LoraConfig {
            r: cfg.r,
            alpha: cfg.lora_alpha,
            targets,
            seed: 0,
        };
        let adapters = Adapters::new(config, n_layers, shape, rope_rows, dtype)?;
        crate::checkpoint::load_vars(&dir.join("adapter_model.safetensors"), &adapters.vars())?;
        Ok(adapters)
    }
}

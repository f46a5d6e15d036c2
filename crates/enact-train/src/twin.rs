//! The differentiable twin of the embedded model: the same weights and the same arithmetic
//! as `enact_candle::Model::forward`, built from candle ops that have a backward pass.
//!
//! Several sequences are packed into one forward: their tokens are concatenated, positions
//! restart per sequence and attention is block-diagonal causal, so a packed forward equals
//! separate forwards.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use enact_candle::model::Model;
use enact_candle::{ModelConfig, RopeStyle, WeightFormat};

use crate::error::{Result, TrainError};
use crate::lora::{Adapters, Proj, rows_to_hf};

/// One block's weights (matrices `out × in`, rows in the file's layout).
pub struct TwinLayer {
    pub attn_norm: Tensor,
    /// Indexed by [`Proj`].
    pub w: [Tensor; 7],
    /// q, k, v biases (Qwen2).
    pub bias: Option<[Tensor; 3]>,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
}

/// The differentiable model. Weights are plain tensors (frozen) unless made trainable.
pub struct TwinModel {
    pub cfg: ModelConfig,
    pub dtype: DType,
    pub embed: Tensor,
    pub layers: Vec<TwinLayer>,
    pub norm: Tensor,
    /// Separate output layer; `None` when tied to the embedding.
    pub lm_head: Option<Tensor>,
    /// LoRA adapters applied in [`TwinModel::forward`] (unless disabled per call).
    pub adapters: Option<Adapters>,
    inv_freq: Vec<f32>,
}

/// A named trainable weight; `name` is its Hugging Face name.
#[derive(Clone)]
pub struct NamedVar {
    pub name: String,
    pub var: Var,
    /// Rows to convert between the twin's layout and the Hugging Face layout on save/load:
    /// `Some(heads)` for GGUF llama q/k rows (interleaved rotary pairs).
    pub rope_rows: Option<usize>,
}

/// Several sequences packed into one forward.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    pub tokens: Vec<u32>,
    /// Position of each token inside its own sequence.
    pub positions: Vec<usize>,
    /// Which packed sequence each token belongs to.
    pub seq_of: Vec<usize>,
    /// Start of each sequence in `tokens`.
    pub starts: Vec<usize>,
}

impl Packed {
    pub fn new<'a>(seqs: impl IntoIterator<Item = &'a [u32]>) -> Packed {
        let mut p = Packed::default();
        for (s, toks) in seqs.into_iter().enumerate() {
            p.starts.push(p.tokens.len());
            for (i, &t) in toks.iter().enumerate() {
                p.tokens.push(t);
                p.positions.push(i);
                p.seq_of.push(s);
            }
        }
        p
    }
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

fn vec_tensor(v: &[f32], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, v.len(), &Device::Cpu)?.to_dtype(dtype)?)
}

fn mat_tensor(v: Vec<f32>, rows: usize, cols: usize, dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?.to_dtype(dtype)?)
}

/// Splits a row-stacked f32 matrix into parts of the given row counts.
fn split_rows(
    m: &enact_candle::quant::Matrix,
    parts: &[usize],
    dtype: DType,
) -> Result<Vec<Tensor>> {
    let all = m.to_f32();
    let mut out = Vec::with_capacity(parts.len());
    let mut at = 0;
    for &rows in parts {
        let n = rows * m.cols;
        let slice = all.get(at..at + n).ok_or_else(|| {
            TrainError::Invalid(format!(
                "stacked matrix has {} rows, fewer than the {} expected",
                m.rows,
                parts.iter().sum::<usize>()
            ))
        })?;
        out.push(mat_tensor(slice.to_vec(), rows, m.cols, dtype)?);
        at += n;
    }
    Ok(out)
}

/// `x Wᵀ` for a frozen `W`: the backward pass gives `x` its gradient and skips the weight's
/// (candle's matmul backward always computes both, which for a frozen base doubles the
/// backward work and holds a weight-sized gradient per matrix).
struct FrozenMatmul {
    w: Tensor,
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as C;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul needs a contiguous input")
        };
        let x = match storage {
            C::F32(v) => Tensor::from_slice(&v[start..end], layout.shape(), &Device::Cpu)?,
            C::F64(v) => Tensor::from_slice(&v[start..end], layout.shape(), &Device::Cpu)?,
            _ => candle_core::bail!("frozen-matmul supports f32 and f64"),
        };
        let y = x.matmul(&self.w.t()?)?.contiguous()?;
        let (st, l) = y.storage_and_layout();
        let (Some((a, b)), candle_core::Storage::Cpu(c)) = (l.contiguous_offsets(), &*st) else {
            candle_core::bail!("frozen-matmul produced a non-CPU tensor")
        };
        let out = match c {
            C::F32(v) => C::F32(v[a..b].to_vec()),
            C::F64(v) => C::F64(v[a..b].to_vec()),
            _ => candle_core::bail!("frozen-matmul supports f32 and f64"),
        };
        Ok((out, y.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w)?))
    }
}

/// `x Wᵀ`; without a weight gradient when `W` is not trained.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if w.is_variable() {
        Ok(x.matmul(&w.t()?)?)
    } else {
        Ok(x.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })?)
    }
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

/// Rotary embedding of `x: [N, heads, hd]` with `cos, sin: [N, 1, hd/2]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle) -> Result<Tensor> {
    let (n, h, hd) = x.dims3()?;
    let half = hd / 2;
    let rotate = |a: &Tensor, b: &Tensor| -> Result<(Tensor, Tensor)> {
        let ra = (a.broadcast_mul(cos)? - b.broadcast_mul(sin)?)?;
        let rb = (a.broadcast_mul(sin)? + b.broadcast_mul(cos)?)?;
        Ok((ra, rb))
    };
    match style {
        RopeStyle::Interleaved => {
            let pairs = x.reshape((n, h, half, 2))?;
            let a = pairs.narrow(3, 0, 1)?.squeeze(3)?;
            let b = pairs.narrow(3, 1, 1)?.squeeze(3)?;
            let (ra, rb) = rotate(&a, &b)?;
            Ok(Tensor::stack(&[ra, rb], 3)?.reshape((n, h, hd))?)
        }
        RopeStyle::Half => {
            let a = x.narrow(2, 0, half)?;
            let b = x.narrow(2, half, half)?;
            let (ra, rb) = rotate(&a, &b)?;
            Ok(Tensor::cat(&[ra, rb], 2)?)
        }
    }
}

/// Log-softmax over the last dimension from composed ops (the max is a constant shift).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let z = logits.broadcast_sub(&max)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(z.broadcast_sub(&lse)?)
}

/// Hugging Face name of a block weight.
pub fn layer_weight_name(layer: usize, what: &str) -> String {
    format!("model.layers.{layer}.{what}")
}

impl TwinModel {
    /// Loads a model file as the engine would (GGUF or safetensors), dequantized to f32,
    /// then converted to `dtype` (F32 to train, F64 for gradient checks).
    pub fn load(path: &Path, dtype: DType) -> Result<TwinModel> {
        let (model, _info) = enact_candle::load_model(path, WeightFormat::F32)?;
        TwinModel::from_engine_model(&model, dtype)
    }

    /// Copies the weights of a loaded engine model.
    pub fn from_engine_model(model: &Model, dtype: DType) -> Result<TwinModel> {
        let cfg = model.cfg.clone();
        let (qd, kvd, f) = (cfg.q_dim(), cfg.kv_dim(), cfg.ffn);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in model.layers() {
            let qkv = split_rows(l.wqkv(), &[qd, kvd, kvd], dtype)?;
            let gu = split_rows(l.w_gate_up(), &[f, f], dtype)?;
            let [q, k, v]: [Tensor; 3] = qkv
                .try_into()
                .map_err(|_| TrainError::Invalid("q/k/v split failed".into()))?;
            let [gate, up]: [Tensor; 2] = gu
                .try_into()
                .map_err(|_| TrainError::Invalid("gate/up split failed".into()))?;
            let wo = mat_tensor(l.wo().to_f32(), l.wo().rows, l.wo().cols, dtype)?;
            let down = mat_tensor(l.w_down().to_f32(), l.w_down().rows, l.w_down().cols, dtype)?;
            let bias = match l.bqkv() {
                Some(b) if b.len() == qd + 2 * kvd => Some([
                    vec_tensor(&b[..qd], dtype)?,
                    vec_tensor(&b[qd..qd + kvd], dtype)?,
                    vec_tensor(&b[qd + kvd..], dtype)?,
                ]),
                Some(_) => {
                    return Err(TrainError::Invalid(
                        "q/k/v biases have the wrong length".into(),
                    ));
                }
                None => None,
            };
            layers.push(TwinLayer {
                attn_norm: vec_tensor(l.attn_norm(), dtype)?,
                w: [q, k, v, wo, gate, up, down],
                bias,
                q_norm: l.q_norm().map(|w| vec_tensor(w, dtype)).transpose()?,
                k_norm: l.k_norm().map(|w| vec_tensor(w, dtype)).transpose()?,
                ffn_norm: vec_tensor(l.ffn_norm(), dtype)?,
            });
        }
        let e = model.embed();
        let embed = mat_tensor(e.to_f32(), e.rows, e.cols, dtype)?;
        let lm_head = model
            .lm_head()
            .map(|h| mat_tensor(h.to_f32(), h.rows, h.cols, dtype))
            .transpose()?;
        // The engine's own frequencies, so rotary angles agree bit for bit.
        let inv_freq = model.rope_inv_freq().to_vec();
        Ok(TwinModel {
            cfg,
            dtype,
            embed,
            norm: vec_tensor(model.output_norm(), dtype)?,
            lm_head,
            layers,
            adapters: None,
            inv_freq,
        })
    }

    /// Every weight, by Hugging Face name (tied head omitted).
    fn weights_mut(&mut self) -> Vec<(String, &mut Tensor, Option<usize>)> {
        let interleaved = self.cfg.rope == RopeStyle::Interleaved;
        let (nh, nkv) = (self.cfg.n_heads, self.cfg.n_kv_heads);
        let mut out: Vec<(String, &mut Tensor, Option<usize>)> =
            vec![("model.embed_tokens.weight".into(), &mut self.embed, None)];
        for (i, l) in self.layers.iter_mut().enumerate() {
            let n = |s: &str| layer_weight_name(i, s);
            out.push((n("input_layernorm.weight"), &mut l.attn_norm, None));
            for (p, w) in Proj::ALL.iter().zip(l.w.iter_mut()) {
                let rope_rows = match p {
                    Proj::Q if interleaved => Some(nh),
                    Proj::K if interleaved => Some(nkv),
                    _ => None,
                };
                out.push((n(&format!("{}.weight", p.hf_module())), w, rope_rows));
            }
            if let Some(b) = l.bias.as_mut() {
                for (p, t) in [Proj::Q, Proj::K, Proj::V].iter().zip(b.iter_mut()) {
                    out.push((n(&format!("{}.bias", p.hf_module())), t, None));
                }
            }
            if let Some(t) = l.q_norm.as_mut() {
                out.push((n("self_attn.q_norm.weight"), t, None));
            }
            if let Some(t) = l.k_norm.as_mut() {
                out.push((n("self_attn.k_norm.weight"), t, None));
            }
            out.push((n("post_attention_layernorm.weight"), &mut l.ffn_norm, None));
        }
        out.push(("model.norm.weight".into(), &mut self.norm, None));
        if let Some(h) = self.lm_head.as_mut() {
            out.push(("lm_head.weight".into(), h, None));
        }
        out
    }

    /// Makes every weight trainable (full fine-tuning) and returns them.
    pub fn make_all_trainable(&mut self) -> Result<Vec<NamedVar>> {
        let mut vars = Vec::new();
        for (name, t, rope_rows) in self.weights_mut() {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            vars.push(NamedVar {
                name,
                var,
                rope_rows,
            });
        }
        Ok(vars)
    }

    /// Every weight by Hugging Face name and row layout, in f32, with the LoRA adapters
    /// merged in (`W + scale · B A`): what `enact_candle::model_from_tensors` (and so
    /// `CandlePolicy::publish_tensors`) takes to run the trained policy. A tied head is
    /// omitted, as in Hugging Face checkpoints.
    pub fn merged_hf_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let interleaved = self.cfg.rope == RopeStyle::Interleaved;
        let (nh, nkv) = (self.cfg.n_heads, self.cfg.n_kv_heads);
        let f32 = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().to_dtype(DType::F32)?) };
        let mut out = HashMap::new();
        out.insert("model.embed_tokens.weight".to_string(), f32(&self.embed)?);
        for (i, l) in self.layers.iter().enumerate() {
            let n = |s: &str| layer_weight_name(i, s);
            out.insert(n("input_layernorm.weight"), f32(&l.attn_norm)?);
            for (&p, w) in Proj::ALL.iter().zip(l.w.iter()) {
                let mut w = f32(w)?;
                if let Some(pair) = self
                    .adapters
                    .as_ref()
                    .and_then(|a| a.pairs.get(&(i, p)).map(|pair| (pair, a.scale)))
                {
                    let (pair, scale) = pair;
                    let delta = pair.b.as_tensor().matmul(pair.a.as_tensor())?;
                    w = (w + (f32(&delta)? * scale)?)?;
                }
                let rope_rows = match p {
                    Proj::Q if interleaved => Some(nh),
                    Proj::K if interleaved => Some(nkv),
                    _ => None,
                };
                out.insert(
                    n(&format!("{}.weight", p.hf_module())),
                    rows_to_hf(&w, rope_rows)?,
                );
            }
            if let Some(b) = l.bias.as_ref() {
                for (p, t) in [Proj::Q, Proj::K, Proj::V].iter().zip(b.iter()) {
                    // As the loaders: biases keep their order (no architecture combines
                    // them with interleaved rotary rows).
                    out.insert(n(&format!("{}.bias", p.hf_module())), f32(t)?);
                }
            }
            if let Some(t) = l.q_norm.as_ref() {
                out.insert(n("self_attn.q_norm.weight"), f32(t)?);
            }
            if let Some(t) = l.k_norm.as_ref() {
                out.insert(n("self_attn.k_norm.weight"), f32(t)?);
            }
            out.insert(n("post_attention_layernorm.weight"), f32(&l.ffn_norm)?);
        }
        out.insert("model.norm.weight".to_string(), f32(&self.norm)?);
        if let Some(h) = self.lm_head.as_ref() {
            out.insert("lm_head.weight".to_string(), f32(h)?);
        }
        Ok(out)
    }

    /// A frozen deep copy of the current weights without adapters (a KL reference).
    pub fn frozen_copy(&self) -> Result<TwinModel> {
        let c = |t: &Tensor| -> Result<Tensor> { Ok(t.copy()?.detach()) };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let w = [
                c(&l.w[0])?,
                c(&l.w[1])?,
                c(&l.w[2])?,
                c(&l.w[3])?,
                c(&l.w[4])?,
                c(&l.w[5])?,
                c(&l.w[6])?,
            ];
            let bias = match &l.bias {
                Some([a, b, d]) => Some([c(a)?, c(b)?, c(d)?]),
                None => None,
            };
            layers.push(TwinLayer {
                attn_norm: c(&l.attn_norm)?,
                w,
                bias,
                q_norm: l.q_norm.as_ref().map(&c).transpose()?,
                k_norm: l.k_norm.as_ref().map(&c).transpose()?,
                ffn_norm: c(&l.ffn_norm)?,
            });
        }
        Ok(TwinModel {
            cfg: self.cfg.clone(),
            dtype: self.dtype,
            embed: c(&self.embed)?,
            layers,
            norm: c(&self.norm)?,
            lm_head: self.lm_head.as_ref().map(&c).transpose()?,
            adapters: None,
            inv_freq: self.inv_freq.clone(),
        })
    }

    fn project(&self, x: &Tensor, layer: usize, p: Proj, use_adapters: bool) -> Result<Tensor> {
        let w = &self.layers[layer].w[p as usize];
        let y = linear(x, w)?;
        match self.adapters.as_ref().filter(|_| use_adapters) {
            Some(a) => a.apply(layer, p, x, y),
            None => Ok(y),
        }
    }

    /// The final hidden states (after the output norm), `[N, d_model]`.
    pub fn hidden(&self, batch: &Packed, use_adapters: bool) -> Result<Tensor> {
        let cfg = &self.cfg;
        let n = batch.len();
        let (hd, nh, nkv) = (cfg.head_dim, cfg.n_heads, cfg.n_kv_heads);
        if n == 0 {
            return Err(TrainError::Invalid("empty batch".into()));
        }
        if let Some(&bad) = batch.tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(TrainError::Invalid(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                cfg.vocab
            )));
        }
        if let Some(&p) = batch.positions.iter().max()
            && p >= cfg.context
        {
            return Err(TrainError::Invalid(format!(
                "a sequence of {} tokens exceeds the model's context of {}",
                p + 1,
                cfg.context
            )));
        }
        let dev = Device::Cpu;
        let eps = f64::from(cfg.rms_eps);
        let ids = Tensor::from_slice(&batch.tokens, n, &dev)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let half = hd / 2;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for &p in &batch.positions {
            for &f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (n, 1, half), &dev)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, (n, 1, half), &dev)?.to_dtype(self.dtype)?;
        let mut mask = vec![f32::NEG_INFINITY; n * n];
        for i in 0..n {
            for j in 0..=i {
                if batch.seq_of[i] == batch.seq_of[j] {
                    mask[i * n + j] = 0.0;
                }
            }
        }
        let mask = Tensor::from_vec(mask, (1, n, n), &dev)?.to_dtype(self.dtype)?;
        let scale = f64::from(1.0 / (hd as f32).sqrt());
        let group = nh / nkv;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, eps)?;
            let mut q = self.project(&h, li, Proj::Q, use_adapters)?;
            let mut k = self.project(&h, li, Proj::K, use_adapters)?;
            let mut v = self.project(&h, li, Proj::V, use_adapters)?;
            if let Some([bq, bk, bv]) = &layer.bias {
                q = q.broadcast_add(bq)?;
                k = k.broadcast_add(bk)?;
                v = v.broadcast_add(bv)?;
            }
            let mut q = q.reshape((n, nh, hd))?;
            let mut k = k.reshape((n, nkv, hd))?;
            if let Some(w) = &layer.q_norm {
                q = rms_norm(&q, w, eps)?;
            }
            if let Some(w) = &layer.k_norm {
                k = rms_norm(&k, w, eps)?;
            }
            let q = rope(&q, &cos, &sin, cfg.rope)?
                .transpose(0, 1)?
                .contiguous()?;
            let k = rope(&k, &cos, &sin, cfg.rope)?.transpose(0, 1)?;
            let v = v.reshape((n, nkv, hd))?.transpose(0, 1)?;
            // Query head h reads key/value head h / group (as the engine does).
            let expand = |t: Tensor| -> Result<Tensor> {
                Ok(t.unsqueeze(1)?
                    .broadcast_as((nkv, group, n, hd))?
                    .contiguous()?
                    .reshape((nh, n, hd))?)
            };
            let k = expand(k)?;
            let v = expand(v)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
            let max = scores.max_keepdim(D::Minus1)?.detach();
            let e = scores.broadcast_sub(&max)?.exp()?;
            let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            let att = p
                .matmul(&v)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((n, nh * hd))?;
            x = (x + self.project(&att, li, Proj::O, use_adapters)?)?;
            let h = rms_norm(&x, &layer.ffn_norm, eps)?;
            let g = self.project(&h, li, Proj::Gate, use_adapters)?;
            let u = self.project(&h, li, Proj::Up, use_adapters)?;
            let a = (g.silu()? * u)?;
            x = (x + self.project(&a, li, Proj::Down, use_adapters)?)?;
        }
        rms_norm(&x, &self.norm, eps)
    }

    /// Log-softmax rows for the given hidden rows, `[rows.len(), vocab]`.
    pub fn log_probs_rows(&self, hidden: &Tensor, rows: &[u32]) -> Result<Tensor> {
        self.log_probs_rows_at(hidden, rows, 1.0)
    }

    /// [`TwinModel::log_probs_rows`] of the distribution at `temperature` (logits / T).
    pub fn log_probs_rows_at(
        &self,
        hidden: &Tensor,
        rows: &[u32],
        temperature: f64,
    ) -> Result<Tensor> {
        let idx = Tensor::from_slice(rows, rows.len(), &Device::Cpu)?;
        let h = hidden.index_select(&idx, 0)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logits = linear(&h, head)?;
        if temperature == 1.0 || temperature <= 0.0 {
            log_softmax(&logits)
        } else {
            log_softmax(&(logits / temperature)?)
        }
    }

    /// For each sequence, the logprob of every token given the tokens before it (the first
    /// is 0), like `Engine::score`, without adapters if `use_adapters` is false.
    pub fn score(&self, seqs: &[&[u32]], use_adapters: bool) -> Result<Vec<Vec<f32>>> {
        let batch = Packed::new(seqs.iter().copied());
        let hidden = self.hidden(&batch, use_adapters)?;
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for (s, toks) in seqs.iter().enumerate() {
            for i in 1..toks.len() {
                rows.push((batch.starts[s] + i - 1) as u32);
                targets.push(toks[i]);
            }
        }
        let mut out: Vec<Vec<f32>> = seqs.iter().map(|t| vec![0.0; t.len()]).collect();
        if rows.is_empty() {
            return Ok(out);
        }
        let lsm = self.log_probs_rows(&hidden, &rows)?;
        let lp = gather_targets(&lsm, &targets)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let mut next = lp.into_iter();
        for seq in out.iter_mut() {
            for slot in seq.iter_mut().skip(1) {
                *slot = next.next().unwrap_or(0.0);
            }
        }
        Ok(out)
    }
}

/// `lsm[i, targets[i]]` as a `[M]` tensor.
pub fn gather_targets(lsm: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let idx = Tensor::from_slice(targets, (targets.len(), 1), &Device::Cpu)?;
    Ok(lsm.gather(&idx, 1)?.squeeze(1)?)
}

/// Per row entropy of a log-softmax `[M, V]` (no gradient).
pub fn entropy(lsm: &Tensor) -> Result<Vec<f64>> {
    let l = lsm.detach();
    let ent = (l.exp()? * &l)?.sum(D::Minus1)?.neg()?;
    Ok(ent.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

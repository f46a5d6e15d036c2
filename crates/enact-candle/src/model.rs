//! The transformer (llama / Qwen2 / Qwen3) and its KV cache.
//!
//! One forward pass takes any number of sequences, each with its own KV cache and any number
//! of new tokens; all new tokens go through the weight matrices together (so a batch of
//! sequences reads the weights once), attention is computed per sequence against its cache.
//! Every per-token computation has a fixed order, so the logits of a token do not depend on
//! batching, on chunking of the prompt, or on the thread count.

use rayon::prelude::*;

use crate::quant::{Kernel, Matrix, dot_f32};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
}

/// How rotary embeddings pair dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1) (GGUF llama).
    Interleaved,
    /// Pairs (i, i + d/2) (Hugging Face layout, GGUF Qwen).
    Half,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// Longest context (tokens).
    pub context: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub rope: RopeStyle,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.n_layers == 0
            || self.d_model == 0
            || self.n_heads == 0
            || self.n_kv_heads == 0
            || self.head_dim == 0
            || self.vocab == 0
        {
            return Err(format!("degenerate model dimensions: {self:?}"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head dimension {} is odd", self.head_dim));
        }
        Ok(())
    }
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

pub struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v stacked.
    wqkv: Matrix,
    bqkv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Matrix,
    ffn_norm: Vec<f32>,
    /// gate and up stacked.
    w_gate_up: Matrix,
    w_down: Matrix,
}

impl Layer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &ModelConfig,
        attn_norm: Vec<f32>,
        qkv: [Matrix; 3],
        bqkv: Option<Vec<f32>>,
        q_norm: Option<Vec<f32>>,
        k_norm: Option<Vec<f32>>,
        wo: Matrix,
        ffn_norm: Vec<f32>,
        gate: Matrix,
        up: Matrix,
        down: Matrix,
    ) -> Result<Layer, String> {
        let (d, qd, kvd, f) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.ffn);
        let shape = |m: &Matrix, r: usize, c: usize, what: &str| {
            if m.rows == r && m.cols == c {
                Ok(())
            } else {
                Err(format!("{what} is {}×{}, expected {r}×{c}", m.rows, m.cols))
            }
        };
        shape(&qkv[0], qd, d, "q")?;
        shape(&qkv[1], kvd, d, "k")?;
        shape(&qkv[2], kvd, d, "v")?;
        shape(&wo, d, qd, "output projection")?;
        shape(&gate, f, d, "gate")?;
        shape(&up, f, d, "up")?;
        shape(&down, d, f, "down")?;
        if attn_norm.len() != d || ffn_norm.len() != d {
            return Err("norm weights have the wrong length".into());
        }
        if bqkv.as_ref().is_some_and(|b| b.len() != qd + 2 * kvd) {
            return Err("q/k/v biases have the wrong length".into());
        }
        for n in [&q_norm, &k_norm].into_iter().flatten() {
            if n.len() != cfg.head_dim {
                return Err("q/k norm weights have the wrong length".into());
            }
        }
        let wqkv = Matrix::concat(&qkv).ok_or("q, k and v have different formats")?;
        let w_gate_up = Matrix::concat(&[gate, up]).ok_or("gate and up have different formats")?;
        Ok(Layer {
            attn_norm,
            wqkv,
            bqkv,
            q_norm,
            k_norm,
            wo,
            ffn_norm,
            w_gate_up,
            w_down: down,
        })
    }
}

pub struct Model {
    pub cfg: ModelConfig,
    embed: Matrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Option<Matrix>,
    inv_freq: Vec<f32>,
}

/// The keys and values of one sequence, and the tokens they are for.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    tokens: Vec<u32>,
    /// Per layer: `[position][kv_dim]`.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> KvCache {
        KvCache {
            tokens: Vec::new(),
            k: vec![Vec::new(); n_layers],
            v: vec![Vec::new(); n_layers],
        }
    }
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// Keeps the first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.tokens.len() {
            return;
        }
        let kv_dim = self
            .k
            .first()
            .map(|k| k.len() / self.tokens.len().max(1))
            .unwrap_or(0);
        self.tokens.truncate(n);
        for l in self.k.iter_mut().chain(self.v.iter_mut()) {
            l.truncate(n * kv_dim);
        }
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.capacity() * 4).sum()
    }
}

/// One sequence's part of a forward pass.
pub struct SeqInput<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    /// Logits for every new token (scoring) instead of only the last (generation).
    pub all_logits: bool,
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * g;
    }
}

fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = x.len() / 2;
    match style {
        RopeStyle::Interleaved => {
            for i in 0..half {
                let (a, b) = (x[2 * i], x[2 * i + 1]);
                x[2 * i] = a * cos[i] - b * sin[i];
                x[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        }
        RopeStyle::Half => {
            for i in 0..half {
                let (a, b) = (x[i], x[i + half]);
                x[i] = a * cos[i] - b * sin[i];
                x[i + half] = a * sin[i] + b * cos[i];
            }
        }
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl Model {
    pub fn new(
        cfg: ModelConfig,
        embed: Matrix,
        layers: Vec<Layer>,
        norm: Vec<f32>,
        lm_head: Option<Matrix>,
    ) -> Result<Model, String> {
        if embed.cols != cfg.d_model || embed.rows != cfg.vocab {
            return Err(format!(
                "token embedding is {}×{}, expected {}×{}",
                embed.rows, embed.cols, cfg.vocab, cfg.d_model
            ));
        }
        if let Some(h) = &lm_head
            && (h.cols != cfg.d_model || h.rows != cfg.vocab)
        {
            return Err("output layer has the wrong shape".into());
        }
        if norm.len() != cfg.d_model || layers.len() != cfg.n_layers {
            return Err("output norm or layer count mismatch".into());
        }
        let hd = cfg.head_dim;
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / cfg.rope_base.powf(2.0 * i as f32 / hd as f32))
            .collect();
        Ok(Model {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
        })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layers)
    }

    /// Weight formats in use and how many matrices have each.
    pub fn weight_kinds(&self) -> Vec<(String, usize)> {
        let mut m = std::collections::BTreeMap::new();
        let mut add = |x: &Matrix| *m.entry(x.kind().name().to_string()).or_insert(0) += 1;
        add(&self.embed);
        if let Some(h) = &self.lm_head {
            add(h);
        }
        for l in &self.layers {
            add(&l.wqkv);
            add(&l.wo);
            add(&l.w_gate_up);
            add(&l.w_down);
        }
        m.into_iter().collect()
    }

    /// Whether the output layer is the token embedding.
    pub fn tied_embeddings(&self) -> bool {
        self.lm_head.is_none()
    }

    /// Bytes of weights read per decoded token.
    pub fn weight_bytes(&self) -> usize {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).bytes();
        head + self
            .layers
            .iter()
            .map(|l| l.wqkv.bytes() + l.wo.bytes() + l.w_gate_up.bytes() + l.w_down.bytes())
            .sum::<usize>()
    }

    /// Runs the new tokens of each sequence, appending to its cache. Returns per sequence
    /// the logits (`vocab` floats per token: every new token if `all_logits`, else the last).
    /// Must run inside the engine's thread pool.
    pub fn forward(&self, seqs: &mut [SeqInput<'_>], threads: usize) -> Vec<Vec<f32>> {
        let cfg = &self.cfg;
        let (d, hd, nh, nkv) = (cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let kernel = Kernel::detect();
        // Token n belongs to sequence seq_of[n] at position pos_of[n].
        let mut seq_of = Vec::new();
        let mut pos_of = Vec::new();
        for (s, inp) in seqs.iter().enumerate() {
            let start = inp.cache.len();
            for i in 0..inp.tokens.len() {
                seq_of.push(s);
                pos_of.push(start + i);
            }
        }
        let n = seq_of.len();
        if n == 0 {
            return vec![Vec::new(); seqs.len()];
        }
        let mut x = vec![0f32; n * d];
        {
            let mut k = 0;
            for inp in seqs.iter() {
                for &t in inp.tokens {
                    let id = (t as usize).min(cfg.vocab - 1);
                    self.embed.row_f32(id, &mut x[k * d..(k + 1) * d]);
                    k += 1;
                }
            }
        }
        let half = hd / 2;
        let mut cos = vec![0f32; n * half];
        let mut sin = vec![0f32; n * half];
        for (i, &p) in pos_of.iter().enumerate() {
            for (j, &f) in self.inv_freq.iter().enumerate() {
                let a = p as f32 * f;
                cos[i * half + j] = a.cos();
                sin[i * half + j] = a.sin();
            }
        }
        let qkv_w = qd + 2 * kvd;
        let mut h = vec![0f32; n * d];
        let mut qkv = vec![0f32; n * qkv_w];
        let mut att = vec![0f32; n * qd];
        let mut o = vec![0f32; n * d];
        let mut gu = vec![0f32; n * 2 * cfg.ffn];
        let mut act = vec![0f32; n * cfg.ffn];
        let scale = 1.0 / (hd as f32).sqrt();
        let group = nh / nkv;
        for (li, layer) in self.layers.iter().enumerate() {
            for t in 0..n {
                rms_norm(
                    &x[t * d..(t + 1) * d],
                    &layer.attn_norm,
                    cfg.rms_eps,
                    &mut h[t * d..(t + 1) * d],
                );
            }
            layer.wqkv.matmul(&h, n, &mut qkv, threads);
            for t in 0..n {
                let row = &mut qkv[t * qkv_w..(t + 1) * qkv_w];
                if let Some(b) = &layer.bqkv {
                    for (v, bb) in row.iter_mut().zip(b) {
                        *v += bb;
                    }
                }
                let (c, s) = (
                    &cos[t * half..(t + 1) * half],
                    &sin[t * half..(t + 1) * half],
                );
                let (q, kv) = row.split_at_mut(qd);
                for head in q.chunks_exact_mut(hd) {
                    if let Some(w) = &layer.q_norm {
                        let tmp = head.to_vec();
                        rms_norm(&tmp, w, cfg.rms_eps, head);
                    }
                    rope(head, c, s, cfg.rope);
                }
                for head in kv[..kvd].chunks_exact_mut(hd) {
                    if let Some(w) = &layer.k_norm {
                        let tmp = head.to_vec();
                        rms_norm(&tmp, w, cfg.rms_eps, head);
                    }
                    rope(head, c, s, cfg.rope);
                }
            }
            // Append keys and values to each sequence's cache.
            for (t, &s) in seq_of.iter().enumerate() {
                let row = &qkv[t * qkv_w..(t + 1) * qkv_w];
                let cache = &mut *seqs[s].cache;
                cache.k[li].extend_from_slice(&row[qd..qd + kvd]);
                cache.v[li].extend_from_slice(&row[qd + kvd..]);
            }
            // Attention, one (token, head) at a time.
            let caches: Vec<&KvCache> = seqs.iter().map(|s| &*s.cache).collect();
            let attend = |idx: usize, out: &mut [f32]| {
                let (t, head) = (idx / nh, idx % nh);
                let cache = caches[seq_of[t]];
                let p = pos_of[t];
                let kvh = head / group;
                let q = &qkv[t * qkv_w + head * hd..t * qkv_w + (head + 1) * hd];
                let keys = &cache.k[li];
                let vals = &cache.v[li];
                let mut scores = Vec::with_capacity(p + 1);
                let mut max = f32::NEG_INFINITY;
                for j in 0..=p {
                    let kj = &keys[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                    let sc = dot_f32(q, kj, kernel) * scale;
                    max = max.max(sc);
                    scores.push(sc);
                }
                let mut sum = 0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                let inv = 1.0 / sum;
                out.fill(0.0);
                for (j, &w) in scores.iter().enumerate() {
                    let vj = &vals[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                    let w = w * inv;
                    for (o, &v) in out.iter_mut().zip(vj) {
                        *o += w * v;
                    }
                }
            };
            let work: usize = pos_of.iter().map(|p| p + 1).sum::<usize>() * nh;
            if threads > 1 && work > 4096 {
                att.par_chunks_mut(hd)
                    .enumerate()
                    .for_each(|(i, out)| attend(i, out));
            } else {
                for (i, out) in att.chunks_exact_mut(hd).enumerate() {
                    attend(i, out);
                }
            }
            drop(caches);
            layer.wo.matmul(&att, n, &mut o, threads);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
            for t in 0..n {
                rms_norm(
                    &x[t * d..(t + 1) * d],
                    &layer.ffn_norm,
                    cfg.rms_eps,
                    &mut h[t * d..(t + 1) * d],
                );
            }
            layer.w_gate_up.matmul(&h, n, &mut gu, threads);
            let f = cfg.ffn;
            for t in 0..n {
                let g = &gu[t * 2 * f..t * 2 * f + f];
                let u = &gu[t * 2 * f + f..(t + 1) * 2 * f];
                for ((a, &gv), &uv) in act[t * f..(t + 1) * f].iter_mut().zip(g).zip(u) {
                    *a = silu(gv) * uv;
                }
            }
            layer.w_down.matmul(&act, n, &mut o, threads);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
        }
        for inp in seqs.iter_mut() {
            inp.cache.tokens.extend_from_slice(inp.tokens);
        }
        // Logits for the requested rows.
        let mut rows = Vec::new();
        let mut k = 0;
        for inp in seqs.iter() {
            let len = inp.tokens.len();
            if inp.all_logits {
                rows.extend(k..k + len);
            } else if len > 0 {
                rows.push(k + len - 1);
            }
            k += len;
        }
        let m = rows.len();
        let mut hn = vec![0f32; m * d];
        for (i, &r) in rows.iter().enumerate() {
            rms_norm(
                &x[r * d..(r + 1) * d],
                &self.norm,
                cfg.rms_eps,
                &mut hn[i * d..(i + 1) * d],
            );
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let v = cfg.vocab;
        let mut logits = vec![0f32; m * v];
        head.matmul(&hn, m, &mut logits, threads);
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for inp in seqs.iter() {
            let count = if inp.all_logits {
                inp.tokens.len()
            } else {
                usize::from(!inp.tokens.is_empty())
            };
            out.push(logits[at * v..(at + count) * v].to_vec());
            at += count;
        }
        out
    }
}

/// Read access to the weights, for the differentiable twin in `enact-train`.
impl Model {
    /// Token embedding, `vocab × d_model`.
    pub fn embed(&self) -> &Matrix {
        &self.embed
    }
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    /// Final RMSNorm weight.
    pub fn output_norm(&self) -> &[f32] {
        &self.norm
    }
    /// Separate output layer; `None` when it is tied to the embedding.
    pub fn lm_head(&self) -> Option<&Matrix> {
        self.lm_head.as_ref()
    }
    /// Rotary inverse frequencies (`head_dim / 2` of them).
    pub fn rope_inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }
}

/// Read access to one block's weights (matrices are `out × in`, rows in the file's layout:
/// GGUF llama q/k rows are permuted for interleaved rotary pairs).
impl Layer {
    pub fn attn_norm(&self) -> &[f32] {
        &self.attn_norm
    }
    /// q, k and v stacked by rows (`q_dim + 2 kv_dim` rows).
    pub fn wqkv(&self) -> &Matrix {
        &self.wqkv
    }
    /// q, k and v biases concatenated (Qwen2).
    pub fn bqkv(&self) -> Option<&[f32]> {
        self.bqkv.as_deref()
    }
    pub fn q_norm(&self) -> Option<&[f32]> {
        self.q_norm.as_deref()
    }
    pub fn k_norm(&self) -> Option<&[f32]> {
        self.k_norm.as_deref()
    }
    pub fn wo(&self) -> &Matrix {
        &self.wo
    }
    pub fn ffn_norm(&self) -> &[f32] {
        &self.ffn_norm
    }
    /// gate and up stacked by rows (`2 ffn` rows).
    pub fn w_gate_up(&self) -> &Matrix {
        &self.w_gate_up
    }
    pub fn w_down(&self) -> &Matrix {
        &self.w_down
    }
}

//! Weight matrices and the matrix-vector kernels of the engine.
//!
//! Weights are kept row-major (one row per output feature) in one of three formats:
//! `F32`, `Q8_0` (blocks of 32 signed bytes with one scale) and `Q4_1` (blocks of 32 nibbles
//! with a scale and a minimum), the last two as in GGML. Quantized matrices are multiplied
//! with activations quantized to 8 bits per block of 32 (as llama.cpp does).
//!
//! Determinism: the value computed for one (row, token) pair does not depend on how many
//! tokens or sequences are in the batch, nor on the thread count. So a prefill, a decode step
//! and a re-scoring of the same tokens give bit-identical logits.

use rayon::prelude::*;

pub const QK: usize = 32;

/// The storage format of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    F32,
    Q8_0,
    Q4_1,
}

impl WeightKind {
    pub fn name(self) -> &'static str {
        match self {
            WeightKind::F32 => "F32",
            WeightKind::Q8_0 => "Q8_0",
            WeightKind::Q4_1 => "Q4_1",
        }
    }
}

#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    /// `qs[rows*cols]`, `d[rows*cols/32]`.
    Q8_0 {
        qs: Vec<i8>,
        d: Vec<f32>,
    },
    /// `qs[rows*cols/2]` (16 bytes per block: low nibbles are elements 0..16, high nibbles
    /// 16..32), `d` and `m` per block; value = d*q + m.
    Q4_1 {
        qs: Vec<u8>,
        d: Vec<f32>,
        m: Vec<f32>,
    },
}

/// A weight matrix `rows × cols` (rows = output features).
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    data: Data,
}

/// Activations quantized to 8 bits per block of 32 (one row per token).
pub struct QuantActs {
    cols: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    /// d * sum(q) per block (for Q4_1's minimum term).
    s: Vec<f32>,
}

fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

impl Matrix {
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Matrix {
        debug_assert_eq!(data.len(), rows * cols);
        Matrix {
            rows,
            cols,
            data: Data::F32(data),
        }
    }

    /// Quantizes f32 weights to Q8_0 (as GGML does: d = max|x|/127, q = round(x/d)).
    /// Falls back to F32 when `cols` is not a multiple of 32.
    pub fn quantize_q8_0(rows: usize, cols: usize, data: &[f32]) -> Matrix {
        if !cols.is_multiple_of(QK) {
            return Matrix::from_f32(rows, cols, data.to_vec());
        }
        let mut qs = vec![0i8; rows * cols];
        let mut d = vec![0f32; rows * cols / QK];
        for (b, (src, dst)) in data
            .chunks_exact(QK)
            .zip(qs.chunks_exact_mut(QK))
            .enumerate()
        {
            let amax = src.iter().fold(0f32, |a, &x| a.max(x.abs()));
            let scale = amax / 127.0;
            // GGML stores the scale as f16; round it the same way so repacked weights match.
            let scale = half::f16::from_f32(scale).to_f32();
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            for (q, &x) in dst.iter_mut().zip(src) {
                *q = (x * inv).round().clamp(-127.0, 127.0) as i8;
            }
            d[b] = scale;
        }
        Matrix {
            rows,
            cols,
            data: Data::Q8_0 { qs, d },
        }
    }

    /// From GGML Q8_0 blocks (34 bytes: f16 scale, 32 i8).
    pub fn from_ggml_q8_0(rows: usize, cols: usize, raw: &[u8]) -> Option<Matrix> {
        let nb = rows * cols / QK;
        if !cols.is_multiple_of(QK) || raw.len() != nb * 34 {
            return None;
        }
        let mut qs = vec![0i8; rows * cols];
        let mut d = vec![0f32; nb];
        for (b, blk) in raw.chunks_exact(34).enumerate() {
            d[b] = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            for (q, &x) in qs[b * QK..(b + 1) * QK].iter_mut().zip(&blk[2..]) {
                *q = x as i8;
            }
        }
        Some(Matrix {
            rows,
            cols,
            data: Data::Q8_0 { qs, d },
        })
    }

    /// From GGML Q4_1 blocks (20 bytes: f16 scale, f16 min, 16 bytes of nibbles).
    pub fn from_ggml_q4_1(rows: usize, cols: usize, raw: &[u8]) -> Option<Matrix> {
        let nb = rows * cols / QK;
        if !cols.is_multiple_of(QK) || raw.len() != nb * 20 {
            return None;
        }
        let mut qs = vec![0u8; rows * cols / 2];
        let mut d = vec![0f32; nb];
        let mut m = vec![0f32; nb];
        for (b, blk) in raw.chunks_exact(20).enumerate() {
            d[b] = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            m[b] = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
            qs[b * 16..(b + 1) * 16].copy_from_slice(&blk[4..20]);
        }
        Some(Matrix {
            rows,
            cols,
            data: Data::Q4_1 { qs, d, m },
        })
    }

    pub fn kind(&self) -> WeightKind {
        match self.data {
            Data::F32(_) => WeightKind::F32,
            Data::Q8_0 { .. } => WeightKind::Q8_0,
            Data::Q4_1 { .. } => WeightKind::Q4_1,
        }
    }

    /// Bytes of weight data read per full pass.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len() * 4,
            Data::Q8_0 { qs, d } => qs.len() + d.len() * 4,
            Data::Q4_1 { qs, d, m } => qs.len() + d.len() * 4 + m.len() * 4,
        }
    }

    /// Row `r` as f32 (embedding lookup).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        match &self.data {
            Data::F32(v) => out.copy_from_slice(&v[r * c..(r + 1) * c]),
            Data::Q8_0 { qs, d } => {
                for (b, o) in out.chunks_exact_mut(QK).enumerate() {
                    let blk = r * c / QK + b;
                    for (j, x) in o.iter_mut().enumerate() {
                        *x = d[blk] * qs[blk * QK + j] as f32;
                    }
                }
            }
            Data::Q4_1 { qs, d, m } => {
                for (b, o) in out.chunks_exact_mut(QK).enumerate() {
                    let blk = r * c / QK + b;
                    let bytes = &qs[blk * 16..(blk + 1) * 16];
                    for j in 0..16 {
                        o[j] = d[blk] * (bytes[j] & 0x0f) as f32 + m[blk];
                        o[j + 16] = d[blk] * (bytes[j] >> 4) as f32 + m[blk];
                    }
                }
            }
        }
    }

    /// The whole matrix as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_f32(r, o);
        }
        out
    }

    /// Converts to another format (through f32).
    pub fn convert(&self, kind: WeightKind) -> Matrix {
        if self.kind() == kind {
            return self.clone();
        }
        let f = self.to_f32();
        match kind {
            WeightKind::F32 => Matrix::from_f32(self.rows, self.cols, f),
            WeightKind::Q8_0 => Matrix::quantize_q8_0(self.rows, self.cols, &f),
            // Re-quantizing to Q4_1 is never needed: keep Q8_0.
            WeightKind::Q4_1 => Matrix::quantize_q8_0(self.rows, self.cols, &f),
        }
    }

    /// Stacks matrices with the same column count and format (fused projections).
    pub fn concat(parts: &[Matrix]) -> Option<Matrix> {
        let first = parts.first()?;
        let cols = first.cols;
        if parts
            .iter()
            .any(|p| p.cols != cols || p.kind() != first.kind())
        {
            return None;
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let data = match &first.data {
            Data::F32(_) => Data::F32(
                parts
                    .iter()
                    .flat_map(|p| match &p.data {
                        Data::F32(v) => v.clone(),
                        _ => Vec::new(),
                    })
                    .collect(),
            ),
            Data::Q8_0 { .. } => {
                let (mut qs, mut d) = (Vec::new(), Vec::new());
                for p in parts {
                    if let Data::Q8_0 { qs: q, d: dd } = &p.data {
                        qs.extend_from_slice(q);
                        d.extend_from_slice(dd);
                    }
                }
                Data::Q8_0 { qs, d }
            }
            Data::Q4_1 { .. } => {
                let (mut qs, mut d, mut m) = (Vec::new(), Vec::new(), Vec::new());
                for p in parts {
                    if let Data::Q4_1 {
                        qs: q,
                        d: dd,
                        m: mm,
                    } = &p.data
                    {
                        qs.extend_from_slice(q);
                        d.extend_from_slice(dd);
                        m.extend_from_slice(mm);
                    }
                }
                Data::Q4_1 { qs, d, m }
            }
        };
        Some(Matrix { rows, cols, data })
    }

    /// `out[t*rows + r] = dot(row r, x[t])` for `t` tokens of `cols` activations each.
    pub fn matmul(&self, x: &[f32], tokens: usize, out: &mut [f32], threads: usize) {
        debug_assert_eq!(x.len(), tokens * self.cols);
        debug_assert_eq!(out.len(), tokens * self.rows);
        let acts = match self.data {
            Data::F32(_) => None,
            _ => Some(QuantActs::new(x, tokens, self.cols)),
        };
        let rows = self.rows;
        // Rows are split in chunks; each chunk computes its (row, token) dots into a
        // row-major scratch `[row][token]`, transposed afterwards when tokens > 1.
        let tasks = (threads.max(1) * 4).min(rows.max(1));
        let chunk = rows.div_ceil(tasks).max(1);
        let kernel = Kernel::detect();
        let vnni = kernel == Kernel::Avx2 && avx512_vnni();
        let run = |r0: usize, dst: &mut [f32]| {
            for (i, row_out) in dst.chunks_exact_mut(tokens).enumerate() {
                let r = r0 + i;
                #[cfg(target_arch = "x86_64")]
                if vnni && let (Data::Q8_0 { qs, d }, Some(a)) = (&self.data, acts.as_ref()) {
                    let (c, nb) = (self.cols, self.cols / QK);
                    let (wq, wd) = (&qs[r * c..(r + 1) * c], &d[r * nb..(r + 1) * nb]);
                    // SAFETY: `vnni` is only set when the CPU has the features the kernel
                    // enables; the slices hold `nb` blocks per token.
                    unsafe { avx512::dot_q8_0_tokens(wq, wd, &a.qs, &a.d, row_out) };
                    continue;
                }
                let _ = vnni;
                for (t, o) in row_out.iter_mut().enumerate() {
                    *o = self.dot_row(r, x, acts.as_ref(), t, kernel);
                }
            }
        };
        if tokens == 1 {
            if threads <= 1 {
                run(0, out);
            } else {
                out.par_chunks_mut(chunk)
                    .enumerate()
                    .for_each(|(c, dst)| run(c * chunk, dst));
            }
            return;
        }
        let mut scratch = vec![0f32; rows * tokens];
        if threads <= 1 {
            run(0, &mut scratch);
        } else {
            scratch
                .par_chunks_mut(chunk * tokens)
                .enumerate()
                .for_each(|(c, dst)| run(c * chunk, dst));
        }
        for r in 0..rows {
            for t in 0..tokens {
                out[t * rows + r] = scratch[r * tokens + t];
            }
        }
    }

    #[inline]
    fn dot_row(
        &self,
        r: usize,
        x: &[f32],
        acts: Option<&QuantActs>,
        t: usize,
        kernel: Kernel,
    ) -> f32 {
        let c = self.cols;
        let nb = c / QK;
        match (&self.data, acts) {
            (Data::F32(w), _) => dot_f32(&w[r * c..(r + 1) * c], &x[t * c..(t + 1) * c], kernel),
            (Data::Q8_0 { qs, d }, Some(a)) => dot_q8_0(
                &qs[r * c..(r + 1) * c],
                &d[r * nb..(r + 1) * nb],
                &a.qs[t * c..(t + 1) * c],
                &a.d[t * nb..(t + 1) * nb],
                kernel,
            ),
            (Data::Q4_1 { qs, d, m }, Some(a)) => dot_q4_1(
                &qs[r * c / 2..(r + 1) * c / 2],
                &d[r * nb..(r + 1) * nb],
                &m[r * nb..(r + 1) * nb],
                &a.qs[t * c..(t + 1) * c],
                &a.d[t * nb..(t + 1) * nb],
                &a.s[t * nb..(t + 1) * nb],
                kernel,
            ),
            _ => 0.0,
        }
    }
}

impl QuantActs {
    pub fn new(x: &[f32], tokens: usize, cols: usize) -> QuantActs {
        let nb = tokens * cols / QK;
        let mut qs = vec![0i8; tokens * cols];
        let mut d = vec![0f32; nb];
        let mut s = vec![0f32; nb];
        for (b, (src, dst)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
            let amax = src.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in dst.iter_mut().zip(src) {
                let qi = (v * inv).round().clamp(-127.0, 127.0) as i8;
                *q = qi;
                sum += qi as i32;
            }
            d[b] = scale;
            s[b] = scale * sum as f32;
        }
        QuantActs { cols, qs, d, s }
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// The kernel set chosen once per process from the CPU's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            let avx2 = *DETECTED.get_or_init(|| {
                std::env::var_os("ENACT_NO_SIMD").is_none()
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
            });
            if avx2 {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if avx512_vnni() => "avx2 + avx512-vnni (q8_0)",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
        }
    }
}

/// Whether Q8_0 matrix products use the AVX-512 VNNI kernel (several tokens per weight
/// row, bit-identical to the AVX2 one). `ENACT_NO_AVX512=1` turns it off.
fn avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            std::env::var_os("ENACT_NO_AVX512").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[inline]
pub fn dot_f32(a: &[f32], b: &[f32], kernel: Kernel) -> f32 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only chosen when the CPU has avx2 and fma.
        Kernel::Avx2 => unsafe { avx2::dot_f32(a, b) },
        Kernel::Scalar => dot_f32_scalar(a, b),
    }
}

fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n = a.len() / 8 * 8;
    for (ca, cb) in a[..n].chunks_exact(8).zip(b[..n].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[inline]
fn dot_q8_0(wq: &[i8], wd: &[f32], xq: &[i8], xd: &[f32], kernel: Kernel) -> f32 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only chosen when the CPU has avx2 and fma.
        Kernel::Avx2 => unsafe { avx2::dot_q8_0(wq, wd, xq, xd) },
        Kernel::Scalar => {
            let mut s = 0f32;
            for b in 0..wd.len() {
                let mut acc = 0i32;
                for j in 0..QK {
                    acc += wq[b * QK + j] as i32 * xq[b * QK + j] as i32;
                }
                s += wd[b] * xd[b] * acc as f32;
            }
            s
        }
    }
}

#[inline]
fn dot_q4_1(
    wq: &[u8],
    wd: &[f32],
    wm: &[f32],
    xq: &[i8],
    xd: &[f32],
    xs: &[f32],
    kernel: Kernel,
) -> f32 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only chosen when the CPU has avx2 and fma.
        Kernel::Avx2 => unsafe { avx2::dot_q4_1(wq, wd, wm, xq, xd, xs) },
        Kernel::Scalar => {
            let mut s = 0f32;
            for b in 0..wd.len() {
                let mut acc = 0i32;
                for j in 0..16 {
                    let byte = wq[b * 16 + j];
                    acc += (byte & 0x0f) as i32 * xq[b * QK + j] as i32;
                    acc += (byte >> 4) as i32 * xq[b * QK + j + 16] as i32;
                }
                s += wd[b] * xd[b] * acc as f32 + wm[b] * xs[b];
            }
            s
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::QK;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// The CPU must support avx2 and fma; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY: all loads stay within `n` elements of both slices.
        unsafe {
            while i + 16 <= n {
                acc0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    acc1,
                );
                i += 16;
            }
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// # Safety
    /// The CPU must support avx2 and fma; `wq`/`xq` hold `wd.len()` blocks of 32.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(wq: &[i8], wd: &[f32], xq: &[i8], xd: &[f32]) -> f32 {
        let nb = wd.len().min(xd.len()).min(wq.len() / QK).min(xq.len() / QK);
        let ones = _mm256_set1_epi16(1);
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let block = |b: usize| -> __m256 {
            // SAFETY: b < nb, so both 32-byte loads are in bounds.
            let (w, x) = unsafe {
                (
                    _mm256_loadu_si256(wq.as_ptr().add(b * QK) as *const __m256i),
                    _mm256_loadu_si256(xq.as_ptr().add(b * QK) as *const __m256i),
                )
            };
            let aw = _mm256_sign_epi8(w, w);
            let sx = _mm256_sign_epi8(x, w);
            let p16 = _mm256_maddubs_epi16(aw, sx);
            let p32 = _mm256_madd_epi16(p16, ones);
            _mm256_cvtepi32_ps(p32)
        };
        let mut b = 0;
        while b + 2 <= nb {
            let s0 = _mm256_set1_ps(wd[b] * xd[b]);
            acc0 = _mm256_fmadd_ps(s0, block(b), acc0);
            let s1 = _mm256_set1_ps(wd[b + 1] * xd[b + 1]);
            acc1 = _mm256_fmadd_ps(s1, block(b + 1), acc1);
            b += 2;
        }
        if b < nb {
            let s0 = _mm256_set1_ps(wd[b] * xd[b]);
            acc0 = _mm256_fmadd_ps(s0, block(b), acc0);
        }
        hsum(_mm256_add_ps(acc0, acc1))
    }

    /// # Safety
    /// The CPU must support avx2 and fma; `wq` holds `wd.len()` blocks of 16 bytes and `xq`
    /// as many blocks of 32.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(
        wq: &[u8],
        wd: &[f32],
        wm: &[f32],
        xq: &[i8],
        xd: &[f32],
        xs: &[f32],
    ) -> f32 {
        let nb = wd
            .len()
            .min(wm.len())
            .min(xd.len())
            .min(xs.len())
            .min(wq.len() / 16)
            .min(xq.len() / QK);
        let ones = _mm256_set1_epi16(1);
        let mask = _mm_set1_epi8(0x0f);
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut macc = 0f32;
        let block = |b: usize| -> __m256 {
            // SAFETY: b < nb, so the 16-byte and 32-byte loads are in bounds.
            let (raw, x) = unsafe {
                (
                    _mm_loadu_si128(wq.as_ptr().add(b * 16) as *const __m128i),
                    _mm256_loadu_si256(xq.as_ptr().add(b * QK) as *const __m256i),
                )
            };
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
            let w = _mm256_set_m128i(hi, lo);
            let p16 = _mm256_maddubs_epi16(w, x);
            let p32 = _mm256_madd_epi16(p16, ones);
            _mm256_cvtepi32_ps(p32)
        };
        let mut b = 0;
        while b + 2 <= nb {
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * xd[b]), block(b), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(wd[b + 1] * xd[b + 1]), block(b + 1), acc1);
            macc += wm[b] * xs[b] + wm[b + 1] * xs[b + 1];
            b += 2;
        }
        if b < nb {
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * xd[b]), block(b), acc0);
            macc += wm[b] * xs[b];
        }
        hsum(_mm256_add_ps(acc0, acc1)) + macc
    }
}

/// Q8_0 rows against several tokens at once with AVX-512 VNNI: each weight block is loaded
/// and sign-split once for all tokens, two blocks per 512-bit register. Per token the integer
/// block sums are those of the AVX2 kernel (`dpbusd` sums the same four products per lane as
/// `maddubs` + `madd`, which cannot saturate here), and the float work is the same: the low
/// half of the accumulator is the AVX2 kernel's `acc0` (even blocks), the high half its `acc1`
/// (odd blocks), an odd last block goes to `acc0`, then `hsum(acc0 + acc1)`. So results are
/// bit-identical to the AVX2 kernel whatever the number of tokens.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::QK;

    /// Tokens per pass over a weight row (their accumulators stay in registers).
    const GROUP: usize = 4;

    /// `out[t] = dot(row, token t)` for `out.len()` tokens of `xq`/`xd` (`wd.len()` blocks
    /// each).
    ///
    /// # Safety
    /// The CPU must support avx512f/bw/dq/vl/vnni, avx2 and fma.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
    pub unsafe fn dot_q8_0_tokens(wq: &[i8], wd: &[f32], xq: &[i8], xd: &[f32], out: &mut [f32]) {
        let nb = wd.len().min(wq.len() / QK);
        let tokens = out.len();
        if xq.len() < tokens * nb * QK || xd.len() < tokens * nb {
            return;
        }
        let mut t0 = 0;
        while t0 < tokens {
            let n = (tokens - t0).min(GROUP);
            // SAFETY: checked above: tokens t0..t0+n have nb blocks each in xq and xd.
            unsafe { group(wq, wd, xq, xd, t0, n, nb, &mut out[t0..t0 + n]) };
            t0 += n;
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn group(
        wq: &[i8],
        wd: &[f32],
        xq: &[i8],
        xd: &[f32],
        t0: usize,
        n: usize,
        nb: usize,
        out: &mut [f32],
    ) {
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_ps(); GROUP];
        let x_at = |t: usize, b: usize| (t0 + t) * nb * QK + b * QK;
        let s_at = |t: usize, b: usize| wd[b] * xd[(t0 + t) * nb + b];
        let mut b = 0;
        while b + 2 <= nb {
            // SAFETY: blocks b and b + 1 are in bounds for the row and every token.
            unsafe {
                let w = _mm512_loadu_si512(wq.as_ptr().add(b * QK) as *const __m512i);
                let aw = _mm512_abs_epi8(w);
                let neg = _mm512_movepi8_mask(w);
                for (t, a) in acc.iter_mut().enumerate().take(n) {
                    let x = _mm512_loadu_si512(xq.as_ptr().add(x_at(t, b)) as *const __m512i);
                    let sx = _mm512_mask_sub_epi8(x, neg, zero, x);
                    let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, aw, sx));
                    let scale = _mm512_insertf32x8::<1>(
                        _mm512_set1_ps(s_at(t, b)),
                        _mm256_set1_ps(s_at(t, b + 1)),
                    );
                    *a = _mm512_fmadd_ps(scale, sums, *a);
                }
            }
            b += 2;
        }
        for (t, (a, o)) in acc.iter().zip(out.iter_mut()).enumerate().take(n) {
            let mut acc0 = _mm512_castps512_ps256(*a);
            let acc1 = _mm512_extractf32x8_ps::<1>(*a);
            if b < nb {
                // SAFETY: block b (the last) is in bounds for the row and the token.
                unsafe {
                    let w = _mm256_loadu_si256(wq.as_ptr().add(b * QK) as *const __m256i);
                    let x = _mm256_loadu_si256(xq.as_ptr().add(x_at(t, b)) as *const __m256i);
                    let aw = _mm256_sign_epi8(w, w);
                    let sx = _mm256_sign_epi8(x, w);
                    let sums =
                        _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx));
                    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(s_at(t, b)), sums, acc0);
                }
            }
            *o = super::avx2::hsum(_mm256_add_ps(acc0, acc1));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn reference(w: &Matrix, x: &[f32], tokens: usize) -> Vec<f32> {
        let wf = w.to_f32();
        let mut out = vec![0f32; tokens * w.rows];
        for t in 0..tokens {
            for r in 0..w.rows {
                out[t * w.rows + r] = (0..w.cols)
                    .map(|c| wf[r * w.cols + c] * x[t * w.cols + c])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn kernels_match_reference_and_are_batch_invariant() {
        let (rows, cols, tokens) = (37, 128, 3);
        let wf = rand_vec(rows * cols, 1);
        let x = rand_vec(tokens * cols, 2);
        // Q4_1 from raw GGML blocks built by hand.
        let mut raw = Vec::new();
        for blk in wf.chunks_exact(32) {
            let (mn, mx) = blk
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let d = (mx - mn) / 15.0;
            raw.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
            raw.extend_from_slice(&half::f16::from_f32(mn).to_bits().to_le_bytes());
            let dq = half::f16::from_f32(d).to_f32();
            let mq = half::f16::from_f32(mn).to_f32();
            let q = |v: f32| (((v - mq) / dq).round().clamp(0.0, 15.0)) as u8;
            for j in 0..16 {
                raw.push(q(blk[j]) | (q(blk[j + 16]) << 4));
            }
        }
        let mats = [
            Matrix::from_f32(rows, cols, wf.clone()),
            Matrix::quantize_q8_0(rows, cols, &wf),
            Matrix::from_ggml_q4_1(rows, cols, &raw).unwrap(),
        ];
        for m in &mats {
            let want = reference(m, &x, tokens);
            for threads in [1, 2] {
                let mut out = vec![0f32; tokens * rows];
                m.matmul(&x, tokens, &mut out, threads);
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() < 0.05, "{:?}: {a} vs {b}", m.kind());
                }
                // One token at a time gives bit-identical results.
                for t in 0..tokens {
                    let mut one = vec![0f32; rows];
                    m.matmul(&x[t * cols..(t + 1) * cols], 1, &mut one, threads);
                    assert_eq!(&one[..], &out[t * rows..(t + 1) * rows]);
                }
            }
        }
    }

    #[test]
    fn scalar_and_simd_agree() {
        let (cols, tokens) = (96, 1);
        let wf = rand_vec(cols, 5);
        let x = rand_vec(cols, 6);
        let m = Matrix::quantize_q8_0(1, cols, &wf);
        let a = QuantActs::new(&x, tokens, cols);
        let simd = m.dot_row(0, &x, Some(&a), 0, Kernel::detect());
        let scalar = m.dot_row(0, &x, Some(&a), 0, Kernel::Scalar);
        assert!((simd - scalar).abs() < 1e-4);
    }

    #[test]
    fn q8_0_kernels_are_bit_identical_for_any_token_count() {
        // Odd and even block counts, extreme weights (-128, 0, 127) and 1..=9 tokens, through
        // `matmul` (the AVX-512 VNNI path where the CPU has it) against `dot_row` (AVX2).
        for (rows, cols) in [(5, 96), (3, 128), (7, 576)] {
            let wf = rand_vec(rows * cols, 11);
            let mut m = Matrix::quantize_q8_0(rows, cols, &wf);
            if let Data::Q8_0 { qs, .. } = &mut m.data {
                qs[0] = -128;
                qs[1] = 127;
                qs[2] = 0;
                qs[cols + 5] = -128;
            }
            for tokens in 1..=9 {
                let x = rand_vec(tokens * cols, 12 + tokens as u64);
                let a = QuantActs::new(&x, tokens, cols);
                for threads in [1, 2] {
                    let mut out = vec![0f32; tokens * rows];
                    m.matmul(&x, tokens, &mut out, threads);
                    for t in 0..tokens {
                        for r in 0..rows {
                            let want = m.dot_row(r, &x, Some(&a), t, Kernel::detect());
                            assert_eq!(out[t * rows + r], want, "{rows}x{cols}, {tokens} tokens");
                        }
                    }
                }
            }
        }
    }
}

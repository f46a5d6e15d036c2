//! AdamW with decoupled weight decay, and global gradient-norm clipping.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{load_tensors, save_tensors};
use crate::error::{Result, checkpoint_err};
use crate::twin::NamedVar;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled: `θ ← θ − lr·wd·θ`, applied to matrices only (not norms or biases).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over a fixed list of vars; moments keyed by var name.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates applied so far.
    pub step: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, vars: &[NamedVar]) -> Result<AdamW> {
        let zeros = |nv: &NamedVar| nv.var.as_tensor().zeros_like();
        Ok(AdamW {
            config,
            step: 0,
            m: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            v: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
        })
    }

    /// One update with the given gradients (same order as the vars).
    pub fn update(&mut self, vars: &[NamedVar], grads: &[Tensor]) -> Result<()> {
        let c = &self.config;
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (i, (nv, g)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let theta = nv.var.as_tensor().detach();
            let decayed = if c.weight_decay > 0.0 && theta.rank() >= 2 {
                (&theta * (1.0 - c.lr * c.weight_decay))?
            } else {
                theta
            };
            let denom = ((&v / bc2)?.sqrt()? + c.eps)?;
            let upd = ((&m / bc1)? / denom)?;
            nv.var.set(&(decayed - (upd * c.lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Writes the moments as `m.<name>` / `v.<name>` (the step goes in the trainer state).
    pub fn save(&self, path: &Path, vars: &[NamedVar]) -> Result<()> {
        let mut map = HashMap::new();
        for (i, nv) in vars.iter().enumerate() {
            map.insert(format!("m.{}", nv.name), self.m[i].to_dtype(DType::F32)?);
            map.insert(format!("v.{}", nv.name), self.v[i].to_dtype(DType::F32)?);
        }
        save_tensors(path, &map)
    }

    /// Reads moments written by [`AdamW::save`] for the same vars.
    pub fn load(&mut self, path: &Path, vars: &[NamedVar], step: u64) -> Result<()> {
        let map = load_tensors(path)?;
        for (i, nv) in vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{}", nv.name);
                let t = map
                    .get(&key)
                    .ok_or_else(|| checkpoint_err(path, format!("tensor {key} is missing")))?;
                if t.dims() != nv.var.dims() {
                    return Err(checkpoint_err(
                        path,
                        format!(
                            "tensor {key} has shape {:?}, expected {:?}",
                            t.dims(),
                            nv.var.dims()
                        ),
                    ));
                }
                *slot = t.to_dtype(nv.var.dtype())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// The global L2 norm of the gradients.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut ss = 0f64;
    for g in grads {
        ss += g
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(ss.sqrt())
}

/// Scales the gradients so their global norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * s)?;
        }
    }
    Ok(norm)
}

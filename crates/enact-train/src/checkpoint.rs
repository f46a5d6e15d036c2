//! Safetensors files of named trainable tensors (weights, adapters, optimizer moments).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Result, checkpoint_err};
use crate::lora::{rows_from_hf, rows_to_hf};
use crate::twin::NamedVar;

/// Writes the vars under their names, in f32 and the Hugging Face row layout.
pub fn save_vars(path: &Path, vars: &[NamedVar]) -> Result<()> {
    let mut map = HashMap::with_capacity(vars.len());
    for v in vars {
        let t = rows_to_hf(v.var.as_tensor(), v.rope_rows)?.to_dtype(DType::F32)?;
        map.insert(v.name.clone(), t);
    }
    save_tensors(path, &map)
}

pub fn save_tensors(path: &Path, map: &HashMap<String, Tensor>) -> Result<()> {
    candle_core::safetensors::save(map, path).map_err(|e| checkpoint_err(path, e))
}

pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| checkpoint_err(path, format!("not a readable safetensors file ({e})")))
}

/// Sets each var from the tensor of its name (checked shapes; rows converted back from the
/// Hugging Face layout).
pub fn load_vars(path: &Path, vars: &[NamedVar]) -> Result<()> {
    let map = load_tensors(path)?;
    for v in vars {
        let t = map
            .get(&v.name)
            .ok_or_else(|| checkpoint_err(path, format!("tensor {} is missing", v.name)))?;
        if t.dims() != v.var.dims() {
            return Err(checkpoint_err(
                path,
                format!(
                    "tensor {} has shape {:?}, the model needs {:?}",
                    v.name,
                    t.dims(),
                    v.var.dims()
                ),
            ));
        }
        let t = rows_from_hf(&t.to_dtype(v.var.dtype())?, v.rope_rows)?;
        v.var.set(&t)?;
    }
    Ok(())
}

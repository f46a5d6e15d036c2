//! The training step: loss over a batch of trajectories, backward, clip, AdamW; checkpoints.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::TrainSample;
use crate::error::{Result, TrainError, checkpoint_err};
use crate::lora::{Adapters, LoraConfig, Proj};
use crate::loss::{Aggregation, PpoConfig, k3_loss, ppo_loss, sft_loss, token_weights};
use crate::optim::{AdamW, AdamWConfig, clip_grad_norm};
use crate::twin::{NamedVar, Packed, TwinModel, entropy, gather_targets};

/// What is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    /// Adapters on a frozen base.
    Lora(LoraConfig),
    /// Every weight (tiny models: a 135M model needs ~2 GB of optimizer state and is slow).
    Full,
}

/// The loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Cross-entropy on loss tokens.
    Sft,
    /// Decoupled PPO-clip with per-sequence advantages (GRPO when they come from
    /// [`crate::grpo_advantages`]), optional k3 KL to the reference.
    Ppo(PpoConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub trainable: Trainable,
    pub objective: Objective,
    pub aggregation: Aggregation,
    pub optimizer: AdamWConfig,
    /// Global gradient-norm clip (0 = none).
    pub max_grad_norm: f64,
    /// Tokens per packed forward; a batch is split into micro-batches of at most this many
    /// tokens (a longer sequence gets one of its own) and their gradients accumulated.
    pub micro_batch_tokens: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            trainable: Trainable::Lora(LoraConfig::default()),
            objective: Objective::Sft,
            aggregation: Aggregation::TokenMean,
            optimizer: AdamWConfig::default(),
            max_grad_norm: 1.0,
            micro_batch_tokens: 512,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer steps taken so far (after this one).
    pub step: u64,
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean k3 KL to the reference over loss tokens (when the objective has a KL term).
    pub kl: Option<f64>,
    /// Mean entropy of the policy over loss tokens.
    pub entropy: f64,
    /// |recomputed − recorded behaviour logprob| over loss tokens: mean and max. Large
    /// values mean the trainer and the sampler disagree (numerics, stale weights, a bug).
    pub logprob_mismatch_mean: f64,
    pub logprob_mismatch_max: f64,
    pub loss_tokens: usize,
    pub tokens: usize,
    pub sequences: usize,
    /// Loss tokens whose PPO ratio was clipped / whose importance weight was capped.
    pub clipped_tokens: usize,
    pub capped_tokens: usize,
}

/// Model, trainable parameters, optimizer.
pub struct Trainer {
    model: TwinModel,
    vars: Vec<NamedVar>,
    optimizer: AdamW,
    config: TrainConfig,
    /// Frozen initial weights for the KL term in full training (LoRA uses the base model).
    reference: Option<TwinModel>,
    base_model: String,
}

#[derive(Serialize, Deserialize)]
struct TrainerState {
    format_version: u32,
    step: u64,
    base_model: String,
    config: TrainConfig,
}

const STATE_VERSION: u32 = 1;
const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const FULL_WEIGHTS_FILE: &str = "model.safetensors";

/// The temperature the objective's logprobs are taken at (SFT: the model's own, 1).
fn temperature(objective: &Objective) -> f64 {
    match objective {
        Objective::Ppo(p) => p.temperature,
        Objective::Sft => 1.0,
    }
}

fn kl_coef(objective: &Objective) -> f64 {
    match objective {
        Objective::Ppo(p) => p.kl_coef,
        Objective::Sft => 0.0,
    }
}

/// Per loss token of a micro-batch: where it is and what the objective needs.
#[derive(Default)]
struct LossTokens {
    rows: Vec<u32>,
    targets: Vec<u32>,
    weight: Vec<f64>,
    behaviour: Vec<f64>,
    advantage: Vec<f64>,
    proximal: Vec<Option<f64>>,
}

impl Trainer {
    /// Prepares `model` for training per `config`. `base_model` names the base in PEFT's
    /// `adapter_config.json` (a hub id or a path).
    pub fn new(
        mut model: TwinModel,
        config: TrainConfig,
        base_model: impl Into<String>,
    ) -> Result<Trainer> {
        if config.micro_batch_tokens == 0 {
            return Err(TrainError::Invalid(
                "micro_batch_tokens must be at least 1".into(),
            ));
        }
        let reference = match (&config.trainable, kl_coef(&config.objective) > 0.0) {
            (Trainable::Full, true) => Some(model.frozen_copy()?),
            _ => None,
        };
        let vars = match &config.trainable {
            Trainable::Full => model.make_all_trainable()?,
            Trainable::Lora(lc) => {
                let adapters = Adapters::new(
                    lc.clone(),
                    model.cfg.n_layers,
                    lora_shape(&model),
                    lora_rope_rows(&model),
                    model.dtype,
                )?;
                let vars = adapters.vars();
                model.adapters = Some(adapters);
                vars
            }
        };
        let optimizer = AdamW::new(config.optimizer.clone(), &vars)?;
        Ok(Trainer {
            model,
            vars,
            optimizer,
            config,
            reference,
            base_model: base_model.into(),
        })
    }

    pub fn model(&self) -> &TwinModel {
        &self.model
    }
    pub fn vars(&self) -> &[NamedVar] {
        &self.vars
    }
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
    /// Switches the loss (e.g. an SFT warm start, then GRPO), keeping weights and optimizer
    /// state. A KL term in full training needs the reference taken when the trainer was
    /// made: create it with that objective, switch to SFT for the warm start, then back.
    pub fn set_objective(&mut self, objective: Objective) -> Result<()> {
        if kl_coef(&objective) > 0.0
            && matches!(self.config.trainable, Trainable::Full)
            && self.reference.is_none()
        {
            return Err(TrainError::Invalid(
                "a KL term in full training needs the initial weights as reference: create the                  trainer with the KL objective (then switch objectives), or set kl_coef = 0"
                    .into(),
            ));
        }
        self.config.objective = objective;
        Ok(())
    }

    /// Sets the learning rate of the following steps (moments and step count are kept).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.config.optimizer.lr = lr;
        self.optimizer.config.lr = lr;
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> u64 {
        self.optimizer.step
    }

    /// The current policy's logprob of each token (first 0): the proximal logprobs to pass
    /// when taking several steps on one batch.
    pub fn logprobs(&self, tokens: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.model.score(tokens, true)
    }

    /// Loss, gradients (summed over micro-batches, before clipping) and metrics.
    pub fn gradients(&self, batch: &[TrainSample]) -> Result<(Vec<Tensor>, StepMetrics)> {
        self.evaluate(batch, true)
    }

    /// Loss and metrics without a backward pass (gradients are zero).
    pub fn loss(&self, batch: &[TrainSample]) -> Result<StepMetrics> {
        Ok(self.evaluate(batch, false)?.1)
    }

    fn evaluate(
        &self,
        batch: &[TrainSample],
        backward: bool,
    ) -> Result<(Vec<Tensor>, StepMetrics)> {
        for s in batch {
            s.sequence.check()?;
            if let Some(p) = &s.proximal_logprobs
                && p.len() != s.sequence.tokens.len()
            {
                return Err(TrainError::Invalid(
                    "proximal logprobs must have one entry per token".into(),
                ));
            }
        }
        let masks: Vec<Vec<bool>> = batch.iter().map(|s| s.sequence.loss_mask.clone()).collect();
        let weights = token_weights(&masks, self.config.aggregation);
        let mut grads: Vec<Tensor> = self
            .vars
            .iter()
            .map(|v| v.var.as_tensor().zeros_like())
            .collect::<candle_core::Result<_>>()?;
        let mut m = StepMetrics {
            sequences: batch.len(),
            tokens: batch.iter().map(|s| s.sequence.tokens.len()).sum(),
            ..Default::default()
        };
        let (mut ent_sum, mut mis_sum, mut kl_sum) = (0.0, 0.0, 0.0);
        let mut mis_count = 0usize;
        for group in micro_batches(batch, self.config.micro_batch_tokens) {
            let packed = Packed::new(group.iter().map(|&i| batch[i].sequence.tokens.as_slice()));
            let mut lt = LossTokens::default();
            for (k, &i) in group.iter().enumerate() {
                let s = &batch[i];
                let seq = &s.sequence;
                for t in 1..seq.tokens.len() {
                    if !seq.loss_mask[t] {
                        continue;
                    }
                    lt.rows.push((packed.starts[k] + t - 1) as u32);
                    lt.targets.push(seq.tokens[t]);
                    lt.weight.push(weights[i][t]);
                    lt.behaviour.push(f64::from(seq.behaviour_logprobs[t]));
                    lt.advantage.push(s.advantage);
                    lt.proximal
                        .push(s.proximal_logprobs.as_ref().map(|p| f64::from(p[t])));
                }
            }
            if lt.rows.is_empty() {
                continue;
            }
            let hidden = self.model.hidden(&packed, true)?;
            let lsm = self.model.log_probs_rows_at(
                &hidden,
                &lt.rows,
                temperature(&self.config.objective),
            )?;
            let lp = gather_targets(&lsm, &lt.targets)?;
            let now = lp.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?;
            ent_sum += entropy(&lsm)?.iter().sum::<f64>();
            for (a, b) in now.iter().zip(&lt.behaviour) {
                let d = (a - b).abs();
                if d.is_finite() {
                    mis_sum += d;
                    mis_count += 1;
                    m.logprob_mismatch_max = m.logprob_mismatch_max.max(d);
                }
            }
            m.loss_tokens += lt.rows.len();
            let loss = match &self.config.objective {
                Objective::Sft => sft_loss(&lp, &lt.weight)?,
                Objective::Ppo(cfg) => {
                    let prox: Vec<f64> = lt
                        .proximal
                        .iter()
                        .zip(&now)
                        .map(|(p, n)| p.unwrap_or(*n))
                        .collect();
                    let (mut loss, stats) =
                        ppo_loss(&lp, &prox, &lt.behaviour, &lt.advantage, &lt.weight, cfg)?;
                    m.clipped_tokens += stats.clipped;
                    m.capped_tokens += stats.capped;
                    if cfg.kl_coef > 0.0 {
                        let reference = self.reference_logprobs(&packed, &lt)?;
                        let (kl, mean) = k3_loss(&lp, &reference, &lt.weight)?;
                        kl_sum += mean * lt.rows.len() as f64;
                        loss = (loss + (kl * cfg.kl_coef)?)?;
                    }
                    loss
                }
            };
            m.loss += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !backward {
                continue;
            }
            let store = loss.backward()?;
            for (acc, v) in grads.iter_mut().zip(&self.vars) {
                if let Some(g) = store.get(v.var.as_tensor()) {
                    *acc = (&*acc + g.detach())?;
                }
            }
        }
        if m.loss_tokens > 0 {
            m.entropy = ent_sum / m.loss_tokens as f64;
            if kl_coef(&self.config.objective) > 0.0 {
                m.kl = Some(kl_sum / m.loss_tokens as f64);
            }
        }
        if mis_count > 0 {
            m.logprob_mismatch_mean = mis_sum / mis_count as f64;
        }
        m.step = self.optimizer.step;
        Ok((grads, m))
    }

    fn reference_logprobs(&self, packed: &Packed, lt: &LossTokens) -> Result<Vec<f64>> {
        let (model, use_adapters) = match &self.reference {
            Some(r) => (r, false),
            None => (&self.model, false),
        };
        let hidden = model.hidden(packed, use_adapters)?;
        let lsm =
            model.log_probs_rows_at(&hidden, &lt.rows, temperature(&self.config.objective))?;
        Ok(gather_targets(&lsm, &lt.targets)?
            .detach()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?)
    }

    /// One optimizer step on a batch: loss, backward (accumulated over micro-batches),
    /// gradient clipping, AdamW.
    pub fn step(&mut self, batch: &[TrainSample]) -> Result<StepMetrics> {
        let (mut grads, mut metrics) = self.gradients(batch)?;
        if metrics.loss_tokens == 0 {
            return Err(TrainError::Invalid(
                "the batch has no loss tokens (no sampled tokens after the first position)".into(),
            ));
        }
        metrics.grad_norm = clip_grad_norm(&mut grads, self.config.max_grad_norm)?;
        if !metrics.grad_norm.is_finite() || !metrics.loss.is_finite() {
            return Err(TrainError::Invalid(format!(
                "loss {} / gradient norm {} is not finite; lower the learning rate or check the \
                 batch's logprobs",
                metrics.loss, metrics.grad_norm
            )));
        }
        self.optimizer.update(&self.vars, &grads)?;
        metrics.step = self.optimizer.step;
        tracing::debug!(?metrics, "train step");
        Ok(metrics)
    }

    /// Writes a checkpoint directory: the trained weights (PEFT adapter files for LoRA,
    /// `model.safetensors` for full training), optimizer moments and the step.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        match &self.model.adapters {
            Some(a) => a.save_peft(dir, &self.base_model)?,
            None => crate::checkpoint::save_vars(&dir.join(FULL_WEIGHTS_FILE), &self.vars)?,
        }
        self.optimizer.save(&dir.join(OPTIMIZER_FILE), &self.vars)?;
        let state = TrainerState {
            format_version: STATE_VERSION,
            step: self.optimizer.step,
            base_model: self.base_model.clone(),
            config: self.config.clone(),
        };
        let path = dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(&state).map_err(|e| checkpoint_err(&path, e))?;
        std::fs::write(&path, text).map_err(|e| TrainError::Io { path, source: e })
    }

    /// Continues from a checkpoint written by [`Trainer::save`], on the same base `model`.
    pub fn resume(model: TwinModel, dir: &Path) -> Result<Trainer> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Io {
            path: path.clone(),
            source: e,
        })?;
        let state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| checkpoint_err(&path, format!("invalid trainer state: {e}")))?;
        if state.format_version != STATE_VERSION {
            return Err(checkpoint_err(
                &path,
                format!(
                    "format version {} is not supported (this enact reads {STATE_VERSION})",
                    state.format_version
                ),
            ));
        }
        let mut t = Trainer::new(model, state.config, state.base_model)?;
        let weights = match t.config.trainable {
            Trainable::Lora(_) => dir.join("adapter_model.safetensors"),
            Trainable::Full => dir.join(FULL_WEIGHTS_FILE),
        };
        crate::checkpoint::load_vars(&weights, &t.vars)?;
        t.optimizer
            .load(&dir.join(OPTIMIZER_FILE), &t.vars, state.step)?;
        Ok(t)
    }
}

/// `(out, in)` of each projection of a model (all blocks have the same shapes).
pub fn lora_shape(model: &TwinModel) -> impl Fn(usize, Proj) -> (usize, usize) + use<> {
    let cfg = &model.cfg;
    let (d, qd, kvd, f) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.ffn);
    move |_, p| match p {
        Proj::Q => (qd, d),
        Proj::K | Proj::V => (kvd, d),
        Proj::O => (d, qd),
        Proj::Gate | Proj::Up => (f, d),
        Proj::Down => (d, f),
    }
}

/// Heads whose q/k rows are in the interleaved (GGUF llama) layout.
pub fn lora_rope_rows(model: &TwinModel) -> HashMap<Proj, usize> {
    let mut m = HashMap::new();
    if model.cfg.rope == enact_candle::RopeStyle::Interleaved {
        m.insert(Proj::Q, model.cfg.n_heads);
        m.insert(Proj::K, model.cfg.n_kv_heads);
    }
    m
}

/// Groups of sample indices whose tokens fit `budget` (in order; an oversized sequence
/// alone).
fn micro_batches(batch: &[TrainSample], budget: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    for (i, s) in batch.iter().enumerate() {
        let n = s.sequence.tokens.len();
        if !cur.is_empty() && used + n > budget {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        cur.push(i);
        used += n;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

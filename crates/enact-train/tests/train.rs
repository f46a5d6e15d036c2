//! Training behaviour: LoRA and full training learn, base weights stay frozen, PEFT files,
//! exact resume, micro-batch accumulation, loss masks from trajectories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use candle_core::{DType, Tensor};
use enact_train::loss::PpoConfig;
use enact_train::{
    AdamWConfig, Aggregation, LoraConfig, Objective, Proj, TrainConfig, TrainSample, TrainSequence,
    Trainable, Trainer, TwinModel, grpo_advantages,
};
use support::*;

fn lora(targets: &[Proj]) -> Trainable {
    Trainable::Lora(LoraConfig {
        r: 4,
        alpha: 8.0,
        targets: targets.to_vec(),
        seed: 7,
    })
}

fn config(trainable: Trainable, lr: f64) -> TrainConfig {
    TrainConfig {
        trainable,
        objective: Objective::Sft,
        aggregation: Aggregation::TokenMean,
        optimizer: AdamWConfig {
            lr,
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
        max_grad_norm: 1.0,
        micro_batch_tokens: 64,
    }
}

fn batch(model: &TwinModel) -> Vec<TrainSample> {
    (0..4)
        .map(|k| {
            let t = trajectory(
                &tokens(6, k),
                &[&tokens(8, k + 10), &tokens(5, k + 20)],
                &tokens(3, 99),
                &[],
            );
            TrainSample::new(on_policy(model, TrainSequence::main_line(&t).unwrap()), 1.0)
        })
        .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn lora_sft_lowers_the_loss_and_leaves_the_base_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let model = twin(&tiny_gguf(dir.path(), arch, 1), DType::F32);
        let b = batch(&model);
        let base_q = values(&model.layers[0].w[Proj::Q as usize]);
        let base_embed = values(&model.embed);
        let mut tr = Trainer::new(model, config(lora(&Proj::ALL), 1e-2), "tiny").unwrap();
        let first = tr.step(&b).unwrap();
        // At step 0 B = 0: the policy is the base, which recorded the behaviour logprobs.
        assert!(first.logprob_mismatch_max < 1e-4, "{first:?}");
        let mut last = first.clone();
        for _ in 0..15 {
            last = tr.step(&b).unwrap();
        }
        eprintln!("{arch}: LoRA SFT loss {} → {}", first.loss, last.loss);
        assert!(last.loss < first.loss * 0.9, "{arch}: {first:?} → {last:?}");
        assert_eq!(last.step, 16);
        assert!(
            last.logprob_mismatch_mean > 0.0,
            "the policy moved away from the recording"
        );
        assert_eq!(values(&tr.model().layers[0].w[Proj::Q as usize]), base_q);
        assert_eq!(values(&tr.model().embed), base_embed);
    }
}

#[test]
fn full_training_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let model = twin(&tiny_gguf(dir.path(), "qwen2", 1), DType::F32);
    let b = batch(&model);
    let mut tr = Trainer::new(model, config(Trainable::Full, 3e-3), "tiny").unwrap();
    let first = tr.step(&b).unwrap();
    let mut last = first.clone();
    for _ in 0..10 {
        last = tr.step(&b).unwrap();
    }
    eprintln!("full SFT loss {} → {}", first.loss, last.loss);
    assert!(last.loss < first.loss * 0.8, "{first:?} → {last:?}");
    assert!(first.grad_norm > 0.0 && first.entropy > 0.0);
}

#[test]
fn peft_adapter_files_have_peft_names_shapes_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let model = twin(&tiny_gguf(dir.path(), "qwen3", 1), DType::F32);
    let b = batch(&model);
    let mut tr = Trainer::new(
        model,
        config(lora(&[Proj::Q, Proj::V, Proj::Down]), 1e-2),
        "tiny/qwen3",
    )
    .unwrap();
    tr.step(&b).unwrap();
    let out = dir.path().join("ckpt");
    tr.save(&out).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(cfg["base_model_name_or_path"], "tiny/qwen3");
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    let t = candle_core::safetensors::load(
        out.join("adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    use support::common::{D, FFN, HEADS, KV_HEADS, LAYERS, head_dim};
    let hd = head_dim("qwen3");
    assert_eq!(t.len(), LAYERS * 3 * 2);
    let shape = |k: &str| t[k].dims().to_vec();
    for i in 0..LAYERS {
        let k = |m: &str, w: &str| format!("base_model.model.model.layers.{i}.{m}.{w}.weight");
        assert_eq!(shape(&k("self_attn.q_proj", "lora_A")), vec![4, D]);
        assert_eq!(shape(&k("self_attn.q_proj", "lora_B")), vec![HEADS * hd, 4]);
        assert_eq!(shape(&k("self_attn.v_proj", "lora_A")), vec![4, D]);
        assert_eq!(
            shape(&k("self_attn.v_proj", "lora_B")),
            vec![KV_HEADS * hd, 4]
        );
        assert_eq!(shape(&k("mlp.down_proj", "lora_A")), vec![4, FFN]);
        assert_eq!(shape(&k("mlp.down_proj", "lora_B")), vec![D, 4]);
    }
    assert!(out.join("optimizer.safetensors").exists());
    assert!(out.join("trainer_state.json").exists());
}

/// GGUF llama keeps q/k rows permuted for interleaved rotary pairs; the adapter written
/// from it must be the Hugging Face layout, so that it means the same on the safetensors
/// (Hugging Face) copy of the same model.
#[test]
fn gguf_llama_adapter_means_the_same_on_the_hugging_face_model() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = twin(&tiny_gguf(dir.path(), "llama", 6), DType::F32);
    let st_path = support::common::write_safetensors(&dir.path().join("st"), "llama", false, 6);
    let mut hf = twin(&st_path, DType::F32);
    let b = batch(&gguf);
    let mut tr = Trainer::new(
        gguf,
        config(lora(&[Proj::Q, Proj::K, Proj::O]), 2e-2),
        "tiny",
    )
    .unwrap();
    for _ in 0..5 {
        tr.step(&b).unwrap();
    }
    let out = dir.path().join("ckpt");
    tr.save(&out).unwrap();
    hf.adapters = Some(
        enact_train::Adapters::load_peft(
            &out,
            hf.cfg.n_layers,
            enact_train::trainer::lora_shape(&hf),
            enact_train::trainer::lora_rope_rows(&hf),
            DType::F32,
        )
        .unwrap(),
    );
    let seqs: Vec<Vec<u32>> = (0..3).map(|k| tokens(20, k)).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let base_gguf = tr.model().score(&refs, false).unwrap();
    let base_hf = hf.score(&refs, false).unwrap();
    let tuned_gguf = tr.model().score(&refs, true).unwrap();
    let tuned_hf = hf.score(&refs, true).unwrap();
    for k in 0..3 {
        assert!(max_abs_diff(&base_gguf[k], &base_hf[k]) < 1e-4);
        assert!(
            max_abs_diff(&tuned_gguf[k], &base_gguf[k]) > 1e-3,
            "the adapter changes the model"
        );
        let d = max_abs_diff(&tuned_gguf[k], &tuned_hf[k]);
        assert!(d < 1e-4, "adapter differs between layouts by {d}");
    }
}

fn same_vars(a: &Trainer, b: &Trainer) {
    assert_eq!(a.vars().len(), b.vars().len());
    for (x, y) in a.vars().iter().zip(b.vars()) {
        assert_eq!(x.name, y.name);
        assert_eq!(
            values(x.var.as_tensor()),
            values(y.var.as_tensor()),
            "{}",
            x.name
        );
    }
}

#[test]
fn resume_continues_exactly_like_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_gguf(dir.path(), "llama", 2);
    for trainable in [lora(&[Proj::Q, Proj::K, Proj::Up]), Trainable::Full] {
        let model = twin(&path, DType::F32);
        let b = batch(&model);
        let cfg = config(trainable.clone(), 1e-2);
        let mut straight = Trainer::new(twin(&path, DType::F32), cfg.clone(), "tiny").unwrap();
        let mut first = Trainer::new(model, cfg, "tiny").unwrap();
        for _ in 0..3 {
            straight.step(&b).unwrap();
            first.step(&b).unwrap();
        }
        let ckpt = dir.path().join("ckpt");
        first.save(&ckpt).unwrap();
        drop(first);
        let mut resumed = Trainer::resume(twin(&path, DType::F32), &ckpt).unwrap();
        assert_eq!(resumed.step_count(), 3);
        same_vars(&straight, &resumed);
        for _ in 0..2 {
            let a = straight.step(&b).unwrap();
            let r = resumed.step(&b).unwrap();
            assert_eq!(a, r, "{trainable:?}");
        }
        same_vars(&straight, &resumed);
        std::fs::remove_dir_all(&ckpt).unwrap();
    }
}

#[test]
fn micro_batch_split_does_not_change_the_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_gguf(dir.path(), "qwen3", 3);
    for agg in [
        Aggregation::SequenceMean,
        Aggregation::TokenMean,
        Aggregation::ConstantNorm(32),
    ] {
        let mut trainers: Vec<Trainer> = [20usize, 10_000]
            .into_iter()
            .map(|mb| {
                let cfg = TrainConfig {
                    micro_batch_tokens: mb,
                    aggregation: agg,
                    ..config(lora(&Proj::ALL), 1e-2)
                };
                Trainer::new(twin(&path, DType::F32), cfg, "tiny").unwrap()
            })
            .collect();
        let b = batch(trainers[0].model());
        let m0 = trainers[0].step(&b).unwrap();
        let m1 = trainers[1].step(&b).unwrap();
        assert!(
            (m0.loss - m1.loss).abs() < 1e-5,
            "{agg:?}: {} vs {}",
            m0.loss,
            m1.loss
        );
        assert!((m0.grad_norm - m1.grad_norm).abs() < 1e-5 * m1.grad_norm.max(1.0));
        for (x, y) in trainers[0].vars().iter().zip(trainers[1].vars()) {
            let d = max_abs_diff(&values(x.var.as_tensor()), &values(y.var.as_tensor()));
            assert!(d < 1e-5, "{agg:?} {}: {d}", x.name);
        }
    }
}

#[test]
fn forced_and_observation_tokens_carry_no_loss() {
    let dir = tempfile::tempdir().unwrap();
    let model = twin(&tiny_gguf(dir.path(), "qwen2", 4), DType::F64);
    let (p, s1, s2, obs, forced) = (
        tokens(4, 1),
        tokens(5, 2),
        tokens(3, 3),
        tokens(4, 4),
        tokens(2, 5),
    );
    let with_forced =
        TrainSequence::main_line(&trajectory(&p, &[&s1, &s2], &obs, &forced)).unwrap();
    // prompt 4, sampled 5, observation 4, sampled 3, forced 2.
    let mask: Vec<bool> = [
        vec![false; 4],
        vec![true; 5],
        vec![false; 4],
        vec![true; 3],
        vec![false; 2],
    ]
    .concat();
    assert_eq!(with_forced.loss_mask, mask);
    let without = TrainSequence::main_line(&trajectory(&p, &[&s1, &s2], &obs, &[])).unwrap();
    let cfg = TrainConfig {
        trainable: Trainable::Full,
        ..config(Trainable::Full, 1e-3)
    };
    let tr = Trainer::new(model, cfg, "tiny").unwrap();
    // The loss is the mean negative logprob of the sampled tokens only.
    let lp = tr
        .model()
        .score(&[&with_forced.tokens], true)
        .unwrap()
        .remove(0);
    let want: f64 = -mask
        .iter()
        .zip(&lp)
        .filter(|(m, _)| **m)
        .map(|(_, l)| f64::from(*l))
        .sum::<f64>()
        / 8.0;
    let (g_forced, m) = tr.gradients(&[TrainSample::new(with_forced, 0.0)]).unwrap();
    assert_eq!(m.loss_tokens, 8);
    assert!((m.loss - want).abs() < 1e-6, "{} vs {want}", m.loss);
    // Trailing forced tokens change nothing: no loss on them, and nothing after them.
    let (g_plain, _) = tr.gradients(&[TrainSample::new(without, 0.0)]).unwrap();
    for (a, b) in g_forced.iter().zip(&g_plain) {
        assert!(max_abs_diff(&values(a), &values(b)) < 1e-12);
    }
}

#[test]
fn text_level_trajectories_are_refused() {
    let mut t = trajectory(&tokens(3, 1), &[&tokens(3, 2)], &[], &[]);
    t.token_exact = false;
    let err = TrainSequence::main_line(&t).unwrap_err().to_string();
    assert!(err.contains("not token-exact"), "{err}");
}

#[test]
fn grpo_step_reports_kl_entropy_and_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_gguf(dir.path(), "qwen3", 8);
    let model = twin(&path, DType::F32);
    // Behaviour logprobs recorded by the inference engine itself.
    let engine = enact_candle::Engine::load(
        &path,
        &enact_candle::EngineOptions {
            threads: 1,
            weights: enact_candle::WeightFormat::F32,
        },
    )
    .unwrap();
    let rewards = [1.0, 0.0, 0.0, 1.0];
    let trajectories: Vec<_> = (0..4)
        .map(|k| trajectory(&tokens(6, 0), &[&tokens(7, k + 1)], &[], &tokens(1, 9)))
        .collect();
    let mut group = TrainSample::grpo_group(&trajectories, &rewards, true).unwrap();
    let adv = grpo_advantages(&rewards, true);
    for (s, a) in group.iter_mut().zip(&adv) {
        assert_eq!(s.advantage, *a);
        let seq = &mut s.sequence;
        let lp = engine.score(&seq.tokens).unwrap();
        for (i, m) in seq.loss_mask.iter().enumerate() {
            if *m {
                seq.behaviour_logprobs[i] = lp[i];
            }
        }
    }
    assert!(TrainSample::grpo_group(&trajectories, &rewards[..3], true).is_err());
    let cfg = TrainConfig {
        objective: Objective::Ppo(PpoConfig {
            kl_coef: 0.05,
            ..PpoConfig::default()
        }),
        aggregation: Aggregation::ConstantNorm(16),
        ..config(lora(&Proj::ALL), 1e-2)
    };
    let mut tr = Trainer::new(model, cfg, "tiny").unwrap();
    let m0 = tr.step(&group).unwrap();
    eprintln!("{m0:?}");
    assert_eq!(m0.kl, Some(0.0), "LoRA starts at the reference");
    assert!(
        m0.logprob_mismatch_max < 1e-4,
        "engine and twin agree: {m0:?}"
    );
    assert_eq!(m0.loss_tokens, 4 * 7);
    assert_eq!(m0.tokens, 4 * 14);
    assert!(m0.entropy > 0.0 && m0.grad_norm > 0.0);
    let m1 = tr.step(&group).unwrap();
    assert!(m1.kl.unwrap() > 0.0, "{m1:?}");
    assert!(m1.logprob_mismatch_mean > 0.0);
}

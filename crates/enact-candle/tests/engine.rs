//! Hermetic engine tests on tiny random models (GGUF and safetensors, llama/qwen2/qwen3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{PROMPT, gguf, opts, request, sampling};

use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use enact_candle::{
    CandlePolicy, Engine, EngineError, EngineOptions, PolicyOptions, SeqInput, WeightFormat, fetch,
};
use enact_core::{FinishReason, Policy, SampleRequest};

const ARCHS: [&str; 3] = ["llama", "qwen2", "qwen3"];

/// Logits of every position: one full pass, token by token, and in two chunks.
fn check_cache_equivalence(e: &Engine) {
    let v = e.model().cfg.vocab;
    let mut full_cache = e.new_cache();
    let full = e
        .forward(&mut [SeqInput {
            cache: &mut full_cache,
            tokens: &PROMPT,
            all_logits: true,
        }])
        .pop()
        .unwrap();
    assert_eq!(full.len(), PROMPT.len() * v);
    let mut cache = e.new_cache();
    for (i, t) in PROMPT.iter().enumerate() {
        let l = e
            .forward(&mut [SeqInput {
                cache: &mut cache,
                tokens: std::slice::from_ref(t),
                all_logits: false,
            }])
            .pop()
            .unwrap();
        assert_eq!(
            &l[..],
            &full[i * v..(i + 1) * v],
            "incremental position {i}"
        );
    }
    let mut cache = e.new_cache();
    let _ = e.forward(&mut [SeqInput {
        cache: &mut cache,
        tokens: &PROMPT[..5],
        all_logits: false,
    }]);
    let rest = e
        .forward(&mut [SeqInput {
            cache: &mut cache,
            tokens: &PROMPT[5..],
            all_logits: true,
        }])
        .pop()
        .unwrap();
    assert_eq!(&rest[..], &full[5 * v..]);
    assert_eq!(cache.tokens(), &PROMPT);
    assert!(full.iter().all(|x| x.is_finite()));
}

#[test]
fn kv_cache_decoding_equals_full_forward_for_every_arch_and_format() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        for dtype in [GgmlDType::F32, GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let p = gguf(dir.path(), arch, dtype);
            for (w, threads) in [(WeightFormat::Native, 1), (WeightFormat::Q8_0, 2)] {
                let e = Engine::load(&p, &opts(w, threads)).unwrap();
                assert_eq!(e.model().cfg.arch.name(), arch);
                check_cache_equivalence(&e);
            }
        }
        let st = common::write_safetensors(&dir.path().join(format!("st-{arch}")), arch, false, 42);
        let e = Engine::load(&st, &opts(WeightFormat::F32, 2)).unwrap();
        check_cache_equivalence(&e);
    }
}

#[test]
fn gguf_and_safetensors_of_the_same_weights_agree() {
    // Checks the rotary conventions: GGUF llama (interleaved, q/k permuted as llama.cpp's
    // converter does) and Qwen (half-split) against Hugging Face safetensors.
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let g = Engine::load(
            &gguf(dir.path(), arch, GgmlDType::F32),
            &opts(WeightFormat::F32, 1),
        )
        .unwrap();
        let st = common::write_safetensors(&dir.path().join(format!("st-{arch}")), arch, false, 42);
        let s = Engine::load(&st, &opts(WeightFormat::F32, 1)).unwrap();
        let bf = common::write_safetensors(&dir.path().join(format!("bf-{arch}")), arch, true, 42);
        let b = Engine::load(&bf, &opts(WeightFormat::Native, 1)).unwrap();
        let logits = |e: &Engine| {
            let mut c = e.new_cache();
            e.forward(&mut [SeqInput {
                cache: &mut c,
                tokens: &PROMPT,
                all_logits: true,
            }])
            .pop()
            .unwrap()
        };
        let (lg, ls, lb) = (logits(&g), logits(&s), logits(&b));
        let max = lg
            .iter()
            .zip(&ls)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-3, "{arch}: gguf vs safetensors differ by {max}");
        let maxb = ls
            .iter()
            .zip(&lb)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(maxb < 0.5, "{arch}: bf16 differs by {maxb}");
    }
}

#[test]
fn batch_generation_equals_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "qwen2", GgmlDType::Q8_0);
    let e = Engine::load(&p, &opts(WeightFormat::Native, 2)).unwrap();
    let reqs = vec![
        request(&PROMPT, 20, sampling(0.9, 1)),
        request(&PROMPT[..4], 7, sampling(0.0, 2)),
        request(&[5, 6, 7, 8, 9, 10, 11], 15, sampling(1.2, 3)),
    ];
    let batch = e.generate_batch(&reqs).unwrap();
    for (r, b) in reqs.iter().zip(&batch) {
        let one = e.generate(r).unwrap();
        assert_eq!(&one, b);
        assert_eq!(b.tokens.len(), r.max_tokens);
        assert_eq!(b.finish, FinishReason::Length);
    }
}

#[test]
fn sampling_parameters_behave() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "llama", GgmlDType::Q8_0);
    let e = Engine::load(&p, &opts(WeightFormat::Native, 1)).unwrap();
    // Seeded determinism.
    let a = e.generate(&request(&PROMPT, 24, sampling(1.0, 7))).unwrap();
    let b = e.generate(&request(&PROMPT, 24, sampling(1.0, 7))).unwrap();
    assert_eq!(a, b);
    let others: Vec<_> = (8..12)
        .map(|s| {
            e.generate(&request(&PROMPT, 24, sampling(1.0, s)))
                .unwrap()
                .tokens
        })
        .collect();
    assert!(
        others.iter().any(|t| *t != a.tokens),
        "seeds make no difference"
    );
    // top-k = 1 is greedy, whatever the temperature.
    let greedy = e.generate(&request(&PROMPT, 16, sampling(0.0, 1))).unwrap();
    let mut p1 = sampling(1.5, 99);
    p1.top_k = 1;
    let k1 = e.generate(&request(&PROMPT, 16, p1)).unwrap();
    assert_eq!(greedy.tokens, k1.tokens);
    // min-p close to 1 keeps only the most likely token: also greedy.
    let mut mp = sampling(1.0, 5);
    mp.min_p = 0.9999;
    mp.top_p = 1.0;
    assert_eq!(
        e.generate(&request(&PROMPT, 16, mp)).unwrap().tokens,
        greedy.tokens
    );
    // Stop tokens end generation and are included.
    let stop = greedy.tokens[3];
    let mut r = request(&PROMPT, 16, sampling(0.0, 1));
    r.stop_tokens = vec![stop];
    let s = e.generate(&r).unwrap();
    let at = greedy.tokens.iter().position(|&t| t == stop).unwrap();
    assert_eq!(s.tokens, greedy.tokens[..=at]);
    assert_eq!(s.finish, FinishReason::StopToken(stop));
    // Zero max tokens gives nothing.
    let z = e.generate(&request(&PROMPT, 0, sampling(0.0, 1))).unwrap();
    assert!(z.tokens.is_empty());
    assert_eq!(z.finish, FinishReason::Length);
}

#[test]
fn score_reproduces_sampled_logprobs_exactly() {
    // At temperature 1 without truncation the sampling distribution is the raw model's.
    let dir = tempfile::tempdir().unwrap();
    for (arch, dtype) in [("llama", GgmlDType::Q4_1), ("qwen3", GgmlDType::Q8_0)] {
        let p = gguf(dir.path(), arch, dtype);
        let e = Engine::load(&p, &opts(WeightFormat::Native, 2)).unwrap();
        let s = e
            .generate(&request(&PROMPT, 30, common::raw_sampling(3)))
            .unwrap();
        let mut all = PROMPT.to_vec();
        all.extend(&s.tokens);
        let scored = e.score(&all).unwrap();
        assert_eq!(scored.len(), all.len());
        assert_eq!(scored[0], 0.0);
        // Bit-identical: same kernels, same order per token (tolerance 0).
        assert_eq!(&scored[PROMPT.len()..], &s.logprobs[..], "{arch}");
        assert!(s.logprobs.iter().all(|l| *l <= 0.0 && l.is_finite()));
        // Greedy decoding records the raw model's logprob too.
        let g = e.generate(&request(&PROMPT, 12, sampling(0.0, 1))).unwrap();
        let mut all = PROMPT.to_vec();
        all.extend(&g.tokens);
        assert_eq!(&e.score(&all).unwrap()[PROMPT.len()..], &g.logprobs[..]);
    }
}

/// Logits for every position of `tokens` (one pass).
fn all_logits(e: &Engine, tokens: &[u32]) -> Vec<f32> {
    let mut cache = e.new_cache();
    e.forward(&mut [SeqInput {
        cache: &mut cache,
        tokens,
        all_logits: true,
    }])
    .pop()
    .unwrap()
}

#[test]
fn recorded_logprobs_are_those_of_the_sampling_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "llama", GgmlDType::Q8_0);
    let e = Engine::load(&p, &opts(WeightFormat::Native, 1)).unwrap();
    let v = e.model().cfg.vocab;
    // top-k only: checked against an independent renormalised softmax at temperature T.
    let mut top_k = sampling(0.8, 3);
    top_k.top_k = 20;
    top_k.top_p = 1.0;
    // Every truncation at once: checked against `sampling_logprob` on the same logits.
    let mut mixed = sampling(0.7, 4);
    mixed.top_k = 30;
    mixed.min_p = 0.02;
    for params in [top_k.clone(), mixed] {
        let s = e.generate(&request(&PROMPT, 24, params.clone())).unwrap();
        let mut all = PROMPT.to_vec();
        all.extend(&s.tokens);
        let logits = all_logits(&e, &all[..all.len() - 1]);
        for (j, (&tok, &lp)) in s.tokens.iter().zip(&s.logprobs).enumerate() {
            let at = PROMPT.len() - 1 + j;
            let l = &logits[at * v..(at + 1) * v];
            assert_eq!(lp, enact_candle::sample::sampling_logprob(l, &params, tok));
            if params.top_k == 20 {
                let mut sorted: Vec<f32> = l.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let t = f64::from(params.temperature);
                let lse = sorted[..20]
                    .iter()
                    .map(|&x| (f64::from(x) / t).exp())
                    .sum::<f64>()
                    .ln();
                let expected = f64::from(l[tok as usize]) / t - lse;
                assert!(
                    (f64::from(lp) - expected).abs() < 1e-4,
                    "{lp} vs {expected}"
                );
            }
        }
        // And it is not the raw model's, which `score` keeps returning.
        let scored = e.score(&all).unwrap();
        assert_ne!(&scored[PROMPT.len()..], &s.logprobs[..]);
    }
}

#[test]
fn prefix_reuse_only_computes_the_new_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "qwen2", GgmlDType::Q8_0);
    let e = Engine::load(&p, &opts(WeightFormat::Native, 1)).unwrap();
    let mut cache = e.new_cache();
    let r1 = request(&PROMPT, 8, sampling(0.7, 11));
    let (s1, st1) = e
        .generate_with(&mut [(&mut cache, &r1)])
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(st1.prefilled_tokens, PROMPT.len());
    // Next turn: context + sampled + an observation.
    let mut ctx2 = PROMPT.to_vec();
    ctx2.extend(&s1.tokens);
    ctx2.extend([4, 4, 4]);
    let r2 = request(&ctx2, 8, sampling(0.7, 12));
    let (s2, st2) = e
        .generate_with(&mut [(&mut cache, &r2)])
        .unwrap()
        .pop()
        .unwrap();
    // The cache held all but the last sampled token.
    assert_eq!(st2.prefilled_tokens, 1 + 3);
    let fresh = e.generate(&r2).unwrap();
    assert_eq!(fresh, s2);
    // A diverging context cuts the cache back to the common prefix.
    let mut ctx3 = PROMPT[..6].to_vec();
    ctx3.extend([1, 2, 3]);
    let r3 = request(&ctx3, 4, sampling(0.0, 1));
    let (s3, st3) = e
        .generate_with(&mut [(&mut cache, &r3)])
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(st3.prefilled_tokens, 3);
    assert_eq!(s3, e.generate(&r3).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_serves_concurrent_requests_and_tracks_versions() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "qwen3", GgmlDType::Q8_0);
    let reference = Engine::load(&p, &opts(WeightFormat::Native, 1)).unwrap();
    let policy = Arc::new(CandlePolicy::new(
        Engine::load(&p, &opts(WeightFormat::Native, 2)).unwrap(),
        PolicyOptions::default(),
    ));
    assert_eq!(policy.version(), 0);
    assert_eq!(policy.context_limit(), 256);
    let reqs: Vec<SampleRequest> = (0..6)
        .map(|i| request(&PROMPT[..6 + i], 10, sampling(0.9, i as u64)))
        .collect();
    let mut handles = Vec::new();
    for r in reqs.clone() {
        let pol = policy.clone();
        handles.push(tokio::spawn(async move { pol.sample(r).await }));
    }
    for (h, r) in handles.into_iter().zip(&reqs) {
        let got = h.await.unwrap().unwrap();
        assert_eq!(got, reference.generate(r).unwrap());
        assert_eq!(got.policy_versions, vec![0; got.tokens.len()]);
    }
    // Scoring through the worker (raw sampling: the logprobs are the raw model's).
    let raw = request(&PROMPT[..6], 10, common::raw_sampling(5));
    let s = policy.sample(raw.clone()).await.unwrap();
    let mut all = raw.context.to_vec();
    all.extend(&s.tokens);
    let scored = policy.score(Arc::new(all.clone())).await.unwrap();
    assert_eq!(&scored[raw.context.len()..], &s.logprobs[..]);
    // A bad request fails alone with a clear error.
    let bad = policy.sample(request(&[9999], 3, sampling(0.0, 1))).await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("outside the model's vocabulary")
    );
    let empty = policy.sample(request(&[], 3, sampling(0.0, 1))).await;
    assert!(empty.is_err());
    // Reloading weights bumps the version stamped on tokens.
    let v = policy
        .reload(Engine::load(&p, &opts(WeightFormat::Native, 1)).unwrap())
        .await
        .unwrap();
    assert_eq!(v, 1);
    let s = policy.sample(reqs[1].clone()).await.unwrap();
    assert_eq!(s.policy_versions, vec![1; s.tokens.len()]);
    let long = vec![1u32; 300];
    let err = policy.sample(request(&long, 3, sampling(0.0, 1))).await;
    assert!(matches!(
        err,
        Err(enact_core::PolicyError::ContextTooLong { .. })
    ));
}

#[test]
fn missing_corrupt_and_unknown_models_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let e = Engine::load(&missing, &EngineOptions::default())
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, EngineError::Missing { .. }));
    assert!(
        msg.contains("nope.gguf") && msg.contains("enact model fetch"),
        "{msg}"
    );

    // The default model's name gets the fetch hint.
    let msg = Engine::load(
        &dir.path().join(fetch::DEFAULT_MODEL_FILE),
        &EngineOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(msg.contains("run `enact model fetch`"), "{msg}");

    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"this is not a model at all").unwrap();
    let msg = Engine::load(&garbage, &EngineOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("garbage.gguf") && msg.contains("corrupt"),
        "{msg}"
    );

    // A truncated file (interrupted download).
    let good = gguf(dir.path(), "llama", GgmlDType::Q8_0);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let msg = Engine::load(&cut, &EngineOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("cut.gguf") && msg.contains("beyond the end"),
        "{msg}"
    );

    // A tensor offset near u64::MAX (a corrupt header) is an error, not an overflow.
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    let dims_at = at + name.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    let offset_at = dims_at + 4 + 8 * n_dims + 4;
    let mut far = bytes.clone();
    far[offset_at..offset_at + 8].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
    let far_path = dir.path().join("far.gguf");
    std::fs::write(&far_path, &far).unwrap();
    let msg = Engine::load(&far_path, &EngineOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("far.gguf"), "{msg}");

    // Unknown architecture: the error lists the supported ones.
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(text.contains("llama.block_count"));
    let mut renamed = bytes.clone();
    // "general.architecture" = "llama" → "gpt2x" (same length keeps offsets valid).
    let needle = b"\x05\x00\x00\x00\x00\x00\x00\x00llama";
    let at = renamed
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    renamed[at + 8..at + 13].copy_from_slice(b"gpt2x");
    let unk = dir.path().join("unknown.gguf");
    std::fs::write(&unk, &renamed).unwrap();
    let e = Engine::load(&unk, &EngineOptions::default()).err().unwrap();
    let msg = e.to_string();
    assert!(
        matches!(e, EngineError::UnknownArchitecture { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("gpt2x") && msg.contains("llama, qwen2, qwen3"),
        "{msg}"
    );

    // safetensors without config.json.
    let st = dir.path().join("lonely.safetensors");
    std::fs::write(&st, b"{}").unwrap();
    let msg = Engine::load(&st, &EngineOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn checksums_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join(fetch::DEFAULT_MODEL_FILE);
    std::fs::write(&fake, b"not the model").unwrap();
    let e = fetch::verify_default(&fake).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, EngineError::Checksum { .. }));
    assert!(
        msg.contains(fetch::DEFAULT_MODEL_FILE)
            && msg.contains(fetch::DEFAULT_MODEL_SHA256)
            && msg.contains("enact model fetch"),
        "{msg}"
    );
    // Zip extraction works on a real archive; a wrong member is named.
    let zpath = dir.path().join("w.zip");
    {
        let f = std::fs::File::create(&zpath).unwrap();
        let mut z = zip::ZipWriter::new(f);
        z.start_file("a/b.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut z, b"hello").unwrap();
        z.finish().unwrap();
    }
    let out = dir.path().join("b.txt");
    fetch::extract_member(&zpath, "a/b.txt", &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"hello");
    let msg = fetch::extract_member(&zpath, "missing", &out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing") && msg.contains("w.zip"), "{msg}");
}

#[test]
fn stop_strings_end_generation() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "llama", GgmlDType::Q8_0);
    let tok = Arc::new(enact_model::ByteTokenizer::new());
    let e = Engine::load(&p, &opts(WeightFormat::Native, 1))
        .unwrap()
        .with_tokenizer(tok.clone());
    let greedy = e.generate(&request(&PROMPT, 16, sampling(0.0, 1))).unwrap();
    let target = greedy.tokens[4];
    let stop = enact_core::Tokenizer::decode(tok.as_ref(), &[target]).unwrap();
    let mut r = request(&PROMPT, 16, sampling(0.0, 1));
    r.stop_strings = vec![stop.clone()];
    let s = e.generate(&r).unwrap();
    let at = greedy.tokens.iter().position(|&t| t == target).unwrap();
    assert_eq!(s.tokens, greedy.tokens[..=at]);
    assert_eq!(s.finish, FinishReason::StopString(stop));
}

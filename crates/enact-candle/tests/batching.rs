//! Continuous batching, per-token versions, in-process weight publishing and cancellation,
//! on tiny random models. Ordering is checked by step counts and token logs, never by time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use common::{PROMPT, gguf, opts, request, sampling};
use enact_candle::{
    Batch, CandlePolicy, Engine, KvOnPublish, PolicyOptions, SeqInput, WeightFormat, load_model,
    model_from_tensors,
};
use enact_core::{Policy, Sample, SampleRequest, TokenSink};

const LONG_PROMPT: [u32; 40] = [
    1, 9, 22, 31, 4, 5, 17, 60, 2, 8, 13, 21, 34, 55, 3, 7, 11, 19, 23, 29, 37, 41, 43, 47, 53, 59,
    61, 6, 10, 12, 14, 16, 18, 20, 24, 26, 28, 30, 32, 36,
];

fn engine(path: &Path) -> Engine {
    Engine::load(path, &opts(WeightFormat::Native, 1)).unwrap()
}

/// A sink that counts its tokens.
fn counter() -> (TokenSink, Arc<Mutex<Vec<u32>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (TokenSink::new(move |t| s.lock().unwrap().push(t)), seen)
}

fn with_sink(mut r: SampleRequest, sink: TokenSink) -> SampleRequest {
    r.on_token = Some(sink);
    r
}

#[test]
fn a_newcomer_joins_at_the_next_step_and_chunked_prefill_does_not_stall_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&gguf(dir.path(), "qwen2", GgmlDType::Q8_0));
    let mut batch = Batch::new(8);
    let (long_sink, long_seen) = counter();
    let long = batch
        .add(
            &e,
            with_sink(request(&PROMPT[..4], 100, sampling(0.0, 1)), long_sink),
            e.new_cache(),
        )
        .unwrap();
    for _ in 0..3 {
        assert!(batch.step(&e).is_empty());
    }
    assert_eq!(long_seen.lock().unwrap().len(), 3);
    // A 40-token prompt with chunks of 8: five steps of prefill, during each of which the
    // long sequence still gets its token.
    let (new_sink, new_seen) = counter();
    let newcomer = batch
        .add(
            &e,
            with_sink(request(&LONG_PROMPT, 4, sampling(0.0, 1)), new_sink),
            e.new_cache(),
        )
        .unwrap();
    for k in 1..=5 {
        assert!(batch.step(&e).is_empty());
        assert_eq!(long_seen.lock().unwrap().len(), 3 + k, "decoding stalled");
        let first = new_seen.lock().unwrap().len();
        assert_eq!(first, usize::from(k == 5), "step {k}");
    }
    // The newcomer finishes (4 tokens) while the long one runs on.
    let mut done = Vec::new();
    while done.is_empty() {
        done = batch.step(&e);
    }
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, newcomer);
    assert_eq!(done[0].sample.tokens, *new_seen.lock().unwrap());
    assert_eq!(done[0].stats.prefilled_tokens, LONG_PROMPT.len());
    assert_eq!(batch.ids().collect::<Vec<_>>(), vec![long]);
    assert_eq!(batch.steps(), 3 + 5 + 3);
    assert_eq!(long_seen.lock().unwrap().len(), 11);
}

#[test]
fn continuous_batching_equals_unbatched_generation() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&gguf(dir.path(), "llama", GgmlDType::Q4_1));
    let mut truncated = sampling(0.8, 21);
    truncated.top_k = 12;
    truncated.min_p = 0.02;
    let reqs = [
        request(&PROMPT, 30, sampling(0.0, 1)),
        request(&LONG_PROMPT, 12, sampling(0.9, 7)),
        request(&PROMPT[3..], 20, common::raw_sampling(8)),
        request(&LONG_PROMPT[5..30], 9, truncated),
        request(&PROMPT[..2], 15, sampling(0.0, 1)),
    ];
    // Staggered arrivals, small prefill chunks, and a cache left over from another context.
    let mut batch = Batch::new(5);
    let mut ids = Vec::new();
    let mut done = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let mut cache = e.new_cache();
        if i == 3 {
            let _ = e.forward(&mut [SeqInput {
                cache: &mut cache,
                tokens: &LONG_PROMPT[5..12],
                all_logits: false,
            }]);
        }
        ids.push(batch.add(&e, r.clone(), cache).unwrap());
        for _ in 0..i + 1 {
            done.extend(batch.step(&e));
        }
    }
    while !batch.is_empty() {
        done.extend(batch.step(&e));
    }
    assert_eq!(done.len(), reqs.len());
    for (id, r) in ids.iter().zip(&reqs) {
        let got = &done.iter().find(|f| f.id == *id).unwrap().sample;
        assert_eq!(got, &e.generate(r).unwrap());
    }
}

/// A sink that logs `(tag, token)` and, at its `pause_at`-th token, tells the test and waits
/// for its go-ahead: the worker thread stops at that token boundary meanwhile.
fn gated(
    tag: usize,
    log: Arc<Mutex<Vec<(usize, u32)>>>,
    pause_at: usize,
) -> (TokenSink, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (reached_tx, reached) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let gate = Mutex::new((reached_tx, go_rx));
    let count = Mutex::new(0usize);
    let sink = TokenSink::new(move |t| {
        log.lock().unwrap().push((tag, t));
        let mut n = count.lock().unwrap();
        *n += 1;
        if *n == pause_at {
            let g = gate.lock().unwrap();
            g.0.send(()).unwrap();
            g.1.recv().unwrap();
        }
    });
    (sink, reached, go)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_gets_its_tokens_before_a_long_generation_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "qwen3", GgmlDType::Q8_0);
    let reference = engine(&p);
    let policy = CandlePolicy::new(engine(&p), PolicyOptions::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sink, reached, go) = gated(0, log.clone(), 1);
    let long_req = request(&PROMPT, 150, sampling(0.9, 3));
    let long = policy.sample_with_stats(with_sink(long_req.clone(), sink));
    reached.recv().unwrap();
    // The long generation has one token; a newcomer arrives.
    let log2 = log.clone();
    let short_req = request(&PROMPT[2..9], 6, sampling(0.0, 1));
    let short = policy.sample_with_stats(with_sink(
        short_req.clone(),
        TokenSink::new(move |t| log2.lock().unwrap().push((1, t))),
    ));
    go.send(()).unwrap();
    let (short_sample, _) = short.await.unwrap();
    let (long_sample, _) = long.await.unwrap();
    let log = log.lock().unwrap().clone();
    // Step 1: long #1. Step 2 onwards: the newcomer's prompt and its first token together
    // with long #2, then one token each per step.
    let tags: Vec<usize> = log.iter().map(|&(tag, _)| tag).take(14).collect();
    assert_eq!(tags, [0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
    assert_eq!(log.len(), 150 + 6);
    // Batching changes nothing in what is generated.
    assert_eq!(short_sample, reference.generate(&short_req).unwrap());
    assert_eq!(long_sample, reference.generate(&long_req).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_token_sees_exactly_the_sampled_tokens_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "llama", GgmlDType::Q8_0);
    let policy = CandlePolicy::new(engine(&p), PolicyOptions::default());
    let mut pending = Vec::new();
    for i in 0..5u64 {
        let (sink, seen) = counter();
        let mut r = request(
            &LONG_PROMPT[i as usize..],
            10 + 5 * i as usize,
            sampling(1.1, i),
        );
        r.stop_tokens = vec![7];
        pending.push((policy.sample_with_stats(with_sink(r, sink)), seen));
    }
    for (fut, seen) in pending {
        let (s, _) = fut.await.unwrap();
        assert!(!s.tokens.is_empty());
        assert_eq!(*seen.lock().unwrap(), s.tokens);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_sample_future_frees_its_slot_at_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let p = gguf(dir.path(), "qwen2", GgmlDType::Q8_0);
    let reference = engine(&p);
    let policy = CandlePolicy::new(
        engine(&p),
        PolicyOptions {
            max_batch: 1,
            ..PolicyOptions::default()
        },
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sink, reached, go) = gated(0, log.clone(), 1);
    let long = policy.sample_with_stats(with_sink(request(&PROMPT, 200, sampling(0.0, 1)), sink));
    reached.recv().unwrap();
    drop(long);
    go.send(()).unwrap();
    // The only slot frees up: the next request runs, and the dropped one sampled no more.
    let r = request(&PROMPT[1..], 5, sampling(0.0, 1));
    let s = policy.sample(r.clone()).await.unwrap();
    assert_eq!(s, reference.generate(&r).unwrap());
    assert_eq!(log.lock().unwrap().len(), 1);
}

/// Greedy continuation by hand: the cache holds `ctx` minus its last token, computed by
/// `cached_by`; every later token is computed by `then`.
fn greedy_tail(cached_by: &Engine, then: &Engine, ctx: &[u32], n: usize) -> Vec<u32> {
    let mut cache = cached_by.new_cache();
    let (head, last) = ctx.split_at(ctx.len() - 1);
    let _ = cached_by.forward(&mut [SeqInput {
        cache: &mut cache,
        tokens: head,
        all_logits: false,
    }]);
    let mut next = last[0];
    let mut out = Vec::new();
    for _ in 0..n {
        let l = then
            .forward(&mut [SeqInput {
                cache: &mut cache,
                tokens: &[next],
                all_logits: false,
            }])
            .pop()
            .unwrap();
        next = (0..l.len())
            .max_by(|&a, &b| l[a].total_cmp(&l[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        out.push(next);
    }
    out
}

/// Two tiny GGUF models of `arch` with different weights (seeds 42 and 43).
fn old_and_new(dir: &Path, arch: &str) -> (PathBuf, PathBuf) {
    let new_path = dir.join("new.gguf");
    common::write_gguf(&new_path, arch, GgmlDType::Q8_0, 43);
    (gguf(dir, arch, GgmlDType::Q8_0), new_path)
}

/// Runs a 20-token greedy generation, publishes `model` after its 5th token, and returns it.
async fn generate_across_a_publish(
    policy: &CandlePolicy,
    publish: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send>>,
) -> Sample {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sink, reached, go) = gated(0, log, 5);
    let fut = policy.sample_with_stats(with_sink(request(&PROMPT, 20, sampling(0.0, 1)), sink));
    reached.recv().unwrap();
    let published = publish();
    go.send(()).unwrap();
    assert_eq!(published.await, 1);
    assert_eq!(policy.version(), 1);
    fut.await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_switches_versions_mid_sequence_and_keeps_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (old_path, new_path) = old_and_new(dir.path(), "llama");
    let (old, new) = (engine(&old_path), engine(&new_path));
    let policy = CandlePolicy::new(engine(&old_path), PolicyOptions::default());
    let (model, _) = load_model(&new_path, WeightFormat::Native).unwrap();
    let s = generate_across_a_publish(&policy, || {
        let f = policy.publish_weights(model, KvOnPublish::Keep);
        Box::pin(async move { f.await.unwrap() })
    })
    .await;
    let mut versions = vec![0; 5];
    versions.extend([1; 15]);
    assert_eq!(s.policy_versions, versions);
    let before = old
        .generate(&request(&PROMPT, 5, sampling(0.0, 1)))
        .unwrap();
    assert_eq!(s.tokens[..5], before.tokens[..]);
    // Keys and values of the context and tokens 1-4 stay those of the old weights.
    let mut ctx = PROMPT.to_vec();
    ctx.extend(&s.tokens[..5]);
    assert_eq!(s.tokens[5..], greedy_tail(&old, &new, &ctx, 15));
    assert_ne!(
        s.tokens[5..],
        old.generate(&request(&PROMPT, 20, sampling(0.0, 1)))
            .unwrap()
            .tokens[5..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_with_recompute_continues_under_the_new_weights_only() {
    let dir = tempfile::tempdir().unwrap();
    let (old_path, new_path) = old_and_new(dir.path(), "qwen2");
    let new = engine(&new_path);
    let policy = CandlePolicy::new(
        engine(&old_path),
        PolicyOptions {
            prefill_chunk: 4,
            ..PolicyOptions::default()
        },
    );
    let (model, _) = load_model(&new_path, WeightFormat::Native).unwrap();
    let s = generate_across_a_publish(&policy, || {
        let f = policy.publish_weights(model, KvOnPublish::Recompute);
        Box::pin(async move { f.await.unwrap() })
    })
    .await;
    assert_eq!(s.policy_versions[4..6], [0, 1]);
    let mut ctx = PROMPT.to_vec();
    ctx.extend(&s.tokens[..5]);
    let fresh = new.generate(&request(&ctx, 15, sampling(0.0, 1))).unwrap();
    assert_eq!(s.tokens[5..], fresh.tokens[..]);
    assert_eq!(s.logprobs[5..], fresh.logprobs[..]);
}

/// The tiny model's weights as Hugging Face tensors.
fn hf_tensors(arch: &str, seed: u64) -> std::collections::HashMap<String, Tensor> {
    common::weights(arch, seed)
        .into_iter()
        .map(|(name, shape, data)| (name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_tensors_compute_the_same_function_in_the_running_layout() {
    // Publishing a GGUF model's own weights as Hugging Face tensors changes the version and
    // nothing else: this checks the rotary permutation (llama) and biases (qwen2).
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen2"] {
        let p = gguf(dir.path(), arch, GgmlDType::F32);
        let reference = engine(&p);
        let policy = CandlePolicy::new(engine(&p), PolicyOptions::default());
        let model = model_from_tensors(&policy.weight_layout(), &hf_tensors(arch, 42)).unwrap();
        let s = generate_across_a_publish(&policy, || {
            let f = policy.publish_weights(model, KvOnPublish::Keep);
            Box::pin(async move { f.await.unwrap() })
        })
        .await;
        let want = reference
            .generate(&request(&PROMPT, 20, sampling(0.0, 1)))
            .unwrap();
        assert_eq!(s.tokens, want.tokens, "{arch}");
        assert_eq!(s.logprobs, want.logprobs, "{arch}");
        // The same through `publish_tensors`, which builds the model off the worker thread.
        let v = policy
            .publish_tensors(hf_tensors(arch, 42), KvOnPublish::Keep)
            .await
            .unwrap();
        assert_eq!(v, 2);
        let again = policy
            .sample(request(&PROMPT, 20, sampling(0.0, 1)))
            .await
            .unwrap();
        assert_eq!(again.tokens, want.tokens, "{arch}");
        assert_eq!(again.policy_versions, vec![2; 20]);
        // Missing or misshapen tensors are refused and the version stays.
        let mut partial = hf_tensors(arch, 42);
        partial.remove("model.layers.1.mlp.up_proj.weight");
        let err = policy
            .publish_tensors(partial, KvOnPublish::Keep)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
        let other = hf_tensors("qwen3", 42);
        let err = policy
            .publish_tensors(other, KvOnPublish::Keep)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected"), "{err}");
        assert_eq!(policy.version(), 2);
    }
}

//! The scripted policy's replay cost as a turn grows.
//!
//! Replays one turn of N bytes (no stop string in it, so every position is checked) with
//! `ScriptedPolicy`, side by side with the baseline it replaced: decoding every prefix of
//! the turn and testing whether it ends with a stop string. Prints both times and their
//! ratio per size; the baseline grows with N², the policy with N.
//!
//! `cargo run -p enact-model --example scripted_replay`

#![allow(clippy::expect_used)] // fixed inputs: a failure is a broken benchmark

use std::sync::Arc;
use std::time::Instant;

use enact_core::{Policy, SampleRequest, SamplingParams, Tokenizer};
use enact_model::{ByteTokenizer, ScriptedPolicy};

/// What the policy did before: decode every prefix.
fn baseline(tok: &dyn Tokenizer, text: &str, stops: &[String]) -> Option<usize> {
    let tokens = tok.encode(text).expect("encode");
    (1..=tokens.len()).find(|&end| {
        let so_far = tok.decode(&tokens[..end]).expect("decode");
        stops.iter().any(|s| so_far.ends_with(s.as_str()))
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tok: Arc<dyn Tokenizer> = Arc::new(ByteTokenizer::new());
    let stops = vec!["</tool_call>".to_string(), "\n\nUser:".to_string()];
    println!(
        "{:>9}  {:>12}  {:>12}  {:>7}",
        "bytes", "baseline ms", "policy ms", "ratio"
    );
    for n in [4_096usize, 16_384, 32_768] {
        let turn = "a".repeat(n);
        let t = Instant::now();
        let found = baseline(tok.as_ref(), &turn, &stops);
        let base = t.elapsed().as_secs_f64() * 1e3;
        let policy = ScriptedPolicy::new(vec![turn.clone()], tok.clone());
        let t = Instant::now();
        let sample = policy
            .sample(SampleRequest {
                context: Arc::new(vec![0]),
                max_tokens: n + 1,
                stop_tokens: vec![],
                stop_strings: stops.clone(),
                params: SamplingParams::default(),
                on_token: None,
            })
            .await
            .expect("sample");
        let now = t.elapsed().as_secs_f64() * 1e3;
        assert!(found.is_none() && sample.tokens.len() == n);
        println!(
            "{n:>9}  {base:>12.1}  {now:>12.1}  {:>6.0}x",
            base / now.max(1e-6)
        );
    }
}

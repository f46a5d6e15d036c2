//! `enact template render` and `enact tokenize` end to end (hermetic: the Qwen3 template fixture
//! of enact-model; the tokenizer case skips without the default model).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn enact() -> Command {
    Command::new(env!("CARGO_BIN_EXE_enact"))
}

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../enact-model/tests/fixtures")
        .join(p)
}

#[test]
fn template_render_matches_the_golden_fixture() {
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("template_cases.json")).unwrap())
            .unwrap();
    let case = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["template"] == "qwen3" && c["name"] == "parallel_tool_calls")
        .unwrap();
    let dir = std::env::temp_dir().join(format!("enact-template-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("m.json"), case["messages"].to_string()).unwrap();
    std::fs::write(dir.join("t.json"), case["tools"].to_string()).unwrap();
    let out = enact()
        .args([
            "template",
            "render",
            "--add-generation-prompt",
            "--messages",
        ])
        .arg(dir.join("m.json"))
        .arg("--tools")
        .arg(dir.join("t.json"))
        .arg("--template")
        .arg(fixture("templates/qwen3.jinja"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        case["expected"].as_str().unwrap()
    );

    // A template error names the line.
    std::fs::write(dir.join("bad.jinja"), "ok\n{{ raise_exception('nope') }}\n").unwrap();
    let out = enact()
        .args(["template", "render", "--messages"])
        .arg(dir.join("m.json"))
        .arg("--template")
        .arg(dir.join("bad.jinja"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("line 2"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenize_prints_ids_and_decodes() {
    let Some(model) = enact_model::default_model_path().filter(|p| p.is_file()) else {
        enact_testkit::skip(
            enact_testkit::Requirement::Model,
            "the default model is not downloaded (run `enact model fetch`)",
        );
        return;
    };
    let out = enact()
        .args(["tokenize", "--model"])
        .arg(&model)
        .arg("Hello world 2024")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "[19556,905,216,34,32,34,36]"
    );
    let out = enact()
        .args(["tokenize", "--decode", "--model"])
        .arg(&model)
        .arg("[1, 28120, 2]")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "<|im_start|>hello<|im_end|>"
    );
}

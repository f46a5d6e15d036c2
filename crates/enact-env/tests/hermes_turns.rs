//! Scripted turns (reference solutions, red-team scripts) must be exactly what the chat
//! template renders for the message the Hermes parser reads from them; otherwise a replayed
//! conversation differs from the sampled tokens (training on text the model never wrote).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enact_core::{ChatTemplate, Message, RenderOptions, ReplyParser};
use enact_model::chatml::hermes_call_turn;
use enact_model::{ChatMlTemplate, HermesParser, JinjaTemplate};
use serde_json::json;

fn templates() -> Vec<Box<dyn ChatTemplate>> {
    let qwen3 = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../enact-model/tests/fixtures/templates/qwen3.jinja");
    vec![
        Box::new(ChatMlTemplate::default()),
        Box::new(JinjaTemplate::from_file(&qwen3).unwrap()),
    ]
}

/// Parses `turn` as a model reply and checks that every template renders it back verbatim.
fn assert_round_trips(turn: &str) {
    let parsed = HermesParser.parse(turn, 1);
    assert!(parsed.errors.is_empty(), "{turn}: {:?}", parsed.errors);
    let mut reply = Message::assistant(parsed.content);
    reply.reasoning = parsed.reasoning;
    reply.tool_calls = parsed.tool_calls;
    for t in templates() {
        let text = t
            .render(
                &[Message::user("go"), reply.clone()],
                &[],
                &RenderOptions::default(),
            )
            .unwrap();
        // Qwen3 opens a reasoning-less last turn with an empty think block; the turn itself
        // must follow verbatim.
        let want = format!("{turn}<|im_end|>");
        assert!(
            text.contains(&want),
            "{}: scripted turn\n{turn:?}\nrenders as\n{text:?}",
            t.name()
        );
    }
}

#[test]
fn a_scripted_call_with_floats_and_nested_arguments_renders_byte_for_byte() {
    let args = json!({
        "tolerance": 1e-05,
        "scale": 1.5e16,
        "options": {"tags": ["é", "x"], "limits": {"low": -0.0001, "high": 3}},
        "empty": {}
    });
    let turn = hermes_call_turn("I set a tight tolerance.", "configure", &args);
    assert!(turn.contains("\"tolerance\": 1e-05"), "{turn}");
    assert_round_trips(&turn);
    assert_round_trips(&hermes_call_turn("", "configure", &args));
}

#[test]
fn every_reference_solution_renders_byte_for_byte() {
    let mut checked = 0;
    for suite in enact_env::registry() {
        for task in suite.tasks("test", 3, 5) {
            for turn in suite.reference_solution(&task).unwrap_or_default() {
                if turn.contains("<tool_call>") {
                    assert_round_trips(&turn);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} scripted calls checked");
}

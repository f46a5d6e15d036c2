//! Thinking control through the binary on the embedded engine (a tiny random chat model
//! written as GGUF here): `--thinking budget:N` never lets a thought pass N sampled tokens and
//! closes it with exactly the stop-thinking text as forced tokens; `off` inserts nothing;
//! `adaptive` records a decision per turn; `--thinking-model` records which model sampled each
//! turn; bad modes are refused with the syntax.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use enact_core::{Episode, SegmentKind, Tokenizer};

#[path = "common/tiny_model.rs"]
mod tiny_model;
use tiny_model::{say_a_tasks, tiny_chat_model, tiny_eval};

mod common;

fn eval(dir: &Path, runs: &str, extra: &[&str]) -> Vec<Episode> {
    let out = tiny_eval(dir)
        .args([
            "-n",
            "3",
            "--max-turns",
            "2",
            "--max-tokens-per-turn",
            "40",
            "--temperature",
            "1.0",
            "--sample-seed",
            "5",
            "--runs-dir",
            runs,
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = common::only_run_dir(&dir.join(runs));
    std::fs::read_to_string(run.join("trajectories.jsonl"))
        .unwrap()
        .lines()
        .map(|l| Episode::from_json(l).unwrap())
        .collect()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny_chat_model(&dir.path().join("tiny.gguf"));
    say_a_tasks(&dir.path().join("tasks"), 0, 3);
    dir
}

fn forced(ep: &Episode, label: &str) -> Vec<Vec<u32>> {
    let t = &ep.trajectory;
    t.path(t.main_leaf().unwrap())
        .unwrap()
        .into_iter()
        .filter(|s| s.kind == SegmentKind::Forced && s.label.as_deref() == Some(label))
        .map(|s| {
            assert!(!s.loss_mask);
            s.tokens.clone()
        })
        .collect()
}

#[test]
fn budgets_on_the_embedded_engine_are_exact() {
    let dir = setup();
    let tokenizer = enact_model::ModelFiles::load(&dir.path().join("tiny.gguf"))
        .unwrap()
        .tokenizer;
    let style = enact_core::ThinkingStyle::prompted();
    let stop_ids = tokenizer.encode(&style.stop_text).unwrap();
    let open_ids = tokenizer.encode(&style.open_text()).unwrap();
    // A minimum of 6 makes enact open a thought for this model, which never opens one.
    let episodes = eval(dir.path(), "budget", &["--thinking", "budget:6,min:6"]);
    assert_eq!(episodes.len(), 3);
    let mut hits = 0;
    for ep in &episodes {
        assert!(!ep.outcome.per_turn.is_empty());
        for r in &ep.outcome.per_turn {
            assert!(r.thinking_tokens <= 6, "{r:?}");
            assert_eq!(r.decision.as_ref().unwrap().budget, Some(6));
            hits += usize::from(r.budget_hit);
        }
        // The model never opens thoughts itself (SmolLM2's template): enact opens each one,
        // and closes the ones that reach the budget with exactly the stop text.
        let opened = forced(ep, "thinking-open");
        assert_eq!(opened.len(), ep.outcome.per_turn.len());
        assert!(opened.iter().all(|ids| *ids == open_ids));
        let stops = forced(ep, "thinking-stop");
        assert_eq!(
            stops.len(),
            ep.outcome.per_turn.iter().filter(|r| r.budget_hit).count()
        );
        assert!(stops.iter().all(|ids| *ids == stop_ids));
    }
    // A random model hardly ever writes `</think>` in 6 tokens: the budget is what ends them.
    assert!(hits > 0);
    // `enact show` prints each turn's decision and spending.
    let run = common::only_run_dir(&dir.path().join("budget"));
    let out = Command::new(env!("CARGO_BIN_EXE_enact"))
        .arg("show")
        .arg(&run)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("turn 1") && shown.contains("budget 6 (budget 6)"),
        "{shown}"
    );
    assert!(shown.contains("cut at budget"), "{shown}");
}

#[test]
fn off_adaptive_and_routing_through_the_cli() {
    let dir = setup();
    let episodes = eval(dir.path(), "off", &["--thinking", "off"]);
    for ep in &episodes {
        // SmolLM2's template has no switch: each turn gets an empty thought, forced.
        assert_eq!(forced(ep, "thinking-off").len(), ep.outcome.per_turn.len());
        assert_eq!(ep.outcome.tokens.thinking, 0);
        assert!(
            ep.outcome
                .per_turn
                .iter()
                .all(|r| !r.decision.as_ref().unwrap().think)
        );
    }
    std::fs::copy(dir.path().join("tiny.gguf"), dir.path().join("big.gguf")).unwrap();
    let episodes = eval(
        dir.path(),
        "adaptive",
        &["--thinking", "adaptive:low", "--thinking-model", "big.gguf"],
    );
    for ep in &episodes {
        for r in &ep.outcome.per_turn {
            let d = r.decision.as_ref().unwrap();
            assert!(!d.reason.is_empty());
            // low effort: 128 tokens, below the routing threshold, unless the last step failed
            let want = if d.signals.last_step_failed {
                "big.gguf"
            } else {
                "tiny.gguf"
            };
            assert_eq!(r.model.as_deref(), Some(want), "{d:?}");
            assert!(r.thinking_tokens <= d.budget.unwrap_or(0) as usize);
        }
    }
}

#[test]
fn bad_modes_and_mismatched_routing_are_refused() {
    let dir = setup();
    let out = Command::new(env!("CARGO_BIN_EXE_enact"))
        .args(["run", "--thinking", "budget:many"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("budget:N") && err.contains("adaptive"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_enact"))
        .current_dir(dir.path())
        .args([
            "run",
            "--model",
            "scripted",
            "--thinking-model",
            "tiny.gguf",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokenizer"), "{err}");
}

#[test]
fn bench_thinking_compares_modes_on_the_same_tasks() {
    let dir = setup();
    let out = Command::new(env!("CARGO_BIN_EXE_enact"))
        .current_dir(dir.path())
        .args([
            "bench",
            "thinking",
            "--model",
            "tiny.gguf",
            "--threads",
            "1",
            "--weights",
            "f32",
            "--env",
        ])
        .arg(format!("tasks:{}", dir.path().join("tasks").display()))
        .args([
            "-n",
            "2",
            "--max-turns",
            "1",
            "--max-tokens-per-turn",
            "24",
            "--modes",
            "off,budget:4",
            "--runs-dir",
            "runs",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("enact bench thinking"), "{stdout}");
    let parent = common::only_run_dir(&dir.path().join("runs"));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(parent.join("bench.json")).unwrap()).unwrap();
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["off", "budget:4"]);
    assert_eq!(rows[0]["thinking"], 0.0);
    // Each turn under budget:4 thinks at most 4 tokens (one turn per episode here).
    assert!(rows[1]["thinking"].as_f64().unwrap() <= 4.0);
    for r in &rows {
        assert_eq!(r["episodes"], 2);
        let dir = dir.path().join(r["run_dir"].as_str().unwrap());
        let text = std::fs::read_to_string(dir.join("trajectories.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(stdout.contains(r["mode"].as_str().unwrap()));
    }
    let svg = std::fs::read_to_string(parent.join("plot.svg")).unwrap();
    assert!(svg.contains("budget:4") && svg.trim_end().ends_with("</svg>"));
    // `--show` prints the same table again from bench.json and redraws the plot.
    std::fs::remove_file(parent.join("plot.svg")).unwrap();
    let again = Command::new(env!("CARGO_BIN_EXE_enact"))
        .current_dir(dir.path())
        .args(["bench", "thinking", "--show"])
        .arg(&parent)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&again.stdout);
    let table = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("off") || l.starts_with("budget:4"))
            .map(String::from)
            .collect()
    };
    assert_eq!(table(&shown), table(&stdout));
    assert!(parent.join("plot.svg").exists());
}

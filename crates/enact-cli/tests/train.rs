//! `enact train` through the binary on a tiny random chat model (byte-level tokenizer, ChatML
//! template, llama weights written as GGUF here) and task files whose reward is whether the
//! answer contains an `a`: a warm start on the reference solutions, GRPO steps with the rollout
//! engine beside the trainer, held-out evaluation, the plot; then `kill -9` in the middle of
//! RL and the same command again, which must finish without losing or repeating a step or an
//! episode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/tiny_model.rs"]
mod tiny_model;
use tiny_model::{say_a_tasks, tiny_chat_model, tiny_eval};

fn setup(dir: &Path, rl_steps: u64) -> PathBuf {
    tiny_chat_model(&dir.join("tiny.gguf"));
    say_a_tasks(&dir.join("tasks"), 8, 3);
    let config = dir.join("train.toml");
    std::fs::write(
        &config,
        format!(
            r#"env = "tasks:{tasks}"
model = "tiny.gguf"
threads = 1
# the engine samples with the same f32 weights the trainer differentiates
weights = "f32"
output = "out"
seed = 3

[trainable]
mode = "lora"
r = 4
alpha = 8

[warm_start]
tasks = 4
epochs = 1
batch = 2
lr = 1e-2

[rl]
steps = {rl_steps}
tasks_per_step = 1
group_size = 4
concurrency = 4
lr = 1e-2
# tempered sampling: the trainer takes logprobs at the same temperature
temperature = 0.8

[eval]
tasks = 3
every = 2

[agent]
max_turns = 1
max_tokens_per_turn = 12
"#,
            tasks = dir.join("tasks").display()
        ),
    )
    .unwrap();
    config
}

fn train(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_enact"));
    c.args(["train", "--config"]).arg(config);
    c.env_remove("ENACT_THREADS").env_remove("ENACT_WEIGHTS");
    c
}

fn rows(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn state(out: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Every RL step exactly once, in order; every trained episode once and stored once.
fn check_complete(out: &Path, rl_steps: u64) {
    let st = state(out).unwrap();
    assert_eq!(st["phase"], "done", "{st}");
    assert_eq!(st["rl_steps"], rl_steps);
    let rows = rows(out);
    let rl: Vec<u64> = rows
        .iter()
        .filter(|r| r["phase"] == "rl")
        .map(|r| r["rl_step"].as_u64().unwrap())
        .collect();
    assert_eq!(rl, (1..=rl_steps).collect::<Vec<_>>(), "RL steps: {rl:?}");
    let warm = rows.iter().filter(|r| r["phase"] == "warm_start").count();
    assert_eq!(warm, 2, "two warm-start steps (4 tasks, 2 per step)");
    let evals: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["eval"]["label"].as_str())
        .collect();
    assert_eq!(evals.first(), Some(&"before"));
    assert!(evals.contains(&"warm_start"), "{evals:?}");
    assert_eq!(evals.last(), Some(&"final"), "{evals:?}");
    // Steps only go up; the optimizer step is the policy version.
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    assert_eq!(st["step"], *steps.last().unwrap());
    // Each step trains on tasks_per_step × group_size episodes, none twice.
    let consumed: Vec<String> = st["consumed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(consumed.len() as u64, rl_steps * 4);
    assert_eq!(
        consumed.iter().collect::<HashSet<_>>().len(),
        consumed.len()
    );
    let stored: Vec<String> = std::fs::read_to_string(out.join("episodes.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["episode_id"].as_str().unwrap().to_string()
        })
        .collect();
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "an episode was stored twice");
    assert!(
        consumed.iter().all(|c| unique.contains(c)),
        "trained on an episode not in the store"
    );
    // The checkpoint of the last step: PEFT adapter files.
    let ckpt = out.join(st["checkpoint"].as_str().unwrap());
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.safetensors",
    ] {
        assert!(ckpt.join(f).exists(), "{f} missing in {}", ckpt.display());
    }
    // The dataset of the RL episodes, with advantages, for external trainers.
    let dataset = std::fs::read_to_string(out.join("dataset.jsonl")).unwrap();
    assert_eq!(dataset.lines().count(), stored.len());
    assert!(dataset.contains("\"advantage\""));
    assert!(out.join("dataset.parquet").exists());
    let svg = std::fs::read_to_string(out.join("plot.svg")).unwrap();
    assert!(svg.contains("held-out success") && svg.trim_end().ends_with("</svg>"));
    // `enact report` reads the training run as it is: the training chart, every held-out
    // evaluation and the RL episodes.
    let report = Command::new(env!("CARGO_BIN_EXE_enact"))
        .arg("report")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("training-plot\"><svg"), "no training chart");
    assert!(
        html.contains("-final</td>") && html.contains("-before</td>"),
        "held-out evaluations missing"
    );
    assert!(out.join("report.md").exists());
}

/// `enact eval --checkpoint` on the last checkpoint answers the held-out tasks exactly as
/// the training run's final (greedy) evaluation did: the trained weights, not the base ones.
fn check_checkpoint_replays_the_final_evaluation(dir: &Path, out: &Path) {
    let st = state(out).unwrap();
    let ckpt = out.join(st["checkpoint"].as_str().unwrap());
    let answers = |text: &str| -> Vec<(String, Option<String>)> {
        let mut v: Vec<(String, Option<String>)> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let e: serde_json::Value = serde_json::from_str(l).unwrap();
                let e = if e.get("episode").is_some() {
                    &e["episode"]
                } else {
                    &e
                };
                (
                    e["task"]["id"].as_str().unwrap().to_string(),
                    e["outcome"]["final_answer"].as_str().map(String::from),
                )
            })
            .collect();
        v.sort();
        v
    };
    let final_eval = std::fs::read_dir(out.join("eval"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-final.jsonl"))
        .unwrap();
    let want = answers(&std::fs::read_to_string(final_eval).unwrap());
    let eval = |checkpoint: Option<&Path>, runs: &str| {
        let mut c = tiny_eval(dir);
        c.args([
            "--split",
            "test",
            "-n",
            "3",
            "--temperature",
            "0",
            "--max-turns",
            "1",
            "--max-tokens-per-turn",
            "12",
            "--concurrency",
            "4",
            "--runs-dir",
            runs,
        ]);
        if let Some(p) = checkpoint {
            c.arg("--checkpoint").arg(p);
        }
        let o = c.output().unwrap();
        assert!(
            o.status.success() || o.status.code() == Some(1),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let run = std::fs::read_dir(dir.join(runs))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        answers(&std::fs::read_to_string(run.join("trajectories.jsonl")).unwrap())
    };
    assert_eq!(eval(Some(&ckpt), "with-checkpoint"), want);
}

#[test]
fn trains_end_to_end_with_warm_start_grpo_and_held_out_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 4);
    let out = train(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let o = dir.path().join("out");
    check_complete(&o, 4);
    assert!(stdout.contains("held-out success"), "{stdout}");
    check_checkpoint_replays_the_final_evaluation(dir.path(), &o);
    // Some RL step had a signal (rewards differ within a group) and took an optimizer step
    // whose behaviour logprobs came from the engine: the mismatch is reported and small.
    let trained: Vec<serde_json::Value> = rows(&o)
        .into_iter()
        .filter(|r| r["phase"] == "rl" && r["train"].is_object())
        .collect();
    assert!(
        !trained.is_empty(),
        "no RL step had a reward signal; stderr:\n{stderr}"
    );
    // The staleness bound (max_staleness = 1) holds where it matters: at training time.
    for r in &trained {
        assert!(r["staleness_max"].as_u64().unwrap() <= 1, "{r}");
    }
    // Episodes sampled entirely by the weights being trained (staleness 0): the trainer's
    // logprobs equal the sampler's. Staler ones differ by what the updates changed.
    let fresh: Vec<&serde_json::Value> =
        trained.iter().filter(|r| r["staleness_max"] == 0).collect();
    assert!(!fresh.is_empty(), "no RL step trained on fresh episodes");
    for r in fresh {
        let mismatch = r["train"]["logprob_mismatch_mean"].as_f64().unwrap();
        assert!(
            mismatch < 0.05,
            "recomputed logprobs differ from the sampler's by {mismatch}"
        );
        assert!(r["train"]["loss_tokens"].as_u64().unwrap() > 0);
    }
    // Rerunning a finished run changes nothing.
    let again = train(&config).output().unwrap();
    assert!(again.status.success());
    check_complete(&o, 4);
}

#[test]
fn kill_9_in_the_middle_then_the_same_command_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 6;
    let config = setup(dir.path(), steps);
    let out = dir.path().join("out");
    let mut child = train(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(st) = state(&out)
            && st["rl_steps"].as_u64().unwrap_or(0) >= 2
        {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("enact train ended ({status}) before it could be killed");
        }
        assert!(Instant::now() < deadline, "no RL step within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let st = state(&out).unwrap();
    assert_ne!(st["phase"], "done", "killed too late to test a resume");

    let resumed = train(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    check_complete(&out, steps);
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let text = std::fs::read_to_string(&config).unwrap();
    for (from, to, says) in [
        ("group_size = 4", "group_size = 1", "group_size = 1"),
        ("mode = \"lora\"", "mode = \"qlora\"", "use lora or full"),
        ("[agent]", "bogus = 1\n[agent]", "bogus"),
        (
            "model = \"tiny.gguf\"",
            "model = \"http://127.0.0.1:9\"",
            "embedded engine",
        ),
    ] {
        std::fs::write(&config, text.replace(from, to)).unwrap();
        let out = train(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to} was accepted");
        assert!(stderr.contains(says), "{to}: {stderr}");
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
    }
}

#[test]
fn bench_train_prints_tokens_per_second_per_workload() {
    let out = Command::new(env!("CARGO_BIN_EXE_enact"))
        .args([
            "bench",
            "train",
            "--model",
            "none",
            "--no-torch",
            "--steps",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("full training, tiny Qwen2"))
        .unwrap_or_else(|| panic!("no full-training row in\n{stdout}"));
    let rate: f64 = row.split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!(rate > 0.0, "{row}");
}

/// `team = FILE` in train.toml: a team plays each RL episode on the trained model and the
/// trained roles' sequences are trained; a role that is not in the team file is refused.
#[test]
fn a_team_trains_on_the_embedded_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    std::fs::write(
        dir.path().join("team.toml"),
        r#"[team]
entry = "lead"

[roles.lead]
system = "Answer, or delegate to the helper."
may_call = ["helper"]
max_turns = 1

[roles.helper]
system = "Answer the question you are given."
max_turns = 1
"#,
    )
    .unwrap();
    let base = std::fs::read_to_string(&config).unwrap();
    // Top-level keys go before the first table.
    let with_team = base.replacen(
        "output = \"out\"",
        "output = \"out\"\nteam = \"team.toml\"\nroles = [\"lead\", \"helper\"]",
        1,
    );
    std::fs::write(&config, &with_team).unwrap();
    let out = train(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let o = dir.path().join("out");
    let rl: Vec<serde_json::Value> = rows(&o)
        .into_iter()
        .filter(|r| r["phase"] == "rl")
        .collect();
    assert_eq!(rl.len(), 1, "one RL step");
    // The stored RL episodes were played by the team's entry role.
    let stored = std::fs::read_to_string(o.join("episodes.jsonl")).unwrap();
    assert!(stored.contains("\"lead\""), "the entry role is recorded");

    std::fs::write(
        &config,
        with_team.replace("[\"lead\", \"helper\"]", "[\"boss\"]"),
    )
    .unwrap();
    std::fs::remove_dir_all(&o).unwrap();
    let out = train(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("boss") && stderr.contains("lead"),
        "{stderr}"
    );
}

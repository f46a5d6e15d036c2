//! `--team` end to end with the scripted model: `enact eval` on `multisearch` with the
//! research team, then `enact show` prints the tree of agents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

mod common;

use common::enact;

fn team_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/team-research.toml")
}

#[test]
fn a_team_eval_stores_the_tree_and_show_prints_it() {
    let tmp = tempfile::tempdir().unwrap();
    let team = team_file();
    let (ok, stdout, stderr) = enact(
        tmp.path(),
        &[
            "eval",
            "--env",
            "multisearch",
            "--team",
            team.to_str().unwrap(),
            "--model",
            "scripted",
            "-n",
            "2",
            "--runs-dir",
            "r",
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    // Three questions per task: the orchestrator and three researchers.
    assert!(stdout.contains("4.0 agents"), "{stdout}");
    assert!(stdout.contains("100.0%"), "{stdout}");
    let run = std::fs::read_dir(tmp.path().join("r"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    let (ok, stdout, stderr) = enact(tmp.path(), &["show", run.to_str().unwrap(), "--index", "0"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("agents:\n  main · reward 1.000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    researcher (call_1_0) · reward 1.000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("called in parent turn 1, segment 1"),
        "{stdout}"
    );
    assert!(stdout.contains("tree: 4 agents"), "{stdout}");
    assert!(
        stdout.contains("sub-agent call_1_2 · role researcher · depth 1"),
        "{stdout}"
    );
    // A sub-agent's own trajectory: its system prompt, not the orchestrator's.
    let sub = &stdout[stdout.find("sub-agent call_1_0").unwrap()..];
    assert!(sub.contains("You answer one question"), "{sub}");

    // The single agent on the same tasks: one agent, no tree.
    let (ok, stdout, stderr) = enact(
        tmp.path(),
        &[
            "eval",
            "--env",
            "multisearch",
            "--model",
            "scripted",
            "-n",
            "2",
            "--runs-dir",
            "s",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("1.0 agents") && stdout.contains("100.0%"),
        "{stdout}"
    );
}

#[test]
fn a_broken_team_file_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("t.toml"),
        "[team]\nentry = \"boss\"\n[roles.worker]\n",
    )
    .unwrap();
    let (ok, _, stderr) = enact(
        tmp.path(),
        &[
            "eval",
            "--env",
            "multisearch",
            "--team",
            "t.toml",
            "--model",
            "scripted",
            "-n",
            "1",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("entry role \"boss\" is not defined"),
        "{stderr}"
    );
}

#[test]
fn a_team_rollout_exports_a_row_per_agent_with_its_role_and_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("rollout.toml");
    std::fs::write(
        &cfg,
        format!(
            "env = \"multisearch\"\nmodel = \"scripted\"\ntasks = 2\ngroup_size = 2\nconcurrency = 2\noutput = \"out\"\nteam = {:?}\nown_weight = 0.25\n",
            team_file().to_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = enact(tmp.path(), &["rollout", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{stdout}\n{stderr}");
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(tmp.path().join("out/dataset.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    // 2 tasks × 2 samples × (orchestrator + 3 researchers).
    assert_eq!(rows.len(), 16);
    let roles = |r: &str| rows.iter().filter(|x| x["role"] == r).count();
    assert_eq!((roles("orchestrator"), roles("researcher")), (4, 12));
    for r in &rows {
        // The reference solutions are right: own and shared rewards are 1.
        assert_eq!(r["reward"], 1.0, "{r}");
        assert_eq!(r["episode_reward"], 1.0, "{r}");
        let agent = r["agent"].as_str().unwrap();
        assert_eq!(agent == "main", r["role"] == "orchestrator", "{r}");
        assert!(
            r["loss_mask"].as_array().unwrap().iter().any(|m| m == true),
            "{r}"
        );
    }
    // The store holds each tree whole.
    let store = std::fs::read_to_string(tmp.path().join("out/episodes.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(store.lines().next().unwrap()).unwrap();
    assert_eq!(first["episode"]["children"].as_array().unwrap().len(), 3);

    // Training one role: the export keeps only its rows.
    let text = std::fs::read_to_string(&cfg).unwrap() + "roles = [\"researcher\"]\n";
    std::fs::write(tmp.path().join("out/config.toml"), text).unwrap();
    let (ok, _, stderr) = enact(tmp.path(), &["rollout", "export", "out"]);
    assert!(ok, "{stderr}");
    let rows = std::fs::read_to_string(tmp.path().join("out/dataset.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 12);
    assert!(!rows.contains("\"orchestrator\""));
}

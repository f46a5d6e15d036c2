//! The trajectory store (torn lines, full disk, duplicates) and the exports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::time::Duration;

use common::{collect, engine, normal, tasks};
use enact_rollout::{
    FsyncPolicy, LogFile, RolloutConfig, RolloutRecord, StoreError, TrajectoryStore, training_row,
    training_rows, write_jsonl, write_parquet,
};

async fn some_records(n: usize) -> Vec<RolloutRecord> {
    let cfg = RolloutConfig {
        concurrency: 3,
        group_size: 2,
        ..Default::default()
    };
    let (rollout, _) = engine(cfg, normal(), Duration::ZERO, None);
    let (_, mut records) = collect(&rollout, tasks(n.div_ceil(2)), &HashSet::new(), 4).await;
    records.truncate(n);
    records
}

#[tokio::test]
async fn a_torn_last_line_is_cut_off_and_the_store_resumes_cleanly() {
    let records = some_records(4).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("episodes.jsonl");
    {
        let (mut store, existing) = TrajectoryStore::open(&path, FsyncPolicy::Always).unwrap();
        assert!(existing.is_empty());
        for r in &records[..3] {
            store.append(r).unwrap();
        }
    }
    // A crash in the middle of the fourth write.
    let line = serde_json::to_string(&records[3]).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
    drop(f);

    let (mut store, existing) = TrajectoryStore::open(&path, FsyncPolicy::Every(2)).unwrap();
    assert_eq!(existing, records[..3].to_vec());
    assert!(store.contains(&records[0].episode_id));
    assert!(matches!(
        store.append(&records[0]),
        Err(StoreError::Duplicate(_))
    ));
    store.append(&records[3]).unwrap();
    store.sync().unwrap();
    drop(store);
    let (_, all) = TrajectoryStore::open(&path, FsyncPolicy::Never).unwrap();
    assert_eq!(all, records);
}

#[tokio::test]
async fn a_damaged_line_in_the_middle_is_an_error_not_a_guess() {
    let records = some_records(2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("episodes.jsonl");
    let mut text = serde_json::to_string(&records[0]).unwrap();
    text.push_str("\n{not json}\n");
    text.push_str(&serde_json::to_string(&records[1]).unwrap());
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    match TrajectoryStore::open(&path, FsyncPolicy::Always) {
        Err(StoreError::Corrupt { line: 2, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a damaged store opened"),
    }
}

/// A file on a disk with `room` bytes left: writes what fits, then fails with ENOSPC.
struct FullDisk {
    file: File,
    room: usize,
}

impl LogFile for FullDisk {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let n = bytes.len().min(self.room);
        self.file.write_all(&bytes[..n])?;
        self.room -= n;
        if n < bytes.len() {
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

#[tokio::test]
async fn a_full_disk_is_a_clean_error_and_corrupts_nothing() {
    let records = some_records(3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("episodes.jsonl");
    let first = serde_json::to_string(&records[0]).unwrap().len() + 1;
    let (mut store, _) = TrajectoryStore::open_with(&path, FsyncPolicy::Always, |file| {
        Box::new(FullDisk {
            file,
            room: first + 100,
        })
    })
    .unwrap();
    store.append(&records[0]).unwrap();
    let err = store.append(&records[1]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Write { .. }), "{text}");
    assert!(text.contains("free space"), "{text}");
    assert!(!store.contains(&records[1].episode_id));
    drop(store);
    // The file holds exactly the first record: the partial second one was cut back.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), first as u64);
    let (mut store, existing) = TrajectoryStore::open(&path, FsyncPolicy::Always).unwrap();
    assert_eq!(existing, records[..1].to_vec());
    store.append(&records[1]).unwrap();
}

#[test]
fn fsync_policies_parse_and_print() {
    for (text, policy) in [
        ("always", FsyncPolicy::Always),
        ("never", FsyncPolicy::Never),
        ("every:16", FsyncPolicy::Every(16)),
    ] {
        assert_eq!(text.parse::<FsyncPolicy>().unwrap(), policy);
        assert_eq!(String::from(policy), text);
    }
    for bad in ["every:0", "sometimes", "every:x"] {
        assert!(bad.parse::<FsyncPolicy>().is_err());
    }
}

#[tokio::test]
async fn training_rows_align_tokens_masks_logprobs_and_versions() {
    let records = some_records(2).await;
    for r in &records {
        let row = training_row(r).unwrap();
        let t = &r.episode.trajectory;
        let leaf = t.main_leaf().unwrap();
        let all = t.tokens(leaf).unwrap();
        assert_eq!(
            [row.prompt_ids.clone(), row.response_ids.clone()].concat(),
            all
        );
        assert_eq!(row.prompt_ids, t.segments[0].tokens);
        let n = row.response_ids.len();
        assert_eq!(
            (
                row.loss_mask.len(),
                row.behaviour_logprobs.len(),
                row.policy_versions.len()
            ),
            (n, n, n)
        );
        let mask = t.loss_mask(leaf).unwrap();
        assert_eq!(row.loss_mask, mask[row.prompt_ids.len()..].to_vec());
        for (i, m) in row.loss_mask.iter().enumerate() {
            assert_eq!(*m, row.policy_versions[i] >= 0);
        }
        assert!(row.loss_mask.iter().any(|&m| m) && row.loss_mask.iter().any(|&m| !m));
        assert_eq!(row.reward, 1.0);
        assert_eq!(row.termination, "finished");
    }
}

#[tokio::test]
async fn parquet_export_reads_back_with_pyarrow() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        // CI installs pyarrow (.ci/run), so there this is a failure.
        enact_testkit::skip(
            enact_testkit::Requirement::Python,
            "pyarrow is not installed (pip install pyarrow)",
        );
        return;
    }
    let records = some_records(4).await;
    let mut rows: Vec<_> = records.iter().map(|r| training_row(r).unwrap()).collect();
    // Two groups of two with different rewards: non-zero advantages must round-trip.
    for (i, r) in rows.iter_mut().enumerate() {
        r.task_id = format!("task-{}", i / 2);
        r.reward = (i % 2) as f64;
    }
    enact_rollout::with_group_advantages(&mut rows, true);
    assert!(rows.iter().all(|r| r.advantage.abs() > 0.5), "{rows:?}");
    assert!((rows[0].advantage + rows[1].advantage).abs() < 1e-9);
    // A sub-agent's row: role, agent path and episode reward are columns too.
    rows[1].role = "researcher".into();
    rows[1].agent = "main/call_1_0".into();
    rows[1].episode_reward = 0.25;
    // An episode that failed before its prompt: empty lists must round-trip too.
    rows[3].prompt_ids.clear();
    rows[3].response_ids.clear();
    rows[3].loss_mask.clear();
    rows[3].behaviour_logprobs.clear();
    rows[3].policy_versions.clear();
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("rows.parquet");
    let jl = dir.path().join("rows.jsonl");
    write_parquet(&pq, &rows).unwrap();
    write_jsonl(&jl, &rows).unwrap();
    let script = r#"
import json, sys, pyarrow.parquet as pq
table = pq.read_table(sys.argv[1]).to_pylist()
rows = [json.loads(l) for l in open(sys.argv[2])]
assert len(table) == len(rows), (len(table), len(rows))
for got, want in zip(table, rows):
    for k, v in want.items():
        g = got[k]
        if k == "behaviour_logprobs":
            assert all(abs(a - b) < 1e-6 for a, b in zip(g, v)) and len(g) == len(v), k
        else:
            assert g == v, (k, g, v)
assert "advantage" in pq.read_schema(sys.argv[1]).names
print("ok", len(table))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&pq)
        .arg(&jl)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow disagrees: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 4");
}

#[tokio::test]
async fn a_team_tree_round_trips_through_the_store_and_exports_a_row_per_agent() {
    let records = some_records(3).await;
    let mut tree = records[0].clone();
    tree.episode
        .task
        .metadata
        .insert("role".into(), "lead".into());
    tree.episode.outcome.reward = 1.0;
    // Two sub-agents: one with its own (failing) verdict, one ungraded, which has a child.
    let mut graded = records[1].episode.clone();
    graded.verdict = Some(enact_core::Verdict::from_checks(vec![
        enact_core::CheckResult::fail("q1", "wrong"),
    ]));
    let mut ungraded = records[2].episode.clone();
    ungraded.verdict = None;
    let grandchild = records[1].episode.clone();
    ungraded.children.push(enact_core::ChildEpisode {
        role: "reader".into(),
        call_id: "call_2_0".into(),
        parent_turn: 2,
        parent_segment: None,
        episode: grandchild,
    });
    for (call, child) in [("call_1_0", graded), ("call_1_1", ungraded)] {
        tree.episode.children.push(enact_core::ChildEpisode {
            role: "worker".into(),
            call_id: call.into(),
            parent_turn: 1,
            parent_segment: Some(enact_core::SegmentId(1)),
            episode: child,
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("episodes.jsonl");
    {
        let (mut store, _) = TrajectoryStore::open(&path, FsyncPolicy::Always).unwrap();
        store.append(&tree).unwrap();
    }
    let (_, back) = TrajectoryStore::open(&path, FsyncPolicy::Never).unwrap();
    assert_eq!(back, vec![tree.clone()]);
    assert_eq!(back[0].episode.tree_totals().agents, 4);

    let rows = training_rows(&back[0], 0.5).unwrap();
    let got: Vec<(&str, &str, f64)> = rows
        .iter()
        .map(|r| (r.role.as_str(), r.agent.as_str(), r.reward))
        .collect();
    assert_eq!(
        got,
        vec![
            ("lead", "main", 1.0),
            ("worker", "main/call_1_0", 0.5),
            ("worker", "main/call_1_1", 1.0),
            ("reader", "main/call_1_1/call_2_0", 1.0),
        ]
    );
    assert_eq!(rows[1].episode_id, format!("{}/call_1_0", tree.episode_id));
    assert!(
        rows.iter()
            .all(|r| r.task_id == tree.task_id && r.episode_reward == 1.0)
    );
    // Each row is its own agent's trajectory, token for token.
    let child = &tree.episode.children[0].episode.trajectory;
    let leaf = child.main_leaf().unwrap();
    assert_eq!(
        [rows[1].prompt_ids.clone(), rows[1].response_ids.clone()].concat(),
        child.tokens(leaf).unwrap()
    );
    // Per-role groups: the two workers are normalised against each other only.
    let mut rows = rows;
    enact_rollout::with_group_advantages(&mut rows, false);
    assert_eq!(rows[0].advantage, 0.0);
    assert_eq!((rows[1].advantage, rows[2].advantage), (-0.25, 0.25));
    let jl = dir.path().join("rows.jsonl");
    write_jsonl(&jl, &rows).unwrap();
    let text = std::fs::read_to_string(&jl).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.contains("\"role\":\"reader\""), "{text}");
}

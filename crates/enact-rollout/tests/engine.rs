//! The engine: groups, stable ids, concurrency, backpressure, staleness, faults, cancel,
//! watchdog.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{EnvMode, PolicyMode, collect, engine, normal, tasks};
use enact_core::{Task, Termination};
use enact_rollout::{Cancel, RolloutConfig, StalePolicy, Waiting, episode_id};
use tokio::sync::mpsc;

fn config(concurrency: usize, group_size: u32) -> RolloutConfig {
    RolloutConfig {
        concurrency,
        group_size,
        seed: 7,
        status_interval: Duration::from_millis(5),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_of_every_group_is_delivered_once_under_its_stable_id() {
    let (rollout, h) = engine(config(4, 3), normal(), Duration::from_millis(2), None);
    let (summary, records) = collect(&rollout, tasks(5), &HashSet::new(), 2).await;
    assert_eq!(summary.finished, 15);
    assert_eq!(summary.errors, 0);
    let ids: HashSet<String> = records.iter().map(|r| r.episode_id.clone()).collect();
    let expected: HashSet<String> = (0..5)
        .flat_map(|t| (0..3).map(move |s| episode_id(7, &format!("t{t}"), s)))
        .collect();
    assert_eq!(ids, expected);
    for r in &records {
        assert_eq!(r.episode.id(), r.episode_id);
        assert_eq!(r.episode.trajectory.id, r.episode_id);
        assert!(r.episode.outcome.success, "{:?}", r.episode.outcome);
        assert_eq!(r.episode_id, episode_id(7, &r.task_id, r.sample_index));
    }
    // Concurrency was used and never exceeded.
    assert_eq!(h.max_live.load(Ordering::SeqCst), 4);

    // Duplicate task ids would make duplicate episode ids: refused before anything runs.
    let (rollout, h) = engine(config(4, 3), normal(), Duration::ZERO, None);
    let (tx, _rx) = mpsc::channel(1);
    let twice = [tasks(2), tasks(1)].concat();
    let err = rollout
        .run(twice, &HashSet::new(), tx, Cancel::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    assert_eq!(h.made.load(Ordering::SeqCst), 0);

    // A resume with everything done admits nothing.
    let (rollout, h) = engine(config(4, 3), normal(), Duration::ZERO, None);
    let (summary, records) = collect(&rollout, tasks(5), &ids, 2).await;
    assert_eq!((summary.finished, summary.skipped), (0, 15));
    assert!(records.is_empty());
    assert_eq!(h.made.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_consumer_stops_admission() {
    let (rollout, h) = engine(config(2, 1), normal(), Duration::ZERO, None);
    let (tx, mut rx) = mpsc::channel(1);
    let board = rollout.status();
    let run = tokio::spawn(async move {
        rollout
            .run(tasks(10), &HashSet::new(), tx, Cancel::default())
            .await
    });
    // Wait until the engine is blocked on the consumer, then give in-flight episodes time
    // to finish.
    while board
        .snapshot(Duration::from_secs(60))
        .consumer_blocked_since_ms
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let made = h.made.load(Ordering::SeqCst);
    // One in the channel, one the engine is trying to send, at most `concurrency` more.
    assert!(made <= 4, "{made} episodes admitted with a full consumer");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        h.made.load(Ordering::SeqCst),
        made,
        "admitted while blocked"
    );
    let mut got = 0;
    while rx.recv().await.is_some() {
        got += 1;
    }
    assert_eq!(got, 10);
    assert_eq!(run.await.unwrap().unwrap().finished, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_staleness_never_mixes_versions() {
    let mut cfg = config(4, 1);
    cfg.max_staleness = Some(0);
    cfg.max_regenerations = 100;
    let (rollout, h) = engine(cfg, normal(), Duration::from_millis(1), None);
    let publisher = h.publisher.clone().unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let run = tokio::spawn(async move {
        let r = rollout
            .run(tasks(12), &HashSet::new(), tx, Cancel::default())
            .await;
        (r, rollout)
    });
    // The "trainer": a new version after every 3 episodes it consumes.
    let mut records = Vec::new();
    while let Some(r) = rx.recv().await {
        records.push(r);
        if records.len() % 3 == 0 {
            publisher.publish(publisher.version() + 1);
        }
    }
    let (summary, _) = run.await.unwrap();
    let summary = summary.unwrap();
    assert_eq!(records.len(), 12);
    assert_eq!(summary.dropped_stale, 0);
    assert!(publisher.version() >= 4);
    for a in &records {
        assert_eq!(a.staleness, 0, "{a:?}");
        assert_eq!(a.min_policy_version, a.max_policy_version);
        for b in &records {
            if b.admitted_version < a.admitted_version {
                assert!(
                    b.finish_seq < a.admit_seq,
                    "{} (v{}) was admitted while {} (v{}) was in flight",
                    a.episode_id,
                    a.admitted_version,
                    b.episode_id,
                    b.admitted_version
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_episodes_are_regenerated_or_kept_as_configured() {
    for stale in [StalePolicy::Keep, StalePolicy::Drop] {
        let mut cfg = config(4, 1);
        cfg.max_staleness = Some(0);
        cfg.stale = stale;
        cfg.max_regenerations = 1;
        // Every sample publishes a new version: every episode with two samples is stale.
        let cell: Arc<std::sync::OnceLock<enact_rollout::Publisher>> = Arc::default();
        let c = cell.clone();
        let bump: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(p) = c.get() {
                p.publish(p.version() + 1);
            }
        });
        let (rollout, h) = engine(cfg, normal(), Duration::ZERO, Some(bump));
        let _ = cell.set(h.publisher.clone().unwrap());
        let (summary, records) = collect(&rollout, tasks(6), &HashSet::new(), 8).await;
        match stale {
            StalePolicy::Keep => {
                assert_eq!(records.len(), 6);
                assert!(records.iter().all(|r| r.stale && r.staleness > 0));
            }
            StalePolicy::Drop => {
                // Regenerated once, stale again, then dropped and counted: never silent.
                assert_eq!(summary.regenerated, 6);
                assert_eq!(summary.dropped_stale, 6);
                assert!(records.is_empty());
            }
        }
        for r in &records {
            assert_eq!(r.staleness, r.finished_version - r.min_policy_version);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_environments_and_policies_end_episodes_not_the_run() {
    let modes = [
        (EnvMode::PanicOnStep, PolicyMode::Normal),
        (EnvMode::ErrorOnStep, PolicyMode::Normal),
        (EnvMode::HangOnStep, PolicyMode::Normal),
        (EnvMode::ErrorOnReset, PolicyMode::Normal),
        (EnvMode::Normal, PolicyMode::Error),
        (EnvMode::Normal, PolicyMode::Hang),
        (EnvMode::Normal, PolicyMode::Mismatched),
        (EnvMode::Normal, PolicyMode::OutOfVocabulary),
        (EnvMode::Normal, PolicyMode::Normal),
    ];
    let pick = Arc::new(move |t: &Task| {
        let i: usize = t.id.trim_start_matches('t').parse().unwrap_or(0);
        modes
            .get(i)
            .copied()
            .unwrap_or((EnvMode::Normal, PolicyMode::Normal))
    });
    let mut cfg = config(4, 1);
    cfg.tool_timeout = Some(Duration::from_millis(50));
    cfg.call_timeout = Some(Duration::from_millis(50));
    let (rollout, _) = engine(cfg, pick, Duration::ZERO, None);
    let mut all = tasks(modes.len());
    all.push(Task {
        id: "no-factory".into(),
        ..all[0].clone()
    });
    let (summary, records) = collect(&rollout, all, &HashSet::new(), 2).await;
    assert_eq!(records.len(), modes.len() + 1);
    for r in &records {
        let o = &r.episode.outcome;
        r.episode.trajectory.validate().unwrap();
        match r.task_id.as_str() {
            "t8" => assert!(o.success, "{o:?}"),
            id => {
                assert!(!o.success, "{id}: {o:?}");
                assert!(
                    matches!(o.termination, Termination::Error(_)),
                    "{id}: {:?}",
                    o.termination
                );
            }
        }
    }
    let why = |id: &str| {
        let r = records.iter().find(|r| r.task_id == id).unwrap();
        format!("{:?}", r.episode.outcome.termination)
    };
    assert!(why("t0").contains("crashed"), "{}", why("t0"));
    assert!(why("t2").contains("tool timeout"), "{}", why("t2"));
    assert!(why("t5").contains("timed out"), "{}", why("t5"));
    assert!(why("no-factory").contains("cannot set up"));
    assert_eq!(summary.errors, modes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_names_a_stalled_tool_call_and_cancel_ends_the_run() {
    let pick = Arc::new(|_: &Task| (EnvMode::HangOnStep, PolicyMode::Normal));
    let mut cfg = config(2, 1);
    cfg.watchdog = Duration::from_millis(20);
    let dir = tempfile::tempdir().unwrap();
    cfg.status_file = Some(dir.path().join("status.json"));
    let (rollout, h) = engine(cfg, pick, Duration::ZERO, None);
    let (tx, _rx) = mpsc::channel(4);
    let cancel = Cancel::default();
    let c = cancel.clone();
    let board = rollout.status();
    let run = tokio::spawn(async move { rollout.run(tasks(5), &HashSet::new(), tx, c).await });
    let status_path = dir.path().join("status.json");
    let snap = loop {
        if let Ok(s) = enact_rollout::read_status(&status_path)
            && s.stalled.len() == 2
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        snap.stalled.iter().all(|s| s.contains("tool call work")),
        "{:?}",
        snap.stalled
    );
    assert!(
        snap.in_flight
            .iter()
            .all(|e| e.waiting == Waiting::Tool("work".into()))
    );
    assert_eq!(board.snapshot(Duration::from_secs(60)).stalled.len(), 0);
    cancel.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.cancelled);
    // Abandoned episodes are no longer reported in flight.
    assert!(board.snapshot(Duration::from_secs(60)).in_flight.is_empty());
    assert_eq!(summary.finished, 0);
    assert_eq!(h.made.load(Ordering::SeqCst), 2, "admitted after cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_episode_timeout_ends_a_hanging_episode() {
    let pick = Arc::new(|_: &Task| (EnvMode::HangOnStep, PolicyMode::Normal));
    let mut cfg = config(2, 1);
    cfg.episode_timeout = Some(Duration::from_millis(50));
    let (rollout, _) = engine(cfg, pick, Duration::ZERO, None);
    let (summary, records) = collect(&rollout, tasks(3), &HashSet::new(), 2).await;
    assert_eq!(summary.finished, 3);
    for r in &records {
        assert_eq!(r.episode.outcome.termination, Termination::TimeLimit);
    }
}

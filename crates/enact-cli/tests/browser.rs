//! The viewer and the report in a real browser: headless Chromium (the Debian `chromium`
//! package) renders `enact view` on a run directory whose episode has a tool error, a forced
//! segment, per-turn thinking decisions and a sub-agent child, and the report's SVG plots.
//! Without Chromium the tests skip (`Requirement::Browser`; CI enforces it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use enact_eval::fixtures::Fixture;
use enact_testkit::{Requirement, skip};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// Chromium, or the recorded skip (a failure where CI requires the browser).
fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        skip(
            Requirement::Browser,
            "chromium is not installed (apt-get install chromium)",
        );
    }
    found
}

/// The DOM after the page ran, as Chromium serialises it.
fn dump_dom(browser: &Path, url: &str, profile: &Path) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !dom.is_empty(),
        "chromium printed no DOM for {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// A run directory as `enact eval` writes it: a failed episode with everything the viewer
/// shows, and two plain ones.
fn run_dir(root: &Path) -> PathBuf {
    let dir = root.join("eval-fixture");
    std::fs::create_dir_all(&dir).unwrap();
    let rich = Fixture {
        tool_error: true,
        retry: true,
        flag: true,
        per_turn: true,
        child: true,
        ..Fixture::new("calc-rich", false)
    };
    let mut text = format!("{}\n", rich.to_json().unwrap());
    for (id, ok) in [("calc-ok", true), ("calc-also-ok", true)] {
        text.push_str(&format!("{}\n", Fixture::new(id, ok).to_json().unwrap()));
    }
    std::fs::write(dir.join("trajectories.jsonl"), text).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "command = \"eval\"\nenv = \"calc\"\n",
    )
    .unwrap();
    dir
}

/// `enact view DIR --port 0`, and the URL it printed.
struct Viewer {
    child: Child,
    url: String,
}

impl Viewer {
    fn start(dir: &Path) -> Viewer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_enact"))
            .args(["view", dir.to_str().unwrap(), "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("enact view starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Viewer { child, url }
    }

    /// A plain HTTP GET (the JSON API), without a browser.
    fn get(&self, path: &str) -> String {
        let host = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(out)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_viewer_renders_errors_forced_tokens_decisions_and_sub_agents() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_dir(tmp.path());
    let viewer = Viewer::start(&dir);
    let profile = tmp.path().join("profile");

    let list = dump_dom(&browser, &format!("{}/", viewer.url), &profile);
    assert!(list.contains("3 of 3 episodes match"), "{list}");
    assert_eq!(list.matches("<tr class=\"episode\">").count(), 3, "{list}");
    let failed = dump_dom(
        &browser,
        &format!("{}/?success=false&flag=any", viewer.url),
        &profile,
    );
    assert!(failed.contains("1 of 3 episodes match"), "{failed}");
    assert!(
        failed.contains("calc-rich") && !failed.contains("calc-ok"),
        "{failed}"
    );

    let page = dump_dom(&browser, &format!("{}/episode/0/0", viewer.url), &profile);
    for (what, needle) in [
        ("the failed tool result", "msg tool tool-error"),
        ("the forced segment", "<tr class=\"forced\">"),
        (
            "the thinking decision",
            "thinking decision: <b>think, budget 4: tool step: low effort</b>",
        ),
        ("the sub-agent", "sub-agent <b>researcher</b>"),
        ("the child's own turns", "calc-rich/researcher"),
        ("the monitor flag", "monitor <b>answer-in-prompt</b>"),
        ("the policy versions", "v3–v4"),
        ("the loss mask", "trained"),
        ("the checks", "expected 42, got 41"),
    ] {
        assert!(
            page.contains(needle),
            "{what} ({needle}) not rendered:\n{page}"
        );
    }

    let api = viewer.get("/api/episodes?limit=2&offset=1");
    let json: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(json["total"], 3);
    assert_eq!(json["items"].as_array().unwrap().len(), 2);
    assert_eq!(json["items"][0]["task_id"], "calc-ok");
    let one: serde_json::Value = serde_json::from_str(&viewer.get("/api/episodes/0/0")).unwrap();
    assert_eq!(one["children"][0]["role"], "researcher");
}

#[test]
fn the_report_renders_its_plots() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_dir(tmp.path());
    let out = tmp.path().join("report.html");
    let status = Command::new(env!("CARGO_BIN_EXE_enact"))
        .args(["report", dir.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let dom = dump_dom(
        &browser,
        &format!("file://{}", out.display()),
        &tmp.path().join("profile"),
    );
    for id in ["progress-plot", "tokens-plot", "rates-plot"] {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} missing"));
        assert!(
            dom[at..]
                .trim_start_matches(|c| c != '>')
                .starts_with("><svg"),
            "{id} has no SVG"
        );
    }
    assert!(dom.contains("<polyline") && dom.contains("<circle"));
    assert!(dom.contains("recovery rate"));
}

/// `enact view` on a training run (RL episodes as rollout records, held-out evaluations
/// under `eval/`): every file is listed and served (plain HTTP, no browser needed).
#[test]
fn the_viewer_serves_rollout_and_train_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("train-fixture");
    std::fs::create_dir_all(dir.join("eval")).unwrap();
    let record = serde_json::json!({
        "format_version": 1,
        "episode_id": "e",
        "task_id": "calc-rl",
        "sample_index": 2,
        "episode": Fixture::new("calc-rl", true).to_json().unwrap(),
    });
    std::fs::write(dir.join("episodes.jsonl"), format!("{record}\n")).unwrap();
    std::fs::write(
        dir.join("eval/step-00000-before.jsonl"),
        format!(
            "{}\n",
            Fixture::new("calc-held-out", false).to_json().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
    let viewer = Viewer::start(&dir);
    let rl: serde_json::Value = serde_json::from_str(&viewer.get("/api/episodes?file=0")).unwrap();
    assert_eq!(rl["items"][0]["task_id"], "calc-rl");
    assert_eq!(rl["items"][0]["sample_index"], 2);
    let held_out: serde_json::Value =
        serde_json::from_str(&viewer.get("/api/episodes?file=1&success=false")).unwrap();
    assert_eq!(held_out["total"], 1);
    assert_eq!(held_out["items"][0]["task_id"], "calc-held-out");
    let list = viewer.get("/?file=1");
    assert!(list.contains("eval/step-00000-before.jsonl"), "{list}");
    let page = viewer.get("/episode/0/0");
    assert!(page.contains("task <b>calc-rl</b>"), "{page}");
    assert!(viewer.get("/episode/0/5").contains("does not exist"));
}

/// The same in run directories the binary wrote itself: a calc eval under a thinking budget
/// with failing tools (forced stop text, tool errors, decisions), and a team eval (sub-agents).
#[test]
fn the_viewer_renders_real_runs_of_thinking_noise_and_a_team() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let eval = |runs: &str, args: &[&str]| -> PathBuf {
        let out = Command::new(env!("CARGO_BIN_EXE_enact"))
            .current_dir(tmp.path())
            .args(["eval", "--model", "scripted", "--runs-dir", runs])
            .args(args)
            .output()
            .unwrap();
        // Exit 1 is a run whose episodes all failed (the scripted replay runs out of turns
        // when tools fail): its directory is what the viewer is for.
        assert!(
            out.status.success() || out.status.code() == Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        run_dir_in(&tmp.path().join(runs))
    };
    let profile = tmp.path().join("profile");
    let thinking = eval(
        "thinking",
        &[
            "--env",
            "calc",
            "-n",
            "3",
            "--thinking",
            "budget:4",
            "--noise",
            "fail=0.5,seed=3",
        ],
    );
    let viewer = Viewer::start(&thinking);
    let pages: String = (0..3)
        .map(|i| dump_dom(&browser, &format!("{}/episode/0/{i}", viewer.url), &profile))
        .collect();
    for (what, needle) in [
        ("a forced segment", "<tr class=\"forced\">"),
        ("the stop-thinking text", "Considering the limited time"),
        ("a failed tool result", "tool-error"),
        (
            "a thinking decision",
            "thinking decision: <b>think, budget 4",
        ),
    ] {
        assert!(pages.contains(needle), "{what} ({needle}) not rendered");
    }
    drop(viewer);

    let team_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/team-research.toml");
    let team = eval(
        "team",
        &[
            "--env",
            "multisearch",
            "-n",
            "1",
            "--team",
            team_file.to_str().unwrap(),
        ],
    );
    let viewer = Viewer::start(&team);
    let page = dump_dom(&browser, &format!("{}/episode/0/0", viewer.url), &profile);
    assert!(page.contains("sub-agent <b>researcher</b>"), "{page}");
}

/// The one run directory `enact eval` made under `root`.
fn run_dir_in(root: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

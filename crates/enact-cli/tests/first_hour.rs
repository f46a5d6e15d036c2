//! What a newcomer meets in the first hour: settings whose messages name their source, exit
//! codes that mean something, names that are checked, live output, Ctrl-C, true help.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `enact` binary in `dir`, with none of the caller's ENACT_* or colour settings.
fn enact(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_enact"));
    c.current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("ENACT_") && k != "ENACT_CACHE")
            || k == "NO_COLOR"
            || k == "CLICOLOR_FORCE"
        {
            c.env_remove(k);
        }
    }
    c
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn model_settings_name_where_they_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    // With --threads, ENACT_WEIGHTS used to be ignored.
    let out = enact(tmp.path())
        .args(["run", "--model", "default", "--threads", "1"])
        .env("ENACT_WEIGHTS", "bogus")
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("ENACT_WEIGHTS=bogus is not a weight format"),
        "{err}"
    );

    // A bad --weights is named as the flag, not as the variable.
    let out = enact(tmp.path())
        .args(["run", "--model", "default", "--weights", "bogus"])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(
        err.contains("--weights bogus is not a weight format"),
        "{err}"
    );
    assert!(!err.contains("ENACT_WEIGHTS="), "{err}");

    // generate and bench read the same settings.
    let out = enact(tmp.path())
        .args(["generate", "--prompt", "hi"])
        .env("ENACT_WEIGHTS", "bogus")
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(err.contains("ENACT_WEIGHTS=bogus"), "{err}");
    let out = enact(tmp.path())
        .args(["bench", "generate"])
        .env("ENACT_THREADS", "many")
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(
        err.contains("ENACT_THREADS=many is not a thread count"),
        "{err}"
    );

    // --tokenizer is named as the flag; ENACT_TOKENIZER as the variable.
    let http = ["run", "--model", "http://127.0.0.1:9/v1", "--runs-dir", "r"];
    let out = enact(tmp.path())
        .args(http)
        .args(["--tokenizer", "default"])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(err.contains("--tokenizer default does not exist"), "{err}");
    let out = enact(tmp.path())
        .args(http)
        .env("ENACT_TOKENIZER", "nowhere")
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(
        err.contains("ENACT_TOKENIZER=nowhere does not exist"),
        "{err}"
    );

    // The help shows each variable next to its flag.
    let out = enact(tmp.path()).args(["eval", "--help"]).output().unwrap();
    let (help, _) = text(&out);
    for var in ["ENACT_THREADS", "ENACT_WEIGHTS", "ENACT_TOKENIZER"] {
        assert!(help.contains(&format!("[env: {var}")), "{help}");
    }
}

/// Task files whose MCP tool cannot start: every episode ends in an environment error.
fn broken_tasks(dir: &Path) {
    for id in ["a", "b"] {
        let d = dir.join("tasks").join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("task.toml"),
            format!(
                r#"[task]
id = "broken-{id}"
split = "test"
prompt = "What is 1?"

[[tools]]
kind = "mcp"
command = ["/nonexistent/enact-mcp-server"]
timeout_secs = 5

[verifier]
kind = "builtin"
checks = [ {{ type = "answer_equals", value = "1", exact = true }} ]

[reference]
turns = ["1"]
"#
            ),
        )
        .unwrap();
    }
}

#[test]
fn a_run_where_every_episode_fails_exits_non_zero_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    broken_tasks(tmp.path());
    let out = enact(tmp.path())
        .args(["eval", "--env", "tasks:tasks", "-n", "5", "--runs-dir", "r"])
        .output()
        .unwrap();
    let (table, err) = text(&out);
    assert!(!out.status.success(), "{table}{err}");
    assert!(
        err.starts_with("error: every episode failed: environment reset failed"),
        "{err}"
    );
    // The table counts each termination reason and shows an example message.
    assert!(table.contains("terminations: error 2"), "{table}");
    assert!(table.contains("e.g. environment reset failed"), "{table}");
    assert!(table.contains("/nonexistent/enact-mcp-server"), "{table}");
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::only_run_dir(&tmp.path().join("r")).join("metrics.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["terminations"][0]["reason"], "error");
    assert_eq!(metrics["terminations"][0]["count"], 2);

    let out = enact(tmp.path())
        .args(["run", "--env", "tasks:tasks", "--runs-dir", "r2"])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("error: every episode failed"), "{err}");
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut c = enact(tmp.path());
        c.args(["run", "--runs-dir", "r"]);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        text(&out).0
    };
    assert!(!run(&[]).contains('\x1b'), "piped output is plain");
    assert!(run(&[("CLICOLOR_FORCE", "1")]).contains("\x1b["));
    assert!(!run(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\x1b'));
}

#[test]
fn unknown_splits_indexes_and_empty_selections_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let fail = |args: &[&str]| {
        let out = enact(tmp.path())
            .args(args)
            .args(["--runs-dir", "r"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        text(&out).1
    };
    let err = fail(&["run", "--split", "tain"]);
    assert!(
        err.contains("unknown split \"tain\": use train or test"),
        "{err}"
    );
    let err = fail(&["eval", "--split", "tain"]);
    assert!(err.contains("unknown split \"tain\""), "{err}");

    broken_tasks(tmp.path());
    let err = fail(&["eval", "--env", "tasks:tasks", "--split", "train"]);
    assert!(
        err.contains("has no train tasks (test has 2 tasks)"),
        "{err}"
    );
    let err = fail(&["run", "--env", "tasks:tasks", "--index", "3"]);
    assert!(
        err.contains("--index 3 is out of range") && err.contains("has 2 task(s), indexes 0 to 1"),
        "{err}"
    );
    // Nothing was run, so no run directory was left behind.
    assert!(!tmp.path().join("r").exists());
}

#[test]
fn show_refuses_missing_episodes_and_empty_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = enact(tmp.path())
        .args(["run", "--runs-dir", "r"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let run = common::only_run_dir(&tmp.path().join("r"));
    let out = enact(tmp.path())
        .arg("show")
        .arg(&run)
        .args(["--index", "3"])
        .output()
        .unwrap();
    let (shown, err) = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        err.contains("--index 3 is out of range") && err.contains("has 1 episode(s)"),
        "{err}"
    );

    std::fs::write(run.join("trajectories.jsonl"), "").unwrap();
    let out = enact(tmp.path()).arg("show").arg(&run).output().unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("has no finished episode yet"), "{err}");
}

#[test]
fn run_prints_tokens_as_they_are_sampled_and_eval_draws_no_bar_off_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("s.json"), r#"["The answer is 42."]"#).unwrap();
    let out = enact(tmp.path())
        .args(["run", "--script", "s.json", "--live", "--runs-dir", "r"])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("The answer is 42."), "{err}");
    // Without --live and off a terminal, nothing streams.
    let out = enact(tmp.path())
        .args(["run", "--script", "s.json", "--runs-dir", "r"])
        .output()
        .unwrap();
    assert!(!text(&out).1.contains("The answer is 42."));

    let out = enact(tmp.path())
        .args(["eval", "-n", "3", "--runs-dir", "r"])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("episodes ·") && !err.contains('\x1b'),
        "{err}"
    );
}

#[test]
fn the_first_ctrl_c_finishes_running_episodes_and_writes_an_interrupted_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let child = enact(tmp.path())
        .args([
            "eval",
            "-n",
            "100000",
            "--concurrency",
            "1",
            "--runs-dir",
            "r",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until episodes are being written, then interrupt.
    let started = Instant::now();
    let runs = tmp.path().join("r");
    loop {
        let written = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| {
                std::fs::read_to_string(e.unwrap().path().join("trajectories.jsonl")).ok()
            })
            .is_some_and(|t| t.lines().count() >= 2);
        if written {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no episode was written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    let run = common::only_run_dir(&runs);
    assert!(
        stderr.contains("interrupted: admitting no more episodes"),
        "{stderr}"
    );
    let name = run.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr.contains(&name), "where the run is: {stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["interrupted"], true);
    let episodes = metrics["episodes"].as_u64().unwrap();
    assert!((2..100000).contains(&episodes), "{metrics}");
    assert_eq!(
        metrics["not_run"].as_u64().unwrap() + episodes,
        100000,
        "{metrics}"
    );
    let lines = std::fs::read_to_string(run.join("trajectories.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, episodes);
    assert!(stdout.contains("interrupted:"), "{stdout}");
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let missing = enact_sandbox::detect().missing_for(enact_sandbox::IsolationLevel::Full);
    if !enact_testkit::available(
        enact_testkit::Requirement::Sandbox,
        "full sandbox isolation",
        &missing,
    ) {
        return;
    }
    // One task whose reference solution calls a tool that takes a minute.
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("tasks/slow");
    std::fs::create_dir_all(task.join("workspace")).unwrap();
    std::fs::write(
        task.join("task.toml"),
        r#"[task]
id = "slow"
prompt = "Wait, then say 1."

[workspace]
dir = "workspace"

[[tools]]
kind = "command"
name = "wait"
description = "waits a minute"
command = ["sleep", "60"]
timeout_secs = 120

[verifier]
kind = "builtin"
checks = [ { type = "answer_equals", value = "1", exact = true } ]

[reference]
turns = ['<tool_call>{"name": "wait", "arguments": {}}</tool_call>', "1"]
"#,
    )
    .unwrap();
    let mut child = enact(tmp.path())
        .args(["eval", "--env", "tasks:tasks", "--runs-dir", "r"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let interrupt = |pid: u32| {
        let kill = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    };
    // The listener exists once the run directory has its configuration.
    let started = Instant::now();
    while !std::fs::read_dir(tmp.path().join("r"))
        .ok()
        .and_then(|mut d| d.next())
        .is_some_and(|e| e.unwrap().path().join("config.toml").exists())
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(child.id());
    // Wait until the first interrupt is acknowledged, then send the second.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "enact ended before acknowledging Ctrl-C: {seen}");
        seen.push_str(&line);
        if line.contains("interrupted: admitting no more episodes") {
            break;
        }
    }
    interrupt(child.id());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted twice: exiting now"), "{rest}");
    // It did not wait for the episode: nothing was summarised.
    let run = common::only_run_dir(&tmp.path().join("r"));
    assert!(!run.join("metrics.json").exists());
}

#[test]
fn environments_and_sandbox_errors_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = enact(tmp.path()).arg("envs").output().unwrap();
    let (listed, _) = text(&out);
    assert!(
        listed.contains("tasks:DIR") && listed.contains("remote:URL"),
        "{listed}"
    );
    let out = enact(tmp.path())
        .args(["run", "--env", "nope"])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(
        err.contains("tasks:DIR") && err.contains("remote:"),
        "{err}"
    );

    // A missing workspace is said once, with what to do.
    let out = enact(tmp.path())
        .args([
            "sandbox",
            "exec",
            "--workspace",
            "/nonexistent/ws",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("--workspace /nonexistent/ws: no such directory"),
        "{err}"
    );
    assert_eq!(err.matches("No such file or directory").count(), 0, "{err}");
}

#[test]
fn a_missing_command_in_the_sandbox_is_not_a_sandbox_problem() {
    let missing = enact_sandbox::detect().missing_for(enact_sandbox::IsolationLevel::Full);
    if !enact_testkit::available(
        enact_testkit::Requirement::Sandbox,
        "full sandbox isolation",
        &missing,
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = enact(tmp.path())
        .args(["sandbox", "exec", "--", "nosuchcmd-enact"])
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("nosuchcmd-enact: command not found"), "{err}");
    assert!(!err.contains("sandbox check"), "{err}");
}

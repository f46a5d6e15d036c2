//! End-to-end tests of the environment kinds (search, api, noisy, task files, MCP) through
//! the real agent loop with a scripted policy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use enact_agent::{Agent, AgentConfig};
use enact_core::{CheckStatus, Environment, Episode, Task, Termination};
use enact_env::noisy::{NoiseConfig, NoisyEnv, NoisySuite};
use enact_env::taskfile::{TaskFileSuite, TaskSpec};
use enact_env::{Suite, find_suite};
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, ScriptedPolicy};
use serde_json::json;

fn agent(turns: Vec<String>) -> Agent {
    let tokenizer = Arc::new(ByteTokenizer::new());
    Agent::new(
        Arc::new(ScriptedPolicy::new(turns, tokenizer.clone())),
        tokenizer,
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    )
    .with_config(AgentConfig {
        max_turns: 40,
        max_context_tokens: 200_000,
        max_tokens_per_turn: 8192,
        ..AgentConfig::default()
    })
}

async fn run(suite: &dyn Suite, task: &Task, turns: Vec<String>) -> Episode {
    let mut env = suite.make(task).unwrap();
    let v = suite.verifier();
    agent(turns).run(task, env.as_mut(), Some(v.as_ref())).await
}

async fn reference_scores_one(suite: &dyn Suite, n: usize) {
    for split in ["train", "test"] {
        let tasks = suite.tasks(split, n, 3);
        assert_eq!(tasks.len(), n, "{} {split}", suite.name());
        for task in tasks {
            let turns = suite.reference_solution(&task).expect("reference solution");
            let ep = run(suite, &task, turns).await;
            assert_eq!(
                ep.outcome.reward,
                1.0,
                "{}: task {} ({}) scored {:?}; termination {:?}; errors {:?}; verdict {:?}",
                suite.name(),
                task.id,
                task.prompt,
                ep.outcome.reward,
                ep.outcome.termination,
                ep.outcome.errors,
                ep.verdict
            );
            assert!(ep.outcome.success);
            assert_eq!(ep.outcome.progress, 1.0);
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn has_python() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

// ---------------------------------------------------------------- registry

#[test]
fn every_kind_is_registered() {
    let names: Vec<String> = enact_env::registry()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    for n in [
        "calc",
        "search",
        "multisearch",
        "api",
        "noisy-calc",
        "noisy-api",
    ] {
        assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
    }
}

// ---------------------------------------------------------------- search

#[tokio::test]
async fn search_reference_solutions_score_one() {
    reference_scores_one(find_suite("search").unwrap().as_ref(), 6).await;
}

#[tokio::test]
async fn multisearch_reference_solutions_score_one() {
    reference_scores_one(find_suite("multisearch").unwrap().as_ref(), 3).await;
}

#[tokio::test]
async fn search_wrong_answer_scores_zero_with_progress() {
    let suite = find_suite("search").unwrap();
    let task = suite.tasks("test", 1, 9).remove(0);
    let mut turns = suite.reference_solution(&task).unwrap();
    let hops = turns.len() - 2; // search, reads..., answer
    // Read only the first supporting document, then answer wrongly.
    turns.truncate(2);
    turns.push("Nobody Inparticular".into());
    let ep = run(suite.as_ref(), &task, turns).await;
    assert_eq!(ep.outcome.reward, 0.0);
    assert!(!ep.outcome.success);
    let expected = 1.0 / (hops as f64 + 1.0);
    assert!(
        (ep.outcome.progress - expected).abs() < 1e-9,
        "{} vs {expected}",
        ep.outcome.progress
    );
}

#[tokio::test]
async fn search_tools_rank_and_reject_bad_arguments() {
    let suite = find_suite("search").unwrap();
    let task = suite.tasks("train", 1, 1).remove(0);
    let turns = vec![
        r#"<tool_call>{"name": "search", "arguments": {"query": 7}}</tool_call>"#.to_string(),
        r#"<tool_call>{"name": "read_document", "arguments": {"id": "nope-1"}}</tool_call>"#.to_string(),
        r#"<tool_call>{"name": "search", "arguments": {"query": "River city founded", "k": 3}}</tool_call>"#.to_string(),
        "x".into(),
    ];
    let ep = run(suite.as_ref(), &task, turns).await;
    assert_eq!(ep.outcome.tool_errors, 2, "{:?}", ep.outcome.errors);
    let tool_msgs: Vec<&str> = ep
        .messages
        .iter()
        .filter(|m| m.role == enact_core::Role::Tool)
        .map(|m| m.content.as_str())
        .collect();
    assert!(
        tool_msgs[0].contains("invalid arguments"),
        "{}",
        tool_msgs[0]
    );
    assert!(tool_msgs[1].contains("no document"), "{}", tool_msgs[1]);
    assert!(tool_msgs[2].starts_with("1. ["), "{}", tool_msgs[2]);
    assert_eq!(
        tool_msgs[2].lines().filter(|l| !l.starts_with(' ')).count(),
        3
    );
}

// ---------------------------------------------------------------- api

#[tokio::test]
async fn api_reference_solutions_score_one() {
    reference_scores_one(find_suite("api").unwrap().as_ref(), 9).await;
}

#[tokio::test]
async fn api_partial_work_gets_partial_progress() {
    let suite = find_suite("api").unwrap();
    let task = suite
        .tasks("test", 30, 4)
        .into_iter()
        .find(|t| t.env["template"] == "escalate")
        .unwrap();
    let mut turns = suite.reference_solution(&task).unwrap();
    // Stop after creating the ticket: not assigned, no confirmation.
    turns.truncate(2);
    turns.push("I opened your ticket.".into());
    turns.push("Bye.".into());
    let ep = run(suite.as_ref(), &task, turns).await;
    assert_eq!(ep.outcome.reward, 0.0);
    let v = ep.verdict.unwrap();
    let passed: Vec<&str> = v
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Passed)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        passed,
        vec!["ticket_created", "priority_high", "authorized_only"],
        "{:?}",
        v.checks
    );
    assert!((v.progress - 3.0 / 6.0).abs() < 1e-9);
    // The user simulator spoke again after the first reply.
    assert!(
        ep.messages
            .iter()
            .filter(|m| m.role == enact_core::Role::User)
            .count()
            >= 2
    );
}

#[tokio::test]
async fn api_policy_violation_is_an_error_observation_and_changes_nothing() {
    let suite = find_suite("api").unwrap();
    let task = suite
        .tasks("train", 30, 2)
        .into_iter()
        .find(|t| t.env["template"] == "policy_limit")
        .unwrap();
    let amount = task.env["amount"].as_i64().unwrap();
    let (a, b) = (
        task.env["account"].as_str().unwrap(),
        task.env["other"].as_str().unwrap(),
    );
    let turns = vec![
        format!(
            r#"<tool_call>{{"name": "transfer_credit", "arguments": {{"from_account": "{a}", "to_account": "{b}", "amount": {amount}}}}}</tool_call>"#
        ),
        r#"<tool_call>{"name": "create_ticket", "arguments": {"title": "x"}}</tool_call>"#.into(),
        "Sorry, I cannot.".into(),
        "Bye.".into(),
    ];
    let ep = run(suite.as_ref(), &task, turns).await;
    assert_eq!(ep.outcome.tool_errors, 2);
    assert!(
        ep.messages
            .iter()
            .any(|m| m.content.contains("policy violation"))
    );
    assert!(
        ep.messages
            .iter()
            .any(|m| m.content.contains("missing required property"))
    );
    let v = ep.verdict.unwrap();
    assert_eq!(v.reward, 0.0);
    assert!(
        v.checks
            .iter()
            .any(|c| c.name == "single_transfer" && c.status == CheckStatus::Failed)
    );
}

// ---------------------------------------------------------------- noisy

#[tokio::test]
async fn noisy_suites_reference_solutions_recover_and_score_one() {
    for name in ["noisy-calc", "noisy-api"] {
        reference_scores_one(find_suite(name).unwrap().as_ref(), 8).await;
    }
}

#[tokio::test]
async fn noisy_wrapper_counts_recoveries() {
    let cfg = NoiseConfig::parse("fail=0.5,truncate=0.3,junk=0.3,delay=0.2:1ms,seed=11").unwrap();
    let suite = NoisySuite::new(find_suite("search").unwrap(), cfg.clone());
    let mut injected = 0;
    for task in suite.tasks("test", 6, 0) {
        let base = find_suite("search")
            .unwrap()
            .reference_solution(&task)
            .unwrap();
        let turns = suite.reference_solution(&task).unwrap();
        let ep = run(&suite, &task, turns.clone()).await;
        assert_eq!(ep.outcome.reward, 1.0, "{:?}", ep.outcome.errors);
        let retries = turns.len() - base.len();
        // Every injected failure is an error observation the agent recovered from.
        assert_eq!(ep.outcome.tool_errors as usize, retries);
        assert_eq!(
            ep.outcome
                .errors
                .iter()
                .filter(|e| e.recovered && e.message.contains("service unavailable"))
                .count(),
            retries
        );
        injected += retries;
        let tool_text: String = ep.messages.iter().map(|m| m.content.clone()).collect();
        if ep.outcome.tool_calls > 4 {
            assert!(
                tool_text.contains("[output truncated by the service")
                    || tool_text.contains("[debug]")
                    || tool_text.contains("[notice]")
                    || tool_text.contains("[metrics]")
                    || tool_text.contains("[ad]")
                    || retries > 0
            );
        }
    }
    assert!(
        injected > 0,
        "a 50% failure rate injected nothing in 6 episodes"
    );
}

#[tokio::test]
async fn injected_failures_never_reach_the_environment() {
    let suite = find_suite("api").unwrap();
    let task = suite.tasks("test", 1, 0).remove(0);
    let cfg = NoiseConfig::parse("fail=1").unwrap();
    let mut env = NoisyEnv::new(suite.make(&task).unwrap(), cfg);
    env.reset(&task).await.unwrap();
    let before = env.submission().await.unwrap().state;
    let call = enact_core::ToolCall {
        id: "c1".into(),
        name: "create_ticket".into(),
        arguments: json!({"account_id": "A100", "title": "x", "priority": "low"}),
    };
    for _ in 0..5 {
        match env
            .step(enact_core::Action::ToolCall(call.clone()))
            .await
            .unwrap()
        {
            enact_core::StepOutcome::ToolResult(r) => {
                assert!(r.is_error && r.content.contains("try again"))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(env.submission().await.unwrap().state, before);
    assert_eq!(env.stats().failures, 5);
}

// ---------------------------------------------------------------- task files

/// Whether Python and a usable sandbox are here (otherwise the skip is recorded).
async fn python_and_sandbox() -> bool {
    if !has_python() {
        enact_testkit::skip(
            enact_testkit::Requirement::Python,
            "python3 is not installed",
        );
        return false;
    }
    tokio::task::spawn_blocking(sandbox_usable).await.unwrap()
}

fn sandbox_usable() -> bool {
    let caps = enact_sandbox_probe();
    if !caps {
        enact_testkit::skip(
            enact_testkit::Requirement::Sandbox,
            "no sandbox isolation on this machine (enact_sandbox::detect)",
        );
    }
    caps
}

fn enact_sandbox_probe() -> bool {
    // Task files default to level = "auto", which needs namespaces.
    let t = tempfile::tempdir().unwrap();
    write_task(
        t.path(),
        "probe",
        r#"[[tools]]
kind = "command"
name = "hi"
description = "say hi"
command = ["true"]
"#,
        r#"[verifier]
kind = "builtin"
checks = [{ type = "answer_contains", value = "x" }]"#,
    );
    let suite = TaskFileSuite::load(t.path()).unwrap();
    let task = suite.tasks("test", 1, 0).remove(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut env = suite.make(&task).unwrap();
        match env.reset(&task).await {
            Ok(_) => true,
            Err(e) => {
                eprintln!("sandbox probe: {e}");
                false
            }
        }
    })
}

fn write_task(dir: &Path, id: &str, tools: &str, verifier: &str) {
    std::fs::create_dir_all(dir.join("workspace")).unwrap();
    std::fs::create_dir_all(dir.join("hidden")).unwrap();
    std::fs::write(
        dir.join("task.toml"),
        format!("[task]\nid = \"{id}\"\nprompt = \"do it\"\n\n[workspace]\ndir = \"workspace\"\n\n[hidden]\ndir = \"hidden\"\n\n{tools}\n{verifier}\n"),
    )
    .unwrap();
}

#[tokio::test]
async fn example_task_files_score_one() {
    if !python_and_sandbox().await {
        return;
    }
    let dir = repo_root().join("examples/tasks");
    let suite = find_suite(&format!("tasks:{}", dir.display())).unwrap();
    let tasks = suite.tasks("test", 10, 0);
    assert_eq!(tasks.len(), 3);
    for task in tasks {
        let ep = run(
            suite.as_ref(),
            &task,
            suite.reference_solution(&task).unwrap(),
        )
        .await;
        assert_eq!(
            ep.outcome.reward, 1.0,
            "{}: {:?} {:?} {:?}",
            task.id, ep.outcome.termination, ep.outcome.errors, ep.verdict
        );
        assert_eq!(ep.outcome.tool_errors, 0, "{:?}", ep.outcome.errors);
    }
    // The unfixed workspace fails the hidden checks (with partial progress), and the
    // visible test tool reports the failure as an error observation.
    let task = suite
        .tasks("test", 10, 0)
        .into_iter()
        .find(|t| t.id == "fix-mean")
        .unwrap();
    let ep = run(
        suite.as_ref(),
        &task,
        vec![
            r#"<tool_call>{"name": "run_tests", "arguments": {}}</tool_call>"#.into(),
            "done".into(),
        ],
    )
    .await;
    assert_eq!(ep.outcome.reward, 0.0);
    assert_eq!(ep.outcome.tool_errors, 1);
    let v = ep.verdict.unwrap();
    assert_eq!(v.checks.len(), 5, "{:?}", v.checks);
    assert!((v.progress - 0.2).abs() < 1e-9, "{:?}", v.checks);
}

#[test]
fn task_file_errors_name_file_and_field() {
    let t = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, &str)> = vec![
        (
            "[task]\nid = \"a\"\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"answer_equals\", value=\"1\"}]\n",
            "prompt",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\nsplit = \"dev\"\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"answer_equals\", value=\"1\"}]\n",
            "task.split",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\n[workspace]\ndir = \"nope\"\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"answer_equals\", value=\"1\"}]\n",
            "workspace.dir",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\n[workspace]\ndir = \"../x\"\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"answer_equals\", value=\"1\"}]\n",
            "workspace.dir",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\n[[tools]]\nkind = \"builtin\"\nname = \"rm_rf\"\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"answer_equals\", value=\"1\"}]\n",
            "tools[0].name",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\n[[tools]]\nkind = \"command\"\nname = \"x\"\ndescription = \"d\"\ncommand = []\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"answer_equals\", value=\"1\"}]\n",
            "tools[0].command",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\n[verifier]\nkind = \"builtin\"\nchecks = []\n",
            "verifier.checks",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\n[verifier]\nkind = \"magic\"\n",
            "verifier",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\ncolour = 1\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"answer_equals\", value=\"1\"}]\n",
            "colour",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\n[sandbox]\nlevel = \"max\"\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"answer_equals\", value=\"1\"}]\n",
            "sandbox.level",
        ),
        (
            "[task]\nid = \"a\"\nprompt = \"p\"\n[verifier]\nkind = \"builtin\"\nchecks = [{type=\"file_equals\", path=\"a\", expected_file=\"b\"}]\n",
            "expected_file",
        ),
        ("[task\nid = 1", "task.toml"),
    ];
    for (text, field) in cases {
        std::fs::write(t.path().join("task.toml"), text).unwrap();
        let e = TaskSpec::load(t.path()).unwrap_err().to_string();
        assert!(e.contains("task.toml"), "{e}");
        assert!(e.contains(field), "expected {field:?} in: {e}");
    }
    let e = TaskFileSuite::load(&t.path().join("missing"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

#[tokio::test]
async fn builtin_checks_and_file_tools() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("hidden")).unwrap();
    std::fs::write(t.path().join("hidden/expected.txt"), "hello\n").unwrap();
    write_task(
        t.path(),
        "files",
        "[[tools]]\nkind = \"builtin\"\nname = \"write_file\"\n[[tools]]\nkind = \"builtin\"\nname = \"read_file\"\n[[tools]]\nkind = \"builtin\"\nname = \"list_files\"\n",
        "[verifier]\nkind = \"builtin\"\nchecks = [{type=\"file_equals\", path=\"out/a.txt\", expected_file=\"expected.txt\"}, {type=\"file_contains\", path=\"out/a.txt\", text=\"hell\"}, {type=\"answer_equals\", value=\"The Done!\"}]\n",
    );
    let suite = TaskFileSuite::load(t.path()).unwrap();
    let task = suite.tasks("test", 5, 0).remove(0);
    let turns = vec![
        r#"<tool_call>{"name": "write_file", "arguments": {"path": "out/a.txt", "content": "hello\n"}}</tool_call>"#.to_string(),
        r#"<tool_call>{"name": "read_file", "arguments": {"path": "../../etc/passwd"}}</tool_call>"#.to_string(),
        r#"<tool_call>{"name": "read_file", "arguments": {"path": "/etc/passwd"}}</tool_call>"#.to_string(),
        r#"<tool_call>{"name": "list_files", "arguments": {}}</tool_call>"#.to_string(),
        "done".into(),
    ];
    let ep = run(&suite, &task, turns).await;
    assert_eq!(ep.outcome.tool_errors, 2, "{:?}", ep.outcome.errors);
    assert_eq!(ep.outcome.reward, 1.0, "{:?}", ep.verdict);
    // The original workspace is untouched: the agent worked on a copy.
    assert!(!t.path().join("workspace/out").exists());
    let listing = &ep
        .messages
        .iter()
        .filter(|m| m.role == enact_core::Role::Tool)
        .nth(3)
        .unwrap()
        .content;
    assert!(listing.contains("out/a.txt"), "{listing}");
    // Hidden data never appears in the agent's workspace.
    assert!(!listing.contains("expected.txt"));
}

/// A command-verifier task whose grader script prints `results` (a Python expression
/// evaluated to write the results file) — or writes nothing when `results` is None.
fn verifier_task(dir: &Path, grader: &str) -> TaskFileSuite {
    write_task(
        dir,
        "cmdv",
        "",
        "[verifier]\nkind = \"command\"\ncommand = [\"python3\", \"{hidden}/grade.py\"]\ntimeout_secs = 20\nexpect = [\"a\"]\n",
    );
    std::fs::write(dir.join("hidden/grade.py"), grader).unwrap();
    TaskFileSuite::load(dir).unwrap()
}

#[tokio::test]
async fn command_verifier_results_are_strict() {
    if !python_and_sandbox().await {
        return;
    }
    let write = |body: &str| {
        format!("import os, sys\nopen(os.environ['ENACT_RESULTS'], 'w').write({body:?})\n")
    };
    let cases: Vec<(String, Option<f64>, &str)> = vec![
        // all passed, exit code non-zero (ignored)
        (
            write(r#"{"checks":[{"name":"a","status":"passed"}]}"#) + "sys.exit(3)\n",
            Some(1.0),
            "passed",
        ),
        // exit code zero but a failed check
        (
            write(r#"{"checks":[{"name":"a","status":"passed"},{"name":"b","status":"failed"}]}"#),
            Some(0.0),
            "failed",
        ),
        // skipped counts as failure
        (
            write(r#"{"checks":[{"name":"a","status":"skipped"}]}"#),
            Some(0.0),
            "skipped",
        ),
        // expected check missing
        (
            write(r#"{"checks":[{"name":"z","status":"passed"}]}"#),
            Some(0.0),
            "missing",
        ),
        // no results file at all, exit 0: a verifier error, never a success
        ("import sys\nsys.exit(0)\n".to_string(), None, "no results"),
        // malformed results
        (
            write("{\"checks\": [{\"name\": \"a\", \"status\": \"PASS\"}]}"),
            None,
            "status",
        ),
        (write("not json"), None, "results"),
    ];
    for (grader, reward, what) in cases {
        let t = tempfile::tempdir().unwrap();
        let suite = verifier_task(t.path(), &grader);
        let task = suite.tasks("test", 1, 0).remove(0);
        let ep = run(&suite, &task, vec!["done".into()]).await;
        match reward {
            Some(r) => {
                assert_eq!(ep.outcome.reward, r, "{what}: {:?}", ep.verdict);
                assert!(ep.verdict.is_some(), "{what}");
            }
            None => {
                assert!(ep.verdict.is_none(), "{what}: {:?}", ep.verdict);
                assert_eq!(ep.outcome.reward, 0.0);
                let e = ep
                    .outcome
                    .errors
                    .iter()
                    .find(|e| e.source == "verifier")
                    .expect(what);
                assert!(e.message.contains(what), "{what}: {}", e.message);
            }
        }
    }
}

#[tokio::test]
async fn command_verifier_sees_pristine_hidden_data_and_final_workspace() {
    if !python_and_sandbox().await {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("hidden")).unwrap();
    std::fs::write(t.path().join("hidden/secret.txt"), "s3cret").unwrap();
    let grader = r#"import os, json
ws, hid = os.environ['ENACT_WORKSPACE'], os.environ['ENACT_HIDDEN']
checks = []
checks.append({"name": "a", "status": "passed" if open(os.path.join(ws, 'answer.txt')).read() == 'forty-two' else "failed"})
checks.append({"name": "hidden_intact", "status": "passed" if open(os.path.join(hid, 'secret.txt')).read() == 's3cret' else "failed"})
try:
    open(os.path.join(hid, 'secret.txt'), 'w').write('x')
    checks.append({"name": "hidden_read_only", "status": "failed"})
except OSError:
    checks.append({"name": "hidden_read_only", "status": "passed"})
checks.append({"name": "answer_env", "status": "passed" if os.environ['ENACT_FINAL_ANSWER'] == 'ok' else "failed"})
json.dump({"checks": checks}, open(os.environ['ENACT_RESULTS'], 'w'))
"#;
    let suite = verifier_task(t.path(), grader);
    let task = suite.tasks("test", 1, 0).remove(0);
    // The agent has no command tool here; it writes through a second task with write_file.
    let mut env = suite.make(&task).unwrap();
    env.reset(&task).await.unwrap();
    let mut sub = env.submission().await.unwrap();
    std::fs::write(
        sub.workspace.as_ref().unwrap().join("answer.txt"),
        "forty-two",
    )
    .unwrap();
    sub.final_answer = Some("ok".into());
    let v = suite.verifier().verify(&task, &sub).await.unwrap();
    let is_ns = v
        .checks
        .iter()
        .any(|c| c.name == "hidden_read_only" && c.status == CheckStatus::Passed);
    assert!(is_ns, "{:?}", v.checks);
    assert_eq!(v.reward, 1.0, "{:?}", v.checks);
    assert_eq!(
        std::fs::read_to_string(t.path().join("hidden/secret.txt")).unwrap(),
        "s3cret"
    );
    env.close().await.unwrap();
}

#[tokio::test]
async fn mcp_tools_are_listed_and_called() {
    if !has_python() {
        enact_testkit::skip(
            enact_testkit::Requirement::Python,
            "python3 is not installed",
        );
        return;
    }
    let dir = repo_root().join("examples/tasks/unit-convert-mcp");
    let suite = TaskFileSuite::load(&dir).unwrap();
    let task = suite.tasks("test", 1, 0).remove(0);
    let mut env = suite.make(&task).unwrap();
    let reset = env.reset(&task).await.unwrap();
    let names: Vec<&str> = reset.tools.iter().map(|t| t.name.as_str()).collect();
    assert!(
        names.contains(&"convert") && names.contains(&"list_units"),
        "{names:?}"
    );
    let call = |args: serde_json::Value| {
        enact_core::Action::ToolCall(enact_core::ToolCall {
            id: "1".into(),
            name: "convert".into(),
            arguments: args,
        })
    };
    let ok = env
        .step(call(json!({"value": 1, "from_unit": "km", "to_unit": "m"})))
        .await
        .unwrap();
    let bad = env
        .step(call(
            json!({"value": 1, "from_unit": "km", "to_unit": "kg"}),
        ))
        .await
        .unwrap();
    let schema_bad = env.step(call(json!({"value": "x"}))).await.unwrap();
    env.close().await.unwrap();
    match (ok, bad, schema_bad) {
        (
            enact_core::StepOutcome::ToolResult(a),
            enact_core::StepOutcome::ToolResult(b),
            enact_core::StepOutcome::ToolResult(c),
        ) => {
            assert_eq!(a.content, "1000");
            assert!(!a.is_error);
            assert!(b.is_error && b.content.contains("cannot convert"), "{b:?}");
            assert!(
                c.is_error && c.content.contains("invalid arguments"),
                "{c:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // And end to end with the reference solution.
    let ep = run(&suite, &task, suite.reference_solution(&task).unwrap()).await;
    assert_eq!(
        ep.outcome.reward, 1.0,
        "{:?} {:?}",
        ep.outcome.errors, ep.verdict
    );
    assert_eq!(ep.outcome.termination, Termination::Finished);
}

#[tokio::test]
async fn task_file_noise_section_wraps_the_environment() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("workspace")).unwrap();
    std::fs::write(
        t.path().join("task.toml"),
        r#"[task]
id = "noisy-calc-file"
prompt = "Compute 6*7 and reply with the number."
[[tools]]
kind = "builtin"
name = "calculator"
[noise]
fail = 0.6
seed = 3
[verifier]
kind = "builtin"
checks = [{ type = "answer_equals", value = "42", exact = true }]
[reference]
turns = ['<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>', '<tool_call>{"name": "calculator", "arguments": {"expression": "42"}}</tool_call>', "42"]
"#,
    )
    .unwrap();
    let suite = TaskFileSuite::load(t.path()).unwrap();
    let task = suite.tasks("test", 1, 0).remove(0);
    let turns = suite.reference_solution(&task).unwrap();
    assert!(turns.len() > 3, "a 60% failure rate should need retries");
    let ep = run(&suite, &task, turns).await;
    assert_eq!(ep.outcome.reward, 1.0);
    assert!(ep.outcome.tool_errors > 0);
}

/// A 10 MiB final answer ends the episode with a clear error in the outcome (no reward, no
/// crash); it used to be taken whole and fail downstream.
#[tokio::test]
async fn an_oversized_final_answer_is_an_error_in_the_outcome() {
    let suite = find_suite("calc").unwrap();
    let task = suite.tasks("test", 1, 1).remove(0);
    let mut a = agent(vec!["7".repeat(10 << 20)]);
    a.config.max_tokens_per_turn = 11 << 20;
    a.config.max_context_tokens = 12 << 20;
    let mut env = suite.make(&task).unwrap();
    let v = suite.verifier();
    let ep = a.run(&task, env.as_mut(), Some(v.as_ref())).await;
    match &ep.outcome.termination {
        Termination::Error(e) => assert!(e.contains("final answer") && e.contains("limit"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ep.outcome.reward, 0.0);
}

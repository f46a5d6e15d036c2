//! Loopback tests of the wire protocol: enact's own server ⇄ RemoteEnv, the Python example
//! server ⇄ RemoteEnv, and failure modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use enact_agent::{Agent, AgentConfig};
use enact_core::{Action, EnvError, Environment, Termination};
use enact_env::Suite;
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, ScriptedPolicy};
use enact_remote::{RemoteClient, RemoteEnv, RemoteError, RemoteSuite, ServerConfig};

fn agent(turns: Vec<String>) -> Agent {
    let tokenizer = Arc::new(ByteTokenizer::new());
    Agent::new(
        Arc::new(ScriptedPolicy::new(turns, tokenizer.clone())),
        tokenizer,
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    )
    .with_config(AgentConfig {
        max_turns: 30,
        max_context_tokens: 100_000,
        ..AgentConfig::default()
    })
}

async fn start_enact_server() -> String {
    let (addr, _task) = enact_remote::spawn(
        "127.0.0.1:0".parse().unwrap(),
        enact_env::registry(),
        ServerConfig::default(),
    )
    .await
    .unwrap();
    format!("http://{addr}")
}

/// Runs reference episodes of `suite` and checks each scores 1.
async fn references_score_one(suite: &RemoteSuite, n: usize) {
    // Suite::tasks is synchronous (it blocks on a thread of its own).
    let tasks = tokio::task::block_in_place(|| suite.tasks("test", n, 1));
    assert_eq!(tasks.len(), n);
    for task in tasks {
        let turns = tokio::task::block_in_place(|| suite.reference_solution(&task)).unwrap();
        let mut env = suite.make(&task).unwrap();
        let v = suite.verifier();
        let ep = agent(turns)
            .run(&task, env.as_mut(), Some(v.as_ref()))
            .await;
        assert_eq!(
            ep.outcome.reward, 1.0,
            "{}: {:?} {:?} {:?}",
            task.id, ep.outcome.termination, ep.outcome.errors, ep.verdict
        );
        assert_eq!(ep.outcome.termination, Termination::Finished);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enact_serve_loopback_calc_and_api() {
    let base = start_enact_server().await;
    let calc = RemoteSuite::connect(&format!("{base}/calc"), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(calc.remote_name(), "calc");
    references_score_one(&calc, 3).await;
    // The multi-turn API suite (user turns travel over the wire too) and noisy tools.
    for name in ["api", "noisy-api", "search"] {
        let s = RemoteSuite::connect(&format!("{base}/{name}"), Duration::from_secs(30))
            .await
            .unwrap();
        references_score_one(&s, 3).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_are_graded_on_the_server() {
    let base = start_enact_server().await;
    let suite = RemoteSuite::connect(&format!("{base}/calc"), Duration::from_secs(30))
        .await
        .unwrap();
    let task = tokio::task::block_in_place(|| suite.tasks("test", 1, 5)).remove(0);
    let mut env = suite.make(&task).unwrap();
    let v = suite.verifier();
    let ep = agent(vec!["-1".into()])
        .run(&task, env.as_mut(), Some(v.as_ref()))
        .await;
    assert_eq!(ep.outcome.reward, 0.0);
    assert_eq!(ep.outcome.progress, 0.0);
    assert_eq!(ep.verdict.unwrap().checks.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_clear() {
    let base = start_enact_server().await;
    let client = RemoteClient::new(&base, Duration::from_secs(10)).unwrap();
    let h = client.health().await.unwrap();
    assert!(h.suites.contains(&"calc".to_string()));
    // Unknown suite.
    let e = client.create("nope").await.unwrap_err().to_string();
    assert!(
        e.contains("unknown suite \"nope\"") && e.contains("calc"),
        "{e}"
    );
    let e = RemoteSuite::connect(&format!("{base}/nope"), Duration::from_secs(5))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no suite \"nope\""), "{e}");
    // Step before reset.
    let id = client.create("calc").await.unwrap();
    let e = client
        .step(
            &id,
            Action::Message {
                content: "x".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(EnvError::from(e), EnvError::NotReset));
    // Unknown session.
    let e = client.submission("0000").await.unwrap_err().to_string();
    assert!(e.contains("no session"), "{e}");
    assert!(client.close(&id).await.unwrap());
    assert!(!client.close(&id).await.unwrap());
    // Malformed body.
    let raw = reqwest::Client::new();
    let r = raw
        .post(format!("{base}/v1/envs"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_gives_clear_errors_and_no_panic() {
    // A port that was free a moment ago and is closed now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let e = RemoteSuite::connect(&base, Duration::from_secs(5))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, RemoteError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("cannot reach the environment server"),
        "{e}"
    );
    let client = RemoteClient::new(&base, Duration::from_secs(5)).unwrap();
    let mut env = RemoteEnv::new(client, "calc");
    let task = enact_env::find_suite("calc")
        .unwrap()
        .tasks("test", 1, 0)
        .remove(0);
    let ep = agent(vec!["1".into()]).run(&task, &mut env, None).await;
    match &ep.outcome.termination {
        Termination::Error(m) => assert!(m.contains("cannot reach"), "{m}"),
        t => panic!("{t:?}"),
    }
    assert!(matches!(
        env.step(Action::Message {
            content: "x".into()
        })
        .await,
        Err(EnvError::NotReset)
    ));
    assert!(RemoteClient::new("ftp://x", Duration::from_secs(1)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dying_mid_episode_is_an_error_not_a_hang() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(enact_remote::serve(
        listener,
        enact_env::registry(),
        ServerConfig::default(),
    ));
    let client = RemoteClient::new(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
    let mut env = RemoteEnv::new(client, "calc");
    let task = enact_env::find_suite("calc")
        .unwrap()
        .tasks("test", 1, 0)
        .remove(0);
    env.reset(&task).await.unwrap();
    server.abort();
    let _ = server.await;
    let e = env
        .step(Action::Message {
            content: "1".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, EnvError::Remote(_)), "{e:?}");
}

struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_python_server() -> Option<(PyServer, String)> {
    if Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        enact_testkit::skip(
            enact_testkit::Requirement::Python,
            "python3 is not installed",
        );
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python_env/server.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = PyServer(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("first line names the address")
        .to_string();
    Some((server, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_env_over_loopback() {
    let Some((_server, url)) = start_python_server() else {
        return;
    };
    let suite = RemoteSuite::connect(&url, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(suite.remote_name(), "guess");
    references_score_one(&suite, 4).await;

    // A wrong answer after a few guesses: reward 0, partial progress from the server.
    let task = tokio::task::block_in_place(|| suite.tasks("train", 1, 9)).remove(0);
    let mut env = suite.make(&task).unwrap();
    let v = suite.verifier();
    let turns = vec![
        "<tool_call>\n{\"name\": \"guess\", \"arguments\": {\"number\": 500}}\n</tool_call>"
            .to_string(),
        "<tool_call>\n{\"name\": \"guess\", \"arguments\": {\"number\": 50}}\n</tool_call>"
            .to_string(),
        "0".into(),
    ];
    let ep = agent(turns)
        .run(&task, env.as_mut(), Some(v.as_ref()))
        .await;
    assert_eq!(ep.outcome.reward, 0.0);
    assert_eq!(ep.outcome.tool_errors, 1, "{:?}", ep.outcome.errors);
    let verdict = ep.verdict.unwrap();
    assert_eq!(verdict.checks.len(), 3);
    assert!(verdict.progress > 0.0 && verdict.progress < 1.0);
}

/// A task's thinking mode travels with the task over the protocol (`task.thinking`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_thinking_mode_travels_over_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let task_dir = dir.path().join("think");
    std::fs::create_dir(&task_dir).unwrap();
    std::fs::write(
        task_dir.join("task.toml"),
        "[task]\nid = \"think\"\nprompt = \"Say yes.\"\nthinking = \"budget:32/64\"\n\
         [verifier]\nkind = \"builtin\"\n[[verifier.checks]]\ntype = \"answer_contains\"\nvalue = \"yes\"\n",
    )
    .unwrap();
    let suite = enact_env::find_suite(&format!("tasks:{}", dir.path().display())).unwrap();
    let (addr, _server) = enact_remote::spawn(
        "127.0.0.1:0".parse().unwrap(),
        vec![suite.clone()],
        ServerConfig::default(),
    )
    .await
    .unwrap();
    let remote = RemoteSuite::connect(
        &format!("http://{addr}/{}", suite.name()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let tasks = tokio::task::block_in_place(|| remote.tasks("test", 1, 0));
    assert_eq!(
        tasks[0].thinking,
        Some("budget:32/64".parse().unwrap()),
        "{tasks:?}"
    );
}

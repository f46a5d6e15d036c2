//! The code and shell environments end to end through the real sandbox: every family's and
//! task kind's reference solution scores full reward with no flags; doing nothing scores 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use enact_agent::{Agent, AgentConfig};
use enact_core::{Episode, Task};
use enact_env::Suite;
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, ScriptedPolicy};
use enact_testkit::Requirement;

fn available() -> bool {
    let missing = enact_sandbox::detect().missing_for(enact_sandbox::IsolationLevel::Full);
    enact_testkit::available(Requirement::Sandbox, "full sandbox isolation", &missing)
        && enact_testkit::found(Requirement::Python, enact_verify::find_python())
}

async fn episode(suite: &dyn Suite, task: &Task, turns: Vec<String>) -> Episode {
    let tokenizer = Arc::new(ByteTokenizer::new());
    let agent = Agent::new(
        Arc::new(ScriptedPolicy::new(turns, tokenizer.clone())),
        tokenizer,
        Arc::new(ChatMlTemplate::default()),
        Arc::new(HermesParser),
    )
    .with_config(AgentConfig {
        max_context_tokens: 400_000,
        max_tokens_per_turn: 64_000,
        ..AgentConfig::default()
    });
    let mut env = suite.make(task).unwrap();
    let verifier = suite.verifier();
    agent.run(task, env.as_mut(), Some(verifier.as_ref())).await
}

async fn references_score_full(suite: &dyn Suite, n: usize) {
    for task in suite.tasks("test", n, 5) {
        let turns = suite.reference_solution(&task).unwrap();
        let ep = episode(suite, &task, turns).await;
        let v = ep.verdict.clone().expect("a verdict");
        assert_eq!(
            ep.outcome.reward, 1.0,
            "{} {}: {:?} {:?} {:?}",
            task.id, task.env, v.checks, v.flags, ep.outcome.errors
        );
        assert!(v.flags.is_empty(), "{}: {:?}", task.id, v.flags);
        assert!(ep.outcome.success);
        assert_eq!(ep.outcome.progress, 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_reference_solutions_score_full_reward() {
    if !available() {
        return;
    }
    references_score_full(
        &enact_env::code::CodeSuite,
        enact_env::code::Family::ALL.len(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_reference_solutions_score_full_reward() {
    if !available() {
        return;
    }
    references_score_full(
        &enact_env::shell::ShellSuite,
        enact_env::shell::ShellKind::ALL.len(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doing_nothing_scores_zero_with_partial_progress_reported() {
    if !available() {
        return;
    }
    for suite in [
        &enact_env::code::CodeSuite as &dyn Suite,
        &enact_env::shell::ShellSuite as &dyn Suite,
    ] {
        for task in suite.tasks("train", 2, 9) {
            let ep = episode(suite, &task, vec!["done".into()]).await;
            assert_eq!(ep.outcome.reward, 0.0, "{}", task.id);
            let v = ep.verdict.unwrap();
            assert!(!v.checks.is_empty());
            assert!(v.flags.is_empty(), "{:?}", v.flags);
        }
    }
}

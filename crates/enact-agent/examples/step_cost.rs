//! The agent loop's own CPU per tool step, as episodes get longer.
//!
//! Runs calc episodes of N calculator calls with a scripted policy (so nearly all the time is
//! the loop's: rendering, tokenizing, bookkeeping) under ChatML and Qwen3's Jinja template,
//! and prints the time per step for short and long episodes and their ratio: a loop whose
//! steps cost the same at every turn prints a ratio near 1.
//!
//! Then the baseline side by side: the suffixes of the same episodes found by rendering the
//! whole conversation after every turn (`context::suffix_after_turn`, what the loop did before)
//! and by `SuffixRenderer`'s window (what it does now), with their ratio.
//!
//! `cargo run -p enact-agent --example step_cost` (unoptimised builds give the same ratios).

#![allow(clippy::expect_used)] // fixed fixtures: a failure is a broken benchmark

use std::sync::Arc;
use std::time::Instant;

use enact_agent::context::{self, SuffixRenderer};
use enact_agent::{Agent, AgentConfig};
use enact_core::{
    ChatTemplate, Environment, Message, Policy, RenderOptions, Task, Tokenizer, ToolSpec,
};
use enact_env::Suite;
use enact_env::calc::{CalcEnv, CalcSuite};
use enact_model::{ByteTokenizer, ChatMlTemplate, HermesParser, JinjaTemplate, ScriptedPolicy};

const QWEN3: &str = include_str!("../../enact-model/tests/fixtures/templates/qwen3.jinja");
const CALL: &str = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"12345 * 6789\"}}\n</tool_call>";

fn agent(template: Arc<dyn ChatTemplate>, steps: usize) -> Agent {
    let mut turns = vec![CALL.to_string(); steps];
    turns.push("83810205".into());
    let tokenizer: Arc<dyn Tokenizer> = Arc::new(ByteTokenizer::new());
    let policy: Arc<dyn Policy> = Arc::new(ScriptedPolicy::new(turns, tokenizer.clone()));
    Agent::new(policy, tokenizer, template, Arc::new(HermesParser)).with_config(AgentConfig {
        max_turns: steps as u32 + 1,
        max_context_tokens: usize::MAX,
        ..AgentConfig::default()
    })
}

/// Mean microseconds per tool step over `episodes` episodes of `steps` tool steps.
async fn per_step_us(
    template: &Arc<dyn ChatTemplate>,
    task: &Task,
    steps: usize,
    episodes: usize,
) -> f64 {
    let started = Instant::now();
    for _ in 0..episodes {
        let agent = agent(template.clone(), steps);
        let ep = agent.run(task, &mut CalcEnv::new(), None).await;
        assert_eq!(ep.outcome.tool_calls as usize, steps, "{:?}", ep.outcome);
    }
    started.elapsed().as_secs_f64() * 1e6 / (episodes * steps) as f64
}

/// Mean microseconds per step to find the suffixes of an episode of `steps` tool steps, by
/// full renders (`full == true`) or by the window.
fn suffix_us(template: &dyn ChatTemplate, tools: &[ToolSpec], steps: usize, full: bool) -> f64 {
    let options = RenderOptions::default();
    let mut messages = vec![Message::system("Be exact."), Message::user("Compute.")];
    let mut renderer = SuffixRenderer::new(messages.len());
    let started = Instant::now();
    for turn in 1..=steps as u32 {
        let mut reply = Message::assistant("");
        reply.tool_calls = vec![enact_core::ToolCall {
            id: format!("call_{turn}_0"),
            name: "calculator".into(),
            arguments: serde_json::json!({"expression": "12345 * 6789"}),
        }];
        messages.push(reply);
        let new = [Message::tool(
            format!("call_{turn}_0"),
            "calculator",
            "83810205",
        )];
        let suffix = if full {
            context::suffix_after_turn(template, &messages, &new, tools, &options, turn)
        } else {
            renderer.suffix(template, &messages, &new, tools, &options, turn)
        };
        suffix.expect("the template extends");
        messages.extend(new);
    }
    started.elapsed().as_secs_f64() * 1e6 / steps as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let task = CalcSuite.tasks("test", 1, 7).remove(0);
    let templates: Vec<(&str, Arc<dyn ChatTemplate>)> = vec![
        ("chatml", Arc::new(ChatMlTemplate::default())),
        (
            "qwen3-jinja",
            Arc::new(JinjaTemplate::new(QWEN3, "qwen3").expect("the Qwen3 fixture parses")),
        ),
    ];
    println!("template      steps  µs/step   (vs 10 steps)");
    for (name, template) in &templates {
        let base = per_step_us(template, &task, 10, 40).await;
        println!("{name:<12} {:>6} {base:>8.1}   1.00", 10);
        for steps in [40, 160] {
            let us = per_step_us(template, &task, steps, 400 / steps).await;
            println!("{name:<12} {steps:>6} {us:>8.1}   {:.2}", us / base);
        }
    }

    let tools = CalcEnv::new()
        .reset(&task)
        .await
        .expect("the calc environment resets")
        .tools;
    println!("\nfinding the suffixes: full re-render (before) vs window (now)");
    println!("template      steps  full µs/step  window µs/step  full/window");
    for (name, template) in &templates {
        for steps in [10, 40, 160] {
            let full = suffix_us(template.as_ref(), &tools, steps, true);
            let window = suffix_us(template.as_ref(), &tools, steps, false);
            println!(
                "{name:<12} {steps:>6} {full:>13.1} {window:>15.1} {:>12.1}",
                full / window
            );
        }
    }
}

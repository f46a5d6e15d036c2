//! The viewer's pages, rendered on the server from the stored JSON: the episode list with
//! its filters, and one episode turn by turn. Working on `serde_json::Value` keeps fields
//! this version's types do not know (per-turn records, sub-agent `children`) renderable.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::index::{EpisodeIndex, Filter, Page};
use crate::svg::escape;

/// The stylesheet of the viewer and the report (embedded in the binary).
pub const CSS: &str = include_str!("../assets/view.css");

/// A whole HTML document with the stylesheet inline.
pub fn document(title: &str, header: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body><header>{header}</header><main>{body}</main></body></html>\n",
        escape(title)
    )
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn ok_fail(ok: bool) -> &'static str {
    if ok {
        "<span class=\"ok\">success</span>"
    } else {
        "<span class=\"fail\">failure</span>"
    }
}

fn query(file: usize, filter: &Filter, offset: usize) -> String {
    let mut q = format!("?file={file}&offset={offset}");
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            q.push_str(&format!("&{k}={}", url_encode(&v)));
        }
    };
    add("env", filter.env.clone());
    add("success", filter.success.map(|b| b.to_string()));
    add("flag", filter.flag.clone());
    add("termination", filter.termination.clone());
    add("task", filter.task.clone());
    q
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn select(name: &str, current: Option<&str>, options: &[(&str, &str)]) -> String {
    let mut s = format!("<select name=\"{name}\">");
    for (value, label) in options {
        let sel = if current == Some(*value) || (current.is_none() && value.is_empty()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            s,
            "<option value=\"{}\"{sel}>{}</option>",
            escape(value),
            escape(label)
        );
    }
    s.push_str("</select>");
    s
}

/// The episode list: file tabs, filters, one page of episodes and the page links.
pub fn list_page(
    run: &str,
    files: &[EpisodeIndex],
    file: usize,
    page: &Page<'_>,
    filter: &Filter,
    limit: usize,
) -> String {
    let mut b = String::new();
    if files.len() > 1 {
        b.push_str("<p class=\"files\">files: ");
        for (i, f) in files.iter().enumerate() {
            let name = f
                .path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let parent = f
                .path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy())
                .filter(|p| p == "eval")
                .map(|p| format!("{p}/"))
                .unwrap_or_default();
            if i == file {
                let _ = write!(b, "<b>{}{}</b> ", escape(&parent), escape(&name));
            } else {
                let _ = write!(
                    b,
                    "<a href=\"/?file={i}\">{}{}</a> ",
                    escape(&parent),
                    escape(&name)
                );
            }
        }
        b.push_str("</p>");
    }
    let Some(index) = files.get(file) else {
        return document(run, "enact view", "<p>no episode file</p>");
    };
    let (envs, terms, flags) = index.facets();
    let mut env_opts = vec![("", "any environment")];
    env_opts.extend(envs.iter().map(|e| (*e, *e)));
    let mut term_opts = vec![("", "any termination")];
    term_opts.extend(terms.iter().map(|e| (*e, *e)));
    let mut flag_opts = vec![
        ("", "flags: any or none"),
        ("any", "flagged"),
        ("none", "not flagged"),
    ];
    flag_opts.extend(flags.iter().map(|e| (*e, *e)));
    let success = filter.success.map(|s| if s { "true" } else { "false" });
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/\"><input type=\"hidden\" name=\"file\" value=\"{file}\">{} {} {} {} <label>task <input name=\"task\" value=\"{}\" size=\"12\"></label><button type=\"submit\">filter</button></form>",
        select("env", filter.env.as_deref(), &env_opts),
        select(
            "success",
            success,
            &[
                ("", "success or failure"),
                ("true", "successes"),
                ("false", "failures")
            ]
        ),
        select("flag", filter.flag.as_deref(), &flag_opts),
        select("termination", filter.termination.as_deref(), &term_opts),
        escape(filter.task.as_deref().unwrap_or(""))
    );
    let _ = write!(
        b,
        "<p id=\"count\">{} of {} episodes match; showing {}–{}</p>",
        page.total,
        index.entries.len(),
        if page.items.is_empty() {
            0
        } else {
            page.offset + 1
        },
        page.offset + page.items.len()
    );
    b.push_str("<table id=\"episodes\"><tr><th>#</th><th>task</th><th>env</th><th>result</th><th>reward</th><th>progress</th><th>turns</th><th>tool calls</th><th>tool errors</th><th>termination</th><th>flags</th><th>sub-agents</th></tr>");
    for e in &page.items {
        let _ = write!(
            b,
            "<tr class=\"episode\"><td><a href=\"/episode/{file}/{}\">{}</a></td><td>{}{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            e.index,
            e.index,
            escape(&e.task_id),
            e.sample_index.map(|s| format!(" #{s}")).unwrap_or_default(),
            escape(&e.env),
            ok_fail(e.success),
            e.reward,
            e.progress,
            e.turns,
            e.tool_calls,
            e.tool_errors,
            escape(&e.termination),
            escape(&e.flags.join(", ")),
            e.children
        );
    }
    b.push_str("</table><nav class=\"pages\">");
    if page.offset > 0 {
        let _ = write!(
            b,
            "<a id=\"prev\" href=\"/{}\">← previous</a>",
            query(file, filter, page.offset.saturating_sub(limit))
        );
    }
    if page.offset + page.items.len() < page.total {
        let _ = write!(
            b,
            "<a id=\"next\" href=\"/{}\">next →</a>",
            query(file, filter, page.offset + limit)
        );
    }
    b.push_str("</nav>");
    document(
        &format!("{run} · enact view"),
        &format!("<b>enact view</b> · {}", escape(run)),
        &b,
    )
}

/// One episode's page.
pub fn episode_page(run: &str, file: usize, n: usize, episode: &Value) -> String {
    let body = episode_body(episode, 0);
    let task = episode
        .pointer("/task/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    document(
        &format!("{task} · {run}"),
        &format!(
            "<a href=\"/?file={file}\">← {}</a> · episode {n} · task <b>{}</b>",
            escape(run),
            escape(task)
        ),
        &body,
    )
}

fn tokens_table(counts: &Value) -> String {
    let mut s = String::from("<table class=\"tokens\"><tr>");
    for k in ["prompt", "sampled", "thinking", "observation", "forced"] {
        let _ = write!(s, "<th>{k}</th>");
    }
    s.push_str("</tr><tr>");
    for k in ["prompt", "sampled", "thinking", "observation", "forced"] {
        let _ = write!(s, "<td class=\"num\">{}</td>", num(counts, k));
    }
    s.push_str("</tr></table>");
    s
}

fn versions(seg: &Value) -> String {
    let v: Vec<u64> = seg
        .get("policy_versions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) if a == b => format!("v{a}"),
        (Some(a), Some(b)) => format!("v{a}–v{b}"),
        _ => String::new(),
    }
}

/// A thinking decision in words: `think, budget 4: tool step` / `no thinking: …`, with the
/// route and a refined budget when there are; other shapes as their JSON.
fn decision_text(d: &Value) -> String {
    let Some(think) = d.get("think").and_then(Value::as_bool) else {
        return d.to_string();
    };
    let mut s = String::from(if think { "think" } else { "no thinking" });
    let u = |k: &str| d.get(k).and_then(Value::as_u64);
    if let Some(b) = u("budget") {
        s.push_str(&format!(", budget {b}"));
    }
    if let Some(m) = u("min") {
        s.push_str(&format!(", min {m}"));
    }
    if let Some(r) = u("refined_budget") {
        s.push_str(&format!(", refined to {r}"));
    }
    if let Some(route) = d.get("route").and_then(Value::as_str) {
        s.push_str(&format!(", route {route}"));
    }
    let reason = text(d, "reason");
    if !reason.is_empty() {
        s.push_str(&format!(": {reason}"));
    }
    s
}

/// The body of an episode (used again, nested, for each sub-agent child).
pub fn episode_body(ep: &Value, depth: usize) -> String {
    let mut b = String::new();
    let outcome = ep.get("outcome").cloned().unwrap_or(Value::Null);
    let termination = outcome
        .pointer("/termination/reason")
        .and_then(Value::as_str)
        .unwrap_or("");
    let _ = write!(
        b,
        "<section class=\"summary\"><p>{} · reward {:.3} · progress {:.3} · {} turn(s) · {} tool call(s), {} failed · termination <b class=\"termination\">{}</b>{} · {:.0} ms</p>",
        ok_fail(
            outcome
                .get("success")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
        num(&outcome, "reward"),
        num(&outcome, "progress"),
        num(&outcome, "turns"),
        num(&outcome, "tool_calls"),
        num(&outcome, "tool_errors"),
        escape(termination),
        outcome
            .pointer("/termination/detail")
            .and_then(Value::as_str)
            .map(|d| format!(": {}", escape(d)))
            .unwrap_or_default(),
        outcome
            .pointer("/timings/total_ms")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
    );
    if let Some(t) = outcome.get("tokens") {
        b.push_str(&tokens_table(t));
    }
    b.push_str("</section>");
    // Verdict: checks.
    if let Some(checks) = ep.pointer("/verdict/checks").and_then(Value::as_array) {
        b.push_str("<h3>checks</h3><table class=\"checks\"><tr><th>check</th><th>status</th><th>detail</th></tr>");
        for c in checks {
            let status = text(c, "status");
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                escape(text(c, "name")),
                if status == "passed" { "ok" } else { "fail" },
                escape(status),
                escape(text(c, "detail"))
            );
        }
        b.push_str("</table>");
    }
    if let Some(components) = outcome.get("reward_components").and_then(Value::as_object)
        && !components.is_empty()
    {
        b.push_str("<p>reward components: ");
        for (k, v) in components {
            let _ = write!(b, "{} {:.3} ", escape(k), v.as_f64().unwrap_or(0.0));
        }
        b.push_str("</p>");
    }
    for f in outcome
        .get("flags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = write!(
            b,
            "<div class=\"flag\">monitor <b>{}</b> ({}): {}</div>",
            escape(text(f, "monitor")),
            escape(text(f, "action")),
            escape(text(f, "detail"))
        );
    }
    // Turns: messages, segments, per-turn records and errors grouped by turn.
    let mut messages: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    let mut turn = 0u64;
    for m in ep
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if text(m, "role") == "assistant" {
            turn += 1;
        }
        messages.entry(turn).or_default().push(m);
    }
    let mut segments: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for s in ep
        .pointer("/trajectory/segments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        segments
            .entry(s.get("turn").and_then(Value::as_u64).unwrap_or(0))
            .or_default()
            .push(s);
    }
    let mut errors: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for e in outcome
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        errors
            .entry(e.get("turn").and_then(Value::as_u64).unwrap_or(0))
            .or_default()
            .push(e);
    }
    let mut records: BTreeMap<u64, &Value> = BTreeMap::new();
    for r in outcome
        .get("per_turn")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        records.insert(r.get("turn").and_then(Value::as_u64).unwrap_or(0), r);
    }
    let mut children: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for c in ep
        .get("children")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        children
            .entry(c.get("parent_turn").and_then(Value::as_u64).unwrap_or(0))
            .or_default()
            .push(c);
    }
    let last = [
        messages.keys().last(),
        segments.keys().last(),
        children.keys().last(),
        errors.keys().last(),
    ]
    .into_iter()
    .flatten()
    .max()
    .copied()
    .unwrap_or(0);
    for t in 0..=last {
        let turn_errors = errors.get(&t).cloned().unwrap_or_default();
        let _ = write!(
            b,
            "<section class=\"turn\" id=\"turn-{t}\"><h3>{}</h3>",
            if t == 0 {
                "prompt".to_string()
            } else {
                format!("turn {t}")
            }
        );
        if let Some(r) = records.get(&t) {
            let decision = r
                .get("decision")
                .filter(|d| !d.is_null())
                .map(decision_text)
                .unwrap_or_else(|| "none (free)".into());
            let _ = write!(
                b,
                "<div class=\"decision\">thinking decision: <b>{}</b> · thinking {} · answer {} · forced {} · observation {} tokens{}{}</div>",
                escape(&decision),
                num(r, "thinking_tokens"),
                num(r, "answer_tokens"),
                num(r, "forced_tokens"),
                num(r, "observation_tokens"),
                if r.get("budget_hit")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                {
                    " · <b>budget hit</b>"
                } else {
                    ""
                },
                r.get("model")
                    .and_then(Value::as_str)
                    .map(|m| format!(" · model {}", escape(m)))
                    .unwrap_or_default()
            );
        }
        for m in messages.get(&t).into_iter().flatten() {
            let role = text(m, "role");
            // A failed result is one the episode recorded as an error of this turn: a tool
            // error reads "<tool>: <result>", a call that did not parse is answered by
            // `invalid_tool_call`.
            let is_error = role == "tool" && {
                let name = text(m, "name");
                let content = text(m, "content");
                turn_errors.iter().any(|e| match text(e, "source") {
                    "tool" => text(e, "message") == format!("{name}: {content}"),
                    "parse" => name == "invalid_tool_call",
                    _ => false,
                })
            };
            let _ = write!(
                b,
                "<div class=\"msg {}{}\"><span class=\"role\">{}{}</span>",
                escape(role),
                if is_error { " tool-error" } else { "" },
                escape(role),
                m.get("name")
                    .and_then(Value::as_str)
                    .map(|n| format!(" · {}", escape(n)))
                    .unwrap_or_default()
            );
            if let Some(r) = m.get("reasoning").and_then(Value::as_str) {
                let _ = write!(b, "<div class=\"reasoning\">{}</div>", escape(r));
            }
            let content = text(m, "content");
            if !content.is_empty() {
                let _ = write!(b, "<div class=\"content\">{}</div>", escape(content));
            }
            for c in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let _ = write!(
                    b,
                    "<div class=\"tool-call\">→ {}({}) <small>[{}]</small></div>",
                    escape(text(c, "name")),
                    escape(&c.get("arguments").map(Value::to_string).unwrap_or_default()),
                    escape(text(c, "id"))
                );
            }
            b.push_str("</div>");
        }
        for e in &turn_errors {
            let _ = write!(
                b,
                "<div class=\"flag episode-error\">{} error{}: {}</div>",
                escape(text(e, "source")),
                if e.get("recovered").and_then(Value::as_bool).unwrap_or(false) {
                    " (went on)"
                } else {
                    " (ended the episode)"
                },
                escape(text(e, "message"))
            );
        }
        if let Some(segs) = segments.get(&t) {
            b.push_str("<table class=\"segments\"><tr><th>segment</th><th>kind</th><th>tokens</th><th>loss mask</th><th>policy versions</th><th>mean logprob</th><th>label</th><th>agent</th></tr>");
            for s in segs {
                let kind = text(s, "kind");
                let lp: Vec<f64> = s
                    .get("logprobs")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|v| v.as_f64().unwrap_or(f64::NEG_INFINITY))
                            .collect()
                    })
                    .unwrap_or_default();
                let mean_lp = if lp.is_empty() {
                    String::new()
                } else {
                    format!("{:.3}", lp.iter().sum::<f64>() / lp.len() as f64)
                };
                let _ = write!(
                    b,
                    "<tr class=\"{}\"><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                    escape(kind),
                    num(s, "id"),
                    escape(kind),
                    s.get("tokens")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len),
                    if s.get("loss_mask").and_then(Value::as_bool).unwrap_or(false) {
                        "trained"
                    } else {
                        "—"
                    },
                    versions(s),
                    mean_lp,
                    escape(text(s, "label")),
                    escape(text(s, "agent"))
                );
            }
            b.push_str("</table>");
        }
        for c in children.get(&t).into_iter().flatten() {
            let child = c.get("episode").cloned().unwrap_or(Value::Null);
            let _ = write!(
                b,
                "<details class=\"subagent\" open><summary>sub-agent <b>{}</b> · call {} · parent segment {} · task {}</summary>{}</details>",
                escape(text(c, "role")),
                escape(text(c, "call_id")),
                c.get("parent_segment")
                    .map(Value::to_string)
                    .unwrap_or_default(),
                escape(
                    child
                        .pointer("/task/id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
                if depth < 8 {
                    episode_body(&child, depth + 1)
                } else {
                    "<p>(nested too deep to show)</p>".into()
                }
            );
        }
        b.push_str("</section>");
    }
    if let Some(answer) = outcome.get("final_answer").and_then(Value::as_str) {
        let _ = write!(b, "<p>final answer: <code>{}</code></p>", escape(answer));
    }
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fixtures::Fixture;

    #[test]
    fn an_episode_page_shows_errors_forced_tokens_decisions_and_children() {
        let fx = Fixture {
            tool_error: true,
            retry: true,
            flag: true,
            per_turn: true,
            child: true,
            ..Fixture::new("t<1>", false)
        };
        let page = episode_page("run", 0, 0, &fx.to_json().unwrap());
        assert!(page.contains("t&lt;1&gt;") && !page.contains("t<1>"));
        assert!(
            page.contains("msg tool tool-error"),
            "tool error not marked"
        );
        assert!(page.contains("<tr class=\"forced\">"));
        assert!(page.contains("thinking decision: <b>think, budget 4: tool step: low effort</b>"));
        assert!(
            page.contains("class=\"subagent\"") && page.contains("sub-agent <b>researcher</b>")
        );
        assert!(page.contains("monitor <b>answer-in-prompt</b>"));
        assert!(page.contains("v3–v4"));
    }
}

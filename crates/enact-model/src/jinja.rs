//! A model's own Jinja chat template, rendered byte-identically to Hugging Face
//! transformers' `apply_chat_template`.
//!
//! The environment replicates transformers' (`utils/chat_template_utils.py`):
//! `trim_blocks=True, lstrip_blocks=True`, loop controls, `raise_exception`, `strftime_now`,
//! and its `tojson` override (`json.dumps(x, ensure_ascii=False)` keeping key order; see
//! [`crate::pyfmt`]). Values print as Python's `str()` would (`True`, `None`, `['a']`), and
//! the Python string methods templates call (`startswith`, `split`, `strip('\n')`, …) follow
//! Python's rules. Newlines in the template source are normalised to `\n` as Jinja2's lexer does
//! (Qwen3-2507's template is published with CRLF line endings).
//!
//! Messages are normalised as `apply_chat_template` does: keys whose value is null are dropped,
//! and reasoning is aliased (`reasoning_content`, `thinking`, `reasoning` — the first one set is
//! copied to `thinking` and `reasoning_content`). `tools` is `none` when no tools are offered;
//! `enable_thinking` is only defined when set.

use std::path::Path;
use std::sync::Arc;

use enact_core::{ChatTemplate, Message, RenderOptions, TemplateError, ToolSpec};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::{Map, Value as Json};

use crate::error::ModelError;
use crate::gguf::GgufMetadata;
use crate::pyfmt;

/// End-of-turn markers recognised in template sources, most specific first.
const END_OF_TURN_MARKERS: [&str; 7] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|eot|>",
    "<｜end▁of▁sentence｜>",
    "<|endoftext|>",
];

/// A compiled Jinja chat template.
#[derive(Clone)]
pub struct JinjaTemplate {
    env: Arc<Environment<'static>>,
    /// The source as given (bytes exact).
    source: String,
    /// The source with newlines normalised, as compiled (for error lines).
    compiled: String,
    name: String,
    end_of_turn: String,
    /// Extra variables: the special tokens (`bos_token`, `eos_token`, …).
    specials: Map<String, Json>,
}

impl std::fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JinjaTemplate")
            .field("name", &self.name)
            .field("end_of_turn", &self.end_of_turn)
            .field("specials", &self.specials)
            .finish()
    }
}

/// Jinja2's lexer turns `\r\n` and `\r` into `\n` (its `newline_sequence`) in data and strings.
fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Transformers' Jinja environment, in minijinja.
fn hf_environment() -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()?,
    );
    env.set_unknown_method_callback(pyfmt::unknown_method);
    env.set_formatter(pyfmt::formatter);
    env.add_filter("tojson", |v: Value, kwargs: minijinja::value::Kwargs| {
        pyfmt::tojson_filter(&v, &kwargs)
    });
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("the template raised an exception: {msg}"),
        ))
    });
    env.add_function("strftime_now", |fmt: String| -> Result<Value, Error> {
        use chrono::format::{Item, StrftimeItems};
        let items: Vec<Item> = StrftimeItems::new(&fmt).collect();
        if items.iter().any(|i| matches!(i, Item::Error)) {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("strftime_now: bad format {fmt:?}"),
            ));
        }
        let now = chrono::Local::now();
        let mut out = String::new();
        std::fmt::Write::write_fmt(
            &mut out,
            format_args!("{}", now.format_with_items(items.into_iter())),
        )
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "strftime_now failed"))?;
        Ok(Value::from(out))
    });
    Ok(env)
}

/// Describes a minijinja error with the template line it points at.
pub fn describe_error(e: &Error, template_name: &str, source: &str) -> String {
    let mut msg = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        let text = source
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .trim();
        let text: String = text.chars().take(200).collect();
        msg.push_str(&format!(
            " (template {template_name}, line {line}: `{text}`)"
        ));
    } else {
        msg.push_str(&format!(" (template {template_name})"));
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        match c.downcast_ref::<Error>() {
            Some(inner) => msg.push_str(&format!(
                "; caused by: {}",
                describe_error(inner, template_name, source)
            )),
            None => msg.push_str(&format!("; caused by: {c}")),
        }
        cause = c.source();
    }
    msg
}

/// Whether a template source uses the variable `tools` (as a whole word).
pub fn references_tools(source: &str) -> bool {
    let bytes = source.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(i) = source[from..].find("tools") {
        let start = from + i;
        let end = start + 5;
        let before_ok = start == 0 || !ident(bytes[start - 1]);
        let after_ok = end >= bytes.len() || !ident(bytes[end]);
        if before_ok && after_ok {
            return true;
        }
        from = end;
    }
    false
}

/// Normalises messages as `apply_chat_template` does: drop null-valued keys, alias reasoning.
pub fn normalize_hf_messages(messages: &Json) -> Json {
    let Some(arr) = messages.as_array() else {
        return messages.clone();
    };
    Json::Array(
        arr.iter()
            .map(|m| {
                let Some(obj) = m.as_object() else {
                    return m.clone();
                };
                let obj: Map<String, Json> = obj
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let reasoning = ["reasoning_content", "thinking", "reasoning"]
                    .iter()
                    .find_map(|k| obj.get(*k).cloned());
                match reasoning {
                    None => Json::Object(obj),
                    Some(r) => {
                        let mut out = Map::new();
                        out.insert("thinking".into(), r.clone());
                        for (k, v) in obj {
                            out.insert(k, v);
                        }
                        out.insert("reasoning_content".into(), r);
                        Json::Object(out)
                    }
                }
            })
            .collect(),
    )
}

impl JinjaTemplate {
    /// Compiles a template. Syntax errors name the line.
    pub fn new(source: impl Into<String>, name: impl Into<String>) -> Result<Self, ModelError> {
        let source = source.into();
        let name = name.into();
        let compiled = normalize_newlines(&source);
        let mut env = hf_environment()
            .map_err(|e| ModelError::Template(format!("cannot set up the template engine: {e}")))?;
        env.add_template_owned(name.clone(), compiled.clone())
            .map_err(|e| {
                ModelError::Template(format!(
                    "chat template does not compile: {}",
                    describe_error(&e, &name, &compiled)
                ))
            })?;
        let end_of_turn = END_OF_TURN_MARKERS
            .iter()
            .find(|m| compiled.contains(*m))
            .map(|m| m.to_string())
            .unwrap_or_default();
        Ok(JinjaTemplate {
            env: Arc::new(env),
            source,
            compiled,
            name,
            end_of_turn,
            specials: Map::new(),
        })
    }

    /// Reads a template file (bytes kept exactly).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let source = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "template".into());
        Self::new(source, name)
    }

    /// The template of a `tokenizer_config.json` (its `chat_template`, or a
    /// `chat_template.jinja` beside it), with its special tokens.
    pub fn from_tokenizer_config(path: &Path) -> Result<Self, ModelError> {
        let cfg_err = |detail: String| ModelError::Config {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let cfg: Json =
            serde_json::from_str(&text).map_err(|e| cfg_err(format!("not valid JSON: {e}")))?;
        let name = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tokenizer_config".into());
        let source = match cfg.get("chat_template") {
            Some(Json::String(s)) => s.clone(),
            // A list of named templates: take "default", else the first.
            Some(Json::Array(list)) => {
                let pick = list
                    .iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                    .or_else(|| list.first());
                pick.and_then(|t| t.get("template"))
                    .and_then(Json::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| cfg_err("chat_template list has no template".into()))?
            }
            _ => {
                let beside = path.with_file_name("chat_template.jinja");
                std::fs::read_to_string(&beside).map_err(|_| {
                    cfg_err(format!(
                        "has no chat_template, and there is no {} beside it",
                        beside.display()
                    ))
                })?
            }
        };
        let mut t = Self::new(source, name)?;
        let mut specials = Map::new();
        for key in [
            "bos_token",
            "eos_token",
            "unk_token",
            "pad_token",
            "sep_token",
            "cls_token",
            "mask_token",
        ] {
            let v = match cfg.get(key) {
                Some(Json::String(s)) => Some(s.clone()),
                Some(Json::Object(o)) => {
                    o.get("content").and_then(Json::as_str).map(str::to_string)
                }
                _ => None,
            };
            if let Some(v) = v {
                specials.insert(key.into(), Json::String(v));
            }
        }
        t.specials = specials;
        t.derive_end_of_turn_fallback();
        Ok(t)
    }

    /// The template of a GGUF file (`tokenizer.chat_template`), with its special tokens.
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Self, ModelError> {
        let source = meta.get_str("tokenizer.chat_template").ok_or_else(|| {
            ModelError::Template(
                "the GGUF file has no tokenizer.chat_template; pass a template file".into(),
            )
        })?;
        let name = meta
            .get_str("general.basename")
            .or_else(|| meta.get_str("general.name"))
            .unwrap_or("gguf");
        let mut t = Self::new(source, name)?;
        let tokens = meta
            .get_str_array("tokenizer.ggml.tokens")
            .unwrap_or_default();
        for (var, key) in [
            ("bos_token", "tokenizer.ggml.bos_token_id"),
            ("eos_token", "tokenizer.ggml.eos_token_id"),
            ("unk_token", "tokenizer.ggml.unknown_token_id"),
            ("pad_token", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(tok) = meta
                .get_i64(key)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| tokens.get(i))
            {
                t.specials.insert(var.into(), Json::String(tok.to_string()));
            }
        }
        t.derive_end_of_turn_fallback();
        Ok(t)
    }

    fn derive_end_of_turn_fallback(&mut self) {
        if self.end_of_turn.is_empty()
            && let Some(eos) = self.specials.get("eos_token").and_then(Json::as_str)
        {
            self.end_of_turn = eos.to_string();
        }
    }

    /// Sets a template variable (e.g. `bos_token`), as transformers passes the tokenizer's
    /// special tokens.
    pub fn with_variable(mut self, name: &str, value: Json) -> Self {
        self.specials.insert(name.into(), value);
        if name == "eos_token" {
            self.derive_end_of_turn_fallback();
        }
        self
    }

    /// Overrides the end-of-turn token text.
    pub fn with_end_of_turn(mut self, eot: impl Into<String>) -> Self {
        self.end_of_turn = eot.into();
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The source exactly as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template renders tool specifications (its source uses `tools`).
    pub fn supports_tools(&self) -> bool {
        references_tools(&self.compiled)
    }

    /// The extra variables (special tokens).
    pub fn variables(&self) -> &Map<String, Json> {
        &self.specials
    }

    /// Renders Hugging Face–form messages (`[{"role", "content", "tool_calls", …}]`) and tool
    /// schemas exactly as `apply_chat_template(messages, tools=tools, tokenize=False, ...)`.
    pub fn render_json(
        &self,
        messages: &Json,
        tools: Option<&Json>,
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let mut ctx = Map::new();
        ctx.insert("messages".into(), normalize_hf_messages(messages));
        ctx.insert("tools".into(), tools.cloned().unwrap_or(Json::Null));
        ctx.insert("documents".into(), Json::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(options.add_generation_prompt),
        );
        for (k, v) in &self.specials {
            ctx.insert(k.clone(), v.clone());
        }
        if let Some(t) = options.enable_thinking {
            ctx.insert("enable_thinking".into(), Json::Bool(t));
        }
        let tmpl = self
            .env
            .get_template(&self.name)
            .map_err(|e| TemplateError::Render(describe_error(&e, &self.name, &self.compiled)))?;
        tmpl.render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| TemplateError::Render(describe_error(&e, &self.name, &self.compiled)))
    }
}

/// The Hugging Face form of messages (see [`Message::to_hf_json`]).
pub fn messages_to_hf(messages: &[Message]) -> Json {
    Json::Array(messages.iter().map(Message::to_hf_json).collect())
}

/// The OpenAI form of tools, or `None` for no tools.
pub fn tools_to_hf(tools: &[ToolSpec]) -> Option<Json> {
    (!tools.is_empty()).then(|| Json::Array(tools.iter().map(ToolSpec::to_openai_json).collect()))
}

impl ChatTemplate for JinjaTemplate {
    fn render(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        self.render_json(
            &messages_to_hf(messages),
            tools_to_hf(tools).as_ref(),
            options,
        )
    }

    fn end_of_turn(&self) -> &str {
        &self.end_of_turn
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn render(src: &str, ctx: Json) -> Result<String, String> {
        let t = JinjaTemplate::new(src, "t").map_err(|e| e.to_string())?;
        let msgs = ctx.get("messages").cloned().unwrap_or(Json::Array(vec![]));
        t.render_json(&msgs, None, &RenderOptions::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn python_semantics_in_templates() {
        let m = serde_json::json!({"messages": [{"role": "user", "content": " a</think>b \n"}]});
        let out = render(
            "{{ messages[0].content.split('</think>')[-1].rstrip('\\n') }}|{{ messages[0].content.split() }}|{{ messages[0].content.strip() }}|{{ messages[0].content.startswith(' a') }}|{{ none }}|{{ [1, 'x', 2.0] }}|{{ {'k': true} }}",
            m,
        )
        .unwrap();
        assert_eq!(
            out,
            "b |['a</think>b']|a</think>b|True|None|[1, 'x', 2.0]|{'k': True}"
        );
        let out = render(
            "{{ {'b': 1, 'a': [1.5, 'é', none]} | tojson }}|{{ [1] | tojson(indent=2) }}",
            Json::Null,
        )
        .unwrap();
        assert_eq!(out, "{\"b\": 1, \"a\": [1.5, \"é\", null]}|[\n  1\n]");
        // trim_blocks / lstrip_blocks, loop controls, namespace, reversed slices.
        let out = render(
            "{% set ns = namespace(n=0) %}\n  {% for x in [1,2,3,4][::-1] %}\n{% if x == 2 %}{% break %}{% endif %}{% set ns.n = ns.n + x %}\n{% endfor %}\n{{ ns.n }}",
            Json::Null,
        )
        .unwrap();
        assert_eq!(out, "7");
    }

    #[test]
    fn errors_carry_the_template_line() {
        let e = JinjaTemplate::new("ok\n{% if %}\n", "bad")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = render(
            "line one\n{{ raise_exception('no system role') }}",
            Json::Null,
        )
        .unwrap_err();
        assert!(e.contains("no system role") && e.contains("line 2"), "{e}");
        let e = render(
            "a\nb\n{{ messages[0].content.nosuchmethod() }}",
            serde_json::json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap_err();
        assert!(e.contains("line 3") && e.contains("nosuchmethod"), "{e}");
    }

    #[test]
    fn crlf_sources_render_like_lf_and_tools_detection() {
        let lf = "{%- for m in messages %}\n    {{- m.role }}\n{%- endfor %}\n";
        let crlf = lf.replace('\n', "\r\n");
        let m = serde_json::json!({"messages": [{"role": "user"}, {"role": "assistant"}]});
        assert_eq!(render(lf, m.clone()).unwrap(), render(&crlf, m).unwrap());
        assert!(references_tools("{% if tools %}"));
        assert!(!references_tools("{{ tools_x }}{{ mytools }}"));
    }

    #[test]
    fn normalizes_messages_like_transformers() {
        let m = serde_json::json!([{"role": "assistant", "content": null, "reasoning": "r", "tool_calls": null}]);
        let n = normalize_hf_messages(&m);
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"[{"thinking":"r","role":"assistant","reasoning":"r","reasoning_content":"r"}]"#
        );
    }
}

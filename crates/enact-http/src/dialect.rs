//! Per-server request bodies and response parsing. Pure functions over JSON, so every
//! malformed response is a `String` error here, never a panic.

use enact_core::{SampleRequest, SamplingParams};
use serde_json::{Map, Value, json};

use crate::config::Dialect;

/// Why the server says it stopped, normalised across dialects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stop {
    /// The token limit was reached.
    Length,
    /// The server stopped on this token id (it may or may not be in the returned ids).
    Token(u32),
    /// The server stopped on this stop string.
    Str(String),
    /// The server stopped "naturally" (end of sequence or a stop condition) without saying
    /// which token or string.
    Natural,
}

/// A token-exact generation as the server reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExactOutput {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub stop: Stop,
}

/// A text-level generation as the server reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TextOutput {
    pub text: String,
    /// The server's per-token logprobs, when it sent them (its own tokenisation).
    pub logprobs: Option<Vec<f32>>,
    pub stop: Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    Exact(ExactOutput),
    Text(TextOutput),
}

/// What a request needs beyond the `SampleRequest`.
pub(crate) struct Prepared<'a> {
    pub model: Option<&'a str>,
    /// The published LoRA adapter requests run through (vLLM: the `model`; SGLang:
    /// `lora_path`, which takes an adapter name).
    pub adapter: Option<&'a str>,
    /// The decoded context (text-level dialects only).
    pub prompt_text: Option<&'a str>,
    /// Stop strings: the request's plus, for dialects without stop-token ids, the decoded
    /// stop tokens.
    pub stop_strings: Vec<String>,
}

fn sampling_common(p: &SamplingParams, body: &mut Map<String, Value>) {
    body.insert("temperature".into(), json!(p.temperature.max(0.0)));
    body.insert("top_p".into(), json!(p.top_p));
}

/// The JSON body of a generation request.
pub(crate) fn request_body(dialect: Dialect, req: &SampleRequest, prep: &Prepared<'_>) -> Value {
    let p = &req.params;
    let mut body = Map::new();
    match dialect {
        Dialect::Vllm => {
            if let Some(m) = prep.adapter.or(prep.model) {
                body.insert("model".into(), json!(m));
            }
            body.insert("prompt".into(), json!(req.context.as_slice()));
            body.insert("max_tokens".into(), json!(req.max_tokens));
            sampling_common(p, &mut body);
            // vLLM: -1 (or 0 on newer versions) disables top-k; send it only when set.
            if p.top_k > 0 {
                body.insert("top_k".into(), json!(p.top_k));
            }
            body.insert("min_p".into(), json!(p.min_p));
            if let Some(s) = p.seed {
                body.insert("seed".into(), json!(s));
            }
            if !req.stop_tokens.is_empty() {
                body.insert("stop_token_ids".into(), json!(req.stop_tokens));
            }
            if !prep.stop_strings.is_empty() {
                body.insert("stop".into(), json!(prep.stop_strings));
                body.insert("include_stop_str_in_output".into(), json!(true));
            }
            body.insert("n".into(), json!(1));
            body.insert("stream".into(), json!(false));
            body.insert("logprobs".into(), json!(1));
            body.insert("return_token_ids".into(), json!(true));
            body.insert("return_tokens_as_token_ids".into(), json!(true));
            body.insert("skip_special_tokens".into(), json!(false));
            body.insert("spaces_between_special_tokens".into(), json!(false));
            body.insert("repetition_penalty".into(), json!(1.0));
        }
        Dialect::Sglang => {
            let mut sp = Map::new();
            sp.insert("max_new_tokens".into(), json!(req.max_tokens));
            sampling_common(p, &mut sp);
            sp.insert(
                "top_k".into(),
                json!(if p.top_k > 0 { p.top_k as i64 } else { -1 }),
            );
            sp.insert("min_p".into(), json!(p.min_p));
            if let Some(s) = p.seed {
                sp.insert("sampling_seed".into(), json!(s));
            }
            if !req.stop_tokens.is_empty() {
                sp.insert("stop_token_ids".into(), json!(req.stop_tokens));
            }
            if !prep.stop_strings.is_empty() {
                sp.insert("stop".into(), json!(prep.stop_strings));
            }
            sp.insert("skip_special_tokens".into(), json!(false));
            sp.insert("spaces_between_special_tokens".into(), json!(false));
            sp.insert("no_stop_trim".into(), json!(true));
            body.insert("input_ids".into(), json!(req.context.as_slice()));
            body.insert("sampling_params".into(), Value::Object(sp));
            if let Some(a) = prep.adapter {
                body.insert("lora_path".into(), json!(a));
            }
            body.insert("return_logprob".into(), json!(true));
            body.insert("logprob_start_len".into(), json!(-1));
            body.insert("stream".into(), json!(false));
        }
        Dialect::LlamaCpp => {
            body.insert("prompt".into(), json!(req.context.as_slice()));
            body.insert("n_predict".into(), json!(req.max_tokens));
            sampling_common(p, &mut body);
            // llama.cpp defaults top_k 40, min_p 0.05 and repeat_penalty 1.1 (older builds):
            // set them so the server samples the distribution enact records.
            body.insert("top_k".into(), json!(p.top_k));
            body.insert("min_p".into(), json!(p.min_p));
            body.insert("repeat_penalty".into(), json!(1.0));
            if let Some(s) = p.seed {
                body.insert("seed".into(), json!(s));
            }
            if !prep.stop_strings.is_empty() {
                body.insert("stop".into(), json!(prep.stop_strings));
            }
            body.insert("n_probs".into(), json!(1));
            body.insert("return_tokens".into(), json!(true));
            body.insert("cache_prompt".into(), json!(true));
            body.insert("stream".into(), json!(false));
        }
        Dialect::Ollama => {
            if let Some(m) = prep.model {
                body.insert("model".into(), json!(m));
            }
            body.insert("prompt".into(), json!(prep.prompt_text.unwrap_or("")));
            body.insert("raw".into(), json!(true));
            body.insert("stream".into(), json!(false));
            let mut options = Map::new();
            options.insert("num_predict".into(), json!(req.max_tokens));
            sampling_common(p, &mut options);
            options.insert("top_k".into(), json!(p.top_k));
            options.insert("min_p".into(), json!(p.min_p));
            options.insert("repeat_penalty".into(), json!(1.0));
            if let Some(s) = p.seed {
                options.insert("seed".into(), json!(s));
            }
            if !prep.stop_strings.is_empty() {
                options.insert("stop".into(), json!(prep.stop_strings));
            }
            body.insert("options".into(), Value::Object(options));
        }
        Dialect::OpenAiText => {
            if let Some(m) = prep.model {
                body.insert("model".into(), json!(m));
            }
            body.insert("prompt".into(), json!(prep.prompt_text.unwrap_or("")));
            body.insert("max_tokens".into(), json!(req.max_tokens));
            sampling_common(p, &mut body);
            // Extensions most OpenAI-compatible servers accept; sent only when in use.
            if p.top_k > 0 {
                body.insert("top_k".into(), json!(p.top_k));
            }
            if p.min_p > 0.0 {
                body.insert("min_p".into(), json!(p.min_p));
            }
            if let Some(s) = p.seed {
                body.insert("seed".into(), json!(s));
            }
            if !prep.stop_strings.is_empty() {
                body.insert("stop".into(), json!(prep.stop_strings));
            }
            body.insert("n".into(), json!(1));
            body.insert("stream".into(), json!(false));
        }
    }
    Value::Object(body)
}

fn as_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn id_list(v: &Value, what: &str) -> Result<Vec<u32>, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| format!("`{what}` is not an array of token ids"))?;
    arr.iter()
        .map(|x| as_id(x).ok_or_else(|| format!("`{what}` holds {x}, which is not a token id")))
        .collect()
}

fn logprob_of(v: &Value, what: &str, i: usize) -> Result<f32, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() || x == f64::NEG_INFINITY => Ok(x as f32),
        _ => Err(format!("`{what}`[{i}] is {v}, not a logprob")),
    }
}

/// Checks that ids and logprobs line up and picks the ids source.
fn reconcile(
    primary: Option<Vec<u32>>,
    from_logprobs: Option<Vec<u32>>,
    logprobs: Option<Vec<f32>>,
    primary_name: &str,
) -> Result<(Vec<u32>, Vec<f32>), String> {
    let ids = match (primary, from_logprobs) {
        (Some(a), Some(b)) => {
            if a != b {
                return Err(format!(
                    "`{primary_name}` ({} ids) disagrees with the ids in the logprobs ({} ids)",
                    a.len(),
                    b.len()
                ));
            }
            a
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => {
            return Err(format!(
                "the response has no token ids (no `{primary_name}` and no ids in the logprobs); the server is too old for token-exact use or is not this dialect"
            ));
        }
    };
    let lps = logprobs.ok_or_else(|| {
        "the response has no logprobs; token-exact sampling needs the sampled tokens' logprobs"
            .to_string()
    })?;
    if lps.len() != ids.len() {
        return Err(format!(
            "the response has {} token ids but {} logprobs",
            ids.len(),
            lps.len()
        ));
    }
    Ok((ids, lps))
}

/// The first choice of an OpenAI-style response.
fn first_choice(v: &Value) -> Result<&Value, String> {
    v.get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| "the response has no `choices[0]`".to_string())
}

fn openai_stop(choice: &Value) -> Result<Stop, String> {
    let reason = choice.get("finish_reason").and_then(Value::as_str);
    match reason {
        Some("length") => Ok(Stop::Length),
        Some("stop") | Some("eos") => Ok(match choice.get("stop_reason") {
            Some(v) if as_id(v).is_some() => Stop::Token(as_id(v).unwrap_or_default()),
            Some(Value::String(s)) => Stop::Str(s.clone()),
            _ => Stop::Natural,
        }),
        other => Err(format!(
            "the server did not finish the generation (finish_reason {})",
            other.map_or("missing".to_string(), |r| format!("{r:?}"))
        )),
    }
}

/// Parses a generation response.
pub(crate) fn parse_response(dialect: Dialect, v: &Value) -> Result<Output, String> {
    match dialect {
        Dialect::Vllm => {
            let choice = first_choice(v)?;
            let token_ids = match choice.get("token_ids") {
                None | Some(Value::Null) => None,
                Some(x) => Some(id_list(x, "choices[0].token_ids")?),
            };
            let lp = choice.get("logprobs").filter(|x| !x.is_null());
            let (from_lp, lps) = match lp {
                None => (None, None),
                Some(lp) => {
                    let from_lp = match lp.get("tokens").and_then(Value::as_array) {
                        None => None,
                        Some(toks) => {
                            let mut ids = Vec::with_capacity(toks.len());
                            let mut all = true;
                            for t in toks {
                                match t
                                    .as_str()
                                    .and_then(|s| s.strip_prefix("token_id:"))
                                    .and_then(|n| n.parse::<u32>().ok())
                                {
                                    Some(id) => ids.push(id),
                                    None => {
                                        all = false;
                                        break;
                                    }
                                }
                            }
                            // Tokens as text (no return_tokens_as_token_ids): not ids.
                            all.then_some(ids)
                        }
                    };
                    let lps = match lp.get("token_logprobs").and_then(Value::as_array) {
                        None => None,
                        Some(arr) => Some(
                            arr.iter()
                                .enumerate()
                                .map(|(i, x)| logprob_of(x, "logprobs.token_logprobs", i))
                                .collect::<Result<Vec<_>, _>>()?,
                        ),
                    };
                    (from_lp, lps)
                }
            };
            let (ids, logprobs) = reconcile(token_ids, from_lp, lps, "choices[0].token_ids")?;
            Ok(Output::Exact(ExactOutput {
                ids,
                logprobs,
                stop: openai_stop(choice)?,
            }))
        }
        Dialect::Sglang => {
            // A batch answer (array) is accepted when it holds one item.
            let v = match v {
                Value::Array(items) => items
                    .first()
                    .ok_or_else(|| "the response is an empty array".to_string())?,
                other => other,
            };
            let meta = v
                .get("meta_info")
                .filter(|m| m.is_object())
                .ok_or_else(|| "the response has no `meta_info` object".to_string())?;
            let output_ids = match v.get("output_ids") {
                None | Some(Value::Null) => None,
                Some(x) => Some(id_list(x, "output_ids")?),
            };
            let (from_lp, lps) = match meta.get("output_token_logprobs") {
                None | Some(Value::Null) => (None, None),
                Some(arr) => {
                    let arr = arr.as_array().ok_or_else(|| {
                        "`meta_info.output_token_logprobs` is not an array".to_string()
                    })?;
                    let mut ids = Vec::with_capacity(arr.len());
                    let mut lps = Vec::with_capacity(arr.len());
                    for (i, item) in arr.iter().enumerate() {
                        // [logprob, token_id, token_text_or_null]
                        let (lp, id) = match item.as_array().map(Vec::as_slice) {
                            Some([lp, id, ..]) => (lp, id),
                            _ => {
                                return Err(format!(
                                    "`meta_info.output_token_logprobs`[{i}] is {item}, not [logprob, token_id, ...]"
                                ));
                            }
                        };
                        lps.push(logprob_of(lp, "meta_info.output_token_logprobs", i)?);
                        ids.push(as_id(id).ok_or_else(|| {
                            format!(
                                "`meta_info.output_token_logprobs`[{i}] has {id}, not a token id"
                            )
                        })?);
                    }
                    (Some(ids), Some(lps))
                }
            };
            let (ids, logprobs) = reconcile(output_ids, from_lp, lps, "output_ids")?;
            let fr = meta.get("finish_reason").filter(|f| !f.is_null());
            let stop = match fr.and_then(|f| f.get("type")).and_then(Value::as_str) {
                Some("length") => Stop::Length,
                Some("stop") => match fr.and_then(|f| f.get("matched")) {
                    Some(m) if as_id(m).is_some() => Stop::Token(as_id(m).unwrap_or_default()),
                    Some(Value::String(s)) => Stop::Str(s.clone()),
                    _ => Stop::Natural,
                },
                other => {
                    let msg = fr
                        .and_then(|f| f.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    return Err(format!(
                        "the server did not finish the generation (finish_reason type {}{}{})",
                        other.map_or("missing".to_string(), |r| format!("{r:?}")),
                        if msg.is_empty() { "" } else { ": " },
                        msg
                    ));
                }
            };
            Ok(Output::Exact(ExactOutput {
                ids,
                logprobs,
                stop,
            }))
        }
        Dialect::LlamaCpp => {
            let tokens = match v.get("tokens") {
                None | Some(Value::Null) => None,
                Some(x) => Some(id_list(x, "tokens")?).filter(|t| !t.is_empty()),
            };
            let probs = v
                .get("completion_probabilities")
                .or_else(|| v.get("probs"))
                .filter(|x| !x.is_null());
            let (from_lp, lps) = match probs {
                None => (None, None),
                Some(arr) => {
                    let arr = arr
                        .as_array()
                        .ok_or_else(|| "`completion_probabilities` is not an array".to_string())?;
                    let mut ids = Vec::with_capacity(arr.len());
                    let mut lps = Vec::with_capacity(arr.len());
                    for (i, item) in arr.iter().enumerate() {
                        let id = item.get("id").and_then(as_id).ok_or_else(|| {
                            format!("`completion_probabilities`[{i}] has no token `id`")
                        })?;
                        let lp = match (item.get("logprob"), item.get("prob")) {
                            (Some(lp), _) => logprob_of(lp, "completion_probabilities", i)?,
                            (None, Some(p)) => {
                                logprob_of(p, "completion_probabilities", i)?.max(0.0).ln()
                            }
                            (None, None) => {
                                return Err(format!(
                                    "`completion_probabilities`[{i}] has no `logprob`"
                                ));
                            }
                        };
                        ids.push(id);
                        lps.push(lp);
                    }
                    (Some(ids), Some(lps))
                }
            };
            let stop_type = v.get("stop_type").and_then(Value::as_str).or_else(|| {
                // Older servers: stopped_eos / stopped_word / stopped_limit booleans.
                let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
                if flag("stopped_eos") {
                    Some("eos")
                } else if flag("stopped_word") {
                    Some("word")
                } else if flag("stopped_limit") {
                    Some("limit")
                } else {
                    None
                }
            });
            let stopping_word = v
                .get("stopping_word")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let stop = match stop_type {
                Some("limit") => Stop::Length,
                Some("eos") => Stop::Natural,
                Some("word") => Stop::Str(stopping_word),
                other => {
                    return Err(format!(
                        "the server did not finish the generation (stop_type {})",
                        other.map_or("missing".to_string(), |r| format!("{r:?}"))
                    ));
                }
            };
            // On a stop word llama.cpp drops the probabilities of the stop word's tokens
            // (the ids stay): pad those few logprobs with 0 rather than fail.
            let (from_lp, lps) = match (&tokens, from_lp, lps) {
                (Some(t), Some(ids), Some(mut lps))
                    if matches!(stop, Stop::Str(_))
                        && ids.len() < t.len()
                        && t.starts_with(&ids) =>
                {
                    lps.resize(t.len(), 0.0);
                    (Some(t.clone()), Some(lps))
                }
                (_, a, b) => (a, b),
            };
            let (ids, logprobs) = reconcile(tokens, from_lp, lps, "tokens")?;
            Ok(Output::Exact(ExactOutput {
                ids,
                logprobs,
                stop,
            }))
        }
        Dialect::Ollama => {
            if let Some(e) = v.get("error") {
                return Err(format!("the server reported an error: {e}"));
            }
            let text = v
                .get("response")
                .and_then(Value::as_str)
                .ok_or_else(|| "the response has no `response` text".to_string())?
                .to_string();
            let stop = match v.get("done_reason").and_then(Value::as_str) {
                Some("length") => Stop::Length,
                Some("stop") => Stop::Natural,
                other if v.get("done").and_then(Value::as_bool) == Some(true) => {
                    if other.is_none() {
                        Stop::Natural
                    } else {
                        return Err(format!(
                            "the server did not finish the generation (done_reason {other:?})"
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "the server did not finish the generation (done_reason {other:?})"
                    ));
                }
            };
            let logprobs = v.get("logprobs").and_then(Value::as_array).and_then(|arr| {
                arr.iter()
                    .map(|x| x.get("logprob").and_then(Value::as_f64).map(|f| f as f32))
                    .collect::<Option<Vec<_>>>()
            });
            Ok(Output::Text(TextOutput {
                text,
                logprobs,
                stop,
            }))
        }
        Dialect::OpenAiText => {
            let choice = first_choice(v)?;
            let text = choice
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| "`choices[0].text` is missing".to_string())?
                .to_string();
            let logprobs = choice
                .get("logprobs")
                .and_then(|l| l.get("token_logprobs"))
                .and_then(Value::as_array)
                .and_then(|arr| {
                    arr.iter()
                        .map(|x| x.as_f64().map(|f| f as f32))
                        .collect::<Option<Vec<_>>>()
                });
            Ok(Output::Text(TextOutput {
                text,
                logprobs,
                stop: openai_stop(choice)?,
            }))
        }
    }
}

/// The server's error message from an error response body, if it has one.
pub(crate) fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error");
        e.and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .or_else(|| e.and_then(Value::as_str))
            .or_else(|| v.get("message").and_then(Value::as_str))
            .or_else(|| v.get("detail").and_then(Value::as_str))
            .map(str::to_string)
    });
    let msg = from_json.unwrap_or_else(|| text.trim().to_string());
    truncate(&msg, 500)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::sync::Arc;

    use super::*;

    fn req() -> SampleRequest {
        SampleRequest {
            context: Arc::new(vec![1, 2, 3]),
            max_tokens: 16,
            stop_tokens: vec![257],
            stop_strings: vec![],
            params: SamplingParams {
                temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
                min_p: 0.0,
                seed: Some(7),
            },
            on_token: None,
        }
    }

    #[test]
    fn vllm_body_has_token_fields() {
        let prep = Prepared {
            model: Some("m"),
            adapter: None,
            prompt_text: None,
            stop_strings: vec![],
        };
        let b = request_body(Dialect::Vllm, &req(), &prep);
        assert_eq!(b["prompt"], json!([1, 2, 3]));
        assert_eq!(b["stop_token_ids"], json!([257]));
        assert_eq!(b["return_token_ids"], json!(true));
        assert_eq!(b["return_tokens_as_token_ids"], json!(true));
        assert_eq!(b["logprobs"], json!(1));
        assert_eq!(b["seed"], json!(7));
        assert!(b.get("top_k").is_none());
    }

    #[test]
    fn sglang_and_llamacpp_bodies() {
        let prep = Prepared {
            model: None,
            adapter: None,
            prompt_text: None,
            stop_strings: vec!["<|im_end|>".into()],
        };
        let b = request_body(Dialect::Sglang, &req(), &prep);
        assert_eq!(b["input_ids"], json!([1, 2, 3]));
        assert_eq!(b["sampling_params"]["max_new_tokens"], json!(16));
        assert_eq!(b["sampling_params"]["top_k"], json!(-1));
        assert_eq!(b["return_logprob"], json!(true));
        let b = request_body(Dialect::LlamaCpp, &req(), &prep);
        assert_eq!(b["prompt"], json!([1, 2, 3]));
        assert_eq!(b["n_predict"], json!(16));
        assert_eq!(b["return_tokens"], json!(true));
        assert_eq!(b["stop"], json!(["<|im_end|>"]));
    }

    #[test]
    fn vllm_parses_both_id_sources_and_rejects_mismatch() {
        let v = json!({"choices": [{"text": "hi", "token_ids": [5, 6],
            "logprobs": {"tokens": ["token_id:5", "token_id:6"], "token_logprobs": [-0.5, -0.25]},
            "finish_reason": "stop", "stop_reason": 6}]});
        let Output::Exact(o) = parse_response(Dialect::Vllm, &v).unwrap() else {
            panic!()
        };
        assert_eq!(o.ids, vec![5, 6]);
        assert_eq!(o.logprobs, vec![-0.5, -0.25]);
        assert_eq!(o.stop, Stop::Token(6));

        let v = json!({"choices": [{"text": "hi",
            "logprobs": {"tokens": ["token_id:5"], "token_logprobs": [-0.5]},
            "finish_reason": "length"}]});
        let Output::Exact(o) = parse_response(Dialect::Vllm, &v).unwrap() else {
            panic!()
        };
        assert_eq!((o.ids, o.stop), (vec![5], Stop::Length));

        let bad = json!({"choices": [{"token_ids": [5, 7],
            "logprobs": {"tokens": ["token_id:5", "token_id:6"], "token_logprobs": [-0.5, -0.25]},
            "finish_reason": "stop"}]});
        assert!(parse_response(Dialect::Vllm, &bad).is_err());
        let short = json!({"choices": [{"token_ids": [5, 6],
            "logprobs": {"token_logprobs": [-0.5]}, "finish_reason": "stop"}]});
        assert!(
            parse_response(Dialect::Vllm, &short)
                .unwrap_err()
                .contains("2 token ids but 1 logprobs")
        );
        for junk in [json!({}), json!({"choices": []}), json!([1]), json!(null)] {
            assert!(parse_response(Dialect::Vllm, &junk).is_err());
        }
    }

    #[test]
    fn sglang_and_llamacpp_parse() {
        let v = json!({"text": "x", "output_ids": [9, 257], "meta_info": {
            "output_token_logprobs": [[-0.1, 9, null], [-0.2, 257, null]],
            "finish_reason": {"type": "stop", "matched": 257}}});
        let Output::Exact(o) = parse_response(Dialect::Sglang, &v).unwrap() else {
            panic!()
        };
        assert_eq!(o.ids, vec![9, 257]);
        assert_eq!(o.stop, Stop::Token(257));
        let abort = json!({"meta_info": {"output_token_logprobs": [],
            "finish_reason": {"type": "abort", "message": "oom"}}});
        assert!(
            parse_response(Dialect::Sglang, &abort)
                .unwrap_err()
                .contains("oom")
        );

        let v = json!({"content": "x", "tokens": [9, 257], "stop_type": "eos",
            "completion_probabilities": [{"id": 9, "logprob": -0.1}, {"id": 257, "logprob": -0.2}]});
        let Output::Exact(o) = parse_response(Dialect::LlamaCpp, &v).unwrap() else {
            panic!()
        };
        assert_eq!(o.ids, vec![9, 257]);
        assert_eq!(o.stop, Stop::Natural);
        // Stop word: probabilities of the stop word's tokens are dropped by the server.
        let v = json!({"tokens": [9, 10, 11], "stop_type": "word", "stopping_word": "ab",
            "completion_probabilities": [{"id": 9, "logprob": -0.1}]});
        let Output::Exact(o) = parse_response(Dialect::LlamaCpp, &v).unwrap() else {
            panic!()
        };
        assert_eq!(o.logprobs, vec![-0.1, 0.0, 0.0]);
    }

    #[test]
    fn error_messages_are_extracted() {
        assert_eq!(
            error_message(br#"{"error": {"message": "bad prompt", "code": 400}}"#),
            "bad prompt"
        );
        assert_eq!(
            error_message(br#"{"object": "error", "message": "too long"}"#),
            "too long"
        );
        assert_eq!(
            error_message(br#"{"error": "model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
        assert!(error_message(&[b'x'; 2000]).len() < 600);
    }
}

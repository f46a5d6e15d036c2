//! A scripted policy: replays given assistant turns, token-exact through a tokenizer.
//! For tests, demos and the red-team suite's adversarial and reference episodes.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use enact_core::{FinishReason, Policy, PolicyError, Sample, SampleRequest, Tokenizer};

pub struct ScriptedPolicy {
    turns: Vec<String>,
    state: Mutex<Replay>,
    tokenizer: Arc<dyn Tokenizer>,
    version: u64,
    /// Entries are whole assistant turns (see [`ScriptedPolicy::per_turn`]).
    per_turn: bool,
}

/// Where the replay is.
#[derive(Default)]
struct Replay {
    next: usize,
    /// Per-turn replay: what is left of a turn a request stopped early (a thinking budget's
    /// length or the closing tag), and whether the length cut it.
    rest: Option<(Vec<u32>, bool)>,
}

const THINK_CLOSE: &str = "</think>";

impl ScriptedPolicy {
    /// Each request answers with the next entry (cut by `max_tokens` and stop strings like a
    /// sampler; what was cut is dropped): one entry per generation request.
    pub fn new(turns: Vec<String>, tokenizer: Arc<dyn Tokenizer>) -> Self {
        ScriptedPolicy {
            turns,
            state: Mutex::new(Replay::default()),
            tokenizer,
            version: 0,
            per_turn: false,
        }
    }

    /// Each entry is a whole assistant turn, however many requests the agent splits it into:
    /// a request that stops early (a thinking budget, the closing `</think>`) leaves the rest
    /// of the turn for the next request; when a budget cut the thought, the next request (the
    /// answer, after the forced stop-thinking text) goes on after the thought. For replaying
    /// reference solutions under any thinking mode.
    pub fn per_turn(turns: Vec<String>, tokenizer: Arc<dyn Tokenizer>) -> Self {
        ScriptedPolicy {
            per_turn: true,
            ..Self::new(turns, tokenizer)
        }
    }

    /// Sets the policy version stamped on sampled tokens.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// `tokens` from just after the one that completes `</think>` and the whitespace after it
    /// (all of them when there is no closing tag).
    fn after_thought(&self, tokens: Vec<u32>) -> Vec<u32> {
        let tok = self.tokenizer.as_ref();
        let Some(end) = (1..=tokens.len()).find(|&k| {
            tok.decode(&tokens[..k])
                .is_ok_and(|t| t.contains(THINK_CLOSE))
        }) else {
            return tokens;
        };
        let skip_ws = tokens[end..]
            .iter()
            .take_while(|&&id| tok.decode(&[id]).is_ok_and(|t| t.trim().is_empty()))
            .count();
        tokens[end + skip_ws..].to_vec()
    }
}

#[async_trait]
impl Policy for ScriptedPolicy {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| PolicyError::Backend("scripted policy state poisoned".into()))?;
        let mut tokens = match state.rest.take() {
            Some((rest, by_length)) => {
                let answering = !request.stop_strings.iter().any(|s| s == THINK_CLOSE);
                if by_length && answering {
                    self.after_thought(rest)
                } else {
                    rest
                }
            }
            None => {
                let text = self
                    .turns
                    .get(state.next)
                    .ok_or(PolicyError::Exhausted(self.turns.len()))?;
                state.next += 1;
                self.tokenizer
                    .encode(text)
                    .map_err(|e| PolicyError::Backend(e.to_string()))?
            }
        };
        let body = tokens.clone();
        let mut finish = FinishReason::Length;
        if let Some(&stop) = request.stop_tokens.first() {
            tokens.push(stop);
            finish = FinishReason::StopToken(stop);
        }
        // Honour stop strings and the token limit like a real sampler would.
        if let Some((end, stop)) =
            first_stop(self.tokenizer.as_ref(), &tokens, &request.stop_strings)
                .map_err(|e| PolicyError::Backend(e.to_string()))?
        {
            tokens.truncate(end);
            finish = FinishReason::StopString(stop);
        }
        if tokens.len() > request.max_tokens {
            tokens.truncate(request.max_tokens);
            finish = FinishReason::Length;
        }
        if self.per_turn && tokens.len() < body.len() {
            // The rest of the turn (its end-of-turn id is added again when it comes).
            let by_length = finish == FinishReason::Length;
            state.rest = Some((body[tokens.len()..].to_vec(), by_length));
        }
        drop(state);
        let n = tokens.len();
        if let Some(sink) = &request.on_token {
            tokens.iter().for_each(|&id| sink.emit(id));
        }
        Ok(Sample {
            tokens,
            logprobs: vec![0.0; n],
            policy_versions: vec![self.version; n],
            finish,
        })
    }

    fn version(&self) -> u64 {
        self.version
    }
}

/// The shortest prefix `tokens[..end]` whose text ends with one of `stops`, and that stop
/// string: what a sampler checking after every token would stop at. Only the tail of the text
/// can end with a stop string, so each step decodes a window of the last tokens wide enough
/// to hold the longest stop string with room to spare (widened while the tokens decode to
/// too little text), and a hit is confirmed on the whole prefix: linear in the turn, where
/// decoding every prefix was quadratic.
fn first_stop(
    tokenizer: &dyn Tokenizer,
    tokens: &[u32],
    stops: &[String],
) -> Result<Option<(usize, String)>, enact_core::TokenizerError> {
    let Some(longest) = stops.iter().map(String::len).max() else {
        return Ok(None);
    };
    // Bytes beyond the longest stop string, so that what a window's first token decodes to
    // differently alone (a stripped leading space, half a character) stays out of reach.
    const SLACK: usize = 16;
    let need = longest + SLACK;
    let mut width = need;
    for end in 1..=tokens.len() {
        let tail = loop {
            let start = end.saturating_sub(width);
            let text = tokenizer.decode(&tokens[start..end])?;
            if start == 0 || text.len() >= need {
                break text;
            }
            width *= 2;
        };
        if stops.iter().any(|s| tail.ends_with(s.as_str())) {
            let text = tokenizer.decode(&tokens[..end])?;
            if let Some(s) = stops.iter().find(|s| text.ends_with(s.as_str())) {
                return Ok(Some((end, s.clone())));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ByteTokenizer;
    use enact_core::{SamplingParams, TokenSink};

    #[tokio::test]
    async fn on_token_sees_every_sampled_id_in_order() {
        let tok: Arc<dyn Tokenizer> = Arc::new(ByteTokenizer::new());
        let policy = ScriptedPolicy::new(vec!["hi there".into()], tok);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let request = SampleRequest {
            context: Arc::new(vec![1, 2, 3]),
            max_tokens: 100,
            stop_tokens: vec![],
            stop_strings: vec![],
            params: SamplingParams::default(),
            on_token: Some(TokenSink::new(move |id| sink_seen.lock().unwrap().push(id))),
        };
        let sample = policy.sample(request).await.unwrap();
        assert!(!sample.tokens.is_empty());
        assert_eq!(*seen.lock().unwrap(), sample.tokens);
    }

    /// What the policy did before: decode every prefix.
    fn first_stop_by_prefixes(
        tokenizer: &dyn Tokenizer,
        tokens: &[u32],
        stops: &[String],
    ) -> Option<(usize, String)> {
        (1..=tokens.len()).find_map(|end| {
            let text = tokenizer.decode(&tokens[..end]).unwrap();
            stops
                .iter()
                .find(|s| text.ends_with(s.as_str()))
                .map(|s| (end, s.clone()))
        })
    }

    #[test]
    fn stop_strings_stop_where_a_prefix_by_prefix_check_does() {
        let tok = ByteTokenizer::new();
        let stops: Vec<String> = vec!["</tool_call>".into(), "é!".into(), "\n\nUser:".into()];
        let texts = [
            "plain text without any stop",
            "<tool_call>{\"a\": 1}</tool_call> and after </tool_call>",
            "café! then more",
            "ééééé!",
            "x\n\nUser: hi",
            "</tool_call",
            "",
        ];
        for t in texts {
            let tokens = tok.encode(t).unwrap();
            assert_eq!(
                first_stop(&tok, &tokens, &stops).unwrap(),
                first_stop_by_prefixes(&tok, &tokens, &stops),
                "{t:?}"
            );
        }
        // A long turn with the stop string far in.
        let long = format!("{}</tool_call>{}", "y".repeat(5000), "z".repeat(100));
        let tokens = tok.encode(&long).unwrap();
        assert_eq!(
            first_stop(&tok, &tokens, &stops).unwrap(),
            Some((5000 + "</tool_call>".len(), "</tool_call>".to_string()))
        );
    }

    /// One megabyte in one turn replays in one pass (decoding every prefix took minutes).
    #[tokio::test]
    async fn a_one_megabyte_turn_replays_with_stop_strings() {
        let tok: Arc<dyn Tokenizer> = Arc::new(ByteTokenizer::new());
        let turn = "a".repeat(1 << 20);
        let policy = ScriptedPolicy::new(vec![turn.clone()], tok);
        let request = SampleRequest {
            context: Arc::new(vec![1]),
            max_tokens: 2 << 20,
            stop_tokens: vec![],
            stop_strings: vec!["</tool_call>".into()],
            params: SamplingParams::default(),
            on_token: None,
        };
        let sample = policy.sample(request).await.unwrap();
        assert_eq!(sample.tokens.len(), turn.len());
        assert_eq!(sample.finish, FinishReason::Length);
    }
}

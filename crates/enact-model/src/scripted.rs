//! A scripted policy: replays given assistant turns, token-exact through a tokenizer.
//! For tests, demos and the red-team suite's adversarial and reference episodes.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use enact_core::{FinishReason, Policy, PolicyError, Sample, SampleRequest, Tokenizer};

pub struct ScriptedPolicy {
    turns: Vec<String>,
    next: Mutex<usize>,
    tokenizer: Arc<dyn Tokenizer>,
    version: u64,
}

impl ScriptedPolicy {
    pub fn new(turns: Vec<String>, tokenizer: Arc<dyn Tokenizer>) -> Self {
        ScriptedPolicy {
            turns,
            next: Mutex::new(0),
            tokenizer,
            version: 0,
        }
    }

    /// Sets the policy version stamped on sampled tokens.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }
}

#[async_trait]
impl Policy for ScriptedPolicy {
    async fn sample(&self, request: SampleRequest) -> Result<Sample, PolicyError> {
        let index = {
            let mut next = self
                .next
                .lock()
                .map_err(|_| PolicyError::Backend("scripted policy state poisoned".into()))?;
            let i = *next;
            *next += 1;
            i
        };
        let text = self
            .turns
            .get(index)
            .ok_or(PolicyError::Exhausted(self.turns.len()))?;
        let mut tokens = self
            .tokenizer
            .encode(text)
            .map_err(|e| PolicyError::Backend(e.to_string()))?;
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

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
        for (i, _) in tokens.iter().enumerate() {
            let so_far = self
                .tokenizer
                .decode(&tokens[..=i])
                .map_err(|e| PolicyError::Backend(e.to_string()))?;
            if let Some(s) = request
                .stop_strings
                .iter()
                .find(|s| so_far.ends_with(s.as_str()))
            {
                tokens.truncate(i + 1);
                finish = FinishReason::StopString(s.clone());
                break;
            }
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
}

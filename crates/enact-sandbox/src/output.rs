//! Capped output capture.

use serde::Serialize;

/// Captured stdout or stderr of a command.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The first `cap` bytes (raw; may be binary).
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// Everything the command wrote, including what was dropped.
    pub total_bytes: u64,
    pub truncated: bool,
    /// Lossy UTF-8 view, with the truncation marker appended when truncated.
    pub text: String,
}

impl CapturedOutput {
    pub fn omitted_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.bytes.len() as u64)
    }
    /// The marker appended to `text` when output was truncated.
    pub fn marker(omitted: u64) -> String {
        format!("\n[enact: output truncated, {omitted} bytes omitted]\n")
    }
}

/// Accumulates bytes up to a cap.
#[derive(Debug)]
pub(crate) struct Capture {
    cap: usize,
    bytes: Vec<u8>,
    total: u64,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            cap,
            bytes: Vec::with_capacity(cap.min(64 * 1024)),
            total: 0,
        }
    }
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..room.min(data.len())]);
    }
    pub fn finish(self) -> CapturedOutput {
        let truncated = self.total > self.bytes.len() as u64;
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if truncated {
            text.push_str(&CapturedOutput::marker(
                self.total - self.bytes.len() as u64,
            ));
        }
        CapturedOutput {
            bytes: self.bytes,
            total_bytes: self.total,
            truncated,
            text,
        }
    }
}

//! Persistent shell sessions inside a sandbox.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::output::{Capture, CapturedOutput};
use crate::sandbox::{QuotaWatch, Sandbox, SandboxProcess, over_quota};
use crate::{ExitStatusKind, SandboxError};

/// Result of one command in a [`ShellSession`].
#[derive(Debug, Clone, Serialize)]
pub struct ShellOutcome {
    pub status: ExitStatusKind,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub wall_time: Duration,
    /// The shell died (or was killed at the timeout) and a fresh one was started: shell
    /// state (cwd, variables, background jobs) was lost.
    pub shell_restarted: bool,
}

/// A long-running `bash` (or `sh`) in a sandbox. Commands share cwd, variables and files.
pub struct ShellSession {
    sandbox: Sandbox,
    proc: Option<SandboxProcess>,
    /// How many times the shell was restarted.
    pub restarts: u32,
}

/// The most bytes kept after the marker while waiting for its end of line (an exit code).
const MAX_TAIL: usize = 64;

/// Finds `\n<marker>...\n` in a stream while keeping output capped.
struct Framer {
    pending: Vec<u8>,
    capture: Capture,
    pattern: Vec<u8>,
    /// Bytes after the pattern up to the end of line (the exit code on stdout).
    tail: Option<Vec<u8>>,
}

impl Framer {
    fn new(pattern: Vec<u8>, cap: usize) -> Self {
        Framer {
            pending: Vec::new(),
            capture: Capture::new(cap),
            pattern,
            tail: None,
        }
    }
    fn done(&self) -> bool {
        self.tail.is_some()
    }
    fn push(&mut self, data: &[u8]) {
        if self.done() {
            return;
        }
        self.pending.extend_from_slice(data);
        if let Some(pos) = find(&self.pending, &self.pattern) {
            let after = pos + self.pattern.len();
            if let Some(nl) = self.pending[after..].iter().position(|b| *b == b'\n') {
                self.capture.push(&self.pending[..pos]);
                self.tail = Some(self.pending[after..after + nl].to_vec());
                self.pending.clear();
            } else if self.pending.len() - after > MAX_TAIL {
                // The marker line never ends (the command printed the marker itself and
                // then streamed): stop buffering; the exit code reads as unknown.
                self.capture.push(&self.pending[..pos]);
                self.tail = Some(self.pending[after..after + MAX_TAIL].to_vec());
                self.pending.clear();
            }
            return;
        }
        // Keep only what could be the start of the pattern.
        let keep = self.pattern.len() + 32;
        if self.pending.len() > keep {
            let cut = self.pending.len() - keep;
            self.capture.push(&self.pending[..cut]);
            self.pending.drain(..cut);
        }
    }
    fn finish(mut self) -> CapturedOutput {
        if self.tail.is_none() {
            let p = std::mem::take(&mut self.pending);
            self.capture.push(&p);
        }
        self.capture.finish()
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    h.windows(n.len()).position(|w| w == n)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl ShellSession {
    pub(crate) async fn start(sandbox: Sandbox) -> Result<ShellSession, SandboxError> {
        let mut s = ShellSession {
            sandbox,
            proc: None,
            restarts: 0,
        };
        s.ensure().await?;
        Ok(s)
    }

    async fn ensure(&mut self) -> Result<(), SandboxError> {
        if self.proc.is_none() {
            let argv: Vec<String> = ["/bin/bash", "--noprofile", "--norc"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let p = match self.sandbox.spawn(&argv).await {
                Ok(p) => p,
                Err(_) => self.sandbox.spawn(&["/bin/sh".to_string()]).await?,
            };
            self.proc = Some(p);
        }
        Ok(())
    }

    async fn restart(&mut self) -> Result<(), SandboxError> {
        if let Some(p) = self.proc.take() {
            let _ = p.kill().await;
        }
        self.restarts += 1;
        self.ensure().await
    }

    /// Run `command` (shell syntax) with a timeout. A failing command is just a non-zero
    /// exit; a command that kills the shell or times out restarts it (`shell_restarted`).
    pub async fn run(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<ShellOutcome, SandboxError> {
        self.ensure().await?;
        let marker = format!("__ENACT_{}__", crate::random_hex(12)?);
        let script = format!(
            "eval {} </dev/null; printf '\\n%s %d\\n' {m} $?; printf '\\n%s \\n' {m} >&2\n",
            shell_quote(command),
            m = marker
        );
        let cap = self.sandbox.config().limits.output_bytes;
        let mut out = Framer::new(format!("\n{marker} ").into_bytes(), cap);
        let mut err = Framer::new(format!("\n{marker} ").into_bytes(), cap);
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;

        let Some(proc) = self.proc.as_mut() else {
            return Err(SandboxError::InstanceLost("shell missing".into()));
        };
        let wrote = match proc.stdin.as_mut() {
            Some(w) => w.write_all(script.as_bytes()).await.is_ok(),
            None => false,
        };
        let mut stdout = proc.stdout.take();
        let mut stderr = proc.stderr.take();
        let mut ob = vec![0u8; 16384];
        let mut eb = vec![0u8; 16384];
        let mut shell_exit: Option<i32> = None;
        let mut timed_out = false;
        let mut quota_killed = false;
        let quota = self.sandbox.workspace_quota();
        let mut quota_watch = QuotaWatch::new(quota.clone());
        if wrote {
            while !(out.done() && err.done()) {
                tokio::select! {
                    r = async { match stdout.as_mut() { Some(s) => s.read(&mut ob).await, None => std::future::pending().await } } => match r {
                        Ok(0) | Err(_) => { stdout = None; }
                        Ok(n) => out.push(&ob[..n]),
                    },
                    r = async { match stderr.as_mut() { Some(s) => s.read(&mut eb).await, None => std::future::pending().await } } => match r {
                        Ok(0) | Err(_) => { stderr = None; }
                        Ok(n) => err.push(&eb[..n]),
                    },
                    r = proc.wait_raw(), if shell_exit.is_none() => {
                        shell_exit = Some(r?.status);
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        timed_out = true;
                        break;
                    }
                    over = quota_watch.over(), if quota.is_some() => {
                        if over {
                            quota_killed = true;
                            break;
                        }
                    }
                }
                if shell_exit.is_some() && stdout.is_none() && stderr.is_none() {
                    break;
                }
            }
        } else {
            shell_exit = Some(proc.wait_raw().await.map(|r| r.status).unwrap_or(0));
        }
        let code: Option<i32> = out
            .tail
            .as_ref()
            .and_then(|t| String::from_utf8_lossy(t).trim().parse().ok());
        let finished = out.done() && err.done();
        if !quota_killed
            && let Some((dir, max)) = quota
            && over_quota(dir, max).await
        {
            quota_killed = true;
        }
        let status;
        let mut restarted = false;
        if quota_killed {
            // Background writers die with the shell; the files stay for the agent to delete.
            status = ExitStatusKind::DiskQuota;
            self.restart().await?;
            restarted = true;
        } else if finished && !timed_out {
            status = ExitStatusKind::Exited(code.unwrap_or(-1));
            proc.stdout = stdout;
            proc.stderr = stderr;
        } else if timed_out {
            status = ExitStatusKind::TimedOut;
            self.restart().await?;
            restarted = true;
        } else {
            let st = match shell_exit {
                Some(s) => s,
                None => proc.wait_raw().await.map(|r| r.status).unwrap_or(0),
            };
            status = if libc::WIFEXITED(st) {
                ExitStatusKind::Exited(libc::WEXITSTATUS(st))
            } else if libc::WIFSIGNALED(st) {
                ExitStatusKind::Signaled(libc::WTERMSIG(st))
            } else {
                ExitStatusKind::Exited(-1)
            };
            self.proc = None;
            self.restart().await?;
            restarted = true;
        }
        Ok(ShellOutcome {
            status,
            stdout: out.finish(),
            stderr: err.finish(),
            wall_time: start.elapsed(),
            shell_restarted: restarted,
        })
    }
}

impl Sandbox {
    /// Start a persistent shell in this sandbox.
    pub async fn shell(&self) -> Result<ShellSession, SandboxError> {
        ShellSession::start(self.clone()).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    #[test]
    fn framer_finds_marker_across_chunks() {
        let mut f = Framer::new(b"\n__M__ ".to_vec(), 1000);
        f.push(b"hello\nwor");
        f.push(b"ld\n__M");
        assert!(!f.done());
        f.push(b"__ 3\n");
        assert!(f.done());
        assert_eq!(f.tail.as_deref(), Some(&b"3"[..]));
        let o = f.finish();
        assert_eq!(o.text, "hello\nworld");
    }
    #[test]
    fn framer_caps_output() {
        let mut f = Framer::new(b"\n__M__ ".to_vec(), 10);
        f.push(&[b'x'; 1000]);
        f.push(b"\n__M__ 0\n");
        let o = f.finish();
        assert!(o.truncated);
        assert_eq!(o.total_bytes, 1000);
        assert!(o.text.contains("990 bytes omitted"));
    }
    #[test]
    fn framer_bounds_an_unterminated_marker_line() {
        let mut f = Framer::new(b"\n__M__ ".to_vec(), 10);
        f.push(b"out\n__M__ ");
        for _ in 0..1000 {
            f.push(&[b'x'; 1024]);
            assert!(f.pending.len() <= 2 * MAX_TAIL + 16, "{}", f.pending.len());
        }
        assert!(f.done());
        assert_eq!(f.finish().text, "out");
    }
    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}

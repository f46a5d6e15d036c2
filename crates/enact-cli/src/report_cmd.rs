//! `enact report` (a self-contained HTML report and a Markdown summary of run directories)
//! and `enact compare` (paired differences per task between two runs). The metrics, plots
//! and pages are `enact-eval`'s; this file reads arguments and writes files.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use enact_eval::{Comparison, Options, Run, open_run};

#[derive(Args)]
pub struct ReportArgs {
    /// Run directories written by `enact run`, `eval`, `rollout` or `train` (or JSONL files of episodes).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The HTML file to write (the Markdown summary goes beside it, `.md`). Default:
    /// `report.html` in the run directory when there is one, else in the current directory.
    #[arg(short = 'o', long)]
    out: Option<PathBuf>,
    /// Dollars per million sampled tokens, to show a cost per success.
    #[arg(long)]
    price_per_mtok: Option<f64>,
}

#[derive(Args)]
pub struct CompareArgs {
    /// The baseline run directory (A).
    run_a: PathBuf,
    /// The run compared with it (B); differences are B − A.
    run_b: PathBuf,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seed of the paired bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn open(path: &std::path::Path) -> Result<Run> {
    open_run(path).with_context(|| format!("cannot read the run {}", path.display()))
}

pub fn report(args: ReportArgs) -> Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|p| open(p))
        .collect::<Result<Vec<_>>>()?;
    if runs
        .iter()
        .all(|r| r.headline().is_empty() && r.training.is_empty())
    {
        bail!(
            "no finished episode in {}: wait for the run to write one, or pass another directory",
            args.runs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let options = Options {
        price_per_mtok: args.price_per_mtok,
        ..Options::default()
    };
    let html_path = match args.out {
        Some(p) => p,
        None if runs.len() == 1 && args.runs[0].is_dir() => args.runs[0].join("report.html"),
        None => PathBuf::from("report.html"),
    };
    let md_path = html_path.with_extension("md");
    std::fs::write(&html_path, enact_eval::report::html(&runs, &options))
        .with_context(|| format!("cannot write {}", html_path.display()))?;
    let markdown = enact_eval::report::markdown(&runs, &options);
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    print!("{markdown}");
    println!("wrote {} and {}", html_path.display(), md_path.display());
    Ok(())
}

pub fn compare(args: CompareArgs) -> Result<()> {
    let (a, b) = (open(&args.run_a)?, open(&args.run_b)?);
    let c = Comparison::of(a.headline(), b.headline(), args.seed);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&c).context("cannot serialise the comparison")?
        );
    } else {
        print!("{}", c.table(&a.name, &b.name));
    }
    if c.pairs.is_empty() {
        bail!(
            "the runs share no task id ({} tasks only in A, {} only in B); compare runs of the same environment, split and seed",
            c.only_a,
            c.only_b
        );
    }
    Ok(())
}

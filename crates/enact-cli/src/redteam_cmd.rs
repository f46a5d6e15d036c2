//! `enact redteam`: run the red-team suite (adversarial episodes for the documented
//! reward-hacking vectors, and every environment's honest reference solutions) and print the
//! table. Fails (non-zero exit) if any cheat succeeded or any honest solution was penalised.

use anyhow::{Result, bail};
use clap::Args;
use enact_verify::{FlagAction, MonitorPolicy};

#[derive(Args)]
pub struct RedteamArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Episodes in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Only attacks whose id contains this text, or whose vector number equals it
    /// (skips the honest solutions).
    #[arg(long)]
    only: Option<String>,
    /// What a monitor flag does: withhold (reward 0), penalise or record.
    #[arg(long, default_value = "withhold")]
    flag_action: String,
    /// Honest reference episodes per environment (code and shell always run one per family).
    #[arg(long, default_value_t = 2)]
    honest_per_suite: usize,
}

pub async fn run(args: RedteamArgs) -> Result<()> {
    let action: FlagAction = args.flag_action.parse().map_err(anyhow::Error::msg)?;
    let opts = enact_redteam::Options {
        concurrency: args.concurrency.max(1),
        honest_per_suite: args.honest_per_suite.max(1),
        filter: args.only.clone(),
        policy: MonitorPolicy {
            default: action,
            ..MonitorPolicy::default()
        },
    };
    let report = crate::live::with_spinner(
        "red team: running the attacks and the honest reference solutions",
        enact_redteam::run(&opts),
    )
    .await;
    let report = report.map_err(|e| anyhow::anyhow!("the red-team suite could not run: {e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if !report.ok() {
        bail!(
            "red team: {} cheat(s) succeeded, {} honest solution(s) penalised, {} loopback connection(s)",
            report.succeeded,
            report.honest_failures,
            report.listener_connections
        );
    }
    Ok(())
}

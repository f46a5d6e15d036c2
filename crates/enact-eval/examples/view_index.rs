//! How fast the viewer's list is on 10,000 episodes, against the baseline of reading the
//! whole file for each request (what `enact show` and a naive viewer do).
//!
//! `cargo run -p enact-eval --example view_index [-- EPISODES]`
//!
//! Prints, for the same file: the one-off index build, a page from the index, and a page
//! by the baseline (parse every episode, filter, take 50). Numbers only, no assertions.

use std::io::Write;
use std::time::Instant;

use enact_eval::fixtures::Fixture;
use enact_eval::{EpisodeIndex, Filter, read_jsonl};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("trajectories.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for i in 0..n {
        let mut fx = Fixture::new(&format!("t{i:05}"), i % 3 == 0);
        fx.tool_error = i % 2 == 0;
        fx.retry = i % 4 == 0;
        fx.flag = i % 7 == 0;
        writeln!(f, "{}", fx.to_json()?)?;
    }
    drop(f);
    let size = std::fs::metadata(&path)?.len();
    println!("{n} episodes, {:.1} MB", size as f64 / 1e6);
    let filter = Filter {
        success: Some(false),
        flag: Some("any".into()),
        ..Filter::default()
    };

    let t = Instant::now();
    let index = EpisodeIndex::build(&path)?;
    let build = t.elapsed();
    let requests = 100;
    let t = Instant::now();
    let mut shown = 0;
    for r in 0..requests {
        shown += index.page(&filter, r * 5, 50).items.len();
    }
    let indexed = t.elapsed() / requests as u32;
    let t = Instant::now();
    let one = index.read(n - 1)?;
    let read_last = t.elapsed();

    let baseline_requests = 3;
    let t = Instant::now();
    for r in 0..baseline_requests {
        let all = read_jsonl(&path)?;
        shown += all
            .iter()
            .filter(|l| !l.episode.outcome.success && !l.episode.outcome.flags.is_empty())
            .skip(r * 5)
            .take(50)
            .count();
    }
    let baseline = t.elapsed() / baseline_requests as u32;
    println!("index build (once):           {build:>12.2?}");
    println!("list page, indexed:           {indexed:>12.2?}  (mean of {requests})");
    println!("list page, baseline re-read:  {baseline:>12.2?}  (mean of {baseline_requests})");
    println!(
        "episode {} by offset:         {read_last:>12.2?}  ({} bytes)",
        n - 1,
        one.len()
    );
    println!(
        "baseline / indexed page: {:.0}x ({shown} rows shown)",
        baseline.as_secs_f64() / indexed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

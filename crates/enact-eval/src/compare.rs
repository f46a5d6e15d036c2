//! `enact compare RUN_A RUN_B`: paired differences per task (B − A) over the tasks both runs
//! have, with a paired bootstrap interval and sign counts.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::Loaded;
use crate::stats::{Estimate, bootstrap_mean};

/// One task in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskPair {
    pub task_id: String,
    pub success_a: f64,
    pub success_b: f64,
    pub progress_a: f64,
    pub progress_b: f64,
}

/// The paired comparison of two runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub pairs: Vec<TaskPair>,
    pub only_a: usize,
    pub only_b: usize,
    /// Mean per-task difference (B − A) of success and of progress, paired bootstrap 95%.
    pub success_diff: Estimate,
    pub progress_diff: Estimate,
    /// Tasks where B's success is higher / lower / equal.
    pub b_better: usize,
    pub a_better: usize,
    pub tied: usize,
}

/// Per task: (mean success, mean progress).
fn per_task(eps: &[Loaded]) -> BTreeMap<String, (f64, f64)> {
    let mut acc: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for l in eps {
        let e = acc.entry(l.episode.task.id.clone()).or_default();
        e.0 += f64::from(u8::from(l.episode.outcome.success));
        e.1 += l.episode.outcome.progress;
        e.2 += 1;
    }
    acc.into_iter()
        .map(|(k, (s, p, n))| (k, (s / n as f64, p / n as f64)))
        .collect()
}

impl Comparison {
    pub fn of(a: &[Loaded], b: &[Loaded], seed: u64) -> Comparison {
        let (ta, tb) = (per_task(a), per_task(b));
        let pairs: Vec<TaskPair> = ta
            .iter()
            .filter_map(|(id, &(sa, pa))| {
                tb.get(id).map(|&(sb, pb)| TaskPair {
                    task_id: id.clone(),
                    success_a: sa,
                    success_b: sb,
                    progress_a: pa,
                    progress_b: pb,
                })
            })
            .collect();
        let ds: Vec<f64> = pairs.iter().map(|p| p.success_b - p.success_a).collect();
        let dp: Vec<f64> = pairs.iter().map(|p| p.progress_b - p.progress_a).collect();
        let eps = 1e-12;
        Comparison {
            only_a: ta.len() - pairs.len(),
            only_b: tb.len() - pairs.len(),
            success_diff: bootstrap_mean(&ds, seed),
            progress_diff: bootstrap_mean(&dp, seed),
            b_better: ds.iter().filter(|d| **d > eps).count(),
            a_better: ds.iter().filter(|d| **d < -eps).count(),
            tied: ds.iter().filter(|d| d.abs() <= eps).count(),
            pairs,
        }
    }

    /// The text `enact compare` prints.
    pub fn table(&self, name_a: &str, name_b: &str) -> String {
        let mut out = format!("A = {name_a}\nB = {name_b}\n");
        out.push_str(&format!(
            "{} paired task(s); {} only in A, {} only in B\n",
            self.pairs.len(),
            self.only_a,
            self.only_b
        ));
        out.push_str(&format!(
            "{:<24} {:>8} {:>8} {:>8} {:>8}\n",
            "task", "succ A", "succ B", "prog A", "prog B"
        ));
        for p in &self.pairs {
            out.push_str(&format!(
                "{:<24} {:>8.2} {:>8.2} {:>8.3} {:>8.3}\n",
                p.task_id, p.success_a, p.success_b, p.progress_a, p.progress_b
            ));
        }
        let signed = |e: &crate::stats::Estimate, pct: f64| {
            format!(
                "{:+.3} [{:+.3}, {:+.3}]",
                pct * e.value,
                pct * e.lo,
                pct * e.hi
            )
        };
        out.push_str(&format!(
            "success B − A: {} (paired bootstrap 95%); B better on {}, A better on {}, tied {}\n",
            signed(&self.success_diff, 1.0),
            self.b_better,
            self.a_better,
            self.tied
        ));
        out.push_str(&format!(
            "progress B − A: {}\n",
            signed(&self.progress_diff, 1.0)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fixtures::episode_json;
    use crate::load::parse_line;

    fn eps(spec: &[(&str, bool)]) -> Vec<Loaded> {
        spec.iter()
            .map(|(t, ok)| parse_line(&episode_json(t, *ok, false, false).to_string()).unwrap())
            .collect()
    }

    #[test]
    fn pairs_only_shared_tasks_and_counts_signs() {
        let a = eps(&[("t1", false), ("t2", true), ("t3", false), ("a-only", true)]);
        let b = eps(&[("t1", true), ("t2", true), ("t3", false), ("b-only", false)]);
        let c = Comparison::of(&a, &b, 0);
        assert_eq!(c.pairs.len(), 3);
        assert_eq!((c.only_a, c.only_b), (1, 1));
        assert_eq!((c.b_better, c.a_better, c.tied), (1, 0, 2));
        assert!((c.success_diff.value - 1.0 / 3.0).abs() < 1e-9);
        assert!(c.success_diff.lo >= 0.0 && c.success_diff.hi <= 1.0);
        assert!(c.table("a", "b").contains("B better on 1"));
    }
}

//! `plot.svg` of a training run, written by hand (no plotting dependency): held-out success
//! and progress, and the reward of trained episodes, against the optimizer step (top); the
//! training loss (bottom). The chart itself is `enact_eval::report::training_chart`, shared
//! with `enact report`.

use enact_eval::load::TrainingPoint;

use super::MetricsRow;

/// The SVG text: `enact-eval`'s training chart (the one `enact report` shows) of these rows.
pub fn svg(rows: &[MetricsRow], title: &str) -> String {
    let points: Vec<TrainingPoint> = rows
        .iter()
        .map(|r| TrainingPoint {
            phase: r.phase.clone(),
            step: r.step,
            reward: r.reward,
            success: r.success,
            loss: r.train.as_ref().map(|m| m.loss),
            eval_label: r.eval.as_ref().map(|e| e.label.clone()),
            eval_success: r.eval.as_ref().map(|e| e.success),
            eval_progress: r.eval.as_ref().map(|e| e.progress),
        })
        .collect();
    enact_eval::report::training_chart(&points, title)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_cmd::EvalPoint;

    #[test]
    fn plots_every_series_and_escapes_the_title() {
        let rows = vec![
            MetricsRow {
                phase: "eval".into(),
                step: 0,
                eval: Some(EvalPoint {
                    success: 0.1,
                    progress: 0.2,
                    ..EvalPoint::default()
                }),
                ..MetricsRow::default()
            },
            MetricsRow {
                phase: "rl".into(),
                step: 3,
                reward: Some(0.5),
                train: Some(enact_train::StepMetrics {
                    loss: 0.7,
                    ..Default::default()
                }),
                ..MetricsRow::default()
            },
            MetricsRow {
                phase: "eval".into(),
                step: 3,
                eval: Some(EvalPoint {
                    success: 0.6,
                    progress: 0.7,
                    ..EvalPoint::default()
                }),
                ..MetricsRow::default()
            },
        ];
        let s = svg(&rows, "a <b> & c");
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;b&gt; &amp; c"));
        for name in [
            "held-out success",
            "held-out progress",
            "train reward (RL)",
            "training loss",
        ] {
            assert!(s.contains(name), "{name} missing");
        }
        assert!(s.contains(">10%<") && s.contains(">60%<"));
        // No NaN or infinite coordinates.
        assert!(!s.contains("NaN") && !s.contains("inf"));
    }

    #[test]
    fn an_empty_run_still_gives_a_valid_svg() {
        let s = svg(&[], "empty");
        assert!(s.starts_with("<svg") && s.contains("</svg>"));
        assert!(!s.contains("NaN"));
    }
}

//! `plot.svg` of a training run, written by hand (no plotting dependency): held-out success
//! and progress, and the reward of trained episodes, against the optimizer step (top); the
//! training loss (bottom).

use std::fmt::Write;

use super::MetricsRow;

const W: f64 = 760.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 170.0;
const TOP_H: f64 = 260.0;
const LOW_H: f64 = 140.0;
const GAP: f64 = 50.0;
const TOP: f64 = 40.0;

struct Series<'a> {
    name: &'a str,
    colour: &'a str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG text.
pub fn svg(rows: &[MetricsRow], title: &str) -> String {
    let max_step = rows.iter().map(|r| r.step).max().unwrap_or(0).max(1) as f64;
    let eval = |f: fn(&super::EvalPoint) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| r.eval.as_ref().map(|e| (r.step as f64, f(e))))
            .collect()
    };
    let top = [
        Series {
            name: "held-out success",
            colour: "#1f77b4",
            dashed: false,
            points: eval(|e| e.success),
        },
        Series {
            name: "held-out progress",
            colour: "#1f77b4",
            dashed: true,
            points: eval(|e| e.progress),
        },
        Series {
            name: "train reward (RL)",
            colour: "#ff7f0e",
            dashed: false,
            points: rows
                .iter()
                .filter_map(|r| r.reward.map(|v| (r.step as f64, v)))
                .collect(),
        },
    ];
    let loss: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.train.as_ref().map(|m| (r.step as f64, m.loss)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let (lmin, lmax) = loss
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, v)| {
            (a.min(v), b.max(v))
        });
    let (lmin, lmax) = if loss.is_empty() {
        (0.0, 1.0)
    } else if (lmax - lmin).abs() < 1e-9 {
        (lmin - 0.5, lmax + 0.5)
    } else {
        (lmin, lmax)
    };
    let plot_w = W - LEFT - RIGHT;
    let height = TOP + TOP_H + GAP + LOW_H + 40.0;
    let x = |s: f64| LEFT + plot_w * s / max_step;
    let y_top = |v: f64| TOP + TOP_H * (1.0 - v.clamp(0.0, 1.0));
    let low_top = TOP + TOP_H + GAP;
    let y_low = |v: f64| low_top + LOW_H * (1.0 - (v - lmin) / (lmax - lmin));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    // Axes and grid.
    for i in 0..=4 {
        let v = f64::from(i) / 4.0;
        let yy = y_top(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.2}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    for (v, label) in [(lmin, lmin), (lmax, lmax)] {
        let yy = y_low(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{label:.3}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let ticks = (max_step as u64).clamp(1, 10);
    for i in 0..=ticks {
        let st = max_step * i as f64 / ticks as f64;
        let xx = x(st);
        let _ = writeln!(
            s,
            r#"<text x="{xx}" y="{}" text-anchor="middle">{st:.0}</text>"#,
            low_top + LOW_H + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">optimizer step (policy version)</text>"#,
        LEFT + plot_w / 2.0,
        low_top + LOW_H + 34.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}">training loss</text>"#,
        low_top - 8.0
    );
    // Series.
    let mut legend_y = TOP + 10.0;
    let mut draw = |s: &mut String,
                    name: &str,
                    colour: &str,
                    dashed: bool,
                    pts: &[(f64, f64)],
                    low: bool| {
        if pts.is_empty() {
            return;
        }
        let fy = |v: f64| if low { y_low(v) } else { y_top(v) };
        let path: Vec<String> = pts
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), fy(b)))
            .collect();
        let dash = if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            path.join(" ")
        );
        for &(a, b) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: step {a:.0}, {b:.3}</title></circle>"#,
                x(a),
                fy(b),
                escape(name)
            );
        }
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            lx + 28.0,
            legend_y + 4.0,
            escape(name)
        );
        legend_y += 18.0;
    };
    for series in &top {
        draw(
            &mut s,
            series.name,
            series.colour,
            series.dashed,
            &series.points,
            false,
        );
    }
    draw(&mut s, "training loss", "#2ca02c", false, &loss, true);
    // Held-out success values written at their points.
    for (st, v) in &top[0].points {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#1f77b4">{:.0}%</text>"##,
            x(*st),
            y_top(*v) - 8.0,
            100.0 * v
        );
    }
    s.push_str("</svg>\n");
    s
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

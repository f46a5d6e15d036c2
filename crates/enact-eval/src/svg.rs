//! Hand-written SVG charts (no plotting dependency), shared by `enact train`'s `plot.svg` and
//! `enact report`: line/scatter panels over a shared x axis, and bars with intervals.

use std::fmt::Write;

const W: f64 = 860.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 270.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;

/// Escapes text for SVG and HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One series of points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub dashed: bool,
    /// Joined by a line (false: points only, a scatter).
    pub line: bool,
    /// Write each point's value above it as a percentage.
    pub percent_labels: bool,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn line(name: &str, colour: &'static str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            colour,
            dashed: false,
            line: true,
            percent_labels: false,
            points,
        }
    }
}

/// The y range of a panel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum YRange {
    /// [0, 1] with quarter grid lines.
    Unit,
    /// From the data's minimum to its maximum.
    Auto,
}

/// One panel: series over the chart's x axis.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Written above the panel (empty: none).
    pub title: String,
    pub height: f64,
    pub range: YRange,
    pub series: Vec<Series>,
}

/// Panels stacked over one x axis.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub panels: Vec<Panel>,
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = &(f64, f64)> {
    points
        .iter()
        .filter(|(a, b)| a.is_finite() && b.is_finite())
}

impl Chart {
    /// The SVG text.
    pub fn svg(&self) -> String {
        let all = || {
            self.panels
                .iter()
                .flat_map(|p| p.series.iter())
                .flat_map(|s| finite(&s.points))
        };
        let max_x = all().map(|p| p.0).fold(0.0, f64::max).max(1.0);
        let plot_w = W - LEFT - RIGHT;
        let height = TOP
            + self.panels.iter().map(|p| p.height).sum::<f64>()
            + GAP * self.panels.len().saturating_sub(1) as f64
            + 40.0;
        let x = |v: f64| LEFT + plot_w * v / max_x;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#,
            escape(&self.title)
        );
        let mut top = TOP;
        let mut legend_y = TOP + 10.0;
        for panel in &self.panels {
            let values: Vec<f64> = panel
                .series
                .iter()
                .flat_map(|s| finite(&s.points).map(|p| p.1))
                .collect();
            let (lo, hi) = match panel.range {
                YRange::Unit => (0.0, 1.0),
                YRange::Auto if values.is_empty() => (0.0, 1.0),
                YRange::Auto => {
                    let (a, b) = values
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                            (a.min(v), b.max(v))
                        });
                    if (b - a).abs() < 1e-9 {
                        (a - 0.5, b + 0.5)
                    } else {
                        (a, b)
                    }
                }
            };
            let h = panel.height;
            let y = |v: f64| top + h * (1.0 - ((v - lo) / (hi - lo)).clamp(0.0, 1.0));
            if !panel.title.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<text x="{LEFT}" y="{}">{}</text>"#,
                    top - 8.0,
                    escape(&panel.title)
                );
            }
            let grid: Vec<f64> = match panel.range {
                YRange::Unit => (0..=4).map(|i| f64::from(i) / 4.0).collect(),
                YRange::Auto => vec![lo, hi],
            };
            for v in grid {
                let yy = y(v);
                let text = if panel.range == YRange::Unit {
                    format!("{v:.2}")
                } else {
                    format!("{v:.3}")
                };
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{text}</text>"##,
                    LEFT + plot_w,
                    LEFT - 6.0,
                    yy + 4.0
                );
            }
            for series in &panel.series {
                let pts: Vec<(f64, f64)> = finite(&series.points).copied().collect();
                if pts.is_empty() {
                    continue;
                }
                let dash = if series.dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                };
                let colour = series.colour;
                if series.line {
                    let path: Vec<String> = pts
                        .iter()
                        .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
                        .collect();
                    let _ = writeln!(
                        s,
                        r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
                        path.join(" ")
                    );
                }
                for &(a, b) in &pts {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {a:.0}, {b:.3}</title></circle>"#,
                        x(a),
                        y(b),
                        escape(&series.name)
                    );
                    if series.percent_labels {
                        let _ = writeln!(
                            s,
                            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{colour}">{:.0}%</text>"#,
                            x(a),
                            y(b) - 8.0,
                            100.0 * b
                        );
                    }
                }
                let lx = LEFT + plot_w + 14.0;
                let _ = writeln!(
                    s,
                    r#"<line x1="{lx}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                    lx + 22.0,
                    lx + 28.0,
                    legend_y + 4.0,
                    escape(&series.name)
                );
                legend_y += 18.0;
            }
            top += h + GAP;
        }
        // The x axis under the last panel.
        let bottom = top - GAP;
        let ticks = (max_x as u64).clamp(1, 10);
        for i in 0..=ticks {
            let v = max_x * i as f64 / ticks as f64;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{v:.0}</text>"#,
                x(v),
                bottom + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            bottom + 34.0,
            escape(&self.x_label)
        );
        s.push_str("</svg>\n");
        s
    }
}

/// One bar: a label, a value in [0, 1] and its interval.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Horizontal bars in [0, 1] with interval whiskers.
pub fn bars(title: &str, bars: &[Bar]) -> String {
    let row = 26.0;
    let left = 340.0;
    let plot_w = W - left - 60.0;
    let height = TOP + row * bars.len() as f64 + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let yy = TOP + row * i as f64;
        let v = if b.value.is_finite() {
            b.value.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{left}" y="{yy}" width="{:.1}" height="{}" fill="#4c78a8"><title>{}: {:.3}</title></rect><line x1="{:.1}" y1="{}" x2="{:.1}" y2="{}" stroke="black"/><text x="{:.1}" y="{}">{:.1}%</text>"##,
            left - 8.0,
            yy + 14.0,
            escape(&b.label),
            plot_w * v,
            row - 8.0,
            escape(&b.label),
            b.value,
            left + plot_w * b.lo.clamp(0.0, 1.0),
            yy + 9.0,
            left + plot_w * b.hi.clamp(0.0, 1.0),
            yy + 9.0,
            left + plot_w * v + 6.0,
            yy + 14.0,
            100.0 * v
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_and_never_write_nan() {
        let chart = Chart {
            title: "a <b> & c".into(),
            x_label: "turn".into(),
            panels: vec![Panel {
                title: String::new(),
                height: 200.0,
                range: YRange::Auto,
                series: vec![Series::line("s", "#000", vec![(0.0, 1.0), (1.0, f64::NAN)])],
            }],
        };
        let s = chart.svg();
        assert!(s.contains("a &lt;b&gt; &amp; c"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        let b = bars(
            "rates",
            &[Bar {
                label: "x".into(),
                value: 0.5,
                lo: 0.2,
                hi: 0.8,
            }],
        );
        assert!(b.contains(">50.0%<") && b.starts_with("<svg"));
    }
}

//! Latency-by-percentile plots in SVG, written by hand.
//!
//! The x axis is HdrHistogram's: log10 of 1/(1-p), so 0 %, 90 %, 99 %,
//! 99.9 %… are evenly spaced and the tail gets the room. The y axis is
//! latency in milliseconds, linear from 0. Several runs share one plot, one
//! `<polyline>` each. Pure string building: reading the files is the
//! caller's job.

use std::fmt::Write as _;

use crate::histogram::PercentilePoint;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 520.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_BOTTOM: f64 = 70.0;
/// Fewest and most decades on the x axis (99 % ..= 99.9999 %).
const DECADES_MIN: u32 = 2;
const DECADES_MAX: u32 = 6;
/// Horizontal grid lines.
const Y_TICKS: u32 = 5;
/// One colour per run, reused past the end.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One run to draw.
pub struct Curve {
    pub label: String,
    pub points: Vec<PercentilePoint>,
}

/// x position of a quantile, in decades (0 at 0 %, 2 at 99 %).
fn decades(quantile: f64) -> f64 {
    (1.0 / (1.0 - quantile)).log10()
}

/// The label of decade `d`: 0 %, 90 %, 99 %, 99.9 %…
fn decade_label(d: u32) -> String {
    match d {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        _ => format!("99.{}%", "9".repeat(d as usize - 2)).replace("99.%", "99%"),
    }
}

/// The smallest 1, 2 or 5 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if base * m >= v * (1.0 - 1e-9) {
            return base * m;
        }
    }
    base * 10.0
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the plot. Points at quantile 1 (the maximum, infinitely far on
/// this axis) are left out, as HdrHistogram's plotter does.
pub fn render_svg(title: &str, curves: &[Curve]) -> String {
    let finite = |c: &Curve| -> Vec<PercentilePoint> {
        c.points
            .iter()
            .copied()
            .filter(|p| p.quantile < 1.0)
            .collect()
    };
    let tail = curves
        .iter()
        .flat_map(|c| finite(c).last().map(|p| decades(p.quantile)))
        .fold(0.0f64, f64::max);
    let x_decades = (tail.ceil() as u32).clamp(DECADES_MIN, DECADES_MAX);
    let y_max_ms = nice_ceiling(
        curves
            .iter()
            .flat_map(|c| finite(c).into_iter().map(|p| p.value_us as f64 / 1000.0))
            .fold(0.0f64, f64::max),
    );
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x_of = |d: f64| MARGIN_LEFT + plot_w * d.min(f64::from(x_decades)) / f64::from(x_decades);
    let y_of = |ms: f64| MARGIN_TOP + plot_h * (1.0 - ms.min(y_max_ms) / y_max_ms);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and tick labels.
    for d in 0..=x_decades {
        let x = x_of(f64::from(d));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{MARGIN_TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            MARGIN_TOP + plot_h
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            MARGIN_TOP + plot_h + 18.0,
            decade_label(d)
        );
    }
    for i in 0..=Y_TICKS {
        let ms = y_max_ms * f64::from(i) / f64::from(Y_TICKS);
        let y = y_of(ms);
        let _ = writeln!(
            s,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            MARGIN_LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            MARGIN_LEFT - 8.0,
            y + 4.0,
            trim_number(ms)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">latency (ms)</text>"#,
        MARGIN_TOP + plot_h / 2.0,
        MARGIN_TOP + plot_h / 2.0
    );
    // One polyline per run, and its legend entry.
    for (i, c) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut pts = String::new();
        for p in finite(c) {
            let _ = write!(
                pts,
                "{:.1},{:.1} ",
                x_of(decades(p.quantile)),
                y_of(p.value_us as f64 / 1000.0)
            );
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            pts.trim_end()
        );
        let ly = MARGIN_TOP + 16.0 + 18.0 * i as f64;
        let lx = MARGIN_LEFT + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&c.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `0.5` → `0.5`, `2` → `2`, `0.30000000004` → `0.3`.
fn trim_number(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::LatencyHistogram;

    /// Checks that tags nest and close and that text has no stray `<`/`&`.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            assert!(!text.contains('>'), "stray '>' in {text:?}");
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "bare '&' in {text:?}"
                );
            }
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "'<' inside tag {tag:?}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag:?}"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else {
                let name = tag.split_whitespace().next().unwrap().trim_end_matches('/');
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name.to_string());
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(rest.trim().is_empty());
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1);
    }

    fn curve(label: &str, scale: u64) -> Curve {
        let mut h = LatencyHistogram::new();
        for v in 1..=100_000 {
            h.record_us(v * scale / 100);
        }
        Curve {
            label: label.to_string(),
            points: h.percentiles(),
        }
    }

    #[test]
    fn svg_is_well_formed_with_one_polyline_per_run() {
        let svg = render_svg(
            "static <vs> wasm & co",
            &[
                curve("static", 1),
                curve("wasm \"hello\"", 3),
                curve("c", 7),
            ],
        );
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("wasm &quot;hello&quot;"));
        assert!(svg.contains("static &lt;vs&gt; wasm &amp; co"));
        for label in [">0%<", ">90%<", ">99%<", ">99.9%<", ">99.99%<"] {
            assert!(svg.contains(label), "{label} missing");
        }
    }

    #[test]
    fn an_empty_run_still_gives_a_valid_plot() {
        let svg = render_svg(
            "t",
            &[Curve {
                label: "none".into(),
                points: vec![],
            }],
        );
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn axis_helpers() {
        assert_eq!(decade_label(2), "99%");
        assert_eq!(decade_label(4), "99.99%");
        assert!((decades(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(trim_number(2.0), "2");
        assert_eq!(trim_number(0.25), "0.25");
    }
}

//! `bench clearing --svg`: orders per second against orders per batch, one
//! line per (shape, threads), as a self-contained SVG drawn by hand (a few
//! dozen elements; no plotting crate needed).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::report::Row;
use crate::curves::SvgDoc;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// The chart of `rows`: x is log10(orders per batch), y is millions of
/// orders per second from 0.
#[must_use]
pub fn chart(rows: &[Row], title: &str) -> String {
    let mut lines: BTreeMap<(String, usize), Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.orders > 0) {
        lines
            .entry((r.shape.clone(), r.threads))
            .or_default()
            .push(((r.orders as f64).log10(), r.orders_per_s / 1e6));
    }
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
    for points in lines.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        for &(x, y) in points.iter() {
            x_min = x_min.min(x);
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
    }
    if lines.is_empty() {
        (x_min, x_max, y_max) = (3.0, 4.0, 1.0);
    }
    let x_min = x_min.floor();
    let x_max = x_max.ceil().max(x_min + 1.0);
    let y_max = nice_ceiling(y_max * 1.05);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_w;
    let py = |y: f64| TOP + plot_h - y / y_max * plot_h;

    let mut doc = SvgDoc::new(WIDTH, HEIGHT, title);
    doc.text(
        LEFT + plot_w / 2.0,
        18.0,
        r#"text-anchor="middle" font-size="14""#,
        title,
    );
    // Axes, grid and ticks.
    let mut x = x_min;
    while x <= x_max + 1e-9 {
        let _ = write!(
            doc.body(),
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#ddd"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">10^{4}</text>"##,
            px(x),
            TOP,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            x as i64
        );
        x += 1.0;
    }
    for i in 0..=5 {
        let y = y_max * f64::from(i) / 5.0;
        let _ = write!(
            doc.body(),
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{3:.1}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            LEFT,
            py(y),
            LEFT + plot_w,
            LEFT - 6.0,
            py(y) + 4.0,
            trim(y)
        );
    }
    let _ = write!(
        doc.body(),
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = write!(
        doc.body(),
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">orders per batch</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = write!(
        doc.body(),
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">million orders per second</text>"#,
        TOP + plot_h / 2.0
    );
    // One line per (shape, threads), with its legend entry.
    for (i, ((shape, threads), points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            doc.body(),
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = write!(
                doc.body(),
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(x),
                py(y)
            );
        }
        let ly = TOP + 14.0 + 18.0 * i as f64;
        let lx = LEFT + plot_w + 12.0;
        let label = format!(
            "{} thread{}: {}",
            threads,
            if *threads == 1 { "" } else { "s" },
            shape
        );
        let _ = write!(
            doc.body(),
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/>"#,
            lx + 16.0,
        );
        doc.text(
            lx + 20.0,
            ly + 3.5,
            r#"font-size="10""#,
            &shorten(&label, 34),
        );
    }
    doc.finish()
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * power)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `s` cut to `max` characters, an ellipsis marking the cut.
pub(super) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

//! The step curves as SVG, assembled by hand: one panel per market, price
//! across, cumulative lots up; demand and supply as exact step paths (a
//! step is drawn at its candidate price; steps closer than a tenth of a
//! pixel share one vertical stroke, which is how they would render
//! anyway), the uniform price and the volume marked, every label an exact
//! integer. No script, no external resource.

use std::fmt::Write as _;

use crate::types::{BatchId, Tick};

use super::steps::MarketCurves;

/// One panel's size in SVG user units.
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 74.0;
const BOTTOM: f64 = 52.0;

const DEMAND: &str = "#1f6fb2";
const SUPPLY: &str = "#d9731a";
const MARK: &str = "#222";

/// An SVG document of batch `e`'s markets, one panel under the other.
#[must_use]
pub fn batch_svg(e: BatchId, markets: &[MarketCurves]) -> String {
    let panels = markets.len().max(1);
    let height = HEIGHT * panels as f64;
    let mut doc = SvgDoc::new(
        WIDTH,
        height,
        &format!("sealbatch batch {e}: demand and supply"),
    );
    let out = doc.body();
    if markets.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{LEFT}" y="{TOP}">batch {e}: no orders took part</text>"#
        );
    }
    for (i, market) in markets.iter().enumerate() {
        let _ = write!(
            out,
            r#"<g class="market" data-market="{}" transform="translate(0,{})">"#,
            market.market.0,
            HEIGHT * i as f64
        );
        panel(out, e, market);
        out.push_str("</g>");
    }
    doc.finish()
}

/// Maps prices and lots to the panel's coordinates.
struct Scale {
    low: Tick,
    high: Tick,
    top: u128,
}

impl Scale {
    fn x(&self, price: Tick) -> f64 {
        let span = (self.high - self.low).max(1) as f64;
        LEFT + price.since(self.low) as f64 / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, lots: u128) -> f64 {
        HEIGHT - BOTTOM - lots as f64 / self.top.max(1) as f64 * (HEIGHT - TOP - BOTTOM)
    }
}

fn panel(out: &mut String, e: BatchId, m: &MarketCurves) {
    let first = m.points.first().map_or(m.reference, |p| p.price);
    let last = m.points.last().map_or(m.reference, |p| p.price);
    // One tick of room each side, inside the band, so the outer steps show.
    let low = first.saturating_sub(1).max(m.band.0);
    let high = last
        .saturating_add(1)
        .min(m.band.1)
        .max(low.saturating_add(1));
    let top = m
        .points
        .first()
        .map_or(0, |p| p.demand)
        .max(m.points.last().map_or(0, |p| p.supply))
        .max(1);
    let scale = Scale { low, high, top };

    // Title and legend.
    let summary = match m.clearing {
        Some(c) => format!(
            "price {} · volume {} lots · imbalance {}",
            c.price, c.volume, c.imbalance
        ),
        None => "nothing crossed".into(),
    };
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">batch {e} · market {} · {summary}</text>"#,
        m.market.0
    );
    let _ = write!(
        out,
        r##"<text x="{LEFT}" y="36"><tspan fill="{DEMAND}">■ demand D(p)</tspan>   <tspan fill="{SUPPLY}">■ supply S(p)</tspan>   <tspan fill="#999">┆ reference price</tspan>   ● uniform price × volume</text>"##
    );
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="54">{} buys, {} sells · market orders: {} lots bought, {} sold · filled fully {}, pro rata {}, not {}</text>"#,
        m.orders.0,
        m.orders.1,
        m.market_buys,
        m.market_sells,
        m.fills.full,
        m.fills.partial,
        m.fills.none
    );

    // Axes, with exact integer labels.
    let (x0, x1) = (scale.x(low), scale.x(high));
    let (y0, y1) = (scale.y(0), scale.y(top));
    let _ = write!(
        out,
        r#"<path d="M{x0:.1},{y1:.1}V{y0:.1}H{x1:.1}" fill="none" stroke="{MARK}"/>"#
    );
    let mut prices = vec![low, high, m.reference];
    prices.extend(m.clearing.map(|c| c.price));
    prices.sort_unstable();
    prices.dedup();
    let mut last_label = f64::NEG_INFINITY;
    for price in prices {
        let x = scale.x(price);
        let _ = write!(out, r#"<path d="M{x:.1},{y0:.1}v5" stroke="{MARK}"/>"#);
        if x - last_label > 70.0 || Some(price) == m.clearing.map(|c| c.price) {
            let _ = write!(
                out,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{price}</text>"#,
                y0 + 18.0
            );
            last_label = x;
        }
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">price (ticks)</text>"#,
        (x0 + x1) / 2.0,
        y0 + 38.0
    );
    let mut levels = vec![0, top];
    levels.extend(m.clearing.map(|c| u128::from(c.volume)));
    levels.sort_unstable();
    levels.dedup();
    for lots in levels {
        let y = scale.y(lots);
        let _ = write!(
            out,
            r#"<path d="M{x0:.1},{y:.1}h-5" stroke="{MARK}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{lots}</text>"#,
            x0 - 8.0,
            y + 4.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">lots</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );

    // The reference price, dotted.
    let xr = scale.x(m.reference);
    let _ = write!(
        out,
        r##"<path class="reference" d="M{xr:.1},{y0:.1}V{y1:.1}" stroke="#999" stroke-dasharray="2,3"/>"##
    );

    // D steps down just above each candidate; S steps up at each.
    let mut demand = Path::start(
        x0,
        scale.y(m.points.first().map_or(m.market_buys, |p| p.demand)),
    );
    for (i, point) in m.points.iter().enumerate() {
        let next = m.points.get(i + 1).map_or(m.market_buys, |p| p.demand);
        demand.horizontal(scale.x(point.price));
        demand.vertical(scale.y(next));
    }
    demand.horizontal(x1);
    let mut supply = Path::start(x0, scale.y(m.market_sells));
    for point in &m.points {
        supply.horizontal(scale.x(point.price));
        supply.vertical(scale.y(point.supply));
    }
    supply.horizontal(x1);
    let _ = write!(
        out,
        r#"<path class="demand" d="{}" fill="none" stroke="{DEMAND}" stroke-width="2"/><path class="supply" d="{}" fill="none" stroke="{SUPPLY}" stroke-width="2"/>"#,
        demand.d, supply.d
    );

    // The uniform price and the volume.
    if let Some(c) = m.clearing {
        let (x, y) = (scale.x(c.price), scale.y(u128::from(c.volume)));
        let _ = write!(
            out,
            r#"<g class="clearing" data-price="{}" data-volume="{}"><path d="M{x:.1},{y0:.1}V{y1:.1}M{x0:.1},{y:.1}H{x1:.1}" stroke="{MARK}" stroke-dasharray="5,4"/><circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{MARK}"/></g>"#,
            c.price, c.volume
        );
    }
}

/// An SVG path of horizontal and vertical moves, dropping moves of less
/// than a tenth of a unit (invisible, and so a path stays bounded by the
/// panel's resolution however many candidates a market has).
struct Path {
    d: String,
    x: f64,
    y: f64,
}

impl Path {
    fn start(x: f64, y: f64) -> Path {
        Path {
            d: format!("M{x:.1},{y:.1}"),
            x,
            y,
        }
    }

    fn horizontal(&mut self, x: f64) {
        if (x - self.x).abs() >= 0.1 {
            let _ = write!(self.d, "H{x:.1}");
            self.x = x;
        }
    }

    fn vertical(&mut self, y: f64) {
        if (y - self.y).abs() >= 0.1 {
            let _ = write!(self.d, "V{y:.1}");
            self.y = y;
        }
    }
}

/// One batch of a market's history: its number, clearing price (`None`:
/// nothing crossed) and lots traded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryPoint {
    /// The batch.
    pub e: BatchId,
    /// Its clearing price in this market.
    pub price: Option<Tick>,
    /// Lots traded.
    pub volume: u64,
}

/// An SVG of one market over recent batches (ascending `e`): the clearing
/// price as points joined by a line (gaps where nothing crossed) above,
/// the volume as bars below, each mark carrying its exact figures.
#[must_use]
pub fn market_history_svg(market: u32, history: &[HistoryPoint]) -> String {
    const PRICE_TOP: f64 = 50.0;
    const PRICE_BOTTOM: f64 = 250.0;
    const VOLUME_TOP: f64 = 280.0;
    const VOLUME_BOTTOM: f64 = 400.0;
    let mut doc = SvgDoc::new(
        WIDTH,
        HEIGHT,
        &format!("sealbatch market {market}: price and volume by batch"),
    );
    let out = doc.body();
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">market {market} · clearing price and volume of the last {} batches</text>"#,
        history.len()
    );
    let (Some(first), Some(last)) = (history.first(), history.last()) else {
        let _ = write!(
            out,
            r#"<text x="{LEFT}" y="60">no batch published yet</text>"#
        );
        return doc.finish();
    };
    let prices: Vec<Tick> = history.iter().filter_map(|h| h.price).collect();
    let low = prices.iter().copied().min().unwrap_or(Tick::ZERO);
    let high = prices
        .iter()
        .copied()
        .max()
        .unwrap_or(Tick::ZERO)
        .max(low.saturating_add(1));
    let top_volume = history.iter().map(|h| h.volume).max().unwrap_or(0).max(1);
    // Saturating: an out-of-order point is drawn at the edge, never a panic.
    let span = last.e.since(first.e).max(1) as f64;
    let x = |e: BatchId| LEFT + e.since(first.e) as f64 / span * (WIDTH - LEFT - RIGHT);
    let y_price = |p: Tick| {
        PRICE_BOTTOM - p.since(low) as f64 / (high - low) as f64 * (PRICE_BOTTOM - PRICE_TOP)
    };
    let y_volume =
        |v: u64| VOLUME_BOTTOM - v as f64 / top_volume as f64 * (VOLUME_BOTTOM - VOLUME_TOP);
    // Axes and exact labels.
    for (label, y) in [
        (high.to_string(), y_price(high)),
        (low.to_string(), y_price(low)),
        (top_volume.to_string(), y_volume(top_volume)),
        ("0".to_owned(), y_volume(0)),
    ] {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            LEFT - 8.0,
            y + 4.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="16" y="150" transform="rotate(-90 16 150)" text-anchor="middle">price (ticks)</text><text x="16" y="340" transform="rotate(-90 16 340)" text-anchor="middle">lots</text><path d="M{LEFT},{PRICE_TOP}V{PRICE_BOTTOM}M{LEFT},{VOLUME_TOP}V{VOLUME_BOTTOM}H{:.1}" fill="none" stroke="{MARK}"/>"#,
        WIDTH - RIGHT
    );
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{:.1}">batch {}</text><text x="{:.1}" y="{:.1}" text-anchor="end">batch {}</text>"#,
        VOLUME_BOTTOM + 18.0,
        first.e,
        WIDTH - RIGHT,
        VOLUME_BOTTOM + 18.0,
        last.e
    );
    // The price line, broken where nothing crossed.
    let mut line = String::new();
    let mut joined = false;
    for h in history {
        match h.price {
            Some(p) => {
                let _ = write!(
                    line,
                    "{}{:.1},{:.1}",
                    if joined { "L" } else { "M" },
                    x(h.e),
                    y_price(p)
                );
                joined = true;
            }
            None => joined = false,
        }
    }
    let _ = write!(
        out,
        r#"<path class="price" d="{line}" fill="none" stroke="{DEMAND}" stroke-width="1.5"/>"#
    );
    let bar = ((WIDTH - LEFT - RIGHT) / history.len() as f64 * 0.7).clamp(1.0, 12.0);
    for h in history {
        if let Some(p) = h.price {
            let _ = write!(
                out,
                r#"<circle class="batch" data-e="{}" data-price="{p}" data-volume="{}" cx="{:.1}" cy="{:.1}" r="2.5" fill="{DEMAND}"/>"#,
                h.e,
                h.volume,
                x(h.e),
                y_price(p)
            );
        }
        if h.volume > 0 {
            let top = y_volume(h.volume);
            let _ = write!(
                out,
                r#"<rect class="volume" data-e="{}" data-volume="{}" x="{:.1}" y="{top:.1}" width="{bar:.1}" height="{:.1}" fill="{SUPPLY}"/>"#,
                h.e,
                h.volume,
                x(h.e) - bar / 2.0,
                VOLUME_BOTTOM - top
            );
        }
    }
    doc.finish()
}

/// An SVG document, the one writer of the project's charts (the explorer's
/// curves and history, `sealbatch plot`, `bench clearing --svg`): the frame
/// every chart has — size, font, an escaped title, a white background —
/// then the chart's own elements, then the end.
pub struct SvgDoc {
    out: String,
}

impl SvgDoc {
    /// A document `width` × `height` user units titled `title` (escaped
    /// here).
    #[must_use]
    pub fn new(width: f64, height: f64, title: &str) -> SvgDoc {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><title>{}</title><rect width="100%" height="100%" fill="white"/>"#,
            escape_markup(title)
        );
        SvgDoc { out }
    }

    /// A `<text>` at (`x`, `y`) with the attributes `attrs` (written as
    /// given: the caller's constants) holding `content`, escaped here.
    pub fn text(&mut self, x: f64, y: f64, attrs: &str, content: &str) {
        let _ = write!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}"{}{attrs}>{}</text>"#,
            if attrs.is_empty() { "" } else { " " },
            escape_markup(content)
        );
    }

    /// The document so far, to write the chart's own elements into.
    pub fn body(&mut self) -> &mut String {
        &mut self.out
    }

    /// The finished document.
    #[must_use]
    pub fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// `text` with the characters HTML and SVG give meaning to escaped, for
/// text and attribute values (`&`, `<`, `>`, both quotes).
#[must_use]
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

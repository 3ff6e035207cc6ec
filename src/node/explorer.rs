//! The batch explorer, served on the metrics listener beside `/metrics`:
//! the recent batches as the sequencer published them, each market's
//! demand and supply curves ([`crate::explorer`]), as HTML pages and JSON.
//!
//! Only what a batch publishes anyway is shown, and only once its result is
//! published: the driver records a batch here when it delivers the
//! batch's `BatchCleared`. Memory is bounded: a ring of the newest
//! [`Explorer::capacity`] batches (older ones are answered "not in the
//! recent history": `sealbatch plot` draws them from the journal), and a
//! batch whose curves would hold more than [`CURVE_POINTS_MAX`] points
//! keeps its figures without them.
//!
//! Routes: `GET /` (the batches, newest first), `/batches/{e}` (one batch:
//! its markets, their curves inline, the rejections by reason),
//! `/batches/{e}/curves.svg`, `/markets/{m}` (a market's clearing price
//! and volume over the kept batches), and `/api/batches`,
//! `/api/batches/{e}`, `/api/markets/{m}` (the same as JSON). A batch's pages never change once it is published, so
//! they may be cached for a day; the list may not.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::clearing::MarketInput;
use crate::explorer::{HistoryPoint, MarketCurves, batch_curves, batch_svg, market_history_svg};
use crate::sequencer::{BatchOutcome, EnvelopeStatus, MarketOutcome};
use crate::types::BatchId;

/// Batches the explorer keeps by default.
pub const EXPLORER_BATCHES_DEFAULT: usize = 256;

/// Most curve points (candidate prices, all markets) a kept batch holds.
pub const CURVE_POINTS_MAX: usize = 200_000;

const HTML: &str = "text/html; charset=utf-8";
const SVG: &str = "image/svg+xml";
const JSON: &str = "application/json";
const IMMUTABLE: &str = "public, max-age=86400, immutable";
const FRESH: &str = "no-cache";

/// One published batch, as the explorer shows it.
#[derive(Debug)]
pub struct BatchView {
    /// The batch.
    pub e: BatchId,
    /// Its seal's Merkle root.
    pub root: [u8; 32],
    /// The released batch secret `s_e`.
    pub batch_secret: [u8; 32],
    /// Envelopes sealed into it.
    pub envelopes: usize,
    /// Of them, opened and funded.
    pub accepted: usize,
    /// The others, by rejection code (`spec/sequencer.md`).
    pub rejected: BTreeMap<u8, usize>,
    /// Every configured market's price, volume and imbalance.
    pub markets: Vec<MarketOutcome>,
    /// Orders that filled.
    pub fills: usize,
    /// The curves of the markets with orders; `None` when this process did
    /// not clear the batch itself (cleared before a restart) or they were
    /// too large to keep.
    pub curves: Option<Vec<MarketCurves>>,
    /// From the batch's close to its result published, in milliseconds.
    pub close_to_result_ms: u64,
}

/// The recent published batches, shared by the driver (which records them)
/// and the HTTP routes.
#[derive(Debug)]
pub struct Explorer {
    batches: RwLock<VecDeque<Arc<BatchView>>>,
    capacity: usize,
}

impl Explorer {
    /// An explorer keeping the newest `capacity` batches (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Arc<Explorer> {
        Arc::new(Explorer {
            batches: RwLock::new(VecDeque::new()),
            capacity: capacity.max(1),
        })
    }

    /// How many batches it keeps.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records a published batch: its outcome, the clearing input it was
    /// decided from (if this process cleared it), and the time from its
    /// close to now.
    pub fn record(
        &self,
        outcome: &BatchOutcome,
        input: Option<&[MarketInput]>,
        close_to_result_ms: u64,
    ) {
        let mut rejected: BTreeMap<u8, usize> = BTreeMap::new();
        for envelope in &outcome.envelopes {
            if let EnvelopeStatus::Rejected { code, .. } = envelope.status {
                *rejected.entry(code).or_default() += 1;
            }
        }
        let curves = input
            .map(|input| batch_curves(input, outcome))
            .filter(|curves| {
                curves.iter().map(|c| c.points.len()).sum::<usize>() <= CURVE_POINTS_MAX
            });
        let view = Arc::new(BatchView {
            e: outcome.e,
            root: outcome.root.0,
            batch_secret: outcome.batch_secret,
            envelopes: outcome.envelopes.len(),
            accepted: outcome.envelopes.len() - rejected.values().sum::<usize>(),
            rejected,
            markets: outcome.markets.clone(),
            fills: outcome.fills.len(),
            curves,
            close_to_result_ms,
        });
        let mut batches = self.batches.write().unwrap_or_else(|p| p.into_inner());
        // A batch published again (a restart re-releasing it) replaces itself.
        batches.retain(|b| b.e != view.e);
        batches.push_back(view);
        while batches.len() > self.capacity {
            batches.pop_front();
        }
    }

    /// The kept batches, newest first.
    #[must_use]
    pub fn recent(&self) -> Vec<Arc<BatchView>> {
        let batches = self.batches.read().unwrap_or_else(|p| p.into_inner());
        batches.iter().rev().cloned().collect()
    }

    /// Market `m`'s price and volume in every kept batch, oldest first
    /// (`None` if no kept batch has the market).
    #[must_use]
    pub fn market(&self, m: u32) -> Option<Vec<(HistoryPoint, i128)>> {
        let batches = self.batches.read().unwrap_or_else(|p| p.into_inner());
        let history: Vec<(HistoryPoint, i128)> = batches
            .iter()
            .filter_map(|b| {
                b.markets.iter().find(|x| x.market.0 == m).map(|x| {
                    (
                        HistoryPoint {
                            e: b.e,
                            price: x.price,
                            volume: x.volume,
                        },
                        x.imbalance,
                    )
                })
            })
            .collect();
        (!history.is_empty()).then_some(history)
    }

    /// Batch `e`, if it is kept.
    #[must_use]
    pub fn batch(&self, e: BatchId) -> Option<Arc<BatchView>> {
        let batches = self.batches.read().unwrap_or_else(|p| p.into_inner());
        batches.iter().rev().find(|b| b.e == e).cloned()
    }
}

/// The explorer's routes; merge them into the metrics router.
pub fn router(explorer: Arc<Explorer>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/batches/{e}", get(batch_page))
        .route("/batches/{e}/curves.svg", get(curves_svg))
        .route("/api/batches", get(api_batches))
        .route("/api/batches/{e}", get(api_batch))
        .route("/markets/{m}", get(market_page))
        .route("/api/markets/{m}", get(api_market))
        .with_state(explorer)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    body: String,
) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// The batch a path names, or why there is none.
fn find(explorer: &Explorer, e: &str) -> Result<Arc<BatchView>, String> {
    let Ok(e) = e.parse::<BatchId>() else {
        return Err(format!("{e:.64}: not a batch number\n"));
    };
    explorer.batch(e).ok_or_else(|| {
        format!(
            "batch {e}: not in the recent history (the newest {} published batches; `sealbatch plot --batch {e}` draws older ones from the journal)\n",
            explorer.capacity
        )
    })
}

fn not_found(message: String) -> Response {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "no-store",
        message,
    )
}

fn price_text(market: &MarketOutcome) -> String {
    market
        .price
        .map_or_else(|| "—".to_owned(), |p| p.to_string())
}

async fn index(State(explorer): State<Arc<Explorer>>) -> Response {
    let mut html = page_head("sealbatch: batches");
    html.push_str(
        "<h1>Batches</h1><p>The newest published batches. Nothing about a batch is shown before its result is published.</p>\
         <table><tr><th>batch</th><th>envelopes</th><th>accepted</th><th>markets: price × volume</th><th>seal root</th><th>close → result</th></tr>",
    );
    for b in explorer.recent() {
        let markets: Vec<String> = b
            .markets
            .iter()
            .filter(|m| m.volume > 0)
            .map(|m| {
                format!(
                    "<a href=\"/markets/{id}\">{id}</a>: {} × {}",
                    price_text(m),
                    m.volume,
                    id = m.market.0
                )
            })
            .collect();
        let _ = write!(
            html,
            "<tr><td><a href=\"/batches/{e}\">{e}</a></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}…</code></td><td>{} ms</td></tr>",
            b.envelopes,
            b.accepted,
            if markets.is_empty() {
                "nothing traded".to_owned()
            } else {
                markets.join(" · ")
            },
            &hex::encode(b.root)[..16],
            b.close_to_result_ms,
            e = b.e,
        );
    }
    html.push_str("</table></body></html>\n");
    respond(StatusCode::OK, HTML, FRESH, html)
}

/// Market `m`'s history, or why there is none.
fn find_market(explorer: &Explorer, m: &str) -> Result<(u32, Vec<(HistoryPoint, i128)>), String> {
    let Ok(m) = m.parse::<u32>() else {
        return Err(format!("{m:.64}: not a market id\n"));
    };
    explorer
        .market(m)
        .map(|history| (m, history))
        .ok_or_else(|| format!("market {m}: in no batch of the recent history\n"))
}

async fn market_page(State(explorer): State<Arc<Explorer>>, Path(m): Path<String>) -> Response {
    let (m, history) = match find_market(&explorer, &m) {
        Ok(found) => found,
        Err(message) => return not_found(message),
    };
    let points: Vec<HistoryPoint> = history.iter().map(|(h, _)| *h).collect();
    let mut html = page_head(&format!("sealbatch: market {m}"));
    let _ = write!(
        html,
        "<p><a href=\"/\">← batches</a></p><h1>Market {m}</h1>{}\
         <table><tr><th>batch</th><th>price</th><th>volume (lots)</th><th>imbalance</th></tr>",
        market_history_svg(m, &points)
    );
    for (h, imbalance) in history.iter().rev() {
        let _ = write!(
            html,
            "<tr><td><a href=\"/batches/{e}\">{e}</a></td><td>{}</td><td>{}</td><td>{imbalance}</td></tr>",
            h.price.map_or_else(|| "—".to_owned(), |p| p.to_string()),
            h.volume,
            e = h.e,
        );
    }
    html.push_str("</table></body></html>\n");
    respond(StatusCode::OK, HTML, FRESH, html)
}

async fn api_market(State(explorer): State<Arc<Explorer>>, Path(m): Path<String>) -> Response {
    let (m, history) = match find_market(&explorer, &m) {
        Ok(found) => found,
        Err(message) => return not_found(message),
    };
    let batches: Vec<serde_json::Value> = history
        .iter()
        .map(|(h, imbalance)| {
            serde_json::json!({
                "e": h.e, "price": h.price, "volume": h.volume, "imbalance": imbalance.to_string(),
            })
        })
        .collect();
    let body = serde_json::json!({ "market": m, "batches": batches }).to_string();
    respond(StatusCode::OK, JSON, FRESH, body)
}

async fn batch_page(State(explorer): State<Arc<Explorer>>, Path(e): Path<String>) -> Response {
    let b = match find(&explorer, &e) {
        Ok(b) => b,
        Err(message) => return not_found(message),
    };
    let mut html = page_head(&format!("sealbatch: batch {}", b.e));
    let _ = write!(
        html,
        "<p><a href=\"/\">← batches</a></p><h1>Batch {e}</h1>\
         <p>{} envelopes, {} accepted, {} orders filled; result published {} ms after the close.</p>\
         <p>Seal root <code>{}</code><br>Batch secret s<sub>e</sub> <code>{}</code></p>\
         <table><tr><th>market</th><th>price</th><th>volume (lots)</th><th>imbalance</th></tr>",
        b.envelopes,
        b.accepted,
        b.fills,
        b.close_to_result_ms,
        hex::encode(b.root),
        hex::encode(b.batch_secret),
        e = b.e,
    );
    for m in &b.markets {
        let _ = write!(
            html,
            "<tr><td><a href=\"/markets/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            price_text(m),
            m.volume,
            m.imbalance,
            id = m.market.0
        );
    }
    html.push_str("</table>");
    if !b.rejected.is_empty() {
        html.push_str(
            "<h2>Rejected at opening</h2><table><tr><th>code</th><th>envelopes</th></tr>",
        );
        for (code, count) in &b.rejected {
            let _ = write!(html, "<tr><td>{code}</td><td>{count}</td></tr>");
        }
        html.push_str("</table>");
    }
    html.push_str("<h2>Demand and supply</h2>");
    match &b.curves {
        Some(curves) => html.push_str(&batch_svg(b.e, curves)),
        None => html.push_str("<p>Not kept for this batch (cleared before this process started, or too large): <code>sealbatch plot</code> draws it from the journal.</p>"),
    }
    html.push_str("</body></html>\n");
    respond(StatusCode::OK, HTML, IMMUTABLE, html)
}

async fn curves_svg(State(explorer): State<Arc<Explorer>>, Path(e): Path<String>) -> Response {
    let b = match find(&explorer, &e) {
        Ok(b) => b,
        Err(message) => return not_found(message),
    };
    match &b.curves {
        Some(curves) => respond(StatusCode::OK, SVG, IMMUTABLE, batch_svg(b.e, curves)),
        None => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no-store",
            format!("batch {}: curves not kept\n", b.e),
        ),
    }
}

fn summary_json(b: &BatchView) -> serde_json::Value {
    serde_json::json!({
        "e": b.e,
        "envelopes": b.envelopes,
        "accepted": b.accepted,
        "fills": b.fills,
        "root": hex::encode(b.root),
        "batch_secret": hex::encode(b.batch_secret),
        "close_to_result_ms": b.close_to_result_ms,
        "markets": b.markets.iter().map(|m| serde_json::json!({
            "market": m.market.0,
            "price": m.price,
            "volume": m.volume,
            // i128 is past JSON's exact integers: as a decimal string.
            "imbalance": m.imbalance.to_string(),
        })).collect::<Vec<_>>(),
    })
}

async fn api_batches(State(explorer): State<Arc<Explorer>>) -> Response {
    let batches: Vec<serde_json::Value> =
        explorer.recent().iter().map(|b| summary_json(b)).collect();
    let body = serde_json::json!({ "batches": batches }).to_string();
    respond(StatusCode::OK, JSON, FRESH, body)
}

async fn api_batch(State(explorer): State<Arc<Explorer>>, Path(e): Path<String>) -> Response {
    let b = match find(&explorer, &e) {
        Ok(b) => b,
        Err(message) => return not_found(message),
    };
    let mut value = summary_json(&b);
    value["rejected"] = b
        .rejected
        .iter()
        .map(|(code, count)| (code.to_string(), serde_json::json!(count)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    value["curves"] = match &b.curves {
        None => serde_json::Value::Null,
        Some(curves) => curves
            .iter()
            .map(|c| {
                serde_json::json!({
                    "market": c.market.0,
                    "reference": c.reference,
                    "band": [c.band.0, c.band.1],
                    // Lots can pass 2^53: decimal strings.
                    "points": c.points.iter().map(|p| serde_json::json!([
                        p.price, p.demand.to_string(), p.supply.to_string()
                    ])).collect::<Vec<_>>(),
                    "market_buys": c.market_buys.to_string(),
                    "market_sells": c.market_sells.to_string(),
                    "orders": { "buys": c.orders.0, "sells": c.orders.1 },
                    "fills": { "full": c.fills.full, "partial": c.fills.partial, "none": c.fills.none },
                    "clearing": c.clearing.map(|k| serde_json::json!({
                        "price": k.price, "volume": k.volume, "imbalance": k.imbalance.to_string(),
                    })),
                })
            })
            .collect::<Vec<_>>()
            .into(),
    };
    respond(StatusCode::OK, JSON, IMMUTABLE, value.to_string())
}

fn page_head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:sans-serif;margin:2em;max-width:64em}}table{{border-collapse:collapse}}\
         td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}}code{{font-size:.9em}}\
         svg{{max-width:100%;height:auto}}</style></head><body>"
    )
}

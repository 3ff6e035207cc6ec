//! The batch explorer, served on the metrics listener beside `/metrics`:
//! the recent batches as the sequencer published them, each market's
//! demand and supply curves ([`crate::curves`]), as HTML pages and JSON.
//!
//! Only what a batch publishes anyway is shown, and only once its result is
//! published: the driver records a batch here when it delivers the
//! batch's `BatchCleared`. Memory is bounded: a ring of the newest
//! [`Explorer::capacity`] batches (older ones are answered "not in the
//! recent history": `sealbatch plot` draws them from the journal), and a
//! batch whose curves would hold more than [`CURVE_POINTS_MAX`] points
//! keeps its figures without them.
//!
//! "Check my order": `/check?commitment=HEX` finds a commitment (or a whole
//! receipt's: then the receipt is checked and held to the batch it
//! promised) in the kept batches and shows its batch, its inclusion proof
//! checked against the batch's signed seal, and its outcome (fills, or the
//! rejection).
//!
//! Live: `/events` is a server-sent event stream, one `batch` event (the
//! batch's summary as JSON, its id the batch number) per published batch;
//! a viewer resuming with `Last-Event-ID` or `?after=E` first gets the kept
//! batches after that one, so none published between the list page and its
//! subscription (or during a reconnect) is missed. The list page prepends
//! them with a few lines of script, and works without it.
//!
//! A request naming nothing to show is answered 400 (it does not parse),
//! 410 (a batch older than every kept one: pruned from the history) or
//! 404 (not published, or not by this process); the API answers those as
//! JSON `{"error", "message"}`. `spec/explorer.md` is the normative text.
//!
//! Routes: `GET /` (the batches, newest first), `/batches/{e}` (one batch:
//! its markets, their curves inline, the rejections by reason),
//! `/batches/{e}/curves.svg`, `/markets/{m}` (a market's clearing price
//! and volume over the kept batches), and `/api/batches`,
//! `/api/batches/{e}`, `/api/markets/{m}` (the same as JSON). A batch's pages never change once it is published, so
//! they may be cached for a day; the list may not.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::body::Bytes;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use tokio::sync::broadcast;

use crate::clearing::MarketInput;
use crate::curves::{HistoryPoint, MarketCurves, batch_curves, batch_svg, market_history_svg};
use crate::envelope::{Commitment, MerkleTree, Receipt, SequencerPublicKey, SignedSeal};
use crate::sequencer::{BatchOutcome, EnvelopeStatus, MarketOutcome};
use crate::types::{BatchId, Side, Tick};

/// The listener's bounds with the explorer on: room for many viewers, each
/// live page's connection closed after five minutes (the browser
/// reconnects), instead of the scrape-sized defaults.
pub const EXPLORER_HTTP_LIMITS: crate::node::metrics::HttpLimits =
    crate::node::metrics::HttpLimits {
        connections_max: 512,
        connection_lifetime: std::time::Duration::from_secs(300),
    };

/// Batches the explorer keeps by default.
pub const EXPLORER_BATCHES_DEFAULT: usize = 256;

/// Most curve points (candidate prices, all markets) a kept batch holds.
pub const CURVE_POINTS_MAX: usize = 200_000;

/// Most envelopes the kept batches hold together (their outcomes are kept
/// for order lookups): the oldest batches go first past it.
pub const ENVELOPES_KEPT_MAX: usize = 1 << 20;

/// Seals of batches not yet published that the explorer holds until their
/// results are.
const SEALS_WAITING_MAX: usize = 4096;

/// Answers rendered from the kept batches that are kept until they change.
const CACHED_ANSWERS_MAX: usize = 1024;

/// Published batches queued for each live viewer; one that falls further
/// behind skips the oldest (the page then shows the newest).
const UPDATES_QUEUED_MAX: usize = 64;

/// How long a browser waits before it reconnects to `/events` (the
/// listener closes every connection at its lifetime), in milliseconds.
const RECONNECT_MS: u64 = 1_000;

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
    /// The published outcome (commitments in ascending order, statuses,
    /// fills), for order lookups.
    pub outcome: Arc<BatchOutcome>,
    /// The batch's signed seal, if this process sealed or released it.
    pub seal: Option<SignedSeal>,
    /// Under a keyper committee: the keypers whose attestations that they
    /// released their shares for this batch's seal the result carries (at
    /// least `t`, each checked), or why they do not prove it. `None`: the
    /// sequencer's own custodian (trusted-operator mode).
    pub released_by: Option<Result<Vec<u16>, String>>,
    /// The Merkle tree over the commitments, built at the first lookup.
    tree: OnceLock<Option<MerkleTree>>,
    /// Its summary as JSON (`/api/batches`' element, the live event).
    summary: Arc<str>,
    /// Its page, picture and JSON, rendered at their first request (they
    /// never change).
    rendered: RenderedBatch,
}

/// A kept batch's answers, rendered once.
#[derive(Debug, Default)]
struct RenderedBatch {
    page: OnceLock<Bytes>,
    svg: OnceLock<Bytes>,
    json: OnceLock<Bytes>,
}

impl BatchView {
    fn tree(&self) -> Option<&MerkleTree> {
        self.tree
            .get_or_init(|| {
                MerkleTree::from_commitments(
                    self.outcome
                        .envelopes
                        .iter()
                        .map(|o| o.commitment)
                        .collect(),
                )
                .ok()
            })
            .as_ref()
    }
}

/// Why a request names nothing the explorer can show.
#[derive(Debug)]
enum Missing {
    /// The path or query does not parse (400).
    Malformed(String),
    /// A batch older than every kept one (410).
    Pruned(String),
    /// Not published, or not kept by this process (404).
    Absent(String),
}

impl Missing {
    /// The answer: JSON for the API, plain text for pages.
    fn respond(self, api: bool) -> Response {
        let (status, error, message) = match self {
            Missing::Malformed(m) => (StatusCode::BAD_REQUEST, "malformed", m),
            Missing::Pruned(m) => (StatusCode::GONE, "pruned", m),
            Missing::Absent(m) => (StatusCode::NOT_FOUND, "absent", m),
        };
        if api {
            let body = serde_json::json!({ "error": error, "message": message }).to_string();
            respond(status, JSON, "no-store", body)
        } else {
            respond(
                status,
                "text/plain; charset=utf-8",
                "no-store",
                message + "\n",
            )
        }
    }
}

/// The recent published batches, shared by the driver (which records them)
/// and the HTTP routes.
#[derive(Debug)]
pub struct Explorer {
    batches: RwLock<VecDeque<Arc<BatchView>>>,
    capacity: usize,
    /// Seals of batches whose results are not published yet.
    seals: Mutex<BTreeMap<BatchId, SignedSeal>>,
    /// The key seals are checked against.
    sequencer: SequencerPublicKey,
    /// Each published batch and its summary (JSON), for the live page.
    updates: broadcast::Sender<(BatchId, Arc<str>)>,
    /// Bumped whenever the kept batches change.
    version: AtomicU64,
    /// Answers rendered from the kept batches at `version`: the list,
    /// market histories (many viewers ask for the same few).
    cache: Mutex<(u64, BTreeMap<String, Bytes>)>,
}

impl Explorer {
    /// An explorer keeping the newest `capacity` batches (at least one)
    /// of the sequencer with key `sequencer`.
    #[must_use]
    pub fn new(capacity: usize, sequencer: SequencerPublicKey) -> Arc<Explorer> {
        Arc::new(Explorer {
            batches: RwLock::new(VecDeque::new()),
            capacity: capacity.max(1),
            seals: Mutex::new(BTreeMap::new()),
            sequencer,
            updates: broadcast::Sender::new(UPDATES_QUEUED_MAX),
            version: AtomicU64::new(0),
            cache: Mutex::new((0, BTreeMap::new())),
        })
    }

    /// A batch's seal, held until its result is published.
    pub fn sealed(&self, seal: SignedSeal) {
        let mut seals = self.seals.lock().unwrap_or_else(|p| p.into_inner());
        seals.insert(seal.e, seal);
        while seals.len() > SEALS_WAITING_MAX {
            seals.pop_first();
        }
    }

    /// How many batches it keeps.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records a published batch: its outcome, the clearing input it was
    /// decided from (if this process cleared it), and the time from its
    /// close to now; under a keyper `committee`, the result's release
    /// attestations are checked against it.
    pub fn record(
        &self,
        outcome: &Arc<BatchOutcome>,
        input: Option<&[MarketInput]>,
        close_to_result_ms: u64,
        committee: Option<&crate::keyper::Committee>,
    ) {
        let seal = {
            let mut seals = self.seals.lock().unwrap_or_else(|p| p.into_inner());
            let seal = seals.remove(&outcome.e);
            // Seals of batches before this one will not be published here.
            *seals = seals.split_off(&outcome.e);
            seal
        };
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
        let released_by = committee.map(|committee| {
            let statement = crate::envelope::SealStatement {
                e: outcome.e,
                // At most ENVELOPES_PER_BATCH_MAX (2^24).
                count: outcome.envelopes.len() as u32,
                root: outcome.root,
            };
            crate::keyper::check_attestations(committee, &statement, &outcome.release)
                .map(|()| outcome.release.iter().map(|a| a.keyper).collect())
                .map_err(|error| error.to_string())
        });
        let mut view = BatchView {
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
            outcome: Arc::clone(outcome),
            seal,
            released_by,
            tree: OnceLock::new(),
            summary: Arc::from(""),
            rendered: RenderedBatch::default(),
        };
        view.summary = Arc::from(summary_json(&view).to_string().as_str());
        let view = Arc::new(view);
        let mut batches = self.batches.write().unwrap_or_else(|p| p.into_inner());
        // A batch published again (a restart re-releasing it) replaces itself.
        batches.retain(|b| b.e != view.e);
        // Viewers hear of it once it is listed (a viewer subscribing reads
        // the list after subscribing). No viewer is not an error.
        let _ = self.updates.send((view.e, Arc::clone(&view.summary)));
        batches.push_back(view);
        self.version.fetch_add(1, Ordering::Release);
        let mut envelopes: usize = batches.iter().map(|b| b.envelopes).sum();
        while batches.len() > 1 && (batches.len() > self.capacity || envelopes > ENVELOPES_KEPT_MAX)
        {
            if let Some(old) = batches.pop_front() {
                envelopes -= old.envelopes;
            }
        }
    }

    /// Finds `commitment` in the kept batches, newest first: its batch and
    /// its index among the batch's (sorted) commitments.
    #[must_use]
    pub fn find_commitment(&self, commitment: &Commitment) -> Option<(Arc<BatchView>, usize)> {
        let batches = self.batches.read().unwrap_or_else(|p| p.into_inner());
        batches.iter().rev().find_map(|b| {
            b.outcome
                .envelopes
                .binary_search_by(|o| o.commitment.cmp(commitment))
                .ok()
                .map(|index| (Arc::clone(b), index))
        })
    }

    /// What "check my order" reports for `commitment`, from published data
    /// only; `None` if no kept batch holds it.
    #[must_use]
    pub fn check(&self, commitment: &Commitment) -> Option<OrderCheck> {
        let (batch, index) = self.find_commitment(commitment)?;
        let envelope = batch.outcome.envelopes[index];
        // The inclusion proof, checked against the signed seal (and the
        // seal's root against the published result's).
        let proof = batch
            .tree()
            .and_then(|tree| tree.proof(u32::try_from(index).ok()?));
        let included = match (&batch.seal, &proof) {
            (Some(seal), Some(proof)) => {
                if seal.verify(&self.sequencer).is_err() {
                    Err("the seal's signature does not verify".to_owned())
                } else if seal.root != batch.outcome.root {
                    Err("the seal's root is not the result's".to_owned())
                } else {
                    proof
                        .verify(commitment, seal.count, &seal.root)
                        .map_err(|error| error.to_string())
                }
            }
            (None, _) => {
                Err("the seal is not kept here (published before this process started)".to_owned())
            }
            (_, None) => Err("no proof could be built".to_owned()),
        };
        let fills = batch
            .outcome
            .fills
            .iter()
            .filter(|f| f.envelope as usize == index)
            .map(|f| {
                let price = batch
                    .outcome
                    .markets
                    .iter()
                    .find(|m| m.market == f.market)
                    .and_then(|m| m.price);
                (f.index, f.market.0, f.side, f.filled, price)
            })
            .collect();
        Some(OrderCheck {
            e: batch.e,
            index,
            count: batch.envelopes,
            root: batch.root,
            seal: batch.seal,
            proof: proof.map(|p| p.to_bytes()),
            included,
            released_by: batch.released_by.clone(),
            status: envelope.status,
            fills,
        })
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
        let mut history: Vec<(HistoryPoint, i128)> = batches
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
        history.sort_unstable_by_key(|(h, _)| h.e);
        (!history.is_empty()).then_some(history)
    }

    /// Batch `e`, if it is kept.
    #[must_use]
    pub fn batch(&self, e: BatchId) -> Option<Arc<BatchView>> {
        let batches = self.batches.read().unwrap_or_else(|p| p.into_inner());
        batches.iter().rev().find(|b| b.e == e).cloned()
    }

    /// The answer at `key` rendered from the kept batches as they are now:
    /// from the cache if it was rendered since they last changed, else by
    /// `render` (kept unless it failed). At most [`CACHED_ANSWERS_MAX`]
    /// answers are kept.
    fn cached(
        &self,
        key: String,
        render: impl FnOnce() -> Result<String, Missing>,
    ) -> Result<Bytes, Missing> {
        let version = self.version.load(Ordering::Acquire);
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 != version {
                *cache = (version, BTreeMap::new());
            }
            if let Some(body) = cache.1.get(&key) {
                return Ok(body.clone());
            }
        }
        // Rendered without the lock; a newer rendering is harmless (the
        // version moved on, and the next request clears it).
        let body = Bytes::from(render()?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 == version && cache.1.len() < CACHED_ANSWERS_MAX {
            cache.1.insert(key, body.clone());
        }
        Ok(body)
    }

    /// The oldest kept batch's number.
    #[must_use]
    pub fn oldest(&self) -> Option<BatchId> {
        let batches = self.batches.read().unwrap_or_else(|p| p.into_inner());
        batches.front().map(|b| b.e)
    }
}

/// What the explorer knows of one envelope, from published data.
#[derive(Debug)]
pub struct OrderCheck {
    /// Its batch.
    pub e: BatchId,
    /// Its index among the batch's commitments (ascending).
    pub index: usize,
    /// The batch's envelopes.
    pub count: usize,
    /// The batch's Merkle root.
    pub root: [u8; 32],
    /// The batch's signed seal, if kept.
    pub seal: Option<SignedSeal>,
    /// The encoded inclusion proof (`spec/envelope.md`).
    pub proof: Option<Vec<u8>>,
    /// `Ok` if the proof puts the commitment under the root of a seal the
    /// sequencer signed; else why not.
    pub included: Result<(), String>,
    /// Under a keyper committee: the keypers that attested releasing the
    /// batch key for this very seal, or why the result does not prove it
    /// (then the batch's key may have been obtained for another seal:
    /// do not trust this result). `None`: trusted-operator mode.
    pub released_by: Option<Result<Vec<u16>, String>>,
    /// Accepted (with its orders) or rejected (with the code).
    pub status: EnvelopeStatus,
    /// Its filled orders: (position in the bundle, market, side, lots,
    /// the market's price).
    pub fills: Vec<(u16, u32, Side, u64, Option<Tick>)>,
}

/// The explorer's routes; merge them into the metrics router.
pub fn router(explorer: Arc<Explorer>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/batches/{e}", get(batch_page))
        .route("/batches/{e}/curves.svg", get(curves_svg))
        .route("/api/batches", get(api_batches))
        .route("/api/batches/{e}", get(api_batch))
        .route("/events", get(events))
        .route("/check", get(check_page))
        .route("/api/check/{commitment}", get(api_check))
        .route("/markets/{m}", get(market_page))
        .route("/api/markets/{m}", get(api_market))
        .with_state(explorer)
}

/// A cached answer, or why there is none.
fn respond_cached(
    body: Result<Bytes, Missing>,
    api: bool,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    match body {
        Ok(body) => respond(StatusCode::OK, content_type, cache, body),
        Err(missing) => missing.respond(api),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    body: impl Into<axum::body::Body>,
) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body.into(),
    )
        .into_response()
}

/// The batch a path names, or why there is none.
fn find(explorer: &Explorer, e: &str) -> Result<Arc<BatchView>, Missing> {
    let Ok(e) = e.parse::<BatchId>() else {
        return Err(Missing::Malformed(format!("{e:.64}: not a batch number")));
    };
    explorer.batch(e).ok_or_else(|| match explorer.oldest() {
        Some(oldest) if e < oldest => Missing::Pruned(format!(
            "batch {e}: pruned from the explorer's history (it keeps the newest {} published batches, now from batch {oldest}); `sealbatch plot --batch {e}` draws it from the journal",
            explorer.capacity
        )),
        _ => Missing::Absent(format!(
            "batch {e}: not published by this process (not yet, or before it started; `sealbatch plot --batch {e}` draws a published batch from the journal)"
        )),
    })
}

fn price_text(market: &MarketOutcome) -> String {
    market
        .price
        .map_or_else(|| "—".to_owned(), |p| p.to_string())
}

/// The query string of `/events`: percent-decoded by axum's `Query`.
#[derive(Debug, Default, serde::Deserialize)]
struct EventsQuery {
    /// The list page's newest batch.
    after: Option<String>,
}

/// The query string of `/check`.
#[derive(Debug, Default, serde::Deserialize)]
struct CheckQuery {
    /// The commitment, in hex, from the trader's receipt.
    commitment: Option<String>,
}

/// A query string that does not parse (a parameter twice, say): 400, with
/// axum's reason.
fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Missing> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| Missing::Malformed(rejection.body_text()))
}

/// The batch a viewer resumes after: the larger of `Last-Event-ID` (the
/// browser's, on a reconnect) and `?after=E` (the list page's newest).
fn resume_point(headers: &HeaderMap, query: &EventsQuery) -> Result<Option<BatchId>, Missing> {
    let after = match query.after.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<BatchId>()
                .map_err(|_| Missing::Malformed(format!("after={text:.64}: not a batch number")))?,
        ),
    };
    // An id this listener did not send is nothing to resume from.
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<BatchId>().ok());
    Ok(after.max(last))
}

fn batch_event(e: BatchId, summary: &str) -> Result<Event, std::convert::Infallible> {
    Ok(Event::default()
        .event("batch")
        .id(e.to_string())
        .data(summary))
}

async fn events(
    State(explorer): State<Arc<Explorer>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let after = match query_of(query).and_then(|query| resume_point(&headers, &query)) {
        Ok(after) => after,
        Err(missing) => return missing.respond(false),
    };
    // Subscribed before the kept batches are read: a batch published
    // between the two is in both, and sent once.
    let updates = explorer.updates.subscribe();
    let missed: Vec<(BatchId, Arc<str>)> = match after {
        None => Vec::new(),
        Some(after) => {
            let mut missed: Vec<_> = explorer
                .recent()
                .iter()
                .filter(|b| b.e > after)
                .map(|b| (b.e, Arc::clone(&b.summary)))
                .collect();
            missed.reverse();
            missed
        }
    };
    let sent = missed.last().map(|(e, _)| *e).or(after);
    let first = futures_util::stream::once(async {
        Ok(Event::default()
            .retry(std::time::Duration::from_millis(RECONNECT_MS))
            .comment("sealbatch"))
    });
    let replay = futures_util::stream::iter(
        missed
            .into_iter()
            .map(|(e, summary)| batch_event(e, &summary)),
    );
    let live = futures_util::stream::unfold((updates, sent), |(mut updates, sent)| async move {
        loop {
            match updates.recv().await {
                Ok((e, _)) if sent.is_some_and(|sent| e <= sent) => continue,
                Ok((e, summary)) => return Some((batch_event(e, &summary), (updates, Some(e)))),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures_util::StreamExt as _;
    (
        [(header::CACHE_CONTROL, "no-store")],
        Sse::new(first.chain(replay).chain(live)).keep_alive(KeepAlive::default()),
    )
        .into_response()
}

/// Prepends each published batch to the list as it comes (`/events`, from
/// the newest batch the page was rendered with), as the server renders a
/// row, and keeps the list at the explorer's capacity.
const LIVE_SCRIPT: &str = r#"<script>
(function () {
  var table = document.getElementById("batches"), newest = table.dataset.newest;
  var kept = Number(table.dataset.capacity);
  function link(href, text) {
    var a = document.createElement("a"); a.href = href; a.textContent = String(text); return a;
  }
  function cell(row, parts) {
    var td = document.createElement("td");
    parts.forEach(function (part) { td.append(part instanceof Node ? part : String(part)); });
    row.appendChild(td);
  }
  var source = new EventSource("/events" + (newest ? "?after=" + newest : ""));
  source.addEventListener("batch", function (event) {
    var b = JSON.parse(event.data), row = document.createElement("tr"), traded = [];
    b.markets.filter(function (m) { return m.volume > 0; }).forEach(function (m) {
      if (traded.length) { traded.push(" · "); }
      traded.push(link("/markets/" + m.market, m.market), ": " + m.price + " × " + m.volume);
    });
    var root = document.createElement("code");
    root.textContent = b.root.slice(0, 16) + "…";
    cell(row, [link("/batches/" + b.e, b.e)]);
    cell(row, [b.envelopes]);
    cell(row, [b.accepted]);
    cell(row, traded.length ? traded : ["nothing traded"]);
    cell(row, [root]);
    cell(row, [b.close_to_result_ms + " ms"]);
    var body = table.tBodies[0];
    body.insertBefore(row, body.rows[1] || null);
    while (table.rows.length > kept + 1) { table.deleteRow(table.rows.length - 1); }
  });
})();
</script>"#;

async fn index(State(explorer): State<Arc<Explorer>>) -> Response {
    let body = explorer.cached("/".to_owned(), || Ok(render_index(&explorer)));
    respond_cached(body, false, HTML, FRESH)
}

fn render_index(explorer: &Explorer) -> String {
    let recent = explorer.recent();
    page(
        "sealbatch: batches",
        html! {
            h1 { "Batches" }
            p {
                "The newest published batches. Nothing about a batch is shown before its result is published. "
                a href="/check" { "Check my order" } "."
            }
            table id="batches" data-capacity=(explorer.capacity) data-newest=[recent.first().map(|b| b.e)] {
                tr { th { "batch" } th { "envelopes" } th { "accepted" } th { "markets: price × volume" } th { "seal root" } th { "close → result" } }
                @for b in &recent {
                    tr {
                        td { a href={ "/batches/" (b.e) } { (b.e) } }
                        td { (b.envelopes) }
                        td { (b.accepted) }
                        td {
                            @let traded: Vec<&MarketOutcome> = b.markets.iter().filter(|m| m.volume > 0).collect();
                            @if traded.is_empty() {
                                "nothing traded"
                            }
                            @for (i, m) in traded.iter().enumerate() {
                                @if i > 0 { " · " }
                                a href={ "/markets/" (m.market.0) } { (m.market.0) }
                                ": " (price_text(m)) " × " (m.volume)
                            }
                        }
                        td { code { (&hex::encode(b.root)[..16]) "…" } }
                        td { (b.close_to_result_ms) " ms" }
                    }
                }
            }
            (PreEscaped(LIVE_SCRIPT))
        },
    )
}

fn parse_commitment(text: &str) -> Result<Commitment, String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| format!("{:.80}: not a commitment (64 hex digits)", text.trim()))?;
    Ok(Commitment(bytes))
}

/// What a trader pasted into "check my order": a commitment (64 hex
/// digits) or a whole receipt (`spec/envelope.md` §12, in hex; whitespace
/// anywhere, as a copied multi-line block has, is no part of it), whose
/// commitment is looked up.
fn parse_pasted(text: &str) -> Result<(Commitment, Option<Receipt>), String> {
    let text: String = text.split_whitespace().collect();
    if text.len() == 64 {
        return parse_commitment(&text).map(|c| (c, None));
    }
    let bytes = hex::decode(&text)
        .map_err(|_| format!("{text:.80}: not a commitment (64 hex digits) nor a receipt (hex)"))?;
    let receipt = Receipt::from_bytes(&bytes)
        .map_err(|error| format!("{text:.80}: not a receipt: {error}"))?;
    Ok((receipt.commitment, Some(receipt)))
}

/// What "check my order" finds a pasted receipt to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReceiptVerdict {
    /// Signed by this sequencer, and its envelope is in the batch it
    /// promised.
    Kept,
    /// Signed by this sequencer, and the batch it promised was published
    /// without its envelope (or the envelope is in another batch).
    Broken,
    /// Not a receipt of this sequencer (its group's signature or its path
    /// does not verify).
    Invalid,
}

impl ReceiptVerdict {
    /// The page's `data-receipt` value.
    fn attribute(self) -> &'static str {
        match self {
            ReceiptVerdict::Kept => "kept",
            ReceiptVerdict::Broken => "broken",
            ReceiptVerdict::Invalid => "invalid",
        }
    }
}

/// What "check my order" says of a pasted receipt whose envelope is in
/// batch `found_in` (`None`: in no kept batch).
fn receipt_verdict(
    receipt: &Receipt,
    sequencer: &SequencerPublicKey,
    found_in: Option<BatchId>,
) -> (ReceiptVerdict, String) {
    if let Err(why) = receipt.verify(sequencer) {
        return (
            ReceiptVerdict::Invalid,
            format!("NOT a receipt of this sequencer: {why}"),
        );
    }
    let promised = receipt.e;
    match found_in {
        Some(e) if e == promised => (
            ReceiptVerdict::Kept,
            format!(
                "signed by this sequencer (receipt {} of a group of {}), promising batch {promised}: kept",
                receipt.proof.index, receipt.count
            ),
        ),
        Some(e) => (
            ReceiptVerdict::Broken,
            format!(
                "signed by this sequencer for batch {promised}, but the envelope is in batch {e}: a broken promise"
            ),
        ),
        None => (
            ReceiptVerdict::Broken,
            format!(
                "signed by this sequencer for batch {promised}, but batch {promised} was published without this envelope: a broken promise"
            ),
        ),
    }
}

fn status_text(status: &EnvelopeStatus) -> String {
    match status {
        EnvelopeStatus::Accepted { orders, .. } => {
            format!("accepted: its {orders} orders took part in clearing")
        }
        EnvelopeStatus::Rejected { code, detail } => {
            format!("rejected at opening: code {code} (detail {detail}, spec/sequencer.md)")
        }
    }
}

/// What "check my order" says of a batch's key release.
fn release_text(released_by: Option<&Result<Vec<u16>, String>>) -> String {
    match released_by {
        None => "the sequencer's own custodian released the key (trusted-operator mode: no committee attests it)".to_owned(),
        Some(Ok(keypers)) => format!(
            "proven: keypers {} of the committee attested releasing the batch key for this very seal",
            keypers.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        ),
        Some(Err(why)) => format!("NOT PROVEN — do not trust this result: {why}"),
    }
}

/// What "check my order" found for what was pasted.
enum Found {
    /// The envelope, in a kept batch, and the verdict on the receipt if one
    /// was pasted.
    Checked(
        Commitment,
        Box<OrderCheck>,
        Option<(ReceiptVerdict, String)>,
    ),
    /// A receipt whose envelope is in no kept batch although the batch it
    /// promised is kept: the verdict on it.
    Unpublished(BatchId, ReceiptVerdict, String),
}

async fn check_page(
    State(explorer): State<Arc<Explorer>>,
    query: Result<Query<CheckQuery>, QueryRejection>,
) -> Response {
    let text = match query_of(query) {
        Ok(query) => query.commitment.filter(|t| !t.trim().is_empty()),
        Err(missing) => return missing.respond(false),
    };
    let found = text.map(|text| {
        parse_pasted(&text).and_then(|(c, receipt)| match explorer.check(&c) {
            Some(check) => {
                let receipt =
                    receipt.map(|r| receipt_verdict(&r, &explorer.sequencer, Some(check.e)));
                Ok(Found::Checked(c, Box::new(check), receipt))
            }
            // A receipt whose envelope is in no kept batch: if the batch
            // it promised is kept, the promise was broken (once the
            // receipt verifies); else there is nothing to hold it to here.
            None => match receipt {
                Some(r) if explorer.batch(r.e).is_some() => {
                    let (verdict, text) = receipt_verdict(&r, &explorer.sequencer, None);
                    Ok(Found::Unpublished(r.e, verdict, text))
                }
                _ => Err(format!(
                    "{}: in no batch of the recent history",
                    hex::encode(c.0)
                )),
            },
        })
    });
    let body = html! {
        p { a href="/" { "← batches" } }
        h1 { "Check my order" }
        form action="/check" method="get" {
            label { "Your receipt, or the commitment from it (hex) " input name="commitment" size="70" pattern="[0-9a-fA-F]{64}|([0-9a-fA-F]{2}){145,529}"; }
            " "
            button { "Check" }
        }
        @match &found {
            None => {}
            Some(Err(message)) => p class="result" { (message) },
            Some(Ok(Found::Unpublished(e, verdict, text))) => div class="result" data-batch=(e) data-included="false" data-receipt=(verdict.attribute()) {
                p { "Receipt: " (text) }
            },
            Some(Ok(Found::Checked(c, check, receipt))) => div class="result" data-batch=(check.e) data-included=(check.included.is_ok()) data-released=(!matches!(check.released_by, Some(Err(_)))) data-receipt=(receipt.as_ref().map_or("none", |(verdict, _)| verdict.attribute())) {
                @if let Some((_, text)) = receipt {
                    p { "Receipt: " (text) }
                }
                p {
                    "Commitment " code { (hex::encode(c.0)) } " is envelope " (check.index) " of " (check.count) " in "
                    a href={ "/batches/" (check.e) } { "batch " (check.e) } "."
                }
                p {
                    "Inclusion: "
                    @match &check.included {
                        Ok(()) => { "proven: its proof leads to the root " code { (hex::encode(check.root)) } " of the seal the sequencer signed" }
                        Err(why) => { "not proven here: " (why) }
                    }
                }
                p { "Key release: " (release_text(check.released_by.as_ref())) }
                p { (status_text(&check.status)) }
                @if !check.fills.is_empty() {
                    table {
                        tr { th { "order" } th { "market" } th { "side" } th { "filled (lots)" } th { "price" } }
                        @for (index, market, side, filled, price) in &check.fills {
                            tr class="fill" {
                                td { (index) } td { (market) }
                                td { (if *side == Side::Buy { "buy" } else { "sell" }) }
                                td { (filled) }
                                td { (price.map_or_else(|| "—".to_owned(), |p| p.to_string())) }
                            }
                        }
                    }
                } @else if matches!(check.status, EnvelopeStatus::Accepted { .. }) {
                    p { "None of its orders filled." }
                }
            },
        }
    };
    respond(
        StatusCode::OK,
        HTML,
        FRESH,
        page("sealbatch: check an order", body),
    )
}

async fn api_check(State(explorer): State<Arc<Explorer>>, Path(text): Path<String>) -> Response {
    let check = match parse_commitment(&text) {
        Err(message) => return Missing::Malformed(message).respond(true),
        Ok(c) => match explorer.check(&c) {
            None => {
                return Missing::Absent(format!(
                    "{}: in no batch of the recent history",
                    hex::encode(c.0)
                ))
                .respond(true);
            }
            Some(check) => check,
        },
    };
    let status = match check.status {
        EnvelopeStatus::Accepted { orders, .. } => {
            serde_json::json!({ "accepted": { "orders": orders } })
        }
        EnvelopeStatus::Rejected { code, detail } => {
            serde_json::json!({ "rejected": { "code": code, "detail": detail } })
        }
    };
    let body = serde_json::json!({
        "e": check.e,
        "index": check.index,
        "count": check.count,
        "root": hex::encode(check.root),
        "seal": check.seal.map(|s| hex::encode(s.to_bytes())),
        "proof": check.proof.map(hex::encode),
        "included": check.included.is_ok(),
        "why_not_included": check.included.err(),
        "released_by": check.released_by.as_ref().and_then(|r| r.as_ref().ok()),
        "release_attested": check.released_by.as_ref().map(Result::is_ok),
        "why_not_released": check.released_by.as_ref().and_then(|r| r.as_ref().err()),
        "status": status,
        "fills": check.fills.iter().map(|(index, market, side, filled, price)| serde_json::json!({
            "order": index, "market": market, "side": if *side == Side::Buy { "buy" } else { "sell" },
            "filled": filled, "price": price,
        })).collect::<Vec<_>>(),
    })
    .to_string();
    respond(StatusCode::OK, JSON, FRESH, body)
}

/// The cache key of a market route: by the market id the path parses to
/// (`/markets/007` and `/markets/7` are one answer; two paths that differ
/// are never taken for one). A path that does not parse renders an error,
/// which is not kept, whatever its key.
fn market_key(route: &str, m: &str) -> String {
    m.parse::<u32>()
        .map_or_else(|_| format!("{route}/?"), |id| format!("{route}/{id}"))
}

/// Market `m`'s history, or why there is none.
fn find_market(explorer: &Explorer, m: &str) -> Result<(u32, Vec<(HistoryPoint, i128)>), Missing> {
    let Ok(m) = m.parse::<u32>() else {
        return Err(Missing::Malformed(format!("{m:.64}: not a market id")));
    };
    explorer
        .market(m)
        .map(|history| (m, history))
        .ok_or_else(|| Missing::Absent(format!("market {m}: in no batch of the recent history")))
}

async fn market_page(State(explorer): State<Arc<Explorer>>, Path(m): Path<String>) -> Response {
    let body = explorer.cached(market_key("/markets", &m), || {
        render_market_page(&explorer, &m)
    });
    respond_cached(body, false, HTML, FRESH)
}

fn render_market_page(explorer: &Explorer, m: &str) -> Result<String, Missing> {
    let (m, history) = find_market(explorer, m)?;
    let points: Vec<HistoryPoint> = history.iter().map(|(h, _)| *h).collect();
    Ok(page(
        &format!("sealbatch: market {m}"),
        html! {
            p { a href="/" { "← batches" } }
            h1 { "Market " (m) }
            (PreEscaped(market_history_svg(m, &points)))
            table {
                tr { th { "batch" } th { "price" } th { "volume (lots)" } th { "imbalance" } }
                @for (h, imbalance) in history.iter().rev() {
                    tr {
                        td { a href={ "/batches/" (h.e) } { (h.e) } }
                        td { (h.price.map_or_else(|| "—".to_owned(), |p| p.to_string())) }
                        td { (h.volume) }
                        td { (imbalance) }
                    }
                }
            }
        },
    ))
}

async fn api_market(State(explorer): State<Arc<Explorer>>, Path(m): Path<String>) -> Response {
    let body = explorer.cached(market_key("/api/markets", &m), || {
        render_api_market(&explorer, &m)
    });
    respond_cached(body, true, JSON, FRESH)
}

fn render_api_market(explorer: &Explorer, m: &str) -> Result<String, Missing> {
    let (m, history) = find_market(explorer, m)?;
    let batches: Vec<serde_json::Value> = history
        .iter()
        .map(|(h, imbalance)| {
            serde_json::json!({
                "e": h.e, "price": h.price, "volume": h.volume, "imbalance": imbalance.to_string(),
            })
        })
        .collect();
    Ok(serde_json::json!({ "market": m, "batches": batches }).to_string())
}

async fn batch_page(State(explorer): State<Arc<Explorer>>, Path(e): Path<String>) -> Response {
    match find(&explorer, &e) {
        Ok(b) => respond(
            StatusCode::OK,
            HTML,
            IMMUTABLE,
            b.rendered
                .page
                .get_or_init(|| render_batch_page(&b).into())
                .clone(),
        ),
        Err(missing) => missing.respond(false),
    }
}

fn render_batch_page(b: &BatchView) -> String {
    page(
        &format!("sealbatch: batch {}", b.e),
        html! {
            p { a href="/" { "← batches" } }
            h1 { "Batch " (b.e) }
            p {
                (b.envelopes) " envelopes, " (b.accepted) " accepted, " (b.fills)
                " orders filled; result published " (b.close_to_result_ms) " ms after the close."
            }
            p {
                "Seal root " code { (hex::encode(b.root)) } br;
                "Batch secret s" sub { "e" } " " code { (hex::encode(b.batch_secret)) }
            }
            p class="release" { "Key release: " (release_text(b.released_by.as_ref())) }
            table {
                tr { th { "market" } th { "price" } th { "volume (lots)" } th { "imbalance" } }
                @for m in &b.markets {
                    tr {
                        td { a href={ "/markets/" (m.market.0) } { (m.market.0) } }
                        td { (price_text(m)) }
                        td { (m.volume) }
                        td { (m.imbalance) }
                    }
                }
            }
            @if !b.rejected.is_empty() {
                h2 { "Rejected at opening" }
                table {
                    tr { th { "code" } th { "envelopes" } }
                    @for (code, count) in &b.rejected {
                        tr { td { (code) } td { (count) } }
                    }
                }
            }
            h2 { "Demand and supply" }
            @match &b.curves {
                Some(curves) => (PreEscaped(String::from_utf8_lossy(
                    b.rendered.svg.get_or_init(|| batch_svg(b.e, curves).into()),
                ))),
                None => p { "Not kept for this batch (cleared before this process started, or too large): " code { "sealbatch plot" } " draws it from the journal." },
            }
        },
    )
}

async fn curves_svg(State(explorer): State<Arc<Explorer>>, Path(e): Path<String>) -> Response {
    let b = match find(&explorer, &e) {
        Ok(b) => b,
        Err(missing) => return missing.respond(false),
    };
    match &b.curves {
        Some(curves) => respond(
            StatusCode::OK,
            SVG,
            IMMUTABLE,
            b.rendered
                .svg
                .get_or_init(|| batch_svg(b.e, curves).into())
                .clone(),
        ),
        None => Missing::Absent(format!("batch {}: curves not kept", b.e)).respond(false),
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
    let body = explorer.cached("/api/batches".to_owned(), || {
        // The summaries are kept as JSON text already.
        let mut body = String::from("{\"batches\":[");
        for (i, b) in explorer.recent().iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&b.summary);
        }
        body.push_str("]}");
        Ok(body)
    });
    respond_cached(body, true, JSON, FRESH)
}

async fn api_batch(State(explorer): State<Arc<Explorer>>, Path(e): Path<String>) -> Response {
    match find(&explorer, &e) {
        Ok(b) => respond(
            StatusCode::OK,
            JSON,
            IMMUTABLE,
            b.rendered
                .json
                .get_or_init(|| render_api_batch(&b).into())
                .clone(),
        ),
        Err(missing) => missing.respond(true),
    }
}

fn render_api_batch(b: &BatchView) -> String {
    let mut value = summary_json(b);
    // The keypers' release attestations as published (anyone checks them
    // against the committee: `spec/keyper.md` §9), and the explorer's own
    // verdict.
    value["release"] = b
        .outcome
        .release
        .iter()
        .map(|a| serde_json::json!({ "keyper": a.keyper, "signature": hex::encode(a.signature) }))
        .collect::<Vec<_>>()
        .into();
    value["release_attested"] = b.released_by.as_ref().map(Result::is_ok).into();
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
    value.to_string()
}

/// The explorer's style sheet.
const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:64em}table{border-collapse:collapse}\
td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}code{font-size:.9em}\
svg{max-width:100%;height:auto}";

/// A whole page: `body` under the explorer's head titled `title`. Every
/// value the templates interpolate is escaped by maud; what is written
/// unescaped is named (`PreEscaped`: the SVG the explorer draws, its
/// script).
fn page(title: &str, body: Markup) -> String {
    let mut html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                meta name="viewport" content="width=device-width, initial-scale=1";
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string();
    html.push('\n');
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{MerkleRoot, SequencerKey};

    fn explorer(capacity: usize) -> Arc<Explorer> {
        Explorer::new(capacity, SequencerKey::from_seed(&[7; 32]).public_key())
    }

    fn publish(explorer: &Explorer, e: BatchId) {
        let outcome = Arc::new(BatchOutcome {
            e,
            root: MerkleRoot([0; 32]),
            batch_secret: [0; 32],
            release: Vec::new(),
            envelopes: Vec::new(),
            markets: Vec::new(),
            fills: Vec::new(),
        });
        explorer.record(&outcome, None, 0, None);
    }

    fn status(explorer: &Explorer, e: &str) -> Option<StatusCode> {
        find(explorer, e)
            .err()
            .map(|missing| missing.respond(true).status())
    }

    #[test]
    fn a_missing_batch_is_malformed_pruned_or_absent() {
        let explorer = explorer(2);
        assert_eq!(status(&explorer, "3"), Some(StatusCode::NOT_FOUND));
        for e in BatchId(3).through(BatchId(6)) {
            publish(&explorer, e);
        }
        assert_eq!(explorer.oldest(), Some(BatchId(5)));
        assert_eq!(status(&explorer, "5"), None);
        assert_eq!(status(&explorer, "6"), None);
        assert_eq!(status(&explorer, "4"), Some(StatusCode::GONE));
        assert_eq!(status(&explorer, "0"), Some(StatusCode::GONE));
        assert_eq!(status(&explorer, "7"), Some(StatusCode::NOT_FOUND));
        for bad in ["x", "-1", "18446744073709551616", "", "5 "] {
            assert_eq!(
                status(&explorer, bad),
                Some(StatusCode::BAD_REQUEST),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn answers_are_rendered_once_per_change_of_the_kept_batches() {
        let explorer = explorer(4);
        let answer = |text: &'static str| {
            explorer
                .cached("/".to_owned(), || Ok(text.to_owned()))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok()
        };
        assert_eq!(answer("a").as_deref(), Some("a"));
        assert_eq!(answer("b").as_deref(), Some("a"));
        publish(&explorer, BatchId(1));
        assert_eq!(answer("c").as_deref(), Some("c"));
        assert_eq!(answer("d").as_deref(), Some("c"));
        // Market routes are keyed by the id they parse to, never by a
        // truncated path.
        let zeros = "0".repeat(40);
        assert_eq!(market_key("/markets", &format!("{zeros}1")), "/markets/1");
        assert_ne!(
            market_key("/markets", &format!("{zeros}1")),
            market_key("/markets", &format!("{zeros}2"))
        );
        // A failure is not kept.
        let missing = explorer.cached("/x".to_owned(), || {
            Err(Missing::Absent("not yet".to_owned()))
        });
        assert!(missing.is_err());
        let found = explorer.cached("/x".to_owned(), || Ok("now".to_owned()));
        assert_eq!(found.ok().as_deref(), Some(&b"now"[..]));
    }

    #[test]
    fn a_viewer_resumes_after_the_larger_of_its_page_and_its_last_event() {
        // The query string as axum's `Query` reads it.
        let resume = |headers: &HeaderMap, query: Option<&str>| {
            let uri: axum::http::Uri = format!("/events?{}", query.unwrap_or_default())
                .parse()
                .unwrap();
            resume_point(
                headers,
                &Query::<EventsQuery>::try_from_uri(&uri).unwrap().0,
            )
        };
        let mut headers = HeaderMap::new();
        assert!(matches!(resume(&headers, None), Ok(None)));
        assert!(matches!(
            resume(&headers, Some("after=9")),
            Ok(Some(BatchId(9)))
        ));
        headers.insert("last-event-id", "12".parse().unwrap());
        assert!(matches!(
            resume(&headers, Some("after=9")),
            Ok(Some(BatchId(12)))
        ));
        assert!(matches!(
            resume(&headers, Some("x=1&after=15")),
            Ok(Some(BatchId(15)))
        ));
        assert!(matches!(
            resume(&headers, Some("after=%3115")),
            Ok(Some(BatchId(115)))
        ));
        assert!(matches!(resume(&headers, None), Ok(Some(BatchId(12)))));
        // An id not sent by the listener is ignored; a bad `after` refused.
        headers.insert("last-event-id", "nonsense".parse().unwrap());
        assert!(matches!(resume(&headers, None), Ok(None)));
        assert!(matches!(
            resume(&headers, Some("after=-3")),
            Err(Missing::Malformed(_))
        ));
    }
}

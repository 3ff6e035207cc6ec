//! `sealbatch loadgen`: simulated traders over real QUIC.
//!
//! Each trader has its own key and connection, subscribes, funds itself
//! (demo mode), then seals bundles of random limit orders around each
//! market's reference price to the open batch at a steady rate, pipelining
//! submissions on its stream. A `Busy` refusal (the sequencer's admission
//! control) pauses the trader for its retry-after: the orders it would have
//! sent meanwhile are counted as deferred, not sent. At the end every receipt
//! is checked against the inclusion proof pushed with its batch's seal.
//!
//! Latencies go to HDR histograms ([`Latencies`]: fixed memory, 3
//! significant figures), not a list of every sample. The progress bar
//! ([`indicatif`]) is drawn on stderr only when stderr is a terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::envelope::{
    BatchPublicKey, InclusionProof, Receipt, SEAL_LEN, SequencerPublicKey, SignedSeal, seal_bundle,
};
use crate::node::metrics::process_cpu_seconds;
use crate::node::now_ms;
use crate::order::OrderSpec;
use crate::types::{BUNDLE_ORDERS_MAX, BatchId, MarketId, Side};
use crate::wire::{BatchCleared, MarketInfo, ReasonCode, Schedule, ServerMessage};

use super::connect::{ServerArgs, target_batch};
use super::hostile::{self, HostileKind};
use super::{CommandResult, Failure};

/// Arguments of `sealbatch loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// Where the sequencer is.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Simulated traders, each with its own key and connection.
    #[arg(long, default_value_t = 8)]
    pub traders: usize,
    /// Target orders per second, all traders together.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Orders per bundle (envelope).
    #[arg(long, default_value_t = 16)]
    pub bundle: usize,
    /// How long to submit, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seed for the traders' keys and orders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Do not deposit funds first (the accounts must already be funded).
    #[arg(long)]
    pub no_fund: bool,
    /// The sequencer's metrics address, to report its resident memory.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9433")]
    pub metrics: SocketAddr,
    /// Run a misbehaving client beside the honest traders (after a baseline
    /// run of the same honest load without it, unless `--no-baseline`), and
    /// compare what the honest traders saw.
    #[arg(long, value_enum, value_name = "KIND")]
    pub hostile: Option<HostileKind>,
    /// The hostile client's rate (what it counts depends on the kind; see
    /// `--hostile`'s values).
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub hostile_rate: u64,
    /// With `--hostile`, skip the baseline run.
    #[arg(long)]
    pub no_baseline: bool,
    /// Append every receipt received, one hex line each (`spec/envelope.md`
    /// §12: 145 bytes and 32 per sibling of its path), to
    /// this file, for `sealbatch verify --receipts` (the crash campaign
    /// checks with it that no acknowledged envelope is ever lost).
    #[arg(long, value_name = "FILE")]
    pub receipts: Option<std::path::PathBuf>,
}

/// Reads every sample of a Prometheus `/metrics` endpoint (best effort):
/// `name{labels}` → value.
fn scrape(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let (_, body) = body.split_once("\r\n\r\n")?;
    Some(
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// What the sequencer reported over a run: the difference of two scrapes of
/// its `/metrics`, with the loadgen's own CPU time over the same wall time.
struct ServerSide {
    before: BTreeMap<String, f64>,
    after: BTreeMap<String, f64>,
    loadgen_cpu_s: f64,
    wall: Duration,
}

impl ServerSide {
    fn delta(&self, name: &str) -> Option<f64> {
        Some(self.after.get(name)? - self.before.get(name).copied().unwrap_or(0.0))
    }

    /// Mean of a histogram's observations during the run.
    fn mean(&self, histogram: &str) -> Option<f64> {
        let count = self.delta(&format!("{histogram}_count"))?;
        (count > 0.0).then_some(self.delta(&format!("{histogram}_sum"))? / count)
    }

    /// The lines `loadgen` prints after its report.
    fn render(&self) -> String {
        let mut out = String::new();
        let batches = self.delta("sealbatch_batches_cleared_total").unwrap_or(0.0);
        if let (Some(envelopes), Some(decrypt), Some(clearing), Some(to_result)) = (
            self.mean("sealbatch_batch_envelopes"),
            self.mean("sealbatch_decrypt_seconds"),
            self.mean("sealbatch_clearing_seconds"),
            self.mean("sealbatch_seal_to_result_seconds"),
        ) {
            out.push_str(&format!(
                "sequencer per batch  {envelopes:>8.0} envelopes   decrypt {:.1} ms   clearing {:.1} ms   \
                 seal to result {:.1} ms   (means over {batches:.0} batches)\n",
                decrypt * 1e3,
                clearing * 1e3,
                to_result * 1e3,
            ));
        }
        let wall = self.wall.as_secs_f64().max(1e-9);
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        // A counter that went down: the scraped process is not the one of
        // the first scrape (restarted, or another replica answered).
        match self.delta("process_cpu_seconds_total") {
            Some(server_cpu) if server_cpu >= 0.0 => out.push_str(&format!(
                "CPU used             sequencer {:.2} cores   loadgen {:.2} cores   (of {cores}, over {wall:.1} s)\n",
                server_cpu / wall,
                self.loadgen_cpu_s / wall,
            )),
            Some(_) => out.push_str(&format!(
                "CPU used             sequencer unknown (its CPU counter went down: another process answered the second scrape)   loadgen {:.2} cores\n",
                self.loadgen_cpu_s / wall,
            )),
            None => {}
        }
        if let Some(rss) = self.after.get("process_resident_memory_bytes") {
            out.push_str(&format!(
                "sequencer memory     {:>9.1} MiB resident\n",
                rss / (1 << 20) as f64
            ));
        }
        out
    }
}

/// Load generation settings, independent of the command line.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Server address.
    pub server: SocketAddr,
    /// Pinned certificate fingerprint.
    pub fingerprint: [u8; 32],
    /// Number of traders.
    pub traders: usize,
    /// Orders per second in all.
    pub rate: u64,
    /// Orders per bundle.
    pub bundle: usize,
    /// Submission time.
    pub duration: Duration,
    /// Seed.
    pub seed: u64,
    /// Deposit funds over the wire first.
    pub fund: bool,
    /// Print a progress line.
    pub progress: bool,
    /// Append each receipt to this file as it arrives (one hex line), so
    /// that the file holds every receipt given even if the run is killed.
    pub receipts: Option<std::path::PathBuf>,
}

/// Latencies from a microsecond to an hour (longer ones count as an hour),
/// to 3 significant figures, in memory that does not grow with the samples
/// (an HDR histogram).
#[derive(Clone, Debug)]
pub struct Latencies(hdrhistogram::Histogram<u64>);

impl Latencies {
    /// The longest latency told apart, in microseconds: an hour.
    pub const MAX_US: u64 = 3_600_000_000;
    /// Significant figures kept.
    pub const SIGNIFICANT_FIGURES: u8 = 3;

    /// Adds one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros);
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        for value in other.0.iter_recorded() {
            self.0
                .saturating_record_n(value.value_iterated_to(), value.count_at_value());
        }
    }

    /// Latencies recorded.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether none was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The latency at quantile `q` (0.5 the median), zero when empty: the
    /// lowest value of its histogram bucket, so that a whole number of
    /// milliseconds prints as such.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let micros = self.0.value_at_quantile(q);
        Duration::from_micros(self.0.lowest_equivalent(micros))
    }

    /// The largest latency (the lowest value of its bucket), zero when empty.
    #[must_use]
    pub fn max(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.lowest_equivalent(self.0.max()))
    }
}

impl Default for Latencies {
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        Latencies(
            hdrhistogram::Histogram::new_with_bounds(1, Self::MAX_US, Self::SIGNIFICANT_FIGURES)
                // Constant bounds, valid by hdrhistogram's rules (1 <= low,
                // 2 * low <= high, significant figures <= 5); a test builds it.
                .expect("constant histogram bounds are valid"),
        )
    }
}

/// What a load run measured.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Wall time of the submission phase.
    pub elapsed: Duration,
    /// Envelopes receipted.
    pub receipts: u64,
    /// Orders in receipted envelopes.
    pub orders_accepted: u64,
    /// Receipt latencies (submit sent → receipt verified).
    pub receipt_latency: Latencies,
    /// Batch close → `BatchCleared` received, per batch and trader.
    pub close_to_result: Latencies,
    /// Refusals by reason.
    pub rejections: BTreeMap<String, u64>,
    /// Orders not sent while paused by a `Busy` retry-after.
    pub orders_deferred: u64,
    /// Receipts whose inclusion proof verified against the signed seal.
    pub included: u64,
    /// Receipts whose batch's seal never reached the trader's connection
    /// (the server stopped leading, or the run ended first): not checked.
    pub unsealed: u64,
    /// Orders of this run that filled at least one lot.
    pub orders_filled: u64,
    /// Batches seen cleared.
    pub batches: BTreeSet<BatchId>,
    /// Every receipt received.
    pub receipt_list: Vec<Receipt>,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.receipts += other.receipts;
        self.orders_accepted += other.orders_accepted;
        self.receipt_latency.merge(&other.receipt_latency);
        self.close_to_result.merge(&other.close_to_result);
        for (reason, count) in other.rejections {
            *self.rejections.entry(reason).or_default() += count;
        }
        self.orders_deferred += other.orders_deferred;
        self.included += other.included;
        self.unsealed += other.unsealed;
        self.orders_filled += other.orders_filled;
        self.batches.extend(other.batches);
    }

    /// The report as printed by `loadgen` and `demo`.
    #[must_use]
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut out = String::new();
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "orders accepted      {:>12}  ({:.0} orders/s, {} envelopes in {:.1} s)\n\
                 receipt latency      p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms\n\
                 close to result      p50 {:>7.2} ms   p99 {:>7.2} ms   ({} batches)\n\
                 orders filled        {:>12}\n\
                 receipts included    {:>12} of {} (inclusion proofs verified against signed seals)\n",
                self.orders_accepted,
                self.orders_accepted as f64 / secs,
                self.receipts,
                secs,
                ms(self.receipt_latency.quantile(0.5)),
                ms(self.receipt_latency.quantile(0.99)),
                ms(self.receipt_latency.max()),
                ms(self.close_to_result.quantile(0.5)),
                ms(self.close_to_result.quantile(0.99)),
                self.batches.len(),
                self.orders_filled,
                self.included,
                self.receipts,
            ),
        );
        if self.unsealed > 0 {
            out.push_str(&format!(
                "receipts unchecked   {:>12}  (their batch's seal never reached the connection: the server stopped leading, or the run ended first)\n",
                self.unsealed
            ));
        }
        if self.orders_deferred > 0 {
            out.push_str(&format!(
                "orders deferred      {:>12}  (not sent while the sequencer asked to retry later)\n",
                self.orders_deferred
            ));
        }
        if self.rejections.is_empty() {
            out.push_str("rejections           none\n");
        } else {
            for (reason, count) in &self.rejections {
                out.push_str(&format!("rejected             {count:>12}  {reason}\n"));
            }
        }
        out
    }
}

/// Random limit orders around the markets' reference prices.
fn random_orders(rng: &mut ChaCha20Rng, markets: &[MarketInfo], count: usize) -> Vec<OrderSpec> {
    (0..count)
        .map(|i| {
            let market = &markets[rng.next_u32() as usize % markets.len()];
            let roll = rng.next_u64();
            let side = if roll & 1 == 0 { Side::Buy } else { Side::Sell };
            // Buyers bid a little below or above the reference, sellers
            // ask around it: the books cross near the reference.
            let spread = (market.reference_price.get() / 100).max(1);
            let offset = (roll >> 8) % (2 * spread + 1);
            let price = (market.reference_price + offset)
                .saturating_sub(spread)
                .clamp(market.band_min, market.band_max);
            OrderSpec {
                market: MarketId(market.id),
                side,
                limit: if roll.is_multiple_of(23) {
                    None
                } else {
                    Some(price)
                },
                qty: 1 + (roll >> 32) % 10,
                client_order_id: i as u64,
            }
        })
        .collect()
}

struct Trader {
    client: Arc<Client>,
    key: SigningKey,
    rng: ChaCha20Rng,
    nonce: u64,
    schedule: Schedule,
    sequencer: SequencerPublicKey,
    keys: BTreeMap<BatchId, BatchPublicKey>,
    report: LoadReport,
    receipts: BTreeMap<[u8; 32], Receipt>,
    proofs: Vec<(SignedSeal, [u8; 32], Vec<u8>)>,
    waiting: BTreeSet<BatchId>,
    /// Smoothed receipt latency, to aim at a batch still open on arrival.
    latency_ms: f64,
    /// No submission before this (a `Busy` retry-after).
    paused_until: Instant,
}

/// Margin kept before a batch closes: a few smoothed receipt latencies,
/// plus a floor for scheduling jitter, at most a few batches.
fn margin_ms(latency_ms: f64, batch_length_ms: u64) -> u64 {
    ((10.0 + 3.0 * latency_ms) as u64).min(batch_length_ms.saturating_mul(4))
}

enum Outcome {
    Receipt(Receipt, Duration, usize),
    Refused(String),
    /// Refused as busy: wait this long.
    Busy(String, Duration),
}

impl Trader {
    fn event(&mut self, event: ServerMessage) {
        match event {
            ServerMessage::BatchOpened { e, public_key, .. } => {
                if let Ok(key) = BatchPublicKey::from_bytes(&public_key) {
                    self.keys.insert(e, key);
                }
                // Keys of batches long closed are of no use.
                let open = target_batch(&self.schedule, now_ms(), 0);
                self.keys = self.keys.split_off(&open.saturating_sub(1));
            }
            ServerMessage::BatchSealed(sealed) => {
                if let Ok(seal) = SignedSeal::from_bytes(&sealed.seal) {
                    for (commitment, proof) in sealed.proofs {
                        self.proofs.push((seal, commitment, proof));
                    }
                }
            }
            ServerMessage::BatchCleared(cleared) => self.cleared(&cleared),
            _ => {}
        }
    }

    fn cleared(&mut self, cleared: &BatchCleared) {
        // Only batches holding this trader's envelopes: others' results may
        // wait in the queue while this trader is still funding itself.
        if !cleared.own.is_empty() {
            let close =
                self.schedule.genesis_ms + (cleared.e.get() + 1) * self.schedule.batch_length_ms;
            self.report
                .close_to_result
                .record(Duration::from_millis(now_ms().saturating_sub(close)));
        }
        self.report.batches.insert(cleared.e);
        self.report.orders_filled += cleared
            .own
            .iter()
            .map(|own| own.fills.len() as u64)
            .sum::<u64>();
        self.waiting.remove(&cleared.e);
    }

    fn outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Receipt(receipt, latency, orders) => {
                self.report.receipts += 1;
                self.report.orders_accepted += orders as u64;
                self.report.receipt_latency.record(latency);
                self.latency_ms = 0.9 * self.latency_ms + 0.1 * latency.as_secs_f64() * 1e3;
                self.waiting.insert(receipt.e);
                self.receipts.insert(receipt.commitment.0, receipt);
            }
            Outcome::Refused(reason) => *self.report.rejections.entry(reason).or_default() += 1,
            Outcome::Busy(reason, retry_after) => {
                *self.report.rejections.entry(reason).or_default() += 1;
                self.paused_until = self.paused_until.max(Instant::now() + retry_after);
            }
        }
    }

    /// What is left to check once the run is over.
    fn into_inclusion(self) -> (LoadReport, Inclusion) {
        (
            self.report,
            Inclusion {
                sequencer: self.sequencer,
                receipts: self.receipts,
                proofs: self.proofs,
            },
        )
    }
}

/// A trader's receipts and the inclusion proofs pushed with the seals,
/// checked after every trader has finished: checking thousands of
/// signatures inside a trader's task would delay the other traders' events
/// and inflate their measured latencies.
struct Inclusion {
    sequencer: SequencerPublicKey,
    receipts: BTreeMap<[u8; 32], Receipt>,
    proofs: Vec<(SignedSeal, [u8; 32], Vec<u8>)>,
}

impl Inclusion {
    /// Receipts proven included: the receipt's and the seal's signatures
    /// verify (each distinct seal once), both name the same batch, and the
    /// proof leads from the commitment to the seal's root.
    /// Receipts whose batch no seal pushed on the connection names.
    fn unsealed(&self) -> u64 {
        let sealed: BTreeSet<BatchId> = self.proofs.iter().map(|(seal, _, _)| seal.e).collect();
        self.receipts
            .values()
            .filter(|receipt| !sealed.contains(&receipt.e))
            .count() as u64
    }

    fn included(&self) -> u64 {
        let mut seals: BTreeMap<[u8; SEAL_LEN], bool> = BTreeMap::new();
        for (seal, _, _) in &self.proofs {
            seals
                .entry(seal.to_bytes())
                .or_insert_with(|| seal.verify(&self.sequencer).is_ok());
        }
        // Each receipt group's signature is checked once, its receipts'
        // paths one by one.
        let mut groups = BTreeMap::new();
        for receipt in self.receipts.values() {
            groups
                .entry((receipt.count, receipt.root, receipt.signature))
                .or_insert_with(|| receipt.verify_group(&self.sequencer).is_ok());
        }
        self.proofs
            .par_iter()
            .filter(|(seal, commitment, proof)| {
                let (Some(receipt), Ok(proof)) = (
                    self.receipts.get(commitment),
                    InclusionProof::from_bytes(proof),
                ) else {
                    return false;
                };
                seals.get(&seal.to_bytes()).copied().unwrap_or(false)
                    && receipt.e == seal.e
                    && groups
                        .get(&(receipt.count, receipt.root, receipt.signature))
                        .copied()
                        .unwrap_or(false)
                    && receipt.verify_path().is_ok()
                    && proof
                        .verify(&receipt.commitment, seal.count, &seal.root)
                        .is_ok()
            })
            .count() as u64
    }
}

fn trader_key(seed: u64, index: usize) -> SigningKey {
    let mut bytes = [0u8; 32];
    ChaCha20Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .fill_bytes(&mut bytes);
    SigningKey::from_bytes(&bytes)
}

async fn run_trader(
    index: usize,
    options: LoadOptions,
    accepted: Arc<AtomicU64>,
    receipts_out: Option<mpsc::UnboundedSender<Receipt>>,
) -> Result<(LoadReport, Inclusion), ClientError> {
    let client = Arc::new(Client::connect(options.server, options.fingerprint).await?);
    let schedule = client.schedule().await?;
    let mut events = client.subscribe().await?;
    let key = trader_key(options.seed, index);
    let account = key.verifying_key().to_bytes();
    if options.fund {
        let mut assets: BTreeSet<u32> = BTreeSet::new();
        for m in &schedule.markets {
            assets.insert(m.base_asset);
            assets.insert(m.quote_asset);
        }
        for asset in assets {
            client.deposit(account, asset, 1 << 50).await?;
        }
    }
    let sequencer = SequencerPublicKey::from_bytes(&schedule.sequencer_key)
        .map_err(|error| ClientError::Protocol(error.to_string()))?;
    let keys = schedule
        .batch_keys
        .iter()
        .filter_map(|(e, k)| Some((*e, BatchPublicKey::from_bytes(k).ok()?)))
        .collect();
    let mut trader = Trader {
        client: Arc::clone(&client),
        key,
        rng: ChaCha20Rng::seed_from_u64(options.seed.wrapping_add(index as u64 + 1)),
        nonce: now_ms() << 16,
        schedule,
        sequencer,
        keys,
        report: LoadReport::default(),
        receipts: BTreeMap::new(),
        proofs: Vec::new(),
        waiting: BTreeSet::new(),
        latency_ms: 5.0,
        paused_until: Instant::now(),
    };
    let bundle = options.bundle.clamp(1, BUNDLE_ORDERS_MAX);
    let per_second = options.rate as f64 / options.traders.max(1) as f64 / bundle as f64;
    let tick = Duration::from_millis(10);
    let mut ticker = tokio::time::interval(tick);
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
    let start = Instant::now();
    let mut due = 0.0f64;
    let mut sent = 0u64;
    let mut done = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick(), if start.elapsed() < options.duration => {
                due += per_second * tick.as_secs_f64();
                let count = due.floor() as usize;
                due -= count as f64;
                if Instant::now() < trader.paused_until {
                    trader.report.orders_deferred += (count * bundle) as u64;
                    continue;
                }
                let margin = margin_ms(trader.latency_ms, trader.schedule.batch_length_ms);
                let e = target_batch(&trader.schedule, now_ms(), margin);
                let Some(batch_key) = trader.keys.get(&e).copied() else {
                    continue;
                };
                for _ in 0..count {
                    let orders = random_orders(&mut trader.rng, &trader.schedule.markets, bundle);
                    trader.nonce += 1;
                    let Ok(envelope) = seal_bundle(&mut trader.rng, &trader.key, &trader.schedule.deployment(), e, &batch_key, trader.nonce, &orders) else {
                        continue;
                    };
                    let client = Arc::clone(&trader.client);
                    let outcomes = outcomes_tx.clone();
                    let accepted = Arc::clone(&accepted);
                    sent += 1;
                    tokio::spawn(async move {
                        let t0 = Instant::now();
                        let outcome = match client.submit(envelope.into_bytes()).await {
                            Ok(receipt) => {
                                accepted.fetch_add(bundle as u64, Ordering::Relaxed);
                                Outcome::Receipt(receipt, t0.elapsed(), bundle)
                            }
                            Err(ClientError::Rejected { code: ReasonCode::Busy, retry_after, .. }) => {
                                Outcome::Busy(ReasonCode::Busy.to_string(), retry_after)
                            }
                            Err(ClientError::Rejected { code, .. }) => Outcome::Refused(code.to_string()),
                            Err(error) => Outcome::Refused(error.to_string()),
                        };
                        let _ = outcomes.send(outcome);
                    });
                }
            }
            Some(outcome) = outcomes.recv() => {
                if let (Outcome::Receipt(receipt, ..), Some(out)) = (&outcome, &receipts_out) {
                    let _ = out.send(receipt.clone());
                }
                trader.outcome(outcome);
                done += 1;
            }
            Some(event) = events.recv() => trader.event(event),
            _ = tokio::time::sleep(Duration::from_millis(50)), if start.elapsed() >= options.duration => {}
        }
        if start.elapsed() >= options.duration && done == sent {
            break;
        }
    }
    trader.report.elapsed = start.elapsed();
    // Wait for every batch holding a receipt to be cleared (bounded).
    let settle_deadline = Instant::now() + Duration::from_secs(5);
    while !trader.waiting.is_empty() && Instant::now() < settle_deadline {
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Some(event)) => trader.event(event),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    client.close();
    Ok(trader.into_inclusion())
}

/// Runs the traders and merges their reports.
///
/// # Errors
///
/// The first trader that fails to connect or fund.
pub async fn load(options: LoadOptions) -> Result<LoadReport, ClientError> {
    let accepted = Arc::new(AtomicU64::new(0));
    let progress = options.progress.then(|| {
        let bar = progress_bar(options.duration);
        let accepted = Arc::clone(&accepted);
        let total = options.duration;
        let task_bar = bar.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let elapsed = start.elapsed().min(total);
                let orders = accepted.load(Ordering::Relaxed);
                task_bar.set_message(format!(
                    "{:>5.1}s  {:>10} orders receipted  {:>8.0} orders/s",
                    elapsed.as_secs_f64(),
                    orders,
                    orders as f64 / start.elapsed().as_secs_f64().max(1e-9),
                ));
                task_bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            }
        });
        (bar, task)
    });
    let started = Instant::now();
    let (receipts_out, writer) = match &options.receipts {
        Some(path) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let path = path.clone();
            (
                Some(tx),
                Some(tokio::task::spawn_blocking(move || {
                    write_receipts(&path, rx)
                })),
            )
        }
        None => (None, None),
    };
    let tasks: Vec<_> = (0..options.traders)
        .map(|i| {
            tokio::spawn(run_trader(
                i,
                options.clone(),
                Arc::clone(&accepted),
                receipts_out.clone(),
            ))
        })
        .collect();
    drop(receipts_out);
    let mut report = LoadReport::default();
    let mut first_error = None;
    let mut inclusions = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok((r, inclusion))) => {
                report.merge(r);
                inclusions.push(inclusion);
            }
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(error) => {
                first_error.get_or_insert(ClientError::Connection(error.to_string()));
            }
        }
    }
    if let Some((bar, task)) = progress {
        task.abort();
        // Leaves the last state on screen (nothing when stderr is not a
        // terminal).
        bar.abandon();
    }
    if let Some(writer) = writer {
        match writer.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("receipts file: {error}"),
            Err(error) => eprintln!("receipts file: {error}"),
        }
    }
    report.elapsed = options.duration.min(started.elapsed());
    report.included += inclusions.iter().map(Inclusion::included).sum::<u64>();
    report.unsealed += inclusions.iter().map(Inclusion::unsealed).sum::<u64>();
    report.receipt_list = inclusions
        .iter()
        .flat_map(|inclusion| inclusion.receipts.values().cloned())
        .collect();
    match first_error {
        Some(error) if report.receipts == 0 => Err(error),
        _ => Ok(report),
    }
}

/// The progress bar of a run of `duration`, in milliseconds, on stderr:
/// hidden when stderr is not a terminal, so that logs get no carriage
/// returns.
fn progress_bar(duration: Duration) -> indicatif::ProgressBar {
    let length = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(length),
        indicatif::ProgressDrawTarget::stderr(),
    );
    // The template is a constant; should it not parse, the default style stays.
    if let Ok(style) = indicatif::ProgressStyle::with_template("[{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("## "));
    }
    bar
}

/// Runs `sealbatch loadgen`.
///
/// # Errors
///
/// Connection failures, or a run in which no envelope was receipted.
pub fn run(args: &LoadgenArgs) -> CommandResult {
    let options = LoadOptions {
        server: args.server.server,
        fingerprint: args.server.fingerprint()?,
        traders: args.traders.max(1),
        rate: args.rate,
        bundle: args.bundle,
        duration: Duration::from_secs_f64(args.duration.max(0.1)),
        seed: args.seed,
        fund: !args.no_fund,
        progress: true,
        receipts: args.receipts.clone(),
    };
    let runtime = super::run::runtime()?;
    let Some(kind) = args.hostile else {
        let (report, server) = runtime.block_on(measured(&options, args.metrics, None))?;
        print!("{}", report.render());
        print!("{server}");
        return all_included(&report);
    };
    let mut baseline = None;
    if !args.no_baseline {
        println!("baseline: the honest load alone");
        let (report, server) = runtime.block_on(measured(&options, args.metrics, None))?;
        print!("{}", report.render());
        print!("{server}");
        all_included(&report)?;
        baseline = Some(report);
        // Let the baseline's batches clear before the next run.
        std::thread::sleep(Duration::from_secs(2));
        println!();
    }
    println!("with a hostile client: {}", kind.name());
    let hostile = Some((kind, args.hostile_rate));
    let (report, server) = runtime.block_on(measured(&options, args.metrics, hostile))?;
    print!("{}", report.render());
    print!("{server}");
    if let Some(baseline) = baseline {
        print!("{}", compare(&baseline, &report));
    }
    all_included(&report)
}

/// Appends each receipt from `receipts` to `path` as it comes, one hex line
/// and one `write` each (no buffering in the process: a killed run leaves
/// every receipt it wrote).
fn write_receipts(
    path: &std::path::Path,
    mut receipts: mpsc::UnboundedReceiver<Receipt>,
) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    while let Some(receipt) = receipts.blocking_recv() {
        let mut line = hex::encode(receipt.to_bytes());
        line.push('\n');
        file.write_all(line.as_bytes())?;
    }
    file.sync_all()
}

/// Appends `receipts` to `path`, one hex line each.
///
/// # Errors
///
/// The file cannot be opened or written.
pub fn append_receipts(path: &std::path::Path, receipts: &[Receipt]) -> CommandResult {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let mut text = String::with_capacity(receipts.len() * 209);
    for receipt in receipts {
        text.push_str(&hex::encode(receipt.to_bytes()));
        text.push('\n');
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(())
}

/// Every receipt whose batch's seal reached its connection proven
/// included, or a [`Failure::Mismatch`] saying how many are not (receipts
/// of batches whose seal never came are reported apart, unchecked).
fn all_included(report: &LoadReport) -> CommandResult {
    let checked = report.receipts.saturating_sub(report.unsealed);
    if report.included < checked {
        return Err(Failure::Mismatch(format!(
            "{} of {} receipts were not proven included in the seal of their batch",
            checked - report.included,
            checked
        ))
        .into());
    }
    Ok(())
}

/// One honest run (with the hostile client beside it, if any): its report
/// and the sequencer's side of it, rendered.
async fn measured(
    options: &LoadOptions,
    metrics: SocketAddr,
    hostile: Option<(HostileKind, u64)>,
) -> Result<(LoadReport, String), Box<dyn std::error::Error + Send + Sync>> {
    let before = scrape(metrics);
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let attacker = hostile.map(|(kind, rate)| {
        tokio::spawn(hostile::run(
            kind,
            rate,
            options.server,
            options.fingerprint,
            options.duration,
        ))
    });
    let report = load(options.clone()).await?;
    let mut rendered = String::new();
    if let (Some(attacker), Some((kind, rate))) = (attacker, hostile) {
        match attacker.await {
            Ok(Ok(hostile)) => rendered.push_str(&hostile.render(kind, rate)),
            Ok(Err(error)) => rendered.push_str(&format!("hostile client failed: {error}\n")),
            Err(error) => rendered.push_str(&format!("hostile client failed: {error}\n")),
        }
    }
    let wall = started.elapsed();
    let loadgen_cpu_s = process_cpu_seconds()
        .zip(cpu_before)
        .map_or(0.0, |(after, before)| after - before);
    if let (Some(before), Some(after)) = (before, scrape(metrics)) {
        let server = ServerSide {
            before,
            after,
            loadgen_cpu_s,
            wall,
        };
        rendered.push_str(&server.render());
    }
    Ok((report, rendered))
}

/// The honest traders with the hostile client against without it.
fn compare(baseline: &LoadReport, attacked: &LoadReport) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rate = |r: &LoadReport| r.orders_accepted as f64 / r.elapsed.as_secs_f64().max(1e-9);
    let refused = |r: &LoadReport| r.rejections.values().sum::<u64>();
    let line = |name: &str, without: f64, with: f64, unit: &str| {
        format!(
            "  {name:<22} {without:>10.2} {unit:<9} {with:>10.2} {unit:<9} {:>6.2}×\n",
            with / without.max(1e-9)
        )
    };
    let mut out = String::from("honest traders         without        with             ratio\n");
    out.push_str(&line(
        "accepted orders/s",
        rate(baseline),
        rate(attacked),
        "",
    ));
    for (name, p) in [("receipt p50", 0.5), ("receipt p99", 0.99)] {
        out.push_str(&line(
            name,
            ms(baseline.receipt_latency.quantile(p)),
            ms(attacked.receipt_latency.quantile(p)),
            "ms",
        ));
    }
    for (name, p) in [("close to result p50", 0.5), ("close to result p99", 0.99)] {
        out.push_str(&line(
            name,
            ms(baseline.close_to_result.quantile(p)),
            ms(attacked.close_to_result.quantile(p)),
            "ms",
        ));
    }
    out.push_str(&format!(
        "  honest refused         {:>10}           {:>10}\n",
        refused(baseline),
        refused(attacked)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU counter that went down between the scrapes (another replica
    /// answered the second one) gives no sequencer CPU figure, not a
    /// negative one.
    #[test]
    fn a_cpu_counter_that_went_down_is_reported_unknown() {
        let scrape = |cpu: f64| BTreeMap::from([("process_cpu_seconds_total".to_string(), cpu)]);
        let side = |before, after| ServerSide {
            before: scrape(before),
            after: scrape(after),
            loadgen_cpu_s: 1.0,
            wall: Duration::from_secs(2),
        };
        assert!(side(10.0, 11.0).render().contains("sequencer 0.50 cores"));
        let changed = side(10.0, 2.0).render();
        assert!(changed.contains("sequencer unknown"), "{changed}");
        assert!(!changed.contains('-'), "{changed}");
    }

    /// Receipts of a batch whose seal never reached the connection (the
    /// server stopped leading) are unchecked, not "not included"; a seal
    /// that came without the receipt's proof is a mismatch.
    #[test]
    fn receipts_without_their_seal_are_unchecked_not_missing() {
        let key = crate::envelope::SequencerKey::from_seed(&[3; 32]);
        let receipt = |e, c: u8| key.sign_receipt(e, &crate::envelope::Commitment([c; 32]));
        let receipts: BTreeMap<[u8; 32], Receipt> =
            [receipt(BatchId(1), 1), receipt(BatchId(2), 2)]
                .into_iter()
                .map(|r| (r.commitment.0, r))
                .collect();
        let inclusion = Inclusion {
            sequencer: key.public_key(),
            receipts,
            proofs: Vec::new(),
        };
        assert_eq!((inclusion.included(), inclusion.unsealed()), (0, 2));
        let mut report = LoadReport {
            receipts: 2,
            unsealed: 2,
            ..LoadReport::default()
        };
        assert!(all_included(&report).is_ok());
        assert!(report.render().contains("receipts unchecked"));
        report.unsealed = 1;
        assert!(all_included(&report).is_err());
    }

    /// The percentiles the report prints agree with those of the sorted
    /// samples to the histogram's 3 significant figures.
    #[test]
    fn latencies_give_the_percentiles_of_their_samples() {
        let empty = Latencies::default();
        assert!(empty.is_empty());
        assert_eq!(
            (empty.quantile(0.5), empty.max()),
            (Duration::ZERO, Duration::ZERO)
        );

        let samples: Vec<Duration> = (1..=10_000u64)
            .map(|i| Duration::from_micros(i * 37 % 9_973 + 100))
            .collect();
        let (mut one, mut other) = (Latencies::default(), Latencies::default());
        for (i, sample) in samples.iter().enumerate() {
            if i % 3 == 0 {
                one.record(*sample);
            } else {
                other.record(*sample);
            }
        }
        one.merge(&other);
        assert_eq!(one.len(), samples.len() as u64);
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.99] {
            let exact = sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64();
            let got = one.quantile(q).as_secs_f64();
            assert!(
                (got - exact).abs() <= exact * 1e-3 + 1e-6,
                "{q}: {got} against {exact}"
            );
        }
        let max = sorted[sorted.len() - 1].as_secs_f64();
        assert!((one.max().as_secs_f64() - max).abs() <= max * 1e-3);

        // A whole number of milliseconds reads back as such.
        let mut whole = Latencies::default();
        whole.record(Duration::from_millis(15));
        assert_eq!(
            (whole.quantile(0.99), whole.max()),
            (Duration::from_millis(15), Duration::from_millis(15))
        );

        // Beyond an hour counts as an hour, nothing is lost.
        one.record(Duration::from_secs(10_000));
        assert_eq!(one.len(), samples.len() as u64 + 1);
        assert!(one.max() >= Duration::from_secs(3_590));
    }
}

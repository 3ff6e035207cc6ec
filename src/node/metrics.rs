//! Prometheus metrics of the sequencer process.
//!
//! The metrics live in a [`prometheus_client`] registry held by [`Metrics`];
//! `GET /metrics` answers with its Prometheus text exposition (format 0.0.4,
//! [`CONTENT_TYPE`]). Its route is an [`axum::Router`] ([`router`]) that the
//! bounded HTTP server of [`crate::http`] serves, with the explorer's pages
//! merged in.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use tokio::sync::watch;

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Upper bounds of the buckets of the records a leader's Raft entry
/// carries.
pub const ENTRY_RECORDS_BUCKETS: [f64; 9] =
    [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1_000.0, 10_000.0];

/// Upper bounds of the batch-size buckets, in envelopes.
pub const SIZE_BUCKETS: [f64; 8] = [
    0.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0,
];

/// Upper bounds of the receipt-group buckets, in receipts (a group holds
/// at most [`RECEIPT_GROUP_MAX`](crate::envelope::RECEIPT_GROUP_MAX)).
pub const GROUP_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1_024.0, 4_096.0,
];

/// The `Content-Type` of `GET /metrics`: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A histogram with fixed buckets.
#[derive(Clone, Debug)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(
            bounds.iter().copied(),
        ))
    }

    /// Records a latency.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Records a value.
    pub fn observe(&self, value: f64) {
        self.0.observe(value);
    }
}

/// Reasons an envelope or request is refused, as metric labels, by wire code.
pub const REJECT_REASONS: [&str; 12] = [
    "other",
    "malformed",
    "batch_closed",
    "not_announced",
    "batch_full",
    "duplicate",
    "busy",
    "protocol",
    "connection_quota",
    "operator_only",
    "invalid_request",
    "internal",
];

/// The labels of `sealbatch_rejected_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// One of [`REJECT_REASONS`].
    pub reason: &'static str,
}

/// The labels of `sealbatch_replica_follower_lag_entries`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    /// The follower's replica id.
    pub replica: u64,
}

/// Every metric the node exports, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    /// Envelopes journaled and receipted.
    pub envelopes_accepted: Counter,
    /// Refusals by reason (one of [`REJECT_REASONS`]); count with
    /// [`Metrics::reject`].
    pub rejected: Family<RejectLabels, Counter>,
    /// Envelopes rejected after opening (bad AEAD, signature, funding, …).
    pub envelopes_invalid: Counter,
    /// Batches cleared.
    pub batches_cleared: Counter,
    /// Batches voided because they could not be processed (a bug).
    pub batches_voided: Counter,
    /// Sealed batches whose key request the custodian did not take (yet).
    pub keys_unavailable: Counter,
    /// Orders filled (at least one lot).
    pub orders_filled: Counter,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused (limits) since start.
    pub connections_refused: Counter,
    /// Connection attempts answered with a QUIC Retry (address validation).
    pub connections_retried: Counter,
    /// Handshakes dropped for taking longer than the handshake timeout.
    pub handshakes_timed_out: Counter,
    /// Seals sent to the keypers for their shares (first and repeated).
    pub key_requests: Counter,
    /// Batch keys combined from `t` keypers' shares.
    pub keys_combined: Counter,
    /// Keyper shares not taken (wrong, late, or for no awaited batch).
    pub key_shares_refused: Counter,
    /// Envelopes per sealed batch.
    pub batch_size: Histogram,
    /// Receipts per signed receipt group (envelopes made durable together).
    pub receipt_group_size: Histogram,
    /// Journal group commit (append + fdatasync) latency.
    pub fsync_seconds: Histogram,
    /// Seal journaled to result durable.
    pub seal_to_result_seconds: Histogram,
    /// Parallel opening of a batch (decrypt + verify).
    pub decrypt_seconds: Histogram,
    /// Funding, clearing and settlement of a batch.
    pub clearing_seconds: Histogram,
    /// A durable seal sent to the keypers to its key combined from `t`
    /// shares.
    pub key_release_seconds: Histogram,
    /// Submit received to its receipt released (durable, handed to the
    /// stream's task, which signs and sends it).
    pub receipt_seconds: Histogram,
    /// As a replica: 1 while this replica leads, else 0.
    pub replica_leading: Gauge,
    /// As a replica: the term it last led in (0: never).
    pub replica_term: Gauge,
    /// As a replica: the last LSN it applied or saw committed.
    pub replica_committed_lsn: Gauge,
    /// Keyper links welcomed (under a committee).
    pub keypers_connected: Gauge,
    /// Keyper links a replica that does not lead holds until it leads.
    pub keypers_standing_by: Gauge,
    /// As a replica, leader or follower: its Raft term now.
    pub replica_current_term: Gauge,
    /// As a replica: the index of the last entry of its Raft log.
    pub replica_log_index: Gauge,
    /// As a replica: the index of the last entry it applied to its journal.
    pub replica_applied_index: Gauge,
    /// As a replica: times it became the leader.
    pub replica_promotions: Counter,
    /// As a replica: times it stopped leading.
    pub replica_demotions: Counter,
    /// As the leader: a proposal handed to the log to its commit by a
    /// majority (each member's fsync and the round trips included).
    pub replica_commit_seconds: Histogram,
    /// As the leader: the records each entry it proposed carries.
    pub replica_entry_records: Histogram,
    /// As the leader: log entries each follower is behind its last entry
    /// (cleared when it stops leading).
    pub replica_follower_lag: Family<FollowerLabels, Gauge>,
    registry: Registry,
}

/// `help` as the registry takes it: it adds the final full stop itself.
fn help(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            envelopes_accepted: Counter::default(),
            rejected: Family::default(),
            envelopes_invalid: Counter::default(),
            batches_cleared: Counter::default(),
            batches_voided: Counter::default(),
            keys_unavailable: Counter::default(),
            orders_filled: Counter::default(),
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused: Counter::default(),
            connections_retried: Counter::default(),
            handshakes_timed_out: Counter::default(),
            key_requests: Counter::default(),
            keys_combined: Counter::default(),
            key_shares_refused: Counter::default(),
            batch_size: Histogram::new(&SIZE_BUCKETS),
            receipt_group_size: Histogram::new(&GROUP_BUCKETS),
            fsync_seconds: Histogram::new(&LATENCY_BUCKETS_S),
            seal_to_result_seconds: Histogram::new(&LATENCY_BUCKETS_S),
            decrypt_seconds: Histogram::new(&LATENCY_BUCKETS_S),
            clearing_seconds: Histogram::new(&LATENCY_BUCKETS_S),
            receipt_seconds: Histogram::new(&LATENCY_BUCKETS_S),
            key_release_seconds: Histogram::new(&LATENCY_BUCKETS_S),
            replica_leading: Gauge::default(),
            replica_term: Gauge::default(),
            replica_committed_lsn: Gauge::default(),
            keypers_connected: Gauge::default(),
            keypers_standing_by: Gauge::default(),
            replica_current_term: Gauge::default(),
            replica_log_index: Gauge::default(),
            replica_applied_index: Gauge::default(),
            replica_promotions: Counter::default(),
            replica_demotions: Counter::default(),
            replica_commit_seconds: Histogram::new(&LATENCY_BUCKETS_S),
            replica_entry_records: Histogram::new(&ENTRY_RECORDS_BUCKETS),
            replica_follower_lag: Family::default(),
            registry: Registry::default(),
        };
        // Every reason is exported from the start, at 0.
        for reason in REJECT_REASONS {
            drop(metrics.rejected.get_or_create(&RejectLabels { reason }));
        }
        let mut registry = Registry::default();
        // Counters are registered without their `_total`, which the
        // exposition adds.
        let counters = [
            (
                "sealbatch_envelopes_accepted",
                "Envelopes journaled and receipted.",
                &metrics.envelopes_accepted,
            ),
            (
                "sealbatch_envelopes_invalid",
                "Envelopes rejected after opening (AEAD, signature, market, band, funding).",
                &metrics.envelopes_invalid,
            ),
            (
                "sealbatch_batches_cleared",
                "Batches cleared and published.",
                &metrics.batches_cleared,
            ),
            (
                "sealbatch_batches_voided",
                "Batches voided because they could not be processed (a bug: nothing in them traded).",
                &metrics.batches_voided,
            ),
            (
                "sealbatch_keys_unavailable",
                "Sealed batches whose key the custodian could not take a request for yet (this clock before the close, no window holding the batch): each waits, asked again.",
                &metrics.keys_unavailable,
            ),
            (
                "sealbatch_key_requests",
                "Seals sent to the keyper committee for their shares (first and repeated).",
                &metrics.key_requests,
            ),
            (
                "sealbatch_keys_combined",
                "Batch keys combined from t keypers' shares.",
                &metrics.keys_combined,
            ),
            (
                "sealbatch_key_shares_refused",
                "Keyper shares not taken (wrong, late, or for no batch awaiting its key).",
                &metrics.key_shares_refused,
            ),
            (
                "sealbatch_orders_filled",
                "Orders that filled at least one lot.",
                &metrics.orders_filled,
            ),
            (
                "sealbatch_connections",
                "QUIC connections accepted.",
                &metrics.connections_total,
            ),
            (
                "sealbatch_connections_refused",
                "QUIC connection attempts refused by a limit.",
                &metrics.connections_refused,
            ),
            (
                "sealbatch_connections_retried",
                "QUIC connection attempts asked to prove their address (Retry).",
                &metrics.connections_retried,
            ),
            (
                "sealbatch_handshakes_timed_out",
                "QUIC handshakes dropped for not finishing within the handshake timeout.",
                &metrics.handshakes_timed_out,
            ),
            (
                "sealbatch_replica_promotions",
                "Times this replica became the leader.",
                &metrics.replica_promotions,
            ),
            (
                "sealbatch_replica_demotions",
                "Times this replica stopped leading.",
                &metrics.replica_demotions,
            ),
        ];
        for (name, text, counter) in counters {
            registry.register(name, help(text), counter.clone());
        }
        registry.register(
            "sealbatch_rejected",
            help("Requests refused, by reason."),
            metrics.rejected.clone(),
        );
        registry.register(
            "sealbatch_replica_follower_lag_entries",
            help("As the leader of a cluster: Raft log entries each follower is behind the leader's last entry."),
            metrics.replica_follower_lag.clone(),
        );
        registry.register(
            "sealbatch_connections_open",
            help("QUIC connections open."),
            metrics.connections_open.clone(),
        );
        let gauges = [
            (
                "sealbatch_replica_leading",
                "1 while this replica leads its cluster, else 0.",
                &metrics.replica_leading,
            ),
            (
                "sealbatch_replica_term",
                "The Raft term this replica last led in (0: never).",
                &metrics.replica_term,
            ),
            (
                "sealbatch_replica_committed_lsn",
                "The last journal LSN this replica applied or saw committed.",
                &metrics.replica_committed_lsn,
            ),
            (
                "sealbatch_keypers_connected",
                "Keyper links welcomed: keypers this sequencer serves its committee's log to and asks for shares.",
                &metrics.keypers_connected,
            ),
            (
                "sealbatch_keypers_standing_by",
                "Keyper links a replica that does not lead holds, welcomed the moment it leads.",
                &metrics.keypers_standing_by,
            ),
            (
                "sealbatch_replica_current_term",
                "The Raft term this replica is in now, leading or following.",
                &metrics.replica_current_term,
            ),
            (
                "sealbatch_replica_log_index",
                "The index of the last entry of this replica's Raft log.",
                &metrics.replica_log_index,
            ),
            (
                "sealbatch_replica_applied_index",
                "The index of the last Raft entry this replica applied to its journal: a follower has caught up when it reaches the leader's log index.",
                &metrics.replica_applied_index,
            ),
        ];
        for (name, text, gauge) in gauges {
            registry.register(name, help(text), gauge.clone());
        }
        let histograms = [
            (
                "sealbatch_batch_envelopes",
                "Envelopes per sealed batch.",
                &metrics.batch_size,
            ),
            (
                "sealbatch_receipt_group_envelopes",
                "Receipts per signed receipt group (envelopes made durable together).",
                &metrics.receipt_group_size,
            ),
            (
                "sealbatch_journal_fsync_seconds",
                "Journal group commit latency.",
                &metrics.fsync_seconds,
            ),
            (
                "sealbatch_seal_to_result_seconds",
                "From a batch's close to its result durable.",
                &metrics.seal_to_result_seconds,
            ),
            (
                "sealbatch_decrypt_seconds",
                "Parallel opening of a batch.",
                &metrics.decrypt_seconds,
            ),
            (
                "sealbatch_clearing_seconds",
                "Funding, clearing and settlement of a batch.",
                &metrics.clearing_seconds,
            ),
            (
                "sealbatch_receipt_seconds",
                "From a submission received to its receipt released for signing and sending (after the fsync).",
                &metrics.receipt_seconds,
            ),
            (
                "sealbatch_key_release_seconds",
                "From a durable seal sent to the keyper committee to its key combined from t shares.",
                &metrics.key_release_seconds,
            ),
            (
                "sealbatch_replica_commit_seconds",
                "As the leader of a cluster: from a proposal handed to the log to its commit by a majority.",
                &metrics.replica_commit_seconds,
            ),
            (
                "sealbatch_replica_entry_records",
                "As the leader of a cluster: the journal records each Raft entry it proposed carries.",
                &metrics.replica_entry_records,
            ),
        ];
        for (name, text, histogram) in histograms {
            registry.register(name, help(text), histogram.0.clone());
        }
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts one refusal with wire reason `code`.
    pub fn reject(&self, code: u8) {
        let index = usize::from(code).min(REJECT_REASONS.len() - 1);
        let reason = REJECT_REASONS[index];
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a `String` cannot fail, and the encoders fail only when
        // their writer does.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's own figures, read at each scrape; left out where the
/// platform does not give them.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if let Some(rss) = resident_bytes() {
            let gauge = ConstGauge::new(rss);
            let metric = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the sequencer process.",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        if let Some(cpu) = process_cpu_seconds() {
            let counter = ConstCounter::new(cpu);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time of the sequencer process, user and system.",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// CPU time this process has used, user plus system, in seconds
/// (`getrusage(RUSAGE_SELF)`).
#[must_use]
pub fn process_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` through the pointer, which is valid
    // for writes of that size; the struct is plain integers, so zeroed
    // memory is a valid value even if the call fails.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// This process's resident memory, from `/proc/self/statm` (Linux).
#[must_use]
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The metrics server's routes: `GET /metrics`; any other path is a 404.
/// Merge more routes into it to serve them on the same port.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}

/// Serves `GET /metrics` on `addr` until `shutdown` turns true (or its
/// sender is dropped), within the default [`HttpLimits`]; see
/// [`crate::http::serve`].
///
/// # Errors
///
/// The bind error.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let listener = crate::net::inherit::tcp_listener(addr).await?;
    serve(listener, router(metrics), HttpLimits::default(), shutdown).await
}

pub use crate::http::{CONNECTION_LIFETIME_MAX, CONNECTIONS_MAX, HttpLimits, serve, serve_router};

#[cfg(test)]
mod tests {
    use super::*;

    /// The Grafana dashboard in `deploy/` queries only series this
    /// exposition has, and the Prometheus configuration there scrapes the
    /// default metrics address.
    #[test]
    fn the_deployed_dashboard_reads_series_that_exist() {
        let metrics = Metrics::default();
        metrics.reject(6);
        // A family is served once it has a series (a leader's followers).
        metrics
            .replica_follower_lag
            .get_or_create(&FollowerLabels { replica: 2 })
            .set(0);
        let text = metrics.render();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/grafana/sealbatch.json"))
                .expect("the dashboard is JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(panels.len() >= 10);
        let mut queried = 0;
        for panel in panels {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("an expression");
                assert!(expr.contains("instance=~\"$instance\""), "{expr}");
                let names = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("sealbatch_") || w.starts_with("process_"));
                for name in names {
                    queried += 1;
                    assert!(
                        text.lines().any(|l| l.starts_with(name)),
                        "the dashboard queries {name}, which /metrics does not serve"
                    );
                }
            }
        }
        assert!(queried >= 30, "{queried} series queried");
        let default = crate::node::NodeConfig::default()
            .metrics_listen
            .expect("metrics on by default");
        assert!(include_str!("../../deploy/prometheus.yml").contains(&format!("- {default}\n")));
    }

    /// Every metric keeps the name, type and help text it had before the
    /// registry: dashboards and `loadgen` read them.
    #[test]
    fn exposition_keeps_every_name_and_help_text() {
        let metrics = Metrics::default();
        metrics.reject(6);
        metrics.reject(200);
        metrics.batch_size.observe(12.0);
        metrics
            .fsync_seconds
            .observe_duration(Duration::from_micros(700));
        metrics.connections_open.inc();
        metrics
            .replica_follower_lag
            .get_or_create(&FollowerLabels { replica: 3 })
            .set(17);
        let text = metrics.render();
        assert!(text.contains("sealbatch_replica_follower_lag_entries{replica=\"3\"} 17\n"));
        let expected_help = [
            "sealbatch_envelopes_accepted_total Envelopes journaled and receipted.",
            "sealbatch_rejected_total Requests refused, by reason.",
            "sealbatch_envelopes_invalid_total Envelopes rejected after opening (AEAD, signature, market, band, funding).",
            "sealbatch_batches_cleared_total Batches cleared and published.",
            "sealbatch_batches_voided_total Batches voided because they could not be processed (a bug: nothing in them traded).",
            "sealbatch_keys_unavailable_total Sealed batches whose key the custodian could not take a request for yet (this clock before the close, no window holding the batch): each waits, asked again.",
            "sealbatch_key_requests_total Seals sent to the keyper committee for their shares (first and repeated).",
            "sealbatch_keys_combined_total Batch keys combined from t keypers' shares.",
            "sealbatch_key_shares_refused_total Keyper shares not taken (wrong, late, or for no batch awaiting its key).",
            "sealbatch_orders_filled_total Orders that filled at least one lot.",
            "sealbatch_connections_open QUIC connections open.",
            "sealbatch_connections_total QUIC connections accepted.",
            "sealbatch_connections_refused_total QUIC connection attempts refused by a limit.",
            "sealbatch_connections_retried_total QUIC connection attempts asked to prove their address (Retry).",
            "sealbatch_handshakes_timed_out_total QUIC handshakes dropped for not finishing within the handshake timeout.",
            "sealbatch_replica_promotions_total Times this replica became the leader.",
            "sealbatch_replica_demotions_total Times this replica stopped leading.",
            "sealbatch_replica_leading 1 while this replica leads its cluster, else 0.",
            "sealbatch_replica_term The Raft term this replica last led in (0: never).",
            "sealbatch_replica_committed_lsn The last journal LSN this replica applied or saw committed.",
            "sealbatch_keypers_connected Keyper links welcomed: keypers this sequencer serves its committee's log to and asks for shares.",
            "sealbatch_keypers_standing_by Keyper links a replica that does not lead holds, welcomed the moment it leads.",
            "sealbatch_replica_current_term The Raft term this replica is in now, leading or following.",
            "sealbatch_replica_log_index The index of the last entry of this replica's Raft log.",
            "sealbatch_replica_applied_index The index of the last Raft entry this replica applied to its journal: a follower has caught up when it reaches the leader's log index.",
            "sealbatch_replica_follower_lag_entries As the leader of a cluster: Raft log entries each follower is behind the leader's last entry.",
            "process_resident_memory_bytes Resident memory of the sequencer process.",
            "process_cpu_seconds_total CPU time of the sequencer process, user and system.",
            "sealbatch_batch_envelopes Envelopes per sealed batch.",
            "sealbatch_receipt_group_envelopes Receipts per signed receipt group (envelopes made durable together).",
            "sealbatch_journal_fsync_seconds Journal group commit latency.",
            "sealbatch_seal_to_result_seconds From a batch's close to its result durable.",
            "sealbatch_decrypt_seconds Parallel opening of a batch.",
            "sealbatch_clearing_seconds Funding, clearing and settlement of a batch.",
            "sealbatch_receipt_seconds From a submission received to its receipt released for signing and sending (after the fsync).",
            "sealbatch_key_release_seconds From a durable seal sent to the keyper committee to its key combined from t shares.",
            "sealbatch_replica_commit_seconds As the leader of a cluster: from a proposal handed to the log to its commit by a majority.",
            "sealbatch_replica_entry_records As the leader of a cluster: the journal records each Raft entry it proposed carries.",
        ];
        let mut help: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .collect();
        let mut expected_help = expected_help.to_vec();
        help.sort_unstable();
        expected_help.sort_unstable();
        assert_eq!(help, expected_help, "{text}");

        for (name, kind) in [
            ("sealbatch_envelopes_accepted_total", "counter"),
            ("sealbatch_rejected_total", "counter"),
            ("sealbatch_connections_open", "gauge"),
            ("sealbatch_connections_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_cpu_seconds_total", "counter"),
            ("sealbatch_receipt_seconds", "histogram"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
        for reason in REJECT_REASONS {
            let value = if reason == "busy" || reason == "internal" {
                1
            } else {
                0
            };
            assert!(
                text.contains(&format!(
                    "sealbatch_rejected_total{{reason=\"{reason}\"}} {value}\n"
                )),
                "{reason}: {text}"
            );
        }
        assert!(text.contains("sealbatch_connections_open 1\n"));
        // The same buckets as before, cumulative, with +Inf.
        for line in [
            "sealbatch_batch_envelopes_bucket{le=\"0\"} 0",
            "sealbatch_batch_envelopes_bucket{le=\"10\"} 0",
            "sealbatch_batch_envelopes_bucket{le=\"100\"} 1",
            "sealbatch_batch_envelopes_bucket{le=\"100000\"} 1",
            "sealbatch_batch_envelopes_bucket{le=\"+Inf\"} 1",
            "sealbatch_batch_envelopes_sum 12.0",
            "sealbatch_batch_envelopes_count 1",
            "sealbatch_journal_fsync_seconds_bucket{le=\"0.0005\"} 0",
            "sealbatch_journal_fsync_seconds_bucket{le=\"0.001\"} 1",
            "sealbatch_journal_fsync_seconds_bucket{le=\"5\"} 1",
            "sealbatch_journal_fsync_seconds_count 1",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}: {text}");
        }
        let buckets = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}_bucket")))
                .count()
        };
        assert_eq!(buckets("sealbatch_batch_envelopes"), SIZE_BUCKETS.len() + 1);
        assert_eq!(
            buckets("sealbatch_receipt_seconds"),
            LATENCY_BUCKETS_S.len() + 1
        );
    }
}

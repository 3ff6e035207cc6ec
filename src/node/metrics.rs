//! Prometheus metrics: lock-free counters and fixed-bucket histograms, and a
//! minimal `/metrics` HTTP endpoint on a loopback port.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Upper bounds of the batch-size buckets, in envelopes.
pub const SIZE_BUCKETS: [f64; 8] = [
    0.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0,
];

/// A histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    /// Sum in micro-units (µs for latencies, units for sizes).
    sum_micros: AtomicU64,
    count: AtomicU64,
    scale: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    /// Records a latency.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Records a value.
    pub fn observe(&self, value: f64) {
        let index = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value * self.scale) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets.last().map_or(0, |b| b.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
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

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    /// Envelopes journaled and receipted.
    pub envelopes_accepted: AtomicU64,
    /// Refusals by wire reason code (index into [`REJECT_REASONS`]).
    pub rejected: [AtomicU64; 12],
    /// Envelopes rejected after opening (bad AEAD, signature, funding, …).
    pub envelopes_invalid: AtomicU64,
    /// Batches cleared.
    pub batches_cleared: AtomicU64,
    /// Batches voided because they could not be processed (a bug).
    pub batches_voided: AtomicU64,
    /// Orders filled (at least one lot).
    pub orders_filled: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused (limits) since start.
    pub connections_refused: AtomicU64,
    /// Connection attempts answered with a QUIC Retry (address validation).
    pub connections_retried: AtomicU64,
    /// Handshakes dropped for taking longer than the handshake timeout.
    pub handshakes_timed_out: AtomicU64,
    /// Envelopes per sealed batch.
    pub batch_size: Histogram,
    /// Journal group commit (append + fdatasync) latency.
    pub fsync_seconds: Histogram,
    /// Seal journaled to result durable.
    pub seal_to_result_seconds: Histogram,
    /// Parallel opening of a batch (decrypt + verify).
    pub decrypt_seconds: Histogram,
    /// Funding, clearing and settlement of a batch.
    pub clearing_seconds: Histogram,
    /// Submit received to its receipt released (durable, handed to the
    /// stream's task, which signs and sends it).
    pub receipt_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            envelopes_accepted: AtomicU64::new(0),
            rejected: Default::default(),
            envelopes_invalid: AtomicU64::new(0),
            batches_cleared: AtomicU64::new(0),
            batches_voided: AtomicU64::new(0),
            orders_filled: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_retried: AtomicU64::new(0),
            handshakes_timed_out: AtomicU64::new(0),
            batch_size: Histogram::new(&SIZE_BUCKETS, 1.0),
            fsync_seconds: Histogram::new(&LATENCY_BUCKETS_S, 1e6),
            seal_to_result_seconds: Histogram::new(&LATENCY_BUCKETS_S, 1e6),
            decrypt_seconds: Histogram::new(&LATENCY_BUCKETS_S, 1e6),
            clearing_seconds: Histogram::new(&LATENCY_BUCKETS_S, 1e6),
            receipt_seconds: Histogram::new(&LATENCY_BUCKETS_S, 1e6),
        }
    }
}

impl Metrics {
    /// Counts one refusal with wire reason `code`.
    pub fn reject(&self, code: u8) {
        let index = usize::from(code).min(REJECT_REASONS.len() - 1);
        self.rejected[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "sealbatch_envelopes_accepted_total",
            "Envelopes journaled and receipted.",
            self.envelopes_accepted.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP sealbatch_rejected_total Requests refused, by reason.\n# TYPE sealbatch_rejected_total counter"
        );
        for (reason, count) in REJECT_REASONS.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "sealbatch_rejected_total{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "sealbatch_envelopes_invalid_total",
            "Envelopes rejected after opening (AEAD, signature, market, band, funding).",
            self.envelopes_invalid.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sealbatch_batches_cleared_total",
            "Batches cleared and published.",
            self.batches_cleared.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sealbatch_batches_voided_total",
            "Batches voided because they could not be processed (a bug: nothing in them traded).",
            self.batches_voided.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sealbatch_orders_filled_total",
            "Orders that filled at least one lot.",
            self.orders_filled.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP sealbatch_connections_open QUIC connections open.\n# TYPE sealbatch_connections_open gauge\nsealbatch_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "sealbatch_connections_total",
            "QUIC connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sealbatch_connections_refused_total",
            "QUIC connection attempts refused by a limit.",
            self.connections_refused.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sealbatch_connections_retried_total",
            "QUIC connection attempts asked to prove their address (Retry).",
            self.connections_retried.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sealbatch_handshakes_timed_out_total",
            "QUIC handshakes dropped for not finishing within the handshake timeout.",
            self.handshakes_timed_out.load(Ordering::Relaxed),
        );
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory of the sequencer process.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        if let Some(cpu) = process_cpu_seconds() {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total CPU time of the sequencer process, user and system.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu:.3}"
            );
        }
        self.batch_size.render(
            "sealbatch_batch_envelopes",
            "Envelopes per sealed batch.",
            &mut out,
        );
        self.fsync_seconds.render(
            "sealbatch_journal_fsync_seconds",
            "Journal group commit latency.",
            &mut out,
        );
        self.seal_to_result_seconds.render(
            "sealbatch_seal_to_result_seconds",
            "From a batch's close to its result durable.",
            &mut out,
        );
        self.decrypt_seconds.render(
            "sealbatch_decrypt_seconds",
            "Parallel opening of a batch.",
            &mut out,
        );
        self.clearing_seconds.render(
            "sealbatch_clearing_seconds",
            "Funding, clearing and settlement of a batch.",
            &mut out,
        );
        self.receipt_seconds.render(
            "sealbatch_receipt_seconds",
            "From a submission received to its receipt released for signing and sending (after the fsync).",
            &mut out,
        );
        out
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

/// Serves `GET /metrics` on `addr` until `shutdown` fires. Anything else gets
/// a 404; a request line longer than 4 KiB or slower than 5 s is dropped.
///
/// # Errors
///
/// The bind error.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: std::sync::Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let metrics = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            else {
                return;
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics") {
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

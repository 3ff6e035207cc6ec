//! The QUIC side: accepts connections within the configured bounds, reads
//! frames from each bidirectional stream and hands requests to the core;
//! writes replies and pushes back, batching whatever is queued into one write.
//!
//! A peer that sends garbage, an oversized frame, or too many streams is
//! closed with an application error code; nothing it does reaches another
//! connection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use tokio::sync::{mpsc, watch};

use crate::wire::{self, ClientMessage, FrameDecoder, FrameError, ReasonCode, ServerMessage};

use super::admission::{Admitted, StreamAdmission};
use super::config::LimitsConfig;
use super::handle::{ConnId, Control, DriverHandle, Outbound, Request, RequestBody, SessionId};
use super::metrics::Metrics;
use super::now_ms;
use super::schedule::RequestBudget;
use crate::envelope::SequencerKey;
use crate::signed::{CHANNEL_BINDING_LABEL, ChannelBinding};

pub use super::close::{
    CLOSE_FRAME_TOO_LARGE, CLOSE_PROTOCOL_ERROR, CLOSE_SHUTDOWN, CLOSE_UNAVAILABLE,
};

/// Retry-after sent with `Busy` when the core's request queue is full.
pub const QUEUE_FULL_RETRY_MS: u32 = 50;

/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 64 << 10;
/// Bytes gathered into one write towards a client.
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// Handshakes in progress above which every new one must first prove its
/// address (a QUIC Retry, which costs the server no state): a flood of
/// Initials that never answer then holds no slots at all.
pub const HANDSHAKES_UNVALIDATED_MAX: u64 = 64;

pub(crate) struct Counters {
    next_conn: AtomicU64,
    next_session: AtomicU64,
    per_ip: Mutex<BTreeMap<IpAddr, usize>>,
    /// Handshakes started and not yet finished or timed out.
    handshaking: AtomicU64,
    /// Each address's budget of new connections.
    new_per_ip: Mutex<BTreeMap<IpAddr, RequestBudget>>,
}

/// Addresses whose new-connection budget is remembered before the full
/// (idle) ones are forgotten.
const NEW_CONNECTION_RATES_KEPT: usize = 4096;

impl Counters {
    /// Nothing counted yet.
    #[must_use]
    pub(crate) fn new() -> Arc<Counters> {
        Arc::new(Counters {
            next_conn: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            per_ip: Mutex::new(BTreeMap::new()),
            handshaking: AtomicU64::new(0),
            new_per_ip: Mutex::new(BTreeMap::new()),
        })
    }

    /// Whether a new connection from `ip` (`validated`: it proved it
    /// receives at its address) may start its handshake: the bounds on
    /// connections open, on handshakes under way, on new connections per
    /// address per second and on connections per address, the same for
    /// native QUIC and WebTransport. Admitted, it holds a place in the
    /// counts until the [`ConnectionSlot`] is dropped.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        validated: bool,
        limits: &LimitsConfig,
        metrics: &Arc<Metrics>,
    ) -> Admission {
        let open = metrics.connections_open.get() as usize;
        if open >= limits.connections_max {
            metrics.connections_refused.inc();
            return Admission::Refuse;
        }
        // Under load, or while many handshakes are unfinished, make
        // unvalidated addresses prove they can receive before they get any
        // state.
        let handshaking = self.handshaking.load(Ordering::Relaxed);
        if (open >= limits.connections_max / 2 || handshaking >= HANDSHAKES_UNVALIDATED_MAX)
            && !validated
        {
            metrics.connections_retried.inc();
            return Admission::Retry;
        }
        {
            // New connections per address are paced before any handshake
            // work (a TLS handshake costs the server ~0.3 ms of CPU).
            let mut rates = self.new_per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if rates.len() > NEW_CONNECTION_RATES_KEPT {
                rates.retain(|_, budget| !budget.is_full(now));
            }
            let budget = rates.entry(ip).or_insert_with(|| {
                RequestBudget::new(limits.new_connections_per_ip_per_second_max, now)
            });
            if !budget.take(now) {
                metrics.connections_refused.inc();
                return Admission::Refuse;
            }
        }
        {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= limits.connections_per_ip_max {
                metrics.connections_refused.inc();
                return Admission::Refuse;
            }
            *count += 1;
        }
        metrics.connections_open.inc();
        metrics.connections_total.inc();
        Admission::Accept(ConnectionSlot {
            ip,
            counters: Arc::clone(self),
            metrics: Arc::clone(metrics),
        })
    }

    /// A new connection's number.
    pub(crate) fn next_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a handshake under way until the guard is dropped.
    pub(crate) fn handshake(self: &Arc<Self>) -> Handshaking {
        self.handshaking.fetch_add(1, Ordering::Relaxed);
        Handshaking(Arc::clone(self))
    }
}

/// A handshake under way, counted until dropped.
pub(crate) struct Handshaking(Arc<Counters>);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`Counters::admit`] decides for a new connection.
pub(crate) enum Admission {
    /// Refused before any handshake work.
    Refuse,
    /// Asked to prove its address first (a QUIC retry).
    Retry,
    /// Admitted: its place in the counts.
    Accept(ConnectionSlot),
}

/// Accepts connections until `shutdown` turns true.
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    core: DriverHandle,
    limits: LimitsConfig,
    metrics: Arc<Metrics>,
    keypers: Arc<super::keypers::KeyperHub>,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            // Existing connections keep being served until the node closes
            // the endpoint, after the core has finished the batches in flight.
            _ = shutdown.changed() => break,
        };
        let ip = incoming.remote_address().ip();
        let slot = match counters.admit(ip, incoming.remote_address_validated(), &limits, &metrics)
        {
            Admission::Refuse => {
                incoming.refuse();
                continue;
            }
            Admission::Retry => {
                let _ = incoming.retry();
                continue;
            }
            Admission::Accept(slot) => slot,
        };
        let conn_id = counters.next_conn();
        let core = core.clone();
        let metrics = Arc::clone(&metrics);
        let counters = Arc::clone(&counters);
        let shutdown = shutdown.clone();
        let keypers = Arc::clone(&keypers);
        tokio::spawn(async move {
            // Released however the task ends, a panic included, so that the
            // counts never leak and lock addresses out.
            let _slot = slot;
            let handshaking = counters.handshake();
            let handshake_timeout = Duration::from_millis(limits.handshake_timeout_ms);
            let handshake = tokio::time::timeout(handshake_timeout, incoming).await;
            drop(handshaking);
            match handshake {
                Ok(Ok(connection)) if super::keypers::is_keyper_connection(&connection) => {
                    let channel = channel_binding(&connection);
                    super::keypers::serve_keyper(
                        connection,
                        keypers,
                        core.control.clone(),
                        channel,
                        shutdown,
                    )
                    .await;
                }
                Ok(Ok(connection)) => {
                    connection_task(connection, conn_id, core, limits, &counters, shutdown).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, "handshake failed"),
                Err(_) => {
                    metrics.handshakes_timed_out.inc();
                    tracing::debug!("handshake not finished in time; dropped");
                }
            }
        });
    }
}

/// One connection's place in the open and per-address counts, given back
/// when dropped.
pub(crate) struct ConnectionSlot {
    ip: IpAddr,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
        let mut per_ip = self
            .counters
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// What a signed query (or a keyper's hello) on this connection is bound
/// to. A TLS 1.3 session always exports; without it nothing verifies.
fn channel_binding(connection: &quinn::Connection) -> Option<ChannelBinding> {
    let mut binding = [0u8; 32];
    connection
        .export_keying_material(&mut binding, CHANNEL_BINDING_LABEL, b"")
        .ok()
        .map(|()| ChannelBinding(binding))
}

async fn connection_task(
    connection: quinn::Connection,
    conn: ConnId,
    core: DriverHandle,
    limits: LimitsConfig,
    counters: &Counters,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::debug!(conn, remote = %connection.remote_address(), "connection");
    let channel = channel_binding(&connection);
    loop {
        let (send, recv) = tokio::select! {
            stream = connection.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(_) => return,
            },
            // No new streams; the open ones finish their work.
            _ = shutdown.changed() => return,
        };
        let ip = connection.remote_address().ip().to_canonical();
        let stream = ClientStream {
            send,
            recv,
            connection: connection.clone(),
        };
        if !open_session(stream, conn, ip, &core, limits, counters, channel) {
            return;
        }
    }
}

/// One bidirectional stream of a client's connection, native QUIC or
/// WebTransport: a session of the wire protocol.
pub(crate) struct ClientStream<S, R, C> {
    /// Where the replies go.
    pub send: S,
    /// Where the requests come from.
    pub recv: R,
    /// The connection it belongs to (closed on a framing error).
    pub connection: C,
}

/// Opens a session for `stream` with the core and starts its reader and
/// writer; false if the core is gone.
pub(crate) fn open_session<S: ClientSend, R: ClientRecv, C: ClientConnection>(
    stream: ClientStream<S, R, C>,
    conn: ConnId,
    ip: IpAddr,
    core: &DriverHandle,
    limits: LimitsConfig,
    counters: &Counters,
    channel: Option<ChannelBinding>,
) -> bool {
    let session = counters.next_session.fetch_add(1, Ordering::Relaxed);
    let (out_tx, out_rx) = mpsc::channel(limits.outbound_queue_max);
    if core
        .control
        .send(Control::Open {
            session,
            conn,
            ip,
            out: out_tx.clone(),
        })
        .is_err()
    {
        return false;
    }
    tokio::spawn(writer(stream.send, out_rx, Arc::clone(&core.key)));
    tokio::spawn(reader(
        stream.recv,
        session,
        core.clone(),
        out_tx,
        stream.connection,
        channel,
        limits,
    ));
    true
}

/// The receiving half of a client's stream.
pub(crate) trait ClientRecv: Send + 'static {
    /// Reads some bytes into `buf`: how many, `None` once the client
    /// finished its side, an error if the stream or connection is lost.
    fn read_chunk(
        &mut self,
        buf: &mut [u8],
    ) -> impl std::future::Future<Output = Result<Option<usize>, ()>> + Send;
}

/// The sending half of a client's stream.
pub(crate) trait ClientSend: Send + 'static {
    /// Writes all of `buf`; an error if the stream or connection is lost.
    fn write_all_bytes(
        &mut self,
        buf: &[u8],
    ) -> impl std::future::Future<Output = Result<(), ()>> + Send;
    /// Finishes this side of the stream.
    fn finish_stream(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// A client's connection, as a stream's reader closes it.
pub(crate) trait ClientConnection: Send + Sync + 'static {
    /// Closes it with an application error code and a reason.
    fn close_with(&self, code: u32, reason: &[u8]);
}

impl ClientRecv for quinn::RecvStream {
    async fn read_chunk(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ()> {
        self.read(buf).await.map_err(|_| ())
    }
}

impl ClientSend for quinn::SendStream {
    async fn write_all_bytes(&mut self, buf: &[u8]) -> Result<(), ()> {
        self.write_all(buf).await.map_err(|_| ())
    }
    async fn finish_stream(&mut self) {
        let _ = self.finish();
    }
}

impl ClientConnection for quinn::Connection {
    fn close_with(&self, code: u32, reason: &[u8]) {
        self.close(code.into(), reason);
    }
}

impl ClientRecv for wtransport::RecvStream {
    async fn read_chunk(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ()> {
        self.read(buf).await.map_err(|_| ())
    }
}

impl ClientSend for wtransport::SendStream {
    async fn write_all_bytes(&mut self, buf: &[u8]) -> Result<(), ()> {
        self.write_all(buf).await.map_err(|_| ())
    }
    async fn finish_stream(&mut self) {
        let _ = self.finish().await;
    }
}

impl ClientConnection for wtransport::Connection {
    fn close_with(&self, code: u32, reason: &[u8]) {
        self.close(wtransport::VarInt::from_u32(code), reason);
    }
}

/// Reads frames and forwards requests; closes the connection on a framing
/// error.
async fn reader<R: ClientRecv, C: ClientConnection>(
    mut recv: R,
    session: SessionId,
    core: DriverHandle,
    out: mpsc::Sender<Outbound>,
    connection: C,
    channel: Option<ChannelBinding>,
    limits: LimitsConfig,
) {
    let frame_timeout = Duration::from_millis(limits.frame_timeout_ms);
    let mut decoder: FrameDecoder<ClientMessage> = FrameDecoder::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    // Submissions past twice the connection's quota for a batch are refused
    // on the stream; the core keeps the exact count of what it takes.
    let mut admission = StreamAdmission::new(
        core.key.public_key(),
        channel,
        limits.requests_per_stream_per_second_max,
        limits
            .envelopes_per_connection_per_batch_max
            .saturating_mul(2),
        Instant::now(),
    );
    // When a frame is under way, the deadline by which it must be complete.
    let mut frame_deadline: Option<Instant> = None;
    // Requests queued for the driver: after the client finishes its side,
    // the driver answers these before it drops the session.
    let mut queued: u64 = 0;
    loop {
        let read = recv.read_chunk(&mut chunk);
        let n = match frame_deadline {
            None => read.await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), read).await {
                Ok(read) => read,
                Err(_) => {
                    tracing::debug!(
                        session,
                        "closing a connection that sends a frame too slowly"
                    );
                    connection.close_with(CLOSE_PROTOCOL_ERROR, b"frame not completed in time");
                    let _ = core.control.send(Control::Close {
                        session,
                        after: None,
                    });
                    return;
                }
            },
        };
        let n = match n {
            Ok(Some(n)) => n,
            Ok(None) if !decoder.is_at_boundary() => {
                // The client finished its side inside a frame: that frame
                // can never be completed.
                tracing::debug!(session, "stream finished inside a frame");
                connection.close_with(CLOSE_PROTOCOL_ERROR, b"stream finished inside a frame");
                let _ = core.control.send(Control::Close {
                    session,
                    after: None,
                });
                return;
            }
            // Finished: every complete request before it is answered, then
            // the server finishes its side.
            Ok(None) => break,
            // Reset or connection lost: nobody reads the answers.
            Err(_) => {
                let _ = core.control.send(Control::Close {
                    session,
                    after: None,
                });
                return;
            }
        };
        decoder.extend(&chunk[..n]);
        let mut completed = false;
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    completed = true;
                    let received = Instant::now();
                    let request_id = message.request_id();
                    let body = match admission.admit(message, received, now_ms(), &core.schedules) {
                        Admitted::Reply(reply) => {
                            let _ = out.try_send(Outbound::Message(reply));
                            continue;
                        }
                        Admitted::Forward(body) => body,
                    };
                    let submit = matches!(body, RequestBody::Submit { .. });
                    let request = Request {
                        session,
                        body,
                        received,
                    };
                    match core.requests.try_send(request) {
                        Ok(()) => queued += 1,
                        Err(TrySendError::Full(_)) => {
                            let message = "the sequencer's queue is full".to_string();
                            let reply = if submit {
                                ServerMessage::Rejected {
                                    request_id,
                                    code: ReasonCode::Busy,
                                    next_open: core.schedules.open_batch_at(now_ms()),
                                    retry_after_ms: QUEUE_FULL_RETRY_MS,
                                    message,
                                }
                            } else {
                                ServerMessage::Error {
                                    request_id,
                                    code: ReasonCode::Busy,
                                    message,
                                }
                            };
                            let _ = out.try_send(Outbound::Message(reply));
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let code = match error {
                        FrameError::Oversized { .. } => CLOSE_FRAME_TOO_LARGE,
                        _ => CLOSE_PROTOCOL_ERROR,
                    };
                    tracing::debug!(session, %error, "closing a connection for a bad frame");
                    let reason = error.to_string();
                    connection.close_with(code, &reason.as_bytes()[..reason.len().min(200)]);
                    let _ = core.control.send(Control::Close {
                        session,
                        after: None,
                    });
                    return;
                }
            }
        }
        // A frame is under way iff bytes are buffered. Its clock starts
        // with the read that began it (a read that completed a frame began
        // the one now buffered) and stops when it completes.
        frame_deadline = match (decoder.is_at_boundary(), completed) {
            (true, _) => None,
            (false, true) => Some(Instant::now() + frame_timeout),
            (false, false) => frame_deadline.or_else(|| Some(Instant::now() + frame_timeout)),
        };
    }
    let _ = core.control.send(Control::Close {
        session,
        after: Some(queued),
    });
}

/// Writes queued messages, as many as are waiting in one write, signing
/// the receipts among them.
async fn writer<S: ClientSend>(
    mut send: S,
    mut out: mpsc::Receiver<Outbound>,
    key: Arc<SequencerKey>,
) {
    let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES);
    while let Some(outbound) = out.recv().await {
        buf.clear();
        if wire::encode(&outbound.into_message(&key), &mut buf).is_err() {
            continue;
        }
        while buf.len() < WRITE_BATCH_BYTES {
            match out.try_recv() {
                Ok(outbound) => {
                    let _ = wire::encode(&outbound.into_message(&key), &mut buf);
                }
                Err(_) => break,
            }
        }
        if send.write_all_bytes(&buf).await.is_err() {
            return;
        }
    }
    // The session ended: the client closed it, the core dropped it (too
    // slow), or the server stops.
    send.finish_stream().await;
}

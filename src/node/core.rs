//! The core thread: owns the [`Sequencer`] and the journal, and moves bytes,
//! time, fsync completions and opened batches in and receipts and batch events
//! out. Connections talk to it through two channels: a bounded one for client
//! requests (full means `Busy`, answered at once) and an unbounded one for
//! control messages that must not be lost (a session opening or closing, an
//! opened batch, shutdown).
//!
//! One turn of the loop handles every message that is waiting, then appends
//! every journal write the sequencer asked for and makes them durable with one
//! fsync (group commit) before any receipt goes out.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, select};
use tokio::sync::mpsc;

use crate::envelope::{Commitment, Rejection, SequencerKey, ShapedEnvelope};
use crate::journal::{FaultyStorage, FsStorage, Journal, Lsn};
use crate::market::{AccountId, AssetId};
use crate::sequencer::{
    BatchOutcome, Checkpoint, EnvelopeStatus, Event, JournalWrite, OpToken, OpenedJob, Sequencer,
    SubmitError, SubmitToken, Transfer,
};
use crate::types::BatchId;
use crate::wire::{
    self, BatchCleared, BatchSealed, ClientMessage, MarketInfo, MarketLine, OwnEnvelope,
    ReasonCode, Schedule, ServerMessage,
};

use super::metrics::Metrics;
use super::schedule::ScheduleCache;

/// The storage the node's journal writes through: the file system, with
/// faults injected only when a test asks for them
/// ([`run_with_faults`](super::run_with_faults)).
pub type NodeStorage = FaultyStorage<FsStorage>;

/// Identifies one bidirectional stream (a client session).
pub type SessionId = u64;
/// Identifies one QUIC connection.
pub type ConnId = u64;

/// Most messages handled in one turn before the journal is flushed.
pub const TURN_MESSAGES_MAX: usize = 8192;
/// Batches whose per-connection submission counts are remembered.
const QUOTA_BATCHES_KEPT: u64 = 64;

/// A control message to the core thread.
#[derive(Debug)]
pub enum Control {
    /// A session opened; replies and pushes go to `out`.
    Open {
        /// The session.
        session: SessionId,
        /// Its connection.
        conn: ConnId,
        /// The connection's remote address.
        ip: IpAddr,
        /// Where its messages go.
        out: mpsc::Sender<Outbound>,
    },
    /// A session closed.
    Close {
        /// The session.
        session: SessionId,
    },
    /// A batch finished opening on the rayon pool.
    Opened(OpenedJob, Duration),
    /// The journal writer made every record up to this LSN durable, with
    /// one group commit that took this long.
    Durable(Lsn, Duration),
    /// The journal writer failed; nothing more can be made durable.
    JournalFailed(CoreError),
    /// Stop accepting, finish the batches in flight, flush and exit.
    Shutdown,
}

/// A client request to the core thread.
#[derive(Debug)]
pub struct Request {
    /// The session it came on.
    pub session: SessionId,
    /// The request.
    pub body: RequestBody,
    /// When it was read.
    pub received: Instant,
}

/// What a [`Request`] asks.
#[derive(Debug)]
pub enum RequestBody {
    /// A client message, as decoded.
    Message(ClientMessage),
    /// A submission whose envelope the connection's task already
    /// shape-checked ([`ShapedEnvelope::for_header_batch`]), so the core
    /// thread does not decode its point again.
    Submit {
        /// The client's request id.
        request_id: u64,
        /// The envelope, or why its shape is refused.
        envelope: Result<ShapedEnvelope, Rejection>,
    },
}

/// What the core sends towards one session's stream.
#[derive(Debug)]
pub enum Outbound {
    /// A message, sent as is.
    Message(ServerMessage),
    /// A durable envelope's receipt, to be signed by the stream's task (off
    /// the core thread) and sent as [`ServerMessage::Receipt`].
    Receipt {
        /// The submission's request id.
        request_id: u64,
        /// The envelope's batch.
        e: BatchId,
        /// Its commitment.
        commitment: Commitment,
    },
}

impl Outbound {
    /// The message to send, signing a receipt with `key`.
    #[must_use]
    pub fn into_message(self, key: &SequencerKey) -> ServerMessage {
        match self {
            Outbound::Message(message) => message,
            Outbound::Receipt {
                request_id,
                e,
                commitment,
            } => ServerMessage::Receipt {
                request_id,
                receipt: key.sign_receipt(e, &commitment).to_bytes(),
            },
        }
    }
}

/// The connection side's handle to the core thread.
#[derive(Clone, Debug)]
pub struct CoreHandle {
    /// Client requests (bounded).
    pub requests: Sender<Request>,
    /// Control messages (unbounded).
    pub control: Sender<Control>,
    /// The sequencer's key, with which each stream's task signs the receipts
    /// the core releases ([`Outbound::Receipt`]).
    pub key: Arc<SequencerKey>,
    /// The signed schedule the core keeps current, from which each stream's
    /// task answers `GetSchedule`.
    pub schedules: Arc<ScheduleCache>,
}

struct Session {
    conn: ConnId,
    ip: IpAddr,
    out: mpsc::Sender<Outbound>,
    subscribed: bool,
    /// Commitments this session submitted, per batch (kept for subscribers
    /// until the batch is published).
    own: BTreeMap<BatchId, Vec<Commitment>>,
}

struct Pending {
    session: SessionId,
    request_id: u64,
    received: Instant,
}

/// Work for the journal writer thread, in order.
#[derive(Debug)]
enum WriterJob {
    /// Append a record.
    Append(JournalWrite),
    /// Once everything before is durable, write this checkpoint (and hand
    /// its pruning bound to the pruning thread, if there is one).
    Checkpoint(Box<Checkpoint>),
}

/// The core loop's state.
pub struct Core {
    sequencer: Sequencer,
    journal: Option<Journal<NodeStorage>>,
    writes: Option<Sender<WriterJob>>,
    checkpoint_every: u64,
    prune: bool,
    cleared_since_checkpoint: u64,
    failed: Option<CoreError>,
    /// The last LSN handed to the writer, and the last it made durable.
    sent_lsn: Lsn,
    durable_lsn: Lsn,
    /// Since when a write handed to the writer has waited to be durable.
    waiting_since: Option<Instant>,
    stall_max: Duration,
    intake_delay_max: Duration,
    ip_quota: u32,
    /// Envelopes submitted per (batch, address), for the per-address quota.
    submitted_by_ip: BTreeMap<(BatchId, IpAddr), u32>,
    schedules: Arc<ScheduleCache>,
    /// Batches cleared since start: the schedule's reference prices change
    /// with each.
    cleared_total: u64,
    key: SequencerKey,
    metrics: Arc<Metrics>,
    demo: bool,
    quota: u32,
    sessions: BTreeMap<SessionId, Session>,
    submitted: BTreeMap<(BatchId, ConnId), u32>,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    sealed_at: BTreeMap<BatchId, Instant>,
    control_tx: Sender<Control>,
    shutting_down: bool,
    pool: Arc<rayon::ThreadPool>,
}

/// The journal writer thread: appends every write that is waiting, makes them
/// durable with one fsync, reports the durable LSN, and repeats; a checkpoint
/// is written after the writes before it are durable. Returns the journal
/// when the core hangs up.
fn journal_writer(
    mut journal: Journal<NodeStorage>,
    jobs: &Receiver<WriterJob>,
    control: &Sender<Control>,
    pruner: Option<&Sender<Lsn>>,
) -> Journal<NodeStorage> {
    while let Ok(first) = jobs.recv() {
        let start = Instant::now();
        let mut result = Ok(());
        let mut checkpoint = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                WriterJob::Append(write) => result = append(&mut journal, &write),
                WriterJob::Checkpoint(c) => {
                    checkpoint = Some(c);
                    break;
                }
            }
            if result.is_err() {
                break;
            }
            next = jobs.try_recv().ok();
        }
        let result = result.and_then(|()| journal.sync().map_err(CoreError::from));
        let message = match result {
            Ok(lsn) => Control::Durable(lsn, start.elapsed()),
            Err(error) => Control::JournalFailed(error),
        };
        let failed = matches!(message, Control::JournalFailed(_));
        if control.send(message).is_err() || failed {
            break;
        }
        if let Some(checkpoint) = checkpoint
            && let Some(prunable_below) = write_checkpoint(&mut journal, &checkpoint)
            && let Some(pruner) = pruner
        {
            let _ = pruner.send(prunable_below);
        }
    }
    journal
}

/// Writes `checkpoint` (every record below its LSN is durable by now);
/// returns below which LSN segments may be pruned. A failure is logged, not
/// fatal: recovery then starts from an older checkpoint or the genesis
/// record.
fn write_checkpoint(journal: &mut Journal<NodeStorage>, checkpoint: &Checkpoint) -> Option<Lsn> {
    if !checkpoint.fits() {
        tracing::warn!(
            lsn = checkpoint.lsn,
            balances = checkpoint.balances.len(),
            unfinished = checkpoint.unfinished.len(),
            "checkpoint not written: the state is larger than a checkpoint may hold"
        );
        return None;
    }
    let start = Instant::now();
    let payload = checkpoint.encode();
    match journal.write_checkpoint(checkpoint.lsn, checkpoint.replay_from, &payload, false) {
        Ok(written) => {
            tracing::info!(
                lsn = checkpoint.lsn,
                replay_from = checkpoint.replay_from,
                bytes = written.bytes,
                ms = start.elapsed().as_millis() as u64,
                "checkpoint written"
            );
            written.prunable_below
        }
        Err(error) => {
            tracing::warn!(%error, lsn = checkpoint.lsn, "checkpoint not written");
            None
        }
    }
}

/// The pruning thread: removes the segments below each LSN it is sent, off
/// the journal writer's path (unlinking a large file can take tens of
/// milliseconds). A failure is logged; the segments stay.
fn journal_pruner(mut storage: NodeStorage, floors: &Receiver<Lsn>) {
    while let Ok(floor) = floors.recv() {
        let start = Instant::now();
        match crate::journal::prune_segments_below(&mut storage, floor) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                below = floor,
                segments_removed = removed,
                ms = start.elapsed().as_millis() as u64,
                "journal pruned"
            ),
            Err(error) => tracing::warn!(%error, "journal pruning failed"),
        }
    }
}

fn append(journal: &mut Journal<NodeStorage>, write: &JournalWrite) -> Result<(), CoreError> {
    let lsn = journal.append(write.kind, &write.payload)?;
    if lsn == write.lsn {
        Ok(())
    } else {
        Err(CoreError::LsnMismatch {
            expected: write.lsn,
            got: lsn,
        })
    }
}

/// Niceness of the threads that open batches: they yield the CPU to the core
/// thread and the connections, so receipts stay fast while a batch decrypts.
pub const OPEN_POOL_NICENESS: libc::c_int = 10;

/// The thread pool that opens batches: one thread per core, each lowered to
/// [`OPEN_POOL_NICENESS`].
///
/// # Errors
///
/// The pool could not be built.
pub fn open_pool() -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("sealbatch-open-{i}"))
        .start_handler(|_| {
            // SAFETY: setpriority has no memory-safety preconditions; on
            // Linux, PRIO_PROCESS with who = 0 names the calling thread. A
            // failure leaves the default priority, which is harmless.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, OPEN_POOL_NICENESS);
            }
        })
        .build()
}

/// Unix milliseconds now.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why the core stopped.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The journal failed: nothing more can be made durable.
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    /// The sequencer failed.
    #[error("sequencer: {0}")]
    Sequencer(#[from] crate::sequencer::SequencerError),
    /// The core and the journal disagree on LSNs.
    #[error("journal gave LSN {got}, the sequencer expected {expected}")]
    LsnMismatch {
        /// What the sequencer expected.
        expected: u64,
        /// What the journal gave.
        got: u64,
    },
    /// The journal writer thread could not start.
    #[error("starting the journal writer thread: {0}")]
    Thread(std::io::Error),
    /// The journal writer thread is gone (it failed earlier).
    #[error("the journal writer thread stopped")]
    WriterGone,
    /// The journal made nothing durable for longer than
    /// `journal_stall_max_ms`: the storage hangs.
    #[error("the journal made nothing durable for {} ms", waited.as_millis())]
    JournalStalled {
        /// How long the oldest write waited.
        waited: Duration,
    },
}

impl CoreError {
    /// Whether the storage failed (the journal could not make records
    /// durable), as opposed to a bug: the process exits with
    /// [`EXIT_STORAGE`](super::EXIT_STORAGE) rather than
    /// [`EXIT_INTERNAL`](super::EXIT_INTERNAL).
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            CoreError::Journal(_) | CoreError::JournalStalled { .. } | CoreError::WriterGone
        )
    }
}

/// How often the core checks that the journal is not hanging.
const STALL_CHECK: Duration = Duration::from_millis(100);

/// What the core needs besides the sequencer, its journal and its key.
#[derive(Debug)]
pub struct CoreOptions {
    /// Where to count.
    pub metrics: Arc<Metrics>,
    /// Demo mode: deposits over the wire are accepted.
    pub demo: bool,
    /// Envelopes one connection may submit to one batch.
    pub envelopes_per_connection_per_batch_max: u32,
    /// The core's own control channel (opened batches and journal
    /// completions come back on it).
    pub control_tx: Sender<Control>,
    /// The pool that opens batches ([`open_pool`]).
    pub pool: Arc<rayon::ThreadPool>,
    /// Cleared batches between checkpoints (0: none).
    pub checkpoint_every_batches: u64,
    /// Remove segments below every kept checkpoint.
    pub prune_journal: bool,
    /// Longest a journal write may wait to become durable before the core
    /// stops (fail-stop: the storage hangs).
    pub journal_stall_max: Duration,
    /// Longest a submission may wait in the request queue; beyond it, it is
    /// refused as busy (admission control).
    pub intake_delay_max: Duration,
    /// Envelopes the connections of one IP address may submit to one batch.
    pub envelopes_per_ip_per_batch_max: u32,
    /// Where the core keeps the signed schedule current.
    pub schedules: Arc<ScheduleCache>,
}

impl Core {
    /// A core over a recovered sequencer and its journal.
    #[must_use]
    pub fn new(
        sequencer: Sequencer,
        journal: Journal<NodeStorage>,
        key: SequencerKey,
        options: CoreOptions,
    ) -> Core {
        let CoreOptions {
            metrics,
            demo,
            envelopes_per_connection_per_batch_max,
            control_tx,
            pool,
            checkpoint_every_batches,
            prune_journal,
            journal_stall_max,
            intake_delay_max,
            envelopes_per_ip_per_batch_max,
            schedules,
        } = options;
        Core {
            sequencer,
            journal: Some(journal),
            writes: None,
            checkpoint_every: checkpoint_every_batches,
            prune: prune_journal,
            cleared_since_checkpoint: 0,
            failed: None,
            sent_lsn: 0,
            durable_lsn: 0,
            waiting_since: None,
            stall_max: journal_stall_max,
            intake_delay_max,
            ip_quota: envelopes_per_ip_per_batch_max,
            submitted_by_ip: BTreeMap::new(),
            schedules,
            cleared_total: 0,
            key,
            metrics,
            demo,
            quota: envelopes_per_connection_per_batch_max,
            sessions: BTreeMap::new(),
            submitted: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_token: 0,
            sealed_at: BTreeMap::new(),
            control_tx,
            shutting_down: false,
            pool,
        }
    }

    /// Runs until shutdown (after finishing every batch in flight) or a fatal
    /// error.
    ///
    /// # Errors
    ///
    /// [`CoreError`]: the journal or the sequencer failed; the process must
    /// stop (a restart recovers from the journal).
    pub fn run(
        mut self,
        requests: Receiver<Request>,
        control: Receiver<Control>,
    ) -> Result<(), CoreError> {
        let (writes, writes_rx) = crossbeam_channel::unbounded();
        let journal = self.journal.take();
        let control_tx = self.control_tx.clone();
        let (prune_tx, prune_rx) = crossbeam_channel::unbounded();
        let pruner = match (&journal, self.prune) {
            (Some(journal), true) => {
                let storage = journal.storage().clone();
                Some(
                    std::thread::Builder::new()
                        .name("sealbatch-prune".into())
                        .spawn(move || journal_pruner(storage, &prune_rx))
                        .map_err(CoreError::Thread)?,
                )
            }
            _ => None,
        };
        let prune_tx = pruner.is_some().then_some(prune_tx);
        let writer = std::thread::Builder::new()
            .name("sealbatch-journal".into())
            .spawn(move || {
                journal.map(|j| journal_writer(j, &writes_rx, &control_tx, prune_tx.as_ref()))
            })
            .map_err(CoreError::Thread)?;
        self.writes = Some(writes);
        // Work left from recovery (a sealed batch to open, a genesis record).
        let result = self.serve(&requests, &control);
        // Hang up on the writer; it returns once everything sent is written,
        // and the pruner once the writer (its only sender) is gone. After a
        // failure they are not waited for: the writer may hang in an fsync
        // that never returns, and the process is about to exit anyway.
        self.writes = None;
        if result.is_ok() {
            let _ = writer.join();
            if let Some(pruner) = pruner {
                let _ = pruner.join();
            }
        }
        result
    }

    fn serve(
        &mut self,
        requests: &Receiver<Request>,
        control: &Receiver<Control>,
    ) -> Result<(), CoreError> {
        self.turn()?;
        loop {
            let now = now_ms();
            // Wake at least every STALL_CHECK to see whether the journal hangs.
            let wait = self
                .sequencer
                .poll_timeout()
                .map_or(STALL_CHECK, |due| {
                    Duration::from_millis(due.saturating_sub(now))
                })
                .min(STALL_CHECK);
            select! {
                recv(control) -> message => match message {
                    Ok(message) => self.control(message),
                    Err(_) => self.shutting_down = true,
                },
                recv(requests) -> message => if let Ok(request) = message {
                    self.request_after_control(request, control);
                },
                default(wait) => {}
            }
            for _ in 0..TURN_MESSAGES_MAX {
                if let Ok(message) = control.try_recv() {
                    self.control(message);
                } else if let Ok(request) = requests.try_recv() {
                    self.request_after_control(request, control);
                } else {
                    break;
                }
            }
            if let Some(since) = self.waiting_since
                && since.elapsed() > self.stall_max
            {
                tracing::error!(
                    waited_ms = since.elapsed().as_millis() as u64,
                    durable_lsn = self.durable_lsn,
                    waiting_lsn = self.sent_lsn,
                    "the journal made nothing durable for too long; stopping at once"
                );
                self.fail(CoreError::JournalStalled {
                    waited: since.elapsed(),
                });
            }
            if let Some(error) = self.failed.take() {
                return Err(error);
            }
            self.turn()?;
            if self.shutting_down
                && self.sequencer.batches_pending() == 0
                && self.sequencer.is_idle()
            {
                tracing::info!("every batch in flight is cleared and durable; core stops");
                if self.checkpoint_every > 0 {
                    self.checkpoint()?;
                }
                return Ok(());
            }
        }
    }

    /// Handles a request after every control message already sent: a
    /// session's `Open` is sent before its stream is read, so it is in the
    /// control channel by the time any of its requests is received.
    fn request_after_control(&mut self, request: Request, control: &Receiver<Control>) {
        while let Ok(message) = control.try_recv() {
            self.control(message);
        }
        self.request(request);
    }

    /// Records the first fatal error; the loop returns it at the end of
    /// this turn, before anything else is sent.
    fn fail(&mut self, error: CoreError) {
        if self.failed.is_none() {
            self.failed = Some(error);
        }
    }

    fn control(&mut self, message: Control) {
        match message {
            Control::Open {
                session,
                conn,
                ip,
                out,
            } => {
                self.sessions.insert(
                    session,
                    Session {
                        conn,
                        ip,
                        out,
                        subscribed: false,
                        own: BTreeMap::new(),
                    },
                );
            }
            Control::Close { session } => {
                self.sessions.remove(&session);
            }
            Control::Opened(job, took) => {
                self.metrics.decrypt_seconds.observe_duration(took);
                let start = Instant::now();
                // A batch that cannot be processed is voided inside; an
                // error here is a job the sequencer never handed out (a bug
                // of this shell): stop rather than go on.
                if let Err(error) = self.sequencer.handle_opened(now_ms(), job) {
                    tracing::error!(%error, "an opened batch does not fit the sequencer; stopping");
                    self.fail(error.into());
                }
                self.metrics
                    .clearing_seconds
                    .observe_duration(start.elapsed());
            }
            Control::Durable(lsn, took) => {
                self.metrics.fsync_seconds.observe_duration(took);
                self.durable_lsn = lsn;
                self.waiting_since = (lsn < self.sent_lsn).then(Instant::now);
                if let Err(error) = self.sequencer.handle_journal_durable(now_ms(), lsn) {
                    tracing::error!(%error, "a journal completion does not fit the sequencer; stopping");
                    self.fail(error.into());
                }
            }
            Control::JournalFailed(error) => {
                tracing::error!(%error, "the journal failed; stopping at once");
                self.fail(error);
            }
            Control::Shutdown => {
                tracing::info!("shutdown: refusing new envelopes, finishing batches in flight");
                self.shutting_down = true;
            }
        }
    }

    fn send(&mut self, session: SessionId, message: ServerMessage) {
        self.send_outbound(session, Outbound::Message(message));
    }

    fn send_outbound(&mut self, session: SessionId, outbound: Outbound) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        if s.out.try_send(outbound).is_err() {
            // The client does not read fast enough (or is gone): drop the
            // session; its connection task closes the stream.
            tracing::warn!(session, "outbound queue full; closing the session");
            self.sessions.remove(&session);
        }
    }

    fn refuse(
        &mut self,
        session: SessionId,
        request_id: u64,
        (code, next_open, retry_after_ms): (ReasonCode, u64, u32),
        message: String,
    ) {
        self.metrics.reject(code.to_byte());
        self.send(
            session,
            ServerMessage::Rejected {
                request_id,
                code,
                next_open,
                retry_after_ms,
                message,
            },
        );
    }

    /// A submission: shutdown and quota checks, then the sequencer.
    fn submit(
        &mut self,
        session: SessionId,
        request_id: u64,
        envelope: Result<ShapedEnvelope, Rejection>,
        received: Instant,
        now: u64,
    ) {
        let open = self.sequencer.open_batch_at(now);
        if self.shutting_down {
            self.refuse(
                session,
                request_id,
                (ReasonCode::Busy, open, 0),
                "the sequencer is shutting down".into(),
            );
            return;
        }
        // Admission control: a request that waited too long in the queue is
        // refused before it costs a journal write, with the wait as the
        // retry-after, so that traders back off until the queue drains.
        let waited = received.elapsed();
        if waited > self.intake_delay_max {
            let retry_after_ms = u32::try_from(waited.as_millis()).unwrap_or(u32::MAX);
            self.refuse(
                session,
                request_id,
                (ReasonCode::Busy, open, retry_after_ms),
                format!(
                    "the sequencer is behind: this envelope waited {} ms to be read",
                    waited.as_millis()
                ),
            );
            return;
        }
        let Some((conn, ip)) = self.sessions.get(&session).map(|s| (s.conn, s.ip)) else {
            return;
        };
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(rejection) => {
                let error = SubmitError::Malformed(rejection);
                self.refuse(
                    session,
                    request_id,
                    submit_code(&error, open),
                    error.to_string(),
                );
                return;
            }
        };
        let e = envelope.batch();
        let used = self.submitted.get(&(e, conn)).copied().unwrap_or(0);
        if used >= self.quota {
            self.refuse(
                session,
                request_id,
                (ReasonCode::ConnectionQuota, open, 0),
                format!("this connection submitted {used} envelopes to batch {e}"),
            );
            return;
        }
        let from_ip = self.submitted_by_ip.get(&(e, ip)).copied().unwrap_or(0);
        if from_ip >= self.ip_quota {
            self.refuse(
                session,
                request_id,
                (ReasonCode::ConnectionQuota, open, 0),
                format!("this address submitted {from_ip} envelopes to batch {e}"),
            );
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        match self
            .sequencer
            .handle_submit_shaped(now, SubmitToken(token), envelope)
        {
            Ok(commitment) => {
                *self.submitted.entry((e, conn)).or_insert(0) += 1;
                *self.submitted_by_ip.entry((e, ip)).or_insert(0) += 1;
                self.pending.insert(
                    token,
                    Pending {
                        session,
                        request_id,
                        received,
                    },
                );
                if let Some(s) = self.sessions.get_mut(&session)
                    && s.subscribed
                {
                    s.own.entry(e).or_default().push(commitment);
                }
            }
            Err(error) => {
                self.refuse(
                    session,
                    request_id,
                    submit_code(&error, open),
                    error.to_string(),
                );
            }
        }
    }

    fn request(&mut self, request: Request) {
        let Request {
            session,
            body,
            received,
        } = request;
        let now = now_ms();
        let message = match body {
            RequestBody::Submit {
                request_id,
                envelope,
            } => {
                self.submit(session, request_id, envelope, received, now);
                return;
            }
            RequestBody::Message(ClientMessage::Submit {
                request_id,
                envelope,
            }) => {
                let envelope = ShapedEnvelope::for_header_batch(envelope);
                self.submit(session, request_id, envelope, received, now);
                return;
            }
            RequestBody::Message(message) => message,
        };
        match message {
            ClientMessage::Submit { .. } => {}
            ClientMessage::GetSchedule { request_id } => {
                let reply = match self.refresh_schedule(now) {
                    Ok(()) => self
                        .schedules
                        .answer(request_id)
                        .map(ServerMessage::Schedule),
                    Err(error) => Some(ServerMessage::Error {
                        request_id,
                        code: ReasonCode::Internal,
                        message: error.to_string(),
                    }),
                };
                if let Some(reply) = reply {
                    self.send(session, reply);
                }
            }
            ClientMessage::Subscribe { request_id } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.subscribed = true;
                }
                self.send(session, ServerMessage::Ack { request_id });
            }
            ClientMessage::GetAccount {
                request_id,
                account,
            } => {
                let balances = self
                    .sequencer
                    .ledger()
                    .balances_of(&AccountId(account))
                    .into_iter()
                    .take(wire::ACCOUNT_BALANCES_MAX)
                    .map(|(asset, amount)| (asset.0, amount))
                    .collect();
                self.send(
                    session,
                    ServerMessage::Account {
                        request_id,
                        account,
                        balances,
                    },
                );
            }
            ClientMessage::Deposit {
                request_id,
                account,
                asset,
                amount,
            }
            | ClientMessage::Withdraw {
                request_id,
                account,
                asset,
                amount,
            } => {
                let credit = matches!(message, ClientMessage::Deposit { .. });
                self.operation(
                    Pending {
                        session,
                        request_id,
                        received,
                    },
                    Transfer {
                        account: AccountId(account),
                        asset: AssetId(asset),
                        amount,
                    },
                    credit,
                );
            }
        }
    }

    /// An operator deposit (`credit`) or withdrawal over the wire: demo mode
    /// only; answered once durable.
    fn operation(&mut self, request: Pending, transfer: Transfer, credit: bool) {
        let Pending {
            session,
            request_id,
            ..
        } = request;
        if !self.demo {
            self.metrics.reject(ReasonCode::OperatorOnly.to_byte());
            self.send(
                session,
                ServerMessage::Error {
                    request_id,
                    code: ReasonCode::OperatorOnly,
                    message: "deposits and withdrawals over the wire are for demo mode only".into(),
                },
            );
            return;
        }
        self.next_token += 1;
        let token = OpToken(self.next_token);
        let Transfer {
            account,
            asset,
            amount,
        } = transfer;
        let done = if credit {
            self.sequencer.handle_deposit(token, account, asset, amount)
        } else {
            self.sequencer
                .handle_withdrawal(token, account, asset, amount)
        };
        match done {
            Ok(()) => {
                self.pending.insert(token.0, request);
            }
            Err(error) => self.send(
                session,
                ServerMessage::Error {
                    request_id,
                    code: ReasonCode::InvalidRequest,
                    message: error.to_string(),
                },
            ),
        }
    }

    /// Makes the cached schedule the one for `now`, signing a new one only
    /// when a batch opened or cleared since the last.
    fn refresh_schedule(&mut self, now: u64) -> Result<(), crate::sequencer::SequencerError> {
        let open = self.sequencer.open_batch_at(now);
        if !self.schedules.is_current(open, self.cleared_total) {
            let schedule = self.schedule(0, now)?;
            self.schedules.store(schedule, self.cleared_total);
        }
        Ok(())
    }

    /// The signed schedule as of `now`.
    fn schedule(
        &self,
        request_id: u64,
        now: u64,
    ) -> Result<Schedule, crate::sequencer::SequencerError> {
        let genesis = self.sequencer.genesis();
        let open = self.sequencer.open_batch_at(now);
        let ahead = self
            .sequencer
            .limits()
            .announce_ahead
            .min(wire::SCHEDULE_BATCH_KEYS_MAX as u64 - 1);
        let mut batch_keys = Vec::new();
        for e in open..=open + ahead {
            batch_keys.push((e, self.sequencer.batch_public_key(e)?.to_bytes()));
        }
        let markets = genesis
            .markets
            .iter()
            .map(|m| MarketInfo {
                id: m.id.0,
                base_asset: m.base.0,
                quote_asset: m.quote.0,
                tick_size: m.tick_size,
                lot_size: m.lot_size,
                band_min: m.band_min,
                band_max: m.band_max,
                reference_price: self
                    .sequencer
                    .references()
                    .get(&m.id)
                    .copied()
                    .unwrap_or(m.initial_price),
                fee_bps: m.fee_bps,
            })
            .collect();
        let mut schedule = Schedule {
            request_id,
            genesis_ms: genesis.schedule.genesis_ms,
            batch_length_ms: genesis.schedule.batch_length_ms,
            open_batch: open,
            sequencer_key: genesis.sequencer.to_bytes(),
            batch_keys,
            markets,
            signature: [0; 64],
        };
        schedule.signature = self
            .key
            .sign_message(&wire::schedule_signing_message(&schedule));
        Ok(schedule)
    }

    /// Timeouts, journal flush with one fsync, jobs out, events delivered.
    fn turn(&mut self) -> Result<(), CoreError> {
        let now = now_ms();
        self.sequencer.handle_timeout(now)?;
        self.flush_writes()?;
        while let Some(job) = self.sequencer.poll_job() {
            self.metrics.batch_size.observe(job.len() as f64);
            let control = self.control_tx.clone();
            self.pool.spawn(move || {
                let start = Instant::now();
                let opened = job.run();
                let _ = control.send(Control::Opened(opened, start.elapsed()));
            });
        }
        while let Some(event) = self.sequencer.poll_event() {
            self.deliver(event);
        }
        // After the events: a batch that opened or cleared this turn shows
        // in the schedule the connections answer with.
        if let Err(error) = self.refresh_schedule(now) {
            tracing::warn!(%error, "the schedule could not be made");
        }
        if self.checkpoint_every > 0 && self.cleared_since_checkpoint >= self.checkpoint_every {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn to_writer(&self, job: WriterJob) -> Result<(), CoreError> {
        let sent = self.writes.as_ref().is_some_and(|w| w.send(job).is_ok());
        if sent {
            Ok(())
        } else {
            Err(CoreError::WriterGone)
        }
    }

    /// Sends the writer every journal write the sequencer asked for.
    fn flush_writes(&mut self) -> Result<(), CoreError> {
        while let Some(write) = self.sequencer.poll_journal() {
            if write.kind == crate::journal::RecordKind::Seal
                && let Some(e) = write
                    .payload
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
            {
                self.sealed_at.insert(u64::from_le_bytes(e), Instant::now());
            }
            if self.waiting_since.is_none() {
                self.waiting_since = Some(Instant::now());
            }
            self.sent_lsn = write.lsn;
            self.to_writer(WriterJob::Append(write))?;
        }
        Ok(())
    }

    /// Sends the writer a checkpoint of everything journaled so far.
    fn checkpoint(&mut self) -> Result<(), CoreError> {
        self.flush_writes()?;
        self.cleared_since_checkpoint = 0;
        self.to_writer(WriterJob::Checkpoint(Box::new(self.sequencer.checkpoint())))
    }

    fn deliver(&mut self, event: Event) {
        match event {
            Event::Receipt {
                token,
                e,
                commitment,
            } => {
                let Some(p) = self.pending.remove(&token.0) else {
                    return;
                };
                self.metrics.envelopes_accepted.inc();
                self.metrics
                    .receipt_seconds
                    .observe_duration(p.received.elapsed());
                self.send_outbound(
                    p.session,
                    Outbound::Receipt {
                        request_id: p.request_id,
                        e,
                        commitment,
                    },
                );
            }
            Event::BatchVoided { e, reason } => {
                self.metrics.batches_voided.inc();
                tracing::error!(
                    batch = e,
                    %reason,
                    "batch could not be processed and is voided: nothing in it trades (a bug; please report it)"
                );
            }
            Event::OperationDurable { token } => {
                if let Some(p) = self.pending.remove(&token.0) {
                    self.send(
                        p.session,
                        ServerMessage::Ack {
                            request_id: p.request_id,
                        },
                    );
                }
            }
            Event::BatchOpened {
                e,
                public_key,
                close_ms,
            } => {
                let message = ServerMessage::BatchOpened {
                    e,
                    public_key: public_key.to_bytes(),
                    close_ms,
                };
                self.broadcast(|_| Some(message.clone()));
            }
            Event::BatchSealed { seal, tree } => {
                let e = seal.e;
                let bytes = seal.to_bytes();
                self.broadcast(|session| {
                    let proofs = session
                        .own
                        .get(&e)
                        .map(|own| {
                            own.iter()
                                .take(wire::SUBSCRIBER_ENVELOPES_MAX)
                                .filter_map(|c| {
                                    let index = tree.position(c)?;
                                    Some((c.0, tree.proof(index)?.to_bytes()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(ServerMessage::BatchSealed(BatchSealed {
                        seal: bytes,
                        proofs,
                    }))
                });
            }
            Event::BatchCleared { outcome } => {
                self.cleared_since_checkpoint += 1;
                self.cleared_total += 1;
                let e = outcome.e;
                self.account_batch(&outcome);
                let markets: Vec<MarketLine> = outcome
                    .markets
                    .iter()
                    .map(|m| MarketLine {
                        market: m.market.0,
                        price: m.price,
                        volume: m.volume,
                        imbalance: m.imbalance,
                    })
                    .collect();
                let accepted = outcome
                    .envelopes
                    .iter()
                    .filter(|o| matches!(o.status, EnvelopeStatus::Accepted { .. }))
                    .count() as u32;
                self.broadcast(|session| {
                    let own = session
                        .own
                        .get(&e)
                        .map(|own| own_outcomes(&outcome, own))
                        .unwrap_or_default();
                    Some(ServerMessage::BatchCleared(BatchCleared {
                        e,
                        root: outcome.root.0,
                        batch_secret: outcome.batch_secret,
                        envelopes: outcome.envelopes.len() as u32,
                        accepted,
                        markets: markets.clone(),
                        own,
                    }))
                });
                for session in self.sessions.values_mut() {
                    session.own.remove(&e);
                }
                self.submitted = self
                    .submitted
                    .split_off(&(e.saturating_sub(QUOTA_BATCHES_KEPT), 0));
                let kept_from = e.saturating_sub(QUOTA_BATCHES_KEPT);
                self.submitted_by_ip.retain(|&(b, _), _| b >= kept_from);
            }
        }
    }

    fn account_batch(&mut self, outcome: &BatchOutcome) {
        self.metrics.batches_cleared.inc();
        self.metrics
            .orders_filled
            .inc_by(outcome.fills.len() as u64);
        let invalid = outcome
            .envelopes
            .iter()
            .filter(|o| matches!(o.status, EnvelopeStatus::Rejected { .. }))
            .count();
        self.metrics.envelopes_invalid.inc_by(invalid as u64);
        if let Some(sealed) = self.sealed_at.remove(&outcome.e) {
            self.metrics
                .seal_to_result_seconds
                .observe_duration(sealed.elapsed());
        }
        tracing::debug!(
            e = outcome.e,
            envelopes = outcome.envelopes.len(),
            fills = outcome.fills.len(),
            "batch cleared"
        );
    }

    /// Sends each subscribed session what `make` returns for it.
    fn broadcast(&mut self, mut make: impl FnMut(&Session) -> Option<ServerMessage>) {
        let mut slow = Vec::new();
        for (&id, session) in &self.sessions {
            if !session.subscribed {
                continue;
            }
            if let Some(message) = make(session)
                && session.out.try_send(Outbound::Message(message)).is_err()
            {
                slow.push(id);
            }
        }
        for id in slow {
            tracing::warn!(session = id, "subscriber too slow; closing the session");
            self.sessions.remove(&id);
        }
    }
}

/// The outcome lines of the commitments in `own`.
fn own_outcomes(outcome: &BatchOutcome, own: &[Commitment]) -> Vec<OwnEnvelope> {
    own.iter()
        .take(wire::SUBSCRIBER_ENVELOPES_MAX)
        .filter_map(|c| {
            let index = outcome
                .envelopes
                .binary_search_by(|o| o.commitment.cmp(c))
                .ok()?;
            let line = outcome.envelopes.get(index)?;
            let (status, detail) = match line.status {
                EnvelopeStatus::Accepted { .. } => (0, 0),
                EnvelopeStatus::Rejected { code, detail } => (code, detail),
            };
            let start = outcome
                .fills
                .partition_point(|f| (f.envelope as usize) < index);
            let fills = outcome.fills[start..]
                .iter()
                .take_while(|f| f.envelope as usize == index)
                .take(wire::FILLS_MAX)
                .map(|f| (f.index, f.filled))
                .collect();
            Some(OwnEnvelope {
                commitment: c.0,
                status,
                detail,
                fills,
            })
        })
        .collect()
}

/// The wire's code, `next_open` and retry-after for a refused submission.
fn submit_code(error: &SubmitError, open: BatchId) -> (ReasonCode, u64, u32) {
    match error {
        SubmitError::Malformed(_) => (ReasonCode::Malformed, open, 0),
        SubmitError::BatchClosed { next_open, .. } => (ReasonCode::BatchClosed, *next_open, 0),
        SubmitError::NotAnnounced { next_open, .. } => (ReasonCode::NotAnnounced, *next_open, 0),
        SubmitError::BatchFull { next_open, .. } => (ReasonCode::BatchFull, *next_open, 0),
        SubmitError::Duplicate { .. } => (ReasonCode::Duplicate, open, 0),
        SubmitError::Busy { retry_after_ms } => (
            ReasonCode::Busy,
            open,
            u32::try_from(*retry_after_ms).unwrap_or(u32::MAX),
        ),
    }
}

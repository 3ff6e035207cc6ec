//! The driver thread: owns the [`Sequencer`] (the sans-IO core) and drives it
//! with bytes, time, journal completions and opened batches, and sends its
//! receipts and batch events out. Connections talk to it through two
//! channels ([`super::handle`]): a bounded one for client requests (full
//! means `Busy`, answered at once) and an unbounded one for control messages
//! that must not be lost (a session opening or closing, an opened batch,
//! shutdown). The journal's [`JournalWriter`] thread reports on a third.
//!
//! One turn of the loop handles every message that is waiting, then hands
//! the writer every journal write the sequencer asked for; the writer makes
//! them durable with one fsync (group commit) before any receipt goes out.
//!
//! Layout: this file is the loop, the journal and the opening pool;
//! [`sessions`](self) the connected streams, their quotas and broadcasts;
//! `requests` what each client request does; `publish` the translation of the
//! sequencer's events into wire messages.

mod publish;
pub mod replica;
mod requests;
mod sessions;

use crate::codec::Encode;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::envelope::SequencerKey;
use crate::journal::{JournalWriter, Lsn, WriterEvent};
use crate::sequencer::{Event, Sequencer, SequencerError};
use crate::types::BatchId;

use super::handle::{ConnId, Control, Request, SessionId};
use super::metrics::Metrics;
use super::schedule::{RequestBudget, ScheduleCache};
use super::{NodeStorage, now_ms};
use sessions::{Pending, Session};

/// Most messages handled in one turn before the journal is flushed.
pub const TURN_MESSAGES_MAX: usize = 8192;

/// Longest a replica that leads waits, when asked to stop, for what it
/// proposed to be committed.
const REPLICA_STOP_MAX: Duration = Duration::from_secs(2);

/// How often the driver checks that the journal is not hanging.
const STALL_CHECK: Duration = Duration::from_millis(100);

/// Why the driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The journal failed: nothing more can be made durable.
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    /// The sequencer failed.
    #[error("sequencer: {0}")]
    Sequencer(#[from] SequencerError),
    /// The writer and the sequencer disagree on LSNs.
    #[error("journal gave LSN {got}, the sequencer expected {expected}")]
    LsnMismatch {
        /// What the sequencer expected.
        expected: Lsn,
        /// What the journal gave.
        got: Lsn,
    },
    /// The journal writer thread is gone (it failed earlier).
    #[error("the journal writer thread stopped")]
    WriterGone,
    /// The replicated log failed.
    #[error("replication: {0}")]
    Replication(String),
    /// The journal made nothing durable for longer than
    /// `journal_stall_max_ms`: the storage hangs.
    #[error("the journal made nothing durable for {} ms", waited.as_millis())]
    JournalStalled {
        /// How long the oldest write waited.
        waited: Duration,
    },
}

impl DriverError {
    /// Whether the storage failed (the journal could not make records
    /// durable), as opposed to a bug: the process exits with
    /// [`EXIT_STORAGE`](super::EXIT_STORAGE) rather than
    /// [`EXIT_INTERNAL`](super::EXIT_INTERNAL).
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            DriverError::Journal(_) | DriverError::JournalStalled { .. } | DriverError::WriterGone
        )
    }
}

/// Niceness of the threads that open batches: they yield the CPU to the
/// driver thread and the connections, so receipts stay fast while a batch
/// decrypts.
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

/// What the driver needs besides the sequencer, its journal and its key.
#[derive(Debug)]
pub struct DriverOptions {
    /// Where to count.
    pub metrics: Arc<Metrics>,
    /// Demo mode: deposits over the wire are accepted.
    pub demo: bool,
    /// Envelopes one connection may submit to one batch.
    pub envelopes_per_connection_per_batch_max: u32,
    /// The driver's own control channel (opened batches come back on it).
    pub control_tx: Sender<Control>,
    /// The pool that opens batches ([`open_pool`]).
    pub pool: Arc<rayon::ThreadPool>,
    /// Cleared batches between checkpoints (0: none).
    pub checkpoint_every_batches: u64,
    /// Longest a journal write may wait to become durable before the driver
    /// stops (fail-stop: the storage hangs).
    pub journal_stall_max: Duration,
    /// Longest a submission may wait in the request queue; beyond it, it is
    /// refused as busy (admission control).
    pub intake_delay_max: Duration,
    /// Envelopes the connections of one IP address may submit to one batch.
    pub envelopes_per_ip_per_batch_max: u32,
    /// Where the driver keeps the signed schedule current.
    pub schedules: Arc<ScheduleCache>,
    /// The operator keys: they may deposit, acknowledge payouts and read
    /// every account.
    pub operators: BTreeSet<[u8; 32]>,
    /// Largest amount one operator deposit may credit.
    pub deposit_amount_max: u64,
    /// Operator deposits per second, all together.
    pub deposits_per_second_max: u32,
    /// Trader withdrawals per second, all together.
    pub withdrawals_per_second_max: u32,
    /// Where the keyper links learn of the committee's log and seals.
    pub keypers: Arc<super::keypers::KeyperHub>,
    /// Where published batches are shown (`None`: the explorer is off).
    pub explorer: Option<Arc<super::explorer::Explorer>>,
}

/// The driver loop's state.
pub struct Driver {
    sequencer: Sequencer,
    writer: Option<JournalWriter<NodeStorage>>,
    checkpoint_every: u64,
    cleared_since_checkpoint: u64,
    failed: Option<DriverError>,
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
    /// Envelopes submitted per (batch, connection), for the per-connection
    /// quota.
    submitted: BTreeMap<(BatchId, ConnId), u32>,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    sealed_at: BTreeMap<BatchId, Instant>,
    control_tx: Sender<Control>,
    shutting_down: bool,
    pool: Arc<rayon::ThreadPool>,
    operators: BTreeSet<[u8; 32]>,
    deposit_amount_max: u64,
    deposit_budget: RequestBudget,
    withdrawal_budget: RequestBudget,
    keypers: Arc<super::keypers::KeyperHub>,
    explorer: Option<Arc<super::explorer::Explorer>>,
    /// When each awaited batch key was first asked of the keypers.
    key_asked: BTreeMap<BatchId, Instant>,
    /// As one replica of a replicated sequencer: its link and role.
    replica: Option<replica::ReplicaState>,
    /// Changes whenever the sequencer is replaced or changes hands (a
    /// replica's promotion or demotion): batches opened before are stale.
    epoch: u64,
    /// When shutdown was asked.
    shutdown_at: Option<Instant>,
}

impl Driver {
    /// A driver over a recovered sequencer and the writer thread of its
    /// journal ([`JournalWriter::spawn`]).
    #[must_use]
    pub fn new(
        sequencer: Sequencer,
        writer: JournalWriter<NodeStorage>,
        key: SequencerKey,
        options: DriverOptions,
    ) -> Driver {
        Driver::with_writer(sequencer, Some(writer), key, options)
    }

    fn with_writer(
        sequencer: Sequencer,
        writer: Option<JournalWriter<NodeStorage>>,
        key: SequencerKey,
        options: DriverOptions,
    ) -> Driver {
        let DriverOptions {
            metrics,
            demo,
            envelopes_per_connection_per_batch_max,
            control_tx,
            pool,
            checkpoint_every_batches,
            journal_stall_max,
            intake_delay_max,
            envelopes_per_ip_per_batch_max,
            schedules,
            operators,
            deposit_amount_max,
            deposits_per_second_max,
            withdrawals_per_second_max,
            keypers,
            explorer,
        } = options;
        keypers.set_committee(sequencer.committee().cloned());
        keypers.log_durable(sequencer.committee_log_durable());
        Driver {
            sequencer,
            writer,
            checkpoint_every: checkpoint_every_batches,
            cleared_since_checkpoint: 0,
            failed: None,
            sent_lsn: Lsn::NONE,
            durable_lsn: Lsn::NONE,
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
            operators,
            deposit_amount_max,
            deposit_budget: RequestBudget::new(deposits_per_second_max, Instant::now()),
            withdrawal_budget: RequestBudget::new(withdrawals_per_second_max, Instant::now()),
            keypers,
            explorer,
            key_asked: BTreeMap::new(),
            replica: None,
            epoch: 0,
            shutdown_at: None,
        }
    }

    /// A driver for one replica of a replicated sequencer: `sequencer` is
    /// built from the replica's local journal (committed records only,
    /// [`Sequencer::recover_replica`]); the replica follows until the
    /// cluster makes it the leader ([`Control::Promote`]).
    #[must_use]
    pub fn new_replica(
        sequencer: Sequencer,
        link: replica::ReplicaLink,
        key: SequencerKey,
        options: DriverOptions,
    ) -> Driver {
        let committed_lsn = sequencer.next_lsn() - 1;
        let writer = None;
        let mut driver = Driver::with_writer(sequencer, writer, key, options);
        driver.durable_lsn = committed_lsn;
        driver.sent_lsn = committed_lsn;
        let checkpoint_every = driver.checkpoint_every;
        driver.replica = Some(replica::ReplicaState::new(
            link,
            committed_lsn,
            checkpoint_every,
        ));
        driver
    }

    /// Runs until shutdown (after finishing every batch in flight and
    /// closing the journal) or a fatal error.
    ///
    /// # Errors
    ///
    /// [`DriverError`]: the journal or the sequencer failed; the process must
    /// stop (a restart recovers from the journal).
    pub fn run(
        mut self,
        requests: Receiver<Request>,
        control: Receiver<Control>,
    ) -> Result<(), DriverError> {
        let result = self.serve(&requests, &control);
        // After a failure the writer is not waited for: it may hang in an
        // fsync that never returns, and the process is about to exit anyway.
        // Otherwise it returns once everything sent is written, checkpointed
        // and pruned.
        let writer = self.writer.take();
        if result.is_ok()
            && let Some(writer) = writer
        {
            writer.close()?;
        }
        result
    }

    fn serve(
        &mut self,
        requests: &Receiver<Request>,
        control: &Receiver<Control>,
    ) -> Result<(), DriverError> {
        // Work left from recovery (a sealed batch to open, a genesis record).
        self.turn()?;
        // The writer's events; a receiver that never delivers once it is gone.
        let events = self
            .writer
            .as_ref()
            .map_or_else(crossbeam_channel::never, |w| w.events().clone());
        // A replica's committed entries; never for a single node.
        let committed = self.committed_receiver();
        loop {
            let now = now_ms();
            // Wake at least every STALL_CHECK to see whether the journal hangs.
            // A follower's sequencer handles no timeouts (the leader seals
            // and opens): it waits for messages only.
            let due = if self.is_follower() {
                None
            } else {
                self.sequencer.poll_timeout()
            };
            // An elected replica's wait for its committed entries.
            let due = match (due, self.role_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = due
                .map_or(STALL_CHECK, |due| {
                    Duration::from_millis(due.saturating_sub(now))
                })
                .min(STALL_CHECK);
            select! {
                recv(events) -> event => match event {
                    Ok(event) => self.journal_event(event),
                    Err(_) => self.fail(DriverError::WriterGone),
                },
                recv(committed) -> entry => match entry {
                    Ok(entry) => self.committed(entry),
                    Err(_) => self.fail(DriverError::WriterGone),
                },
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
                if let Ok(event) = events.try_recv() {
                    self.journal_event(event);
                } else if let Ok(entry) = committed.try_recv() {
                    self.committed(entry);
                } else if let Ok(message) = control.try_recv() {
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
                    durable_lsn = self.durable_lsn.get(),
                    waiting_lsn = self.sent_lsn.get(),
                    "the journal made nothing durable for too long; stopping at once"
                );
                self.fail(DriverError::JournalStalled {
                    waited: since.elapsed(),
                });
            }
            self.metrics
                .keypers_connected
                .set(i64::try_from(self.keypers.connected().len()).unwrap_or(i64::MAX));
            self.metrics
                .keypers_standing_by
                .set(i64::try_from(self.keypers.standing_by()).unwrap_or(i64::MAX));
            let now = now_ms();
            if self.role_timeout().is_some_and(|due| now >= due) {
                self.role_tick(now);
            }
            if let Some(error) = self.failed.take() {
                return Err(error);
            }
            self.turn()?;
            if self.shutting_down && self.is_follower() {
                tracing::info!("a follower has nothing in flight; driver stops");
                self.last_checkpoint();
                return Ok(());
            }
            // A leader hands over rather than finishing every batch (the
            // next leader resumes them): it stops once what it proposed is
            // committed, or after REPLICA_STOP_MAX without a majority.
            if self.shutting_down
                && self.replica.is_some()
                && (self.durable_lsn >= self.sent_lsn
                    || self
                        .shutdown_at
                        .is_some_and(|at| at.elapsed() > REPLICA_STOP_MAX))
            {
                tracing::info!(
                    committed = self.durable_lsn.get(),
                    proposed = self.sent_lsn.get(),
                    "the leader stops; the next one resumes the batches in flight"
                );
                self.last_checkpoint();
                return Ok(());
            }
            if self.shutting_down
                && self.sequencer.batches_pending() == 0
                && self.sequencer.is_idle()
            {
                tracing::info!("every batch in flight is cleared and durable; driver stops");
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
        if self.is_follower() {
            self.not_leading(request);
            return;
        }
        self.request(request);
    }

    /// Records the first fatal error; the loop returns it at the end of
    /// this turn, before anything else is sent.
    fn fail(&mut self, error: DriverError) {
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
            } => self.open_session(session, conn, ip, out),
            Control::Close { session, after } => self.end_session(session, after),
            Control::Opened(_, _, epoch) if epoch != self.epoch => {
                // Opened for a sequencer this replica no longer drives.
            }
            Control::Opened(job, took, _) => {
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
            Control::Shutdown => {
                tracing::info!("shutdown: refusing new envelopes, finishing batches in flight");
                self.shutting_down = true;
                self.shutdown_at.get_or_insert_with(Instant::now);
            }
            Control::Promote { term, applied } => self.promote(term, applied),
            Control::Demote => self.demote(),
            Control::RaftFailed(reason) => {
                tracing::error!(%reason, "the replicated log failed; stopping");
                self.fail(DriverError::Replication(reason));
            }
            Control::KeyperPost(_) | Control::KeyperShare { .. } if self.is_follower() => {
                // Only the leader writes the committee's log and opens
                // batches.
            }
            Control::KeyperRead { from, reply } => {
                let _ = reply.send(self.sequencer.committee_log(from));
            }
            Control::KeyperPost(message) => {
                let sender = message.message().message.sender;
                let window = message.message().message.window.id;
                if let Err(reason) = self.sequencer.handle_keyper_prechecked(now_ms(), *message) {
                    tracing::debug!(keyper = sender, window, %reason, "keyper message not logged");
                }
            }
            Control::KeyperShare {
                keyper,
                e,
                share,
                attestation,
            } => {
                match self
                    .sequencer
                    .handle_key_share(now_ms(), e, keyper, &share, &attestation)
                {
                    Ok(true) => {
                        self.metrics.keys_combined.inc();
                        if let Some(asked) = self.key_asked.remove(&e) {
                            self.metrics
                                .key_release_seconds
                                .observe_duration(asked.elapsed());
                        }
                        tracing::debug!(batch = e.get(), keyper, "batch key complete");
                    }
                    Ok(false) => {}
                    Err(error) => {
                        self.metrics.key_shares_refused.inc();
                        tracing::debug!(batch = e.get(), keyper, %error, "key share not taken");
                    }
                }
            }
        }
    }

    /// What the journal writer (or its pruning thread) reports.
    fn journal_event(&mut self, event: WriterEvent) {
        match event {
            WriterEvent::Durable { lsn, took } => {
                self.metrics.fsync_seconds.observe_duration(took);
                self.durable_lsn = lsn;
                self.waiting_since = (lsn < self.sent_lsn).then(Instant::now);
                if let Err(error) = self.sequencer.handle_journal_durable(now_ms(), lsn) {
                    tracing::error!(%error, "a journal completion does not fit the sequencer; stopping");
                    self.fail(error.into());
                }
            }
            WriterEvent::Failed(error) => {
                tracing::error!(%error, "the journal failed; stopping at once");
                self.fail(error.into());
            }
            WriterEvent::Checkpoint { lsn, written, took } => tracing::info!(
                lsn = lsn.get(),
                bytes = written.bytes,
                ms = took.as_millis() as u64,
                "checkpoint written"
            ),
            WriterEvent::CheckpointFailed { lsn, error } => {
                tracing::warn!(%error, lsn = lsn.get(), "checkpoint not written");
            }
            WriterEvent::Pruned {
                below,
                removed,
                took,
            } => {
                if removed > 0 {
                    tracing::info!(
                        below = below.get(),
                        segments_removed = removed,
                        ms = took.as_millis() as u64,
                        "journal pruned"
                    );
                }
            }
            WriterEvent::PruneFailed(error) => {
                tracing::warn!(%error, "journal pruning failed");
            }
        }
    }

    /// Timeouts, journal writes to the writer, jobs out, events delivered.
    fn turn(&mut self) -> Result<(), DriverError> {
        if self.is_follower() {
            return Ok(());
        }
        let now = now_ms();
        self.sequencer
            .set_keypers_linked(self.keypers.connected().len());
        self.sequencer.handle_timeout(now)?;
        self.flush_writes()?;
        while let Some(job) = self.sequencer.poll_job() {
            self.metrics.batch_size.observe(job.len() as f64);
            let control = self.control_tx.clone();
            let epoch = self.epoch;
            self.pool.spawn(move || {
                let start = Instant::now();
                let opened = job.run();
                let _ = control.send(Control::Opened(opened, start.elapsed(), epoch));
            });
        }
        let events: Vec<Event> = std::iter::from_fn(|| self.sequencer.poll_event()).collect();
        self.cleared_total += events
            .iter()
            .filter(|event| matches!(event, Event::BatchCleared { .. }))
            .count() as u64;
        // Before the events go out: a client that hears that a batch opened
        // or cleared, and asks for the schedule, gets one that shows it.
        if let Err(error) = self.refresh_schedule(now) {
            tracing::warn!(%error, "the schedule could not be made");
        }
        self.deliver_all(events);
        if self.checkpoint_every > 0 && self.cleared_since_checkpoint >= self.checkpoint_every {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn writer(&mut self) -> Result<&mut JournalWriter<NodeStorage>, DriverError> {
        self.writer.as_mut().ok_or(DriverError::WriterGone)
    }

    /// Hands the writer every journal write the sequencer asked for.
    fn flush_writes(&mut self) -> Result<(), DriverError> {
        if self.replica.is_some() {
            let writes: Vec<_> = std::iter::from_fn(|| self.sequencer.poll_journal()).collect();
            for write in &writes {
                if let Some(e) = write.sealed_batch() {
                    self.sealed_at.insert(e, Instant::now());
                }
                self.sent_lsn = write.lsn;
            }
            if self.is_follower() {
                if !writes.is_empty() {
                    return Err(DriverError::Sequencer(SequencerError::Protocol(
                        "a follower's sequencer wrote to the journal".into(),
                    )));
                }
                return Ok(());
            }
            return self.propose(writes);
        }
        while let Some(write) = self.sequencer.poll_journal() {
            if let Some(e) = write.sealed_batch() {
                self.sealed_at.insert(e, Instant::now());
            }
            if self.waiting_since.is_none() {
                self.waiting_since = Some(Instant::now());
            }
            let lsn = self
                .writer()?
                .append(write.kind.to_byte(), write.payload)
                .map_err(|error| match error {
                    crate::journal::JournalError::WriterStopped => DriverError::WriterGone,
                    error => error.into(),
                })?;
            if lsn != write.lsn {
                return Err(DriverError::LsnMismatch {
                    expected: write.lsn,
                    got: lsn,
                });
            }
            self.sent_lsn = lsn;
        }
        Ok(())
    }

    /// A replica stopping gracefully checkpoints what it applied, so that
    /// its restart replays from here (`spec/sequencer.md`, "Checkpoints");
    /// the state machine writes it as it closes the journal, if its records
    /// are all committed and applied (a leader's uncommitted tail is not).
    fn last_checkpoint(&mut self) {
        if self.checkpoint_every > 0
            && let Err(error) = self.checkpoint()
        {
            tracing::warn!(%error, "no checkpoint at the replica's stop");
        }
    }

    /// Hands the writer a checkpoint of everything journaled so far; it is
    /// written once those records are durable. A state too large for a
    /// checkpoint is not written (recovery then replays from an older one).
    fn checkpoint(&mut self) -> Result<(), DriverError> {
        self.flush_writes()?;
        self.cleared_since_checkpoint = 0;
        let checkpoint = self.sequencer.checkpoint();
        if !checkpoint.fits() {
            tracing::warn!(
                lsn = checkpoint.lsn.get(),
                balances = checkpoint.balances.len(),
                unfinished = checkpoint.unfinished.len(),
                "checkpoint not written: the state is larger than a checkpoint may hold"
            );
            return Ok(());
        }
        let payload = checkpoint.to_bytes();
        if self.replica.is_some() {
            let job = self.checkpoint_job(checkpoint.lsn, checkpoint.replay_from, payload);
            if let (Some(job), Some(replica)) = (job, self.replica.as_ref()) {
                // The state machine writes it once its records are applied.
                let _ = replica.link.checkpoints.send(job);
            }
            return Ok(());
        }
        self.writer()?
            .checkpoint(checkpoint.lsn, checkpoint.replay_from, payload)
            .map_err(|_| DriverError::WriterGone)
    }
}

//! The batch life cycle as a sans-IO state machine, in the style of
//! `quinn-proto`: no I/O, no clock, no threads. The caller moves bytes, time
//! and journal completions in and carries out what the `poll_*` methods ask.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     handle_submit(now, token, envelope)      for each envelope that arrives
//!     handle_timeout(now)                      when poll_timeout() is due
//!     handle_key_share(now, e, keyper, share)  for each keyper's share (a committee)
//!     while let Some(w) = poll_journal()       append w to the journal, in order
//!     (after an fsync) handle_journal_durable(now, lsn)
//!     while let Some(job) = poll_job()         run job.run() (rayon, any thread)
//!         and hand the result to handle_opened(now, result)
//!     while let Some(ev) = poll_event()        deliver receipts and batch events
//! }
//! ```
//!
//! The journal's LSNs must be the ones [`JournalWrite::lsn`] names: the caller
//! appends every write, in order, to a journal whose next LSN was
//! [`Sequencer::next_lsn`] when it was built.
//!
//! # The life of batch `e`
//!
//! 1. **Announced** ([`Event::BatchOpened`]) `announce_ahead` batches early,
//!    with its public key `S_e`; envelopes for it are accepted from then on.
//! 2. **Submit**: shape checks only, dedupe by commitment, bounds. The envelope
//!    is journaled; its [`Event::Receipt`] follows once the journal says it is
//!    durable, and the caller signs and sends the receipt
//!    ([`SequencerKey::sign_receipt`]) — only then, and off the core's thread
//!    if it likes (signing is the costliest step of a submission).
//! 3. **Close** at `close_ms(e)`: the commitment set is fixed, the seal signed
//!    and journaled. Nothing later joins `e`; a late envelope is refused with
//!    the next open batch named.
//! 4. Once the seal is durable: [`Event::BatchSealed`], the custodian releases
//!    `s_e`, and an [`OpenJob`] is handed out. A keyper committee's key
//!    comes later: [`Event::KeyRequested`] asks the caller to send the seal
//!    to the keypers (again every [`KEY_REQUEST_RESEND_MS`]), and their
//!    shares go to [`handle_key_share`](Sequencer::handle_key_share) until
//!    `t` valid ones give the key. The batch keeps its place in the order
//!    meanwhile. A custodian that cannot take the request yet (a replica
//!    taking over whose clock has not reached the close, a window it does
//!    not hold) is asked again at each timeout ([`Event::KeyUnavailable`]):
//!    the batch waits, sealed, and nothing after it clears first.
//! 5. **Clear**: [`handle_opened`](Sequencer::handle_opened) validates funding,
//!    clears, settles, and journals the [`BatchOutcome`] (as [`ResultPart`]s
//!    of at most 4 MiB each, so any batch fits the journal's record limit).
//! 6. Once the result is durable: [`Event::BatchCleared`].
//!
//! Batches are cleared strictly in order; batch `e + 1` collects while `e` is
//! being opened. A batch that receives no envelope is never sealed or
//! journaled.
//!
//! # Checking it
//!
//! [`verify_journal`] re-derives every batch of a journal from genesis;
//! [`verify_journal_with`] also compares the journal's [`Checkpoint`]s with
//! the re-derived state and verifies a pruned journal from its oldest
//! usable checkpoint; [`export_transcripts`] and [`verify_transcript`] do
//! the same for one batch carried in a self-contained [`Transcript`].
//! Recovery and `verify` read a journal through one walk (`walk.rs`): the
//! records that only change the books are applied there, the same way for
//! both, and each keeps only its own handling of the batch life cycle.

mod batch;
mod checkpoint;
mod committee;
mod config;
mod funds;
mod record;
mod rederive;
mod replay;
mod transcript;
mod verify;
mod walk;

pub use batch::{
    BatchOutcome, EnvelopeOutcome, EnvelopeStatus, MarketOutcome, OUTCOME_TAG, OrderFill,
    ProcessError, apply_outcome, process_batch, process_batch_with_input, status, void_outcome,
};
pub use checkpoint::{
    CHECKPOINT_BALANCES_MAX, CHECKPOINT_TAG, CHECKPOINT_UNFINISHED_MAX, Checkpoint, UnusableState,
};
pub use committee::{COMMITTEE_LOG_READ_MAX, CommitteeState};
pub use config::{
    ANNOUNCE_AHEAD_DEFAULT, ANNOUNCE_AHEAD_MAX, BYTES_PER_BATCH_DEFAULT, CLEAR_LAG_BATCHES_DEFAULT,
    ConfigError, ENVELOPES_PER_BATCH_CLEARABLE, ENVELOPES_PER_BATCH_DEFAULT, GENESIS_TAG, Genesis,
    Limits, ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT, PENDING_RECEIPTS_DEFAULT, SEALED_BATCHES_DEFAULT,
};
pub use funds::{CHECKPOINT_DEPOSITS_MAX, CHECKPOINT_WITHDRAWALS_MAX, Effect, Funds, FundsError};
pub use record::{
    AssembleError, RESULT_PART_BYTES_MAX, RecordError, RecordKind, ResultAssembler, ResultPart,
    SequencerRecord, Transfer,
};
pub use transcript::{
    TRANSCRIPT_TAG, Transcript, TranscriptError, TranscriptSummary, build_transcript,
    transcript_clearing_input, verify_transcript,
};
pub use verify::{
    BatchVerdict, CheckpointVerdict, CommitteeVerdict, ReceiptReport, VerifyError, VerifyReport,
    check_receipts, export_transcripts, verify_journal, verify_journal_with,
};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::clearing::MarketInput;
use crate::envelope::{
    BatchPublicKey, Commitment, CustodianError, KeyCustodian, MerkleError, MerkleTree, OpenError,
    OpenedBatch, Rejection, ReleaseAttestation, ReleasedBatchKey, SequencerKey, ShapedEnvelope,
    SignedSeal, open_shaped_batch,
};
use crate::ledger::{Ledger, LedgerError};
use crate::market::{AccountId, AssetId, MarketConfig};
use crate::signed::{SignedDeposit, SignedPayout, SignedWithdrawal, Withdrawal};
use crate::types::{BatchId, Lsn, MarketId, Tick};

/// How long the sequencer waits for a committee's shares before it sends
/// the seal to the keypers again.
pub const KEY_REQUEST_RESEND_MS: u64 = 500;

/// The caller's name for a submission, echoed in its [`Event::Receipt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubmitToken(pub u64);

/// The caller's name for an operator operation, echoed in
/// [`Event::OperationDurable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpToken(pub u64);

/// A record to append to the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalWrite {
    /// The LSN the journal must give it.
    pub lsn: Lsn,
    /// Its kind.
    pub kind: RecordKind,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl JournalWrite {
    /// The batch this record seals, if it is a seal (whose payload starts
    /// with the batch number, `spec/sequencer.md`).
    #[must_use]
    pub fn sealed_batch(&self) -> Option<BatchId> {
        if self.kind != RecordKind::Seal {
            return None;
        }
        let e = self.payload.get(..8)?;
        Some(BatchId::from_le_bytes(<[u8; 8]>::try_from(e).ok()?))
    }
}

/// Something the caller must deliver.
#[derive(Clone, Debug)]
pub enum Event {
    /// Batch `e` is announced: traders may seal to `public_key` until
    /// `close_ms`.
    BatchOpened {
        /// The batch.
        e: BatchId,
        /// Its public key `S_e`.
        public_key: BatchPublicKey,
        /// Unix milliseconds at which it closes.
        close_ms: u64,
    },
    /// An envelope is durable: its receipt may be signed
    /// ([`SequencerKey::sign_receipt`]) and sent now, not before.
    Receipt {
        /// The submission's token.
        token: SubmitToken,
        /// The envelope's batch.
        e: BatchId,
        /// Its commitment.
        commitment: Commitment,
    },
    /// A batch's seal is durable. The tree gives inclusion proofs.
    BatchSealed {
        /// The signed seal.
        seal: SignedSeal,
        /// The Merkle tree of its sorted commitments.
        tree: Arc<MerkleTree>,
    },
    /// A batch's result is durable and settled.
    BatchCleared {
        /// Everything the batch decided, with `s_e`.
        outcome: Arc<BatchOutcome>,
        /// The clearing input it was decided from (every market's funded
        /// orders), for the explorer's curves; `None` for a batch voided.
        input: Option<Arc<Vec<MarketInput>>>,
    },
    /// An operation (a deposit, a withdrawal, a payout acknowledgement) is
    /// durable, or everything journaled before a barrier is.
    OperationDurable {
        /// The operation's token.
        token: OpToken,
    },
    /// A durable seal's key must be asked of the keypers: send them the
    /// seal and hand their shares to
    /// [`handle_key_share`](Sequencer::handle_key_share). Repeated every
    /// [`KEY_REQUEST_RESEND_MS`] until the key is in (keypers answer a
    /// repeated seal with the same share).
    KeyRequested {
        /// The seal.
        seal: SignedSeal,
    },
    /// The committee's log is durable below position `below`: keypers may
    /// read it ([`Sequencer::committee_log`]).
    CommitteeLog {
        /// Every entry below this position is durable.
        below: u64,
    },
    /// The custodian did not take the request for batch `e`'s key (the
    /// reason says why: not closed by this clock yet, no window holding
    /// it). The batch stays sealed and keeps its place; the request is
    /// made again at each timeout. Reported once per batch (per run): a
    /// lasting one means the key may never come.
    KeyUnavailable {
        /// The batch.
        e: BatchId,
        /// The custodian's refusal.
        reason: String,
    },
    /// Batch `e` could not be processed and was voided (its outcome, which
    /// follows as [`Event::BatchCleared`], trades nothing). Never expected:
    /// it means a bug, which the caller should report loudly. The sequencer
    /// goes on with the next batch.
    BatchVoided {
        /// The batch.
        e: BatchId,
        /// Why processing failed.
        reason: String,
    },
}

/// Why an envelope was refused at submission. Nothing was journaled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The envelope's shape is wrong (length, version, `R`).
    #[error("malformed envelope: {0}")]
    Malformed(Rejection),
    /// Its batch has closed (or it names a batch before the schedule).
    #[error("batch {e} is closed; the open batch is {next_open}")]
    BatchClosed {
        /// The envelope's batch.
        e: BatchId,
        /// The batch open now.
        next_open: BatchId,
    },
    /// Its batch is not announced yet.
    #[error("batch {e} is not announced yet; the open batch is {next_open}")]
    NotAnnounced {
        /// The envelope's batch.
        e: BatchId,
        /// The batch open now.
        next_open: BatchId,
    },
    /// Its batch holds as many envelopes or bytes as it may.
    #[error("batch {e} is full; the open batch is {next_open}")]
    BatchFull {
        /// The envelope's batch.
        e: BatchId,
        /// The batch open now.
        next_open: BatchId,
    },
    /// The sequencer is behind (too many batches sealed and not yet
    /// cleared, or too many receipts waiting for the journal): try again
    /// after `retry_after_ms`, to a batch open then.
    #[error("the sequencer is behind; retry in {retry_after_ms} ms")]
    Busy {
        /// How long to wait before submitting again.
        retry_after_ms: u64,
    },
}

impl SubmitError {
    /// A stable one-byte code for the wire.
    #[must_use]
    pub fn code(&self) -> u8 {
        match self {
            SubmitError::Malformed(_) => 1,
            SubmitError::BatchClosed { .. } => 2,
            SubmitError::NotAnnounced { .. } => 3,
            SubmitError::BatchFull { .. } => 4,
            SubmitError::Busy { .. } => 6,
        }
    }
}

/// A failure of the sequencer itself (not of one client's input).
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The journal was written by a deployment with other fixed parameters.
    #[error("the journal's genesis record differs from this configuration")]
    GenesisMismatch,
    /// The journal's first record is not a genesis record.
    #[error("the journal does not start with a genesis record (LSN {0})")]
    NoGenesis(Lsn),
    /// A record cannot be decoded.
    #[error("journal record {lsn}: {source}")]
    Record {
        /// Its LSN.
        lsn: Lsn,
        /// What is wrong.
        source: RecordError,
    },
    /// A record does not fit the state replayed so far.
    #[error("journal record {lsn}: {reason}")]
    Replay {
        /// Its LSN.
        lsn: Lsn,
        /// What does not fit.
        reason: String,
    },
    /// The key custodian refused.
    #[error("key custodian: {0}")]
    Custodian(#[from] CustodianError),
    /// A Merkle tree could not be built.
    #[error("merkle: {0}")]
    Merkle(#[from] MerkleError),
    /// A sealed batch's envelopes do not match its seal.
    #[error("opening: {0}")]
    Open(#[from] OpenError),
    /// Processing a batch failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// An operator operation was refused.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A signed deposit, withdrawal or payout acknowledgement was refused.
    #[error(transparent)]
    Funds(#[from] FundsError),
    /// A journal completion, opened batch or LSN does not fit the state.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Opens one sealed batch: the expensive, stateless part (decryption and
/// signature checks), run by the caller on any thread.
pub struct OpenJob {
    key: ReleasedBatchKey,
    envelopes: Vec<ShapedEnvelope>,
}

impl std::fmt::Debug for OpenJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenJob")
            .field("e", &self.key.batch())
            .field("envelopes", &self.envelopes.len())
            .finish()
    }
}

impl OpenJob {
    /// The batch.
    #[must_use]
    pub fn batch(&self) -> BatchId {
        self.key.batch()
    }

    /// How many envelopes it opens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.envelopes.len()
    }

    /// Whether it opens nothing (never true for a job the sequencer hands out).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }

    /// Opens every envelope in parallel (rayon). Never panics: a panic while
    /// opening (a bug) is caught and voids the batch.
    #[must_use]
    pub fn run(self) -> OpenedJob {
        let secret = *self.key.secret_bytes();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            open_shaped_batch(&self.key, &self.envelopes).map_err(|error| error.to_string())
        }))
        .unwrap_or_else(|payload| {
            Err(format!(
                "opening panicked: {}",
                batch::panic_message(payload.as_ref())
            ))
        });
        OpenedJob {
            e: self.key.batch(),
            batch_secret: secret,
            release: self.key.attestations().to_vec(),
            result,
        }
    }
}

/// The outcome of [`OpenJob::run`], for [`Sequencer::handle_opened`].
#[derive(Debug)]
pub struct OpenedJob {
    e: BatchId,
    batch_secret: [u8; 32],
    /// The keypers' release attestations of the seal (none from the
    /// embedded custodian), published with the outcome.
    release: Vec<ReleaseAttestation>,
    /// The opened batch, or why it could not be opened (an [`OpenError`] or
    /// a panic: both a bug).
    result: Result<OpenedBatch, String>,
}

enum Batch {
    /// Announced or open, collecting envelopes.
    Collecting {
        envelopes: BTreeMap<Commitment, ShapedEnvelope>,
        bytes: usize,
    },
    /// Sealed; waiting for the seal to be durable, or (`refused`) for the
    /// custodian to take the request for its key.
    Sealing {
        seal: SignedSeal,
        tree: Arc<MerkleTree>,
        envelopes: Vec<ShapedEnvelope>,
        seal_lsn: Lsn,
        /// The custodian refused the request (asked again at each
        /// timeout).
        refused: bool,
    },
    /// Seal durable; the key is asked of the keypers (a committee
    /// custodian) and comes back share by share.
    AwaitingKey {
        seal: SignedSeal,
        tree: Arc<MerkleTree>,
        envelopes: Vec<ShapedEnvelope>,
        /// When the keypers were last asked (asked again every
        /// [`KEY_REQUEST_RESEND_MS`]).
        requested_ms: u64,
    },
    /// Key released; the open job is out. The tree names the envelopes
    /// should the batch have to be voided.
    Opening { tree: Arc<MerkleTree> },
    /// Settled; waiting for the result to be durable.
    Publishing {
        outcome: Arc<BatchOutcome>,
        input: Option<Arc<Vec<MarketInput>>>,
        result_lsn: Lsn,
    },
}

/// The sequencer core. See the [module docs](self).
pub struct Sequencer {
    genesis: Genesis,
    markets: BTreeMap<MarketId, MarketConfig>,
    limits: Limits,
    key: SequencerKey,
    custodian: Box<dyn KeyCustodian + Send>,
    ledger: Ledger,
    references: BTreeMap<MarketId, Tick>,
    /// Deposits by reference, withdrawal sequences, withdrawals awaiting
    /// payout, payouts (kept in checkpoints).
    funds: Funds,
    batches: BTreeMap<BatchId, Batch>,
    /// Every batch below this is closed.
    closed_below: BatchId,
    /// Every batch below this was announced.
    announced_below: BatchId,
    /// The latest `now` seen (time never goes backwards inside).
    now_ms: u64,
    /// When this sequencer took up the work ([`resume`](Self::resume): a
    /// restart, or a replica becoming the leader): a backlog it inherited
    /// counts as lagging only from then.
    resumed_ms: u64,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    journal: VecDeque<JournalWrite>,
    events: VecDeque<Event>,
    receipts: VecDeque<(Lsn, SubmitToken, BatchId, Commitment)>,
    operations: VecDeque<(Lsn, OpToken)>,
    jobs: VecDeque<OpenJob>,
    /// Batches whose open job is out, in order; with their result once back.
    opening: BTreeMap<BatchId, Option<OpenedJob>>,
    /// Joins `Result` parts while replaying the journal.
    assembler: ResultAssembler,
    /// The LSN of the first record of each batch whose result is not
    /// journaled yet: where a recovery from a checkpoint must start reading.
    first_lsn: BTreeMap<BatchId, Lsn>,
    /// The keyper committee holding the batch keys, if one does (then
    /// `custodian` is not used).
    committee: Option<Box<committee::CommitteeRun>>,
}

/// What [`Sequencer::recover`] reads from the journal.
#[derive(Debug)]
pub struct Journaled<I> {
    /// The checkpoint to start from (`None`: replay from the genesis record).
    pub checkpoint: Option<Checkpoint>,
    /// The records in LSN order: all of them, or, with a checkpoint, at
    /// least those from its `replay_from` on (earlier ones are skipped).
    pub records: I,
    /// The LSN the journal appends next.
    pub next_lsn: Lsn,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("closed_below", &self.closed_below)
            .field("next_lsn", &self.next_lsn)
            .field("durable_lsn", &self.durable_lsn)
            .field("batches", &self.batches.len())
            .finish_non_exhaustive()
    }
}

impl Sequencer {
    /// The deployment's fixed parameters.
    #[must_use]
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The deployment: the sequencer key and batch clock of the genesis.
    #[must_use]
    pub fn deployment(&self) -> crate::envelope::DeploymentId {
        self.genesis.deployment()
    }

    /// The configured markets.
    #[must_use]
    pub fn markets(&self) -> &BTreeMap<MarketId, MarketConfig> {
        &self.markets
    }

    /// Each market's reference price (last clearing price, else initial).
    #[must_use]
    pub fn references(&self) -> &BTreeMap<MarketId, Tick> {
        &self.references
    }

    /// The ledger as settled so far (including results not yet durable).
    #[must_use]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The LSN the next journal write will carry.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The batch open at `now_ms` (clamped to genesis).
    #[must_use]
    pub fn open_batch_at(&self, now_ms: u64) -> BatchId {
        self.genesis
            .schedule
            .batch_at(now_ms)
            .unwrap_or(BatchId::ZERO)
    }

    /// The public key of batch `e`.
    ///
    /// # Errors
    ///
    /// The custodian's error.
    pub fn batch_public_key(&self, e: BatchId) -> Result<BatchPublicKey, SequencerError> {
        Ok(self.custodian().public_key(e)?)
    }

    /// Whether open batch `e` holds the envelope with `commitment` (a new
    /// submission of it would be receipted again, not journaled).
    #[must_use]
    pub fn holds(&self, e: BatchId, commitment: &Commitment) -> bool {
        matches!(
            self.batches.get(&e),
            Some(Batch::Collecting { envelopes, .. }) if envelopes.contains_key(commitment)
        )
    }

    /// Accepts an envelope for the batch its header names, if that batch is
    /// announced and open and has room. The envelope is queued for the
    /// journal; its [`Event::Receipt`] (with `token`) follows
    /// [`handle_journal_durable`](Self::handle_journal_durable). An envelope
    /// the batch already holds is not journaled again: its receipt is issued
    /// again (with this `token`) once its record is durable, so a client may
    /// resubmit an envelope whose receipt it never saw.
    ///
    /// Returns the envelope's commitment.
    ///
    /// # Errors
    ///
    /// [`SubmitError`]; nothing is journaled then.
    pub fn handle_submit(
        &mut self,
        now_ms: u64,
        token: SubmitToken,
        envelope: Vec<u8>,
    ) -> Result<Commitment, SubmitError> {
        let shaped = ShapedEnvelope::for_header_batch(envelope).map_err(SubmitError::Malformed)?;
        self.handle_submit_shaped(now_ms, token, shaped)
    }

    /// [`handle_submit`](Self::handle_submit) for an envelope whose shape the
    /// caller already checked with [`ShapedEnvelope::new`] (on a connection's
    /// thread, say); one made with [`ShapedEnvelope::unchecked`] is checked
    /// here.
    ///
    /// # Errors
    ///
    /// As [`handle_submit`](Self::handle_submit).
    pub fn handle_submit_shaped(
        &mut self,
        now_ms: u64,
        token: SubmitToken,
        shaped: ShapedEnvelope,
    ) -> Result<Commitment, SubmitError> {
        let e = shaped.batch();
        let shaped = if shaped.is_shape_checked() {
            shaped
        } else {
            ShapedEnvelope::new(shaped.into_bytes(), e).map_err(SubmitError::Malformed)?
        };
        let now_ms = self.observe(now_ms);
        let open = self.open_batch_at(now_ms).max(self.closed_below);
        let commitment = shaped.commitment();
        if e < open
            || self
                .genesis
                .schedule
                .close_ms(e)
                .is_none_or(|c| c <= now_ms)
        {
            return Err(SubmitError::BatchClosed { e, next_open: open });
        }
        if e > open.saturating_add(self.limits.announce_ahead) || !self.custodian().has_key(e) {
            return Err(SubmitError::NotAnnounced { e, next_open: open });
        }
        let batch_ms = self.genesis.schedule.batch_length_ms;
        // Opening (or committing) lags: refuse before the trader's envelope
        // costs a journal write, and say when the backlog should be gone.
        let lag = self.clear_lag_ms(now_ms);
        let lag_max = self.clear_lag_max_ms();
        if lag > lag_max {
            return Err(SubmitError::Busy {
                retry_after_ms: (lag - lag_max).max(batch_ms),
            });
        }
        let sealed = self.batches_in_flight();
        if sealed >= self.limits.sealed_batches_max {
            let behind = (sealed + 1 - self.limits.sealed_batches_max) as u64;
            return Err(SubmitError::Busy {
                retry_after_ms: behind.saturating_mul(batch_ms),
            });
        }
        if self.receipts.len() >= self.limits.pending_receipts_max {
            return Err(SubmitError::Busy {
                retry_after_ms: batch_ms,
            });
        }
        let len = shaped.bytes().len();
        let (held, held_bytes) = match self.batches.get(&e) {
            None => (0, 0),
            Some(Batch::Collecting { envelopes, bytes }) => {
                if envelopes.contains_key(&commitment) {
                    // The same envelope again: the batch holds it once, and
                    // its receipt is the same statement, issued again once
                    // its record is durable (it is at or below the last LSN
                    // handed out). Nothing is journaled.
                    let upto = self.last_queued_lsn();
                    if upto <= self.durable_lsn {
                        self.events.push_back(Event::Receipt {
                            token,
                            e,
                            commitment,
                        });
                    } else {
                        self.receipts.push_back((upto, token, e, commitment));
                    }
                    return Ok(commitment);
                }
                (envelopes.len(), *bytes)
            }
            Some(_) => return Err(SubmitError::BatchClosed { e, next_open: open }),
        };
        // Checked before the batch exists, so a refusal never leaves an empty
        // batch behind.
        if held >= self.limits.envelopes_per_batch_max
            || held_bytes + len > self.limits.bytes_per_batch_max
        {
            return Err(SubmitError::BatchFull { e, next_open: open });
        }
        let record = SequencerRecord::Envelope {
            e,
            bytes: shaped.bytes().to_vec(),
        };
        if let Batch::Collecting { envelopes, bytes } =
            self.batches.entry(e).or_insert_with(|| Batch::Collecting {
                envelopes: BTreeMap::new(),
                bytes: 0,
            })
        {
            *bytes += len;
            envelopes.insert(commitment, shaped);
        }
        let lsn = self.push_journal(&record);
        self.first_lsn.entry(e).or_insert(lsn);
        self.receipts.push_back((lsn, token, e, commitment));
        Ok(commitment)
    }

    /// Applies an operator deposit now and journals it; an
    /// [`Event::OperationDurable`] follows once durable.
    ///
    /// # Errors
    ///
    /// [`SequencerError::Ledger`] if the balance would overflow.
    pub fn handle_deposit(
        &mut self,
        token: OpToken,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    ) -> Result<(), SequencerError> {
        self.ledger.deposit(account, asset, amount)?;
        self.journal_operation(
            token,
            SequencerRecord::Deposit(Transfer {
                account,
                asset,
                amount,
            }),
        );
        Ok(())
    }

    /// An operator deposit: checks its signature (for this deployment) and
    /// reference, credits it now and journals it; an
    /// [`Event::OperationDurable`] follows once durable. The same signed
    /// statement again (same reference) credits nothing and is acknowledged
    /// again once the first is durable: a reference is credited once.
    ///
    /// Which operator keys may deposit is the caller's policy.
    ///
    /// # Errors
    ///
    /// [`SequencerError::Funds`] (bad signature or reference, the reference
    /// credited with another statement, the asset's supply limit); nothing
    /// changes then.
    pub fn handle_operator_deposit(
        &mut self,
        token: OpToken,
        deposit: SignedDeposit,
    ) -> Result<(), SequencerError> {
        match self
            .funds
            .deposit(&mut self.ledger, &self.genesis.sequencer, &deposit)?
        {
            Effect::New => {
                self.journal_operation(token, SequencerRecord::OperatorDeposit(deposit));
            }
            Effect::Again => self.handle_barrier(token),
        }
        Ok(())
    }

    /// A trader's withdrawal: checks its signature by the account (for this
    /// deployment), that it carries the account's next sequence number and
    /// that the balance covers it; debits it now, journals it as withdrawal
    /// `id` (returned) awaiting payout; an [`Event::OperationDurable`]
    /// follows once durable.
    ///
    /// # Errors
    ///
    /// [`SequencerError::Funds`]: a bad signature, a replayed or skipped
    /// sequence number, nothing to withdraw, more than the balance; nothing
    /// changes then.
    pub fn handle_withdrawal(
        &mut self,
        token: OpToken,
        withdrawal: SignedWithdrawal,
    ) -> Result<u64, SequencerError> {
        let id = self
            .funds
            .withdraw(&mut self.ledger, &self.genesis.sequencer, &withdrawal)?;
        self.journal_operation(
            token,
            SequencerRecord::Withdrawal(Withdrawal {
                id,
                signed: withdrawal,
            }),
        );
        Ok(id)
    }

    /// The operator's acknowledgement that a withdrawal was paid out: checks
    /// its signature (for this deployment) and that the withdrawal awaits
    /// payout, journals it; an [`Event::OperationDurable`] follows once
    /// durable. The same acknowledgement again (same withdrawal, same
    /// reference) changes nothing and is acknowledged again once the first
    /// is durable.
    ///
    /// Which operator keys may acknowledge is the caller's policy.
    ///
    /// # Errors
    ///
    /// [`SequencerError::Funds`]: a bad signature, no such withdrawal, or
    /// one paid out with another reference; nothing changes then.
    pub fn handle_payout(
        &mut self,
        token: OpToken,
        payout: SignedPayout,
    ) -> Result<(), SequencerError> {
        match self.funds.pay(&self.genesis.sequencer, &payout)? {
            Effect::New => self.journal_operation(token, SequencerRecord::Payout(payout)),
            Effect::Again => self.handle_barrier(token),
        }
        Ok(())
    }

    /// An [`Event::OperationDurable`] for `token` once everything journaled
    /// so far is durable: the caller answers a query (a balance, pending
    /// withdrawals) read now only then, so that no answer reveals a state a
    /// crash could still undo.
    pub fn handle_barrier(&mut self, token: OpToken) {
        let upto = self.last_queued_lsn();
        if upto <= self.durable_lsn {
            self.events.push_back(Event::OperationDurable { token });
        } else {
            self.operations.push_back((upto, token));
        }
    }

    /// Deposits, withdrawal sequences and withdrawals awaiting payout, as
    /// journaled so far (durable or not: see
    /// [`handle_barrier`](Self::handle_barrier)).
    #[must_use]
    pub fn funds(&self) -> &Funds {
        &self.funds
    }

    /// Journals an operator operation already applied to the ledger; its
    /// acknowledgement waits for durability.
    fn journal_operation(&mut self, token: OpToken, record: SequencerRecord) {
        let lsn = self.push_journal(&record);
        self.operations.push_back((lsn, token));
    }

    /// Announces batches entering the announcement window and seals every
    /// batch whose close time has passed.
    ///
    /// # Errors
    ///
    /// The custodian's error for an announcement, or a Merkle error.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), SequencerError> {
        let now_ms = self.observe(now_ms);
        let open = self.open_batch_at(now_ms);
        self.committee_timeout(open);
        let horizon = open.saturating_add(self.limits.announce_ahead);
        let mut e = self.announced_below.max(open);
        while e <= horizon {
            // Fail closed: a batch without a key (a committee that has not
            // certified it yet) is not announced, and nothing after it.
            if !self.custodian().has_key(e) {
                break;
            }
            let public_key = self.custodian().public_key(e)?;
            let close_ms = self.genesis.schedule.close_ms(e).unwrap_or(u64::MAX);
            self.events.push_back(Event::BatchOpened {
                e,
                public_key,
                close_ms,
            });
            e += 1;
        }
        self.announced_below = self.announced_below.max(e);
        self.resend_key_requests();
        self.close_below(open)
    }

    /// Seals every collecting batch below `open`.
    fn close_below(&mut self, open: BatchId) -> Result<(), SequencerError> {
        if open <= self.closed_below {
            return Ok(());
        }
        self.closed_below = open;
        let due: Vec<BatchId> = self
            .batches
            .range(..open)
            .filter(|(_, b)| matches!(b, Batch::Collecting { .. }))
            .map(|(&e, _)| e)
            .collect();
        for e in due {
            let Some(Batch::Collecting { envelopes, .. }) = self.batches.remove(&e) else {
                continue;
            };
            let tree = MerkleTree::from_commitments(envelopes.keys().copied().collect())?;
            let seal = self.key.sign_seal(e, &tree);
            let seal_lsn = self.push_journal(&SequencerRecord::Seal(seal));
            self.batches.insert(
                e,
                Batch::Sealing {
                    seal,
                    tree: Arc::new(tree),
                    envelopes: envelopes.into_values().collect(),
                    seal_lsn,
                    refused: false,
                },
            );
        }
        Ok(())
    }

    /// The journal made every write up to `lsn` durable: releases receipts,
    /// publishes seals and results, and asks the custodian for the keys of
    /// newly durable seals.
    ///
    /// # Errors
    ///
    /// [`SequencerError::Protocol`] for an LSN never handed out.
    pub fn handle_journal_durable(&mut self, now_ms: u64, lsn: Lsn) -> Result<(), SequencerError> {
        self.observe(now_ms);
        if lsn >= self.next_lsn {
            return Err(SequencerError::Protocol(format!(
                "durable LSN {lsn} was never written (next is {})",
                self.next_lsn
            )));
        }
        if lsn <= self.durable_lsn {
            return Ok(());
        }
        self.durable_lsn = lsn;
        self.committee_durable(lsn);
        while let Some(&(at, token, e, commitment)) = self.receipts.front() {
            if at > lsn {
                break;
            }
            self.receipts.pop_front();
            self.events.push_back(Event::Receipt {
                token,
                e,
                commitment,
            });
        }
        while let Some(&(at, token)) = self.operations.front() {
            if at > lsn {
                break;
            }
            self.operations.pop_front();
            self.events.push_back(Event::OperationDurable { token });
        }
        let ready: Vec<BatchId> = self
            .batches
            .iter()
            .filter(|(_, b)| match b {
                // A batch whose key request the custodian refused is asked
                // again by the timeout, not announced again here.
                Batch::Sealing {
                    seal_lsn,
                    refused: false,
                    ..
                } => *seal_lsn <= lsn,
                Batch::Publishing { result_lsn, .. } => *result_lsn <= lsn,
                _ => false,
            })
            .map(|(&e, _)| e)
            .collect();
        for e in ready {
            match self.batches.get(&e) {
                Some(Batch::Sealing { seal, tree, .. }) => {
                    self.events.push_back(Event::BatchSealed {
                        seal: *seal,
                        tree: Arc::clone(tree),
                    });
                    self.release(e);
                }
                Some(Batch::Publishing { outcome, input, .. }) => {
                    self.events.push_back(Event::BatchCleared {
                        outcome: Arc::clone(outcome),
                        input: input.clone(),
                    });
                    self.batches.remove(&e);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Asks the custodian for the key of sealed batch `e` (its seal is
    /// durable): with the key, queues its open job; a committee's key comes
    /// later ([`Event::KeyRequested`],
    /// [`handle_key_share`](Self::handle_key_share)).
    ///
    /// A custodian that refuses — this replica's clock is behind the close
    /// the leader that sealed saw, or it holds no window for the batch —
    /// leaves the batch sealed, in its place in the order, and is asked
    /// again at each timeout ([`Event::KeyUnavailable`]). Nothing the
    /// custodian says stops the sequencer: a batch that never gets its key
    /// holds the batches after it back, and the caller's admission turns
    /// traders away meanwhile (fail closed).
    fn release(&mut self, e: BatchId) {
        let Some(Batch::Sealing { seal, refused, .. }) = self.batches.get(&e) else {
            return;
        };
        let (seal, first_refusal) = (*seal, !*refused);
        let now = self.now_ms;
        let key = match self.custodian_mut().request(&seal, now) {
            Ok(key) => key,
            Err(error) => {
                // Its place among the batches being opened is taken now: a
                // later batch whose key comes first still waits for it.
                self.opening.entry(e).or_insert(None);
                if let Some(Batch::Sealing { refused, .. }) = self.batches.get_mut(&e) {
                    *refused = true;
                }
                if first_refusal {
                    self.events.push_back(Event::KeyUnavailable {
                        e,
                        reason: error.to_string(),
                    });
                }
                return;
            }
        };
        let Some(Batch::Sealing {
            envelopes, tree, ..
        }) = self.batches.remove(&e)
        else {
            return;
        };
        match key {
            Some(key) => self.start_opening(e, key, tree, envelopes),
            None => {
                // Its place among the batches being opened is taken now, so
                // that a later batch whose key comes first still waits for
                // it: batches clear strictly in order.
                self.opening.insert(e, None);
                self.batches.insert(
                    e,
                    Batch::AwaitingKey {
                        seal,
                        tree,
                        envelopes,
                        requested_ms: self.now_ms,
                    },
                );
                self.events.push_back(Event::KeyRequested { seal });
            }
        }
    }

    fn start_opening(
        &mut self,
        e: BatchId,
        key: ReleasedBatchKey,
        tree: Arc<MerkleTree>,
        envelopes: Vec<ShapedEnvelope>,
    ) {
        self.batches.insert(e, Batch::Opening { tree });
        self.opening.entry(e).or_insert(None);
        self.jobs.push_back(OpenJob { key, envelopes });
    }

    /// Keyper `keyper`'s share of the key of batch `e`, whose key was
    /// requested ([`Event::KeyRequested`]). Returns whether the key is now
    /// complete (its open job queued).
    ///
    /// # Errors
    ///
    /// [`CustodianError`] for a share that does not count — a faulty
    /// keyper, a batch not awaiting its key — which the caller logs; the
    /// sequencer goes on and the key comes from the other keypers.
    pub fn handle_key_share(
        &mut self,
        now_ms: u64,
        e: BatchId,
        keyper: u16,
        share: &[u8; 32],
        attestation: &[u8; 64],
    ) -> Result<bool, CustodianError> {
        self.observe(now_ms);
        let Some(Batch::AwaitingKey { seal, .. }) = self.batches.get(&e) else {
            return Err(CustodianError::Share {
                e,
                reason: "the batch is not awaiting its key".into(),
            });
        };
        let seal = *seal;
        let Some(key) = self
            .custodian_mut()
            .add_share(&seal, keyper, share, attestation)?
        else {
            return Ok(false);
        };
        if let Some(Batch::AwaitingKey {
            tree, envelopes, ..
        }) = self.batches.remove(&e)
        {
            self.start_opening(e, key, tree, envelopes);
        }
        Ok(true)
    }

    /// Asks the custodian again for the keys it refused to take a request
    /// for, and the keypers again for every key awaited longer than
    /// [`KEY_REQUEST_RESEND_MS`].
    fn resend_key_requests(&mut self) {
        let now = self.now_ms;
        let refused: Vec<BatchId> = self
            .batches
            .iter()
            .filter(|(_, b)| matches!(b, Batch::Sealing { refused: true, .. }))
            .map(|(&e, _)| e)
            .collect();
        for e in refused {
            self.release(e);
        }
        for batch in self.batches.values_mut() {
            if let Batch::AwaitingKey {
                seal, requested_ms, ..
            } = batch
                && now.saturating_sub(*requested_ms) >= KEY_REQUEST_RESEND_MS
            {
                *requested_ms = now;
                self.events.push_back(Event::KeyRequested { seal: *seal });
            }
        }
    }

    /// Takes the result of an [`OpenJob`]: once every earlier batch is done,
    /// validates funding, clears, settles, and journals the outcome.
    ///
    /// A batch that cannot be processed — its envelopes did not open as
    /// sealed, clearing or settlement refused or panicked, all of which mean
    /// a bug — is voided ([`void_outcome`], [`Event::BatchVoided`]): nothing
    /// in it trades, and the sequencer goes on. Its void outcome is journaled
    /// like any other, so a replay never processes it again.
    ///
    /// # Errors
    ///
    /// [`SequencerError::Protocol`] for a job the sequencer did not hand out.
    pub fn handle_opened(&mut self, now_ms: u64, opened: OpenedJob) -> Result<(), SequencerError> {
        self.observe(now_ms);
        match self.opening.get_mut(&opened.e) {
            Some(slot @ None) => *slot = Some(opened),
            _ => {
                return Err(SequencerError::Protocol(format!(
                    "opened batch {} was not being opened",
                    opened.e
                )));
            }
        }
        while let Some(entry) = self.opening.first_entry() {
            if entry.get().is_none() {
                break;
            }
            let Some(job) = entry.remove() else { break };
            let e = job.e;
            let (outcome, input) = self.settle_opened(job)?;
            let mut result_lsn = self.next_lsn;
            for part in ResultPart::split(&outcome, self.limits.result_part_bytes) {
                result_lsn = self.push_journal(&SequencerRecord::ResultPart(part));
            }
            self.first_lsn.remove(&e);
            self.batches.insert(
                e,
                Batch::Publishing {
                    outcome: Arc::new(outcome),
                    input: input.map(Arc::new),
                    result_lsn,
                },
            );
        }
        Ok(())
    }

    /// Processes and settles one opened batch (returning its clearing
    /// input too), or voids it.
    fn settle_opened(
        &mut self,
        job: OpenedJob,
    ) -> Result<(BatchOutcome, Option<Vec<MarketInput>>), SequencerError> {
        let e = job.e;
        let Some(Batch::Opening { tree }) = self.batches.get(&e) else {
            return Err(SequencerError::Protocol(format!(
                "opened batch {e} is not being opened"
            )));
        };
        let tree = Arc::clone(tree);
        let attempt = job.result.and_then(|opened| {
            let (outcome, input) = process_batch_with_input(
                &opened,
                job.batch_secret,
                &self.ledger,
                &self.markets,
                &self.references,
                self.genesis.orders_per_account_per_batch_max,
            )
            .map_err(|error| error.to_string())?;
            // All or nothing: on an error the ledger is unchanged.
            apply_outcome(
                &outcome,
                &mut self.ledger,
                &self.markets,
                &mut self.references,
            )
            .map_err(|error| error.to_string())?;
            Ok((outcome, input))
        });
        let reason = match attempt {
            Ok((mut outcome, input)) => {
                outcome.release = job.release;
                return Ok((outcome, Some(input)));
            }
            Err(reason) => reason,
        };
        let mut outcome = void_outcome(
            e,
            tree.root(),
            job.batch_secret,
            tree.leaves(),
            &self.markets,
        );
        outcome.release = job.release;
        self.events.push_back(Event::BatchVoided { e, reason });
        Ok((outcome, None))
    }

    /// The next record to append to the journal, in order.
    pub fn poll_journal(&mut self) -> Option<JournalWrite> {
        self.journal.pop_front()
    }

    /// The next batch to open.
    pub fn poll_job(&mut self) -> Option<OpenJob> {
        self.jobs.pop_front()
    }

    /// The next event to deliver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the close
    /// of the batch open now.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let open = self.open_batch_at(self.now_ms);
        let due = self.genesis.schedule.close_ms(open)?;
        let resend = self
            .batches
            .values()
            .filter_map(|b| match b {
                Batch::AwaitingKey { requested_ms, .. } => {
                    Some(requested_ms.saturating_add(KEY_REQUEST_RESEND_MS))
                }
                _ => None,
            })
            .min();
        Some(
            due.max(self.genesis.schedule.genesis_ms)
                .min(resend.unwrap_or(u64::MAX)),
        )
    }

    /// Whether any work is waiting on the caller: journal writes, jobs,
    /// events, or durability.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.journal.is_empty()
            && self.jobs.is_empty()
            && self.events.is_empty()
            && self.durable_lsn + 1 == self.next_lsn
    }

    /// The bounds in force.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Batches holding envelopes that are not yet published (collecting,
    /// sealed or being cleared). Zero means nothing acknowledged is waiting.
    #[must_use]
    pub fn batches_pending(&self) -> usize {
        self.batches.len()
    }

    /// How long ago, at `now_ms`, the oldest batch sealed and not yet
    /// cleared closed, or this sequencer resumed if that is later (0 when
    /// none is): the backlog admission control bounds. A batch that closed
    /// while no sequencer ran (a restart, a failover) lags only from the
    /// resumption: the outage is no sign that opening cannot keep up.
    #[must_use]
    pub fn clear_lag_ms(&self, now_ms: u64) -> u64 {
        self.batches
            .iter()
            .find(|(_, b)| !matches!(b, Batch::Collecting { .. }))
            .and_then(|(&e, _)| self.genesis.schedule.close_ms(e))
            .map_or(0, |close| now_ms.saturating_sub(close.max(self.resumed_ms)))
    }

    /// The admission bound on [`clear_lag_ms`](Self::clear_lag_ms):
    /// [`Limits::clear_lag_max_ms`], or [`CLEAR_LAG_BATCHES_DEFAULT`] batch
    /// lengths.
    #[must_use]
    pub fn clear_lag_max_ms(&self) -> u64 {
        self.limits.clear_lag_max_ms.unwrap_or_else(|| {
            CLEAR_LAG_BATCHES_DEFAULT.saturating_mul(self.genesis.schedule.batch_length_ms)
        })
    }

    /// Batches sealed and not yet cleared (and published).
    #[must_use]
    pub fn batches_in_flight(&self) -> usize {
        self.batches
            .values()
            .filter(|b| !matches!(b, Batch::Collecting { .. }))
            .count()
    }

    /// The last LSN handed out: a record already queued is at or below it
    /// (0 before any).
    fn last_queued_lsn(&self) -> Lsn {
        self.next_lsn.saturating_sub(1)
    }

    fn observe(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    fn push_journal(&mut self, record: &SequencerRecord) -> Lsn {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        self.journal.push_back(JournalWrite {
            lsn,
            kind: record.kind(),
            payload: record.encode(),
        });
        lsn
    }
}

#[cfg(test)]
mod tests;

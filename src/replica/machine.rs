//! The state machine ([`StateMachine`]): applies committed entries to the
//! replica's local journal, in order, so that every replica's journal holds
//! the same records at the same LSNs (`spec/replication.md`, "Apply").
//!
//! What has been applied survives a restart through the journal itself
//! (re-applying an entry skips every record whose LSN the journal already
//! held when it was opened; a record at an LSN given since then is refused,
//! and the replica stops rather than keep two records at one LSN) and the
//! applied-state file, written with each snapshot and each
//! membership change. The records are durable in the Raft log before they
//! are applied, so the journal is synced only when asked
//! ([`Syncing::WhenAsked`]): before a checkpoint, before the applied state
//! is written (which never names records the journal could lose), and when
//! it closes. A snapshot is the newest checkpoint of the journal
//! and the records after it that a recovery reads, exactly what a single
//! node recovers from; installing one replaces the journal with them.
//! Building one holds the journal's files, so that the writer's checkpoints
//! and pruning cannot take them away meanwhile, and a build that fails
//! anyway does not stop the replica ([`SnapshotBuilder`]).

// openraft's storage traits fix the error type (`StorageError`, large);
// the helpers here return it as is.
#![allow(clippy::result_large_err)]

use std::fs::File;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use crossbeam_channel::{Receiver, Sender};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};

use crate::codec::{Reader, Writer};
use crate::journal::{
    FaultyStorage, FileHold, FsStorage, Journal, JournalConfig, JournalError, JournalWriter, Lsn,
    RECORD_KIND_MAX, RECORD_PAYLOAD_BYTES_MAX, ReadOnlyFsStorage, Record, Storage,
    StoredCheckpoint, Syncing, WriterEvent, read_checkpoints,
};

use super::certificate::{CommittedLog, CommittedSeals, log_entry_hash};
use super::codec::{get_opt_log_id, get_stored_membership, put_opt_log_id, put_stored_membership};
use super::{Applied, Proposal, ReplicaId, ReplicaNode, Replication};
use crate::envelope::SignedSeal;
use crate::sequencer::RecordKind;
use std::sync::Arc;

/// The applied-state file's name in the replica's Raft directory.
pub const APPLIED_FILE: &str = "applied";
/// The current snapshot's file name in the replica's Raft directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// The applied-state file's first eight bytes.
pub const APPLIED_MAGIC: [u8; 8] = *b"SBAPPL01";
/// A snapshot's first eight bytes.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SBSNAP01";
/// Niceness of the thread that builds a snapshot: the lowest priority.
const SNAPSHOT_NICENESS: libc::c_int = 19;

/// Longest a snapshot waits for the journal to make what was applied
/// durable.
const FLUSH_WAIT_MAX: Duration = Duration::from_secs(30);

/// The storage the replica's journal writes through.
pub type ReplicaStorage = FaultyStorage<FsStorage>;

type Result<T> = std::result::Result<T, StorageError<ReplicaId>>;

/// What the state machine tells its subscriber, in log order.
#[derive(Clone, Debug)]
pub enum Committed {
    /// A committed entry was applied; `proposal` is its records (`None`
    /// for a blank entry or a membership change).
    Entry {
        /// The entry's log id.
        log_id: LogId<ReplicaId>,
        /// Its records, now handed to the journal.
        proposal: Option<Proposal>,
    },
    /// A snapshot replaced the journal: whatever was built from the
    /// journal must be built again.
    Installed {
        /// The snapshot's last log id.
        last_log_id: Option<LogId<ReplicaId>>,
    },
}

/// A checkpoint of the sequencer for the local journal's writer
/// (`spec/replication.md`, "Checkpoints").
#[derive(Clone, Debug)]
pub struct CheckpointJob {
    /// The state covers every record below this LSN.
    pub lsn: Lsn,
    /// The first LSN a recovery from it reads.
    pub replay_from: Lsn,
    /// The encoded checkpoint.
    pub payload: Vec<u8>,
    /// For a leader's checkpoint, which may cover records not committed
    /// yet: the leader (term and id) that proposed them. It is written only
    /// if the entry that holds its last record was that leader's; `None`
    /// for a checkpoint of committed records only.
    pub proposer: Option<CommittedLeaderId<ReplicaId>>,
}

/// How many applied entries the state machine remembers the proposer of,
/// to check a leader's checkpoint against.
const RECENT_ENTRIES_MAX: usize = 1 << 16;

/// The replicated state machine of one replica: its local journal.
pub struct StateMachine {
    journal_dir: PathBuf,
    raft_dir: PathBuf,
    writer: Option<JournalWriter<ReplicaStorage>>,
    durable_lsn: Lsn,
    /// The journal's next LSN when it was opened (or replaced by a
    /// snapshot): an entry applied again after a restart skips its records
    /// below it; a record below the journal's next LSN but not below this
    /// one would be a second record at an LSN this run already gave.
    reapply_below: Lsn,
    last_applied: Option<LogId<ReplicaId>>,
    membership: StoredMembership<ReplicaId, ReplicaNode>,
    snapshot: Option<SnapshotMeta<ReplicaId, ReplicaNode>>,
    subscriber: Option<Sender<Committed>>,
    checkpoints: Option<Receiver<CheckpointJob>>,
    /// Checkpoints waiting for their last record to be applied.
    waiting: Vec<CheckpointJob>,
    /// The proposer of each recently applied entry, by its last LSN.
    recent: BTreeMap<Lsn, (Lsn, CommittedLeaderId<ReplicaId>)>,
    /// The seals applied, for the replica's attestations.
    seals: Option<Arc<CommittedSeals>>,
    /// The committee log entries applied, for the same.
    log: Option<Arc<CommittedLog>>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("journal_dir", &self.journal_dir)
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

fn io_err(error: impl std::fmt::Display) -> AnyError {
    AnyError::error(error.to_string())
}

fn sm_write(error: impl std::fmt::Display) -> StorageError<ReplicaId> {
    StorageIOError::write_state_machine(io_err(error)).into()
}

fn sm_read(error: impl std::fmt::Display) -> StorageError<ReplicaId> {
    StorageIOError::read_state_machine(io_err(error)).into()
}

fn open_writer(
    journal_dir: &Path,
) -> std::result::Result<JournalWriter<ReplicaStorage>, JournalError> {
    let storage = FsStorage::new(journal_dir).map_err(|source| JournalError::Io {
        path: journal_dir.to_path_buf(),
        source,
    })?;
    let (journal, _) =
        Journal::open_streaming(FaultyStorage::new(storage, None), JournalConfig::default())?;
    JournalWriter::spawn_syncing(journal, true, Syncing::WhenAsked)
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// The applied-state file: magic ‖ last applied log id ‖ membership ‖
/// CRC-32C of what precedes it.
fn encode_applied(
    last_applied: Option<&LogId<ReplicaId>>,
    membership: &StoredMembership<ReplicaId, ReplicaNode>,
) -> Vec<u8> {
    let mut out = APPLIED_MAGIC.to_vec();
    put_opt_log_id(&mut out, last_applied);
    put_stored_membership(&mut out, membership);
    let crc = crc32c::crc32c(&out);
    out.put_u32(crc);
    out
}

type AppliedState = (
    Option<LogId<ReplicaId>>,
    StoredMembership<ReplicaId, ReplicaNode>,
);

fn decode_applied(bytes: &[u8]) -> std::result::Result<AppliedState, String> {
    let body_len = bytes
        .len()
        .checked_sub(4)
        .ok_or("the applied-state file is truncated")?;
    let (body, crc) = bytes.split_at(body_len);
    if body.get(..8) != Some(&APPLIED_MAGIC[..]) {
        return Err("not a sealbatch applied-state file".into());
    }
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err("the applied-state file's checksum does not match".into());
    }
    let mut r = Reader::new(&body[8..]);
    let applied = get_opt_log_id(&mut r).map_err(|error| error.to_string())?;
    let membership = get_stored_membership(&mut r).map_err(|error| error.to_string())?;
    r.finish().map_err(|error| error.to_string())?;
    Ok((applied, membership))
}

impl StateMachine {
    /// Opens the state machine over the journal in `journal_dir` (created
    /// if needed), with its applied state and snapshot in `raft_dir`.
    ///
    /// # Errors
    ///
    /// [`JournalError`] if the journal cannot be opened, or a damaged
    /// applied-state file (as [`JournalError::Io`]).
    pub fn open(
        journal_dir: &Path,
        raft_dir: &Path,
    ) -> std::result::Result<StateMachine, JournalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        std::fs::create_dir_all(journal_dir).map_err(io(journal_dir))?;
        std::fs::create_dir_all(raft_dir).map_err(io(raft_dir))?;
        let writer = open_writer(journal_dir)?;
        let durable_lsn = writer.next_lsn() - 1;
        let applied_path = raft_dir.join(APPLIED_FILE);
        let (last_applied, membership) = match std::fs::read(&applied_path) {
            Ok(bytes) => decode_applied(&bytes).map_err(|reason| JournalError::Io {
                path: applied_path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, reason),
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                (None, StoredMembership::default())
            }
            Err(error) => return Err(io(&applied_path)(error)),
        };
        let snapshot = match std::fs::read(raft_dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => decode_snapshot(&bytes).ok().map(|s| s.meta),
            Err(_) => None,
        };
        Ok(StateMachine {
            journal_dir: journal_dir.to_path_buf(),
            raft_dir: raft_dir.to_path_buf(),
            writer: Some(writer),
            durable_lsn,
            reapply_below: durable_lsn + 1,
            last_applied,
            membership,
            snapshot,
            subscriber: None,
            checkpoints: None,
            waiting: Vec::new(),
            recent: BTreeMap::new(),
            seals: None,
            log: None,
        })
    }

    /// Sends every committed entry applied from now on to `subscriber`.
    pub fn subscribe(&mut self, subscriber: Sender<Committed>) {
        self.subscriber = Some(subscriber);
    }

    /// Records every seal it applies in `seals` (which the replica's
    /// attestations answer from).
    pub fn record_seals(&mut self, seals: Arc<CommittedSeals>) {
        self.seals = Some(seals);
    }

    /// Records every committee log entry it applies in `log` (the same).
    pub fn record_log(&mut self, log: Arc<CommittedLog>) {
        self.log = Some(log);
    }

    /// Remembers a committed record if it is a seal or a committee log
    /// entry (`u64le(position) ‖ entry`).
    fn seal_applied(&self, kind: u8, payload: &[u8]) {
        if kind == RecordKind::Seal as u8
            && let Some(seals) = &self.seals
            && let Ok(seal) = SignedSeal::from_bytes(payload)
        {
            seals.applied(seal.e, seal.count, seal.root);
        }
        if kind == RecordKind::KeyperLog as u8
            && let Some(log) = &self.log
            && let Some((position, entry)) = payload.split_first_chunk::<8>()
        {
            log.applied(u64::from_le_bytes(*position), log_entry_hash(entry));
        }
    }

    /// Takes the sequencer's checkpoints from `checkpoints`: each is handed
    /// to the journal's writer once its records are applied (and dropped if
    /// they are not the records it was taken over).
    pub fn take_checkpoints(&mut self, checkpoints: Receiver<CheckpointJob>) {
        self.checkpoints = Some(checkpoints);
    }

    /// Hands the journal's writer every waiting checkpoint whose records are
    /// applied, if they are the ones it covers.
    fn checkpoint_waiting(&mut self) -> Result<()> {
        if let Some(checkpoints) = &self.checkpoints {
            self.waiting.extend(checkpoints.try_iter());
        }
        if self.waiting.is_empty() {
            return Ok(());
        }
        let next = self.next_lsn();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|job| job.lsn <= next);
        self.waiting = waiting;
        for job in ready {
            let last = job.lsn - 1;
            let proposer = self
                .recent
                .range(last..)
                .next()
                .filter(|(_, (first, _))| *first <= last)
                .map(|(_, (_, id))| *id);
            let valid = match job.proposer {
                None => true,
                // Before the remembered entries, or in another leader's:
                // not provably the records the checkpoint covers.
                Some(expected) => proposer == Some(expected) && last > Lsn::NONE,
            };
            if !valid {
                tracing::debug!(
                    lsn = job.lsn.get(),
                    "a leader's checkpoint over records it did not commit is dropped"
                );
                continue;
            }
            self.writer()?
                .checkpoint(job.lsn, job.replay_from, job.payload)
                .map_err(sm_write)?;
        }
        Ok(())
    }

    /// The next LSN the journal will give.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.writer
            .as_ref()
            .map_or(Lsn::FIRST, JournalWriter::next_lsn)
    }

    fn writer(&mut self) -> Result<&mut JournalWriter<ReplicaStorage>> {
        self.writer
            .as_mut()
            .ok_or_else(|| sm_write("the journal writer is gone"))
    }

    /// Takes the journal writer's events; fails if the journal failed.
    fn drain(&mut self) -> Result<()> {
        let writer = self.writer()?;
        let mut durable = None;
        let mut failed = None;
        while let Some(event) = writer.try_event() {
            match event {
                WriterEvent::Durable { lsn, .. } => durable = Some(lsn),
                WriterEvent::Failed(error) => failed = Some(error),
                _ => {}
            }
        }
        if let Some(lsn) = durable {
            self.durable_lsn = self.durable_lsn.max(lsn);
        }
        match failed {
            Some(error) => Err(sm_write(error)),
            None => Ok(()),
        }
    }

    /// Waits until every record handed to the journal is durable.
    fn flush(&mut self) -> Result<()> {
        self.drain()?;
        let target = self.next_lsn() - 1;
        if self.durable_lsn >= target {
            return Ok(());
        }
        self.writer()?.sync().map_err(sm_write)?;
        let deadline = std::time::Instant::now() + FLUSH_WAIT_MAX;
        while self.durable_lsn < target {
            let writer = self.writer()?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match writer.events().recv_timeout(left) {
                Ok(WriterEvent::Durable { lsn, .. }) => {
                    self.durable_lsn = self.durable_lsn.max(lsn)
                }
                Ok(WriterEvent::Failed(error)) => return Err(sm_write(error)),
                Ok(_) => {}
                Err(_) => return Err(sm_write("the journal made nothing durable in 30 s")),
            }
        }
        Ok(())
    }

    fn save_applied(&self) -> Result<()> {
        let bytes = encode_applied(self.last_applied.as_ref(), &self.membership);
        write_atomically(&self.raft_dir, APPLIED_FILE, &bytes).map_err(sm_write)
    }

    fn apply_proposal(&mut self, log_id: &LogId<ReplicaId>, proposal: &Proposal) -> Result<()> {
        let reapply_below = self.reapply_below;
        for (lsn, kind, payload) in proposal.records() {
            let next = self.next_lsn();
            // Applied before a restart: the journal has it.
            let again = lsn < next && lsn < reapply_below;
            if lsn != next && !again {
                return Err(StorageIOError::apply(
                    *log_id,
                    io_err(format!(
                        "entry record LSN {lsn}, but the journal is at LSN {next} (a record \
                         below it is skipped only if it was applied before the journal was opened)"
                    )),
                )
                .into());
            }
            // Only a record this journal holds counts as an applied seal.
            self.seal_applied(kind, payload);
            if again {
                continue;
            }
            self.writer()?
                .append(kind, payload.to_vec())
                .map_err(|error| StorageIOError::apply(*log_id, io_err(error)))?;
        }
        Ok(())
    }

    fn notify(&mut self, committed: Committed) {
        if let Some(subscriber) = &self.subscriber
            && subscriber.send(committed).is_err()
        {
            self.subscriber = None;
        }
    }
}

/// A snapshot, decoded.
struct SnapshotData {
    meta: SnapshotMeta<ReplicaId, ReplicaNode>,
    /// The checkpoint it starts from: its LSN, replay-from LSN and payload.
    checkpoint: Option<(Lsn, Lsn, Vec<u8>)>,
    first_lsn: Lsn,
    records: Vec<(u8, Vec<u8>)>,
}

/// Most records a snapshot holds.
const SNAPSHOT_RECORDS_MAX: usize = 1 << 28;

fn decode_snapshot(bytes: &[u8]) -> std::result::Result<SnapshotData, String> {
    if bytes.get(..8) != Some(&SNAPSHOT_MAGIC[..]) {
        return Err("not a sealbatch snapshot".into());
    }
    let mut r = Reader::new(&bytes[8..]);
    let e = |e: crate::codec::DecodeError| e.to_string();
    let last_log_id = get_opt_log_id(&mut r).map_err(e)?;
    let last_membership = get_stored_membership(&mut r).map_err(e)?;
    let id = r
        .blob("snapshot id", super::codec::SNAPSHOT_ID_LEN_MAX)
        .map_err(e)?;
    let snapshot_id = String::from_utf8(id.to_vec()).map_err(|_| "a snapshot id is not UTF-8")?;
    let checkpoint = match r.u8("checkpoint presence").map_err(e)? {
        0 => None,
        1 => {
            let lsn = Lsn(r.u64("checkpoint LSN").map_err(e)?);
            let replay_from = Lsn(r.u64("checkpoint replay-from").map_err(e)?);
            let payload = r.blob("checkpoint", usize::MAX >> 1).map_err(e)?.to_vec();
            Some((lsn, replay_from, payload))
        }
        _ => return Err("bad checkpoint presence byte".into()),
    };
    let first_lsn = Lsn(r.u64("first LSN").map_err(e)?);
    let count = r.count("records", SNAPSHOT_RECORDS_MAX).map_err(e)?;
    let mut records = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let kind = r.u8("record kind").map_err(e)?;
        if !(1..=RECORD_KIND_MAX).contains(&kind) {
            return Err(format!("a record of kind {kind}"));
        }
        records.push((
            kind,
            r.blob("record", RECORD_PAYLOAD_BYTES_MAX)
                .map_err(e)?
                .to_vec(),
        ));
    }
    r.finish().map_err(e)?;
    if first_lsn == Lsn::NONE {
        return Err("a snapshot's records start at LSN 0".into());
    }
    Ok(SnapshotData {
        meta: SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        },
        checkpoint,
        first_lsn,
        records,
    })
}

/// Builds a snapshot of the journal as it was when the builder was made.
///
/// **Pruning.** The journal's writer goes on meanwhile: it writes
/// checkpoints, removes those superseded (it keeps the newest two) and its
/// pruning thread removes the segments below them. So the builder holds the
/// journal's files ([`FileHolds`](crate::journal::FileHolds)) from the
/// moment it is made until its build has read them: every checkpoint then
/// on disk covers at most the snapshot's records, the build chooses the
/// newest usable one, and its file and the segments with the records from
/// its `replay_from` on are still there when they are opened. Without the
/// hold, checkpoints written after the builder was made could supersede
/// every one the snapshot can use, and let the records it needs be pruned.
/// What the writer could not remove meanwhile, the first checkpoint after
/// the hold removes.
///
/// **Failure.** Openraft takes a failed build for a failed storage and stops
/// the replica, though a replica that cannot build a snapshot can go on
/// serving (its log is only not purged). So a build that fails (an I/O
/// error, a journal not made durable, a snapshot file that cannot be
/// written) is logged, and after [`SNAPSHOT_RETRY_AFTER`] the builder
/// answers with the snapshot of nothing applied (no last log id, no
/// records), which is never newer than the snapshot openraft has: openraft
/// keeps its own, purges nothing, and asks for a snapshot again at a later
/// commit. The wait keeps openraft from asking again at every commit
/// meanwhile (it asks while one is being built only once it is done).
pub struct SnapshotBuilder {
    job: SnapshotJob,
    /// The hold on the journal's files, from when the builder was made
    /// until the first build has read them.
    hold: Option<FileHold>,
    /// How long a failed build waits before it answers.
    retry_after: Duration,
}

/// How long a snapshot build that failed waits before it answers (with
/// nothing newer than openraft's snapshot), so that openraft asks for the
/// next one no sooner.
pub const SNAPSHOT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a build reads and writes, moved to the thread that builds.
#[derive(Clone, Debug)]
struct SnapshotJob {
    journal_dir: PathBuf,
    raft_dir: PathBuf,
    meta: SnapshotMeta<ReplicaId, ReplicaNode>,
    /// The last LSN the snapshot holds.
    last_lsn: Lsn,
    /// Why the journal could not be made durable first, if it could not:
    /// then no snapshot is built (the log below it must not be purged).
    unflushed: Option<String>,
}

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
enum SnapshotError {
    /// The journal could not be made durable when the builder was made.
    #[error("the journal is not durable: {0}")]
    NotDurable(String),
    /// Reading the journal's checkpoints or records failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The records the chosen checkpoint needs are not in the journal.
    #[error("a snapshot needs the journal's records from LSN {from}, it has them from LSN {first}")]
    MissingRecords {
        /// The checkpoint's `replay_from` (1 without a checkpoint).
        from: Lsn,
        /// The first record found from it on.
        first: Lsn,
    },
    /// The snapshot file could not be written.
    #[error("writing the snapshot file: {0}")]
    Write(#[source] io::Error),
    /// The thread that builds could not be started.
    #[error("starting the snapshot thread: {0}")]
    Thread(#[source] io::Error),
    /// The thread that builds stopped without an answer.
    #[error("the snapshot thread stopped")]
    ThreadStopped,
}

/// What a snapshot holds of the journal: the newest usable checkpoint at or
/// below the snapshot's next LSN, and the records from its `replay_from`
/// (from LSN 1 without one) to the snapshot's last LSN.
#[derive(Debug)]
struct JournalPart {
    checkpoint: Option<StoredCheckpoint>,
    from: Lsn,
    records: Vec<Record>,
}

/// Reads the [`JournalPart`] of a snapshot whose last record is `last_lsn`
/// from the journal in `storage`, changing nothing. The caller holds the
/// journal's files (see [`SnapshotBuilder`]) from before the checkpoints
/// it may use were written at the latest.
fn read_journal_part<S: Storage + Clone>(
    mut storage: S,
    last_lsn: Lsn,
) -> std::result::Result<JournalPart, SnapshotError> {
    let checkpoint = read_checkpoints(&mut storage)?
        .into_iter()
        .filter_map(|found| found.checkpoint.ok())
        .find(|c| c.lsn <= last_lsn + 1);
    let from = checkpoint.as_ref().map_or(Lsn::FIRST, |c| c.replay_from);
    let recovery = Journal::open_read_only(storage, JournalConfig::default())?;
    let mut records = Vec::new();
    for record in recovery.records.skip_below(from) {
        let record = record?;
        // Whole segments below are skipped; records below in the first
        // segment read are skipped here.
        if record.lsn < from {
            continue;
        }
        if record.lsn > last_lsn {
            break;
        }
        records.push(record);
    }
    let first = records.first().map_or(last_lsn + 1, |r| r.lsn);
    if first != from && !(records.is_empty() && from > last_lsn) {
        return Err(SnapshotError::MissingRecords { from, first });
    }
    Ok(JournalPart {
        checkpoint,
        from,
        records,
    })
}

/// The bytes of a snapshot (`spec/replication.md`, "Snapshots").
fn encode_snapshot(meta: &SnapshotMeta<ReplicaId, ReplicaNode>, part: &JournalPart) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    put_opt_log_id(&mut out, meta.last_log_id.as_ref());
    put_stored_membership(&mut out, &meta.last_membership);
    out.put_blob(meta.snapshot_id.as_bytes());
    match &part.checkpoint {
        Some(c) => {
            out.put_u8(1);
            out.put_u64(c.lsn.get());
            out.put_u64(c.replay_from.get());
            out.put_blob(&c.payload);
        }
        None => out.put_u8(0),
    }
    out.put_u64(part.from.get());
    out.put_u32(part.records.len() as u32);
    for record in &part.records {
        out.put_u8(record.kind);
        out.put_blob(&record.payload);
    }
    out
}

/// The snapshot of nothing applied: what a build that failed answers, since
/// openraft keeps the snapshot it has unless it is given a newer one.
fn nothing_applied() -> Snapshot<Replication> {
    let meta = SnapshotMeta {
        last_log_id: None,
        last_membership: StoredMembership::default(),
        snapshot_id: "none-0".into(),
    };
    let empty = JournalPart {
        checkpoint: None,
        from: Lsn::FIRST,
        records: Vec::new(),
    };
    let bytes = encode_snapshot(&meta, &empty);
    Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(bytes)),
    }
}

impl SnapshotJob {
    /// Reads the journal, releases `hold` (the files are read), and writes
    /// the snapshot file.
    fn build(&self, hold: Option<FileHold>) -> std::result::Result<Vec<u8>, SnapshotError> {
        if let Some(reason) = &self.unflushed {
            return Err(SnapshotError::NotDurable(reason.clone()));
        }
        let storage =
            ReadOnlyFsStorage::new(&self.journal_dir).map_err(|source| JournalError::Io {
                path: self.journal_dir.clone(),
                source,
            })?;
        let part = read_journal_part(storage, self.last_lsn)?;
        drop(hold);
        let out = encode_snapshot(&self.meta, &part);
        write_atomically(&self.raft_dir, SNAPSHOT_FILE, &out).map_err(SnapshotError::Write)?;
        Ok(out)
    }
}

impl SnapshotBuilder {
    /// Builds on a thread of its own, holding the journal's files until it
    /// has read them.
    async fn build_on_its_thread(&mut self) -> std::result::Result<Vec<u8>, SnapshotError> {
        // Reading the journal and writing the snapshot file block and take
        // a while: on a thread of their own at the lowest priority, not on
        // the runtime's, which carry the replica's Raft messages and its
        // clients, and behind everything a receipt waits for.
        let job = self.job.clone();
        let hold = self.hold.take();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("sealbatch-snapshot".into())
            .spawn(move || {
                // SAFETY: setpriority has no memory-safety preconditions;
                // on Linux, PRIO_PROCESS with who = 0 names the calling
                // thread. A failure leaves the default priority.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, SNAPSHOT_NICENESS);
                }
                let _ = tx.send(job.build(hold));
            })
            .map_err(SnapshotError::Thread)?;
        rx.await.map_err(|_| SnapshotError::ThreadStopped)?
    }
}

impl RaftSnapshotBuilder<Replication> for SnapshotBuilder {
    /// The snapshot of the journal up to the builder's last LSN; never an
    /// error (see [`SnapshotBuilder`], "Failure").
    async fn build_snapshot(&mut self) -> Result<Snapshot<Replication>> {
        let started = std::time::Instant::now();
        match self.build_on_its_thread().await {
            Ok(bytes) => {
                tracing::info!(
                    bytes = bytes.len(),
                    last_lsn = self.job.last_lsn.get(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "snapshot built"
                );
                Ok(Snapshot {
                    meta: self.job.meta.clone(),
                    snapshot: Box::new(Cursor::new(bytes)),
                })
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    last_lsn = self.job.last_lsn.get(),
                    retry_after_s = self.retry_after.as_secs(),
                    "the snapshot could not be built; the replica goes on with the snapshot \
                     it has and its log unpurged, and builds one again later"
                );
                tokio::time::sleep(self.retry_after).await;
                Ok(nothing_applied())
            }
        }
    }
}

impl RaftStateMachine<Replication> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(
        Option<LogId<ReplicaId>>,
        StoredMembership<ReplicaId, ReplicaNode>,
    )> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<Replication>> + Send,
        I::IntoIter: Send,
    {
        self.drain()?;
        let mut applied = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let (proposal, last_lsn) = match entry.payload {
                EntryPayload::Blank => (None, None),
                EntryPayload::Normal(proposal) => {
                    self.apply_proposal(&log_id, &proposal)?;
                    let last = proposal.last_lsn();
                    self.recent
                        .insert(last, (proposal.first_lsn(), log_id.leader_id));
                    if self.recent.len() > RECENT_ENTRIES_MAX {
                        self.recent.pop_first();
                    }
                    (Some(proposal), Some(last))
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(log_id), membership);
                    self.last_applied = Some(log_id);
                    // The applied state never claims more than the journal
                    // holds durably: a restart re-applies from it.
                    self.flush()?;
                    self.save_applied()?;
                    (None, None)
                }
            };
            self.last_applied = Some(log_id);
            self.notify(Committed::Entry { log_id, proposal });
            applied.push(Applied { last_lsn });
        }
        self.checkpoint_waiting()?;
        Ok(applied)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Every record applied so far must be on disk before the snapshot
        // reads them, and the applied state with them, since the log below
        // the snapshot may be purged once it is built.
        let unflushed = match self.flush().and_then(|()| self.save_applied()) {
            Ok(()) => None,
            Err(error) => {
                tracing::error!(%error, "a snapshot could not flush the journal");
                Some(error.to_string())
            }
        };
        let last_lsn = self.next_lsn() - 1;
        // Every checkpoint on disk now covers at most the records up to
        // `last_lsn`: held, none is removed before the build has read it
        // (taking the hold waits at most for one removal under way).
        let hold = self
            .writer
            .as_ref()
            .map(|writer| writer.file_holds().hold());
        let snapshot_id = match &self.last_applied {
            Some(id) => format!(
                "{}-{}-{}-{last_lsn}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("none-{last_lsn}"),
        };
        SnapshotBuilder {
            job: SnapshotJob {
                journal_dir: self.journal_dir.clone(),
                raft_dir: self.raft_dir.clone(),
                meta: SnapshotMeta {
                    last_log_id: self.last_applied,
                    last_membership: self.membership.clone(),
                    snapshot_id,
                },
                last_lsn,
                unflushed,
            },
            hold,
            retry_after: SNAPSHOT_RETRY_AFTER,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<ReplicaId, ReplicaNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let bytes = snapshot.into_inner();
        let data = decode_snapshot(&bytes)
            .map_err(|error| StorageIOError::read_snapshot(None, io_err(error)))?;
        if data.meta.last_log_id != meta.last_log_id {
            return Err(sm_read("the snapshot's data is not the snapshot announced"));
        }
        // The journal is replaced: stop its writer after what it holds is
        // written, remove its files, and write the snapshot's records.
        if let Some(writer) = self.writer.take() {
            writer.close().map_err(sm_write)?;
        }
        std::fs::remove_dir_all(&self.journal_dir).map_err(sm_write)?;
        std::fs::create_dir_all(&self.journal_dir).map_err(sm_write)?;
        let storage = FsStorage::new(&self.journal_dir).map_err(sm_write)?;
        let mut journal = Journal::create_at(
            FaultyStorage::new(storage, None),
            JournalConfig::default(),
            data.first_lsn,
        )
        .map_err(sm_write)?;
        for (kind, payload) in &data.records {
            self.seal_applied(*kind, payload);
            journal.append(*kind, payload).map_err(sm_write)?;
        }
        journal.sync().map_err(sm_write)?;
        if let Some((lsn, replay_from, payload)) = &data.checkpoint {
            journal
                .write_checkpoint(*lsn, *replay_from, payload, false)
                .map_err(sm_write)?;
        }
        self.durable_lsn = journal.next_lsn() - 1;
        self.reapply_below = journal.next_lsn();
        self.writer = Some(
            JournalWriter::spawn_syncing(journal, true, Syncing::WhenAsked).map_err(sm_write)?,
        );
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.recent.clear();
        self.waiting.clear();
        self.save_applied()?;
        write_atomically(&self.raft_dir, SNAPSHOT_FILE, &bytes).map_err(sm_write)?;
        self.snapshot = Some(meta.clone());
        self.notify(Committed::Installed {
            last_log_id: meta.last_log_id,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Replication>>> {
        let path = self.raft_dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(sm_read(error)),
        };
        let data = decode_snapshot(&bytes)
            .map_err(|error| StorageIOError::read_snapshot(None, io_err(error)))?;
        self.snapshot = Some(data.meta.clone());
        Ok(Some(Snapshot {
            meta: data.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

impl Drop for StateMachine {
    fn drop(&mut self) {
        // A checkpoint the driver took as it stopped (`spec/sequencer.md`:
        // a graceful stop writes one), if its records are all applied.
        if let Err(error) = self.checkpoint_waiting() {
            tracing::warn!(%error, "the replica's last checkpoint was not written");
        }
        if let Some(writer) = self.writer.take()
            && let Err(error) = writer.close()
        {
            tracing::warn!(%error, "the replica's journal did not close cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::journal::{SEGMENT_BYTES_MIN, SimFileHandle, SimStorage};
    use crate::sequencer::JournalWrite;

    /// The journal writer's work that a snapshot build may meet while it
    /// reads.
    type Work = Box<dyn FnOnce() + Send>;

    /// A journal directory as a snapshot build reads it, with the journal
    /// writer's `work` run right after the `at`-th listing (from 0) returns:
    /// between a listing and the opening of the files it named.
    #[derive(Clone)]
    struct Interleaved {
        disk: SimStorage,
        listings: Arc<Mutex<usize>>,
        at: usize,
        work: Arc<Mutex<Option<Work>>>,
    }

    impl Storage for Interleaved {
        type File = SimFileHandle;

        fn list(&mut self) -> io::Result<Vec<String>> {
            let names = self.disk.list()?;
            let listing = {
                let mut listings = self.listings.lock().expect("not poisoned");
                *listings += 1;
                *listings - 1
            };
            if listing == self.at
                && let Some(work) = self.work.lock().expect("not poisoned").take()
            {
                work();
            }
            Ok(names)
        }

        fn open(&mut self, name: &str) -> io::Result<SimFileHandle> {
            self.disk.open(name)
        }

        fn create(&mut self, name: &str) -> io::Result<SimFileHandle> {
            self.disk.create(name)
        }

        fn remove(&mut self, name: &str) -> io::Result<()> {
            self.disk.remove(name)
        }

        fn sync_dir(&mut self) -> io::Result<()> {
            self.disk.sync_dir()
        }

        fn path_of(&self, name: &str) -> PathBuf {
            self.disk.path_of(name)
        }
    }

    fn payload(lsn: u64) -> Vec<u8> {
        lsn.to_le_bytes().repeat(12)
    }

    /// When the writer's work runs, relative to the build's reading.
    #[derive(Clone, Copy, Debug)]
    enum When {
        /// After the builder was made, before the build reads anything.
        BeforeReading,
        /// Between listing the checkpoint files and opening them.
        AfterListingCheckpoints,
        /// Between listing the segments and reading them.
        AfterListingSegments,
    }

    /// A journal of 200 records in 4 KiB segments with checkpoints at 100
    /// and 150; a snapshot builder made at LSN 200; then, while it reads,
    /// the writer journals 200 more records and two checkpoints (at 300 and
    /// 350), which supersede the two before and let the segments below LSN
    /// 290 be pruned. The snapshot must still be the checkpoint at 150 and
    /// the records from its `replay_from` (140) to 200.
    fn build_while_the_writer_prunes(when: When) {
        let disk = SimStorage::new(5);
        let config = JournalConfig {
            segment_bytes_max: SEGMENT_BYTES_MIN,
        };
        let (mut journal, _) = Journal::open(disk.clone(), config).expect("opens");
        for lsn in 1..=200 {
            journal.append(1, &payload(lsn)).expect("appends");
        }
        journal
            .write_checkpoint(Lsn(100), Lsn(90), b"at 100", true)
            .expect("checkpoint");
        journal
            .write_checkpoint(Lsn(150), Lsn(140), b"at 150", true)
            .expect("checkpoint");
        // Taken when the builder is made, as `get_snapshot_builder` does.
        let hold = journal.file_holds().hold();
        let holds = journal.file_holds().clone();
        let mut work: Option<Work> = Some(Box::new(move || {
            for lsn in 201..=400 {
                journal.append(1, &payload(lsn)).expect("appends");
            }
            journal
                .write_checkpoint(Lsn(300), Lsn(290), b"at 300", true)
                .expect("checkpoint");
            journal
                .write_checkpoint(Lsn(350), Lsn(340), b"at 350", true)
                .expect("checkpoint");
        }));
        let at = match when {
            When::BeforeReading => {
                if let Some(work) = work.take() {
                    work();
                }
                usize::MAX
            }
            When::AfterListingCheckpoints => 0,
            When::AfterListingSegments => 1,
        };
        let storage = Interleaved {
            disk: disk.clone(),
            listings: Arc::new(Mutex::new(0)),
            at,
            work: Arc::new(Mutex::new(work)),
        };
        let part = read_journal_part(storage, Lsn(200));
        drop(hold);
        assert!(!holds.held());
        let part = part.unwrap_or_else(|error| panic!("{when:?}: the build failed: {error}"));
        let checkpoint = part.checkpoint.expect("a checkpoint");
        assert_eq!(
            (
                checkpoint.lsn,
                checkpoint.replay_from,
                &checkpoint.payload[..]
            ),
            (Lsn(150), Lsn(140), &b"at 150"[..]),
            "{when:?}"
        );
        assert_eq!(part.from, 140);
        let lsns: Vec<Lsn> = part.records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, (140..=200).map(Lsn).collect::<Vec<_>>(), "{when:?}");
        assert!(
            part.records
                .iter()
                .all(|r| r.payload == payload(r.lsn.get()))
        );
    }

    #[test]
    fn a_snapshot_build_is_not_disturbed_by_the_writer_pruning_before_it_reads() {
        build_while_the_writer_prunes(When::BeforeReading);
    }

    #[test]
    fn a_snapshot_build_is_not_disturbed_by_checkpoints_removed_after_it_listed_them() {
        build_while_the_writer_prunes(When::AfterListingCheckpoints);
    }

    #[test]
    fn a_snapshot_build_is_not_disturbed_by_segments_pruned_after_it_listed_them() {
        build_while_the_writer_prunes(When::AfterListingSegments);
    }
    fn entry(index: u64) -> Entry<Replication> {
        let writes = [JournalWrite {
            lsn: Lsn(index),
            kind: RecordKind::Config,
            payload: payload(index),
        }];
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal::new(&writes).expect("a proposal")),
        }
    }

    /// A snapshot that cannot be built (here its file cannot be written) is
    /// no storage error, which would stop the replica: the build answers
    /// with nothing newer than the snapshot openraft has, the replica goes
    /// on applying, and a later build succeeds.
    #[tokio::test]
    async fn a_snapshot_that_cannot_be_built_leaves_the_replica_working() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let raft = dir.path().join("raft");
        let mut machine = StateMachine::open(&dir.path().join("journal"), &raft).expect("opens");
        machine.apply([entry(1)]).await.expect("applied");
        let mut builder = machine.get_snapshot_builder().await;
        builder.retry_after = Duration::ZERO;
        // The snapshot file's temporary name is taken by a directory.
        std::fs::create_dir(raft.join("snapshot.tmp")).expect("made");
        let built = builder
            .build_snapshot()
            .await
            .expect("a failed build is no storage error");
        assert_eq!(built.meta.last_log_id, None, "nothing new was built");
        let holds = machine.writer.as_ref().expect("a writer").file_holds();
        assert!(
            !holds.held(),
            "the failed build released the journal's files"
        );
        assert!(
            machine
                .get_current_snapshot()
                .await
                .expect("reads")
                .is_none()
        );

        std::fs::remove_dir(raft.join("snapshot.tmp")).expect("removed");
        machine.apply([entry(2)]).await.expect("applied");
        let built = machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("built");
        assert_eq!(built.meta.last_log_id.map(|id| id.index), Some(2));
    }
}

//! The journal's writer thread, with its checkpoint and pruning jobs:
//! [`JournalWriter`]. The node journals through it, and so does the journal
//! benchmark.

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{
    CheckpointWritten, FileHolds, Journal, JournalError, Lsn, RECORD_PAYLOAD_BYTES_MAX, Storage,
    is_record_kind, prune_segments_below,
};

/// Most records the writer thread puts in one group commit.
pub const WRITER_GROUP_RECORDS_MAX: usize = 4096;

/// When the writer thread syncs what it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syncing {
    /// After every group of records: each is reported
    /// [`WriterEvent::Durable`] (a node's own journal, whose records are
    /// acknowledged once durable).
    EveryGroup,
    /// Only when asked ([`JournalWriter::sync`]), before a checkpoint and
    /// when the writer closes; between, records are written to the
    /// operating system unsynced. For a journal whose records are durable
    /// elsewhere first: a replica's, copied from its Raft log.
    WhenAsked,
}

/// What the writer thread (and its pruning thread) report.
#[derive(Debug)]
pub enum WriterEvent {
    /// Every record up to `lsn` is durable, after one group commit that took
    /// `took` from the first record taken to the end of its sync.
    Durable {
        /// The last durable LSN.
        lsn: Lsn,
        /// How long the group commit took.
        took: Duration,
    },
    /// The journal failed; the writer thread has stopped. Records after the
    /// last [`WriterEvent::Durable`] may or may not survive: reopen the
    /// journal to find out. A failed sync is never retried.
    Failed(JournalError),
    /// A checkpoint was written (every record below its LSN was durable
    /// before).
    Checkpoint {
        /// The checkpoint's LSN.
        lsn: Lsn,
        /// What was written.
        written: CheckpointWritten,
        /// How long writing and reading it back took.
        took: Duration,
    },
    /// A checkpoint could not be written. Not fatal: recovery then starts
    /// from an older checkpoint or the start of the journal.
    CheckpointFailed {
        /// The checkpoint's LSN.
        lsn: Lsn,
        /// Why.
        error: JournalError,
    },
    /// The pruning thread removed the segments wholly below `below` (none
    /// while a reader held the files: the next checkpoint prunes them).
    Pruned {
        /// The pruning bound.
        below: Lsn,
        /// Segment files removed.
        removed: usize,
        /// How long it took.
        took: Duration,
    },
    /// Pruning failed; the segments stay (not fatal).
    PruneFailed(JournalError),
}

/// Work for the writer thread, in order.
#[derive(Debug)]
enum Job {
    Append(u8, Vec<u8>),
    Sync,
    Checkpoint {
        lsn: Lsn,
        replay_from: Lsn,
        payload: Vec<u8>,
    },
}

/// A dedicated writer thread around a [`Journal`]: group commit for free,
/// checkpoints written in order with the records, and pruning off its path.
///
/// The sequencer core (sans-IO) emits records to be journaled; its driver hands
/// them to [`JournalWriter::append`], which only queues them and returns the
/// LSN each will get. The writer thread takes everything queued (up to
/// [`WRITER_GROUP_RECORDS_MAX`]), appends it, syncs once, and reports
/// [`WriterEvent::Durable`]: the driver passes the LSN to the core, which
/// releases the receipts of records up to it. The more records arrive while
/// an `fdatasync` runs, the larger the next group.
///
/// The queue is unbounded so that the driver never blocks on a hanging disk
/// (it must stay able to notice the stall and stop); bounding the work in
/// flight is the driver's admission control.
///
/// [`JournalWriter::checkpoint`] queues a checkpoint: it is written once every
/// record queued before it is durable. With pruning on, a pruning thread
/// then removes the segments no kept checkpoint needs (unlinking a large file
/// can take tens of milliseconds, which the group commits do not wait for).
///
/// ```
/// use sealbatch::journal::{Journal, JournalConfig, JournalWriter, SimStorage, WriterEvent};
///
/// # fn main() -> Result<(), sealbatch::journal::JournalError> {
/// let (journal, _recovery) = Journal::open(SimStorage::new(1), JournalConfig::default())?;
/// let mut writer = JournalWriter::spawn(journal, false)?;
/// let lsn = writer.append(1, b"envelope".to_vec())?;
/// // The driver loop: pass durable LSNs to the core, which releases receipts.
/// loop {
///     match writer.wait_event() {
///         Some(WriterEvent::Durable { lsn: durable, .. }) if durable >= lsn => break,
///         Some(WriterEvent::Failed(error)) => return Err(error),
///         Some(_) => {}
///         None => return Err(sealbatch::journal::JournalError::WriterStopped),
///     }
/// }
/// let journal = writer.close()?;
/// assert_eq!(journal.durable_lsn(), lsn);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct JournalWriter<S: Storage + 'static> {
    jobs: Option<Sender<Job>>,
    events: Receiver<WriterEvent>,
    writer: Option<JoinHandle<Journal<S>>>,
    pruner: Option<JoinHandle<()>>,
    next_lsn: Lsn,
    holds: FileHolds,
}

impl<S: Storage + Clone + Send + 'static> JournalWriter<S> {
    /// Moves `journal` to a new writer thread; with `prune`, also starts the
    /// pruning thread that removes segments below each written checkpoint.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] if a thread cannot be spawned.
    pub fn spawn(journal: Journal<S>, prune: bool) -> Result<JournalWriter<S>, JournalError> {
        JournalWriter::spawn_syncing(journal, prune, Syncing::EveryGroup)
    }

    /// [`JournalWriter::spawn`], syncing as `syncing` says.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] if a thread cannot be spawned.
    pub fn spawn_syncing(
        journal: Journal<S>,
        prune: bool,
        syncing: Syncing,
    ) -> Result<JournalWriter<S>, JournalError> {
        let next_lsn = journal.next_lsn();
        let holds = journal.file_holds().clone();
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        // Unbounded, but at most a few events per group drained from the
        // queue, and a driver must never block on reporting.
        let (events_tx, events) = crossbeam_channel::unbounded();
        let spawn_error = |source| JournalError::Io {
            path: "journal writer thread".into(),
            source,
        };
        let (pruner, floors) = if prune {
            let (floors, floors_rx) = crossbeam_channel::unbounded();
            let storage = journal.storage().clone();
            let holds = holds.clone();
            let events = events_tx.clone();
            let thread = thread::Builder::new()
                .name("sealbatch-prune".into())
                .spawn(move || prune_loop(storage, &holds, &floors_rx, &events))
                .map_err(spawn_error)?;
            (Some(thread), Some(floors))
        } else {
            (None, None)
        };
        let writer = thread::Builder::new()
            .name("sealbatch-journal".into())
            .spawn(move || write_loop(journal, &jobs_rx, &events_tx, floors.as_ref(), syncing))
            .map_err(spawn_error)?;
        Ok(JournalWriter {
            jobs: Some(jobs),
            events,
            writer: Some(writer),
            pruner,
            next_lsn,
            holds,
        })
    }
}

impl<S: Storage + 'static> JournalWriter<S> {
    /// Queues a record and returns the LSN it will have. Never blocks.
    ///
    /// # Errors
    ///
    /// [`JournalError::UnknownKind`] or [`JournalError::RecordTooLarge`]
    /// (nothing queued);
    /// [`JournalError::WriterStopped`] if the writer thread has stopped
    /// (after a [`WriterEvent::Failed`]).
    pub fn append(&mut self, kind: u8, payload: Vec<u8>) -> Result<Lsn, JournalError> {
        if !is_record_kind(kind) {
            return Err(JournalError::UnknownKind(kind));
        }
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(JournalError::RecordTooLarge {
                len: payload.len(),
                max: RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        self.send(Job::Append(kind, payload))?;
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Queues a checkpoint at `lsn` (records from `replay_from` on are
    /// needed to recover past it): written once every record queued before
    /// it is durable, reported as [`WriterEvent::Checkpoint`] or
    /// [`WriterEvent::CheckpointFailed`].
    ///
    /// # Errors
    ///
    /// [`JournalError::WriterStopped`] if the writer thread has stopped.
    pub fn checkpoint(
        &mut self,
        lsn: Lsn,
        replay_from: Lsn,
        payload: Vec<u8>,
    ) -> Result<(), JournalError> {
        self.send(Job::Checkpoint {
            lsn,
            replay_from,
            payload,
        })
    }

    /// Asks for every record queued so far to be synced, reported as
    /// [`WriterEvent::Durable`] (needed only with [`Syncing::WhenAsked`]).
    ///
    /// # Errors
    ///
    /// [`JournalError::WriterStopped`] if the writer thread has stopped.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.send(Job::Sync)
    }

    fn send(&self, job: Job) -> Result<(), JournalError> {
        let jobs = self.jobs.as_ref().ok_or(JournalError::WriterStopped)?;
        jobs.send(job).map_err(|_| JournalError::WriterStopped)
    }

    /// The LSN the next appended record will have.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The holds on the journal's files ([`Journal::file_holds`]): while one
    /// is taken, the writer removes no checkpoint file and its pruning
    /// thread no segment.
    #[must_use]
    pub fn file_holds(&self) -> &FileHolds {
        &self.holds
    }

    /// The next event, if one is ready.
    #[must_use]
    pub fn try_event(&self) -> Option<WriterEvent> {
        self.events.try_recv().ok()
    }

    /// Waits for the next event; `None` once the threads have stopped and
    /// every event was taken.
    #[must_use]
    pub fn wait_event(&self) -> Option<WriterEvent> {
        self.events.recv().ok()
    }

    /// The receiving end of the events, to select over with other channels.
    #[must_use]
    pub fn events(&self) -> &Receiver<WriterEvent> {
        &self.events
    }

    /// Stops the threads after everything queued is journaled, synced and
    /// checkpointed (and pruned), and gives the journal back. Events not yet
    /// taken are dropped.
    ///
    /// Do not call this after a failure: a writer hanging in a sync that
    /// never returns would be waited for. Drop the writer instead, which
    /// leaves its threads to the process's exit.
    ///
    /// # Errors
    ///
    /// [`JournalError::WriterStopped`] if a thread panicked.
    pub fn close(mut self) -> Result<Journal<S>, JournalError> {
        self.jobs = None;
        let writer = self.writer.take().ok_or(JournalError::WriterStopped)?;
        let journal = writer.join().map_err(|_| JournalError::WriterStopped)?;
        // The writer held the pruner's only sender: it stops once drained.
        if let Some(pruner) = self.pruner.take() {
            pruner.join().map_err(|_| JournalError::WriterStopped)?;
        }
        Ok(journal)
    }
}

fn write_loop<S: Storage>(
    mut journal: Journal<S>,
    jobs: &Receiver<Job>,
    events: &Sender<WriterEvent>,
    pruner: Option<&Sender<Lsn>>,
    syncing: Syncing,
) -> Journal<S> {
    while let Ok(first) = jobs.recv() {
        let start = Instant::now();
        let mut result = Ok(());
        let mut checkpoint = None;
        let mut next = Some(first);
        let mut grouped = 0;
        let mut sync_asked = false;
        while let Some(job) = next.take() {
            match job {
                Job::Append(kind, payload) => {
                    result = journal.append(kind, &payload).map(|_| ());
                    grouped += 1;
                }
                Job::Sync => sync_asked = true,
                Job::Checkpoint {
                    lsn,
                    replay_from,
                    payload,
                } => {
                    checkpoint = Some((lsn, replay_from, payload));
                    break;
                }
            }
            if result.is_err() || grouped >= WRITER_GROUP_RECORDS_MAX {
                break;
            }
            next = jobs.try_recv().ok();
        }
        // A checkpoint is written only over durable records.
        let sync = syncing == Syncing::EveryGroup || sync_asked || checkpoint.is_some();
        if !sync && result.is_ok() {
            // Written to the operating system, not synced: no event.
            if let Err(error) = journal.write_buffer() {
                let _ = events.send(WriterEvent::Failed(error));
                return journal;
            }
        } else if grouped > 0
            || sync_asked
            || result.is_err()
            || (checkpoint.is_some() && journal.has_unsynced())
        {
            match result.and_then(|()| journal.sync()) {
                Ok(lsn) => {
                    let _ = events.send(WriterEvent::Durable {
                        lsn,
                        took: start.elapsed(),
                    });
                }
                Err(error) => {
                    let _ = events.send(WriterEvent::Failed(error));
                    return journal;
                }
            }
        }
        if let Some((lsn, replay_from, payload)) = checkpoint {
            let start = Instant::now();
            let event = match journal.write_checkpoint(lsn, replay_from, &payload, false) {
                Ok(written) => {
                    if let (Some(pruner), Some(below)) = (pruner, written.prunable_below) {
                        let _ = pruner.send(below);
                    }
                    WriterEvent::Checkpoint {
                        lsn,
                        written,
                        took: start.elapsed(),
                    }
                }
                Err(error) => WriterEvent::CheckpointFailed { lsn, error },
            };
            let _ = events.send(event);
        }
    }
    if syncing == Syncing::WhenAsked
        && journal.has_unsynced()
        && let Err(error) = journal.sync()
    {
        let _ = events.send(WriterEvent::Failed(error));
    }
    journal
}

fn prune_loop<S: Storage>(
    mut storage: S,
    holds: &FileHolds,
    floors: &Receiver<Lsn>,
    events: &Sender<WriterEvent>,
) {
    while let Ok(below) = floors.recv() {
        let start = Instant::now();
        // A reader holding the files keeps every segment; the next
        // checkpoint's bound prunes them.
        let pruned = holds.removing_segments(|held| {
            if held {
                Ok(0)
            } else {
                prune_segments_below(&mut storage, below)
            }
        });
        let event = match pruned {
            Ok(removed) => WriterEvent::Pruned {
                below,
                removed,
                took: start.elapsed(),
            },
            Err(error) => WriterEvent::PruneFailed(error),
        };
        let _ = events.send(event);
    }
}

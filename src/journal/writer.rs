//! A dedicated writer thread around a journal: [`JournalWriter`].

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::{self, JoinHandle};

use super::{Journal, JournalError, Lsn, RECORD_PAYLOAD_BYTES_MAX, RecordKind, Storage};

/// Largest allowed queue depth (records waiting for the writer thread).
pub const WRITER_QUEUE_DEPTH_MAX: usize = 1 << 16;

/// Most records the writer thread puts in one group commit.
pub const WRITER_GROUP_RECORDS_MAX: usize = 4096;

const _: () = assert!(WRITER_GROUP_RECORDS_MAX <= WRITER_QUEUE_DEPTH_MAX);

/// What the writer thread reports.
#[derive(Debug)]
pub enum WriterEvent {
    /// Every record up to this LSN is durable.
    Durable(Lsn),
    /// The journal failed; the writer thread has stopped. Records after the
    /// last [`WriterEvent::Durable`] may or may not survive: reopen the
    /// journal to find out.
    Failed(JournalError),
}

/// A dedicated writer thread around a [`Journal`]: group commit for free.
///
/// The sequencer core (sans-IO) emits records to be journaled; its driver hands
/// them to [`JournalWriter::append`], which only queues them (blocking when
/// the bounded queue is full, which is the back-pressure) and returns the LSN
/// each will get. The writer thread takes everything queued, appends it,
/// syncs once, and reports [`WriterEvent::Durable`]`(lsn)`: the driver
/// passes that to the core, which releases the receipts of records up to
/// `lsn`. The more records arrive while an `fdatasync` runs, the larger the
/// next group.
///
/// ```
/// use sealbatch::journal::{Journal, JournalConfig, JournalWriter, RecordKind, SimStorage, WriterEvent};
///
/// # fn main() -> Result<(), sealbatch::journal::JournalError> {
/// let (journal, _recovery) = Journal::open(SimStorage::new(1), JournalConfig::default())?;
/// let mut writer = JournalWriter::spawn(journal, 1024)?;
/// let lsn = writer.append(RecordKind::Envelope, b"envelope".to_vec())?;
/// // The driver loop: pass durable LSNs to the core, which releases receipts.
/// loop {
///     match writer.wait_event() {
///         Some(WriterEvent::Durable(durable)) if durable >= lsn => break,
///         Some(WriterEvent::Durable(_)) => {}
///         Some(WriterEvent::Failed(error)) => return Err(error),
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
    queue: Option<SyncSender<(RecordKind, Vec<u8>)>>,
    events: Receiver<WriterEvent>,
    thread: Option<JoinHandle<Journal<S>>>,
    next_lsn: Lsn,
}

impl<S: Storage + 'static> JournalWriter<S> {
    /// Moves `journal` to a new writer thread with a queue of `queue_depth`
    /// records.
    ///
    /// # Errors
    ///
    /// [`JournalError::Config`] if `queue_depth` is 0 or above
    /// [`WRITER_QUEUE_DEPTH_MAX`]; [`JournalError::Io`] if the thread cannot
    /// be spawned.
    pub fn spawn(
        journal: Journal<S>,
        queue_depth: usize,
    ) -> Result<JournalWriter<S>, JournalError> {
        if !(1..=WRITER_QUEUE_DEPTH_MAX).contains(&queue_depth) {
            return Err(JournalError::Config(
                "queue_depth outside 1..=WRITER_QUEUE_DEPTH_MAX",
            ));
        }
        let next_lsn = journal.next_lsn();
        let (queue, records) = mpsc::sync_channel(queue_depth);
        // Unbounded, but at most one event per group drained from the
        // bounded queue, and bounding it could deadlock a driver that blocks
        // in `append` before reading events.
        let (events_tx, events) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("sealbatch-journal".to_string())
            .spawn(move || run(journal, &records, &events_tx))
            .map_err(|source| JournalError::Io {
                path: "journal writer thread".into(),
                source,
            })?;
        Ok(JournalWriter {
            queue: Some(queue),
            events,
            thread: Some(thread),
            next_lsn,
        })
    }

    /// Queues a record and returns the LSN it will have. Blocks while the
    /// queue is full.
    ///
    /// # Errors
    ///
    /// [`JournalError::RecordTooLarge`] (nothing queued);
    /// [`JournalError::WriterStopped`] if the writer thread has stopped
    /// (after a [`WriterEvent::Failed`]).
    pub fn append(&mut self, kind: RecordKind, payload: Vec<u8>) -> Result<Lsn, JournalError> {
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(JournalError::RecordTooLarge {
                len: payload.len(),
                max: RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        let queue = self.queue.as_ref().ok_or(JournalError::WriterStopped)?;
        queue
            .send((kind, payload))
            .map_err(|_| JournalError::WriterStopped)?;
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// The next event, if one is ready.
    #[must_use]
    pub fn try_event(&self) -> Option<WriterEvent> {
        self.events.try_recv().ok()
    }

    /// Waits for the next event; `None` once the thread has stopped and
    /// every event was taken.
    #[must_use]
    pub fn wait_event(&self) -> Option<WriterEvent> {
        self.events.recv().ok()
    }

    /// The receiving end of the events, e.g. to select over.
    #[must_use]
    pub fn events(&self) -> &Receiver<WriterEvent> {
        &self.events
    }

    /// Stops the thread after it has journaled and synced everything queued,
    /// and gives the journal back. Events not yet taken are dropped.
    ///
    /// # Errors
    ///
    /// [`JournalError::WriterStopped`] if the thread panicked.
    pub fn close(mut self) -> Result<Journal<S>, JournalError> {
        self.queue = None;
        let thread = self.thread.take().ok_or(JournalError::WriterStopped)?;
        thread.join().map_err(|_| JournalError::WriterStopped)
    }
}

fn run<S: Storage>(
    mut journal: Journal<S>,
    records: &Receiver<(RecordKind, Vec<u8>)>,
    events: &mpsc::Sender<WriterEvent>,
) -> Journal<S> {
    while let Ok((kind, payload)) = records.recv() {
        let mut result = journal.append(kind, &payload).map(|_| ());
        let mut grouped = 1;
        while result.is_ok() && grouped < WRITER_GROUP_RECORDS_MAX {
            match records.try_recv() {
                Ok((kind, payload)) => {
                    result = journal.append(kind, &payload).map(|_| ());
                    grouped += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let event = match result.and_then(|()| journal.sync()) {
            Ok(lsn) => WriterEvent::Durable(lsn),
            Err(error) => {
                let _ = events.send(WriterEvent::Failed(error));
                return journal;
            }
        };
        if events.send(event).is_err() {
            // Nobody listens; keep journaling what is queued.
        }
    }
    journal
}

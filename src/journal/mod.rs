//! The journal: an append-only, checksummed, fsynced log and its recovery.
//!
//! Every state change the sequencer must not forget (an accepted envelope, a
//! seal, a key release, a result, a deposit or withdrawal, a config change)
//! is appended as a [`Record`]: a kind byte plus a payload, both of which the
//! journal never interprets (they belong to the sequencer). Records get consecutive log sequence
//! numbers ([`Lsn`], starting at 1) and are stored in segment files of a
//! directory, each record framed with its length, kind, LSN and a crc32c.
//! The byte layout is normative in `spec/journal.md`.
//!
//! # Durability is explicit: group commit
//!
//! [`Journal::append`] only buffers a record and returns its LSN;
//! [`Journal::sync`] writes everything buffered and makes it durable with one
//! `fdatasync`, returning the durable LSN. The caller appends as many
//! records as have arrived, syncs once, and only then releases what depended
//! on them (receipts). A sans-IO core fits this directly: it emits "append
//! these records" and is later told "durable up to LSN n" (see
//! [`JournalWriter`] for a dedicated writer thread that does exactly that).
//!
//! # Recovery
//!
//! [`Journal::open`] reads every segment in order and returns the records
//! for replay in a [`Recovery`]; [`Journal::open_streaming`] checks the last
//! segment at once and hands the records out as a [`RecordStream`] that
//! reads one segment at a time, so replaying a long journal needs memory for
//! two segments at most (the last and the one being read). A torn tail (an incomplete or damaged frame
//! at the end of the last segment, with no valid record after it) is cut and
//! reported in [`Recovery::truncation`]; damage anywhere else is a
//! [`JournalError::Corrupt`] naming the file and the byte offset, never
//! skipped.
//!
//! [`Journal::open_read_only`] (on disk [`Journal::open_dir_read_only`])
//! reads the records the same way but changes nothing: it reads up to a
//! torn tail and leaves it in place, so a reader such as `sealbatch verify`
//! can read a journal a live sequencer is writing.
//!
//! # Checkpoints
//!
//! [`Journal::write_checkpoint`] stores an opaque snapshot of the state the
//! records below an LSN built, framed and checksummed in its own file
//! ([`checkpoint`]); recovery from it needs only the records from its
//! `replay_from` on ([`RecordStream::skip_below`]), and segments wholly
//! below every kept checkpoint may be removed ([`prune_segments_below`]).
//! A reader in the same process that lists these files and opens them later
//! holds them first ([`Journal::file_holds`]): nothing is removed meanwhile.
//!
//! # Example
//!
//! ```
//! use sealbatch::journal::{Journal, JournalConfig, SimStorage};
//!
//! # fn main() -> Result<(), sealbatch::journal::JournalError> {
//! let disk = SimStorage::new(7);
//! let (mut journal, recovery) = Journal::open(disk.clone(), JournalConfig::default())?;
//! assert!(recovery.records.is_empty());
//!
//! // Kind bytes mean something to the journal's user only (1: an envelope,
//! // 2: a seal, for the sequencer).
//! let first = journal.append(1, b"envelope bytes")?;
//! let second = journal.append(2, b"seal bytes")?;
//! assert_eq!((first.get(), second.get()), (1, 2));
//! assert_eq!(journal.durable_lsn(), 0); // appended, not yet durable
//! assert_eq!(journal.sync()?, 2); // one fdatasync for both: now receipts may go out
//!
//! // A power loss keeps everything that was synced.
//! drop(journal);
//! disk.crash();
//! let (journal, recovery) = Journal::open(disk, JournalConfig::default())?;
//! assert_eq!(recovery.records.len(), 2);
//! assert_eq!(recovery.records[1].payload, b"seal bytes");
//! assert_eq!(journal.next_lsn(), 3);
//! # Ok(())
//! # }
//! ```
//!
//! With a real directory use [`Journal::open_dir`] (or
//! [`FsStorage`] with [`Journal::open`]).
//!
//! # Driving it from a sans-IO core
//!
//! LSNs are contiguous, so the core can number its records itself, starting
//! from [`Journal::next_lsn`] after recovery, and the driver only moves
//! them:
//!
//! 1. on start, replay [`Recovery::records`] into the core (every one of
//!    them is durable: recovery synced them);
//! 2. in each turn of the driver loop, call [`Journal::append`] for every
//!    record the core asked for (checking that the returned LSN is the one
//!    the core expects), then [`Journal::sync`] once, and hand the durable
//!    LSN to the core, which releases the receipts up to it;
//! 3. on any error, stop: drop the journal and reopen it.
//!
//! To keep the core's thread free during the `fdatasync`, move the journal
//! to a [`JournalWriter`] thread, which does steps 2 and 3 and reports
//! [`WriterEvent`]s.

pub mod checkpoint;
mod error;
mod faults;
pub mod format;
mod holds;
#[cfg(any(test, feature = "test-support"))]
mod sim;
mod storage;
mod writer;

use std::path::{Path, PathBuf};

pub use checkpoint::{
    CHECKPOINTS_KEPT, CheckpointProblem, CheckpointWritten, FoundCheckpoint, StoredCheckpoint,
    prune_segments_below, read_checkpoints,
};
pub use error::{Corruption, JournalError};
pub use faults::{Fault, Faults, FaultyFile, FaultyStorage};
pub use format::{FrameProblem, HeaderProblem};
pub use holds::{FileHold, FileHolds};
#[cfg(any(test, feature = "test-support"))]
pub use sim::{SimFileHandle, SimStorage};
pub use storage::{FsFile, FsStorage, ReadOnlyFile, ReadOnlyFsStorage, Storage, StorageFile};
pub use writer::{JournalWriter, Syncing, WRITER_GROUP_RECORDS_MAX, WriterEvent};

use format::{
    FRAME_OVERHEAD_LEN, SEGMENT_HEADER_LEN, decode_frame, decode_segment_header, encode_frame,
    encode_segment_header,
};

pub use crate::types::Lsn;

pub use crate::types::{RECORD_KIND_MAX, RECORD_PAYLOAD_BYTES_MAX};

/// Default size at which a segment is closed and a new one started.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Smallest allowed [`JournalConfig::segment_bytes_max`].
pub const SEGMENT_BYTES_MIN: u64 = 4 << 10;

/// Largest allowed [`JournalConfig::segment_bytes_max`].
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// Buffered (appended, unwritten) bytes above which [`Journal::append`]
/// writes the buffer to the file, without syncing, to bound memory.
pub const WRITE_BUFFER_BYTES_MAX: usize = 4 << 20;

/// File name suffix of segment files; the name is the segment's first LSN
/// as 20 decimal digits, e.g. `00000000000000000001.sbj`.
pub const SEGMENT_FILE_SUFFIX: &str = ".sbj";

const SEGMENT_NAME_DIGITS: usize = 20;

/// Largest LSN a segment may start at; far beyond any real journal
/// (2^62 records at a million per second take 146,000 years), it keeps LSN
/// arithmetic free of overflow whatever a file name says.
pub const LSN_MAX: Lsn = Lsn(1 << 62);

const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!((RECORD_PAYLOAD_BYTES_MAX as u64) < SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN > (SEGMENT_HEADER_LEN + FRAME_OVERHEAD_LEN) as u64);

/// Whether `kind` is an assigned record kind byte (`1..=`[`RECORD_KIND_MAX`]).
#[must_use]
pub const fn is_record_kind(kind: u8) -> bool {
    kind >= 1 && kind <= RECORD_KIND_MAX
}

/// One record read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its log sequence number.
    pub lsn: Lsn,
    /// Its kind byte (`1..=`[`RECORD_KIND_MAX`]).
    pub kind: u8,
    /// Its payload, exactly as appended.
    pub payload: Vec<u8>,
}

/// Journal settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// A segment is closed (synced) and a new one started when the next
    /// record would take it past this many bytes. A segment holding a single
    /// record may exceed it. Default [`SEGMENT_BYTES_DEFAULT`], allowed
    /// [`SEGMENT_BYTES_MIN`]`..=`[`SEGMENT_BYTES_MAX`].
    pub segment_bytes_max: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// A torn tail cut off during recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Its new length: the offset of the first byte cut.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_cut: u64,
    /// What was wrong at `offset` (`None`: a torn segment header).
    pub problem: Option<FrameProblem>,
}

/// What [`Journal::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Every record, in LSN order, for replay.
    pub records: Vec<Record>,
    /// The torn tail that was cut, if any.
    pub truncation: Option<Truncation>,
    /// Number of segment files read.
    pub segments: usize,
}

/// What [`Journal::open_streaming`] or [`Journal::open_read_only`] found.
#[derive(Debug)]
pub struct StreamingRecovery<S: Storage> {
    /// Every record, in LSN order, read as it is taken.
    pub records: RecordStream<S>,
    /// The torn tail of the last segment, if any: cut by
    /// [`Journal::open_streaming`], left in place by
    /// [`Journal::open_read_only`].
    pub truncation: Option<Truncation>,
    /// Number of segment files found.
    pub segments: usize,
}

/// The records of a journal, read one segment at a time
/// ([`Journal::open_streaming`]). Yields each record in LSN order, or the
/// first damage found (then nothing more).
#[derive(Debug)]
pub struct RecordStream<S: Storage> {
    storage: Option<S>,
    /// Segments before the last, not read yet.
    segments: std::vec::IntoIter<(Lsn, String)>,
    /// The LSN the next segment must start at.
    next_lsn: Option<Lsn>,
    /// The last segment, read when the journal was opened: its name LSN,
    /// name and records.
    last: Option<(Lsn, String, Vec<Record>)>,
    current: std::vec::IntoIter<Record>,
    failed: bool,
}

impl<S: Storage> Iterator for RecordStream<S> {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(record) = self.current.next() {
                return Some(Ok(record));
            }
            let storage = self.storage.as_mut()?;
            if let Some((name_lsn, name)) = self.segments.next() {
                let mut no_cut = None;
                match read_segment(
                    storage,
                    &name,
                    name_lsn,
                    self.next_lsn,
                    Tail::Inner,
                    &mut no_cut,
                ) {
                    Ok(read) => {
                        self.next_lsn = Some(read.next_lsn);
                        self.current = read.records.into_iter();
                    }
                    Err(error) => {
                        self.failed = true;
                        return Some(Err(error));
                    }
                }
                continue;
            }
            let (name_lsn, name, records) = self.last.take()?;
            if let Some(expected) = self.next_lsn
                && name_lsn != expected
            {
                self.failed = true;
                return Some(Err(JournalError::Corrupt {
                    path: storage.path_of(&name),
                    offset: 0,
                    problem: Corruption::SegmentGap {
                        expected,
                        found: name_lsn,
                    },
                }));
            }
            self.current = records.into_iter();
        }
    }
}

impl<S: Storage> RecordStream<S> {
    /// Drops the segments, other than the last, whose records all lie below
    /// `lsn` (the next segment starts at or below it) without reading them:
    /// a recovery from a checkpoint that needs only the records from `lsn`
    /// on. The first segment kept may still yield records below `lsn`.
    #[must_use]
    pub fn skip_below(mut self, lsn: Lsn) -> Self {
        let mut rest: Vec<(Lsn, String)> = self.segments.collect();
        let last_first = self.last.as_ref().map(|(first, _, _)| *first);
        let starts: Vec<Lsn> = rest
            .iter()
            .map(|(first, _)| *first)
            .chain(last_first)
            .collect();
        let skip = starts
            .windows(2)
            .take_while(|pair| pair[1] <= lsn)
            .count()
            .min(rest.len());
        rest.drain(..skip);
        self.segments = rest.into_iter();
        self
    }

    /// The records as `(lsn, kind, payload)`, the shape replay takes, ending
    /// at the first damage, which [`UntilDamage::take_damage`] then returns.
    #[must_use]
    pub fn until_damage(self) -> UntilDamage<S> {
        UntilDamage {
            records: self,
            damage: None,
            count: 0,
        }
    }
}

/// [`RecordStream::until_damage`].
#[derive(Debug)]
pub struct UntilDamage<S: Storage> {
    records: RecordStream<S>,
    damage: Option<JournalError>,
    count: u64,
}

impl<S: Storage> UntilDamage<S> {
    /// The damage that ended the records, if any. Check it once the records
    /// are consumed: records before damage must not be trusted alone.
    pub fn take_damage(&mut self) -> Option<JournalError> {
        self.damage.take()
    }

    /// Records handed out so far.
    #[must_use]
    pub fn records_read(&self) -> u64 {
        self.count
    }
}

impl<S: Storage> Iterator for UntilDamage<S> {
    type Item = (Lsn, u8, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.damage.is_some() {
            return None;
        }
        match self.records.next()? {
            Ok(record) => {
                self.count += 1;
                Some((record.lsn, record.kind, record.payload))
            }
            Err(damage) => {
                self.damage = Some(damage);
                None
            }
        }
    }
}

/// The append-only journal over a [`Storage`]; see the [module docs](self).
///
/// After any I/O error the journal is poisoned: every later call returns
/// [`JournalError::Poisoned`]. What reached the disk is then unknown (a
/// failed `fsync` may have dropped dirty pages), so the only way on is to
/// drop it and [`Journal::open`] again, which decides what survived.
#[derive(Debug)]
pub struct Journal<S: Storage> {
    storage: S,
    config: JournalConfig,
    file: S::File,
    segment_name: String,
    /// Bytes already written to the current segment file.
    segment_written_len: u64,
    /// Records in the current segment, written or buffered.
    segment_records: u64,
    /// Frames appended but not yet written to the file.
    buffer: Vec<u8>,
    /// Bytes written to the file since its last sync.
    unsynced: bool,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    poisoned: bool,
    /// The readers' holds on its files, which checkpoint removal and
    /// pruning respect.
    holds: FileHolds,
}

/// The segment file name for a segment whose first record is `first_lsn`.
#[must_use]
pub fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:0SEGMENT_NAME_DIGITS$}{SEGMENT_FILE_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_FILE_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Journal<FsStorage> {
    /// Opens (creating if needed) the journal in directory `dir` on the real
    /// file system; see [`Journal::open`].
    ///
    /// # Errors
    ///
    /// As [`Journal::open`]; also [`JournalError::Io`] if the directory
    /// cannot be created.
    pub fn open_dir(
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<(Journal<FsStorage>, Recovery), JournalError> {
        let dir = dir.as_ref();
        let storage = FsStorage::new(dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Journal::open(storage, config)
    }
}

impl Journal<ReadOnlyFsStorage> {
    /// [`Journal::open_read_only`] on the existing directory `dir`, through a
    /// [`ReadOnlyFsStorage`]: files are opened read-only and nothing is
    /// created, cut or synced.
    ///
    /// # Errors
    ///
    /// As [`Journal::open_read_only`]; also [`JournalError::Io`] if `dir` is
    /// not a directory.
    pub fn open_dir_read_only(
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<StreamingRecovery<ReadOnlyFsStorage>, JournalError> {
        let dir = dir.as_ref();
        let storage = ReadOnlyFsStorage::new(dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Journal::open_read_only(storage, config)
    }
}

impl<S: Storage> Journal<S> {
    /// Opens the journal in `storage`: recovers every segment, cuts a torn
    /// tail, makes what was recovered durable, and returns the journal
    /// positioned to append after the last record, with the records to
    /// replay. An empty directory gets a first segment starting at LSN 1.
    ///
    /// Files whose names are not segment names are ignored.
    ///
    /// # Errors
    ///
    /// - [`JournalError::Config`] for a config out of its bounds;
    /// - [`JournalError::Corrupt`] for damage that is not a torn tail (in a
    ///   non-last segment, or followed by a valid record, or a bad header on
    ///   a segment that holds records, or missing segments): the process must
    ///   stop and an operator look at the named file and offset;
    /// - [`JournalError::Io`] for an I/O error, naming the file.
    pub fn open(
        mut storage: S,
        config: JournalConfig,
    ) -> Result<(Journal<S>, Recovery), JournalError> {
        let segments = list_segments(&mut storage, config)?;

        let mut recovery = Recovery {
            records: Vec::new(),
            truncation: None,
            segments: segments.len(),
        };
        let Some(last_index) = segments.len().checked_sub(1) else {
            let journal = Journal::start_first_segment(storage, config, Lsn::FIRST)?;
            return Ok((journal, recovery));
        };

        let mut next_lsn: Option<Lsn> = None;
        let mut last = None;
        for (index, (name_lsn, name)) in segments.iter().enumerate() {
            let is_last = index == last_index;
            let read = read_segment(
                &mut storage,
                name,
                *name_lsn,
                next_lsn,
                if is_last { Tail::Cut } else { Tail::Inner },
                &mut recovery.truncation,
            )?;
            recovery.records.extend(read.records);
            next_lsn = Some(read.next_lsn);
            if is_last {
                last = Some((read.file, name.clone(), read.end, read.count));
            }
        }

        let (Some(next_lsn), Some((file, segment_name, segment_len, segment_records))) =
            (next_lsn, last)
        else {
            return Err(JournalError::Config("no segment recovered"));
        };
        let journal = Journal::resume(
            storage,
            config,
            file,
            segment_name,
            segment_len,
            segment_records,
            next_lsn,
        )?;
        Ok((journal, recovery))
    }

    /// The journal positioned after the last record of the last segment
    /// (`file`, `segment_name`), which was just read back.
    fn resume(
        mut storage: S,
        config: JournalConfig,
        mut file: S::File,
        segment_name: String,
        segment_len: u64,
        segment_records: u64,
        next_lsn: Lsn,
    ) -> Result<Journal<S>, JournalError> {
        // What was read back may have been written but never synced before
        // a process crash: make it durable before anything builds on it.
        let path = storage.path_of(&segment_name);
        file.sync_data().map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        storage
            .sync_dir()
            .map_err(|source| JournalError::Io { path, source })?;
        let journal = Journal {
            storage,
            config,
            file,
            segment_name,
            segment_written_len: segment_len.max(SEGMENT_HEADER_LEN as u64),
            segment_records,
            buffer: Vec::new(),
            unsynced: false,
            next_lsn,
            durable_lsn: next_lsn - 1,
            poisoned: false,
            holds: FileHolds::new(),
        };
        Ok(journal)
    }

    /// [`Journal::open`] without holding the whole journal in memory: the
    /// last segment is read, checked and its torn tail cut now (so the
    /// journal can append), and the records come from a [`RecordStream`]
    /// that reads the other segments one at a time as they are taken, with
    /// the same checks. Recovery then needs memory for two segments at most
    /// (the last and the one being read), not for the journal.
    ///
    /// Damage in an earlier segment is reported by the stream when it gets
    /// there; the caller must stop then, as for [`Journal::open`]'s error.
    /// The last segment's torn tail is already cut by then (it held no
    /// acknowledged record).
    ///
    /// # Errors
    ///
    /// As [`Journal::open`], for the last segment and the directory.
    pub fn open_streaming(
        mut storage: S,
        config: JournalConfig,
    ) -> Result<(Journal<S>, StreamingRecovery<S>), JournalError>
    where
        S: Clone,
    {
        let mut segments = list_segments(&mut storage, config)?;
        let count = segments.len();
        let Some((last_lsn, last_name)) = segments.pop() else {
            let journal = Journal::start_first_segment(storage, config, Lsn::FIRST)?;
            let records = RecordStream {
                storage: None,
                segments: Vec::new().into_iter(),
                next_lsn: None,
                last: None,
                current: Vec::new().into_iter(),
                failed: false,
            };
            return Ok((
                journal,
                StreamingRecovery {
                    records,
                    truncation: None,
                    segments: 0,
                },
            ));
        };
        let mut truncation = None;
        let read = read_segment(
            &mut storage,
            &last_name,
            last_lsn,
            None,
            Tail::Cut,
            &mut truncation,
        )?;
        let reader = storage.clone();
        let journal = Journal::resume(
            storage,
            config,
            read.file,
            last_name.clone(),
            read.end,
            read.count,
            read.next_lsn,
        )?;
        let records = RecordStream {
            storage: Some(reader),
            segments: segments.into_iter(),
            next_lsn: None,
            last: Some((last_lsn, last_name, read.records)),
            current: Vec::new().into_iter(),
            failed: false,
        };
        Ok((
            journal,
            StreamingRecovery {
                records,
                truncation,
                segments: count,
            },
        ))
    }

    /// Reads the journal in `storage` without changing it: the records of
    /// [`Journal::open_streaming`], with the same checks, but a torn tail of
    /// the last segment is read up to and left in place (reported in
    /// [`StreamingRecovery::truncation`] as what an open to append would
    /// cut), nothing is synced, and an empty directory stays empty. No
    /// journal to append to is returned. With a storage that refuses writes
    /// ([`ReadOnlyFsStorage`]) nothing can change the journal even by
    /// mistake; this is how `sealbatch verify` reads a journal, live or not.
    ///
    /// # Errors
    ///
    /// As [`Journal::open_streaming`] for the last segment and the directory,
    /// except that a torn tail is not an error; damage in an earlier segment
    /// is reported by the stream.
    pub fn open_read_only(
        mut storage: S,
        config: JournalConfig,
    ) -> Result<StreamingRecovery<S>, JournalError>
    where
        S: Clone,
    {
        let mut segments = list_segments(&mut storage, config)?;
        let count = segments.len();
        let mut truncation = None;
        let last = match segments.pop() {
            Some((last_lsn, last_name)) => {
                let read = read_segment(
                    &mut storage,
                    &last_name,
                    last_lsn,
                    None,
                    Tail::Keep,
                    &mut truncation,
                )?;
                Some((last_lsn, last_name, read.records))
            }
            None => None,
        };
        let records = RecordStream {
            storage: last.is_some().then_some(storage),
            segments: segments.into_iter(),
            next_lsn: None,
            last,
            current: Vec::new().into_iter(),
            failed: false,
        };
        Ok(StreamingRecovery {
            records,
            truncation,
            segments: count,
        })
    }

    /// Starts a journal in `storage`, which must hold no segment, whose
    /// first record will have LSN `first_lsn`: a replica installing a
    /// snapshot starts its journal where the snapshot's records start.
    ///
    /// # Errors
    ///
    /// [`JournalError::Config`] for `first_lsn` 0 or a storage that already
    /// holds segments; [`JournalError::Io`] for an I/O error.
    pub fn create_at(
        mut storage: S,
        config: JournalConfig,
        first_lsn: Lsn,
    ) -> Result<Journal<S>, JournalError> {
        if first_lsn == Lsn::NONE {
            return Err(JournalError::Config("a journal's first LSN is at least 1"));
        }
        if !list_segments(&mut storage, config)?.is_empty() {
            return Err(JournalError::Config(
                "a journal can only be started in a directory without segments",
            ));
        }
        Journal::start_first_segment(storage, config, first_lsn)
    }

    fn start_first_segment(
        mut storage: S,
        config: JournalConfig,
        first_lsn: Lsn,
    ) -> Result<Journal<S>, JournalError> {
        let (file, segment_name) = create_segment(&mut storage, first_lsn)?;
        Ok(Journal {
            storage,
            config,
            file,
            segment_name,
            segment_written_len: SEGMENT_HEADER_LEN as u64,
            segment_records: 0,
            buffer: Vec::new(),
            unsynced: false,
            next_lsn: first_lsn,
            durable_lsn: first_lsn - 1,
            poisoned: false,
            holds: FileHolds::new(),
        })
    }

    /// Buffers one record and returns its LSN. Nothing is durable until
    /// [`Journal::sync`] returns an LSN at least as large.
    ///
    /// May write (not sync) the buffer when it exceeds
    /// [`WRITE_BUFFER_BYTES_MAX`], and may close the current segment (with a
    /// sync) and start a new one when this record would take it past
    /// [`JournalConfig::segment_bytes_max`].
    ///
    /// # Errors
    ///
    /// - [`JournalError::UnknownKind`] if `kind` is not
    ///   [assigned](is_record_kind) and [`JournalError::RecordTooLarge`] if
    ///   `payload` exceeds [`RECORD_PAYLOAD_BYTES_MAX`] (the journal stays
    ///   usable);
    /// - [`JournalError::Poisoned`] after an earlier I/O error;
    /// - [`JournalError::Io`], which poisons the journal.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if !is_record_kind(kind) {
            return Err(JournalError::UnknownKind(kind));
        }
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(JournalError::RecordTooLarge {
                len: payload.len(),
                max: RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        let frame_len = (FRAME_OVERHEAD_LEN + payload.len()) as u64;
        let segment_len = self.segment_written_len + self.buffer.len() as u64;
        if self.segment_records > 0 && segment_len + frame_len > self.config.segment_bytes_max {
            self.rotate()?;
        }
        let lsn = self.next_lsn;
        encode_frame(&mut self.buffer, lsn, kind, payload);
        self.next_lsn += 1;
        self.segment_records += 1;
        if self.buffer.len() >= WRITE_BUFFER_BYTES_MAX {
            self.write_buffer()?;
        }
        Ok(lsn)
    }

    /// Writes everything appended so far and makes it durable with one
    /// `fdatasync`; returns the durable LSN (0 if the journal is empty).
    /// Does no I/O if nothing was appended since the last sync.
    ///
    /// # Errors
    ///
    /// [`JournalError::Poisoned`] after an earlier I/O error;
    /// [`JournalError::Io`], which poisons the journal: records appended
    /// since the last successful sync may or may not survive.
    pub fn sync(&mut self) -> Result<Lsn, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        self.write_buffer()?;
        if self.unsynced {
            let result = self.file.sync_data();
            self.check(result)?;
            self.unsynced = false;
        }
        self.durable_lsn = self.next_lsn - 1;
        Ok(self.durable_lsn)
    }

    /// The highest LSN known durable (0: none).
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// The LSN the next [`Journal::append`] will return.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Whether records were appended that are not durable yet.
    #[must_use]
    pub fn has_unsynced(&self) -> bool {
        self.durable_lsn + 1 < self.next_lsn
    }

    /// The name of the segment file being appended to.
    #[must_use]
    pub fn segment_name(&self) -> &str {
        &self.segment_name
    }

    /// The storage, e.g. for its directory.
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The holds on this journal's files: a reader in the same process that
    /// lists checkpoint files or segments and opens them afterwards takes
    /// one ([`FileHolds::hold`]) before it lists, and no checkpoint file or
    /// segment is removed ([`Journal::write_checkpoint`], the
    /// [`JournalWriter`]'s pruning) until it is dropped.
    #[must_use]
    pub fn file_holds(&self) -> &FileHolds {
        &self.holds
    }

    fn check<T>(&mut self, result: std::io::Result<T>) -> Result<T, JournalError> {
        result.map_err(|source| {
            self.poisoned = true;
            JournalError::Io {
                path: self.storage.path_of(&self.segment_name),
                source,
            }
        })
    }

    fn write_buffer(&mut self) -> Result<(), JournalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = self.file.append(&self.buffer);
        self.check(result)?;
        self.segment_written_len += self.buffer.len() as u64;
        self.buffer.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Closes the current segment durably and starts the next one.
    fn rotate(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        match create_segment(&mut self.storage, self.next_lsn) {
            Ok((file, name)) => {
                self.file = file;
                self.segment_name = name;
                self.segment_written_len = SEGMENT_HEADER_LEN as u64;
                self.segment_records = 0;
                Ok(())
            }
            Err(error) => {
                self.poisoned = true;
                Err(error)
            }
        }
    }
}

/// Creates a segment file, writes and syncs its header, and syncs the
/// directory, so that the segment exists durably before any record goes in.
fn create_segment<S: Storage>(
    storage: &mut S,
    first_lsn: Lsn,
) -> Result<(S::File, String), JournalError> {
    let name = segment_name(first_lsn);
    let path = storage.path_of(&name);
    let io = |source| JournalError::Io {
        path: path.clone(),
        source,
    };
    let mut file = storage.create(&name).map_err(io)?;
    file.append(&encode_segment_header(first_lsn)).map_err(io)?;
    file.sync_data().map_err(io)?;
    storage.sync_dir().map_err(io)?;
    Ok((file, name))
}

/// The first offset at or after `from` where a complete, checksum-valid
/// frame with LSN at least `lsn_min` starts, with that LSN.
fn find_valid_frame(bytes: &[u8], from: usize, lsn_min: Lsn) -> Option<(u64, Lsn)> {
    let last_start = bytes.len().checked_sub(FRAME_OVERHEAD_LEN)?;
    (from..=last_start).find_map(|offset| match decode_frame(&bytes[offset..]) {
        Ok(frame) if frame.lsn >= lsn_min => Some((offset as u64, frame.lsn)),
        _ => None,
    })
}

/// One segment read back by [`read_segment`].
struct SegmentRead<F> {
    file: F,
    records: Vec<Record>,
    /// The LSN after its last record.
    next_lsn: Lsn,
    /// Its length after any cut.
    end: u64,
    /// Records in it.
    count: u64,
}

/// Which segment [`read_segment`] reads, and so what it does with a torn
/// tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    /// A segment before the last: any damage is corruption.
    Inner,
    /// The last segment of a journal opened to append: a torn tail is cut,
    /// durably.
    Cut,
    /// The last segment of a journal opened read-only: a torn tail is read
    /// up to and left in place.
    Keep,
}

/// Reads and checks segment `name`, which must start at `next_lsn` when that
/// is known. Damage is an error, except a torn tail of the last segment
/// (`tail` other than [`Tail::Inner`]), which is reported in `truncation`
/// and, with [`Tail::Cut`], cut.
fn read_segment<S: Storage>(
    storage: &mut S,
    name: &str,
    name_lsn: Lsn,
    next_lsn: Option<Lsn>,
    tail: Tail,
    truncation: &mut Option<Truncation>,
) -> Result<SegmentRead<S::File>, JournalError> {
    let mut records = Vec::new();
    let path = storage.path_of(name);
    let io = |source| JournalError::Io {
        path: path.clone(),
        source,
    };
    let corrupt = |offset: u64, problem: Corruption| JournalError::Corrupt {
        path: path.clone(),
        offset,
        problem,
    };
    let mut file = storage.open(name).map_err(io)?;
    let bytes = file.read_all().map_err(io)?;

    if name_lsn == Lsn::NONE || name_lsn > LSN_MAX {
        return Err(corrupt(0, Corruption::LsnOutOfRange(name_lsn)));
    }
    if let Some(expected) = next_lsn
        && name_lsn != expected
    {
        return Err(corrupt(
            0,
            Corruption::SegmentGap {
                expected,
                found: name_lsn,
            },
        ));
    }
    let first_lsn = match decode_segment_header(&bytes) {
        Ok(first_lsn) => first_lsn,
        // The header is synced before any record is written, so a
        // last segment no longer than a header holds no record: its
        // creation was torn. Write the header again.
        Err(_) if tail != Tail::Inner && bytes.len() <= SEGMENT_HEADER_LEN => {
            if tail == Tail::Cut {
                file.truncate_sync(0).map_err(io)?;
                file.append(&encode_segment_header(name_lsn)).map_err(io)?;
                file.sync_data().map_err(io)?;
            }
            *truncation = Some(Truncation {
                path: path.clone(),
                offset: 0,
                bytes_cut: bytes.len() as u64,
                problem: None,
            });
            name_lsn
        }
        Err(problem) => return Err(corrupt(0, Corruption::Header(problem))),
    };
    if first_lsn != name_lsn {
        return Err(corrupt(
            0,
            Corruption::NameMismatch {
                header: first_lsn,
                name: name_lsn,
            },
        ));
    }
    let mut expected = first_lsn;
    let mut offset = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut records_here = 0u64;
    let mut end = bytes.len();
    while offset < bytes.len() {
        let problem = match decode_frame(&bytes[offset..]) {
            Ok(frame) if frame.lsn == expected => {
                records.push(Record {
                    lsn: frame.lsn,
                    kind: frame.kind,
                    payload: frame.payload.to_vec(),
                });
                offset += frame.frame_len;
                expected += 1;
                records_here += 1;
                continue;
            }
            Ok(frame) => {
                return Err(corrupt(
                    offset as u64,
                    Corruption::LsnMismatch {
                        expected,
                        found: frame.lsn,
                    },
                ));
            }
            Err(problem) => problem,
        };
        if tail == Tail::Inner {
            return Err(corrupt(
                offset as u64,
                Corruption::Record {
                    problem,
                    expected_lsn: expected,
                    later: None,
                },
            ));
        }
        if let Some(later) = find_valid_frame(&bytes, offset + 1, expected) {
            return Err(corrupt(
                offset as u64,
                Corruption::Record {
                    problem,
                    expected_lsn: expected,
                    later: Some(later),
                },
            ));
        }
        if tail == Tail::Cut {
            file.truncate_sync(offset as u64).map_err(io)?;
        }
        *truncation = Some(Truncation {
            path: path.clone(),
            offset: offset as u64,
            bytes_cut: (bytes.len() - offset) as u64,
            problem: Some(problem),
        });
        end = offset;
        break;
    }
    Ok(SegmentRead {
        file,
        records,
        next_lsn: expected,
        end: end as u64,
        count: records_here,
    })
}

/// The segment files of `storage`, by first LSN, once `config` is checked.
fn list_segments<S: Storage>(
    storage: &mut S,
    config: JournalConfig,
) -> Result<Vec<(Lsn, String)>, JournalError> {
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&config.segment_bytes_max) {
        return Err(JournalError::Config(
            "segment_bytes_max outside SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX",
        ));
    }
    let dir_path = storage.path_of("");
    let mut segments: Vec<(Lsn, String)> = storage
        .list()
        .map_err(|source| JournalError::Io {
            path: dir_path,
            source,
        })?
        .into_iter()
        .filter_map(|name| parse_segment_name(&name).map(|lsn| (lsn, name)))
        .collect();
    segments.sort();
    Ok(segments)
}

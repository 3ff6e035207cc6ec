//! The Raft log on disk ([`LogStore`], `spec/replication.md`, "The log
//! file"): one append-only file of CRC-checked frames — an entry, a
//! truncation, a purge, the committed log id — replayed into memory when
//! opened, and the vote in a file of its own, replaced atomically.
//!
//! Appends go to a thread of their own that writes every waiting frame and
//! syncs once (group commit) before it tells openraft the entries are
//! flushed: a replica acknowledges an entry to the leader only once it is on
//! its disk. Purged entries leave memory at once; the file is rewritten
//! without them once they are most of it — by another thread, while appends
//! go on to the old file; the writer then adds what it appended meanwhile to
//! the new file and puts it in the old one's place.

// openraft's storage traits fix the error type (`StorageError`, large);
// the helpers here return it as is.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use tokio::sync::oneshot;

use crate::codec::{Reader, Writer};

use super::codec::{
    entry_len, get_entry, get_log_id, get_opt_log_id, get_vote, put_entry, put_log_id,
    put_opt_log_id, put_vote,
};
use super::{ReplicaId, Replication};

/// The log file's name in the replica's Raft directory.
pub const LOG_FILE: &str = "log";
/// The vote file's name.
pub const VOTE_FILE: &str = "vote";
/// The log file's first eight bytes.
pub const LOG_MAGIC: [u8; 8] = *b"SBRAFTL1";
/// The vote file's first eight bytes.
pub const VOTE_MAGIC: [u8; 8] = *b"SBVOTE01";
/// Longest frame body the log file holds.
pub const FRAME_BODY_MAX: usize = super::PROPOSAL_BYTES_MAX + (1 << 20);
/// The file is rewritten without purged entries once it is at least this
/// large and they make up more than half of it.
pub const REWRITE_BYTES_MIN: u64 = 64 << 20;

const OP_ENTRY: u8 = 1;
const OP_TRUNCATE: u8 = 2;
const OP_PURGE: u8 = 3;
const OP_COMMITTED: u8 = 4;

type Result<T> = std::result::Result<T, StorageError<ReplicaId>>;

/// What the log holds in memory.
#[derive(Debug, Default)]
struct Log {
    entries: BTreeMap<u64, Entry<Replication>>,
    last_purged: Option<LogId<ReplicaId>>,
    committed: Option<LogId<ReplicaId>>,
    /// The file's length, and how much of it is entries still held.
    file_bytes: u64,
    live_bytes: u64,
}

impl Log {
    fn apply(&mut self, op: Op) {
        let len = |entries: &BTreeMap<u64, Entry<Replication>>| -> u64 {
            entries.values().map(|entry| entry_len(entry) as u64).sum()
        };
        match op {
            Op::Entry(entry) => {
                self.live_bytes += entry_len(&entry) as u64;
                if let Some(old) = self.entries.insert(entry.log_id.index, entry) {
                    self.live_bytes = self.live_bytes.saturating_sub(entry_len(&old) as u64);
                }
            }
            Op::Truncate(index) => {
                let cut = self.entries.split_off(&index);
                self.live_bytes = self.live_bytes.saturating_sub(len(&cut));
            }
            Op::Purge(id) => {
                let kept = self.entries.split_off(&(id.index + 1));
                let purged = std::mem::replace(&mut self.entries, kept);
                self.live_bytes = self.live_bytes.saturating_sub(len(&purged));
                if self.last_purged.is_none_or(|p| p.index < id.index) {
                    self.last_purged = Some(id);
                }
            }
            Op::Committed(id) => self.committed = id,
        }
    }
}

enum Op {
    Entry(Entry<Replication>),
    Truncate(u64),
    Purge(LogId<ReplicaId>),
    Committed(Option<LogId<ReplicaId>>),
}

fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) -> u64 {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    body(out);
    let len = out.len() - start - 8;
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    (out.len() - start) as u64
}

fn encode_op(out: &mut Vec<u8>, op: &Op) -> u64 {
    frame(out, |out| match op {
        Op::Entry(entry) => {
            out.put_u8(OP_ENTRY);
            put_entry(out, entry);
        }
        Op::Truncate(index) => {
            out.put_u8(OP_TRUNCATE);
            out.put_u64(*index);
        }
        Op::Purge(id) => {
            out.put_u8(OP_PURGE);
            put_log_id(out, id);
        }
        Op::Committed(id) => {
            out.put_u8(OP_COMMITTED);
            put_opt_log_id(out, id.as_ref());
        }
    })
}

fn decode_op(body: &[u8]) -> std::result::Result<Op, crate::codec::DecodeError> {
    let mut r = Reader::new(body);
    let op = match r.u8("log op")? {
        OP_ENTRY => Op::Entry(get_entry(&mut r)?),
        OP_TRUNCATE => Op::Truncate(r.u64("truncate index")?),
        OP_PURGE => Op::Purge(get_log_id(&mut r)?),
        OP_COMMITTED => Op::Committed(get_opt_log_id(&mut r)?),
        _ => return Err(r.invalid("log op", 0)),
    };
    r.finish()?;
    Ok(op)
}

/// Why a log file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Damage that is not a torn tail.
    #[error("{path}: damaged at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The Raft log of one replica, in directory `dir`: openraft's
/// [`RaftLogStorage`]. Clones share the log.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<RwLock<Log>>,
    vote: Arc<RwLock<Option<Vote<ReplicaId>>>>,
    jobs: Sender<Job>,
    /// Set while a rewrite is under way (no second one is asked for).
    rewriting: Arc<AtomicBool>,
    /// The file is rewritten once at least this large (and mostly purged).
    rewrite_bytes_min: u64,
    dir: PathBuf,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

/// Reads the log for openraft's replication tasks.
#[derive(Clone, Debug)]
pub struct LogReader {
    store: LogStore,
}

enum Done {
    Flushed(LogFlushed<Replication>),
    Reply(oneshot::Sender<io::Result<()>>),
    Nothing,
}

enum Job {
    /// Frames to append; `sync`: synced before `done`.
    Append {
        bytes: Vec<u8>,
        sync: bool,
        done: Done,
    },
    /// Replace the file with these bytes (header included).
    Rewrite { bytes: Vec<u8> },
    /// Replace the vote file.
    Vote { bytes: Vec<u8>, done: Done },
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> LogOpenError + '_ {
    move |source| LogOpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LogStore {
    /// Opens (creating if needed) the log in directory `dir`: replays the
    /// log file, cutting a torn last frame, and reads the vote.
    ///
    /// # Errors
    ///
    /// [`LogOpenError`] for I/O errors or damage other than a torn tail.
    pub fn open(dir: &Path) -> std::result::Result<LogStore, LogOpenError> {
        LogStore::open_rewriting_at(dir, REWRITE_BYTES_MIN)
    }

    /// [`LogStore::open`], rewriting the file without its purged entries
    /// once it is at least `rewrite_bytes_min` bytes (instead of
    /// [`REWRITE_BYTES_MIN`]) and they make up more than half of it.
    ///
    /// # Errors
    ///
    /// As [`LogStore::open`].
    pub fn open_rewriting_at(
        dir: &Path,
        rewrite_bytes_min: u64,
    ) -> std::result::Result<LogStore, LogOpenError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join(LOG_FILE);
        let mut log = Log::default();
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(io_error(&path))?;
                let valid = replay(&path, &bytes, &mut log)?;
                if valid < bytes.len() as u64 {
                    tracing::warn!(
                        path = %path.display(),
                        offset = valid,
                        bytes_cut = bytes.len() as u64 - valid,
                        "cutting a torn tail off the Raft log"
                    );
                    file.set_len(valid).map_err(io_error(&path))?;
                    file.sync_all().map_err(io_error(&path))?;
                }
                if valid < LOG_MAGIC.len() as u64 {
                    // Torn while it was being created: start it again.
                    file.set_len(0).map_err(io_error(&path))?;
                    let mut append = OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .map_err(io_error(&path))?;
                    append.write_all(&LOG_MAGIC).map_err(io_error(&path))?;
                    append.sync_all().map_err(io_error(&path))?;
                    log.file_bytes = LOG_MAGIC.len() as u64;
                } else {
                    log.file_bytes = valid;
                }
                file
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let tmp = dir.join("log.tmp");
                let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
                file.write_all(&LOG_MAGIC).map_err(io_error(&tmp))?;
                file.sync_all().map_err(io_error(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
                sync_dir(dir).map_err(io_error(dir))?;
                log.file_bytes = LOG_MAGIC.len() as u64;
                file
            }
            Err(error) => return Err(io_error(&path)(error)),
        };
        drop(file);
        // Appends go to the end of what was kept.
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let vote = read_vote(dir)?;
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let thread_dir = dir.to_path_buf();
        let rewriting = Arc::new(AtomicBool::new(false));
        let thread_rewriting = Arc::clone(&rewriting);
        thread::Builder::new()
            .name("sealbatch-raft-log".into())
            .spawn(move || io_loop(&thread_dir, file, &jobs_rx, &thread_rewriting))
            .map_err(io_error(dir))?;
        Ok(LogStore {
            log: Arc::new(RwLock::new(log)),
            vote: Arc::new(RwLock::new(vote)),
            jobs,
            rewriting,
            rewrite_bytes_min,
            dir: dir.to_path_buf(),
        })
    }

    /// The directory the log lives in.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Log>> {
        self.log.read().map_err(|_| {
            StorageIOError::read_logs(AnyError::error("the log's lock is poisoned")).into()
        })
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Log>> {
        self.log.write().map_err(|_| {
            StorageIOError::write_logs(AnyError::error("the log's lock is poisoned")).into()
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs.send(job).map_err(|_| {
            StorageIOError::write_logs(AnyError::error("the Raft log's writer thread stopped"))
                .into()
        })
    }

    /// Appends `ops`' frames (in memory at once, on disk in order).
    fn log_ops(&self, ops: Vec<Op>, sync: bool, done: Done) -> Result<()> {
        let mut bytes = Vec::new();
        let mut log = self.write()?;
        for op in ops {
            let len = encode_op(&mut bytes, &op);
            log.file_bytes += len;
            log.apply(op);
        }
        self.send(Job::Append { bytes, sync, done })?;
        if log.file_bytes >= self.rewrite_bytes_min
            && log.live_bytes < log.file_bytes / 2
            && !self.rewriting.swap(true, Ordering::AcqRel)
        {
            let mut bytes = LOG_MAGIC.to_vec();
            if let Some(purged) = log.last_purged {
                encode_op(&mut bytes, &Op::Purge(purged));
            }
            encode_op(&mut bytes, &Op::Committed(log.committed));
            for entry in log.entries.values() {
                encode_op(&mut bytes, &Op::Entry(entry.clone()));
            }
            log.file_bytes = bytes.len() as u64;
            self.send(Job::Rewrite { bytes })?;
        }
        Ok(())
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<Replication>>> {
        Ok(self
            .read()?
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

/// Replays the log file's frames into `log`; returns the length of the
/// valid prefix (shorter than the file only for a torn last frame).
fn replay(path: &Path, bytes: &[u8], log: &mut Log) -> std::result::Result<u64, LogOpenError> {
    let corrupt = |offset: usize, reason: String| LogOpenError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < LOG_MAGIC.len() {
        // Torn while it was being created: start over.
        return Ok(0);
    }
    if bytes[..8] != LOG_MAGIC {
        return Err(corrupt(0, "not a sealbatch Raft log".into()));
    }
    let mut at = 8;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 8) else {
            return Ok(at as u64);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > FRAME_BODY_MAX {
            return Err(corrupt(at, format!("a frame of {len} bytes")));
        }
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            return Ok(at as u64);
        };
        let end = at + 8 + len;
        if crc32c::crc32c(body) != crc {
            if end == bytes.len() {
                return Ok(at as u64);
            }
            return Err(corrupt(at, "a frame's checksum does not match".into()));
        }
        let op = decode_op(body).map_err(|error| corrupt(at, error.to_string()))?;
        log.apply(op);
        at = end;
    }
    Ok(at as u64)
}

fn read_vote(dir: &Path) -> std::result::Result<Option<Vote<ReplicaId>>, LogOpenError> {
    let path = dir.join(VOTE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let corrupt = |reason: &str| LogOpenError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: reason.into(),
    };
    if bytes.len() != 8 + 17 + 4 || bytes[..8] != VOTE_MAGIC {
        return Err(corrupt("not a sealbatch vote file"));
    }
    let crc = u32::from_le_bytes([bytes[25], bytes[26], bytes[27], bytes[28]]);
    if crc32c::crc32c(&bytes[..25]) != crc {
        return Err(corrupt("the vote's checksum does not match"));
    }
    let mut r = Reader::new(&bytes[8..25]);
    get_vote(&mut r)
        .map(Some)
        .map_err(|error| corrupt(&error.to_string()))
}

fn complete(done: Done, result: &io::Result<()>) {
    let result = match result {
        Ok(()) => Ok(()),
        Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
    };
    match done {
        Done::Flushed(callback) => callback.log_io_completed(result),
        Done::Reply(reply) => {
            let _ = reply.send(result);
        }
        Done::Nothing => {}
    }
}

/// A rewrite under way: another thread writes the live frames to
/// `log.tmp`; the frames appended to the old file since are kept to be
/// added to it.
struct Rewriting {
    since: Vec<u8>,
    done: Receiver<io::Result<File>>,
}

/// The writer thread: group commits of appended frames, file rewrites and
/// vote files, in the order they were asked for. After an I/O error every
/// later job fails too: the replica must stop.
fn io_loop(dir: &Path, mut file: File, jobs: &Receiver<Job>, rewriting_flag: &AtomicBool) {
    let mut failed: Option<io::Error> = None;
    let mut rewriting: Option<Rewriting> = None;
    loop {
        let done = rewriting
            .as_ref()
            .map_or_else(crossbeam_channel::never, |r| r.done.clone());
        let first = crossbeam_channel::select! {
            recv(jobs) -> job => match job {
                Ok(job) => job,
                Err(_) => return,
            },
            recv(done) -> written => {
                if let Some(rewritten) = rewriting.take() {
                    let written = written.unwrap_or_else(|_| {
                        Err(io::Error::other("the rewriting thread stopped"))
                    });
                    if failed.is_none() {
                        match finish_rewrite(dir, written, &rewritten.since) {
                            Ok(new) => file = new,
                            Err(Rewrite::Kept(error)) => tracing::warn!(
                                %error,
                                dir = %dir.display(),
                                "the Raft log was not rewritten; the old file is kept"
                            ),
                            Err(Rewrite::Failed(error)) => {
                                tracing::error!(%error, dir = %dir.display(), "the Raft log failed");
                                failed = Some(error);
                            }
                        }
                    }
                }
                rewriting_flag.store(false, Ordering::Release);
                continue;
            },
        };
        let mut group = vec![first];
        while group.len() < 1024
            && let Ok(job) = jobs.try_recv()
        {
            group.push(job);
        }
        let mut waiting = Vec::new();
        let mut sync = false;
        for job in group {
            let result = match &failed {
                Some(error) => Err(io::Error::new(error.kind(), error.to_string())),
                None => Ok(()),
            };
            let result = result.and_then(|()| match job {
                Job::Append {
                    bytes,
                    sync: s,
                    done,
                } => {
                    sync |= s;
                    waiting.push(done);
                    if let Some(rewriting) = &mut rewriting {
                        rewriting.since.extend_from_slice(&bytes);
                    }
                    file.write_all(&bytes)
                }
                Job::Rewrite { bytes } => {
                    if rewriting.is_none() {
                        rewriting = Some(start_rewrite(dir, bytes));
                    }
                    Ok(())
                }
                Job::Vote { bytes, done } => {
                    let result = write_vote(dir, &bytes);
                    complete(done, &result);
                    result
                }
            });
            if let Err(error) = result {
                tracing::error!(%error, dir = %dir.display(), "the Raft log failed");
                failed.get_or_insert(error);
            }
        }
        let result = match &failed {
            Some(error) => Err(io::Error::new(error.kind(), error.to_string())),
            None if sync => file.sync_data(),
            None => Ok(()),
        };
        if let Err(error) = &result {
            failed.get_or_insert(io::Error::new(error.kind(), error.to_string()));
        }
        for done in waiting {
            complete(done, &result);
        }
    }
}

/// Writes `bytes` (a whole log file) to `log.tmp` and syncs it, on a thread
/// of its own.
fn start_rewrite(dir: &Path, bytes: Vec<u8>) -> Rewriting {
    let (tx, done) = crossbeam_channel::bounded(1);
    let tmp = dir.join("log.tmp");
    let spawned = thread::Builder::new()
        .name("sealbatch-raft-rewrite".into())
        .spawn(move || {
            let written = File::create(&tmp)
                .and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_data()))
                .and_then(|()| OpenOptions::new().append(true).open(&tmp));
            let _ = tx.send(written);
        });
    if let Err(error) = spawned {
        let (tx, failed) = crossbeam_channel::bounded(1);
        let _ = tx.send(Err(error));
        return Rewriting {
            since: Vec::new(),
            done: failed,
        };
    }
    Rewriting {
        since: Vec::new(),
        done,
    }
}

/// How a rewrite did not finish.
enum Rewrite {
    /// Before the new file took the old one's place: the old one is kept.
    Kept(io::Error),
    /// After: the log is in doubt and the replica must stop.
    Failed(io::Error),
}

/// Adds the frames appended since the rewrite began to the rewritten file,
/// syncs it and puts it in the log file's place.
fn finish_rewrite(
    dir: &Path,
    written: io::Result<File>,
    since: &[u8],
) -> std::result::Result<File, Rewrite> {
    let tmp = dir.join("log.tmp");
    let ready = written.and_then(|mut new| {
        new.write_all(since)?;
        new.sync_data()?;
        std::fs::rename(&tmp, dir.join(LOG_FILE))?;
        Ok(new)
    });
    match ready {
        Ok(new) => sync_dir(dir).map(|()| new).map_err(Rewrite::Failed),
        Err(error) => {
            let _ = std::fs::remove_file(&tmp);
            Err(Rewrite::Kept(error))
        }
    }
}

fn write_vote(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join("vote.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(VOTE_FILE))?;
    sync_dir(dir)
}

impl RaftLogReader<Replication> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Replication>>> {
        self.entries(range)
    }
}

impl RaftLogReader<Replication> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Replication>>> {
        self.store.entries(range)
    }
}

impl LogStore {
    /// The id of the last entry the log holds (or of the last purged, if
    /// it holds none): what a pre-vote compares (`spec/replication.md`
    /// §7.1).
    #[must_use]
    pub fn last_log_id(&self) -> Option<LogId<ReplicaId>> {
        let log = self.log.read().unwrap_or_else(|p| p.into_inner());
        log.entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(log.last_purged)
    }
}

impl RaftLogStorage<Replication> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<Replication>> {
        let log = self.read()?;
        let last = log
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(log.last_purged);
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            store: self.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<ReplicaId>) -> Result<()> {
        let mut bytes = VOTE_MAGIC.to_vec();
        put_vote(&mut bytes, vote);
        let crc = crc32c::crc32c(&bytes);
        bytes.put_u32(crc);
        let (tx, rx) = oneshot::channel();
        self.send(Job::Vote {
            bytes,
            done: Done::Reply(tx),
        })?;
        let written = rx.await.map_err(|_| {
            StorageIOError::write_vote(AnyError::error("the Raft log's writer thread stopped"))
        })?;
        written.map_err(|error| StorageIOError::write_vote(&error))?;
        *self.vote.write().map_err(|_| {
            StorageIOError::write_vote(AnyError::error("the vote's lock is poisoned"))
        })? = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<ReplicaId>>> {
        Ok(*self.vote.read().map_err(|_| {
            StorageIOError::read_vote(AnyError::error("the vote's lock is poisoned"))
        })?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<ReplicaId>>) -> Result<()> {
        self.log_ops(vec![Op::Committed(committed)], false, Done::Nothing)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<ReplicaId>>> {
        Ok(self.read()?.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Replication>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<Replication>> + Send,
        I::IntoIter: Send,
    {
        let ops = entries.into_iter().map(Op::Entry).collect();
        self.log_ops(ops, true, Done::Flushed(callback))
    }

    async fn truncate(&mut self, log_id: LogId<ReplicaId>) -> Result<()> {
        self.log_ops(vec![Op::Truncate(log_id.index)], false, Done::Nothing)
    }

    async fn purge(&mut self, log_id: LogId<ReplicaId>) -> Result<()> {
        self.log_ops(vec![Op::Purge(log_id)], false, Done::Nothing)
    }
}

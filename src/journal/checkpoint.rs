//! Checkpoint files beside the segments: an opaque snapshot of the state
//! the records below an LSN built, so that recovery reads only the records
//! from the snapshot's `replay_from` on, and segments wholly below every
//! kept snapshot's `replay_from` may be deleted (`spec/journal.md`,
//! "Checkpoints").
//!
//! The journal does not look inside the payload (the sequencer's layout is
//! in `spec/sequencer.md`); it frames it so that a torn or damaged file is
//! recognised and skipped, never trusted.

use super::storage::{Storage, StorageFile};
use super::{Journal, JournalConfig, JournalError, Lsn, list_segments};

/// First bytes of every checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SBCHKPT1";

/// Checkpoint file format version.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// Suffix of checkpoint file names: `checkpoint-<lsn, 20 digits>.sbc`.
pub const CHECKPOINT_FILE_SUFFIX: &str = ".sbc";

/// How many valid checkpoints [`Journal::write_checkpoint`] keeps: the new
/// one and the one before, so a checkpoint damaged on disk still leaves one
/// to recover from.
pub const CHECKPOINTS_KEPT: usize = 2;

const CHECKPOINT_PREFIX: &str = "checkpoint-";
const CHECKPOINT_NAME_DIGITS: usize = 20;
/// magic (8) ‖ version (4) ‖ lsn (8) ‖ replay_from (8) ‖ payload length (8).
const CHECKPOINT_HEADER_LEN: usize = 36;
const CHECKPOINT_TRAILER_LEN: usize = 4;

/// The file name of the checkpoint taken at `lsn`.
#[must_use]
pub fn checkpoint_name(lsn: Lsn) -> String {
    format!("{CHECKPOINT_PREFIX}{lsn:0CHECKPOINT_NAME_DIGITS$}{CHECKPOINT_FILE_SUFFIX}")
}

fn parse_checkpoint_name(name: &str) -> Option<Lsn> {
    let digits = name
        .strip_prefix(CHECKPOINT_PREFIX)?
        .strip_suffix(CHECKPOINT_FILE_SUFFIX)?;
    if digits.len() != CHECKPOINT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A checkpoint read back and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The state covers every record below this LSN and none from it on.
    pub lsn: Lsn,
    /// The first LSN a recovery from this checkpoint must read.
    pub replay_from: Lsn,
    /// The snapshot, exactly as written.
    pub payload: Vec<u8>,
}

/// Why a checkpoint file is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointProblem {
    /// Shorter than its header and trailer, or than the length it declares.
    #[error("truncated: {len} bytes")]
    Truncated {
        /// The file's length.
        len: usize,
    },
    /// Wrong magic or version.
    #[error("not a checkpoint file of format version {CHECKPOINT_FORMAT_VERSION}")]
    Format,
    /// The crc32c does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// The LSNs disagree with the name or each other.
    #[error("header says LSN {header} (replay from {replay_from}), file name says {name}")]
    Lsn {
        /// The LSN in the header.
        header: Lsn,
        /// Its `replay_from`.
        replay_from: Lsn,
        /// The LSN in the file name.
        name: Lsn,
    },
}

/// The bytes of a checkpoint file.
#[must_use]
pub fn encode_checkpoint_file(lsn: Lsn, replay_from: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(CHECKPOINT_HEADER_LEN + payload.len() + CHECKPOINT_TRAILER_LEN);
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.extend_from_slice(&CHECKPOINT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&replay_from.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks and decodes a checkpoint file named for `name_lsn`.
///
/// # Errors
///
/// The [`CheckpointProblem`].
pub fn decode_checkpoint_file(
    bytes: &[u8],
    name_lsn: Lsn,
) -> Result<StoredCheckpoint, CheckpointProblem> {
    let len = bytes.len();
    let truncated = CheckpointProblem::Truncated { len };
    let le_u64 = |at: usize| -> Result<u64, CheckpointProblem> {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or(CheckpointProblem::Truncated { len })
    };
    if len < CHECKPOINT_HEADER_LEN + CHECKPOINT_TRAILER_LEN {
        return Err(truncated);
    }
    if bytes[..8] != CHECKPOINT_MAGIC || bytes[8..12] != CHECKPOINT_FORMAT_VERSION.to_le_bytes() {
        return Err(CheckpointProblem::Format);
    }
    let lsn = Lsn(le_u64(12)?);
    let replay_from = Lsn(le_u64(20)?);
    let payload_len = usize::try_from(le_u64(28)?).map_err(|_| truncated.clone())?;
    let body_len = CHECKPOINT_HEADER_LEN
        .checked_add(payload_len)
        .ok_or(truncated.clone())?;
    if body_len.checked_add(CHECKPOINT_TRAILER_LEN) != Some(len) {
        return Err(truncated);
    }
    let crc = bytes
        .get(body_len..)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes);
    if crc != Some(crc32c::crc32c(&bytes[..body_len])) {
        return Err(CheckpointProblem::Checksum);
    }
    if lsn != name_lsn || replay_from > lsn || replay_from == Lsn::NONE {
        return Err(CheckpointProblem::Lsn {
            header: lsn,
            replay_from,
            name: name_lsn,
        });
    }
    Ok(StoredCheckpoint {
        lsn,
        replay_from,
        payload: bytes[CHECKPOINT_HEADER_LEN..body_len].to_vec(),
    })
}

/// One checkpoint file found in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundCheckpoint {
    /// Its file name.
    pub name: String,
    /// The checkpoint, or why it cannot be used.
    pub checkpoint: Result<StoredCheckpoint, CheckpointProblem>,
}

/// Every checkpoint file in `storage`, newest (highest LSN) first, each
/// read and checked.
///
/// A file listed but gone when it is opened or read (`NotFound`) is left
/// out: the journal's writer removed it meanwhile, which it does only to a
/// checkpoint superseded by newer ones (or to an unusable one). A reader
/// beside a live writer in another process (`sealbatch verify`) can meet
/// this; one in the same process holds the files instead
/// ([`Journal::file_holds`]).
///
/// # Errors
///
/// [`JournalError::Io`] listing the directory or reading a file (other than
/// its being gone).
pub fn read_checkpoints<S: Storage>(storage: &mut S) -> Result<Vec<FoundCheckpoint>, JournalError> {
    let mut names = list_checkpoints(storage)?;
    names.reverse();
    let mut found = Vec::with_capacity(names.len());
    for (lsn, name) in names {
        let bytes = match storage.open(&name).and_then(|mut file| file.read_all()) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(JournalError::Io {
                    path: storage.path_of(&name),
                    source,
                });
            }
        };
        found.push(FoundCheckpoint {
            checkpoint: decode_checkpoint_file(&bytes, lsn),
            name,
        });
    }
    Ok(found)
}

fn list_checkpoints<S: Storage>(storage: &mut S) -> Result<Vec<(Lsn, String)>, JournalError> {
    let path = storage.path_of("");
    let mut names: Vec<(Lsn, String)> = storage
        .list()
        .map_err(|source| JournalError::Io { path, source })?
        .into_iter()
        .filter_map(|name| parse_checkpoint_name(&name).map(|lsn| (lsn, name)))
        .collect();
    names.sort();
    Ok(names)
}

/// What [`Journal::write_checkpoint`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointWritten {
    /// The file written (`None`: a usable one for this LSN existed already).
    pub name: Option<String>,
    /// Its size in bytes.
    pub bytes: u64,
    /// Older or unusable checkpoint files removed (none while a reader
    /// holds the files).
    pub checkpoints_removed: usize,
    /// The smallest `replay_from` of the kept checkpoints, as read back from
    /// disk: segments wholly below it hold no record any kept checkpoint
    /// needs. `None` when no checkpoint reads back usable: then nothing may
    /// be pruned.
    pub prunable_below: Option<Lsn>,
    /// Segment files removed because every kept checkpoint starts after them
    /// (none while a reader holds the files).
    pub segments_removed: usize,
}

impl<S: Storage> Journal<S> {
    /// Writes a checkpoint whose state covers the records below `lsn` and
    /// whose recovery reads from `replay_from`, once every record below
    /// `lsn` is durable (this syncs first); a usable file for `lsn` already
    /// there is kept, an unusable one replaced. Then keeps the
    /// [`CHECKPOINTS_KEPT`] newest usable checkpoints as read back, removes
    /// other checkpoint files, and with `prune` removes, oldest first, every
    /// segment whose records all lie below the `replay_from` of each kept
    /// checkpoint (never the last segment); nothing if none reads back
    /// usable. While a reader holds the files ([`Journal::file_holds`]) it
    /// removes neither: every usable checkpoint is kept (and bounds
    /// [`CheckpointWritten::prunable_below`]) until a checkpoint written
    /// after the hold is released.
    ///
    /// A failure here leaves the journal usable: a torn checkpoint file is
    /// recognised and ignored by recovery, and a segment not yet removed is
    /// only disk space.
    ///
    /// # Errors
    ///
    /// [`JournalError::Config`] if `replay_from > lsn` or `lsn` is beyond the
    /// next LSN; [`JournalError::Io`] (the sync's error also poisons the
    /// journal, as [`Journal::sync`]).
    pub fn write_checkpoint(
        &mut self,
        lsn: Lsn,
        replay_from: Lsn,
        payload: &[u8],
        prune: bool,
    ) -> Result<CheckpointWritten, JournalError> {
        if replay_from == Lsn::NONE || replay_from > lsn || lsn > self.next_lsn {
            return Err(JournalError::Config(
                "a checkpoint needs 0 < replay_from <= lsn <= next LSN",
            ));
        }
        self.sync()?;
        let mut written = CheckpointWritten::default();
        let name = checkpoint_name(lsn);
        let path = self.storage.path_of(&name);
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        // A file of this name from an earlier attempt (the same LSN: nothing
        // journaled since) is kept if it reads back usable, and replaced if
        // not (a write that failed or was torn).
        let existing = match self.storage.open(&name) {
            Ok(mut file) => Some(file.read_all().map_err(io)?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(io(error)),
        };
        let usable = existing
            .as_ref()
            .is_some_and(|bytes| decode_checkpoint_file(bytes, lsn).is_ok());
        if !usable {
            if existing.is_some() {
                self.storage.remove(&name).map_err(io)?;
                self.storage.sync_dir().map_err(io)?;
            }
            let mut file = self.storage.create(&name).map_err(io)?;
            let bytes = encode_checkpoint_file(lsn, replay_from, payload);
            file.append(&bytes).map_err(io)?;
            file.sync_data().map_err(io)?;
            self.storage.sync_dir().map_err(io)?;
            written.name = Some(name);
            written.bytes = bytes.len() as u64;
        }

        // Keep the newest usable checkpoints, as read back; their oldest
        // replay_from bounds what may be pruned. While a reader holds the
        // files, every checkpoint is kept (and bounds the pruning): the
        // next checkpoint after the hold removes the others.
        let holds = self.holds.clone();
        let (removed, floor) = holds.removing_checkpoints(|held| {
            let mut kept = 0;
            let mut removed = 0;
            let mut floor: Option<Lsn> = None;
            for found in read_checkpoints(&mut self.storage)? {
                match &found.checkpoint {
                    Ok(checkpoint) if held || kept < CHECKPOINTS_KEPT => {
                        kept += 1;
                        floor = Some(
                            floor.map_or(checkpoint.replay_from, |f| f.min(checkpoint.replay_from)),
                        );
                    }
                    Err(_) if held => {}
                    _ => {
                        let path = self.storage.path_of(&found.name);
                        self.storage
                            .remove(&found.name)
                            .map_err(|source| JournalError::Io { path, source })?;
                        removed += 1;
                    }
                }
            }
            if removed > 0 {
                let path = self.storage.path_of("");
                self.storage
                    .sync_dir()
                    .map_err(|source| JournalError::Io { path, source })?;
            }
            Ok::<_, JournalError>((removed, floor))
        })?;
        written.checkpoints_removed = removed;
        written.prunable_below = floor;
        if prune && let Some(floor) = floor {
            written.segments_removed = holds.removing_segments(|held| {
                if held {
                    Ok(0)
                } else {
                    prune_segments_below(&mut self.storage, floor)
                }
            })?;
        }
        Ok(written)
    }
}

/// Removes, oldest first and each durably before the next, every segment
/// whose successor starts at or below `lsn` (so all its records are below
/// `lsn`); never the last segment. What remains is always a contiguous run
/// of segments. Returns how many were removed.
///
/// Safe beside a journal appending in the same directory (from another
/// thread, on a clone of its storage) when `lsn` is at most the journal's
/// durable LSN plus one, as a checkpoint's
/// [`prunable_below`](CheckpointWritten::prunable_below) is: the segment
/// being written then always starts at or after `lsn`'s segment, so it is
/// never removed. One pruner at a time. This function does not look at the
/// readers' holds ([`Journal::file_holds`]); the journal's own pruning
/// ([`Journal::write_checkpoint`], the writer's pruning thread) does.
///
/// # Errors
///
/// [`JournalError::Io`] listing the directory, removing a file or syncing
/// the directory.
pub fn prune_segments_below<S: Storage>(storage: &mut S, lsn: Lsn) -> Result<usize, JournalError> {
    let segments = list_segments(storage, JournalConfig::default())?;
    let mut removed = 0;
    for pair in segments.windows(2) {
        let [(_, name), (next_first, _)] = pair else {
            continue;
        };
        if *next_first > lsn {
            break;
        }
        let path = storage.path_of(name);
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        storage.remove(name).map_err(io)?;
        storage.sync_dir().map_err(io)?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_segment_names_are_not_checkpoints() {
        assert_eq!(
            checkpoint_name(Lsn(42)),
            "checkpoint-00000000000000000042.sbc"
        );
        assert_eq!(
            parse_checkpoint_name(&checkpoint_name(Lsn(42))),
            Some(Lsn(42))
        );
        assert_eq!(
            parse_checkpoint_name(&super::super::segment_name(Lsn(42))),
            None
        );
        assert_eq!(parse_checkpoint_name("checkpoint-42.sbc"), None);
    }

    #[test]
    fn a_file_decodes_and_any_damage_is_refused() {
        let bytes = encode_checkpoint_file(Lsn(100), Lsn(7), b"state");
        let ok = decode_checkpoint_file(&bytes, Lsn(100)).expect("decodes");
        assert_eq!(
            (ok.lsn, ok.replay_from, &ok.payload[..]),
            (Lsn(100), Lsn(7), &b"state"[..])
        );
        assert!(matches!(
            decode_checkpoint_file(&bytes, Lsn(101)),
            Err(CheckpointProblem::Lsn { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(
                decode_checkpoint_file(&bytes[..cut], Lsn(100)).is_err(),
                "cut at {cut}"
            );
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(
                decode_checkpoint_file(&flipped, Lsn(100)).is_err(),
                "flip at {at}"
            );
        }
        let inverted = encode_checkpoint_file(Lsn(100), Lsn(101), b"");
        assert!(decode_checkpoint_file(&inverted, Lsn(100)).is_err());
    }

    /// A storage that removes `vanishing` right after listing the directory,
    /// as a writer removing a superseded checkpoint would.
    #[derive(Clone)]
    struct Vanishing {
        disk: crate::journal::SimStorage,
        vanishing: String,
    }

    impl Storage for Vanishing {
        type File = crate::journal::SimFileHandle;

        fn list(&mut self) -> std::io::Result<Vec<String>> {
            let names = self.disk.list()?;
            let _ = self.disk.remove(&self.vanishing);
            Ok(names)
        }

        fn open(&mut self, name: &str) -> std::io::Result<Self::File> {
            self.disk.open(name)
        }

        fn create(&mut self, name: &str) -> std::io::Result<Self::File> {
            self.disk.create(name)
        }

        fn remove(&mut self, name: &str) -> std::io::Result<()> {
            self.disk.remove(name)
        }

        fn sync_dir(&mut self) -> std::io::Result<()> {
            self.disk.sync_dir()
        }

        fn path_of(&self, name: &str) -> std::path::PathBuf {
            self.disk.path_of(name)
        }
    }

    #[test]
    fn a_checkpoint_removed_between_listing_and_reading_is_left_out() {
        let disk = crate::journal::SimStorage::new(3);
        for (lsn, replay_from) in [(Lsn(100), Lsn(90)), (Lsn(150), Lsn(140))] {
            disk.set_file_bytes(
                &checkpoint_name(lsn),
                encode_checkpoint_file(lsn, replay_from, b"state"),
            );
        }
        let mut storage = Vanishing {
            disk: disk.clone(),
            vanishing: checkpoint_name(Lsn(100)),
        };
        let found = read_checkpoints(&mut storage).expect("a vanished file is no error");
        let lsns: Vec<Lsn> = found
            .iter()
            .filter_map(|f| f.checkpoint.as_ref().ok().map(|c| c.lsn))
            .collect();
        assert_eq!(lsns, vec![150]);
    }
}

//! The journal's errors.

use std::path::PathBuf;

use super::Lsn;
use super::format::{FrameProblem, HeaderProblem};

/// An error from the journal. Every variant about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O operation failed.
    #[error("journal I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The journal is damaged in a way that is not a torn tail. Nothing is
    /// skipped: the process must stop and an operator inspect the file.
    #[error("journal corrupt: {path} at byte offset {offset}: {problem}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset in that file where the damage starts.
        offset: u64,
        /// What is wrong there.
        problem: Corruption,
    },
    /// A record payload is larger than the limit.
    #[error("record payload of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The payload's length.
        len: usize,
        /// [`RECORD_PAYLOAD_BYTES_MAX`](super::RECORD_PAYLOAD_BYTES_MAX).
        max: usize,
    },
    /// A record kind byte outside `1..=`[`RECORD_KIND_MAX`](super::RECORD_KIND_MAX).
    #[error("record kind {0} is not assigned")]
    UnknownKind(u8),
    /// An earlier I/O error left the journal in an unknown state.
    #[error("journal poisoned by an earlier I/O error: drop it and reopen to recover")]
    Poisoned,
    /// A setting is out of its bounds.
    #[error("invalid journal config: {0}")]
    Config(&'static str),
    /// The [`JournalWriter`](super::JournalWriter) thread is gone.
    #[error("journal writer thread stopped")]
    WriterStopped,
}

/// What is wrong at the offset of a [`JournalError::Corrupt`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The segment header is damaged.
    #[error("bad segment header: {0}")]
    Header(HeaderProblem),
    /// The header's first LSN disagrees with the file name.
    #[error("segment header says first LSN {header}, file name says {name}")]
    NameMismatch {
        /// First LSN in the header.
        header: Lsn,
        /// First LSN in the file name.
        name: Lsn,
    },
    /// Segments are missing (or left over): this one does not continue the
    /// previous one.
    #[error("segment starts at LSN {found}, expected {expected}")]
    SegmentGap {
        /// The LSN after the previous segment's last record.
        expected: Lsn,
        /// This segment's first LSN.
        found: Lsn,
    },
    /// A segment name holds an LSN of 0 or above [`LSN_MAX`](super::LSN_MAX).
    #[error("segment first LSN {0} is out of range")]
    LsnOutOfRange(Lsn),
    /// A checksum-valid record carries the wrong LSN: misplaced data, never
    /// a torn write.
    #[error("record has LSN {found}, expected {expected}")]
    LsnMismatch {
        /// The LSN that should come next.
        expected: Lsn,
        /// The LSN in the frame.
        found: Lsn,
    },
    /// A record frame is damaged and this cannot be a torn tail: it is in a
    /// closed segment, or a valid record follows it.
    #[error("bad record frame ({problem}) where LSN {expected_lsn} was expected{}", later_text(*later))]
    Record {
        /// What is wrong with the frame.
        problem: FrameProblem,
        /// The LSN the frame should have had.
        expected_lsn: Lsn,
        /// `(offset, lsn)` of a valid record found after the damage, if the
        /// damage is in the last segment.
        later: Option<(u64, Lsn)>,
    },
}

fn later_text(later: Option<(u64, Lsn)>) -> String {
    match later {
        Some((offset, lsn)) => {
            format!(", yet a valid record (LSN {lsn}) follows at offset {offset}")
        }
        None => ", in a closed segment".to_string(),
    }
}

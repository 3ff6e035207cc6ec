//! Checkpoint files as the shell reads them: the journal's file
//! ([`FoundCheckpoint`]) holding the sequencer's state
//! ([`Checkpoint::from_stored`]).

use crate::codec::DecodeError;
use crate::journal::{CheckpointProblem, FoundCheckpoint, Lsn};
use crate::sequencer::{Checkpoint, UnusableState};

/// Why a checkpoint file found in the journal directory cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnusableCheckpoint {
    /// The file itself is damaged (length, magic, checksum, name).
    #[error("file: {0}")]
    File(#[from] CheckpointProblem),
    /// The file is sound but its payload is not a sequencer state.
    #[error("state: {0}")]
    State(DecodeError),
    /// The state's LSNs are not the file's.
    #[error(
        "the state says LSN {state_lsn} (replay from {state_replay_from}), the file {file_lsn} ({file_replay_from})"
    )]
    LsnMismatch {
        /// The state's `lsn`.
        state_lsn: Lsn,
        /// The state's `replay_from`.
        state_replay_from: Lsn,
        /// The file header's `lsn`.
        file_lsn: Lsn,
        /// The file header's `replay_from`.
        file_replay_from: Lsn,
    },
}

impl From<UnusableState> for UnusableCheckpoint {
    fn from(problem: UnusableState) -> UnusableCheckpoint {
        match problem {
            UnusableState::Decode(error) => UnusableCheckpoint::State(error),
            UnusableState::LsnMismatch {
                state_lsn,
                state_replay_from,
                file_lsn,
                file_replay_from,
            } => UnusableCheckpoint::LsnMismatch {
                state_lsn,
                state_replay_from,
                file_lsn,
                file_replay_from,
            },
        }
    }
}

impl TryFrom<FoundCheckpoint> for Checkpoint {
    type Error = UnusableCheckpoint;

    /// The sequencer state of a checkpoint file read back from the journal
    /// directory, if the file is sound, decodes, and agrees with its state
    /// on the LSNs.
    fn try_from(found: FoundCheckpoint) -> Result<Checkpoint, UnusableCheckpoint> {
        let stored = found.checkpoint?;
        Ok(Checkpoint::from_stored(
            stored.lsn,
            stored.replay_from,
            &stored.payload,
        )?)
    }
}

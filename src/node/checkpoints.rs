//! Checkpoint files as the shell reads them: the journal's file
//! ([`FoundCheckpoint`]) holding the sequencer's state
//! ([`Checkpoint::from_stored`]).

use crate::journal::{CheckpointProblem, FoundCheckpoint};
use crate::sequencer::{Checkpoint, UnusableState};

/// Why a checkpoint file found in the journal directory cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnusableCheckpoint {
    /// The file itself is damaged (length, magic, checksum, name).
    #[error("file: {0}")]
    File(#[from] CheckpointProblem),
    /// The file is sound but its payload is not a usable state.
    #[error("{0}")]
    State(#[from] UnusableState),
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

//! A replica's side of commit certificates (the certificates themselves
//! are [`crate::commit`]): it remembers the seals its committed log holds
//! and attests those, and only those, with its commit key when the leader
//! asks.

use std::collections::BTreeMap;
use std::sync::Mutex;

pub use crate::commit::*;
use crate::envelope::{MerkleRoot, SignedSeal};
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::sequencer::RecordKind;
use crate::types::BatchId;

/// Committed seals a replica remembers, to attest on request.
pub const COMMITTED_SEALS_KEPT: usize = 4096;

/// What a replica attests with: its commit key, the sequencer whose seals
/// it attests, and the seals its committed log holds.
#[derive(Debug)]
pub struct Attestor {
    key: CommitKey,
    sequencer: [u8; 32],
    seals: std::sync::Arc<CommittedSeals>,
}

impl Attestor {
    /// An attestor signing with `key` for the sequencer `sequencer`.
    #[must_use]
    pub fn new(key: CommitKey, sequencer: [u8; 32]) -> Attestor {
        Attestor {
            key,
            sequencer,
            seals: std::sync::Arc::default(),
        }
    }

    /// The committed seals it attests (the state machine records them).
    #[must_use]
    pub fn seals(&self) -> &std::sync::Arc<CommittedSeals> {
        &self.seals
    }

    /// Its commit key's public half.
    #[must_use]
    pub fn public(&self) -> [u8; 32] {
        self.key.public()
    }

    /// Answers a request to attest `(e, count, root)`.
    #[must_use]
    pub fn answer(&self, e: BatchId, count: u32, root: &MerkleRoot) -> AttestAnswer {
        self.seals
            .attest(&self.key, &self.sequencer, e, count, root)
    }

    /// As [`answer`](Self::answer), waiting up to `wait` for a seal of `e`
    /// to be applied (the leader asks as soon as the seal is committed,
    /// which this replica may learn a heartbeat later).
    pub async fn answer_within(
        &self,
        e: BatchId,
        count: u32,
        root: &MerkleRoot,
        wait: std::time::Duration,
    ) -> AttestAnswer {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an apply in between wakes it.
            let applied = self.seals.applied.notified();
            let answer = self.answer(e, count, root);
            if answer != AttestAnswer::NotApplied
                || tokio::time::timeout_at(deadline, applied).await.is_err()
            {
                return answer;
            }
        }
    }
}

/// The seals a replica applied from the committed log (the newest
/// [`COMMITTED_SEALS_KEPT`]), which it attests on the leader's request.
#[derive(Debug, Default)]
pub struct CommittedSeals {
    seals: Mutex<BTreeMap<BatchId, (u32, MerkleRoot)>>,
    /// Wakes requests waiting for a seal to be applied.
    applied: tokio::sync::Notify,
}

/// A replica's answer to "attest this seal".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttestAnswer {
    /// Its committed log holds the seal: its attestation.
    Attested(Attestation),
    /// It has not applied a seal of the batch (yet).
    NotApplied,
    /// Its committed log holds another seal of the batch.
    Differs,
}

impl CommittedSeals {
    /// Remembers a seal applied from the committed log.
    pub fn applied(&self, e: BatchId, count: u32, root: MerkleRoot) {
        let mut seals = self.seals.lock().unwrap_or_else(|p| p.into_inner());
        seals.entry(e).or_insert((count, root));
        while seals.len() > COMMITTED_SEALS_KEPT {
            seals.pop_first();
        }
        drop(seals);
        self.applied.notify_waiters();
    }

    /// Remembers the seals of a replica's journal in `dir` (which holds
    /// only what it applied from the committed log), so that a restarted
    /// replica attests the seals of batches still waiting for their keys
    /// even when the entries that held them are below its snapshot (they
    /// are not applied again). Returns how many
    /// seals it read; a journal that ends torn is read up to the tear.
    ///
    /// # Errors
    ///
    /// [`JournalError`] if the journal cannot be opened.
    pub fn remember_journal(&self, dir: &std::path::Path) -> Result<usize, JournalError> {
        if !dir.exists() {
            return Ok(0);
        }
        let recovery = Journal::open_dir_read_only(dir, JournalConfig::default())?;
        let mut read = 0;
        for record in recovery.records.map_while(Result::ok) {
            if record.kind == RecordKind::Seal as u8
                && let Ok(seal) = SignedSeal::from_bytes(&record.payload)
            {
                self.applied(seal.e, seal.count, seal.root);
                read += 1;
            }
        }
        Ok(read)
    }

    /// Answers a request to attest `(e, count, root)` with `key`.
    #[must_use]
    pub fn attest(
        &self,
        key: &CommitKey,
        sequencer: &[u8; 32],
        e: BatchId,
        count: u32,
        root: &MerkleRoot,
    ) -> AttestAnswer {
        let seals = self.seals.lock().unwrap_or_else(|p| p.into_inner());
        match seals.get(&e) {
            None => AttestAnswer::NotApplied,
            Some(committed) if *committed != (count, *root) => AttestAnswer::Differs,
            Some(_) => AttestAnswer::Attested(key.attest(sequencer, e, count, root)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQUENCER: [u8; 32] = [9; 32];

    fn seal(e: BatchId, root: u8) -> SignedSeal {
        SignedSeal {
            e,
            count: 3,
            root: MerkleRoot([root; 32]),
            signature: [0; 64],
        }
    }

    fn attest(key: &CommitKey, s: &SignedSeal) -> Attestation {
        key.attest(&SEQUENCER, s.e, s.count, &s.root)
    }

    #[test]
    fn a_replica_attests_only_the_seal_its_committed_log_holds() {
        let key = CommitKey::from_seed(&[1; 32]);
        let committed = CommittedSeals::default();
        let s = seal(5, 1);
        assert_eq!(
            committed.attest(&key, &SEQUENCER, 5, 3, &s.root),
            AttestAnswer::NotApplied
        );
        committed.applied(5, 3, s.root);
        // A second seal of the batch applied later (it cannot be) changes nothing.
        committed.applied(5, 3, MerkleRoot([2; 32]));
        let AttestAnswer::Attested(a) = committed.attest(&key, &SEQUENCER, 5, 3, &s.root) else {
            panic!("not attested");
        };
        assert_eq!(a, attest(&key, &s));
        assert_eq!(
            committed.attest(&key, &SEQUENCER, 5, 3, &MerkleRoot([2; 32])),
            AttestAnswer::Differs
        );
        assert_eq!(
            committed.attest(&key, &SEQUENCER, 5, 4, &s.root),
            AttestAnswer::Differs
        );
        for e in 6..6 + COMMITTED_SEALS_KEPT as u64 {
            committed.applied(e, 1, s.root);
        }
        assert_eq!(
            committed.attest(&key, &SEQUENCER, 5, 3, &s.root),
            AttestAnswer::NotApplied
        );
    }
}

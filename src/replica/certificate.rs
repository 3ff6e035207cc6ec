//! A replica's side of commit certificates (the certificates themselves
//! are [`crate::commit`]): it remembers the seals and the committee log
//! entries its committed log holds and attests those, and only those, with
//! its commit key when the leader asks.

use crate::codec::Encode;
use std::collections::BTreeMap;
use std::sync::Mutex;

pub use crate::commit::*;
use crate::envelope::{MerkleRoot, SignedSeal};
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::sequencer::RecordKind;
use crate::types::BatchId;

/// Committed seals a replica remembers, to attest on request.
pub const COMMITTED_SEALS_KEPT: usize = 4096;

/// Committee log entries a replica remembers (the newest positions), to
/// attest on request: far more than a log keeper retains.
pub const COMMITTED_LOG_KEPT: usize = 1 << 16;

/// What a replica attests with: its commit key, the sequencer whose seals
/// it attests, and the seals its committed log holds.
#[derive(Debug)]
pub struct Attestor {
    key: CommitKey,
    sequencer: [u8; 32],
    seals: std::sync::Arc<CommittedSeals>,
    log: std::sync::Arc<CommittedLog>,
}

impl Attestor {
    /// An attestor signing with `key` for the sequencer `sequencer`.
    #[must_use]
    pub fn new(key: CommitKey, sequencer: [u8; 32]) -> Attestor {
        Attestor {
            key,
            sequencer,
            seals: std::sync::Arc::default(),
            log: std::sync::Arc::default(),
        }
    }

    /// The committed committee log entries it attests (the state machine
    /// records them).
    #[must_use]
    pub fn log(&self) -> &std::sync::Arc<CommittedLog> {
        &self.log
    }

    /// Answers a request to attest the run of log `entries` (positions
    /// ascending, at most [`LOG_ATTESTED_MAX`]) of committee `committee`,
    /// waiting up to `wait` for the last of them to be applied.
    pub async fn answer_log_within(
        &self,
        committee: &[u8; 32],
        entries: &[(u64, [u8; 32])],
        wait: std::time::Duration,
    ) -> AttestAnswer {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let applied = self.log.applied.notified();
            let answer = self
                .log
                .attest(&self.key, &self.sequencer, committee, entries);
            if answer != AttestAnswer::NotApplied
                || tokio::time::timeout_at(deadline, applied).await.is_err()
            {
                return answer;
            }
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

/// A replica's answer to "attest this seal" (or these log entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttestAnswer {
    /// Its committed log holds the seal (the entries): its attestation.
    Attested(Attestation),
    /// It has not applied a seal of the batch (an entry at a position)
    /// yet, or no longer remembers it.
    NotApplied,
    /// Its committed log holds another seal of the batch (another entry at
    /// a position; or the run asked for is empty or too long).
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

/// The committee log entries a replica applied from the committed log
/// (the newest [`COMMITTED_LOG_KEPT`] positions, each with its entry's
/// hash), which it attests on the leader's request.
#[derive(Debug, Default)]
pub struct CommittedLog {
    entries: Mutex<BTreeMap<u64, [u8; 32]>>,
    /// Wakes requests waiting for an entry to be applied.
    applied: tokio::sync::Notify,
}

impl CommittedLog {
    /// Remembers an entry applied from the committed log: its position
    /// and the hash of its encoding ([`log_entry_hash`]).
    pub fn applied(&self, position: u64, hash: [u8; 32]) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(position, hash);
        while entries.len() > COMMITTED_LOG_KEPT {
            entries.pop_first();
        }
        drop(entries);
        self.applied.notify_waiters();
    }

    /// Remembers every entry the committee's log keeper of `sequencer`
    /// retains — a replica's sequencer holds only what it applied from the
    /// committed log, including the entries a checkpoint carried, which
    /// are not applied again. Returns how many.
    pub fn remember(&self, sequencer: &crate::sequencer::Sequencer) -> usize {
        let mut from = 0;
        let mut read = 0;
        loop {
            let entries = sequencer.committee_log(from);
            let Some(&(last, _)) = entries.last() else {
                return read;
            };
            for (position, entry) in &entries {
                self.applied(*position, log_entry_hash(&entry.to_bytes()));
            }
            read += entries.len();
            let Some(next) = last.checked_add(1) else {
                return read;
            };
            from = next;
        }
    }

    /// Answers a request to attest `entries` (position and hash each) with
    /// `key`: attested only if every position holds that very entry.
    #[must_use]
    pub fn attest(
        &self,
        key: &CommitKey,
        sequencer: &[u8; 32],
        committee: &[u8; 32],
        entries: &[(u64, [u8; 32])],
    ) -> AttestAnswer {
        if entries.is_empty() || entries.len() > LOG_ATTESTED_MAX {
            return AttestAnswer::Differs;
        }
        let held = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for (position, hash) in entries {
            match held.get(position) {
                None => return AttestAnswer::NotApplied,
                Some(h) if h != hash => return AttestAnswer::Differs,
                Some(_) => {}
            }
        }
        drop(held);
        AttestAnswer::Attested(key.attest_log(sequencer, committee, entries))
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
    fn a_replica_attests_only_log_entries_its_committed_log_holds() {
        let key = CommitKey::from_seed(&[1; 32]);
        let committee = [4; 32];
        let log = CommittedLog::default();
        let run = [
            (7u64, log_entry_hash(b"open")),
            (8, log_entry_hash(b"deal")),
        ];
        log.applied(7, run[0].1);
        // The second entry is not applied yet.
        assert_eq!(
            log.attest(&key, &SEQUENCER, &committee, &run),
            AttestAnswer::NotApplied
        );
        log.applied(8, run[1].1);
        let AttestAnswer::Attested(a) = log.attest(&key, &SEQUENCER, &committee, &run) else {
            panic!("not attested");
        };
        assert!(a.verifies_message(&committed_log_message(&SEQUENCER, &committee, &run)));
        // Another entry at a position (a forged `Open`), or nothing to
        // attest: refused.
        let forged = [(7u64, log_entry_hash(b"another open"))];
        assert_eq!(
            log.attest(&key, &SEQUENCER, &committee, &forged),
            AttestAnswer::Differs
        );
        assert_eq!(
            log.attest(&key, &SEQUENCER, &committee, &[]),
            AttestAnswer::Differs
        );
        // The attestation names the committee: it proves nothing of
        // another's log.
        let set = ReplicaSet::new([key.public()]).expect("a set");
        let certificate = CommitCertificate::new([a]);
        assert!(
            set.check_log(&SEQUENCER, &committee, &run, &certificate)
                .is_ok()
        );
        assert!(
            set.check_log(&SEQUENCER, &[5; 32], &run, &certificate)
                .is_err()
        );
        assert!(
            set.check_log(&SEQUENCER, &committee, &run[..1], &certificate)
                .is_err()
        );
    }

    #[test]
    fn a_replica_attests_only_the_seal_its_committed_log_holds() {
        let key = CommitKey::from_seed(&[1; 32]);
        let committed = CommittedSeals::default();
        let s = seal(BatchId(5), 1);
        assert_eq!(
            committed.attest(&key, &SEQUENCER, BatchId(5), 3, &s.root),
            AttestAnswer::NotApplied
        );
        committed.applied(BatchId(5), 3, s.root);
        // A second seal of the batch applied later (it cannot be) changes nothing.
        committed.applied(BatchId(5), 3, MerkleRoot([2; 32]));
        let AttestAnswer::Attested(a) = committed.attest(&key, &SEQUENCER, BatchId(5), 3, &s.root)
        else {
            panic!("not attested");
        };
        assert_eq!(a, attest(&key, &s));
        assert_eq!(
            committed.attest(&key, &SEQUENCER, BatchId(5), 3, &MerkleRoot([2; 32])),
            AttestAnswer::Differs
        );
        assert_eq!(
            committed.attest(&key, &SEQUENCER, BatchId(5), 4, &s.root),
            AttestAnswer::Differs
        );
        for e in 6..6 + COMMITTED_SEALS_KEPT as u64 {
            committed.applied(BatchId(e), 1, s.root);
        }
        assert_eq!(
            committed.attest(&key, &SEQUENCER, BatchId(5), 3, &s.root),
            AttestAnswer::NotApplied
        );
    }
}

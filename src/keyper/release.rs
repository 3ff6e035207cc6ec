//! The release rule a keyper keeps: its share of batch `e` leaves only for
//! the first validly signed seal of `e` it sees, and only once its own clock
//! is past the batch's close plus a skew. A second seal of `e` with another
//! root is refused and kept as evidence (two seals the sequencer signed for
//! one batch). The caller journals and fsyncs each release decision before
//! the share leaves, so a restart — which rebuilds this from the journal —
//! never releases for a second root.
//!
//! For a replicated sequencer the keyper is configured with the replicas'
//! commit keys, and a seal also needs a commit certificate: valid
//! signatures of a majority of them over the seal (`spec/replication.md`
//! §12), so a deposed leader cannot obtain a release for a seal the cluster
//! did not commit.

use std::collections::BTreeMap;

use crate::commit::{CommitCertificate, ReplicaSet};
use crate::envelope::{BatchSchedule, SequencerPublicKey, SignedSeal};
use crate::types::BatchId;

/// Why a keyper does not release.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseRefusal {
    /// The seal's signature does not verify under the sequencer's key.
    #[error("the seal of batch {0} is not signed by the sequencer")]
    BadSeal(BatchId),
    /// The keyper is configured with replicas and the seal has no
    /// certificate of a majority of them.
    #[error("the seal of batch {e} is not certified by a majority of the replicas: {reason}")]
    Uncertified {
        /// The batch.
        e: BatchId,
        /// What is missing.
        reason: String,
    },
    /// The keyper's clock is not past the batch's close plus the skew yet.
    #[error("batch {e} closes at {close_ms} ms (+{skew_ms} ms skew); now is {now_ms} ms")]
    TooEarly {
        /// The batch.
        e: BatchId,
        /// Its close.
        close_ms: u64,
        /// The skew allowed.
        skew_ms: u64,
        /// The keyper's clock.
        now_ms: u64,
    },
    /// The batch is not one this keyper holds a share of.
    #[error("no share of batch {0}")]
    UnknownBatch(BatchId),
    /// A seal of this batch with another root was released for before: the
    /// sequencer signed two seals for one batch.
    #[error("batch {0} was released for another root; both seals are kept as evidence")]
    Equivocation(BatchId),
}

/// Two seals the sequencer signed for one batch, with different
/// `(count, root)`: the first is the one released for. Anyone can check
/// both signatures; a keyper journals the pair (`spec/keyper.md` §13) and
/// serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The seal released for.
    pub first: SignedSeal,
    /// Another seal of the same batch.
    pub second: SignedSeal,
}

/// Pairs of equivocating seals kept as evidence (one is enough to prove
/// the sequencer signed two roots; more are not kept).
pub const EVIDENCE_MAX: usize = 1024;

/// What to do with a seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The first seal of its batch: journal it (fsync), then send the
    /// share.
    First,
    /// The seal released for before: send the same share again (no journal
    /// write).
    Again,
}

/// A keyper's memory of the seals it released for.
#[derive(Clone, Debug, Default)]
pub struct ReleaseGuard {
    /// The replicas whose majority must certify a seal (a replicated
    /// sequencer); `None` for a single node.
    replicas: Option<ReplicaSet>,
    released: BTreeMap<BatchId, SignedSeal>,
    /// Pairs of seals with one batch and two roots.
    evidence: Vec<Evidence>,
    /// The pair the last [`decide`](Self::decide) found, not journaled yet.
    new_evidence: Option<Evidence>,
}

impl ReleaseGuard {
    /// A guard that, with `replicas`, also requires each seal's commit
    /// certificate.
    #[must_use]
    pub fn new(replicas: Option<ReplicaSet>) -> ReleaseGuard {
        ReleaseGuard {
            replicas,
            ..ReleaseGuard::default()
        }
    }

    /// Decides on `seal` (with its commit `certificate`, if it came with
    /// one) at `now_ms`. [`Release::First`] must be followed
    /// by [`record`](Self::record) once journaled, before the share leaves.
    ///
    /// # Errors
    ///
    /// [`ReleaseRefusal`]; an equivocation is also kept as evidence
    /// ([`take_new_evidence`](Self::take_new_evidence) hands a new pair
    /// to journal).
    pub fn decide(
        &mut self,
        seal: &SignedSeal,
        certificate: Option<&CommitCertificate>,
        sequencer: &SequencerPublicKey,
        schedule: &BatchSchedule,
        skew_ms: u64,
        now_ms: u64,
    ) -> Result<Release, ReleaseRefusal> {
        if seal.verify(sequencer).is_err() {
            return Err(ReleaseRefusal::BadSeal(seal.e));
        }
        if let Some(replicas) = &self.replicas {
            let certified = certificate
                .ok_or_else(|| "no certificate".to_owned())
                .and_then(|c| {
                    replicas
                        .check(&sequencer.to_bytes(), seal, c)
                        .map_err(|error| error.to_string())
                });
            if let Err(reason) = certified {
                return Err(ReleaseRefusal::Uncertified { e: seal.e, reason });
            }
        }
        if let Some(first) = self.released.get(&seal.e) {
            if (first.count, first.root) == (seal.count, seal.root) {
                return Ok(Release::Again);
            }
            let pair = Evidence {
                first: *first,
                second: *seal,
            };
            if !self.evidence.contains(&pair) && self.evidence.len() < EVIDENCE_MAX {
                self.evidence.push(pair);
                self.new_evidence = Some(pair);
            }
            return Err(ReleaseRefusal::Equivocation(seal.e));
        }
        let close_ms = schedule.close_ms(seal.e).unwrap_or(u64::MAX);
        if now_ms < close_ms.saturating_add(skew_ms) {
            return Err(ReleaseRefusal::TooEarly {
                e: seal.e,
                close_ms,
                skew_ms,
                now_ms,
            });
        }
        Ok(Release::First)
    }

    /// Remembers a release (journaled already; also how a restart replays
    /// the journal).
    pub fn record(&mut self, seal: SignedSeal) {
        self.released.entry(seal.e).or_insert(seal);
    }

    /// The seal released for in batch `e`, if any.
    #[must_use]
    pub fn released(&self, e: BatchId) -> Option<&SignedSeal> {
        self.released.get(&e)
    }

    /// Every pair of seals with one batch and two roots seen (at most
    /// [`EVIDENCE_MAX`]).
    #[must_use]
    pub fn evidence(&self) -> &[Evidence] {
        &self.evidence
    }

    /// The pair of seals the last refusal found, if it was new: to journal.
    pub fn take_new_evidence(&mut self) -> Option<Evidence> {
        self.new_evidence.take()
    }

    /// Remembers evidence read back from the journal.
    pub fn restore_evidence(&mut self, evidence: Evidence) {
        if !self.evidence.contains(&evidence) && self.evidence.len() < EVIDENCE_MAX {
            self.evidence.push(evidence);
        }
    }

    /// Forgets batches below `e` (their window expired).
    pub fn forget_below(&mut self, e: BatchId) {
        self.released = self.released.split_off(&e);
    }
}

//! Key custodians: who announces `S_e` and releases `s_e` for a valid seal of
//! a closed batch.
//!
//! [`KeyCustodian`] is the interface. [`EmbeddedCustodian`] is the default,
//! inside the sequencer process, deriving every `s_e` from one master secret.
//! [`PublishedKeyCustodian`] serves verifiers who re-open a finished batch
//! from its published `s_e`.
//!
//! A remote t-of-n committee fits the same trait: `public_key(e)` returns the
//! constant term `C_0 = s_e·G` of the batch's Feldman commitments
//! `C_j = a_j·G`; `release` sends the seal to the keypers, each of whom checks
//! it exactly as [`EmbeddedCustodian`] does (signature, close time, no second
//! root) and answers its share `s_{e,i}`, checked against
//! `Σ_j i^j·C_j`; any `t` valid shares interpolate to `s_e` at 0, and the
//! result is checked against `S_e` before the crate-internal constructor
//! builds the [`ReleasedBatchKey`]: `keyper::CommitteeCustodian`, which
//! answers [`KeyCustodian::request`] later, through
//! [`KeyCustodian::add_share`].

use std::collections::BTreeMap;

use super::keys::{
    BatchPublicKey, KeyError, MasterSecret, ReleasedBatchKey, SealStatement, decode_secret_scalar,
};
use super::merkle::MerkleRoot;
use super::receipt::{ProofError, SequencerPublicKey, SignedSeal};
use crate::types::BatchId;

/// How many released seals a custodian remembers (to refuse a second root).
pub const RELEASED_REMEMBERED_MAX: usize = 1 << 16;

/// The batch clock: batch `e` covers `[genesis + e·len, genesis + (e+1)·len)`
/// in unix milliseconds and closes at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchSchedule {
    /// Unix milliseconds at which batch 0 opens.
    pub genesis_ms: u64,
    /// Length of every batch in milliseconds (default 100); never zero.
    pub batch_length_ms: u64,
}

impl BatchSchedule {
    /// The default batch length.
    pub const BATCH_LENGTH_MS_DEFAULT: u64 = 100;

    /// Unix milliseconds at which batch `e` closes; `None` on overflow or a
    /// zero batch length.
    #[must_use]
    pub fn close_ms(&self, e: BatchId) -> Option<u64> {
        if self.batch_length_ms == 0 {
            return None;
        }
        e.get()
            .checked_add(1)?
            .checked_mul(self.batch_length_ms)?
            .checked_add(self.genesis_ms)
    }

    /// Unix milliseconds at which batch `e` opens; `None` on overflow.
    #[must_use]
    pub fn open_ms(&self, e: BatchId) -> Option<u64> {
        e.get()
            .checked_mul(self.batch_length_ms)?
            .checked_add(self.genesis_ms)
    }

    /// The batch open at `now_ms`; `None` before genesis or with a zero length.
    #[must_use]
    pub fn batch_at(&self, now_ms: u64) -> Option<BatchId> {
        if self.batch_length_ms == 0 {
            return None;
        }
        Some(BatchId(
            now_ms.checked_sub(self.genesis_ms)? / self.batch_length_ms,
        ))
    }
}

/// One deployment of a sequencer: its key and its batch clock, hashed.
///
/// `id = KDF("sealbatch v1 deployment", sequencer key (32) ‖
/// u64le(genesis_ms) ‖ u64le(batch_length_ms))`. Every bundle signature
/// and every keyper committee's key generation binds it, so nothing signed
/// for one deployment counts in another — not in another venue, and not in
/// a relaunch of the same sequencer key with a new batch clock
/// (`spec/envelope.md` §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentId(pub [u8; 32]);

impl DeploymentId {
    /// The id of the deployment of the sequencer with public key
    /// `sequencer` (its 32 bytes) on `schedule`.
    #[must_use]
    pub fn new(sequencer: &[u8; 32], schedule: &BatchSchedule) -> DeploymentId {
        let mut h = blake3::Hasher::new_derive_key(super::layout::DOMAIN_DEPLOYMENT);
        h.update(sequencer);
        h.update(&schedule.genesis_ms.to_le_bytes());
        h.update(&schedule.batch_length_ms.to_le_bytes());
        DeploymentId(*h.finalize().as_bytes())
    }

    /// [`new`](Self::new) for a sequencer's public key.
    #[must_use]
    pub fn of(sequencer: &SequencerPublicKey, schedule: &BatchSchedule) -> DeploymentId {
        DeploymentId::new(&sequencer.to_bytes(), schedule)
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why a custodian refuses.
#[derive(Debug, thiserror::Error)]
pub enum CustodianError {
    /// The seal is not signed by the sequencer's key.
    #[error("seal for batch {e} is not signed by the sequencer: {source}")]
    BadSeal {
        /// The seal's batch.
        e: BatchId,
        /// The verification failure.
        source: ProofError,
    },
    /// The batch has not closed yet.
    #[error("batch {e} closes at {close_ms} ms; now is {now_ms} ms")]
    NotClosed {
        /// The batch.
        e: BatchId,
        /// Its close time (`u64::MAX` if it never closes).
        close_ms: u64,
        /// The time given.
        now_ms: u64,
    },
    /// A key was already released for a different seal of this batch.
    #[error("batch {e} was already released for another seal (root or count differs)")]
    Equivocation {
        /// The batch.
        e: BatchId,
        /// The seal released first.
        first: SealStatement,
    },
    /// This custodian does not hold batch `e`.
    #[error("this custodian holds no key for batch {e}")]
    UnknownBatch {
        /// The batch asked for.
        e: BatchId,
    },
    /// A key could not be derived or did not match.
    #[error("batch {e}: {source}")]
    Key {
        /// The batch.
        e: BatchId,
        /// The key problem.
        source: KeyError,
    },
    /// This custodian's keys come from keypers' shares: ask with
    /// [`KeyCustodian::request`] and complete with
    /// [`KeyCustodian::add_share`].
    #[error("batch {e}: the key comes from keypers' shares")]
    SharesNeeded {
        /// The batch.
        e: BatchId,
    },
    /// A keyper's share that does not count (a faulty keyper, for this
    /// batch), or a share for a custodian that takes none.
    #[error("batch {e}: {reason}")]
    Share {
        /// The batch.
        e: BatchId,
        /// Why.
        reason: String,
    },
}

/// Announces batch public keys and releases batch keys for valid seals.
///
/// Rules every implementation keeps (the embedded one and a future remote
/// committee alike):
/// - [`public_key`](KeyCustodian::public_key) answers any time, for any batch.
/// - [`release`](KeyCustodian::release) succeeds only for a seal that
///   verifies under the sequencer's key, of a batch whose close time is at or
///   before `now_ms`, and never for two different `(count, root)` of one
///   batch; the same seal again returns the same key.
pub trait KeyCustodian {
    /// The public key `S_e` of batch `e`.
    ///
    /// # Errors
    /// [`CustodianError::UnknownBatch`] or [`CustodianError::Key`].
    fn public_key(&self, e: BatchId) -> Result<BatchPublicKey, CustodianError>;

    /// Releases the key of the sealed batch `seal.e`.
    ///
    /// # Errors
    /// [`CustodianError::BadSeal`], [`CustodianError::NotClosed`],
    /// [`CustodianError::Equivocation`], [`CustodianError::UnknownBatch`] or
    /// [`CustodianError::Key`].
    fn release(
        &mut self,
        seal: &SignedSeal,
        now_ms: u64,
    ) -> Result<ReleasedBatchKey, CustodianError>;

    /// Asks for the key of the sealed batch `seal.e`: the key now, or
    /// `None` when it comes later from keypers' shares
    /// ([`add_share`](KeyCustodian::add_share)); asking again is harmless.
    /// The default releases at once.
    ///
    /// # Errors
    /// As [`release`](KeyCustodian::release).
    fn request(
        &mut self,
        seal: &SignedSeal,
        now_ms: u64,
    ) -> Result<Option<ReleasedBatchKey>, CustodianError> {
        self.release(seal, now_ms).map(Some)
    }

    /// Keyper `keyper`'s share of the key of a requested seal, with its
    /// signed attestation of that seal (`spec/keyper.md` §9): the key once
    /// enough valid shares are in, `None` before.
    ///
    /// # Errors
    /// [`CustodianError::Share`] for a share that does not count (the
    /// default: this custodian takes none).
    fn add_share(
        &mut self,
        seal: &SignedSeal,
        keyper: u16,
        share: &[u8; 32],
        attestation: &[u8; 64],
    ) -> Result<Option<ReleasedBatchKey>, CustodianError> {
        let _ = (keyper, share, attestation);
        Err(CustodianError::Share {
            e: seal.e,
            reason: "this custodian takes no shares".into(),
        })
    }

    /// Whether the custodian holds the public key of batch `e` (a committee
    /// holds only certified ones: without one, no envelope for `e` is
    /// taken). The default: every batch.
    fn has_key(&self, e: BatchId) -> bool {
        let _ = e;
        true
    }
}

/// The seal checks shared by custodians: signature, then close time.
pub(crate) fn check_seal(
    seal: &SignedSeal,
    sequencer: &SequencerPublicKey,
    schedule: &BatchSchedule,
    now_ms: u64,
) -> Result<(), CustodianError> {
    seal.verify(sequencer)
        .map_err(|source| CustodianError::BadSeal { e: seal.e, source })?;
    let close_ms = schedule.close_ms(seal.e).unwrap_or(u64::MAX);
    if now_ms < close_ms {
        return Err(CustodianError::NotClosed {
            e: seal.e,
            close_ms,
            now_ms,
        });
    }
    Ok(())
}

fn statement(seal: &SignedSeal) -> SealStatement {
    SealStatement {
        e: seal.e,
        count: seal.count,
        root: seal.root,
    }
}

/// The default custodian: in the sequencer's process, every `s_e` derived
/// from one master secret (see `spec/envelope.md`, "Batch keys").
pub struct EmbeddedCustodian {
    master: MasterSecret,
    sequencer: SequencerPublicKey,
    schedule: BatchSchedule,
    released: BTreeMap<BatchId, (u32, MerkleRoot)>,
}

impl std::fmt::Debug for EmbeddedCustodian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCustodian")
            .field("sequencer", &self.sequencer)
            .field("schedule", &self.schedule)
            .field("released", &self.released.len())
            .finish_non_exhaustive()
    }
}

impl EmbeddedCustodian {
    /// A custodian over an existing master secret (pure; no I/O).
    #[must_use]
    pub fn new(
        master: MasterSecret,
        sequencer: SequencerPublicKey,
        schedule: BatchSchedule,
    ) -> Self {
        EmbeddedCustodian {
            master,
            sequencer,
            schedule,
            released: BTreeMap::new(),
        }
    }

    /// The schedule this custodian checks close times against.
    #[must_use]
    pub fn schedule(&self) -> &BatchSchedule {
        &self.schedule
    }
}

impl KeyCustodian for EmbeddedCustodian {
    fn public_key(&self, e: BatchId) -> Result<BatchPublicKey, CustodianError> {
        let secret = self
            .master
            .derive_batch_secret(e)
            .map_err(|source| CustodianError::Key { e, source })?;
        Ok(secret.public())
    }

    fn release(
        &mut self,
        seal: &SignedSeal,
        now_ms: u64,
    ) -> Result<ReleasedBatchKey, CustodianError> {
        check_seal(seal, &self.sequencer, &self.schedule, now_ms)?;
        let e = seal.e;
        if let Some(&(count, root)) = self.released.get(&e)
            && (count, root) != (seal.count, seal.root)
        {
            return Err(CustodianError::Equivocation {
                e,
                first: SealStatement { e, count, root },
            });
        }
        let secret = self
            .master
            .derive_batch_secret(e)
            .map_err(|source| CustodianError::Key { e, source })?;
        let public = secret.public();
        let key = ReleasedBatchKey::new(
            secret,
            &public,
            seal,
            DeploymentId::of(&self.sequencer, &self.schedule),
        )
        .map_err(|source| CustodianError::Key { e, source })?;
        self.released.insert(e, (seal.count, seal.root));
        while self.released.len() > RELEASED_REMEMBERED_MAX {
            self.released.pop_first();
        }
        debug_assert_eq!(key.seal(), &statement(seal));
        Ok(key)
    }
}

/// A custodian for verifiers: holds one finished batch's published `s_e`
/// and releases it for that batch's valid seal (re-checked like any
/// release), so anyone can re-open and re-check a published batch.
pub struct PublishedKeyCustodian {
    e: BatchId,
    secret: super::keys::BatchSecret,
    public: BatchPublicKey,
    sequencer: SequencerPublicKey,
    schedule: BatchSchedule,
    released: Option<(u32, MerkleRoot)>,
}

impl std::fmt::Debug for PublishedKeyCustodian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedKeyCustodian")
            .field("e", &self.e)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl PublishedKeyCustodian {
    /// Wraps the published secret of batch `e`; it must be canonical,
    /// non-zero and match the announced `public` key.
    ///
    /// # Errors
    /// [`CustodianError::Key`].
    pub fn new(
        e: BatchId,
        secret_bytes: &[u8; 32],
        public: &BatchPublicKey,
        sequencer: SequencerPublicKey,
        schedule: BatchSchedule,
    ) -> Result<Self, CustodianError> {
        let scalar = decode_secret_scalar(secret_bytes)
            .map_err(|source| CustodianError::Key { e, source })?;
        let secret = super::keys::BatchSecret(scalar);
        if secret.public() != *public {
            return Err(CustodianError::Key {
                e,
                source: KeyError::Mismatch,
            });
        }
        Ok(PublishedKeyCustodian {
            e,
            secret,
            public: *public,
            sequencer,
            schedule,
            released: None,
        })
    }
}

impl KeyCustodian for PublishedKeyCustodian {
    fn public_key(&self, e: BatchId) -> Result<BatchPublicKey, CustodianError> {
        if e != self.e {
            return Err(CustodianError::UnknownBatch { e });
        }
        Ok(self.public)
    }

    fn release(
        &mut self,
        seal: &SignedSeal,
        now_ms: u64,
    ) -> Result<ReleasedBatchKey, CustodianError> {
        if seal.e != self.e {
            return Err(CustodianError::UnknownBatch { e: seal.e });
        }
        check_seal(seal, &self.sequencer, &self.schedule, now_ms)?;
        if let Some((count, root)) = self.released
            && (count, root) != (seal.count, seal.root)
        {
            return Err(CustodianError::Equivocation {
                e: seal.e,
                first: SealStatement {
                    e: seal.e,
                    count,
                    root,
                },
            });
        }
        let key = ReleasedBatchKey::new(
            self.secret.clone(),
            &self.public,
            seal,
            DeploymentId::of(&self.sequencer, &self.schedule),
        )
        .map_err(|source| CustodianError::Key { e: seal.e, source })?;
        self.released = Some((seal.count, seal.root));
        Ok(key)
    }
}

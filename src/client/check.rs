//! What a client checks in every pushed batch event before its caller sees
//! it: a seal's signature, and a result's evidence — its root and count are
//! the signed seal's, its `s_e` opens the batch's certified (or announced)
//! key, and under a keyper committee at least `t` keypers attested that
//! they released their shares for exactly that seal (`spec/keyper.md` §9).
//! A sequencer that obtained `s_e` for one seal and published another (a
//! "last look" at the orders) fails the last check, whatever it signs.
//!
//! Pure: [`ResultCheck`] is fed what the client verified (the schedule,
//! the committee and its certified keys) and the events as they come.

use std::collections::BTreeMap;

use curve25519_dalek::ristretto::RistrettoPoint;

use crate::envelope::keys::decode_secret_scalar;
use crate::envelope::{SealStatement, SequencerPublicKey, SignedSeal};
use crate::keyper::{Committee, check_attestations};
use crate::types::BatchId;
use crate::wire::{BatchCleared, BatchSealed};

/// Batches whose keys and seals a check keeps (older ones are dropped; a
/// result that old is checked without them).
pub const CHECK_BATCHES_KEPT: usize = 4096;

/// Why a pushed event is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// A seal that does not verify under the sequencer's key.
    #[error("batch {0}: the seal is not signed by the sequencer")]
    BadSeal(BatchId),
    /// The result names another root or count than the batch's seal.
    #[error("batch {e}: the result is for root {result}, the batch was sealed with root {sealed}")]
    NotTheSeal {
        /// The batch.
        e: BatchId,
        /// The result's root and count (hex and count).
        result: String,
        /// The seal's.
        sealed: String,
    },
    /// The published secret is not a canonical non-zero scalar, or does
    /// not open the batch's key.
    #[error("batch {0}: the published batch secret does not match the batch key")]
    BadSecret(BatchId),
    /// Under a committee, the result does not carry `t` keypers'
    /// attestations of its seal.
    #[error("batch {e}: the committee did not release its key for this seal: {reason}")]
    NotReleased {
        /// The batch.
        e: BatchId,
        /// Why the attestations do not prove it.
        reason: String,
    },
    /// The client does not know yet whether a committee holds the keys
    /// (no schedule was read).
    #[error("batch {0}: the result cannot be checked before a schedule is read")]
    Unknown(BatchId),
}

/// Who holds the keys, as a check knows it.
#[derive(Clone, Debug, Default)]
enum Custody {
    /// Not known yet.
    #[default]
    Unknown,
    /// The sequencer's embedded custodian.
    Operator,
    /// A keyper committee.
    Committee(Box<Committee>),
}

/// The evidence a client holds to check batch events against.
#[derive(Clone, Debug, Default)]
pub struct ResultCheck {
    sequencer: Option<SequencerPublicKey>,
    custody: Custody,
    /// `S_e` by batch: certified ones under a committee, announced ones
    /// otherwise.
    keys: BTreeMap<BatchId, [u8; 32]>,
    /// Seals pushed, by batch.
    seals: BTreeMap<BatchId, SealStatement>,
}

impl ResultCheck {
    /// The sequencer key the schedule was verified under.
    pub fn set_sequencer(&mut self, key: SequencerPublicKey) {
        self.sequencer = Some(key);
    }

    /// The keys are the sequencer's own (trusted-operator mode).
    pub fn set_operator(&mut self) {
        self.custody = Custody::Operator;
    }

    /// A keyper committee holds the keys (its certificates verified).
    pub fn set_committee(&mut self, committee: Committee) {
        self.custody = Custody::Committee(Box::new(committee));
    }

    /// `S_e` of batch `e`, as certified (or, without a committee,
    /// announced).
    pub fn add_key(&mut self, e: BatchId, key: [u8; 32]) {
        self.keys.insert(e, key);
        while self.keys.len() > CHECK_BATCHES_KEPT {
            self.keys.pop_first();
        }
    }

    /// Whether a committee holds the keys.
    #[must_use]
    pub fn is_committee(&self) -> bool {
        matches!(self.custody, Custody::Committee(_))
    }

    /// Checks a pushed seal and remembers it for its batch's result.
    ///
    /// # Errors
    ///
    /// [`ResultError::BadSeal`].
    pub fn sealed(&mut self, sealed: &BatchSealed) -> Result<(), ResultError> {
        let seal = SignedSeal::from_bytes(&sealed.seal)
            .map_err(|_| ResultError::BadSeal(BatchId::ZERO))?;
        if let Some(key) = &self.sequencer {
            seal.verify(key).map_err(|_| ResultError::BadSeal(seal.e))?;
        }
        self.seals.insert(
            seal.e,
            SealStatement {
                e: seal.e,
                count: seal.count,
                root: seal.root,
            },
        );
        while self.seals.len() > CHECK_BATCHES_KEPT {
            self.seals.pop_first();
        }
        Ok(())
    }

    /// Checks a pushed result: its seal, its secret against the batch's
    /// key, and under a committee `t` keypers' attestations of its seal.
    ///
    /// # Errors
    ///
    /// [`ResultError`] for the first check that fails.
    pub fn cleared(&self, cleared: &BatchCleared) -> Result<(), ResultError> {
        let e = cleared.e;
        let statement = SealStatement {
            e,
            count: cleared.envelopes,
            root: crate::envelope::MerkleRoot(cleared.root),
        };
        if let Some(sealed) = self.seals.get(&e)
            && *sealed != statement
        {
            return Err(ResultError::NotTheSeal {
                e,
                result: format!(
                    "{} ({} envelopes)",
                    hex::encode(cleared.root),
                    cleared.envelopes
                ),
                sealed: format!(
                    "{} ({} envelopes)",
                    hex::encode(sealed.root.0),
                    sealed.count
                ),
            });
        }
        let secret =
            decode_secret_scalar(&cleared.batch_secret).map_err(|_| ResultError::BadSecret(e))?;
        if let Some(key) = self.keys.get(&e)
            && RistrettoPoint::mul_base(&secret).compress().to_bytes() != *key
        {
            return Err(ResultError::BadSecret(e));
        }
        match &self.custody {
            Custody::Unknown => Err(ResultError::Unknown(e)),
            Custody::Operator => Ok(()),
            Custody::Committee(committee) => {
                // A committee's key known for this batch must have been
                // certified; the attestations prove it was released for
                // this seal and no other.
                check_attestations(committee, &statement, &cleared.release).map_err(|error| {
                    ResultError::NotReleased {
                        e,
                        reason: error.to_string(),
                    }
                })
            }
        }
    }
}

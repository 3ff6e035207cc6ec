//! Combining released shares into `s_e`: each share is checked against the
//! public image of its keyper's share before it counts (a wrong share names
//! its keyper and is ignored), any `t` valid ones are interpolated at 0, and
//! the result is checked against `S_e`.

use std::collections::BTreeMap;

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use zeroize::Zeroizing;

use super::generation::WindowKeys;
use super::sharing::{Commitments, KeyperIndex, interpolate_at_zero};
use crate::types::BatchId;

/// Why a share does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CombineError {
    /// The batch is not in the window.
    #[error("batch {0} is not in the window")]
    UnknownBatch(BatchId),
    /// The keyper is not in the committee.
    #[error("no keyper {0}")]
    UnknownKeyper(KeyperIndex),
    /// The share is not a canonical scalar.
    #[error("keyper {0} sent a non-canonical scalar")]
    NonCanonical(KeyperIndex),
    /// The share does not match the keyper's public share image: the
    /// keyper is faulty for this batch.
    #[error("keyper {0} sent a wrong share")]
    WrongShare(KeyperIndex),
    /// `t` valid shares did not give `S_e` (impossible with valid
    /// commitments; kept as a check).
    #[error("the combined secret does not match S_e")]
    Mismatch,
}

/// Collects the shares of one batch until `t` valid ones give `s_e`.
pub struct Combiner {
    e: BatchId,
    threshold: usize,
    committee_size: usize,
    public_key: RistrettoPoint,
    /// The window's commitments for this batch: each keyper's share image.
    commitments: Commitments,
    valid: BTreeMap<KeyperIndex, Scalar>,
    faulty: BTreeMap<KeyperIndex, CombineError>,
}

impl std::fmt::Debug for Combiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner")
            .field("e", &self.e)
            .field("valid", &self.valid.keys().collect::<Vec<_>>())
            .field("faulty", &self.faulty)
            .finish_non_exhaustive()
    }
}

impl Combiner {
    /// A combiner for batch `e` of `keys`' window, for a committee of
    /// `committee_size` with threshold `threshold`.
    ///
    /// # Errors
    ///
    /// [`CombineError::UnknownBatch`].
    pub fn new(
        keys: &WindowKeys,
        e: BatchId,
        threshold: usize,
        committee_size: usize,
    ) -> Result<Combiner, CombineError> {
        let commitments = keys
            .batch_commitments(e)
            .ok_or(CombineError::UnknownBatch(e))?
            .clone();
        Ok(Combiner {
            e,
            threshold,
            committee_size,
            public_key: commitments.secret_image(),
            commitments,
            valid: BTreeMap::new(),
            faulty: BTreeMap::new(),
        })
    }

    /// Keyper `j`'s share. Returns `s_e` (its canonical bytes) once `t`
    /// valid shares are in; `Ok(None)` while fewer are.
    ///
    /// # Errors
    ///
    /// [`CombineError`] for a share that does not count (the keyper is
    /// recorded as faulty for this batch).
    pub fn add(
        &mut self,
        j: KeyperIndex,
        share: &[u8; 32],
    ) -> Result<Option<Zeroizing<[u8; 32]>>, CombineError> {
        if j == 0 || usize::from(j) > self.committee_size {
            return Err(CombineError::UnknownKeyper(j));
        }
        let outcome = match Option::<Scalar>::from(Scalar::from_canonical_bytes(*share)) {
            None => Err(CombineError::NonCanonical(j)),
            Some(s) if !self.commitments.verify_share(j, &s) => Err(CombineError::WrongShare(j)),
            Some(s) => Ok(s),
        };
        match outcome {
            Ok(s) => {
                self.valid.insert(j, s);
            }
            Err(error) => {
                self.faulty.insert(j, error);
                return Err(error);
            }
        }
        if self.valid.len() < self.threshold {
            return Ok(None);
        }
        let some: Vec<(KeyperIndex, Scalar)> = self
            .valid
            .iter()
            .take(self.threshold)
            .map(|(&j, &s)| (j, s))
            .collect();
        // Distinct indices 1..=n: interpolation cannot fail.
        let secret = interpolate_at_zero(&some).map_err(|_| CombineError::Mismatch)?;
        if RistrettoPoint::mul_base(&secret) != self.public_key {
            return Err(CombineError::Mismatch);
        }
        Ok(Some(Zeroizing::new(secret.to_bytes())))
    }

    /// The keypers whose shares counted, ascending (those the combined
    /// secret was interpolated from, once it is).
    pub fn valid(&self) -> impl Iterator<Item = KeyperIndex> + '_ {
        self.valid.keys().copied().take(self.threshold)
    }

    /// Keypers whose share did not count, with why.
    #[must_use]
    pub fn faulty(&self) -> &BTreeMap<KeyperIndex, CombineError> {
        &self.faulty
    }

    /// How many keypers are in the committee.
    #[must_use]
    pub fn committee_size(&self) -> usize {
        self.committee_size
    }
}

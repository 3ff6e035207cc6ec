//! A keyper committee: its members' keys, their indices and threshold, and
//! the id every keyper message carries; and a window, the batches one key
//! generation deals keys for.

use curve25519_dalek::ristretto::RistrettoPoint;

use super::sharing::KeyperIndex;
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::DeploymentId;
use crate::envelope::keys::decode_point;
use crate::envelope::receipt::decode_ed25519_public;
use crate::types::BatchId;

/// Most keypers in a committee.
pub const COMMITTEE_MAX: usize = 64;

/// Most batches one window deals keys for.
pub const WINDOW_BATCHES_MAX: u32 = 1024;

/// BLAKE3 derive-key context of a committee's id.
pub const DOMAIN_COMMITTEE: &str = "sealbatch v1 keyper committee";

/// Why a committee or window is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeError {
    /// `1 ≤ t ≤ n ≤ COMMITTEE_MAX` does not hold.
    #[error("a committee of {n} with threshold {t}: need 1 ≤ t ≤ n ≤ {COMMITTEE_MAX}")]
    Size {
        /// Members.
        n: usize,
        /// Threshold.
        t: usize,
    },
    /// Two members share a signing key.
    #[error("member {} appears twice", hex::encode(.0))]
    Duplicate([u8; 32]),
    /// A member's signing key is not a strict Ed25519 key, or its
    /// encryption key not a ristretto255 point other than the identity.
    #[error("member {}: bad {what}", hex::encode(.key))]
    BadKey {
        /// The member's signing key.
        key: [u8; 32],
        /// Which of its keys.
        what: &'static str,
    },
    /// A window of no batches, too many, or past the last batch number.
    #[error("a window of {0} batches from batch {1}")]
    Window(u32, BatchId),
}

/// One keyper as the committee knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// Its Ed25519 public key: it signs every message the keyper sends.
    pub signing_key: [u8; 32],
    /// Its ristretto255 public key: dealers encrypt its shares to it.
    pub encryption_key: [u8; 32],
}

/// A committee: `n` members, indexed `1..=n` in ascending order of their
/// signing keys, any `threshold` of whom release a batch key — for one
/// deployment of one sequencer ([`DeploymentId`]): its id, and so every
/// proof, key, certificate and signature of its key generations, binds
/// that deployment, and nothing dealt for one deployment counts in
/// another (a relaunch with the same keypers deals new keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    deployment: DeploymentId,
    threshold: u16,
    members: Vec<Member>,
    encryption: Vec<RistrettoPoint>,
    id: [u8; 32],
}

impl Committee {
    /// The default threshold for `n` keypers: a majority, `⌊n/2⌋ + 1`.
    #[must_use]
    pub fn default_threshold(n: usize) -> usize {
        n / 2 + 1
    }

    /// A committee of `members` (in any order) with `threshold`, for
    /// `deployment`.
    ///
    /// # Errors
    ///
    /// [`CommitteeError`].
    pub fn new(
        threshold: usize,
        mut members: Vec<Member>,
        deployment: DeploymentId,
    ) -> Result<Committee, CommitteeError> {
        let n = members.len();
        if threshold == 0 || threshold > n || n > COMMITTEE_MAX {
            return Err(CommitteeError::Size { n, t: threshold });
        }
        members.sort_unstable();
        let mut encryption = Vec::with_capacity(n);
        for (i, m) in members.iter().enumerate() {
            if i > 0 && members[i - 1].signing_key == m.signing_key {
                return Err(CommitteeError::Duplicate(m.signing_key));
            }
            decode_ed25519_public(&m.signing_key).map_err(|_| CommitteeError::BadKey {
                key: m.signing_key,
                what: "signing key",
            })?;
            encryption.push(decode_point(&m.encryption_key).map_err(|_| {
                CommitteeError::BadKey {
                    key: m.signing_key,
                    what: "encryption key",
                }
            })?);
        }
        let mut committee = Committee {
            deployment,
            // Below COMMITTEE_MAX.
            threshold: threshold as u16,
            members,
            encryption,
            id: [0; 32],
        };
        committee.id = *blake3::Hasher::new_derive_key(DOMAIN_COMMITTEE)
            .update(&committee.to_bytes())
            .finalize()
            .as_bytes();
        Ok(committee)
    }

    /// Its id: BLAKE3 ([`DOMAIN_COMMITTEE`]) over `deployment ‖ u16le(t) ‖
    /// u16le(n) ‖` each member's `signing key ‖ encryption key` in index
    /// order.
    #[must_use]
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    /// The deployment it serves.
    #[must_use]
    pub fn deployment(&self) -> &DeploymentId {
        &self.deployment
    }

    /// Each member's signing key, by index `1..=n`.
    #[must_use]
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// `t`: how many keypers release a key.
    #[must_use]
    pub fn threshold(&self) -> usize {
        usize::from(self.threshold)
    }

    /// `n`.
    #[must_use]
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The indices `1..=n`.
    pub fn indices(&self) -> impl Iterator<Item = KeyperIndex> {
        // n ≤ COMMITTEE_MAX.
        1..=self.members.len() as KeyperIndex
    }

    /// Member `j` (`1..=n`).
    #[must_use]
    pub fn member(&self, j: KeyperIndex) -> Option<&Member> {
        self.members.get(usize::from(j).checked_sub(1)?)
    }

    /// Member `j`'s encryption key, decoded.
    #[must_use]
    pub(crate) fn encryption_point(&self, j: KeyperIndex) -> Option<&RistrettoPoint> {
        self.encryption.get(usize::from(j).checked_sub(1)?)
    }

    /// The index of the member whose signing key is `key`.
    #[must_use]
    pub fn index_of(&self, key: &[u8; 32]) -> Option<KeyperIndex> {
        self.members
            .iter()
            .position(|m| &m.signing_key == key)
            .map(|p| p as KeyperIndex + 1)
    }
}

impl Decode for Committee {
    /// Reads [`encode_into`](Encode::encode_into) from `r`: members strictly ascending,
    /// every key valid, the threshold within `1..=n`.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<Committee, DecodeError> {
        let offset = r.offset();
        let deployment = DeploymentId(r.array("deployment")?);
        let threshold = r.u16("threshold")?;
        let n_offset = r.offset();
        let n = usize::from(r.u16("members")?);
        if n > COMMITTEE_MAX {
            return Err(r.invalid("members", n_offset));
        }
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            members.push(Member {
                signing_key: r.array("signing key")?,
                encryption_key: r.array("encryption key")?,
            });
        }
        if !members.is_sorted_by(|a, b| a.signing_key < b.signing_key) {
            return Err(r.invalid("members", offset));
        }
        Committee::new(usize::from(threshold), members, deployment)
            .map_err(|_| r.invalid("committee", offset))
    }
}

impl Encode for Committee {
    /// `deployment (32) ‖ u16le(t) ‖ u16le(n) ‖ n × (signing key (32) ‖
    /// encryption key (32))` in index order: the bytes its id hashes.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(36 + 64 * self.members.len());
        out.extend_from_slice(&self.deployment.0);
        out.put_u16(self.threshold);
        // At most COMMITTEE_MAX members.
        out.put_u16(self.members.len() as u16);
        for m in &self.members {
            out.extend_from_slice(&m.signing_key);
            out.extend_from_slice(&m.encryption_key);
        }
    }
}

/// The batches one key generation deals keys for, under an id that every
/// message of the generation carries (a retry without culprits gets a new
/// id for the same batches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// The generation's id.
    pub id: u64,
    /// The first batch.
    pub first_batch: BatchId,
    /// How many batches: `1..=`[`WINDOW_BATCHES_MAX`].
    pub batches: u32,
}

impl Window {
    /// Checks the number of batches and that the last one exists.
    ///
    /// # Errors
    ///
    /// [`CommitteeError::Window`].
    pub fn check(&self) -> Result<(), CommitteeError> {
        if self.batches == 0
            || self.batches > WINDOW_BATCHES_MAX
            || self
                .first_batch
                .checked_add(u64::from(self.batches))
                .is_none()
        {
            return Err(CommitteeError::Window(self.batches, self.first_batch));
        }
        Ok(())
    }

    /// The batches, in order.
    pub fn batches(&self) -> impl Iterator<Item = BatchId> {
        self.first_batch
            .until(self.first_batch.saturating_add(u64::from(self.batches)))
    }

    /// Whether batch `e` is one of them.
    #[must_use]
    pub fn contains(&self, e: BatchId) -> bool {
        e >= self.first_batch && e - self.first_batch < u64::from(self.batches)
    }

    /// `committee id (32) ‖ u64le(id) ‖ u64le(first batch) ‖ u32le(batches)`:
    /// the context every proof, key and signature of the generation binds.
    #[must_use]
    pub fn context(&self, committee: &Committee) -> Vec<u8> {
        let mut out = Vec::with_capacity(52);
        out.extend_from_slice(&committee.id());
        out.put_u64(self.id);
        out.put_u64(self.first_batch.get());
        out.put_u32(self.batches);
        out
    }
}

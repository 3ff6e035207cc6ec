//! Batch keys: the custodian's master secret, each batch's secret scalar
//! `s_e` and public point `S_e = s_e·G`, and the released key that opens a
//! sealed batch.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::custodian::DeploymentId;
use super::layout::DOMAIN_BATCH_KEY;
use super::merkle::MerkleRoot;
use super::receipt::SignedSeal;
use crate::types::BatchId;

/// Why a key or point is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum KeyError {
    /// The 32 bytes are not the canonical encoding of a ristretto255 point.
    #[error("not a canonical ristretto255 point encoding")]
    NonCanonicalPoint,
    /// The point is the identity.
    #[error("the identity point is not a valid key")]
    IdentityPoint,
    /// The scalar is not reduced modulo the group order.
    #[error("scalar is not canonical (not reduced mod l)")]
    NonCanonicalScalar,
    /// The scalar is zero.
    #[error("the zero scalar is not a valid secret")]
    ZeroScalar,
    /// A secret does not match the public key it was given for.
    #[error("secret does not match the batch public key")]
    Mismatch,
}

/// Decodes a ristretto255 point, refusing non-canonical encodings and the
/// identity.
///
/// # Errors
/// [`KeyError::NonCanonicalPoint`] or [`KeyError::IdentityPoint`].
pub fn decode_point(bytes: &[u8; 32]) -> Result<RistrettoPoint, KeyError> {
    // dalek's ristretto decoding already rejects every non-canonical encoding
    // (RFC 9496 §4.3.1); it accepts the identity, which we refuse.
    let point = CompressedRistretto(*bytes)
        .decompress()
        .ok_or(KeyError::NonCanonicalPoint)?;
    if point.is_identity() {
        return Err(KeyError::IdentityPoint);
    }
    Ok(point)
}

/// Decodes a secret scalar, refusing unreduced encodings and zero.
///
/// # Errors
/// [`KeyError::NonCanonicalScalar`] or [`KeyError::ZeroScalar`].
pub fn decode_secret_scalar(bytes: &[u8; 32]) -> Result<Scalar, KeyError> {
    let scalar: Option<Scalar> = Scalar::from_canonical_bytes(*bytes).into();
    let scalar = scalar.ok_or(KeyError::NonCanonicalScalar)?;
    if scalar == Scalar::ZERO {
        return Err(KeyError::ZeroScalar);
    }
    Ok(scalar)
}

/// The key custodian's 32-byte master secret, from which every batch secret
/// derives. Zeroized on drop; never printed.
#[derive(Clone, ZeroizeOnDrop)]
pub struct MasterSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

impl MasterSecret {
    /// Draws a fresh master secret.
    pub fn generate<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        MasterSecret(bytes)
    }

    /// Wraps existing secret bytes (e.g. read from the custodian's file).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterSecret(Zeroizing::new(bytes))
    }

    /// The raw bytes, for storing them.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives batch `e`'s secret: `s_e = wide_reduce(blake3_derive_key(
    /// DOMAIN_BATCH_KEY, master ‖ e_le)[..64])`, i.e. 64 bytes of XOF output
    /// reduced modulo `l`.
    ///
    /// # Errors
    /// [`KeyError::ZeroScalar`] in the (2^-252) case that the result is zero.
    pub(crate) fn derive_batch_secret(&self, e: BatchId) -> Result<BatchSecret, KeyError> {
        let mut hasher = blake3::Hasher::new_derive_key(DOMAIN_BATCH_KEY);
        hasher.update(self.0.as_ref());
        hasher.update(&e.to_le_bytes());
        let mut wide = Zeroizing::new([0u8; 64]);
        hasher.finalize_xof().fill(wide.as_mut());
        hasher.zeroize();
        let scalar = Scalar::from_bytes_mod_order_wide(&wide);
        if scalar == Scalar::ZERO {
            return Err(KeyError::ZeroScalar);
        }
        Ok(BatchSecret(scalar))
    }
}

/// A batch secret scalar `s_e`. Crate-private; zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct BatchSecret(pub(crate) Scalar);

impl BatchSecret {
    pub(crate) fn public(&self) -> BatchPublicKey {
        let point = RistrettoPoint::mul_base(&self.0);
        BatchPublicKey {
            point,
            bytes: point.compress().to_bytes(),
        }
    }
}

/// A batch public key `S_e`: a ristretto255 point, never the identity.
///
/// Announced ahead of the batch; traders seal their bundles to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPublicKey {
    point: RistrettoPoint,
    bytes: [u8; 32],
}

impl BatchPublicKey {
    /// Decodes an announced key.
    ///
    /// # Errors
    /// [`KeyError::NonCanonicalPoint`] or [`KeyError::IdentityPoint`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        Ok(BatchPublicKey {
            point: decode_point(bytes)?,
            bytes: *bytes,
        })
    }

    /// The canonical 32-byte encoding.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    pub(crate) fn point(&self) -> &RistrettoPoint {
        &self.point
    }
}

/// A batch key made ready for sealing many envelopes to it: its point's
/// multiplication table (`RistrettoBasepointTable`, about 30 KiB), built
/// once, turns the variable-base multiplication `r·S_e` of every sealing
/// into a fixed-base one — constant time like the other, and several times
/// faster (`BENCHMARKS.md`). A trader that seals more than a few envelopes
/// to one batch makes one per batch key and seals with
/// [`seal_bundle_with`](super::seal_bundle_with); the envelopes are byte
/// for byte those [`seal_bundle`](super::seal_bundle) makes.
#[derive(Clone)]
pub struct SealingKey {
    key: BatchPublicKey,
    table: std::sync::Arc<curve25519_dalek::ristretto::RistrettoBasepointTable>,
}

impl SealingKey {
    /// Builds `key`'s table.
    #[must_use]
    pub fn new(key: BatchPublicKey) -> SealingKey {
        SealingKey {
            table: std::sync::Arc::new(
                curve25519_dalek::ristretto::RistrettoBasepointTable::create(key.point()),
            ),
            key,
        }
    }

    /// The batch key.
    #[must_use]
    pub fn key(&self) -> &BatchPublicKey {
        &self.key
    }

    /// `r · S_e`, by the table.
    pub(crate) fn times(&self, r: &Scalar) -> RistrettoPoint {
        &*self.table * r
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The statement a seal signs: batch, envelope count and Merkle root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SealStatement {
    /// The batch.
    pub e: BatchId,
    /// The number of distinct commitments (Merkle leaves).
    pub count: u32,
    /// The Merkle root over the sorted commitments.
    pub root: MerkleRoot,
}

/// The key that opens the envelopes of one sealed batch.
///
/// There is no public constructor: the only way to obtain one is
/// [`KeyCustodian::release`](super::KeyCustodian::release) for a valid
/// [`SignedSeal`] of a closed batch. The key remembers that seal, and
/// [`open_batch`](super::open_batch) refuses an envelope set that does not
/// match it. The secret is zeroized on drop.
pub struct ReleasedBatchKey {
    secret: BatchSecret,
    public: BatchPublicKey,
    seal: SealStatement,
    deployment: DeploymentId,
    attestations: Vec<ReleaseAttestation>,
}

/// A keyper's signed statement that it released its share of batch `e`'s
/// key for one seal `(e, count, root)` (`spec/keyper.md` §9): a result
/// under a committee carries `t` of them, so a key obtained for one seal
/// cannot be published with another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseAttestation {
    /// The keyper's index in the committee.
    pub keyper: u16,
    /// Its Ed25519 signature over the release message.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for ReleasedBatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleasedBatchKey")
            .field("public", &self.public)
            .field("seal", &self.seal)
            .field("deployment", &self.deployment)
            .field("attestations", &self.attestations.len())
            .finish_non_exhaustive()
    }
}

impl ReleasedBatchKey {
    /// Crate-internal: custodians build it after checking the seal.
    ///
    /// Refuses a secret that does not match `public` (so a committee's
    /// combined shares are checked against the announced key). The key
    /// opens bundles signed for `deployment` only.
    pub(crate) fn new(
        secret: BatchSecret,
        public: &BatchPublicKey,
        seal: &SignedSeal,
        deployment: DeploymentId,
    ) -> Result<Self, KeyError> {
        if secret.public().bytes != public.bytes {
            return Err(KeyError::Mismatch);
        }
        Ok(ReleasedBatchKey {
            secret,
            public: *public,
            seal: SealStatement {
                e: seal.e,
                count: seal.count,
                root: seal.root,
            },
            deployment,
            attestations: Vec::new(),
        })
    }

    /// Crate-internal: the keypers' release attestations of this key's
    /// seal (checked by the committee's custodian), published with the
    /// batch's result.
    pub(crate) fn with_attestations(mut self, attestations: Vec<ReleaseAttestation>) -> Self {
        self.attestations = attestations;
        self
    }

    /// The keypers' statements that they released their shares for this
    /// key's seal, by ascending keyper (none from the embedded custodian).
    #[must_use]
    pub fn attestations(&self) -> &[ReleaseAttestation] {
        &self.attestations
    }

    /// The deployment whose bundles this key opens.
    #[must_use]
    pub fn deployment(&self) -> &DeploymentId {
        &self.deployment
    }

    /// The batch this key opens.
    #[must_use]
    pub fn batch(&self) -> BatchId {
        self.seal.e
    }

    /// The batch public key `S_e`.
    #[must_use]
    pub fn public_key(&self) -> &BatchPublicKey {
        &self.public
    }

    /// The seal this key was released for.
    #[must_use]
    pub fn seal(&self) -> &SealStatement {
        &self.seal
    }

    /// The canonical encoding of `s_e`, to publish with the batch result so
    /// anyone can re-open the batch (see
    /// [`PublishedKeyCustodian`](super::PublishedKeyCustodian)).
    #[must_use]
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.0.to_bytes())
    }

    pub(crate) fn scalar(&self) -> &Scalar {
        &self.secret.0
    }
}

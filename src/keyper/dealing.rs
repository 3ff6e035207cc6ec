//! A dealer's part of a key generation: for every batch of the window, a
//! fresh secret polynomial, its Feldman commitments and a proof of knowledge
//! of its secret; for every keyper, that keyper's shares of all of them,
//! encrypted to its key so that only it can read them (and a keyper that was
//! away reads them later from the log).
//!
//! Shares to keyper `j` are sealed with an ephemeral ristretto255 key:
//! `R = r·G`, `K = BLAKE3-derive(DOMAIN_SHARE_KEY, r·P_j ‖ R ‖ P_j ‖ context
//! ‖ u16le(dealer) ‖ u16le(j))`, ChaCha20-Poly1305 under `K` with a zero
//! nonce (each `K` seals one message) over the `W` shares, 32 bytes each.

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity as _;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::committee::{Committee, Window};
use super::proof::Proof;
use super::sharing::{Commitments, KeyperIndex, Polynomial, random_scalar};
use crate::codec::Writer;
use crate::envelope::keys::decode_point;
use crate::types::BatchId;

/// BLAKE3 derive-key context of the key that seals a dealer's shares to one
/// keyper.
pub const DOMAIN_SHARE_KEY: &str = "sealbatch v1 keyper share key";

/// Bytes of the Poly1305 tag after a sealed share list.
pub const TAG_LEN: usize = 16;

/// What the dealer publishes for one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchDeal {
    /// `C_k` for `k < t`, compressed.
    pub commitments: Vec<[u8; 32]>,
    /// Knowledge of the logarithm of `C_0`, bound to (committee, window,
    /// batch, dealer).
    pub proof: Proof,
}

/// One keyper's shares from one dealer, sealed to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedShares {
    /// The ephemeral key `R`.
    pub ephemeral: [u8; 32],
    /// The `W` shares (32 bytes each) under ChaCha20-Poly1305, then the tag.
    pub ciphertext: Vec<u8>,
}

/// A dealer's dealing for one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dealing {
    /// The window.
    pub window: Window,
    /// The dealer.
    pub dealer: KeyperIndex,
    /// One per batch of the window, in order.
    pub batches: Vec<BatchDeal>,
    /// One per keyper `1..=n`, in order (the dealer's own included).
    pub shares: Vec<SealedShares>,
}

/// The dealer's secrets for a window, kept until the generation ends (an
/// accusation is answered from them). Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DealerSecrets {
    polynomials: Vec<Polynomial>,
}

impl std::fmt::Debug for DealerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DealerSecrets({} polynomials)", self.polynomials.len())
    }
}

impl DealerSecrets {
    /// Secrets of these polynomials (one per batch of the window).
    #[must_use]
    pub fn from_polynomials(polynomials: Vec<Polynomial>) -> DealerSecrets {
        DealerSecrets { polynomials }
    }

    /// The polynomials, one per batch of the window (secret).
    #[must_use]
    pub fn polynomials(&self) -> &[Polynomial] {
        &self.polynomials
    }

    /// Keyper `j`'s shares, one per batch (published in clear to answer an
    /// accusation).
    #[must_use]
    pub fn shares_for(&self, j: KeyperIndex) -> Vec<Scalar> {
        self.polynomials.iter().map(|p| p.share(j)).collect()
    }
}

/// The context a dealer's proof for batch `e` binds: the window's context,
/// then `u64le(e) ‖ u16le(dealer)`.
#[must_use]
pub fn proof_context(
    committee: &Committee,
    window: &Window,
    e: BatchId,
    dealer: KeyperIndex,
) -> Vec<u8> {
    let mut out = window.context(committee);
    out.put_u64(e.get());
    out.put_u16(dealer);
    out
}

fn share_key(
    shared: &RistrettoPoint,
    ephemeral: &[u8; 32],
    recipient_key: &RistrettoPoint,
    context: &[u8],
    dealer: KeyperIndex,
    recipient: KeyperIndex,
) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(DOMAIN_SHARE_KEY);
    h.update(shared.compress().as_bytes());
    h.update(ephemeral);
    h.update(recipient_key.compress().as_bytes());
    h.update(context);
    h.update(&dealer.to_le_bytes());
    h.update(&recipient.to_le_bytes());
    Zeroizing::new(*h.finalize().as_bytes())
}

/// Deals keys for every batch of `window` as keyper `dealer`.
///
/// # Panics
///
/// Never: the committee and window were checked when made, and `dealer`
/// must be one of the committee's indices (a caller's bug otherwise, which
/// yields a dealing every keyper refuses).
pub fn deal<R: CryptoRngCore + ?Sized>(
    rng: &mut R,
    committee: &Committee,
    window: &Window,
    dealer: KeyperIndex,
) -> (Dealing, DealerSecrets) {
    let t = committee.threshold();
    let polynomials: Vec<Polynomial> = window
        .batches()
        .map(|_| Polynomial::random(rng, t))
        .collect();
    let batches = window
        .batches()
        .zip(&polynomials)
        .map(|(e, f)| BatchDeal {
            commitments: f
                .commitments()
                .0
                .iter()
                .map(|c| c.compress().to_bytes())
                .collect(),
            proof: Proof::prove(
                rng,
                &f.secret(),
                &proof_context(committee, window, e, dealer),
            ),
        })
        .collect();
    let context = window.context(committee);
    let shares = committee
        .indices()
        .map(|j| {
            let mut plain = Zeroizing::new(Vec::with_capacity(polynomials.len() * 32));
            for f in &polynomials {
                plain.extend_from_slice(&f.share(j).to_bytes());
            }
            let r = Zeroizing::new(random_scalar(rng));
            let ephemeral = RistrettoPoint::mul_base(&r).compress().to_bytes();
            let recipient = committee.encryption_point(j).copied().unwrap_or_default();
            let key = share_key(
                &(*r * recipient),
                &ephemeral,
                &recipient,
                &context,
                dealer,
                j,
            );
            let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
            // Encryption into a Vec cannot fail for inputs below 2^38 bytes.
            let ciphertext = cipher
                .encrypt(Nonce::from_slice(&[0u8; 12]), plain.as_slice())
                .unwrap_or_default();
            SealedShares {
                ephemeral,
                ciphertext,
            }
        })
        .collect();
    (
        Dealing {
            window: *window,
            dealer,
            batches,
            shares,
        },
        DealerSecrets { polynomials },
    )
}

/// Why a dealing is refused as a whole (its dealer is disqualified).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DealingError {
    /// Not for this committee's window, or from no member.
    #[error("the dealing is for another window or from no member")]
    Foreign,
    /// Not one entry per batch or per keyper, or not `t` commitments.
    #[error("the dealing has the wrong number of batches, shares or commitments")]
    Shape,
    /// A commitment is not a canonical point other than the identity.
    #[error("batch {0}: a commitment is not a valid point")]
    BadCommitment(BatchId),
    /// A proof of knowledge does not verify.
    #[error("batch {0}: the proof of knowledge does not verify")]
    BadProof(BatchId),
    /// The ephemeral key sealing keyper `j`'s shares is not a canonical
    /// point other than the identity.
    #[error("the shares sealed to keyper {0} have an invalid ephemeral key")]
    BadEphemeral(KeyperIndex),
}

/// A dealing's public part, checked: every batch's commitments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedDealing {
    /// The dealer.
    pub dealer: KeyperIndex,
    /// The commitments, one per batch of the window.
    pub commitments: Vec<Commitments>,
}

impl Dealing {
    /// The checks anyone can make: window, shape, every commitment a valid
    /// point, every proof.
    ///
    /// # Errors
    ///
    /// [`DealingError`].
    pub fn check(
        &self,
        committee: &Committee,
        window: &Window,
    ) -> Result<CheckedDealing, DealingError> {
        if self.window != *window || committee.member(self.dealer).is_none() {
            return Err(DealingError::Foreign);
        }
        let t = committee.threshold();
        if self.batches.len() != window.batches as usize
            || self.shares.len() != committee.size()
            || self.batches.iter().any(|b| b.commitments.len() != t)
            || self
                .shares
                .iter()
                .any(|s| s.ciphertext.len() != self.batches.len() * 32 + TAG_LEN)
        {
            return Err(DealingError::Shape);
        }
        for (j, sealed) in committee.indices().zip(&self.shares) {
            if decode_point(&sealed.ephemeral).is_err() {
                return Err(DealingError::BadEphemeral(j));
            }
        }
        let mut commitments = Vec::with_capacity(self.batches.len());
        for (e, b) in window.batches().zip(&self.batches) {
            let points = b
                .commitments
                .iter()
                .map(decode_point)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| DealingError::BadCommitment(e))?;
            let c = Commitments(points);
            if !b.proof.verify(
                &c.secret_image(),
                &proof_context(committee, window, e, self.dealer),
            ) {
                return Err(DealingError::BadProof(e));
            }
            commitments.push(c);
        }
        Ok(CheckedDealing {
            dealer: self.dealer,
            commitments,
        })
    }

    /// Keyper `me`'s shares, decrypted with its secret key and checked
    /// against `checked`'s commitments; `None` if they do not decrypt or one
    /// does not match (grounds for an accusation).
    #[must_use]
    pub fn open_shares(
        &self,
        committee: &Committee,
        checked: &CheckedDealing,
        me: KeyperIndex,
        secret: &Scalar,
    ) -> Option<Vec<Scalar>> {
        let sealed = self.shares.get(usize::from(me).checked_sub(1)?)?;
        let ephemeral = CompressedRistretto(sealed.ephemeral)
            .decompress()
            .filter(|p| !p.is_identity())?;
        let own = RistrettoPoint::mul_base(secret);
        let key = share_key(
            &(secret * ephemeral),
            &sealed.ephemeral,
            &own,
            &self.window.context(committee),
            self.dealer,
            me,
        );
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(&[0u8; 12]), sealed.ciphertext.as_slice())
                .ok()?,
        );
        let shares = decode_shares(&plain)?;
        (shares.len() == checked.commitments.len()
            && shares
                .iter()
                .zip(&checked.commitments)
                .all(|(s, c)| c.verify_share(me, s)))
        .then_some(shares)
    }
}

/// Canonical 32-byte scalars, back to back.
pub(crate) fn decode_shares(bytes: &[u8]) -> Option<Vec<Scalar>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    bytes
        .chunks_exact(32)
        .map(|chunk| {
            let mut b = [0u8; 32];
            b.copy_from_slice(chunk);
            Option::<Scalar>::from(Scalar::from_canonical_bytes(b))
        })
        .collect()
}

//! The sequencer's identity and what it signs: receipts `(e, commitment)` and
//! seals `(e, count, Merkle root)`, with the checks traders run.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;

use super::layout::{DOMAIN_RECEIPT, DOMAIN_SEAL, push_domain};
use super::merkle::{Commitment, InclusionProof, MerkleError, MerkleRoot, MerkleTree};
use crate::types::BatchId;

/// Why a public key, receipt, seal or proof is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ProofError {
    /// The Ed25519 public key is not canonical, does not decompress, or has
    /// small order.
    #[error("Ed25519 public key is non-canonical, invalid or of small order")]
    BadPublicKey,
    /// The signature does not verify (strictly) under the key.
    #[error("signature does not verify")]
    BadSignature,
    /// The bytes have the wrong length.
    #[error("expected {expected} bytes, got {actual}")]
    Length {
        /// The fixed encoding length.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The inclusion proof does not hold against the seal.
    #[error("inclusion proof: {0}")]
    Proof(#[from] MerkleError),
    /// The receipt and the seal are for different batches.
    #[error("receipt is for batch {receipt}, seal for batch {seal}")]
    BatchMismatch {
        /// The receipt's batch.
        receipt: BatchId,
        /// The seal's batch.
        seal: BatchId,
    },
}

/// A fresh Ed25519 account key: a 32-byte RFC 8032 secret seed drawn from
/// `rng` (the same bytes `ed25519-dalek` 2's `SigningKey::generate` drew).
pub fn generate_account_key<R: CryptoRngCore + ?Sized>(rng: &mut R) -> SigningKey {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut());
    SigningKey::from_bytes(&seed)
}

/// Decodes an Ed25519 public key with the checks `verify_strict` relies on
/// plus canonicity: the encoded `y` must be below `p = 2^255 − 19` (dalek
/// would silently reduce it), the point must decompress, and it must not have
/// small order.
///
/// # Errors
/// [`ProofError::BadPublicKey`].
pub fn decode_ed25519_public(bytes: &[u8; 32]) -> Result<VerifyingKey, ProofError> {
    if !ed25519_y_is_canonical(bytes) {
        return Err(ProofError::BadPublicKey);
    }
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| ProofError::BadPublicKey)?;
    if key.is_weak() {
        return Err(ProofError::BadPublicKey);
    }
    Ok(key)
}

/// Whether the low 255 bits (little-endian `y`) are below `2^255 − 19`.
/// (The `x = 0` sign-bit case only arises for `y = ±1`, both small order and
/// refused by the weak-key check.)
pub(crate) fn ed25519_y_is_canonical(bytes: &[u8; 32]) -> bool {
    // y >= p iff bits 0..255 are 0x7fff..ffed or above: byte 31 (masked) is
    // 0x7f, bytes 30..=1 are 0xff and byte 0 >= 0xed.
    !(bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

/// The message of a receipt: `len ‖ DOMAIN_RECEIPT ‖ e (8, LE) ‖ commitment (32)`.
#[must_use]
pub fn receipt_message(e: BatchId, commitment: &Commitment) -> Vec<u8> {
    let mut m = Vec::with_capacity(1 + DOMAIN_RECEIPT.len() + 40);
    push_domain(&mut m, DOMAIN_RECEIPT);
    m.extend_from_slice(&e.to_le_bytes());
    m.extend_from_slice(&commitment.0);
    m
}

/// The message of a seal:
/// `len ‖ DOMAIN_SEAL ‖ e (8, LE) ‖ count (4, LE) ‖ root (32)`.
#[must_use]
pub fn seal_message(e: BatchId, count: u32, root: &MerkleRoot) -> Vec<u8> {
    let mut m = Vec::with_capacity(1 + DOMAIN_SEAL.len() + 44);
    push_domain(&mut m, DOMAIN_SEAL);
    m.extend_from_slice(&e.to_le_bytes());
    m.extend_from_slice(&count.to_le_bytes());
    m.extend_from_slice(&root.0);
    m
}

/// The sequencer's Ed25519 signing key. Zeroized on drop (by dalek).
pub struct SequencerKey(SigningKey);

impl std::fmt::Debug for SequencerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SequencerKey")
            .field(&self.public_key())
            .finish()
    }
}

impl SequencerKey {
    /// A fresh key.
    pub fn generate<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        SequencerKey(generate_account_key(rng))
    }

    /// From the 32-byte Ed25519 secret seed (RFC 8032).
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SequencerKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for storing the key (handle with care: it
    /// is zeroized when the returned value drops).
    #[must_use]
    pub fn seed_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    /// Signs an arbitrary message that already starts with its own domain
    /// string (the schedule announcement, `spec/wire.md`).
    #[must_use]
    pub fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The public key traders verify against.
    #[must_use]
    pub fn public_key(&self) -> SequencerPublicKey {
        SequencerPublicKey(self.0.verifying_key())
    }

    /// Signs a receipt for `commitment` in batch `e`.
    #[must_use]
    pub fn sign_receipt(&self, e: BatchId, commitment: &Commitment) -> Receipt {
        let signature = self.0.sign(&receipt_message(e, commitment)).to_bytes();
        Receipt {
            e,
            commitment: *commitment,
            signature,
        }
    }

    /// Signs the seal of batch `e` over `tree`.
    #[must_use]
    pub fn sign_seal(&self, e: BatchId, tree: &MerkleTree) -> SignedSeal {
        self.sign_seal_statement(e, tree.count(), &tree.root())
    }

    /// Signs a seal from its parts (when the root was computed elsewhere).
    #[must_use]
    pub fn sign_seal_statement(&self, e: BatchId, count: u32, root: &MerkleRoot) -> SignedSeal {
        let signature = self.0.sign(&seal_message(e, count, root)).to_bytes();
        SignedSeal {
            e,
            count,
            root: *root,
            signature,
        }
    }
}

/// The sequencer's public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencerPublicKey(VerifyingKey);

impl SequencerPublicKey {
    /// Decodes a key strictly (see [`decode_ed25519_public`]).
    ///
    /// # Errors
    /// [`ProofError::BadPublicKey`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ProofError> {
        decode_ed25519_public(bytes).map(SequencerPublicKey)
    }

    /// The 32-byte encoding.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks, strictly, a signature over a message that starts with its
    /// own domain string (the schedule announcement, `spec/wire.md`).
    ///
    /// # Errors
    /// [`ProofError::BadSignature`].
    pub fn verify_message(&self, msg: &[u8], signature: &[u8; 64]) -> Result<(), ProofError> {
        self.verify(msg, signature)
    }

    fn verify(&self, msg: &[u8], signature: &[u8; 64]) -> Result<(), ProofError> {
        self.0
            .verify_strict(msg, &Signature::from_bytes(signature))
            .map_err(|_| ProofError::BadSignature)
    }
}

fn fixed<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// A receipt: the sequencer's promise that `commitment` is in batch `e`.
///
/// Encoding (104 bytes): `e (8, LE) ‖ commitment (32) ‖ signature (64)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The batch.
    pub e: BatchId,
    /// The envelope's commitment.
    pub commitment: Commitment,
    /// Ed25519 signature over [`receipt_message`].
    pub signature: [u8; 64],
}

/// Length of an encoded [`Receipt`].
pub const RECEIPT_LEN: usize = 8 + 32 + 64;
/// Length of an encoded [`SignedSeal`].
pub const SEAL_LEN: usize = 8 + 4 + 32 + 64;

impl Receipt {
    /// Checks the signature strictly.
    ///
    /// # Errors
    /// [`ProofError::BadSignature`].
    pub fn verify(&self, sequencer: &SequencerPublicKey) -> Result<(), ProofError> {
        sequencer.verify(&receipt_message(self.e, &self.commitment), &self.signature)
    }

    /// The 104-byte encoding.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; RECEIPT_LEN] {
        let mut out = [0u8; RECEIPT_LEN];
        out[..8].copy_from_slice(&self.e.to_le_bytes());
        out[8..40].copy_from_slice(&self.commitment.0);
        out[40..].copy_from_slice(&self.signature);
        out
    }

    /// Decodes [`Receipt::to_bytes`] (does not verify).
    ///
    /// # Errors
    /// [`ProofError::Length`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() != RECEIPT_LEN {
            return Err(ProofError::Length {
                expected: RECEIPT_LEN,
                actual: bytes.len(),
            });
        }
        Ok(Receipt {
            e: u64::from_le_bytes(fixed(bytes, 0)),
            commitment: Commitment(fixed(bytes, 8)),
            signature: fixed(bytes, 40),
        })
    }
}

/// A signed batch seal: batch `e` holds exactly `count` distinct commitments
/// whose sorted Merkle tree has `root`.
///
/// Encoding (108 bytes): `e (8, LE) ‖ count (4, LE) ‖ root (32) ‖ signature (64)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignedSeal {
    /// The batch.
    pub e: BatchId,
    /// The number of distinct commitments.
    pub count: u32,
    /// The Merkle root over the sorted commitments.
    pub root: MerkleRoot,
    /// Ed25519 signature over [`seal_message`].
    pub signature: [u8; 64],
}

impl SignedSeal {
    /// Checks the signature strictly.
    ///
    /// # Errors
    /// [`ProofError::BadSignature`].
    pub fn verify(&self, sequencer: &SequencerPublicKey) -> Result<(), ProofError> {
        sequencer.verify(
            &seal_message(self.e, self.count, &self.root),
            &self.signature,
        )
    }

    /// What a trader checks after the batch: the seal is signed by the
    /// sequencer, its receipt is too, they name the same batch, and the proof
    /// puts the receipt's commitment under the sealed root.
    ///
    /// # Errors
    /// The first [`ProofError`] found.
    pub fn verify_inclusion(
        &self,
        sequencer: &SequencerPublicKey,
        receipt: &Receipt,
        proof: &InclusionProof,
    ) -> Result<(), ProofError> {
        self.verify(sequencer)?;
        receipt.verify(sequencer)?;
        if receipt.e != self.e {
            return Err(ProofError::BatchMismatch {
                receipt: receipt.e,
                seal: self.e,
            });
        }
        proof.verify(&receipt.commitment, self.count, &self.root)?;
        Ok(())
    }

    /// The 108-byte encoding.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; SEAL_LEN] {
        let mut out = [0u8; SEAL_LEN];
        out[..8].copy_from_slice(&self.e.to_le_bytes());
        out[8..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..44].copy_from_slice(&self.root.0);
        out[44..].copy_from_slice(&self.signature);
        out
    }

    /// Decodes [`SignedSeal::to_bytes`] (does not verify).
    ///
    /// # Errors
    /// [`ProofError::Length`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() != SEAL_LEN {
            return Err(ProofError::Length {
                expected: SEAL_LEN,
                actual: bytes.len(),
            });
        }
        Ok(SignedSeal {
            e: u64::from_le_bytes(fixed(bytes, 0)),
            count: u32::from_le_bytes(fixed(bytes, 8)),
            root: MerkleRoot(fixed(bytes, 12)),
            signature: fixed(bytes, 44),
        })
    }
}

//! The sequencer's identity and what it signs: receipts `(e, commitment)`,
//! a group of them at a time under one signature over their Merkle root
//! (`spec/envelope.md` §12), and seals `(e, count, Merkle root)`, with the
//! checks traders run.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;

use super::layout::{DOMAIN_RECEIPT_GROUP, DOMAIN_RECEIPT_LEAF, DOMAIN_SEAL, push_domain};
use super::merkle::{
    Commitment, InclusionProof, MerkleError, MerkleRoot, MerkleTree, levels_over, proof_in,
};
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
    /// A receipt group of no receipts, or of more than
    /// [`RECEIPT_GROUP_MAX`].
    #[error("a receipt group holds 1 to {RECEIPT_GROUP_MAX} receipts, not {0}")]
    GroupSize(usize),
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

/// The message a receipt group's signature covers:
/// `len ‖ DOMAIN_RECEIPT_GROUP ‖ count (4, LE) ‖ root (32)`.
#[must_use]
pub fn receipt_group_message(count: u32, root: &MerkleRoot) -> Vec<u8> {
    let mut m = Vec::with_capacity(1 + DOMAIN_RECEIPT_GROUP.len() + 36);
    push_domain(&mut m, DOMAIN_RECEIPT_GROUP);
    m.extend_from_slice(&count.to_le_bytes());
    m.extend_from_slice(&root.0);
    m
}

static RECEIPT_LEAF_HASHER: std::sync::LazyLock<blake3::Hasher> =
    std::sync::LazyLock::new(|| blake3::Hasher::new_derive_key(DOMAIN_RECEIPT_LEAF));

/// A receipt group's leaf for `commitment` in batch `e`:
/// `KDF(DOMAIN_RECEIPT_LEAF, u64le(e) ‖ commitment)`.
#[must_use]
pub fn receipt_leaf(e: BatchId, commitment: &Commitment) -> [u8; 32] {
    let mut h = RECEIPT_LEAF_HASHER.clone();
    h.update(&e.to_le_bytes());
    h.update(&commitment.0);
    *h.finalize().as_bytes()
}

/// Most receipts one group holds (one signature); a larger group commit is
/// signed as several groups. Its proofs have at most
/// [`RECEIPT_PROOF_DEPTH_MAX`] siblings.
pub const RECEIPT_GROUP_MAX: usize = 1 << 12;
/// Most siblings in a receipt's proof: `log2(RECEIPT_GROUP_MAX)`.
pub const RECEIPT_PROOF_DEPTH_MAX: usize = 12;
const _: () = assert!(1usize << RECEIPT_PROOF_DEPTH_MAX >= RECEIPT_GROUP_MAX);
const _: () = assert!(RECEIPT_GROUP_MAX <= super::merkle::PARALLEL_LEVEL_MIN);

/// The receipts of one group commit under one signature: the Merkle tree
/// over their leaves ([`receipt_leaf`], in the order given) and the
/// sequencer's signature over its root and size. Each receipt is read out
/// with [`receipt`](Self::receipt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptGroup {
    entries: Vec<(BatchId, Commitment)>,
    levels: Vec<Vec<[u8; 32]>>,
    root: MerkleRoot,
    signature: [u8; 64],
}

impl ReceiptGroup {
    /// How many receipts the group holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none (never, once signed).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The receipt at `index` (the order the group was signed in); `None`
    /// out of range.
    #[must_use]
    pub fn receipt(&self, index: u32) -> Option<Receipt> {
        let (e, commitment) = *self.entries.get(usize::try_from(index).ok()?)?;
        Some(Receipt {
            e,
            commitment,
            // At most RECEIPT_GROUP_MAX entries, checked when signed.
            count: u32::try_from(self.entries.len()).ok()?,
            root: self.root,
            signature: self.signature,
            proof: proof_in(&self.levels, index)?,
        })
    }
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

    /// Signs the receipts of `entries` (each a batch and a commitment) as
    /// one group: one signature over the root of their tree.
    ///
    /// # Errors
    /// [`ProofError::GroupSize`] for none or more than
    /// [`RECEIPT_GROUP_MAX`].
    pub fn sign_receipts(
        &self,
        entries: &[(BatchId, Commitment)],
    ) -> Result<ReceiptGroup, ProofError> {
        if entries.is_empty() || entries.len() > RECEIPT_GROUP_MAX {
            return Err(ProofError::GroupSize(entries.len()));
        }
        let count =
            u32::try_from(entries.len()).map_err(|_| ProofError::GroupSize(entries.len()))?;
        let levels = levels_over(entries.iter().map(|(e, c)| receipt_leaf(*e, c)).collect());
        let root = MerkleRoot(
            levels
                .last()
                .and_then(|level| level.first())
                .copied()
                .ok_or(ProofError::GroupSize(0))?,
        );
        let signature = self.0.sign(&receipt_group_message(count, &root)).to_bytes();
        Ok(ReceiptGroup {
            entries: entries.to_vec(),
            levels,
            root,
            signature,
        })
    }

    /// Signs one receipt alone: a group of one (its root is its leaf, its
    /// proof empty).
    #[must_use]
    pub fn sign_receipt(&self, e: BatchId, commitment: &Commitment) -> Receipt {
        let leaf = receipt_leaf(e, commitment);
        let root = MerkleRoot(leaf);
        Receipt {
            e,
            commitment: *commitment,
            count: 1,
            root,
            signature: self.0.sign(&receipt_group_message(1, &root)).to_bytes(),
            proof: InclusionProof {
                index: 0,
                siblings: Vec::new(),
            },
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

/// A receipt: the sequencer's promise that `commitment` is in batch `e`,
/// made after the envelope was durable. It is one leaf of a signed group
/// (`spec/envelope.md` §12): the signature covers the group's root and
/// size, the proof leads from this receipt's leaf to that root, and the two
/// together verify against the sequencer key alone.
///
/// Encoding (145 + 32·k bytes, k ≤ [`RECEIPT_PROOF_DEPTH_MAX`]):
/// `e (8, LE) ‖ commitment (32) ‖ count (4, LE) ‖ root (32) ‖ signature
/// (64) ‖ index (4, LE) ‖ k (1) ‖ k × sibling (32)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The batch.
    pub e: BatchId,
    /// The envelope's commitment.
    pub commitment: Commitment,
    /// How many receipts the group holds.
    pub count: u32,
    /// The group's Merkle root.
    pub root: MerkleRoot,
    /// Ed25519 signature over [`receipt_group_message`].
    pub signature: [u8; 64],
    /// The path from this receipt's leaf to the root.
    pub proof: InclusionProof,
}

/// Length of an encoded [`Receipt`] with no sibling (a group of one).
pub const RECEIPT_LEN_MIN: usize = 8 + 32 + 4 + 32 + 64 + 4 + 1;
/// Length of the longest encoded [`Receipt`].
pub const RECEIPT_LEN_MAX: usize = RECEIPT_LEN_MIN + 32 * RECEIPT_PROOF_DEPTH_MAX;
/// Length of an encoded [`SignedSeal`].
pub const SEAL_LEN: usize = 8 + 4 + 32 + 64;

impl Receipt {
    /// Checks the group's signature strictly and the path to its root.
    ///
    /// # Errors
    /// [`ProofError::BadSignature`], or [`ProofError::Proof`].
    pub fn verify(&self, sequencer: &SequencerPublicKey) -> Result<(), ProofError> {
        self.verify_path()?;
        self.verify_group(sequencer)
    }

    /// Checks only that the path leads from this receipt's leaf to the
    /// group's root (the signature is checked once per group:
    /// [`ReceiptChecker`]).
    ///
    /// # Errors
    /// [`ProofError::Proof`].
    pub fn verify_path(&self) -> Result<(), ProofError> {
        if self.count == 0 || usize::try_from(self.count).map_or(true, |n| n > RECEIPT_GROUP_MAX) {
            return Err(ProofError::GroupSize(
                usize::try_from(self.count).unwrap_or(usize::MAX),
            ));
        }
        self.proof.verify_leaf(
            receipt_leaf(self.e, &self.commitment),
            self.count,
            &self.root,
        )?;
        Ok(())
    }

    /// Checks only the group's signature.
    ///
    /// # Errors
    /// [`ProofError::BadSignature`].
    pub fn verify_group(&self, sequencer: &SequencerPublicKey) -> Result<(), ProofError> {
        sequencer.verify(
            &receipt_group_message(self.count, &self.root),
            &self.signature,
        )
    }

    /// The encoding above.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECEIPT_LEN_MIN + 32 * self.proof.siblings.len());
        out.extend_from_slice(&self.e.to_le_bytes());
        out.extend_from_slice(&self.commitment.0);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.root.0);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.proof.to_bytes());
        out
    }

    /// The length of the receipt that starts `bytes` (its proof's sibling
    /// count read from it), for reading receipts one after another.
    ///
    /// # Errors
    /// [`ProofError::Length`] when `bytes` is too short to say, or the
    /// count is above [`RECEIPT_PROOF_DEPTH_MAX`].
    pub fn encoded_len(bytes: &[u8]) -> Result<usize, ProofError> {
        let k = *bytes.get(RECEIPT_LEN_MIN - 1).ok_or(ProofError::Length {
            expected: RECEIPT_LEN_MIN,
            actual: bytes.len(),
        })?;
        let k = usize::from(k);
        if k > RECEIPT_PROOF_DEPTH_MAX {
            return Err(ProofError::Proof(MerkleError::Encoding));
        }
        Ok(RECEIPT_LEN_MIN + 32 * k)
    }

    /// Decodes [`Receipt::to_bytes`], the whole of `bytes` (does not
    /// verify).
    ///
    /// # Errors
    /// [`ProofError::Length`] for a length the sibling count does not give,
    /// [`ProofError::Proof`] for more than [`RECEIPT_PROOF_DEPTH_MAX`]
    /// siblings.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProofError> {
        let expected = Receipt::encoded_len(bytes)?;
        if bytes.len() != expected {
            return Err(ProofError::Length {
                expected,
                actual: bytes.len(),
            });
        }
        Ok(Receipt {
            e: BatchId::from_le_bytes(fixed(bytes, 0)),
            commitment: Commitment(fixed(bytes, 8)),
            count: u32::from_le_bytes(fixed(bytes, 40)),
            root: MerkleRoot(fixed(bytes, 44)),
            signature: fixed(bytes, 76),
            proof: InclusionProof::from_bytes(&bytes[140..])?,
        })
    }
}

/// Checks receipts against one sequencer key, verifying each group's
/// signature once: a receipt whose group (size, root and signature) was
/// verified before costs only its path. Remembers the last
/// [`ReceiptChecker::GROUPS_REMEMBERED`] groups.
#[derive(Clone, Debug)]
pub struct ReceiptChecker {
    sequencer: SequencerPublicKey,
    verified: std::collections::VecDeque<(u32, MerkleRoot, [u8; 64])>,
}

impl ReceiptChecker {
    /// How many verified groups a checker remembers.
    pub const GROUPS_REMEMBERED: usize = 64;

    /// A checker for receipts signed by `sequencer`.
    #[must_use]
    pub fn new(sequencer: SequencerPublicKey) -> Self {
        ReceiptChecker {
            sequencer,
            verified: std::collections::VecDeque::with_capacity(Self::GROUPS_REMEMBERED),
        }
    }

    /// The key it checks against.
    #[must_use]
    pub fn sequencer(&self) -> SequencerPublicKey {
        self.sequencer
    }

    /// [`Receipt::verify`], the signature only if its group is not one
    /// already verified.
    ///
    /// # Errors
    /// As [`Receipt::verify`].
    pub fn check(&mut self, receipt: &Receipt) -> Result<(), ProofError> {
        receipt.verify_path()?;
        let group = (receipt.count, receipt.root, receipt.signature);
        if self.verified.contains(&group) {
            return Ok(());
        }
        receipt.verify_group(&self.sequencer)?;
        if self.verified.len() == Self::GROUPS_REMEMBERED {
            self.verified.pop_front();
        }
        self.verified.push_back(group);
        Ok(())
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
            e: BatchId::from_le_bytes(fixed(bytes, 0)),
            count: u32::from_le_bytes(fixed(bytes, 8)),
            root: MerkleRoot(fixed(bytes, 12)),
            signature: fixed(bytes, 44),
        })
    }
}

//! Envelopes: sealing a bundle (trader), checking an envelope's shape
//! (sequencer, before the receipt), opening one or a whole batch (after
//! release).

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use rayon::prelude::*;
use zeroize::{Zeroize, Zeroizing};

use super::cofactored::{PendingSignature, verify_each};
use super::custodian::DeploymentId;
use super::keys::{
    BatchPublicKey, ReleasedBatchKey, SealingKey, decode_point, decode_secret_scalar,
};
use super::layout::{
    BundleError, DOMAIN_KEM_KEY, ENVELOPE_LEN_MAX, ENVELOPE_LEN_MIN, HEADER_LEN, Malformed,
    PLAINTEXT_CLASSES, PlaintextError, TAG_LEN, VERSION, bundle_signature_message,
    decode_plaintext, encode_body, padded_len, parse_header,
};
use super::merkle::{Commitment, ENVELOPES_PER_BATCH_MAX, MerkleError, MerkleRoot, merkle_root};
use super::receipt::decode_ed25519_public;
use crate::order::OrderSpec;
use crate::types::BatchId;

/// The AEAD nonce: all zero. Every envelope key is used exactly once (it
/// depends on the fresh ephemeral `R`), so a fixed nonce is safe.
const AEAD_NONCE: [u8; 12] = [0u8; 12];

pub use crate::market::AccountId;

/// A sealed envelope's bytes: `header (41) ‖ ciphertext ‖ tag (16)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Envelope(Vec<u8>);

impl Envelope {
    /// Wraps bytes received from the network (not checked; see
    /// [`check_shape`]).
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Envelope(bytes)
    }

    /// The bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Its commitment.
    #[must_use]
    pub fn commitment(&self) -> Commitment {
        Commitment::of(&self.0)
    }
}

impl AsRef<[u8]> for Envelope {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The AEAD key: `blake3_derive_key(DOMAIN_KEM_KEY, shared (32) ‖ R (32) ‖
/// S_e (32) ‖ e (8, LE))`, where `shared` is the canonical encoding of
/// `r·S_e = s_e·R`.
#[must_use]
pub fn kem_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    batch_key: &[u8; 32],
    e: BatchId,
) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(DOMAIN_KEM_KEY);
    h.update(shared);
    h.update(ephemeral);
    h.update(batch_key);
    h.update(&e.to_le_bytes());
    Zeroizing::new(*h.finalize().as_bytes())
}

/// Seals a bundle of `orders` from `account` with `nonce` to batch `e`'s key.
///
/// Draws the ephemeral scalar from `rng`; see [`seal_bundle_with_ephemeral`].
///
/// # Errors
/// [`BundleError`] for an empty or oversized bundle or a zero quantity.
pub fn seal_bundle<R: CryptoRngCore + ?Sized>(
    rng: &mut R,
    account: &SigningKey,
    deployment: &DeploymentId,
    e: BatchId,
    batch_key: &BatchPublicKey,
    nonce: u64,
    orders: &[OrderSpec],
) -> Result<Envelope, BundleError> {
    seal_to(
        rng,
        account,
        deployment,
        e,
        Recipient::Key(batch_key),
        nonce,
        orders,
    )
}

/// [`seal_bundle`] to a [`SealingKey`]: the same envelope (for the same
/// random bytes), its multiplication by the batch key done by the key's
/// table.
///
/// # Errors
/// As [`seal_bundle`].
pub fn seal_bundle_with<R: CryptoRngCore + ?Sized>(
    rng: &mut R,
    account: &SigningKey,
    deployment: &DeploymentId,
    e: BatchId,
    key: &SealingKey,
    nonce: u64,
    orders: &[OrderSpec],
) -> Result<Envelope, BundleError> {
    seal_to(
        rng,
        account,
        deployment,
        e,
        Recipient::Table(key),
        nonce,
        orders,
    )
}

/// Whom an envelope is sealed to: a batch key, or a batch key with its
/// multiplication table.
#[derive(Clone, Copy)]
enum Recipient<'a> {
    Key(&'a BatchPublicKey),
    Table(&'a SealingKey),
}

impl<'a> Recipient<'a> {
    fn key(self) -> &'a BatchPublicKey {
        match self {
            Recipient::Key(key) => key,
            Recipient::Table(key) => key.key(),
        }
    }

    /// `r · S_e`.
    fn times(self, r: &Scalar) -> RistrettoPoint {
        match self {
            Recipient::Key(key) => r * key.point(),
            Recipient::Table(key) => key.times(r),
        }
    }
}

fn seal_to<R: CryptoRngCore + ?Sized>(
    rng: &mut R,
    account: &SigningKey,
    deployment: &DeploymentId,
    e: BatchId,
    recipient: Recipient<'_>,
    nonce: u64,
    orders: &[OrderSpec],
) -> Result<Envelope, BundleError> {
    for _ in 0..4 {
        // 64 uniform bytes reduced mod ℓ (`Scalar::random` of
        // curve25519-dalek 4, which drew the same bytes).
        let mut wide = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(wide.as_mut());
        let r = Zeroizing::new(Scalar::from_bytes_mod_order_wide(&wide));
        if *r != Scalar::ZERO {
            return seal_with_scalar(&r, account, deployment, e, recipient, nonce, orders);
        }
    }
    Err(BundleError::Rng)
}

/// [`seal_bundle`] with a given ephemeral scalar `r` (canonical, non-zero),
/// for test vectors. `r` must be uniformly random and never used twice: a
/// repeated `r` reuses the AEAD key and nonce.
///
/// # Errors
/// [`BundleError::BadEphemeral`] or as [`seal_bundle`].
pub fn seal_bundle_with_ephemeral(
    r: &[u8; 32],
    account: &SigningKey,
    deployment: &DeploymentId,
    e: BatchId,
    batch_key: &BatchPublicKey,
    nonce: u64,
    orders: &[OrderSpec],
) -> Result<Envelope, BundleError> {
    let r = Zeroizing::new(decode_secret_scalar(r).map_err(|_| BundleError::BadEphemeral)?);
    seal_with_scalar(
        &r,
        account,
        deployment,
        e,
        Recipient::Key(batch_key),
        nonce,
        orders,
    )
}

fn seal_with_scalar(
    r: &Scalar,
    account: &SigningKey,
    deployment: &DeploymentId,
    e: BatchId,
    recipient: Recipient<'_>,
    nonce: u64,
    orders: &[OrderSpec],
) -> Result<Envelope, BundleError> {
    let body = encode_body(account.verifying_key().as_bytes(), nonce, orders)?;
    let padded = padded_len(orders.len()).ok_or(BundleError::TooManyOrders {
        orders: orders.len(),
    })?;
    let signature = account.sign(&bundle_signature_message(deployment, e, &body));
    let mut plaintext = Zeroizing::new(Vec::with_capacity(padded));
    plaintext.extend_from_slice(&body);
    plaintext.extend_from_slice(&signature.to_bytes());
    plaintext.resize(padded, 0);
    Ok(encrypt(r, e, recipient, &plaintext))
}

/// Encrypts an arbitrary `plaintext` into an envelope for batch `e` with the
/// ephemeral scalar `r`, without looking at it. For tests, fuzzing and
/// negative test vectors (an opener must reject what this makes from a bad
/// plaintext); traders use [`seal_bundle`].
///
/// # Errors
/// [`BundleError::BadEphemeral`] if `r` is zero or not canonical.
pub fn seal_raw_plaintext(
    r: &[u8; 32],
    e: BatchId,
    batch_key: &BatchPublicKey,
    plaintext: &[u8],
) -> Result<Envelope, BundleError> {
    let r = Zeroizing::new(decode_secret_scalar(r).map_err(|_| BundleError::BadEphemeral)?);
    Ok(encrypt(&r, e, Recipient::Key(batch_key), plaintext))
}

fn encrypt(r: &Scalar, e: BatchId, recipient: Recipient<'_>, plaintext: &[u8]) -> Envelope {
    let ephemeral = RistrettoPoint::mul_base(r).compress().to_bytes();
    let shared = Zeroizing::new(recipient.times(r).compress().to_bytes());
    let key = kem_key(&shared, &ephemeral, &recipient.key().to_bytes(), e);

    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(VERSION);
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(&ephemeral);
    out.extend_from_slice(plaintext);
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    // Fails only beyond ChaCha20's 256 GiB limit; callers pass kilobytes.
    // Should it ever fail, the tag is left zero and the envelope cannot open.
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&AEAD_NONCE), header, body)
        .unwrap_or_default();
    out.extend_from_slice(&tag);
    Envelope(out)
}

/// Why an envelope is rejected. Each has a stable one-byte code
/// ([`Rejection::code`]) for publishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    /// Shorter than the smallest envelope.
    #[error("envelope of {len} bytes is truncated (minimum {ENVELOPE_LEN_MIN})")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// Longer than the largest envelope.
    #[error("envelope of {len} bytes is oversized (maximum {ENVELOPE_LEN_MAX})")]
    Oversized {
        /// Its length.
        len: usize,
    },
    /// A length between the bounds that is no padding class.
    #[error("envelope length {len} matches no padding class")]
    BadLength {
        /// Its length.
        len: usize,
    },
    /// An unknown format version.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// Sealed to another batch.
    #[error("envelope is for batch {envelope}, not {expected}")]
    WrongBatch {
        /// The batch in the envelope.
        envelope: BatchId,
        /// The batch being opened.
        expected: BatchId,
    },
    /// `R` does not decode to a point, or is the identity.
    #[error("ephemeral point R is not canonical or is the identity")]
    BadEphemeral,
    /// The AEAD does not open (wrong key, tampered ciphertext, tag or header).
    #[error("AEAD authentication failed")]
    AeadFailure,
    /// The plaintext opened but does not decode.
    #[error("malformed bundle: {0}")]
    Malformed(Malformed),
    /// The bundle declares more than `BUNDLE_ORDERS_MAX` orders.
    #[error("bundle declares {orders} orders, over the maximum")]
    BundleTooLarge {
        /// The declared count.
        orders: usize,
    },
    /// The account key is non-canonical, invalid or of small order.
    #[error("account public key is invalid")]
    BadAccountKey,
    /// The bundle signature does not verify (strict encodings, cofactored
    /// equation: `spec/envelope.md` §11).
    #[error("bundle signature does not verify")]
    BadSignature,
    /// Same bytes (same commitment) as an earlier envelope of the batch.
    #[error("duplicate envelope (same commitment)")]
    DuplicateEnvelope,
    /// Another valid envelope of this batch has the same account and nonce;
    /// all of them are rejected.
    #[error("another envelope of this batch has the same account and nonce")]
    DuplicateNonce,
}

impl Rejection {
    /// The stable one-byte code (`spec/envelope.md`, "Rejections").
    #[must_use]
    pub fn code(&self) -> u8 {
        match self {
            Rejection::Truncated { .. } => 1,
            Rejection::Oversized { .. } => 2,
            Rejection::BadLength { .. } => 3,
            Rejection::UnknownVersion(_) => 4,
            Rejection::WrongBatch { .. } => 5,
            Rejection::BadEphemeral => 6,
            Rejection::AeadFailure => 7,
            Rejection::Malformed(_) => 8,
            Rejection::BundleTooLarge { .. } => 9,
            Rejection::BadAccountKey => 10,
            Rejection::BadSignature => 11,
            Rejection::DuplicateEnvelope => 12,
            Rejection::DuplicateNonce => 13,
        }
    }
}

/// The sequencer's check before journaling and receipting an envelope for
/// batch `e`: length is a valid class, version known, batch right, `R` a
/// canonical non-identity point. It cannot and does not look inside.
/// Returns the envelope's commitment.
///
/// # Errors
/// [`Rejection::Truncated`], [`Rejection::Oversized`],
/// [`Rejection::BadLength`], [`Rejection::UnknownVersion`],
/// [`Rejection::WrongBatch`] or [`Rejection::BadEphemeral`].
pub fn check_shape(envelope: &[u8], e: BatchId) -> Result<Commitment, Rejection> {
    check_header(envelope, e)?;
    Ok(Commitment::of(envelope))
}

/// An envelope with its commitment and, when it passed [`check_shape`] on
/// arrival, its decoded ephemeral point, so that [`open_shaped_batch`] does
/// not compute them again. The constructors compute the commitment from the
/// bytes, so it is always the envelope's.
#[derive(Clone)]
pub struct ShapedEnvelope {
    bytes: Vec<u8>,
    e: BatchId,
    commitment: Commitment,
    /// `None` for [`ShapedEnvelope::unchecked`]: opening checks the header.
    ephemeral: Option<RistrettoPoint>,
}

impl std::fmt::Debug for ShapedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapedEnvelope")
            .field("e", &self.e)
            .field("commitment", &self.commitment)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The batch an envelope's header names (bytes 1..9, after the version),
/// without checking anything else; `None` for bytes too short to hold it.
#[must_use]
pub fn header_batch(bytes: &[u8]) -> Option<BatchId> {
    bytes
        .get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(BatchId::from_le_bytes)
}

impl ShapedEnvelope {
    /// Runs [`check_shape`] for batch `e`.
    ///
    /// # Errors
    /// As [`check_shape`].
    pub fn new(bytes: Vec<u8>, e: BatchId) -> Result<ShapedEnvelope, Rejection> {
        let ephemeral = check_header(&bytes, e)?;
        let commitment = Commitment::of(&bytes);
        Ok(ShapedEnvelope {
            bytes,
            e,
            commitment,
            ephemeral: Some(ephemeral),
        })
    }

    /// Runs [`check_shape`] for the batch the envelope's header names.
    ///
    /// # Errors
    ///
    /// As [`check_shape`] ([`Rejection::Truncated`] if there is no header).
    pub fn for_header_batch(bytes: Vec<u8>) -> Result<ShapedEnvelope, Rejection> {
        let e = header_batch(&bytes).ok_or(Rejection::Truncated { len: bytes.len() })?;
        ShapedEnvelope::new(bytes, e)
    }

    /// An envelope for batch `e` whose shape is not checked now (one read
    /// back from the journal, most of which will never be opened again):
    /// only its commitment is computed, and [`open_shaped_batch`] runs the
    /// full header check when it opens it.
    #[must_use]
    pub fn unchecked(bytes: Vec<u8>, e: BatchId) -> ShapedEnvelope {
        let commitment = Commitment::of(&bytes);
        ShapedEnvelope {
            bytes,
            e,
            commitment,
            ephemeral: None,
        }
    }

    /// The envelope bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The envelope bytes, taken back.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Whether it passed [`check_shape`] ([`ShapedEnvelope::new`]), rather
    /// than being made [`ShapedEnvelope::unchecked`].
    #[must_use]
    pub fn is_shape_checked(&self) -> bool {
        self.ephemeral.is_some()
    }

    /// The batch its header names.
    #[must_use]
    pub fn batch(&self) -> BatchId {
        self.e
    }

    /// Its commitment.
    #[must_use]
    pub fn commitment(&self) -> Commitment {
        self.commitment
    }
}

impl AsRef<[u8]> for ShapedEnvelope {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

fn check_header(envelope: &[u8], e: BatchId) -> Result<RistrettoPoint, Rejection> {
    let len = envelope.len();
    if len < ENVELOPE_LEN_MIN {
        return Err(Rejection::Truncated { len });
    }
    if len > ENVELOPE_LEN_MAX {
        return Err(Rejection::Oversized { len });
    }
    if !PLAINTEXT_CLASSES.contains(&(len - HEADER_LEN - TAG_LEN)) {
        return Err(Rejection::BadLength { len });
    }
    let header = parse_header(envelope).ok_or(Rejection::Truncated { len })?;
    if header.version != VERSION {
        return Err(Rejection::UnknownVersion(header.version));
    }
    if header.batch != e {
        return Err(Rejection::WrongBatch {
            envelope: header.batch,
            expected: e,
        });
    }
    decode_point(&header.ephemeral).map_err(|_| Rejection::BadEphemeral)
}

/// A bundle that opened and whose signature verified.
///
/// Market, price band and funding are not checked here: that is the
/// sequencer's and the ledger's job after opening.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VerifiedBundle {
    /// The signing account.
    pub account: AccountId,
    /// The account's nonce for this bundle (the sequencer checks it across
    /// batches).
    pub nonce: u64,
    /// The orders, in the order the trader wrote them.
    pub orders: Vec<OrderSpec>,
}

impl ReleasedBatchKey {
    /// Opens one envelope of this batch: header checks, KEM, AEAD, plaintext
    /// decoding, cofactored Ed25519 verification. Does not check membership in
    /// the seal or nonces; [`open_batch`] does.
    ///
    /// # Errors
    /// The [`Rejection`] for the first check that fails.
    pub fn open(&self, envelope: &[u8]) -> Result<VerifiedBundle, Rejection> {
        let ephemeral_point = check_header(envelope, self.batch())?;
        let shared = Zeroizing::new((self.scalar() * ephemeral_point).compress().to_bytes());
        let decrypted = self.decrypt(envelope, &shared)?;
        let key = decode_ed25519_public(&decrypted.bundle.account.0).ok();
        let (bundle, signature) = decrypted.into_pending(key.as_ref())?;
        if signature.verify() {
            Ok(bundle)
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// Opening after [`check_header`] passed, given `shared = enc(s_e·R)`,
    /// up to the account key: KEM key, AEAD, plaintext decoding.
    fn decrypt(&self, envelope: &[u8], shared: &[u8; 32]) -> Result<Decrypted, Rejection> {
        let e = self.batch();
        let (header, rest) = envelope.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&header[9..HEADER_LEN]);

        let key = kem_key(shared, &ephemeral, &self.public_key().to_bytes(), e);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&AEAD_NONCE),
                header,
                plaintext.as_mut_slice(),
                Tag::from_slice(tag),
            )
            .map_err(|_| Rejection::AeadFailure)?;

        let decoded = decode_plaintext(&plaintext).map_err(|err| match err {
            PlaintextError::TooManyOrders(orders) => Rejection::BundleTooLarge { orders },
            PlaintextError::Malformed(m) => Rejection::Malformed(m),
        })?;
        Ok(Decrypted {
            message: bundle_signature_message(self.deployment(), e, decoded.body),
            signature: decoded.signature,
            bundle: VerifiedBundle {
                account: AccountId(decoded.account),
                nonce: decoded.nonce,
                orders: decoded.orders,
            },
        })
    }

    /// The first half of opening a run of sorted envelopes: header checks,
    /// KEM and decryption, sharing one field inversion for all their KEM
    /// encodings: with `h = s_e/2`, ristretto's batched double-and-encode of
    /// `h·R_i` yields `enc(2·h·R_i) = enc(s_e·R_i)`, the same bytes as
    /// [`ReleasedBatchKey::open`] computes one at a time, minus one inverse
    /// square root per envelope.
    fn decrypt_run<E: AsRef<[u8]>>(
        &self,
        half: &Scalar,
        envelopes: &[E],
        sorted: &[(Commitment, usize)],
        run: std::ops::Range<usize>,
        header: &(dyn Fn(usize) -> Result<RistrettoPoint, Rejection> + Sync),
    ) -> Vec<Result<Decrypted, Rejection>> {
        let checked: Vec<Result<RistrettoPoint, Rejection>> = run
            .clone()
            .map(|pos| {
                let (commitment, input_index) = sorted[pos];
                if pos > 0 && sorted[pos - 1].0 == commitment {
                    return Err(Rejection::DuplicateEnvelope);
                }
                header(input_index).map(|r| half * r)
            })
            .collect();
        let mut halves: Vec<RistrettoPoint> = checked
            .iter()
            .filter_map(|p| p.as_ref().ok().copied())
            .collect();
        let mut shared = RistrettoPoint::double_and_compress_batch(&halves);
        halves.zeroize();
        let mut shared_iter = shared.iter();
        let decrypted = run
            .zip(checked)
            .map(|(pos, point)| {
                let envelope = envelopes[sorted[pos].1].as_ref();
                point?;
                match shared_iter.next() {
                    Some(s) => self.decrypt(envelope, s.as_bytes()),
                    // One compressed point per accepted header, by construction.
                    None => {
                        let point = header(sorted[pos].1)?;
                        let s = Zeroizing::new((self.scalar() * point).compress().to_bytes());
                        self.decrypt(envelope, &s)
                    }
                }
            })
            .collect();
        shared.zeroize();
        decrypted
    }
}

/// A decrypted, well-formed bundle whose key and signature are not checked
/// yet.
struct Decrypted {
    bundle: VerifiedBundle,
    /// The signed message (`spec/envelope.md` §6).
    message: Vec<u8>,
    signature: [u8; 64],
}

impl Decrypted {
    /// The bundle and its decoded signature, given the account key decoded
    /// from `bundle.account` (`None`: it did not decode).
    fn into_pending(
        self,
        key: Option<&VerifyingKey>,
    ) -> Result<(VerifiedBundle, PendingSignature), Rejection> {
        let key = key.ok_or(Rejection::BadAccountKey)?;
        let signature = PendingSignature::new(key, &self.message, &self.signature)
            .ok_or(Rejection::BadSignature)?;
        Ok((self.bundle, signature))
    }
}

/// The second half of opening a batch: account keys (decoded once per
/// batch, in `keys`) and signatures, so that every verdict equals
/// [`ReleasedBatchKey::open`]'s.
///
/// The signatures are checked in runs of [`OPEN_RUN_LEN`] formed by account
/// (ascending key, then position): a trader's signatures share runs with its
/// own (and one key term in each combination), so a bad signature slows
/// mostly its sender's runs, and a failing run is bisected
/// ([`verify_each`]) rather than checked one signature at a time.
fn verify_decrypted(
    decrypted: Vec<Result<Decrypted, Rejection>>,
    keys: &BTreeMap<[u8; 32], Option<VerifyingKey>>,
) -> Vec<Result<VerifiedBundle, Rejection>> {
    let pending: Vec<Result<(VerifiedBundle, PendingSignature), Rejection>> = decrypted
        .into_par_iter()
        .map(|d| {
            let d = d?;
            let key = keys.get(&d.bundle.account.0).and_then(Option::as_ref);
            d.into_pending(key)
        })
        .collect();
    let mut order: Vec<(&[u8; 32], usize)> = pending
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_ref().ok().map(|(bundle, _)| (&bundle.account.0, i)))
        .collect();
    order.sort_unstable();
    let verdicts: Vec<(usize, bool)> = order
        .par_chunks(OPEN_RUN_LEN)
        .flat_map_iter(|run| {
            let signatures: Vec<PendingSignature> = run
                .iter()
                .filter_map(|&(_, i)| pending[i].as_ref().ok().map(|(_, sig)| sig.clone()))
                .collect();
            run.iter()
                .map(|&(_, i)| i)
                .zip(verify_each(&signatures))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut valid = vec![false; pending.len()];
    for (i, ok) in verdicts {
        valid[i] = ok;
    }
    pending
        .into_iter()
        .zip(valid)
        .map(|(p, ok)| {
            let (bundle, _) = p?;
            if ok {
                Ok(bundle)
            } else {
                Err(Rejection::BadSignature)
            }
        })
        .collect()
}

/// Envelopes per run in [`open_batch`]: one shared field inversion and one
/// combined signature check per run, and enough runs to keep both cores
/// busy.
const OPEN_RUN_LEN: usize = 32;

/// Why a whole batch cannot be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum OpenError {
    /// More envelopes than [`ENVELOPES_PER_BATCH_MAX`].
    #[error("{0} envelopes; at most {ENVELOPES_PER_BATCH_MAX} per batch")]
    TooManyEnvelopes(usize),
    /// The envelopes given are not the set the key's seal committed to.
    #[error(
        "envelopes do not match the seal of batch {e}: {actual_count} distinct commitments, seal says {sealed_count}"
    )]
    SealMismatch {
        /// The batch.
        e: BatchId,
        /// Distinct commitments given.
        actual_count: usize,
        /// The seal's count.
        sealed_count: u32,
    },
    /// The Merkle root could not be computed.
    #[error("merkle: {0}")]
    Merkle(#[from] MerkleError),
}

/// One envelope's outcome in an [`OpenedBatch`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpenedEnvelope {
    /// The envelope's commitment.
    pub commitment: Commitment,
    /// Its position in the slice given to [`open_batch`].
    pub input_index: usize,
    /// The verified bundle, or why it was rejected.
    pub outcome: Result<VerifiedBundle, Rejection>,
}

/// The result of opening a sealed batch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpenedBatch {
    /// The batch.
    pub e: BatchId,
    /// The sealed Merkle root the envelopes matched.
    pub root: MerkleRoot,
    /// One entry per input envelope, sorted by `(commitment, input_index)`.
    pub envelopes: Vec<OpenedEnvelope>,
}

impl OpenedBatch {
    /// The verified bundles, in sorted-commitment order.
    pub fn accepted(&self) -> impl Iterator<Item = (&Commitment, &VerifiedBundle)> {
        self.envelopes
            .iter()
            .filter_map(|o| o.outcome.as_ref().ok().map(|b| (&o.commitment, b)))
    }
}

/// Opens every envelope of a sealed batch in parallel (rayon).
///
/// First checks that the distinct commitments of `envelopes` are exactly the
/// set the key's seal signed (count and Merkle root). Then each envelope is
/// opened with the verdict [`ReleasedBatchKey::open`] gives it alone (runs of
/// envelopes share a field inversion and a combined signature check, which
/// changes no verdict); one bad envelope never affects another, except by
/// these two deterministic batch rules:
/// - an envelope whose bytes repeat an earlier one (same commitment; ties in
///   input order) is [`Rejection::DuplicateEnvelope`];
/// - if two or more *distinct* envelopes verify with the same
///   `(account, nonce)`, **all** of them are [`Rejection::DuplicateNonce`].
///
/// The result does not depend on the order of `envelopes` (beyond
/// `input_index`) nor on the thread count.
///
/// # Errors
/// [`OpenError::TooManyEnvelopes`] or [`OpenError::SealMismatch`]; both mean
/// the caller passed the wrong set, so nothing is opened.
pub fn open_batch<E: AsRef<[u8]> + Sync>(
    key: &ReleasedBatchKey,
    envelopes: &[E],
) -> Result<OpenedBatch, OpenError> {
    if envelopes.len() > ENVELOPES_PER_BATCH_MAX {
        return Err(OpenError::TooManyEnvelopes(envelopes.len()));
    }
    let sorted: Vec<(Commitment, usize)> = envelopes
        .par_iter()
        .enumerate()
        .map(|(i, env)| (Commitment::of(env.as_ref()), i))
        .collect();
    let e = key.batch();
    open_sorted(key, envelopes, sorted, &|i| {
        check_header(envelopes[i].as_ref(), e)
    })
}

/// [`open_batch`] for envelopes the sequencer shape-checked on arrival: the
/// same checks and outcomes, without computing their commitments and
/// decoding their ephemeral points again.
///
/// # Errors
/// As [`open_batch`].
pub fn open_shaped_batch(
    key: &ReleasedBatchKey,
    envelopes: &[ShapedEnvelope],
) -> Result<OpenedBatch, OpenError> {
    if envelopes.len() > ENVELOPES_PER_BATCH_MAX {
        return Err(OpenError::TooManyEnvelopes(envelopes.len()));
    }
    let sorted: Vec<(Commitment, usize)> = envelopes
        .iter()
        .enumerate()
        .map(|(i, env)| (env.commitment, i))
        .collect();
    let e = key.batch();
    open_sorted(key, envelopes, sorted, &|i| {
        let env = &envelopes[i];
        match env.ephemeral {
            Some(point) if env.e == e => Ok(point),
            Some(_) => Err(Rejection::WrongBatch {
                envelope: env.e,
                expected: e,
            }),
            None => check_header(&env.bytes, e),
        }
    })
}

/// The body of [`open_batch`], given each envelope's commitment (`sorted`,
/// by input position) and its header check (`header`, by input position).
fn open_sorted<E: AsRef<[u8]> + Sync>(
    key: &ReleasedBatchKey,
    envelopes: &[E],
    mut sorted: Vec<(Commitment, usize)>,
    header: &(dyn Fn(usize) -> Result<RistrettoPoint, Rejection> + Sync),
) -> Result<OpenedBatch, OpenError> {
    sorted.par_sort_unstable();
    let mut distinct: Vec<Commitment> = sorted.iter().map(|(c, _)| *c).collect();
    distinct.dedup();
    let seal = *key.seal();
    if distinct.len() != seal.count as usize || merkle_root(&distinct)? != seal.root {
        return Err(OpenError::SealMismatch {
            e: seal.e,
            actual_count: distinct.len(),
            sealed_count: seal.count,
        });
    }
    drop(distinct);

    // Decrypt in runs, decode each distinct account key once, then check the
    // signatures run by run.
    let half = Zeroizing::new(key.scalar() * Scalar::from(2u8).invert());
    let runs = |run: usize| {
        let start = run * OPEN_RUN_LEN;
        start..(start + OPEN_RUN_LEN).min(sorted.len())
    };
    let decrypted: Vec<Vec<Result<Decrypted, Rejection>>> =
        (0..sorted.len().div_ceil(OPEN_RUN_LEN))
            .into_par_iter()
            .map(|run| key.decrypt_run(&half, envelopes, &sorted, runs(run), header))
            .collect();
    let accounts: BTreeSet<[u8; 32]> = decrypted
        .iter()
        .flatten()
        .filter_map(|d| d.as_ref().ok().map(|d| d.bundle.account.0))
        .collect();
    let keys: BTreeMap<[u8; 32], Option<VerifyingKey>> = accounts
        .into_par_iter()
        .map(|account| (account, decode_ed25519_public(&account).ok()))
        .collect();
    let verified = verify_decrypted(decrypted.into_iter().flatten().collect(), &keys);
    let mut opened: Vec<OpenedEnvelope> = sorted
        .iter()
        .zip(verified)
        .map(|(&(commitment, input_index), outcome)| OpenedEnvelope {
            commitment,
            input_index,
            outcome,
        })
        .collect();

    let mut by_nonce: BTreeMap<(AccountId, u64), usize> = BTreeMap::new();
    for o in &opened {
        if let Ok(b) = &o.outcome {
            *by_nonce.entry((b.account, b.nonce)).or_insert(0) += 1;
        }
    }
    for o in &mut opened {
        if let Ok(b) = &o.outcome
            && by_nonce.get(&(b.account, b.nonce)).copied().unwrap_or(0) > 1
        {
            o.outcome = Err(Rejection::DuplicateNonce);
        }
    }
    Ok(OpenedBatch {
        e: seal.e,
        root: seal.root,
        envelopes: opened,
    })
}

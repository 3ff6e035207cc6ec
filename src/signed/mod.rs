//! Signed requests: what an operator or a trader signs to move money in and
//! out of the venue and to read a balance (`spec/ledger.md` "Deposits and
//! withdrawals", `spec/wire.md` §4).
//!
//! Every statement is signed with Ed25519 over
//! `u8(len) ‖ domain ‖ sequencer key (32) ‖ fields`, so a signature is for
//! one kind of request and one deployment, and is verified strictly
//! (canonical, non-weak keys; `verify_strict`).
//!
//! - [`deposit`]: money arriving, signed by an operator, idempotent by its
//!   external reference.
//! - [`withdrawal`]: money leaving, signed by the account, ordered by the
//!   account's sequence number so that a captured request cannot be replayed.
//! - [`payout`]: the operator's acknowledgement that a withdrawal was paid
//!   out, idempotent by withdrawal.
//! - [`query`]: a balance or payout query, signed and bound to the QUIC
//!   connection it is asked on.
//!
//! Pure: statements, signing messages and checks. Which operator keys the
//! deployment trusts is the node's configuration; what a request does to
//! the ledger is the sequencer's.

pub mod deposit;
pub mod payout;
pub mod query;
pub mod withdrawal;

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::codec::{DecodeError, Reader};
use crate::envelope::SequencerPublicKey;
use crate::envelope::receipt::decode_ed25519_public;

pub use deposit::{DOMAIN_OPERATOR_DEPOSIT, DepositStatement, SignedDeposit};
pub use payout::{DOMAIN_PAYOUT, PayoutStatement, SignedPayout};
pub use query::{CHANNEL_BINDING_LABEL, ChannelBinding, DOMAIN_QUERY, Query, SignedQuery};
pub use withdrawal::{
    DESTINATION_LEN_MAX, DOMAIN_WITHDRAWAL, SignedWithdrawal, Withdrawal, WithdrawalStatement,
};

/// Longest external reference (of a deposit or a payout), in bytes.
pub const REFERENCE_LEN_MAX: usize = 64;

/// Why a signed request is refused before it touches the ledger.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    /// A variable-length field (a reference, a destination) is empty or
    /// longer than its bound.
    #[error("{field} is 1 to {max} bytes, got {len}")]
    Length {
        /// The field.
        field: &'static str,
        /// Its bound.
        max: usize,
        /// Its length.
        len: usize,
    },
    /// The signing key does not decode as a strict Ed25519 key.
    #[error("the signing key is not a valid Ed25519 public key")]
    BadKey,
    /// The signature does not verify (strictly) under the signing key.
    #[error("the signature does not verify")]
    BadSignature,
}

/// A statement an operator or a trader signs: a deposit, a withdrawal, a
/// payout acknowledgement.
pub trait Statement: Clone {
    /// The bytes signed: `DOM(domain) ‖ sequencer key (32) ‖ fields`.
    fn signing_message(&self, sequencer: &SequencerPublicKey) -> Vec<u8>;

    /// Checks the variable-length fields' lengths.
    ///
    /// # Errors
    ///
    /// [`SignedError::Length`].
    fn check(&self) -> Result<(), SignedError>;

    /// The Ed25519 public key that must sign it.
    fn signer(&self) -> [u8; 32];

    /// Makes `key` the key that must sign it.
    fn set_signer(&mut self, key: [u8; 32]);

    /// Checks the fields and signs with `key` (whose public half becomes
    /// the signer), for the deployment of `sequencer`.
    ///
    /// # Errors
    ///
    /// [`SignedError::Length`].
    fn sign(
        mut self,
        key: &SigningKey,
        sequencer: &SequencerPublicKey,
    ) -> Result<Signed<Self>, SignedError> {
        self.check()?;
        self.set_signer(key.verifying_key().to_bytes());
        let signature = key.sign(&self.signing_message(sequencer)).to_bytes();
        Ok(Signed {
            statement: self,
            signature,
        })
    }
}

/// A [`Statement`] with its signer's signature over its signing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<S> {
    /// What is stated.
    pub statement: S,
    /// The signer's Ed25519 signature.
    pub signature: [u8; 64],
}

impl<S: Statement> Signed<S> {
    /// Checks the fields and the signature (strict Ed25519) under the
    /// statement's signer, for the deployment of `sequencer`.
    ///
    /// # Errors
    ///
    /// [`SignedError`].
    pub fn verify(&self, sequencer: &SequencerPublicKey) -> Result<(), SignedError> {
        self.statement.check()?;
        verify(
            &self.statement.signer(),
            &self.statement.signing_message(sequencer),
            &self.signature,
        )
    }
}

/// The start of every signing message: the length-prefixed domain string,
/// then the deployment's sequencer key.
fn signing_prefix(domain: &str, sequencer: &SequencerPublicKey, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + domain.len() + 32 + capacity);
    // Every domain string is a short constant of this module.
    out.push(domain.len().min(usize::from(u8::MAX)) as u8);
    out.extend_from_slice(domain.as_bytes());
    out.extend_from_slice(&sequencer.to_bytes());
    out
}

/// Appends `u8(len) ‖ bytes`, cut at [`REFERENCE_LEN_MAX`] (longer fields
/// are refused by [`check_length`] before anything is signed or verified).
pub(crate) fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(REFERENCE_LEN_MAX)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Reads `u8(len) ‖ bytes` with `len` in `1..=max`.
pub(crate) fn read_short(
    r: &mut Reader<'_>,
    field: &'static str,
    max: usize,
) -> Result<Vec<u8>, DecodeError> {
    let offset = r.offset();
    let len = usize::from(r.u8(field)?);
    if !(1..=max).contains(&len) {
        return Err(r.invalid(field, offset));
    }
    Ok(r.bytes(len, field)?.to_vec())
}

/// Checks that `bytes` is 1 to `max` bytes long.
fn check_length(field: &'static str, bytes: &[u8], max: usize) -> Result<(), SignedError> {
    if (1..=max).contains(&bytes.len()) {
        Ok(())
    } else {
        Err(SignedError::Length {
            field,
            max,
            len: bytes.len(),
        })
    }
}

/// Strict Ed25519 verification of `signature` over `message` under `key`.
fn verify(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), SignedError> {
    decode_ed25519_public(key)
        .map_err(|_| SignedError::BadKey)?
        .verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| SignedError::BadSignature)
}

const _: () =
    assert!(REFERENCE_LEN_MAX <= u8::MAX as usize && DESTINATION_LEN_MAX <= REFERENCE_LEN_MAX);

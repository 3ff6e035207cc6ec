//! Operator deposits: money arriving at the venue (on a chain, by bank
//! transfer), credited by a request the operator signs with a key the
//! sequencer's configuration lists, and made idempotent by the transfer's
//! external reference (`spec/ledger.md` "Deposits and withdrawals",
//! `spec/wire.md` `OperatorDeposit`).
//!
//! Pure: the statement, its signing message and the strict signature check.
//! Which operator keys may deposit is the node's configuration.

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::envelope::SequencerPublicKey;
use crate::envelope::receipt::decode_ed25519_public;
use crate::market::{AccountId, AssetId};

/// Longest external reference, in bytes.
pub const REFERENCE_LEN_MAX: usize = 64;

/// Domain string of an operator deposit's signing message.
pub const DOMAIN_OPERATOR_DEPOSIT: &str = "sealbatch v1 operator deposit";

/// What an operator deposit states: `amount` units of `asset` arrived for
/// `account`, known outside the venue by `reference`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DepositStatement {
    /// The operator's Ed25519 public key.
    pub operator: [u8; 32],
    /// The account credited.
    pub account: AccountId,
    /// The asset.
    pub asset: AssetId,
    /// Units of the asset.
    pub amount: u64,
    /// The external reference (a chain transaction id, a transfer id):
    /// 1 to [`REFERENCE_LEN_MAX`] bytes. A reference is credited once.
    pub reference: Vec<u8>,
}

/// A [`DepositStatement`] with the operator's signature over its
/// [`signing_message`](DepositStatement::signing_message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedDeposit {
    /// What is stated.
    pub statement: DepositStatement,
    /// The operator's Ed25519 signature.
    pub signature: [u8; 64],
}

/// Why an operator deposit is refused before it touches the ledger.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DepositError {
    /// The reference is empty or longer than [`REFERENCE_LEN_MAX`].
    #[error("a reference is 1 to {REFERENCE_LEN_MAX} bytes, got {0}")]
    BadReference(usize),
    /// The operator key does not decode as a strict Ed25519 key.
    #[error("the operator key is not a valid Ed25519 public key")]
    BadOperatorKey,
    /// The signature does not verify (strictly) under the operator key.
    #[error("the operator's signature does not verify")]
    BadSignature,
}

impl DepositStatement {
    /// The bytes the operator signs, bound to one deployment by its
    /// sequencer key:
    /// `DOM("sealbatch v1 operator deposit") ‖ sequencer (32) ‖ operator (32)
    /// ‖ account (32) ‖ u32le(asset) ‖ u64le(amount) ‖ u8(len) ‖ reference`.
    #[must_use]
    pub fn signing_message(&self, sequencer: &SequencerPublicKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 109 + self.reference.len());
        out.push(DOMAIN_OPERATOR_DEPOSIT.len() as u8);
        out.extend_from_slice(DOMAIN_OPERATOR_DEPOSIT.as_bytes());
        out.extend_from_slice(&sequencer.to_bytes());
        out.extend_from_slice(&self.operator);
        out.extend_from_slice(&self.account.0);
        out.extend_from_slice(&self.asset.0.to_le_bytes());
        out.extend_from_slice(&self.amount.to_le_bytes());
        // At most REFERENCE_LEN_MAX bytes once checked; a longer one is
        // refused before anything is signed or verified.
        out.push(self.reference.len().min(usize::from(u8::MAX)) as u8);
        out.extend_from_slice(&self.reference);
        out
    }

    /// Checks the reference's length.
    ///
    /// # Errors
    ///
    /// [`DepositError::BadReference`].
    pub fn check(&self) -> Result<(), DepositError> {
        if (1..=REFERENCE_LEN_MAX).contains(&self.reference.len()) {
            Ok(())
        } else {
            Err(DepositError::BadReference(self.reference.len()))
        }
    }

    /// Signs the statement with the operator's key (whose public half
    /// replaces `operator`).
    ///
    /// # Errors
    ///
    /// [`DepositError::BadReference`].
    pub fn sign(
        mut self,
        key: &SigningKey,
        sequencer: &SequencerPublicKey,
    ) -> Result<SignedDeposit, DepositError> {
        self.check()?;
        self.operator = key.verifying_key().to_bytes();
        let signature = key.sign(&self.signing_message(sequencer)).to_bytes();
        Ok(SignedDeposit {
            statement: self,
            signature,
        })
    }
}

impl SignedDeposit {
    /// Checks the reference and the signature (strict Ed25519) under the
    /// statement's operator key, for the deployment of `sequencer`.
    ///
    /// # Errors
    ///
    /// [`DepositError`].
    pub fn verify(&self, sequencer: &SequencerPublicKey) -> Result<(), DepositError> {
        self.statement.check()?;
        let operator = decode_ed25519_public(&self.statement.operator)
            .map_err(|_| DepositError::BadOperatorKey)?;
        operator
            .verify_strict(
                &self.statement.signing_message(sequencer),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| DepositError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::envelope::SequencerKey;

    fn statement() -> DepositStatement {
        DepositStatement {
            operator: [0; 32],
            account: AccountId([3; 32]),
            asset: AssetId(1),
            amount: 5_000,
            reference: b"tx:0xabc".to_vec(),
        }
    }

    #[test]
    fn signed_deposits_verify_only_as_signed_and_for_their_deployment() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let operator = crate::envelope::generate_account_key(&mut rng);
        let sequencer = SequencerKey::generate(&mut rng).public_key();
        let signed = statement().sign(&operator, &sequencer).expect("signs");
        assert_eq!(signed.verify(&sequencer), Ok(()));
        let other = SequencerKey::generate(&mut rng).public_key();
        assert_eq!(signed.verify(&other), Err(DepositError::BadSignature));
        let mut more = signed.clone();
        more.statement.amount += 1;
        assert_eq!(more.verify(&sequencer), Err(DepositError::BadSignature));
        let mut elsewhere = signed.clone();
        elsewhere.statement.reference = b"tx:0xabd".to_vec();
        assert_eq!(
            elsewhere.verify(&sequencer),
            Err(DepositError::BadSignature)
        );
        let mut long = signed;
        long.statement.reference = vec![1; REFERENCE_LEN_MAX + 1];
        assert_eq!(
            long.verify(&sequencer),
            Err(DepositError::BadReference(REFERENCE_LEN_MAX + 1))
        );
        let empty = DepositStatement {
            reference: Vec::new(),
            ..statement()
        };
        assert_eq!(
            empty.sign(&operator, &sequencer),
            Err(DepositError::BadReference(0))
        );
    }
}

//! Operator deposits: money arriving at the venue (on a chain, by bank
//! transfer), credited by a request the operator signs with a key the
//! sequencer's configuration lists, and made idempotent by the transfer's
//! external reference.

use crate::envelope::SequencerPublicKey;
use crate::market::{AccountId, AssetId};

use super::{
    REFERENCE_LEN_MAX, Signed, SignedError, Statement, check_length, put_short, signing_prefix,
};

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

/// A [`DepositStatement`] with the operator's signature.
pub type SignedDeposit = Signed<DepositStatement>;

impl Statement for DepositStatement {
    /// The bytes the operator signs, bound to one deployment by its
    /// sequencer key:
    /// `DOM("sealbatch v1 operator deposit") ‖ sequencer (32) ‖ operator (32)
    /// ‖ account (32) ‖ u32le(asset) ‖ u64le(amount) ‖ u8(len) ‖ reference`.
    fn signing_message(&self, sequencer: &SequencerPublicKey) -> Vec<u8> {
        let mut out = signing_prefix(DOMAIN_OPERATOR_DEPOSIT, sequencer, 109 + REFERENCE_LEN_MAX);
        out.extend_from_slice(&self.operator);
        out.extend_from_slice(&self.account.0);
        out.extend_from_slice(&self.asset.0.to_le_bytes());
        out.extend_from_slice(&self.amount.to_le_bytes());
        put_short(&mut out, &self.reference);
        out
    }

    /// Checks the reference's length.
    ///
    /// # Errors
    ///
    /// [`SignedError::Length`].
    fn check(&self) -> Result<(), SignedError> {
        check_length("a reference", &self.reference, REFERENCE_LEN_MAX)
    }

    fn signer(&self) -> [u8; 32] {
        self.operator
    }

    fn set_signer(&mut self, key: [u8; 32]) {
        self.operator = key;
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
        assert_eq!(signed.verify(&other), Err(SignedError::BadSignature));
        let mut more = signed.clone();
        more.statement.amount += 1;
        assert_eq!(more.verify(&sequencer), Err(SignedError::BadSignature));
        let mut elsewhere = signed.clone();
        elsewhere.statement.reference = b"tx:0xabd".to_vec();
        assert_eq!(elsewhere.verify(&sequencer), Err(SignedError::BadSignature));
        let mut forged = signed.clone();
        forged.statement.operator = [0; 32];
        assert_eq!(forged.verify(&sequencer), Err(SignedError::BadKey));
        let mut long = signed;
        long.statement.reference = vec![1; REFERENCE_LEN_MAX + 1];
        assert!(matches!(
            long.verify(&sequencer),
            Err(SignedError::Length { len: 65, .. })
        ));
        let empty = DepositStatement {
            reference: Vec::new(),
            ..statement()
        };
        assert!(matches!(
            empty.sign(&operator, &sequencer),
            Err(SignedError::Length { len: 0, .. })
        ));
    }
}

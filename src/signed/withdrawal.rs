//! Trader withdrawals: money leaving the venue, requested by the account
//! itself. Each account numbers its withdrawals 1, 2, 3, …: the sequencer
//! takes only the account's next number, so a captured request can never
//! debit twice, and a withdrawal taken is kept as a durable [`Withdrawal`]
//! record, numbered by the sequencer, until the operator acknowledges its
//! payout.

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::SequencerPublicKey;
use crate::market::{AccountId, AssetId};

use super::{Signed, SignedError, Statement, check_length, put_short, read_short, signing_prefix};

/// Domain string of a withdrawal's signing message.
pub const DOMAIN_WITHDRAWAL: &str = "sealbatch v1 withdrawal";

/// Longest payout destination (a chain address, an account number), in
/// bytes.
pub const DESTINATION_LEN_MAX: usize = 64;

/// What a withdrawal states: debit `amount` units of `asset` from
/// `account` and pay them out to `destination`; the account's `sequence`-th
/// withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WithdrawalStatement {
    /// The account debited: its Ed25519 public key signs.
    pub account: AccountId,
    /// The asset.
    pub asset: AssetId,
    /// Units of the asset (at least 1).
    pub amount: u64,
    /// The account's withdrawal number: 1 for its first, then one more than
    /// the last the sequencer took.
    pub sequence: u64,
    /// Where the operator pays the money out, 1 to
    /// [`DESTINATION_LEN_MAX`] bytes; the sequencer does not interpret it.
    pub destination: Vec<u8>,
}

/// A [`WithdrawalStatement`] with the account's signature.
pub type SignedWithdrawal = Signed<WithdrawalStatement>;

/// A withdrawal the sequencer took: the durable record the operator's
/// payout process reads, with the id its acknowledgement names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    /// The sequencer's number for it: 1 for the deployment's first, then
    /// one more each time.
    pub id: u64,
    /// The trader's request, signature included, so that the payout
    /// process can check that the account asked for it.
    pub signed: SignedWithdrawal,
}

impl Statement for WithdrawalStatement {
    /// The bytes the account signs, bound to one deployment by its sequencer
    /// key: `DOM("sealbatch v1 withdrawal") ‖ sequencer (32) ‖ account (32)
    /// ‖ u32le(asset) ‖ u64le(amount) ‖ u64le(sequence) ‖ u8(len) ‖
    /// destination`.
    fn signing_message(&self, sequencer: &SequencerPublicKey) -> Vec<u8> {
        let mut out = signing_prefix(DOMAIN_WITHDRAWAL, sequencer, 53 + DESTINATION_LEN_MAX);
        out.extend_from_slice(&self.account.0);
        out.extend_from_slice(&self.asset.0.to_le_bytes());
        out.extend_from_slice(&self.amount.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        put_short(&mut out, &self.destination);
        out
    }

    /// Checks the destination's length.
    ///
    /// # Errors
    ///
    /// [`SignedError::Length`].
    fn check(&self) -> Result<(), SignedError> {
        check_length("a destination", &self.destination, DESTINATION_LEN_MAX)
    }

    fn signer(&self) -> [u8; 32] {
        self.account.0
    }

    fn set_signer(&mut self, key: [u8; 32]) {
        self.account = AccountId(key);
    }
}

impl SignedWithdrawal {
    /// Longest encoding, in bytes.
    pub const ENCODED_LEN_MAX: usize = 32 + 4 + 8 + 8 + 1 + DESTINATION_LEN_MAX + 64;
}

impl Decode for SignedWithdrawal {
    /// Decodes [`encode_into`](Self::encode_into) (a destination of 1 to
    /// [`DESTINATION_LEN_MAX`] bytes); the signature is not checked.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<SignedWithdrawal, DecodeError> {
        Ok(SignedWithdrawal {
            statement: WithdrawalStatement {
                account: AccountId(r.array("account")?),
                asset: AssetId(r.u32("asset")?),
                amount: r.u64("amount")?,
                sequence: r.u64("sequence")?,
                destination: read_short(r, "destination", DESTINATION_LEN_MAX)?,
            },
            signature: r.array("signature")?,
        })
    }
}

impl Encode for SignedWithdrawal {
    /// Appends the encoding, the same on the wire and in the journal:
    /// `account (32) ‖ u32le(asset) ‖ u64le(amount) ‖ u64le(sequence) ‖
    /// u8(len) ‖ destination ‖ signature (64)`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let s = &self.statement;
        out.extend_from_slice(&s.account.0);
        out.put_u32(s.asset.0);
        out.put_u64(s.amount);
        out.put_u64(s.sequence);
        put_short(out, &s.destination);
        out.extend_from_slice(&self.signature);
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::envelope::SequencerKey;

    #[test]
    fn withdrawals_verify_only_as_signed_by_their_account_for_their_deployment() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let trader = crate::envelope::generate_account_key(&mut rng);
        let sequencer = SequencerKey::generate(&mut rng).public_key();
        let statement = WithdrawalStatement {
            account: AccountId([0; 32]),
            asset: AssetId(2),
            amount: 70,
            sequence: 1,
            destination: b"bc1qexample".to_vec(),
        };
        let signed = statement.clone().sign(&trader, &sequencer).expect("signs");
        assert_eq!(
            signed.statement.account.0,
            trader.verifying_key().to_bytes()
        );
        assert_eq!(signed.verify(&sequencer), Ok(()));
        let other = SequencerKey::generate(&mut rng).public_key();
        assert_eq!(signed.verify(&other), Err(SignedError::BadSignature));
        for tamper in [
            |s: &mut WithdrawalStatement| s.amount += 1,
            |s: &mut WithdrawalStatement| s.sequence += 1,
            |s: &mut WithdrawalStatement| s.asset = AssetId(3),
            |s: &mut WithdrawalStatement| s.destination.push(b'x'),
            |s: &mut WithdrawalStatement| s.account = AccountId([9; 32]),
        ] {
            let mut changed = signed.clone();
            tamper(&mut changed.statement);
            assert!(changed.verify(&sequencer).is_err(), "{changed:?}");
        }
        let empty = WithdrawalStatement {
            destination: Vec::new(),
            ..statement
        };
        assert!(matches!(
            empty.sign(&trader, &sequencer),
            Err(SignedError::Length { len: 0, .. })
        ));
    }
}

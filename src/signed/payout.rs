//! Payout acknowledgements: the operator's statement that a withdrawal was
//! paid out (on a chain, by bank transfer), naming it by its id and the
//! payout's external reference. A withdrawal is acknowledged once; the same
//! acknowledgement again is answered as the first, so the payout process
//! may repeat itself after a crash on either side.

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::SequencerPublicKey;

use super::{
    REFERENCE_LEN_MAX, Signed, SignedError, Statement, check_length, put_short, read_short,
    signing_prefix,
};

/// Domain string of a payout acknowledgement's signing message.
pub const DOMAIN_PAYOUT: &str = "sealbatch v1 payout";

/// What a payout acknowledgement states: withdrawal `withdrawal` was paid
/// out, known outside the venue by `reference`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PayoutStatement {
    /// The operator's Ed25519 public key.
    pub operator: [u8; 32],
    /// The withdrawal's id ([`Withdrawal::id`](super::Withdrawal::id)).
    pub withdrawal: u64,
    /// The payout's external reference (a chain transaction id, a transfer
    /// id), 1 to [`REFERENCE_LEN_MAX`] bytes.
    pub reference: Vec<u8>,
}

/// A [`PayoutStatement`] with the operator's signature.
pub type SignedPayout = Signed<PayoutStatement>;

impl Statement for PayoutStatement {
    /// The bytes the operator signs: `DOM("sealbatch v1 payout") ‖
    /// sequencer (32) ‖ operator (32) ‖ u64le(withdrawal) ‖ u8(len) ‖
    /// reference`.
    fn signing_message(&self, sequencer: &SequencerPublicKey) -> Vec<u8> {
        let mut out = signing_prefix(DOMAIN_PAYOUT, sequencer, 41 + REFERENCE_LEN_MAX);
        out.extend_from_slice(&self.operator);
        out.extend_from_slice(&self.withdrawal.to_le_bytes());
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

impl SignedPayout {
    /// Longest encoding, in bytes.
    pub const ENCODED_LEN_MAX: usize = 32 + 8 + 1 + REFERENCE_LEN_MAX + 64;
}

impl Decode for SignedPayout {
    /// Decodes [`encode_into`](Self::encode_into) (a reference of 1 to
    /// [`REFERENCE_LEN_MAX`] bytes); the signature is not checked.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<SignedPayout, DecodeError> {
        Ok(SignedPayout {
            statement: PayoutStatement {
                operator: r.array("operator")?,
                withdrawal: r.u64("withdrawal")?,
                reference: read_short(r, "reference", REFERENCE_LEN_MAX)?,
            },
            signature: r.array("signature")?,
        })
    }
}

impl Encode for SignedPayout {
    /// Appends the encoding, the same on the wire and in the journal:
    /// `operator (32) ‖ u64le(withdrawal) ‖ u8(len) ‖ reference ‖
    /// signature (64)`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let s = &self.statement;
        out.extend_from_slice(&s.operator);
        out.put_u64(s.withdrawal);
        put_short(out, &s.reference);
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
    fn payouts_verify_only_as_signed() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let operator = crate::envelope::generate_account_key(&mut rng);
        let sequencer = SequencerKey::generate(&mut rng).public_key();
        let signed = PayoutStatement {
            operator: [0; 32],
            withdrawal: 7,
            reference: b"tx:0xfeed".to_vec(),
        }
        .sign(&operator, &sequencer)
        .expect("signs");
        assert_eq!(signed.verify(&sequencer), Ok(()));
        let mut other = signed.clone();
        other.statement.withdrawal = 8;
        assert_eq!(other.verify(&sequencer), Err(SignedError::BadSignature));
        let elsewhere = SequencerKey::generate(&mut rng).public_key();
        assert_eq!(signed.verify(&elsewhere), Err(SignedError::BadSignature));
    }
}

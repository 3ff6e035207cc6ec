//! Signed queries: a balance is read only by its account (or an operator),
//! pending withdrawals only by an operator. A query is signed over the QUIC
//! connection's TLS exporter value ([`ChannelBinding`]), so a signature
//! seen once cannot be replayed on another connection.

use ed25519_dalek::{Signer, SigningKey};

use crate::envelope::SequencerPublicKey;
use crate::market::AccountId;

use super::{SignedError, signing_prefix, verify};

/// Domain string of a query's signing message.
pub const DOMAIN_QUERY: &str = "sealbatch v1 query";

/// The TLS exporter label of [`ChannelBinding`] (RFC 8446 §7.5, empty
/// context, 32 bytes).
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-sealbatch-channel-binding";

/// 32 bytes both ends of one QUIC connection derive from its TLS session
/// (`export_keying_material` with [`CHANNEL_BINDING_LABEL`]) and nobody
/// else knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelBinding(pub [u8; 32]);

/// What is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// An account's balances and withdrawal sequence: the account's or an
    /// operator's to ask.
    Account(AccountId),
    /// Withdrawals awaiting payout with an id above `after`: an operator's
    /// to ask.
    Payouts {
        /// Only withdrawals with a greater id.
        after: u64,
    },
}

/// A [`Query`] with the requester's key and signature over its
/// [`signing_message`](Query::signing_message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedQuery {
    /// What is asked.
    pub query: Query,
    /// The requester's Ed25519 public key (the account's or an operator's).
    pub requester: [u8; 32],
    /// The requester's Ed25519 signature.
    pub signature: [u8; 64],
}

impl Query {
    /// The bytes the requester signs: `DOM("sealbatch v1 query") ‖
    /// sequencer (32) ‖ channel binding (32) ‖ requester (32) ‖` then
    /// `u8(1) ‖ account (32)` for an account or `u8(2) ‖ u64le(after)` for
    /// payouts.
    #[must_use]
    pub fn signing_message(
        &self,
        sequencer: &SequencerPublicKey,
        channel: &ChannelBinding,
        requester: &[u8; 32],
    ) -> Vec<u8> {
        let mut out = signing_prefix(DOMAIN_QUERY, sequencer, 97);
        out.extend_from_slice(&channel.0);
        out.extend_from_slice(requester);
        match self {
            Query::Account(account) => {
                out.push(1);
                out.extend_from_slice(&account.0);
            }
            Query::Payouts { after } => {
                out.push(2);
                out.extend_from_slice(&after.to_le_bytes());
            }
        }
        out
    }

    /// Signs the query with `key` for the connection of `channel`.
    #[must_use]
    pub fn sign(
        self,
        key: &SigningKey,
        sequencer: &SequencerPublicKey,
        channel: &ChannelBinding,
    ) -> SignedQuery {
        let requester = key.verifying_key().to_bytes();
        let signature = key
            .sign(&self.signing_message(sequencer, channel, &requester))
            .to_bytes();
        SignedQuery {
            query: self,
            requester,
            signature,
        }
    }
}

impl SignedQuery {
    /// Checks the signature (strict Ed25519) under the requester's key, for
    /// the deployment of `sequencer` and the connection of `channel`. Who
    /// may ask is the caller's to check.
    ///
    /// # Errors
    ///
    /// [`SignedError::BadKey`] or [`SignedError::BadSignature`].
    pub fn verify(
        &self,
        sequencer: &SequencerPublicKey,
        channel: &ChannelBinding,
    ) -> Result<(), SignedError> {
        verify(
            &self.requester,
            &self
                .query
                .signing_message(sequencer, channel, &self.requester),
            &self.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::envelope::SequencerKey;

    #[test]
    fn queries_verify_only_on_their_connection() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let trader = crate::envelope::generate_account_key(&mut rng);
        let sequencer = SequencerKey::generate(&mut rng).public_key();
        let channel = ChannelBinding([1; 32]);
        let account = AccountId(trader.verifying_key().to_bytes());
        let signed = Query::Account(account).sign(&trader, &sequencer, &channel);
        assert_eq!(signed.verify(&sequencer, &channel), Ok(()));
        assert_eq!(
            signed.verify(&sequencer, &ChannelBinding([2; 32])),
            Err(SignedError::BadSignature)
        );
        let mut other = signed;
        other.query = Query::Account(AccountId([4; 32]));
        assert_eq!(
            other.verify(&sequencer, &channel),
            Err(SignedError::BadSignature)
        );
        let payouts = Query::Payouts { after: 3 }.sign(&trader, &sequencer, &channel);
        assert_eq!(payouts.verify(&sequencer, &channel), Ok(()));
        let mut later = payouts;
        later.query = Query::Payouts { after: 4 };
        assert_eq!(
            later.verify(&sequencer, &channel),
            Err(SignedError::BadSignature)
        );
    }
}

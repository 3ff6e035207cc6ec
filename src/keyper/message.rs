//! Keyper messages: what a keyper posts to the committee's log (a dealing,
//! an accusation, an apology, its approval of a window's keys), signed with
//! its Ed25519 key and bound to the committee and the generation, and their
//! canonical bytes (`spec/keyper.md` §11).

use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, Signer, SigningKey};

use super::committee::{COMMITTEE_MAX, Committee, WINDOW_BATCHES_MAX, Window};
use super::dealing::{BatchDeal, Dealing, SealedShares, TAG_LEN, decode_shares};
use super::proof::{PROOF_LEN, Proof};
use super::sharing::KeyperIndex;
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::receipt::decode_ed25519_public;
use crate::types::BatchId;

/// Domain string of a keyper message's signing message.
pub const DOMAIN_KEYPER_MESSAGE: &str = "sealbatch v1 keyper message";

/// Longest encoded keyper message body, in bytes (a dealing of the largest
/// window for the largest committee fits).
pub const KEYPER_MESSAGE_LEN_MAX: usize = 8 << 20;

/// What a keyper posts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Its dealing for the window (the sender is the dealer).
    Dealing(Dealing),
    /// Its shares from `dealer` are bad (the sender is the accuser).
    Accusation {
        /// The dealer accused.
        dealer: KeyperIndex,
    },
    /// Its answer to `accuser`'s accusation: the accuser's shares in clear
    /// (the sender is the dealer).
    Apology {
        /// The keyper that accused the sender.
        accuser: KeyperIndex,
        /// The accuser's shares, one per batch of the window.
        shares: Vec<Scalar>,
    },
    /// Its approval of the window's result (`WindowResult::digest`): a
    /// certificate is `t` of these.
    Approval {
        /// The digest of the result it approves.
        digest: [u8; 32],
    },
}

/// A keyper's message for one generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyperMessage {
    /// The generation.
    pub window: Window,
    /// The keyper that sends it.
    pub sender: KeyperIndex,
    /// What it says.
    pub body: Body,
}

/// A [`KeyperMessage`] with its sender's signature over
/// `DOM("sealbatch v1 keyper message") ‖ committee id ‖ encoding`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedKeyperMessage {
    /// The message.
    pub message: KeyperMessage,
    /// The sender's Ed25519 signature.
    pub signature: [u8; 64],
}

/// Why a signed keyper message is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The bytes are not a keyper message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The sender is not a member.
    #[error("no member {0}")]
    UnknownSender(KeyperIndex),
    /// The signature does not verify under the sender's key.
    #[error("the signature of member {0} does not verify")]
    BadSignature(KeyperIndex),
    /// A dealing whose dealer is not its sender.
    #[error("member {sender} sent a dealing of dealer {dealer}")]
    NotTheDealer {
        /// The sender.
        sender: KeyperIndex,
        /// The dealing's dealer.
        dealer: KeyperIndex,
    },
}

mod tag {
    pub const DEALING: u8 = 1;
    pub const ACCUSATION: u8 = 2;
    pub const APOLOGY: u8 = 3;
    pub const APPROVAL: u8 = 4;
}

impl KeyperMessage {
    /// The bytes the sender signs: `u8(len) ‖ "sealbatch v1 keyper message"
    /// ‖ committee id (32) ‖ encoding`.
    #[must_use]
    pub fn signing_message(&self, committee: &Committee) -> Vec<u8> {
        let body = self.to_bytes();
        let mut out = Vec::with_capacity(1 + DOMAIN_KEYPER_MESSAGE.len() + 32 + body.len());
        out.put_u8(DOMAIN_KEYPER_MESSAGE.len() as u8);
        out.extend_from_slice(DOMAIN_KEYPER_MESSAGE.as_bytes());
        out.extend_from_slice(&committee.id());
        out.extend_from_slice(&body);
        out
    }

    /// Signs the message with the sender's key.
    #[must_use]
    pub fn sign(self, key: &SigningKey, committee: &Committee) -> SignedKeyperMessage {
        let signature = key.sign(&self.signing_message(committee)).to_bytes();
        SignedKeyperMessage {
            message: self,
            signature,
        }
    }
}

impl Decode for KeyperMessage {
    /// A whole keyper message is its container (a file, a frame, a blob): it
    /// takes the rest of `r`.
    fn decode_from(r: &mut Reader<'_>) -> Result<KeyperMessage, DecodeError> {
        let rest = r.bytes(r.remaining(), "keyper message")?;
        Self::from_bytes(rest)
    }

    /// Decodes [`encode_into`](Encode::encode_into): every count within its bound,
    /// every scalar canonical, nothing left over. Points and proofs are
    /// checked by the generation, not here.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn from_bytes(bytes: &[u8]) -> Result<KeyperMessage, DecodeError> {
        if bytes.len() > KEYPER_MESSAGE_LEN_MAX {
            return Err(DecodeError::TooLarge {
                field: "keyper message",
                offset: 0,
                value: bytes.len() as u64,
                max: KEYPER_MESSAGE_LEN_MAX as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let window = read_window(&mut r)?;
        let sender = r.u16("sender")?;
        let offset = r.offset();
        let body = match r.u8("tag")? {
            tag::DEALING => Body::Dealing(decode_dealing(&mut r, window, sender)?),
            tag::ACCUSATION => Body::Accusation {
                dealer: r.u16("dealer")?,
            },
            tag::APOLOGY => {
                let accuser = r.u16("accuser")?;
                let count = r.count("shares", WINDOW_BATCHES_MAX as usize)?;
                let offset = r.offset();
                let bytes = r.bytes(count * 32, "shares")?;
                let shares = decode_shares(bytes).ok_or_else(|| r.invalid("shares", offset))?;
                Body::Apology { accuser, shares }
            }
            tag::APPROVAL => Body::Approval {
                digest: r.array("digest")?,
            },
            _ => return Err(r.invalid("tag", offset)),
        };
        r.finish()?;
        Ok(KeyperMessage {
            window,
            sender,
            body,
        })
    }
}

impl Encode for KeyperMessage {
    /// The canonical encoding: `u64le(window id) ‖ u64le(first batch) ‖
    /// u32le(batches) ‖ u16le(sender) ‖ u8(tag) ‖ body` (`spec/keyper.md`
    /// §11).
    fn encode_into(&self, out: &mut Vec<u8>) {
        put_window(out, &self.window);
        out.put_u16(self.sender);
        match &self.body {
            Body::Dealing(d) => {
                out.put_u8(tag::DEALING);
                encode_dealing(d, out);
            }
            Body::Accusation { dealer } => {
                out.put_u8(tag::ACCUSATION);
                out.put_u16(*dealer);
            }
            Body::Apology { accuser, shares } => {
                out.put_u8(tag::APOLOGY);
                out.put_u16(*accuser);
                // At most WINDOW_BATCHES_MAX shares.
                out.put_u32(shares.len() as u32);
                for s in shares {
                    out.extend_from_slice(&s.to_bytes());
                }
            }
            Body::Approval { digest } => {
                out.put_u8(tag::APPROVAL);
                out.extend_from_slice(digest);
            }
        }
    }
}

impl SignedKeyperMessage {
    /// Checks that the sender is a member whose key signed it, for this
    /// committee, and that a dealing is the sender's own.
    ///
    /// # Errors
    ///
    /// [`MessageError`].
    pub fn verify(&self, committee: &Committee) -> Result<(), MessageError> {
        let sender = self.message.sender;
        let member = committee
            .member(sender)
            .ok_or(MessageError::UnknownSender(sender))?;
        let key = decode_ed25519_public(&member.signing_key)
            .map_err(|_| MessageError::BadSignature(sender))?;
        key.verify_strict(
            &self.message.signing_message(committee),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| MessageError::BadSignature(sender))?;
        if let Body::Dealing(d) = &self.message.body
            && d.dealer != sender
        {
            return Err(MessageError::NotTheDealer {
                sender,
                dealer: d.dealer,
            });
        }
        Ok(())
    }
}

impl Decode for SignedKeyperMessage {
    /// Decodes [`encode_into`](Encode::encode_into) from `r` (the signature is not
    /// checked: see [`verify`](Self::verify)).
    ///
    /// # Errors
    ///
    /// [`DecodeError`].
    fn decode_from(r: &mut Reader<'_>) -> Result<SignedKeyperMessage, DecodeError> {
        let body = r.blob("keyper message", KEYPER_MESSAGE_LEN_MAX)?;
        Ok(SignedKeyperMessage {
            message: KeyperMessage::from_bytes(body)?,
            signature: r.array("signature")?,
        })
    }
}

impl Encode for SignedKeyperMessage {
    /// `u32le(len) ‖ message encoding ‖ signature (64)`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let body = self.message.to_bytes();
        out.reserve(4 + body.len() + 64);
        out.put_blob(&body);
        out.extend_from_slice(&self.signature);
    }
}

pub(crate) fn put_window(out: &mut Vec<u8>, w: &Window) {
    out.put_u64(w.id);
    out.put_u64(w.first_batch.get());
    out.put_u32(w.batches);
}

pub(crate) fn read_window(r: &mut Reader<'_>) -> Result<Window, DecodeError> {
    let offset = r.offset();
    let window = Window {
        id: r.u64("window id")?,
        first_batch: BatchId(r.u64("first batch")?),
        batches: r.u32("batches")?,
    };
    window.check().map_err(|_| r.invalid("window", offset))?;
    Ok(window)
}

/// `u32le(W) ‖ W × (u16le(t) ‖ t × C (32) ‖ proof (64)) ‖ u16le(n) ‖ n × (R
/// (32) ‖ u32le(len) ‖ ciphertext)`.
fn encode_dealing(d: &Dealing, out: &mut Vec<u8>) {
    // Counts within the decoder's bounds for any dealing `deal` makes.
    out.put_u32(d.batches.len() as u32);
    for b in &d.batches {
        out.put_u16(b.commitments.len() as u16);
        for c in &b.commitments {
            out.extend_from_slice(c);
        }
        out.extend_from_slice(&b.proof.to_bytes());
    }
    out.put_u16(d.shares.len() as u16);
    for s in &d.shares {
        out.extend_from_slice(&s.ephemeral);
        out.put_blob(&s.ciphertext);
    }
}

fn decode_dealing(
    r: &mut Reader<'_>,
    window: Window,
    dealer: KeyperIndex,
) -> Result<Dealing, DecodeError> {
    let count = r.count("batches", WINDOW_BATCHES_MAX as usize)?;
    let mut batches = Vec::with_capacity(count.min(r.remaining() / (2 + PROOF_LEN)));
    for _ in 0..count {
        let offset = r.offset();
        let t = usize::from(r.u16("threshold")?);
        if t > COMMITTEE_MAX {
            return Err(r.invalid("threshold", offset));
        }
        let commitments = (0..t)
            .map(|_| r.array("commitment"))
            .collect::<Result<Vec<[u8; 32]>, _>>()?;
        let proof = Proof::from_bytes(&r.array("proof")?);
        batches.push(BatchDeal { commitments, proof });
    }
    let offset = r.offset();
    let n = usize::from(r.u16("keypers")?);
    if n > COMMITTEE_MAX {
        return Err(r.invalid("keypers", offset));
    }
    let mut shares = Vec::with_capacity(n);
    for _ in 0..n {
        let ephemeral = r.array("ephemeral")?;
        let ciphertext = r
            .blob("sealed shares", WINDOW_BATCHES_MAX as usize * 32 + TAG_LEN)?
            .to_vec();
        shares.push(SealedShares {
            ephemeral,
            ciphertext,
        });
    }
    Ok(Dealing {
        window,
        dealer,
        batches,
        shares,
    })
}

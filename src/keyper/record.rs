//! What a keyper must remember across restarts, as records of its own
//! journal (`spec/keyper.md` §13): each seal it released for — so a restart
//! never releases for a second root — and each dealing it made with the
//! polynomials behind it — so a restart posts the same dealing again, never
//! a second one, and can still answer an accusation. The journal holds
//! secrets: it is the keyper's alone (mode 0600), like its keys.

use curve25519_dalek::scalar::Scalar;

use super::committee::{COMMITTEE_MAX, WINDOW_BATCHES_MAX, Window};
use super::dealing::{DealerSecrets, Dealing};
use super::message::{Body, KeyperMessage};
use super::sharing::Polynomial;
use zeroize::Zeroizing;

use super::release::Evidence;
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::{SEAL_LEN, SignedSeal};
use crate::types::BatchId;

/// A keyper journal record.
#[derive(Debug)]
pub enum KeyperRecord {
    /// The keyper released its share for this seal (written and fsynced
    /// before the share leaves).
    Released(SignedSeal),
    /// The keyper dealt for a window: its dealing and the polynomials
    /// behind it (written and fsynced before the dealing is posted).
    Dealt {
        /// The dealing.
        dealing: Dealing,
        /// Its secrets.
        secrets: DealerSecrets,
    },
    /// The keyper forgot its releases below this batch (their windows
    /// expired, and it takes no window below it again), so a restart need
    /// not hold them either.
    Forgotten {
        /// Every batch below this is forgotten.
        below: crate::types::BatchId,
    },
    /// The committee (bound to one deployment) this journal belongs to:
    /// its first record. A keyper refuses to run on a journal of another
    /// committee or deployment, so nothing it dealt or released for one
    /// deployment is ever used in another.
    Committee {
        /// The committee's id.
        id: [u8; 32],
    },
    /// Two seals the sequencer signed for one batch (`first` released
    /// for): durable evidence of equivocation.
    Evidence(Evidence),
}

mod tag {
    pub const RELEASED: u8 = 1;
    pub const DEALT: u8 = 2;
    pub const FORGOTTEN: u8 = 3;
    pub const COMMITTEE: u8 = 4;
    pub const EVIDENCE: u8 = 5;
}

impl KeyperRecord {
    /// `u8(1) ‖ seal (108)`, `u8(2) ‖ u32le(len) ‖ the dealing as a
    /// keyper message ‖ u32le(W) ‖ u16le(t) ‖ W × t coefficients (32)`,
    /// `u8(3) ‖ u64le(below)`, `u8(4) ‖ committee id (32)` or `u8(5) ‖
    /// seal (108) ‖ seal (108)`. Zeroized on drop (a dealing's record holds
    /// its polynomials).
    #[must_use]
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        match self {
            KeyperRecord::Released(seal) => {
                out.put_u8(tag::RELEASED);
                out.extend_from_slice(&seal.to_bytes());
            }
            KeyperRecord::Dealt { dealing, secrets } => {
                out.put_u8(tag::DEALT);
                let message = KeyperMessage {
                    window: dealing.window,
                    sender: dealing.dealer,
                    body: Body::Dealing(dealing.clone()),
                };
                out.put_blob(&message.to_bytes());
                let polynomials = secrets.polynomials();
                let t = polynomials.first().map_or(0, |p| p.coefficients().len());
                // Bounded by WINDOW_BATCHES_MAX and COMMITTEE_MAX.
                out.put_u32(polynomials.len() as u32);
                out.put_u16(t as u16);
                for p in polynomials {
                    for c in p.coefficients() {
                        out.extend_from_slice(&c.to_bytes());
                    }
                }
            }
            KeyperRecord::Forgotten { below } => {
                out.put_u8(tag::FORGOTTEN);
                out.put_u64(below.get());
            }
            KeyperRecord::Committee { id } => {
                out.put_u8(tag::COMMITTEE);
                out.extend_from_slice(id);
            }
            KeyperRecord::Evidence(evidence) => {
                out.put_u8(tag::EVIDENCE);
                out.extend_from_slice(&evidence.first.to_bytes());
                out.extend_from_slice(&evidence.second.to_bytes());
            }
        }
        out
    }

    /// Decodes [`encode`](Self::encode).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<KeyperRecord, DecodeError> {
        let mut r = Reader::new(bytes);
        let offset = r.offset();
        let record = match r.u8("tag")? {
            tag::RELEASED => {
                let at = r.offset();
                let seal = SignedSeal::from_bytes(r.bytes(SEAL_LEN, "seal")?)
                    .map_err(|_| r.invalid("seal", at))?;
                KeyperRecord::Released(seal)
            }
            tag::DEALT => {
                let at = r.offset();
                let message = KeyperMessage::from_bytes(
                    r.blob("dealing", super::message::KEYPER_MESSAGE_LEN_MAX)?,
                )?;
                let Body::Dealing(dealing) = message.body else {
                    return Err(r.invalid("dealing", at));
                };
                let at = r.offset();
                let w = r.count("polynomials", WINDOW_BATCHES_MAX as usize)?;
                let t = usize::from(r.u16("threshold")?);
                if t == 0 || t > COMMITTEE_MAX || w != dealing.batches.len() {
                    return Err(r.invalid("polynomials", at));
                }
                let mut polynomials = Vec::with_capacity(w);
                for _ in 0..w {
                    let mut coefficients = Vec::with_capacity(t);
                    for _ in 0..t {
                        let at = r.offset();
                        let c = Option::<Scalar>::from(Scalar::from_canonical_bytes(
                            r.array("coefficient")?,
                        ))
                        .ok_or_else(|| r.invalid("coefficient", at))?;
                        coefficients.push(c);
                    }
                    polynomials.push(Polynomial::from_coefficients(coefficients));
                }
                KeyperRecord::Dealt {
                    dealing,
                    secrets: DealerSecrets::from_polynomials(polynomials),
                }
            }
            tag::FORGOTTEN => KeyperRecord::Forgotten {
                below: BatchId(r.u64("below")?),
            },
            tag::COMMITTEE => KeyperRecord::Committee {
                id: r.array("committee id")?,
            },
            tag::EVIDENCE => {
                let mut seals = [None, None];
                for seal in &mut seals {
                    let at = r.offset();
                    *seal = Some(
                        SignedSeal::from_bytes(r.bytes(SEAL_LEN, "seal")?)
                            .map_err(|_| r.invalid("seal", at))?,
                    );
                }
                let [Some(first), Some(second)] = seals else {
                    return Err(r.invalid("seal", offset));
                };
                KeyperRecord::Evidence(Evidence { first, second })
            }
            _ => return Err(r.invalid("tag", offset)),
        };
        r.finish()?;
        Ok(record)
    }

    /// The window a dealing record is for.
    #[must_use]
    pub fn window(&self) -> Option<Window> {
        match self {
            KeyperRecord::Dealt { dealing, .. } => Some(dealing.window),
            KeyperRecord::Released(_)
            | KeyperRecord::Forgotten { .. }
            | KeyperRecord::Committee { .. }
            | KeyperRecord::Evidence(_) => None,
        }
    }
}

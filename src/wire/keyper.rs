//! The keyper link (`spec/keyper.md` §17): what a keyper and the sequencer
//! send each other on the one bidirectional stream a keyper opens, on a
//! QUIC connection with ALPN [`KEYPER_ALPN`]. Frames as for clients
//! (`u32le(len) ‖ type ‖ fields`), up to [`KEYPER_FRAME_LEN_MAX`] bytes (a
//! dealing is large).

use crate::codec::{Decode, Encode, Reader, Writer};
use crate::commit::CommitCertificate;
use crate::envelope::{SEAL_LEN, SignedSeal};
use crate::keyper::message::KEYPER_MESSAGE_LEN_MAX;
use crate::keyper::{Committee, LogEntry, SignedKeyperMessage};
use crate::signed::ChannelBinding;
use crate::types::BatchId;

use super::frame::{Direction, EncodeError, FrameError, Message};

/// The QUIC ALPN of the keyper link.
pub const KEYPER_ALPN: &[u8] = b"sealbatch-keyper/5";

/// Most bytes after the length prefix of one keyper-link frame: a keyper
/// message of [`KEYPER_MESSAGE_LEN_MAX`] and its framing.
pub const KEYPER_FRAME_LEN_MAX: usize = KEYPER_MESSAGE_LEN_MAX + 1024;

/// Domain of the keyper's hello signature.
pub const DOMAIN_KEYPER_HELLO: &str = "sealbatch v1 keyper hello";

mod up_type {
    pub const HELLO: u8 = 0x01;
    pub const POST: u8 = 0x02;
    pub const SHARE: u8 = 0x03;
}

mod down_type {
    pub const WELCOME: u8 = 0x81;
    pub const ENTRY: u8 = 0x82;
    pub const SEAL: u8 = 0x83;
    pub const CERTIFIED: u8 = 0x84;
}

/// From a keyper to the sequencer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyperUp {
    /// The first frame: who the keyper is, proven for this connection, and
    /// the log position it reads from.
    Hello {
        /// Its Ed25519 signing key (a member's).
        keyper: [u8; 32],
        /// The first log position it wants.
        from: u64,
        /// Its signature of [`hello_signing_message`].
        signature: [u8; 64],
    },
    /// A message for the committee's log.
    Post(SignedKeyperMessage),
    /// Its share of batch `e`'s key, for the seal it was sent, with its
    /// signed attestation of that seal (`spec/keyper.md` §9).
    Share {
        /// The batch.
        e: BatchId,
        /// `s_{e,j}`, 32 bytes (checked by the sequencer against the
        /// public commitments).
        share: [u8; 32],
        /// The keyper's Ed25519 signature over the release message of the
        /// seal it released for.
        attestation: [u8; 64],
    },
}

/// From the sequencer to a keyper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyperDown {
    /// The hello is accepted: the keyper's index in the committee, and
    /// where the sequencer's durable log ends.
    Welcome {
        /// Its index.
        index: u16,
        /// The position after the last durable log entry: a keyper that
        /// asked from further on read entries no honest log has, and reads
        /// the log again from its start.
        log_end: u64,
    },
    /// A durable log entry at its position.
    Entry {
        /// The position.
        position: u64,
        /// The entry.
        entry: LogEntry,
    },
    /// A durable seal whose key the sequencer asks for, with its commit
    /// certificate when the sequencer is a replicated one
    /// (`spec/replication.md` §10).
    Seal {
        /// The seal.
        seal: SignedSeal,
        /// A majority of the replicas' signatures over it.
        certificate: Option<CommitCertificate>,
    },
    /// A replicated sequencer's certificate of the log entries sent since
    /// the last one (or the welcome): a majority of the replicas' signatures
    /// over their positions and hashes
    /// ([`committed_log_message`](crate::commit::committed_log_message)). A
    /// keyper of a replicated sequencer takes no entry before it; a single
    /// node sends none.
    Certified {
        /// The signatures.
        certificate: CommitCertificate,
    },
}

/// What a keyper signs in its hello: `u8(len) ‖ "sealbatch v1 keyper hello"
/// ‖ committee id (32) ‖ sequencer key (32) ‖ channel binding (32)`. Bound to
/// the connection, so a captured hello opens no other.
#[must_use]
pub fn hello_signing_message(
    committee: &Committee,
    sequencer: &[u8; 32],
    channel: &ChannelBinding,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + DOMAIN_KEYPER_HELLO.len() + 96);
    out.put_u8(DOMAIN_KEYPER_HELLO.len() as u8);
    out.extend_from_slice(DOMAIN_KEYPER_HELLO.as_bytes());
    out.extend_from_slice(&committee.id());
    out.extend_from_slice(sequencer);
    out.extend_from_slice(&channel.0);
    out
}

impl super::frame::sealed::Sealed for KeyperUp {}
impl super::frame::sealed::Sealed for KeyperDown {}

impl Message for KeyperUp {
    const DIRECTION: Direction = Direction::ClientToServer;
    const FRAME_LEN_MAX: usize = KEYPER_FRAME_LEN_MAX;

    fn is_known_type(type_byte: u8) -> bool {
        (up_type::HELLO..=up_type::SHARE).contains(&type_byte)
    }

    fn type_byte(&self) -> u8 {
        match self {
            KeyperUp::Hello { .. } => up_type::HELLO,
            KeyperUp::Post(_) => up_type::POST,
            KeyperUp::Share { .. } => up_type::SHARE,
        }
    }

    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            KeyperUp::Hello {
                keyper,
                from,
                signature,
            } => {
                out.extend_from_slice(keyper);
                out.put_u64(*from);
                out.extend_from_slice(signature);
            }
            KeyperUp::Post(message) => out.extend_from_slice(&message.to_bytes()),
            KeyperUp::Share {
                e,
                share,
                attestation,
            } => {
                out.put_u64(e.get());
                out.extend_from_slice(share);
                out.extend_from_slice(attestation);
            }
        }
        Ok(())
    }

    fn decode_fields(type_byte: u8, r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(match type_byte {
            up_type::HELLO => KeyperUp::Hello {
                keyper: r.array("keyper")?,
                from: r.u64("from")?,
                signature: r.array("signature")?,
            },
            up_type::POST => KeyperUp::Post(SignedKeyperMessage::decode_from(r)?),
            up_type::SHARE => KeyperUp::Share {
                e: BatchId(r.u64("batch")?),
                share: r.array("share")?,
                attestation: r.array("attestation")?,
            },
            _ => {
                return Err(FrameError::UnknownType {
                    type_byte,
                    direction: Self::DIRECTION,
                });
            }
        })
    }
}

impl Message for KeyperDown {
    const DIRECTION: Direction = Direction::ServerToClient;
    const FRAME_LEN_MAX: usize = KEYPER_FRAME_LEN_MAX;

    fn is_known_type(type_byte: u8) -> bool {
        (down_type::WELCOME..=down_type::CERTIFIED).contains(&type_byte)
    }

    fn type_byte(&self) -> u8 {
        match self {
            KeyperDown::Welcome { .. } => down_type::WELCOME,
            KeyperDown::Entry { .. } => down_type::ENTRY,
            KeyperDown::Seal { .. } => down_type::SEAL,
            KeyperDown::Certified { .. } => down_type::CERTIFIED,
        }
    }

    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            KeyperDown::Welcome { index, log_end } => {
                out.put_u16(*index);
                out.put_u64(*log_end);
            }
            KeyperDown::Entry { position, entry } => {
                out.put_u64(*position);
                out.extend_from_slice(&entry.to_bytes());
            }
            KeyperDown::Seal { seal, certificate } => {
                out.extend_from_slice(&seal.to_bytes());
                match certificate {
                    None => out.put_u8(0),
                    Some(certificate) => {
                        out.put_u8(1);
                        out.extend_from_slice(&certificate.to_bytes());
                    }
                }
            }
            KeyperDown::Certified { certificate } => {
                out.extend_from_slice(&certificate.to_bytes());
            }
        }
        Ok(())
    }

    fn decode_fields(type_byte: u8, r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(match type_byte {
            down_type::WELCOME => KeyperDown::Welcome {
                index: r.u16("index")?,
                log_end: r.u64("log end")?,
            },
            down_type::ENTRY => KeyperDown::Entry {
                position: r.u64("position")?,
                entry: LogEntry::decode_from(r)?,
            },
            down_type::SEAL => {
                let offset = r.offset();
                let bytes = r.bytes(SEAL_LEN, "seal")?;
                let seal = SignedSeal::from_bytes(bytes).map_err(|_| r.invalid("seal", offset))?;
                let offset = r.offset();
                let certificate = match r.u8("certificate presence")? {
                    0 => None,
                    1 => {
                        let rest = r.remaining();
                        let bytes = r.bytes(rest, "certificate")?;
                        Some(
                            CommitCertificate::from_bytes(bytes)
                                .map_err(|_| r.invalid("certificate", offset))?,
                        )
                    }
                    _ => return Err(r.invalid("certificate presence", offset).into()),
                };
                KeyperDown::Seal { seal, certificate }
            }
            down_type::CERTIFIED => {
                let offset = r.offset();
                let rest = r.remaining();
                let bytes = r.bytes(rest, "certificate")?;
                KeyperDown::Certified {
                    certificate: CommitCertificate::from_bytes(bytes)
                        .map_err(|_| r.invalid("certificate", offset))?,
                }
            }
            _ => {
                return Err(FrameError::UnknownType {
                    type_byte,
                    direction: Self::DIRECTION,
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::CommitKey;
    use crate::envelope::MerkleRoot;
    use crate::wire::{FrameDecoder, encode};

    fn decode(bytes: &[u8]) -> Result<Option<KeyperDown>, FrameError> {
        let mut decoder = FrameDecoder::<KeyperDown>::new();
        decoder.extend(bytes);
        decoder.next_message()
    }

    #[test]
    fn a_seal_travels_with_or_without_its_certificate() {
        let seal = SignedSeal {
            e: BatchId(9),
            count: 2,
            root: MerkleRoot([5; 32]),
            signature: [7; 64],
        };
        let certificate =
            CommitCertificate::new((1..=2).map(|i| {
                CommitKey::from_seed(&[i; 32]).attest(&[1; 32], BatchId(9), 2, &seal.root)
            }));
        for certificate in [None, Some(certificate)] {
            let message = KeyperDown::Seal {
                seal,
                certificate: certificate.clone(),
            };
            let mut bytes = Vec::new();
            encode(&message, &mut bytes).expect("encodes");
            let expected = 4 + 1 + SEAL_LEN + 1 + certificate.map_or(0, |c| c.to_bytes().len());
            assert_eq!(bytes.len(), expected);
            assert_eq!(decode(&bytes).expect("decodes"), Some(message));
        }
        // A presence byte other than 0 or 1, a certificate cut short or
        // with trailing bytes: refused.
        let mut bytes = Vec::new();
        encode(
            &KeyperDown::Seal {
                seal,
                certificate: None,
            },
            &mut bytes,
        )
        .expect("encodes");
        let last = bytes.len() - 1;
        bytes[last] = 2;
        assert!(decode(&bytes).is_err());
        bytes[last] = 1;
        assert!(decode(&bytes).is_err());
        bytes.extend_from_slice(&[1; 96]);
        let len = u32::try_from(bytes.len() - 4).unwrap();
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn a_log_certificate_travels_alone_and_whole() {
        let entries = [(3u64, [4u8; 32]), (5, [6; 32])];
        let certificate = CommitCertificate::new(
            (1..=2)
                .map(|i| CommitKey::from_seed(&[i; 32]).attest_log(&[1; 32], &[2; 32], &entries)),
        );
        let message = KeyperDown::Certified {
            certificate: certificate.clone(),
        };
        let mut bytes = Vec::new();
        encode(&message, &mut bytes).expect("encodes");
        assert_eq!(bytes.len(), 4 + 1 + 1 + 2 * 96);
        assert_eq!(bytes[4], 0x84);
        assert_eq!(decode(&bytes).expect("decodes"), Some(message));
        // Cut short: refused.
        bytes.truncate(bytes.len() - 1);
        let len = u32::try_from(bytes.len() - 4).unwrap();
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        assert!(decode(&bytes).is_err());
    }
}

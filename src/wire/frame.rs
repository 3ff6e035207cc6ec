//! Framing: the length prefix, `check`, `parse`, `encode` and the streaming
//! [`FrameDecoder`].

use std::fmt;
use std::marker::PhantomData;

use crate::codec::{DecodeError, Reader, Writer};

use super::LEN_PREFIX_LEN;

/// Which way a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From a client (trader, operator) to the sequencer.
    ClientToServer,
    /// From the sequencer to a client.
    ServerToClient,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ClientToServer => "client to server",
            Direction::ServerToClient => "server to client",
        })
    }
}

/// Why bytes are not (yet) a frame.
///
/// Every variant but [`FrameError::Incomplete`] is a protocol error: the
/// stream cannot be resynchronised and the connection should be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer holds the start of a frame; at least `needed` more bytes
    /// must arrive before it can be checked further.
    #[error("incomplete frame: at least {needed} more bytes needed")]
    Incomplete {
        /// The least number of bytes still missing.
        needed: usize,
    },
    /// The length prefix is zero: a frame has at least its type byte.
    #[error("empty frame: length 0 leaves no type byte")]
    Empty,
    /// The length prefix is above the direction's maximum.
    #[error("frame length {len} is above the maximum {max} ({direction})")]
    Oversized {
        /// The length prefix found.
        len: u64,
        /// The maximum for this direction.
        max: usize,
        /// The direction being decoded.
        direction: Direction,
    },
    /// The type byte names no message of this direction.
    #[error("unknown message type 0x{type_byte:02x} ({direction})")]
    UnknownType {
        /// The type byte found.
        type_byte: u8,
        /// The direction being decoded.
        direction: Direction,
    },
    /// The fields of a whole frame do not decode (offsets count from the
    /// first byte of the length prefix).
    #[error("bad frame body: {0}")]
    Body(#[from] DecodeError),
}

/// Why a message cannot be encoded: a count or length above its bound (the
/// peer would refuse the frame), or the frame above its direction's maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A count or length is above its named maximum.
    #[error("{field} is {value}, above the maximum {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its count or length.
        value: usize,
        /// The bound from `spec/wire.md`.
        max: usize,
    },
    /// A field that must hold 1 or more bytes is empty.
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// The whole frame is above the direction's maximum.
    #[error("frame length {len} is above the maximum {max}")]
    FrameTooLarge {
        /// The length the frame would have (after its prefix).
        len: usize,
        /// The maximum for this direction.
        max: usize,
    },
}

pub(super) mod sealed {
    pub trait Sealed {}
    impl Sealed for super::super::ClientMessage {}
    impl Sealed for super::super::ServerMessage {}
}

/// One direction's set of messages: [`ClientMessage`](super::ClientMessage)
/// or [`ServerMessage`](super::ServerMessage). Sealed; used through
/// [`check`], [`parse`], [`encode`] and [`FrameDecoder`].
pub trait Message: sealed::Sealed + Sized {
    /// The direction these messages travel.
    const DIRECTION: Direction;
    /// Most bytes after the length prefix of one frame.
    const FRAME_LEN_MAX: usize;

    /// Whether `type_byte` names a message of this direction.
    fn is_known_type(type_byte: u8) -> bool;

    /// The message's type byte.
    fn type_byte(&self) -> u8;

    /// Appends the fields after the type byte.
    ///
    /// # Errors
    ///
    /// [`EncodeError::TooLarge`] for a count or length above its bound;
    /// `out` may then hold a partial body (the caller, [`encode`], truncates).
    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Reads the fields after the type byte `type_byte` (already read).
    ///
    /// # Errors
    ///
    /// [`FrameError::UnknownType`] or [`FrameError::Body`].
    fn decode_fields(type_byte: u8, reader: &mut Reader<'_>) -> Result<Self, FrameError>;
}

/// Checks whether `buf` starts with a whole frame of direction `M`, and
/// returns its total length in bytes (the prefix included), without decoding
/// its fields.
///
/// The length and the type byte are checked as soon as they have arrived, so
/// an oversized or unknown frame is refused before its body is buffered.
///
/// # Errors
///
/// - [`FrameError::Incomplete`] if more bytes are needed;
/// - [`FrameError::Empty`], [`FrameError::Oversized`],
///   [`FrameError::UnknownType`] for a bad prefix or type byte.
pub fn check<M: Message>(buf: &[u8]) -> Result<usize, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX_LEN>() else {
        return Err(FrameError::Incomplete {
            needed: LEN_PREFIX_LEN + 1 - buf.len(),
        });
    };
    let len = u32::from_le_bytes(*prefix);
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len_usize == 0 {
        return Err(FrameError::Empty);
    }
    if len_usize > M::FRAME_LEN_MAX {
        return Err(FrameError::Oversized {
            len: u64::from(len),
            max: M::FRAME_LEN_MAX,
            direction: M::DIRECTION,
        });
    }
    let Some(&type_byte) = buf.get(LEN_PREFIX_LEN) else {
        return Err(FrameError::Incomplete { needed: len_usize });
    };
    if !M::is_known_type(type_byte) {
        return Err(FrameError::UnknownType {
            type_byte,
            direction: M::DIRECTION,
        });
    }
    let total = LEN_PREFIX_LEN + len_usize;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - buf.len(),
        });
    }
    Ok(total)
}

/// Decodes `frame`, which must be exactly one whole frame (as measured by
/// [`check`]).
///
/// # Errors
///
/// Every error of [`check`]; [`FrameError::Body`] if a field is truncated,
/// invalid or over its bound, or bytes are left over inside the frame
/// ([`DecodeError::Trailing`]) or after it.
pub fn parse<M: Message>(frame: &[u8]) -> Result<M, FrameError> {
    let total = check::<M>(frame)?;
    // Fields are read against the frame's own length: a field running past it
    // is a truncated field, never a read into whatever follows.
    let mut reader = Reader::new(&frame[..total]);
    reader.u32("frame length")?;
    let type_byte = reader.u8("message type")?;
    let message = M::decode_fields(type_byte, &mut reader)?;
    reader.finish()?;
    if frame.len() > total {
        return Err(DecodeError::Trailing {
            offset: total,
            extra: frame.len() - total,
        }
        .into());
    }
    Ok(message)
}

/// Appends `message` as one frame to `out`.
///
/// Many frames appended to one buffer can be written with one `write_all`:
/// do that, rather than one write per message (see `spec/wire.md`).
///
/// # Errors
///
/// [`EncodeError`] if a count or length is above its bound or the frame above
/// the direction's maximum; `out` is then left as it was.
pub fn encode<M: Message>(message: &M, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(message.type_byte());
    let result = message.encode_fields(out).and_then(|()| {
        let len = out.len() - start - LEN_PREFIX_LEN;
        if len > M::FRAME_LEN_MAX {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: M::FRAME_LEN_MAX,
            });
        }
        // FRAME_LEN_MAX fits in a u32 (asserted in `wire`).
        let len = u32::try_from(len).map_err(|_| EncodeError::FrameTooLarge {
            len,
            max: M::FRAME_LEN_MAX,
        })?;
        out[start..start + LEN_PREFIX_LEN].copy_from_slice(&len.to_le_bytes());
        Ok(())
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Turns the chunks read from a stream into whole messages of direction `M`.
///
/// Feed it with [`FrameDecoder::extend`], then call
/// [`FrameDecoder::next_message`] until it returns `Ok(None)`. It buffers at
/// most one partial frame plus the chunk last given (a frame is refused as
/// soon as its prefix and type byte show it is oversized or unknown). After an
/// error the decoder is poisoned: every later call returns the same error,
/// since a byte stream cannot be resynchronised; close the stream.
#[derive(Debug)]
pub struct FrameDecoder<M> {
    buf: Vec<u8>,
    start: usize,
    error: Option<FrameError>,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Default for FrameDecoder<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Message> FrameDecoder<M> {
    /// An empty decoder.
    #[must_use]
    pub fn new() -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            error: None,
            _message: PhantomData,
        }
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as a message.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether the stream may end here: no partial frame is buffered.
    #[must_use]
    pub fn is_at_boundary(&self) -> bool {
        self.buffered() == 0 && self.error.is_none()
    }

    /// The next whole message, or `None` if more bytes are needed.
    ///
    /// # Errors
    ///
    /// Any [`FrameError`] but `Incomplete`; the decoder then stays poisoned.
    pub fn next_message(&mut self) -> Result<Option<M>, FrameError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let pending = &self.buf[self.start..];
        let result = check::<M>(pending).and_then(|len| {
            let message = parse::<M>(&pending[..len])?;
            Ok((message, len))
        });
        match result {
            Ok((message, len)) => {
                self.start += len;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Ok(Some(message))
            }
            Err(FrameError::Incomplete { .. }) => Ok(None),
            Err(error) => {
                self.error = Some(error);
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ClientMessage, ServerMessage};
    use super::*;

    fn frame_of(message: &ClientMessage) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, &mut out).unwrap();
        out
    }

    #[test]
    fn decoder_compacts_its_buffer() {
        let one = frame_of(&ClientMessage::Subscribe { request_id: 1 });
        let mut decoder = FrameDecoder::<ClientMessage>::new();
        for round in 0..1000u64 {
            // A whole frame and half of the next, then the rest.
            decoder.extend(&one);
            decoder.extend(&one[..6]);
            assert_eq!(
                decoder.next_message(),
                Ok(Some(ClientMessage::Subscribe { request_id: 1 })),
                "round {round}"
            );
            assert_eq!(decoder.next_message(), Ok(None));
            decoder.extend(&one[6..]);
            assert!(decoder.next_message().unwrap().is_some());
            assert!(decoder.is_at_boundary());
            assert!(decoder.buf.capacity() <= 4 * one.len());
        }
    }

    #[test]
    fn incomplete_counts_the_bytes_still_missing() {
        let frame = frame_of(&ClientMessage::GetSchedule { request_id: 9 });
        assert_eq!(frame.len(), 13);
        assert_eq!(
            check::<ClientMessage>(&[]),
            Err(FrameError::Incomplete { needed: 5 })
        );
        assert_eq!(
            check::<ClientMessage>(&frame[..4]),
            Err(FrameError::Incomplete { needed: 9 })
        );
        assert_eq!(
            check::<ClientMessage>(&frame[..12]),
            Err(FrameError::Incomplete { needed: 1 })
        );
        assert_eq!(check::<ClientMessage>(&frame), Ok(13));
    }

    #[test]
    fn a_frame_of_the_other_direction_is_an_unknown_type() {
        let mut out = Vec::new();
        encode(&ServerMessage::Ack { request_id: 1 }, &mut out).unwrap();
        assert_eq!(
            parse::<ClientMessage>(&out),
            Err(FrameError::UnknownType {
                type_byte: 0x88,
                direction: Direction::ClientToServer
            })
        );
        let client = frame_of(&ClientMessage::Subscribe { request_id: 1 });
        assert!(matches!(
            parse::<ServerMessage>(&client),
            Err(FrameError::UnknownType {
                type_byte: 0x03,
                ..
            })
        ));
    }

    #[test]
    fn errors_read_well() {
        let error = FrameError::Oversized {
            len: 20000,
            max: 16384,
            direction: Direction::ClientToServer,
        };
        assert_eq!(
            error.to_string(),
            "frame length 20000 is above the maximum 16384 (client to server)"
        );
        let error = FrameError::Body(DecodeError::Invalid {
            field: "code",
            offset: 13,
        });
        assert_eq!(error.to_string(), "bad frame body: invalid code at byte 13");
    }
}

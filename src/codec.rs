//! Little helpers for the fixed binary layouts of `spec/`: a bounds-checked
//! reader over a byte slice and little-endian writers. Pure; no I/O.
//!
//! Every integer is little-endian. A variable-length field is preceded by its
//! length (the width is fixed by the layout that uses it).

/// Why a buffer does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the field `field` at byte offset `offset`.
    #[error("truncated: {field} at byte {offset} needs {needed} more bytes")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A field holds a value the layout does not allow.
    #[error("invalid {field} at byte {offset}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// A count or length is above its named maximum.
    #[error("{field} at byte {offset} is {value}, above the maximum {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// The value found.
        value: u64,
        /// The maximum allowed.
        max: u64,
    },
    /// Bytes are left over after the last field.
    #[error("{extra} unexpected trailing bytes at byte {offset}")]
    Trailing {
        /// Where they start.
        offset: usize,
        /// How many.
        extra: usize,
    },
}

/// A cursor over a byte slice that never reads past its end.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, offset: 0 }
    }

    /// Bytes read so far.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes not yet read.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    /// The next `len` bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] if fewer remain.
    pub fn bytes(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let Some(slice) = self
            .offset
            .checked_add(len)
            .and_then(|end| self.bytes.get(self.offset..end))
        else {
            return Err(DecodeError::Truncated {
                field,
                offset: self.offset,
                needed: len - self.remaining(),
            });
        };
        self.offset += len;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] if fewer remain.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    /// A `u8`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`].
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A little-endian `u16`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`].
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`].
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u64`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`].
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `i128`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`].
    pub fn i128(&mut self, field: &'static str) -> Result<i128, DecodeError> {
        Ok(i128::from_le_bytes(self.array(field)?))
    }

    /// A `u32` count, checked against `max`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] or [`DecodeError::TooLarge`].
    pub fn count(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let offset = self.offset;
        let value = self.u32(field)?;
        let count = value as usize;
        if count > max {
            return Err(DecodeError::TooLarge {
                field,
                offset,
                value: u64::from(value),
                max: max as u64,
            });
        }
        Ok(count)
    }

    /// A `u32`-length-prefixed byte string of at most `max` bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] or [`DecodeError::TooLarge`].
    pub fn blob(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.count(field, max)?;
        self.bytes(len, field)
    }

    /// An error for the field that starts at `offset` holding a bad value.
    #[must_use]
    pub fn invalid(&self, field: &'static str, offset: usize) -> DecodeError {
        DecodeError::Invalid { field, offset }
    }

    /// Checks that every byte was read.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Trailing`] otherwise.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing {
                offset: self.offset,
                extra,
            }),
        }
    }
}

/// A value with a byte layout of `spec/`: the one way every layout is
/// written (journal records' parts, checkpoints, transcripts, the keyper
/// log and its messages, signed requests, the replica transport).
///
/// The wire's client/server frames have their own trait
/// (`wire::Message`), since writing one can fail (a frame above its
/// direction's maximum) and frames are length-prefixed and typed.
pub trait Encode {
    /// Appends the layout to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);

    /// The layout in a buffer of its own.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// A value read from its layout (see [`Encode`]).
pub trait Decode: Sized {
    /// Reads the value from `r`, leaving `r` after it.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for bytes that are not the layout.
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Reads the value from the whole of `bytes`: a byte left over is an
    /// error.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for bytes that are not the layout, or more.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let value = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

/// Appends little-endian fields to a `Vec<u8>`.
pub trait Writer {
    /// Appends a `u8`.
    fn put_u8(&mut self, value: u8);
    /// Appends a little-endian `u16`.
    fn put_u16(&mut self, value: u16);
    /// Appends a little-endian `u32`.
    fn put_u32(&mut self, value: u32);
    /// Appends a little-endian `u64`.
    fn put_u64(&mut self, value: u64);
    /// Appends a little-endian `i128`.
    fn put_i128(&mut self, value: i128);
    /// Appends a `u32` length, then the bytes.
    ///
    /// # Panics
    ///
    /// If `bytes` is 4 GiB or longer: every caller bounds its blobs far below.
    fn put_blob(&mut self, bytes: &[u8]);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, value: u8) {
        self.push(value);
    }
    fn put_u16(&mut self, value: u16) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_u32(&mut self, value: u32) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_u64(&mut self, value: u64) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_i128(&mut self, value: i128) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_blob(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len());
        assert!(len.is_ok(), "blob of {} bytes exceeds u32", bytes.len());
        self.put_u32(len.unwrap_or(u32::MAX));
        self.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut out = Vec::new();
        out.put_u8(7);
        out.put_u16(0x0102);
        out.put_u32(0x03040506);
        out.put_u64(u64::MAX - 1);
        out.put_i128(-5);
        out.put_blob(b"abc");
        let mut r = Reader::new(&out);
        assert_eq!(r.u8("a"), Ok(7));
        assert_eq!(r.u16("b"), Ok(0x0102));
        assert_eq!(r.u32("c"), Ok(0x03040506));
        assert_eq!(r.u64("d"), Ok(u64::MAX - 1));
        assert_eq!(r.i128("e"), Ok(-5));
        assert_eq!(
            r.clone().blob("f", 2).unwrap_err(),
            DecodeError::TooLarge {
                field: "f",
                offset: 31,
                value: 3,
                max: 2
            }
        );
        assert_eq!(r.blob("f", 3), Ok(&b"abc"[..]));
        assert_eq!(r.clone().finish(), Ok(()));
        assert_eq!(
            r.u8("g"),
            Err(DecodeError::Truncated {
                field: "g",
                offset: 38,
                needed: 1
            })
        );
        let mut short = Reader::new(&out[..3]);
        short.u8("a").unwrap();
        assert!(matches!(
            short.u32("c"),
            Err(DecodeError::Truncated { needed: 2, .. })
        ));
        let mut long = Reader::new(&out);
        long.u8("a").unwrap();
        assert_eq!(
            long.finish(),
            Err(DecodeError::Trailing {
                offset: 1,
                extra: 37
            })
        );
    }
}

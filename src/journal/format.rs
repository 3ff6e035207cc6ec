//! Byte layout of segment headers and record frames (see `spec/journal.md`).
//!
//! Pure functions over byte slices: no I/O here.

use super::{Lsn, RECORD_PAYLOAD_BYTES_MAX, is_record_kind};

/// The 8 magic bytes that open every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SBJOURNL";

/// The on-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Length of a segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;

/// Bytes of a record frame before its payload: length, kind, reserved, LSN.
pub const FRAME_HEADER_LEN: usize = 16;

/// Bytes of a record frame after its payload: the crc32c.
pub const FRAME_TRAILER_LEN: usize = 4;

/// Total framing overhead of one record.
pub const FRAME_OVERHEAD_LEN: usize = FRAME_HEADER_LEN + FRAME_TRAILER_LEN;

const _: () = assert!(SEGMENT_HEADER_LEN == 8 + 4 + 4 + 8 + 4 + 4);
const _: () = assert!(FRAME_HEADER_LEN == 4 + 1 + 3 + 8);

/// Encodes the header of a segment whose first record has LSN `first_lsn`.
#[must_use]
pub fn encode_segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // 12..16: flags, zero in version 1.
    header[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    // 28..32: reserved, zero.
    header
}

/// Why a segment header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    #[error("shorter than {SEGMENT_HEADER_LEN} bytes")]
    Short,
    /// The magic bytes are wrong.
    #[error("wrong magic (not a sealbatch journal segment)")]
    Magic,
    /// The header checksum does not match.
    #[error("header checksum mismatch")]
    Checksum,
    /// A version this code does not read.
    #[error("unsupported format version {0}")]
    Version(u32),
    /// Nonzero flags or reserved bytes.
    #[error("nonzero flags or reserved bytes")]
    Reserved,
}

/// Decodes a segment header and returns its first LSN.
///
/// # Errors
///
/// The [`HeaderProblem`] found, checked in the order: length, magic,
/// checksum, version, reserved bytes.
pub fn decode_segment_header(bytes: &[u8]) -> Result<Lsn, HeaderProblem> {
    let header = bytes
        .get(..SEGMENT_HEADER_LEN)
        .ok_or(HeaderProblem::Short)?;
    if header[0..8] != SEGMENT_MAGIC {
        return Err(HeaderProblem::Magic);
    }
    if crc32c::crc32c(&header[0..24]) != le_u32(&header[24..28]) {
        return Err(HeaderProblem::Checksum);
    }
    let version = le_u32(&header[8..12]);
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::Version(version));
    }
    if header[12..16] != [0; 4] || header[28..32] != [0; 4] {
        return Err(HeaderProblem::Reserved);
    }
    Ok(Lsn(le_u64(&header[16..24])))
}

/// Appends the frame of one record to `out`.
///
/// The caller has checked `payload.len() <= RECORD_PAYLOAD_BYTES_MAX`.
pub fn encode_frame(out: &mut Vec<u8>, lsn: Lsn, kind: u8, payload: &[u8]) {
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
    let start = out.len();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Why a record frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameProblem {
    /// The file ends inside the frame.
    #[error("incomplete: the file ends inside the frame")]
    Incomplete,
    /// The length field exceeds [`RECORD_PAYLOAD_BYTES_MAX`].
    #[error("payload length {0} exceeds the limit")]
    TooLong(u32),
    /// The kind byte is not assigned ([`is_record_kind`]).
    #[error("unknown record kind {0}")]
    Kind(u8),
    /// The reserved bytes are not zero.
    #[error("nonzero reserved bytes")]
    Reserved,
    /// The crc32c over the frame does not match.
    #[error("checksum mismatch")]
    Checksum,
}

/// A frame that passed every check, borrowing its payload.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record's kind.
    pub kind: u8,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// Total length of the frame, overhead included.
    pub frame_len: usize,
}

/// Decodes the frame that starts at `bytes[0]`.
///
/// # Errors
///
/// The [`FrameProblem`] found: the cheap header checks first, the checksum
/// last.
pub fn decode_frame(bytes: &[u8]) -> Result<FrameRef<'_>, FrameProblem> {
    let header = bytes
        .get(..FRAME_HEADER_LEN)
        .ok_or(FrameProblem::Incomplete)?;
    let len = le_u32(&header[0..4]);
    let payload_len = len as usize;
    if payload_len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(FrameProblem::TooLong(len));
    }
    let kind = header[4];
    if !is_record_kind(kind) {
        return Err(FrameProblem::Kind(kind));
    }
    if header[5..8] != [0; 3] {
        return Err(FrameProblem::Reserved);
    }
    let lsn = Lsn(le_u64(&header[8..16]));
    let frame_len = FRAME_OVERHEAD_LEN + payload_len;
    let frame = bytes.get(..frame_len).ok_or(FrameProblem::Incomplete)?;
    let body_len = FRAME_HEADER_LEN + payload_len;
    if crc32c::crc32c(&frame[..body_len]) != le_u32(&frame[body_len..]) {
        return Err(FrameProblem::Checksum);
    }
    Ok(FrameRef {
        lsn,
        kind,
        payload: &frame[FRAME_HEADER_LEN..body_len],
        frame_len,
    })
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_assigned_kind_bytes_are_valid() {
        assert!((1..=12).all(is_record_kind));
        assert!(!is_record_kind(0));
        assert!(!is_record_kind(13));
        assert!(!is_record_kind(255));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = encode_segment_header(Lsn(42));
        assert_eq!(decode_segment_header(&header), Ok(Lsn(42)));
        assert_eq!(
            decode_segment_header(&header[..31]),
            Err(HeaderProblem::Short)
        );
        let mut bad = header;
        bad[0] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderProblem::Magic));
        let mut bad = header;
        bad[17] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderProblem::Checksum));
        let mut bad = header;
        bad[30] = 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderProblem::Reserved));
    }

    #[test]
    fn frame_round_trips_and_every_byte_flip_is_caught() {
        let mut out = Vec::new();
        encode_frame(&mut out, Lsn(7), 2, b"payload");
        assert_eq!(out.len(), FRAME_OVERHEAD_LEN + 7);
        let frame = decode_frame(&out).unwrap();
        assert_eq!(
            (frame.lsn, frame.kind, frame.payload, frame.frame_len),
            (Lsn(7), 2, &b"payload"[..], out.len())
        );
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[i] ^= 1 << bit;
                assert!(decode_frame(&bad).is_err(), "flip byte {i} bit {bit}");
            }
        }
        for cut in 0..out.len() {
            assert!(decode_frame(&out[..cut]).is_err());
        }
        assert!(decode_frame(&[0u8; 64]).is_err(), "zeros never parse");
    }
}

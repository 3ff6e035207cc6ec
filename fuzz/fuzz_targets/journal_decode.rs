//! Journal decoding on arbitrary bytes: the segment header, record frames and
//! every sequencer record payload (what recovery reads back from disk). Never
//! a panic; a frame that decodes re-encodes to the same bytes; a sequencer
//! record that decodes re-encodes to the same payload (the layouts are
//! canonical).
//!
//! Smoke run (stable toolchain):
//! `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run journal_decode -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealbatch::journal::RecordKind;
use sealbatch::journal::format::{decode_frame, decode_segment_header, encode_frame};
use sealbatch::sequencer::SequencerRecord;

fuzz_target!(|data: &[u8]| {
    let _ = decode_segment_header(data);
    if let Ok(frame) = decode_frame(data) {
        let mut again = Vec::new();
        encode_frame(&mut again, frame.lsn, frame.kind, frame.payload);
        assert_eq!(&data[..again.len()], &again[..]);
    }
    if let Some((&kind, payload)) = data.split_first()
        && let Some(kind) = RecordKind::from_byte(kind)
        && let Ok(record) = SequencerRecord::decode(kind, payload)
    {
        assert_eq!(record.kind(), kind);
        assert_eq!(record.encode(), payload);
    }
});

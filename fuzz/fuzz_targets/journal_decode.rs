//! Journal decoding on arbitrary bytes: the segment header, record frames,
//! every sequencer record payload, checkpoint files and the sequencer's
//! checkpoint state (what recovery reads back from disk). Never a panic; a
//! frame, record, checkpoint file or state that decodes re-encodes to the
//! same bytes (the layouts are canonical).
//!
//! Smoke run (stable toolchain):
//! `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run journal_decode -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealbatch::journal::checkpoint::{decode_checkpoint_file, encode_checkpoint_file};
use sealbatch::journal::format::{decode_frame, decode_segment_header, encode_frame};
use sealbatch::codec::{Decode, Encode};
use sealbatch::sequencer::{Checkpoint, SequencerRecord};

fuzz_target!(|data: &[u8]| {
    let _ = decode_segment_header(data);
    if let Ok(frame) = decode_frame(data) {
        let mut again = Vec::new();
        encode_frame(&mut again, frame.lsn, frame.kind, frame.payload);
        assert_eq!(&data[..again.len()], &again[..]);
    }
    if let Some((&kind, payload)) = data.split_first()
        && let Ok(record) = SequencerRecord::decode(kind, payload)
    {
        assert_eq!(record.kind().to_byte(), kind);
        assert_eq!(record.encode(), payload);
    }
    // The file name's LSN, as the header states it.
    let name_lsn = data
        .get(12..20)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(sealbatch::journal::Lsn::NONE, |b| {
            sealbatch::journal::Lsn(u64::from_le_bytes(b))
        });
    if let Ok(file) = decode_checkpoint_file(data, name_lsn) {
        let again = encode_checkpoint_file(file.lsn, file.replay_from, &file.payload);
        assert_eq!(again, data);
    }
    if let Ok(state) = Checkpoint::from_bytes(data) {
        assert_eq!(state.to_bytes(), data);
    }
});

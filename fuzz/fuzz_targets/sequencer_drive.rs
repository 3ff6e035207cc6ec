//! The sequencer core driven the way a hostile trader and a careless
//! operator would: see `fuzz/sequencer_drive.rs`, which `cargo test` also
//! replays over the crash reproductions.

#![no_main]

#[path = "../sequencer_drive.rs"]
mod drive;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drive::check(data));

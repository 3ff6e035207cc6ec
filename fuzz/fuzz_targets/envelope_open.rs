//! Envelope decoding and opening on arbitrary bytes: never a panic, and the
//! rejections agree with the shape check.
//!
//! Smoke run (stable toolchain, see `docs/development.md`, "Fuzzing"):
//! `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run envelope_open -- -max_total_time=60`

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../logic.rs"]
mod logic;

fuzz_target!(|data: &[u8]| {
    logic::check(data);
});

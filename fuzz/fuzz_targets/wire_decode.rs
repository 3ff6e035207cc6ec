//! Wire decoding on arbitrary bytes, in both directions: never a panic; a
//! `FrameDecoder` fed the bytes in arbitrary chunks yields exactly what
//! one-shot `check`/`parse` decoding yields; and whatever decodes re-encodes
//! to the very same bytes (the encoding is canonical).
//!
//! Smoke run (stable toolchain):
//! `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run wire_decode -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealbatch::wire::{self, ClientMessage, FrameDecoder, FrameError, Message, ServerMessage};

/// Decodes `data` frame by frame with `check` then `parse`: the messages, and
/// the error that stopped decoding (`None` if it stopped at a frame boundary
/// or inside an incomplete frame).
fn one_shot<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) -> (Vec<M>, Option<FrameError>) {
    let mut messages = Vec::new();
    let mut rest = data;
    loop {
        let len = match wire::check::<M>(rest) {
            Ok(len) => len,
            Err(FrameError::Incomplete { needed }) => {
                assert!(needed > 0);
                return (messages, None);
            }
            Err(error) => return (messages, Some(error)),
        };
        assert!(len > 4 && len <= rest.len());
        match wire::parse::<M>(&rest[..len]) {
            Ok(message) => {
                let mut again = Vec::new();
                wire::encode(&message, &mut again).expect("a decoded message encodes");
                assert_eq!(again, &rest[..len], "not canonical: {message:?}");
                messages.push(message);
            }
            Err(error) => {
                assert!(!matches!(error, FrameError::Incomplete { .. }));
                return (messages, Some(error));
            }
        }
        rest = &rest[len..];
    }
}

fn chunked<M: Message + PartialEq + std::fmt::Debug>(data: &[u8], cuts: &[u8]) {
    let (expected, expected_error) = one_shot::<M>(data);
    let mut decoder = FrameDecoder::<M>::new();
    let mut got = Vec::new();
    let mut error = None;
    let mut rest = data;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() && error.is_none() {
        let take = usize::from(*cuts.next().unwrap_or(&255))
            .max(1)
            .min(rest.len());
        decoder.extend(&rest[..take]);
        rest = &rest[take..];
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => got.push(message),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    }
    assert_eq!(got, expected);
    assert_eq!(error, expected_error);
}

fuzz_target!(|input: &[u8]| {
    // The first byte says how many of the next bytes are chunk lengths.
    let (cuts, data) = match input.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 8).min(rest.len())),
        None => (&[][..], input),
    };
    chunked::<ClientMessage>(data, cuts);
    chunked::<ServerMessage>(data, cuts);
});

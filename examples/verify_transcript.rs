//! Check one batch without trusting the sequencer: read a batch transcript
//! (written by `sealbatch export`), verify the seal's signature and Merkle
//! root, re-open every envelope with the published batch secret, and re-run
//! funding, clearing and settlement from the stated starting state.
//!
//! ```sh
//! sealbatch export --batch 42 --out .     # writes batch-42.sbt from ./sealbatch-data
//! cargo run --example verify_transcript -- batch-42.sbt
//! ```

// A program of the shell: it reads files (the rule against it is for the core).
#![allow(clippy::disallowed_methods)]

use sealbatch::codec::Decode;
use std::process::ExitCode;

use sealbatch::sequencer::{Transcript, verify_transcript};

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: verify_transcript FILE (a transcript from `sealbatch export`)");
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("{}: {error}", path.to_string_lossy());
            return ExitCode::from(2);
        }
    };
    let transcript = match Transcript::from_bytes(&bytes) {
        Ok(transcript) => transcript,
        Err(error) => {
            eprintln!("not a transcript: {error}");
            return ExitCode::from(2);
        }
    };
    match verify_transcript(&transcript) {
        Ok(summary) => {
            println!(
                "batch {}: {} envelopes, {} fills, from {} balances: OK",
                summary.e, summary.envelopes, summary.fills, summary.balances
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("batch {}: does not verify: {error}", transcript.batch());
            ExitCode::FAILURE
        }
    }
}

//! What a replica reads off the replica transport and its Raft log, from
//! arbitrary bytes: requests, responses, proposals, a replica's status and
//! the log file's frames (a log store opened over them). Never a panic;
//! whatever decodes re-encodes to the very same bytes.
//!
//! Smoke run (stable toolchain):
//! `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run replica_decode -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealbatch::codec::{Decode, Encode};
use sealbatch::replica::Proposal;
use sealbatch::replica::codec::{
    RaftRequest, ReplicaStatus, decode_append_response, decode_snapshot_response,
    decode_vote_response, encode_append_response, encode_snapshot_response,
    encode_vote_response,
};
use sealbatch::replica::log_store::{LOG_FILE, LOG_MAGIC, LogStore};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            if let Ok(request) = RaftRequest::from_bytes(bytes) {
                assert_eq!(request.to_bytes(), bytes);
            }
        }
        1 => {
            if let Ok(proposal) = Proposal::from_bytes(bytes) {
                assert_eq!(proposal.bytes(), bytes);
                assert_eq!(proposal.records().count(), proposal.len());
            }
        }
        2 => {
            if let Ok(response) = decode_append_response(bytes) {
                assert_eq!(encode_append_response(&response), bytes);
            }
            if let Ok(response) = decode_vote_response(bytes) {
                assert_eq!(encode_vote_response(&response), bytes);
            }
            if let Ok(response) = decode_snapshot_response(bytes) {
                assert_eq!(encode_snapshot_response(&response), bytes);
            }
        }
        3 => {
            if let Ok(status) = ReplicaStatus::from_bytes(bytes) {
                assert_eq!(status.to_bytes(), bytes);
            }
        }
        _ => {
            // A log file of these frames: opened (a torn tail cut, damage
            // refused), never a panic.
            let Ok(dir) = tempfile::tempdir() else {
                return;
            };
            let mut file = LOG_MAGIC.to_vec();
            file.extend_from_slice(bytes);
            if std::fs::write(dir.path().join(LOG_FILE), &file).is_ok() {
                let _ = LogStore::open(dir.path());
            }
        }
    }
});

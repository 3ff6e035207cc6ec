//! The wire protocol between traders and the sequencer: a versioned,
//! length-prefixed binary message codec, pure over byte buffers (no I/O, no
//! clock). The normative layout is `spec/wire.md`; this module matches it
//! byte for byte, and golden tests keep the two from drifting apart.
//!
//! A frame is `u32le(len) ‖ u8(type) ‖ fields`, where `len` counts the type
//! byte and the fields (everything after the length). Client → server frames
//! ([`ClientMessage`], type bytes `0x01..=0x09`) are capped at
//! [`CLIENT_FRAME_LEN_MAX`]; server → client frames ([`ServerMessage`], type
//! bytes `0x81..=0x8b`) at [`FRAME_LEN_MAX`]. Every count and string has a
//! named bound, checked while decoding (and while encoding, so nothing is sent
//! that the peer would refuse).
//!
//! Decoding follows mini-redis's `frame.rs`: [`check`] tells whether a whole
//! frame is at the start of a buffer (or [`FrameError::Incomplete`] when more
//! bytes are needed), then [`parse`] decodes it. A connection that reads
//! chunks uses [`FrameDecoder`], which does both and keeps the partial tail.
//!
//! # Example
//!
//! ```
//! use sealbatch::wire::{self, ClientMessage, FrameDecoder, FrameError};
//!
//! // A client pipelines two requests in one buffer (one `write_all`).
//! let mut out = Vec::new();
//! wire::encode(&ClientMessage::GetSchedule { request_id: 1 }, &mut out)?;
//! wire::encode(&ClientMessage::Subscribe { request_id: 2 }, &mut out)?;
//!
//! // One frame at a time over a buffer: check, then parse. Three bytes are
//! // not yet a length prefix and a type byte.
//! let len = wire::check::<ClientMessage>(&out)?;
//! let first: ClientMessage = wire::parse(&out[..len])?;
//! assert_eq!(first, ClientMessage::GetSchedule { request_id: 1 });
//! assert_eq!(
//!     wire::check::<ClientMessage>(&out[len..len + 3]),
//!     Err(FrameError::Incomplete { needed: 2 }),
//! );
//!
//! // Or, as the server does, feed whatever chunks arrive to a decoder.
//! let mut decoder = FrameDecoder::<ClientMessage>::new();
//! let mut seen = Vec::new();
//! for chunk in out.chunks(5) {
//!     decoder.extend(chunk);
//!     while let Some(message) = decoder.next_message()? {
//!         seen.push(message.request_id());
//!     }
//! }
//! assert_eq!(seen, [1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod frame;
pub mod keyper;
mod message;

pub use frame::{Direction, EncodeError, FrameDecoder, FrameError, Message, check, encode, parse};
pub use message::{
    BatchCleared, BatchSealed, ClientMessage, KEY_CERTIFICATES_MAX, MarketInfo, MarketLine,
    OwnEnvelope, ReasonCode, ReplicaInfo, SCHEDULE_DOMAIN, Schedule, ServerMessage,
    schedule_signing_message,
};

use crate::types::{BUNDLE_ORDERS_MAX, MARKETS_MAX};

/// The protocol version this module speaks. It is carried by the ALPN
/// ([`ALPN`]): a peer that does not offer `sealbatch/5` does not connect.
/// (Version 2 signs balance queries and withdrawals; version 3 lists a
/// replicated sequencer's replicas in the schedule; version 4 carries the
/// keypers' release attestations in `BatchCleared` and binds a committee to
/// its deployment; version 5 sends group receipts, one signature per group
/// commit with a path per envelope.)
pub const PROTOCOL_VERSION: u8 = 5;

/// The QUIC ALPN protocol identifier, `sealbatch/5`.
pub const ALPN: &[u8] = b"sealbatch/5";

/// Bytes of the length prefix that starts every frame.
pub const LEN_PREFIX_LEN: usize = 4;

/// Most bytes after the length prefix of a server → client frame (4 MiB).
pub const FRAME_LEN_MAX: usize = 4 << 20;

/// Most bytes after the length prefix of a client → server frame (16 KiB).
/// The largest client frame, a `Submit` of [`ENVELOPE_LEN_MAX`] bytes, is
/// 8262.
pub const CLIENT_FRAME_LEN_MAX: usize = 16 << 10;

/// Longest envelope a `Submit` carries (`spec/envelope.md`, `ENVELOPE_LEN_MAX`).
pub const ENVELOPE_LEN_MAX: usize = 8249;

/// Most bytes of an encoded receipt (`spec/envelope.md` §12): the group's
/// signed root and a path of at most 12 siblings.
pub const RECEIPT_LEN_MAX: usize = crate::envelope::RECEIPT_LEN_MAX;

/// Bytes of an encoded, signed seal: `u64le(e) ‖ u32le(count) ‖ root ‖ signature`.
pub const SEAL_LEN: usize = 108;

/// Longest encoded Merkle inclusion proof: `u32le(i) ‖ u8(k) ‖ k × 32`,
/// `k ≤ 24` (`spec/envelope.md` §14).
pub const PROOF_LEN_MAX: usize = 4 + 1 + 24 * 32;

/// Longest UTF-8 text (`Rejected` and `Error` messages), in bytes.
pub const TEXT_LEN_MAX: usize = 1024;

/// Most announced batch keys in a `Schedule`.
pub const SCHEDULE_BATCH_KEYS_MAX: usize = 256;

/// Most markets in a `Schedule` or a `BatchCleared`.
pub const WIRE_MARKETS_MAX: usize = MARKETS_MAX;

/// Most envelopes of one subscriber reported per batch: inclusion proofs in a
/// `BatchSealed`, outcomes in a `BatchCleared`. A server's limit of envelopes
/// per connection per batch must not exceed it.
pub const SUBSCRIBER_ENVELOPES_MAX: usize = 1024;

/// Most fills reported for one envelope (one per order of its bundle).
pub const FILLS_MAX: usize = BUNDLE_ORDERS_MAX;

/// Most (asset, balance) pairs in an `Account`.
pub const ACCOUNT_BALANCES_MAX: usize = 4096;

/// Most withdrawals in one `Payouts` reply (a client pages with `after`).
pub const PAYOUTS_MAX: usize = 1024;

/// Most replicas in a `Schedule` (the most a cluster's membership holds).
pub const SCHEDULE_REPLICAS_MAX: usize = 64;

/// Longest replica address in a `Schedule`, in bytes.
pub const REPLICA_ADDRESS_LEN_MAX: usize = 255;

/// Bytes of one encoded [`MarketInfo`].
pub const MARKET_INFO_LEN: usize = 3 * 4 + 5 * 8 + 2;

const _: () = assert!(PROTOCOL_VERSION == 5 && ALPN.len() == 11 && ALPN[10] == b'5');
const _: () = assert!(CLIENT_FRAME_LEN_MAX <= FRAME_LEN_MAX);
// A full `Payouts` reply: type ‖ request id ‖ count ‖ withdrawals ‖ more.
const PAYOUTS_FRAME_LEN_MAX: usize =
    1 + 8 + 4 + PAYOUTS_MAX * (8 + crate::signed::SignedWithdrawal::ENCODED_LEN_MAX) + 1;
const _: () = assert!(PAYOUTS_FRAME_LEN_MAX <= FRAME_LEN_MAX);
const _: () = assert!(FRAME_LEN_MAX <= u32::MAX as usize);
// The largest client frame: type ‖ request id ‖ u32 length ‖ envelope.
const _: () = assert!(1 + 8 + 4 + ENVELOPE_LEN_MAX <= CLIENT_FRAME_LEN_MAX);
// Every server message with all its counts at their bounds fits in one frame.
const _: () = assert!(
    1 + 8
        + 3 * 8
        + 32
        + 4
        + SCHEDULE_BATCH_KEYS_MAX * 40
        + 4
        + WIRE_MARKETS_MAX * MARKET_INFO_LEN
        + 4
        + SCHEDULE_REPLICAS_MAX * (8 + 1 + REPLICA_ADDRESS_LEN_MAX + 32)
        + 64
        <= FRAME_LEN_MAX
);
const _: () = assert!(
    1 + SEAL_LEN + 4 + SUBSCRIBER_ENVELOPES_MAX * (32 + 4 + PROOF_LEN_MAX) <= FRAME_LEN_MAX
);
const _: () = assert!(
    1 + 8
        + 32
        + 32
        + 4
        + 4
        + 4
        + WIRE_MARKETS_MAX * (4 + 1 + 8 + 8 + 16)
        + 4
        + SUBSCRIBER_ENVELOPES_MAX * (32 + 1 + 4 + 4 + FILLS_MAX * (2 + 8))
        <= FRAME_LEN_MAX
);
const _: () = assert!(1 + 8 + 32 + 4 + ACCOUNT_BALANCES_MAX * 12 <= FRAME_LEN_MAX);
const _: () = assert!(1 + 8 + 1 + 8 + 4 + TEXT_LEN_MAX <= CLIENT_FRAME_LEN_MAX);

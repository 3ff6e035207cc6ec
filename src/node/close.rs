//! The QUIC application close codes of the sequencer's connections
//! (`spec/wire.md` §2, `spec/keyper.md` §17), in one place: the client
//! server and the keyper link share them.

/// Application error code: the peer broke the framing or the protocol.
pub const CLOSE_PROTOCOL_ERROR: u32 = 1;
/// Application error code: a frame was larger than allowed.
pub const CLOSE_FRAME_TOO_LARGE: u32 = 2;
/// Application error code: the server is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 3;
/// Application error code: the sequencer stopped on a failure (its storage
/// failed): reconnect once it is back.
pub const CLOSE_UNAVAILABLE: u32 = 4;

/// Application error code: the keyper's hello is not a member's.
pub const CLOSE_NOT_A_MEMBER: u32 = 10;
/// Application error code: the sequencer has no keyper committee.
pub const CLOSE_NO_COMMITTEE: u32 = 11;
/// Application error code: the keyper sent more than it may.
pub const CLOSE_TOO_MANY: u32 = 12;
/// Application error code: this replica does not lead (the keyper tries
/// the next one).
pub const CLOSE_NOT_LEADER: u32 = 13;

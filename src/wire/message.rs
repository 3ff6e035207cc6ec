//! The messages of each direction and their fields' layout
//! (`spec/wire.md` §4 and §5).

use std::fmt;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::keyper::{Committee, WindowCertificate};
use crate::market::{AccountId, AssetId};
use crate::signed::{
    DepositStatement, Query, REFERENCE_LEN_MAX, SignedDeposit, SignedPayout, SignedQuery,
    SignedWithdrawal, Withdrawal,
};
use crate::types::{BatchId, Tick};

use super::frame::{Direction, EncodeError, FrameError, Message};
use super::{
    ACCOUNT_BALANCES_MAX, CLIENT_FRAME_LEN_MAX, ENVELOPE_LEN_MAX, FILLS_MAX, FRAME_LEN_MAX,
    MARKET_INFO_LEN, PAYOUTS_MAX, PROOF_LEN_MAX, RECEIPT_LEN_MAX, REPLICA_ADDRESS_LEN_MAX,
    SCHEDULE_BATCH_KEYS_MAX, SCHEDULE_REPLICAS_MAX, SEAL_LEN, SUBSCRIBER_ENVELOPES_MAX,
    TEXT_LEN_MAX, WIRE_MARKETS_MAX,
};

/// Most window certificates in one `KeyCertificates`.
pub const KEY_CERTIFICATES_MAX: usize = SCHEDULE_BATCH_KEYS_MAX;

/// Type bytes of client → server messages.
mod client_type {
    pub const GET_SCHEDULE: u8 = 0x01;
    pub const SUBMIT: u8 = 0x02;
    pub const SUBSCRIBE: u8 = 0x03;
    pub const GET_ACCOUNT: u8 = 0x04;
    pub const DEPOSIT: u8 = 0x05;
    pub const WITHDRAW: u8 = 0x06;
    pub const OPERATOR_DEPOSIT: u8 = 0x07;
    pub const GET_PAYOUTS: u8 = 0x08;
    pub const ACKNOWLEDGE_PAYOUT: u8 = 0x09;
    pub const GET_KEY_CERTIFICATES: u8 = 0x0a;
}

/// Type bytes of server → client messages.
mod server_type {
    pub const SCHEDULE: u8 = 0x81;
    pub const RECEIPT: u8 = 0x82;
    pub const REJECTED: u8 = 0x83;
    pub const BATCH_OPENED: u8 = 0x84;
    pub const BATCH_SEALED: u8 = 0x85;
    pub const BATCH_CLEARED: u8 = 0x86;
    pub const ACCOUNT: u8 = 0x87;
    pub const ACK: u8 = 0x88;
    pub const ERROR: u8 = 0x89;
    pub const WITHDRAWN: u8 = 0x8a;
    pub const PAYOUTS: u8 = 0x8b;
    pub const KEY_CERTIFICATES: u8 = 0x8c;
}

/// The domain string that starts the signed schedule message.
pub const SCHEDULE_DOMAIN: &str = "sealbatch v1 schedule";

/// A message from a client to the sequencer. Every request carries a
/// `request_id` chosen by the client, echoed in the reply, so a client can
/// pipeline many requests on one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Asks for the signed [`Schedule`]. Type `0x01`.
    GetSchedule {
        /// Echoed in the reply.
        request_id: u64,
    },
    /// Submits a sealed envelope. Type `0x02`. Answered by a `Receipt` or a
    /// `Rejected`.
    Submit {
        /// Echoed in the reply.
        request_id: u64,
        /// The envelope, at most [`ENVELOPE_LEN_MAX`] bytes; the node checks
        /// its shape.
        envelope: Vec<u8>,
    },
    /// Subscribes this stream to batch events. Type `0x03`. Answered by an
    /// `Ack`, then `BatchOpened`, `BatchSealed` and `BatchCleared` pushes.
    Subscribe {
        /// Echoed in the `Ack`.
        request_id: u64,
    },
    /// Asks for an account's balances and next withdrawal sequence,
    /// signed by the account or an operator for this connection
    /// ([`Query::Account`]). Type `0x04`.
    GetAccount {
        /// Echoed in the reply.
        request_id: u64,
        /// The account (its Ed25519 public key).
        account: [u8; 32],
        /// The requester's Ed25519 public key: the account's or an operator's.
        requester: [u8; 32],
        /// The requester's signature over the query's signing message.
        signature: [u8; 64],
    },
    /// Credits an account, unsigned: demo mode only (otherwise the server
    /// answers `Error` with [`ReasonCode::OperatorOnly`]; money arrives by
    /// [`ClientMessage::OperatorDeposit`]). Type `0x05`.
    Deposit {
        /// Echoed in the reply.
        request_id: u64,
        /// The account credited.
        account: [u8; 32],
        /// The asset id.
        asset: u32,
        /// Units of the asset.
        amount: u64,
    },
    /// Withdraws from an account, signed by the account with its next
    /// sequence number. Answered by `Withdrawn` once durable. Type `0x06`.
    Withdraw {
        /// Echoed in the reply.
        request_id: u64,
        /// The signed request.
        withdrawal: SignedWithdrawal,
    },
    /// Credits an account with a deposit signed by an operator key the
    /// sequencer's configuration lists, idempotent by its external
    /// reference (`spec/wire.md` §4). Type `0x07`.
    OperatorDeposit {
        /// Echoed in the reply.
        request_id: u64,
        /// The signed statement.
        deposit: SignedDeposit,
    },
    /// Asks for withdrawals awaiting payout, signed by an operator for this
    /// connection ([`Query::Payouts`]). Answered by `Payouts`. Type `0x08`.
    GetPayouts {
        /// Echoed in the reply.
        request_id: u64,
        /// Only withdrawals with a greater id.
        after: u64,
        /// The operator's Ed25519 public key.
        requester: [u8; 32],
        /// The operator's signature over the query's signing message.
        signature: [u8; 64],
    },
    /// Acknowledges that a withdrawal was paid out, signed by an operator;
    /// idempotent by withdrawal. Answered by `Ack` once durable. Type `0x09`.
    AcknowledgePayout {
        /// Echoed in the reply.
        request_id: u64,
        /// The signed acknowledgement.
        payout: SignedPayout,
    },
    /// Asks for the keyper committee and its certificates over the
    /// announced batch keys. Answered by `KeyCertificates`. Type `0x0a`.
    GetKeyCertificates {
        /// Echoed in the reply.
        request_id: u64,
    },
}

impl ClientMessage {
    /// The request id the reply must echo.
    #[must_use]
    pub fn request_id(&self) -> u64 {
        match self {
            ClientMessage::GetSchedule { request_id }
            | ClientMessage::Submit { request_id, .. }
            | ClientMessage::Subscribe { request_id }
            | ClientMessage::GetAccount { request_id, .. }
            | ClientMessage::Deposit { request_id, .. }
            | ClientMessage::Withdraw { request_id, .. }
            | ClientMessage::OperatorDeposit { request_id, .. }
            | ClientMessage::GetPayouts { request_id, .. }
            | ClientMessage::AcknowledgePayout { request_id, .. }
            | ClientMessage::GetKeyCertificates { request_id } => *request_id,
        }
    }

    /// The signed query a `GetAccount` or `GetPayouts` carries.
    #[must_use]
    pub fn signed_query(&self) -> Option<SignedQuery> {
        match *self {
            ClientMessage::GetAccount {
                account,
                requester,
                signature,
                ..
            } => Some(SignedQuery {
                query: Query::Account(AccountId(account)),
                requester,
                signature,
            }),
            ClientMessage::GetPayouts {
                after,
                requester,
                signature,
                ..
            } => Some(SignedQuery {
                query: Query::Payouts { after },
                requester,
                signature,
            }),
            _ => None,
        }
    }
}

/// A market as the schedule announces it. 54 bytes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketInfo {
    /// The market id.
    pub id: u32,
    /// The asset bought and sold.
    pub base_asset: u32,
    /// The asset prices are paid in.
    pub quote_asset: u32,
    /// Quote units per lot for one tick of price.
    pub tick_size: u64,
    /// Base units per lot.
    pub lot_size: u64,
    /// Lowest limit price, in ticks.
    pub band_min: Tick,
    /// Highest limit price, in ticks.
    pub band_max: Tick,
    /// The current reference price, in ticks.
    pub reference_price: Tick,
    /// Fee per side, in basis points.
    pub fee_bps: u16,
}

/// The batch schedule, signed by the sequencer (see
/// [`schedule_signing_message`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Echoes the `GetSchedule`'s (not signed).
    pub request_id: u64,
    /// Unix time, in milliseconds, at which batch 0 opens.
    pub genesis_ms: u64,
    /// Length of every batch, in milliseconds.
    pub batch_length_ms: u64,
    /// The batch open when the schedule was made.
    pub open_batch: BatchId,
    /// The sequencer's Ed25519 public key (signs receipts, seals, schedules).
    pub sequencer_key: [u8; 32],
    /// Announced batch keys `(e, S_e)`, at most [`SCHEDULE_BATCH_KEYS_MAX`].
    pub batch_keys: Vec<(BatchId, [u8; 32])>,
    /// The configured markets, at most [`WIRE_MARKETS_MAX`](super::WIRE_MARKETS_MAX).
    pub markets: Vec<MarketInfo>,
    /// The replicas of a replicated sequencer (`spec/replication.md`), in
    /// ascending id, at most [`SCHEDULE_REPLICAS_MAX`](super::SCHEDULE_REPLICAS_MAX);
    /// empty for a single node.
    pub replicas: Vec<ReplicaInfo>,
    /// Ed25519 signature by `sequencer_key` over
    /// [`schedule_signing_message`].
    pub signature: [u8; 64],
}

impl Schedule {
    /// The deployment the schedule is of: its sequencer key and batch clock
    /// ([`DeploymentId`](crate::envelope::DeploymentId)); bundles sealed
    /// from this schedule are signed for it.
    #[must_use]
    pub fn deployment(&self) -> crate::envelope::DeploymentId {
        crate::envelope::DeploymentId::new(&self.sequencer_key, &self.clock())
    }

    /// The batch clock the schedule states.
    #[must_use]
    pub fn clock(&self) -> crate::envelope::BatchSchedule {
        crate::envelope::BatchSchedule {
            genesis_ms: self.genesis_ms,
            batch_length_ms: self.batch_length_ms,
        }
    }
}

/// A replica as the schedule lists it: where its clients connect and the
/// certificate it presents there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// Its id in the cluster.
    pub id: u64,
    /// Its clients' address (`host:port`), 1 to
    /// [`REPLICA_ADDRESS_LEN_MAX`](super::REPLICA_ADDRESS_LEN_MAX) bytes of UTF-8.
    pub address: String,
    /// The SHA-256 of its certificate.
    pub fingerprint: [u8; 32],
}

/// A batch's seal, with inclusion proofs for the subscriber's envelopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSealed {
    /// The encoded signed seal (`spec/envelope.md` §13).
    pub seal: [u8; SEAL_LEN],
    /// `(commitment, encoded inclusion proof)` for each envelope this
    /// subscriber submitted to the batch on its connection; at most
    /// [`SUBSCRIBER_ENVELOPES_MAX`], each proof at most [`PROOF_LEN_MAX`] bytes.
    pub proofs: Vec<([u8; 32], Vec<u8>)>,
}

/// One market's result in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketLine {
    /// The market id.
    pub market: u32,
    /// The clearing price in ticks, `None` if nothing crossed.
    pub price: Option<Tick>,
    /// Lots traded.
    pub volume: u64,
    /// Demand minus supply at the clearing price, in lots.
    pub imbalance: i128,
}

/// The outcome of one of the subscriber's envelopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnEnvelope {
    /// The envelope's commitment.
    pub commitment: [u8; 32],
    /// 0 accepted, else the rejection code (`spec/sequencer.md`).
    pub status: u8,
    /// The rejection's detail (0 when accepted).
    pub detail: u32,
    /// `(order index in the bundle, lots filled)` for each order with a
    /// fill, at most [`FILLS_MAX`].
    pub fills: Vec<(u16, u64)>,
}

/// A batch's published result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchCleared {
    /// The batch.
    pub e: BatchId,
    /// The seal's Merkle root.
    pub root: [u8; 32],
    /// The released batch secret `s_e`, so anyone can re-open the batch.
    pub batch_secret: [u8; 32],
    /// Under a keyper committee, at least `t` keypers' attestations that
    /// they released their shares for the seal `(e, envelopes, root)`,
    /// ascending by keyper (`spec/keyper.md` §9); empty with the embedded
    /// custodian. A client refuses a committee's result without them.
    pub release: Vec<crate::envelope::ReleaseAttestation>,
    /// Envelopes in the batch.
    pub envelopes: u32,
    /// Envelopes accepted (funded).
    pub accepted: u32,
    /// Every configured market's result, at most
    /// [`WIRE_MARKETS_MAX`](super::WIRE_MARKETS_MAX).
    pub markets: Vec<MarketLine>,
    /// The subscriber's envelopes' outcomes, at most [`SUBSCRIBER_ENVELOPES_MAX`].
    pub own: Vec<OwnEnvelope>,
}

/// Why a request was refused: the code of a `Rejected` or an `Error`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, strum::FromRepr, strum::EnumIter,
)]
#[repr(u8)]
pub enum ReasonCode {
    /// The envelope's shape is wrong.
    Malformed = 1,
    /// The envelope's batch is closed.
    BatchClosed = 2,
    /// The envelope's batch is not announced yet.
    NotAnnounced = 3,
    /// The envelope's batch holds all the envelopes or bytes it may.
    BatchFull = 4,
    /// Reserved: a version-1 server answers a duplicate envelope with its
    /// receipt again (`spec/wire.md` §5) and never sends this code.
    Duplicate = 5,
    /// The sequencer is overloaded; retry later.
    Busy = 6,
    /// A frame or protocol error (the server closes the connection after it).
    Protocol = 7,
    /// This connection submitted all the envelopes it may to this batch.
    ConnectionQuota = 8,
    /// The request is for operators (or demo mode) only.
    OperatorOnly = 9,
    /// The request is well-formed but cannot be done (e.g. a deposit that
    /// would overflow a balance).
    InvalidRequest = 10,
    /// The server failed for a reason of its own.
    Internal = 11,
    /// A signature is wrong, or the key that made it may not ask this.
    Unauthorized = 12,
    /// A withdrawal's sequence number is not the account's next: a request
    /// taken before (replayed), or one that skips a number.
    Replayed = 13,
    /// This replica does not lead the cluster: ask the leader
    /// (`spec/replication.md`, "Clients").
    NotLeader = 14,
}

impl ReasonCode {
    /// The code's byte.
    #[must_use]
    pub const fn to_byte(self) -> u8 {
        self as u8
    }

    /// The code of a byte, if it is one.
    #[must_use]
    pub const fn from_byte(byte: u8) -> Option<ReasonCode> {
        ReasonCode::from_repr(byte)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReasonCode::Malformed => "malformed envelope",
            ReasonCode::BatchClosed => "batch closed",
            ReasonCode::NotAnnounced => "batch not announced",
            ReasonCode::BatchFull => "batch full",
            ReasonCode::Duplicate => "duplicate envelope",
            ReasonCode::Busy => "busy",
            ReasonCode::Protocol => "protocol error",
            ReasonCode::ConnectionQuota => "too many envelopes on this connection for this batch",
            ReasonCode::OperatorOnly => "operator only",
            ReasonCode::InvalidRequest => "invalid request",
            ReasonCode::Internal => "internal error",
            ReasonCode::Unauthorized => "unauthorized",
            ReasonCode::Replayed => "replayed or out-of-order withdrawal",
            ReasonCode::NotLeader => "not the leader",
        })
    }
}

/// A message from the sequencer to a client: a reply (carrying the request's
/// id) or a subscription push (`BatchOpened`, `BatchSealed`, `BatchCleared`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// The signed schedule. Type `0x81`.
    Schedule(Schedule),
    /// An envelope's signed receipt. Type `0x82`.
    Receipt {
        /// The `Submit`'s.
        request_id: u64,
        /// The encoded receipt of `spec/envelope.md` §12 (its group's
        /// signed root and its path), at most [`RECEIPT_LEN_MAX`] bytes;
        /// decoding refuses one whose length its sibling count does not
        /// give.
        receipt: Vec<u8>,
    },
    /// A refused envelope. Type `0x83`.
    Rejected {
        /// The `Submit`'s.
        request_id: u64,
        /// Why.
        code: ReasonCode,
        /// The batch open when refused (0 where it means nothing).
        next_open: BatchId,
        /// For [`ReasonCode::Busy`]: milliseconds to wait before submitting
        /// again (admission control); 0 otherwise.
        retry_after_ms: u32,
        /// Human-readable detail, at most [`TEXT_LEN_MAX`] bytes.
        message: String,
    },
    /// A batch opened. Type `0x84`.
    BatchOpened {
        /// The batch.
        e: BatchId,
        /// Its public key `S_e`.
        public_key: [u8; 32],
        /// Unix time, in milliseconds, at which it closes.
        close_ms: u64,
    },
    /// A batch was sealed. Type `0x85`.
    BatchSealed(BatchSealed),
    /// A batch was cleared. Type `0x86`.
    BatchCleared(BatchCleared),
    /// An account's balances. Type `0x87`.
    Account {
        /// The `GetAccount`'s.
        request_id: u64,
        /// The account.
        account: [u8; 32],
        /// The sequence number the account's next withdrawal must carry.
        next_withdrawal: u64,
        /// `(asset, units)` in ascending asset order, at most
        /// [`ACCOUNT_BALANCES_MAX`].
        balances: Vec<(u32, u64)>,
    },
    /// A request done (a `Deposit`, an `OperatorDeposit`, an
    /// `AcknowledgePayout`, a `Subscribe`). Type `0x88`.
    Ack {
        /// The request's.
        request_id: u64,
    },
    /// A request refused. Type `0x89`.
    Error {
        /// The request's (0 if the frame could not be read).
        request_id: u64,
        /// Why.
        code: ReasonCode,
        /// Human-readable detail, at most [`TEXT_LEN_MAX`] bytes.
        message: String,
    },
    /// A withdrawal taken and durable. Type `0x8a`.
    Withdrawn {
        /// The `Withdraw`'s.
        request_id: u64,
        /// The id the sequencer gave it (its payout is acknowledged by it).
        id: u64,
    },
    /// Withdrawals awaiting payout, ascending by id. Type `0x8b`.
    Payouts {
        /// The `GetPayouts`'s.
        request_id: u64,
        /// At most [`PAYOUTS_MAX`], each with the trader's signed request.
        withdrawals: Vec<Withdrawal>,
        /// Whether more follow the last (ask again with its id as `after`).
        more: bool,
    },
    /// The keyper committee holding the batch keys (`None`: the embedded
    /// custodian, trusted-operator mode) and its certificates over the
    /// windows of the announced batches. Type `0x8c`.
    KeyCertificates {
        /// The `GetKeyCertificates`'s.
        request_id: u64,
        /// The committee.
        committee: Option<Committee>,
        /// At most [`KEY_CERTIFICATES_MAX`], ascending by first batch.
        certificates: Vec<WindowCertificate>,
    },
}

impl ServerMessage {
    /// The request this message answers; `None` for a subscription push.
    #[must_use]
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ServerMessage::Schedule(Schedule { request_id, .. })
            | ServerMessage::Receipt { request_id, .. }
            | ServerMessage::Rejected { request_id, .. }
            | ServerMessage::Account { request_id, .. }
            | ServerMessage::Ack { request_id }
            | ServerMessage::Error { request_id, .. }
            | ServerMessage::Withdrawn { request_id, .. }
            | ServerMessage::Payouts { request_id, .. }
            | ServerMessage::KeyCertificates { request_id, .. } => Some(*request_id),
            ServerMessage::BatchOpened { .. }
            | ServerMessage::BatchSealed(_)
            | ServerMessage::BatchCleared(_) => None,
        }
    }
}

/// The exact bytes the sequencer signs (Ed25519, strict verification) for a
/// schedule, and every client verifies:
///
/// ```text
/// u8(21) ‖ "sealbatch v1 schedule"
/// ‖ u64le(genesis_ms) ‖ u64le(batch_length_ms) ‖ u64le(open_batch)
/// ‖ sequencer_key (32)
/// ‖ u32le(k) ‖ k × (u64le(e) ‖ S_e (32))
/// ‖ u32le(m) ‖ m × market (54 bytes, as on the wire)
/// ```
///
/// These are the schedule's fields as encoded on the wire, without
/// `request_id` and `signature`, after the length-prefixed domain string.
/// A schedule whose counts exceed their bounds cannot be encoded; its signing
/// message is still defined (counts saturate at `u32::MAX`).
#[must_use]
pub fn schedule_signing_message(schedule: &Schedule) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        1 + SCHEDULE_DOMAIN.len()
            + 3 * 8
            + 32
            + 8
            + schedule.batch_keys.len() * 40
            + schedule.markets.len() * MARKET_INFO_LEN
            + 4
            + schedule
                .replicas
                .iter()
                .map(|r| 8 + 1 + r.address.len() + 32)
                .sum::<usize>(),
    );
    out.put_u8(SCHEDULE_DOMAIN.len() as u8);
    out.extend_from_slice(SCHEDULE_DOMAIN.as_bytes());
    put_schedule_signed_fields(schedule, &mut out);
    out
}

const _: () = assert!(SCHEDULE_DOMAIN.len() <= u8::MAX as usize);

fn put_schedule_signed_fields(s: &Schedule, out: &mut Vec<u8>) {
    out.put_u64(s.genesis_ms);
    out.put_u64(s.batch_length_ms);
    out.put_u64(s.open_batch.get());
    out.extend_from_slice(&s.sequencer_key);
    out.put_u32(saturating_u32(s.batch_keys.len()));
    for (e, key) in &s.batch_keys {
        out.put_u64(e.get());
        out.extend_from_slice(key);
    }
    out.put_u32(saturating_u32(s.markets.len()));
    for m in &s.markets {
        out.put_u32(m.id);
        out.put_u32(m.base_asset);
        out.put_u32(m.quote_asset);
        out.put_u64(m.tick_size);
        out.put_u64(m.lot_size);
        out.put_u64(m.band_min.get());
        out.put_u64(m.band_max.get());
        out.put_u64(m.reference_price.get());
        out.put_u16(m.fee_bps);
    }
    out.put_u32(saturating_u32(s.replicas.len()));
    for r in &s.replicas {
        out.put_u64(r.id);
        // A longer address cannot be encoded (checked there); its signing
        // message keeps the first 255 bytes.
        let address = &r.address.as_bytes()[..r.address.len().min(u8::MAX as usize)];
        out.put_u8(address.len() as u8);
        out.extend_from_slice(address);
        out.extend_from_slice(&r.fingerprint);
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Checks a count or length against its bound.
fn bound(field: &'static str, value: usize, max: usize) -> Result<(), EncodeError> {
    if value > max {
        return Err(EncodeError::TooLarge { field, value, max });
    }
    Ok(())
}

/// Appends a bounded `u32` count.
fn put_count(
    out: &mut Vec<u8>,
    field: &'static str,
    count: usize,
    max: usize,
) -> Result<(), EncodeError> {
    bound(field, count, max)?;
    out.put_u32(saturating_u32(count));
    Ok(())
}

/// Appends a bounded `u32`-length-prefixed byte string.
fn put_bytes(
    out: &mut Vec<u8>,
    field: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<(), EncodeError> {
    put_count(out, field, bytes.len(), max)?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// A `Vec` with room for `count` entries of at least `entry_len` bytes each,
/// but never more than the bytes left could hold.
fn bounded_vec<T>(count: usize, entry_len: usize, reader: &Reader<'_>) -> Vec<T> {
    Vec::with_capacity(count.min(reader.remaining() / entry_len.max(1)))
}

fn read_text(reader: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let offset = reader.offset();
    let bytes = reader.blob(field, TEXT_LEN_MAX)?;
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => Err(reader.invalid(field, offset)),
    }
}

fn read_code(reader: &mut Reader<'_>) -> Result<ReasonCode, DecodeError> {
    let offset = reader.offset();
    let byte = reader.u8("code")?;
    ReasonCode::from_byte(byte).ok_or_else(|| reader.invalid("code", offset))
}

impl Message for ClientMessage {
    const DIRECTION: Direction = Direction::ClientToServer;
    const FRAME_LEN_MAX: usize = CLIENT_FRAME_LEN_MAX;

    fn is_known_type(type_byte: u8) -> bool {
        (client_type::GET_SCHEDULE..=client_type::GET_KEY_CERTIFICATES).contains(&type_byte)
    }

    fn type_byte(&self) -> u8 {
        match self {
            ClientMessage::GetSchedule { .. } => client_type::GET_SCHEDULE,
            ClientMessage::Submit { .. } => client_type::SUBMIT,
            ClientMessage::Subscribe { .. } => client_type::SUBSCRIBE,
            ClientMessage::GetAccount { .. } => client_type::GET_ACCOUNT,
            ClientMessage::Deposit { .. } => client_type::DEPOSIT,
            ClientMessage::Withdraw { .. } => client_type::WITHDRAW,
            ClientMessage::OperatorDeposit { .. } => client_type::OPERATOR_DEPOSIT,
            ClientMessage::GetPayouts { .. } => client_type::GET_PAYOUTS,
            ClientMessage::AcknowledgePayout { .. } => client_type::ACKNOWLEDGE_PAYOUT,
            ClientMessage::GetKeyCertificates { .. } => client_type::GET_KEY_CERTIFICATES,
        }
    }

    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.put_u64(self.request_id());
        match self {
            ClientMessage::GetSchedule { .. }
            | ClientMessage::Subscribe { .. }
            | ClientMessage::GetKeyCertificates { .. } => {}
            ClientMessage::Submit { envelope, .. } => {
                put_bytes(out, "envelope", envelope, ENVELOPE_LEN_MAX)?;
            }
            ClientMessage::GetAccount {
                account,
                requester,
                signature,
                ..
            } => {
                out.extend_from_slice(account);
                out.extend_from_slice(requester);
                out.extend_from_slice(signature);
            }
            ClientMessage::GetPayouts {
                after,
                requester,
                signature,
                ..
            } => {
                out.put_u64(*after);
                out.extend_from_slice(requester);
                out.extend_from_slice(signature);
            }
            ClientMessage::Withdraw { withdrawal, .. } => {
                short_field(
                    "destination",
                    &withdrawal.statement.destination,
                    crate::signed::DESTINATION_LEN_MAX,
                )?;
                withdrawal.encode_into(out);
            }
            ClientMessage::AcknowledgePayout { payout, .. } => {
                short_field("reference", &payout.statement.reference, REFERENCE_LEN_MAX)?;
                payout.encode_into(out);
            }
            ClientMessage::Deposit {
                account,
                asset,
                amount,
                ..
            } => {
                out.extend_from_slice(account);
                out.put_u32(*asset);
                out.put_u64(*amount);
            }
            ClientMessage::OperatorDeposit { deposit, .. } => {
                let s = &deposit.statement;
                out.extend_from_slice(&s.operator);
                out.extend_from_slice(&s.account.0);
                out.put_u32(s.asset.0);
                out.put_u64(s.amount);
                short_field("reference", &s.reference, REFERENCE_LEN_MAX)?;
                crate::signed::put_short(out, &s.reference);
                out.extend_from_slice(&deposit.signature);
            }
        }
        Ok(())
    }

    fn decode_fields(type_byte: u8, r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let request_id = r.u64("request_id")?;
        Ok(match type_byte {
            client_type::GET_SCHEDULE => ClientMessage::GetSchedule { request_id },
            client_type::SUBMIT => ClientMessage::Submit {
                request_id,
                envelope: r.blob("envelope", ENVELOPE_LEN_MAX)?.to_vec(),
            },
            client_type::SUBSCRIBE => ClientMessage::Subscribe { request_id },
            client_type::GET_KEY_CERTIFICATES => ClientMessage::GetKeyCertificates { request_id },
            client_type::GET_ACCOUNT => ClientMessage::GetAccount {
                request_id,
                account: r.array("account")?,
                requester: r.array("requester")?,
                signature: r.array("signature")?,
            },
            client_type::GET_PAYOUTS => ClientMessage::GetPayouts {
                request_id,
                after: r.u64("after")?,
                requester: r.array("requester")?,
                signature: r.array("signature")?,
            },
            client_type::ACKNOWLEDGE_PAYOUT => ClientMessage::AcknowledgePayout {
                request_id,
                payout: SignedPayout::decode_from(r)?,
            },
            client_type::DEPOSIT => ClientMessage::Deposit {
                request_id,
                account: r.array("account")?,
                asset: r.u32("asset")?,
                amount: r.u64("amount")?,
            },
            client_type::WITHDRAW => ClientMessage::Withdraw {
                request_id,
                withdrawal: SignedWithdrawal::decode_from(r)?,
            },
            client_type::OPERATOR_DEPOSIT => ClientMessage::OperatorDeposit {
                request_id,
                deposit: SignedDeposit {
                    statement: DepositStatement {
                        operator: r.array("operator")?,
                        account: AccountId(r.array("account")?),
                        asset: AssetId(r.u32("asset")?),
                        amount: r.u64("amount")?,
                        reference: crate::signed::read_short(r, "reference", REFERENCE_LEN_MAX)?,
                    },
                    signature: r.array("signature")?,
                },
            },
            _ => {
                return Err(FrameError::UnknownType {
                    type_byte,
                    direction: Self::DIRECTION,
                });
            }
        })
    }
}

impl Message for ServerMessage {
    const DIRECTION: Direction = Direction::ServerToClient;
    const FRAME_LEN_MAX: usize = FRAME_LEN_MAX;

    fn is_known_type(type_byte: u8) -> bool {
        (server_type::SCHEDULE..=server_type::KEY_CERTIFICATES).contains(&type_byte)
    }

    fn type_byte(&self) -> u8 {
        match self {
            ServerMessage::Schedule(_) => server_type::SCHEDULE,
            ServerMessage::Receipt { .. } => server_type::RECEIPT,
            ServerMessage::Rejected { .. } => server_type::REJECTED,
            ServerMessage::BatchOpened { .. } => server_type::BATCH_OPENED,
            ServerMessage::BatchSealed(_) => server_type::BATCH_SEALED,
            ServerMessage::BatchCleared(_) => server_type::BATCH_CLEARED,
            ServerMessage::Account { .. } => server_type::ACCOUNT,
            ServerMessage::Ack { .. } => server_type::ACK,
            ServerMessage::Error { .. } => server_type::ERROR,
            ServerMessage::Withdrawn { .. } => server_type::WITHDRAWN,
            ServerMessage::Payouts { .. } => server_type::PAYOUTS,
            ServerMessage::KeyCertificates { .. } => server_type::KEY_CERTIFICATES,
        }
    }

    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            ServerMessage::Schedule(s) => {
                bound("batch_keys", s.batch_keys.len(), SCHEDULE_BATCH_KEYS_MAX)?;
                bound("markets", s.markets.len(), WIRE_MARKETS_MAX)?;
                bound("replicas", s.replicas.len(), SCHEDULE_REPLICAS_MAX)?;
                for r in &s.replicas {
                    short_field(
                        "replica.address",
                        r.address.as_bytes(),
                        REPLICA_ADDRESS_LEN_MAX,
                    )?;
                }
                out.put_u64(s.request_id);
                put_schedule_signed_fields(s, out);
                out.extend_from_slice(&s.signature);
            }
            ServerMessage::Receipt {
                request_id,
                receipt,
            } => {
                out.put_u64(*request_id);
                put_bytes(out, "receipt", receipt, RECEIPT_LEN_MAX)?;
            }
            ServerMessage::Rejected {
                request_id,
                code,
                next_open,
                retry_after_ms,
                message,
            } => {
                out.put_u64(*request_id);
                out.put_u8(code.to_byte());
                out.put_u64(next_open.get());
                out.put_u32(*retry_after_ms);
                put_bytes(out, "message", message.as_bytes(), TEXT_LEN_MAX)?;
            }
            ServerMessage::BatchOpened {
                e,
                public_key,
                close_ms,
            } => {
                out.put_u64(e.get());
                out.extend_from_slice(public_key);
                out.put_u64(*close_ms);
            }
            ServerMessage::BatchSealed(s) => {
                out.extend_from_slice(&s.seal);
                put_count(out, "proofs", s.proofs.len(), SUBSCRIBER_ENVELOPES_MAX)?;
                for (commitment, proof) in &s.proofs {
                    out.extend_from_slice(commitment);
                    put_bytes(out, "proof", proof, PROOF_LEN_MAX)?;
                }
            }
            ServerMessage::BatchCleared(c) => {
                out.put_u64(c.e.get());
                out.extend_from_slice(&c.root);
                out.extend_from_slice(&c.batch_secret);
                if c.release.len() > crate::keyper::COMMITTEE_MAX {
                    return Err(EncodeError::TooLarge {
                        field: "release",
                        value: c.release.len(),
                        max: crate::keyper::COMMITTEE_MAX,
                    });
                }
                crate::keyper::attestation::encode_attestations(out, &c.release);
                out.put_u32(c.envelopes);
                out.put_u32(c.accepted);
                put_count(out, "markets", c.markets.len(), WIRE_MARKETS_MAX)?;
                for line in &c.markets {
                    out.put_u32(line.market);
                    match line.price {
                        None => out.put_u8(0),
                        Some(price) => {
                            out.put_u8(1);
                            out.put_u64(price.get());
                        }
                    }
                    out.put_u64(line.volume);
                    out.put_i128(line.imbalance);
                }
                put_count(out, "own", c.own.len(), SUBSCRIBER_ENVELOPES_MAX)?;
                for own in &c.own {
                    out.extend_from_slice(&own.commitment);
                    out.put_u8(own.status);
                    out.put_u32(own.detail);
                    put_count(out, "fills", own.fills.len(), FILLS_MAX)?;
                    for (index, filled) in &own.fills {
                        out.put_u16(*index);
                        out.put_u64(*filled);
                    }
                }
            }
            ServerMessage::Account {
                request_id,
                account,
                next_withdrawal,
                balances,
            } => {
                out.put_u64(*request_id);
                out.extend_from_slice(account);
                out.put_u64(*next_withdrawal);
                put_count(out, "balances", balances.len(), ACCOUNT_BALANCES_MAX)?;
                for (asset, amount) in balances {
                    out.put_u32(*asset);
                    out.put_u64(*amount);
                }
            }
            ServerMessage::Ack { request_id } => out.put_u64(*request_id),
            ServerMessage::Error {
                request_id,
                code,
                message,
            } => {
                out.put_u64(*request_id);
                out.put_u8(code.to_byte());
                put_bytes(out, "message", message.as_bytes(), TEXT_LEN_MAX)?;
            }
            ServerMessage::Withdrawn { request_id, id } => {
                out.put_u64(*request_id);
                out.put_u64(*id);
            }
            ServerMessage::Payouts {
                request_id,
                withdrawals,
                more,
            } => {
                out.put_u64(*request_id);
                put_count(out, "withdrawals", withdrawals.len(), PAYOUTS_MAX)?;
                for w in withdrawals {
                    out.put_u64(w.id);
                    w.signed.encode_into(out);
                }
                out.put_u8(u8::from(*more));
            }
            ServerMessage::KeyCertificates {
                request_id,
                committee,
                certificates,
            } => {
                out.put_u64(*request_id);
                match committee {
                    None => out.put_u8(0),
                    Some(committee) => {
                        out.put_u8(1);
                        out.extend_from_slice(&committee.to_bytes());
                    }
                }
                put_count(
                    out,
                    "certificates",
                    certificates.len(),
                    KEY_CERTIFICATES_MAX,
                )?;
                for certificate in certificates {
                    certificate.encode_into(out);
                }
            }
        }
        Ok(())
    }

    fn decode_fields(type_byte: u8, r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(match type_byte {
            server_type::SCHEDULE => ServerMessage::Schedule(decode_schedule(r)?),
            server_type::RECEIPT => ServerMessage::Receipt {
                request_id: r.u64("request_id")?,
                receipt: {
                    let at = r.offset();
                    let receipt = r.blob("receipt", RECEIPT_LEN_MAX)?;
                    if crate::envelope::Receipt::encoded_len(receipt) != Ok(receipt.len()) {
                        return Err(r.invalid("receipt", at).into());
                    }
                    receipt.to_vec()
                },
            },
            server_type::REJECTED => ServerMessage::Rejected {
                request_id: r.u64("request_id")?,
                code: read_code(r)?,
                next_open: BatchId(r.u64("next_open")?),
                retry_after_ms: r.u32("retry_after_ms")?,
                message: read_text(r, "message")?,
            },
            server_type::BATCH_OPENED => ServerMessage::BatchOpened {
                e: BatchId(r.u64("e")?),
                public_key: r.array("public_key")?,
                close_ms: r.u64("close_ms")?,
            },
            server_type::BATCH_SEALED => ServerMessage::BatchSealed(decode_sealed(r)?),
            server_type::BATCH_CLEARED => ServerMessage::BatchCleared(decode_cleared(r)?),
            server_type::ACCOUNT => {
                let request_id = r.u64("request_id")?;
                let account = r.array("account")?;
                let next_withdrawal = r.u64("next_withdrawal")?;
                let count = r.count("balances", ACCOUNT_BALANCES_MAX)?;
                let mut balances = bounded_vec(count, 12, r);
                for _ in 0..count {
                    balances.push((r.u32("asset")?, r.u64("balance")?));
                }
                ServerMessage::Account {
                    request_id,
                    account,
                    next_withdrawal,
                    balances,
                }
            }
            server_type::WITHDRAWN => ServerMessage::Withdrawn {
                request_id: r.u64("request_id")?,
                id: r.u64("id")?,
            },
            server_type::PAYOUTS => {
                let request_id = r.u64("request_id")?;
                let count = r.count("withdrawals", PAYOUTS_MAX)?;
                let mut withdrawals = bounded_vec(count, 126, r);
                for _ in 0..count {
                    withdrawals.push(Withdrawal {
                        id: r.u64("withdrawal.id")?,
                        signed: SignedWithdrawal::decode_from(r)?,
                    });
                }
                let offset = r.offset();
                let more = match r.u8("more")? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.invalid("more", offset).into()),
                };
                ServerMessage::Payouts {
                    request_id,
                    withdrawals,
                    more,
                }
            }
            server_type::KEY_CERTIFICATES => {
                let request_id = r.u64("request_id")?;
                let offset = r.offset();
                let committee = match r.u8("committee flag")? {
                    0 => None,
                    1 => Some(Committee::decode_from(r)?),
                    _ => return Err(r.invalid("committee flag", offset).into()),
                };
                let count = r.count("certificates", KEY_CERTIFICATES_MAX)?;
                let mut certificates = bounded_vec(count, 60, r);
                for _ in 0..count {
                    certificates.push(WindowCertificate::decode_from(r)?);
                }
                ServerMessage::KeyCertificates {
                    request_id,
                    committee,
                    certificates,
                }
            }
            server_type::ACK => ServerMessage::Ack {
                request_id: r.u64("request_id")?,
            },
            server_type::ERROR => ServerMessage::Error {
                request_id: r.u64("request_id")?,
                code: read_code(r)?,
                message: read_text(r, "message")?,
            },
            _ => {
                return Err(FrameError::UnknownType {
                    type_byte,
                    direction: Self::DIRECTION,
                });
            }
        })
    }
}

/// Checks a `u8`-length-prefixed field: 1 to `max` bytes.
fn short_field(field: &'static str, bytes: &[u8], max: usize) -> Result<(), EncodeError> {
    if bytes.is_empty() {
        return Err(EncodeError::Empty { field });
    }
    bound(field, bytes.len(), max)
}

fn decode_schedule(r: &mut Reader<'_>) -> Result<Schedule, DecodeError> {
    let request_id = r.u64("request_id")?;
    let genesis_ms = r.u64("genesis_ms")?;
    let batch_length_ms = r.u64("batch_length_ms")?;
    let open_batch = BatchId(r.u64("open_batch")?);
    let sequencer_key = r.array("sequencer_key")?;
    let count = r.count("batch_keys", SCHEDULE_BATCH_KEYS_MAX)?;
    let mut batch_keys = bounded_vec(count, 40, r);
    for _ in 0..count {
        batch_keys.push((BatchId(r.u64("batch_key.e")?), r.array("batch_key.key")?));
    }
    let count = r.count("markets", WIRE_MARKETS_MAX)?;
    let mut markets = bounded_vec(count, MARKET_INFO_LEN, r);
    for _ in 0..count {
        markets.push(MarketInfo {
            id: r.u32("market.id")?,
            base_asset: r.u32("market.base_asset")?,
            quote_asset: r.u32("market.quote_asset")?,
            tick_size: r.u64("market.tick_size")?,
            lot_size: r.u64("market.lot_size")?,
            band_min: Tick(r.u64("market.band_min")?),
            band_max: Tick(r.u64("market.band_max")?),
            reference_price: Tick(r.u64("market.reference_price")?),
            fee_bps: r.u16("market.fee_bps")?,
        });
    }
    let count = r.count("replicas", SCHEDULE_REPLICAS_MAX)?;
    let mut replicas = bounded_vec(count, 8 + 1 + 1 + 32, r);
    for _ in 0..count {
        let id = r.u64("replica.id")?;
        let offset = r.offset();
        let len = usize::from(r.u8("replica.address")?);
        let address = r.bytes(len, "replica.address")?;
        let address = match std::str::from_utf8(address) {
            Ok(text) if len > 0 => text.to_owned(),
            _ => return Err(r.invalid("replica.address", offset)),
        };
        replicas.push(ReplicaInfo {
            id,
            address,
            fingerprint: r.array("replica.fingerprint")?,
        });
    }
    let signature = r.array("signature")?;
    Ok(Schedule {
        request_id,
        genesis_ms,
        batch_length_ms,
        open_batch,
        sequencer_key,
        batch_keys,
        markets,
        replicas,
        signature,
    })
}

fn decode_sealed(r: &mut Reader<'_>) -> Result<BatchSealed, DecodeError> {
    let seal = r.array("seal")?;
    let count = r.count("proofs", SUBSCRIBER_ENVELOPES_MAX)?;
    let mut proofs = bounded_vec(count, 36, r);
    for _ in 0..count {
        let commitment = r.array("proof.commitment")?;
        let proof = r.blob("proof", PROOF_LEN_MAX)?.to_vec();
        proofs.push((commitment, proof));
    }
    Ok(BatchSealed { seal, proofs })
}

fn decode_cleared(r: &mut Reader<'_>) -> Result<BatchCleared, DecodeError> {
    let e = BatchId(r.u64("e")?);
    let root = r.array("root")?;
    let batch_secret = r.array("batch_secret")?;
    let release = crate::keyper::attestation::decode_attestations(r)?;
    let envelopes = r.u32("envelopes")?;
    let accepted = r.u32("accepted")?;
    let count = r.count("markets", WIRE_MARKETS_MAX)?;
    let mut markets = bounded_vec(count, 29, r);
    for _ in 0..count {
        let market = r.u32("market_line.market")?;
        let offset = r.offset();
        let price = match r.u8("market_line.price")? {
            0 => None,
            1 => Some(Tick(r.u64("market_line.price")?)),
            _ => return Err(r.invalid("market_line.price", offset)),
        };
        markets.push(MarketLine {
            market,
            price,
            volume: r.u64("market_line.volume")?,
            imbalance: r.i128("market_line.imbalance")?,
        });
    }
    let count = r.count("own", SUBSCRIBER_ENVELOPES_MAX)?;
    let mut own = bounded_vec(count, 41, r);
    for _ in 0..count {
        let commitment = r.array("own.commitment")?;
        let status = r.u8("own.status")?;
        let detail = r.u32("own.detail")?;
        let fills_count = r.count("own.fills", FILLS_MAX)?;
        let mut fills = bounded_vec(fills_count, 10, r);
        for _ in 0..fills_count {
            fills.push((r.u16("fill.index")?, r.u64("fill.filled")?));
        }
        own.push(OwnEnvelope {
            commitment,
            status,
            detail,
            fills,
        });
    }
    Ok(BatchCleared {
        e,
        root,
        batch_secret,
        release,
        envelopes,
        accepted,
        markets,
        own,
    })
}

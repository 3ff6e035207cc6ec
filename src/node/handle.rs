//! What the connections and the driver thread send each other: the
//! [`DriverHandle`] a connection holds, the [`Request`]s and [`Control`]
//! messages it sends, and the [`Outbound`] messages it gets back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tokio::sync::mpsc;

use crate::envelope::{Commitment, ReceiptGroup, Rejection, SequencerKey, ShapedEnvelope};
use crate::keyper::{KeyperIndex, LogEntry, Prechecked};
use crate::sequencer::OpenedJob;
use crate::signed::SignedQuery;
use crate::types::BatchId;
use crate::wire::{ClientMessage, ServerMessage};

use super::schedule::ScheduleCache;

/// Identifies one bidirectional stream (a client session).
pub type SessionId = u64;
/// Identifies one QUIC connection.
pub type ConnId = u64;

/// A control message to the driver thread.
#[derive(Debug)]
pub enum Control {
    /// A session opened; replies and pushes go to `out`.
    Open {
        /// The session.
        session: SessionId,
        /// Its connection.
        conn: ConnId,
        /// The connection's remote address.
        ip: IpAddr,
        /// Where its messages go.
        out: mpsc::Sender<Outbound>,
    },
    /// A session's stream ended.
    Close {
        /// The session.
        session: SessionId,
        /// `Some(n)`: the client finished its side after `n` of its
        /// requests were queued for the driver, which answers them all and
        /// then drops the session (its stream is then finished). `None`: the
        /// connection is gone or being closed; drop the session at once.
        after: Option<u64>,
    },
    /// A batch finished opening on the rayon pool: the job, how long it
    /// took, and the driver's epoch when it was handed out.
    Opened(OpenedJob, Duration, u64),
    /// This replica now leads the cluster in `term`, with every entry up
    /// to `applied` committed (`spec/replication.md`).
    Promote {
        /// Its term.
        term: u64,
        /// Its entries must be applied up to this one before it leads.
        applied: Option<openraft::LogId<crate::replica::ReplicaId>>,
    },
    /// This replica no longer leads.
    Demote,
    /// The replicated log failed: the replica stops.
    RaftFailed(String),
    /// Stop accepting, finish the batches in flight, flush and exit.
    Shutdown,
    /// A keyper link reads the committee's durable log from `from`.
    KeyperRead {
        /// The first position wanted.
        from: u64,
        /// Where the entries go (at most
        /// [`COMMITTEE_LOG_READ_MAX`](crate::sequencer::COMMITTEE_LOG_READ_MAX)).
        reply: tokio::sync::oneshot::Sender<Vec<(u64, LogEntry)>>,
    },
    /// A keyper's message for the committee's log (its sender is the
    /// link's authenticated keyper), its dealing checked on the link's
    /// blocking thread.
    KeyperPost(Box<Prechecked>),
    /// A keyper's share of a batch key.
    KeyperShare {
        /// The link's authenticated keyper.
        keyper: KeyperIndex,
        /// The batch.
        e: BatchId,
        /// The share.
        share: [u8; 32],
        /// The keyper's attestation of the seal it released for.
        attestation: [u8; 64],
    },
}

/// A client request to the driver thread.
#[derive(Debug)]
pub struct Request {
    /// The session it came on.
    pub session: SessionId,
    /// The request.
    pub body: RequestBody,
    /// When it was read.
    pub received: Instant,
}

/// What a [`Request`] asks.
#[derive(Debug)]
pub enum RequestBody {
    /// A client message, as decoded.
    Message(ClientMessage),
    /// A submission whose envelope the connection's task already
    /// shape-checked ([`ShapedEnvelope::for_header_batch`]), so the driver
    /// thread does not decode its point again.
    Submit {
        /// The client's request id.
        request_id: u64,
        /// The envelope, or why its shape is refused.
        envelope: Result<ShapedEnvelope, Rejection>,
    },
    /// A `GetAccount` or `GetPayouts` whose signature the connection's task
    /// verified for its connection (only it knows the connection's
    /// [`ChannelBinding`](crate::signed::ChannelBinding)); who may ask is
    /// the driver's to check.
    Query {
        /// The client's request id.
        request_id: u64,
        /// The verified query.
        query: SignedQuery,
    },
}

/// What the driver sends towards one session's stream.
#[derive(Debug)]
pub enum Outbound {
    /// A message, sent as is.
    Message(ServerMessage),
    /// A durable envelope's receipt: leaf `index` of a group made durable
    /// together, signed once by the first stream task that sends one of
    /// its receipts (off the driver thread), and sent as
    /// [`ServerMessage::Receipt`].
    Receipt {
        /// The submission's request id.
        request_id: u64,
        /// The receipts made durable together.
        group: Arc<DurableGroup>,
        /// This envelope's place in it.
        index: u32,
    },
}

/// The envelopes one group commit made durable (at most
/// [`RECEIPT_GROUP_MAX`](crate::envelope::RECEIPT_GROUP_MAX)), in the order
/// the sequencer receipted them, and their signed receipt group once a
/// stream task signed it (`spec/envelope.md` §12).
#[derive(Debug)]
pub struct DurableGroup {
    entries: Vec<(BatchId, Commitment)>,
    signed: std::sync::OnceLock<Option<ReceiptGroup>>,
}

impl DurableGroup {
    /// The group of `entries`, not signed yet.
    #[must_use]
    pub fn new(entries: Vec<(BatchId, Commitment)>) -> Self {
        DurableGroup {
            entries,
            signed: std::sync::OnceLock::new(),
        }
    }

    /// The encoded receipt of entry `index`, signing the group with `key`
    /// if no one did yet. A group the key cannot sign as one (none, or too
    /// many entries: the driver never makes one) gives each receipt its
    /// own group of one.
    #[must_use]
    pub fn receipt(&self, key: &SequencerKey, index: u32) -> Option<Vec<u8>> {
        let signed = self
            .signed
            .get_or_init(|| key.sign_receipts(&self.entries).ok());
        match signed {
            Some(group) => group.receipt(index).map(|r| r.to_bytes()),
            None => {
                let (e, commitment) = self.entries.get(usize::try_from(index).ok()?)?;
                Some(key.sign_receipt(*e, commitment).to_bytes())
            }
        }
    }
}

impl Outbound {
    /// The message to send, signing a receipt with `key`.
    #[must_use]
    pub fn into_message(self, key: &SequencerKey) -> ServerMessage {
        match self {
            Outbound::Message(message) => message,
            Outbound::Receipt {
                request_id,
                group,
                index,
            } => match group.receipt(key, index) {
                Some(receipt) => ServerMessage::Receipt {
                    request_id,
                    receipt,
                },
                // Never: the driver numbers a group's receipts from 0.
                None => ServerMessage::Error {
                    request_id,
                    code: crate::wire::ReasonCode::Internal,
                    message: "no receipt at this place of its group".into(),
                },
            },
        }
    }
}

/// The connection side's handle to the driver thread.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    /// Client requests (bounded).
    pub requests: Sender<Request>,
    /// Control messages (unbounded).
    pub control: Sender<Control>,
    /// The sequencer's key, with which each stream's task signs the receipts
    /// the driver releases ([`Outbound::Receipt`]).
    pub key: Arc<SequencerKey>,
    /// The signed schedule the driver keeps current, from which each stream's
    /// task answers `GetSchedule`.
    pub schedules: Arc<ScheduleCache>,
}

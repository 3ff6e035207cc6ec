//! The replicated sequencer: the journal's records as the entries of a Raft
//! log, kept by an embedded [openraft](https://docs.rs/openraft) on three or
//! more replicas (`spec/replication.md`).
//!
//! The leader's sequencer proposes each group of journal records it would
//! have written (a [`Proposal`]); an entry counts once a majority of
//! replicas has made it durable (committed), and only then does the leader
//! act on it — a receipt, a seal's key request, a published result — exactly
//! as a single node acts once its own journal is durable. Every replica
//! applies the committed entries, in order, to its local journal, which is
//! then byte for byte the journal a single node would have written: the
//! same LSNs, checkpoints, `verify` and transcripts.
//!
//! ```text
//!  leader driver ──Proposal──▶ openraft ──AppendEntries (QUIC)──▶ followers
//!        ▲                        │ committed                        │
//!        └── durable LSN ◀── state machine ──▶ local journal ◀───────┘
//! ```
//!
//! Layout: [`certificate`] the replicas' signatures over committed seals
//! that keypers require; [`codec`] the byte layouts of entries and Raft messages;
//! [`election`] when a replica stands for election;
//! [`log_store`] the Raft log on disk ([`LogStore`]); [`machine`] the state
//! machine over the local journal ([`StateMachine`]); [`network`] the
//! replica-to-replica QUIC transport, mutually authenticated by pinned
//! certificates.

pub mod certificate;
pub mod codec;
pub mod election;
pub mod log_store;
pub mod machine;
pub mod network;

use std::fmt;

use crate::types::Lsn;

pub use crate::role::{
    PROPOSAL_BYTES_MAX, PROPOSAL_RECORDS_MAX, Proposal, ProposalError, ReplicaId,
};

pub use log_store::LogStore;
pub use machine::StateMachine;

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;

use certificate::Attestor;
use election::{ElectionClock, ElectionTiming};
use network::{Network, Voter};

/// What one replica's replicated log is made of: [`start`] assembles it.
pub struct Parts {
    /// This replica's id.
    pub id: ReplicaId,
    /// openraft's configuration: `enable_elect` and `enable_heartbeat`
    /// off (this module's timer stands, [`start`]'s task sends the
    /// heartbeats); `heartbeat_interval` is the append timeout.
    pub config: Arc<openraft::Config>,
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// This replica's certificate and key.
    pub identity: Arc<crate::net::Identity>,
    /// The replica transport's endpoint (serving and dialling).
    pub endpoint: quinn::Endpoint,
    /// The Raft log.
    pub log: LogStore,
    /// The state machine over the journal.
    pub machine: StateMachine,
    /// Signs committed seals for keypers.
    pub attestor: Arc<Attestor>,
}

/// Starts a replica's Raft with its transport's server, its election
/// timer (with the pre-vote) and its heartbeats; returns Raft and the
/// network whose connections it keeps.
///
/// # Errors
///
/// openraft's, if Raft does not start.
pub async fn start(
    parts: Parts,
) -> Result<(Raft<Replication>, Network), openraft::error::Fatal<ReplicaId>> {
    let Parts {
        id,
        config,
        heartbeat,
        identity,
        endpoint,
        log,
        machine,
        attestor,
    } = parts;
    let clock = Arc::new(ElectionClock::new());
    let timing = ElectionTiming::of(&config);
    let network = Network::new(identity, endpoint.clone(), Arc::clone(&clock));
    let raft = Raft::new(id, config, network.clone(), log.clone(), machine).await?;
    tokio::spawn(network::serve(
        endpoint,
        raft.clone(),
        attestor,
        Voter {
            clock: Arc::clone(&clock),
            log: log.clone(),
            timing,
        },
    ));
    tokio::spawn(send_heartbeats(raft.clone(), heartbeat));
    tokio::spawn(election::run(
        raft.clone(),
        clock,
        timing,
        network.clone(),
        log,
    ));
    Ok((raft, network))
}

/// As the leader, has openraft send every follower a heartbeat every
/// `every` (an append without entries; merged with one under way);
/// returns when Raft stops.
async fn send_heartbeats(raft: Raft<Replication>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics = raft.metrics();
    loop {
        tick.tick().await;
        let leading = {
            let now = metrics.borrow();
            if now.running_state.is_err() {
                return;
            }
            now.state.is_leader()
        };
        if leading && raft.trigger().heartbeat().await.is_err() {
            return;
        }
    }
}

openraft::declare_raft_types!(
    /// The Raft types of the replicated sequencer: entries carry
    /// [`Proposal`]s, apply answers [`Applied`], members are
    /// [`ReplicaNode`]s, snapshots travel as bytes.
    pub Replication:
        D = Proposal,
        R = Applied,
        Node = ReplicaNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// What applying an entry gave: the last LSN it journaled (`None` for an
/// entry without records: a leader's blank entry, a membership change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The last LSN journaled.
    pub last_lsn: Option<Lsn>,
}

/// A replica as the cluster knows it: where its replica transport and its
/// clients' QUIC listen, and the SHA-256 fingerprint of its certificate
/// (the same on both), which the other replicas pin both ways and clients
/// pin when redirected to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaNode {
    /// Its replica transport's address (`host:port`).
    pub addr: String,
    /// Where its clients connect (`host:port`).
    pub client_addr: String,
    /// Its certificate's fingerprint.
    pub fingerprint: [u8; 32],
}

/// Longest [`ReplicaNode::addr`], in bytes.
pub const ADDR_LEN_MAX: usize = 255;

impl fmt::Display for ReplicaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, hex::encode(&self.fingerprint[..8]))
    }
}

//! The replica-to-replica transport over QUIC (`spec/replication.md`,
//! "Transport"): ALPN `sealbatch-raft/1`, both ends pinned — a replica
//! dials a member only at the certificate its membership entry names and
//! presents its own, which the other accepts only from a member. One
//! request per bidirectional stream: the request's bytes, then the
//! response's, each ended by finishing the stream.
//!
//! [`serve`] answers requests with the local [`Raft`]; [`Network`] is the
//! openraft [`RaftNetworkFactory`] that sends them.

use crate::codec::{Decode, Encode};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Raft};

use crate::net::{Identity, replica_client_config};

use super::certificate::{ATTESTATION_LEN, AttestAnswer, Attestation, Attestor};
use super::codec::{
    APPEND_ENTRIES_MAX, RaftRequest, ReplicaStatus, decode_append_response,
    decode_snapshot_response, decode_vote_response, encode_append_response,
    encode_snapshot_response, encode_vote_response, entry_len,
};
use super::election::{ElectionClock, ElectionTiming};
use super::{LogStore, ReplicaId, ReplicaNode, Replication};
use crate::envelope::SignedSeal;

/// Most bytes of one request or response.
pub const FRAME_MAX: usize = 64 << 20;
/// The part of [`FRAME_MAX`] one append request fills with entries before
/// it sends the rest in the next.
pub const APPEND_BYTES_BUDGET: usize = 2 << 20;

/// How long a replica asked to attest a seal waits for it to be applied.
pub const ATTEST_WAIT: Duration = Duration::from_millis(500);

const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;

/// The fingerprints allowed to connect: the members'.
pub type AllowedPeers = Arc<RwLock<BTreeSet<[u8; 32]>>>;

/// How long a dialler waits after a failed or lost connection before it
/// dials again.
const REDIAL_AFTER: Duration = Duration::from_millis(100);

/// The connections this replica dials to the others, made and kept by a
/// background task per replica (`spec/replication.md`, "Transport"): a
/// request waits for its replica's connection within its own deadline but
/// never cuts a handshake short, so a round trip longer than a request's
/// deadline delays the first request instead of failing every one. A
/// connection lost is dialled again at once, then every 100 ms.
#[derive(Clone)]
pub struct Links {
    identity: Arc<Identity>,
    endpoint: quinn::Endpoint,
    links: Arc<Mutex<BTreeMap<LinkKey, Link>>>,
}

/// A link's replica: its id, address and certificate fingerprint (a
/// member whose address or certificate changed is dialled anew).
type LinkKey = (ReplicaId, String, [u8; 32]);

struct Link {
    connection: watch::Receiver<Option<quinn::Connection>>,
    dialler: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.dialler.abort();
    }
}

impl Links {
    /// Dials from `endpoint` as `identity`.
    #[must_use]
    pub fn new(identity: Arc<Identity>, endpoint: quinn::Endpoint) -> Links {
        Links {
            identity,
            endpoint,
            links: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The connection to replica `id` at `node` as it stands (`None` while
    /// it is being dialled); starts its dialler the first time.
    fn watch(
        &self,
        id: ReplicaId,
        node: &ReplicaNode,
    ) -> watch::Receiver<Option<quinn::Connection>> {
        let key = (id, node.addr.clone(), node.fingerprint);
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = links.get(&key)
            && !link.dialler.is_finished()
        {
            return link.connection.clone();
        }
        let (tx, rx) = watch::channel(None);
        let dialler = tokio::spawn(dial(
            Arc::clone(&self.identity),
            self.endpoint.clone(),
            id,
            node.clone(),
            tx,
        ));
        links.insert(
            key,
            Link {
                connection: rx.clone(),
                dialler,
            },
        );
        rx
    }

    /// Keeps connections to exactly the replicas of `members` (this one
    /// excluded): dials the new ones now, drops the others'.
    pub fn keep(&self, me: ReplicaId, members: &BTreeMap<ReplicaId, ReplicaNode>) {
        {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            links.retain(|(id, addr, fingerprint), _| {
                members
                    .get(id)
                    .is_some_and(|n| n.addr == *addr && n.fingerprint == *fingerprint)
            });
        }
        for (id, node) in members {
            if *id != me {
                drop(self.watch(*id, node));
            }
        }
    }

    /// The connection to replica `id`, waiting for its dialler (the caller
    /// bounds the wait).
    async fn connection(
        &self,
        id: ReplicaId,
        node: &ReplicaNode,
    ) -> Result<quinn::Connection, String> {
        let mut watch = self.watch(id, node);
        loop {
            if let Some(connection) = watch.borrow_and_update().clone()
                && connection.close_reason().is_none()
            {
                return Ok(connection);
            }
            if watch.changed().await.is_err() {
                return Err("the dialler stopped".into());
            }
        }
    }
}

/// Dials replica `id` and keeps a connection to it published in `tx`,
/// until the endpoint stops or nobody watches.
async fn dial(
    identity: Arc<Identity>,
    endpoint: quinn::Endpoint,
    id: ReplicaId,
    node: ReplicaNode,
    tx: watch::Sender<Option<quinn::Connection>>,
) {
    let mut failures = 0u32;
    loop {
        let addr = match tokio::net::lookup_host(&node.addr).await {
            Ok(mut addrs) => addrs.next(),
            Err(_) => None,
        };
        let attempt = match (addr, replica_client_config(&identity, node.fingerprint)) {
            (Some(addr), Ok(config)) => match endpoint.connect_with(config, addr, "sealbatch") {
                Ok(connecting) => connecting.await.map_err(|error| error.to_string()),
                // The endpoint is closed: the replica stops.
                Err(quinn::ConnectError::EndpointStopping) => return,
                Err(error) => Err(error.to_string()),
            },
            (None, _) => Err(format!("{} resolves to no address", node.addr)),
            (_, Err(error)) => Err(error.to_string()),
        };
        match attempt {
            Ok(connection) => {
                failures = 0;
                if tx.send(Some(connection.clone())).is_err() {
                    return;
                }
                let reason = connection.closed().await;
                tracing::debug!(replica = id, %reason, "replica connection lost; dialling again");
                if tx.send(None).is_err() {
                    return;
                }
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(100) {
                    tracing::debug!(replica = id, addr = %node.addr, %reason, failures, "a replica could not be dialled");
                }
                tokio::time::sleep(REDIAL_AFTER).await;
            }
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The replica could not be reached.
    #[error("replica {target} at {addr} unreachable: {reason}")]
    Unreachable {
        /// Its id.
        target: ReplicaId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The request or its response was lost or malformed.
    #[error("replica {target}: {reason}")]
    Failed {
        /// Its id.
        target: ReplicaId,
        /// Why.
        reason: String,
    },
    /// The replica answered with an error.
    #[error("replica {target} refused: {reason}")]
    Refused {
        /// Its id.
        target: ReplicaId,
        /// What it said.
        reason: String,
    },
}

/// Answers the replica requests arriving at `endpoint` with `raft` (and
/// requests to attest a committed seal with `attestor`) until the endpoint
/// closes, telling `clock` when a leader is heard from.
pub async fn serve(
    endpoint: quinn::Endpoint,
    raft: Raft<Replication>,
    attestor: Arc<Attestor>,
    voter: Voter,
) {
    while let Some(incoming) = endpoint.accept().await {
        let raft = raft.clone();
        let attestor = Arc::clone(&attestor);
        let voter = voter.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(%error, "a replica connection failed its handshake");
                    return;
                }
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                let raft = raft.clone();
                tokio::spawn(answer(
                    raft,
                    Arc::clone(&attestor),
                    voter.clone(),
                    send,
                    recv,
                ));
            }
        });
    }
}

/// What answers elections here: the election clock (told when a leader
/// is heard from), and for pre-votes the log's end and the timing.
#[derive(Clone)]
pub struct Voter {
    /// The election clock.
    pub clock: Arc<ElectionClock>,
    /// The Raft log, for its last log id.
    pub log: LogStore,
    /// The lease a pre-vote respects.
    pub timing: ElectionTiming,
}

async fn answer(
    raft: Raft<Replication>,
    attestor: Arc<Attestor>,
    voter: Voter,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let clock = &voter.clock;
    let Ok(bytes) = recv.read_to_end(FRAME_MAX).await else {
        return;
    };
    let response = match RaftRequest::from_bytes(&bytes) {
        Err(error) => Err(format!("malformed request: {error}")),
        Ok(RaftRequest::Append(rpc)) => raft
            .append_entries(rpc)
            .await
            .map(|r| {
                if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                    clock.led();
                }
                encode_append_response(&r)
            })
            .map_err(|error| error.to_string()),
        Ok(RaftRequest::Vote(rpc)) => {
            let (term, theirs) = (rpc.vote.leader_id().term, rpc.last_log_id);
            raft.vote(rpc)
                .await
                .map(|r| {
                    if r.vote_granted {
                        clock.heard();
                    } else if r.last_log_id > theirs {
                        clock.outranked(term);
                    }
                    encode_vote_response(&r)
                })
                .map_err(|error| error.to_string())
        }
        Ok(RaftRequest::Snapshot(rpc)) => {
            let vote = rpc.vote;
            raft.install_snapshot(rpc)
                .await
                .map(|r| {
                    if r.vote == vote {
                        clock.led();
                    }
                    encode_snapshot_response(&r)
                })
                .map_err(|error| error.to_string())
        }
        Ok(RaftRequest::PreVote { term, last_log_id }) => {
            let leading = raft.metrics().borrow().state.is_leader();
            let granted = voter.timing.pre_vote(
                leading,
                clock.led_at(),
                voter.log.last_log_id(),
                last_log_id,
                std::time::Instant::now(),
            );
            if !granted {
                tracing::info!(
                    term,
                    theirs = ?last_log_id,
                    mine = ?voter.log.last_log_id(),
                    leading,
                    led_ms_ago = ?clock.led_at().map(|at| at.elapsed().as_millis()),
                    "pre-vote refused"
                );
            }
            Ok(vec![u8::from(granted)])
        }
        Ok(RaftRequest::Status) => Ok(status(&raft).to_bytes()),
        Ok(RaftRequest::AddLearner { id, node }) => raft
            .add_learner(id, node, true)
            .await
            .map(|_| Vec::new())
            .map_err(|error| error.to_string()),
        Ok(RaftRequest::Attest { e, count, root }) => {
            match attestor.answer_within(e, count, &root, ATTEST_WAIT).await {
                AttestAnswer::Attested(attestation) => Ok(attestation.to_bytes().to_vec()),
                AttestAnswer::NotApplied => Err(format!("no committed seal of batch {e} applied")),
                AttestAnswer::Differs => Err(format!("another seal of batch {e} is committed")),
            }
        }
        Ok(RaftRequest::AttestLog { committee, entries }) => {
            match attestor
                .answer_log_within(&committee, &entries, ATTEST_WAIT)
                .await
            {
                AttestAnswer::Attested(attestation) => Ok(attestation.to_bytes().to_vec()),
                AttestAnswer::NotApplied => {
                    Err("a log entry asked for is not applied (or no longer remembered)".into())
                }
                AttestAnswer::Differs => {
                    Err("the committed log holds another entry at a position asked for".into())
                }
            }
        }
        Ok(RaftRequest::ChangeVoters(voters)) => raft
            .change_membership(voters, false)
            .await
            .map(|_| Vec::new())
            .map_err(|error| error.to_string()),
    };
    let mut out = Vec::new();
    match response {
        Ok(body) => {
            out.push(STATUS_OK);
            out.extend_from_slice(&body);
        }
        Err(reason) => {
            out.push(STATUS_ERROR);
            out.extend_from_slice(reason.as_bytes());
        }
    }
    if send.write_all(&out).await.is_ok() {
        let _ = send.finish();
        // Wait for the peer to read it before the stream is dropped.
        let _ = send.stopped().await;
    }
}

/// This replica's view of the cluster.
#[must_use]
pub fn status(raft: &Raft<Replication>) -> ReplicaStatus {
    let metrics = raft.metrics().borrow().clone();
    let state = match metrics.state {
        openraft::ServerState::Follower => 0,
        openraft::ServerState::Candidate => 1,
        openraft::ServerState::Leader => 2,
        openraft::ServerState::Learner => 3,
        openraft::ServerState::Shutdown => 4,
    };
    ReplicaStatus {
        id: metrics.id,
        term: metrics.current_term,
        state,
        leader: metrics.current_leader,
        last_log: metrics.last_log_index,
        applied: metrics.last_applied.map(|id| id.index),
        snapshot: metrics.snapshot.map(|id| id.index),
        membership: metrics.membership_config.membership().clone(),
    }
}

/// Sends one request to the replica transport at `node` as `identity` (a
/// member's, e.g. `sealbatch cluster` with a replica's data directory), and
/// returns the response's body.
///
/// # Errors
///
/// [`TransportError`] if it is unreachable, the request fails, or it
/// refuses (the text it answered).
pub async fn call(
    identity: Arc<Identity>,
    id: ReplicaId,
    node: &ReplicaNode,
    request: &RaftRequest,
    ttl: Duration,
) -> Result<Vec<u8>, TransportError> {
    let bind: SocketAddr = ([127, 0, 0, 1], 0).into();
    let endpoint = quinn::Endpoint::client(bind).map_err(|error| TransportError::Unreachable {
        target: id,
        addr: node.addr.clone(),
        reason: error.to_string(),
    })?;
    let mut peer = Peer {
        target: id,
        node: node.clone(),
        links: Links::new(identity, endpoint.clone()),
        // A one-off request: no election to time.
        clock: Arc::new(ElectionClock::new()),
        heartbeats: Arc::default(),
        held: Held::default(),
    };
    let result = peer.call(&request.to_bytes(), ttl).await;
    endpoint.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    result
}

/// Dials the other replicas: openraft's [`RaftNetworkFactory`].
#[derive(Clone)]
pub struct Network {
    links: Links,
    clock: Arc<ElectionClock>,
    held: Held,
}

/// What this replica knows each other replica's log to hold: the last log
/// id it reported (in its answer to a vote) or acknowledged (an append's
/// success), shared by every client of it, since openraft makes a new one
/// per election and per term it leads.
///
/// The knowledge may be stale (a replica that restarts may lose entries it
/// had not made durable): it is only a guess of where to start, which the
/// replica checks itself (see [`already_held`]).
#[derive(Clone, Debug, Default)]
pub struct Held(Arc<Mutex<BTreeMap<ReplicaId, LogId<ReplicaId>>>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ReplicaId, LogId<ReplicaId>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `target` is known to hold, if anything.
    #[must_use]
    pub fn of(&self, target: ReplicaId) -> Option<LogId<ReplicaId>> {
        self.lock().get(&target).copied()
    }

    /// `target` reported or acknowledged holding `last`.
    pub fn learn(&self, target: ReplicaId, last: Option<LogId<ReplicaId>>) {
        let mut held = self.lock();
        match last {
            Some(last) => held.insert(target, last),
            None => held.remove(&target),
        };
    }

    /// What `target` was thought to hold it does not.
    pub fn forget(&self, target: ReplicaId) {
        self.lock().remove(&target);
    }
}

/// How many of `entries` (the entries an append carries after its
/// `prev_log_id`) need not be sent to a replica whose log is known to hold
/// `held`: those up to and including the entry whose log id is `held` —
/// all but the last, which always goes (an append without entries is a
/// heartbeat). The append then names that entry as its `prev_log_id`, and
/// the replica's own check of it (Raft's log matching: an entry of the
/// same index and term means the same log up to it) guards against a guess
/// gone stale; refused, the append is sent again whole.
///
/// A new leader finds where each follower's log matches its own by
/// openraft's binary search, whose first probe starts halfway through the
/// retained log: without this, every probe carries entries the follower
/// has (megabytes, over a WAN many round trips of congestion window).
#[must_use]
pub fn already_held(
    entries: &[openraft::Entry<Replication>],
    held: Option<LogId<ReplicaId>>,
) -> usize {
    let Some(held) = held else {
        return 0;
    };
    entries
        .iter()
        .position(|entry| entry.log_id == held)
        .map_or(0, |at| (at + 1).min(entries.len().saturating_sub(1)))
}

impl Network {
    /// Dials from `endpoint` (which may also serve) as `identity`, telling
    /// `clock` when a vote is refused for a longer log.
    #[must_use]
    pub fn new(
        identity: Arc<Identity>,
        endpoint: quinn::Endpoint,
        clock: Arc<ElectionClock>,
    ) -> Network {
        Network {
            links: Links::new(identity, endpoint),
            clock,
            held: Held::default(),
        }
    }

    /// The connections it keeps to the other replicas.
    #[must_use]
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// A client of replica `target` at `node` over the kept connections.
    #[must_use]
    pub fn peer(&self, target: ReplicaId, node: &ReplicaNode) -> Peer {
        Peer {
            target,
            node: node.clone(),
            links: self.links.clone(),
            clock: Arc::clone(&self.clock),
            heartbeats: Arc::default(),
            held: self.held.clone(),
        }
    }
}

impl RaftNetworkFactory<Replication> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: ReplicaId, node: &ReplicaNode) -> Peer {
        self.peer(target, node)
    }
}

/// One other replica, reached over the connection [`Links`] keeps to it.
#[derive(Clone)]
pub struct Peer {
    target: ReplicaId,
    node: ReplicaNode,
    links: Links,
    clock: Arc<ElectionClock>,
    heartbeats: Arc<std::sync::Mutex<Heartbeats>>,
    held: Held,
}

/// The heartbeats a leader sends one replica (`spec/replication.md` §6):
/// whether one is on its way, and the answer of the last one if it was not
/// a plain success, to be reported by the next.
#[derive(Default)]
struct Heartbeats {
    outstanding: bool,
    report: Option<Result<AppendEntriesResponse<ReplicaId>, TransportError>>,
}

impl Peer {
    /// The replica it dials.
    #[must_use]
    pub fn node(&self) -> &ReplicaNode {
        &self.node
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> TransportError {
        TransportError::Unreachable {
            target: self.target,
            addr: self.node.addr.clone(),
            reason: reason.to_string(),
        }
    }

    fn failed(&self, reason: impl std::fmt::Display) -> TransportError {
        TransportError::Failed {
            target: self.target,
            reason: reason.to_string(),
        }
    }

    /// Sends a heartbeat (an append without entries) without waiting for
    /// its answer, at most one at a time, and answers at once: with the
    /// last heartbeat's answer if that was not a success (a higher vote, a
    /// conflict, an error), else success.
    ///
    /// openraft 0.9 sends one request at a time to each replica, so a
    /// heartbeat it waited for would hold the next entries back for a
    /// round trip: across a WAN, most of a receipt's wait. A heartbeat's
    /// success changes nothing in openraft (its answer carries no request
    /// id); what matters in its answer, a higher vote or a log that no
    /// longer matches, still reaches openraft, one heartbeat later.
    fn heartbeat(
        &self,
        rpc: AppendEntriesRequest<Replication>,
        ttl: Duration,
    ) -> Result<AppendEntriesResponse<ReplicaId>, TransportError> {
        let mut heartbeats = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(report) = heartbeats.report.take() {
            return report;
        }
        if !heartbeats.outstanding {
            heartbeats.outstanding = true;
            let mut peer = self.clone();
            let request = RaftRequest::Append(rpc).to_bytes();
            tokio::spawn(async move {
                let answer = match peer.call(&request, ttl).await {
                    Ok(body) => decode_append_response(&body).map_err(|error| peer.failed(error)),
                    Err(error) => Err(error),
                };
                let mut heartbeats = peer.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
                heartbeats.outstanding = false;
                if !matches!(answer, Ok(AppendEntriesResponse::Success)) {
                    heartbeats.report = Some(answer);
                }
            });
        }
        Ok(AppendEntriesResponse::Success)
    }

    /// Asks the replica to attest the seal `(e, count, root)`: its
    /// attestation, checked to be a valid signature over that seal.
    ///
    /// # Errors
    ///
    /// [`TransportError`]: unreachable, refused (it has not applied the
    /// seal, or committed another), or an answer that does not verify.
    pub async fn attest(
        &mut self,
        sequencer: &[u8; 32],
        seal: &SignedSeal,
        ttl: Duration,
    ) -> Result<Attestation, TransportError> {
        let request = RaftRequest::Attest {
            e: seal.e,
            count: seal.count,
            root: seal.root,
        };
        let body = self.call(&request.to_bytes(), ttl).await?;
        let bytes = <&[u8; ATTESTATION_LEN]>::try_from(body.as_slice())
            .map_err(|_| self.failed("an attestation of the wrong length"))?;
        let attestation = Attestation::from_bytes(bytes);
        if !attestation.verifies(sequencer, seal) {
            return Err(self.failed("an attestation that does not verify"));
        }
        Ok(attestation)
    }

    /// Asks the replica to attest a run of the committee's log entries
    /// (position and hash each): its attestation, checked to be a valid
    /// signature over that run.
    ///
    /// # Errors
    ///
    /// [`TransportError`]: unreachable, refused (it has not applied an
    /// entry, or committed another at its position), or an answer that
    /// does not verify.
    pub async fn attest_log(
        &mut self,
        sequencer: &[u8; 32],
        committee: &[u8; 32],
        entries: &[(u64, [u8; 32])],
        ttl: Duration,
    ) -> Result<Attestation, TransportError> {
        if entries.is_empty() || entries.len() > crate::commit::LOG_ATTESTED_MAX {
            return Err(self.failed("a run of log entries of no or too many entries"));
        }
        let request = RaftRequest::AttestLog {
            committee: *committee,
            entries: entries.to_vec(),
        };
        let body = self.call(&request.to_bytes(), ttl).await?;
        let bytes = <&[u8; ATTESTATION_LEN]>::try_from(body.as_slice())
            .map_err(|_| self.failed("an attestation of the wrong length"))?;
        let attestation = Attestation::from_bytes(bytes);
        let message = crate::commit::committed_log_message(sequencer, committee, entries);
        if !attestation.verifies_message(&message) {
            return Err(self.failed("an attestation that does not verify"));
        }
        Ok(attestation)
    }

    /// Sends one encoded request and returns the response's body, within
    /// `ttl` (the connection, if still being dialled, is not cut short).
    ///
    /// # Errors
    ///
    /// [`TransportError`]: unreachable, failed or refused.
    pub async fn call_raw(
        &mut self,
        request: &[u8],
        ttl: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        self.call(request, ttl).await
    }

    /// Sends one request and returns the response's body.
    async fn call(&mut self, request: &[u8], ttl: Duration) -> Result<Vec<u8>, TransportError> {
        let exchange = async {
            let connection = self
                .links
                .connection(self.target, &self.node)
                .await
                .map_err(|error| self.unreachable(error))?;
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|error| self.unreachable(error))?;
            send.write_all(request)
                .await
                .map_err(|error| self.failed(error))?;
            send.finish().map_err(|error| self.failed(error))?;
            recv.read_to_end(FRAME_MAX)
                .await
                .map_err(|error| self.failed(error))
        };
        let response = tokio::time::timeout(ttl, exchange)
            .await
            .map_err(|_| self.failed(format!("no response in {} ms", ttl.as_millis())))??;
        match response.split_first() {
            Some((&STATUS_OK, body)) => Ok(body.to_vec()),
            Some((&STATUS_ERROR, reason)) => Err(TransportError::Refused {
                target: self.target,
                reason: String::from_utf8_lossy(reason).into_owned(),
            }),
            _ => Err(self.failed("a malformed response")),
        }
    }
}

fn rpc_error<E: std::error::Error>(error: TransportError) -> RPCError<ReplicaId, ReplicaNode, E> {
    match &error {
        TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        _ => RPCError::Network(NetworkError::new(&error)),
    }
}

impl RaftNetwork<Replication> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Replication>,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<ReplicaId>,
        RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId>>,
    > {
        if rpc.entries.is_empty() {
            return self.heartbeat(rpc, option.hard_ttl()).map_err(rpc_error);
        }
        let skip = already_held(&rpc.entries, self.held.of(self.target));
        if skip == 0 {
            return self.send_append(rpc, option.hard_ttl()).await;
        }
        let mut trimmed = AppendEntriesRequest {
            vote: rpc.vote,
            prev_log_id: rpc.entries.get(skip - 1).map(|entry| entry.log_id),
            leader_commit: rpc.leader_commit,
            entries: rpc.entries[skip..].to_vec(),
        };
        trimmed.entries.shrink_to_fit();
        match self.send_append(trimmed, option.hard_ttl()).await? {
            // The guess was stale: the whole append, as openraft made it.
            AppendEntriesResponse::Conflict => {
                self.held.forget(self.target);
                self.send_append(rpc, option.hard_ttl()).await
            }
            answer => Ok(answer),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Replication>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<ReplicaId>,
        RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId, InstallSnapshotError>>,
    > {
        let request = RaftRequest::Snapshot(rpc).to_bytes();
        let body = self
            .call(&request, option.hard_ttl())
            .await
            .map_err(rpc_error)?;
        decode_snapshot_response(&body).map_err(|error| rpc_error(self.failed(error)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ReplicaId>,
        option: RPCOption,
    ) -> Result<VoteResponse<ReplicaId>, RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId>>>
    {
        let mine = rpc.last_log_id;
        let request = RaftRequest::Vote(rpc).to_bytes();
        let body = self
            .call(&request, option.hard_ttl())
            .await
            .map_err(rpc_error)?;
        let response =
            decode_vote_response(&body).map_err(|error| rpc_error(self.failed(error)))?;
        if !response.vote_granted && response.last_log_id > mine {
            self.clock.refused_for_log();
        }
        self.held.learn(self.target, response.last_log_id);
        Ok(response)
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}

impl Peer {
    /// Sends an append of at least one entry: no more than a frame's
    /// budget of them (at least one), the rest left for the next (a partial
    /// success). What the replica acknowledges is remembered.
    async fn send_append(
        &mut self,
        mut rpc: AppendEntriesRequest<Replication>,
        ttl: Duration,
    ) -> Result<
        AppendEntriesResponse<ReplicaId>,
        RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId>>,
    > {
        let mut bytes = 0;
        let mut keep = 0;
        for entry in &rpc.entries {
            bytes += entry_len(entry);
            if keep > 0 && (bytes > APPEND_BYTES_BUDGET || keep >= APPEND_ENTRIES_MAX) {
                break;
            }
            keep += 1;
        }
        let partial = keep < rpc.entries.len();
        rpc.entries.truncate(keep);
        let last = rpc.entries.last().map(|entry| entry.log_id);
        let request = RaftRequest::Append(rpc).to_bytes();
        let body = self.call(&request, ttl).await.map_err(rpc_error)?;
        let response =
            decode_append_response(&body).map_err(|error| rpc_error(self.failed(error)))?;
        Ok(match response {
            AppendEntriesResponse::Success => {
                self.held.learn(self.target, last);
                if partial {
                    AppendEntriesResponse::PartialSuccess(last)
                } else {
                    AppendEntriesResponse::Success
                }
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    fn log_id(term: u64, index: u64) -> LogId<ReplicaId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<Replication>> {
        indexes
            .map(|index| Entry {
                log_id: log_id(term, index),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    #[test]
    fn entries_a_replica_is_known_to_hold_are_not_sent_again_but_the_last_always_is() {
        let sent = entries(3, 10..=20);
        // Nothing known, or a guess outside what is sent: everything goes.
        assert_eq!(already_held(&sent, None), 0);
        assert_eq!(already_held(&sent, Some(log_id(3, 9))), 0);
        assert_eq!(already_held(&sent, Some(log_id(3, 25))), 0);
        // The same index in another term is another entry: nothing skipped.
        assert_eq!(already_held(&sent, Some(log_id(2, 15))), 0);
        // Held through 15: 10..=15 stay home, 16..=20 go after 15.
        assert_eq!(already_held(&sent, Some(log_id(3, 15))), 6);
        // Held through the last: the last still goes (no empty append).
        assert_eq!(already_held(&sent, Some(log_id(3, 20))), 10);
        assert_eq!(already_held(&entries(3, 7..=7), Some(log_id(3, 7))), 0);
        assert_eq!(already_held(&[], Some(log_id(3, 7))), 0);
    }

    #[test]
    fn what_a_replica_holds_is_learned_replaced_and_forgotten_per_replica() {
        let held = Held::default();
        let other = held.clone();
        held.learn(2, Some(log_id(4, 100)));
        held.learn(3, Some(log_id(4, 90)));
        // Shared by every client made from the same network.
        assert_eq!(other.of(2), Some(log_id(4, 100)));
        held.learn(2, Some(log_id(5, 101)));
        assert_eq!(other.of(2), Some(log_id(5, 101)));
        held.learn(3, None);
        assert_eq!(held.of(3), None);
        held.forget(2);
        assert_eq!(held.of(2), None);
    }
}

//! A node as one replica of a replicated sequencer (`spec/replication.md`):
//! the Raft log and state machine in the data directory, the replica
//! transport on `[cluster] listen`, the task that proposes the driver's
//! records in order, the task that watches openraft's metrics and tells
//! the driver when this replica leads or stops leading, and the certifier:
//! the replicas' signatures over each committed seal whose key the leader
//! asks of the keypers (`spec/replication.md` §10).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crossbeam_channel::Sender;
use openraft::{Raft, SnapshotPolicy};
use zeroize::Zeroizing;

use crate::envelope::SignedSeal;
use crate::net::{Identity, replica_server_config, server_endpoint};
use crate::replica::certificate::{AttestAnswer, Attestor, CommitCertificate, CommitKey};
use crate::replica::network::{AllowedPeers, Links, Network, Peer};
use crate::replica::{LogStore, Proposal, ReplicaId, ReplicaNode, Replication, StateMachine};
use crate::secret_file::load_or_create_key32;
use crate::types::{BatchId, Lsn};

use super::config::ClusterConfig;
use super::driver::replica::{LeaderHint, Members, ReplicaLink};
use super::handle::Control;
use super::keypers::KeyperHub;
use super::metrics::{FollowerLabels, Metrics};
use super::{JOURNAL_DIR, NodeConfig, NodeError, recovery};

/// The Raft directory inside the data directory.
pub const RAFT_DIR: &str = "raft";

/// The replica's commit key (Ed25519 seed, mode 0600) inside the data
/// directory: it signs the seals this replica applied from the committed
/// log.
pub const COMMIT_KEY_FILE: &str = "replica-commit.key";

/// Certificates the certifier keeps, to answer the driver's repeated key
/// requests.
const CERTIFICATES_KEPT: usize = 256;

/// Least time between two warnings that no keyper is connected.
const NO_KEYPER_WARNING_EVERY: Duration = Duration::from_secs(1);

/// How long the certifier waits for the replicas' attestations of one
/// seal before it gives up until the driver asks again.
const ATTEST_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Loads the commit key of the replica whose data directory is `data`,
/// creating it on first use.
///
/// # Errors
///
/// [`NodeError`] if the file cannot be read or created.
pub fn commit_key(data: &std::path::Path) -> Result<CommitKey, NodeError> {
    let seed = load_or_create_key32(&data.join(COMMIT_KEY_FILE), super::keys::random_secret)?;
    Ok(CommitKey::from_seed(&seed))
}

/// Starts a replica's tasks once its driver listens: given the driver's
/// control channel, the keyper hub and the node's metrics.
pub(super) type Start = Box<dyn FnOnce(Sender<Control>, Arc<KeyperHub>, Arc<Metrics>) + Send>;

/// The replicated parts of a running replica.
pub(super) struct Replica {
    pub(super) raft: Raft<Replication>,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) link: ReplicaLink,
    pub(super) sequencer: crate::sequencer::Sequencer,
    /// Starts the proposer, the role watcher and the certifier once the
    /// driver listens.
    pub(super) start: Start,
}

fn replication_error(error: impl std::fmt::Display) -> NodeError {
    NodeError::Replication(error.to_string())
}

/// Opens the replica's log and state machine, builds its sequencer from its
/// journal, binds the replica transport and starts Raft (initialising a new
/// cluster if this replica bootstraps it).
pub(super) async fn start(
    config: &NodeConfig,
    cluster: &ClusterConfig,
    key_seed: &[u8; 32],
    identity: Arc<Identity>,
) -> Result<Replica, NodeError> {
    let data = &config.data_dir;
    let nodes = cluster.nodes()?;
    let raft_dir = data.join(RAFT_DIR);
    let journal_dir = data.join(JOURNAL_DIR);
    let (committed_tx, committed_rx) = crossbeam_channel::unbounded();
    let (checkpoints_tx, checkpoints_rx) = crossbeam_channel::unbounded();
    let sequencer_key = crate::envelope::SequencerKey::from_seed(key_seed)
        .public_key()
        .to_bytes();
    let attestor = Arc::new(Attestor::new(commit_key(data)?, sequencer_key));
    // Before the state machine opens the journal for writing.
    match attestor.seals().remember_journal(&journal_dir) {
        Ok(seals) => tracing::debug!(seals, "committed seals read from the journal"),
        Err(error) => {
            tracing::warn!(%error, "the journal's seals could not be read; this replica attests only seals applied from now on")
        }
    }
    let mut machine = StateMachine::open(&journal_dir, &raft_dir)?;
    machine.subscribe(committed_tx);
    machine.record_seals(Arc::clone(attestor.seals()));
    machine.record_log(Arc::clone(attestor.log()));
    machine.take_checkpoints(checkpoints_rx);
    let log = LogStore::open(&raft_dir).map_err(replication_error)?;
    let sequencer = recovery::recover_replica(config, key_seed, Lsn::NONE)?;
    // The committee log entries the sequencer retains (a checkpoint's
    // among them) are committed: this replica attests them.
    let remembered = attestor.log().remember(&sequencer);
    tracing::debug!(
        entries = remembered,
        "committed keyper log entries remembered"
    );

    let allowed: AllowedPeers = Arc::new(RwLock::new(
        nodes
            .values()
            .map(|n| n.fingerprint)
            .collect::<BTreeSet<_>>(),
    ));
    let endpoint = server_endpoint(
        cluster.listen,
        replica_server_config(&identity, Arc::clone(&allowed))?,
        &identity,
    )?;
    let timing = cluster.timing();
    tracing::info!(?timing, rtt_ms = cluster.rtt_ms, "replica timing");
    let raft_config = openraft::Config {
        cluster_name: "sealbatch".into(),
        election_timeout_min: timing.election_timeout_ms[0],
        election_timeout_max: timing.election_timeout_ms[1],
        // openraft 0.9 bounds every append and the read barrier by its
        // heartbeat interval; the heartbeats themselves are sent by
        // `heartbeat` below every `heartbeat_ms`, so that an append may
        // take a WAN round trip and a follower's fsync without the
        // heartbeat slowing down.
        heartbeat_interval: timing.append_timeout_ms,
        enable_heartbeat: false,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cluster.snapshot_every_entries),
        max_in_snapshot_log_to_keep: cluster.snapshot_every_entries / 4,
        // A follower that lost its log gets the snapshot in chunks; the
        // last one also installs it (writes the journal), which takes more
        // than openraft's default 200 ms for a large one.
        snapshot_max_chunk_size: 1 << 20,
        // A new leader's first probe of a follower's log starts halfway
        // through the retained log (openraft's binary search): as many
        // entries as a request may carry, so that it reaches the end and the
        // search ends in one round trip. The transport sends none the
        // follower is known to hold (`replica::network::already_held`) and
        // no more than a frame's budget of the rest.
        max_payload_entries: crate::replica::codec::APPEND_ENTRIES_MAX as u64,
        install_snapshot_timeout: 5_000,
        // Our own timer decides when to stand (`replica::election`).
        enable_elect: false,
        ..Default::default()
    };
    // Not openraft's `validate`: it asks for an election timeout above its
    // heartbeat interval, which here is the append timeout; the timing is
    // checked with the configuration (`ClusterConfig::nodes`), and the
    // elections and heartbeats are this replica's own.
    let (raft, network) = crate::replica::start(crate::replica::Parts {
        id: cluster.id,
        config: Arc::new(raft_config),
        heartbeat: Duration::from_millis(timing.heartbeat_ms),
        identity: Arc::clone(&identity),
        endpoint: endpoint.clone(),
        log,
        machine,
        attestor: Arc::clone(&attestor),
    })
    .await
    .map_err(replication_error)?;
    if cluster.bootstrap && !raft.is_initialized().await.map_err(replication_error)? {
        tracing::info!(members = nodes.len(), "starting a new cluster");
        raft.initialize(nodes).await.map_err(replication_error)?;
    }

    let leader: LeaderHint = Arc::new(RwLock::new(None));
    let members: Members = Arc::new(RwLock::new(Vec::new()));
    let (proposals_tx, proposals_rx) = tokio::sync::mpsc::unbounded_channel();
    let (certify_tx, certify_rx) = tokio::sync::mpsc::unbounded_channel();
    let (log_certify_tx, log_certify_rx) = tokio::sync::mpsc::unbounded_channel();
    let rebuild_config = config.clone();
    let rebuild_seed = Zeroizing::new(*key_seed);
    let rebuild_attestor = Arc::clone(&attestor);
    let first_config = config.clone();
    let link = ReplicaLink {
        id: cluster.id,
        proposals: proposals_tx,
        committed: committed_rx,
        checkpoints: checkpoints_tx,
        rebuild: Box::new(move |at_least| {
            let sequencer = recovery::recover_replica(&rebuild_config, &rebuild_seed, at_least)
                .map_err(|error| error.to_string())?;
            // A snapshot installed brings entries no record applied.
            rebuild_attestor.log().remember(&sequencer);
            Ok(sequencer)
        }),
        first_leader: Box::new(move |sequencer| {
            recovery::first_leader(&first_config, sequencer).map_err(|error| error.to_string())
        }),
        leader: Arc::clone(&leader),
        members: Arc::clone(&members),
        certify: certify_tx,
        entries_in_flight: cluster.entries_in_flight,
    };
    let id = cluster.id;
    let start_raft = raft.clone();
    let certifier = Certifier {
        raft: raft.clone(),
        id,
        network: network.clone(),
        attestor,
        sequencer: sequencer_key,
        peers: BTreeMap::new(),
        certified: BTreeMap::new(),
        certified_log: BTreeMap::new(),
    };
    let start = Box::new(
        move |control: Sender<Control>, hub: Arc<KeyperHub>, metrics: Arc<Metrics>| {
            hub.set_log_certifier(log_certify_tx);
            tokio::spawn(certifier.run(certify_rx, log_certify_rx, hub));
            tokio::spawn(propose(start_raft.clone(), proposals_rx, control.clone()));
            tokio::spawn(watch_role(
                start_raft,
                id,
                control,
                View {
                    leader,
                    members,
                    allowed,
                    links: network.links().clone(),
                },
                metrics,
            ));
        },
    );
    Ok(Replica {
        raft,
        endpoint,
        link,
        sequencer,
        start,
    })
}

/// Gathers each seal's commit certificate from the voters (this replica's
/// own attestation and the others', asked over the replica transport) and
/// hands the certified seal to the keypers; and the certificates of the
/// committee log entries the keyper links send (`spec/keyper.md` §13).
struct Certifier {
    raft: Raft<Replication>,
    id: ReplicaId,
    network: Network,
    attestor: Arc<Attestor>,
    sequencer: [u8; 32],
    /// The other replicas, as dialled (connections kept).
    peers: BTreeMap<ReplicaId, Peer>,
    /// Certificates gathered, by batch.
    certified: BTreeMap<BatchId, (SignedSeal, CommitCertificate)>,
    /// Log certificates gathered, by the run of entries (every keyper link
    /// asks for the same runs).
    certified_log: BTreeMap<Vec<(u64, [u8; 32])>, CommitCertificate>,
}

/// What a certifier gathers attestations of.
enum Ask<'a> {
    /// A committed seal.
    Seal(&'a SignedSeal),
    /// A run of committed log entries of the committee with this id.
    Log {
        committee: [u8; 32],
        entries: &'a [(u64, [u8; 32])],
    },
}

impl Certifier {
    /// Answers each seal the driver asks the keypers for (again every
    /// 500 ms until the key comes) until the driver is gone.
    async fn run(
        mut self,
        mut seals: tokio::sync::mpsc::UnboundedReceiver<SignedSeal>,
        mut logs: tokio::sync::mpsc::UnboundedReceiver<super::keypers::LogCertify>,
        hub: Arc<KeyperHub>,
    ) {
        // While keypers reconnect (about a second after a failover) every
        // wanted key is asked again every 500 ms: say so once a second.
        let mut warned: Option<tokio::time::Instant> = None;
        loop {
            let seal = tokio::select! {
                seal = seals.recv() => match seal {
                    Some(seal) => seal,
                    None => return,
                },
                ask = logs.recv() => {
                    if let Some(ask) = ask {
                        let certificate = self.certify_log(&ask.committee, &ask.entries).await;
                        let _ = ask.reply.send(certificate);
                    }
                    continue;
                }
            };
            let certificate = match self.certified.get(&seal.e) {
                Some((s, c)) if *s == seal => Some(c.clone()),
                _ => self.gather(Ask::Seal(&seal)).await,
            };
            match certificate {
                Some(certificate) => {
                    self.certified.insert(seal.e, (seal, certificate.clone()));
                    while self.certified.len() > CERTIFICATES_KEPT {
                        self.certified.pop_first();
                    }
                    if hub.request_key(seal, Some(certificate)) == 0 {
                        if warned.is_none_or(|at| at.elapsed() >= NO_KEYPER_WARNING_EVERY) {
                            warned = Some(tokio::time::Instant::now());
                            tracing::warn!(
                                batch = seal.e.get(),
                                "a batch key is wanted but no keyper is connected"
                            );
                        } else {
                            tracing::debug!(
                                batch = seal.e.get(),
                                "a batch key is wanted but no keyper is connected"
                            );
                        }
                    }
                }
                None => tracing::debug!(
                    batch = seal.e.get(),
                    "no majority attested the seal yet; asked again"
                ),
            }
        }
    }

    /// A certificate of a run of committed log entries (from the cache
    /// when another keyper link asked for the same run), or `None`.
    async fn certify_log(
        &mut self,
        committee: &[u8; 32],
        entries: &[(u64, [u8; 32])],
    ) -> Option<CommitCertificate> {
        if let Some(certificate) = self.certified_log.get(entries) {
            return Some(certificate.clone());
        }
        let certificate = self
            .gather(Ask::Log {
                committee: *committee,
                entries,
            })
            .await?;
        self.certified_log
            .insert(entries.to_vec(), certificate.clone());
        while self.certified_log.len() > CERTIFICATES_KEPT {
            self.certified_log.pop_first();
        }
        Some(certificate)
    }

    /// A majority of the voters' attestations of a seal or a run of log
    /// entries, or `None` if they did not come in [`ATTEST_TIMEOUT`].
    async fn gather(&mut self, ask: Ask<'_>) -> Option<CommitCertificate> {
        let voters: Vec<(ReplicaId, ReplicaNode)> = {
            let metrics = self.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone())))
                .collect()
        };
        let needed = voters.len() / 2 + 1;
        let mut attestations = Vec::new();
        let own = match &ask {
            Ask::Seal(seal) => self.attestor.answer(seal.e, seal.count, &seal.root),
            Ask::Log { committee, entries } => {
                self.attestor
                    .answer_log_within(committee, entries, Duration::ZERO)
                    .await
            }
        };
        if let AttestAnswer::Attested(own) = own {
            attestations.push(own);
        }
        let mut asks = tokio::task::JoinSet::new();
        for (id, node) in voters.into_iter().filter(|(id, _)| *id != self.id) {
            let mut peer = match self.peers.remove(&id) {
                Some(peer) if peer.node() == &node => peer,
                _ => {
                    openraft::network::RaftNetworkFactory::new_client(&mut self.network, id, &node)
                        .await
                }
            };
            let sequencer = self.sequencer;
            match &ask {
                Ask::Seal(seal) => {
                    let seal = **seal;
                    asks.spawn(async move {
                        let answer = peer.attest(&sequencer, &seal, ATTEST_TIMEOUT).await;
                        (id, peer, answer)
                    });
                }
                Ask::Log { committee, entries } => {
                    let (committee, entries) = (*committee, entries.to_vec());
                    asks.spawn(async move {
                        let answer = peer
                            .attest_log(&sequencer, &committee, &entries, ATTEST_TIMEOUT)
                            .await;
                        (id, peer, answer)
                    });
                }
            }
        }
        let deadline = tokio::time::Instant::now() + ATTEST_TIMEOUT;
        while attestations.len() < needed {
            let Ok(Some(Ok((id, peer, answer)))) =
                tokio::time::timeout_at(deadline, asks.join_next()).await
            else {
                break;
            };
            self.peers.insert(id, peer);
            match answer {
                Ok(attestation) => attestations.push(attestation),
                Err(error) => tracing::debug!(replica = id, %error, "no attestation"),
            }
        }
        // The slower replicas' answers are not needed; their connections
        // are dialled again next time.
        asks.abort_all();
        (attestations.len() >= needed).then(|| CommitCertificate::new(attestations))
    }
}

/// Hands the driver's proposals to openraft one at a time, so that they
/// are appended in the order the driver made them; a write that fails
/// because this replica does not lead any more demotes the driver.
async fn propose(
    raft: Raft<Replication>,
    mut proposals: tokio::sync::mpsc::UnboundedReceiver<Proposal>,
    control: Sender<Control>,
) {
    while let Some(proposal) = proposals.recv().await {
        match raft.client_write_ff(proposal).await {
            Ok(outcome) => {
                let control = control.clone();
                tokio::spawn(async move {
                    if let Ok(Err(error)) = outcome.await {
                        tracing::debug!(%error, "a proposal was not committed");
                        let _ = control.send(Control::Demote);
                    }
                });
            }
            Err(fatal) => {
                let _ = control.send(Control::RaftFailed(fatal.to_string()));
                return;
            }
        }
    }
}

/// Watches openraft's view of the cluster: promotes the driver once this
/// replica leads with every earlier entry applied, demotes it when it stops
/// leading, keeps the leader's address for redirects and the members'
/// fingerprints for the transport.
/// What `watch_role` keeps up to date from openraft's view.
struct View {
    /// The leader, for redirects.
    leader: LeaderHint,
    /// The voters, for the schedule.
    members: Members,
    /// The members' fingerprints, for the transport's server.
    allowed: AllowedPeers,
    /// The connections to the members.
    links: Links,
}

async fn watch_role(
    raft: Raft<Replication>,
    id: ReplicaId,
    control: Sender<Control>,
    view: View,
    node_metrics: Arc<Metrics>,
) {
    let View {
        leader,
        members,
        allowed,
        links,
    } = view;
    let mut metrics = raft.metrics();
    let mut leading: Option<u64> = None;
    loop {
        let now = metrics.borrow_and_update().clone();
        if let Some(error) = &now.running_state.as_ref().err() {
            let _ = control.send(Control::RaftFailed(error.to_string()));
            return;
        }
        let membership = now.membership_config.membership();
        if let Ok(mut set) = allowed.write() {
            // Members and learners both: a learner catches up over the link.
            let fingerprints: BTreeSet<[u8; 32]> = membership
                .nodes()
                .map(|(_, node)| node.fingerprint)
                .collect();
            if !fingerprints.is_empty() {
                *set = fingerprints;
            }
        }
        // Connections to every member (learners too) are dialled now and
        // kept, outside any request's deadline.
        links.keep(
            id,
            &membership
                .nodes()
                .map(|(nid, node)| (*nid, node.clone()))
                .collect(),
        );
        if let Ok(mut slot) = members.write() {
            *slot = membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|node| (id, node.clone())))
                .collect();
        }
        let hint = now.current_leader.and_then(|l| {
            membership
                .nodes()
                .find(|(nid, _)| **nid == l)
                .map(|(nid, node)| (*nid, node.clone()))
        });
        if let Ok(mut slot) = leader.write() {
            *slot = hint;
        }
        let is_leader = now.state.is_leader() && now.current_leader == Some(id);
        raft_positions(&node_metrics, &now, is_leader);
        let term = now.current_term;
        match (is_leader, leading) {
            (true, Some(t)) if t == term => {}
            (true, _) => match confirm_leading(&raft, id, term).await {
                Ok(applied) => {
                    leading = Some(term);
                    let _ = control.send(Control::Promote { term, applied });
                }
                Err(why) => tracing::debug!(why, "leading, but not confirmed yet"),
            },
            (false, Some(_)) => {
                leading = None;
                let _ = control.send(Control::Demote);
            }
            (false, None) => {}
        }
        let wait = tokio::time::timeout(Duration::from_millis(500), metrics.changed()).await;
        if let Ok(Err(_)) = wait {
            return;
        }
    }
}

/// How long a new leader waits for its log to be committed and applied
/// before it gives up leading for now (asked again at the next change).
const CONFIRM_LEADING_MAX: Duration = Duration::from_secs(5);

/// Confirms that this replica leads `term` and waits until every entry of
/// its log — as it stood once confirmed — is committed and applied; returns
/// the last applied entry (`spec/replication.md` §7).
///
/// The read barrier (`ensure_linearizable`) alone covers a newly elected
/// leader, whose blank entry ends its log. It does not cover a leader that
/// openraft restored at restart (its last vote was its own, committed):
/// such a leader keeps its term, appends no blank entry, and its log may
/// end with entries it appended before it stopped that are not committed
/// yet. Their records are not in its journal, so a sequencer resumed before
/// they are applied would give their LSNs to other records — and seal a
/// batch without them.
async fn confirm_leading(
    raft: &Raft<Replication>,
    id: ReplicaId,
    term: u64,
) -> Result<Option<openraft::LogId<ReplicaId>>, String> {
    let started = std::time::Instant::now();
    let read = match tokio::time::timeout(CONFIRM_LEADING_MAX, raft.ensure_linearizable()).await {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("the read barrier did not complete in 5 s".into()),
    };
    let barrier = started.elapsed();
    let last = raft.metrics().borrow().last_log_index;
    let settled = raft
        .wait(Some(CONFIRM_LEADING_MAX))
        .metrics(
            |m| {
                m.current_term != term
                    || m.current_leader != Some(id)
                    || m.last_applied.map(|l| l.index) >= last
            },
            "the leader's log applied",
        )
        .await
        .map_err(|error| error.to_string())?;
    if settled.current_term != term || settled.current_leader != Some(id) {
        return Err("no longer leading".into());
    }
    tracing::info!(
        term,
        read_barrier_ms = barrier.as_millis() as u64,
        applied_ms = (started.elapsed() - barrier).as_millis() as u64,
        "leading confirmed: a majority heard this term and its log is applied"
    );
    Ok(read.max(settled.last_applied))
}

/// Exports this replica's Raft positions (term, last log index, applied
/// index), leader or follower, and as the leader how far each follower's
/// log is behind the leader's last entry.
fn raft_positions(
    metrics: &Metrics,
    now: &openraft::RaftMetrics<ReplicaId, ReplicaNode>,
    is_leader: bool,
) {
    let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    metrics.replica_current_term.set(gauge(now.current_term));
    metrics
        .replica_log_index
        .set(gauge(now.last_log_index.unwrap_or(0)));
    metrics
        .replica_applied_index
        .set(gauge(now.last_applied.map_or(0, |id| id.index)));
    let lag = &metrics.replica_follower_lag;
    match (&now.replication, is_leader) {
        (Some(replication), true) => {
            let last = now.last_log_index.unwrap_or(0);
            for (follower, matched) in replication {
                if *follower == now.id {
                    continue;
                }
                let behind = last.saturating_sub(matched.map_or(0, |m| m.index));
                lag.get_or_create(&FollowerLabels { replica: *follower })
                    .set(i64::try_from(behind).unwrap_or(i64::MAX));
            }
        }
        _ => lag.clear(),
    }
}

/// Stops Raft and the replica transport.
pub(super) async fn stop(raft: &Raft<Replication>, endpoint: &quinn::Endpoint) {
    if let Err(error) = raft.shutdown().await {
        tracing::warn!(%error, "Raft did not shut down cleanly");
    }
    endpoint.close(0u32.into(), b"replica stopped");
    // The close goes out at once; waiting for every peer to acknowledge it
    // took up to 2 s when one was down (a stopped replica lingered after
    // its last word). A peer that misses it gets a stateless reset from
    // this replica's next process, or times out.
    let _ = tokio::time::timeout(REPLICA_CLOSE_WAIT, endpoint.wait_idle()).await;
}

/// How long a stopping replica waits for its peers to acknowledge that its
/// connections closed.
const REPLICA_CLOSE_WAIT: Duration = Duration::from_millis(200);

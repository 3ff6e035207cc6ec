//! A node as one replica of a replicated sequencer (`spec/replication.md`):
//! the Raft log and state machine in the data directory, the replica
//! transport on `[cluster] listen`, the task that proposes the driver's
//! records in order, and the task that watches openraft's metrics and
//! tells the driver when this replica leads or stops leading.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crossbeam_channel::Sender;
use openraft::{Raft, SnapshotPolicy};
use zeroize::Zeroizing;

use crate::net::{Identity, replica_server_config, server_endpoint};
use crate::replica::network::{AllowedPeers, Network, serve};
use crate::replica::{LogStore, Proposal, ReplicaId, Replication, StateMachine};

use super::config::ClusterConfig;
use super::driver::replica::{LeaderHint, Members, ReplicaLink};
use super::handle::Control;
use super::{JOURNAL_DIR, NodeConfig, NodeError, recovery};

/// The Raft directory inside the data directory.
pub const RAFT_DIR: &str = "raft";

/// The replicated parts of a running replica.
pub(super) struct Replica {
    pub(super) raft: Raft<Replication>,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) link: ReplicaLink,
    pub(super) sequencer: crate::sequencer::Sequencer,
    /// Starts the proposer and the role watcher once the driver listens.
    pub(super) start: Box<dyn FnOnce(Sender<Control>) + Send>,
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
    let mut machine = StateMachine::open(&journal_dir, &raft_dir)?;
    machine.subscribe(committed_tx);
    machine.take_checkpoints(checkpoints_rx);
    let log = LogStore::open(&raft_dir).map_err(replication_error)?;
    let sequencer = recovery::recover_replica(config, key_seed, 0)?;

    let allowed: AllowedPeers = Arc::new(RwLock::new(
        nodes
            .values()
            .map(|n| n.fingerprint)
            .collect::<BTreeSet<_>>(),
    ));
    let endpoint = server_endpoint(
        cluster.listen,
        replica_server_config(&identity, Arc::clone(&allowed))?,
    )?;
    let raft_config = openraft::Config {
        cluster_name: "sealbatch".into(),
        election_timeout_min: cluster.election_timeout_ms[0],
        election_timeout_max: cluster.election_timeout_ms[1],
        heartbeat_interval: cluster.heartbeat_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cluster.snapshot_every_entries),
        max_in_snapshot_log_to_keep: cluster.snapshot_every_entries / 4,
        // A follower that lost its log gets the snapshot in chunks; the
        // last one also installs it (writes the journal), which takes more
        // than openraft's default 200 ms for a large one.
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: 5_000,
        ..Default::default()
    }
    .validate()
    .map_err(replication_error)?;
    let network = Network::new(Arc::clone(&identity), endpoint.clone());
    let raft = Raft::new(cluster.id, Arc::new(raft_config), network, log, machine)
        .await
        .map_err(replication_error)?;
    tokio::spawn(serve(endpoint.clone(), raft.clone()));
    if cluster.bootstrap && !raft.is_initialized().await.map_err(replication_error)? {
        tracing::info!(members = nodes.len(), "starting a new cluster");
        raft.initialize(nodes).await.map_err(replication_error)?;
    }

    let leader: LeaderHint = Arc::new(RwLock::new(None));
    let members: Members = Arc::new(RwLock::new(Vec::new()));
    let (proposals_tx, proposals_rx) = tokio::sync::mpsc::unbounded_channel();
    let rebuild_config = config.clone();
    let rebuild_seed = Zeroizing::new(*key_seed);
    let first_config = config.clone();
    let link = ReplicaLink {
        id: cluster.id,
        proposals: proposals_tx,
        committed: committed_rx,
        checkpoints: checkpoints_tx,
        rebuild: Box::new(move |at_least| {
            recovery::recover_replica(&rebuild_config, &rebuild_seed, at_least)
                .map_err(|e| e.to_string())
        }),
        first_leader: Box::new(move |sequencer| {
            recovery::first_leader(&first_config, sequencer).map_err(|e| e.to_string())
        }),
        leader: Arc::clone(&leader),
        members: Arc::clone(&members),
    };
    let id = cluster.id;
    let start_raft = raft.clone();
    let start = Box::new(move |control: Sender<Control>| {
        tokio::spawn(propose(start_raft.clone(), proposals_rx, control.clone()));
        tokio::spawn(watch_role(
            start_raft, id, control, leader, members, allowed,
        ));
    });
    Ok(Replica {
        raft,
        endpoint,
        link,
        sequencer,
        start,
    })
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
async fn watch_role(
    raft: Raft<Replication>,
    id: ReplicaId,
    control: Sender<Control>,
    leader: LeaderHint,
    members: Members,
    allowed: AllowedPeers,
) {
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
        let term = now.current_term;
        match (is_leader, leading) {
            (true, Some(t)) if t == term => {}
            (true, _) => {
                match tokio::time::timeout(Duration::from_secs(5), raft.ensure_linearizable()).await
                {
                    Ok(Ok(applied)) => {
                        leading = Some(term);
                        let _ = control.send(Control::Promote { term, applied });
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "leading, but not confirmed yet"),
                    Err(_) => tracing::warn!("leading, but the blank entry did not commit in 5 s"),
                }
            }
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

/// Stops Raft and the replica transport.
pub(super) async fn stop(raft: &Raft<Replication>, endpoint: &quinn::Endpoint) {
    if let Err(error) = raft.shutdown().await {
        tracing::warn!(%error, "Raft did not shut down cleanly");
    }
    endpoint.close(0u32.into(), b"replica stopped");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

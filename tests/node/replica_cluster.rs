//! Three replicas in one process, each with its own Raft log, journal and
//! QUIC endpoint on loopback, mutually pinned: a leader is elected, entries
//! commit, the leader is shut down and the others go on, it comes back and
//! catches up; a replica wiped, removed and added again catches up from a
//! snapshot; leaders stopped in turn are replaced by the election timer;
//! every journal ends with the same records; a stranger's certificate is
//! refused.
#![allow(clippy::disallowed_methods)]

use crate::common;
use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::{Config, Raft, SnapshotPolicy};
use sealbatch::envelope::{MerkleRoot, SignedSeal};
use sealbatch::journal::{Journal, JournalConfig, Record};
use sealbatch::net::{Identity, replica_server_config, server_endpoint_on};
use sealbatch::replica::certificate::{Attestor, CommitKey};
use sealbatch::replica::election::ElectionClock;
use sealbatch::replica::network::{AllowedPeers, Network, TransportError};
use sealbatch::replica::{LogStore, Proposal, ReplicaId, ReplicaNode, Replication, StateMachine};
use sealbatch::sequencer::{JournalWrite, RecordKind};
use sealbatch::types::{BatchId, Lsn};

struct Replica {
    raft: Raft<Replication>,
    endpoint: quinn::Endpoint,
}

/// The sequencer key the replicas attest seals of.
const SEQUENCER: [u8; 32] = [9; 32];

fn commit_key(id: ReplicaId) -> CommitKey {
    CommitKey::from_seed(&[u8::try_from(id).expect("a small id"); 32])
}

fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "sealbatch-test".into(),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(40),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        // Elections are timed by `replica::election` and heartbeats sent by
        // `replica::start`'s task, as in the node.
        enable_elect: false,
        enable_heartbeat: false,
        ..Default::default()
    };
    Arc::new(config.validate().expect("a valid config"))
}

async fn start(
    id: ReplicaId,
    dir: &Path,
    identity: Arc<Identity>,
    allowed: AllowedPeers,
    socket: &UdpSocket,
) -> Replica {
    let server = replica_server_config(&identity, allowed).expect("server config");
    // The test's socket, kept across restarts: a copy of it for this start.
    let socket = socket.try_clone().expect("the replica's socket");
    let endpoint = server_endpoint_on(socket, server, &identity).expect("an endpoint");
    let log = LogStore::open(&dir.join("raft")).expect("log");
    let mut machine = StateMachine::open(&dir.join("journal"), &dir.join("raft")).expect("machine");
    let attestor = Arc::new(Attestor::new(commit_key(id), SEQUENCER));
    machine.record_seals(Arc::clone(attestor.seals()));
    let (raft, _) = sealbatch::replica::start(sealbatch::replica::Parts {
        id,
        config: config(),
        heartbeat: Duration::from_millis(50),
        identity,
        endpoint: endpoint.clone(),
        log,
        machine,
        attestor,
    })
    .await
    .expect("raft");
    Replica { raft, endpoint }
}

async fn stop(replica: Replica) {
    replica.raft.shutdown().await.expect("shut down");
    replica.endpoint.close(0u32.into(), b"stopped");
    replica.endpoint.wait_idle().await;
}

async fn leader(replicas: &BTreeMap<ReplicaId, Replica>) -> ReplicaId {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (&id, replica) in replicas {
            let metrics = replica.raft.metrics().borrow().clone();
            if metrics.current_leader == Some(id) && metrics.state.is_leader() {
                return id;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn proposal(first: u64, count: u64) -> Proposal {
    let writes: Vec<JournalWrite> = (first..first + count)
        .map(|lsn| JournalWrite {
            lsn: Lsn(lsn),
            kind: RecordKind::Config,
            payload: format!("record {lsn}").into_bytes(),
        })
        .collect();
    Proposal::new(&writes).expect("a proposal")
}

/// Proposes `entries` groups of 10 records from `next_lsn` on through the
/// leader; returns the next LSN.
async fn write(raft: &Raft<Replication>, mut next_lsn: u64, entries: u64) -> u64 {
    for _ in 0..entries {
        let response = raft
            .client_write(proposal(next_lsn, 10))
            .await
            .expect("committed");
        assert_eq!(response.data.last_lsn, Some(Lsn(next_lsn + 9)));
        next_lsn += 10;
    }
    next_lsn
}

async fn applied_everywhere(replicas: &BTreeMap<ReplicaId, Replica>, index: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for replica in replicas.values() {
        loop {
            let applied = replica
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map(|id| id.index);
            if applied >= Some(index) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not applied everywhere in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn journal(dir: &Path) -> Vec<Record> {
    let recovery = Journal::open_dir_read_only(dir.join("journal"), JournalConfig::default())
        .expect("the journal reads");
    recovery.records.map(|r| r.expect("a record")).collect()
}

/// Three replicas' directories, identities, sockets and membership.
struct Three {
    dirs: BTreeMap<ReplicaId, PathBuf>,
    identities: BTreeMap<ReplicaId, Arc<Identity>>,
    ports: BTreeMap<ReplicaId, UdpSocket>,
    allowed: AllowedPeers,
    nodes: BTreeMap<ReplicaId, ReplicaNode>,
}

impl Three {
    fn new(root: &Path) -> Three {
        let dirs: BTreeMap<ReplicaId, PathBuf> = (1..=3)
            .map(|id| (id, root.join(format!("r{id}"))))
            .collect();
        let identities: BTreeMap<ReplicaId, Arc<Identity>> = dirs
            .iter()
            .map(|(&id, dir)| {
                (
                    id,
                    Arc::new(Identity::load_or_create(&dir.join("tls")).expect("identity")),
                )
            })
            .collect();
        let ports: BTreeMap<ReplicaId, UdpSocket> = dirs
            .keys()
            .map(|&id| (id, common::loopback_udp().0))
            .collect();
        let allowed: AllowedPeers = Arc::new(RwLock::new(
            identities
                .values()
                .map(|i| i.fingerprint)
                .collect::<BTreeSet<_>>(),
        ));
        let nodes = ports
            .iter()
            .map(|(&id, socket)| {
                (
                    id,
                    ReplicaNode {
                        addr: socket.local_addr().expect("an address").to_string(),
                        client_addr: String::new(),
                        fingerprint: identities[&id].fingerprint,
                    },
                )
            })
            .collect();
        Three {
            dirs,
            identities,
            ports,
            allowed,
            nodes,
        }
    }
}

/// Starts replica `id` again from its directory and waits until every
/// replica has applied the log of `leader` as it then stands.
async fn rejoin(
    replicas: &mut BTreeMap<ReplicaId, Replica>,
    id: ReplicaId,
    leader: ReplicaId,
    dirs: &BTreeMap<ReplicaId, PathBuf>,
    identities: &BTreeMap<ReplicaId, Arc<Identity>>,
    allowed: &AllowedPeers,
    ports: &BTreeMap<ReplicaId, UdpSocket>,
) {
    let back = start(
        id,
        &dirs[&id],
        Arc::clone(&identities[&id]),
        Arc::clone(allowed),
        &ports[&id],
    )
    .await;
    replicas.insert(id, back);
    let index = replicas[&leader]
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .expect("a log");
    applied_everywhere(replicas, index).await;
}

/// Stops every replica; each journal must then hold exactly the records
/// `1..next`, the same in all.
async fn stop_all_and_compare(
    replicas: &mut BTreeMap<ReplicaId, Replica>,
    dirs: &BTreeMap<ReplicaId, PathBuf>,
    next: u64,
) {
    for replica in std::mem::take(replicas).into_values() {
        stop(replica).await;
    }
    let reference = journal(&dirs[&1]);
    assert_eq!(
        reference.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        (1..next).collect::<Vec<_>>()
    );
    for dir in dirs.values() {
        assert_eq!(
            journal(dir),
            reference,
            "{} holds other records",
            dir.display()
        );
    }
}

/// Starts the three and initialises the cluster through the first.
async fn start_three(
    dirs: &BTreeMap<ReplicaId, PathBuf>,
    identities: &BTreeMap<ReplicaId, Arc<Identity>>,
    allowed: &AllowedPeers,
    ports: &BTreeMap<ReplicaId, UdpSocket>,
    nodes: &BTreeMap<ReplicaId, ReplicaNode>,
) -> BTreeMap<ReplicaId, Replica> {
    let mut replicas = BTreeMap::new();
    for (&id, dir) in dirs {
        let replica = start(
            id,
            dir,
            Arc::clone(&identities[&id]),
            Arc::clone(allowed),
            &ports[&id],
        )
        .await;
        replicas.insert(id, replica);
    }
    replicas[&1]
        .raft
        .initialize(nodes.clone())
        .await
        .expect("initialized");
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow tier: SEALBATCH_TEST_TIER=slow cargo test -- --include-ignored"]
async fn three_replicas_commit_fail_over_and_catch_up() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let Three {
        dirs,
        identities,
        ports,
        allowed,
        nodes,
    } = Three::new(root.path());
    let mut replicas = start_three(&dirs, &identities, &allowed, &ports, &nodes).await;

    // Entries commit through the leader.
    let first = leader(&replicas).await;
    let next = write(&replicas[&first].raft, 1, 30).await;

    // The leader stops: the other two elect one of them and go on.
    let stopped = replicas.remove(&first).expect("the leader");
    stop(stopped).await;
    let second = leader(&replicas).await;
    assert_ne!(second, first);
    let next = write(&replicas[&second].raft, next, 30).await;

    // It comes back and catches up.
    rejoin(
        &mut replicas,
        first,
        second,
        &dirs,
        &identities,
        &allowed,
        &ports,
    )
    .await;

    // A follower loses its disk: it is removed, wiped, and added back as a
    // new learner, then voter; the leader's log was purged below its
    // snapshots, so it catches up from a snapshot.
    let leader_id = leader(&replicas).await;
    let wiped = *dirs
        .keys()
        .find(|&&id| id != leader_id)
        .expect("a follower");
    let voters: BTreeSet<ReplicaId> = dirs.keys().copied().filter(|&id| id != wiped).collect();
    replicas[&leader_id]
        .raft
        .change_membership(voters, false)
        .await
        .expect("removed");
    let gone = replicas.remove(&wiped).expect("the follower");
    stop(gone).await;
    std::fs::remove_dir_all(dirs[&wiped].join("raft")).expect("wiped");
    std::fs::remove_dir_all(dirs[&wiped].join("journal")).expect("wiped");
    let next = write(&replicas[&leader_id].raft, next, 50).await;
    let fresh = start(
        wiped,
        &dirs[&wiped],
        Arc::clone(&identities[&wiped]),
        Arc::clone(&allowed),
        &ports[&wiped],
    )
    .await;
    replicas.insert(wiped, fresh);
    replicas[&leader_id]
        .raft
        .add_learner(wiped, nodes[&wiped].clone(), true)
        .await
        .expect("learner added");
    replicas[&leader_id]
        .raft
        .change_membership(dirs.keys().copied().collect::<BTreeSet<_>>(), false)
        .await
        .expect("voter again");
    let next = write(&replicas[&leader_id].raft, next, 5).await;
    let index = replicas[&leader_id]
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .expect("a log");
    applied_everywhere(&replicas, index).await;
    let snapshot = replicas[&wiped].raft.metrics().borrow().snapshot;
    assert!(snapshot.is_some(), "the wiped replica installed a snapshot");

    stop_all_and_compare(&mut replicas, &dirs, next).await;
}

/// openraft's own election timer is off (`enable_elect = false`): every
/// leader after the first is elected because `replica::election` stood for
/// it. Leaders stopped in turn are each replaced, in a later term, and the
/// journals agree at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow tier: SEALBATCH_TEST_TIER=slow cargo test -- --include-ignored"]
async fn each_stopped_leader_is_replaced_by_the_election_timer() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let Three {
        dirs,
        identities,
        ports,
        allowed,
        nodes,
    } = Three::new(root.path());
    let mut replicas = start_three(&dirs, &identities, &allowed, &ports, &nodes).await;
    let mut next = 1;
    let mut term = 0;
    for _ in 0..4 {
        let old = leader(&replicas).await;
        let old_term = replicas[&old].raft.metrics().borrow().current_term;
        assert!(old_term > term, "term {old_term} after {term}");
        term = old_term;
        next = write(&replicas[&old].raft, next, 5).await;
        stop(replicas.remove(&old).expect("the leader")).await;
        let new = leader(&replicas).await;
        assert_ne!(new, old);
        next = write(&replicas[&new].raft, next, 5).await;
        rejoin(
            &mut replicas,
            old,
            new,
            &dirs,
            &identities,
            &allowed,
            &ports,
        )
        .await;
    }
    stop_all_and_compare(&mut replicas, &dirs, next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_certificate_is_refused() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let member = Arc::new(Identity::load_or_create(&root.path().join("member")).expect("identity"));
    let stranger =
        Arc::new(Identity::load_or_create(&root.path().join("stranger")).expect("identity"));
    let allowed: AllowedPeers = Arc::new(RwLock::new(BTreeSet::from([member.fingerprint])));
    let (socket, port) = common::loopback_udp();
    let replica = start(
        1,
        &root.path().join("r1"),
        Arc::clone(&member),
        allowed,
        &socket,
    )
    .await;
    let nodes = BTreeMap::from([(
        1,
        ReplicaNode {
            addr: format!("127.0.0.1:{port}"),
            client_addr: String::new(),
            fingerprint: member.fingerprint,
        },
    )]);
    replica.raft.initialize(nodes).await.expect("initialized");

    let config =
        sealbatch::net::replica_client_config(&stranger, member.fingerprint).expect("config");
    let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("client endpoint");
    let outcome = async {
        let connection = endpoint
            .connect_with(config, ([127, 0, 0, 1], port).into(), "sealbatch")?
            .await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(&[2]).await?;
        send.finish()?;
        Ok::<_, Box<dyn std::error::Error>>(recv.read_to_end(1024).await?)
    };
    let result = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("no hang");
    assert!(result.is_err(), "a stranger was answered: {result:?}");
    stop(replica).await;
}

/// A replica attests a seal over the replica transport only once its
/// committed log holds that seal: the one committed, not another root of
/// its batch, not a batch it has not applied (`spec/replication.md` §10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_attests_only_the_seal_its_committed_log_holds() {
    use openraft::network::RaftNetworkFactory as _;

    let root = tempfile::tempdir().expect("a temporary directory");
    let Three {
        dirs,
        identities,
        ports,
        allowed,
        nodes,
    } = Three::new(root.path());
    let replicas = start_three(&dirs, &identities, &allowed, &ports, &nodes).await;
    let first = leader(&replicas).await;
    let seal = SignedSeal {
        e: BatchId(5),
        count: 1,
        root: MerkleRoot([1; 32]),
        signature: [0; 64],
    };
    let proposal = Proposal::new(&[JournalWrite {
        lsn: Lsn::FIRST,
        kind: RecordKind::Seal,
        payload: seal.to_bytes().to_vec(),
    }])
    .expect("a proposal");
    let index = replicas[&first]
        .raft
        .client_write(proposal)
        .await
        .expect("committed")
        .log_id
        .index;
    applied_everywhere(&replicas, index).await;

    let follower = (1..=3).find(|id| *id != first).expect("a follower");
    let mut network = Network::new(
        Arc::clone(&identities[&first]),
        replicas[&first].endpoint.clone(),
        Arc::new(ElectionClock::new()),
    );
    let mut peer = network.new_client(follower, &nodes[&follower]).await;
    let ttl = Duration::from_secs(2);
    let attestation = peer.attest(&SEQUENCER, &seal, ttl).await.expect("attested");
    assert_eq!(attestation.replica, commit_key(follower).public());
    let other_root = SignedSeal {
        root: MerkleRoot([2; 32]),
        ..seal
    };
    assert!(matches!(
        peer.attest(&SEQUENCER, &other_root, ttl).await,
        Err(TransportError::Refused { reason, .. }) if reason.contains("another seal")
    ));
    let unsealed = SignedSeal {
        e: BatchId(6),
        ..seal
    };
    let asked = std::time::Instant::now();
    assert!(matches!(
        peer.attest(&SEQUENCER, &unsealed, ttl).await,
        Err(TransportError::Refused { reason, .. }) if reason.contains("no committed seal")
    ));
    assert!(asked.elapsed() >= sealbatch::replica::network::ATTEST_WAIT);
    // An attestation for another sequencer does not verify as this one's.
    assert!(peer.attest(&[8; 32], &seal, ttl).await.is_err());
    for replica in replicas.into_values() {
        stop(replica).await;
    }
    // Restarted, a replica attests from its journal the seals it applied
    // before (openraft does not apply them again).
    let seals = sealbatch::replica::certificate::CommittedSeals::default();
    assert_eq!(
        seals
            .remember_journal(&dirs[&follower].join("journal"))
            .expect("the journal reads"),
        1
    );
    assert!(matches!(
        seals.attest(&commit_key(follower), &SEQUENCER, BatchId(5), 1, &seal.root),
        sealbatch::replica::certificate::AttestAnswer::Attested(_)
    ));
}

/// A leader's heartbeat does not wait for its answer (so it never holds the
/// next entries back for a round trip: `spec/replication.md` §6): the
/// call answers success at once, and an answer that matters — here a
/// higher vote, as a deposed leader's heartbeat gets — is reported by a
/// later heartbeat; an unreachable replica's error likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_answers_at_once_and_reports_a_higher_vote_later() {
    use openraft::Vote;
    use openraft::network::{RPCOption, RaftNetwork as _, RaftNetworkFactory as _};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};

    let root = tempfile::tempdir().expect("a temporary directory");
    let Three {
        dirs,
        identities,
        ports,
        allowed,
        nodes,
    } = Three::new(root.path());
    let replicas = start_three(&dirs, &identities, &allowed, &ports, &nodes).await;
    let first = leader(&replicas).await;
    let follower = (1..=3).find(|id| *id != first).expect("a follower");
    let mut network = Network::new(
        Arc::clone(&identities[&first]),
        replicas[&first].endpoint.clone(),
        Arc::new(ElectionClock::new()),
    );
    let mut peer = network.new_client(follower, &nodes[&follower]).await;
    // A heartbeat of term 0: every replica has voted in a higher term.
    let stale = || AppendEntriesRequest::<Replication> {
        vote: Vote::new_committed(0, first),
        prev_log_id: None,
        leader_commit: None,
        entries: Vec::new(),
    };
    let option = || RPCOption::new(Duration::from_millis(500));
    let first_answer = peer.append_entries(stale(), option()).await;
    assert!(
        matches!(first_answer, Ok(AppendEntriesResponse::Success)),
        "{first_answer:?}"
    );
    let mut reported = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match peer.append_entries(stale(), option()).await {
            Ok(AppendEntriesResponse::Success) => {}
            other => {
                reported = Some(other);
                break;
            }
        }
    }
    assert!(
        matches!(reported, Some(Ok(AppendEntriesResponse::HigherVote(vote))) if vote.leader_id().term >= 1),
        "{reported:?}"
    );

    // A replica nobody listens for: success now, its error later.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
    let nowhere = ReplicaNode {
        addr: silent.local_addr().expect("an address").to_string(),
        ..nodes[&follower].clone()
    };
    let mut lost = network.new_client(follower, &nowhere).await;
    let answer = lost.append_entries(stale(), option()).await;
    assert!(
        matches!(answer, Ok(AppendEntriesResponse::Success)),
        "{answer:?}"
    );
    let mut failed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if lost.append_entries(stale(), option()).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the unanswered heartbeat was never reported");
    for (_, replica) in replicas {
        stop(replica).await;
    }
}

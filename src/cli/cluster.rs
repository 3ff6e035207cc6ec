//! `sealbatch cluster`: a replicated sequencer's replicas
//! (`spec/replication.md`) — a replica's identity and member entry, every
//! member's view, membership changes, and a demo of three replicas whose
//! leader is killed while traders trade.
//!
//! `status`, `add` and `remove` talk to the replicas over the replica
//! transport with the certificate of the replica whose configuration they
//! are given: only a member's certificate is accepted.

use crate::codec::Decode;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rand_core::OsRng;

use super::CommandResult;
use super::connect::target_batch;
use super::faults::{Fault, FaultKind};
use super::loadgen::Latencies;
use super::relay::{LinkShape, RelayControl, relay};
use super::replicas::{ReplicaSetup, Replicas};
use super::run::runtime;
use crate::client::cluster::ClusterClient;
use crate::client::{ClientError, KeyTrust};
use crate::envelope::{BatchPublicKey, seal_bundle};
use crate::net::{Identity, parse_fingerprint};
use crate::node::{NodeConfig, TLS_DIR, now_ms};
use crate::order::OrderSpec;
use crate::replica::codec::{RaftRequest, ReplicaStatus};
use crate::replica::network::call;
use crate::replica::{ReplicaId, ReplicaNode};
use crate::types::{BUNDLE_ORDERS_MAX, BatchId, Lsn, MarketId, Side};
use crate::wire::{ReasonCode, Schedule};

/// The cluster's commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a replica's certificate in its data directory (or read it
    /// back) and print the `[[cluster.members]]` entry that names it.
    Init(InitArgs),
    /// Ask every member for its view: role, term, log, applied, leader.
    Status(AdminArgs),
    /// Add a replica: a learner that catches up from the leader (a
    /// snapshot and the log), then a voter.
    Add(AddArgs),
    /// Remove a replica from the cluster.
    Remove(RemoveArgs),
    /// Three replicas on loopback and traders; the leader is killed
    /// halfway and trading goes on with the new one. Optionally across a
    /// simulated WAN (a relay in front of each replica's transport) and at
    /// an offered rate.
    Demo(ClusterDemoArgs),
}

/// Arguments of `sealbatch cluster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The replica's data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Its id (at least 1).
    #[arg(long)]
    pub id: ReplicaId,
    /// Its replica transport's address (`[cluster] listen`).
    #[arg(long)]
    pub addr: String,
    /// Its clients' address (`listen`).
    #[arg(long)]
    pub client: String,
}

/// Arguments of the commands that talk to the replicas.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A member's configuration (its `[cluster]` members and its data
    /// directory, whose certificate is presented).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The member's data directory, if not the configuration's.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `sealbatch cluster add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The new replica's id.
    #[arg(long)]
    pub id: ReplicaId,
    /// Its replica transport's address.
    #[arg(long)]
    pub addr: String,
    /// Its clients' address.
    #[arg(long)]
    pub client: String,
    /// Its certificate's fingerprint (its `tls/fingerprint`).
    #[arg(long)]
    pub fingerprint: String,
}

/// Arguments of `sealbatch cluster remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The replica to remove.
    #[arg(long)]
    pub id: ReplicaId,
}

/// Arguments of `sealbatch cluster demo`.
#[derive(Debug, Args)]
pub struct ClusterDemoArgs {
    /// Seconds of trading; the leader is killed halfway.
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// Traders. Without `--rate` each submits one one-order envelope at a
    /// time (closed loop); with it each offers its share on a schedule.
    #[arg(long, default_value_t = 16)]
    pub traders: u64,
    /// Orders per second offered in all, open loop: each trader sends an
    /// envelope of `--bundle` orders every traders × bundle / rate seconds
    /// without waiting for the receipts of those before.
    #[arg(long, value_name = "ORDERS_PER_S")]
    pub rate: Option<u64>,
    /// Orders per envelope with `--rate` (1 to 1024).
    #[arg(long, default_value_t = 16)]
    pub bundle: usize,
    /// One-way delay of every datagram between replicas, each way, ms: a
    /// relay in this process in front of each replica's transport (clients
    /// reach the replicas directly). A round trip between replicas takes
    /// twice this.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Plus or minus up to this much per datagram, ms (in order, unless
    /// `--reorder`).
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Each datagram's jitter drawn on its own, reordering them (as
    /// `netem`'s jitter does).
    #[arg(long)]
    pub reorder: bool,
    /// Datagrams between replicas lost, each way, percent.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Lines added to each replica's `[cluster]` section, e.g.
    /// `heartbeat_ms = 100` or `election_timeout_ms = [1000, 2000]`
    /// (several separated by newlines).
    #[arg(long, value_name = "TOML", default_value = "")]
    pub cluster_config: String,
    /// Keep the replicas' directories (and their logs) here.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// How many times the leader is killed (evenly over the duration); each
    /// killed replica restarts and catches up. 0: a steady run, no fault.
    #[arg(long, default_value_t = 1)]
    pub kills: u32,
    /// A fault campaign instead of `--kills`: this many faults, evenly
    /// over the duration, each of a kind drawn from `--fault-kinds` (with
    /// `--seed`); afterwards every receipt is checked against the
    /// journals, and every keyper release against the committed seals.
    #[arg(long, value_name = "N")]
    pub faults: Option<u32>,
    /// The kinds of fault drawn from, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill-leader,kill-follower,pause-leader,pause-follower,kill-two,kill-all,stop-leader"
    )]
    pub fault_kinds: Vec<FaultKind>,
    /// The seed of the fault plan.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keypers of a committee that holds the batch keys (any majority
    /// releases one), each given every replica and its commit key: a share
    /// leaves only for a seal a majority of the replicas certified. 0: the
    /// replicas share `custodian.key` (trusted-operator mode).
    #[arg(long, default_value_t = 0)]
    pub keypers: usize,
}

/// When each receipt came, and from which replica.
type ReceiptLog = Arc<std::sync::Mutex<Vec<(Instant, Option<SocketAddr>)>>>;

/// What the demo's traders offered and what came of it, shared by them.
#[derive(Debug, Default)]
struct Tally {
    /// Orders the traders meant to send: those sent and those deferred.
    offered: u64,
    /// Orders in receipted envelopes.
    accepted: u64,
    /// Orders in envelopes refused `Busy`.
    busy: u64,
    /// Orders not sent while waiting out a `Busy`'s retry-after.
    deferred: u64,
    /// Orders not sent for want of a batch key for the batch open (the
    /// schedule being asked again).
    unkeyed: u64,
    /// Orders in envelopes refused for another reason (or not answered).
    refused: BTreeMap<String, u64>,
    /// Submission to receipt, per envelope.
    latency: Latencies,
    /// Every receipt, checked against the journals at the end.
    receipts: Vec<crate::envelope::Receipt>,
    /// Receipts (envelopes) per second of trading.
    per_second: Vec<u64>,
}

/// The demo's traders' shared tally.
type SharedTally = Arc<std::sync::Mutex<Tally>>;

impl Tally {
    /// Adds to the tally, if it is not poisoned (a trader panicked: the
    /// run's figures are then of no use anyway).
    fn with(tally: &SharedTally, update: impl FnOnce(&mut Tally)) {
        if let Ok(mut tally) = tally.lock() {
            update(&mut tally);
        }
    }

    /// A submission of `orders` orders, made at `sent`, came back with
    /// `outcome` (the receipt logged in `log`, from the replica `cluster`
    /// now knows as the leader).
    async fn outcome(
        tally: &SharedTally,
        log: &ReceiptLog,
        cluster: &ClusterClient,
        start: Instant,
        sent: Instant,
        orders: u64,
        outcome: Result<crate::envelope::Receipt, ClientError>,
    ) -> Option<Duration> {
        match outcome {
            Ok(receipt) => {
                let took = sent.elapsed();
                let from = cluster.leader_addr().await;
                if let Ok(mut log) = log.lock() {
                    log.push((Instant::now(), from));
                }
                let second = start.elapsed().as_secs() as usize;
                Tally::with(tally, |t| {
                    t.accepted += orders;
                    t.latency.record(took);
                    t.receipts.push(receipt);
                    if t.per_second.len() <= second {
                        t.per_second.resize(second + 1, 0);
                    }
                    t.per_second[second] += 1;
                });
                None
            }
            Err(ClientError::Rejected {
                code: ReasonCode::Busy,
                retry_after,
                ..
            }) => {
                Tally::with(tally, |t| t.busy += orders);
                Some(retry_after)
            }
            Err(error) => {
                let reason = match error {
                    ClientError::Rejected { code, .. } | ClientError::Refused { code, .. } => {
                        code.to_string()
                    }
                    ClientError::Timeout => "no answer".to_string(),
                    ClientError::Connection(_) | ClientError::Net(_) => "connection".to_string(),
                    other => other.to_string(),
                };
                Tally::with(tally, |t| *t.refused.entry(reason).or_default() += orders);
                None
            }
        }
    }
}

/// Runs a cluster command.
///
/// # Errors
///
/// A configuration or identity that cannot be read, replicas that cannot be
/// reached, or a change the cluster refuses.
pub fn run(command: &ClusterCommand) -> CommandResult {
    match command {
        ClusterCommand::Init(args) => {
            let identity = Identity::load_or_create(&args.data_dir.join(TLS_DIR))?;
            println!("[[cluster.members]]");
            println!("id = {}", args.id);
            println!("addr = \"{}\"", args.addr);
            println!("client = \"{}\"", args.client);
            println!("fingerprint = \"{}\"", hex::encode(identity.fingerprint));
            let commit = crate::node::cluster::commit_key(&args.data_dir)?;
            println!();
            println!("# For the keypers' configurations (with a [committee]):");
            println!("# [[replicas]]");
            println!("# address = \"{}\"", args.client);
            println!("# fingerprint = \"{}\"", hex::encode(identity.fingerprint));
            println!("# commit_key = \"{}\"", hex::encode(commit.public()));
            Ok(())
        }
        ClusterCommand::Status(args) => runtime()?.block_on(async {
            let admin = Admin::open(args)?;
            println!(
                "{:>4} {:<10} {:>6} {:>8} {:>10} {:>10} {:>9}",
                "id", "role", "term", "leader", "last log", "applied", "snapshot"
            );
            for (id, node) in &admin.members {
                match admin.status(*id, node).await {
                    Ok(s) => println!(
                        "{:>4} {:<10} {:>6} {:>8} {:>10} {:>10} {:>9}",
                        s.id,
                        s.state_name(),
                        s.term,
                        opt(s.leader),
                        opt(s.last_log),
                        opt(s.applied),
                        opt(s.snapshot)
                    ),
                    Err(error) => println!("{id:>4} unreachable: {error}"),
                }
            }
            Ok(())
        }),
        ClusterCommand::Add(args) => runtime()?.block_on(async {
            let admin = Admin::open(&args.admin)?;
            let node = ReplicaNode {
                addr: args.addr.clone(),
                client_addr: args.client.clone(),
                fingerprint: parse_fingerprint(&args.fingerprint)?,
            };
            let (leader, status) = admin.leader().await?;
            let mut voters: BTreeSet<ReplicaId> = status.membership.voter_ids().collect();
            println!(
                "adding replica {} as a learner through leader {leader}",
                args.id
            );
            admin
                .send(
                    leader,
                    &RaftRequest::AddLearner { id: args.id, node },
                    Duration::from_secs(300),
                )
                .await?;
            voters.insert(args.id);
            admin
                .send(
                    leader,
                    &RaftRequest::ChangeVoters(voters.clone()),
                    Duration::from_secs(60),
                )
                .await?;
            println!("voters now {voters:?}");
            Ok(())
        }),
        ClusterCommand::Remove(args) => runtime()?.block_on(async {
            let admin = Admin::open(&args.admin)?;
            let (leader, status) = admin.leader().await?;
            let voters: BTreeSet<ReplicaId> = status
                .membership
                .voter_ids()
                .filter(|&v| v != args.id)
                .collect();
            if voters.is_empty() {
                return Err("a cluster keeps at least one voter".into());
            }
            admin
                .send(
                    leader,
                    &RaftRequest::ChangeVoters(voters.clone()),
                    Duration::from_secs(60),
                )
                .await?;
            println!("voters now {voters:?}");
            Ok(())
        }),
        ClusterCommand::Demo(args) => demo(args),
    }
}

fn opt(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A member's identity and the members it knows.
struct Admin {
    identity: Arc<Identity>,
    members: BTreeMap<ReplicaId, ReplicaNode>,
}

impl Admin {
    fn open(args: &AdminArgs) -> Result<Admin, Box<dyn std::error::Error + Send + Sync>> {
        let config = NodeConfig::from_file(&args.config)?;
        let cluster = config
            .cluster
            .as_ref()
            .ok_or("the configuration has no [cluster] section")?;
        let members = cluster.nodes()?;
        let data = args.data_dir.clone().unwrap_or(config.data_dir.clone());
        let identity = Arc::new(Identity::load_or_create(&data.join(TLS_DIR))?);
        Ok(Admin { identity, members })
    }

    async fn send(
        &self,
        id: ReplicaId,
        request: &RaftRequest,
        ttl: Duration,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        let node = self
            .members
            .get(&id)
            .ok_or_else(|| format!("replica {id} is not a member this configuration knows"))?;
        Ok(call(Arc::clone(&self.identity), id, node, request, ttl).await?)
    }

    async fn status(
        &self,
        id: ReplicaId,
        node: &ReplicaNode,
    ) -> Result<ReplicaStatus, Box<dyn std::error::Error + Send + Sync>> {
        let body = call(
            Arc::clone(&self.identity),
            id,
            node,
            &RaftRequest::Status,
            Duration::from_secs(2),
        )
        .await?;
        Ok(ReplicaStatus::from_bytes(&body)?)
    }

    /// The leader, as the first member that answers knows it, and its
    /// status (its own word that it leads). During an election no member
    /// knows one: asked again until [`LEADER_WAIT_MAX`].
    async fn leader(
        &self,
    ) -> Result<(ReplicaId, ReplicaStatus), Box<dyn std::error::Error + Send + Sync>> {
        let deadline = Instant::now() + LEADER_WAIT_MAX;
        loop {
            for (id, node) in &self.members {
                let Ok(status) = self.status(*id, node).await else {
                    continue;
                };
                let Some(leader) = status.leader else {
                    continue;
                };
                if leader == *id {
                    return Ok((leader, status));
                }
                if let Some(node) = self.members.get(&leader)
                    && let Ok(status) = self.status(leader, node).await
                    && status.leader == Some(leader)
                {
                    return Ok((leader, status));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no member knows a leader after {} s",
                    LEADER_WAIT_MAX.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How long a `cluster` command waits for a leader (an election) before it
/// gives up.
const LEADER_WAIT_MAX: Duration = Duration::from_secs(15);

/// The traders' common state: the cluster, when trading starts and ends,
/// the receipts' log and the tally.
#[derive(Clone)]
struct Trading {
    cluster: Arc<ClusterClient>,
    start: Instant,
    until: Instant,
    log: ReceiptLog,
    tally: SharedTally,
}

/// The batch open 30 ms from now and its key, if `schedule` holds it.
fn batch_key(schedule: &Schedule) -> Option<(BatchId, BatchPublicKey)> {
    let e = target_batch(schedule, now_ms(), 30);
    schedule
        .batch_keys
        .iter()
        .find(|(b, _)| *b == e)
        .and_then(|(_, k)| BatchPublicKey::from_bytes(k).ok())
        .map(|key| (e, key))
}

/// `count` orders of one lot, alternately bought and sold over markets 1
/// to 3, their client ids from envelope `nonce`.
fn demo_orders(nonce: u64, count: usize) -> Vec<OrderSpec> {
    (0..count as u64)
        .map(|j| {
            let n = nonce.wrapping_add(j);
            OrderSpec {
                market: MarketId(1 + (n % 3) as u32),
                side: if n.is_multiple_of(2) {
                    Side::Buy
                } else {
                    Side::Sell
                },
                limit: None,
                qty: 1,
                client_order_id: nonce.wrapping_mul(BUNDLE_ORDERS_MAX as u64).wrapping_add(j),
            }
        })
        .collect()
}

/// One trader, closed loop: submits one-order envelopes through the
/// cluster client, each once the one before is answered, until trading
/// ends.
async fn trade(trading: Trading, trader: u64) {
    let Trading {
        cluster,
        start,
        until,
        log,
        tally,
    } = trading;
    let key = crate::envelope::generate_account_key(&mut OsRng);
    let mut schedule = None;
    let mut nonce = trader << 32;
    while Instant::now() < until {
        // The schedule is asked again only when it holds no key for the
        // batch to seal to (servers budget schedule requests).
        let fresh = match &schedule {
            Some(s) => s,
            None => match cluster.schedule().await {
                Ok(s) => schedule.insert(s),
                Err(_) => continue,
            },
        };
        let Some((e, batch_key)) = batch_key(fresh) else {
            let e = target_batch(fresh, now_ms(), 30);
            if schedule
                .take()
                .is_some_and(|s| s.batch_keys.iter().all(|(b, _)| *b != e))
            {
                continue;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        nonce += 1;
        let orders = demo_orders(nonce, 1);
        let deployment = fresh.deployment();
        let Ok(envelope) =
            seal_bundle(&mut OsRng, &key, &deployment, e, &batch_key, nonce, &orders)
        else {
            continue;
        };
        Tally::with(&tally, |t| t.offered += 1);
        let sent = Instant::now();
        let outcome = cluster.submit(envelope.into_bytes()).await;
        if let Some(retry_after) =
            Tally::outcome(&tally, &log, &cluster, start, sent, 1, outcome).await
        {
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(retry_after.min(left)).await;
        }
    }
}

/// A trader asks the schedule again once it holds keys for no more than
/// this many batches after the one it seals to.
const KEYS_LEFT_MIN: u64 = 2;

/// One trader, open loop: an envelope of `bundle` orders every `period`
/// from `first` until trading ends, each submitted in a task of its own
/// without waiting for those before; then waits for those in flight (each
/// bounded by the client's failover wait). What the schedule called for
/// but could not be sent (a `Busy`'s retry-after running, or no batch key
/// known) is counted as deferred or unkeyed.
async fn offer(
    trading: Trading,
    trader: u64,
    mut schedule: Option<Schedule>,
    first: Instant,
    period: Duration,
    bundle: usize,
) {
    let key = crate::envelope::generate_account_key(&mut OsRng);
    let orders_per_envelope = bundle as u64;
    let mut nonce = trader << 32;
    let mut refresh: Option<tokio::task::JoinHandle<Result<Schedule, ClientError>>> = None;
    let paused_until = Arc::new(std::sync::Mutex::new(first));
    let mut submissions = tokio::task::JoinSet::new();
    let mut next = first;
    while next < trading.until {
        tokio::time::sleep_until(next.into()).await;
        next += period;
        while submissions.try_join_next().is_some() {}
        Tally::with(&trading.tally, |t| t.offered += orders_per_envelope);
        if let Some(done) = refresh.take_if(|r| r.is_finished())
            && let Ok(Ok(fresh)) = done.await
        {
            schedule = Some(fresh);
        }
        // Asked again before the keys run out, in a task of its own: a
        // failover must not hold up the offers.
        // The batch the offer after next will seal to: a slow trader asks
        // again well before then, not after its keys ran out.
        let ahead_ms = u64::try_from(period.as_millis().saturating_mul(2)).unwrap_or(u64::MAX);
        let running_out = schedule.as_ref().is_none_or(|s| {
            let e = target_batch(s, now_ms().saturating_add(ahead_ms), 30);
            s.batch_keys
                .iter()
                .map(|(b, _)| *b)
                .max()
                .is_none_or(|newest| newest <= e.saturating_add(KEYS_LEFT_MIN))
        });
        if running_out && refresh.is_none() {
            let cluster = Arc::clone(&trading.cluster);
            refresh = Some(tokio::spawn(async move { cluster.schedule().await }));
        }
        let paused = paused_until.lock().map_or(first, |p| *p);
        let keyed = schedule.as_ref().and_then(batch_key);
        let (Some((e, batch_key)), Some(fresh)) = (keyed, schedule.as_ref()) else {
            Tally::with(&trading.tally, |t| t.unkeyed += orders_per_envelope);
            continue;
        };
        if Instant::now() < paused {
            Tally::with(&trading.tally, |t| t.deferred += orders_per_envelope);
            continue;
        }
        nonce += 1;
        let orders = demo_orders(nonce, bundle);
        let Ok(envelope) = seal_bundle(
            &mut OsRng,
            &key,
            &fresh.deployment(),
            e,
            &batch_key,
            nonce,
            &orders,
        ) else {
            Tally::with(&trading.tally, |t| {
                *t.refused.entry("not sealed".into()).or_default() += orders_per_envelope;
            });
            continue;
        };
        let trading = trading.clone();
        let paused_until = Arc::clone(&paused_until);
        submissions.spawn(async move {
            let sent = Instant::now();
            let outcome = trading.cluster.submit(envelope.into_bytes()).await;
            let busy = Tally::outcome(
                &trading.tally,
                &trading.log,
                &trading.cluster,
                trading.start,
                sent,
                orders_per_envelope,
                outcome,
            )
            .await;
            if let Some(retry_after) = busy
                && let Ok(mut paused) = paused_until.lock()
            {
                *paused = (*paused).max(Instant::now() + retry_after);
            }
        });
    }
    if let Some(refresh) = refresh {
        refresh.abort();
    }
    while submissions.join_next().await.is_some() {}
}

/// How long after a kill an election is put down to it.
const KILL_ELECTION_WINDOW_MS: u64 = 3_000;

/// How long a failover may take before the demo gives up waiting for the
/// new leader's first receipt (and counts the failover as not served).
const FAILOVER_WAIT: Duration = Duration::from_secs(15);

/// What the trading phase measured, for the report after the replicas
/// stop.
struct Traded {
    /// Kill to the first receipt from another replica; `None`: none within
    /// [`FAILOVER_WAIT`].
    failovers: Vec<Option<Duration>>,
    /// When each kill or fault began and ended, unix ms.
    fault_windows: Vec<(u64, u64)>,
    /// The faults of a campaign: each with the time from its start to the
    /// next receipt (`None`: none within [`FAILOVER_WAIT`] of its end).
    faults: Vec<(Fault, Option<Duration>)>,
    /// Replicas that exited without being stopped: which, and how.
    self_stopped: Vec<(usize, String)>,
    /// Every receipt.
    receipts: Vec<crate::envelope::Receipt>,
    /// The replicas' journals as a campaign gathered them.
    gathered: Option<Gathered>,
    /// The keypers' first releases (batch, seal root, unix ms) and the
    /// batch clock (genesis, length), with a committee.
    releases: Option<Releases>,
    /// When trading started, unix ms.
    started_ms: u64,
    /// Orders offered and accepted per second, and the accepted share
    /// (percent).
    offered_per_s: f64,
    accepted_per_s: f64,
    accepted_percent: f64,
    /// Receipt latency p50 and p99.
    receipt_p50: Duration,
    receipt_p99: Duration,
}

/// Milliseconds, to a tenth.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn demo(args: &ClusterDemoArgs) -> CommandResult {
    let shape = LinkShape::new(args.delay_ms, args.jitter_ms, args.loss)?.reordering(args.reorder);
    if args.faults.is_some_and(|n| n > super::faults::FAULTS_MAX) {
        return Err(format!("--faults: at most {}", super::faults::FAULTS_MAX).into());
    }
    let period = trader_period(args)?;
    let temporary;
    let root = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("sealbatch-cluster-")
                .tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    let committee = demo_committee(args, &root)?;
    let runtime = runtime()?;
    let (mut replicas, relays) = start_replicas(args, &root, committee.as_ref(), shape, &runtime)?;
    let mut traded = runtime.block_on(trade_through_faults(
        args,
        &root,
        committee.as_ref(),
        period,
        &mut replicas,
    ))?;
    // Elections from here on are the stopping replicas'.
    let stopped_ms = now_ms();
    for i in 0..3 {
        replicas.stop(i);
    }
    let elections = report_elections(&replicas, &traded, stopped_ms);
    if !shape.is_transparent() {
        let counts = relays.counts();
        println!(
            "relays: {} datagrams forwarded, {} lost, {} overflowed",
            counts.forwarded, counts.lost, counts.overflowed
        );
    }
    print_summary(&traded, elections);
    check_journals(&replicas, &mut traded)
}

/// Each open-loop trader's period between envelopes (`None`: closed
/// loop, without `--rate`).
fn trader_period(
    args: &ClusterDemoArgs,
) -> Result<Option<Duration>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(match args.rate {
        None => None,
        Some(0) => return Err("--rate: at least 1 order per second".into()),
        Some(_) if !(1..=BUNDLE_ORDERS_MAX).contains(&args.bundle) => {
            return Err(format!("--bundle: from 1 to {BUNDLE_ORDERS_MAX} orders").into());
        }
        Some(rate) => {
            // Each trader's period; a day at most (more traders than that
            // offers nothing within a run), never a panic on overflow.
            let seconds = args.traders.max(1) as f64 * args.bundle as f64 / rate as f64;
            match Duration::try_from_secs_f64(seconds) {
                Ok(period) if period <= Duration::from_secs(86_400) => Some(period),
                _ => {
                    return Err(format!(
                        "--traders {} × --bundle {} / --rate {rate}: each trader would wait over a day",
                        args.traders, args.bundle
                    )
                    .into());
                }
            }
        }
    })
}

/// The demo's committee of `--keypers` keypers (none for 0), whose log
/// goes to `keypers.log` in `root` (they run in this process).
fn demo_committee(
    args: &ClusterDemoArgs,
    root: &Path,
) -> Result<Option<crate::node::config::CommitteeConfig>, Box<dyn std::error::Error + Send + Sync>>
{
    let committee = match args.keypers {
        0 => return Ok(None),
        n if n > crate::keyper::COMMITTEE_MAX => {
            return Err(format!("--keypers: at most {}", crate::keyper::COMMITTEE_MAX).into());
        }
        n => super::demo::demo_committee(&root.join("keypers"), n, None)?,
    };
    // `RUST_LOG` chooses what the keypers' log holds.
    let file = std::fs::File::create(root.join("keypers.log"))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(Some(committee))
}

/// Three replicas started in `root`, each behind a relay of `shape` unless
/// it is transparent; the relays' control.
fn start_replicas(
    args: &ClusterDemoArgs,
    root: &Path,
    committee: Option<&crate::node::config::CommitteeConfig>,
    shape: LinkShape,
    runtime: &tokio::runtime::Runtime,
) -> Result<(Replicas, Arc<RelayControl>), Box<dyn std::error::Error + Send + Sync>> {
    // The relays' sockets first: their ports are the members' transport
    // addresses in the configurations.
    let relay_sockets = if shape.is_transparent() {
        Vec::new()
    } else {
        let _entered = runtime.enter();
        (0..3)
            .map(|_| {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
                socket.set_nonblocking(true)?;
                tokio::net::UdpSocket::from_std(socket)
            })
            .collect::<std::io::Result<Vec<_>>>()?
    };
    let relay_ports = relay_sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<u16>>>()?;
    let mut setup = ReplicaSetup::new(3, std::env::current_exe()?);
    setup.relay_ports = (!relay_ports.is_empty()).then(|| relay_ports.clone());
    setup.cluster_extra = args.cluster_config.clone();
    if let Some(committee) = committee {
        #[derive(serde::Serialize)]
        struct Section<'a> {
            committee: &'a crate::node::config::CommitteeConfig,
        }
        setup.sections = toml::to_string(&Section { committee })?;
        setup.custodian = false;
    }
    let mut replicas = Replicas::create(root, &setup)?;
    let relays = Arc::new(RelayControl::new());
    for (i, socket) in relay_sockets.into_iter().enumerate() {
        let target = SocketAddr::from(([127, 0, 0, 1], replicas.transport_port(i)));
        let control = Arc::clone(&relays);
        runtime.spawn(async move {
            let error = relay(socket, target, shape, i as u64 + 1, control).await;
            eprintln!("the relay of replica {} stopped: {error}", i + 1);
        });
    }
    for i in 0..3 {
        replicas.start(i)?;
    }
    println!("three replicas on loopback, data in {}", root.display());
    if !relay_ports.is_empty() {
        println!(
            "between the replicas a relay in front of each one's transport: {shape} each way; clients connect directly"
        );
    }
    Ok((replicas, relays))
}

/// The trading phase: the keypers and the traders started, the leader
/// killed `--kills` times or a fault campaign run, everything measured.
async fn trade_through_faults(
    args: &ClusterDemoArgs,
    root: &Path,
    committee: Option<&crate::node::config::CommitteeConfig>,
    period: Option<Duration>,
    replicas: &mut Replicas,
) -> Result<Traded, Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    let keypers = match committee {
        None => None,
        Some(committee) => {
            let answering = wait_for(
                started,
                || async { replicas.leader(false, None).await.map(|(i, _)| i) },
                "no replica led within 30 s",
            )
            .await?;
            Some(start_keypers(root, committee, replicas, answering).await?)
        }
    };
    let first = wait_for(
        started,
        || async { replicas.leader(true, None).await.map(|(i, _)| i) },
        "no replica led with batch keys within 30 s",
    )
    .await?;
    println!(
        "replica {} leads (elected in {} ms)",
        first + 1,
        started.elapsed().as_millis()
    );
    let cluster = Arc::new(ClusterClient::connect(replicas.addrs()?, KeyTrust::default()).await?);
    let duration = Duration::from_secs_f64(args.duration.max(2.0));
    let start = Instant::now();
    let started_ms = now_ms();
    let trading = Trading {
        cluster,
        start,
        until: start + duration,
        log: Arc::default(),
        tally: Arc::default(),
    };
    let traders = spawn_traders(args, &trading, period).await;
    let kills = if args.faults.is_some() { 0 } else { args.kills };
    let (failovers, mut fault_windows) =
        kill_leaders(replicas, &trading, first, kills, duration).await?;
    let mut campaign = Campaign::default();
    if let Some(count) = args.faults {
        let plan = super::faults::plan(args.seed, count, duration, &args.fault_kinds);
        println!(
            "a fault campaign of {} faults (seed {}): {}",
            plan.len(),
            args.seed,
            args.fault_kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        campaign = run_faults(replicas, &trading, &plan).await?;
        fault_windows.extend(campaign.faults.iter().map(|f| f.window));
    }
    for trader in traders {
        trader.await?;
    }
    let mut tally = trading
        .tally
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .map_err(|_| "a trader panicked")?;
    let seconds = duration.as_secs_f64();
    let accepted_percent = print_tally(&tally, seconds, kills, &failovers);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A replica that stopped itself during the last fault's wait.
    campaign.self_stopped.extend(replicas.reap(false));
    let releases = match keypers {
        Some(keypers) => Some(keypers.stop().await),
        None => None,
    };
    Ok(Traded {
        failovers,
        fault_windows,
        faults: campaign
            .faults
            .into_iter()
            .map(|f| (f.fault, f.to_receipt))
            .collect(),
        self_stopped: campaign.self_stopped,
        gathered: Some(campaign.gathered),
        receipts: std::mem::take(&mut tally.receipts),
        started_ms,
        offered_per_s: tally.offered as f64 / seconds,
        accepted_per_s: tally.accepted as f64 / seconds,
        accepted_percent,
        receipt_p50: tally.latency.quantile(0.5),
        receipt_p99: tally.latency.quantile(0.99),
        releases,
    })
}

/// The demo's traders: closed loop, or open loop at `period` each (spread
/// over one period), until the end of trading.
async fn spawn_traders(
    args: &ClusterDemoArgs,
    trading: &Trading,
    period: Option<Duration>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let start = trading.start;
    // The open-loop traders start with a schedule (its batch keys).
    let schedule = match period {
        Some(_) => trading.cluster.schedule().await.ok(),
        None => None,
    };
    let traders: Vec<_> = (0..args.traders)
        .map(|t| match period {
            None => tokio::spawn(trade(trading.clone(), t)),
            Some(period) => {
                // Spread over one period, not all at once.
                let first = start + period.mul_f64(t as f64 / args.traders as f64);
                tokio::spawn(offer(
                    trading.clone(),
                    t,
                    schedule.clone(),
                    first,
                    period,
                    args.bundle,
                ))
            }
        })
        .collect();
    if let Some(period) = period {
        println!(
            "{} traders offering {} orders/s in all, open loop: each an envelope of {} orders every {:.1} ms",
            args.traders,
            args.rate.unwrap_or(0),
            args.bundle,
            ms(period)
        );
    }
    traders
}

/// What [`kill_leaders`] measured: each kill's failover (`None`: not
/// served within [`FAILOVER_WAIT`]) and its window (unix ms).
type KillsDone = (Vec<Option<Duration>>, Vec<(u64, u64)>);

/// Kills the leader `kills` times, evenly over `duration` from the start
/// of trading, each time restarting it after the first receipt from
/// another replica (or [`FAILOVER_WAIT`]); returns each kill's failover
/// and window.
async fn kill_leaders(
    replicas: &mut Replicas,
    trading: &Trading,
    first: usize,
    kills: u32,
    duration: Duration,
) -> Result<KillsDone, Box<dyn std::error::Error + Send + Sync>> {
    let start = trading.start;
    let mut leader = first;
    let mut failovers = Vec::new();
    let mut fault_windows = Vec::new();
    for k in 0..kills {
        let at = start + duration * (k + 1) / (kills + 1);
        tokio::time::sleep_until(at.into()).await;
        // Receipts logged before the kill are not looked at again.
        let mut scanned = trading.log.lock().map_or(0, |log| log.len());
        replicas.kill(leader);
        let killed = Instant::now();
        let killed_ms = now_ms();
        fault_windows.push((killed_ms, killed_ms));
        let dead = replicas.addrs()?.get(leader).map(|r| r.addr);
        // The first receipt from another replica after the kill.
        let served = loop {
            let found = trading.log.lock().ok().and_then(|log| {
                let found = log
                    .get(scanned..)
                    .unwrap_or_default()
                    .iter()
                    .find(|(at, from)| *at > killed && from.is_some() && *from != dead)
                    .copied();
                scanned = log.len();
                found
            });
            if found.is_some() || killed.elapsed() > FAILOVER_WAIT {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let killed_replica = leader;
        match served {
            Some((first_receipt, from)) => {
                let took = first_receipt.duration_since(killed);
                failovers.push(Some(took));
                leader = replicas
                    .addrs()?
                    .iter()
                    .position(|r| Some(r.addr) == from)
                    .unwrap_or(leader);
                println!(
                    "killed the leader, replica {} (SIGKILL); first receipt from replica {} {:.0} ms later",
                    killed_replica + 1,
                    leader + 1,
                    ms(took)
                );
            }
            None => {
                failovers.push(None);
                println!(
                    "killed the leader, replica {} (SIGKILL); no receipt from another replica within {} s",
                    killed_replica + 1,
                    FAILOVER_WAIT.as_secs()
                );
            }
        }
        replicas.start(killed_replica)?;
        if served.is_none() {
            leader = replicas
                .leader(false, None)
                .await
                .map_or(leader, |(i, _)| i);
        }
    }
    Ok((failovers, fault_windows))
}

/// Prints the receipts, latencies, acceptance and failovers of a run of
/// `seconds`; returns the share of orders accepted (percent).
fn print_tally(tally: &Tally, seconds: f64, kills: u32, failovers: &[Option<Duration>]) -> f64 {
    println!("receipts per second: {:?}", tally.per_second);
    println!(
        "{} receipts in {:.1} s; submission to receipt p50 {:.1} ms, p99 {:.1} ms, slowest{} {:.1} ms",
        tally.latency.len(),
        seconds,
        ms(tally.latency.quantile(0.5)),
        ms(tally.latency.quantile(0.99)),
        if kills > 0 {
            " (across the failovers)"
        } else {
            ""
        },
        ms(tally.latency.max())
    );
    let accepted_percent = if tally.offered == 0 {
        0.0
    } else {
        100.0 * tally.accepted as f64 / tally.offered as f64
    };
    let refused: u64 = tally.refused.values().sum();
    println!(
        "orders offered {} ({:.0}/s), accepted {} ({:.0}/s, {:.1} %); refused Busy {}, deferred {} (not sent during a Busy's retry-after), {} not sent without a batch key, refused otherwise {}{}",
        tally.offered,
        tally.offered as f64 / seconds,
        tally.accepted,
        tally.accepted as f64 / seconds,
        accepted_percent,
        tally.busy,
        tally.deferred,
        tally.unkeyed,
        refused,
        if tally.refused.is_empty() {
            String::new()
        } else {
            format!(" {:?}", tally.refused)
        }
    );
    let mut served: Vec<Duration> = failovers.iter().flatten().copied().collect();
    served.sort_unstable();
    let pick = |q: f64| {
        served
            .get(((served.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| ms(*d))
    };
    if kills > 0 {
        println!(
            "failover (kill to the first receipt from the new leader) over {} kills: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; served again after {} of {}",
            failovers.len(),
            pick(0.5),
            pick(0.99),
            pick(1.0),
            served.len(),
            failovers.len()
        );
    }
    accepted_percent
}

/// Prints the elections stood from the start of trading to `stopped_ms`;
/// returns how many there were, and how many were not within
/// [`KILL_ELECTION_WINDOW_MS`] of a fault.
fn report_elections(replicas: &Replicas, traded: &Traded, stopped_ms: u64) -> (usize, usize) {
    let logs: Vec<PathBuf> = replicas
        .dirs()
        .iter()
        .map(|d| d.with_extension("log"))
        .collect();
    let elections = Elections::read(&logs, traded.started_ms..stopped_ms);
    let after_kill = |at: u64| {
        traded
            .fault_windows
            .iter()
            .any(|&(start, end)| at >= start && at <= end.saturating_add(KILL_ELECTION_WINDOW_MS))
    };
    let unprovoked = elections
        .stood
        .iter()
        .filter(|(at, _)| !after_kill(*at))
        .count();
    println!(
        "elections from the start of trading: {} stood ({unprovoked} not within {} s of a fault), highest term stood for {}; {} pre-votes found no majority",
        elections.stood.len(),
        KILL_ELECTION_WINDOW_MS / 1_000,
        elections
            .stood
            .iter()
            .filter_map(|(_, term)| *term)
            .max()
            .map_or_else(|| "-".to_string(), |t| t.to_string()),
        elections.not_standing
    );
    (elections.stood.len(), unprovoked)
}

/// The run's one-line summary, for scripts.
fn print_summary(traded: &Traded, (elections, unprovoked): (usize, usize)) {
    let mut served: Vec<Duration> = traded.failovers.iter().flatten().copied().collect();
    served.sort_unstable();
    let failover = |q: f64| {
        served
            .get(((served.len() as f64 - 1.0) * q).round() as usize)
            .map_or_else(|| "-".to_string(), |d| format!("{:.0}", ms(*d)))
    };
    println!(
        "summary: offered_per_s={:.0} accepted_per_s={:.0} accepted_pct={:.1} receipt_p50_ms={:.1} receipt_p99_ms={:.1} elections={} elections_without_kill={unprovoked} failover_p50_ms={} failover_max_ms={} failovers_served={}/{}",
        traded.offered_per_s,
        traded.accepted_per_s,
        traded.accepted_percent,
        ms(traded.receipt_p50),
        ms(traded.receipt_p99),
        elections,
        failover(0.5),
        failover(1.0),
        served.len(),
        traded.failovers.len()
    );
}

/// Every replica's journal equal to the others' at every LSN, the whole
/// verified, the campaign's promises checked, every kill served.
fn check_journals(replicas: &Replicas, traded: &mut Traded) -> CommandResult {
    // Every replica's journal holds the same record at every LSN it holds
    // (a campaign gathered them after every fault as well: a replica's
    // journal is pruned behind its snapshots).
    let mut gathered = traded.gathered.take().unwrap_or_default();
    for (i, dir) in replicas.dirs().iter().enumerate() {
        let count = gathered.read(i, dir).map_err(|error| error.to_string())?;
        println!(
            "replica {}: {count} records, all equal to the others' at their LSNs",
            i + 1
        );
    }
    let (union, checkpoints, gap) = gathered.contiguous();
    if let Some(lsn) = gap {
        println!(
            "the journals gathered have a gap before LSN {lsn} (pruned between two readings): checked from there"
        );
    }
    let report = crate::sequencer::verify_journal_with(
        union
            .iter()
            .map(|(lsn, (kind, payload))| (*lsn, *kind, payload.clone())),
        &checkpoints,
    )?;
    if let Some(lsn) = report.from_checkpoint {
        println!("journals pruned: verified from the checkpoint at LSN {lsn}");
    }
    let mismatched: Vec<_> = report
        .batches
        .iter()
        .filter(|b| b.verdict.is_err())
        .collect();
    println!(
        "verify: {} records, {} batches re-derived, {} mismatched",
        report.records,
        report.batches.len(),
        mismatched.len()
    );
    if let Some(batch) = mismatched.first() {
        return Err(format!("batch {} does not re-derive: {:?}", batch.e, batch.verdict).into());
    }
    if let Some(checkpoint) = report.checkpoints.iter().find(|c| c.verdict.is_err()) {
        return Err(format!(
            "the checkpoint at LSN {} is not the replayed state: {:?}",
            checkpoint.lsn, checkpoint.verdict
        )
        .into());
    }
    let broken = report_campaign(traded, &union, &checkpoints)?;
    if broken > 0 {
        return Err(format!("{broken} broken promises (above)").into());
    }
    let unserved = traded.failovers.iter().filter(|f| f.is_none()).count();
    if unserved > 0 {
        return Err(format!(
            "{unserved} of {} kills were not followed by a receipt from another replica within {} s",
            traded.failovers.len(),
            FAILOVER_WAIT.as_secs()
        )
        .into());
    }
    Ok(())
}

/// One fault carried out: when it began and ended (unix ms), and the time
/// from its start to the next receipt.
struct FaultDone {
    fault: Fault,
    window: (u64, u64),
    to_receipt: Option<Duration>,
}

/// What a fault campaign did.
#[derive(Default)]
struct Campaign {
    faults: Vec<FaultDone>,
    self_stopped: Vec<(usize, String)>,
    gathered: Gathered,
}

/// A journal record: kind and payload.
type RecordBytes = (u8, Vec<u8>);

/// The replicas' journals gathered into one: every record by LSN, and
/// every checkpoint by LSN (a pruned journal is verified from one).
#[derive(Default)]
struct Gathered {
    union: BTreeMap<Lsn, RecordBytes>,
    checkpoints: BTreeMap<Lsn, crate::sequencer::Checkpoint>,
}

/// Why a replica's journal could not be gathered.
#[derive(Debug, thiserror::Error)]
enum GatherError {
    /// It holds another record than a replica read before at that LSN.
    #[error("replica {replica} disagrees at LSN {lsn}")]
    Disagrees { replica: usize, lsn: Lsn },
    /// It could not be read (while running: a segment pruned under it).
    #[error("replica {replica}: {reason}")]
    Unreadable { replica: usize, reason: String },
}

impl Gathered {
    /// Adds replica `i`'s journal in `dir`; the count of records it holds.
    fn read(&mut self, i: usize, dir: &Path) -> Result<u64, GatherError> {
        let unreadable = |reason: String| GatherError::Unreadable {
            replica: i + 1,
            reason,
        };
        let journal = dir.join(crate::node::JOURNAL_DIR);
        for checkpoint in
            super::verify::checkpoints(&journal).map_err(|error| unreadable(error.to_string()))?
        {
            self.checkpoints.entry(checkpoint.lsn).or_insert(checkpoint);
        }
        let recovery = crate::journal::Journal::open_dir_read_only(
            journal,
            crate::journal::JournalConfig::default(),
        )
        .map_err(|error| unreadable(error.to_string()))?;
        let mut count = 0u64;
        for record in recovery.records {
            let record = record.map_err(|error| unreadable(error.to_string()))?;
            count += 1;
            let held = self
                .union
                .entry(record.lsn)
                .or_insert((record.kind, record.payload.clone()));
            if *held != (record.kind, record.payload) {
                return Err(GatherError::Disagrees {
                    replica: i + 1,
                    lsn: record.lsn,
                });
            }
        }
        Ok(count)
    }

    /// The records from the last gap on (all of them if none), the
    /// checkpoints, and the LSN after the last gap if there is one.
    fn contiguous(
        self,
    ) -> (
        BTreeMap<Lsn, RecordBytes>,
        Vec<crate::sequencer::Checkpoint>,
        Option<Lsn>,
    ) {
        let mut union = self.union;
        let mut gap = None;
        let mut previous: Option<Lsn> = None;
        for &lsn in union.keys() {
            if previous.is_some_and(|p| p.checked_add(1) != Some(lsn)) {
                gap = Some(lsn);
            }
            previous = Some(lsn);
        }
        if let Some(lsn) = gap {
            union = union.split_off(&lsn);
        }
        (union, self.checkpoints.into_values().collect(), gap)
    }
}

/// The replica the traders' latest receipt came from, if any is known.
fn receipting_replica(replicas: &Replicas, log: &ReceiptLog) -> Option<usize> {
    let from = log.lock().ok()?.last()?.1?;
    let addrs = replicas.addrs().ok()?;
    addrs.iter().position(|r| r.addr == from)
}

/// Carries out `plan` on the replicas while the traders trade: each fault
/// at its time, the processes restarted or resumed after its hold; then
/// waits (at most [`FAILOVER_WAIT`]) for the first receipt after it. A
/// replica found exited without being stopped is reported and restarted,
/// as a supervisor would.
async fn run_faults(
    replicas: &mut Replicas,
    trading: &Trading,
    plan: &[Fault],
) -> Result<Campaign, Box<dyn std::error::Error + Send + Sync>> {
    let mut campaign = Campaign::default();
    for (k, fault) in plan.iter().enumerate() {
        tokio::time::sleep_until((trading.start + fault.at).into()).await;
        campaign.self_stopped.extend(replicas.reap(true));
        let leader = match receipting_replica(replicas, &trading.log) {
            Some(i) => i,
            None => replicas.leader(false, None).await.map_or(0, |(i, _)| i),
        };
        // A follower, alternately the one after and the one before.
        let follower = (leader + 1 + k % 2) % 3;
        let began = Instant::now();
        let began_ms = now_ms();
        let hold = fault.hold;
        match fault.kind {
            FaultKind::KillLeader | FaultKind::KillFollower | FaultKind::StopLeader => {
                let target = if fault.kind == FaultKind::KillFollower {
                    follower
                } else {
                    leader
                };
                if fault.kind == FaultKind::StopLeader {
                    let _ = replicas.stop(target);
                } else {
                    replicas.kill(target);
                }
                tokio::time::sleep(hold).await;
                replicas.start(target)?;
            }
            FaultKind::PauseLeader | FaultKind::PauseFollower => {
                let target = if fault.kind == FaultKind::PauseLeader {
                    leader
                } else {
                    follower
                };
                replicas.signal(target, "-STOP");
                tokio::time::sleep(hold).await;
                replicas.signal(target, "-CONT");
            }
            FaultKind::KillTwo => {
                let _ = replicas.kill(leader);
                replicas.kill(follower);
                tokio::time::sleep(hold).await;
                replicas.start(leader)?;
                replicas.start(follower)?;
            }
            FaultKind::KillAll => {
                for i in 0..3 {
                    replicas.kill(i);
                }
                tokio::time::sleep(hold).await;
                for i in 0..3 {
                    replicas.start(i)?;
                }
            }
        }
        let ended_ms = now_ms();
        let ended = Instant::now();
        let to_receipt = loop {
            let first = trading.log.lock().ok().and_then(|log| {
                log.iter()
                    .rev()
                    .take_while(|(at, _)| *at > began)
                    .last()
                    .map(|(at, _)| at.duration_since(began))
            });
            if first.is_some() || ended.elapsed() > FAILOVER_WAIT {
                break first;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!(
            "fault {}: {} (replica {}, {} ms){}",
            k + 1,
            fault.kind,
            match fault.kind {
                FaultKind::KillFollower | FaultKind::PauseFollower => (follower + 1).to_string(),
                FaultKind::KillTwo => format!("{} and {}", leader + 1, follower + 1),
                FaultKind::KillAll => "1, 2 and 3".to_string(),
                _ => (leader + 1).to_string(),
            },
            hold.as_millis(),
            match to_receipt {
                Some(took) => format!("; next receipt {:.0} ms after its start", ms(took)),
                None => format!(
                    "; no receipt within {} s of its end",
                    FAILOVER_WAIT.as_secs()
                ),
            }
        );
        campaign.faults.push(FaultDone {
            fault: *fault,
            window: (began_ms, ended_ms),
            to_receipt,
        });
        // Gathered now, before a snapshot lets a replica prune it; one
        // that cannot be read now (a segment pruned under the reader, a
        // replica starting) is read at the next fault.
        for (i, dir) in replicas.dirs().iter().enumerate() {
            match campaign.gathered.read(i, dir) {
                Ok(_) | Err(GatherError::Unreadable { .. }) => {}
                Err(disagrees) => return Err(disagrees.to_string().into()),
            }
        }
    }
    Ok(campaign)
}

/// Reports a fault campaign's checks (if the run was one, or had a
/// committee): per fault kind the time to the next receipt, replicas that
/// stopped themselves, every receipt against the replicas' journals
/// (`union`), and every keyper release against the committed seals and
/// the batch clock. Returns the count of broken promises: receipts lost,
/// releases for a seal not committed or before its batch closed.
fn report_campaign(
    traded: &Traded,
    union: &BTreeMap<Lsn, (u8, Vec<u8>)>,
    checkpoints: &[crate::sequencer::Checkpoint],
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut broken = 0;
    if !traded.faults.is_empty() {
        let mut by_kind: BTreeMap<FaultKind, Vec<Option<Duration>>> = BTreeMap::new();
        for (fault, took) in &traded.faults {
            by_kind.entry(fault.kind).or_default().push(*took);
        }
        for (kind, took) in &by_kind {
            let mut served: Vec<Duration> = took.iter().flatten().copied().collect();
            served.sort_unstable();
            let at = |q: f64| {
                served
                    .get(((served.len() as f64 - 1.0) * q).round() as usize)
                    .map_or_else(|| "-".to_string(), |d| format!("{:.0}", ms(*d)))
            };
            println!(
                "{kind}: {} faults, time to the next receipt p50 {} ms, max {} ms, {} without one",
                took.len(),
                at(0.5),
                at(1.0),
                took.len() - served.len()
            );
        }
        println!(
            "replicas that stopped themselves: {}{}",
            traded.self_stopped.len(),
            traded
                .self_stopped
                .iter()
                .map(|(i, how)| format!("; replica {} ({how})", i + 1))
                .collect::<String>()
        );
    }
    let receipts = crate::sequencer::check_receipts(
        union
            .iter()
            .map(|(lsn, (kind, payload))| (*lsn, *kind, payload.clone())),
        checkpoints,
        &traded.receipts,
    )?;
    println!(
        "receipts: {} held in the journals' outcomes, {} lost, {} forged, {} journaled in batches not cleared at the end, {} of batches before the journals' first record (unchecked)",
        receipts.held,
        receipts.missing.len(),
        receipts.forged.len(),
        receipts.not_cleared,
        receipts.before_journal
    );
    broken += receipts.missing.len() + receipts.forged.len();
    if let Some((releases, genesis_ms, length_ms)) = &traded.releases {
        let mut seals: BTreeMap<BatchId, Vec<crate::envelope::MerkleRoot>> = BTreeMap::new();
        for (kind, payload) in union.values() {
            if let Ok(crate::sequencer::SequencerRecord::Seal(seal)) =
                crate::sequencer::SequencerRecord::decode(*kind, payload)
            {
                seals.entry(seal.e).or_default().push(seal.root);
            }
        }
        let two_seals = seals.values().filter(|roots| roots.len() > 1).count();
        let first_sealed = seals.keys().next().copied().unwrap_or(BatchId::ZERO);
        let mut uncommitted = 0;
        let mut early = 0;
        let mut unchecked = 0;
        for (e, root, at_ms) in releases {
            match seals.get(e) {
                Some(roots) if roots.contains(root) => {}
                Some(_) => uncommitted += 1,
                // A batch the journals no longer hold (pruned): not checked.
                None if *e < first_sealed => unchecked += 1,
                None => uncommitted += 1,
            }
            let closes_ms = e
                .get()
                .saturating_add(1)
                .saturating_mul(*length_ms)
                .saturating_add(*genesis_ms);
            if *at_ms < closes_ms {
                early += 1;
            }
        }
        println!(
            "keyper releases: {} first releases, {uncommitted} for a seal the journals do not hold, {early} before their batch closed, {unchecked} of batches before the journals' first seal; batches with two seals: {two_seals}",
            releases.len()
        );
        broken += uncommitted + early + two_seals;
    }
    if !traded.faults.is_empty() {
        println!(
            "campaign: lost={} self_stopped={} broken={broken}",
            receipts.missing.len(),
            traded.self_stopped.len()
        );
    }
    Ok(broken)
}

/// What the replicas' logs say of elections over a time.
#[derive(Debug, Default, PartialEq, Eq)]
struct Elections {
    /// Each time a replica stood: when (unix ms) and for which term, as
    /// its log line says.
    stood: Vec<(u64, Option<u64>)>,
    /// Pre-votes that found no majority (the replica did not stand).
    not_standing: u64,
}

impl Elections {
    /// The elections the log files `logs` record `during` (unix ms); a log
    /// that cannot be read records none.
    fn read(logs: &[PathBuf], during: std::ops::Range<u64>) -> Elections {
        let mut elections = Elections::default();
        for log in logs {
            if let Ok(text) = std::fs::read_to_string(log) {
                elections.add(&text, &during);
            }
        }
        elections
    }

    /// Adds the elections in one replica's log `text` `during` (unix ms).
    fn add(&mut self, text: &str, during: &std::ops::Range<u64>) {
        for line in text.lines() {
            let standing = line.contains("no leader heard from: standing for election");
            let not_standing = line.contains("no majority would vote for this replica");
            if !standing && !not_standing {
                continue;
            }
            let line = strip_ansi(line);
            let Some(at) = line.split_whitespace().next().and_then(unix_ms) else {
                continue;
            };
            if !during.contains(&at) {
                continue;
            }
            if standing {
                let term = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("term="))
                    .and_then(|t| t.parse().ok());
                self.stood.push((at, term));
            } else {
                self.not_standing += 1;
            }
        }
    }
}

/// `line` without its terminal colour codes (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unix milliseconds of a UTC time as the replicas' logs print it
/// (`2026-11-27T10:20:30.123456Z`), if it is one.
fn unix_ms(stamp: &str) -> Option<u64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':').map(str::to_string);
    let hours: u64 = time.next()?.parse().ok()?;
    let minutes: u64 = time.next()?.parse().ok()?;
    let seconds = time.next()?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((&seconds, "0"));
    let whole: u64 = whole.parse().ok()?;
    let millis: u64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hours > 23 || minutes > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard
    // Hinnant's `days_from_civil`): years start in March, so that the
    // leap day ends one.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = u64::try_from(era * 146_097 + day_of_era - 719_468).ok()?;
    Some(((days * 24 + hours) * 60 + minutes) * 60_000 + whole * 1_000 + millis)
}

/// Polls `probe` every 50 ms until it finds a replica, for up to 30 s from
/// `started`.
async fn wait_for<F, Fut>(
    started: Instant,
    mut probe: F,
    failure: &str,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<usize>>,
{
    loop {
        if let Some(i) = probe().await {
            return Ok(i);
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(failure.into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo's keypers, running in this process as `sealbatch keyper run`
/// would, and what they released.
struct DemoKeypers {
    stops: Vec<tokio::sync::watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), crate::keyper_process::KeyperProcessError>>>,
    released: Arc<std::sync::Mutex<BTreeMap<u64, usize>>>,
    /// Every first release: batch, seal root, when (unix ms).
    releases: Arc<std::sync::Mutex<Vec<(BatchId, crate::envelope::MerkleRoot, u64)>>>,
    genesis_ms: u64,
    batch_length_ms: u64,
}

/// The keypers' first releases (batch, seal root, unix ms), the genesis
/// and the batch length.
type Releases = (Vec<(BatchId, crate::envelope::MerkleRoot, u64)>, u64, u64);

impl DemoKeypers {
    /// Stops them, prints how many keys each released, and returns every
    /// first release with the batch clock.
    async fn stop(self) -> Releases {
        for stop in &self.stops {
            let _ = stop.send(true);
        }
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Ok(released) = self.released.lock() {
            let line: Vec<String> = released
                .iter()
                .map(|(k, n)| format!("keyper {k}: {n}"))
                .collect();
            println!(
                "first releases (each for a seal certified by a majority of the replicas): {}",
                line.join(", ")
            );
        }
        let releases = self
            .releases
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        (releases, self.genesis_ms, self.batch_length_ms)
    }
}

/// Starts a keyper per committee member, each given every replica; the
/// batch clock and sequencer key come from replica `answering`'s schedule.
async fn start_keypers(
    root: &Path,
    committee: &crate::node::config::CommitteeConfig,
    replicas: &Replicas,
    answering: usize,
) -> Result<DemoKeypers, Box<dyn std::error::Error + Send + Sync>> {
    let replica = *replicas.addrs()?.get(answering).ok_or("no such replica")?;
    let client = crate::client::Client::connect(replica.addr, replica.fingerprint).await?;
    let schedule = client.schedule().await?;
    client.close();
    let targets = replicas.for_keypers()?;
    let released: Arc<std::sync::Mutex<BTreeMap<u64, usize>>> = Arc::default();
    let releases: Arc<std::sync::Mutex<Vec<_>>> = Arc::default();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for k in 1..=committee.members.len() {
        let config = crate::keyper_process::KeyperConfig {
            data_dir: root.join("keypers").join(format!("keyper-{k}")),
            sequencer: None,
            fingerprint: None,
            replicas: targets.clone(),
            sequencer_key: hex::encode(schedule.sequencer_key),
            genesis_ms: schedule.genesis_ms,
            batch_length_ms: schedule.batch_length_ms,
            skew_ms: 20,
            metrics_listen: None,
            committee: committee.clone(),
        };
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let counts = Arc::clone(&released);
        let log = Arc::clone(&releases);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if let crate::keyper_process::KeyperEvent::Released {
                    e,
                    root,
                    first: true,
                } = event
                {
                    let at = now_ms();
                    if let Ok(mut counts) = counts.lock() {
                        *counts.entry(k as u64).or_default() += 1;
                    }
                    if let Ok(mut log) = log.lock() {
                        log.push((e, root, at));
                    }
                }
            }
        });
        tasks.push(tokio::spawn(crate::keyper_process::run(
            config,
            shutdown,
            Some(tx),
        )));
        stops.push(stop);
    }
    println!(
        "a committee of {} keypers (any {} release a key), each linked to whichever replica leads",
        committee.members.len(),
        committee
            .threshold
            .unwrap_or(crate::keyper::Committee::default_threshold(
                committee.members.len()
            ))
    );
    Ok(DemoKeypers {
        stops,
        tasks,
        released,
        releases,
        genesis_ms: schedule.genesis_ms,
        batch_length_ms: schedule.batch_length_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_read_as_unix_milliseconds() {
        assert_eq!(unix_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_ms("2000-02-29T23:59:59.999Z"), Some(951_868_799_999));
        assert_eq!(
            unix_ms("2026-12-07T13:49:32.705477Z"),
            Some(1_796_651_372_705)
        );
        assert_eq!(unix_ms("2026-13-07T13:49:32Z"), None);
        assert_eq!(unix_ms("2026-12-07 13:49:32Z"), None);
        assert_eq!(unix_ms("INFO"), None);
    }

    #[test]
    fn elections_are_read_from_coloured_log_lines_within_the_time() {
        let log = "\u{1b}[2m2026-12-07T13:49:32.705477Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2msealbatch::replica::election\u{1b}[0m\u{1b}[2m:\u{1b}[0m no leader heard from: standing for election \u{1b}[3mterm\u{1b}[0m\u{1b}[2m=\u{1b}[0m7 \u{1b}[3mwaited_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m180
2026-12-07T13:49:33.000000Z  INFO sealbatch::replica::election: no majority would vote for this replica (a leader is heard, or its log is behind): not standing term=8
2026-12-07T13:49:34.000000Z  INFO sealbatch::replica::election: no leader heard from: standing for election term=8 waited_ms=150
2026-12-07T13:49:31.000000Z  INFO sealbatch::replica::election: no leader heard from: standing for election term=6 waited_ms=150
something else entirely
";
        let mut elections = Elections::default();
        elections.add(log, &(1_796_651_372_000..1_796_651_374_000));
        assert_eq!(
            elections,
            Elections {
                stood: vec![(1_796_651_372_705, Some(7))],
                not_standing: 1,
            }
        );
    }

    #[test]
    fn demo_orders_have_distinct_client_ids() {
        let orders = demo_orders(5, BUNDLE_ORDERS_MAX);
        let ids: BTreeSet<u64> = orders.iter().map(|o| o.client_order_id).collect();
        assert_eq!(ids.len(), BUNDLE_ORDERS_MAX);
        assert!(orders.iter().any(|o| o.side == Side::Buy));
        assert!(orders.iter().any(|o| o.side == Side::Sell));
    }
}

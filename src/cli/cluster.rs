//! `sealbatch cluster`: a replicated sequencer's replicas
//! (`spec/replication.md`) — a replica's identity and member entry, every
//! member's view, membership changes, and a demo of three replicas whose
//! leader is killed while traders trade.
//!
//! `status`, `add` and `remove` talk to the replicas over the replica
//! transport with the certificate of the replica whose configuration they
//! are given: only a member's certificate is accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rand_core::OsRng;
use zeroize::Zeroizing;

use super::CommandResult;
use super::connect::target_batch;
use super::run::runtime;
use crate::client::KeyTrust;
use crate::client::cluster::{ClusterClient, ReplicaAddr};
use crate::envelope::{BatchPublicKey, MasterSecret, seal_bundle};
use crate::net::{Identity, parse_fingerprint};
use crate::node::{NodeConfig, TLS_DIR, now_ms};
use crate::order::OrderSpec;
use crate::replica::codec::{RaftRequest, ReplicaStatus};
use crate::replica::network::call;
use crate::replica::{ReplicaId, ReplicaNode};
use crate::types::{MarketId, Side};

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
    /// halfway and trading goes on with the new one.
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
    /// Traders, each submitting one envelope at a time.
    #[arg(long, default_value_t = 16)]
    pub traders: u64,
    /// Keep the replicas' directories (and their logs) here.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// How many times the leader is killed (evenly over the duration); each
    /// killed replica restarts and catches up.
    #[arg(long, default_value_t = 1)]
    pub kills: u32,
    /// Keypers of a committee that holds the batch keys (any majority
    /// releases one), each given every replica and its commit key: a share
    /// leaves only for a seal a majority of the replicas certified. 0: the
    /// replicas share `custodian.key` (trusted-operator mode).
    #[arg(long, default_value_t = 0)]
    pub keypers: usize,
}

/// When each receipt came, and from which replica.
type ReceiptLog = Arc<std::sync::Mutex<Vec<(Instant, Option<SocketAddr>)>>>;

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
        Ok(ReplicaStatus::decode(&body)?)
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

/// The demo's replica processes, killed when dropped.
struct Replicas {
    children: Vec<Option<Child>>,
    dirs: Vec<PathBuf>,
    configs: Vec<PathBuf>,
    client_ports: Vec<u16>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Replicas {
    fn create(
        root: &Path,
        n: usize,
        committee: Option<&crate::node::config::CommitteeConfig>,
    ) -> Result<Replicas, Box<dyn std::error::Error + Send + Sync>> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut seed[..]);
        let custodian = Zeroizing::new(*MasterSecret::generate(&mut OsRng).as_bytes());
        let dirs: Vec<PathBuf> = (1..=n).map(|i| root.join(format!("replica-{i}"))).collect();
        let client_ports = (0..n).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
        let raft_ports = (0..n).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
        let mut members = String::new();
        for (i, dir) in dirs.iter().enumerate() {
            let identity = Identity::load_or_create(&dir.join(TLS_DIR))?;
            // One sequencer: every replica signs with the same key and, in
            // trusted-operator mode, derives the same batch keys.
            crate::secret_file::load_or_create_key32(
                &dir.join(crate::node::SEQUENCER_KEY_FILE),
                || seed.clone(),
            )?;
            if committee.is_none() {
                crate::secret_file::load_or_create_key32(
                    &dir.join(crate::node::CUSTODIAN_KEY_FILE),
                    || custodian.clone(),
                )?;
            }
            members.push_str(&format!(
                "[[cluster.members]]\nid = {}\naddr = \"127.0.0.1:{}\"\nclient = \"127.0.0.1:{}\"\nfingerprint = \"{}\"\n",
                i + 1,
                raft_ports[i],
                client_ports[i],
                hex::encode(identity.fingerprint)
            ));
        }
        if let Some(committee) = committee {
            #[derive(serde::Serialize)]
            struct Section<'a> {
                committee: &'a crate::node::config::CommitteeConfig,
            }
            members.push_str(&toml::to_string(&Section { committee })?);
        }
        let mut configs = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let file = dir.with_extension("toml");
            let text = format!(
                "data_dir = {:?}\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"off\"\ncheckpoint_every_batches = 20\n[cluster]\nid = {}\nlisten = \"127.0.0.1:{}\"\nbootstrap = {}\n{members}",
                dir.display().to_string(),
                client_ports[i],
                i + 1,
                raft_ports[i],
                i == 0
            );
            std::fs::write(&file, text)?;
            configs.push(file);
        }
        Ok(Replicas {
            children: (0..n).map(|_| None).collect(),
            dirs,
            configs,
            client_ports,
        })
    }

    fn start(&mut self, i: usize) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dirs[i].with_extension("log"))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("run")
            .arg("--config")
            .arg(&self.configs[i])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn addrs(&self) -> Result<Vec<ReplicaAddr>, Box<dyn std::error::Error + Send + Sync>> {
        self.dirs
            .iter()
            .zip(&self.client_ports)
            .map(|(dir, &port)| {
                let text =
                    std::fs::read_to_string(dir.join(TLS_DIR).join(crate::net::FINGERPRINT_FILE))?;
                Ok(ReplicaAddr {
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    fingerprint: parse_fingerprint(&text)?,
                })
            })
            .collect()
    }

    /// The replica that serves a schedule now.
    /// The keypers' view of the replicas: client address, certificate
    /// fingerprint and commit key.
    fn for_keypers(
        &self,
    ) -> Result<Vec<crate::keyperd::KeyperReplica>, Box<dyn std::error::Error + Send + Sync>> {
        self.addrs()?
            .iter()
            .zip(&self.dirs)
            .map(|(replica, dir)| {
                Ok(crate::keyperd::KeyperReplica {
                    address: replica.addr,
                    fingerprint: hex::encode(replica.fingerprint),
                    commit_key: hex::encode(crate::node::cluster::commit_key(dir)?.public()),
                })
            })
            .collect()
    }

    /// The replica that leads: one that answers a schedule (with batch keys
    /// in it if `keyed`).
    async fn leader(&self, keyed: bool) -> Option<usize> {
        let addrs = self.addrs().ok()?;
        for (i, replica) in addrs.iter().enumerate() {
            if self.children[i].is_none() {
                continue;
            }
            let Ok(Ok(client)) = tokio::time::timeout(
                Duration::from_millis(300),
                crate::client::Client::connect(replica.addr, replica.fingerprint),
            )
            .await
            else {
                continue;
            };
            if let Ok(Ok(schedule)) =
                tokio::time::timeout(Duration::from_millis(300), client.schedule()).await
                && (!keyed || !schedule.batch_keys.is_empty())
            {
                return Some(i);
            }
        }
        None
    }

    fn stop(&mut self, i: usize) {
        if let Some(child) = self.children[i].take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let mut child = child;
            let _ = child.wait();
        }
    }
}

/// One trader: submits one-order envelopes through the cluster client
/// until `until`; counts receipts per second since `start`.
async fn trade(
    cluster: Arc<ClusterClient>,
    trader: u64,
    start: Instant,
    until: Instant,
    log: ReceiptLog,
) -> (Vec<u64>, Vec<Duration>) {
    let key = crate::envelope::generate_account_key(&mut OsRng);
    let mut per_second = Vec::new();
    let mut latencies = Vec::new();
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
        let e = target_batch(fresh, now_ms(), 30);
        let Some(batch_key) = fresh
            .batch_keys
            .iter()
            .find(|(b, _)| *b == e)
            .and_then(|(_, k)| BatchPublicKey::from_bytes(k).ok())
        else {
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
        let orders = [OrderSpec {
            market: MarketId(1 + (nonce % 3) as u32),
            side: if nonce.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            limit: None,
            qty: 1,
            client_order_id: nonce,
        }];
        let deployment = fresh.deployment();
        let Ok(envelope) =
            seal_bundle(&mut OsRng, &key, &deployment, e, &batch_key, nonce, &orders)
        else {
            continue;
        };
        let sent = Instant::now();
        if cluster.submit(envelope.into_bytes()).await.is_ok() {
            latencies.push(sent.elapsed());
            let from = cluster.leader_addr().await;
            if let Ok(mut log) = log.lock() {
                log.push((Instant::now(), from));
            }
            let second = start.elapsed().as_secs() as usize;
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
        }
    }
    (per_second, latencies)
}

fn demo(args: &ClusterDemoArgs) -> CommandResult {
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
    let committee = match args.keypers {
        0 => None,
        n if n > crate::keyper::COMMITTEE_MAX => {
            return Err(format!("--keypers: at most {}", crate::keyper::COMMITTEE_MAX).into());
        }
        n => Some(super::demo::demo_committee(&root.join("keypers"), n, None)?),
    };
    let mut replicas = Replicas::create(&root, 3, committee.as_ref())?;
    for i in 0..3 {
        replicas.start(i)?;
    }
    println!("three replicas on loopback, data in {}", root.display());
    runtime()?.block_on(async {
        let started = Instant::now();
        let keypers = match &committee {
            None => None,
            Some(committee) => {
                let answering =
                    wait_for(started, || replicas.leader(false), "no replica led within 30 s").await?;
                Some(start_keypers(&root, committee, &replicas, answering).await?)
            }
        };
        let first = wait_for(
            started,
            || replicas.leader(true),
            "no replica led with batch keys within 30 s",
        )
        .await?;
        println!(
            "replica {} leads (elected in {} ms)",
            first + 1,
            started.elapsed().as_millis()
        );
        let cluster =
            Arc::new(ClusterClient::connect(replicas.addrs()?, KeyTrust::default()).await?);
        let duration = Duration::from_secs_f64(args.duration.max(2.0));
        let start = Instant::now();
        let until = start + duration;
        let log: ReceiptLog = Arc::default();
        let traders: Vec<_> = (0..args.traders)
            .map(|t| tokio::spawn(trade(Arc::clone(&cluster), t, start, until, Arc::clone(&log))))
            .collect();
        let kills = args.kills.max(1);
        let mut leader = first;
        let mut failovers = Vec::new();
        for k in 0..kills {
            let at = start + duration * (k + 1) / (kills + 1);
            tokio::time::sleep_until(at.into()).await;
            if let Some(child) = replicas.children[leader].as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            replicas.children[leader] = None;
            let killed = Instant::now();
            let dead = replicas.addrs()?.get(leader).map(|r| r.addr);
            // The first receipt from another replica after the kill.
            let (first_receipt, from) = loop {
                let found = log.lock().ok().and_then(|log| {
                    log.iter()
                        .find(|(at, from)| *at > killed && from.is_some() && *from != dead)
                        .copied()
                });
                if let Some(found) = found {
                    break found;
                }
                if killed.elapsed() > Duration::from_secs(15) {
                    return Err("no receipt from a new leader within 15 s".into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let took = first_receipt.duration_since(killed);
            failovers.push(took);
            let next = replicas
                .addrs()?
                .iter()
                .position(|r| Some(r.addr) == from)
                .unwrap_or(leader);
            println!(
                "killed the leader, replica {} (SIGKILL); first receipt from replica {} {:.0} ms later",
                leader + 1,
                next + 1,
                took.as_secs_f64() * 1e3
            );
            replicas.start(leader)?;
            leader = next;
        }
        let mut per_second: Vec<u64> = Vec::new();
        let mut latencies = Vec::new();
        for trader in traders {
            let (counts, times) = trader.await?;
            latencies.extend(times);
            if per_second.len() < counts.len() {
                per_second.resize(counts.len(), 0);
            }
            for (total, count) in per_second.iter_mut().zip(counts) {
                *total += count;
            }
        }
        println!("receipts per second: {per_second:?}");
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "{} receipts in {:.1} s; submission to receipt p50 {:.1} ms, p99 {:.1} ms, slowest (across the failover) {:.1} ms",
            per_second.iter().sum::<u64>(),
            duration.as_secs_f64(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
        failovers.sort_unstable();
        let pick = |q: f64| {
            failovers
                .get(((failovers.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "failover (kill to the first receipt from the new leader) over {} kills: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            failovers.len(),
            pick(0.5),
            pick(0.99),
            pick(1.0)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(keypers) = keypers {
            keypers.stop().await;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    for i in 0..3 {
        replicas.stop(i);
    }
    // Every replica's journal holds the same record at every LSN it holds.
    let mut union: BTreeMap<u64, (u8, Vec<u8>)> = BTreeMap::new();
    // Their checkpoints, by LSN: a pruned journal is verified from one.
    let mut checkpoints = BTreeMap::new();
    for (i, dir) in replicas.dirs.iter().enumerate() {
        for checkpoint in super::verify::checkpoints(&dir.join(crate::node::JOURNAL_DIR))
            .map_err(|e| format!("replica {}: {e}", i + 1))?
        {
            checkpoints.entry(checkpoint.lsn).or_insert(checkpoint);
        }
        let recovery = crate::journal::Journal::open_dir_read_only(
            dir.join(crate::node::JOURNAL_DIR),
            crate::journal::JournalConfig::default(),
        )?;
        let mut count = 0u64;
        for record in recovery.records {
            let record = record?;
            count += 1;
            let held = union
                .entry(record.lsn)
                .or_insert((record.kind, record.payload.clone()));
            if *held != (record.kind, record.payload) {
                return Err(format!("replica {} disagrees at LSN {}", i + 1, record.lsn).into());
            }
        }
        println!(
            "replica {}: {count} records, all equal to the others' at their LSNs",
            i + 1
        );
    }
    let checkpoints: Vec<_> = checkpoints.into_values().collect();
    let report = crate::sequencer::verify_journal_with(
        union
            .into_iter()
            .map(|(lsn, (kind, payload))| (lsn, kind, payload)),
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
    Ok(())
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
    tasks: Vec<tokio::task::JoinHandle<Result<(), crate::keyperd::KeyperProcessError>>>,
    released: Arc<std::sync::Mutex<BTreeMap<u64, usize>>>,
}

impl DemoKeypers {
    /// Stops them and prints how many keys each released.
    async fn stop(self) {
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
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for k in 1..=committee.members.len() {
        let config = crate::keyperd::KeyperConfig {
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
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if let crate::keyperd::KeyperEvent::Released { first: true, .. } = event
                    && let Ok(mut counts) = counts.lock()
                {
                    *counts.entry(k as u64).or_default() += 1;
                }
            }
        });
        tasks.push(tokio::spawn(crate::keyperd::run(
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
    })
}

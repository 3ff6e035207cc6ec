//! A replicated sequencer's replicas as `sealbatch run` processes on
//! loopback: their keys, certificates and configurations written once,
//! their sockets bound here on port 0 and handed down at every start, and
//! what a supervisor does to them (start, kill, pause, stop, reap, find the
//! leader). `sealbatch cluster demo` and its fault campaign run on it, and
//! so do the process tests: one launcher, not one per caller.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::client::Client;
use crate::client::cluster::ReplicaAddr;
use crate::envelope::MasterSecret;
use crate::net::{FINGERPRINT_FILE, Identity, parse_fingerprint};
use crate::node::{CUSTODIAN_KEY_FILE, NodeConfig, SEQUENCER_KEY_FILE, TLS_DIR};

/// A boxed error, as the commands return them.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`Replicas::create`] writes.
#[derive(Debug, Clone)]
pub struct ReplicaSetup {
    /// How many replicas (ids 1..=n; replica 1 bootstraps the cluster).
    pub n: usize,
    /// The program each replica runs (`sealbatch`): the demo's own
    /// executable, a test's `CARGO_BIN_EXE_sealbatch`.
    pub program: PathBuf,
    /// Each member's transport address as the others reach it: its relay's
    /// port, when a relay stands in front of it (else its own port).
    pub relay_ports: Option<Vec<u16>>,
    /// Lines for each `[cluster]` section (timeouts, snapshot interval),
    /// each ending in a newline.
    pub cluster_extra: String,
    /// Sections written after the members (`[committee]`, …).
    pub sections: String,
    /// Whether the replicas derive batch keys from one shared custodian
    /// secret (trusted-operator mode); `false` under a keyper committee.
    pub custodian: bool,
    /// `checkpoint_every_batches` of every replica.
    pub checkpoint_every_batches: u64,
    /// Whether each replica serves metrics (on a TCP listener handed down
    /// from here) or not at all.
    pub metrics: bool,
    /// Environment variables each replica starts with (`RUST_LOG`, …).
    pub env: Vec<(String, String)>,
}

impl ReplicaSetup {
    /// `n` replicas of `program` with the defaults of the demo: no relay,
    /// a shared custodian, a checkpoint every 20 batches, no metrics.
    pub fn new(n: usize, program: PathBuf) -> ReplicaSetup {
        ReplicaSetup {
            n,
            program,
            relay_ports: None,
            cluster_extra: String::new(),
            sections: String::new(),
            custodian: true,
            checkpoint_every_batches: 20,
            metrics: false,
            env: Vec::new(),
        }
    }
}

/// The sockets a replica is handed at every start.
#[derive(Debug)]
struct Sockets {
    client: UdpSocket,
    transport: UdpSocket,
    metrics: Option<TcpListener>,
}

/// The replica processes, killed when dropped.
#[derive(Debug)]
pub struct Replicas {
    program: PathBuf,
    env: Vec<(String, String)>,
    children: Vec<Option<Child>>,
    dirs: Vec<PathBuf>,
    client_ports: Vec<u16>,
    transport_ports: Vec<u16>,
    metrics_ports: Vec<Option<u16>>,
    /// Bound here on port 0 and handed down at every start: no port is
    /// guessed, and none is taken by another process while a replica is
    /// down.
    sockets: Vec<Sockets>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// A UDP socket on a loopback port the kernel picks, and the port.
fn loopback_udp() -> std::io::Result<(UdpSocket, u16)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    Ok((socket, port))
}

impl Replicas {
    /// The replicas' keys, certificates and configurations in `root`
    /// (`replica-{i}/` and `replica-{i}.toml`; each replica's log goes to
    /// `replica-{i}.log`). Every replica signs as the one sequencer (one
    /// sequencer key); every configuration is validated here, rather than
    /// refused by replicas that never start.
    pub fn create(root: &Path, setup: &ReplicaSetup) -> Result<Replicas, BoxError> {
        let n = setup.n;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut seed[..]);
        let custodian = Zeroizing::new(*MasterSecret::generate(&mut OsRng).as_bytes());
        let dirs: Vec<PathBuf> = (1..=n).map(|i| root.join(format!("replica-{i}"))).collect();
        let mut sockets = Vec::with_capacity(n);
        let (mut client_ports, mut transport_ports, mut metrics_ports) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            let (client, client_port) = loopback_udp()?;
            let (transport, transport_port) = loopback_udp()?;
            let metrics = match setup.metrics {
                true => Some(TcpListener::bind("127.0.0.1:0")?),
                false => None,
            };
            metrics_ports.push(match &metrics {
                Some(listener) => Some(listener.local_addr()?.port()),
                None => None,
            });
            sockets.push(Sockets {
                client,
                transport,
                metrics,
            });
            client_ports.push(client_port);
            transport_ports.push(transport_port);
        }
        let mut members = String::new();
        for (i, dir) in dirs.iter().enumerate() {
            let identity = Identity::load_or_create(&dir.join(TLS_DIR))?;
            crate::secret_file::load_or_create_key32(&dir.join(SEQUENCER_KEY_FILE), || {
                seed.clone()
            })?;
            if setup.custodian {
                crate::secret_file::load_or_create_key32(&dir.join(CUSTODIAN_KEY_FILE), || {
                    custodian.clone()
                })?;
            }
            let reached_at = match &setup.relay_ports {
                Some(ports) => *ports.get(i).ok_or("fewer relay ports than replicas")?,
                None => transport_ports[i],
            };
            members.push_str(&format!(
                "[[cluster.members]]\nid = {}\naddr = \"127.0.0.1:{reached_at}\"\nclient = \"127.0.0.1:{}\"\nfingerprint = \"{}\"\n",
                i + 1,
                client_ports[i],
                hex::encode(identity.fingerprint)
            ));
        }
        let mut extra = setup.cluster_extra.trim().to_string();
        if !extra.is_empty() {
            extra.push('\n');
        }
        for (i, dir) in dirs.iter().enumerate() {
            let file = dir.with_extension("toml");
            let metrics = match metrics_ports[i] {
                Some(port) => format!("127.0.0.1:{port}"),
                None => "off".to_string(),
            };
            let text = format!(
                "data_dir = {:?}\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"{metrics}\"\ncheckpoint_every_batches = {}\n[cluster]\nid = {}\nlisten = \"127.0.0.1:{}\"\nbootstrap = {}\n{extra}{members}{}",
                dir.display().to_string(),
                client_ports[i],
                setup.checkpoint_every_batches,
                i + 1,
                transport_ports[i],
                i == 0,
                setup.sections,
            );
            std::fs::write(&file, text)?;
            NodeConfig::from_file(&file)
                .and_then(|config| config.validate())
                .map_err(|error| format!("{}: {error}", file.display()))?;
        }
        Ok(Replicas {
            program: setup.program.clone(),
            env: setup.env.clone(),
            children: (0..n).map(|_| None).collect(),
            dirs,
            client_ports,
            transport_ports,
            metrics_ports,
            sockets,
        })
    }

    /// How many replicas.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Replica `i`'s data directory (its configuration is the same path
    /// with `.toml`, its log with `.log`).
    pub fn dir(&self, i: usize) -> &Path {
        &self.dirs[i]
    }

    /// Every replica's data directory.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Replica `i`'s configuration file.
    pub fn config(&self, i: usize) -> PathBuf {
        self.dirs[i].with_extension("toml")
    }

    /// The port replica `i` serves clients on.
    pub fn client_port(&self, i: usize) -> u16 {
        self.client_ports[i]
    }

    /// The address replica `i` serves clients on.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_ports[i]))
    }

    /// The port replica `i`'s transport listens on (a relay in front of it
    /// forwards there).
    pub fn transport_port(&self, i: usize) -> u16 {
        self.transport_ports[i]
    }

    /// The port replica `i` serves metrics on, if it does.
    pub fn metrics_port(&self, i: usize) -> Option<u16> {
        self.metrics_ports[i]
    }

    /// Replica `i`'s process, while it runs.
    pub fn child(&self, i: usize) -> Option<&Child> {
        self.children[i].as_ref()
    }

    /// Replica `i`'s certificate fingerprint (written at creation).
    pub fn fingerprint(&self, i: usize) -> Result<[u8; 32], BoxError> {
        let text = std::fs::read_to_string(self.dirs[i].join(TLS_DIR).join(FINGERPRINT_FILE))?;
        Ok(parse_fingerprint(&text)?)
    }

    /// Starts replica `i` on its handed-down sockets, its standard error
    /// appended to `replica-{i}.log`.
    pub fn start(&mut self, i: usize) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dirs[i].with_extension("log"))?;
        let mut command = Command::new(&self.program);
        command
            .arg("run")
            .arg("--config")
            .arg(self.config(i))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        let sockets = &self.sockets[i];
        let mut fds: Vec<BorrowedFd<'_>> = vec![sockets.client.as_fd(), sockets.transport.as_fd()];
        if let Some(metrics) = &sockets.metrics {
            fds.push(metrics.as_fd());
        }
        let child = crate::net::inherit::spawn_with(command, &fds)?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Every replica's client address and fingerprint, as a cluster client
    /// takes them.
    pub fn addrs(&self) -> Result<Vec<ReplicaAddr>, BoxError> {
        (0..self.len())
            .map(|i| {
                Ok(ReplicaAddr {
                    addr: self.client_addr(i),
                    fingerprint: self.fingerprint(i)?,
                })
            })
            .collect()
    }

    /// The keypers' view of the replicas: client address, certificate
    /// fingerprint and commit key.
    pub fn for_keypers(&self) -> Result<Vec<crate::keyper_process::KeyperReplica>, BoxError> {
        self.addrs()?
            .iter()
            .zip(&self.dirs)
            .map(|(replica, dir)| {
                Ok(crate::keyper_process::KeyperReplica {
                    address: replica.addr,
                    fingerprint: hex::encode(replica.fingerprint),
                    commit_key: hex::encode(crate::node::cluster::commit_key(dir)?.public()),
                })
            })
            .collect()
    }

    /// The replica that leads, skipping `except` (a replica cut off from
    /// the others may still think it leads), and a client of it: one that
    /// answers a schedule within 300 ms, with batch keys in it if `keyed`
    /// (a committee's come once it certified a window). One pass; `None`
    /// if no running replica answers.
    pub async fn leader(&self, keyed: bool, except: Option<usize>) -> Option<(usize, Client)> {
        for i in 0..self.len() {
            if self.children[i].is_none() || except == Some(i) {
                continue;
            }
            let Ok(fingerprint) = self.fingerprint(i) else {
                continue;
            };
            let wait = Duration::from_millis(300);
            let Ok(Ok(client)) =
                tokio::time::timeout(wait, Client::connect(self.client_addr(i), fingerprint)).await
            else {
                continue;
            };
            if let Ok(Ok(schedule)) = tokio::time::timeout(wait, client.schedule()).await
                && (!keyed || !schedule.batch_keys.is_empty())
            {
                return Some((i, client));
            }
        }
        None
    }

    /// SIGKILLs replica `i` and reaps it; whether it was running.
    pub fn kill(&mut self, i: usize) -> bool {
        match self.children[i].take() {
            Some(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                true
            }
            None => false,
        }
    }

    /// Sends replica `i` a signal (`-STOP`, `-CONT`, `-TERM`), if it runs.
    pub fn signal(&self, i: usize, signal: &str) {
        if let Some(child) = self.children[i].as_ref() {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Stops replica `i` with SIGTERM and waits for it: its exit status,
    /// if it was running.
    pub fn stop(&mut self, i: usize) -> Option<ExitStatus> {
        self.signal(i, "-TERM");
        let mut child = self.children[i].take()?;
        child.wait().ok()
    }

    /// Replica `i`'s exit status if it exited without being stopped (it is
    /// then no longer counted as running).
    pub fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        let status = self.children[i]
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())?;
        self.children[i] = None;
        Some(status)
    }

    /// The replicas that exited without being stopped (which, and their
    /// status), restarted if `restart`.
    pub fn reap(&mut self, restart: bool) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for i in 0..self.len() {
            if let Some(status) = self.exited(i) {
                eprintln!("replica {} stopped itself: {status}", i + 1);
                exited.push((i, status.to_string()));
                if restart {
                    let _ = self.start(i);
                }
            }
        }
        exited
    }
}

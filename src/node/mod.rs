//! The sequencer process: configuration, keys and journal in the data
//! directory, the driver thread around the sequencer, the QUIC server,
//! metrics, and graceful shutdown.
//!
//! ```text
//! QUIC connections ──requests──▶ driver thread (Sequencer) ──records──▶ journal writer thread
//!        ▲                           │  ◀──────── durable LSNs ─────────────┘
//!        │                           │  open jobs ──▶ rayon pool ──▶ back to the driver
//!        └──── receipts, events ─────┘
//! ```
//!
//! Layout: [`config`] the configuration file; [`checkpoints`] checkpoint files
//! read back; `recovery` start-up from the
//! journal; `keys` the key files; [`driver`] the thread that drives the
//! sans-IO [`Sequencer`](crate::sequencer::Sequencer); [`handle`] what it
//! and the connections send each other; [`server`] the QUIC connections,
//! which only move bytes; [`webtransport`] the same for browsers'
//! WebTransport sessions, and the certificate hashes they trust;
//! [`admission`] what one client stream may ask
//! (rate, per-batch quota, signatures, cached schedule), decided sans-IO;
//! [`keypers`] the keyper link (keypers read the committee's log, post,
//! and answer seals with their shares);
//! [`schedule`] the signed-schedule cache and request budgets; [`metrics`]
//! the Prometheus endpoint.

pub mod admission;
pub mod checkpoints;
pub mod close;
pub mod cluster;
pub mod config;
pub mod driver;
pub mod explorer;
pub mod handle;
pub mod keypers;
mod keys;
pub mod metrics;
mod recovery;
pub mod schedule;
pub mod server;
pub mod webtransport;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::envelope::{CustodianError, SequencerKey};
use crate::journal::{Faults, FaultyStorage, FsStorage, JournalError, JournalWriter};
use crate::net::{Identity, NetError};
use crate::secret_file::load_or_create_key32;
use crate::sequencer::SequencerError;

pub use checkpoints::UnusableCheckpoint;
pub use config::NodeConfig;
use driver::{Driver, DriverOptions};
use handle::{Control, DriverHandle};
pub use keys::{demo_accounts, demo_operator};
use metrics::Metrics;

/// The storage the node's journal writes through: the file system, with
/// faults injected only when a test asks for them ([`run_with_faults`]).
pub type NodeStorage = FaultyStorage<FsStorage>;

pub use crate::clock::now_ms;

/// The journal's directory inside the data directory.
pub const JOURNAL_DIR: &str = "journal";
/// The TLS directory inside the data directory.
pub const TLS_DIR: &str = "tls";
/// The sequencer's signing key seed (mode 0600).
pub const SEQUENCER_KEY_FILE: &str = "sequencer.key";
/// The embedded custodian's master secret (mode 0600).
pub const CUSTODIAN_KEY_FILE: &str = "custodian.key";
/// Demo accounts' key seeds, one hex line each (demo mode only).
pub const DEMO_ACCOUNTS_FILE: &str = "demo-accounts";
/// The demo operator's key seed (demo mode only): it may sign operator
/// deposits like a configured operator key.
pub const DEMO_OPERATOR_FILE: &str = "demo-operator.key";
/// The address the QUIC listener got, `host:port` and a newline, written
/// once it listens (so a configured port 0 — any free port — can be found).
pub const ADDRESS_FILE: &str = "address";
/// How many demo accounts demo mode funds.
pub const DEMO_ACCOUNTS: usize = 8;

/// Exit status of `sealbatch run` when the storage failed: a journal write
/// or fsync failed (a full disk, `EIO`) or hung past `journal_stall_max_ms`
/// (`EX_IOERR` of sysexits.h). Nothing acknowledged is lost; a supervisor
/// restarts the process, which recovers from the journal once the storage
/// works again.
pub const EXIT_STORAGE: u8 = 74;
/// Exit status when the sequencer stopped on an internal error (a bug;
/// `EX_SOFTWARE`).
pub const EXIT_INTERNAL: u8 = 70;
/// Exit status for a configuration that cannot be used (`EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

/// A failure to start or run the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigFileError),
    /// A file in the data directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A secret file (a key) could not be read or created.
    #[error("{0}")]
    SecretFile(#[from] crate::secret_file::SecretFileError),
    /// The journal could not be opened or written.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The sequencer refused its journal or configuration.
    #[error("sequencer: {0}")]
    Sequencer(#[from] SequencerError),
    /// The custodian's key file.
    #[error("custodian: {0}")]
    Custodian(#[from] CustodianError),
    /// The QUIC endpoint.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// The WebTransport listener could not start.
    #[error("{0}")]
    WebTransport(#[from] webtransport::WebTransportError),
    /// The driver thread failed.
    #[error("driver: {0}")]
    Driver(#[from] driver::DriverError),
    /// The driver thread panicked.
    #[error("the driver thread panicked")]
    DriverPanicked,
    /// The replicated log could not be started.
    #[error("replication: {0}")]
    Replication(String),
    /// The configuration disagrees with the journal's genesis.
    #[error(
        "the configuration's {0} differs from the journal's genesis record; the journal wins for genesis time, everything else must match"
    )]
    GenesisChanged(&'static str),
}

impl NodeError {
    /// The process exit status for this error: [`EXIT_STORAGE`] when the
    /// journal's storage failed (at start or while running),
    /// [`EXIT_CONFIG`] for an unusable configuration or a configuration
    /// that contradicts the journal, [`EXIT_INTERNAL`] for a bug, 1 for the
    /// rest (an unreadable key file, a network error).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Journal(JournalError::Io { .. } | JournalError::Poisoned) => EXIT_STORAGE,
            NodeError::Driver(error) if error.is_storage() => EXIT_STORAGE,
            NodeError::Driver(_) | NodeError::DriverPanicked => EXIT_INTERNAL,
            NodeError::Config(_) | NodeError::GenesisChanged(_) => EXIT_CONFIG,
            _ => 1,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a started node tells its caller.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The address it listens on (the port is real even if 0 was asked).
    pub listen: SocketAddr,
    /// The certificate fingerprint clients must pin.
    pub fingerprint: [u8; 32],
    /// The sequencer's public key.
    pub sequencer_key: [u8; 32],
    /// The metrics address, if enabled.
    pub metrics: Option<SocketAddr>,
    /// The WebTransport address, if enabled.
    pub webtransport: Option<SocketAddr>,
}

/// Runs the node until `shutdown` turns true, then stops accepting, finishes
/// the batches in flight, flushes the journal and returns. `started` receives
/// the node's address and fingerprint once it listens.
///
/// # Errors
///
/// [`NodeError`] for anything that stops the node. A failure of the
/// storage or the core stops it at once, without waiting for `shutdown`
/// (fail-stop: [`NodeError::exit_code`]).
pub async fn run(
    config: NodeConfig,
    shutdown: watch::Receiver<bool>,
    started: Option<tokio::sync::oneshot::Sender<NodeInfo>>,
) -> Result<(), NodeError> {
    run_with_faults(config, shutdown, started, None).await
}

/// [`run`], with the journal's storage failing as `faults` says: for tests
/// of the storage-fault policy on the real file system.
///
/// # Errors
///
/// As [`run`].
pub async fn run_with_faults(
    config: NodeConfig,
    shutdown: watch::Receiver<bool>,
    started: Option<tokio::sync::oneshot::Sender<NodeInfo>>,
    faults: Option<Arc<Faults>>,
) -> Result<(), NodeError> {
    config.validate()?;
    let data = config.data_dir.clone();
    std::fs::create_dir_all(&data).map_err(io(&data))?;
    let key_seed = load_or_create_key32(&data.join(SEQUENCER_KEY_FILE), keys::random_secret)?;
    let identity = Arc::new(Identity::load_or_create(&data.join(TLS_DIR))?);
    let (recovered, replica) = match &config.cluster {
        None => (Some(recovery::recover(&config, &key_seed, faults)?), None),
        Some(cluster) => {
            let replica =
                cluster::start(&config, cluster, &key_seed, Arc::clone(&identity)).await?;
            (None, Some(replica))
        }
    };

    let endpoint = crate::net::server_endpoint(
        config.listen,
        crate::net::server_config(&identity, &config.limits.transport())?,
        &identity,
    )?;
    let listen = endpoint.local_addr().map_err(io(&data))?;
    let metrics = Arc::new(Metrics::default());
    let sequencer_key = SequencerKey::from_seed(&key_seed).public_key().to_bytes();
    // Bound before the driver (and Raft) start, so that a failure stops
    // nothing half started.
    let webtransport = config
        .webtransport_listen
        .map(|addr| webtransport::WebTransport::bind(addr, &sequencer_key, &config.limits))
        .transpose()?;
    let keypers = Arc::new(keypers::KeyperHub::new(sequencer_key));
    if replica.is_some() {
        // A replica serves keypers only while it leads.
        keypers.set_leading(false);
    }
    let explorer = (config.explorer && config.metrics_listen.is_some()).then(|| {
        explorer::Explorer::new(
            explorer::EXPLORER_BATCHES_DEFAULT,
            SequencerKey::from_seed(&key_seed).public_key(),
        )
    });
    let (driver, handle, raft) = match (recovered, replica) {
        (Some(recovered), _) => {
            let (driver, handle) = spawn_driver(
                &config,
                Journaling::Local(recovered),
                &key_seed,
                &metrics,
                &keypers,
                explorer.clone(),
            )?;
            (driver, handle, None)
        }
        (None, Some(replica)) => {
            let cluster::Replica {
                raft,
                endpoint: replica_endpoint,
                link,
                sequencer,
                start,
            } = replica;
            let (driver, handle) = spawn_driver(
                &config,
                Journaling::Replicated(sequencer, link),
                &key_seed,
                &metrics,
                &keypers,
                explorer.clone(),
            )?;
            start(
                driver.control.clone(),
                Arc::clone(&keypers),
                Arc::clone(&metrics),
            );
            (driver, handle, Some((raft, replica_endpoint)))
        }
        (None, None) => return Err(NodeError::Replication("nothing to run".into())),
    };
    let counters = server::Counters::new();
    // The HTTP listener is bound here, so the address it got (port 0: any
    // free one) is the one reported; one that cannot be bound is a warning,
    // not a failure of the sequencer.
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_listen {
        match crate::net::inherit::tcp_listener(addr).await {
            Ok(listener) => {
                metrics_addr = listener.local_addr().ok();
                let mut routes = metrics::router(Arc::clone(&metrics));
                let mut limits = metrics::HttpLimits::default();
                if let Some(explorer) = &explorer {
                    routes = routes.merge(explorer::router(Arc::clone(explorer)));
                    limits = explorer::EXPLORER_HTTP_LIMITS;
                }
                if let Some(webtransport) = &webtransport {
                    routes = routes.merge(webtransport::router(webtransport.published()));
                }
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(error) = metrics::serve(listener, routes, limits, shutdown).await {
                        tracing::warn!(%addr, %error, "metrics endpoint stopped");
                    }
                });
            }
            Err(error) => tracing::warn!(%addr, %error, "metrics endpoint disabled"),
        }
    }
    // Where it listens, for whoever started it with port 0: written to a
    // temporary name and renamed, so a reader never sees half of it.
    let address = data.join(ADDRESS_FILE);
    let partial = data.join(format!("{ADDRESS_FILE}.tmp"));
    std::fs::write(&partial, format!("{listen}\n"))
        .and_then(|()| std::fs::rename(&partial, &address))
        .map_err(io(&address))?;
    tracing::info!(
        %listen,
        fingerprint = %hex::encode(identity.fingerprint),
        sequencer = %hex::encode(sequencer_key),
        data_dir = %data.display(),
        "sequencer listening"
    );
    for addr in crate::net::inherit::untaken() {
        tracing::warn!(%addr, "a socket handed down is named by no listen address of the configuration; unused");
    }
    if let Some(started) = started {
        let _ = started.send(NodeInfo {
            listen,
            fingerprint: identity.fingerprint,
            sequencer_key,
            metrics: metrics_addr,
            webtransport: webtransport
                .as_ref()
                .map(webtransport::WebTransport::local_addr),
        });
    }

    let (close_others, close_webtransport) = watch::channel(None);
    if let Some(webtransport) = webtransport {
        tracing::info!(
            addr = %webtransport.local_addr(),
            "webtransport listening (certificate hashes at /webtransport)"
        );
        tokio::spawn(webtransport.serve(
            handle.clone(),
            Arc::clone(&metrics),
            Arc::clone(&counters),
            shutdown.clone(),
            close_webtransport,
        ));
    }
    let server = tokio::spawn(server::serve(
        endpoint.clone(),
        handle,
        config.limits,
        metrics,
        keypers,
        counters,
        shutdown.clone(),
    ));
    let result = driver
        .wait(shutdown, server, &endpoint, &close_others)
        .await;
    if let Some((raft, replica_endpoint)) = raft {
        // Raft's state machine closes the replica's journal as it stops.
        cluster::stop(&raft, &replica_endpoint).await;
    }
    if result.is_ok() {
        tracing::info!("journal flushed; bye");
    }
    result
}

/// Where the driver's records go: the node's own journal, or the
/// replicated log.
enum Journaling {
    Local(recovery::Recovered),
    Replicated(crate::sequencer::Sequencer, driver::replica::ReplicaLink),
}

/// The driver thread, as [`run_with_faults`] waits for it.
struct DriverThread {
    thread: std::thread::JoinHandle<Result<(), driver::DriverError>>,
    /// Fires when the thread ends (by itself only on a failure).
    done: tokio::sync::oneshot::Receiver<()>,
    control: crossbeam_channel::Sender<Control>,
}

/// Starts the journal writer and the driver thread over the recovered
/// sequencer; returns the thread and the handle the connections use.
fn spawn_driver(
    config: &NodeConfig,
    journaling: Journaling,
    key_seed: &[u8; 32],
    metrics: &Arc<Metrics>,
    keypers: &Arc<keypers::KeyperHub>,
    explorer: Option<Arc<explorer::Explorer>>,
) -> Result<(DriverThread, DriverHandle), NodeError> {
    let data = &config.data_dir;
    let (request_tx, request_rx) = crossbeam_channel::bounded(config.limits.core_queue_max);
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let schedules = schedule::ScheduleCache::new();
    let handle = DriverHandle {
        requests: request_tx,
        control: control_tx.clone(),
        key: Arc::new(SequencerKey::from_seed(key_seed)),
        schedules: Arc::clone(&schedules),
    };
    let pool = Arc::new(driver::open_pool().map_err(|error| NodeError::Io {
        path: data.clone(),
        source: std::io::Error::other(error.to_string()),
    })?);
    let mut operators: std::collections::BTreeSet<[u8; 32]> =
        config.operator.key_bytes()?.into_iter().collect();
    if config.demo {
        operators.insert(keys::demo_operator(data)?.verifying_key().to_bytes());
    }
    let options = DriverOptions {
        metrics: Arc::clone(metrics),
        demo: config.demo,
        envelopes_per_connection_per_batch_max: config
            .limits
            .envelopes_per_connection_per_batch_max,
        control_tx: control_tx.clone(),
        pool,
        checkpoint_every_batches: config.checkpoint_every_batches,
        journal_stall_max: Duration::from_millis(config.journal_stall_max_ms),
        intake_delay_max: Duration::from_millis(config.limits.intake_delay_max_ms),
        envelopes_per_ip_per_batch_max: config.limits.envelopes_per_ip_per_batch_max,
        schedules,
        operators,
        deposit_amount_max: config.operator.deposit_amount_max.unwrap_or(u64::MAX),
        deposits_per_second_max: config.operator.deposits_per_second_max,
        withdrawals_per_second_max: config.limits.withdrawals_per_second_max,
        keypers: Arc::clone(keypers),
        explorer,
    };
    let key = SequencerKey::from_seed(key_seed);
    let driver = match journaling {
        Journaling::Local(recovered) => {
            let writer = JournalWriter::spawn(recovered.journal, config.prune_journal)?;
            Driver::new(recovered.sequencer, writer, key, options)
        }
        Journaling::Replicated(sequencer, link) => {
            Driver::new_replica(sequencer, link, key, options)
        }
    };
    // The driver thread says when it ends, so that a failure stops the node
    // at once instead of leaving it half alive until a signal.
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("sealbatch-driver".into())
        .spawn(move || {
            let result = driver.run(request_rx, control_rx);
            let _ = done_tx.send(());
            result
        })
        .map_err(io(data))?;
    Ok((
        DriverThread {
            thread,
            done,
            control: control_tx,
        },
        handle,
    ))
}

impl DriverThread {
    /// Waits for `shutdown` (then lets the driver finish the batches in
    /// flight) or for the driver to stop by itself on a failure (then stops
    /// the server at once); closes the endpoint either way, and tells the
    /// other listeners (WebTransport) to close theirs with the same code.
    async fn wait(
        self,
        mut shutdown: watch::Receiver<bool>,
        server: tokio::task::JoinHandle<()>,
        endpoint: &quinn::Endpoint,
        close_others: &watch::Sender<Option<u32>>,
    ) -> Result<(), NodeError> {
        let DriverThread {
            thread,
            done,
            control,
        } = self;
        let signalled = async {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        let stopped_by_itself = tokio::select! {
            () = signalled => false,
            _ = done => true,
        };
        if stopped_by_itself {
            // The driver failed (or panicked): stop now. Nothing more can be
            // made durable, so nothing more is acknowledged; the connections
            // close.
            server.abort();
            endpoint.close(server::CLOSE_UNAVAILABLE.into(), b"sequencer stopped");
            close_others.send_replace(Some(server::CLOSE_UNAVAILABLE));
        } else {
            tracing::info!("shutting down: no new connections");
            let _ = control.send(Control::Shutdown);
        }
        let result = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| NodeError::DriverPanicked)?
            .map_err(|_| NodeError::DriverPanicked)?;
        let _ = server.await;
        endpoint.close(server::CLOSE_SHUTDOWN.into(), b"shutting down");
        close_others.send_replace(Some(server::CLOSE_SHUTDOWN));
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        result?;
        if stopped_by_itself {
            // The driver stops by itself only on an error, returned above.
            return Err(NodeError::DriverPanicked);
        }
        Ok(())
    }
}

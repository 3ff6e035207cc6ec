//! The sequencer process: configuration, keys and journal in the data
//! directory, the core thread, the QUIC server, metrics, and graceful
//! shutdown.
//!
//! ```text
//! QUIC connections ──requests──▶ core thread (Sequencer + Journal, group commit)
//!        ▲                           │  open jobs ──▶ rayon pool ──▶ back to core
//!        └──── receipts, events ─────┘
//! ```

pub mod config;
pub mod core;
pub mod metrics;
pub mod schedule;
pub mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::envelope::{CustodianError, EmbeddedCustodian, SequencerKey};
use crate::journal::{
    Faults, FaultyStorage, FsStorage, Journal, JournalConfig, JournalError, Storage,
    read_checkpoints,
};
use crate::market::AccountId;
use crate::net::{Identity, NetError};
use crate::sequencer::{Checkpoint, Genesis, Journaled, SequencerError, SequencerRecord};

pub use config::NodeConfig;
use core::{Control, Core, CoreHandle};
use metrics::Metrics;

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
    /// A key file is damaged.
    #[error("{path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
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
    /// The core thread failed.
    #[error("core: {0}")]
    Core(#[from] core::CoreError),
    /// The core thread panicked.
    #[error("the core thread panicked")]
    CorePanicked,
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
    /// rest (a damaged key file, a network error).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Journal(JournalError::Io { .. } | JournalError::Poisoned) => EXIT_STORAGE,
            NodeError::Core(error) if error.is_storage() => EXIT_STORAGE,
            NodeError::Core(_) | NodeError::CorePanicked => EXIT_INTERNAL,
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

/// Reads a 32-byte secret file, or creates it (mode 0600, fsynced, directory
/// fsynced) from `fresh`.
fn secret_file(path: &Path, fresh: impl FnOnce() -> [u8; 32]) -> Result<[u8; 32], NodeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut out = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut out).map_err(|_| NodeError::BadKeyFile {
                path: path.to_path_buf(),
                reason: "expected 64 hex digits",
            })?;
            Ok(out)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = fresh();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io(path))?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(dir))?;
            }
            Ok(secret)
        }
        Err(e) => Err(NodeError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn random_secret() -> [u8; 32] {
    use rand_core::{OsRng, RngCore};
    let mut out = [0u8; 32];
    OsRng.fill_bytes(&mut out);
    out
}

/// The demo accounts' signing keys, created on first start.
///
/// # Errors
///
/// [`NodeError::Io`] or [`NodeError::BadKeyFile`].
pub fn demo_accounts(data_dir: &Path) -> Result<Vec<ed25519_dalek::SigningKey>, NodeError> {
    (0..DEMO_ACCOUNTS)
        .map(|i| {
            let path = data_dir.join(format!("{DEMO_ACCOUNTS_FILE}-{i}.key"));
            let seed = secret_file(&path, random_secret)?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        })
        .collect()
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
}

/// The newest checkpoint in the journal directory that reads back and
/// decodes; damaged ones are skipped with a warning (an older one, or the
/// whole journal, is replayed instead).
///
/// # Errors
///
/// [`JournalError::Io`] reading the directory or a file.
fn latest_checkpoint(storage: &mut impl Storage) -> Result<Option<Checkpoint>, JournalError> {
    for found in read_checkpoints(storage)? {
        let name = found.name.clone();
        match Checkpoint::try_from(found) {
            Ok(checkpoint) => return Ok(Some(checkpoint)),
            Err(problem) => {
                tracing::warn!(file = %name, %problem, "checkpoint unusable, skipped");
            }
        }
    }
    Ok(None)
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

    let key_seed = secret_file(&data.join(SEQUENCER_KEY_FILE), random_secret)?;
    let key = SequencerKey::from_seed(&key_seed);
    // The journal is replayed as it is read, one segment at a time.
    let replay_started = std::time::Instant::now();
    let journal_dir = data.join(JOURNAL_DIR);
    let storage = FsStorage::new(&journal_dir).map_err(io(&journal_dir))?;
    let (journal, recovery) = Journal::open_streaming(
        FaultyStorage::new(storage, faults),
        JournalConfig::default(),
    )?;
    if let Some(cut) = &recovery.truncation {
        tracing::warn!(
            path = %cut.path.display(),
            offset = cut.offset,
            bytes = cut.bytes_cut,
            "journal: cut a torn tail"
        );
    }
    let segment_count = recovery.segments;
    let checkpoint = latest_checkpoint(&mut journal.storage().clone())?;
    let mut records = match &checkpoint {
        Some(checkpoint) => recovery.records.skip_below(checkpoint.replay_from),
        None => recovery.records,
    }
    .until_damage();
    // Without a checkpoint the genesis is the journal's first record.
    let first = if checkpoint.is_none() {
        records.next()
    } else {
        None
    };
    if let Some(damage) = records.take_damage() {
        return Err(damage.into());
    }

    // Genesis: the journal's, if any; else this configuration, now.
    let mut genesis = Genesis {
        sequencer: key.public_key(),
        schedule: crate::envelope::BatchSchedule {
            genesis_ms: core::now_ms() / config.batch_length_ms * config.batch_length_ms,
            batch_length_ms: config.batch_length_ms,
        },
        fee_account: AccountId([0; 32]),
        orders_per_account_per_batch_max: config.orders_per_account_per_batch_max,
        markets: {
            let mut markets = config.markets.clone();
            markets.sort_by_key(|m| m.id);
            markets
        },
    };
    let recorded = match (&checkpoint, &first) {
        (Some(checkpoint), _) => Some(checkpoint.genesis.clone()),
        (None, Some((lsn, kind, payload))) => match SequencerRecord::decode(*kind, payload) {
            Ok(SequencerRecord::Genesis(g)) => Some(g),
            Ok(_) => return Err(SequencerError::NoGenesis(*lsn).into()),
            Err(source) => return Err(SequencerError::Record { lsn: *lsn, source }.into()),
        },
        (None, None) => None,
    };
    let fresh = recorded.is_none();
    if let Some(recorded) = recorded {
        if recorded.markets != genesis.markets {
            return Err(NodeError::GenesisChanged("markets"));
        }
        if recorded.schedule.batch_length_ms != genesis.schedule.batch_length_ms {
            return Err(NodeError::GenesisChanged("batch_length_ms"));
        }
        if recorded.orders_per_account_per_batch_max != genesis.orders_per_account_per_batch_max {
            return Err(NodeError::GenesisChanged(
                "orders_per_account_per_batch_max",
            ));
        }
        genesis = recorded;
    }

    let custodian = EmbeddedCustodian::open_or_create(
        &data.join(CUSTODIAN_KEY_FILE),
        &mut rand_core::OsRng,
        key.public_key(),
        genesis.schedule,
    )?;
    let checkpoint_lsn = checkpoint.as_ref().map(|c| c.lsn);
    let sequencer = crate::sequencer::Sequencer::recover(
        genesis,
        config.sequencer_limits(),
        SequencerKey::from_seed(&key_seed),
        Box::new(custodian),
        Journaled {
            checkpoint,
            records: first.into_iter().chain(&mut records),
            next_lsn: journal.next_lsn(),
        },
        core::now_ms(),
    );
    // Damage met while replaying stops the process like damage found when
    // opening: it is reported before anything the replay built is used.
    if let Some(damage) = records.take_damage() {
        return Err(damage.into());
    }
    let mut sequencer = sequencer?;
    tracing::info!(
        records = records.records_read(),
        segments = segment_count,
        checkpoint = checkpoint_lsn.unwrap_or(0),
        ms = replay_started.elapsed().as_millis() as u64,
        "journal replayed"
    );
    if fresh && config.demo {
        for (i, account) in demo_accounts(&data)?.iter().enumerate() {
            let account = AccountId(account.verifying_key().to_bytes());
            for asset in &config.assets {
                sequencer.handle_deposit(
                    crate::sequencer::OpToken(i as u64),
                    account,
                    asset.id,
                    1_000_000_000_000,
                )?;
            }
        }
    }

    let identity = Identity::load_or_create(&data.join(TLS_DIR))?;
    let endpoint = crate::net::server_endpoint(
        config.listen,
        crate::net::server_config(&identity, &config.limits.transport())?,
    )?;
    let listen = endpoint.local_addr().map_err(io(&data))?;
    let metrics = Arc::new(Metrics::default());

    let (request_tx, request_rx) = crossbeam_channel::bounded(config.limits.core_queue_max);
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let schedules = schedule::ScheduleCache::new();
    let core_handle = CoreHandle {
        requests: request_tx,
        control: control_tx.clone(),
        key: Arc::new(SequencerKey::from_seed(&key_seed)),
        schedules: Arc::clone(&schedules),
    };
    let pool = Arc::new(core::open_pool().map_err(|e| NodeError::Io {
        path: data.clone(),
        source: std::io::Error::other(e.to_string()),
    })?);
    let core = Core::new(
        sequencer,
        journal,
        key,
        core::CoreOptions {
            metrics: Arc::clone(&metrics),
            demo: config.demo,
            envelopes_per_connection_per_batch_max: config
                .limits
                .envelopes_per_connection_per_batch_max,
            control_tx: control_tx.clone(),
            pool,
            checkpoint_every_batches: config.checkpoint_every_batches,
            prune_journal: config.prune_journal,
            journal_stall_max: std::time::Duration::from_millis(config.journal_stall_max_ms),
            intake_delay_max: std::time::Duration::from_millis(config.limits.intake_delay_max_ms),
            envelopes_per_ip_per_batch_max: config.limits.envelopes_per_ip_per_batch_max,
            schedules,
        },
    );
    // The core thread says when it ends, so that a failure stops the node
    // at once instead of leaving it half alive until a signal.
    let (core_done_tx, core_done) = tokio::sync::oneshot::channel();
    let core_thread = std::thread::Builder::new()
        .name("sealbatch-core".into())
        .spawn(move || {
            let result = core.run(request_rx, control_rx);
            let _ = core_done_tx.send(());
            result
        })
        .map_err(io(&data))?;

    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_listen {
        let listener_metrics = Arc::clone(&metrics);
        let shutdown = shutdown.clone();
        metrics_addr = Some(addr);
        tokio::spawn(async move {
            if let Err(error) = metrics::serve_metrics(addr, listener_metrics, shutdown).await {
                tracing::warn!(%addr, %error, "metrics endpoint disabled");
            }
        });
    }
    tracing::info!(
        %listen,
        fingerprint = %hex::encode(identity.fingerprint),
        sequencer = %hex::encode(key_seed_public(&key_seed)),
        data_dir = %data.display(),
        "sequencer listening"
    );
    if let Some(started) = started {
        let _ = started.send(NodeInfo {
            listen,
            fingerprint: identity.fingerprint,
            sequencer_key: key_seed_public(&key_seed),
            metrics: metrics_addr,
        });
    }

    let server = tokio::spawn(server::serve(
        endpoint.clone(),
        core_handle,
        config.limits,
        metrics,
        shutdown.clone(),
    ));
    let mut shutdown_wait = shutdown;
    let signalled = async {
        while !*shutdown_wait.borrow() {
            if shutdown_wait.changed().await.is_err() {
                break;
            }
        }
    };
    let stopped_by_itself = tokio::select! {
        () = signalled => false,
        _ = core_done => true,
    };
    if stopped_by_itself {
        // The core failed (or panicked): stop now. Nothing more can be made
        // durable, so nothing more is acknowledged; the connections close.
        server.abort();
        endpoint.close(server::CLOSE_UNAVAILABLE.into(), b"sequencer stopped");
    } else {
        tracing::info!("shutting down: no new connections");
        let _ = control_tx.send(Control::Shutdown);
    }
    let result = tokio::task::spawn_blocking(move || core_thread.join())
        .await
        .map_err(|_| NodeError::CorePanicked)?
        .map_err(|_| NodeError::CorePanicked)?;
    let _ = server.await;
    endpoint.close(server::CLOSE_SHUTDOWN.into(), b"shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle()).await;
    result?;
    if stopped_by_itself {
        // The core stops by itself only on an error, returned above.
        return Err(NodeError::CorePanicked);
    }
    tracing::info!("journal flushed; bye");
    Ok(())
}

fn key_seed_public(seed: &[u8; 32]) -> [u8; 32] {
    SequencerKey::from_seed(seed).public_key().to_bytes()
}

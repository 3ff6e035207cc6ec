//! The keyper process (`sealbatch keyper run`): a [`KeyperNode`] with its
//! own journal on disk, connected to the sequencer over the keyper link
//! (`spec/keyper.md` §17) — a QUIC connection that pins the sequencer's
//! certificate, opened with a hello signed over the connection's channel
//! binding. It reads the committee's log, posts what the generation asks of
//! it, and answers each seal with its share under the release rule,
//! journaling (fsync) every first release before the share leaves.
//!
//! A different organisation runs each keyper, on its own machine: its data
//! directory holds its two secret keys (mode 0600) and its journal (a
//! directory of mode 0700: the dealings' polynomials are secrets).
//!
//! Layout: [`KeyperConfig`] the configuration file; [`init`] the keys;
//! [`run`] the process until shutdown, reconnecting with backoff.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

use crate::commit::{CERTIFICATE_SIGNERS_MAX, CommitCertificate, ReplicaSet};
use crate::envelope::{BatchSchedule, SequencerPublicKey, SignedSeal};
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::keyper::config::CommitteeConfig;
use crate::keyper::{
    KeyperIdentity, KeyperNode, KeyperRecord, Release, ReleaseRefusal, sharing::random_scalar,
};
use crate::secret_file::{SecretFileError, load_or_create_key32};
use crate::signed::{CHANNEL_BINDING_LABEL, ChannelBinding};
use crate::types::BatchId;
use crate::wire::keyper::{KEYPER_ALPN, KeyperDown, KeyperUp, hello_signing_message};
use crate::wire::{FrameDecoder, encode};

/// The keyper's Ed25519 signing key seed (mode 0600).
pub const SIGNING_KEY_FILE: &str = "keyper-signing.key";
/// The keyper's ristretto255 decryption key (mode 0600).
pub const DECRYPTION_KEY_FILE: &str = "keyper-decryption.key";
/// The keyper's journal directory (mode 0700).
pub const JOURNAL_DIR: &str = "journal";

/// Shortest and longest wait before reconnecting. Short: a sequencer (or
/// every replica) that was down is dialled again within half a second of
/// coming back, on top of the handshake that timed out meanwhile (with 2 s,
/// keys came 2–3 s after a whole cluster's restart, not ~1 s).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_millis(500);
/// How often an idle keyper link is kept alive.
const LINK_KEEP_ALIVE: Duration = Duration::from_millis(250);
/// A keyper link silent this long is lost (the keyper tries the next
/// replica).
const LINK_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a keyper waits for the QUIC handshake with a sequencer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often lost posts are looked at when nothing else wakes the keyper.
const TICK: Duration = Duration::from_millis(250);
/// Posts not seen in the log for this long are sent again.
const REPOST_AFTER: Duration = Duration::from_secs(2);
/// Seals held because they came before close + skew (older ones dropped:
/// the sequencer asks again).
const EARLY_SEALS_MAX: usize = 1024;

/// A keyper's configuration (TOML).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyperConfig {
    /// Keys and journal live here.
    pub data_dir: PathBuf,
    /// A single-node sequencer's QUIC address (with `fingerprint`); a
    /// replicated sequencer's keyper lists `replicas` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<SocketAddr>,
    /// SHA-256 of the sequencer's TLS certificate (64 hex digits), pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// A replicated sequencer's replicas (`spec/replication.md` §10): the
    /// keyper links to whichever leads, and releases only for a seal a
    /// majority of them certified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<KeyperReplica>,
    /// The sequencer's Ed25519 key (64 hex digits): seals must verify
    /// under it.
    pub sequencer_key: String,
    /// The batch clock: Unix ms of batch 0's start.
    pub genesis_ms: u64,
    /// The batch clock: each batch's length in ms.
    pub batch_length_ms: u64,
    /// How far past a batch's close this keyper's clock must be before it
    /// releases (covers clock differences). Default 50.
    #[serde(default = "default_skew_ms")]
    pub skew_ms: u64,
    /// Prometheus `/metrics` address (loopback); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// The committee, exactly as the sequencer's configuration names it.
    pub committee: CommitteeConfig,
}

/// One replica of a replicated sequencer, as its keypers know it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyperReplica {
    /// Where its clients (and keypers) connect.
    pub address: SocketAddr,
    /// SHA-256 of its TLS certificate (64 hex digits), pinned.
    pub fingerprint: String,
    /// Its commit key (64 hex digits, as `sealbatch cluster init` prints
    /// it): its signatures over committed seals count.
    pub commit_key: String,
}

/// Where a keyper connects, in the order it tries them, each with its
/// pinned fingerprint, and the replicas that certify seals (`None`: a
/// single node).
type Targets = (Vec<(SocketAddr, [u8; 32])>, Option<ReplicaSet>);

fn targets(config: &KeyperConfig) -> Result<Targets, KeyperProcessError> {
    match (
        &config.sequencer,
        &config.fingerprint,
        config.replicas.as_slice(),
    ) {
        (Some(addr), Some(fingerprint), []) => {
            Ok((vec![(*addr, hex32(fingerprint, "fingerprint")?)], None))
        }
        (None, None, replicas) if !replicas.is_empty() => {
            let mut targets = Vec::new();
            let mut keys = Vec::new();
            for replica in replicas {
                targets.push((
                    replica.address,
                    hex32(&replica.fingerprint, "replicas.fingerprint")?,
                ));
                keys.push(hex32(&replica.commit_key, "replicas.commit_key")?);
            }
            let set = ReplicaSet::new(keys).ok_or_else(|| {
                KeyperProcessError::Config(format!(
                    "replicas: 1 to {CERTIFICATE_SIGNERS_MAX} with valid Ed25519 commit keys"
                ))
            })?;
            Ok((targets, Some(set)))
        }
        _ => Err(KeyperProcessError::Config(
            "either `sequencer` and `fingerprint` (a single node) or `replicas` (a cluster)".into(),
        )),
    }
}

/// What a keyper counts, served on `metrics_listen` as Prometheus text.
#[derive(Debug)]
pub struct KeyperMetrics {
    /// Shares sent: first releases (journaled first).
    pub released_first: Counter,
    /// Shares sent again for a seal released before.
    pub released_again: Counter,
    /// Seals held until close + skew.
    pub seals_held: Counter,
    /// Seals refused (a bad signature, another root for a batch: evidence,
    /// no share of the batch).
    pub seals_refused: Counter,
    /// Log entries read.
    pub log_entries: Counter,
    /// Runs of a replicated sequencer's log entries refused: their
    /// certificate did not carry a majority of the replicas' signatures.
    pub log_refused: Counter,
    /// Messages posted to the log (with repeats after a reconnect).
    pub posts: Counter,
    /// Links to the sequencer opened.
    pub links: Counter,
    /// Whether the link is up now.
    pub connected: Gauge,
    /// Pairs of seals the sequencer signed for one batch (evidence kept,
    /// journaled and served at `/evidence`).
    pub evidence: Gauge,
    /// Times the keyper read the log again from its start because a log
    /// keeper's log ended before the position it had reached.
    pub rewinds: Counter,
    /// Journal append + fsync.
    pub journal_seconds: prometheus_client::metrics::histogram::Histogram,
    registry: prometheus_client::registry::Registry,
}

impl Default for KeyperMetrics {
    fn default() -> Self {
        let mut m = KeyperMetrics {
            released_first: Counter::default(),
            released_again: Counter::default(),
            seals_held: Counter::default(),
            seals_refused: Counter::default(),
            log_entries: Counter::default(),
            log_refused: Counter::default(),
            posts: Counter::default(),
            links: Counter::default(),
            connected: Gauge::default(),
            evidence: Gauge::default(),
            rewinds: Counter::default(),
            journal_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 16),
            ),
            registry: prometheus_client::registry::Registry::default(),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        for (name, help, counter) in [
            (
                "sealbatch_keyper_released_first",
                "Shares sent for a first seal of a batch (journaled first)",
                &m.released_first,
            ),
            (
                "sealbatch_keyper_released_again",
                "Shares sent again for a seal released before",
                &m.released_again,
            ),
            (
                "sealbatch_keyper_seals_held",
                "Seals held until the batch's close plus the skew",
                &m.seals_held,
            ),
            (
                "sealbatch_keyper_seals_refused",
                "Seals refused: bad signature, a second root for a batch, no share",
                &m.seals_refused,
            ),
            (
                "sealbatch_keyper_log_entries",
                "Committee log entries read",
                &m.log_entries,
            ),
            (
                "sealbatch_keyper_log_refused",
                "Runs of log entries refused: no majority of the replicas certified them",
                &m.log_refused,
            ),
            (
                "sealbatch_keyper_posts",
                "Messages posted to the committee log",
                &m.posts,
            ),
            (
                "sealbatch_keyper_links",
                "Links to the sequencer opened",
                &m.links,
            ),
            (
                "sealbatch_keyper_log_rewinds",
                "Reads of the log again from its start (a log keeper whose log ended before the position reached)",
                &m.rewinds,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "sealbatch_keyper_connected",
            "Whether the link to the sequencer is up",
            m.connected.clone(),
        );
        registry.register(
            "sealbatch_keyper_evidence_pairs",
            "Pairs of seals the sequencer signed for one batch, kept as evidence (GET /evidence)",
            m.evidence.clone(),
        );
        registry.register(
            "sealbatch_keyper_journal_seconds",
            "Journal append and fsync of a release or a dealing",
            m.journal_seconds.clone(),
        );
        m.registry = registry;
        m
    }
}

impl KeyperMetrics {
    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

type Counter = prometheus_client::metrics::counter::Counter;
type Gauge = prometheus_client::metrics::gauge::Gauge;

fn default_skew_ms() -> u64 {
    50
}

/// Why a keyper cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum KeyperProcessError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A key file.
    #[error("{0}")]
    SecretFile(#[from] SecretFileError),
    /// The journal.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// A journal record does not decode.
    #[error("journal record {lsn}: {reason}")]
    Record {
        /// Its LSN.
        lsn: crate::types::Lsn,
        /// Why.
        reason: String,
    },
    /// A file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The QUIC client.
    #[error("network: {0}")]
    Net(#[from] crate::net::NetError),
    /// The keyper found its own state wrong while running (it cannot read
    /// its shares): it stops instead of hurting the committee.
    #[error("{0}")]
    Fault(#[from] crate::keyper::KeyperFault),
}

/// `keyper run`'s exit status when the journal failed (as the sequencer's).
pub const EXIT_KEYPER_STORAGE: u8 = 74;
/// `keyper run`'s exit status when its configuration, keys or journal
/// cannot be used — restarting will not help until they are fixed.
pub const EXIT_KEYPER_CONFIG: u8 = 78;

impl KeyperProcessError {
    /// The process's exit status for this error: [`EXIT_KEYPER_STORAGE`]
    /// for a journal that failed, [`EXIT_KEYPER_CONFIG`] for a
    /// configuration, key, journal or keyper state that cannot be used, 1
    /// otherwise (restart it).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            KeyperProcessError::Journal(_) => EXIT_KEYPER_STORAGE,
            KeyperProcessError::Config(_)
            | KeyperProcessError::SecretFile(_)
            | KeyperProcessError::Record { .. }
            | KeyperProcessError::Fault(_) => EXIT_KEYPER_CONFIG,
            KeyperProcessError::Io { .. } | KeyperProcessError::Net(_) => 1,
        }
    }
}

impl KeyperConfig {
    /// Reads a configuration file.
    ///
    /// # Errors
    ///
    /// [`KeyperProcessError::Config`] naming the problem.
    pub fn from_file(path: &Path) -> Result<KeyperConfig, KeyperProcessError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyperProcessError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text)
            .map_err(|error| KeyperProcessError::Config(format!("{}: {error}", path.display())))
    }
}

/// A keyper's public keys: what the committee configuration lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyperPublic {
    /// Ed25519 signing key.
    pub signing: [u8; 32],
    /// ristretto255 encryption key.
    pub encryption: [u8; 32],
}

fn random_seed() -> Zeroizing<[u8; 32]> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, seed.as_mut());
    seed
}

/// Creates the keyper's keys in `dir` (or reads them if they exist) and
/// returns its public keys. Only `init` creates keys: [`run`] refuses to
/// start without them.
///
/// # Errors
///
/// [`KeyperProcessError`] for a directory or key file that cannot be made
/// or read.
pub fn init(dir: &Path) -> Result<KeyperPublic, KeyperProcessError> {
    let (signing, decryption) = load_keys(dir, true)?;
    Ok(KeyperPublic {
        signing: signing.verifying_key().to_bytes(),
        encryption: curve25519_dalek::RistrettoPoint::mul_base(&decryption)
            .compress()
            .to_bytes(),
    })
}

/// The keyper's keys from `dir`, created first if `create` (`init` only:
/// a key recreated silently by `run` would not be the committee's entry).
fn load_keys(
    dir: &Path,
    create: bool,
) -> Result<(SigningKey, Zeroizing<Scalar>), KeyperProcessError> {
    if create {
        std::fs::create_dir_all(dir).map_err(|source| KeyperProcessError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    } else {
        for file in [SIGNING_KEY_FILE, DECRYPTION_KEY_FILE] {
            let path = dir.join(file);
            if !path.exists() {
                return Err(KeyperProcessError::Config(format!(
                    "{} does not exist: `sealbatch keyper init --dir {}` creates a keyper's keys, and the committee must list them",
                    path.display(),
                    dir.display()
                )));
            }
        }
    }
    let seed = load_or_create_key32(&dir.join(SIGNING_KEY_FILE), random_seed)?;
    let decryption = load_or_create_key32(&dir.join(DECRYPTION_KEY_FILE), || {
        Zeroizing::new(random_scalar(&mut rand_core::OsRng).to_bytes())
    })?;
    let scalar = Option::<Scalar>::from(Scalar::from_canonical_bytes(*decryption))
        .filter(|s| *s != Scalar::ZERO)
        .ok_or_else(|| {
            KeyperProcessError::Config(format!(
                "{} does not hold a valid key",
                dir.join(DECRYPTION_KEY_FILE).display()
            ))
        })?;
    Ok((SigningKey::from_bytes(&seed), Zeroizing::new(scalar)))
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32], KeyperProcessError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out)
        .map_err(|_| KeyperProcessError::Config(format!("{what} is not 64 hex digits")))?;
    Ok(out)
}

/// What a running keyper reports (for the demo and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyperEvent {
    /// Connected and welcomed as keyper `index`.
    Connected {
        /// Its index.
        index: u16,
    },
    /// Its share of batch `e` left (first release or a repeat).
    Released {
        /// The batch.
        e: BatchId,
        /// The root of the seal released for.
        root: crate::envelope::MerkleRoot,
        /// Whether it was the first release for this batch.
        first: bool,
    },
    /// A seal was refused (not early: those are held until their time).
    Refused {
        /// Why.
        reason: String,
    },
}

/// The keyper's state machine and its randomness, shared with the blocking
/// thread that reads the log (checking dealings is CPU work that must not
/// hold an async worker).
struct Core {
    node: KeyperNode,
    rng: rand_chacha::ChaCha20Rng,
}

/// The keyper's state between connections.
struct State {
    core: std::sync::Arc<std::sync::Mutex<Core>>,
    journal: Option<Journal<crate::journal::FsStorage>>,
    /// Seals (with their certificates) that came before close + skew,
    /// answered when their time comes.
    early: BTreeMap<BatchId, (SignedSeal, Option<CommitCertificate>)>,
    /// Whether the current link was welcomed (its sequencer leads).
    welcomed: bool,
    events: Option<mpsc::UnboundedSender<KeyperEvent>>,
    metrics: std::sync::Arc<KeyperMetrics>,
}

impl State {
    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads log entries on a blocking thread: a single node's as they
    /// come, a replicated sequencer's run with its certificate. Returns
    /// the certificate's refusal (nothing read then).
    async fn read_log(
        &mut self,
        entries: Vec<(u64, crate::keyper::LogEntry)>,
        certificate: Option<CommitCertificate>,
    ) -> Result<Result<(), crate::commit::CertificateError>, KeyperProcessError> {
        let count = entries.len() as u64;
        let core = std::sync::Arc::clone(&self.core);
        let (read, fault) = tokio::task::spawn_blocking(move || {
            let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
            let Core { node, rng } = &mut *core;
            let now = crate::clock::now_ms();
            let read = match &certificate {
                Some(certificate) => node.handle_certified_log(rng, now, &entries, certificate),
                None => {
                    node.handle_log(rng, now, entries.iter().map(|(p, e)| (*p, e)));
                    Ok(())
                }
            };
            (read, node.fault().cloned())
        })
        .await
        .map_err(|error| KeyperProcessError::Config(format!("log reader thread: {error}")))?;
        if let Some(fault) = fault {
            return Err(KeyperProcessError::Fault(fault));
        }
        if read.is_ok() {
            self.metrics.log_entries.inc_by(count);
        }
        Ok(read)
    }

    fn report(&self, event: KeyperEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// Appends `record` to the journal and fsyncs it, off the async
    /// threads.
    async fn journal(&mut self, record: &KeyperRecord) -> Result<(), KeyperProcessError> {
        let Some(mut journal) = self.journal.take() else {
            return Err(KeyperProcessError::Config(
                "the journal failed before".into(),
            ));
        };
        let payload = record.encode();
        let kind = payload.first().copied().unwrap_or(1);
        let started = std::time::Instant::now();
        let (journal, result) = tokio::task::spawn_blocking(move || {
            let result = journal
                .append(kind, &payload)
                .and_then(|_| journal.sync())
                .map(|_| ());
            (journal, result)
        })
        .await
        .map_err(|error| KeyperProcessError::Config(format!("journal thread: {error}")))?;
        result?;
        self.journal = Some(journal);
        self.metrics
            .journal_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Journals the node's records (each fsynced) and releases what waited
    /// for them.
    async fn flush_records(&mut self) -> Result<(), KeyperProcessError> {
        loop {
            let Some((number, record)) = self.core().node.poll_record() else {
                break;
            };
            self.journal(&record).await?;
            self.core().node.handle_durable(number);
        }
        Ok(())
    }

    /// The frames to send: posts the node has queued.
    fn posts(&mut self, out: &mut Vec<u8>) {
        let mut core = self.core();
        while let Some(message) = core.node.poll_message() {
            self.metrics.posts.inc();
            if encode(&KeyperUp::Post(message), out).is_err() {
                tracing::error!("a keyper message too large to send (a bug)");
            }
        }
    }

    /// Answers a seal at `now_ms`: the share frame, after journaling a
    /// first release.
    async fn seal(
        &mut self,
        seal: SignedSeal,
        certificate: Option<CommitCertificate>,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), KeyperProcessError> {
        let decided = self
            .core()
            .node
            .handle_seal(&seal, certificate.as_ref(), now_ms);
        // A second seal for a released batch queued an evidence record:
        // journal it now (the refusal below is counted and logged).
        self.flush_records().await?;
        match decided {
            Ok(answer) => {
                let release = answer.release;
                if release == Release::First {
                    self.journal(&KeyperRecord::Released(seal)).await?;
                    self.core().node.record_release(seal);
                    self.metrics.released_first.inc();
                } else {
                    self.metrics.released_again.inc();
                }
                self.early.remove(&seal.e);
                let _ = encode(
                    &KeyperUp::Share {
                        e: seal.e,
                        share: *answer.share,
                        attestation: answer.attestation,
                    },
                    out,
                );
                self.report(KeyperEvent::Released {
                    e: seal.e,
                    root: seal.root,
                    first: release == Release::First,
                });
            }
            Err(ReleaseRefusal::Equivocation(e)) => {
                self.metrics.seals_refused.inc();
                let evidence = self.core().node.evidence().len() as i64;
                self.metrics.evidence.set(evidence);
                tracing::error!(
                    batch = e.get(),
                    "the sequencer signed a second seal for a batch released for: both kept as evidence (served at /evidence)"
                );
                self.report(KeyperEvent::Refused {
                    reason: ReleaseRefusal::Equivocation(e).to_string(),
                });
            }
            Err(ReleaseRefusal::TooEarly { .. }) => {
                if self.early.insert(seal.e, (seal, certificate)).is_none() {
                    self.metrics.seals_held.inc();
                }
                while self.early.len() > EARLY_SEALS_MAX {
                    self.early.pop_first();
                }
            }
            Err(refusal) => {
                self.metrics.seals_refused.inc();
                tracing::warn!(batch = seal.e.get(), %refusal, "seal refused");
                self.report(KeyperEvent::Refused {
                    reason: refusal.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Runs the keyper until `shutdown` turns true: connects (again, with
/// backoff, whenever the link drops), reads the log, posts, releases.
/// `events`, if given, hears what it does.
///
/// # Errors
///
/// [`KeyperProcessError`]: the configuration, keys or journal cannot be
/// used, or the journal failed (a keyper that cannot journal a release
/// must not release: it stops).
pub async fn run(
    config: KeyperConfig,
    mut shutdown: watch::Receiver<bool>,
    events: Option<mpsc::UnboundedSender<KeyperEvent>>,
) -> Result<(), KeyperProcessError> {
    let (signing, decryption) = load_keys(&config.data_dir, false)?;
    let sequencer_bytes = hex32(&config.sequencer_key, "sequencer_key")?;
    let sequencer = SequencerPublicKey::from_bytes(&sequencer_bytes)
        .map_err(|_| KeyperProcessError::Config("sequencer_key is not a valid key".into()))?;
    let (targets, replicas) = targets(&config)?;
    if config.batch_length_ms == 0 {
        return Err(KeyperProcessError::Config(
            "batch_length_ms must be at least 1".into(),
        ));
    }
    let schedule = BatchSchedule {
        genesis_ms: config.genesis_ms,
        batch_length_ms: config.batch_length_ms,
    };
    // Key generation is bound to this deployment: the sequencer key and
    // the batch clock.
    let deployment = crate::envelope::DeploymentId::new(&sequencer_bytes, &schedule);
    let (committee, _) = config
        .committee
        .committee(deployment)
        .map_err(|error| KeyperProcessError::Config(error.to_string()))?;
    let journal_dir = config.data_dir.join(JOURNAL_DIR);
    make_private_dir(&journal_dir)?;
    let (journal, recovery) = Journal::open_dir(&journal_dir, JournalConfig::default())?;
    let records = recovery
        .records
        .iter()
        .map(|r| {
            KeyperRecord::decode(&r.payload).map_err(|error| KeyperProcessError::Record {
                lsn: r.lsn,
                reason: error.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let me = signing.verifying_key().to_bytes();
    let node = KeyperNode::new(
        KeyperIdentity {
            committee: committee.clone(),
            signing: signing.clone(),
            decryption,
            sequencer,
            schedule,
            skew_ms: config.skew_ms,
            replicas,
        },
        records,
    )
    .map_err(|error| KeyperProcessError::Config(error.to_string()))?;
    tracing::info!(
        keyper = node.index(),
        key = %hex::encode(me),
        committee = %hex::encode(committee.id()),
        %deployment,
        sequencers = targets.len(),
        "keyper starting"
    );
    let metrics = std::sync::Arc::new(KeyperMetrics::default());
    metrics.evidence.set(node.evidence().len() as i64);
    let rng = rand_core::SeedableRng::from_rng(rand_core::OsRng)
        .map_err(|error| KeyperProcessError::Config(format!("randomness: {error}")))?;
    let mut state = State {
        core: std::sync::Arc::new(std::sync::Mutex::new(Core { node, rng })),
        metrics: std::sync::Arc::clone(&metrics),
        journal: Some(journal),
        early: BTreeMap::new(),
        welcomed: false,
        events,
    };
    let clients = targets
        .iter()
        .map(|(addr, fingerprint)| {
            let mut config = crate::net::client_config_for(*fingerprint, KEYPER_ALPN)?;
            // A sequencer that died (a replica's leader killed) is noticed
            // within the idle timeout: keep the link busy enough to tell.
            let mut transport = quinn::TransportConfig::default();
            transport
                .keep_alive_interval(Some(LINK_KEEP_ALIVE))
                .max_idle_timeout(quinn::IdleTimeout::try_from(LINK_IDLE_TIMEOUT).ok());
            config.transport_config(std::sync::Arc::new(transport));
            Ok::<_, crate::net::NetError>((*addr, config))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if config.metrics_listen.is_none() {
        for addr in crate::net::inherit::untaken() {
            tracing::warn!(%addr, "a socket handed down is named by no listen address of the configuration; unused");
        }
    }
    if let Some(addr) = config.metrics_listen {
        let listener = crate::net::inherit::tcp_listener(addr)
            .await
            .map_err(|source| KeyperProcessError::Io {
                path: PathBuf::from(addr.to_string()),
                source,
            })?;
        for addr in crate::net::inherit::untaken() {
            tracing::warn!(%addr, "a socket handed down is named by no listen address of the configuration; unused");
        }
        let served = std::sync::Arc::clone(&metrics);
        let core = std::sync::Arc::clone(&state.core);
        let router = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = std::sync::Arc::clone(&served);
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                            )],
                            metrics.render(),
                        )
                    }
                }),
            )
            .route(
                "/evidence",
                axum::routing::get(move || {
                    let core = std::sync::Arc::clone(&core);
                    async move {
                        let body = {
                            let core = core.lock().unwrap_or_else(|p| p.into_inner());
                            evidence_json(core.node.evidence())
                        };
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    }
                }),
            );
        let shutdown = shutdown.clone();
        tokio::spawn(crate::http::serve(
            listener,
            router,
            crate::http::HttpLimits::default(),
            shutdown,
        ));
    }
    // A new journal's first record names its committee (and so its
    // deployment): durable before anything else happens.
    state.flush_records().await?;
    // A link stands by at every sequencer (a replicated sequencer's
    // followers hold it until they lead): whichever welcomes this keyper
    // is the one it serves, and a new leader's welcome arrives on a link
    // already made — no waiting for the old one's idle timeout, no
    // handshake after the leader changed (`spec/keyper.md` §17).
    let (welcomes_tx, mut welcomes) = mpsc::channel::<Linked>(clients.len().max(1));
    let hello = HelloMaterial {
        core: std::sync::Arc::clone(&state.core),
        signing: signing.clone(),
        committee: committee.clone(),
        sequencer: sequencer_bytes,
    };
    let mut standing = tokio::task::JoinSet::new();
    for (addr, client) in &clients {
        standing.spawn(stand_by(
            *addr,
            client.clone(),
            hello.clone(),
            welcomes_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(welcomes_tx);
    let mut next = None;
    loop {
        let linked = match next.take() {
            Some(linked) => linked,
            None => tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                linked = welcomes.recv() => match linked {
                    Some(linked) => linked,
                    // The stand-by tasks end only as the keyper stops.
                    None if *shutdown.borrow() => return Ok(()),
                    None => return Err(KeyperProcessError::Config("no sequencer to connect to".into())),
                },
            },
        };
        let addr = linked.addr;
        state.welcomed = false;
        let (ended, done) = {
            let Linked {
                send,
                recv,
                decoder,
                done,
                ..
            } = linked;
            let ended = tokio::select! {
                ended = serve_link(send, recv, decoder, &schedule, config.skew_ms, &mut state, &mut welcomes) => ended,
                _ = shutdown.changed() => return Ok(()),
            };
            (ended, done)
        };
        // The stand-by task of this sequencer dials it again.
        let _ = done.send(());
        metrics.connected.set(0);
        match ended {
            Ok(()) => {}
            // A journal that failed stops the keyper: no share may leave
            // unjournaled.
            Err(LinkEnd::Fatal(error)) => return Err(error),
            Err(LinkEnd::Lost(reason)) => {
                tracing::debug!(%addr, %reason, "keyper link lost; waiting for a sequencer's welcome");
            }
            Err(LinkEnd::Switch(linked)) => {
                tracing::info!(from = %addr, to = %linked.addr, "another sequencer welcomed this keyper (a new leader); serving it");
                next = Some(*linked);
            }
        }
    }
}

/// What a keyper needs to say hello on a new link: its state (for the
/// position it read the log to), its key, its committee and the sequencer.
#[derive(Clone)]
struct HelloMaterial {
    core: std::sync::Arc<std::sync::Mutex<Core>>,
    signing: SigningKey,
    committee: crate::keyper::Committee,
    sequencer: [u8; 32],
}

/// A link to a sequencer that welcomed this keyper (it leads): its
/// stream, the frames read after the hello (the welcome first), and where
/// to say when the keyper is done with it.
struct Linked {
    addr: SocketAddr,
    /// Kept open with the link.
    _endpoint: quinn::Endpoint,
    _connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder<KeyperDown>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// Keeps a link standing by at the sequencer at `addr`: dials it, says
/// hello, and waits for its first frame — at once from a leader, when it
/// leads from a follower — then hands the link to the keyper's loop and
/// waits until that is done with it; dials again whenever a link ends,
/// after [`RECONNECT_MIN`], backing off to [`RECONNECT_MAX`] while it
/// cannot connect. Returns when the keyper stops.
async fn stand_by(
    addr: SocketAddr,
    client: quinn::ClientConfig,
    hello: HelloMaterial,
    welcomed: mpsc::Sender<Linked>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = RECONNECT_MIN;
    loop {
        let attempt = tokio::select! {
            attempt = stand(addr, &client, &hello) => attempt,
            _ = shutdown.changed() => return,
        };
        match attempt {
            Ok(linked) => {
                backoff = RECONNECT_MIN;
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                let linked = Linked {
                    done: done_tx,
                    ..linked
                };
                if welcomed.send(linked).await.is_err() {
                    return;
                }
                // Dialled again once the keyper is done with this link.
                tokio::select! {
                    _ = done_rx => {}
                    _ = shutdown.changed() => return,
                }
            }
            Err(reason) => {
                tracing::debug!(%addr, %reason, "no keyper link; dialling again");
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.max(RECONNECT_MIN)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Dials `addr`, says hello and waits for the first frame bytes.
async fn stand(
    addr: SocketAddr,
    client: &quinn::ClientConfig,
    hello: &HelloMaterial,
) -> Result<Linked, String> {
    let bind: SocketAddr = if addr.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([127, 0, 0, 1], 0))
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|error| error.to_string())?;
    // A sequencer that died answers nothing: give up on it soon.
    let connecting = endpoint
        .connect_with(client.clone(), addr, "sealbatch")
        .map_err(|error| error.to_string())?;
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("no handshake with {addr} in {CONNECT_TIMEOUT:?}"))?
        .map_err(|error| error.to_string())?;
    let mut binding = [0u8; 32];
    connection
        .export_keying_material(&mut binding, CHANNEL_BINDING_LABEL, b"")
        .map_err(|_| "no channel binding".to_string())?;
    let channel = ChannelBinding(binding);
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|error| error.to_string())?;
    let from = hello
        .core
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .node
        .read();
    let signature = hello
        .signing
        .sign(&hello_signing_message(
            &hello.committee,
            &hello.sequencer,
            &channel,
        ))
        .to_bytes();
    let mut out = Vec::new();
    encode(
        &KeyperUp::Hello {
            keyper: hello.signing.verifying_key().to_bytes(),
            from,
            signature,
        },
        &mut out,
    )
    .map_err(|error| error.to_string())?;
    send.write_all(&out)
        .await
        .map_err(|error| error.to_string())?;
    // A follower holds the link, silent, until it leads; a leader welcomes
    // at once. Nothing is sent meanwhile.
    let mut buf = vec![0u8; 64 << 10];
    let mut decoder = FrameDecoder::<KeyperDown>::new();
    match recv
        .read(&mut buf)
        .await
        .map_err(|error| error.to_string())?
    {
        Some(n) => decoder.extend(&buf[..n]),
        None => return Err("the sequencer closed the link".into()),
    }
    let (done, _) = tokio::sync::oneshot::channel();
    Ok(Linked {
        addr,
        _endpoint: endpoint,
        _connection: connection,
        send,
        recv,
        decoder,
        done,
    })
}

fn make_private_dir(dir: &Path) -> Result<(), KeyperProcessError> {
    let io = |source| KeyperProcessError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

enum LinkEnd {
    Lost(String),
    Fatal(KeyperProcessError),
    /// Another sequencer welcomed this keyper: it leads now.
    Switch(Box<Linked>),
}

impl From<KeyperProcessError> for LinkEnd {
    fn from(error: KeyperProcessError) -> LinkEnd {
        LinkEnd::Fatal(error)
    }
}

fn lost(error: impl std::fmt::Display) -> LinkEnd {
    LinkEnd::Lost(error.to_string())
}

/// Serves one link a sequencer welcomed (the frames read so far in
/// `decoder`), until it ends or another sequencer welcomes this keyper.
async fn serve_link(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut decoder: FrameDecoder<KeyperDown>,
    schedule: &BatchSchedule,
    skew_ms: u64,
    state: &mut State,
    welcomes: &mut mpsc::Receiver<Linked>,
) -> Result<(), LinkEnd> {
    // Whatever was queued on the last link may not have arrived.
    state.core().node.reset_outbox();
    let replicated = state.core().node.replicated();
    // A replicated sequencer's entries wait here for their certificate.
    let mut uncertified: Vec<(u64, crate::keyper::LogEntry)> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut last_repost = tokio::time::Instant::now();
    loop {
        let mut out = Vec::new();
        let mut entries = Vec::new();
        while let Some(message) = decoder.next_message().map_err(lost)? {
            match message {
                KeyperDown::Welcome { index, log_end } => {
                    state.metrics.links.inc();
                    state.metrics.connected.set(1);
                    state.welcomed = true;
                    let read = state.core().node.read();
                    if read > log_end {
                        // Entries no honest log has were read (from a log
                        // keeper that served positions past its log): read
                        // this log from its start, on a new link.
                        state.core().node.rewind();
                        state.metrics.rewinds.inc();
                        tracing::warn!(
                            keyper = index,
                            read,
                            log_end,
                            "the sequencer's log ends before the position read; reading it again from the start"
                        );
                        return Err(lost("reading the log again from its start"));
                    }
                    tracing::info!(keyper = index, "connected to the sequencer");
                    state.report(KeyperEvent::Connected { index });
                }
                KeyperDown::Entry { position, entry } if replicated => {
                    uncertified.push((position, entry));
                    if uncertified.len() > crate::commit::LOG_ATTESTED_MAX {
                        return Err(lost("more log entries than a certificate covers"));
                    }
                }
                KeyperDown::Entry { position, entry } => entries.push((position, entry)),
                KeyperDown::Certified { certificate } => {
                    if !replicated {
                        continue;
                    }
                    let run = std::mem::take(&mut uncertified);
                    if let Err(refusal) = state.read_log(run, Some(certificate)).await? {
                        state.metrics.log_refused.inc();
                        tracing::warn!(%refusal, "log entries without a majority's certificate; dropping this link");
                        return Err(lost(refusal));
                    }
                }
                KeyperDown::Seal { seal, certificate } => {
                    state
                        .seal(seal, certificate, crate::clock::now_ms(), &mut out)
                        .await?;
                }
            }
        }
        if !entries.is_empty() {
            let _ = state.read_log(entries, None).await?;
        }
        state.flush_records().await?;
        state.posts(&mut out);
        if !out.is_empty() {
            send.write_all(&out).await.map_err(lost)?;
            continue;
        }
        tokio::select! {
            read = recv.read(&mut buf) => match read.map_err(lost)? {
                Some(n) => decoder.extend(&buf[..n]),
                None => return Err(lost("the sequencer closed the link")),
            },
            // Another sequencer welcomed this keyper: it leads now (this
            // one may be dead, its link not timed out yet).
            Some(next) = welcomes.recv() => return Err(LinkEnd::Switch(Box::new(next))),
            // Wake when the earliest held seal's time comes (its close plus
            // the skew), so a share leaves as soon as the rule allows.
            () = tokio::time::sleep(next_wake(state, schedule, skew_ms)) => {
                let now = crate::clock::now_ms();
                let due: Vec<_> = state.early.values().cloned().collect();
                for (seal, certificate) in due {
                    state.seal(seal, certificate, now, &mut out).await?;
                }
                if last_repost.elapsed() >= REPOST_AFTER {
                    last_repost = tokio::time::Instant::now();
                    let mut core = state.core();
                    let Core { node, rng } = &mut *core;
                    node.reset_outbox();
                    node.handle_log(rng, crate::clock::now_ms(), std::iter::empty());
                }
                if !out.is_empty() {
                    send.write_all(&out).await.map_err(lost)?;
                }
            }
        }
    }
}

/// How long until the earliest held seal may be answered, at most [`TICK`].
fn next_wake(state: &State, schedule: &BatchSchedule, skew_ms: u64) -> Duration {
    let now = crate::clock::now_ms();
    state
        .early
        .keys()
        .next()
        .and_then(|&e| schedule.close_ms(e))
        .map_or(TICK, |close| {
            Duration::from_millis(close.saturating_add(skew_ms).saturating_sub(now)).min(TICK)
        })
}

/// The evidence a keyper kept, as JSON: each pair of seals (hex of their
/// 108 bytes, `spec/envelope.md` §13) the sequencer signed for one batch.
fn evidence_json(evidence: &[crate::keyper::Evidence]) -> String {
    let pairs: Vec<serde_json::Value> = evidence
        .iter()
        .map(|pair| {
            serde_json::json!({
                "e": pair.first.e,
                "released_for": hex::encode(pair.first.to_bytes()),
                "second": hex::encode(pair.second.to_bytes()),
            })
        })
        .collect();
    serde_json::json!({ "evidence": pairs }).to_string()
}

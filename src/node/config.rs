//! The node's configuration: a TOML file whose every field has a documented
//! default, so `sealbatch run` needs no file at all, plus environment
//! overrides (`SEALBATCH_DATA_DIR`, `SEALBATCH_LISTEN`, `SEALBATCH_METRICS_LISTEN`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::market::{AssetId, MarketConfig};
use crate::net::ServerTransport;
use crate::sequencer::Limits;
use crate::types::{MarketId, Tick};

/// Everything `sealbatch run` can be told. The defaults are the
/// [`Default`] implementation's, in one place; `sealbatch run
/// --print-config` prints the configuration in effect, as a file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Journal, keys and certificate live here. Default `./sealbatch-data`.
    pub data_dir: PathBuf,
    /// QUIC listen address (loopback). Default `127.0.0.1:4433`.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` address; `None` (`"off"` in the file) to
    /// disable. Default `127.0.0.1:9433`.
    #[serde(with = "address_or_off")]
    pub metrics_listen: Option<SocketAddr>,
    /// WebTransport (HTTP/3) listen address for browsers (`spec/wire.md`
    /// §9), its certificate hashes published at `/webtransport` on the
    /// metrics listener; `None` (`"off"`) to disable. Default off.
    #[serde(with = "address_or_off")]
    pub webtransport_listen: Option<SocketAddr>,
    /// Batch length in ms, fixed at the first start. Default 100.
    pub batch_length_ms: u64,
    /// Batches announced ahead. Default 8.
    pub announce_ahead: u64,
    /// Demo mode: deposits are accepted over the wire and the demo accounts
    /// are funded at the first start. Default true.
    pub demo: bool,
    /// Write a checkpoint of the sequencer's state every this many cleared
    /// batches, and at shutdown, so a restart replays only the journal after
    /// it; 0 never. Default 600 (a minute of 100 ms batches).
    pub checkpoint_every_batches: u64,
    /// Remove the journal segments that every kept checkpoint starts after.
    /// Default false: `sealbatch verify` re-derives every batch only from a
    /// whole journal.
    pub prune_journal: bool,
    /// Serve the batch explorer (`/`, `/batches/{e}`, `/api/batches`) on
    /// the metrics listener. Default true; it needs `metrics_listen`.
    pub explorer: bool,
    /// Orders one account may have in one batch (its bundles in commitment
    /// order; one that would pass it is rejected, status 36). Fixed at the
    /// first start. Default 16 384.
    pub orders_per_account_per_batch_max: u32,
    /// Longest a journal write may wait to become durable before the
    /// process stops with exit code 74 (the storage hangs; see
    /// `docs/operating.md`, "Storage faults"). Default 20 000.
    pub journal_stall_max_ms: u64,
    /// Bounds.
    pub limits: LimitsConfig,
    /// Who may deposit, acknowledge payouts and read every account, and
    /// how much one deposit may credit.
    pub operator: OperatorConfig,
    /// The assets (names are for display only).
    pub assets: Vec<AssetConfig>,
    /// The markets, fixed at the first start.
    pub markets: Vec<MarketConfig>,
    /// The keyper committee that holds the batch keys (`spec/keyper.md`);
    /// none (the default): the embedded custodian, in trusted-operator
    /// mode. Taken over by a fresh journal only; the journal keeps it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committee: Option<CommitteeConfig>,
    /// This node as one replica of a replicated sequencer
    /// (`spec/replication.md`); none (the default): a single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// A replica's place in its cluster: its id, where its replica transport
/// listens, the members a new cluster starts with, and Raft's timing.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's id (at least 1).
    pub id: u64,
    /// Where the replica transport listens (QUIC, `sealbatch-raft/1`).
    pub listen: SocketAddr,
    /// Whether this replica starts a new cluster of `members` when its log
    /// is empty (exactly one replica of a new cluster says so).
    #[serde(default)]
    pub bootstrap: bool,
    /// The round trip between replicas, ms, when it is longer than a
    /// data centre's: the timing keys below that are not set are derived
    /// from it (`spec/replication.md` §10, [`ClusterConfig::timing`]), and
    /// so is `[limits] clear_lag_max_ms`. Unset: the defaults, for round
    /// trips up to 20 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
    /// The election timeout's range, ms: each wait before standing is drawn
    /// from it afresh, and its upper end is the lease a follower keeps to
    /// its leader (`spec/replication.md` §7.1). Default `[100, 200]`
    /// (with `rtt_ms`: three and six round trips, if more): a new leader
    /// leads within about 0.4 s of the old one's last heartbeat
    /// (`BENCHMARKS.md`, "Replication").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_timeout_ms: Option<[u64; 2]>,
    /// How often the leader sends every follower a heartbeat, ms. Default
    /// 30 (with `rtt_ms`: one round trip, if more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// How long one append (or heartbeat), and the read barrier a new
    /// leader confirms itself with, may take before it is given up and
    /// sent again, ms: a round trip, the follower's fsync of what it
    /// carries and the wait behind it (`spec/replication.md` §7.1).
    /// Default 500 (with `rtt_ms`: 24 round trips, if more); at least
    /// `heartbeat_ms`, at most 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_timeout_ms: Option<u64>,
    /// Committed entries between snapshots. Default 4096.
    #[serde(default = "default_snapshot_every_entries")]
    pub snapshot_every_entries: u64,
    /// Most entries the leader keeps uncommitted (1 to 1024); the records
    /// it makes meanwhile wait and go out together in the next entry.
    /// Default 1: under load entries grow instead of multiplying, which
    /// kept three replicas' receipt p99 at 41 ms at 100,000 orders/s on one
    /// 2-core machine where unbounded proposals gave 152 ms at 60,000
    /// (`BENCHMARKS.md`, "Replication").
    #[serde(default = "default_entries_in_flight")]
    pub entries_in_flight: usize,
    /// The members a new cluster starts with (this replica among them);
    /// later changes go through `sealbatch cluster`.
    pub members: Vec<ClusterMember>,
}

/// One replica, as the others reach it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterMember {
    /// Its id.
    pub id: u64,
    /// Its replica transport's address.
    pub addr: String,
    /// Its clients' address.
    pub client: String,
    /// Its certificate's SHA-256 fingerprint (64 hex digits, the
    /// `fingerprint` file of its `tls` directory).
    pub fingerprint: String,
}

/// The most `[cluster] election_timeout_ms[1]` may be, ms (a minute).
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 60_000;

/// The most `[cluster] entries_in_flight` may be.
pub const ENTRIES_IN_FLIGHT_MAX: usize = 1024;

/// A replica's timing, as [`ClusterConfig::timing`] derives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterTiming {
    /// The election timeout's range, ms.
    pub election_timeout_ms: [u64; 2],
    /// The heartbeat's period, ms.
    pub heartbeat_ms: u64,
    /// How long an append may take, ms.
    pub append_timeout_ms: u64,
}

/// The default election timeout's range, ms.
pub const ELECTION_TIMEOUT_MS_DEFAULT: [u64; 2] = [100, 200];
/// The default heartbeat period, ms.
pub const HEARTBEAT_MS_DEFAULT: u64 = 30;
/// The default append timeout, ms.
pub const APPEND_TIMEOUT_MS_DEFAULT: u64 = 500;

fn default_entries_in_flight() -> usize {
    1
}

fn default_snapshot_every_entries() -> u64 {
    4096
}

impl ClusterConfig {
    /// The timing this replica runs with: each key set, else derived from
    /// `rtt_ms` if set — heartbeat one round trip, election timeout three
    /// to six, append timeout 24 (`spec/replication.md` §10) — and never
    /// below the defaults.
    #[must_use]
    pub fn timing(&self) -> ClusterTiming {
        let rtt = self.rtt_ms.unwrap_or(0);
        let at_least = |default: u64, rtts: u64| default.max(rtt.saturating_mul(rtts));
        ClusterTiming {
            election_timeout_ms: self.election_timeout_ms.unwrap_or([
                at_least(ELECTION_TIMEOUT_MS_DEFAULT[0], 3),
                at_least(ELECTION_TIMEOUT_MS_DEFAULT[1], 6),
            ]),
            heartbeat_ms: self
                .heartbeat_ms
                .unwrap_or_else(|| at_least(HEARTBEAT_MS_DEFAULT, 1)),
            append_timeout_ms: self
                .append_timeout_ms
                .unwrap_or_else(|| at_least(APPEND_TIMEOUT_MS_DEFAULT, 24)),
        }
    }

    /// The members as the cluster records them.
    ///
    /// # Errors
    ///
    /// [`ConfigFileError::Invalid`] for an id that is 0 or repeated, a
    /// fingerprint that is not 64 hex digits, an address longer than 255
    /// bytes, this replica not among the members, or timing that cannot
    /// elect a leader.
    pub fn nodes(
        &self,
    ) -> Result<std::collections::BTreeMap<u64, crate::replica::ReplicaNode>, ConfigFileError> {
        let invalid = |what: String| ConfigFileError::Invalid(format!("cluster: {what}"));
        let mut nodes = std::collections::BTreeMap::new();
        for member in &self.members {
            if member.id == 0 {
                return Err(invalid("a member's id must be at least 1".into()));
            }
            if member.addr.len() > crate::replica::ADDR_LEN_MAX
                || member.client.len() > crate::replica::ADDR_LEN_MAX
            {
                return Err(invalid(format!(
                    "member {}'s address is too long",
                    member.id
                )));
            }
            let fingerprint = crate::net::parse_fingerprint(&member.fingerprint)
                .map_err(|error| invalid(format!("member {}: {error}", member.id)))?;
            let node = crate::replica::ReplicaNode {
                addr: member.addr.clone(),
                client_addr: member.client.clone(),
                fingerprint,
            };
            if nodes.insert(member.id, node).is_some() {
                return Err(invalid(format!("member id {} appears twice", member.id)));
            }
        }
        if !nodes.contains_key(&self.id) {
            return Err(invalid(format!(
                "this replica's id {} is not a member",
                self.id
            )));
        }
        if nodes.len() > crate::replica::codec::MEMBERS_MAX {
            return Err(invalid("at most 64 members".into()));
        }
        let timing = self.timing();
        let [low, high] = timing.election_timeout_ms;
        if timing.heartbeat_ms == 0
            || low <= timing.heartbeat_ms
            || high <= low
            || high > ELECTION_TIMEOUT_MS_MAX
        {
            return Err(invalid(format!(
                "need 0 < heartbeat_ms < election_timeout_ms[0] < election_timeout_ms[1] \
                 <= {ELECTION_TIMEOUT_MS_MAX}"
            )));
        }
        if self
            .rtt_ms
            .is_some_and(|rtt| rtt == 0 || rtt > ELECTION_TIMEOUT_MS_MAX / 20)
        {
            return Err(invalid(format!(
                "rtt_ms must be 1 to {}",
                ELECTION_TIMEOUT_MS_MAX / 20
            )));
        }
        if timing.append_timeout_ms < timing.heartbeat_ms
            || timing.append_timeout_ms > ELECTION_TIMEOUT_MS_MAX
        {
            return Err(invalid(format!(
                "need heartbeat_ms <= append_timeout_ms <= {ELECTION_TIMEOUT_MS_MAX}"
            )));
        }
        if self.snapshot_every_entries == 0 {
            return Err(invalid("snapshot_every_entries must be at least 1".into()));
        }
        if !(1..=ENTRIES_IN_FLIGHT_MAX).contains(&self.entries_in_flight) {
            return Err(invalid(format!(
                "entries_in_flight must be 1 to {ENTRIES_IN_FLIGHT_MAX}"
            )));
        }
        Ok(nodes)
    }
}

pub use crate::keyper::config::{CommitteeConfig, CommitteeMember};

/// The operator's keys (`spec/wire.md` `OperatorDeposit`, `GetPayouts`,
/// `AcknowledgePayout`): who may sign deposits and payout
/// acknowledgements, and read any account; and the deposits' bounds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorConfig {
    /// The operators' Ed25519 public keys, 64 hex digits each (made by
    /// `sealbatch operator keygen`; the secret halves never on this
    /// machine). Default none; in demo mode the demo operator's key from the
    /// data directory is added.
    pub keys: Vec<String>,
    /// Largest amount one deposit may credit. Default: no bound but the
    /// asset's supply limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deposit_amount_max: Option<u64>,
    /// Operator deposits accepted per second, all operators together (on
    /// average and in a burst); beyond, answered `Error` busy. Default 1000.
    pub deposits_per_second_max: u32,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            keys: Vec::new(),
            deposit_amount_max: None,
            deposits_per_second_max: 1000,
        }
    }
}

impl OperatorConfig {
    /// The keys, decoded.
    ///
    /// # Errors
    ///
    /// [`ConfigFileError::Invalid`] naming a key that is not 64 hex digits
    /// of a valid Ed25519 public key.
    pub fn key_bytes(&self) -> Result<Vec<[u8; 32]>, ConfigFileError> {
        self.keys
            .iter()
            .map(|text| {
                let mut key = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut key)
                    .ok()
                    .filter(|()| crate::envelope::receipt::decode_ed25519_public(&key).is_ok())
                    .map(|()| key)
                    .ok_or_else(|| {
                        ConfigFileError::Invalid(format!(
                            "operator.keys: {text:?} is not an Ed25519 public key (64 hex digits)"
                        ))
                    })
            })
            .collect()
    }
}

/// An asset's id and display name.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Its id.
    pub id: AssetId,
    /// Its name, e.g. `"USD"`.
    pub name: String,
}

/// The node's bounds, each with its default.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections, all peers. Default 1024.
    pub connections_max: usize,
    /// Open connections from one IP address. Default 256.
    pub connections_per_ip_max: usize,
    /// Concurrent bidirectional streams per connection. Default 4.
    pub streams_per_connection_max: u32,
    /// Per-stream receive window, bytes. Default 1 MiB.
    pub stream_receive_window: u32,
    /// Per-connection receive window, bytes. Default 4 MiB.
    pub connection_receive_window: u32,
    /// Per-connection send window, bytes. Default 8 MiB.
    pub send_window: u64,
    /// Idle timeout, ms. Default 30 000.
    pub idle_timeout_ms: u64,
    /// Connection attempts held at once. Default 4096.
    pub incoming_max: usize,
    /// Envelopes one connection may submit to one batch. Default and
    /// maximum 1024 (`wire::SUBSCRIBER_ENVELOPES_MAX`, so a subscriber's own
    /// outcomes always fit one push).
    pub envelopes_per_connection_per_batch_max: u32,
    /// Envelopes per batch. Default 100 000.
    pub envelopes_per_batch_max: usize,
    /// Envelope bytes per batch. Default 256 MiB.
    pub bytes_per_batch_max: usize,
    /// Requests queued for the sequencer core before `Busy`. Default 65 536.
    pub core_queue_max: usize,
    /// Messages queued towards one stream before it is closed as too slow.
    /// Default 65 536.
    pub outbound_queue_max: usize,
    /// Admission control: a submission that waited longer than this in the
    /// core's queue is refused as `Busy` with a retry-after instead of
    /// being journaled. Default 50.
    pub intake_delay_max_ms: u64,
    /// Admission control by time: while the oldest batch sealed and not
    /// yet cleared closed more than this many ms ago, submissions are
    /// refused as `Busy` with a retry-after. Unset (the default): three
    /// batch lengths, plus eight round trips with `[cluster] rtt_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clear_lag_max_ms: Option<u64>,
    /// Admission control by count, a bound on memory: while this many
    /// batches are sealed and not yet cleared, submissions are refused as
    /// `Busy` with a retry-after. Default 64.
    pub sealed_batches_max: usize,
    /// Envelopes all connections from one IP address may submit to one
    /// batch, so that one address cannot fill a batch. Default 16 384.
    pub envelopes_per_ip_per_batch_max: u32,
    /// Requests other than submissions (schedule, account, subscribe,
    /// deposits) one stream may make per second, on average and in a burst;
    /// beyond it they are answered `Error` busy without reaching the core.
    /// Default 100.
    pub requests_per_stream_per_second_max: u32,
    /// New connections one IP address may open per second (on average and
    /// in a burst), refused before any handshake work beyond it. Default 64.
    pub new_connections_per_ip_per_second_max: u32,
    /// Trader withdrawals taken per second, all accounts together (on
    /// average and in a burst); beyond, answered `Error` busy before they
    /// cost a journal write. Default 1000.
    pub withdrawals_per_second_max: u32,
    /// Longest a QUIC handshake may take; a client that starts handshakes
    /// and never finishes them holds a slot this long at most. Default 3000.
    pub handshake_timeout_ms: u64,
    /// Longest a stream may take to complete a frame it started; a client
    /// trickling a frame a byte at a time (slowloris) is closed after it.
    /// Default 10 000.
    pub frame_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connections_max: 1024,
            connections_per_ip_max: 256,
            streams_per_connection_max: 4,
            stream_receive_window: 1 << 20,
            connection_receive_window: 4 << 20,
            send_window: 8 << 20,
            idle_timeout_ms: 30_000,
            incoming_max: 4096,
            envelopes_per_connection_per_batch_max: crate::wire::SUBSCRIBER_ENVELOPES_MAX as u32,
            envelopes_per_batch_max: crate::sequencer::ENVELOPES_PER_BATCH_DEFAULT,
            bytes_per_batch_max: crate::sequencer::BYTES_PER_BATCH_DEFAULT,
            core_queue_max: 1 << 16,
            outbound_queue_max: 1 << 16,
            intake_delay_max_ms: 50,
            clear_lag_max_ms: None,
            sealed_batches_max: crate::sequencer::SEALED_BATCHES_DEFAULT,
            envelopes_per_ip_per_batch_max: 16_384,
            requests_per_stream_per_second_max: 100,
            withdrawals_per_second_max: 1000,
            new_connections_per_ip_per_second_max: 64,
            handshake_timeout_ms: 3_000,
            frame_timeout_ms: 10_000,
        }
    }
}

impl LimitsConfig {
    /// The quinn transport bounds.
    #[must_use]
    pub fn transport(&self) -> ServerTransport {
        ServerTransport {
            streams_per_connection_max: self.streams_per_connection_max,
            stream_receive_window: self.stream_receive_window,
            connection_receive_window: self.connection_receive_window,
            send_window: self.send_window,
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            incoming_max: self.incoming_max,
        }
    }
}

/// An optional address as a TOML string: the address, or `"off"` for none
/// (TOML has no null).
mod address_or_off {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    const OFF: &str = "off";

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(addr) => serializer.collect_str(addr),
            None => serializer.serialize_str(OFF),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == OFF {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// The largest queue bound accepted (bounded channels allocate every slot
/// up front).
pub const QUEUE_MAX: usize = 1 << 20;
/// The largest `connections_max` accepted.
pub const CONNECTIONS_MAX: usize = 1 << 16;

/// The demo deployment's assets: USD (0), BTC (1), ETH (2), SOL (3).
#[must_use]
pub fn demo_assets() -> Vec<AssetConfig> {
    ["USD", "BTC", "ETH", "SOL"]
        .iter()
        .enumerate()
        .map(|(i, name)| AssetConfig {
            id: AssetId(i as u32),
            name: (*name).to_string(),
        })
        .collect()
}

/// The demo deployment's markets: BTC/USD, ETH/USD, SOL/USD.
#[must_use]
pub fn demo_markets() -> Vec<MarketConfig> {
    [(1, 1, 60_000), (2, 2, 3_000), (3, 3, 150)]
        .iter()
        .map(|&(id, base, price)| MarketConfig {
            id: MarketId(id),
            base: AssetId(base),
            quote: AssetId(0),
            tick_size: 1,
            lot_size: 1,
            band_min: Tick(price / 2),
            band_max: Tick(price * 2),
            initial_price: Tick(price),
            fee_bps: 5,
        })
        .collect()
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./sealbatch-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9433))),
            webtransport_listen: None,
            batch_length_ms: 100,
            announce_ahead: crate::sequencer::ANNOUNCE_AHEAD_DEFAULT,
            demo: true,
            checkpoint_every_batches: 600,
            prune_journal: false,
            explorer: true,
            journal_stall_max_ms: 20_000,
            orders_per_account_per_batch_max:
                crate::sequencer::ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT,
            limits: LimitsConfig::default(),
            operator: OperatorConfig::default(),
            assets: demo_assets(),
            markets: demo_markets(),
            committee: None,
            cluster: None,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, with line and column.
        source: toml::de::Error,
    },
    /// An environment override does not parse.
    #[error("environment variable {name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::keyper::config::CommitteeConfigError> for ConfigFileError {
    fn from(error: crate::keyper::config::CommitteeConfigError) -> Self {
        ConfigFileError::Invalid(error.0)
    }
}

impl NodeConfig {
    /// Reads a TOML file (absent fields take their defaults).
    ///
    /// # Errors
    ///
    /// [`ConfigFileError::Read`] or [`ConfigFileError::Parse`].
    pub fn from_file(path: &std::path::Path) -> Result<NodeConfig, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The configuration as a TOML file, which [`NodeConfig::from_file`]
    /// reads back to the same configuration.
    ///
    /// # Errors
    ///
    /// A value TOML cannot hold (none of the configuration's).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mut text = toml::to_string_pretty(self)?;
        // Keys that are unset by default cannot be written as TOML values:
        // each is named in a comment, with what unset means.
        let mut unset = Vec::new();
        if self.limits.clear_lag_max_ms.is_none() {
            unset.push(
                "[limits] clear_lag_max_ms: three batch lengths (plus eight round trips with [cluster] rtt_ms)",
            );
        }
        if self.operator.deposit_amount_max.is_none() {
            unset.push("[operator] deposit_amount_max: no bound but the asset's supply limit");
        }
        if self.metrics_listen.is_none() {
            unset.push("metrics_listen: no metrics and no explorer");
        }
        if self.webtransport_listen.is_none() {
            unset.push("webtransport_listen: no WebTransport for browsers");
        }
        if self.committee.is_none() {
            unset.push("[committee]: the embedded custodian (trusted-operator mode)");
        }
        if self.cluster.is_none() {
            unset.push("[cluster]: a single node");
        }
        if !unset.is_empty() {
            text.push_str("\n# Unset:\n");
            for line in unset {
                text.push_str("#   ");
                text.push_str(line);
                text.push('\n');
            }
        }
        Ok(text)
    }

    /// Applies `SEALBATCH_DATA_DIR`, `SEALBATCH_LISTEN` and
    /// `SEALBATCH_METRICS_LISTEN` (`off` disables metrics).
    ///
    /// # Errors
    ///
    /// [`ConfigFileError::Env`] for an address that does not parse.
    pub fn apply_env(&mut self) -> Result<(), ConfigFileError> {
        if let Ok(dir) = std::env::var("SEALBATCH_DATA_DIR") {
            self.data_dir = PathBuf::from(dir);
        }
        let addr = |name: &'static str, value: String| {
            value
                .parse::<SocketAddr>()
                .map_err(|error| ConfigFileError::Env {
                    name,
                    value: value.clone(),
                    reason: error.to_string(),
                })
        };
        if let Ok(value) = std::env::var("SEALBATCH_LISTEN") {
            self.listen = addr("SEALBATCH_LISTEN", value)?;
        }
        if let Ok(value) = std::env::var("SEALBATCH_METRICS_LISTEN") {
            self.metrics_listen = if value == "off" {
                None
            } else {
                Some(addr("SEALBATCH_METRICS_LISTEN", value)?)
            };
        }
        Ok(())
    }

    /// The sequencer's bounds.
    #[must_use]
    pub fn sequencer_limits(&self) -> Limits {
        Limits {
            announce_ahead: self.announce_ahead,
            envelopes_per_batch_max: self.limits.envelopes_per_batch_max,
            bytes_per_batch_max: self.limits.bytes_per_batch_max,
            pending_receipts_max: self.limits.core_queue_max.max(1) * 4,
            clear_lag_max_ms: self.limits.clear_lag_max_ms.or_else(|| {
                self.cluster.as_ref().and_then(|c| c.rtt_ms).map(|rtt| {
                    crate::sequencer::CLEAR_LAG_BATCHES_DEFAULT
                        .saturating_mul(self.batch_length_ms)
                        .saturating_add(rtt.saturating_mul(8))
                })
            }),
            sealed_batches_max: self.limits.sealed_batches_max,
            ..Limits::default()
        }
    }

    /// Checks values the types cannot.
    ///
    /// # Errors
    ///
    /// [`ConfigFileError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        let invalid = |what: &str| Err(ConfigFileError::Invalid(what.to_string()));
        self.operator.key_bytes()?;
        if let Some(committee) = &self.committee {
            // The keys and bounds; the deployment is bound at start.
            committee.committee(crate::envelope::DeploymentId([0; 32]))?;
            // Keypers take no window that opens further ahead of their
            // clocks (`spec/keyper.md` §13).
            if committee.lead_batches.saturating_mul(self.batch_length_ms)
                > crate::keyper::node::OPEN_AHEAD_MS_MAX
            {
                return invalid(
                    "committee.lead_batches × batch_length_ms must be at most 600000 ms: keypers take no window that opens further ahead",
                );
            }
        }
        if let Some(cluster) = &self.cluster {
            cluster.nodes()?;
        }
        if self.operator.deposits_per_second_max == 0 {
            return invalid("operator.deposits_per_second_max must be at least 1");
        }
        if self.batch_length_ms == 0 {
            return invalid("batch_length_ms must be at least 1");
        }
        if self.journal_stall_max_ms < 100 {
            return invalid("journal_stall_max_ms must be at least 100");
        }
        let l = &self.limits;
        if l.connections_max == 0 || l.connections_per_ip_max == 0 {
            return invalid("limits.connections_max and connections_per_ip_max must be at least 1");
        }
        if l.streams_per_connection_max == 0 {
            return invalid("limits.streams_per_connection_max must be at least 1");
        }
        if !(1..=QUEUE_MAX).contains(&l.core_queue_max)
            || !(1..=QUEUE_MAX).contains(&l.outbound_queue_max)
        {
            return invalid(
                "limits.core_queue_max and outbound_queue_max must be 1 to 1048576 (queues are allocated up front)",
            );
        }
        if l.incoming_max == 0 || l.connections_max > CONNECTIONS_MAX {
            return invalid(
                "limits.incoming_max must be at least 1 and connections_max at most 65536",
            );
        }
        // A window below one client frame would stall every submission.
        let frame = crate::wire::CLIENT_FRAME_LEN_MAX as u64;
        if u64::from(l.stream_receive_window) < frame
            || u64::from(l.connection_receive_window) < u64::from(l.stream_receive_window)
            || l.send_window < frame
        {
            return invalid(
                "limits.stream_receive_window and send_window must hold a client frame (16384 bytes), and connection_receive_window at least the stream window",
            );
        }
        if l.clear_lag_max_ms == Some(0) {
            return invalid("limits.clear_lag_max_ms must be at least 1");
        }
        if l.intake_delay_max_ms == 0 || l.sealed_batches_max == 0 {
            return invalid("limits.intake_delay_max_ms and sealed_batches_max must be at least 1");
        }
        if l.envelopes_per_ip_per_batch_max == 0
            || l.requests_per_stream_per_second_max == 0
            || l.withdrawals_per_second_max == 0
        {
            return invalid(
                "limits.envelopes_per_ip_per_batch_max, requests_per_stream_per_second_max and withdrawals_per_second_max must be at least 1",
            );
        }
        if l.new_connections_per_ip_per_second_max == 0 {
            return invalid("limits.new_connections_per_ip_per_second_max must be at least 1");
        }
        if l.handshake_timeout_ms == 0 || l.frame_timeout_ms == 0 {
            return invalid("limits.handshake_timeout_ms and frame_timeout_ms must be at least 1");
        }
        if l.idle_timeout_ms == 0 {
            return invalid(
                "limits.idle_timeout_ms must be at least 1 (0 would keep idle connections forever)",
            );
        }
        if l.envelopes_per_connection_per_batch_max == 0
            || l.envelopes_per_connection_per_batch_max as usize
                > crate::wire::SUBSCRIBER_ENVELOPES_MAX
        {
            return invalid("limits.envelopes_per_connection_per_batch_max must be 1 to 1024");
        }
        Ok(())
    }
}

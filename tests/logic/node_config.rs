//! Operator configuration that could crash or cripple the node is refused
//! at start with an error naming the field, before anything is allocated.

use sealbatch::node::NodeConfig;
use sealbatch::node::config::LimitsConfig;
use sealbatch::sequencer::{ENVELOPES_PER_BATCH_CLEARABLE, Limits};

fn with_limits(tweak: impl FnOnce(&mut LimitsConfig)) -> NodeConfig {
    let mut config = NodeConfig::default();
    tweak(&mut config.limits);
    config
}

fn refused(config: &NodeConfig, field: &str) {
    let error = config.validate().expect_err("refused");
    assert!(
        error.to_string().contains(field),
        "the error names {field}: {error}"
    );
}

#[test]
fn the_defaults_are_valid() {
    NodeConfig::default().validate().expect("valid");
    NodeConfig::default()
        .sequencer_limits()
        .validate()
        .expect("valid");
}

#[test]
fn queues_too_large_to_allocate_are_refused() {
    // 2^62 once overflowed `core_queue_max * 4` and panicked at start; huge
    // queues were allocated up front (out of memory) or panicked in tokio.
    for huge in [1usize << 62, 1 << 40, (1 << 20) + 1] {
        refused(&with_limits(|l| l.core_queue_max = huge), "core_queue_max");
        refused(
            &with_limits(|l| l.outbound_queue_max = huge),
            "outbound_queue_max",
        );
    }
    refused(&with_limits(|l| l.core_queue_max = 0), "core_queue_max");
    with_limits(|l| l.core_queue_max = 1 << 20)
        .validate()
        .expect("the largest allowed");
}

#[test]
fn transport_limits_that_stall_or_leak_are_refused() {
    refused(&with_limits(|l| l.incoming_max = 0), "incoming_max");
    refused(
        &with_limits(|l| l.stream_receive_window = 0),
        "stream_receive_window",
    );
    refused(
        &with_limits(|l| l.stream_receive_window = 8 << 10),
        "stream_receive_window",
    );
    refused(
        &with_limits(|l| l.connection_receive_window = 1 << 10),
        "connection_receive_window",
    );
    refused(&with_limits(|l| l.send_window = 0), "send_window");
    refused(&with_limits(|l| l.idle_timeout_ms = 0), "idle_timeout_ms");
    refused(
        &with_limits(|l| l.connections_max = 1 << 40),
        "connections_max",
    );
    let config = NodeConfig {
        journal_stall_max_ms: 0,
        ..NodeConfig::default()
    };
    refused(&config, "journal_stall_max_ms");
}

#[test]
fn a_batch_larger_than_clearing_can_take_is_refused() {
    // 2^24 envelopes of 256 orders in one market exceed the engine's 2^27
    // orders per market: clearing would refuse and the batch be voided.
    let limits = |envelopes| Limits {
        envelopes_per_batch_max: envelopes,
        ..Limits::default()
    };
    assert_eq!(ENVELOPES_PER_BATCH_CLEARABLE, 1 << 19);
    limits(ENVELOPES_PER_BATCH_CLEARABLE)
        .validate()
        .expect("fits");
    assert!(
        limits(ENVELOPES_PER_BATCH_CLEARABLE + 1)
            .validate()
            .is_err()
    );
    assert!(limits(1 << 24).validate().is_err());
}

/// The configuration printed by `run --print-config` reads back to itself,
/// metrics turned off included.
#[test]
fn printed_configuration_reads_back_the_same() {
    let mut config = NodeConfig::default();
    for metrics in [config.metrics_listen, None] {
        config.metrics_listen = metrics;
        let text = config.to_toml().expect("prints");
        let again: NodeConfig = toml::from_str(&text).expect("parses");
        assert_eq!(again, config, "{text}");
    }
}

/// The configuration example of `docs/operating.md` (its first `toml`
/// block, "Configuration") shows the defaults: every key it sets has the
/// default value (the defaults live only in `NodeConfig::default`, and this
/// keeps the guide from drifting).
#[test]
fn the_guide_example_shows_the_defaults() {
    let guide = include_str!("../../docs/operating.md");
    let start = guide.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + guide[start..].find("```").expect("its end");
    let example: NodeConfig = toml::from_str(&guide[start..end]).expect("the example parses");
    let defaults = NodeConfig::default();
    assert_eq!(example.limits, defaults.limits);
    assert_eq!(
        NodeConfig {
            assets: defaults.assets.clone(),
            markets: defaults.markets.clone(),
            ..example.clone()
        },
        defaults
    );
    // Its assets and markets are the first of the defaults'.
    assert_eq!(example.assets[..], defaults.assets[..example.assets.len()]);
    assert_eq!(
        example.markets[..],
        defaults.markets[..example.markets.len()]
    );
}

/// A `[committee]` section parses with its defaults, and a bad key, a
/// duplicate member, a threshold above `n` or a window of no batches is a
/// clear configuration error.
#[test]
fn a_committee_section_parses_and_bad_ones_are_refused() {
    let mut members = String::new();
    let mut keys = Vec::new();
    for k in 0..3u8 {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[k + 1; 32])
            .verifying_key()
            .to_bytes();
        let encryption = curve25519_dalek::RistrettoPoint::mul_base(
            &curve25519_dalek::Scalar::from(u64::from(k) + 5),
        )
        .compress()
        .to_bytes();
        keys.push((hex::encode(signing), hex::encode(encryption)));
        members.push_str(&format!(
            "[[committee.members]]\nsigning = \"{}\"\nencryption = \"{}\"\n",
            hex::encode(signing),
            hex::encode(encryption)
        ));
    }
    let config: NodeConfig = toml::from_str(&format!("[committee]\n{members}")).expect("parses");
    config.validate().expect("valid");
    let committee = config.committee.as_ref().expect("a committee");
    let (c, params) = committee
        .committee(sealbatch::envelope::DeploymentId([3; 32]))
        .expect("a committee");
    assert_eq!((c.size(), c.threshold()), (3, 2));
    assert_eq!(params, sealbatch::keyper::GenerationParams::default());
    for bad in [
        format!("[committee]\nthreshold = 4\n{members}"),
        format!("[committee]\nwindow_batches = 0\n{members}"),
        format!("[committee]\nphase_ms = [0, 1, 1, 1]\n{members}"),
        format!(
            "[committee]\n{members}[[committee.members]]\nsigning = \"{}\"\nencryption = \"{}\"\n",
            keys[0].0, keys[0].1
        ),
        format!(
            "[committee]\n[[committee.members]]\nsigning = \"zz\"\nencryption = \"{}\"\n",
            keys[0].1
        ),
        format!(
            "[committee]\n[[committee.members]]\nsigning = \"{}\"\nencryption = \"{}\"\n",
            keys[0].0,
            "00".repeat(32)
        ),
    ] {
        let config: NodeConfig = toml::from_str(&bad).expect("parses");
        let error = config.validate().expect_err("refused").to_string();
        assert!(error.contains("committee"), "{error}");
    }
}

/// A `[cluster]` section parses with openraft's timing by default, also
/// beside a `[committee]`; a member id of 0 or repeated, this replica not a
/// member, a bad fingerprint or timing that cannot elect is a clear
/// configuration error.
#[test]
fn a_cluster_section_parses_and_bad_ones_are_refused() {
    let member = |id: u64, fingerprint: &str| {
        format!(
            "[[cluster.members]]\nid = {id}\naddr = \"127.0.0.1:{}\"\nclient = \"127.0.0.1:{}\"\nfingerprint = \"{fingerprint}\"\n",
            7100 + id,
            7000 + id
        )
    };
    let good = "ab".repeat(32);
    let members: String = (1..=3).map(|id| member(id, &good)).collect();
    let text = format!("[cluster]\nid = 2\nlisten = \"127.0.0.1:7102\"\n{members}");
    let config: NodeConfig = toml::from_str(&text).expect("parses");
    config.validate().expect("valid");
    let cluster = config.cluster.as_ref().expect("a cluster");
    assert!(!cluster.bootstrap);
    let timing = cluster.timing();
    assert_eq!(
        (
            timing.heartbeat_ms,
            timing.append_timeout_ms,
            timing.election_timeout_ms,
            cluster.entries_in_flight
        ),
        (30, 500, [100, 200], 1)
    );
    // No round trip given: the admission bound is the core's (three batch
    // lengths).
    assert_eq!(config.sequencer_limits().clear_lag_max_ms, None);
    // A round trip given derives what is not set (spec/replication.md §10):
    // 80 ms → heartbeat 80, elections 240–480, appends 1920 (24 round
    // trips), admission 3 × 100 + 8 × 80 ms.
    let wan: NodeConfig = toml::from_str(&format!(
        "[cluster]\nid = 2\nlisten = \"127.0.0.1:7102\"\nrtt_ms = 80\n{members}"
    ))
    .expect("parses");
    wan.validate().expect("valid");
    let timing = wan.cluster.as_ref().expect("a cluster").timing();
    assert_eq!(
        (
            timing.heartbeat_ms,
            timing.append_timeout_ms,
            timing.election_timeout_ms
        ),
        (80, 1920, [240, 480])
    );
    assert_eq!(wan.sequencer_limits().clear_lag_max_ms, Some(940));
    // A key set wins over the derived one; a longer round trip lengthens
    // the append timeout.
    let set: NodeConfig = toml::from_str(&format!(
        "[limits]\nclear_lag_max_ms = 5000\n[cluster]\nid = 2\nlisten = \"127.0.0.1:7102\"\nrtt_ms = 200\nheartbeat_ms = 50\n{members}"
    ))
    .expect("parses");
    set.validate().expect("valid");
    let timing = set.cluster.as_ref().expect("a cluster").timing();
    assert_eq!(
        (
            timing.heartbeat_ms,
            timing.append_timeout_ms,
            timing.election_timeout_ms
        ),
        (50, 4800, [600, 1200])
    );
    assert_eq!(set.sequencer_limits().clear_lag_max_ms, Some(5000));
    let nodes = cluster.nodes().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[&2].client_addr, "127.0.0.1:7002");
    assert_eq!(nodes[&3].fingerprint, [0xab; 32]);

    let committee = {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[1; 32])
            .verifying_key()
            .to_bytes();
        let encryption =
            curve25519_dalek::RistrettoPoint::mul_base(&curve25519_dalek::Scalar::from(5u64))
                .compress()
                .to_bytes();
        format!(
            "[committee]\n[[committee.members]]\nsigning = \"{}\"\nencryption = \"{}\"\n",
            hex::encode(signing),
            hex::encode(encryption)
        )
    };
    // Replicas with a keyper committee: the keypers check the replicas'
    // commit certificates (spec/replication.md §12).
    let with_committee: NodeConfig = toml::from_str(&format!(
        "{committee}[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\n{members}"
    ))
    .expect("parses");
    with_committee.validate().expect("valid");
    for bad in [
        format!("[cluster]\nid = 4\nlisten = \"127.0.0.1:7104\"\n{members}"),
        format!(
            "[cluster]\nid = 0\nlisten = \"127.0.0.1:7100\"\n{}",
            member(0, &good)
        ),
        format!(
            "[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\n{members}{}",
            member(1, &good)
        ),
        format!(
            "[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\n{}",
            member(1, "zz")
        ),
        format!("[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nheartbeat_ms = 200\n{members}"),
        format!(
            "[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nelection_timeout_ms = [300, 300]\n{members}"
        ),
        format!(
            "[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nelection_timeout_ms = [100, 60001]\n{members}"
        ),
        format!(
            "[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nelection_timeout_ms = [100, 9223372036854775807]\n{members}"
        ),
        format!(
            "[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nappend_timeout_ms = 29\n{members}"
        ),
        format!("[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nrtt_ms = 0\n{members}"),
        format!("[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nrtt_ms = 3001\n{members}"),
        format!(
            "[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nappend_timeout_ms = 60001\n{members}"
        ),
        format!("[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nentries_in_flight = 0\n{members}"),
        format!(
            "[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\nentries_in_flight = 1025\n{members}"
        ),
    ] {
        let config: NodeConfig = toml::from_str(&bad).expect("parses");
        let error = config.validate().expect_err("refused").to_string();
        assert!(error.contains("cluster"), "{error}");
    }
    let no_lag: NodeConfig = toml::from_str(&format!(
        "[limits]\nclear_lag_max_ms = 0\n[cluster]\nid = 1\nlisten = \"127.0.0.1:7101\"\n{members}"
    ))
    .expect("parses");
    let error = no_lag.validate().expect_err("refused").to_string();
    assert!(error.contains("clear_lag_max_ms"), "{error}");
}

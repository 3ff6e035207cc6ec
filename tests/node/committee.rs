//! A sequencer whose batch keys a committee of five keypers holds (t = 3),
//! each keyper a real `keyper_process` with its own keys and journal, over the
//! real keyper link on loopback QUIC: the committee generates the keys, the
//! sequencer announces only certified ones, every batch opens with the key
//! three keypers released after its close, trading goes on with one and
//! then two keypers stopped, a hello that is not a member's is refused, and
//! `verify` checks every certificate and every published `s_e`.

// A test reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use crate::common;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealbatch::client::{Client, ClientError, KeyCustody, KeyTrust};
use sealbatch::journal::{Journal, JournalConfig};
use sealbatch::keyper_process::{self, KeyperConfig, KeyperEvent};
use sealbatch::node::config::CommitteeConfig;
use sealbatch::node::{self, NodeConfig};
use sealbatch::types::BatchId;
use tokio::sync::{mpsc, oneshot, watch};

const SKEW_MS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_keypers_key_every_batch_and_trading_survives_two_stopped() {
    let root = tempfile::Builder::new()
        .prefix("sealbatch-committee-")
        .tempdir()
        .expect("a temporary directory");
    let committee = common::five_keypers(root.path());
    let data = root.path().join("sequencer");
    let config = NodeConfig {
        data_dir: data.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: None,
        committee: Some(committee.clone()),
        ..NodeConfig::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let (tx, rx) = oneshot::channel();
    let node = tokio::spawn(node::run(config, shutdown, Some(tx)));
    let info = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("starts in time")
        .expect("starts");
    assert!(
        !data.join("custodian.key").exists(),
        "no operator secret under a committee"
    );
    let client = Arc::new(
        Client::connect(info.listen, info.fingerprint)
            .await
            .expect("connects"),
    );
    let schedule = client.schedule().await.expect("a schedule");
    assert!(
        schedule.batch_keys.is_empty(),
        "no key before the committee certifies one"
    );

    // A hello signed by a key that is not a member's is refused: the link
    // is closed with code 10.
    {
        use ed25519_dalek::Signer as _;
        let intruder = sealbatch::envelope::generate_account_key(&mut rand_core::OsRng);
        let mut out = Vec::new();
        sealbatch::wire::encode(
            &sealbatch::wire::keyper::KeyperUp::Hello {
                keyper: intruder.verifying_key().to_bytes(),
                from: 0,
                signature: intruder.sign(b"anything").to_bytes(),
            },
            &mut out,
        )
        .expect("encodes");
        let code = probe_keyper_link(&info, &out).await;
        assert_eq!(code, sealbatch::node::keypers::CLOSE_NOT_A_MEMBER);
    }
    // A first frame announcing 8 MiB is not buffered: the link reads a
    // hello's bytes and closes (code 1).
    {
        let mut frame = (8u32 << 20).to_le_bytes().to_vec();
        frame.push(0x02);
        frame.extend_from_slice(&[0u8; 200]);
        let code = probe_keyper_link(&info, &frame).await;
        assert_eq!(code, sealbatch::node::server::CLOSE_PROTOCOL_ERROR);
    }

    // The five keypers.
    let (events_tx, mut events) = mpsc::unbounded_channel::<(usize, KeyperEvent, u64)>();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for k in 0..5 {
        let config = keyper_config(&root, k, &info, &schedule, &committee);
        let (stop, shutdown) = watch::channel(false);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forward = events_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let _ = forward.send((k, event, node::now_ms()));
            }
        });
        tasks.push(tokio::spawn(keyper_process::run(
            config,
            shutdown,
            Some(tx),
        )));
        stops.push(stop);
    }
    // Keys come once the first window is certified.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let schedule = client.schedule().await.expect("a schedule");
        if !schedule.batch_keys.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no certified key in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client kept only certified keys, and knows which committee
    // certified them; pinned to it, a client gets them, pinned to another
    // committee it refuses the sequencer.
    let Some(KeyCustody::Committee {
        id,
        threshold: 3,
        keypers: 5,
    }) = client.custody()
    else {
        panic!("{:?}", client.custody());
    };
    let pinned = Client::connect(info.listen, info.fingerprint)
        .await
        .expect("connects");
    pinned.set_trust(KeyTrust::Committee(id));
    assert!(
        !pinned
            .schedule()
            .await
            .expect("certified")
            .batch_keys
            .is_empty()
    );
    pinned.set_trust(KeyTrust::Committee([7; 32]));
    assert!(matches!(
        pinned.schedule().await,
        Err(ClientError::Uncertified(_))
    ));
    pinned.close();
    // Trading with five, then four, then three keypers.
    let mut receipts = Vec::new();
    for phase in 0..3 {
        if phase > 0 {
            let _ = stops[phase - 1].send(true);
        }
        let until = Instant::now() + Duration::from_secs(3);
        receipts.extend(common::load(Arc::clone(&client), 3, until).await.0);
    }
    assert!(receipts.len() > 50, "{} receipts", receipts.len());
    // The last batches clear.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.close();
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(20), node)
        .await
        .expect("stops in time")
        .expect("joins")
        .expect("stops cleanly");
    for stop in &stops {
        let _ = stop.send(true);
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a keyper stops in time")
            .expect("joins")
            .expect("stops cleanly");
    }

    // Who released what, and when: never before close + skew.
    drop(events_tx);
    let mut released: BTreeMap<BatchId, BTreeSet<usize>> = BTreeMap::new();
    let mut early = 0;
    while let Some((k, event, at)) = events.recv().await {
        if let KeyperEvent::Released { e, .. } = event {
            released.entry(e).or_default().insert(k);
            let close = schedule.genesis_ms + (e.get() + 1) * schedule.batch_length_ms;
            if at < close + SKEW_MS {
                early += 1;
            }
        }
    }
    assert_eq!(early, 0, "shares released before close + skew");
    assert!(
        released.values().all(|k| k.len() >= 3),
        "every key from at least three keypers: {released:?}"
    );
    assert!(
        released
            .iter()
            .any(|(_, k)| k.len() == 3 && !k.contains(&0) && !k.contains(&1)),
        "keys released with keypers 1 and 2 stopped: {released:?}"
    );

    // Every acknowledged envelope is in a published batch; verify checks
    // every certificate and every batch's secret against its certified key.
    let (_, recovery) =
        Journal::open_dir(data.join("journal"), JournalConfig::default()).expect("the journal");
    let report = sealbatch::sequencer::verify_journal(
        recovery
            .records
            .into_iter()
            .map(|r| (r.lsn, r.kind, r.payload)),
    )
    .expect("verify reads it");
    assert!(report.all_ok(), "{report:?}");
    common::all_published(&data.join("journal"), &receipts);
    let committee = report.committee.expect("a committee");
    assert!(committee.windows >= 1);
    assert_eq!(committee.keys_checked, report.batches.len());
    assert!(
        report.batches.len() >= 20,
        "{} batches",
        report.batches.len()
    );
}

fn keyper_config(
    root: &tempfile::TempDir,
    k: usize,
    info: &node::NodeInfo,
    schedule: &sealbatch::wire::Schedule,
    committee: &CommitteeConfig,
) -> KeyperConfig {
    KeyperConfig {
        data_dir: root.path().join(format!("keyper-{k}")),
        sequencer: Some(info.listen),
        fingerprint: Some(hex::encode(info.fingerprint)),
        replicas: Vec::new(),
        sequencer_key: hex::encode(info.sequencer_key),
        genesis_ms: schedule.genesis_ms,
        batch_length_ms: schedule.batch_length_ms,
        skew_ms: SKEW_MS,
        metrics_listen: None,
        committee: committee.clone(),
    }
}

/// Opens a keyper link, sends `bytes` on its stream, and returns the
/// application code the sequencer closes the connection with.
async fn probe_keyper_link(info: &node::NodeInfo, bytes: &[u8]) -> u32 {
    let endpoint =
        sealbatch::net::client_endpoint(info.listen, info.fingerprint).expect("an endpoint");
    let connection = endpoint
        .connect_with(
            sealbatch::net::client_config_for(
                info.fingerprint,
                sealbatch::wire::keyper::KEYPER_ALPN,
            )
            .expect("config"),
            info.listen,
            "sealbatch",
        )
        .expect("connects")
        .await
        .expect("handshake");
    let (mut send, _recv) = connection.open_bi().await.expect("a stream");
    send.write_all(bytes).await.expect("sent");
    let closed = tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .expect("closed in time");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            u32::try_from(c.error_code.into_inner()).expect("a small code")
        }
        other => panic!("not closed by the sequencer: {other:?}"),
    }
}

/// `keyper run` uses the keys `keyper init` made and nothing else: with
/// its key files gone it refuses to start (and creates none), and with a
/// decryption key that is not its committee entry's (a lost file made
/// again) it refuses too — both with the configuration's exit status, 78.
/// A journal of another deployment (the sequencer relaunched with a new
/// batch clock, the keyper directory kept) is refused likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyper_runs_only_with_its_own_keys_and_its_deployments_journal() {
    let root = tempfile::Builder::new()
        .prefix("sealbatch-keyper-keys-")
        .tempdir()
        .expect("a temporary directory");
    let committee = common::five_keypers(root.path());
    let config = |genesis_ms: u64| KeyperConfig {
        data_dir: root.path().join("keyper-0"),
        sequencer: Some(SocketAddr::from(([127, 0, 0, 1], 9))),
        fingerprint: Some(hex::encode([7u8; 32])),
        replicas: Vec::new(),
        sequencer_key: hex::encode(
            sealbatch::envelope::SequencerKey::from_seed(&[3; 32])
                .public_key()
                .to_bytes(),
        ),
        genesis_ms,
        batch_length_ms: 100,
        skew_ms: SKEW_MS,
        metrics_listen: None,
        committee: committee.clone(),
    };
    let run = |config: KeyperConfig| async move {
        let (_stop, shutdown) = watch::channel(false);
        tokio::time::timeout(
            Duration::from_secs(1),
            keyper_process::run(config, shutdown, None),
        )
        .await
    };
    let decryption = root
        .path()
        .join("keyper-0")
        .join(keyper_process::DECRYPTION_KEY_FILE);
    let saved = std::fs::read(&decryption).expect("the key");
    // Its own keys: it starts (and then waits for a sequencer that is not
    // there; the timeout ends it), writing its journal's committee record.
    assert!(run(config(1_000)).await.is_err(), "it runs until stopped");
    // The key file gone: refused, and not made again.
    std::fs::remove_file(&decryption).expect("removed");
    let error = run(config(1_000))
        .await
        .expect("returns")
        .expect_err("refused");
    assert_eq!(
        error.exit_code(),
        keyper_process::EXIT_KEYPER_CONFIG,
        "{error}"
    );
    assert!(!decryption.exists(), "run creates no key");
    // Another decryption key in its place: not the committee's entry.
    let other = tempfile::tempdir().expect("a directory");
    keyper_process::init(other.path()).expect("keys");
    std::fs::copy(
        other.path().join(keyper_process::DECRYPTION_KEY_FILE),
        &decryption,
    )
    .expect("copied");
    let error = run(config(1_000))
        .await
        .expect("returns")
        .expect_err("refused");
    assert_eq!(error.exit_code(), keyper_process::EXIT_KEYPER_CONFIG);
    assert!(error.to_string().contains("decryption key"), "{error}");
    // Its own key back, and a relaunched sequencer (a new batch clock):
    // the journal is the first deployment's.
    std::fs::remove_file(&decryption).expect("removed");
    std::fs::write(&decryption, &saved).expect("restored");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&decryption, std::fs::Permissions::from_mode(0o600))
            .expect("private");
    }
    let error = run(config(2_000))
        .await
        .expect("returns")
        .expect_err("refused");
    assert_eq!(error.exit_code(), keyper_process::EXIT_KEYPER_CONFIG);
    assert!(
        error.to_string().contains("journal belongs to committee"),
        "{error}"
    );
}

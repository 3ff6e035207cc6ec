//! The sequencer process over real loopback QUIC: good clients are served,
//! misbehaving ones are closed with an application error code without
//! hurting anyone else, and bounds hold.

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use sealbatch::signed::Statement as _;
use sealbatch::types::BatchId;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use sealbatch::cli::connect::target_batch;
use sealbatch::client::{Client, ClientError};
use sealbatch::envelope::{BatchPublicKey, seal_bundle};
use sealbatch::node::{self, NodeConfig, NodeInfo};
use sealbatch::order::OrderSpec;
use sealbatch::types::{MarketId, Side, Tick};
use sealbatch::wire::{ClientMessage, ReasonCode};
use tokio::sync::{oneshot, watch};

use crate::common;
struct TestNode {
    info: NodeInfo,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), node::NodeError>>,
    /// The data directory, removed when dropped.
    _dir: tempfile::TempDir,
}

async fn start(tag: &str, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let dir = tempfile::Builder::new()
        .prefix(&format!("sealbatch-node-test-{tag}-"))
        .tempdir()
        .expect("a temporary directory");
    start_in(dir, tweak).await
}

/// A node on the data directory `dir` (a restart, if it holds one).
async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let mut config = NodeConfig {
        data_dir: dir.path().to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: None,
        ..NodeConfig::default()
    };
    tweak(&mut config);
    let (stop, shutdown) = watch::channel(false);
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(node::run(config, shutdown, Some(tx)));
    let info = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("starts in time")
        .expect("starts");
    TestNode {
        info,
        stop,
        task,
        _dir: dir,
    }
}

impl TestNode {
    async fn stop(self) {
        drop(self.stop_keeping_data().await);
    }

    /// Stops gracefully and hands back the data directory, for a restart.
    async fn stop_keeping_data(self) -> tempfile::TempDir {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops in time")
            .expect("joins")
            .expect("stops cleanly");
        self._dir
    }
}

async fn submit_one(client: &Client) -> Result<sealbatch::envelope::Receipt, ClientError> {
    let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
    let orders = [OrderSpec {
        market: MarketId(1),
        side: Side::Buy,
        limit: Some(Tick(60_000)),
        qty: 1,
        client_order_id: 1,
    }];
    // As a real client does: if the VM stalls long enough for the batch to
    // close on the way, the rejection says so and the next batch is tried;
    // a busy sequencer (a loaded test machine) says when to try again.
    let mut attempts = 0;
    loop {
        let schedule = client.schedule().await?;
        let e = target_batch(&schedule, sealbatch::node::now_ms(), 30);
        let (_, key) = schedule
            .batch_keys
            .iter()
            .find(|(b, _)| *b == e)
            .expect("key announced");
        let key = BatchPublicKey::from_bytes(key).expect("valid key");
        let envelope = seal_bundle(
            &mut OsRng,
            &trader,
            &schedule.deployment(),
            e,
            &key,
            1,
            &orders,
        )
        .expect("seals");
        match client.submit(envelope.into_bytes()).await {
            Err(ClientError::Rejected {
                code: ReasonCode::BatchClosed,
                ..
            }) if attempts < 20 => attempts += 1,
            Err(ClientError::Rejected {
                code: ReasonCode::Busy,
                retry_after,
                ..
            }) if attempts < 20 => {
                attempts += 1;
                tokio::time::sleep(retry_after).await;
            }
            other => return other,
        }
    }
}

/// The announced public key of batch `e` in `schedule`.
fn batch_key(schedule: &sealbatch::wire::Schedule, e: BatchId) -> BatchPublicKey {
    schedule
        .batch_keys
        .iter()
        .find(|(b, _)| *b == e)
        .and_then(|(_, k)| BatchPublicKey::from_bytes(k).ok())
        .expect("announced")
}

/// One order in market 1, sealed by `trader` to `key` for batch `e`.
fn sealed_order(
    trader: &ed25519_dalek::SigningKey,
    deployment: &sealbatch::envelope::DeploymentId,
    e: BatchId,
    key: &BatchPublicKey,
    nonce: u64,
    (side, limit, qty): (Side, u64, u64),
) -> Vec<u8> {
    let orders = [OrderSpec {
        market: MarketId(1),
        side,
        limit: Some(Tick(limit)),
        qty,
        client_order_id: nonce,
    }];
    seal_bundle(&mut OsRng, trader, deployment, e, key, nonce, &orders)
        .expect("seals")
        .into_bytes()
}

/// A raw QUIC connection with the right pin, to misbehave on.
async fn raw(node: &TestNode) -> quinn::Connection {
    let endpoint =
        sealbatch::net::client_endpoint(node.info.listen, node.info.fingerprint).expect("endpoint");
    endpoint
        .connect(node.info.listen, "localhost")
        .expect("connect")
        .await
        .expect("handshake")
}

async fn closed_with(connection: &quinn::Connection) -> Option<u64> {
    match tokio::time::timeout(Duration::from_secs(5), connection.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => Some(close.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_are_closed_and_others_keep_being_served() {
    let node = start("misbehave", |_| {}).await;
    let good = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    submit_one(&good).await.expect("first receipt");

    // Garbage: an unknown message type.
    let garbage = raw(&node).await;
    let (mut send, _recv) = garbage.open_bi().await.expect("stream");
    send.write_all(&[5, 0, 0, 0, 0x7f, 1, 2, 3, 4])
        .await
        .expect("write");
    assert_eq!(closed_with(&garbage).await, Some(1), "protocol error code");

    // A frame over the client limit.
    let oversized = raw(&node).await;
    let (mut send, _recv) = oversized.open_bi().await.expect("stream");
    send.write_all(&(1u32 << 20).to_le_bytes())
        .await
        .expect("write");
    // The server may close the connection before this second write.
    let _ = send.write_all(&[0x02; 64]).await;
    assert_eq!(
        closed_with(&oversized).await,
        Some(2),
        "frame too large code"
    );

    // Too many streams: the fifth cannot open while four are held.
    let greedy = raw(&node).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let (mut send, recv) = greedy.open_bi().await.expect("stream");
        // A stream exists for the server once it carries data.
        send.write_all(&[]).await.expect("write");
        held.push((send, recv));
    }
    let fifth = tokio::time::timeout(Duration::from_millis(500), greedy.open_bi()).await;
    assert!(fifth.is_err(), "a fifth concurrent stream is held back");

    // A wrong pin never connects.
    let wrong = Client::connect(node.info.listen, [7; 32]).await;
    assert!(wrong.is_err(), "a wrong fingerprint is refused");

    // The good client is unaffected.
    submit_one(&good).await.expect("second receipt");
    // Bad input from a good client gets a typed rejection, not a closed connection.
    match good.submit(vec![1, 2, 3]).await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ReasonCode::Malformed),
        other => panic!("expected a rejection, got {other:?}"),
    }
    submit_one(&good).await.expect("third receipt");
    good.close();
    drop(held);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_time_out_and_connection_floods_are_refused() {
    let node = start("bounds", |c| {
        c.limits.idle_timeout_ms = 400;
        c.limits.connections_per_ip_max = 3;
    })
    .await;
    // An idle half-open connection is closed by the idle timeout.
    let idle = raw(&node).await;
    let reason = tokio::time::timeout(Duration::from_secs(5), idle.closed())
        .await
        .expect("closed in time");
    assert!(
        matches!(reason, quinn::ConnectionError::TimedOut),
        "{reason:?}"
    );
    // The server's own idle timer fires about now too; give its connection
    // task a moment to give the address's slot back.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A flood: only three connections from one address.
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(
            Client::connect(node.info.listen, node.info.fingerprint)
                .await
                .expect("within the limit"),
        );
    }
    let fourth = Client::connect(node.info.listen, node.info.fingerprint).await;
    assert!(
        fourth.is_err(),
        "the fourth connection from one address is refused"
    );
    // Those within the limit are served.
    submit_one(&kept[0]).await.expect("receipt");
    drop(kept);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_deposits_are_demo_only_and_balances_private() {
    let node = start("operator", |c| c.demo = false).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    match client.deposit([1; 32], 0, 5).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ReasonCode::OperatorOnly),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
    let own = trader.verifying_key().to_bytes();
    let state = client.account(&trader, own).await.expect("its own");
    assert!(state.balances.is_empty());
    assert_eq!(state.next_withdrawal, 1);
    match client.account(&trader, [1; 32]).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ReasonCode::Unauthorized),
        other => panic!("another account's balances are private, got {other:?}"),
    }
    client.close();
    node.stop().await;
}

/// Trader withdrawals and operator payouts (`spec/wire.md` `Withdraw`,
/// `GetPayouts`, `AcknowledgePayout`) outside demo mode: a withdrawal is
/// taken once in its account's sequence and never past the balance; a
/// replayed, forged or overdrawing request is refused with its code and
/// changes nothing; balances and pending withdrawals are readable only by
/// those allowed, on the connection a query was signed for; a payout is
/// acknowledged once, idempotently, across a restart; `verify` re-derives
/// it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_withdrawals_are_taken_once_and_paid_out_once() {
    use sealbatch::market::{AccountId, AssetId};
    use sealbatch::signed::{ChannelBinding, Query, WithdrawalStatement};

    let operator = sealbatch::envelope::generate_account_key(&mut OsRng);
    let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
    let stranger = sealbatch::envelope::generate_account_key(&mut OsRng);
    let operator_hex = hex::encode(operator.verifying_key().to_bytes());
    let configure = |c: &mut NodeConfig| {
        c.demo = false;
        c.operator.keys = vec![operator_hex.clone()];
        c.checkpoint_every_batches = 1;
    };
    let node = start("withdraw", configure).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let account = trader.verifying_key().to_bytes();
    let refused = |result: Result<u64, ClientError>, want: ReasonCode| match result {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, want),
        other => panic!("{want:?} expected, got {other:?}"),
    };
    client
        .operator_deposit(&operator, account, 1, 100, b"tx:in")
        .await
        .expect("credited");
    let id = client
        .withdraw(&trader, 1, 30, b"bc1qdest", None)
        .await
        .expect("taken");
    assert_eq!(id, 1);
    let sequencer = sealbatch::envelope::SequencerPublicKey::from_bytes(
        &client.schedule().await.expect("schedule").sequencer_key,
    )
    .expect("key");
    let signed = |amount: u64, sequence: u64| {
        WithdrawalStatement {
            account: AccountId(account),
            asset: AssetId(1),
            amount,
            sequence,
            destination: b"bc1qdest".to_vec(),
        }
        .sign(&trader, &sequencer)
        .expect("signs")
    };
    // The first request again, exactly as captured: refused.
    refused(
        client.send_withdrawal(signed(30, 1)).await,
        ReasonCode::Replayed,
    );
    refused(
        client.send_withdrawal(signed(71, 2)).await,
        ReasonCode::InvalidRequest,
    );
    let mut forged = signed(10, 2);
    forged.statement.amount = 70;
    refused(
        client.send_withdrawal(forged).await,
        ReasonCode::Unauthorized,
    );
    let state = client.account(&trader, account).await.expect("own");
    assert_eq!(state.balances, vec![(1, 70)], "refusals change nothing");
    assert_eq!(state.next_withdrawal, 2);
    assert_eq!(
        client
            .account(&operator, account)
            .await
            .expect("operator")
            .balances,
        vec![(1, 70)]
    );
    match client.account(&stranger, account).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ReasonCode::Unauthorized),
        other => panic!("private, got {other:?}"),
    }
    // A query signed for another connection does not verify on this one.
    let elsewhere =
        Query::Account(AccountId(account)).sign(&trader, &sequencer, &ChannelBinding([7; 32]));
    match client
        .request(|request_id| ClientMessage::GetAccount {
            request_id,
            account,
            requester: elsewhere.requester,
            signature: elsewhere.signature,
        })
        .await
        .expect("answered")
    {
        sealbatch::wire::ServerMessage::Error { code, .. } => {
            assert_eq!(code, ReasonCode::Unauthorized);
        }
        other => panic!("refusal expected, got {other:?}"),
    }

    // The operator's payout process: only an operator sees the pending
    // withdrawal, with the trader's signature; it acknowledges once.
    match client.payouts(&trader, 0).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ReasonCode::Unauthorized),
        other => panic!("operator only, got {other:?}"),
    }
    let (pending, more) = client.payouts(&operator, 0).await.expect("payouts");
    assert!(!more);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, 1);
    assert_eq!(pending[0].signed.statement.amount, 30);
    let ack = |reference: &'static [u8]| client.acknowledge_payout(&operator, 1, reference);
    ack(b"chain:0xaa").await.expect("paid");
    ack(b"chain:0xaa").await.expect("acknowledged again");
    match ack(b"chain:0xbb").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ReasonCode::InvalidRequest),
        other => panic!("paid otherwise, got {other:?}"),
    }
    match client.acknowledge_payout(&stranger, 1, b"chain:0xaa").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ReasonCode::Unauthorized),
        other => panic!("operator only, got {other:?}"),
    }
    assert!(
        client
            .payouts(&operator, 0)
            .await
            .expect("payouts")
            .0
            .is_empty()
    );
    let second = client
        .withdraw(&trader, 1, 20, b"bc1qdest", None)
        .await
        .expect("taken");
    assert_eq!(second, 2);

    // Past a checkpoint and a restart: nothing taken or paid twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.close();
    let dir = node.stop_keeping_data().await;
    let node = start_in(dir, configure).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    refused(
        client.send_withdrawal(signed(30, 1)).await,
        ReasonCode::Replayed,
    );
    client
        .acknowledge_payout(&operator, 1, b"chain:0xaa")
        .await
        .expect("acknowledged again after the restart");
    let (pending, _) = client.payouts(&operator, 0).await.expect("payouts");
    assert_eq!(pending.iter().map(|w| w.id).collect::<Vec<_>>(), vec![2]);
    let state = client.account(&trader, account).await.expect("own");
    assert_eq!(state.balances, vec![(1, 50)]);
    assert_eq!(state.next_withdrawal, 3);
    client.close();
    let dir = node.stop_keeping_data().await;
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .arg("verify")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("runs verify");
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// The README's main command, shortened: a sequencer with demo traders, then
/// `verify` over its journal.
#[test]
fn the_demo_runs_clears_and_verifies() {
    let work = tempfile::Builder::new()
        .prefix("sealbatch-demo-")
        .tempdir()
        .expect("a temporary directory");
    let data = work.path().join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args([
            "demo",
            "--duration",
            "1.5",
            "--rate",
            "4000",
            "--traders",
            "2",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("BTC/USD"), "{stdout}");
    assert!(stdout.contains(" 0 mismatched, 0 pending"), "{stdout}");
    // Five keypers hold the keys; one stops halfway; verify checks them.
    assert!(stdout.contains("key from keypers"), "{stdout}");
    assert!(
        stdout.contains("stopped: the others release every key"),
        "{stdout}"
    );
    assert!(stdout.contains("keyper committee: "), "{stdout}");
    let receipts = stdout
        .lines()
        .find(|l| l.starts_with("receipts included"))
        .expect("a report");
    let numbers: Vec<u64> = receipts
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        numbers.len() >= 2 && numbers[0] == numbers[1] && numbers[0] > 0,
        "{receipts}"
    );

    // `plot` draws the busiest batch's curves from the journal it left:
    // a panel per market that had orders, each crossed market's price and
    // volume marked as its result published them.
    let (e, _) = common::published(&data.join("journal"))
        .into_iter()
        .max_by_key(|(_, envelopes)| envelopes.len())
        .expect("a cleared batch");
    let plot = std::process::Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args([
            "plot",
            "--batch",
            &e.to_string(),
            "--out",
            "-",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("the binary runs");
    let svg = String::from_utf8_lossy(&plot.stdout);
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );
    assert!(svg.contains("class=\"market\" data-market=\"1\""), "{svg}");
    assert!(svg.contains("class=\"clearing\" data-price=\""), "{svg}");
}

/// A client asking for the schedule as fast as it can is answered from the
/// schedule signed once per batch (each answer with its own request id,
/// each verifying), then told busy beyond its per-stream budget, and an
/// honest client beside it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_floods_are_answered_from_the_signed_cache_and_bounded() {
    let node = start("schedule-flood", |c| {
        c.limits.requests_per_stream_per_second_max = 50;
    })
    .await;
    let flooder = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let honest = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let first = flooder.schedule().await.expect("schedule");
    let (mut answered, mut busy) = (0, 0);
    for _ in 0..200 {
        match flooder.schedule().await {
            Ok(schedule) => {
                // Same signed content, whatever the request id.
                assert!(schedule.open_batch >= first.open_batch);
                answered += 1;
            }
            Err(ClientError::Refused {
                code: ReasonCode::Busy,
                ..
            }) => busy += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(
        (40..=120).contains(&answered) && busy > 50,
        "answered {answered}, busy {busy}"
    );
    submit_one(&honest)
        .await
        .expect("the honest client is served");
    node.stop().await;
}

/// One address cannot fill a batch: past `envelopes_per_ip_per_batch_max`
/// its envelopes to that batch are refused (code 8), whatever connection
/// they come on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_a_batch() {
    let node = start("ip-quota", |c| {
        c.limits.envelopes_per_ip_per_batch_max = 3;
        c.batch_length_ms = 2_000;
    })
    .await;
    let a = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let b = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let schedule = a.schedule().await.expect("schedule");
    b.schedule().await.expect("schedule");
    let e = target_batch(&schedule, sealbatch::node::now_ms(), 1_000);
    let key = batch_key(&schedule, e);
    let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
    let mut outcomes = Vec::new();
    for nonce in 0..5u64 {
        let orders = [OrderSpec {
            market: MarketId(1),
            side: Side::Buy,
            limit: Some(Tick(60_000)),
            qty: 1,
            client_order_id: nonce,
        }];
        let envelope = seal_bundle(
            &mut OsRng,
            &trader,
            &schedule.deployment(),
            e,
            &key,
            nonce,
            &orders,
        )
        .expect("seals");
        let client = if nonce % 2 == 0 { &a } else { &b };
        outcomes.push(client.submit(envelope.into_bytes()).await);
    }
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        3,
        "{outcomes:?}"
    );
    for refused in &outcomes[3..] {
        assert!(
            matches!(
                refused,
                Err(ClientError::Rejected {
                    code: ReasonCode::ConnectionQuota,
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    node.stop().await;
}

/// A stream that trickles a frame one byte at a time (slowloris) is closed
/// with the protocol error code once the frame is late, while a stream that
/// sends whole frames slowly, with pauses between them, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_trickled_a_byte_at_a_time_is_cut_off() {
    let node = start("slowloris", |c| {
        c.limits.frame_timeout_ms = 400;
    })
    .await;
    let slow = raw(&node).await;
    let (mut send, _recv) = slow.open_bi().await.expect("stream");
    let mut frame = Vec::new();
    sealbatch::wire::encode(&ClientMessage::GetSchedule { request_id: 7 }, &mut frame)
        .expect("encodes");
    let trickle = tokio::spawn(async move {
        for byte in frame.iter().cycle().take(40) {
            if send.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(closed_with(&slow).await, Some(1), "protocol error code");
    trickle.abort();

    // Whole frames with pauses longer than the frame timeout are fine.
    let patient = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    for _ in 0..3 {
        patient.schedule().await.expect("served");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    node.stop().await;
}

/// Handshakes that are started and never finished hold a slot only until
/// the handshake timeout; past a few dozen at once, new ones must first
/// prove their address (Retry), and honest clients still connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshakes_cannot_lock_out_clients() {
    let node = start("handshakes", |c| {
        c.limits.handshake_timeout_ms = 500;
    })
    .await;
    let report = sealbatch::cli::hostile::run(
        sealbatch::cli::hostile::HostileKind::HandshakeFlood,
        2_000,
        node.info.listen,
        node.info.fingerprint,
        Duration::from_millis(800),
    )
    .await
    .expect("the flood runs");
    assert!(report.attempts > 500, "{report:?}");
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("an honest client connects during the aftermath");
    submit_one(&client).await.expect("and is served");
    node.stop().await;
}

/// New connections from one address are paced before any handshake work:
/// past the burst they are refused, and the address gets its budget back as
/// time passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_from_one_address_are_paced() {
    let node = start("connect-rate", |c| {
        c.limits.new_connections_per_ip_per_second_max = 10;
    })
    .await;
    let endpoint =
        sealbatch::net::client_endpoint(node.info.listen, node.info.fingerprint).expect("endpoint");
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..40 {
        match endpoint
            .connect(node.info.listen, "localhost")
            .expect("connect")
            .await
        {
            Ok(connection) => {
                accepted += 1;
                connection.close(0u32.into(), b"done");
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        (10..=14).contains(&accepted) && refused >= 26,
        "accepted {accepted}, refused {refused}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("the budget comes back");
    submit_one(&client).await.expect("served");
    node.stop().await;
}

/// Every refusal of a submission names the batch open at the time
/// (`Rejected.next_open`, `spec/wire.md` §5), whatever its code; and an
/// envelope the batch already holds is receipted again, the same statement,
/// even past its connection's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_names_the_open_batch_and_duplicates_are_receipted_again() {
    let node = start("next-open", |c| {
        c.batch_length_ms = 1_000;
        c.limits.envelopes_per_batch_max = 3;
        c.limits.envelopes_per_connection_per_batch_max = 2;
    })
    .await;
    let clients = [(); 3].map(|()| Client::connect(node.info.listen, node.info.fingerprint));
    let [a, b, c] = clients;
    let (a, b, c) = (
        a.await.expect("a"),
        b.await.expect("b"),
        c.await.expect("c"),
    );
    // Past batch 0, so that the open batch is not 0.
    let deadline = Instant::now() + Duration::from_secs(10);
    let schedule = loop {
        let schedule = a.schedule().await.expect("schedule");
        if schedule.open_batch >= 1 {
            break schedule;
        }
        assert!(Instant::now() < deadline, "batch 0 never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    b.schedule().await.expect("schedule");
    c.schedule().await.expect("schedule");
    let open = schedule.open_batch;
    assert!(open >= 1);
    // Seal to the next batch, so that nothing closes under the test.
    let e = open + 1;
    let key = batch_key(&schedule, e);
    let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
    let seal = |e: BatchId, nonce: u64| {
        sealed_order(
            &trader,
            &schedule.deployment(),
            e,
            &key,
            nonce,
            (Side::Buy, 60_000, 1),
        )
    };
    let refused = |result: Result<sealbatch::envelope::Receipt, ClientError>, want: ReasonCode| {
        match result {
            Err(ClientError::Rejected {
                code, next_open, ..
            }) => {
                assert_eq!(code, want);
                assert!(
                    (open..=open + 1).contains(&next_open),
                    "{want:?}: next_open {next_open}, open {open}"
                );
            }
            other => panic!("{want:?} expected, got {other:?}"),
        }
    };

    refused(a.submit(vec![0; 20]).await, ReasonCode::Malformed);
    refused(a.submit(seal(open - 1, 1)).await, ReasonCode::BatchClosed);
    refused(
        a.submit(seal(open + 100, 2)).await,
        ReasonCode::NotAnnounced,
    );
    let first = seal(e, 3);
    let receipt = a.submit(first.clone()).await.expect("accepted");
    a.submit(seal(e, 4)).await.expect("accepted");
    refused(a.submit(seal(e, 7)).await, ReasonCode::ConnectionQuota);
    // The same envelope again, past the connection's quota: the same receipt.
    let again = a.submit(first.clone()).await.expect("receipted again");
    assert_eq!(again, receipt);
    b.submit(seal(e, 5)).await.expect("accepted");
    refused(c.submit(seal(e, 6)).await, ReasonCode::BatchFull);
    // A full batch still receipts what it holds.
    assert_eq!(c.submit(first).await.expect("receipted again"), receipt);
    node.stop().await;
}

/// A subscriber's own envelopes come in ascending commitment order, in
/// `BatchSealed` (proofs) and in `BatchCleared` (outcomes), whatever order
/// they were submitted in (`spec/wire.md` §5), each with the status and
/// detail `spec/sequencer.md` defines; and an envelope another subscriber
/// submits again (a duplicate, receipted again) is that subscriber's too
/// (`spec/wire.md` §2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_envelopes_are_pushed_in_commitment_order() {
    let node = start("own-order", |c| c.batch_length_ms = 500).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let mut events = client.subscribe().await.expect("subscribes");
    let schedule = client.schedule().await.expect("schedule");
    let e = schedule.open_batch + 1;
    let key = batch_key(&schedule, e);
    let wrong_key = batch_key(&schedule, e + 1);
    // An account without funds sells: unfunded, detail the base asset (1).
    // The last envelope is sealed to another batch's key: it cannot be
    // decrypted (status 7, detail 0).
    let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
    let mut submitted = Vec::new();
    let mut undecryptable = None;
    let mut first = None;
    for nonce in 0..8u64 {
        let sealed_to = if nonce == 7 { &wrong_key } else { &key };
        let envelope = sealed_order(
            &trader,
            &schedule.deployment(),
            e,
            sealed_to,
            nonce,
            (Side::Sell, 60_000, 1),
        );
        first.get_or_insert_with(|| envelope.clone());
        let receipt = client.submit(envelope).await.expect("accepted");
        submitted.push(receipt.commitment.0);
        if nonce == 7 {
            undecryptable = Some(receipt.commitment.0);
        }
    }
    let mut sorted = submitted.clone();
    sorted.sort_unstable();
    assert_ne!(submitted, sorted, "the test needs an order to undo");
    // Another subscriber submits the first envelope again.
    let other = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let mut other_events = other.subscribe().await.expect("subscribes");
    let again = other
        .submit(first.expect("an envelope"))
        .await
        .expect("receipted again");
    assert_eq!(again.commitment.0, submitted[0]);
    let (mut sealed, mut cleared) = (None, None);
    while cleared.is_none() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("pushed in time")
            .expect("an event");
        match event {
            sealbatch::wire::ServerMessage::BatchSealed(s) if !s.proofs.is_empty() => {
                sealed = Some(s.proofs.iter().map(|(c, _)| *c).collect::<Vec<_>>());
            }
            sealbatch::wire::ServerMessage::BatchCleared(c) if c.e == e => {
                for own in &c.own {
                    let want = if Some(own.commitment) == undecryptable {
                        (7, 0)
                    } else {
                        (35, 1)
                    };
                    assert_eq!((own.status, own.detail), want, "status and detail");
                }
                cleared = Some(c.own.iter().map(|o| o.commitment).collect::<Vec<_>>());
            }
            _ => {}
        }
    }
    assert_eq!(sealed, Some(sorted.clone()));
    assert_eq!(cleared, Some(sorted));
    // The other subscriber's envelopes: the one it submitted again, with
    // its proof and its outcome.
    let (mut sealed, mut cleared) = (None, None);
    while cleared.is_none() {
        let event = tokio::time::timeout(Duration::from_secs(10), other_events.recv())
            .await
            .expect("pushed in time")
            .expect("an event");
        match event {
            sealbatch::wire::ServerMessage::BatchSealed(s) if !s.proofs.is_empty() => {
                sealed = Some(s.proofs.iter().map(|(c, _)| *c).collect::<Vec<_>>());
            }
            sealbatch::wire::ServerMessage::BatchCleared(c) if c.e == e => {
                cleared = Some(c.own.iter().map(|o| o.commitment).collect::<Vec<_>>());
            }
            _ => {}
        }
    }
    assert_eq!(sealed, Some(vec![submitted[0]]));
    assert_eq!(cleared, Some(vec![submitted[0]]));
    node.stop().await;
}

/// Half-close (`spec/wire.md` §2): requests that arrive in the same packet
/// as the client's FIN are all answered, and then the server finishes its
/// side; a stream finished inside a frame closes the connection with the
/// protocol code at once, not at the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_a_fin_are_answered_and_a_cut_frame_closes_at_once() {
    use sealbatch::wire::{FrameDecoder, ServerMessage, encode};

    let node = start("fin", |c| c.batch_length_ms = 500).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let schedule = client.schedule().await.expect("schedule");
    let e = schedule.open_batch + 1;
    let key = batch_key(&schedule, e);
    let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
    let envelope = sealed_order(
        &trader,
        &schedule.deployment(),
        e,
        &key,
        0,
        (Side::Buy, 60_000, 1),
    );

    // Three requests and the FIN in one write: all three are answered.
    let connection = raw(&node).await;
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let mut frames = Vec::new();
    for message in [
        ClientMessage::GetSchedule { request_id: 1 },
        ClientMessage::Submit {
            request_id: 2,
            envelope,
        },
        // Unsigned: refused, and still answered before the server's FIN.
        ClientMessage::GetAccount {
            request_id: 3,
            account: [9; 32],
            requester: [9; 32],
            signature: [0; 64],
        },
    ] {
        encode(&message, &mut frames).expect("encodes");
    }
    send.write_all(&frames).await.expect("writes");
    send.finish().expect("finishes");
    let bytes = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20))
        .await
        .expect("the server finishes its side in time")
        .expect("reads to the end");
    let mut decoder: FrameDecoder<ServerMessage> = FrameDecoder::new();
    decoder.extend(&bytes);
    let mut answered = Vec::new();
    while let Some(message) = decoder.next_message().expect("decodes") {
        answered.push(match message {
            ServerMessage::Schedule(s) => s.request_id,
            ServerMessage::Receipt { request_id, .. } => request_id,
            ServerMessage::Error {
                request_id,
                code: ReasonCode::Unauthorized,
                ..
            } => request_id,
            other => panic!("unexpected {other:?}"),
        });
    }
    answered.sort_unstable();
    assert_eq!(answered, vec![1, 2, 3]);

    // A frame cut short by the FIN: closed with code 1 well before the idle
    // timeout (30 s).
    let cut = raw(&node).await;
    let (mut send, _recv) = cut.open_bi().await.expect("stream");
    send.write_all(&[100, 0, 0, 0, 0x01, 1, 2])
        .await
        .expect("writes");
    send.finish().expect("finishes");
    let started = Instant::now();
    assert_eq!(closed_with(&cut).await, Some(1), "protocol error code");
    assert!(started.elapsed() < Duration::from_secs(2));
    node.stop().await;
}

/// After a batch trades: the schedule's `reference_price` is the market's
/// last clearing price, and the fee account (the all-zero id) holds the
/// fees, readable with `GetAccount` (`spec/wire.md` §5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_carries_the_last_price_and_the_fee_account_is_readable() {
    let node = start("reference", |c| {
        c.batch_length_ms = 500;
        c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let http = node.info.metrics.expect("the metrics listener");
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let mut events = client.subscribe().await.expect("subscribes");
    let schedule = client.schedule().await.expect("schedule");
    let market = *schedule
        .markets
        .iter()
        .find(|m| m.id == 1)
        .expect("market 1");
    // Only an operator reads the fee account: in demo mode, the demo
    // operator.
    let operator = node::demo_operator(node._dir.path()).expect("demo operator key");
    let fees_before = client
        .account(&operator, [0; 32])
        .await
        .expect("fee account")
        .balances;
    let buyer = sealbatch::envelope::generate_account_key(&mut OsRng);
    let seller = sealbatch::envelope::generate_account_key(&mut OsRng);
    for trader in [&buyer, &seller] {
        let account = trader.verifying_key().to_bytes();
        for asset in [market.base_asset, market.quote_asset] {
            client
                .deposit(account, asset, 1_000_000_000)
                .await
                .expect("deposit");
        }
    }
    let schedule = client.schedule().await.expect("schedule");
    let e = schedule.open_batch + 1;
    let key = batch_key(&schedule, e);
    // Only the buy limit crosses the reference: the price is not the
    // reference, so the schedule must change.
    let price = market.reference_price + 7;
    // A live viewer of the explorer, subscribed before the batch clears.
    let live = tokio::spawn(events_until(http, "/events", "", format!("\"e\":{e},")));
    let mut receipts = Vec::new();
    for (nonce, (trader, side)) in [(&buyer, Side::Buy), (&seller, Side::Sell)]
        .into_iter()
        .enumerate()
    {
        let envelope = sealed_order(
            trader,
            &schedule.deployment(),
            e,
            &key,
            nonce as u64,
            (side, price.get(), 4),
        );
        receipts.push(client.submit(envelope).await.expect("accepted"));
    }
    let cleared = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("pushed in time")
            .expect("an event");
        if let sealbatch::wire::ServerMessage::BatchCleared(c) = event
            && c.e == e
        {
            break c;
        }
    };
    let line = cleared
        .markets
        .iter()
        .find(|l| l.market == 1)
        .expect("a line for market 1");
    assert_eq!((line.price, line.volume), (Some(price), 4));
    let after = client.schedule().await.expect("schedule");
    let reference = after
        .markets
        .iter()
        .find(|m| m.id == 1)
        .expect("market 1")
        .reference_price;
    assert_eq!(reference, price, "the reference is the last clearing price");
    let quote = |balances: &[(u32, u64)]| {
        balances
            .iter()
            .find(|(asset, _)| *asset == market.quote_asset)
            .map_or(0, |&(_, amount)| amount)
    };
    let fees = client
        .account(&operator, [0; 32])
        .await
        .expect("fee account")
        .balances;
    // Both sides pay fee_bps of the notional, rounded as spec/ledger.md says.
    assert!(
        quote(&fees) > quote(&fees_before),
        "the fee account gained: {fees_before:?} -> {fees:?}"
    );

    // The explorer, on the metrics listener, shows the published batch:
    // listed, its page with market 1's curves marking price and volume,
    // the same as JSON; a batch not published is not found.
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (status, headers, list) = common::http_get(http, "/").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert!(
        list.contains(&format!("<a href=\"/batches/{e}\">{e}</a>")),
        "{list}"
    );
    let (status, headers, page) = common::http_get(http, &format!("/batches/{e}")).await;
    assert!(status.contains("200"), "{status}");
    assert!(header(&headers, "cache-control").contains("immutable"));
    assert!(
        page.contains("data-market=\"1\"")
            && page.contains(&format!("data-price=\"{price}\" data-volume=\"4\"")),
        "{page}"
    );
    let (_, headers, svg) = common::http_get(http, &format!("/batches/{e}/curves.svg")).await;
    assert_eq!(header(&headers, "content-type"), "image/svg+xml");
    assert!(svg.starts_with("<svg "));
    let (_, headers, json) = common::http_get(http, &format!("/api/batches/{e}")).await;
    assert_eq!(header(&headers, "content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["e"], e.get());
    let curves = json["curves"]
        .as_array()
        .expect("curves")
        .iter()
        .find(|c| c["market"] == 1)
        .expect("market 1's curves");
    assert_eq!(curves["clearing"]["price"], price.get());
    assert_eq!(curves["clearing"]["volume"], 4);
    assert_eq!(curves["orders"]["buys"], 1);
    let (_, _, all) = common::http_get(http, "/api/batches").await;
    let all: serde_json::Value = serde_json::from_str(&all).expect("JSON");
    assert!(
        all["batches"]
            .as_array()
            .expect("batches")
            .iter()
            .any(|b| b["e"] == e.get())
    );
    let (status, _, market) = common::http_get(http, "/markets/1").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        market.contains(&format!(
            "data-e=\"{e}\" data-price=\"{price}\" data-volume=\"4\""
        )),
        "{market}"
    );
    let (_, _, history) = common::http_get(http, "/api/markets/1").await;
    let history: serde_json::Value = serde_json::from_str(&history).expect("JSON");
    assert!(
        history["batches"]
            .as_array()
            .expect("batches")
            .iter()
            .any(|b| b["e"] == e.get() && b["price"] == price.get() && b["volume"] == 4)
    );
    let live = live.await.expect("the live viewer");
    assert!(
        live.contains("content-type: text/event-stream")
            && live.contains(&format!("event: batch\nid: {e}\n")),
        "{live}"
    );
    // A viewer resuming after an earlier batch (a reconnect, or a list
    // page rendered before batch e) is sent batch e at once.
    for (path, last_event) in [
        (format!("/events?after={}", e - 1), String::new()),
        (
            "/events".to_owned(),
            format!("Last-Event-ID: {}\r\n", e - 1),
        ),
    ] {
        let resumed = events_until(http, &path, &last_event, format!("id: {e}\n")).await;
        assert!(resumed.contains(&format!("\"e\":{e},")), "{resumed}");
    }
    // Check my order: the buyer's commitment is in batch e, proven under
    // the signed seal's root, its 4 lots filled at the price.
    let buyer_commitment = hex::encode(receipts[0].commitment.0);
    let (status, _, check) =
        common::http_get(http, &format!("/check?commitment={buyer_commitment}")).await;
    assert!(status.contains("200"), "{status}");
    assert!(
        check.contains(&format!("data-batch=\"{e}\" data-included=\"true\""))
            && check.contains(&format!(
                "<tr class=\"fill\"><td>0</td><td>1</td><td>buy</td><td>4</td><td>{price}</td></tr>"
            )),
        "{check}"
    );
    // A form's query string is percent-decoded: spaces around a pasted
    // commitment (`+`, `%20`) are no part of it.
    let (_, _, padded) =
        common::http_get(http, &format!("/check?commitment=+{buyer_commitment}%20")).await;
    assert!(
        padded.contains(&format!("data-batch=\"{e}\" data-included=\"true\"")),
        "{padded}"
    );
    // The whole receipt pasted: checked under the sequencer's key and held
    // to the batch it promised; a receipt altered to promise another batch
    // is no receipt of this sequencer.
    let receipt_hex = hex::encode(receipts[0].to_bytes());
    let (_, _, by_receipt) =
        common::http_get(http, &format!("/check?commitment={receipt_hex}")).await;
    assert!(
        by_receipt.contains(&format!("data-batch=\"{e}\" data-included=\"true\""))
            && by_receipt.contains("data-receipt=\"kept\""),
        "{by_receipt}"
    );
    let mut altered = receipts[0].clone();
    altered.e += 1;
    let (_, _, by_altered) = common::http_get(
        http,
        &format!("/check?commitment={}", hex::encode(altered.to_bytes())),
    )
    .await;
    assert!(
        by_altered.contains("data-receipt=\"invalid\"")
            && by_altered.contains("NOT a receipt of this sequencer"),
        "{by_altered}"
    );
    // A receipt the sequencer signed for an envelope batch e was published
    // without (made here with the node's own key, as a sequencer breaking
    // its promise would have): a broken promise, shown as such.
    let seed = sealbatch::secret_file::read_key32(&node._dir.path().join("sequencer.key"))
        .expect("the node's sequencer key");
    let dropped = sealbatch::envelope::SequencerKey::from_seed(&seed)
        .sign_receipt(e, &sealbatch::envelope::Commitment([0x5a; 32]));
    let (_, _, by_dropped) = common::http_get(
        http,
        &format!("/check?commitment={}", hex::encode(dropped.to_bytes())),
    )
    .await;
    assert!(
        by_dropped.contains(&format!(
            "data-batch=\"{e}\" data-included=\"false\" data-receipt=\"broken\""
        )) && by_dropped.contains("was published without this envelope"),
        "{by_dropped}"
    );
    let (_, _, json) = common::http_get(http, &format!("/api/check/{buyer_commitment}")).await;
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["e"], e.get());
    assert_eq!(json["included"], true);
    assert_eq!(json["fills"][0]["filled"], 4);
    assert_eq!(json["fills"][0]["price"], price.get());
    let (_, _, unknown) =
        common::http_get(http, &format!("/check?commitment={}", "ab".repeat(32))).await;
    assert!(
        unknown.contains("in no batch of the recent history"),
        "{unknown}"
    );
    let (_, _, garbage) = common::http_get(http, "/check?commitment=%3Cb%3Ex").await;
    assert!(
        garbage.contains("not a commitment") && !garbage.contains("<b>"),
        "{garbage}"
    );
    // A real browser renders the same: the order check reports the buyer's
    // fill and, in the slow tier (every page), the list links the batch and
    // its page draws market 1's curves with the price marked.
    match common::chromium() {
        None => common::no_browser(),
        Some(browser) => {
            let every_page = common::slow_tier();
            let mut urls = vec![format!("http://{http}/check?commitment={buyer_commitment}")];
            if every_page {
                urls.push(format!("http://{http}/"));
                urls.push(format!("http://{http}/batches/{e}"));
            }
            let doms = tokio::task::spawn_blocking(move || {
                urls.iter()
                    .map(|url| common::dump_dom(&browser, url))
                    .collect::<Vec<_>>()
            })
            .await
            .expect("the browser");
            assert!(
                doms[0].contains("data-included=\"true\"")
                    && doms[0].contains(&format!("<td>buy</td><td>4</td><td>{price}</td>")),
                "{}",
                doms[0]
            );
            if every_page {
                assert!(
                    doms[1].contains(&format!("href=\"/batches/{e}\"")),
                    "{}",
                    doms[1]
                );
                assert!(
                    doms[2].contains(&format!("data-price=\"{price}\" data-volume=\"4\"")),
                    "{}",
                    doms[2]
                );
            }
        }
    }
    // Nothing to show: malformed (400) or not published (404); the API
    // says which as JSON.
    for (path, code, error) in [
        ("/api/check/00", "400", "malformed"),
        ("/api/batches/x", "400", "malformed"),
        ("/api/markets/x", "400", "malformed"),
        ("/api/batches/999999999", "404", "absent"),
        ("/api/markets/4000000", "404", "absent"),
        ("/batches/x", "400", ""),
        ("/events?after=x", "400", ""),
        ("/events?after=1&after=2", "400", ""),
        ("/batches/999999999", "404", ""),
        ("/markets/4000000", "404", ""),
    ] {
        let (status, headers, body) = common::http_get(http, path).await;
        assert!(status.contains(code), "{path}: {status}");
        assert_eq!(header(&headers, "cache-control"), "no-store");
        if !error.is_empty() {
            let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(body["error"], error, "{path}");
        }
    }
    node.stop().await;
}

/// Operator deposits outside demo mode (`spec/wire.md` `OperatorDeposit`):
/// only a configured key may credit; a reference is credited once — again
/// after a graceful restart from a checkpoint of a pruned journal — and a
/// reference reused for another statement, a bad signature, an unknown key
/// or an amount over the bound are refused with their codes, changing
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_deposits_credit_once_per_reference_and_only_for_configured_keys() {
    use sealbatch::market::{AccountId, AssetId};
    use sealbatch::signed::DepositStatement;

    let operator = sealbatch::envelope::generate_account_key(&mut OsRng);
    let stranger = sealbatch::envelope::generate_account_key(&mut OsRng);
    let operator_hex = hex::encode(operator.verifying_key().to_bytes());
    let configure = |c: &mut NodeConfig| {
        c.demo = false;
        c.operator.keys = vec![operator_hex.clone()];
        c.operator.deposit_amount_max = Some(1_000_000);
        c.checkpoint_every_batches = 1;
        c.prune_journal = true;
    };
    let node = start("operator", configure).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    let account = [7; 32];
    let balance = |state: sealbatch::client::AccountState| {
        state
            .balances
            .iter()
            .find(|(asset, _)| *asset == 0)
            .map_or(0, |&(_, amount)| amount)
    };
    let refused = |result: Result<(), ClientError>, want: ReasonCode| match result {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, want),
        other => panic!("{want:?} expected, got {other:?}"),
    };

    client
        .operator_deposit(&operator, account, 0, 500, b"tx:1")
        .await
        .expect("credited");
    client
        .operator_deposit(&operator, account, 0, 500, b"tx:1")
        .await
        .expect("acknowledged again");
    assert_eq!(
        balance(client.account(&operator, account).await.expect("balances")),
        500
    );
    refused(
        client
            .operator_deposit(&operator, account, 0, 501, b"tx:1")
            .await,
        ReasonCode::InvalidRequest,
    );
    refused(
        client
            .operator_deposit(&stranger, account, 0, 500, b"tx:2")
            .await,
        ReasonCode::Unauthorized,
    );
    refused(
        client
            .operator_deposit(&operator, account, 0, 1_000_001, b"tx:3")
            .await,
        ReasonCode::InvalidRequest,
    );
    // A configured key, but a signature over something else.
    let schedule = client.schedule().await.expect("schedule");
    let sequencer = sealbatch::envelope::SequencerPublicKey::from_bytes(&schedule.sequencer_key)
        .expect("sequencer key");
    let mut forged = DepositStatement {
        operator: [0; 32],
        account: AccountId(account),
        asset: AssetId(0),
        amount: 5,
        reference: b"tx:4".to_vec(),
    }
    .sign(&operator, &sequencer)
    .expect("signs");
    forged.statement.amount = 900_000;
    match client
        .request(|request_id| ClientMessage::OperatorDeposit {
            request_id,
            deposit: forged,
        })
        .await
        .expect("answered")
    {
        sealbatch::wire::ServerMessage::Error { code, .. } => {
            assert_eq!(code, ReasonCode::Unauthorized);
        }
        other => panic!("refusal expected, got {other:?}"),
    }
    assert_eq!(
        balance(client.account(&operator, account).await.expect("balances")),
        500
    );

    // Past a batch, a checkpoint and pruning, and a restart: still credited
    // once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.close();
    let dir = node.stop_keeping_data().await;
    let node = start_in(dir, configure).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    client
        .operator_deposit(&operator, account, 0, 500, b"tx:1")
        .await
        .expect("acknowledged again after the restart");
    refused(
        client
            .operator_deposit(&operator, account, 0, 7, b"tx:1")
            .await,
        ReasonCode::InvalidRequest,
    );
    assert_eq!(
        balance(client.account(&operator, account).await.expect("balances")),
        500
    );
    client
        .operator_deposit(&operator, account, 0, 25, b"tx:5")
        .await
        .expect("a new reference credits");
    assert_eq!(
        balance(client.account(&operator, account).await.expect("balances")),
        525
    );
    client.close();
    // `verify` checks every operator signature and reference, and the
    // checkpoints' deposits, from the journal alone.
    let dir = node.stop_keeping_data().await;
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .arg("verify")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("runs verify");
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
}

/// A node without a keyper committee runs in trusted-operator mode: the
/// client says so, and a client pinned to a committee refuses its keys.
#[tokio::test]
async fn a_client_pinned_to_a_committee_refuses_a_trusted_operator() {
    use sealbatch::client::{KeyCustody, KeyTrust};
    let node = start("operator-mode", |_| {}).await;
    let client = Client::connect(node.info.listen, node.info.fingerprint)
        .await
        .expect("connects");
    assert!(
        !client
            .schedule()
            .await
            .expect("a schedule")
            .batch_keys
            .is_empty()
    );
    assert_eq!(client.custody(), Some(KeyCustody::Operator));
    client.set_trust(KeyTrust::Committee([1; 32]));
    assert!(matches!(
        client.schedule().await,
        Err(ClientError::Uncertified(_))
    ));
    client.close();
    node.stop().await;
}

/// Reads the explorer's event stream at `path` (with `headers`, each line
/// ending in CRLF) until `needle` appears: everything read.
async fn events_until(
    http: std::net::SocketAddr,
    path: &str,
    headers: &str,
    needle: String,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http)
        .await
        .expect("connects");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").as_bytes())
        .await
        .expect("request sent");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(&needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an event in time")
            .expect("reads");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Group receipts (`spec/envelope.md` §12) from a running node: envelopes
/// submitted together are made durable together and receipted under one
/// signature, each receipt with its own path; every receipt verifies alone
/// against the sequencer key, and the receipts of one group sit at
/// distinct places below its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_made_durable_together_are_receipted_under_one_signature() {
    let node = start("group-receipts", |c| c.batch_length_ms = 2_000).await;
    let client = std::sync::Arc::new(
        Client::connect(node.info.listen, node.info.fingerprint)
            .await
            .expect("connects"),
    );
    let schedule = client.schedule().await.expect("schedule");
    let sequencer = sealbatch::envelope::SequencerPublicKey::from_bytes(&schedule.sequencer_key)
        .expect("the sequencer key");
    let e = target_batch(&schedule, sealbatch::node::now_ms(), 1_000);
    let key = batch_key(&schedule, e);
    // Sealed first, then all sent at once: the journal writer takes what
    // arrived during its last fsync as one group commit.
    let deployment = schedule.deployment();
    let envelopes: Vec<Vec<u8>> = (0..128u64)
        .map(|nonce| {
            let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
            sealed_order(&trader, &deployment, e, &key, nonce, (Side::Buy, 60_000, 1))
        })
        .collect();
    let tasks: Vec<_> = envelopes
        .into_iter()
        .map(|envelope| {
            let client = std::sync::Arc::clone(&client);
            tokio::spawn(async move { client.submit(envelope).await })
        })
        .collect();
    let mut groups: std::collections::BTreeMap<_, std::collections::BTreeSet<u32>> =
        std::collections::BTreeMap::new();
    for task in tasks {
        let receipt = task.await.expect("joins").expect("receipted");
        assert_eq!(receipt.e, e);
        receipt
            .verify(&sequencer)
            .expect("a receipt verifies alone");
        let fresh = groups
            .entry((receipt.count, receipt.root, receipt.signature))
            .or_default()
            .insert(receipt.proof.index);
        assert!(fresh, "two receipts at one place of a group");
        assert!(receipt.proof.index < receipt.count);
    }
    let largest = groups
        .values()
        .map(|places| places.len())
        .max()
        .unwrap_or(0);
    eprintln!(
        "128 receipts in {} groups, the largest of {largest}",
        groups.len()
    );
    assert!(
        groups.len() < 128,
        "128 envelopes sent at once were made durable one by one"
    );
    node.stop().await;
}

/// A browser's way in (`spec/wire.md` §9): the node publishes where its
/// WebTransport listener is and the hash of its self-signed certificate on
/// its HTTP listener; a WebTransport session that trusts exactly that hash
/// gets the schedule, submits a sealed envelope on a bidirectional stream
/// and gets a receipt that verifies under the sequencer key alone — the
/// same frames as a native stream. A session for another path is refused,
/// and a certificate whose hash was not published is not accepted.
#[tokio::test]
async fn a_webtransport_session_submits_an_envelope_and_gets_a_verifiable_receipt() {
    use sealbatch::wire::{FrameDecoder, ServerMessage};
    use wtransport::tls::Sha256Digest;

    let node = start("webtransport", |config| {
        config.webtransport_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let wt = node.info.webtransport.expect("webtransport listening");
    let (status, headers, body) =
        common::http_get(node.info.metrics.expect("http"), "/webtransport").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "cache-control" && v == "no-store")
    );
    let published: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(published["url"], format!("https://{wt}/sealbatch"));
    assert_eq!(
        published["sequencer_key"],
        hex::encode(node.info.sequencer_key)
    );
    // The current certificate's hash and the next one's (made ahead, so a
    // page that fetched these still connects after the next rotation).
    let hashes = published["certificate_hashes"].as_array().expect("hashes");
    assert_eq!(hashes.len(), 2);
    assert_ne!(hashes[0], hashes[1]);
    let decode = |value: &serde_json::Value| -> [u8; 32] {
        hex::decode(value.as_str().expect("hex"))
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    };
    let (hash, next) = (decode(&hashes[0]), decode(&hashes[1]));

    let connect = |hash: [u8; 32], url: String| async move {
        let config = wtransport::ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([Sha256Digest::new(hash)])
            .build();
        let endpoint = wtransport::Endpoint::client(config).expect("a client endpoint");
        tokio::time::timeout(Duration::from_secs(5), endpoint.connect(url))
            .await
            .expect("answers in time")
    };
    // A certificate hash the node did not publish: no session.
    assert!(
        connect([7; 32], format!("https://{wt}/sealbatch"))
            .await
            .is_err()
    );
    // Another path: refused.
    assert!(connect(hash, format!("https://{wt}/other")).await.is_err());
    // The next certificate is not presented before its rotation.
    assert!(
        connect(next, format!("https://{wt}/sealbatch"))
            .await
            .is_err()
    );

    let connection = connect(hash, format!("https://{wt}/sealbatch"))
        .await
        .expect("a session");
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .expect("opens")
        .await
        .expect("a stream");
    let mut decoder: FrameDecoder<ServerMessage> = FrameDecoder::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut next = async || loop {
        if let Some(message) = decoder.next_message().expect("well framed") {
            return message;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut chunk))
            .await
            .expect("answers in time")
            .expect("reads")
            .expect("not finished");
        decoder.extend(&chunk[..n]);
    };
    let mut frame = Vec::new();
    sealbatch::wire::encode(&ClientMessage::GetSchedule { request_id: 1 }, &mut frame)
        .expect("encodes");
    send.write_all(&frame).await.expect("sent");
    let ServerMessage::Schedule(schedule) = next().await else {
        panic!("not a schedule");
    };
    assert_eq!(schedule.sequencer_key, node.info.sequencer_key);
    let trader = sealbatch::envelope::generate_account_key(&mut OsRng);
    let mut attempts = 0;
    let receipt = loop {
        let e = target_batch(&schedule, node::now_ms(), 30);
        let Some((_, key)) = schedule.batch_keys.iter().find(|(b, _)| *b == e) else {
            panic!("batch {e} not announced");
        };
        let key = BatchPublicKey::from_bytes(key).expect("valid key");
        let envelope = sealed_order(
            &trader,
            &schedule.deployment(),
            e,
            &key,
            attempts,
            (Side::Buy, 60_000, 1),
        );
        frame.clear();
        sealbatch::wire::encode(
            &ClientMessage::Submit {
                request_id: 2 + attempts,
                envelope: envelope.clone(),
            },
            &mut frame,
        )
        .expect("encodes");
        send.write_all(&frame).await.expect("sent");
        match next().await {
            ServerMessage::Receipt { receipt, .. } => {
                let receipt =
                    sealbatch::envelope::Receipt::from_bytes(&receipt).expect("a receipt");
                assert_eq!(
                    receipt.commitment,
                    sealbatch::envelope::Commitment::of(&envelope)
                );
                assert_eq!(receipt.e, e);
                break receipt;
            }
            // The batch closed on the way (a slow machine): the next one.
            ServerMessage::Rejected {
                code: ReasonCode::BatchClosed | ReasonCode::Busy,
                ..
            } if attempts < 20 => attempts += 1,
            other => panic!("{other:?}"),
        }
    };
    receipt
        .verify(
            &sealbatch::envelope::SequencerPublicKey::from_bytes(&node.info.sequencer_key)
                .expect("a key"),
        )
        .expect("the receipt verifies under the sequencer key alone");
    // A query bound to the connection cannot be made over WebTransport (no
    // TLS exporter in a browser): refused as unauthorized, the session
    // goes on.
    let account = trader.verifying_key().to_bytes();
    frame.clear();
    sealbatch::wire::encode(
        &ClientMessage::GetAccount {
            request_id: 99,
            account,
            requester: account,
            signature: [0; 64],
        },
        &mut frame,
    )
    .expect("encodes");
    send.write_all(&frame).await.expect("sent");
    assert!(matches!(
        next().await,
        ServerMessage::Error {
            request_id: 99,
            code: ReasonCode::Unauthorized,
            ..
        }
    ));
    // A session is held to the configured streams per connection, as a
    // native connection is: with this one open, three more are allowed
    // (default 4); a fifth waits for one of them to end.
    let limit = sealbatch::node::config::LimitsConfig::default().streams_per_connection_max;
    let mut more = Vec::new();
    for _ in 1..limit {
        let stream = tokio::time::timeout(Duration::from_secs(5), async {
            connection.open_bi().await.expect("opens").await
        })
        .await
        .expect("allowed at once")
        .expect("a stream");
        more.push(stream);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), async {
            connection.open_bi().await.expect("opens").await
        })
        .await
        .is_err(),
        "a stream beyond streams_per_connection_max was opened"
    );
    drop(more);
    send.finish().await.expect("finished");
    node.stop().await;
}

/// The trade page in a real browser (headless Chromium): it fetches the
/// WebTransport details, opens a session to the node, funds two fresh
/// accounts (demo mode), signs and seals a crossing buy and sell in the
/// page, checks both receipts under the sequencer key, each seal and
/// inclusion proof, the released key against the announced one and each
/// result — and both orders are filled at the reference price. It also
/// times sealing a 16-order bundle and verifying a receipt in the browser.
#[tokio::test]
async fn the_trade_page_trades_in_a_browser_over_webtransport() {
    let Some(browser) = common::chromium() else {
        common::no_browser();
        return;
    };
    let node = start("trade-page", |config| {
        config.webtransport_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let http = node.info.metrics.expect("http");
    let (status, headers, page) = common::http_get(http, "/trade").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/html"))
    );
    assert!(page.contains("<script type=\"module\" src=\"/trade.js\">"));
    let page = common::run_page(
        &browser,
        &format!("http://{http}/trade?demo=1"),
        "document.getElementById('result').dataset.status !== 'idle'",
        "[document.getElementById('result').dataset.status, \
          document.getElementById('result').textContent, \
          document.documentElement.outerHTML]",
        Duration::from_secs(60),
    )
    .await;
    let (status, text, dom) = (
        page[0].as_str().expect("a status"),
        page[1].as_str().expect("a result"),
        page[2].as_str().expect("the page"),
    );
    assert_eq!(status, "pass", "{text}\n{dom}");
    let result: serde_json::Value = serde_json::from_str(text).expect("json");
    let price = result["price"].as_str().expect("a price").to_string();
    for side in ["bought", "sold"] {
        assert_eq!(result[side]["status"], 0, "{result}");
        assert_eq!(result[side]["fills"][0]["filled"], "3", "{result}");
        assert_eq!(
            result[side]["markets"][0]["price"],
            price.as_str(),
            "{result}"
        );
    }
    for step in [
        "receipts",
        "buy sealed",
        "sell sealed",
        "buy key released",
        "buy result",
    ] {
        assert!(
            dom.contains(&format!("data-step=\"{step}\" data-ok=\"true\"")),
            "{step}: {dom}"
        );
    }
    eprintln!(
        "in headless Chromium: seal a 16-order bundle {} ms, verify a receipt {} ms (medians of 40)",
        result["timing"]["seal_16_orders_ms"], result["timing"]["verify_receipt_ms"]
    );
    node.stop().await;
}

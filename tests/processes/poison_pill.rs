//! The bundle that once halted the sequencer for good, over the real
//! process: a market whose lot is 10^18 units, one bundle of 19 market sells
//! adding up to ⌈2^128 / 10^18⌉ lots (their base requirement wrapped past
//! 2^128 to less than the seller's balance, settlement then found the
//! balance going negative and the process aborted on every restart) and a
//! buyer in the same batch. Now the bundle is unfunded, the batch clears, the
//! next batches trade, SIGTERM exits 0, the restart is clean and `verify`
//! re-derives every batch.

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use sealbatch::cli::connect::target_batch;
use sealbatch::client::Client;
use sealbatch::envelope::{BatchPublicKey, Commitment, generate_account_key, seal_bundle};
use sealbatch::node::now_ms;
use sealbatch::order::OrderSpec;
use sealbatch::sequencer::status;
use sealbatch::types::{BatchId, MarketId, Side, Tick};
use sealbatch::wire::{BatchCleared, ServerMessage};

use crate::common;
use common::{connect, spawn};

const CONFIG: &str = r#"
demo = true

[[assets]]
id = 0
name = "USD"

[[assets]]
id = 5
name = "ETH"

[[markets]]
id = 9
base = 5
quote = 0
tick_size = 1
lot_size = 1000000000000000000
band_min = 1
band_max = 1000
initial_price = 500
fee_bps = 5
"#;

const WEI: u32 = 5;
const USD: u32 = 0;
const MARKET: MarketId = MarketId(9);

fn order(side: Side, limit: Option<u64>, qty: u64) -> OrderSpec {
    OrderSpec {
        market: MARKET,
        side,
        limit: limit.map(Tick),
        qty,
        client_order_id: 0,
    }
}

/// Seals each `(trader, orders)` to one batch a little ahead, submits them
/// all, and waits for that batch's `BatchCleared`. Returns the batch and
/// the commitments in the order given.
async fn one_batch(
    client: &Client,
    events: &mut tokio::sync::mpsc::Receiver<ServerMessage>,
    bundles: &[(&ed25519_dalek::SigningKey, Vec<OrderSpec>)],
) -> (BatchId, Vec<Commitment>, BatchCleared) {
    let schedule = client.schedule().await.expect("schedule");
    let e = target_batch(&schedule, now_ms(), 300);
    let key = schedule
        .batch_keys
        .iter()
        .find(|(b, _)| *b == e)
        .and_then(|(_, k)| BatchPublicKey::from_bytes(k).ok())
        .expect("the batch is announced");
    let mut commitments = Vec::new();
    for (nonce, (trader, orders)) in bundles.iter().enumerate() {
        let envelope = seal_bundle(
            &mut OsRng,
            trader,
            &schedule.deployment(),
            e,
            &key,
            nonce as u64,
            orders,
        )
        .expect("seals");
        let bytes = envelope.into_bytes();
        let mut attempts = 0;
        let receipt = loop {
            // A loaded test machine may make the sequencer ask for a retry.
            match client.submit(bytes.clone()).await {
                Err(sealbatch::client::ClientError::Rejected {
                    code: sealbatch::wire::ReasonCode::Busy,
                    retry_after,
                    ..
                }) if attempts < 5 => {
                    attempts += 1;
                    tokio::time::sleep(retry_after).await;
                }
                other => break other.expect("receipted"),
            }
        };
        assert_eq!(receipt.e, e);
        commitments.push(receipt.commitment);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(ServerMessage::BatchCleared(cleared))) if cleared.e == e => {
                return (e, commitments, cleared);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("batch {e} was never cleared"),
        }
    }
}

fn status_of(cleared: &BatchCleared, commitment: &Commitment) -> (u8, u32, u64) {
    let own = cleared
        .own
        .iter()
        .find(|o| o.commitment == commitment.0)
        .expect("own envelope in the outcome");
    let filled = own.fills.iter().map(|f| f.1).sum();
    (own.status, own.detail, filled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrapping_bundle_is_unfunded_and_the_sequencer_keeps_clearing() {
    // The data directory and its config file beside it, removed on drop.
    let work = tempfile::Builder::new()
        .prefix("sealbatch-poison-")
        .tempdir()
        .expect("a temporary directory");
    let dir = work.path().join("data");
    let mut child = spawn(&dir, CONFIG);
    let client = connect(&dir, &mut child).await;
    let mut events = client.subscribe().await.expect("subscribed");

    let seller = generate_account_key(&mut OsRng);
    let buyer = generate_account_key(&mut OsRng);
    let honest = generate_account_key(&mut OsRng);
    let id = |k: &ed25519_dalek::SigningKey| k.verifying_key().to_bytes();
    client
        .deposit(id(&seller), WEI, 625_392_568_231_788_544)
        .await
        .expect("deposit");
    client
        .deposit(id(&buyer), USD, 1_000_000_000)
        .await
        .expect("deposit");
    client
        .deposit(id(&honest), WEI, 3_000_000_000_000_000_000)
        .await
        .expect("deposit");

    // The reproduction: 18 market sells of u64::MAX lots and one of the
    // rest, against 5 lots bought at 500.
    let mut poison = vec![order(Side::Sell, None, u64::MAX); 18];
    poison.push(order(Side::Sell, None, 8_240_973_594_166_534_394));
    let (e, commitments, cleared) = one_batch(
        &client,
        &mut events,
        &[
            (&seller, poison),
            (&buyer, vec![order(Side::Buy, Some(500), 5)]),
        ],
    )
    .await;
    assert_eq!(
        status_of(&cleared, &commitments[0]),
        (status::UNFUNDED, WEI, 0),
        "the wrapping bundle is unfunded, naming the asset"
    );
    assert_eq!(
        status_of(&cleared, &commitments[1]),
        (status::ACCEPTED, 0, 0),
        "the buyer is accepted and finds no seller"
    );
    assert!(cleared.markets.iter().all(|m| m.volume == 0));

    // The sequencer keeps clearing: an honest seller trades with the buyer.
    let (next, commitments, cleared) = one_batch(
        &client,
        &mut events,
        &[
            (&honest, vec![order(Side::Sell, Some(400), 2)]),
            (&buyer, vec![order(Side::Buy, Some(500), 5)]),
        ],
    )
    .await;
    assert!(next > e);
    assert_eq!(
        status_of(&cleared, &commitments[0]),
        (status::ACCEPTED, 0, 2)
    );
    assert_eq!(
        status_of(&cleared, &commitments[1]),
        (status::ACCEPTED, 0, 2)
    );
    let balances = client
        .account(&honest, id(&honest))
        .await
        .expect("balances")
        .balances;
    assert!(
        balances.contains(&(WEI, 1_000_000_000_000_000_000)),
        "{balances:?}"
    );
    client.close();

    // SIGTERM exits 0; the restart replays the journal cleanly and serves.
    common::stop_gracefully(child);
    let mut child = spawn(&dir, CONFIG);
    let client = connect(&dir, &mut child).await;
    let balances = client
        .account(&seller, id(&seller))
        .await
        .expect("balances")
        .balances;
    assert_eq!(balances, vec![(WEI, 625_392_568_231_788_544)]);
    client.close();
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let out = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(["verify", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("verify runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("0 mismatched"),
        "verify: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

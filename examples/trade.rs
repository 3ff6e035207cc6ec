//! Trade with the client library: start a sequencer in this process (demo
//! mode, loopback only), fund two traders, seal a buy and a sell to the
//! batch's announced public key, submit them, and read the batch's result —
//! the uniform price and each envelope's fills.
//!
//! ```sh
//! cargo run --example trade
//! ```

// A program of the shell: it reads files (the rule against it is for the core).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;

use rand_core::OsRng;
use sealbatch::client::Client;
use sealbatch::envelope::{BatchPublicKey, generate_account_key, seal_bundle};
use sealbatch::node::{self, NodeConfig};
use sealbatch::order::OrderSpec;
use sealbatch::types::{MarketId, Side};
use sealbatch::wire::ServerMessage;
use tokio::sync::{oneshot, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // A sequencer with the demo markets, in a directory of its own.
    let data_dir = std::env::temp_dir().join(format!("sealbatch-example-{}", std::process::id()));
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: None,
        ..NodeConfig::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let (started_tx, started) = oneshot::channel();
    let sequencer = tokio::spawn(node::run(config, shutdown, Some(started_tx)));
    let info = started.await?;
    println!("sequencer on {}", info.listen);

    let result = trade(info.listen, info.fingerprint).await;

    let _ = stop.send(true);
    sequencer.await??;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn trade(listen: SocketAddr, fingerprint: [u8; 32]) -> Result<(), Error> {
    // The certificate is pinned by its fingerprint; the schedule is signed by
    // the sequencer's key, which later receipts are checked against.
    let client = Client::connect(listen, fingerprint).await?;
    let mut events = client.subscribe().await?;
    let schedule = client.schedule().await?;
    let market = schedule
        .markets
        .iter()
        .find(|m| m.id == 1)
        .copied()
        .ok_or("no market 1")?;

    // Demo mode lets anyone credit an account; a real venue's operator does.
    let buyer = generate_account_key(&mut OsRng);
    let seller = generate_account_key(&mut OsRng);
    for trader in [&buyer, &seller] {
        let account = trader.verifying_key().to_bytes();
        client
            .deposit(account, market.base_asset, 1_000_000_000)
            .await?;
        client
            .deposit(account, market.quote_asset, 1_000_000_000)
            .await?;
    }

    // Seal to a batch still open when the envelopes arrive: the next one.
    let schedule = client.schedule().await?;
    let e = schedule.open_batch + 1;
    let key = schedule
        .batch_keys
        .iter()
        .find(|(b, _)| *b == e)
        .map(|(_, k)| BatchPublicKey::from_bytes(k))
        .ok_or("batch key not announced")??;
    let price = market.reference_price;
    let bundles = [
        (&buyer, Side::Buy, price + 1, 7),
        (&seller, Side::Sell, price - 1, 5),
    ];
    for (nonce, (trader, side, limit, qty)) in bundles.into_iter().enumerate() {
        let orders = [OrderSpec {
            market: MarketId(market.id),
            side,
            limit: Some(limit),
            qty,
            client_order_id: 1,
        }];
        let envelope = seal_bundle(
            &mut OsRng,
            trader,
            &schedule.deployment(),
            e,
            &key,
            nonce as u64,
            &orders,
        )?;
        // The receipt comes only once the envelope is fsynced, signed by the
        // sequencer over (batch, commitment); the client checks it.
        let receipt = client.submit(envelope.into_bytes()).await?;
        println!(
            "{side:?} {qty} lots at {limit}: receipt for batch {} ({})",
            receipt.e,
            hex::encode(&receipt.commitment.0[..8])
        );
    }

    // Nobody can read the envelopes until the batch is sealed; then the
    // batch secret is released, every envelope opened, and each market
    // cleared at one price.
    while let Some(event) = events.recv().await {
        match event {
            ServerMessage::BatchSealed(sealed) => {
                println!(
                    "batch sealed; {} inclusion proofs for us",
                    sealed.proofs.len()
                );
            }
            ServerMessage::BatchCleared(cleared) if cleared.e == e => {
                for line in cleared.markets.iter().filter(|l| l.volume > 0) {
                    println!(
                        "market {}: {} lots at {:?}",
                        line.market, line.volume, line.price
                    );
                }
                for own in &cleared.own {
                    println!(
                        "envelope {}: status {}, fills {:?}",
                        hex::encode(&own.commitment[..8]),
                        own.status,
                        own.fills
                    );
                }
                println!("batch secret {}", hex::encode(cleared.batch_secret));
                return Ok(());
            }
            _ => {}
        }
    }
    Err("the event stream ended".into())
}

//! `sealbatch submit`: seal one bundle, submit it, wait for the receipt, the
//! inclusion proof and the fills.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rand_core::OsRng;

use super::CommandResult;
use super::connect::{ServerArgs, read_account_key, target_batch};
use crate::client::ClientError;
use crate::envelope::{
    BatchPublicKey, InclusionProof, SequencerPublicKey, SignedSeal, seal_bundle,
};
use crate::node::now_ms;
use crate::order::OrderSpec;
use crate::types::{BUNDLE_ORDERS_MAX, MarketId, Side};
use crate::wire::{ReasonCode, ServerMessage};

/// Submissions tried before a busy or closed-batch refusal is final.
const SUBMIT_ATTEMPTS_MAX: u32 = 5;

/// Arguments of `sealbatch submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The account's secret key file (from `sealbatch keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// An order `MARKET:SIDE:PRICE:QTY` (SIDE `buy`/`sell`, PRICE in ticks or
    /// `market`); repeat for a bundle.
    #[arg(long = "order", value_name = "ORDER")]
    orders: Vec<String>,
    /// Orders from a CSV with header `market,side,price,qty` (empty price: a
    /// market order).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Bundle nonce (default: the current time in microseconds).
    #[arg(long)]
    nonce: Option<u64>,
}

fn parse_order(fields: &[&str], index: usize, context: &str) -> Result<OrderSpec, String> {
    let [market, side, price, qty] = fields else {
        return Err(format!("{context}: expected market,side,price,qty"));
    };
    let market = market
        .trim()
        .parse()
        .map_err(|_| format!("{context}: market {market:?} is not a number"))?;
    let side = match side.trim() {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        other => return Err(format!("{context}: side {other:?} is not buy or sell")),
    };
    let limit = match price.trim() {
        "" | "market" => None,
        p => Some(
            p.parse()
                .map_err(|_| format!("{context}: price {p:?} is not a whole number of ticks"))?,
        ),
    };
    let qty = qty
        .trim()
        .parse()
        .map_err(|_| format!("{context}: quantity {qty:?} is not a whole number of lots"))?;
    Ok(OrderSpec {
        market: MarketId(market),
        side,
        limit,
        qty,
        client_order_id: index as u64,
    })
}

impl SubmitArgs {
    fn orders(&self) -> Result<Vec<OrderSpec>, String> {
        let mut orders = Vec::new();
        for (i, text) in self.orders.iter().enumerate() {
            let fields: Vec<&str> = text.split(':').collect();
            orders.push(parse_order(&fields, i, &format!("--order {text:?}"))?);
        }
        if let Some(path) = &self.csv {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("reading {}: {error}", path.display()))?;
            let mut lines = text.lines().enumerate();
            match lines.next() {
                Some((_, header)) if header.trim() == "market,side,price,qty" => {}
                _ => {
                    return Err(format!(
                        "{}: line 1: expected header market,side,price,qty",
                        path.display()
                    ));
                }
            }
            for (n, line) in lines {
                if line.trim().is_empty() {
                    continue;
                }
                let fields: Vec<&str> = line.split(',').collect();
                let index = orders.len();
                orders.push(parse_order(
                    &fields,
                    index,
                    &format!("{}: line {}", path.display(), n + 1),
                )?);
            }
        }
        if orders.is_empty() {
            return Err("no orders: pass --order or --csv".into());
        }
        if orders.len() > BUNDLE_ORDERS_MAX {
            return Err(format!(
                "{} orders; a bundle holds at most {BUNDLE_ORDERS_MAX}",
                orders.len()
            ));
        }
        Ok(orders)
    }
}

/// Runs `sealbatch submit`.
///
/// # Errors
///
/// Bad orders or key, connection failure, rejection, or a receipt that is not
/// proven included.
pub fn run(args: &SubmitArgs) -> CommandResult {
    let orders = args.orders()?;
    let key = read_account_key(&args.key)?;
    super::run::runtime()?.block_on(async {
        let (client, schedule) = args.server.connect().await?;
        let sequencer = SequencerPublicKey::from_bytes(&schedule.sequencer_key)?;
        let mut events = client.subscribe().await?;
        let nonce = args.nonce.unwrap_or_else(|| now_ms() * 1000);
        let mut schedule = schedule;
        let mut attempt = 0;
        let receipt = loop {
            attempt += 1;
            let e = target_batch(&schedule, now_ms(), 20);
            let batch_key = schedule
                .batch_keys
                .iter()
                .find(|(b, _)| *b == e)
                .map(|(_, k)| BatchPublicKey::from_bytes(k))
                .ok_or_else(|| format!("the schedule announces no key for batch {e}"))??;
            let envelope = seal_bundle(
                &mut OsRng,
                &key,
                &schedule.deployment(),
                e,
                &batch_key,
                nonce,
                &orders,
            )?;
            // A busy sequencer says when to come back; a batch that closed
            // on the way is retried with the next one. Either way the bundle
            // is sealed again, to a batch open then.
            match client.submit(envelope.into_bytes()).await {
                Err(ClientError::Rejected {
                    code: ReasonCode::Busy,
                    retry_after,
                    ..
                }) if attempt < SUBMIT_ATTEMPTS_MAX => {
                    eprintln!("sequencer busy; retrying in {} ms", retry_after.as_millis());
                    tokio::time::sleep(retry_after).await;
                }
                Err(ClientError::Rejected {
                    code: ReasonCode::BatchClosed,
                    ..
                }) if attempt < SUBMIT_ATTEMPTS_MAX => {
                    eprintln!("batch {e} closed on the way; sealing to the next");
                }
                other => break other?,
            }
            schedule = client.schedule().await?;
        };
        println!(
            "receipt: batch {} commitment {} (signature verified)",
            receipt.e,
            hex::encode(receipt.commitment.0)
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, events.recv())
                .await
                .map_err(|_| "no result within 10 s")?
                .ok_or("the connection closed")?;
            match event {
                ServerMessage::BatchSealed(sealed) => {
                    let seal = SignedSeal::from_bytes(&sealed.seal)?;
                    if let Some((_, proof)) = sealed
                        .proofs
                        .iter()
                        .find(|(c, _)| *c == receipt.commitment.0)
                    {
                        seal.verify_inclusion(
                            &sequencer,
                            &receipt,
                            &InclusionProof::from_bytes(proof)?,
                        )?;
                        println!(
                            "sealed: batch {} holds {} envelopes; inclusion proof verified",
                            seal.e, seal.count
                        );
                    }
                }
                ServerMessage::BatchCleared(cleared) if cleared.e == receipt.e => {
                    let Some(own) = cleared
                        .own
                        .iter()
                        .find(|o| o.commitment == receipt.commitment.0)
                    else {
                        return Err("the batch result does not mention the envelope".into());
                    };
                    if own.status != 0 {
                        println!(
                            "rejected after opening: code {} detail {}",
                            own.status, own.detail
                        );
                    } else {
                        for (i, order) in orders.iter().enumerate() {
                            let filled = own
                                .fills
                                .iter()
                                .find(|(index, _)| usize::from(*index) == i)
                                .map_or(0, |f| f.1);
                            let price = cleared
                                .markets
                                .iter()
                                .find(|m| m.market == order.market.0)
                                .and_then(|m| m.price);
                            println!(
                                "order {i}: market {} {} {} of {} lots at {}",
                                order.market,
                                order.side,
                                filled,
                                order.qty,
                                price.map_or_else(|| "no trade".to_string(), |p| p.to_string())
                            );
                        }
                    }
                    break;
                }
                _ => {}
            }
        }
        client.close();
        Ok(())
    })
}

//! `sealbatch watch`: live batch results as a table.

use clap::Args;

use super::CommandResult;
use super::connect::ServerArgs;
use crate::wire::{BatchCleared, ServerMessage};

/// Arguments of `sealbatch watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Stop after this many batches (default: until interrupted).
    #[arg(long)]
    batches: Option<u64>,
}

/// One table row for a cleared batch: batch, envelopes, then each traded
/// market's `price × volume`.
#[must_use]
pub fn batch_row(cleared: &BatchCleared, name: &dyn Fn(u32) -> String) -> String {
    let mut row = format!(
        "batch {:>8} {:>6} env {:>6} ok |",
        cleared.e, cleared.envelopes, cleared.accepted
    );
    for market in &cleared.markets {
        match market.price {
            Some(price) => row.push_str(&format!(
                " {} {:>7} x {:<6} |",
                name(market.market),
                price,
                market.volume
            )),
            None => row.push_str(&format!(
                " {} {:>7}   {:<6} |",
                name(market.market),
                "-",
                ""
            )),
        }
    }
    row
}

/// Prints every cleared batch until interrupted.
///
/// # Errors
///
/// Connection failures.
pub fn run(args: &WatchArgs) -> CommandResult {
    super::run::runtime()?.block_on(async {
        let (client, schedule) = args.server.connect().await?;
        let mut events = client.subscribe().await?;
        println!(
            "watching {} (batch length {} ms, {} markets); Ctrl-C to stop",
            args.server.server,
            schedule.batch_length_ms,
            schedule.markets.len()
        );
        let mut seen = 0;
        while let Some(event) = events.recv().await {
            if let ServerMessage::BatchCleared(cleared) = event {
                println!("{}", batch_row(&cleared, &|m| format!("m{m}")));
                seen += 1;
                if args.batches.is_some_and(|n| seen >= n) {
                    break;
                }
            }
        }
        client.close();
        Ok(())
    })
}

//! `sealbatch clear-demo`: a short, readable run of the clearing engine.
//!
//! A few markets receive seeded random orders around their reference price
//! for a few batches; each batch clears at one price per market, and the
//! next batch's reference is the last clearing price. Same seed, same output
//! (apart from the timings).

use std::time::Instant;

use clap::Args;

use crate::clearing::synth::{self, Shape, SplitMix64};
use crate::clearing::{self, MarketInput, PriceBand};
use crate::cli::CommandResult;
use crate::types::{MarketId, Tick};

/// Options of `sealbatch demo`.
#[derive(Debug, Args)]
pub struct ClearDemoArgs {
    /// How many batches to clear.
    #[arg(long, default_value_t = 4)]
    batches: u64,
    /// Orders per market and batch (the thin market gets a hundredth).
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    /// Seed of the random order flow.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A demo market: a name, its band and initial reference price, how far
/// limits scatter around the reference, and how busy it is.
struct DemoMarket {
    name: &'static str,
    band: PriceBand,
    initial: Tick,
    spread: u64,
    /// Orders per batch, as a fraction `1 / divisor` of `--orders`.
    divisor: usize,
}

const MARKETS: [DemoMarket; 5] = [
    DemoMarket {
        name: "ETH/USDC",
        band: PriceBand::new(Tick(1), Tick(1_000_000)),
        initial: Tick(300_000),
        spread: 400,
        divisor: 1,
    },
    DemoMarket {
        name: "BTC/USDC",
        band: PriceBand::new(Tick(1), Tick(10_000_000)),
        initial: Tick(6_500_000),
        spread: 2_000,
        divisor: 1,
    },
    DemoMarket {
        name: "SOL/USDC",
        band: PriceBand::new(Tick(1), Tick(100_000)),
        initial: Tick(15_000),
        spread: 60,
        divisor: 4,
    },
    DemoMarket {
        name: "DOGE/USDC",
        band: PriceBand::new(Tick(1), Tick(10_000)),
        initial: Tick(1_500),
        spread: 3,
        divisor: 100,
    },
    // A handful of orders far apart: some batches do not cross at all.
    DemoMarket {
        name: "XMR/USDC",
        band: PriceBand::new(Tick(1), Tick(100_000)),
        initial: Tick(20_000),
        spread: 40,
        divisor: usize::MAX,
    },
];

pub(super) fn run(args: &ClearDemoArgs) -> CommandResult {
    println!(
        "sealbatch demo: {} markets, {} batches, seed {} ({} rayon threads)",
        MARKETS.len(),
        args.batches,
        args.seed,
        rayon::current_num_threads()
    );
    println!("Each batch clears every market at one uniform price; unfilled orders do not rest.");
    println!(
        "imbalance = demand − supply at that price (+: buyers left unfilled); price - = no cross."
    );
    let mut references: Vec<Tick> = MARKETS.iter().map(|m| m.initial).collect();
    let mut rng = SplitMix64::new(args.seed);
    let mut next_id = 0u64;
    for batch in 0..args.batches {
        let markets: Vec<MarketInput> = MARKETS
            .iter()
            .zip(&references)
            .enumerate()
            .map(|(index, (market, &reference))| {
                let orders = (args.orders / market.divisor).max(4);
                // Lean the flow a little to one side so prices move.
                let drift = rng.below(market.spread + 1);
                let shape = Shape {
                    orders,
                    band: market.band,
                    reference: (reference + drift)
                        .saturating_sub(market.spread / 2)
                        .clamp(market.band.min, market.band.max),
                    spread: market.spread,
                    market_per_mille: 20,
                    qty_max: 50,
                };
                let mut input =
                    synth::market(MarketId(index as u32 + 1), &shape, next_id, rng.next_u64());
                next_id += orders as u64;
                input.config.reference = reference;
                input
            })
            .collect();
        // The sequencer will derive this from the seal's Merkle root.
        let seed = *blake3::hash(&[&args.seed.to_le_bytes()[..], &batch.to_le_bytes()].concat())
            .as_bytes();
        let orders: usize = markets.iter().map(|m| m.orders.len()).sum();
        let started = Instant::now();
        let result = clearing::clear_batch(&markets, &seed)?;
        let elapsed = started.elapsed();
        println!();
        println!(
            "batch {batch}: {orders} orders, seed {}…, cleared in {:.1} ms",
            &hex::encode(seed)[..12],
            elapsed.as_secs_f64() * 1e3
        );
        println!(
            "  {:<10} {:>10} {:>10} {:>7} {:>10} {:>11} {:>8} {:>7}",
            "market", "reference", "price", "move", "volume", "imbalance", "orders", "filled"
        );
        for ((spec, market), reference) in MARKETS.iter().zip(&result.markets).zip(&mut references)
        {
            let (price, change) = match market.price {
                Some(p) => (
                    p.to_string(),
                    format!("{:+}", i128::from(p.get()) - i128::from(reference.get())),
                ),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "  {:<10} {:>10} {:>10} {:>7} {:>10} {:>11} {:>8} {:>7}",
                spec.name,
                reference,
                price,
                change,
                market.volume,
                market.imbalance,
                market.ids.len(),
                market.orders_filled()
            );
            *reference = market.next_reference(*reference);
        }
    }
    println!();
    println!("Replay a batch offline: sealbatch clear FILE.csv; measure: sealbatch bench clearing");
    Ok(())
}

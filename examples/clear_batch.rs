//! Clear one batch of two markets with the clearing engine alone: each market
//! trades at one uniform price, and when one side is larger the orders at
//! the clearing price are filled pro rata.
//!
//! ```sh
//! cargo run --example clear_batch
//! ```

use sealbatch::clearing::{self, ClearingError, MarketInput, MarketParams, PriceBand};
use sealbatch::order::Order;
use sealbatch::types::{MarketId, OrderId, Side, Tick};

fn main() -> Result<(), ClearingError> {
    let order = |id, side, limit, qty| Order {
        id: OrderId(id),
        side,
        limit,
        qty,
    };
    // Market 1: buyers want 600 lots at 201 or better, sellers offer 500 at
    // 199 or better; the price that trades the most is 201, where sellers
    // are the short side.
    let wheat = MarketInput {
        config: MarketParams {
            market: MarketId(1),
            reference: Tick(200),
            band: PriceBand::new(Tick(1), Tick(1_000)),
        },
        orders: [
            order(1, Side::Buy, Some(Tick(202)), 400),
            order(2, Side::Buy, Some(Tick(201)), 200),
            order(3, Side::Sell, Some(Tick(199)), 300),
            order(4, Side::Sell, Some(Tick(198)), 200),
        ]
        .into_iter()
        .collect(),
    };
    // Market 2: a market order (no limit) against two limit sells; the buy
    // is larger than all supply, so every sell fills.
    let corn = MarketInput {
        config: MarketParams {
            market: MarketId(2),
            reference: Tick(50),
            band: PriceBand::new(Tick(10), Tick(100)),
        },
        orders: [
            order(5, Side::Buy, None, 1_000),
            order(6, Side::Sell, Some(Tick(48)), 300),
            order(7, Side::Sell, Some(Tick(52)), 300),
        ]
        .into_iter()
        .collect(),
    };
    // The seed breaks ties in the pro-rata rounding; the sequencer uses the
    // batch's Merkle root, so nobody can choose it.
    let result = clearing::clear_batch(&[wheat, corn], &[7; 32])?;
    for market in &result.markets {
        match market.price {
            Some(price) => println!(
                "market {}: {} lots at {price} (imbalance {})",
                market.market.0, market.volume, market.imbalance
            ),
            None => println!("market {}: nothing crosses", market.market.0),
        }
        for fill in market.fills() {
            println!("  order {}: {} lots", fill.id.0, fill.filled);
        }
    }
    Ok(())
}

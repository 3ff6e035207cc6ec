//! Seeded synthetic order flow, for the demo, the benchmarks and tests.
//!
//! Not part of the clearing rule: nothing here is normative, but it is
//! deterministic, so a seed always gives the same orders.

use super::{MarketInput, MarketParams, OrderColumns, PriceBand};
use crate::order::Order;
use crate::types::{Lots, MarketId, OrderId, Side, Tick};

/// SplitMix64: a tiny, fast, seedable generator (not for secrets).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`0` when `bound` is 0), by multiply-shift.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// The shape of one synthetic market.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// How many orders.
    pub orders: usize,
    /// The market's band.
    pub band: PriceBand,
    /// The reference price limits scatter around.
    pub reference: Tick,
    /// Limits are uniform in `reference ± spread`, clamped into the band.
    pub spread: u64,
    /// Out of 1000 orders, how many are market orders.
    pub market_per_mille: u64,
    /// Quantities are uniform in `1..=qty_max`.
    pub qty_max: Lots,
}

impl Shape {
    /// `orders` orders over a band of `ticks` ticks `[1, ticks]`, limits
    /// uniform over the whole band around its middle, 2% market orders,
    /// quantities 1..=100: the benchmarks' shape.
    #[must_use]
    pub fn uniform(orders: usize, ticks: u64) -> Shape {
        let ticks = ticks.max(1);
        Shape {
            orders,
            band: PriceBand::new(1, ticks),
            reference: 1 + ticks / 2,
            spread: ticks / 2,
            market_per_mille: 20,
            qty_max: 100,
        }
    }
}

/// A market of `shape` whose order ids are `first_id, first_id + 1, …`.
#[must_use]
pub fn market(market: MarketId, shape: &Shape, first_id: u64, seed: u64) -> MarketInput {
    let mut rng = SplitMix64::new(seed ^ (u64::from(market.0) << 32));
    let mut orders = OrderColumns::with_capacity(shape.orders);
    let low = shape.reference.saturating_sub(shape.spread);
    let span = shape.spread.saturating_mul(2).saturating_add(1);
    for i in 0..shape.orders as u64 {
        let bits = rng.next_u64();
        let side = if bits & 1 == 0 { Side::Buy } else { Side::Sell };
        let limit = if (bits >> 1) % 1000 < shape.market_per_mille {
            None
        } else {
            let tick = low.saturating_add(rng.below(span));
            Some(tick.clamp(shape.band.min, shape.band.max))
        };
        let qty = 1 + rng.below(shape.qty_max.max(1));
        orders.push(Order {
            id: OrderId(first_id + i),
            side,
            limit,
            qty,
        });
    }
    MarketInput {
        config: MarketParams {
            market,
            reference: shape.reference.clamp(shape.band.min, shape.band.max),
            band: shape.band,
        },
        orders,
    }
}

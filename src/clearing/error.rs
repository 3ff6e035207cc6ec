//! The clearing engine's typed errors: every one names the market and, where
//! one is to blame, the order.

use crate::types::{Lots, MarketId, OrderId, Tick};

/// Why a batch (or one market of it) cannot be cleared.
///
/// Every variant names the market and, where one order is at fault, that
/// order, so a rejected batch can be traced to its input. When several
/// problems exist the engine reports one deterministically: the market with
/// the smallest id first, and within a market the first order in id order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClearingError {
    /// An order asks for zero lots.
    #[error("market {market}, order {order}: quantity is zero")]
    ZeroQuantity {
        /// The market of the order.
        market: MarketId,
        /// The offending order.
        order: OrderId,
    },
    /// A limit price lies outside its market's price band.
    #[error(
        "market {market}, order {order}: limit {limit} is outside the price band [{min}, {max}]"
    )]
    LimitOutsideBand {
        /// The market of the order.
        market: MarketId,
        /// The offending order.
        order: OrderId,
        /// Its limit price.
        limit: Tick,
        /// The band's lowest tick.
        min: Tick,
        /// The band's highest tick.
        max: Tick,
    },
    /// Two orders of the batch carry the same id.
    #[error("market {market}, order {order}: duplicate order id")]
    DuplicateOrder {
        /// The market of the (second) order.
        market: MarketId,
        /// The repeated id.
        order: OrderId,
    },
    /// The fast entry points take each market's orders in strictly increasing
    /// id order; this order comes after a larger id. Use
    /// [`canonical_batch`](super::canonical_batch) for arbitrary input.
    #[error(
        "market {market}, order {order}: ids must be strictly increasing, but it follows order {previous}"
    )]
    OrderIdsNotIncreasing {
        /// The market of the order.
        market: MarketId,
        /// The offending order.
        order: OrderId,
        /// The id just before it.
        previous: OrderId,
    },
    /// An order names a market the batch does not configure.
    #[error("order {order}: unknown market {market}")]
    UnknownMarket {
        /// The market the order names.
        market: MarketId,
        /// The offending order.
        order: OrderId,
    },
    /// The same market appears twice in one batch.
    #[error("market {market} appears more than once in the batch")]
    DuplicateMarket {
        /// The repeated market.
        market: MarketId,
    },
    /// A price band whose lowest tick is above its highest.
    #[error("market {market}: empty price band [{min}, {max}]")]
    EmptyBand {
        /// The market.
        market: MarketId,
        /// The band's lowest tick.
        min: Tick,
        /// The band's highest tick.
        max: Tick,
    },
    /// A price band reaching below [`TICK_MIN`](super::TICK_MIN) or above
    /// [`TICK_MAX`](super::TICK_MAX).
    #[error("market {market}: price band [{min}, {max}] is not within [1, 2^64 - 2]")]
    BandOutOfRange {
        /// The market.
        market: MarketId,
        /// The band's lowest tick.
        min: Tick,
        /// The band's highest tick.
        max: Tick,
    },
    /// The reference price lies outside the market's price band.
    #[error(
        "market {market}: reference price {reference} is outside the price band [{min}, {max}]"
    )]
    ReferenceOutsideBand {
        /// The market.
        market: MarketId,
        /// The reference price.
        reference: Tick,
        /// The band's lowest tick.
        min: Tick,
        /// The band's highest tick.
        max: Tick,
    },
    /// More orders in one market than [`MARKET_ORDERS_MAX`](crate::types::MARKET_ORDERS_MAX).
    #[error("market {market}: {count} orders exceed the limit of {max} per market and batch")]
    TooManyOrders {
        /// The market.
        market: MarketId,
        /// How many orders it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More markets in one batch than [`MARKETS_MAX`](crate::types::MARKETS_MAX).
    #[error("{count} markets exceed the limit of {max} per batch")]
    TooManyMarkets {
        /// How many markets the batch has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The executable volume does not fit in [`Lots`] (u64): the batch's
    /// quantities are absurd.
    #[error("market {market}: executable volume {volume} exceeds {max} lots")]
    VolumeOverflow {
        /// The market.
        market: MarketId,
        /// The volume that would trade.
        volume: u128,
        /// The largest representable volume.
        max: Lots,
    },
}

//! Uniform-price batch clearing: every market of a batch trades at one price,
//! chosen from the *set* of its orders alone.
//!
//! The normative rule, with its byte encodings, is `spec/clearing.md`; this
//! is a summary. The engine is pure: no I/O, no clock, no floating point.
//!
//! # The rule (one market, one batch)
//!
//! `D(p)` is the buy quantity willing to trade at `p` (market buys and buys
//! limited at or above `p`), `S(p)` the sell quantity (market sells and sells
//! limited at or below `p`). The candidates are the limit prices of the
//! market's orders and its reference price.
//!
//! 1. Maximise the volume `min(D(p), S(p))`.
//! 2. Among those, minimise the imbalance `|D(p) − S(p)|`.
//! 3. If every remaining candidate has `D > S`, take the highest; if every one
//!    has `D < S`, the lowest.
//! 4. Otherwise the reference price, clamped into the remaining candidates'
//!    `[lowest, highest]`.
//! 5. If no candidate has positive volume, nothing trades and the reference
//!    price stays.
//!
//! # Allocation at the clearing price `p*`
//!
//! The short side (the smaller of `D(p*)`, `S(p*)`) fills completely. The long
//! side fills in priority order — market orders first, then better limits —
//! until a *marginal* level is reached that the volume covers only in part.
//! With `R` lots left for it and `Q` its total quantity (`0 ≤ R < Q`), an order
//! of `q` lots at that level gets
//!
//! ```text
//! ⌊q · R / Q⌋   plus one lot if it wins a leftover,
//! ```
//!
//! where the `R − Σ⌊q·R/Q⌋` leftover lots (fewer than the level's orders) go
//! one each to the largest remainders `q·R mod Q`, ties broken by the smaller
//! [`tiebreak_hash`] (a keyed blake3 of the batch seed, market id and order id,
//! unpredictable before the seed is fixed), then the smaller order id. Never by
//! arrival time. Every fill is within one lot of the exact share `q·R/Q`.
//! Unfilled quantity does not rest: the next batch starts empty.
//!
//! # Cost
//!
//! Two passes over the orders (struct-of-arrays [`OrderColumns`]): pass 1
//! validates and buckets quantities per price level (a dense histogram over
//! the band, or a sorted sparse one when the band is wide), a sweep over the
//! levels finds the price, and pass 2 computes fills by comparing each order's
//! priority key with per-side thresholds. Only the marginal level does
//! divisions, and only remainder ties are hashed, found by selection rather
//! than a sort. Large markets split both passes across rayon threads
//! (per-thread histograms, summed), and markets clear in parallel; all sums
//! are integers, so every split gives the same bytes.
//!
//! The invariants that protect money are `assert!`ed in release builds:
//! bought = sold = volume, no fill beyond an order's quantity, fills only for
//! orders that accept the price.
//!
//! # Example
//!
//! ```
//! use sealbatch::clearing::{self, MarketParams, MarketInput, OrderColumns, PriceBand};
//! use sealbatch::order::Order;
//! use sealbatch::types::{MarketId, OrderId, Side, Tick};
//!
//! let order = |id, side, limit, qty| Order { id: OrderId(id), side, limit: Some(Tick(limit)), qty };
//! let orders: OrderColumns = [
//!     order(1, Side::Buy, 202, 400),
//!     order(2, Side::Buy, 201, 200),
//!     order(3, Side::Sell, 199, 300),
//!     order(4, Side::Sell, 198, 200),
//! ]
//! .into_iter()
//! .collect();
//! let config = MarketParams { market: MarketId(1), reference: Tick(200), band: PriceBand::new(Tick(1), Tick(1000)) };
//! let result = clearing::clear_batch(&[MarketInput { config, orders }], &[0; 32])?;
//! let market = &result.markets[0];
//! assert_eq!((market.price, market.volume, market.imbalance), (Some(Tick(201)), 500, 100));
//! assert_eq!(market.fill_of(OrderId(2)), Some(100));
//! # Ok::<(), clearing::ClearingError>(())
//! ```

mod allocation;
mod discovery;
mod error;
mod input;
mod ladder;
mod result;
pub mod synth;

use rayon::prelude::*;

pub use allocation::tiebreak_hash;
pub use error::ClearingError;
pub use input::{
    MarketInput, MarketParams, OrderColumns, PriceBand, TICK_MAX, TICK_MIN, canonical_batch,
};
pub use ladder::{DENSE_LEVELS_MAX, DENSE_LEVELS_MIN, Levels};
pub use result::{BatchResult, Fill, MarketResult, RESULT_DIGEST_CONTEXT, RESULT_ENCODING_TAG};

use discovery::Discovery;
use ladder::Ladder;

use crate::types::{Lots, MARKET_ORDERS_MAX, MARKETS_MAX};

/// The blake3 `derive_key` context that turns a batch seed into the
/// tie-break key.
pub const TIEBREAK_CONTEXT: &str = "sealbatch v1 clearing tiebreak";

/// A market with at least this many orders has its own passes split across
/// threads (smaller ones run on one thread, in parallel with other markets).
pub const PARALLEL_MARKET_ORDERS_MIN: usize = 1 << 17;

/// The tie-break key of a batch: `blake3::derive_key(TIEBREAK_CONTEXT, seed)`.
#[must_use]
pub fn tiebreak_key(seed: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(TIEBREAK_CONTEXT, seed)
}

/// Clears every market of a batch, in parallel on the current rayon pool.
///
/// Each market's orders must have strictly increasing ids (use
/// [`canonical_batch`] for arbitrary input); markets may come in any order and
/// the result lists them ascending by id. The result is bit-identical to
/// [`clear_batch_sequential`]'s.
///
/// # Errors
///
/// [`ClearingError::TooManyMarkets`], [`ClearingError::DuplicateMarket`], or
/// the first error of [`clear_market`] in market-id order.
///
/// # Panics
///
/// Never for any input. It panics only if one of the money invariants
/// checked in release builds fails (bought ≠ sold ≠ volume, a fill beyond an
/// order's quantity or limit, a price that is not the rule's): that would be
/// a bug, and stopping beats publishing a wrong result.
pub fn clear_batch(markets: &[MarketInput], seed: &[u8; 32]) -> Result<BatchResult, ClearingError> {
    clear_all(markets, seed, true)
}

/// [`clear_batch`] on the calling thread only, no rayon.
///
/// # Errors
///
/// As [`clear_batch`].
pub fn clear_batch_sequential(
    markets: &[MarketInput],
    seed: &[u8; 32],
) -> Result<BatchResult, ClearingError> {
    clear_all(markets, seed, false)
}

/// Clears one market (in parallel on the current rayon pool when it is
/// large). `seed` is the batch seed; see [`tiebreak_key`].
///
/// # Errors
///
/// [`ClearingError::EmptyBand`], [`ClearingError::BandOutOfRange`] or
/// [`ClearingError::ReferenceOutsideBand`] for the configuration; [`ClearingError::TooManyOrders`]; for the first
/// faulty order: [`ClearingError::OrderIdsNotIncreasing`],
/// [`ClearingError::DuplicateOrder`], [`ClearingError::ZeroQuantity`],
/// [`ClearingError::LimitOutsideBand`]; [`ClearingError::VolumeOverflow`] if
/// the volume would exceed `u64::MAX` lots.
///
/// # Panics
///
/// As [`clear_batch`]: only on a failed invariant, never for any input.
pub fn clear_market(market: &MarketInput, seed: &[u8; 32]) -> Result<MarketResult, ClearingError> {
    clear_market_with(market, seed, true, Levels::Auto)
}

/// [`clear_market`] with the execution choices spelled out: `parallel` allows
/// rayon, and `levels` picks how quantities are bucketed. Every choice gives
/// the same result; this exists for tests and benchmarks.
///
/// # Errors
///
/// As [`clear_market`].
pub fn clear_market_with(
    market: &MarketInput,
    seed: &[u8; 32],
    parallel: bool,
    levels: Levels,
) -> Result<MarketResult, ClearingError> {
    clear_one(market, &tiebreak_key(seed), parallel, levels)
}

fn clear_all(
    markets: &[MarketInput],
    seed: &[u8; 32],
    parallel: bool,
) -> Result<BatchResult, ClearingError> {
    if markets.len() > MARKETS_MAX {
        return Err(ClearingError::TooManyMarkets {
            count: markets.len(),
            max: MARKETS_MAX,
        });
    }
    let mut sorted: Vec<&MarketInput> = markets.iter().collect();
    sorted.sort_unstable_by_key(|m| m.config.market);
    if let Some(pair) = sorted
        .windows(2)
        .find(|pair| pair[0].config.market == pair[1].config.market)
    {
        return Err(ClearingError::DuplicateMarket {
            market: pair[1].config.market,
        });
    }
    let key = tiebreak_key(seed);
    let results: Vec<Result<MarketResult, ClearingError>> = if parallel {
        sorted
            .par_iter()
            .map(|m| clear_one(m, &key, true, Levels::Auto))
            .collect()
    } else {
        sorted
            .iter()
            .map(|m| clear_one(m, &key, false, Levels::Auto))
            .collect()
    };
    // The first error in market-id order, whatever finished first.
    let markets = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(BatchResult { markets })
}

fn clear_one(
    input: &MarketInput,
    key: &[u8; 32],
    parallel: bool,
    levels: Levels,
) -> Result<MarketResult, ClearingError> {
    let config = input.config;
    config.validate()?;
    let count = input.orders.len();
    if count > MARKET_ORDERS_MAX {
        return Err(ClearingError::TooManyOrders {
            market: config.market,
            count,
            max: MARKET_ORDERS_MAX,
        });
    }
    let parallel = parallel && count >= PARALLEL_MARKET_ORDERS_MIN;
    let ladder = Ladder::build(input, parallel, levels)?;
    let ids = input.orders.shared_ids();
    match discovery::discover(&ladder, config.reference) {
        Discovery::NoCross { imbalance } => Ok(MarketResult {
            market: config.market,
            price: None,
            volume: 0,
            imbalance,
            filled: vec![0; count],
            ids,
        }),
        Discovery::Cross {
            price,
            demand,
            supply,
        } => {
            let volume_wide = demand.min(supply);
            let volume =
                Lots::try_from(volume_wide).map_err(|_| ClearingError::VolumeOverflow {
                    market: config.market,
                    volume: volume_wide,
                    max: Lots::MAX,
                })?;
            let filled = allocation::allocate(input, &ladder, price, demand, supply, key, parallel);
            Ok(MarketResult {
                market: config.market,
                price: Some(price),
                volume,
                imbalance: discovery::signed(demand) - discovery::signed(supply),
                ids,
                filled,
            })
        }
    }
}

//! Pass 2: who gets what at the clearing price.
//!
//! Every order gets a 64-bit *priority key*, larger meaning served earlier on
//! its side: the limit for a buy, its bit complement for a sell (so that a
//! lower limit ranks higher). Market orders store the limit `u64::MAX` (buys)
//! or `0` (sells), so their key is `u64::MAX`, above every limit order's:
//! limits lie in `[TICK_MIN, TICK_MAX]` = `[1, u64::MAX − 1]`, so no limit
//! order has key `0` or `u64::MAX`. Given the price `p*` and, on the long
//! side, the *marginal* level (the first level, in priority order, that the
//! volume does not cover in full), each order's fill is decided by comparing
//! its key with two thresholds per side:
//!
//! - key > `full_above[side]`: filled completely;
//! - key = `marginal[side]`: shares the marginal level pro rata;
//! - otherwise nothing.
//!
//! On the short side `full_above` is one below the key of `p*` (every order
//! that accepts the price fills) and nothing is marginal (`0`, no key).

use rayon::prelude::*;

use super::input::{KIND_SELL, MarketInput};
use super::ladder::{CHUNK_ORDERS_MIN, Ladder, chunk_ranges};
use crate::types::{Lots, MARKET_ORDERS_MAX, MarketId, OrderId, Tick};

/// No order has this key.
const NO_KEY: u64 = 0;

/// Pro-rata work on at least this many marginal orders is split across
/// threads.
const PARALLEL_MARGINAL_MIN: usize = 1 << 14;

/// The priority key of an order or level of side `kind & KIND_SELL` with
/// (stored) limit `limit` (see the module docs).
#[inline]
fn key(kind: u8, limit: Tick) -> u64 {
    limit.get() ^ 0u64.wrapping_sub(u64::from(kind & KIND_SELL))
}

/// The key every market order of the side has.
const MARKET_KEY: u64 = u64::MAX;

/// The level on the long side that the volume only partly covers.
struct Marginal {
    /// 0 buy, 1 sell.
    side: usize,
    /// The level's priority key.
    key: u64,
    /// `R`: the lots left for the level once every better level is filled.
    share: u128,
    /// `Q`: the level's total quantity (`Q > R`).
    qty: u128,
}

/// The per-side thresholds of the module docs, and the price each fill is
/// checked against.
struct Thresholds {
    full_above: [u64; 2],
    marginal: [u64; 2],
    price: Tick,
}

/// What one chunk of pass 2 measured.
struct Tally {
    /// Lots offered by all orders, both sides.
    offered: u128,
    /// Lots filled per side (marginal orders not yet included).
    filled: [u128; 2],
    /// Some fill went to an order that does not accept the price.
    violation: bool,
    /// Positions of the marginal level's orders, ascending.
    marginal: Vec<u32>,
}

/// The fills of every order of `input` at `price`, in position order.
///
/// `demand` and `supply` are `D(price)` and `S(price)`, and their minimum (the
/// volume) fits in [`Lots`]. Asserts, in release builds too, that bought =
/// sold = volume, that no order fills beyond its quantity and that only
/// orders accepting `price` fill.
pub(crate) fn allocate(
    input: &MarketInput,
    ladder: &Ladder,
    price: Tick,
    demand: u128,
    supply: u128,
    tiebreak_key: &[u8; 32],
    parallel: bool,
) -> Vec<Lots> {
    let volume = demand.min(supply);
    // p* lies in [TICK_MIN, TICK_MAX], so its keys are at least 1.
    let accept_min = [key(0, price), key(KIND_SELL, price)];
    let mut thresholds = Thresholds {
        full_above: accept_min.map(|k| k - 1),
        marginal: [NO_KEY; 2],
        price,
    };
    let marginal = if demand == supply {
        None
    } else {
        let side = usize::from(supply > demand);
        let marginal = marginal_level(ladder, side, price, volume);
        assert!(
            marginal.key >= accept_min[side],
            "the marginal level must accept the clearing price"
        );
        thresholds.full_above[side] = marginal.key;
        thresholds.marginal[side] = marginal.key;
        Some(marginal)
    };

    let columns = &input.orders;
    let mut filled: Vec<Lots> = if parallel {
        // Zeroed by the threads rather than by one memset.
        let mut filled = Vec::new();
        (0..columns.len())
            .into_par_iter()
            .with_min_len(CHUNK_ORDERS_MIN)
            .map(|_| 0)
            .collect_into_vec(&mut filled);
        filled
    } else {
        vec![0; columns.len()]
    };
    let ranges = chunk_ranges(columns.len(), parallel);
    let tallies: Vec<Tally> = if ranges.len() == 1 {
        vec![fill_chunk(input, 0, &mut filled, &thresholds)]
    } else {
        let chunk_len = columns.len().div_ceil(ranges.len());
        filled
            .par_chunks_mut(chunk_len)
            .enumerate()
            .map(|(c, out)| fill_chunk(input, c * chunk_len, out, &thresholds))
            .collect()
    };
    let mut bought_sold = [0u128; 2];
    let mut offered = 0u128;
    let mut violation = false;
    let mut marginal_positions = Vec::new();
    for tally in tallies {
        offered += tally.offered;
        bought_sold[0] += tally.filled[0];
        bought_sold[1] += tally.filled[1];
        violation |= tally.violation;
        marginal_positions.extend(tally.marginal);
    }
    if let Some(marginal) = marginal {
        let shared = pro_rata(
            input,
            &marginal,
            &marginal_positions,
            &mut filled,
            tiebreak_key,
            parallel,
        );
        bought_sold[marginal.side] += shared;
    }
    assert!(
        offered == ladder.total_qty(),
        "market {}: the orders do not add up to their histogram",
        input.config.market
    );
    assert!(
        !violation,
        "market {}: a fill went to an order that does not accept {price}",
        input.config.market
    );
    assert!(
        bought_sold[0] == volume && bought_sold[1] == volume,
        "market {}: bought {} and sold {} differ from volume {volume}",
        input.config.market,
        bought_sold[0],
        bought_sold[1]
    );
    filled
}

/// Walks the long side in priority order (market orders, then the best limit
/// down to `price`) until a level is not covered by what remains of `volume`.
fn marginal_level(ladder: &Ladder, side: usize, price: Tick, volume: u128) -> Marginal {
    let kind = if side == 1 { KIND_SELL } else { 0 };
    let mut remaining = volume;
    let market_qty = ladder.market_qty(side);
    if market_qty > remaining {
        return Marginal {
            side,
            key: MARKET_KEY,
            share: remaining,
            qty: market_qty,
        };
    }
    remaining -= market_qty;
    let levels = ladder.levels();
    let mut walk = |level: usize| {
        let qty = ladder.qty(level, side);
        if qty > remaining {
            return Some(Marginal {
                side,
                key: key(kind, ladder.tick(level)),
                share: remaining,
                qty,
            });
        }
        remaining -= qty;
        None
    };
    let found = if side == 0 {
        (0..levels)
            .rev()
            .take_while(|&level| ladder.tick(level) >= price)
            .find_map(&mut walk)
    } else {
        (0..levels)
            .take_while(|&level| ladder.tick(level) <= price)
            .find_map(&mut walk)
    };
    // The long side accepting `price` holds more than `volume`, so some level
    // is not covered.
    match found {
        Some(marginal) => marginal,
        None => panic!("no marginal level on the long side at {price}"),
    }
}

/// Orders per block of [`fill_chunk`]: small enough that a block's columns
/// are still in L1 when its sums are taken, and at most 2^11 so that its
/// split sums (of 32-bit halves) stay below 2^43.
const FILL_BLOCK_ORDERS: usize = 2048;

// Split sums of a block cannot overflow, and positions fit in u32.
const _: () = assert!(FILL_BLOCK_ORDERS <= 1 << 11);
const _: () = assert!(MARKET_ORDERS_MAX <= u32::MAX as usize);

/// The hot loop of pass 2 over the orders from position `start` on.
///
/// Each block is done in two loops: the first decides every fill with
/// conditional moves (no loop-carried value depends on a fill, so LLVM keeps
/// them branch-free; a branch would mispredict half the time on random order
/// flow); the second, vectorisable, adds up the fills per side.
fn fill_chunk(input: &MarketInput, start: usize, out: &mut [Lots], th: &Thresholds) -> Tally {
    let range = start..start + out.len();
    let columns = &input.orders;
    let kinds = &columns.kinds()[range.clone()];
    let limits = &columns.limits()[range.clone()];
    let qtys = &columns.qtys()[range];
    let [full_buy, full_sell] = th.full_above;
    let [marginal_buy, marginal_sell] = th.marginal;
    let price = th.price;
    let mut tally = Tally {
        offered: 0,
        filled: [0; 2],
        violation: false,
        marginal: Vec::new(),
    };
    let mut violation = false;
    let mut offered = 0u128;
    for block in (0..out.len()).step_by(FILL_BLOCK_ORDERS) {
        let end = (block + FILL_BLOCK_ORDERS).min(out.len());
        let kinds = &kinds[block..end];
        let limits = &limits[block..end];
        let qtys = &qtys[block..end];
        let out = &mut out[block..end];
        // The position in the block, counted by hand: `enumerate` checks
        // its counter for overflow on every order (a block has at most
        // 2^11, so the wrapping addition never wraps).
        let mut offset = 0usize;
        for (((&kind, &limit), &qty), fill) in
            kinds.iter().zip(limits).zip(qtys).zip(out.iter_mut())
        {
            let sell = kind & KIND_SELL != 0;
            let k = key(kind, limit);
            let full = k > if sell { full_sell } else { full_buy };
            *fill = if full { qty } else { 0 };
            // The offered total checks pass 2 against the histogram; as a
            // second use of `qty` it also stops LLVM from turning the line
            // above into a branch around the load.
            // No overflow: at most 2^27 quantities below 2^64 (< 2^91).
            offered = offered.wrapping_add(u128::from(qty));
            // Checked against the order's own terms, independently of keys
            // (a market order's stored limit accepts every tick).
            let accepts = if sell { limit <= price } else { limit >= price };
            violation |= full & !accepts;
            if k == if sell { marginal_sell } else { marginal_buy } {
                // Positions fit in u32: MARKET_ORDERS_MAX < 2^32.
                tally.marginal.push((start + block + offset) as u32);
            }
            offset = offset.wrapping_add(1);
        }
        // Sums of 32-bit halves: a block has at most FILL_BLOCK_ORDERS
        // (2^11) terms below 2^32 each, so every sum stays below 2^43 and
        // the wrapping additions (which vectorise; checked ones do not)
        // never wrap.
        let mut halves = [0u64; 4];
        for (&f, &kind) in out.iter().zip(kinds) {
            let sold = f & 0u64.wrapping_sub(u64::from(kind & KIND_SELL));
            halves[0] = halves[0].wrapping_add(f & 0xffff_ffff);
            halves[1] = halves[1].wrapping_add(f >> 32);
            halves[2] = halves[2].wrapping_add(sold & 0xffff_ffff);
            halves[3] = halves[3].wrapping_add(sold >> 32);
        }
        debug_assert!(halves.iter().all(|&h| h < 1 << 43));
        let wide = |low: u64, high: u64| u128::from(low) + (u128::from(high) << 32);
        let total = wide(halves[0], halves[1]);
        let sold = wide(halves[2], halves[3]);
        tally.filled[0] += total - sold;
        tally.filled[1] += sold;
    }
    tally.violation = violation;
    tally.offered = offered;
    tally
}

/// Shares the marginal level: each order gets `⌊q·R/Q⌋`, then the leftover
/// lots go one each to the largest remainders `q·R mod Q`, ties broken by the
/// smaller keyed hash, then the smaller id. Returns the lots handed out
/// (asserted to be `R`).
fn pro_rata(
    input: &MarketInput,
    marginal: &Marginal,
    positions: &[u32],
    filled: &mut [Lots],
    tiebreak_key: &[u8; 32],
    parallel: bool,
) -> u128 {
    let qtys = input.orders.qtys();
    let share = marginal.share;
    let level_qty = marginal.qty;
    // (remainder, position, floor share) per marginal order.
    let split = |&position: &u32| {
        let product = u128::from(qtys[position as usize]) * share;
        (product % level_qty, position, product / level_qty)
    };
    let mut parts: Vec<(u128, u32, u128)> = if parallel && positions.len() >= PARALLEL_MARGINAL_MIN
    {
        positions
            .par_iter()
            .with_min_len(CHUNK_ORDERS_MIN / 16)
            .map(split)
            .collect()
    } else {
        positions.iter().map(split).collect()
    };
    let mut level_total = 0u128;
    let mut handed = 0u128;
    for &(_, position, floor) in &parts {
        let p = position as usize;
        level_total += u128::from(qtys[p]);
        handed += floor;
        // floor < q because R < Q, so this fits in Lots.
        filled[p] = floor as Lots;
    }
    assert!(
        level_total == level_qty && share < level_qty,
        "market {}: the marginal level does not match its histogram",
        input.config.market
    );
    // Σ⌊q·R/Q⌋ > R - (number of orders), so fewer leftovers than orders.
    let leftover = (share - handed) as usize;
    assert!(leftover < parts.len().max(1));
    if leftover > 0 {
        let winners = leftover_winners(input, &mut parts, leftover, tiebreak_key, parallel);
        for position in winners {
            let p = position as usize;
            filled[p] += 1;
            assert!(filled[p] <= qtys[p], "pro rata beyond an order's quantity");
        }
        handed += leftover as u128;
    }
    handed
}

/// The positions of the `leftover` marginal orders that get one more lot.
///
/// Selection, not a sort: first the `leftover`-th largest remainder `t`;
/// everyone above `t` wins; among those exactly at `t`, the winners are the
/// smallest `(hash, id)`. Hashes are computed only for that tie group.
fn leftover_winners(
    input: &MarketInput,
    parts: &mut [(u128, u32, u128)],
    leftover: usize,
    tiebreak_key: &[u8; 32],
    parallel: bool,
) -> Vec<u32> {
    parts.select_nth_unstable_by(leftover - 1, |a, b| b.0.cmp(&a.0));
    let threshold = parts[leftover - 1].0;
    let mut winners: Vec<u32> = parts
        .iter()
        .filter(|part| part.0 > threshold)
        .map(|part| part.1)
        .collect();
    let ties: Vec<u32> = parts
        .iter()
        .filter(|part| part.0 == threshold)
        .map(|part| part.1)
        .collect();
    let needed = leftover - winners.len();
    if needed == ties.len() {
        winners.extend(ties);
        return winners;
    }
    let market = input.config.market;
    let ids = input.orders.ids();
    let hash = |&position: &u32| {
        let id = ids[position as usize];
        (tiebreak_hash(tiebreak_key, market, id), id, position)
    };
    let mut ranked: Vec<([u8; 32], OrderId, u32)> =
        if parallel && ties.len() >= PARALLEL_MARGINAL_MIN {
            ties.par_iter().map(hash).collect()
        } else {
            ties.iter().map(hash).collect()
        };
    ranked.select_nth_unstable_by(needed - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    winners.extend(ranked[..needed].iter().map(|r| r.2));
    winners
}

/// The tie-break hash of one order: `blake3::keyed_hash(key, market id u32 LE
/// ‖ order id u64 LE)` with `key = blake3::derive_key(TIEBREAK_CONTEXT, seed)`.
#[must_use]
pub fn tiebreak_hash(tiebreak_key: &[u8; 32], market: MarketId, order: OrderId) -> [u8; 32] {
    let mut message = [0u8; 12];
    message[..4].copy_from_slice(&market.0.to_le_bytes());
    message[4..].copy_from_slice(&order.0.to_le_bytes());
    *blake3::keyed_hash(tiebreak_key, &message).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::{KIND_SELL, MARKET_KEY, NO_KEY, key};
    use crate::clearing::input::{TICK_MAX, TICK_MIN};
    use crate::types::Tick;

    /// Larger keys are served first on their side: market orders, then
    /// higher buy limits / lower sell limits; no limit order has `NO_KEY` or
    /// `MARKET_KEY`.
    #[test]
    fn priority_keys_order_each_side() {
        assert_eq!(key(0, Tick::MAX), MARKET_KEY);
        assert_eq!(key(KIND_SELL, Tick(0)), MARKET_KEY);
        assert!(key(0, Tick(101)) > key(0, Tick(100)));
        assert!(key(KIND_SELL, Tick(99)) > key(KIND_SELL, Tick(100)));
        for kind in [0, KIND_SELL] {
            for tick in [TICK_MIN, TICK_MAX] {
                assert!(key(kind, tick) != NO_KEY && key(kind, tick) != MARKET_KEY);
            }
        }
    }
}

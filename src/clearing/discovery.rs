//! Price discovery: one sweep over the ladder applies the ladder of rules
//! (maximum volume, minimum imbalance, market pressure, reference price).

use std::cmp::Reverse;

use super::ladder::{Ladder, Sums};
use crate::types::Tick;

/// What price discovery found for one market.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Discovery {
    /// No candidate price has positive volume.
    NoCross {
        /// `D(r) - S(r)` at the reference price `r`.
        imbalance: i128,
    },
    /// The market trades at `price`.
    Cross {
        /// The clearing price.
        price: Tick,
        /// `D(price)`.
        demand: u128,
        /// `S(price)`.
        supply: u128,
    },
}

/// The best candidates seen so far: all have `volume` and `gap`, and they
/// span `[low, high]`.
struct Best {
    volume: u128,
    gap: u128,
    low: Tick,
    high: Tick,
    /// `(D, S)` at `low` and at `high`.
    at_low: (u128, u128),
    at_high: (u128, u128),
    all_buy_excess: bool,
    all_sell_excess: bool,
}

/// Applies the clearing rule (see the module docs and `spec/clearing.md`).
///
/// The candidates are the levels holding a limit order and the reference
/// price. Sweeping upwards, `S` grows by each level's sells and `D` shrinks by
/// the buys of the level below, so one pass finds every candidate's volume
/// and imbalance. The best candidates form one contiguous run (volume is
/// unimodal and `D - S` non-increasing in the price), so keeping its ends,
/// the signs seen, and `(D, S)` at the ends and at the reference is enough.
pub(crate) fn discover(ladder: &Ladder, reference: Tick) -> Discovery {
    // One monomorphised sweep per histogram width, so the hot loop has no
    // per-level dispatch.
    match ladder.sums() {
        Sums::Narrow(sums) => sweep(ladder, reference, |i| u128::from(sums[i])),
        Sums::Wide(sums) => sweep(ladder, reference, |i| sums[i]),
    }
}

fn sweep(ladder: &Ladder, reference: Tick, sum: impl Fn(usize) -> u128) -> Discovery {
    let levels = ladder.levels();
    let mut demand_total = sum(2 * levels);
    for level in 0..levels {
        demand_total += sum(2 * level);
    }
    let mut supply = sum(2 * levels + 1);
    let mut buys_below = 0u128;
    let mut best: Option<Best> = None;
    let mut at_reference = None;
    for level in 0..levels {
        let buy = sum(2 * level);
        let sell = sum(2 * level + 1);
        supply += sell;
        let demand = demand_total - buys_below;
        buys_below += buy;
        let tick = ladder.tick(level);
        if tick == reference {
            at_reference = Some((demand, supply));
        } else if buy == 0 && sell == 0 {
            continue;
        }
        let volume = demand.min(supply);
        if volume == 0 {
            continue;
        }
        let gap = demand.abs_diff(supply);
        let buy_excess = demand > supply;
        let sell_excess = demand < supply;
        match &mut best {
            Some(b) if (volume, Reverse(gap)) == (b.volume, Reverse(b.gap)) => {
                b.high = tick;
                b.at_high = (demand, supply);
                b.all_buy_excess &= buy_excess;
                b.all_sell_excess &= sell_excess;
            }
            Some(b) if (volume, Reverse(gap)) < (b.volume, Reverse(b.gap)) => {}
            _ => {
                best = Some(Best {
                    volume,
                    gap,
                    low: tick,
                    high: tick,
                    at_low: (demand, supply),
                    at_high: (demand, supply),
                    all_buy_excess: buy_excess,
                    all_sell_excess: sell_excess,
                });
            }
        }
    }
    // The reference is always a level (dense: every tick of the band is;
    // sparse: it is inserted), so the sweep saw it.
    let Some(at_reference) = at_reference else {
        panic!("the reference price {reference} is not a level of the ladder");
    };
    let Some(best) = best else {
        let (demand, supply) = at_reference;
        return Discovery::NoCross {
            imbalance: signed(demand) - signed(supply),
        };
    };
    let (price, (demand, supply)) = if best.all_buy_excess {
        (best.high, best.at_high)
    } else if best.all_sell_excess || reference < best.low {
        (best.low, best.at_low)
    } else if reference > best.high {
        (best.high, best.at_high)
    } else {
        (reference, at_reference)
    };
    // The chosen price is one of the best candidates (the run is contiguous
    // and the reference is a candidate); a failure here is a bug, and trading
    // at a worse price than the rule's must not happen.
    assert!(
        demand.min(supply) == best.volume && demand.abs_diff(supply) == best.gap,
        "clearing price {price} is not among the best candidates"
    );
    Discovery::Cross {
        price,
        demand,
        supply,
    }
}

/// A quantity sum as a signed number: sums stay below 2^91 (see the ladder's
/// bound), far inside `i128`.
pub(crate) fn signed(sum: u128) -> i128 {
    sum as i128
}

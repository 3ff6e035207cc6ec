//! Pass 1: validate every order and bucket the quantities by price level.
//!
//! A *ladder* is the histogram of one market's orders: for each price level
//! the total buy and sell quantity with that limit, plus the market orders of
//! each side. It is *dense* (one level per tick of the band, no sort needed)
//! when the band is narrow compared with the number of orders, and *sparse*
//! (one level per distinct limit price, found by sorting) otherwise. Both give
//! the same result; only the cost differs. A wide band whose orders sit close
//! together (the usual case: near the reference price) is bucketed densely
//! over just the ticks its limits span.
//!
//! Validation is fused into the histogram pass as branch-free flags; if any
//! chunk is flagged, a sequential scan names the first faulty order, so the
//! error is the same whatever the parallel split.

use std::ops::Range;

use rayon::prelude::*;

use super::ClearingError;
use super::input::{KIND_MARKET, KIND_SELL, MarketInput, OrderColumns, PriceBand};
use crate::types::{MARKET_ORDERS_MAX, Tick};

/// How the engine buckets quantities by price. All choices give identical
/// results; they exist for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Levels {
    /// Dense when the band has at most [`DENSE_LEVELS_MAX`] ticks and at most
    /// `DENSE_TICKS_PER_ORDER` × orders + [`DENSE_LEVELS_MIN`] ticks; else
    /// dense over just the ticks from the lowest to the highest limit (and
    /// the reference) if that span passes the same test; sparse otherwise.
    #[default]
    Auto,
    /// One level per tick of the band, or of the span of the limits when the
    /// band has more than [`DENSE_LEVELS_MAX`] ticks (sparse when both are
    /// wider).
    Dense,
    /// One level per distinct limit price (and the reference price), by sorting.
    Sparse,
}

/// The widest band (in ticks) the engine buckets densely: the histogram is
/// 32 bytes per tick, so this keeps one within 8 MiB.
pub const DENSE_LEVELS_MAX: u64 = 1 << 18;

/// A band this narrow is always bucketed densely (under [`Levels::Auto`]):
/// zeroing and sweeping a thousand levels is cheaper than any sort.
pub const DENSE_LEVELS_MIN: u64 = 1 << 10;

/// Under [`Levels::Auto`], dense while the band has at most this many ticks
/// per order (beyond [`DENSE_LEVELS_MIN`]); measured cross-over: about
/// 4 ticks per order on the benchmark shape.
const DENSE_TICKS_PER_ORDER: u64 = 5;

/// The smallest share of orders one parallel task works on.
pub(crate) const CHUNK_ORDERS_MIN: usize = 1 << 16;

// Sums of up to MARKET_ORDERS_MAX quantities of up to 2^64 - 1 lots fit in
// u128 and even in i128, so demand - supply never overflows.
const _: () = assert!(MARKET_ORDERS_MAX as u128 <= 1 << 62);

/// One market's histogram.
pub(crate) struct Ladder {
    /// Sparse: the tick of each level, ascending. Dense: empty, and level `l`
    /// is tick `min + l`.
    ticks: Vec<Tick>,
    min: Tick,
    levels: usize,
    /// `2 * (levels + 1)` sums: `[2l]` buys and `[2l + 1]` sells with their
    /// limit at level `l`; `[2 * levels + side]` the market orders.
    hist: Sums,
}

/// Histogram sums: `u64` while they fit (half the memory, and the common
/// case by far), `u128` otherwise.
pub(crate) enum Sums {
    /// Every sum fits in `u64`.
    Narrow(Vec<u64>),
    /// Some sum does not.
    Wide(Vec<u128>),
}

impl Sums {
    fn get(&self, index: usize) -> u128 {
        match self {
            Sums::Narrow(sums) => u128::from(sums[index]),
            Sums::Wide(sums) => sums[index],
        }
    }

    fn total(&self) -> u128 {
        match self {
            Sums::Narrow(sums) => sums.iter().map(|&s| u128::from(s)).sum(),
            Sums::Wide(sums) => sums.iter().sum(),
        }
    }

    fn widen(self) -> Vec<u128> {
        match self {
            Sums::Narrow(sums) => sums.into_iter().map(u128::from).collect(),
            Sums::Wide(sums) => sums,
        }
    }

    /// The element-wise sum of two histograms of the same length.
    fn merge(self, other: Sums) -> Sums {
        match (self, other) {
            (Sums::Narrow(mut a), Sums::Narrow(b)) => {
                let mut overflow = false;
                for (x, y) in a.iter_mut().zip(&b) {
                    let (sum, carry) = x.overflowing_add(*y);
                    *x = sum;
                    overflow |= carry;
                }
                if !overflow {
                    return Sums::Narrow(a);
                }
                // Undo (wrapping) and add again wide.
                for (x, y) in a.iter_mut().zip(&b) {
                    *x = x.wrapping_sub(*y);
                }
                Sums::Narrow(a).merge_wide(Sums::Narrow(b))
            }
            (a, b) => a.merge_wide(b),
        }
    }

    fn merge_wide(self, other: Sums) -> Sums {
        let mut a = self.widen();
        for (x, y) in a.iter_mut().zip(other.widen()) {
            *x += y;
        }
        Sums::Wide(a)
    }
}

impl Ladder {
    /// Validates `input`'s orders and buckets them.
    pub(crate) fn build(
        input: &MarketInput,
        parallel: bool,
        levels: Levels,
    ) -> Result<Ladder, ClearingError> {
        let orders = input.orders.len() as u64;
        let fits = |width: u64| match levels {
            Levels::Dense => width < DENSE_LEVELS_MAX,
            Levels::Sparse => false,
            Levels::Auto => {
                width < DENSE_LEVELS_MAX
                    && width
                        < orders
                            .saturating_mul(DENSE_TICKS_PER_ORDER)
                            .saturating_add(DENSE_LEVELS_MIN)
            }
        };
        let band = input.config.band;
        if fits(band.width()) {
            return build_dense(input, parallel, band);
        }
        if levels != Levels::Sparse {
            // A wide band, but the limits may still lie close together (near
            // the reference, as they usually do): bucket densely over just
            // the ticks they span.
            if let Some(span) = limit_span(input, parallel)
                && fits(span.width())
            {
                return build_dense(input, parallel, span);
            }
        }
        build_sparse(input, parallel)
    }
    /// How many price levels.
    pub(crate) fn levels(&self) -> usize {
        self.levels
    }

    /// The tick of level `level`.
    pub(crate) fn tick(&self, level: usize) -> Tick {
        if self.ticks.is_empty() {
            self.min + level as u64
        } else {
            self.ticks[level]
        }
    }

    /// The quantity of `side` (0 buy, 1 sell) limited at level `level`.
    pub(crate) fn qty(&self, level: usize, side: usize) -> u128 {
        self.hist.get(2 * level + side)
    }

    /// The quantity of `side`'s market orders.
    pub(crate) fn market_qty(&self, side: usize) -> u128 {
        self.hist.get(2 * self.levels + side)
    }

    /// The quantity of all orders, both sides.
    pub(crate) fn total_qty(&self) -> u128 {
        self.hist.total()
    }

    /// The histogram's sums.
    pub(crate) fn sums(&self) -> &Sums {
        &self.hist
    }
}

/// Splits `0..n` into the ranges one task each works on: one range when
/// sequential, else a few per thread but none below [`CHUNK_ORDERS_MIN`].
/// (Any split gives the same sums: the histograms are integer additions.)
pub(crate) fn chunk_ranges(n: usize, parallel: bool) -> Vec<Range<usize>> {
    let chunks = if parallel {
        (rayon::current_num_threads() * 2)
            .min(n / CHUNK_ORDERS_MIN)
            .max(1)
    } else {
        1
    };
    (0..chunks)
        .map(|c| c * n / chunks..(c + 1) * n / chunks)
        .collect()
}

/// Whether any id in `range` fails to exceed the one before it (the one just
/// before the range included).
fn ids_flagged(columns: &OrderColumns, range: &Range<usize>) -> bool {
    let ids = &columns.ids()[range.start.saturating_sub(1)..range.end];
    ids.windows(2)
        .fold(false, |flag, pair| flag | (pair[0] >= pair[1]))
}

/// The smallest band holding the reference and every limit, if every limit
/// lies in the market's band (otherwise `None`, and the sparse path reports
/// the fault).
fn limit_span(input: &MarketInput, parallel: bool) -> Option<PriceBand> {
    let columns = &input.orders;
    let reference = input.config.reference;
    let span = |range: &Range<usize>| {
        let kinds = &columns.kinds()[range.clone()];
        let limits = &columns.limits()[range.clone()];
        let mut low = reference;
        let mut high = reference;
        for (&kind, &limit) in kinds.iter().zip(limits) {
            let market = kind & KIND_MARKET != 0;
            low = low.min(if market { reference } else { limit });
            high = high.max(if market { reference } else { limit });
        }
        (low, high)
    };
    let ranges = chunk_ranges(columns.len(), parallel);
    let (low, high) = if ranges.len() == 1 {
        span(&ranges[0])
    } else {
        ranges.par_iter().map(span).reduce(
            || (reference, reference),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        )
    };
    let band = input.config.band;
    (band.contains(low) && band.contains(high)).then_some(PriceBand::new(low, high))
}

/// Buckets densely over `span`, which holds the reference and, for a valid
/// market, every limit (an order limited outside `span` is flagged as outside
/// the band: `span` is either the band or lies within it and covers every
/// limit).
fn build_dense(
    input: &MarketInput,
    parallel: bool,
    span: PriceBand,
) -> Result<Ladder, ClearingError> {
    let band = span;
    // Dense only below DENSE_LEVELS_MAX ticks, so this fits in usize.
    let levels = band.width() as usize + 1;
    let hist_len = 2 * (levels + 1);
    let columns = &input.orders;
    let ranges = chunk_ranges(columns.len(), parallel);
    let chunk = |range: &Range<usize>| {
        let mut narrow = vec![0u64; hist_len];
        match dense_chunk_narrow(columns, range, band, &mut narrow) {
            Some(ok) => (Sums::Narrow(narrow), ok),
            // Some level's sum passed u64::MAX in this chunk: redo it wide.
            None => {
                let mut wide = vec![0u128; hist_len];
                let ok = dense_chunk(columns, range, band, &mut wide);
                (Sums::Wide(wide), ok)
            }
        }
    };
    let (hist, ok) = if ranges.len() == 1 {
        chunk(&ranges[0])
    } else {
        ranges
            .par_iter()
            .map(chunk)
            .reduce_with(|(a, ok_a), (b, ok_b)| (a.merge(b), ok_a && ok_b))
            .unwrap_or_else(|| (Sums::Narrow(vec![0; hist_len]), true))
    };
    if !ok {
        return Err(first_error(input));
    }
    Ok(Ladder {
        ticks: Vec::new(),
        min: band.min,
        levels,
        hist,
    })
}

/// The hot loop: flags bad orders without branching and adds each quantity
/// into its level. A bad order's quantity lands in the market slot; the
/// histogram is then thrown away.
fn dense_chunk(
    columns: &OrderColumns,
    range: &Range<usize>,
    band: PriceBand,
    hist: &mut [u128],
) -> bool {
    let mut bad = ids_flagged(columns, range);
    let width = band.width();
    let market_level = width as usize + 1;
    let kinds = &columns.kinds()[range.clone()];
    let limits = &columns.limits()[range.clone()];
    let qtys = &columns.qtys()[range.clone()];
    for ((&kind, &limit), &qty) in kinds.iter().zip(limits).zip(qtys) {
        let offset = limit.get().wrapping_sub(band.min.get());
        let market = kind & KIND_MARKET != 0;
        let outside = !market & (offset > width);
        bad |= outside | (qty == 0);
        let level = if market | outside {
            market_level
        } else {
            offset as usize
        };
        let slot = &mut hist[slot(level, kind)];
        // No overflow: a market has at most MARKET_ORDERS_MAX (2^27)
        // quantities below 2^64, whose sum stays below 2^91.
        *slot = slot.wrapping_add(u128::from(qty));
    }
    !bad
}

// The slot's or is its addition only while the sell bit is the lowest.
const _: () = assert!(KIND_SELL == 1);

/// The histogram slot of `kind`'s side at level `level`: `2·level + side`,
/// written as a shift and an or (each level has two slots, so the or is
/// the addition), which has no overflow to check: every level is below
/// [`DENSE_LEVELS_MAX`] + 2 (dense) or MARKET_ORDERS_MAX + 2 (sparse),
/// both far below `usize::MAX / 2`.
#[inline]
fn slot(level: usize, kind: u8) -> usize {
    debug_assert!(level < usize::MAX >> 1);
    (level << 1) | usize::from(kind & KIND_SELL)
}

/// [`dense_chunk`] with `u64` sums: half the memory traffic of the
/// read-modify-write that dominates pass 1. `None` if any sum overflowed
/// (then the caller redoes the chunk with `u128` sums).
fn dense_chunk_narrow(
    columns: &OrderColumns,
    range: &Range<usize>,
    band: PriceBand,
    hist: &mut [u64],
) -> Option<bool> {
    let mut bad = ids_flagged(columns, range);
    let mut overflow = false;
    let width = band.width();
    let market_level = width as usize + 1;
    let kinds = &columns.kinds()[range.clone()];
    let limits = &columns.limits()[range.clone()];
    let qtys = &columns.qtys()[range.clone()];
    for ((&kind, &limit), &qty) in kinds.iter().zip(limits).zip(qtys) {
        let offset = limit.get().wrapping_sub(band.min.get());
        let market = kind & KIND_MARKET != 0;
        let outside = !market & (offset > width);
        bad |= outside | (qty == 0);
        let level = if market | outside {
            market_level
        } else {
            offset as usize
        };
        let slot = &mut hist[slot(level, kind)];
        let (sum, carry) = slot.overflowing_add(qty);
        *slot = sum;
        overflow |= carry;
    }
    (!overflow).then_some(!bad)
}

fn build_sparse(input: &MarketInput, parallel: bool) -> Result<Ladder, ClearingError> {
    let band = input.config.band;
    let columns = &input.orders;
    let ranges = chunk_ranges(columns.len(), parallel);
    // Pass 1a: validate and collect the limit prices.
    let collect = |range: &Range<usize>| {
        let mut bad = ids_flagged(columns, range);
        let mut ticks = Vec::with_capacity(range.len());
        let kinds = &columns.kinds()[range.clone()];
        let limits = &columns.limits()[range.clone()];
        let qtys = &columns.qtys()[range.clone()];
        for ((&kind, &limit), &qty) in kinds.iter().zip(limits).zip(qtys) {
            bad |= qty == 0;
            if kind & KIND_MARKET == 0 {
                bad |= !band.contains(limit);
                ticks.push(limit);
            }
        }
        (ticks, !bad)
    };
    let parts: Vec<(Vec<Tick>, bool)> = if ranges.len() == 1 {
        ranges.iter().map(collect).collect()
    } else {
        ranges.par_iter().map(collect).collect()
    };
    if parts.iter().any(|(_, ok)| !ok) {
        return Err(first_error(input));
    }
    let mut ticks: Vec<Tick> = Vec::with_capacity(parts.iter().map(|(t, _)| t.len()).sum());
    for (part, _) in parts {
        ticks.extend(part);
    }
    // The reference price is a candidate too.
    ticks.push(input.config.reference);
    if parallel {
        ticks.par_sort_unstable();
    } else {
        ticks.sort_unstable();
    }
    ticks.dedup();
    let levels = ticks.len();
    let hist_len = 2 * (levels + 1);
    // Pass 1b: bucket by binary search.
    let chunk = |range: &Range<usize>| {
        let mut hist = vec![0u128; hist_len];
        let kinds = &columns.kinds()[range.clone()];
        let limits = &columns.limits()[range.clone()];
        let qtys = &columns.qtys()[range.clone()];
        for ((&kind, &limit), &qty) in kinds.iter().zip(limits).zip(qtys) {
            let level = if kind & KIND_MARKET != 0 {
                levels
            } else {
                ticks.partition_point(|&tick| tick < limit)
            };
            let slot = &mut hist[slot(level, kind)];
            // No overflow: at most 2^27 quantities below 2^64 (< 2^91).
            *slot = slot.wrapping_add(u128::from(qty));
        }
        hist
    };
    let hist = if ranges.len() == 1 {
        chunk(&ranges[0])
    } else {
        ranges
            .par_iter()
            .map(chunk)
            .reduce_with(|mut sum, part| {
                for (s, p) in sum.iter_mut().zip(&part) {
                    *s += p;
                }
                sum
            })
            .unwrap_or_else(|| vec![0u128; hist_len])
    };
    Ok(Ladder {
        ticks,
        min: band.min,
        levels,
        hist: Sums::Wide(hist),
    })
}

/// The first fault in position order (= id order, up to the first id that is
/// out of order). Called only when a pass flagged the market.
fn first_error(input: &MarketInput) -> ClearingError {
    let market = input.config.market;
    let band = input.config.band;
    let columns = &input.orders;
    let ids = columns.ids();
    for index in 0..columns.len() {
        let order = ids[index];
        if index > 0 {
            let previous = ids[index - 1];
            if previous == order {
                return ClearingError::DuplicateOrder { market, order };
            }
            if previous > order {
                return ClearingError::OrderIdsNotIncreasing {
                    market,
                    order,
                    previous,
                };
            }
        }
        if columns.qtys()[index] == 0 {
            return ClearingError::ZeroQuantity { market, order };
        }
        let limit = columns.limits()[index];
        if columns.kinds()[index] & KIND_MARKET == 0 && !band.contains(limit) {
            return ClearingError::LimitOutsideBand {
                market,
                order,
                limit,
                min: band.min,
                max: band.max,
            };
        }
    }
    // The passes flag exactly the faults checked above.
    panic!("market {market}: a clearing pass flagged a fault that the scan cannot find");
}

#[cfg(test)]
mod tests {
    use super::Sums;

    #[test]
    fn merging_narrow_sums_widens_on_overflow() {
        let a = Sums::Narrow(vec![1, u64::MAX, 5]);
        let b = Sums::Narrow(vec![2, 3, 0]);
        let merged = a.merge(b);
        assert!(matches!(merged, Sums::Wide(_)));
        let values: Vec<u128> = (0..3).map(|i| merged.get(i)).collect();
        assert_eq!(values, [3, u128::from(u64::MAX) + 3, 5]);
        let narrow = Sums::Narrow(vec![1, 2]).merge(Sums::Narrow(vec![3, 4]));
        assert!(matches!(narrow, Sums::Narrow(ref v) if v == &[4, 6]));
        let mixed = Sums::Wide(vec![1]).merge(Sums::Narrow(vec![u64::MAX]));
        assert_eq!(mixed.total(), u128::from(u64::MAX) + 1);
    }

    #[test]
    fn chunks_cover_the_range_once() {
        for n in [0, 1, 65_535, 1 << 17, 1_000_003] {
            for parallel in [false, true] {
                let ranges = super::chunk_ranges(n, parallel);
                assert_eq!(ranges.first().map(|r| r.start), Some(0));
                assert_eq!(ranges.last().map(|r| r.end), Some(n));
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
    }
}

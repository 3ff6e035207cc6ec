//! Property tests over thousands of small random batches: the engine against
//! a brute-force reference written straight from `spec/clearing.md`, and the
//! invariants of DESIGN.md.

use proptest::prelude::*;
use sealbatch::clearing::{
    self, BatchResult, ClearingError, Levels, MarketInput, MarketParams, PriceBand,
    canonical_batch, synth,
};
use sealbatch::codec::Encode;
use sealbatch::order::Order;
use sealbatch::types::{MarketId, OrderId, Side, Tick};

/// One market's orders before ids are assigned: (side, limit offset, qty).
type RawOrder = (bool, Option<u64>, u64);

fn raw_market() -> impl Strategy<Value = (u64, u64, u64, Vec<RawOrder>)> {
    // Bands near the bottom of the tick range, and at its very top.
    let low = prop_oneof![
        9 => 1u64..1_000,
        1 => (clearing::TICK_MAX.get() - 23)..=clearing::TICK_MAX.get(),
    ];
    (low, 0u64..24)
        .prop_map(|(min, width)| (min, width.min(clearing::TICK_MAX.get() - min)))
        .prop_flat_map(|(min, width)| {
            let order = (
                any::<bool>(),
                prop_oneof![9 => (0..=width).prop_map(Some), 1 => Just(None)],
                // Quantities at the bound of the engine's unchecked sums
                // too (every quantity up to u64::MAX; a few of them pass
                // u64 at one level, so the histogram widens).
                prop_oneof![
                    12 => 1u64..20,
                    2 => 1u64..1_000_000,
                    1 => Just(u64::MAX / 8),
                    1 => (u64::MAX - 3)..=u64::MAX,
                ],
            );
            (
                Just(min),
                Just(width),
                0..=width,
                prop::collection::vec(order, 0..40),
            )
        })
}

/// A batch as `(configs, orders in some order, seed)`.
fn batch() -> impl Strategy<Value = (Vec<MarketParams>, Vec<(MarketId, Order)>, [u8; 32])> {
    (
        prop::collection::btree_set(0u32..50, 1..4),
        prop::collection::vec(raw_market(), 3),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_flat_map(|(markets, raws, salt, seed)| {
            let mut configs = Vec::new();
            let mut orders = Vec::new();
            let mut index = 0u64;
            for (&market, (min, width, reference, raw)) in markets.iter().zip(raws) {
                let market = MarketId(market);
                configs.push(MarketParams {
                    market,
                    reference: Tick(min) + reference,
                    band: PriceBand::new(Tick(min), Tick(min + width)),
                });
                for (buy, offset, qty) in raw {
                    // Distinct ids: an odd multiplier and an xor are bijections.
                    let id = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
                    index += 1;
                    orders.push((
                        market,
                        Order {
                            id: OrderId(id),
                            side: if buy { Side::Buy } else { Side::Sell },
                            limit: offset.map(|o| Tick(min + o)),
                            qty,
                        },
                    ));
                }
            }
            (Just(configs), Just(orders).prop_shuffle(), Just(seed))
        })
}

/// What the reference expects for one market.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    price: Option<u64>,
    volume: u128,
    imbalance: i128,
    fills: Vec<(OrderId, u64)>,
}

fn demand_supply(orders: &[Order], price: u64) -> (u128, u128) {
    let mut d = 0u128;
    let mut s = 0u128;
    for o in orders.iter().filter(|o| o.accepts(Tick(price))) {
        match o.side {
            Side::Buy => d += u128::from(o.qty),
            Side::Sell => s += u128::from(o.qty),
        }
    }
    (d, s)
}

fn tiebreak(seed: &[u8; 32], market: MarketId, id: OrderId) -> [u8; 32] {
    let key = blake3::derive_key("sealbatch v1 clearing tiebreak", seed);
    let mut message = market.0.to_le_bytes().to_vec();
    message.extend(id.0.to_le_bytes());
    *blake3::keyed_hash(&key, &message).as_bytes()
}

/// The clearing rule and allocation, brute force, straight from the spec.
fn reference(config: &MarketParams, orders: &[Order], seed: &[u8; 32]) -> Expected {
    let mut candidates: Vec<u64> = orders
        .iter()
        .filter_map(|o| o.limit.map(Tick::get))
        .collect();
    candidates.push(config.reference.get());
    candidates.sort_unstable();
    candidates.dedup();
    let stats: Vec<(u64, u128, u128)> = candidates
        .iter()
        .map(|&p| {
            let (d, s) = demand_supply(orders, p);
            (p, d, s)
        })
        .collect();
    let best_volume = stats.iter().map(|&(_, d, s)| d.min(s)).max().unwrap_or(0);
    let mut sorted: Vec<Order> = orders.to_vec();
    sorted.sort_by_key(|o| o.id);
    if best_volume == 0 {
        let (d, s) = demand_supply(orders, config.reference.get());
        return Expected {
            price: None,
            volume: 0,
            imbalance: d as i128 - s as i128,
            fills: sorted.iter().map(|o| (o.id, 0)).collect(),
        };
    }
    let by_volume: Vec<_> = stats
        .iter()
        .filter(|&&(_, d, s)| d.min(s) == best_volume)
        .collect();
    let best_gap = by_volume
        .iter()
        .map(|&&(_, d, s)| d.abs_diff(s))
        .min()
        .unwrap_or(0);
    let remaining: Vec<_> = by_volume
        .into_iter()
        .filter(|&&(_, d, s)| d.abs_diff(s) == best_gap)
        .collect();
    let low = remaining.first().map(|r| r.0).unwrap_or(0);
    let high = remaining.last().map(|r| r.0).unwrap_or(0);
    let price = if remaining.iter().all(|&&(_, d, s)| d > s) {
        high
    } else if remaining.iter().all(|&&(_, d, s)| d < s) {
        low
    } else {
        config.reference.get().clamp(low, high)
    };
    let (d, s) = demand_supply(orders, price);
    let volume = d.min(s);
    if volume > u128::from(u64::MAX) {
        // The engine refuses the batch (`VolumeOverflow`): no fills to
        // work out (and `q · R` could pass u128 here).
        return Expected {
            price: Some(price),
            volume,
            imbalance: d as i128 - s as i128,
            fills: Vec::new(),
        };
    }
    let long = match d.cmp(&s) {
        std::cmp::Ordering::Greater => Some(Side::Buy),
        std::cmp::Ordering::Less => Some(Side::Sell),
        std::cmp::Ordering::Equal => None,
    };
    let mut fills: Vec<(OrderId, u128)> = sorted.iter().map(|o| (o.id, 0)).collect();
    // Short side (both when balanced): every accepting order fills.
    for (i, o) in sorted.iter().enumerate() {
        if Some(o.side) != long && o.accepts(Tick(price)) {
            fills[i].1 = u128::from(o.qty);
        }
    }
    if let Some(side) = long {
        // Priority levels: market orders first, then better limits.
        let rank = |o: &Order| rank(o, side);
        let mut members: Vec<usize> = (0..sorted.len())
            .filter(|&i| sorted[i].side == side && sorted[i].accepts(Tick(price)))
            .collect();
        members.sort_by_key(|&i| rank(&sorted[i]));
        let mut left = volume;
        let mut at = 0;
        while at < members.len() {
            let level_rank = rank(&sorted[members[at]]);
            let level: Vec<usize> = members[at..]
                .iter()
                .copied()
                .take_while(|&i| rank(&sorted[i]) == level_rank)
                .collect();
            at += level.len();
            let q_total: u128 = level.iter().map(|&i| u128::from(sorted[i].qty)).sum();
            if q_total <= left {
                for &i in &level {
                    fills[i].1 = u128::from(sorted[i].qty);
                }
                left -= q_total;
                continue;
            }
            let mut order: Vec<(u128, [u8; 32], OrderId, usize)> = Vec::new();
            let mut handed = 0;
            for &i in &level {
                let product = u128::from(sorted[i].qty) * left;
                fills[i].1 = product / q_total;
                handed += product / q_total;
                order.push((
                    product % q_total,
                    tiebreak(seed, config.market, sorted[i].id),
                    sorted[i].id,
                    i,
                ));
            }
            order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            for &(_, _, _, i) in order.iter().take((left - handed) as usize) {
                fills[i].1 += 1;
            }
            left = 0;
        }
    }
    Expected {
        price: Some(price),
        volume,
        imbalance: d as i128 - s as i128,
        fills: fills
            .into_iter()
            .map(|(id, f)| (id, u64::try_from(f).unwrap_or(u64::MAX)))
            .collect(),
    }
}

fn expected_batch(
    configs: &[MarketParams],
    orders: &[(MarketId, Order)],
    seed: &[u8; 32],
) -> Result<Vec<(MarketId, Expected)>, ()> {
    let mut configs = configs.to_vec();
    configs.sort_by_key(|c| c.market);
    let mut out = Vec::new();
    for config in &configs {
        let mine: Vec<Order> = orders
            .iter()
            .filter(|(m, _)| *m == config.market)
            .map(|&(_, o)| o)
            .collect();
        let expected = reference(config, &mine, seed);
        if expected.volume > u128::from(u64::MAX) {
            return Err(());
        }
        out.push((config.market, expected));
    }
    Ok(out)
}

fn clear_both(markets: &[MarketInput], seed: &[u8; 32]) -> Result<BatchResult, ClearingError> {
    let parallel = clearing::clear_batch(markets, seed);
    let sequential = clearing::clear_batch_sequential(markets, seed);
    match (&parallel, &sequential) {
        (Ok(p), Ok(s)) => assert_eq!(p.to_bytes(), s.to_bytes(), "parallel != sequential"),
        (p, s) => assert_eq!(p, s),
    }
    // Both ways of bucketing prices agree, bit for bit.
    for market in markets {
        let dense = clearing::clear_market_with(market, seed, false, Levels::Dense);
        let sparse = clearing::clear_market_with(market, seed, true, Levels::Sparse);
        assert_eq!(dense, sparse, "dense != sparse");
    }
    parallel
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(300, 3000)))]

    /// The engine matches the brute-force reference exactly (price, volume,
    /// imbalance, every fill), and the money invariants hold.
    #[test]
    fn engine_matches_reference((configs, orders, seed) in batch()) {
        let markets = canonical_batch(&configs, orders.iter().copied()).expect("valid batch");
        let result = clear_both(&markets, &seed);
        let expected = expected_batch(&configs, &orders, &seed);
        let (result, expected) = match (result, expected) {
            (Ok(r), Ok(e)) => (r, e),
            (Err(ClearingError::VolumeOverflow { .. }), Err(())) => return Ok(()),
            (r, e) => panic!("engine {r:?} vs reference {e:?}"),
        };
        prop_assert_eq!(result.markets.len(), expected.len());
        for (market, (id, want)) in result.markets.iter().zip(&expected) {
            prop_assert_eq!(market.market, *id);
            prop_assert_eq!(market.price.map(Tick::get), want.price);
            prop_assert_eq!(u128::from(market.volume), want.volume);
            prop_assert_eq!(market.imbalance, want.imbalance);
            let fills: Vec<(OrderId, u64)> = market.fills().map(|f| (f.id, f.filled)).collect();
            prop_assert_eq!(&fills, &want.fills);
        }
        check_invariants(&markets, &result);
    }

    /// Only the set of orders matters: any permutation, same bytes.
    #[test]
    fn permutation_gives_the_same_bytes(
        (configs, orders, seed) in batch(),
        shuffle_seed in any::<u64>(),
    ) {
        let first = canonical_batch(&configs, orders.iter().copied()).expect("valid");
        let mut shuffled = orders.clone();
        let mut rng = synth::SplitMix64::new(shuffle_seed);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut reversed_configs = configs.clone();
        reversed_configs.reverse();
        let second = canonical_batch(&reversed_configs, shuffled).expect("valid");
        match (clearing::clear_batch(&first, &seed), clearing::clear_batch(&second, &seed)) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.to_bytes(), b.to_bytes());
                // Same seed, same bytes (and digest) when run again.
                let again = clearing::clear_batch(&first, &seed).expect("ran before");
                prop_assert_eq!(a.digest(), again.digest());
            }
            (a, b) => prop_assert_eq!(a.err(), b.err()),
        }
    }
}

/// The DESIGN.md invariants, checked from the outside.
fn check_invariants(markets: &[MarketInput], result: &BatchResult) {
    for (input, market) in markets.iter().zip(&result.markets) {
        assert_eq!(input.config.market, market.market);
        let mut bought = 0u128;
        let mut sold = 0u128;
        for (order, fill) in input.orders.iter().zip(market.fills()) {
            assert_eq!(order.id, fill.id);
            assert!(fill.filled <= order.qty, "fill beyond quantity");
            if fill.filled > 0 {
                let price = market.price.expect("fills only when trading");
                assert!(order.accepts(price), "fill beyond the limit");
            }
            match order.side {
                Side::Buy => bought += u128::from(fill.filled),
                Side::Sell => sold += u128::from(fill.filled),
            }
        }
        assert_eq!(bought, u128::from(market.volume));
        assert_eq!(sold, u128::from(market.volume));
        // The volume is the maximum over every tick of the band, not only
        // over the candidates.
        let orders: Vec<Order> = input.orders.iter().collect();
        let band = input.config.band;
        let best = (band.min.get()..=band.max.get())
            .map(|p| {
                let (d, s) = demand_supply(&orders, p);
                d.min(s)
            })
            .max()
            .unwrap_or(0);
        assert_eq!(u128::from(market.volume), best);
        check_pro_rata(input, market);
        if let Some(price) = market.price {
            let (d, s) = demand_supply(&orders, price.get());
            assert_eq!(market.imbalance, d as i128 - s as i128);
        }
    }
}

/// Large markets take the chunked, multi-threaded paths: they must give the
/// same bytes as one thread, dense or sparse.
#[test]
fn large_markets_parallel_equals_sequential() {
    let shapes = [
        synth::Shape::uniform(300_000, 10_000),
        synth::Shape::uniform(200_000, 3),
        synth::Shape {
            market_per_mille: 600,
            ..synth::Shape::uniform(150_000, 1_000_000)
        },
    ];
    let markets: Vec<MarketInput> = shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| synth::market(MarketId(i as u32), shape, (i as u64) << 40, 9))
        .collect();
    let seed = [3; 32];
    let parallel = clearing::clear_batch(&markets, &seed).expect("valid");
    let sequential = clearing::clear_batch_sequential(&markets, &seed).expect("valid");
    assert_eq!(parallel.to_bytes(), sequential.to_bytes());
    for market in &markets {
        let sparse =
            clearing::clear_market_with(market, &seed, true, Levels::Sparse).expect("valid");
        let result = parallel.market(market.config.market).expect("present");
        assert_eq!(&sparse, result);
    }
    let checked: usize = markets
        .iter()
        .zip(&parallel.markets)
        .map(|(input, market)| check_pro_rata(input, market))
        .sum();
    assert!(checked > 0);
}

/// Priority on the long side `side`: smaller is served first (market orders,
/// then better limits).
fn rank(order: &Order, side: Side) -> (u8, u64) {
    match (order.limit, side) {
        (None, _) => (0, 0),
        (Some(l), Side::Buy) => (1, u64::MAX - l.get()),
        (Some(l), Side::Sell) => (1, l.get()),
    }
}

/// Every fill on the marginal level is within one lot of its exact share
/// `q·R/Q`: `|f·Q − q·R| < Q`. Returns how many orders were checked.
fn check_pro_rata(input: &MarketInput, market: &sealbatch::clearing::MarketResult) -> usize {
    let Some(price) = market.price else { return 0 };
    let orders: Vec<Order> = input.orders.iter().collect();
    let (d, s) = demand_supply(&orders, price.get());
    let side = match d.cmp(&s) {
        std::cmp::Ordering::Greater => Side::Buy,
        std::cmp::Ordering::Less => Side::Sell,
        std::cmp::Ordering::Equal => return 0,
    };
    let mut members: Vec<usize> = (0..orders.len())
        .filter(|&i| orders[i].side == side && orders[i].accepts(price))
        .collect();
    members.sort_by_key(|&i| rank(&orders[i], side));
    let mut left = d.min(s);
    let mut at = 0;
    while at < members.len() {
        let level_rank = rank(&orders[members[at]], side);
        let level: Vec<usize> = members[at..]
            .iter()
            .copied()
            .take_while(|&i| rank(&orders[i], side) == level_rank)
            .collect();
        at += level.len();
        let q_total: u128 = level.iter().map(|&i| u128::from(orders[i].qty)).sum();
        if q_total <= left {
            left -= q_total;
            continue;
        }
        for &i in &level {
            let exact = u128::from(orders[i].qty) * left;
            let scaled = u128::from(market.filled[i]) * q_total;
            assert!(
                scaled.abs_diff(exact) < q_total,
                "order {} got {} lots, exact share {exact}/{q_total}",
                orders[i].id,
                market.filled[i]
            );
        }
        return level.len();
    }
    0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(200, 1000)))]

    /// One corrupted order in an otherwise valid batch gives the typed error
    /// naming it, from either entry point, and never a panic.
    #[test]
    fn bad_input_is_a_typed_error((configs, orders, seed) in batch(), pick in any::<prop::sample::Index>(), fault in 0u8..4) {
        prop_assume!(!orders.is_empty());
        // Valid but for the corruption: no market's volume passes u64.
        prop_assume!(expected_batch(&configs, &orders, &seed).is_ok());
        let mut orders = orders;
        let at = pick.index(orders.len());
        let (market, mut order) = orders[at];
        let config = configs.iter().find(|c| c.market == market).copied().expect("configured");
        let mut market = market;
        match fault {
            0 => order.qty = 0,
            1 => order.limit = Some(config.band.max + 1),
            2 => market = MarketId(1_000),
            _ => {
                let other = orders[(at + 1) % orders.len()].1.id;
                prop_assume!(other != order.id);
                order.id = other;
            }
        }
        orders[at] = (market, order);
        let outcome = canonical_batch(&configs, orders.iter().copied())
            .and_then(|markets| clear_both(&markets, &seed));
        let error = outcome.expect_err("a corrupted batch must be rejected");
        match (fault, error) {
            (0, ClearingError::ZeroQuantity { order: id, .. }) => prop_assert_eq!(id, order.id),
            (1, ClearingError::LimitOutsideBand { order: id, .. }) => prop_assert_eq!(id, order.id),
            (2, ClearingError::UnknownMarket { order: id, .. }) => prop_assert_eq!(id, order.id),
            (3, ClearingError::DuplicateOrder { order: id, .. }) => prop_assert_eq!(id, order.id),
            // The rest of the batch is valid, so no other error may appear.
            (_, other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(200, 1000)))]

    /// Wide bands (2^40 ticks) with orders close together take the dense
    /// path over the span of the limits; it matches the sparse path and the
    /// reference exactly.
    #[test]
    fn wide_bands_match_reference((configs, orders, seed) in batch()) {
        let configs: Vec<MarketParams> = configs
            .into_iter()
            .map(|mut c| {
                c.band.max = c.band.min.saturating_add(1 << 40).min(clearing::TICK_MAX);
                c
            })
            .collect();
        let markets = canonical_batch(&configs, orders.iter().copied()).expect("valid batch");
        let result = clear_both(&markets, &seed);
        let expected = expected_batch(&configs, &orders, &seed);
        let (result, expected) = match (result, expected) {
            (Ok(r), Ok(e)) => (r, e),
            (Err(ClearingError::VolumeOverflow { .. }), Err(())) => return Ok(()),
            (r, e) => panic!("engine {r:?} vs reference {e:?}"),
        };
        for (market, (id, want)) in result.markets.iter().zip(&expected) {
            prop_assert_eq!(market.market, *id);
            prop_assert_eq!(market.price.map(Tick::get), want.price);
            prop_assert_eq!(market.imbalance, want.imbalance);
            let fills: Vec<(OrderId, u64)> = market.fills().map(|f| (f.id, f.filled)).collect();
            prop_assert_eq!(&fills, &want.fills);
        }
    }
}

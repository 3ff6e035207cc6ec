//! The explorer's curves against `spec/clearing.md`: at every candidate
//! price (and at prices between them) the curves give `D(p)` and `S(p)` as
//! §3 defines them, summed by brute force here; the marked price, volume
//! and imbalance are the clearing engine's; the fill counts are its fills;
//! the SVG marks the same and is the same bytes every time.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use sealbatch::clearing::{MarketParams, PriceBand, canonical_batch, clear_market};
use sealbatch::curves::{Clearing, HistoryPoint, MarketCurves, batch_svg, market_history_svg};
use sealbatch::order::Order;
use sealbatch::types::{BatchId, Lots, MarketId, OrderId, Side, Tick};

/// `D(p)` and `S(p)` by the definition: the sum of `qty` over the buys
/// (sells) that accept `p`.
fn brute(orders: &[Order], p: Tick) -> (u128, u128) {
    let mut d = 0u128;
    let mut s = 0u128;
    for o in orders {
        let accepts = match (o.side, o.limit) {
            (_, None) => true,
            (Side::Buy, Some(l)) => l >= p,
            (Side::Sell, Some(l)) => l <= p,
        };
        if accepts {
            match o.side {
                Side::Buy => d += u128::from(o.qty),
                Side::Sell => s += u128::from(o.qty),
            }
        }
    }
    (d, s)
}

/// An order as (buy, limit, qty).
type RawOrder = (bool, Option<u64>, Lots);

fn order_strategy(band: (u64, u64)) -> impl Strategy<Value = RawOrder> {
    (
        any::<bool>(),
        prop_oneof![
            1 => Just(None),
            6 => (band.0..=band.1).prop_map(Some),
        ],
        prop_oneof![
            8 => 1u64..100,
            1 => Just(u64::MAX),
            1 => 1u64..=u64::MAX,
        ],
    )
}

/// A market: band low and high, reference, orders.
fn market_case() -> impl Strategy<Value = (u64, u64, u64, Vec<RawOrder>)> {
    prop_oneof![
        Just((90u64, 110u64)),
        Just((1u64, u64::MAX - 1)),
        Just((1u64, 3u64)),
    ]
    .prop_flat_map(|(low, high)| {
        (
            Just(low),
            Just(high),
            low..=high,
            proptest::collection::vec(order_strategy((low, high)), 0..60),
        )
    })
}

/// The orders, ids 1, 2, 3, … in the order given.
fn orders_of(raw: &[RawOrder]) -> Vec<Order> {
    raw.iter()
        .enumerate()
        .map(|(i, &(buy, limit, qty))| Order {
            id: OrderId(i as u64 + 1),
            side: if buy { Side::Buy } else { Side::Sell },
            limit: limit.map(Tick),
            qty,
        })
        .collect()
}

fn check(low: u64, high: u64, reference: u64, raw: &[RawOrder]) {
    let (low, high, reference) = (Tick(low), Tick(high), Tick(reference));
    let orders = orders_of(raw);
    let params = MarketParams {
        market: MarketId(7),
        reference,
        band: PriceBand {
            min: low,
            max: high,
        },
    };
    let inputs = canonical_batch(&[params], orders.iter().map(|&o| (MarketId(7), o)))
        .expect("a valid market");
    let input = &inputs[0];
    let result = match clear_market(input, &[9; 32]) {
        Ok(result) => result,
        // Executable volume past u64::MAX lots: the batch is refused whole
        // (spec/clearing.md §2.1); nothing to draw.
        Err(_) => return,
    };
    let filled: BTreeMap<OrderId, Lots> = result
        .fills()
        .filter(|f| f.filled > 0)
        .map(|f| (f.id, f.filled))
        .collect();
    let clearing = result.price.map(|price| Clearing {
        price,
        volume: result.volume,
        imbalance: result.imbalance,
    });
    let curves = MarketCurves::new(input, clearing, &filled);

    // The candidates: every distinct limit and the reference, ascending.
    let mut candidates: Vec<Tick> = orders.iter().filter_map(|o| o.limit).collect();
    candidates.push(reference);
    candidates.sort_unstable();
    candidates.dedup();
    assert_eq!(
        curves.points.iter().map(|p| p.price).collect::<Vec<_>>(),
        candidates
    );
    // D and S at every candidate, and between and beyond them.
    for point in &curves.points {
        assert_eq!((point.demand, point.supply), brute(&orders, point.price));
        for p in [
            point.price.saturating_sub(1).max(low),
            point.price.saturating_add(1).min(high),
        ] {
            assert_eq!(curves.at(p), brute(&orders, p), "at {p}");
        }
    }
    assert_eq!(curves.at(low), brute(&orders, low));
    assert_eq!(curves.at(high), brute(&orders, high));
    // The marks are the engine's result, and agree with the curves.
    if let Some(c) = curves.clearing {
        let (d, s) = curves.at(c.price);
        assert_eq!(u128::from(c.volume), d.min(s), "V(p*) = min(D, S)");
        assert_eq!(c.imbalance, d as i128 - s as i128, "I(p*) = D − S");
    }
    // Fills: every order counted once.
    let full = orders
        .iter()
        .filter(|o| filled.get(&o.id) == Some(&o.qty))
        .count();
    let none = orders
        .iter()
        .filter(|o| !filled.contains_key(&o.id))
        .count();
    assert_eq!(curves.fills.full, full);
    assert_eq!(curves.fills.none, none);
    assert_eq!(
        curves.fills.full + curves.fills.partial + curves.fills.none,
        orders.len()
    );
    // The SVG marks the same price and volume, and is deterministic.
    let svg = batch_svg(BatchId(3), std::slice::from_ref(&curves));
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.ends_with("</svg>\n"));
    match curves.clearing {
        Some(c) => assert!(svg.contains(&format!(
            "class=\"clearing\" data-price=\"{}\" data-volume=\"{}\"",
            c.price, c.volume
        ))),
        None => assert!(svg.contains("nothing crossed") && !svg.contains("class=\"clearing\"")),
    }
    assert_eq!(svg, batch_svg(BatchId(3), &[curves]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(100, 400)))]

    #[test]
    fn curves_are_d_and_s_and_marks_are_the_result(
        (low, high, reference, orders) in market_case()
    ) {
        check(low, high, reference, &orders);
    }
}

#[test]
fn a_worked_example() {
    // Buys 10 @ 105, 5 @ 100, 4 at market; sells 8 @ 95, 6 @ 100, 3 at
    // market. At 100: D = 19, S = 17: the price is 100, 17 lots.
    let raw = [
        (true, Some(105), 10),
        (true, Some(100), 5),
        (true, None, 4),
        (false, Some(95), 8),
        (false, Some(100), 6),
        (false, None, 3),
    ];
    check(90, 110, 98, &raw);
    let orders = orders_of(&raw);
    let params = MarketParams {
        market: MarketId(1),
        reference: Tick(98),
        band: PriceBand {
            min: Tick(90),
            max: Tick(110),
        },
    };
    let inputs = canonical_batch(&[params], orders.iter().map(|&o| (MarketId(1), o))).unwrap();
    let result = clear_market(&inputs[0], &[0; 32]).unwrap();
    assert_eq!((result.price, result.volume), (Some(Tick(100)), 17));
    let curves = MarketCurves::new(
        &inputs[0],
        Some(Clearing {
            price: Tick(100),
            volume: 17,
            imbalance: 2,
        }),
        &BTreeMap::new(),
    );
    let points: Vec<(Tick, u128, u128)> = curves
        .points
        .iter()
        .map(|p| (p.price, p.demand, p.supply))
        .collect();
    assert_eq!(
        points,
        vec![
            (Tick(95), 19, 11),
            (Tick(98), 19, 11),
            (Tick(100), 19, 17),
            (Tick(105), 14, 17)
        ]
    );
    assert_eq!((curves.market_buys, curves.market_sells), (4, 3));
    assert_eq!(curves.at(Tick(106)), (4, 17));
    assert_eq!(curves.at(Tick(94)), (19, 3));
    assert_eq!(
        batch_svg(BatchId(1), &[])
            .matches("no orders took part")
            .count(),
        1
    );
}

#[test]
fn a_market_history_marks_every_batch_that_traded() {
    let history = [
        HistoryPoint {
            e: BatchId(10),
            price: Some(Tick(100)),
            volume: 5,
        },
        HistoryPoint {
            e: BatchId(11),
            price: None,
            volume: 0,
        },
        HistoryPoint {
            e: BatchId(12),
            price: Some(Tick::MAX - 1),
            volume: u64::MAX,
        },
        HistoryPoint {
            e: BatchId(13),
            price: Some(Tick(101)),
            volume: 7,
        },
    ];
    let svg = market_history_svg(2, &history);
    for h in history.iter().filter(|h| h.price.is_some()) {
        assert!(svg.contains(&format!(
            "data-e=\"{}\" data-price=\"{}\" data-volume=\"{}\"",
            h.e,
            h.price.unwrap(),
            h.volume
        )));
        assert!(svg.contains(&format!(
            "class=\"volume\" data-e=\"{}\" data-volume=\"{}\"",
            h.e, h.volume
        )));
    }
    // Nothing crossed in batch 11: no mark, and the price line breaks there.
    assert!(!svg.contains("data-e=\"11\""));
    let line = svg
        .split("class=\"price\" d=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the price line");
    assert_eq!(line.matches('M').count(), 2, "{line}");
    assert_eq!(svg, market_history_svg(2, &history));
    assert!(market_history_svg(2, &[]).contains("no batch published yet"));
}

/// One escape for the explorer's pages and the bench tool's charts: every
/// character HTML and SVG give meaning to (the bench's own left the single
/// quote alone).
#[test]
fn markup_characters_are_escaped_once() {
    assert_eq!(
        sealbatch::curves::escape_markup(r#"<a href='x'>"T&C"</a>"#),
        "&lt;a href=&#39;x&#39;&gt;&quot;T&amp;C&quot;&lt;/a&gt;"
    );
    assert_eq!(
        sealbatch::curves::escape_markup("plain – ünïcode"),
        "plain – ünïcode"
    );
}

//! Worked examples with known answers, edge cases, and bad input.
//!
//! X1–X3: Deutsche Börse, "Xetra Release 14.0 Market Model Equities" (2013),
//! §13.1 examples 1–3. W1: German Wikipedia, "Meistausführungsprinzip".

use sealbatch::clearing::{
    self, ClearingError, MarketInput, MarketParams, MarketResult, OrderColumns, PriceBand,
    canonical_batch,
};
use sealbatch::codec::Encode;
use sealbatch::order::Order;
use sealbatch::types::{MarketId, OrderId, Side, Tick};

const SEED: [u8; 32] = [7; 32];
const BAND: PriceBand = PriceBand::new(Tick(1), Tick(1000));

fn buy(id: u64, limit: u64, qty: u64) -> Order {
    Order {
        id: OrderId(id),
        side: Side::Buy,
        limit: Some(Tick(limit)),
        qty,
    }
}

fn sell(id: u64, limit: u64, qty: u64) -> Order {
    Order {
        id: OrderId(id),
        side: Side::Sell,
        limit: Some(Tick(limit)),
        qty,
    }
}

fn market_buy(id: u64, qty: u64) -> Order {
    Order {
        id: OrderId(id),
        side: Side::Buy,
        limit: None,
        qty,
    }
}

fn market_sell(id: u64, qty: u64) -> Order {
    Order {
        id: OrderId(id),
        side: Side::Sell,
        limit: None,
        qty,
    }
}

fn input(reference: u64, orders: &[Order]) -> MarketInput {
    MarketInput {
        config: MarketParams {
            market: MarketId(1),
            reference: Tick(reference),
            band: BAND,
        },
        orders: orders.iter().copied().collect(),
    }
}

fn clear(reference: u64, orders: &[Order]) -> MarketResult {
    let batch = [input(reference, orders)];
    let parallel = clearing::clear_batch(&batch, &SEED).expect("valid batch");
    let sequential = clearing::clear_batch_sequential(&batch, &SEED).expect("valid batch");
    assert_eq!(parallel.to_bytes(), sequential.to_bytes());
    parallel.markets.into_iter().next().expect("one market")
}

fn fills(result: &MarketResult) -> Vec<(u64, u64)> {
    result.fills().map(|f| (f.id.0, f.filled)).collect()
}

#[test]
fn x1_balanced_at_200() {
    let orders = [
        buy(1, 202, 200),
        buy(2, 201, 200),
        buy(3, 200, 300),
        sell(4, 200, 100),
        sell(5, 198, 200),
        sell(6, 197, 400),
    ];
    for reference in [1, 150, 200, 250, 1000] {
        let r = clear(reference, &orders);
        assert_eq!((r.price, r.volume, r.imbalance), (Some(Tick(200)), 700, 0));
        assert_eq!(
            fills(&r),
            [(1, 200), (2, 200), (3, 300), (4, 100), (5, 200), (6, 400)]
        );
    }
}

#[test]
fn x2_buy_pressure_takes_the_highest_price() {
    let orders = [
        buy(1, 202, 400),
        buy(2, 201, 200),
        sell(3, 199, 300),
        sell(4, 198, 200),
    ];
    for reference in [1, 200, 1000] {
        let r = clear(reference, &orders);
        assert_eq!(
            (r.price, r.volume, r.imbalance),
            (Some(Tick(201)), 500, 100)
        );
        assert_eq!(fills(&r), [(1, 400), (2, 100), (3, 300), (4, 200)]);
    }
}

#[test]
fn x3_sell_pressure_takes_the_lowest_price() {
    let orders = [
        buy(1, 202, 300),
        buy(2, 201, 200),
        sell(3, 199, 400),
        sell(4, 198, 200),
    ];
    for reference in [1, 200, 1000] {
        let r = clear(reference, &orders);
        assert_eq!(
            (r.price, r.volume, r.imbalance),
            (Some(Tick(199)), 500, -100)
        );
        assert_eq!(fills(&r), [(1, 300), (2, 200), (3, 300), (4, 200)]);
    }
}

#[test]
fn w1_minimum_imbalance_and_price_priority() {
    let orders = [
        sell(1, 60, 40),
        sell(2, 65, 30),
        sell(3, 70, 10),
        buy(4, 65, 40),
        buy(5, 60, 10),
        buy(6, 55, 20),
    ];
    for reference in [1, 60, 65, 1000] {
        let r = clear(reference, &orders);
        assert_eq!((r.price, r.volume, r.imbalance), (Some(Tick(60)), 40, 10));
        assert_eq!(
            fills(&r),
            [(1, 40), (2, 0), (3, 0), (4, 40), (5, 0), (6, 0)]
        );
    }
    // A reference strictly between 60 and 65 is itself a candidate, with the
    // same volume and no imbalance at all (D = 40 from the buy at 65, S = 40
    // from the sell at 60): rule 2 picks it.
    let r = clear(62, &orders);
    assert_eq!((r.price, r.volume, r.imbalance), (Some(Tick(62)), 40, 0));
}

#[test]
fn market_orders_only_trade_at_the_reference_price() {
    let orders = [market_buy(1, 10), market_sell(2, 10)];
    for reference in [1, 77, 1000] {
        let r = clear(reference, &orders);
        assert_eq!(
            (r.price, r.volume, r.imbalance),
            (Some(Tick(reference)), 10, 0)
        );
    }
}

#[test]
fn reference_is_clamped_into_the_tied_interval() {
    // At 99: D 15, S 10; at 101: D 10, S 15; 100 (if the reference) D 10, S 10.
    let orders = [
        buy(1, 101, 10),
        buy(2, 99, 5),
        sell(3, 99, 10),
        sell(4, 101, 5),
    ];
    assert_eq!(clear(50, &orders).price, Some(Tick(99)));
    assert_eq!(clear(500, &orders).price, Some(Tick(101)));
    let r = clear(100, &orders);
    assert_eq!((r.price, r.volume, r.imbalance), (Some(Tick(100)), 10, 0));
}

#[test]
fn market_orders_come_before_limits_and_do_not_drag_the_price() {
    // Sells 10 at 100; buys: market 6, limit 105 ×8. D(100) = 14 > S = 10.
    let orders = [market_buy(1, 6), buy(2, 105, 8), sell(3, 100, 10)];
    let r = clear(100, &orders);
    assert_eq!((r.price, r.volume), (Some(Tick(105)), 10));
    assert_eq!(fills(&r), [(1, 6), (2, 4), (3, 10)]);
}

#[test]
fn nothing_crosses() {
    let orders = [buy(1, 90, 5), sell(2, 110, 7)];
    let r = clear(100, &orders);
    assert_eq!((r.price, r.volume), (None, 0));
    // Reported at the reference price: D(100) = 0, S(100) = 0.
    assert_eq!(r.imbalance, 0);
    assert_eq!(r.next_reference(Tick(100)), 100);
    let r = clear(80, &orders);
    assert_eq!((r.price, r.imbalance), (None, 5));
    assert_eq!(fills(&r), [(1, 0), (2, 0)]);
    let empty = clear(100, &[]);
    assert_eq!((empty.price, empty.volume, empty.imbalance), (None, 0, 0));
    let one_side = clear(100, &[market_buy(1, 3)]);
    assert_eq!((one_side.price, one_side.imbalance), (None, 3));
}

#[test]
fn pro_rata_with_largest_remainder() {
    // Volume 10 against buys 3 × 7 lots at 100: each share 10·7/21 = 3.33…,
    // floors 3+3+3 = 9, one leftover lot to the one with the smallest hash.
    let orders = [
        buy(1, 100, 7),
        buy(2, 100, 7),
        buy(3, 100, 7),
        sell(4, 100, 10),
    ];
    let r = clear(100, &orders);
    assert_eq!((r.price, r.volume, r.imbalance), (Some(Tick(100)), 10, 11));
    let f = fills(&r);
    assert_eq!(f.iter().take(3).map(|f| f.1).sum::<u64>(), 10);
    assert!(f.iter().take(3).all(|&(_, x)| x == 3 || x == 4));
    let key = clearing::tiebreak_key(&SEED);
    let winner = (1..=3)
        .min_by_key(|&id| clearing::tiebreak_hash(&key, MarketId(1), OrderId(id)))
        .expect("three orders");
    assert_eq!(r.fill_of(OrderId(winner)), Some(4));
    // Unequal sizes: 10 of 6+4+5 = 15: exact 4, 2.67, 3.33 → 4, 2, 3 and the
    // leftover to the largest remainder (order 2).
    let orders = [
        buy(1, 100, 6),
        buy(2, 100, 4),
        buy(3, 100, 5),
        sell(4, 100, 10),
    ];
    assert_eq!(
        fills(&clear(100, &orders)),
        [(1, 4), (2, 3), (3, 3), (4, 10)]
    );
}

#[test]
fn the_seed_decides_ties_and_nothing_else() {
    let orders: Vec<Order> = (1..=20)
        .map(|id| buy(id, 100, 1))
        .chain([sell(21, 100, 7)])
        .collect();
    let batch = [input(100, &orders)];
    let winners = |seed: &[u8; 32]| {
        let r = clearing::clear_batch(&batch, seed).expect("valid");
        r.markets[0]
            .fills()
            .filter(|f| f.filled == 1 && f.id.0 <= 20)
            .map(|f| f.id.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(winners(&[1; 32]).len(), 7);
    assert_eq!(winners(&[1; 32]), winners(&[1; 32]));
    assert_ne!(winners(&[1; 32]), winners(&[2; 32]));
}

#[test]
fn result_encoding_is_stable() {
    let orders = [buy(1, 201, 5), sell(2, 200, 3)];
    let r = clearing::clear_batch(&[input(200, &orders)], &SEED).expect("valid");
    let mut expected = b"SBCLEAR1".to_vec();
    expected.extend(1u32.to_le_bytes());
    expected.extend(1u32.to_le_bytes());
    expected.push(1);
    expected.extend(201u64.to_le_bytes());
    expected.extend(3u64.to_le_bytes());
    expected.extend(2i128.to_le_bytes());
    expected.extend(2u64.to_le_bytes());
    for (id, filled) in [(1u64, 3u64), (2, 3)] {
        expected.extend(id.to_le_bytes());
        expected.extend(filled.to_le_bytes());
    }
    assert_eq!(r.to_bytes(), expected);
}

// ---- Bad input: typed errors naming the order or market, never a panic. ----

fn error(reference: u64, orders: &[Order]) -> ClearingError {
    let batch = [input(reference, orders)];
    let sequential = clearing::clear_batch_sequential(&batch, &SEED).expect_err("invalid");
    let parallel = clearing::clear_batch(&batch, &SEED).expect_err("invalid");
    assert_eq!(sequential, parallel);
    sequential
}

#[test]
fn zero_quantity_is_rejected() {
    let e = error(100, &[buy(1, 100, 5), sell(2, 100, 0)]);
    assert_eq!(
        e,
        ClearingError::ZeroQuantity {
            market: MarketId(1),
            order: OrderId(2)
        }
    );
    assert_eq!(e.to_string(), "market 1, order 2: quantity is zero");
}

#[test]
fn limit_outside_the_band_is_rejected() {
    for limit in [0, 1001, u64::MAX] {
        let e = error(100, &[buy(1, 100, 5), sell(2, limit, 1)]);
        assert_eq!(
            e,
            ClearingError::LimitOutsideBand {
                market: MarketId(1),
                order: OrderId(2),
                limit: Tick(limit),
                min: Tick(1),
                max: Tick(1000)
            }
        );
    }
}

#[test]
fn duplicate_and_unsorted_ids_are_rejected() {
    let e = error(100, &[buy(1, 100, 5), sell(1, 100, 5)]);
    assert_eq!(
        e,
        ClearingError::DuplicateOrder {
            market: MarketId(1),
            order: OrderId(1)
        }
    );
    let e = error(100, &[buy(5, 100, 5), sell(3, 100, 5)]);
    assert!(matches!(
        e,
        ClearingError::OrderIdsNotIncreasing {
            order: OrderId(3),
            previous: OrderId(5),
            ..
        }
    ));
    // The canonical wrapper sorts, and names duplicates across markets too.
    let configs = [config(1), config(2)];
    let e = canonical_batch(
        &configs,
        [
            (MarketId(2), buy(9, 100, 1)),
            (MarketId(1), sell(9, 100, 1)),
        ],
    )
    .expect_err("duplicate");
    assert!(matches!(
        e,
        ClearingError::DuplicateOrder {
            order: OrderId(9),
            ..
        }
    ));
}

fn config(market: u32) -> MarketParams {
    MarketParams {
        market: MarketId(market),
        reference: Tick(100),
        band: BAND,
    }
}

#[test]
fn unknown_and_duplicate_markets_are_rejected() {
    let e = canonical_batch(&[config(1)], [(MarketId(4), buy(3, 100, 1))]).expect_err("unknown");
    assert_eq!(
        e,
        ClearingError::UnknownMarket {
            market: MarketId(4),
            order: OrderId(3)
        }
    );
    assert_eq!(e.to_string(), "order 3: unknown market 4");
    let e = canonical_batch(&[config(1), config(1)], []).expect_err("duplicate");
    assert_eq!(
        e,
        ClearingError::DuplicateMarket {
            market: MarketId(1)
        }
    );
    let batch = [input(100, &[]), input(100, &[])];
    assert_eq!(
        clearing::clear_batch(&batch, &SEED),
        Err(ClearingError::DuplicateMarket {
            market: MarketId(1)
        })
    );
}

#[test]
fn bad_reference_or_band_is_rejected() {
    let mut bad = input(1001, &[buy(1, 100, 1)]);
    assert!(matches!(
        clearing::clear_batch(std::slice::from_ref(&bad), &SEED),
        Err(ClearingError::ReferenceOutsideBand {
            reference: Tick(1001),
            ..
        })
    ));
    bad.config.band = PriceBand::new(Tick(10), Tick(9));
    bad.config.reference = Tick(10);
    assert!(matches!(
        clearing::clear_batch(&[bad], &SEED),
        Err(ClearingError::EmptyBand {
            min: Tick(10),
            max: Tick(9),
            ..
        })
    ));
}

#[test]
fn the_first_error_in_market_order_is_reported() {
    let mut a = input(100, &[buy(1, 100, 0)]);
    a.config.market = MarketId(9);
    let mut b = input(100, &[buy(2, 2000, 1)]);
    b.config.market = MarketId(3);
    let batch = [a, b];
    let e = clearing::clear_batch(&batch, &SEED).expect_err("invalid");
    assert!(matches!(
        e,
        ClearingError::LimitOutsideBand {
            market: MarketId(3),
            ..
        }
    ));
}

#[test]
fn absurd_quantities_do_not_overflow() {
    let big = u64::MAX;
    let orders = [buy(1, 100, big), buy(2, 100, big), sell(3, 100, big)];
    let r = clear(100, &orders);
    assert_eq!((r.price, r.volume), (Some(Tick(100)), big));
    assert_eq!(r.imbalance, i128::from(big));
    let orders = [
        buy(1, 100, big),
        buy(2, 100, big),
        sell(3, 100, big),
        sell(4, 99, big),
    ];
    assert!(matches!(
        clearing::clear_batch(&[input(100, &orders)], &SEED),
        Err(ClearingError::VolumeOverflow { .. })
    ));
    let _ = OrderColumns::new();
}

/// The vectors of `spec/clearing.md` §9 that pin down hashes and bytes.
#[test]
fn spec_vectors() {
    let zero = [0u8; 32];
    let key = clearing::tiebreak_key(&zero);
    assert_eq!(
        hex::encode(key),
        "88a030d59f3dbab31ddd4df3331915e27d8f97ba95f088e423ba360bae1ec2f9"
    );
    let hashes = [
        "88f0f86643693ef59ec85237efdce62bec4f054eaa2ea3fb28a70175244c5c44",
        "3129e31d9d896fae950af0696b00bef42b6c325591f2cd065641a319843495ee",
        "bb4e5c14fbfc5ed821f7f8b06a5643cb4b61cc1e7bdd00a89a60d52a5c7ae515",
    ];
    for (id, want) in (1..=3).zip(hashes) {
        let hash = clearing::tiebreak_hash(&key, MarketId(1), OrderId(id));
        assert_eq!(hex::encode(hash), want);
    }
    let p = [
        buy(1, 100, 7),
        buy(2, 100, 7),
        buy(3, 100, 7),
        sell(4, 100, 10),
    ];
    let r = clearing::clear_batch(&[input(100, &p)], &zero).expect("valid");
    assert_eq!(
        hex::encode(r.to_bytes()),
        concat!(
            "5342434c45415231",
            "01000000",
            "01000000",
            "01",
            "6400000000000000",
            "0a00000000000000",
            "0b000000000000000000000000000000",
            "0400000000000000",
            "0100000000000000",
            "0300000000000000",
            "0200000000000000",
            "0400000000000000",
            "0300000000000000",
            "0300000000000000",
            "0400000000000000",
            "0a00000000000000",
        )
    );
    assert_eq!(
        hex::encode(r.digest()),
        "c14601b1edfc0fa758ed6b56bffefbc23d72c952ece80037f31dfc86c8a5fbe7"
    );
    let x1 = [
        buy(1, 202, 200),
        buy(2, 201, 200),
        buy(3, 200, 300),
        sell(4, 200, 100),
        sell(5, 198, 200),
        sell(6, 197, 400),
    ];
    let r = clearing::clear_batch(&[input(200, &x1)], &zero).expect("valid");
    assert_eq!(
        hex::encode(r.digest()),
        "ea8cf9379a6dbce10c6c54d8900ab6c0e3342c2825bea3144e2f92cc0982bbf0"
    );
}

#[test]
fn band_outside_the_tick_range_is_rejected() {
    for (min, max) in [(0, 10), (5, u64::MAX)] {
        let mut bad = input(5, &[buy(1, 6, 1)]);
        bad.config.band = PriceBand::new(Tick(min), Tick(max));
        assert_eq!(
            clearing::clear_batch(&[bad], &SEED),
            Err(ClearingError::BandOutOfRange {
                market: MarketId(1),
                min: Tick(min),
                max: Tick(max)
            })
        );
    }
}

#[test]
fn extreme_ticks_keep_market_orders_first() {
    use sealbatch::clearing::{TICK_MAX, TICK_MIN};
    let orders = [
        market_buy(1, 5),
        buy(2, TICK_MAX.get(), 5),
        sell(3, TICK_MIN.get(), 7),
        market_sell(4, 1),
    ];
    let mut market = input(TICK_MIN.get(), &orders);
    market.config.band = PriceBand::FULL;
    let r = clearing::clear_batch(&[market], &SEED).expect("valid");
    let r = &r.markets[0];
    assert_eq!((r.price, r.volume, r.imbalance), (Some(TICK_MAX), 8, 2));
    assert_eq!(fills(r), [(1, 5), (2, 3), (3, 7), (4, 1)]);
}

#[test]
fn wide_bands_still_name_bad_orders() {
    let wide = PriceBand::new(Tick(1_000), Tick(1_000 + (1 << 40)));
    let with_band = |orders: &[Order]| {
        let mut market = input(5_000, orders);
        market.config.band = wide;
        clearing::clear_batch(&[market], &SEED)
    };
    // Limits close together: the dense-over-the-span path.
    assert_eq!(
        with_band(&[buy(1, 5_000, 5), sell(2, 5_001, 0)]),
        Err(ClearingError::ZeroQuantity {
            market: MarketId(1),
            order: OrderId(2)
        })
    );
    // A limit below the band: the span is not inside it; sparse reports it.
    assert!(matches!(
        with_band(&[buy(1, 5_000, 5), sell(2, 999, 1)]),
        Err(ClearingError::LimitOutsideBand {
            order: OrderId(2),
            limit: Tick(999),
            ..
        })
    ));
    let r = with_band(&[buy(1, 5_002, 5), sell(2, 5_000, 3)]).expect("valid");
    assert_eq!(
        (r.markets[0].price, r.markets[0].volume),
        (Some(Tick(5_002)), 3)
    );
}

//! Ledger: deposits, withdrawals, funding checks and settlement.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sealbatch::clearing::{self, MarketInput, OrderColumns, PriceBand};
use sealbatch::ledger::{AccountFill, FundingError, Ledger, LedgerError};
use sealbatch::market::{AccountId, AssetId, MarketConfig};
use sealbatch::order::{Order, OrderSpec};
use sealbatch::types::{MarketId, OrderId, Side, Tick};

const BASE: AssetId = AssetId(1);
const QUOTE: AssetId = AssetId(2);
const FEES: AccountId = AccountId([0xfe; 32]);

fn account(n: u8) -> AccountId {
    AccountId([n; 32])
}

fn market(fee_bps: u16) -> BTreeMap<MarketId, MarketConfig> {
    let config = MarketConfig {
        id: MarketId(7),
        base: BASE,
        quote: QUOTE,
        tick_size: 10,
        lot_size: 100,
        band_min: Tick(50),
        band_max: Tick(150),
        initial_price: Tick(100),
        fee_bps,
    };
    config.validate().unwrap();
    BTreeMap::from([(config.id, config)])
}

fn order(side: Side, limit: Option<Tick>, qty: u64) -> OrderSpec {
    OrderSpec {
        market: MarketId(7),
        side,
        limit,
        qty,
        client_order_id: 0,
    }
}

#[test]
fn deposit_and_withdraw() {
    let mut ledger = Ledger::new(FEES);
    ledger.deposit(account(1), QUOTE, 500).unwrap();
    ledger.deposit(account(1), BASE, 7).unwrap();
    ledger.withdraw(account(1), QUOTE, 200).unwrap();
    assert_eq!(ledger.balance(&account(1), QUOTE), 300);
    assert_eq!(
        ledger.balances_of(&account(1)),
        vec![(BASE, 7), (QUOTE, 300)]
    );
    assert_eq!(ledger.total(QUOTE), 300);

    let err = ledger.withdraw(account(1), QUOTE, 301).unwrap_err();
    assert_eq!(
        err,
        LedgerError::InsufficientBalance {
            account: account(1),
            asset: QUOTE,
            available: 300,
            requested: 301
        }
    );
    assert_eq!(
        ledger.balance(&account(1), QUOTE),
        300,
        "a failed withdrawal changes nothing"
    );

    // The asset's total over all accounts may not pass u64::MAX.
    ledger.deposit(account(2), QUOTE, u64::MAX - 300).unwrap();
    let before = ledger.clone();
    for (who, amount) in [(2, 1), (3, 1), (3, u64::MAX)] {
        assert_eq!(
            ledger.deposit(account(who), QUOTE, amount),
            Err(LedgerError::SupplyExceeded {
                asset: QUOTE,
                total: u128::from(u64::MAX),
                amount
            })
        );
    }
    assert_eq!(ledger, before, "a refused deposit changes nothing");
    ledger.withdraw(account(1), QUOTE, 1).unwrap();
    ledger.deposit(account(3), QUOTE, 1).unwrap();
    assert_eq!(ledger.total(QUOTE), u128::from(u64::MAX));
}

#[test]
fn requirements_beyond_u64_are_unfunded_not_wrapped() {
    // A lot of 10^18 units, as an 18-decimal asset is configured: 19 market
    // sells adding up to ⌈2^128 / 10^18⌉ lots once wrapped to less than the
    // seller's balance.
    let wei = MarketConfig {
        id: MarketId(9),
        base: BASE,
        quote: QUOTE,
        tick_size: 1,
        lot_size: 1_000_000_000_000_000_000,
        band_min: Tick(1),
        band_max: Tick(1000),
        initial_price: Tick(500),
        fee_bps: 5,
    };
    wei.validate().unwrap();
    let markets = BTreeMap::from([(wei.id, wei)]);
    let mut sells = vec![order(Side::Sell, None, u64::MAX); 18];
    sells.push(order(Side::Sell, None, 8_240_973_594_166_534_394));
    for o in &mut sells {
        o.market = MarketId(9);
    }
    assert_eq!(
        Ledger::requirement(&markets, &sells),
        Err(FundingError::TooLarge { asset: BASE })
    );
    let mut ledger = Ledger::new(FEES);
    ledger
        .deposit(account(1), BASE, 625_392_568_231_788_544)
        .unwrap();
    assert_eq!(
        ledger.check_funding(&markets, &[(account(1), &sells)]),
        vec![Err(FundingError::TooLarge { asset: BASE })]
    );
    // One order alone just above u64::MAX units, and a buy whose fee
    // overflows 128 bits.
    let huge = MarketConfig {
        id: MarketId(10),
        tick_size: u64::MAX,
        lot_size: u64::MAX,
        band_min: Tick(1),
        band_max: Tick(1),
        initial_price: Tick(1),
        fee_bps: 1000,
        ..markets[&MarketId(9)].clone()
    };
    huge.validate().unwrap();
    let markets = BTreeMap::from([(huge.id, huge)]);
    let at = |side, qty| OrderSpec {
        market: MarketId(10),
        ..order(side, Some(Tick(1)), qty)
    };
    assert_eq!(
        Ledger::requirement(&markets, &[at(Side::Sell, 1)]),
        Ok(vec![(BASE, u128::from(u64::MAX))])
    );
    assert_eq!(
        Ledger::requirement(&markets, &[at(Side::Sell, 2)]),
        Err(FundingError::TooLarge { asset: BASE })
    );
    assert_eq!(
        Ledger::requirement(&markets, &[at(Side::Buy, u64::MAX)]),
        Err(FundingError::TooLarge { asset: QUOTE })
    );
    // Market and band errors still come first, by order index.
    assert_eq!(
        Ledger::requirement(&markets, &[at(Side::Buy, u64::MAX), at(Side::Sell, 0)]),
        Err(FundingError::ZeroQuantity { index: 1 })
    );
}

#[test]
fn requirement_counts_fees_and_market_buys_at_the_band_top() {
    let markets = market(30); // 0.3 %
    let needs = Ledger::requirement(
        &markets,
        &[
            order(Side::Buy, Some(Tick(100)), 3), // 3 × 100 × 10 = 3000 + fee 9
            order(Side::Buy, None, 1),            // 1 × 150 × 10 = 1500 + fee 4
            order(Side::Sell, Some(Tick(60)), 2), // 2 × 100 base
            order(Side::Sell, None, 1),           // 1 × 100 base
        ],
    )
    .unwrap();
    assert_eq!(needs, vec![(BASE, 300), (QUOTE, 3009 + 1504)]);
}

#[test]
fn invalid_orders_are_named() {
    let markets = market(0);
    let mut unknown = order(Side::Buy, Some(Tick(100)), 1);
    unknown.market = MarketId(99);
    assert_eq!(
        Ledger::requirement(&markets, &[order(Side::Buy, Some(Tick(100)), 1), unknown]),
        Err(FundingError::UnknownMarket {
            index: 1,
            market: MarketId(99)
        })
    );
    assert_eq!(
        Ledger::requirement(&markets, &[order(Side::Sell, None, 0)]),
        Err(FundingError::ZeroQuantity { index: 0 })
    );
    assert!(matches!(
        Ledger::requirement(&markets, &[order(Side::Sell, Some(Tick(151)), 1)]),
        Err(FundingError::OutsideBand {
            index: 0,
            limit: Tick(151),
            ..
        })
    ));
}

#[test]
fn over_committed_account_keeps_the_bundles_that_fit_in_the_given_order() {
    let markets = market(0);
    let mut ledger = Ledger::new(FEES);
    ledger.deposit(account(1), QUOTE, 2_500).unwrap();
    ledger.deposit(account(2), QUOTE, 1_000).unwrap();
    let a = [order(Side::Buy, Some(Tick(100)), 1)]; // 1000
    let b = [order(Side::Buy, Some(Tick(100)), 2)]; // 2000
    let c = [order(Side::Buy, Some(Tick(50)), 1)]; // 500
    let d = [order(Side::Buy, Some(Tick(100)), 1)]; // account 2: 1000
    let outcomes = ledger.check_funding(
        &markets,
        &[
            (account(1), &a),
            (account(2), &d),
            (account(1), &b),
            (account(1), &c),
        ],
    );
    assert_eq!(outcomes[0], Ok(()));
    assert_eq!(outcomes[1], Ok(()));
    assert_eq!(
        outcomes[2],
        Err(FundingError::Unfunded {
            asset: QUOTE,
            needed: 2000,
            available: 1500
        })
    );
    assert_eq!(
        outcomes[3],
        Ok(()),
        "a later bundle that still fits is accepted"
    );
}

#[test]
fn settlement_moves_notional_and_fees_and_conserves() {
    let markets = market(100); // 1 %
    let mut ledger = Ledger::new(FEES);
    ledger.deposit(account(1), QUOTE, 10_000).unwrap();
    ledger.deposit(account(2), BASE, 1_000).unwrap();
    let fills = [
        AccountFill {
            account: account(1),
            market: MarketId(7),
            side: Side::Buy,
            qty: 4,
        },
        AccountFill {
            account: account(2),
            market: MarketId(7),
            side: Side::Sell,
            qty: 4,
        },
    ];
    let prices = BTreeMap::from([(MarketId(7), Tick(90))]);
    let summary = ledger.settle(&markets, &prices, &fills).unwrap();
    // notional 4 × 90 × 10 = 3600, fee 36 each side
    assert_eq!(ledger.balance(&account(1), QUOTE), 10_000 - 3_636);
    assert_eq!(ledger.balance(&account(1), BASE), 400);
    assert_eq!(ledger.balance(&account(2), QUOTE), 3_564);
    assert_eq!(ledger.balance(&account(2), BASE), 600);
    assert_eq!(ledger.balance(&FEES, QUOTE), 72);
    assert_eq!(summary.fees, BTreeMap::from([(QUOTE, 72)]));
    assert_eq!(summary.fills_applied, 2);
    assert_eq!(ledger.total(QUOTE), 10_000);
    assert_eq!(ledger.total(BASE), 1_000);
}

#[test]
fn an_overdrawing_settlement_changes_nothing() {
    let markets = market(0);
    let mut ledger = Ledger::new(FEES);
    ledger.deposit(account(1), QUOTE, 100).unwrap();
    ledger.deposit(account(2), BASE, 1_000).unwrap();
    let before = ledger.clone();
    let fills = [
        AccountFill {
            account: account(2),
            market: MarketId(7),
            side: Side::Sell,
            qty: 1,
        },
        AccountFill {
            account: account(1),
            market: MarketId(7),
            side: Side::Buy,
            qty: 1,
        },
    ];
    let prices = BTreeMap::from([(MarketId(7), Tick(100))]);
    assert_eq!(
        ledger.settle(&markets, &prices, &fills),
        Err(LedgerError::Overdrawn {
            account: account(1),
            asset: QUOTE
        })
    );
    assert_eq!(ledger, before);
}

#[test]
fn unbalanced_fills_are_refused_and_change_nothing() {
    let markets = market(0);
    let mut ledger = Ledger::new(FEES);
    ledger.deposit(account(1), QUOTE, 10_000).unwrap();
    let before = ledger.clone();
    let fills = [AccountFill {
        account: account(1),
        market: MarketId(7),
        side: Side::Buy,
        qty: 1,
    }];
    let prices = BTreeMap::from([(MarketId(7), Tick(100))]);
    assert!(matches!(
        ledger.settle(&markets, &prices, &fills),
        Err(LedgerError::NotConserved {
            asset: BASE,
            net: 100
        })
    ));
    assert_eq!(ledger, before);
}

/// Random accounts, deposits and bundles; any uniform price in the band and
/// any balanced fills that respect limits and quantities. Whatever passed the
/// funding check must settle, and every asset's total must be conserved.
/// (account, quote, base) deposits.
type Deposits = Vec<(u8, u64, u64)>;
/// (account, [(is_buy, limit, qty)]) bundles.
type Bundles = Vec<(u8, Vec<(bool, Option<Tick>, u64)>)>;

fn scenario() -> impl Strategy<Value = (Deposits, Bundles, Tick, u16)> {
    let deposits = prop::collection::vec((0u8..6, 0u64..50_000, 0u64..500), 1..8);
    let order = (
        any::<bool>(),
        prop::option::of((50u64..=150).prop_map(Tick)),
        1u64..20,
    );
    let bundles = prop::collection::vec((0u8..6, prop::collection::vec(order, 1..5)), 0..16);
    (deposits, bundles, (50u64..=150).prop_map(Tick), 0u16..=200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(300, 2_000)))]

    #[test]
    fn funded_bundles_always_settle_and_conserve((deposits, bundles, price, fee_bps) in scenario()) {
        let markets = market(fee_bps);
        let mut ledger = Ledger::new(FEES);
        for (who, quote, base) in &deposits {
            ledger.deposit(account(*who), QUOTE, *quote).unwrap();
            ledger.deposit(account(*who), BASE, *base).unwrap();
        }
        let bundles: Vec<(AccountId, Vec<OrderSpec>)> = bundles
            .into_iter()
            .map(|(who, orders)| {
                let orders = orders
                    .into_iter()
                    .map(|(buy, limit, qty)| order(if buy { Side::Buy } else { Side::Sell }, limit, qty))
                    .collect();
                (account(who), orders)
            })
            .collect();
        let refs: Vec<(AccountId, &[OrderSpec])> =
            bundles.iter().map(|(a, o)| (*a, o.as_slice())).collect();
        let outcomes = ledger.check_funding(&markets, &refs);

        // Orders of accepted bundles that accept the price.
        let mut buys = Vec::new();
        let mut sells = Vec::new();
        for ((who, orders), outcome) in bundles.iter().zip(&outcomes) {
            if outcome.is_err() {
                continue;
            }
            for o in orders {
                let accepts = match (o.side, o.limit) {
                    (_, None) => true,
                    (Side::Buy, Some(l)) => price <= l,
                    (Side::Sell, Some(l)) => price >= l,
                };
                if accepts {
                    match o.side {
                        Side::Buy => buys.push((*who, o.qty)),
                        Side::Sell => sells.push((*who, o.qty)),
                    }
                }
            }
        }
        let volume = buys.iter().map(|b| b.1).sum::<u64>().min(sells.iter().map(|s| s.1).sum());
        let mut fills = Vec::new();
        for (side, orders) in [(Side::Buy, &buys), (Side::Sell, &sells)] {
            let mut left = volume;
            for (who, qty) in orders.iter() {
                let qty = (*qty).min(left);
                left -= qty;
                fills.push(AccountFill { account: *who, market: MarketId(7), side, qty });
            }
        }
        let totals = (ledger.total(BASE), ledger.total(QUOTE));
        ledger.settle(&markets, &BTreeMap::from([(MarketId(7), price)]), &fills).unwrap();
        let recomputed = |asset| ledger.iter().filter(|e| e.1 == asset).map(|e| u128::from(e.2)).sum::<u128>();
        prop_assert_eq!((recomputed(BASE), recomputed(QUOTE)), totals);
    }
}

/// A market as extreme as the configuration rules allow: tick and lot sizes
/// up to `u64::MAX` (with `band_max × tick_size` within 64 bits), any band,
/// up to the highest fee.
fn extreme_market() -> impl Strategy<Value = MarketConfig> {
    let unit = prop_oneof![
        3 => Just(1u64),
        1 => Just(u64::MAX),
        1 => Just(1_000_000_000_000_000_000),
        1 => any::<u64>().prop_map(|u| u.max(1)),
        3 => 1u64..1_000_000,
    ];
    let fee = prop_oneof![
        Just(0u16),
        Just(sealbatch::market::FEE_BPS_MAX),
        0u16..=1000
    ];
    (unit.clone(), unit, 1u64..=1 << 20, 0u64..1 << 20, fee).prop_map(
        |(tick_size, lot_size, band_min, width, fee_bps)| {
            // The widest band that keeps band_max × tick_size within u64.
            let top = (u64::MAX / tick_size).max(1);
            let band_min = band_min.min(top);
            let band_max = band_min.saturating_add(width).min(top);
            let config = MarketConfig {
                id: MarketId(7),
                base: BASE,
                quote: QUOTE,
                tick_size,
                lot_size,
                band_min: Tick(band_min),
                band_max: Tick(band_max),
                initial_price: Tick(band_min) + (band_max - band_min) / 2,
                fee_bps,
            };
            config.validate().expect("a valid extreme market");
            config
        },
    )
}

/// (is_buy, limit as a fraction of the band (None: a market order), how the
/// quantity is chosen, a random word for it).
type ExtremeOrder = (bool, Option<u16>, u8, u64);

/// (account, tame: every quantity one an account can cover, orders).
fn extreme_bundles() -> impl Strategy<Value = Vec<(u8, bool, Vec<ExtremeOrder>)>> {
    let order = || {
        (
            any::<bool>(),
            prop::option::of(any::<u16>()),
            0u8..16,
            any::<u64>(),
        )
    };
    let orders = prop_oneof![
        4 => prop::collection::vec(order(), 1..4),
        1 => prop::collection::vec(order(), sealbatch::types::BUNDLE_ORDERS_MAX),
    ];
    prop::collection::vec((0u8..4, any::<bool>(), orders), 1..12)
}

/// Most deposits a fifth of the supply limit (so that four accounts trade),
/// some at or near the limit (refused once it is reached).
fn extreme_amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => Just(u64::MAX / 5),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
        1 => 0u64..1_000_000,
    ]
}

/// A quantity: `u64::MAX`, a random word, or (most often, always if `tame`)
/// up to a quarter of what a fifth of the supply buys or sells at `price`,
/// divided by `orders`.
fn extreme_qty(
    config: &MarketConfig,
    (side, price, orders): (Side, Tick, usize),
    tame: bool,
    how: u8,
    word: u64,
) -> u64 {
    let share = u128::from(u64::MAX / 5);
    let unit = match side {
        Side::Sell => u128::from(config.lot_size),
        // Notional per lot, plus the fee.
        Side::Buy => {
            let notional = u128::from(price) * u128::from(config.tick_size);
            notional + notional * u128::from(config.fee_bps) / 10_000
        }
    };
    let cap = u64::try_from(share / unit / 4 / orders as u128)
        .unwrap_or(u64::MAX)
        .max(1);
    match how {
        0 if !tame => u64::MAX,
        1 if !tame => word.max(1),
        _ => 1 + word % cap,
    }
}

/// A bundle crafted to wrap 128-bit arithmetic: orders of `u64::MAX` lots
/// (and one remainder) whose requirement adds up to just over `2^128`
/// units, where at most 256 orders can reach it; else as near as 256 orders
/// of `u64::MAX` lots get.
fn wrapping_bundle(config: &MarketConfig, side: Side, extra: u64) -> Vec<OrderSpec> {
    let unit = match side {
        Side::Sell => u128::from(config.lot_size),
        Side::Buy => {
            let notional = u128::from(config.band_max) * u128::from(config.tick_size);
            notional + notional * u128::from(config.fee_bps) / 10_000
        }
    };
    // ⌈2^128 / unit⌉ lots, plus a little, in u64::MAX chunks.
    let lots = (u128::MAX / unit).saturating_add(1 + u128::from(extra % 1_000));
    let chunks = usize::try_from(lots / u128::from(u64::MAX)).unwrap_or(usize::MAX);
    let rest = (lots % u128::from(u64::MAX)) as u64;
    let order = |qty| OrderSpec {
        market: config.id,
        side,
        limit: None,
        qty,
        client_order_id: 0,
    };
    let mut orders: Vec<OrderSpec> = (0..chunks.min(sealbatch::types::BUNDLE_ORDERS_MAX))
        .map(|_| order(u64::MAX))
        .collect();
    if rest > 0 && orders.len() < sealbatch::types::BUNDLE_ORDERS_MAX {
        orders.push(order(rest));
    }
    orders
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(400, 4_000)))]

    /// Over extreme markets, balances up to the supply limit, quantities up
    /// to `u64::MAX` and 256-order bundles: whatever funding accepts, the
    /// real clearing engine clears and the ledger settles, conserving every
    /// asset, and no balance leaves `u64`.
    #[test]
    fn funded_extreme_bundles_always_clear_settle_and_conserve(
        config in extreme_market(),
        deposits in prop::collection::vec((extreme_amount(), extreme_amount()), 4..6),
        bundles in extreme_bundles(),
        wrapping in (any::<bool>(), any::<u64>()),
        seed in any::<[u8; 32]>(),
    ) {
        let markets = BTreeMap::from([(config.id, config.clone())]);
        let mut ledger = Ledger::new(FEES);
        for (who, (quote, base)) in deposits.into_iter().enumerate() {
            // Past the supply limit a deposit is refused and changes nothing.
            for (asset, amount) in [(QUOTE, quote), (BASE, base)] {
                let before = ledger.total(asset);
                match ledger.deposit(account(who as u8), asset, amount) {
                    Ok(()) => prop_assert!(before + u128::from(amount) <= u128::from(u64::MAX)),
                    Err(LedgerError::SupplyExceeded { .. }) => {
                        prop_assert!(before + u128::from(amount) > u128::from(u64::MAX));
                        prop_assert_eq!(ledger.total(asset), before);
                    }
                    Err(other) => prop_assert!(false, "unexpected refusal {other}"),
                }
            }
        }
        let width = config.band_max - config.band_min;
        let bundles: Vec<(AccountId, Vec<OrderSpec>)> = bundles
            .into_iter()
            .map(|(who, tame, orders)| {
                let count = orders.len();
                let orders = orders
                    .into_iter()
                    .map(|(buy, limit, how, word)| {
                        let side = if buy { Side::Buy } else { Side::Sell };
                        let limit = limit.map(|f| {
                            config.band_min + (u128::from(width) * u128::from(f) / u128::from(u16::MAX)) as u64
                        });
                        OrderSpec {
                            market: config.id,
                            side,
                            limit,
                            qty: extreme_qty(
                                &config,
                                (side, limit.unwrap_or(config.band_max), count),
                                tame,
                                how,
                                word,
                            ),
                            client_order_id: 0,
                        }
                    })
                    .collect();
                (account(who), orders)
            })
            .collect();
        // The crafted bundle first (in funding order) from an account that
        // holds some of what it sells or buys with.
        let (buy, extra) = wrapping;
        let side = if buy { Side::Buy } else { Side::Sell };
        let crafted = wrapping_bundle(&config, side, extra);
        let mut bundles = bundles;
        bundles.insert(0, (account(0), crafted));
        let refs: Vec<(AccountId, &[OrderSpec])> =
            bundles.iter().map(|(a, o)| (*a, o.as_slice())).collect();
        let outcomes = ledger.check_funding(&markets, &refs);
        prop_assert!(
            outcomes[0].is_err(),
            "a bundle needing more than 2^64 - 1 units was funded"
        );

        // The accepted orders, numbered in bundle order, cleared by the engine.
        let mut columns = OrderColumns::new();
        let mut owners = Vec::new();
        for ((who, orders), outcome) in bundles.iter().zip(&outcomes) {
            if outcome.is_err() {
                continue;
            }
            for o in orders {
                columns.push(Order { id: OrderId(owners.len() as u64), side: o.side, limit: o.limit, qty: o.qty });
                owners.push((*who, o.side));
            }
        }
        let input = MarketInput {
            config: clearing::MarketParams {
                market: config.id,
                reference: config.initial_price,
                band: PriceBand::new(config.band_min, config.band_max),
            },
            orders: columns,
        };
        let result = clearing::clear_batch(&[input], &seed);
        prop_assert!(result.is_ok(), "funded orders did not clear: {:?}", result.err());
        let result = result.unwrap();
        let market = &result.markets[0];
        let Some(price) = market.price else {
            prop_assert_eq!(market.volume, 0);
            return Ok(());
        };
        let fills: Vec<AccountFill> = market
            .fills()
            .filter(|f| f.filled != 0)
            .map(|f| {
                let (who, side) = owners[f.id.0 as usize];
                AccountFill { account: who, market: config.id, side, qty: f.filled }
            })
            .collect();
        let totals = (ledger.total(BASE), ledger.total(QUOTE));
        let settled = ledger.settle(&markets, &BTreeMap::from([(config.id, price)]), &fills);
        prop_assert!(settled.is_ok(), "funded fills did not settle: {:?}", settled.err());
        let recomputed = |asset| ledger.iter().filter(|e| e.1 == asset).map(|e| u128::from(e.2)).sum::<u128>();
        prop_assert_eq!((recomputed(BASE), recomputed(QUOTE)), totals);
        prop_assert_eq!((ledger.total(BASE), ledger.total(QUOTE)), totals);
    }
}

/// Two ledgers with the same balances are equal whatever their history: an
/// asset emptied by a withdrawal leaves no zero total behind (a recovery from
/// a checkpoint compared unequal to a full replay; found by the
/// `sequencer_drive` fuzz target).
#[test]
fn equal_balances_make_equal_ledgers_whatever_the_history() {
    let mut lived = Ledger::new(FEES);
    lived.deposit(account(1), QUOTE, 500).unwrap();
    lived.deposit(account(2), BASE, 0).unwrap();
    lived.withdraw(account(1), QUOTE, 500).unwrap();
    assert_eq!(lived, Ledger::new(FEES));
    lived.deposit(account(1), BASE, 9).unwrap();
    let mut restored = Ledger::new(FEES);
    restored.deposit(account(1), BASE, 9).unwrap();
    assert_eq!(lived, restored);
}

/// A band reaching `u64::MAX` passed the market checks but not the clearing
/// engine's (its highest tick is `2^64 − 2`), so every batch was voided; it
/// is refused as a configuration error (found by `sequencer_drive`).
#[test]
fn a_band_above_the_highest_tick_is_refused() {
    let mut config = market(0).remove(&MarketId(7)).unwrap();
    config.tick_size = 1;
    config.band_max = Tick::MAX;
    assert!(matches!(
        config.validate(),
        Err(sealbatch::market::MarketConfigError::BandTooHigh { .. })
    ));
    config.band_max = Tick::MAX - 1;
    config.validate().expect("the highest tick is allowed");
}

//! Ledger: deposits, withdrawals, funding checks and settlement.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sealbatch::ledger::{Fill, FundingError, Ledger, LedgerError};
use sealbatch::market::{AccountId, AssetId, MarketConfig};
use sealbatch::order::OrderSpec;
use sealbatch::types::{MarketId, Side, Tick};

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
        band_min: 50,
        band_max: 150,
        initial_price: 100,
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

    ledger.deposit(account(2), QUOTE, u64::MAX).unwrap();
    assert!(matches!(
        ledger.deposit(account(2), QUOTE, 1),
        Err(LedgerError::Overflow { .. })
    ));
    assert_eq!(ledger.balance(&account(2), QUOTE), u64::MAX);
}

#[test]
fn requirement_counts_fees_and_market_buys_at_the_band_top() {
    let markets = market(30); // 0.3 %
    let needs = Ledger::requirement(
        &markets,
        &[
            order(Side::Buy, Some(100), 3), // 3 × 100 × 10 = 3000 + fee 9
            order(Side::Buy, None, 1),      // 1 × 150 × 10 = 1500 + fee 4
            order(Side::Sell, Some(60), 2), // 2 × 100 base
            order(Side::Sell, None, 1),     // 1 × 100 base
        ],
    )
    .unwrap();
    assert_eq!(needs, vec![(BASE, 300), (QUOTE, 3009 + 1504)]);
}

#[test]
fn invalid_orders_are_named() {
    let markets = market(0);
    let mut unknown = order(Side::Buy, Some(100), 1);
    unknown.market = MarketId(99);
    assert_eq!(
        Ledger::requirement(&markets, &[order(Side::Buy, Some(100), 1), unknown]),
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
        Ledger::requirement(&markets, &[order(Side::Sell, Some(151), 1)]),
        Err(FundingError::OutsideBand {
            index: 0,
            limit: 151,
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
    let a = [order(Side::Buy, Some(100), 1)]; // 1000
    let b = [order(Side::Buy, Some(100), 2)]; // 2000
    let c = [order(Side::Buy, Some(50), 1)]; // 500
    let d = [order(Side::Buy, Some(100), 1)]; // account 2: 1000
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
        Fill {
            account: account(1),
            market: MarketId(7),
            side: Side::Buy,
            qty: 4,
        },
        Fill {
            account: account(2),
            market: MarketId(7),
            side: Side::Sell,
            qty: 4,
        },
    ];
    let prices = BTreeMap::from([(MarketId(7), 90)]);
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
        Fill {
            account: account(2),
            market: MarketId(7),
            side: Side::Sell,
            qty: 1,
        },
        Fill {
            account: account(1),
            market: MarketId(7),
            side: Side::Buy,
            qty: 1,
        },
    ];
    let prices = BTreeMap::from([(MarketId(7), 100)]);
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
#[should_panic(expected = "does not conserve")]
fn unbalanced_fills_are_refused_loudly() {
    let markets = market(0);
    let mut ledger = Ledger::new(FEES);
    ledger.deposit(account(1), QUOTE, 10_000).unwrap();
    let fills = [Fill {
        account: account(1),
        market: MarketId(7),
        side: Side::Buy,
        qty: 1,
    }];
    let prices = BTreeMap::from([(MarketId(7), 100)]);
    let _ = ledger.settle(&markets, &prices, &fills);
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
    let order = (any::<bool>(), prop::option::of(50u64..=150), 1u64..20);
    let bundles = prop::collection::vec((0u8..6, prop::collection::vec(order, 1..5)), 0..16);
    (deposits, bundles, 50u64..=150, 0u16..=200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

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
                fills.push(Fill { account: *who, market: MarketId(7), side, qty });
            }
        }
        let totals = (ledger.total(BASE), ledger.total(QUOTE));
        ledger.settle(&markets, &BTreeMap::from([(MarketId(7), price)]), &fills).unwrap();
        let recomputed = |asset| ledger.iter().filter(|e| e.1 == asset).map(|e| u128::from(e.2)).sum::<u128>();
        prop_assert_eq!((recomputed(BASE), recomputed(QUOTE)), totals);
    }
}

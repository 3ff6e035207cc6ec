//! Balances, funding checks and settlement.
//!
//! The ledger holds one `u64` balance per (account, asset), in integer asset
//! units. It changes in three ways only, each of which the sequencer journals:
//! operator [`deposit`](Ledger::deposit)s and [`withdraw`](Ledger::withdraw)als,
//! and the [`settle`](Ledger::settle)ment of a cleared batch.
//!
//! # Funding
//!
//! Before a batch is cleared, every bundle must be covered by its account's
//! balance ([`Ledger::check_funding`]). A bundle reserves, per asset:
//!
//! - a buy of `q` lots with limit `p`: `notional(p, q) + fee(notional(p, q))`
//!   quote units, where a market buy counts at the band's top price;
//! - a sell of `q` lots: `q × lot_size` base units (its fee comes out of the
//!   proceeds).
//!
//! A bundle is all or nothing. When an account's bundles together ask for more
//! than it holds, they are taken in the order the caller gives — the sequencer
//! gives them sorted by commitment, never by arrival — and each bundle that
//! still fits in what remains is accepted; one that does not is rejected as
//! [`FundingError::Unfunded`] and the next is tried. The exact rule is in
//! `spec/ledger.md`.
//!
//! # Settlement
//!
//! A fill of `q` lots at the clearing price `p` moves, with
//! `n = q × p × tick_size` and `f = ⌊n × fee_bps / 10 000⌋`:
//!
//! - buyer: `−(n + f)` quote, `+q × lot_size` base;
//! - seller: `+(n − f)` quote, `−q × lot_size` base;
//! - the fee account: `+f` quote from each of the two.
//!
//! Every asset's total is conserved; [`Ledger::settle`] checks it (in release
//! builds too) and applies a batch all at once or not at all.
//!
//! # Bounds
//!
//! Every money operation is checked; nothing wraps. The sum of all balances
//! of one asset never exceeds [`ASSET_SUPPLY_MAX`] (`u64::MAX`): a deposit
//! that would pass it is refused. Because settlement conserves every asset,
//! no credit can then take a balance past `u64::MAX`, and a bundle whose
//! requirement of some asset exceeds `u64::MAX` — however it is made up — is
//! unfunded ([`FundingError::TooLarge`]). Together with the funding rule this
//! makes settlement of a funded batch infallible: funding accepts ⇒
//! settlement succeeds and conserves every asset (property-tested in
//! `tests/logic/ledger.rs` over extreme markets and quantities).

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::market::{AccountId, AssetId, MarketConfig};
use crate::order::OrderSpec;
use crate::types::{Lots, MarketId, Side, Tick};

/// The most of one asset that all accounts together may hold, in its units.
///
/// A balance is a `u64`; bounding the whole supply by the same number means
/// no settlement credit can overflow a balance (settlement conserves each
/// asset), and every side of every market trades at most `u64::MAX` units.
pub const ASSET_SUPPLY_MAX: u64 = u64::MAX;

/// An error from a deposit, a withdrawal or a settlement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A withdrawal asks for more than the balance holds.
    #[error("account {account} holds {available} of asset {asset}, cannot withdraw {requested}")]
    InsufficientBalance {
        /// The account.
        account: AccountId,
        /// The asset.
        asset: AssetId,
        /// Its balance.
        available: u64,
        /// The amount asked for.
        requested: u64,
    },
    /// A balance would exceed `u64::MAX`.
    #[error("account {account}: balance of asset {asset} would overflow")]
    Overflow {
        /// The account.
        account: AccountId,
        /// The asset.
        asset: AssetId,
    },
    /// A deposit would take the asset's total past [`ASSET_SUPPLY_MAX`].
    #[error(
        "asset {asset}: all accounts hold {total}; a deposit of {amount} would pass the supply limit of {ASSET_SUPPLY_MAX}"
    )]
    SupplyExceeded {
        /// The asset.
        asset: AssetId,
        /// What all accounts hold now.
        total: u128,
        /// The deposit refused.
        amount: u64,
    },
    /// A settlement's deltas do not sum to zero for some asset: it would
    /// create or destroy money. Never applied.
    #[error("settlement does not conserve asset {asset}: net change {net}")]
    NotConserved {
        /// The asset.
        asset: AssetId,
        /// The net change it would make.
        net: i128,
    },
    /// A fill names a market that is not configured.
    #[error("fill in unknown market {0}")]
    UnknownMarket(MarketId),
    /// A settlement would take a balance below zero: the funding check was
    /// skipped or the balances changed after it.
    #[error("settlement would take account {account}'s balance of asset {asset} below zero")]
    Overdrawn {
        /// The account.
        account: AccountId,
        /// The asset.
        asset: AssetId,
    },
}

/// Why a bundle failed its funding check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FundingError {
    /// An order names a market that is not configured.
    #[error("order {index} names unknown market {market}")]
    UnknownMarket {
        /// The order's index in its bundle.
        index: usize,
        /// The market it names.
        market: MarketId,
    },
    /// An order has a zero quantity.
    #[error("order {index} has zero quantity")]
    ZeroQuantity {
        /// The order's index in its bundle.
        index: usize,
    },
    /// An order's limit lies outside its market's price band.
    #[error("order {index}: limit {limit} lies outside market {market}'s band [{min}, {max}]")]
    OutsideBand {
        /// The order's index in its bundle.
        index: usize,
        /// Its market.
        market: MarketId,
        /// Its limit price.
        limit: Tick,
        /// The band's lower end.
        min: Tick,
        /// The band's upper end.
        max: Tick,
    },
    /// The bundle needs more than `u64::MAX` units of an asset (the sum
    /// overflowed 128 bits, or just passed 64): more than any balance can
    /// hold, so it is unfunded whatever the account holds.
    #[error("needs more than {} of asset {asset}", u64::MAX)]
    TooLarge {
        /// The lowest asset (by id) whose requirement is too large.
        asset: AssetId,
    },
    /// The account cannot cover the bundle with what its earlier bundles
    /// (in the caller's order) left over.
    #[error("needs {needed} of asset {asset}, {available} left")]
    Unfunded {
        /// The first asset (by id) that falls short.
        asset: AssetId,
        /// What the whole bundle needs of it.
        needed: u128,
        /// What was left of the balance.
        available: u128,
    },
}

/// One order's fill, as settlement applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountFill {
    /// The account that placed the order.
    pub account: AccountId,
    /// The market it traded in.
    pub market: MarketId,
    /// Its side.
    pub side: Side,
    /// Lots filled; may be zero (then the fill moves nothing).
    pub qty: Lots,
}

/// What one settlement moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettlementSummary {
    /// Fees credited to the fee account, per quote asset.
    pub fees: BTreeMap<AssetId, u128>,
    /// Fills applied with a non-zero quantity.
    pub fills_applied: usize,
}

/// Per-(account, asset) balances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ledger {
    balances: BTreeMap<(AccountId, AssetId), u64>,
    totals: BTreeMap<AssetId, u128>,
    fee_account: AccountId,
}

impl Ledger {
    /// An empty ledger whose fees go to `fee_account`.
    #[must_use]
    pub fn new(fee_account: AccountId) -> Ledger {
        Ledger {
            balances: BTreeMap::new(),
            totals: BTreeMap::new(),
            fee_account,
        }
    }

    /// The account fees are paid to.
    #[must_use]
    pub fn fee_account(&self) -> AccountId {
        self.fee_account
    }

    /// The balance of `account` in `asset` (zero if never funded).
    #[must_use]
    pub fn balance(&self, account: &AccountId, asset: AssetId) -> u64 {
        self.balances.get(&(*account, asset)).copied().unwrap_or(0)
    }

    /// Every non-zero balance of `account`, by asset id.
    #[must_use]
    pub fn balances_of(&self, account: &AccountId) -> Vec<(AssetId, u64)> {
        self.balances
            .range((*account, AssetId(0))..=(*account, AssetId(u32::MAX)))
            .filter(|(_, amount)| **amount != 0)
            .map(|((_, asset), amount)| (*asset, *amount))
            .collect()
    }

    /// Every non-zero balance, sorted by (account, asset).
    pub fn iter(&self) -> impl Iterator<Item = (AccountId, AssetId, u64)> + '_ {
        self.balances
            .iter()
            .filter(|(_, amount)| **amount != 0)
            .map(|((account, asset), amount)| (*account, *asset, *amount))
    }

    /// The sum of all balances of `asset`.
    #[must_use]
    pub fn total(&self, asset: AssetId) -> u128 {
        self.totals.get(&asset).copied().unwrap_or(0)
    }

    /// Credits `amount` of `asset` to `account` (an operator deposit).
    ///
    /// # Errors
    ///
    /// [`LedgerError::SupplyExceeded`] if all balances of `asset` together
    /// would exceed [`ASSET_SUPPLY_MAX`] (which also keeps this balance within
    /// `u64`); the ledger is then unchanged.
    pub fn deposit(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    ) -> Result<(), LedgerError> {
        let total = self.total(asset);
        let Some(next_total) = total
            .checked_add(u128::from(amount))
            .filter(|&t| t <= u128::from(ASSET_SUPPLY_MAX))
        else {
            return Err(LedgerError::SupplyExceeded {
                asset,
                total,
                amount,
            });
        };
        let next = self
            .balance(&account, asset)
            .checked_add(amount)
            .ok_or(LedgerError::Overflow { account, asset })?;
        self.set(account, asset, next);
        self.set_total(asset, next_total);
        Ok(())
    }

    /// Debits `amount` of `asset` from `account` (an operator withdrawal).
    ///
    /// # Errors
    ///
    /// [`LedgerError::InsufficientBalance`] if the balance is smaller; the
    /// ledger is then unchanged.
    pub fn withdraw(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    ) -> Result<(), LedgerError> {
        let available = self.balance(&account, asset);
        let Some(rest) = available.checked_sub(amount) else {
            return Err(LedgerError::InsufficientBalance {
                account,
                asset,
                available,
                requested: amount,
            });
        };
        // The total is the sum of the balances, so it holds at least this one.
        let total = self.total(asset).checked_sub(u128::from(amount)).ok_or(
            LedgerError::InsufficientBalance {
                account,
                asset,
                available,
                requested: amount,
            },
        )?;
        self.set(account, asset, rest);
        self.set_total(asset, total);
        Ok(())
    }

    /// Records an asset's total; a zero total is no entry, so that two
    /// ledgers with the same balances compare equal whatever their history.
    fn set_total(&mut self, asset: AssetId, total: u128) {
        if total == 0 {
            self.totals.remove(&asset);
        } else {
            self.totals.insert(asset, total);
        }
    }

    fn set(&mut self, account: AccountId, asset: AssetId, amount: u64) {
        if amount == 0 {
            self.balances.remove(&(account, asset));
        } else {
            self.balances.insert((account, asset), amount);
        }
    }

    /// What one bundle reserves per asset, ascending by asset, after checking
    /// each order's market, quantity and band. Every amount is at most
    /// `u64::MAX`.
    ///
    /// # Errors
    ///
    /// The first order (by index) with an unknown market, a zero quantity or
    /// a limit outside its band; else [`FundingError::TooLarge`] naming the
    /// lowest asset whose requirement exceeds `u64::MAX`.
    pub fn requirement(
        markets: &BTreeMap<MarketId, MarketConfig>,
        orders: &[OrderSpec],
    ) -> Result<Vec<(AssetId, u128)>, FundingError> {
        // A bundle touches at most two assets per order: a short list beats a
        // map, and is sorted at the end. `None`: more than any balance.
        let mut needs: Vec<(AssetId, Option<u128>)> = Vec::new();
        for (index, order) in orders.iter().enumerate() {
            let Some(market) = markets.get(&order.market) else {
                return Err(FundingError::UnknownMarket {
                    index,
                    market: order.market,
                });
            };
            if order.qty == 0 {
                return Err(FundingError::ZeroQuantity { index });
            }
            if let Some(limit) = order.limit
                && !(market.band_min..=market.band_max).contains(&limit)
            {
                return Err(FundingError::OutsideBand {
                    index,
                    market: market.id,
                    limit,
                    min: market.band_min,
                    max: market.band_max,
                });
            }
            let (asset, amount) = match order.side {
                Side::Buy => {
                    let price = order.limit.unwrap_or(market.band_max);
                    let cost = market
                        .notional(price, order.qty)
                        .and_then(|notional| notional.checked_add(market.fee(notional)?));
                    (market.quote, cost)
                }
                Side::Sell => (market.base, Some(market.base_amount(order.qty))),
            };
            let representable = |sum: Option<u128>| sum.filter(|&s| s <= u128::from(u64::MAX));
            match needs.iter_mut().find(|(a, _)| *a == asset) {
                Some((_, total)) => {
                    *total = representable(total.zip(amount).and_then(|(t, a)| t.checked_add(a)));
                }
                None => needs.push((asset, representable(amount))),
            }
        }
        needs.sort_unstable_by_key(|&(asset, _)| asset);
        needs
            .into_iter()
            .map(|(asset, amount)| {
                amount
                    .map(|a| (asset, a))
                    .ok_or(FundingError::TooLarge { asset })
            })
            .collect()
    }

    /// Checks that each bundle is covered by its account's balance.
    ///
    /// `bundles` are taken in the order given (the sequencer sorts them by
    /// commitment); each account's accepted bundles reserve from its balance,
    /// and a bundle that no longer fits is rejected while later ones of the
    /// same account are still tried. The ledger itself is not changed.
    ///
    /// Returns one outcome per bundle, in the same order.
    #[must_use]
    pub fn check_funding(
        &self,
        markets: &BTreeMap<MarketId, MarketConfig>,
        bundles: &[(AccountId, &[OrderSpec])],
    ) -> Vec<Result<(), FundingError>> {
        // Each bundle's needs depend on nothing else: compute them in
        // parallel. Reserving is sequential, in the order given.
        let needs: Vec<Result<Vec<(AssetId, u128)>, FundingError>> = bundles
            .par_iter()
            .map(|(_, orders)| Self::requirement(markets, orders))
            .collect();
        // Per account: (asset, still available) for the assets seen so far,
        // read from the ledger the first time each is needed.
        let mut available: BTreeMap<AccountId, Vec<(AssetId, u128)>> = BTreeMap::new();
        bundles
            .iter()
            .zip(needs)
            .map(|((account, _), needs)| {
                let needs = needs?;
                let left = available.entry(*account).or_default();
                for &(asset, _) in &needs {
                    if !left.iter().any(|(a, _)| *a == asset) {
                        left.push((asset, u128::from(self.balance(account, asset))));
                    }
                }
                for &(asset, needed) in &needs {
                    let free = left
                        .iter()
                        .find(|(a, _)| *a == asset)
                        .map_or(0, |&(_, free)| free);
                    if needed > free {
                        return Err(FundingError::Unfunded {
                            asset,
                            needed,
                            available: free,
                        });
                    }
                }
                for (asset, needed) in needs {
                    if let Some((_, free)) = left.iter_mut().find(|(a, _)| *a == asset) {
                        *free -= needed;
                    }
                }
                Ok(())
            })
            .collect()
    }

    /// Applies a cleared batch: every fill at its market's clearing price.
    ///
    /// All or nothing: the deltas are computed and checked first, then applied.
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownMarket`] for a fill in a market missing from
    /// `markets` or `prices`; [`LedgerError::Overdrawn`] or
    /// [`LedgerError::Overflow`] if a balance would leave `u64`;
    /// [`LedgerError::NotConserved`] if the fills do not conserve an asset
    /// (bought ≠ sold in some market: settling them would create or destroy
    /// money). The ledger is then unchanged. None of these can happen to
    /// the fills of a funded, correctly cleared batch.
    pub fn settle(
        &mut self,
        markets: &BTreeMap<MarketId, MarketConfig>,
        prices: &BTreeMap<MarketId, Tick>,
        fills: &[AccountFill],
    ) -> Result<SettlementSummary, LedgerError> {
        // Fills come grouped by envelope, so runs of one account are common:
        // sum a run in a short list and fold it into the map once. Fees are
        // summed per asset and credited at the end.
        let mut deltas: BTreeMap<(AccountId, AssetId), i128> = BTreeMap::new();
        let mut summary = SettlementSummary::default();
        let mut fee_total: BTreeMap<AssetId, i128> = BTreeMap::new();
        let mut run: Option<(AccountId, Vec<(AssetId, i128)>)> = None;
        // Every amount is at most u64::MAX in magnitude and a batch holds
        // fewer than 2^40 fills, so no sum below can leave i128; the sums are
        // checked all the same, and an overflow refuses the settlement.
        let overflow = |fill: &AccountFill, asset: AssetId| LedgerError::Overflow {
            account: fill.account,
            asset,
        };
        let flush = |deltas: &mut BTreeMap<(AccountId, AssetId), i128>,
                     run: Option<(AccountId, Vec<(AssetId, i128)>)>|
         -> Result<(), LedgerError> {
            if let Some((account, amounts)) = run {
                for (asset, amount) in amounts {
                    let sum = deltas.entry((account, asset)).or_insert(0);
                    *sum = sum
                        .checked_add(amount)
                        .ok_or(LedgerError::Overflow { account, asset })?;
                }
            }
            Ok(())
        };
        for fill in fills.iter().filter(|fill| fill.qty != 0) {
            let (Some(market), Some(&price)) =
                (markets.get(&fill.market), prices.get(&fill.market))
            else {
                return Err(LedgerError::UnknownMarket(fill.market));
            };
            // A balance is a u64, so any amount beyond u64::MAX cannot settle;
            // below it, every sum of a few amounts fits in an i128.
            let notional = settleable(market.notional(price, fill.qty), fill, market.quote)?;
            let fee = settleable(market.fee(notional.unsigned_abs()), fill, market.quote)?;
            let base = settleable(Some(market.base_amount(fill.qty)), fill, market.base)?;
            // Each term is at most u64::MAX: these cannot overflow an i128.
            let (quote_delta, base_delta) = match fill.side {
                Side::Buy => (-(notional + fee), base),
                Side::Sell => (notional - fee, -base),
            };
            if run
                .as_ref()
                .is_none_or(|(account, _)| *account != fill.account)
            {
                flush(&mut deltas, run.take())?;
                run = Some((fill.account, Vec::new()));
            }
            if let Some((_, amounts)) = run.as_mut() {
                for (asset, amount) in [(market.quote, quote_delta), (market.base, base_delta)] {
                    match amounts.iter_mut().find(|(a, _)| *a == asset) {
                        Some((_, sum)) => {
                            *sum = sum.checked_add(amount).ok_or(overflow(fill, asset))?;
                        }
                        None => amounts.push((asset, amount)),
                    }
                }
            }
            let fees = fee_total.entry(market.quote).or_insert(0);
            *fees = fees.checked_add(fee).ok_or(overflow(fill, market.quote))?;
            summary.fills_applied += 1;
        }
        flush(&mut deltas, run.take())?;
        for (asset, fee) in fee_total {
            let account = self.fee_account;
            let sum = deltas.entry((account, asset)).or_insert(0);
            *sum = sum
                .checked_add(fee)
                .ok_or(LedgerError::Overflow { account, asset })?;
            summary.fees.insert(asset, fee.unsigned_abs());
        }

        // Conservation, checked in release builds too: for every asset the
        // deltas cancel out. A sum that leaves i128 cannot be zero either.
        let mut per_asset: BTreeMap<AssetId, Option<i128>> = BTreeMap::new();
        for ((_, asset), delta) in &deltas {
            let sum = per_asset.entry(*asset).or_insert(Some(0));
            *sum = sum.and_then(|s| s.checked_add(*delta));
        }
        for (&asset, &sum) in &per_asset {
            if sum != Some(0) {
                return Err(LedgerError::NotConserved {
                    asset,
                    net: sum.unwrap_or(i128::MAX),
                });
            }
        }

        let mut updates = Vec::with_capacity(deltas.len());
        for ((account, asset), delta) in deltas {
            let balance = i128::from(self.balance(&account, asset));
            let next = balance
                .checked_add(delta)
                .ok_or(LedgerError::Overflow { account, asset })?;
            if next < 0 {
                return Err(LedgerError::Overdrawn { account, asset });
            }
            let next = u64::try_from(next).map_err(|_| LedgerError::Overflow { account, asset })?;
            updates.push((account, asset, next));
        }
        for (account, asset, amount) in updates {
            self.set(account, asset, amount);
        }
        Ok(summary)
    }
}

/// `amount` as an `i128`, if a `u64` balance could ever hold it (`None`: it
/// did not even fit in 128 bits).
fn settleable(
    amount: Option<u128>,
    fill: &AccountFill,
    asset: AssetId,
) -> Result<i128, LedgerError> {
    amount
        .and_then(|a| u64::try_from(a).ok())
        .map(i128::from)
        .ok_or(LedgerError::Overflow {
            account: fill.account,
            asset,
        })
}

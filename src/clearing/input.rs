//! The clearing engine's input: per-market configuration and orders stored as
//! columns (struct of arrays), which is what makes the engine's passes over
//! millions of orders memory-friendly.

use std::sync::Arc;

use super::ClearingError;
use crate::order::Order;
use crate::types::{Lots, MARKET_ORDERS_MAX, MARKETS_MAX, MarketId, OrderId, Side, Tick};

pub use crate::types::{TICK_MAX, TICK_MIN};

/// The inclusive range of ticks `[min, max]` a market's limit prices and
/// clearing price must lie in; within `[TICK_MIN, TICK_MAX]`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PriceBand {
    /// The lowest admissible tick.
    pub min: Tick,
    /// The highest admissible tick.
    pub max: Tick,
}

impl PriceBand {
    /// The band `[min, max]`; see [`MarketParams::validate`] for the check
    /// that it is not empty.
    #[must_use]
    pub const fn new(min: Tick, max: Tick) -> PriceBand {
        PriceBand { min, max }
    }

    /// Every admissible tick: `[TICK_MIN, TICK_MAX]`.
    pub const FULL: PriceBand = PriceBand::new(TICK_MIN, TICK_MAX);

    /// Whether `tick` lies in the band.
    #[must_use]
    pub const fn contains(&self, tick: Tick) -> bool {
        self.min.get() <= tick.get() && tick.get() <= self.max.get()
    }

    /// `max - min`: one less than the number of ticks in the band. Zero for
    /// an empty band.
    #[must_use]
    pub const fn width(&self) -> u64 {
        self.max.since(self.min)
    }
}

/// One market's parameters for one batch: what clearing needs of it (the
/// deployment's whole market configuration is [`crate::market::MarketConfig`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct MarketParams {
    /// The market.
    pub market: MarketId,
    /// The reference price: the market's last clearing price, or its
    /// configured initial price before its first trade. Inside `band`.
    pub reference: Tick,
    /// The admissible prices.
    pub band: PriceBand,
}

impl MarketParams {
    /// Checks that the band is not empty, lies within `[TICK_MIN, TICK_MAX]`
    /// and holds the reference price.
    ///
    /// # Errors
    ///
    /// [`ClearingError::EmptyBand`], [`ClearingError::BandOutOfRange`] or
    /// [`ClearingError::ReferenceOutsideBand`].
    pub fn validate(&self) -> Result<(), ClearingError> {
        let PriceBand { min, max } = self.band;
        if min < TICK_MIN || max > TICK_MAX {
            return Err(ClearingError::BandOutOfRange {
                market: self.market,
                min,
                max,
            });
        }
        if min > max {
            return Err(ClearingError::EmptyBand {
                market: self.market,
                min,
                max,
            });
        }
        if !self.band.contains(self.reference) {
            return Err(ClearingError::ReferenceOutsideBand {
                market: self.market,
                reference: self.reference,
                min,
                max,
            });
        }
        Ok(())
    }
}

/// Bit 0 of a kind byte: the order sells.
pub(crate) const KIND_SELL: u8 = 1;
/// Bit 1 of a kind byte: the order is a market order (no limit).
pub(crate) const KIND_MARKET: u8 = 2;

/// One market's orders as columns: ids, kinds (side and whether it is a
/// market order), limits and quantities.
///
/// The fast entry points ([`clear_batch`](super::clear_batch) and friends)
/// require the ids to be strictly increasing, which they check in the same
/// pass that builds the histograms; the sequencer produces orders that way.
/// [`canonical_batch`] sorts arbitrary input into this form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderColumns {
    /// Shared with the [`MarketResult`](super::MarketResult)s made from these
    /// orders, so that results do not copy the id column.
    ids: Arc<Vec<OrderId>>,
    /// `KIND_SELL | KIND_MARKET` bits.
    kinds: Vec<u8>,
    /// The limit; for market orders `u64::MAX` (buys) or `0` (sells), a
    /// limit that accepts every price and ranks above every real limit.
    limits: Vec<Tick>,
    qtys: Vec<Lots>,
}

impl OrderColumns {
    /// No orders.
    #[must_use]
    pub fn new() -> OrderColumns {
        OrderColumns::default()
    }

    /// No orders, with room for `capacity` without reallocating.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> OrderColumns {
        OrderColumns {
            ids: Arc::new(Vec::with_capacity(capacity)),
            kinds: Vec::with_capacity(capacity),
            limits: Vec::with_capacity(capacity),
            qtys: Vec::with_capacity(capacity),
        }
    }

    /// Appends one order (no check here: the engine validates when clearing).
    pub fn push(&mut self, order: Order) {
        let side = match order.side {
            Side::Buy => 0,
            Side::Sell => KIND_SELL,
        };
        let (market, limit) = match (order.limit, order.side) {
            (Some(limit), _) => (0, limit),
            (None, Side::Buy) => (KIND_MARKET, Tick::MAX),
            (None, Side::Sell) => (KIND_MARKET, Tick::ZERO),
        };
        // Copies the ids only if a result still shares them.
        Arc::make_mut(&mut self.ids).push(order.id);
        self.kinds.push(side | market);
        self.limits.push(limit);
        self.qtys.push(order.qty);
    }

    /// How many orders.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no orders.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The order at position `index`, if any.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<Order> {
        (index < self.len()).then(|| self.order_at(index))
    }

    /// The orders, in position order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Order> + ExactSizeIterator + '_ {
        (0..self.len()).map(|i| self.order_at(i))
    }

    /// The order at `index < len()`.
    fn order_at(&self, index: usize) -> Order {
        let kind = self.kinds[index];
        Order {
            id: self.ids[index],
            side: side_of(kind),
            limit: if kind & KIND_MARKET != 0 {
                None
            } else {
                Some(self.limits[index])
            },
            qty: self.qtys[index],
        }
    }

    /// The ids column.
    #[must_use]
    pub fn ids(&self) -> &[OrderId] {
        &self.ids
    }

    /// The ids column, shared (no copy).
    #[must_use]
    pub fn shared_ids(&self) -> Arc<Vec<OrderId>> {
        Arc::clone(&self.ids)
    }

    pub(crate) fn kinds(&self) -> &[u8] {
        &self.kinds
    }

    pub(crate) fn limits(&self) -> &[Tick] {
        &self.limits
    }

    pub(crate) fn qtys(&self) -> &[Lots] {
        &self.qtys
    }
}

impl FromIterator<Order> for OrderColumns {
    fn from_iter<I: IntoIterator<Item = Order>>(orders: I) -> OrderColumns {
        let orders = orders.into_iter();
        let mut columns = OrderColumns::with_capacity(orders.size_hint().0);
        for order in orders {
            columns.push(order);
        }
        columns
    }
}

impl Extend<Order> for OrderColumns {
    fn extend<I: IntoIterator<Item = Order>>(&mut self, orders: I) {
        for order in orders {
            self.push(order);
        }
    }
}

pub(crate) fn side_of(kind: u8) -> Side {
    if kind & KIND_SELL != 0 {
        Side::Sell
    } else {
        Side::Buy
    }
}

/// One market of a batch: its configuration and its orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketInput {
    /// Market id, reference price and band.
    pub config: MarketParams,
    /// The market's orders, ids strictly increasing.
    pub orders: OrderColumns,
}

/// Builds a batch in the engine's canonical form from orders in any order:
/// markets sorted by id, each market's orders sorted by id.
///
/// The result (and any error) depends only on the *set* of orders, never on
/// the order they come in. This costs a sort of all orders; the sequencer,
/// which assigns ids in increasing order, skips it.
///
/// # Errors
///
/// [`ClearingError::DuplicateMarket`] if `configs` repeats a market,
/// [`ClearingError::TooManyMarkets`] beyond [`MARKETS_MAX`],
/// [`ClearingError::DuplicateOrder`] if two orders share an id (anywhere in the
/// batch; the smallest such id is named), [`ClearingError::UnknownMarket`] for
/// an order whose market is not in `configs` (the smallest such id), and
/// [`ClearingError::TooManyOrders`] beyond [`MARKET_ORDERS_MAX`] in one market.
/// Band, reference and per-order checks happen when clearing.
pub fn canonical_batch(
    configs: &[MarketParams],
    orders: impl IntoIterator<Item = (MarketId, Order)>,
) -> Result<Vec<MarketInput>, ClearingError> {
    if configs.len() > MARKETS_MAX {
        return Err(ClearingError::TooManyMarkets {
            count: configs.len(),
            max: MARKETS_MAX,
        });
    }
    let mut configs = configs.to_vec();
    configs.sort_unstable_by_key(|config| config.market);
    if let Some(pair) = configs
        .windows(2)
        .find(|pair| pair[0].market == pair[1].market)
    {
        return Err(ClearingError::DuplicateMarket {
            market: pair[1].market,
        });
    }
    let mut orders: Vec<(MarketId, Order)> = orders.into_iter().collect();
    // Sort on everything, not only the id, so that even with duplicates the
    // outcome cannot depend on the input order.
    orders.sort_unstable_by_key(|&(market, order)| (order.id, market, order));
    if let Some(pair) = orders.windows(2).find(|pair| pair[0].1.id == pair[1].1.id) {
        return Err(ClearingError::DuplicateOrder {
            market: pair[1].0,
            order: pair[1].1.id,
        });
    }
    let mut counts = vec![0usize; configs.len()];
    let mut slots = Vec::with_capacity(orders.len());
    for &(market, order) in &orders {
        let slot = configs
            .binary_search_by_key(&market, |config| config.market)
            .map_err(|_| ClearingError::UnknownMarket {
                market,
                order: order.id,
            })?;
        counts[slot] += 1;
        slots.push(slot);
    }
    if let Some((slot, &count)) = counts
        .iter()
        .enumerate()
        .find(|&(_, &count)| count > MARKET_ORDERS_MAX)
    {
        return Err(ClearingError::TooManyOrders {
            market: configs[slot].market,
            count,
            max: MARKET_ORDERS_MAX,
        });
    }
    let mut markets: Vec<MarketInput> = configs
        .iter()
        .zip(&counts)
        .map(|(&config, &count)| MarketInput {
            config,
            orders: OrderColumns::with_capacity(count),
        })
        .collect();
    for (&slot, &(_, order)) in slots.iter().zip(&orders) {
        markets[slot].orders.push(order);
    }
    Ok(markets)
}

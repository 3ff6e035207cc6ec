//! A cleared market's aggregate demand and supply, as `spec/clearing.md` §3
//! defines them: `D(p)` and `S(p)` at every candidate price, the market
//! orders' quantities (in both at every price), the clearing price and
//! volume the batch published, and how its orders filled.

use std::collections::BTreeMap;

use crate::clearing::MarketInput;
use crate::sequencer::{BatchOutcome, EnvelopeStatus};
use crate::types::{Lots, MarketId, OrderId, Side, Tick};

/// `D(p)` and `S(p)` at one candidate price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurvePoint {
    /// The candidate: a limit price of some order, or the reference price.
    pub price: Tick,
    /// `D(p)`: lots of the buys that accept `price`.
    pub demand: u128,
    /// `S(p)`: lots of the sells that accept `price`.
    pub supply: u128,
}

/// What the batch published for the market.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clearing {
    /// The uniform price `p*`.
    pub price: Tick,
    /// Lots traded, `V(p*)`.
    pub volume: Lots,
    /// `I(p*) = D(p*) − S(p*)`.
    pub imbalance: i128,
}

/// How a market's orders filled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FillSummary {
    /// Orders that filled completely.
    pub full: usize,
    /// Orders that filled in part (pro rata on the marginal level).
    pub partial: usize,
    /// Orders that filled nothing.
    pub none: usize,
}

/// One market of one batch: its curves, marks and fills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketCurves {
    /// The market.
    pub market: MarketId,
    /// Its reference price before the batch (a candidate).
    pub reference: Tick,
    /// The admissible prices, lowest and highest.
    pub band: (Tick, Tick),
    /// Every candidate price, ascending, with `D` and `S` there. Between
    /// two candidates `D` steps down at the higher one and `S` steps up at
    /// the lower one (no order's limit lies between them).
    pub points: Vec<CurvePoint>,
    /// Lots of market buys (counted in `D` at every price).
    pub market_buys: u128,
    /// Lots of market sells (counted in `S` at every price).
    pub market_sells: u128,
    /// Buy orders, then sell orders, that took part.
    pub orders: (usize, usize),
    /// The published result; `None` if nothing crossed.
    pub clearing: Option<Clearing>,
    /// How the orders filled.
    pub fills: FillSummary,
}

impl MarketCurves {
    /// `D(p)` and `S(p)` at any price (`spec/clearing.md` §3), from the
    /// candidates: `D` is that of the lowest candidate at or above `p`
    /// (market buys alone above every limit), `S` that of the highest at or
    /// below it (market sells alone below every limit).
    #[must_use]
    pub fn at(&self, price: Tick) -> (u128, u128) {
        let above = self.points.partition_point(|p| p.price < price);
        let demand = self
            .points
            .get(above)
            .map_or(self.market_buys, |p| p.demand);
        let below = self.points.partition_point(|p| p.price <= price);
        let supply = below
            .checked_sub(1)
            .and_then(|i| self.points.get(i))
            .map_or(self.market_sells, |p| p.supply);
        (demand, supply)
    }
}

/// The curves of every market of a cleared batch: `inputs` is the batch's
/// clearing input (the funded orders, as
/// [`transcript_clearing_input`](crate::sequencer::transcript_clearing_input)
/// rebuilds it from published data), `outcome` its published result.
/// Markets without orders are left out.
#[must_use]
pub fn batch_curves(inputs: &[MarketInput], outcome: &BatchOutcome) -> Vec<MarketCurves> {
    // Each filled order's lots, by order id.
    let mut filled: BTreeMap<OrderId, Lots> = BTreeMap::new();
    for fill in &outcome.fills {
        if let Some(EnvelopeStatus::Accepted { first_order, .. }) = outcome
            .envelopes
            .get(fill.envelope as usize)
            .map(|envelope| envelope.status)
        {
            filled.insert(
                OrderId(first_order.0.saturating_add(u64::from(fill.index))),
                fill.filled,
            );
        }
    }
    inputs
        .iter()
        .filter(|input| !input.orders.is_empty())
        .map(|input| {
            let published = outcome
                .markets
                .iter()
                .find(|m| m.market == input.config.market);
            let clearing = published.and_then(|m| {
                m.price.map(|price| Clearing {
                    price,
                    volume: m.volume,
                    imbalance: m.imbalance,
                })
            });
            MarketCurves::new(input, clearing, &filled)
        })
        .collect()
}

impl MarketCurves {
    /// The curves of one market's clearing input, with what its batch
    /// published (`None`: nothing crossed) and each filled order's lots.
    #[must_use]
    pub fn new(
        input: &MarketInput,
        clearing: Option<Clearing>,
        filled: &BTreeMap<OrderId, Lots>,
    ) -> MarketCurves {
        // Lots by limit, per side; market orders apart.
        let mut buys: BTreeMap<Tick, u128> = BTreeMap::new();
        let mut sells: BTreeMap<Tick, u128> = BTreeMap::new();
        let (mut market_buys, mut market_sells) = (0u128, 0u128);
        let mut orders = (0, 0);
        let mut fills = FillSummary::default();
        for order in input.orders.iter() {
            let qty = u128::from(order.qty);
            match (order.side, order.limit) {
                (Side::Buy, None) => market_buys += qty,
                (Side::Sell, None) => market_sells += qty,
                (Side::Buy, Some(limit)) => *buys.entry(limit).or_default() += qty,
                (Side::Sell, Some(limit)) => *sells.entry(limit).or_default() += qty,
            }
            match order.side {
                Side::Buy => orders.0 += 1,
                Side::Sell => orders.1 += 1,
            }
            match filled.get(&order.id) {
                Some(&lots) if lots >= order.qty => fills.full += 1,
                Some(_) => fills.partial += 1,
                None => fills.none += 1,
            }
        }
        let reference = input.config.reference;
        let mut candidates: Vec<Tick> = buys.keys().chain(sells.keys()).copied().collect();
        candidates.push(reference);
        candidates.sort_unstable();
        candidates.dedup();
        // D at a candidate: market buys and every buy limit at or above it;
        // S: market sells and every sell limit at or below it.
        let mut points: Vec<CurvePoint> = candidates
            .iter()
            .map(|&price| CurvePoint {
                price,
                demand: 0,
                supply: 0,
            })
            .collect();
        let mut demand = market_buys;
        let mut limits = buys.iter().rev().peekable();
        for point in points.iter_mut().rev() {
            while let Some((_, qty)) = limits.next_if(|(limit, _)| **limit >= point.price) {
                demand += qty;
            }
            point.demand = demand;
        }
        let mut supply = market_sells;
        let mut limits = sells.iter().peekable();
        for point in &mut points {
            while let Some((_, qty)) = limits.next_if(|(limit, _)| **limit <= point.price) {
                supply += qty;
            }
            point.supply = supply;
        }
        MarketCurves {
            market: input.config.market,
            reference,
            band: (input.config.band.min, input.config.band.max),
            points,
            market_buys,
            market_sells,
            orders,
            clearing,
            fills,
        }
    }
}

//! Orders: as a trader writes them into a bundle, and as the clearing engine
//! sees them.

use crate::types::{Lots, MarketId, OrderId, Side, Tick};

/// One order as a trader writes it into a sealed bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderSpec {
    /// The market it trades in.
    pub market: MarketId,
    /// Buy or sell.
    pub side: Side,
    /// The limit price in ticks; `None` for a market order.
    pub limit: Option<Tick>,
    /// The quantity in lots; never zero in a valid order.
    pub qty: Lots,
    /// A number the trader chooses to recognise its own fills.
    pub client_order_id: u64,
}

/// One order as the clearing engine sees it: within one market of one batch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Order {
    /// Unique within its batch.
    pub id: OrderId,
    /// Buy or sell.
    pub side: Side,
    /// The limit price in ticks; `None` for a market order.
    pub limit: Option<Tick>,
    /// The quantity in lots.
    pub qty: Lots,
}

impl Order {
    /// Whether this order is willing to trade at `price`: a market order always
    /// is; a buy up to its limit, a sell down to its limit.
    #[must_use]
    pub fn accepts(&self, price: Tick) -> bool {
        match (self.side, self.limit) {
            (_, None) => true,
            (Side::Buy, Some(limit)) => price <= limit,
            (Side::Sell, Some(limit)) => price >= limit,
        }
    }
}

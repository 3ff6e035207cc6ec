//! The clearing engine's output and its canonical byte encoding.

use std::sync::Arc;

use crate::codec::Encode;
use crate::types::{Lots, MarketId, OrderId, Tick};

/// One order's outcome: how many lots of it traded at the market's price.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Fill {
    /// The order.
    pub id: OrderId,
    /// Lots traded, `0 ..= qty`.
    pub filled: Lots,
}

/// One market's outcome for one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketResult {
    /// The market.
    pub market: MarketId,
    /// The uniform clearing price; `None` when nothing crosses (then nothing
    /// trades and the reference price stays as it was).
    pub price: Option<Tick>,
    /// Lots bought, which equals lots sold.
    pub volume: Lots,
    /// `D(p) − S(p)` at the clearing price `p`: positive when buyers were
    /// left unfilled, negative when sellers were. When nothing crosses, the
    /// same at the reference price.
    pub imbalance: i128,
    /// Every order of the market, ascending: the input's id column, shared
    /// rather than copied.
    pub ids: Arc<Vec<OrderId>>,
    /// `filled[i]` is the fill of order `ids[i]`.
    pub filled: Vec<Lots>,
}

impl MarketResult {
    /// Every order's fill, in id order.
    pub fn fills(&self) -> impl ExactSizeIterator<Item = Fill> + '_ {
        self.ids
            .iter()
            .zip(&self.filled)
            .map(|(&id, &filled)| Fill { id, filled })
    }

    /// The fill of order `id`, if the market has it.
    #[must_use]
    pub fn fill_of(&self, id: OrderId) -> Option<Lots> {
        let index = self.ids.binary_search(&id).ok()?;
        self.filled.get(index).copied()
    }

    /// The market's reference price for the next batch: the clearing price if
    /// it traded, else `current` unchanged.
    #[must_use]
    pub fn next_reference(&self, current: Tick) -> Tick {
        self.price.unwrap_or(current)
    }

    /// How many orders got at least one lot.
    #[must_use]
    pub fn orders_filled(&self) -> usize {
        self.filled.iter().filter(|&&f| f != 0).count()
    }
}

/// The first bytes of an encoded [`BatchResult`].
pub const RESULT_ENCODING_TAG: [u8; 8] = *b"SBCLEAR1";

/// The blake3 `derive_key` context of [`BatchResult::digest`].
pub const RESULT_DIGEST_CONTEXT: &str = "sealbatch v1 clearing result";

/// The outcome of one batch: every market, ascending by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchResult {
    /// One entry per market of the batch, ascending by market id.
    pub markets: Vec<MarketResult>,
}

impl BatchResult {
    /// The result of market `market`, if the batch has it.
    #[must_use]
    pub fn market(&self, market: MarketId) -> Option<&MarketResult> {
        let index = self
            .markets
            .binary_search_by_key(&market, |m| m.market)
            .ok()?;
        self.markets.get(index)
    }

    /// A 32-byte digest of [`encode_into`](Encode::encode_into): blake3 in derive-key mode
    /// with context [`RESULT_DIGEST_CONTEXT`].
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key(RESULT_DIGEST_CONTEXT);
        hasher.update(&self.to_bytes());
        *hasher.finalize().as_bytes()
    }
}

impl Encode for BatchResult {
    fn to_bytes(&self) -> Vec<u8> {
        let orders: usize = self.markets.iter().map(|m| m.ids.len()).sum();
        let mut out = Vec::with_capacity(12 + 45 * self.markets.len() + 16 * orders);
        self.encode_into(&mut out);
        out
    }

    /// The canonical encoding (`spec/clearing.md`, "Result encoding"), all
    /// integers little-endian:
    ///
    /// ```text
    /// "SBCLEAR1"  u32 market count
    /// per market: u32 id  u8 has_price  u64 price (0 if none)  u64 volume
    ///             i128 imbalance  u64 order count
    ///             per order: u64 id  u64 filled
    /// ```
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&RESULT_ENCODING_TAG);
        // MARKETS_MAX bounds the count far below u32::MAX.
        out.extend_from_slice(&(self.markets.len() as u32).to_le_bytes());
        for market in &self.markets {
            out.extend_from_slice(&market.market.0.to_le_bytes());
            out.push(u8::from(market.price.is_some()));
            out.extend_from_slice(&market.price.unwrap_or(Tick::ZERO).to_le_bytes());
            out.extend_from_slice(&market.volume.to_le_bytes());
            out.extend_from_slice(&market.imbalance.to_le_bytes());
            out.extend_from_slice(&(market.ids.len() as u64).to_le_bytes());
            for fill in market.fills() {
                out.extend_from_slice(&fill.id.0.to_le_bytes());
                out.extend_from_slice(&fill.filled.to_le_bytes());
            }
        }
    }
}

//! Identifiers, units and the named limits every other module shares.
//!
//! Money is integers: a price is a whole number of [`Tick`]s and a quantity a
//! whole number of [`Lots`]. Nothing in sealbatch uses floating point.

use std::fmt;

/// A price, in whole ticks of its market's quote asset.
pub type Tick = u64;

/// The lowest tick a band may include. Tick 0 is not a price: the clearing
/// engine keeps it (and [`TICK_MAX`] + 1) free to rank market orders above
/// limits.
pub const TICK_MIN: Tick = 1;

/// The highest tick a band may include.
pub const TICK_MAX: Tick = Tick::MAX - 1;

/// A quantity, in whole lots of its market's base asset.
pub type Lots = u64;

/// A batch number `e`; batches are numbered `0, 1, 2, …` from the schedule's
/// genesis.
pub type BatchId = u64;

/// Identifies a market (a base/quote asset pair) within one deployment.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct MarketId(pub u32);

impl fmt::Display for MarketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies an order within one batch.
///
/// For offline replays (`sealbatch clear`) the id is the one in the input; in
/// the sequencer it is assigned after the seal from the sorted commitments, so
/// it never depends on arrival order.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct OrderId(pub u64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The side of an order.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::FromRepr,
)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Side {
    /// Buys base, pays quote.
    Buy = 0,
    /// Sells base, receives quote.
    Sell = 1,
}

impl Side {
    /// The one-byte wire encoding: `0` buy, `1` sell.
    #[must_use]
    pub const fn to_byte(self) -> u8 {
        self as u8
    }

    /// Decodes [`Side::to_byte`]; `None` for any other byte.
    #[must_use]
    pub const fn from_byte(byte: u8) -> Option<Side> {
        Side::from_repr(byte)
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        })
    }
}

/// Most orders one bundle (one envelope) may carry.
pub const BUNDLE_ORDERS_MAX: usize = 256;

/// Most markets one deployment (and so one batch) may configure.
pub const MARKETS_MAX: usize = 4096;

/// Most orders one market may carry in one batch.
///
/// Sums of quantities are kept in `u128`, so this bound is about memory, not
/// overflow.
pub const MARKET_ORDERS_MAX: usize = 1 << 27;

const _: () = assert!(BUNDLE_ORDERS_MAX <= 1024);
const _: () = assert!(MARKETS_MAX <= u32::MAX as usize);

/// A journal log sequence number: records are numbered 1, 2, 3, … with no
/// gaps; 0 means "no record".
pub type Lsn = u64;

/// The largest payload of one journal record, in bytes (`spec/journal.md`).
/// A batch result bigger than this must be split by its writer into
/// several records.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// The highest journal record kind byte assigned (`spec/journal.md`): a
/// frame's kind byte is `1..=RECORD_KIND_MAX`, and a frame with any other
/// is damaged. What each kind means, and how its payload is encoded,
/// belongs to the journal's user (the sequencer's record kinds); the
/// journal never interprets either.
pub const RECORD_KIND_MAX: u8 = 12;

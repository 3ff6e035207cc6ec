//! Identifiers, units and the named limits every other module shares.
//!
//! Money is integers: a price is a whole number of [`Tick`]s and a quantity a
//! whole number of [`Lots`]. Nothing in sealbatch uses floating point.

use std::fmt;

/// Defines a counting newtype over `u64`: ordered, hashed, printed and
/// serialised as its number; `+`/`-` by a plain count (checked like any
/// `u64` arithmetic) and `-` between two values gives the distance. Two such
/// types never mix: a batch number is not a log position, nor a price.
macro_rules! counting_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone,
            Copy,
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
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// Zero: the smallest value (for a [`Tick`], not a price; see
            /// [`TICK_MIN`]).
            pub const ZERO: $name = $name(0);
            /// The largest value (`u64::MAX`).
            pub const MAX: $name = $name(u64::MAX);

            /// The number itself.
            #[must_use]
            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }

            /// Decodes the little-endian eight bytes of the specifications.
            #[must_use]
            #[inline]
            pub const fn from_le_bytes(bytes: [u8; 8]) -> $name {
                $name(u64::from_le_bytes(bytes))
            }

            /// The little-endian eight bytes of the specifications (`u64le`).
            #[must_use]
            #[inline]
            pub const fn to_le_bytes(self) -> [u8; 8] {
                self.0.to_le_bytes()
            }

            /// `self + count`, `None` on overflow.
            #[must_use]
            #[inline]
            pub const fn checked_add(self, count: u64) -> Option<$name> {
                match self.0.checked_add(count) {
                    Some(sum) => Some($name(sum)),
                    None => None,
                }
            }

            /// `self - count`, `None` below zero.
            #[must_use]
            #[inline]
            pub const fn checked_sub(self, count: u64) -> Option<$name> {
                match self.0.checked_sub(count) {
                    Some(difference) => Some($name(difference)),
                    None => None,
                }
            }

            /// `self + count`, at most [`Self::MAX`].
            #[must_use]
            #[inline]
            pub const fn saturating_add(self, count: u64) -> $name {
                $name(self.0.saturating_add(count))
            }

            /// `self - count`, at least zero.
            #[must_use]
            #[inline]
            pub const fn saturating_sub(self, count: u64) -> $name {
                $name(self.0.saturating_sub(count))
            }

            /// How far `self` is past `earlier`, zero when it is not.
            #[must_use]
            #[inline]
            pub const fn since(self, earlier: $name) -> u64 {
                self.0.saturating_sub(earlier.0)
            }

            /// The values from `self` up to `end`, `end` excluded.
            #[inline]
            pub fn until(self, end: $name) -> impl DoubleEndedIterator<Item = $name> + Clone {
                (self.0..end.0).map($name)
            }

            /// The values from `self` through `last`, `last` included.
            #[inline]
            pub fn through(self, last: $name) -> impl DoubleEndedIterator<Item = $name> + Clone {
                (self.0..=last.0).map($name)
            }

            /// The value after this one, `None` after [`Self::MAX`].
            #[must_use]
            #[inline]
            pub const fn next(self) -> Option<$name> {
                self.checked_add(1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        /// Printed as its number, as before it had a type of its own (the
        /// specifications' vectors print rejections with `{:?}`).
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl std::ops::Add<u64> for $name {
            type Output = $name;
            #[inline]
            fn add(self, count: u64) -> $name {
                $name(self.0 + count)
            }
        }

        impl std::ops::AddAssign<u64> for $name {
            #[inline]
            fn add_assign(&mut self, count: u64) {
                self.0 += count;
            }
        }

        impl std::ops::Sub<u64> for $name {
            type Output = $name;
            #[inline]
            fn sub(self, count: u64) -> $name {
                $name(self.0 - count)
            }
        }

        impl std::ops::SubAssign<u64> for $name {
            #[inline]
            fn sub_assign(&mut self, count: u64) {
                self.0 -= count;
            }
        }

        impl std::ops::Sub for $name {
            type Output = u64;
            #[inline]
            fn sub(self, earlier: $name) -> u64 {
                self.0 - earlier.0
            }
        }

        impl From<$name> for u64 {
            #[inline]
            fn from(value: $name) -> u64 {
                value.0
            }
        }

        /// Widening, for products that need 128 bits (a price times a
        /// quantity times a tick size).
        impl From<$name> for u128 {
            #[inline]
            fn from(value: $name) -> u128 {
                u128::from(value.0)
            }
        }

        impl From<$name> for i128 {
            #[inline]
            fn from(value: $name) -> i128 {
                i128::from(value.0)
            }
        }

        /// Compares with a plain number (a literal in a test, a count).
        impl PartialEq<u64> for $name {
            #[inline]
            fn eq(&self, number: &u64) -> bool {
                self.0 == *number
            }
        }

        impl PartialOrd<u64> for $name {
            #[inline]
            fn partial_cmp(&self, number: &u64) -> Option<std::cmp::Ordering> {
                Some(self.0.cmp(number))
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(text: &str) -> Result<$name, Self::Err> {
                text.parse().map($name)
            }
        }
    };
}

counting_newtype!(
    /// A price, in whole ticks of its market's quote asset.
    Tick
);

/// The lowest tick a band may include. Tick 0 is not a price: the clearing
/// engine keeps it (and [`TICK_MAX`] + 1) free to rank market orders above
/// limits.
pub const TICK_MIN: Tick = Tick(1);

/// The highest tick a band may include.
pub const TICK_MAX: Tick = Tick(u64::MAX - 1);

/// A quantity, in whole lots of its market's base asset.
pub type Lots = u64;

counting_newtype!(
    /// A batch number `e`; batches are numbered `0, 1, 2, …` from the
    /// schedule's genesis.
    BatchId
);

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

counting_newtype!(
    /// A journal log sequence number: records are numbered 1, 2, 3, … with
    /// no gaps; 0 ([`Lsn::NONE`]) means "no record".
    Lsn
);

impl Lsn {
    /// "No record": the position before the first.
    pub const NONE: Lsn = Lsn(0);
    /// The first record's number.
    pub const FIRST: Lsn = Lsn(1);
}

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

//! Assets, accounts and market configuration: what a tick and a lot are worth.
//!
//! A market trades a *base* asset against a *quote* asset. Its orders speak in
//! ticks and lots; the ledger speaks in integer asset units:
//!
//! - one lot is `lot_size` units of the base asset;
//! - a price of `p` ticks means `p × tick_size` units of quote per lot.
//!
//! So a fill of `q` lots at `p` ticks moves `q × lot_size` base units one way
//! and `q × p × tick_size` quote units (the *notional*) the other.

use std::fmt;

use crate::types::{Lots, MarketId, Tick};

/// Identifies an asset (a currency, a token) within one deployment.
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
pub struct AssetId(pub u32);

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An account: the 32-byte Ed25519 public key that signs its bundles.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AccountId(pub [u8; 32]);

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

impl fmt::Display for AccountId {
    /// The first 8 bytes in hex, enough to tell accounts apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Basis points in a whole: a fee of `fee_bps` takes `fee_bps / 10_000` of the
/// notional.
pub const BPS_DENOMINATOR: u64 = 10_000;

/// Highest fee a market may charge each side, in basis points (10 %).
pub const FEE_BPS_MAX: u16 = 1_000;

/// The configuration of one market.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MarketConfig {
    /// The market's id.
    pub id: MarketId,
    /// The asset bought and sold.
    pub base: AssetId,
    /// The asset prices are paid in.
    pub quote: AssetId,
    /// Units of quote per lot for one tick of price; at least 1.
    pub tick_size: u64,
    /// Units of base per lot; at least 1.
    pub lot_size: u64,
    /// Lowest price an order may name, in ticks (inclusive, at least 1).
    pub band_min: Tick,
    /// Highest price an order may name, in ticks (inclusive).
    pub band_max: Tick,
    /// The reference price before the market's first trade, in ticks.
    pub initial_price: Tick,
    /// Fee charged to each side of a fill, in basis points of the notional,
    /// rounded down; `0` for none.
    pub fee_bps: u16,
}

/// A market configuration that makes no sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarketConfigError {
    /// `tick_size` or `lot_size` is zero.
    #[error("market {0}: tick size and lot size must be at least 1")]
    ZeroUnit(MarketId),
    /// The band is empty or starts at zero.
    #[error("market {market}: price band [{min}, {max}] must satisfy 1 <= min <= max")]
    BadBand {
        /// The market.
        market: MarketId,
        /// Its band's lower end.
        min: Tick,
        /// Its band's upper end.
        max: Tick,
    },
    /// The initial price lies outside the band.
    #[error("market {market}: initial price {price} lies outside its band")]
    InitialPriceOutsideBand {
        /// The market.
        market: MarketId,
        /// The configured initial price.
        price: Tick,
    },
    /// Base and quote are the same asset.
    #[error("market {0}: base and quote must be different assets")]
    SameAsset(MarketId),
    /// The fee is above [`FEE_BPS_MAX`].
    #[error("market {market}: fee {fee_bps} bps exceeds the maximum of {FEE_BPS_MAX}")]
    FeeTooHigh {
        /// The market.
        market: MarketId,
        /// The configured fee.
        fee_bps: u16,
    },
    /// The band's top is above the highest price the clearing engine admits
    /// ([`TICK_MAX`](crate::types::TICK_MAX), `2^64 − 2`).
    #[error(
        "market {market}: band_max {max} is above the highest tick, {}",
        crate::types::TICK_MAX
    )]
    BandTooHigh {
        /// The market.
        market: MarketId,
        /// Its band's upper end.
        max: Tick,
    },
    /// The band's top price times the tick size overflows a `u64` per lot.
    #[error("market {0}: band_max × tick_size overflows 64 bits")]
    Overflow(MarketId),
    /// Two markets share one id.
    #[error("market {0} is configured twice")]
    Duplicate(MarketId),
}

impl MarketConfig {
    /// Checks that the configuration is usable.
    ///
    /// # Errors
    ///
    /// The first [`MarketConfigError`] that applies.
    pub fn validate(&self) -> Result<(), MarketConfigError> {
        if self.tick_size == 0 || self.lot_size == 0 {
            return Err(MarketConfigError::ZeroUnit(self.id));
        }
        if self.band_min == 0 || self.band_min > self.band_max {
            return Err(MarketConfigError::BadBand {
                market: self.id,
                min: self.band_min,
                max: self.band_max,
            });
        }
        if self.band_max > crate::types::TICK_MAX {
            return Err(MarketConfigError::BandTooHigh {
                market: self.id,
                max: self.band_max,
            });
        }
        if !(self.band_min..=self.band_max).contains(&self.initial_price) {
            return Err(MarketConfigError::InitialPriceOutsideBand {
                market: self.id,
                price: self.initial_price,
            });
        }
        if self.base == self.quote {
            return Err(MarketConfigError::SameAsset(self.id));
        }
        if self.fee_bps > FEE_BPS_MAX {
            return Err(MarketConfigError::FeeTooHigh {
                market: self.id,
                fee_bps: self.fee_bps,
            });
        }
        if self.band_max.get().checked_mul(self.tick_size).is_none() {
            return Err(MarketConfigError::Overflow(self.id));
        }
        Ok(())
    }

    /// Quote units for `qty` lots at `price` ticks: `qty × price × tick_size`,
    /// or `None` if that does not fit in 128 bits (only possible for a price
    /// outside a validated band).
    #[must_use]
    pub fn notional(&self, price: Tick, qty: Lots) -> Option<u128> {
        u128::from(price.get())
            .checked_mul(u128::from(self.tick_size))?
            .checked_mul(u128::from(qty))
    }

    /// Base units in `qty` lots: `qty × lot_size` (always fits: two 64-bit
    /// factors).
    #[must_use]
    pub fn base_amount(&self, qty: Lots) -> u128 {
        u128::from(qty) * u128::from(self.lot_size)
    }

    /// The fee on a notional, for one side: `⌊notional × fee_bps / 10 000⌋`,
    /// or `None` if the product does not fit in 128 bits.
    #[must_use]
    pub fn fee(&self, notional: u128) -> Option<u128> {
        Some(notional.checked_mul(u128::from(self.fee_bps))? / u128::from(BPS_DENOMINATOR))
    }
}

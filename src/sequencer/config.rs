//! Sequencer configuration: the fixed parameters journaled at genesis and the
//! bounds that may change between restarts.

use std::collections::BTreeMap;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::{BatchSchedule, SequencerPublicKey};
use crate::market::{AccountId, AssetId, MarketConfig, MarketConfigError};
use crate::types::{MARKETS_MAX, MarketId, Tick};

/// Default number of batches whose keys are announced ahead of the open one.
pub const ANNOUNCE_AHEAD_DEFAULT: u64 = 8;
/// Most batches announced ahead.
pub const ANNOUNCE_AHEAD_MAX: u64 = 1024;
/// Default bound on envelopes in one batch.
pub const ENVELOPES_PER_BATCH_DEFAULT: usize = 100_000;
/// Default bound on envelope bytes in one batch (256 MiB).
pub const BYTES_PER_BATCH_DEFAULT: usize = 256 << 20;
/// Default bound on receipts waiting for the journal.
pub const PENDING_RECEIPTS_DEFAULT: usize = 1 << 20;
/// Default [`Limits::sealed_batches_max`].
pub const SEALED_BATCHES_DEFAULT: usize = 64;

/// [`Limits::clear_lag_max_ms`] when not set: this many batch lengths.
pub const CLEAR_LAG_BATCHES_DEFAULT: u64 = 3;

/// Layout tag at the start of a genesis record.
pub const GENESIS_TAG: [u8; 8] = *b"SBGENES2";
/// Default [`Genesis::orders_per_account_per_batch_max`].
pub const ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT: u32 = 16_384;

/// What a deployment fixes forever: it is the journal's first record, and a
/// restart with different values is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    /// The key that signs receipts and seals.
    pub sequencer: SequencerPublicKey,
    /// The batch clock.
    pub schedule: BatchSchedule,
    /// Where fees go.
    pub fee_account: AccountId,
    /// Orders one account may have in one batch: its bundles are taken in
    /// ascending commitment order, and one that would take it past this is
    /// rejected ([`status::ACCOUNT_ORDER_LIMIT`](super::status::ACCOUNT_ORDER_LIMIT))
    /// before funding, so that no account can dominate a batch's clearing.
    /// At least [`BUNDLE_ORDERS_MAX`](crate::types::BUNDLE_ORDERS_MAX).
    /// Default [`ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT`].
    pub orders_per_account_per_batch_max: u32,
    /// Every market, ascending by id.
    pub markets: Vec<MarketConfig>,
}

impl Genesis {
    /// The deployment these parameters fix: the sequencer key and the batch
    /// clock ([`DeploymentId`](crate::envelope::DeploymentId)).
    #[must_use]
    pub fn deployment(&self) -> crate::envelope::DeploymentId {
        crate::envelope::DeploymentId::of(&self.sequencer, &self.schedule)
    }

    /// Checks the schedule and every market.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming what is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.schedule.batch_length_ms == 0 {
            return Err(ConfigError::ZeroBatchLength);
        }
        if (self.orders_per_account_per_batch_max as usize) < crate::types::BUNDLE_ORDERS_MAX
            || self.orders_per_account_per_batch_max as usize > crate::types::MARKET_ORDERS_MAX
        {
            return Err(ConfigError::Limit("orders_per_account_per_batch_max"));
        }
        if self.markets.len() > MARKETS_MAX {
            return Err(ConfigError::TooManyMarkets(self.markets.len()));
        }
        let mut seen = BTreeMap::new();
        for market in &self.markets {
            market.validate()?;
            if seen.insert(market.id, ()).is_some() {
                return Err(MarketConfigError::Duplicate(market.id).into());
            }
        }
        if !self.markets.is_sorted_by_key(|m| m.id) {
            return Err(ConfigError::MarketsUnsorted);
        }
        Ok(())
    }

    /// The markets by id.
    #[must_use]
    pub fn market_map(&self) -> BTreeMap<MarketId, MarketConfig> {
        self.markets.iter().map(|m| (m.id, m.clone())).collect()
    }
}

impl Decode for Genesis {
    /// Decodes [`Genesis::encode_into`].
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<Genesis, DecodeError> {
        let tag: [u8; 8] = r.array("genesis tag")?;
        if tag != GENESIS_TAG {
            return Err(r.invalid("genesis tag", 0));
        }
        let sequencer = decode_sequencer_key(r)?;
        let schedule = BatchSchedule {
            genesis_ms: r.u64("genesis ms")?,
            batch_length_ms: r.u64("batch length ms")?,
        };
        let fee_account = AccountId(r.array("fee account")?);
        let orders_per_account_per_batch_max = r.u32("orders per account per batch")?;
        let markets = decode_markets(r)?;
        Ok(Genesis {
            sequencer,
            schedule,
            fee_account,
            orders_per_account_per_batch_max,
            markets,
        })
    }
}

impl Encode for Genesis {
    /// Appends the record layout: tag, sequencer key, genesis ms, batch
    /// length ms, fee account, orders per account per batch, markets.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&GENESIS_TAG);
        out.extend_from_slice(&self.sequencer.to_bytes());
        out.put_u64(self.schedule.genesis_ms);
        out.put_u64(self.schedule.batch_length_ms);
        out.extend_from_slice(&self.fee_account.0);
        out.put_u32(self.orders_per_account_per_batch_max);
        // Bounded by MARKETS_MAX.
        out.put_u32(self.markets.len() as u32);
        for market in &self.markets {
            encode_market(market, out);
        }
    }
}

/// Bounds that protect the process; they may change between restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Batches announced ahead of the open one; envelopes may be submitted to
    /// any announced batch. Default [`ANNOUNCE_AHEAD_DEFAULT`].
    pub announce_ahead: u64,
    /// Envelopes accepted into one batch. Default
    /// [`ENVELOPES_PER_BATCH_DEFAULT`].
    pub envelopes_per_batch_max: usize,
    /// Envelope bytes accepted into one batch. Default
    /// [`BYTES_PER_BATCH_DEFAULT`].
    pub bytes_per_batch_max: usize,
    /// Receipts waiting for the journal; beyond it submissions are refused
    /// as [`SubmitError::Busy`](super::SubmitError::Busy). Default
    /// [`PENDING_RECEIPTS_DEFAULT`].
    pub pending_receipts_max: usize,
    /// Admission control by time: while the oldest batch sealed and not
    /// yet cleared closed more than this many milliseconds ago (opening or
    /// committing lags), new envelopes are refused as
    /// [`SubmitError::Busy`](super::SubmitError::Busy) with a retry-after,
    /// before anything is journaled. `None` (the default):
    /// [`CLEAR_LAG_BATCHES_DEFAULT`] batch lengths. A replicated sequencer
    /// across long round trips needs more (`spec/replication.md` §10).
    pub clear_lag_max_ms: Option<u64>,
    /// Admission control by count, a bound on memory: while this many
    /// batches are sealed and not yet cleared, new envelopes are refused as
    /// [`SubmitError::Busy`](super::SubmitError::Busy). Default
    /// [`SEALED_BATCHES_DEFAULT`].
    pub sealed_batches_max: usize,
    /// Outcome bytes per journaled result part, at most (and by default)
    /// [`RESULT_PART_BYTES_MAX`](super::RESULT_PART_BYTES_MAX). Smaller
    /// values only make more records; tests use them to crash between parts.
    pub result_part_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            announce_ahead: ANNOUNCE_AHEAD_DEFAULT,
            envelopes_per_batch_max: ENVELOPES_PER_BATCH_DEFAULT,
            bytes_per_batch_max: BYTES_PER_BATCH_DEFAULT,
            pending_receipts_max: PENDING_RECEIPTS_DEFAULT,
            clear_lag_max_ms: None,
            sealed_batches_max: SEALED_BATCHES_DEFAULT,
            result_part_bytes: super::RESULT_PART_BYTES_MAX,
        }
    }
}

/// The most envelopes a batch may be configured to hold: even if every order
/// of every bundle names one market, the batch stays within the clearing
/// engine's [`MARKET_ORDERS_MAX`](crate::types::MARKET_ORDERS_MAX).
pub const ENVELOPES_PER_BATCH_CLEARABLE: usize =
    crate::types::MARKET_ORDERS_MAX / crate::types::BUNDLE_ORDERS_MAX;

const _: () = assert!(ENVELOPES_PER_BATCH_DEFAULT <= ENVELOPES_PER_BATCH_CLEARABLE);

impl Limits {
    /// Checks the bounds.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Limit`] naming the bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.announce_ahead > ANNOUNCE_AHEAD_MAX {
            return Err(ConfigError::Limit("announce_ahead"));
        }
        // Every order of a full batch may name one market: the batch must
        // fit the clearing engine's per-market bound, or traders could fill
        // it until clearing refuses (and the batch is voided).
        if self.envelopes_per_batch_max == 0
            || self.envelopes_per_batch_max > crate::envelope::ENVELOPES_PER_BATCH_MAX
            || self.envelopes_per_batch_max > ENVELOPES_PER_BATCH_CLEARABLE
        {
            return Err(ConfigError::Limit("envelopes_per_batch_max"));
        }
        if self.bytes_per_batch_max == 0 {
            return Err(ConfigError::Limit("bytes_per_batch_max"));
        }
        if self.pending_receipts_max == 0 {
            return Err(ConfigError::Limit("pending_receipts_max"));
        }
        if self.sealed_batches_max == 0 {
            return Err(ConfigError::Limit("sealed_batches_max"));
        }
        if self.clear_lag_max_ms == Some(0) {
            return Err(ConfigError::Limit("clear_lag_max_ms"));
        }
        if self.result_part_bytes == 0 || self.result_part_bytes > super::RESULT_PART_BYTES_MAX {
            return Err(ConfigError::Limit("result_part_bytes"));
        }
        Ok(())
    }
}

/// A configuration the sequencer refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The batch length is zero.
    #[error("batch length must be at least 1 ms")]
    ZeroBatchLength,
    /// More markets than [`MARKETS_MAX`].
    #[error("{0} markets configured, at most {MARKETS_MAX}")]
    TooManyMarkets(usize),
    /// Markets are not listed in ascending id order.
    #[error("markets must be listed in ascending id order")]
    MarketsUnsorted,
    /// A market is misconfigured.
    #[error(transparent)]
    Market(#[from] MarketConfigError),
    /// A bound is zero or above its maximum.
    #[error("limit {0} is out of range")]
    Limit(&'static str),
}

/// Encodes a market configuration (58 bytes).
pub(crate) fn encode_market(market: &MarketConfig, out: &mut Vec<u8>) {
    out.put_u32(market.id.0);
    out.put_u32(market.base.0);
    out.put_u32(market.quote.0);
    out.put_u64(market.tick_size);
    out.put_u64(market.lot_size);
    out.put_u64(market.band_min.get());
    out.put_u64(market.band_max.get());
    out.put_u64(market.initial_price.get());
    out.put_u16(market.fee_bps);
}

/// Decodes [`encode_market`].
pub(crate) fn decode_market(r: &mut Reader<'_>) -> Result<MarketConfig, DecodeError> {
    Ok(MarketConfig {
        id: MarketId(r.u32("market id")?),
        base: AssetId(r.u32("base asset")?),
        quote: AssetId(r.u32("quote asset")?),
        tick_size: r.u64("tick size")?,
        lot_size: r.u64("lot size")?,
        band_min: Tick(r.u64("band min")?),
        band_max: Tick(r.u64("band max")?),
        initial_price: Tick(r.u64("initial price")?),
        fee_bps: r.u16("fee bps")?,
    })
}

/// Decodes a market list: `u32` count, then each market.
pub(crate) fn decode_markets(r: &mut Reader<'_>) -> Result<Vec<MarketConfig>, DecodeError> {
    let count = r.count("market count", MARKETS_MAX)?;
    (0..count).map(|_| decode_market(r)).collect()
}

/// Decodes a sequencer public key field.
pub(crate) fn decode_sequencer_key(r: &mut Reader<'_>) -> Result<SequencerPublicKey, DecodeError> {
    let offset = r.offset();
    let bytes: [u8; 32] = r.array("sequencer key")?;
    SequencerPublicKey::from_bytes(&bytes).map_err(|_| r.invalid("sequencer key", offset))
}

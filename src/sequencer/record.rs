//! The payloads the sequencer writes to the journal, one per
//! [`RecordKind`](crate::journal::RecordKind); normative layouts in
//! `spec/sequencer.md`, "Journal records".

use crate::codec::{DecodeError, Reader, Writer};
use crate::envelope::{ENVELOPE_LEN_MAX, SEAL_LEN, SequencerPublicKey, SignedSeal};
use crate::journal::RecordKind;
use crate::market::{AccountId, AssetId, MarketConfig};
use crate::types::{BatchId, MARKETS_MAX, MarketId};

use super::batch::BatchOutcome;
use super::config::Genesis;

/// One sequencer record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SequencerRecord {
    /// The deployment's fixed parameters; the journal's first record.
    Genesis(Genesis),
    /// An envelope accepted into batch `e` (its receipt waits for this record
    /// to be durable).
    Envelope {
        /// The batch.
        e: BatchId,
        /// The envelope bytes, exactly as received.
        bytes: Vec<u8>,
    },
    /// The signed seal of a closed batch.
    Seal(SignedSeal),
    /// A batch's full outcome.
    Result(BatchOutcome),
    /// An operator deposit.
    Deposit(Transfer),
    /// An operator withdrawal.
    Withdrawal(Transfer),
}

/// An operator deposit or withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The account.
    pub account: AccountId,
    /// The asset.
    pub asset: AssetId,
    /// The amount, in the asset's units.
    pub amount: u64,
}

/// A journal record the sequencer could not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The payload does not follow its layout.
    #[error("{kind:?} record: {source}")]
    Decode {
        /// The record's kind.
        kind: RecordKind,
        /// What is wrong.
        source: DecodeError,
    },
    /// A kind the sequencer never writes.
    #[error("unexpected {0:?} record")]
    UnexpectedKind(RecordKind),
}

impl SequencerRecord {
    /// The journal kind this record is written as.
    #[must_use]
    pub fn kind(&self) -> RecordKind {
        match self {
            SequencerRecord::Genesis(_) => RecordKind::Config,
            SequencerRecord::Envelope { .. } => RecordKind::Envelope,
            SequencerRecord::Seal(_) => RecordKind::Seal,
            SequencerRecord::Result(_) => RecordKind::Result,
            SequencerRecord::Deposit(_) => RecordKind::Deposit,
            SequencerRecord::Withdrawal(_) => RecordKind::Withdrawal,
        }
    }

    /// The payload bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            SequencerRecord::Genesis(genesis) => genesis.encode_into(&mut out),
            SequencerRecord::Envelope { e, bytes } => {
                out.put_u64(*e);
                out.put_blob(bytes);
            }
            SequencerRecord::Seal(seal) => out.extend_from_slice(&seal.to_bytes()),
            SequencerRecord::Result(outcome) => outcome.encode_into(&mut out),
            SequencerRecord::Deposit(transfer) | SequencerRecord::Withdrawal(transfer) => {
                out.extend_from_slice(&transfer.account.0);
                out.put_u32(transfer.asset.0);
                out.put_u64(transfer.amount);
            }
        }
        out
    }

    /// Decodes the payload of a record of kind `kind`.
    ///
    /// # Errors
    ///
    /// [`RecordError::Decode`] naming the field and offset, or
    /// [`RecordError::UnexpectedKind`].
    pub fn decode(kind: RecordKind, payload: &[u8]) -> Result<SequencerRecord, RecordError> {
        let decode = |source| RecordError::Decode { kind, source };
        let mut r = Reader::new(payload);
        let record = match kind {
            RecordKind::Config => {
                SequencerRecord::Genesis(Genesis::decode(&mut r).map_err(decode)?)
            }
            RecordKind::Envelope => {
                let e = r.u64("batch").map_err(decode)?;
                let bytes = r
                    .blob("envelope", ENVELOPE_LEN_MAX)
                    .map_err(decode)?
                    .to_vec();
                SequencerRecord::Envelope { e, bytes }
            }
            RecordKind::Seal => {
                let bytes = r.bytes(SEAL_LEN, "seal").map_err(decode)?;
                let seal =
                    SignedSeal::from_bytes(bytes).map_err(|_| decode(r.invalid("seal", 0)))?;
                SequencerRecord::Seal(seal)
            }
            RecordKind::Result => {
                SequencerRecord::Result(BatchOutcome::decode(&mut r).map_err(decode)?)
            }
            RecordKind::Deposit | RecordKind::Withdrawal => {
                let transfer = Transfer {
                    account: AccountId(r.array("account").map_err(decode)?),
                    asset: AssetId(r.u32("asset").map_err(decode)?),
                    amount: r.u64("amount").map_err(decode)?,
                };
                if kind == RecordKind::Deposit {
                    SequencerRecord::Deposit(transfer)
                } else {
                    SequencerRecord::Withdrawal(transfer)
                }
            }
            RecordKind::KeyRelease => return Err(RecordError::UnexpectedKind(kind)),
        };
        r.finish().map_err(decode)?;
        Ok(record)
    }
}

/// Encodes a market configuration (58 bytes).
pub(crate) fn encode_market(market: &MarketConfig, out: &mut Vec<u8>) {
    out.put_u32(market.id.0);
    out.put_u32(market.base.0);
    out.put_u32(market.quote.0);
    out.put_u64(market.tick_size);
    out.put_u64(market.lot_size);
    out.put_u64(market.band_min);
    out.put_u64(market.band_max);
    out.put_u64(market.initial_price);
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
        band_min: r.u64("band min")?,
        band_max: r.u64("band max")?,
        initial_price: r.u64("initial price")?,
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

//! The records the sequencer writes to the journal: their kinds
//! ([`RecordKind`], the kind bytes of `spec/journal.md`, which the journal
//! stores without interpreting) and payloads; normative layouts in
//! `spec/sequencer.md`, "Journal records".

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::{ENVELOPE_LEN_MAX, SEAL_LEN, SignedSeal};
use crate::keyper::{Committee, GenerationParams, LogEntry};
use crate::market::{AccountId, AssetId};
use crate::signed::{
    DepositStatement, REFERENCE_LEN_MAX, SignedDeposit, SignedPayout, SignedWithdrawal, Withdrawal,
};
use crate::types::{BatchId, MARKETS_MAX, MarketId, Tick};

use super::batch::BatchOutcome;
use super::config::Genesis;

/// What a journal record is, so that replay knows how to decode its
/// payload: the kind bytes of `spec/journal.md`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, strum::FromRepr, strum::EnumIter,
)]
#[repr(u8)]
pub enum RecordKind {
    /// An envelope accepted into a batch (written before its receipt).
    Envelope = 1,
    /// A batch seal: the signed Merkle root of its commitments.
    Seal = 2,
    /// A batch secret released by the key custodian.
    KeyRelease = 3,
    /// A batch result: prices, fills, rejections.
    Result = 4,
    /// An operator deposit into an account.
    Deposit = 5,
    /// An unsigned withdrawal of demo mode, written by earlier versions
    /// (still read, never written).
    UnsignedWithdrawal = 6,
    /// A configuration change (markets, schedule).
    Config = 7,
    /// An operator deposit, signed, with its external reference.
    OperatorDeposit = 8,
    /// A trader's signed withdrawal, with the id the sequencer gave it.
    Withdrawal = 9,
    /// The operator's signed acknowledgement that a withdrawal was paid out.
    Payout = 10,
    /// The keyper committee that holds the batch keys from now on.
    Committee = 11,
    /// An entry of the committee's key generation log.
    KeyperLog = 12,
}

impl RecordKind {
    /// The kind's byte on disk.
    #[must_use]
    pub const fn to_byte(self) -> u8 {
        self as u8
    }

    /// The kind of a byte on disk; `None` for 0 and unassigned bytes.
    #[must_use]
    pub const fn from_byte(byte: u8) -> Option<RecordKind> {
        RecordKind::from_repr(byte)
    }

    /// Whether a record of kind byte `byte` is of this kind.
    #[must_use]
    pub const fn is(self, byte: u8) -> bool {
        self as u8 == byte
    }
}

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
    /// One part of a batch's outcome (all of it, unless it is large); see
    /// [`ResultPart`] and [`ResultAssembler`].
    ResultPart(ResultPart),
    /// An operator deposit.
    Deposit(Transfer),
    /// An operator deposit, signed and carrying its external reference.
    OperatorDeposit(SignedDeposit),
    /// An unsigned withdrawal of demo mode, written by earlier versions.
    UnsignedWithdrawal(Transfer),
    /// A trader's signed withdrawal, taken as withdrawal `id`.
    Withdrawal(Withdrawal),
    /// The operator's acknowledgement that a withdrawal was paid out.
    Payout(SignedPayout),
    /// The keyper committee that holds the batch keys from now on, and how
    /// its key generations run.
    Committee {
        /// The committee.
        committee: Committee,
        /// Its generations' parameters.
        params: GenerationParams,
        /// The first batch it deals keys for.
        first_batch: BatchId,
    },
    /// An entry of the committee's key generation log, at its position.
    KeyperLog {
        /// The entry's position in the log.
        position: u64,
        /// The entry.
        entry: LogEntry,
    },
}

/// Outcome bytes per [`ResultPart`]: a batch outcome whose encoding is
/// longer is journaled as several consecutive records, so no record nears
/// the journal's payload limit however large the batch.
pub const RESULT_PART_BYTES_MAX: usize = 4 << 20;

/// A slice of the canonical encoding of batch `e`'s [`BatchOutcome`]:
/// parts `0..count`, in order, concatenate to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultPart {
    /// The batch.
    pub e: BatchId,
    /// This part's position, below `count`.
    pub index: u32,
    /// How many parts the outcome has (at least 1).
    pub count: u32,
    /// At most [`RESULT_PART_BYTES_MAX`] bytes of the encoding.
    pub bytes: Vec<u8>,
}

impl ResultPart {
    /// The records that journal `outcome`: its encoding cut into parts of
    /// `part_bytes` bytes (the last may be shorter), clamped to
    /// `1..=`[`RESULT_PART_BYTES_MAX`].
    #[must_use]
    pub fn split(outcome: &BatchOutcome, part_bytes: usize) -> Vec<ResultPart> {
        let encoded = outcome.to_bytes();
        let chunks: Vec<&[u8]> = encoded
            .chunks(part_bytes.clamp(1, RESULT_PART_BYTES_MAX))
            .collect();
        // An encoding is never empty (it starts with its tag), and the part
        // count is far below u32::MAX for any batch within the limits.
        let count = chunks.len() as u32;
        chunks
            .into_iter()
            .enumerate()
            .map(|(index, bytes)| ResultPart {
                e: outcome.e,
                index: index as u32,
                count,
                bytes: bytes.to_vec(),
            })
            .collect()
    }
}

/// Why result parts read back from a journal do not make an outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// A part other than the first, with no outcome being assembled.
    #[error("result part {index} of {count} of batch {e} without its part 0")]
    Orphan {
        /// The part's batch.
        e: BatchId,
        /// Its index.
        index: u32,
        /// Its count.
        count: u32,
    },
    /// A part that does not continue the outcome being assembled.
    #[error(
        "result part {index} of {count} of batch {e} where part {next} of {next_count} of batch {next_e} was due"
    )]
    OutOfOrder {
        /// The part's batch.
        e: BatchId,
        /// Its index.
        index: u32,
        /// Its count.
        count: u32,
        /// The batch being assembled.
        next_e: BatchId,
        /// The index that was due.
        next: u32,
        /// The count of the outcome being assembled.
        next_count: u32,
    },
    /// The parts joined, but are not an outcome of their batch.
    #[error("result of batch {e}: {source}")]
    Decode {
        /// The batch.
        e: BatchId,
        /// What is wrong.
        source: DecodeError,
    },
}

/// Joins [`ResultPart`]s read in journal order back into outcomes.
///
/// Part 0 starts an outcome and discards any unfinished one: the parts of an
/// outcome are written consecutively, so an unfinished outcome followed by a
/// new part 0 is one the sequencer was writing when it stopped (its batch is
/// processed again after restart, giving the same bytes). An unfinished
/// outcome at the end of the journal likewise means "not cleared".
#[derive(Debug, Default)]
pub struct ResultAssembler {
    partial: Option<ResultPart>,
}

impl ResultAssembler {
    /// Takes the next part; returns the outcome when it was the last.
    ///
    /// # Errors
    ///
    /// [`AssembleError::OutOfOrder`] for a part that does not follow the
    /// previous one, [`AssembleError::Decode`] if the joined bytes are not an
    /// outcome of the parts' batch.
    pub fn push(&mut self, part: ResultPart) -> Result<Option<BatchOutcome>, AssembleError> {
        let joined = if part.index == 0 {
            self.partial.insert(part)
        } else {
            match self.partial.as_mut() {
                Some(p) if p.e == part.e && p.count == part.count && p.index + 1 == part.index => {
                    p.index = part.index;
                    p.bytes.extend_from_slice(&part.bytes);
                    p
                }
                Some(p) => {
                    let error = AssembleError::OutOfOrder {
                        e: part.e,
                        index: part.index,
                        count: part.count,
                        next_e: p.e,
                        next: p.index + 1,
                        next_count: p.count,
                    };
                    self.partial = None;
                    return Err(error);
                }
                None => {
                    return Err(AssembleError::Orphan {
                        e: part.e,
                        index: part.index,
                        count: part.count,
                    });
                }
            }
        };
        if joined.index + 1 < joined.count {
            return Ok(None);
        }
        let e = joined.e;
        let bytes = std::mem::take(&mut joined.bytes);
        self.partial = None;
        let mut r = Reader::new(&bytes);
        let outcome = BatchOutcome::decode_from(&mut r)
            .and_then(|outcome| r.finish().map(|()| outcome))
            .map_err(|source| AssembleError::Decode { e, source })?;
        if outcome.e != e {
            return Err(AssembleError::Decode {
                e,
                source: Reader::new(&bytes).invalid("batch", 8),
            });
        }
        Ok(Some(outcome))
    }

    /// Whether an outcome was started and not finished.
    #[must_use]
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }
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
    /// A kind byte that names no [`RecordKind`].
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
}

impl SequencerRecord {
    /// The journal kind this record is written as.
    #[must_use]
    pub fn kind(&self) -> RecordKind {
        match self {
            SequencerRecord::Genesis(_) => RecordKind::Config,
            SequencerRecord::Envelope { .. } => RecordKind::Envelope,
            SequencerRecord::Seal(_) => RecordKind::Seal,
            SequencerRecord::ResultPart(_) => RecordKind::Result,
            SequencerRecord::Deposit(_) => RecordKind::Deposit,
            SequencerRecord::OperatorDeposit(_) => RecordKind::OperatorDeposit,
            SequencerRecord::UnsignedWithdrawal(_) => RecordKind::UnsignedWithdrawal,
            SequencerRecord::Withdrawal(_) => RecordKind::Withdrawal,
            SequencerRecord::Payout(_) => RecordKind::Payout,
            SequencerRecord::Committee { .. } => RecordKind::Committee,
            SequencerRecord::KeyperLog { .. } => RecordKind::KeyperLog,
        }
    }

    /// The payload bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            SequencerRecord::Genesis(genesis) => genesis.encode_into(&mut out),
            SequencerRecord::Envelope { e, bytes } => {
                out.put_u64(e.get());
                out.put_blob(bytes);
            }
            SequencerRecord::Seal(seal) => out.extend_from_slice(&seal.to_bytes()),
            SequencerRecord::ResultPart(part) => {
                out.put_u64(part.e.get());
                out.put_u32(part.index);
                out.put_u32(part.count);
                out.put_blob(&part.bytes);
            }
            SequencerRecord::OperatorDeposit(signed) => {
                let s = &signed.statement;
                out.extend_from_slice(&s.account.0);
                out.put_u32(s.asset.0);
                out.put_u64(s.amount);
                out.extend_from_slice(&s.operator);
                // At most REFERENCE_LEN_MAX bytes: checked before journaling.
                out.push(s.reference.len().min(REFERENCE_LEN_MAX) as u8);
                out.extend_from_slice(&s.reference[..s.reference.len().min(REFERENCE_LEN_MAX)]);
                out.extend_from_slice(&signed.signature);
            }
            SequencerRecord::Withdrawal(w) => {
                out.put_u64(w.id);
                w.signed.encode_into(&mut out);
            }
            SequencerRecord::Payout(payout) => payout.encode_into(&mut out),
            SequencerRecord::Committee {
                committee,
                params,
                first_batch,
            } => {
                out.extend_from_slice(&committee.to_bytes());
                params.encode_into(&mut out);
                out.put_u64(first_batch.get());
            }
            SequencerRecord::KeyperLog { position, entry } => {
                out.put_u64(*position);
                out.extend_from_slice(&entry.to_bytes());
            }
            SequencerRecord::Deposit(transfer) | SequencerRecord::UnsignedWithdrawal(transfer) => {
                out.extend_from_slice(&transfer.account.0);
                out.put_u32(transfer.asset.0);
                out.put_u64(transfer.amount);
            }
        }
        out
    }

    /// Decodes the payload of a record of kind byte `kind`.
    ///
    /// # Errors
    ///
    /// [`RecordError::Decode`] naming the field and offset, or
    /// [`RecordError::UnexpectedKind`] or [`RecordError::UnknownKind`].
    pub fn decode(kind: u8, payload: &[u8]) -> Result<SequencerRecord, RecordError> {
        let kind = RecordKind::from_byte(kind).ok_or(RecordError::UnknownKind(kind))?;
        let decode = |source| RecordError::Decode { kind, source };
        let mut r = Reader::new(payload);
        let record = match kind {
            RecordKind::Config => {
                SequencerRecord::Genesis(Genesis::decode_from(&mut r).map_err(decode)?)
            }
            RecordKind::Envelope => {
                let e = BatchId(r.u64("batch").map_err(decode)?);
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
                let e = BatchId(r.u64("batch").map_err(decode)?);
                let offset = r.offset();
                let index = r.u32("part index").map_err(decode)?;
                let count = r.u32("part count").map_err(decode)?;
                if index >= count {
                    return Err(decode(r.invalid("part index", offset)));
                }
                let bytes = r
                    .blob("part bytes", RESULT_PART_BYTES_MAX)
                    .map_err(decode)?
                    .to_vec();
                SequencerRecord::ResultPart(ResultPart {
                    e,
                    index,
                    count,
                    bytes,
                })
            }
            RecordKind::Withdrawal => SequencerRecord::Withdrawal(Withdrawal {
                id: r.u64("withdrawal id").map_err(decode)?,
                signed: SignedWithdrawal::decode_from(&mut r).map_err(decode)?,
            }),
            RecordKind::Payout => {
                SequencerRecord::Payout(SignedPayout::decode_from(&mut r).map_err(decode)?)
            }
            RecordKind::Deposit | RecordKind::UnsignedWithdrawal | RecordKind::OperatorDeposit => {
                let transfer = Transfer {
                    account: AccountId(r.array("account").map_err(decode)?),
                    asset: AssetId(r.u32("asset").map_err(decode)?),
                    amount: r.u64("amount").map_err(decode)?,
                };
                if kind == RecordKind::OperatorDeposit {
                    let operator = r.array("operator").map_err(decode)?;
                    let offset = r.offset();
                    let len = usize::from(r.u8("reference length").map_err(decode)?);
                    if !(1..=REFERENCE_LEN_MAX).contains(&len) {
                        return Err(decode(r.invalid("reference length", offset)));
                    }
                    let reference = r.bytes(len, "reference").map_err(decode)?.to_vec();
                    let signature = r.array("signature").map_err(decode)?;
                    SequencerRecord::OperatorDeposit(SignedDeposit {
                        statement: DepositStatement {
                            operator,
                            account: transfer.account,
                            asset: transfer.asset,
                            amount: transfer.amount,
                            reference,
                        },
                        signature,
                    })
                } else if kind == RecordKind::Deposit {
                    SequencerRecord::Deposit(transfer)
                } else {
                    SequencerRecord::UnsignedWithdrawal(transfer)
                }
            }
            RecordKind::Committee => SequencerRecord::Committee {
                committee: Committee::decode_from(&mut r).map_err(decode)?,
                params: GenerationParams::decode_from(&mut r).map_err(decode)?,
                first_batch: BatchId(r.u64("first batch").map_err(decode)?),
            },
            RecordKind::KeyperLog => SequencerRecord::KeyperLog {
                position: r.u64("position").map_err(decode)?,
                entry: LogEntry::decode_from(&mut r).map_err(decode)?,
            },
            RecordKind::KeyRelease => return Err(RecordError::UnexpectedKind(kind)),
        };
        r.finish().map_err(decode)?;
        Ok(record)
    }
}

/// Encodes a genesis as a length-prefixed blob (the `Config` record payload),
/// as transcripts and checkpoints carry it.
pub(crate) fn encode_genesis_blob(genesis: &Genesis, out: &mut Vec<u8>) {
    let mut bytes = Vec::new();
    genesis.encode_into(&mut bytes);
    out.put_blob(&bytes);
}

/// Decodes [`encode_genesis_blob`]: the blob must hold exactly one genesis.
pub(crate) fn decode_genesis_blob(r: &mut Reader<'_>) -> Result<Genesis, DecodeError> {
    let offset = r.offset();
    let bytes = r.blob("genesis", usize::MAX)?;
    let mut g = Reader::new(bytes);
    Genesis::decode_from(&mut g)
        .and_then(|genesis| g.finish().map(|()| genesis))
        .map_err(|_| r.invalid("genesis", offset))
}

/// Encodes reference prices: `u32` count, then (market u32 ‖ price u64).
pub(crate) fn encode_references(references: &[(MarketId, Tick)], out: &mut Vec<u8>) {
    // At most MARKETS_MAX entries.
    out.put_u32(references.len() as u32);
    for (market, price) in references {
        out.put_u32(market.0);
        out.put_u64(price.get());
    }
}

/// Decodes [`encode_references`] (order is the caller's to check).
pub(crate) fn decode_references(r: &mut Reader<'_>) -> Result<Vec<(MarketId, Tick)>, DecodeError> {
    let count = r.count("reference count", MARKETS_MAX)?;
    (0..count)
        .map(|_| Ok((MarketId(r.u32("market")?), Tick(r.u64("reference price")?))))
        .collect()
}

/// Encodes balances: `u32` count, then (account (32) ‖ asset u32 ‖ amount
/// u64).
pub(crate) fn encode_balances(balances: &[(AccountId, AssetId, u64)], out: &mut Vec<u8>) {
    // At most the decoders' maxima, far below u32::MAX.
    out.put_u32(balances.len() as u32);
    for (account, asset, amount) in balances {
        out.extend_from_slice(&account.0);
        out.put_u32(asset.0);
        out.put_u64(*amount);
    }
}

/// Decodes [`encode_balances`], at most `max` of them (order is the
/// caller's to check).
pub(crate) fn decode_balances(
    r: &mut Reader<'_>,
    max: usize,
) -> Result<Vec<(AccountId, AssetId, u64)>, DecodeError> {
    let count = r.count("balance count", max)?;
    (0..count)
        .map(|_| {
            Ok((
                AccountId(r.array("account")?),
                AssetId(r.u32("asset")?),
                r.u64("amount")?,
            ))
        })
        .collect()
}

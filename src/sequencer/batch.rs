//! One batch, from opened envelopes to settled fills: pure and deterministic.
//!
//! [`process_batch`] validates the opened bundles (funding, in commitment
//! order), assigns order ids, clears every market and returns the
//! [`BatchOutcome`]; [`apply_outcome`] settles it into the ledger. The
//! sequencer runs both; recovery replays only the second from the journal;
//! `verify` runs both and compares bytes.
//!
//! A batch that cannot be processed (opening, clearing or settlement fails,
//! or panics — never expected, since funding rules out every input the
//! engine or the ledger refuses) is **voided** ([`void_outcome`]): nothing
//! trades and the ledger is unchanged, so a bug can cost one batch but never
//! halt the sequencer by failing again on every replay.
//!
//! Order ids: the funded bundles are taken in ascending commitment order and
//! their orders numbered `0, 1, 2, …` in that order and then by position in
//! the bundle. The clearing seed is the seal's Merkle root, so remainder
//! tie-breaks are unpredictable before the seal and reproducible after.

use std::collections::BTreeMap;

use crate::clearing::{self, MarketInput, OrderColumns, PriceBand};
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::{
    Commitment, ENVELOPES_PER_BATCH_MAX, MerkleRoot, OpenedBatch, ReleaseAttestation,
};
use crate::keyper::attestation::{decode_attestations, encode_attestations};
use crate::ledger::{AccountFill, FundingError, Ledger, LedgerError};
use crate::market::{AccountId, MarketConfig};
use crate::order::{Order, OrderSpec};
use crate::types::{BUNDLE_ORDERS_MAX, BatchId, Lots, MARKETS_MAX, MarketId, OrderId, Side, Tick};

/// Layout tag at the start of a result record.
pub const OUTCOME_TAG: [u8; 8] = *b"SBRESLT2";

/// The tag of an outcome journaled before results carried the keypers'
/// release attestations (read with none).
pub const OUTCOME_TAG_V1: [u8; 8] = *b"SBRESLT1";

/// Status codes of funding rejections (envelope rejections use
/// [`Rejection::code`](crate::envelope::Rejection::code), 1–31).
pub mod status {
    /// The bundle opened, verified and was funded.
    pub const ACCEPTED: u8 = 0;
    /// An order names an unknown market.
    pub const UNKNOWN_MARKET: u8 = 32;
    /// An order has zero quantity.
    pub const ZERO_QUANTITY: u8 = 33;
    /// An order's limit is outside its market's band.
    pub const OUTSIDE_BAND: u8 = 34;
    /// The account cannot cover the bundle.
    pub const UNFUNDED: u8 = 35;
    /// The bundle would take its account past the orders one account may
    /// have in one batch (detail: the orders it already has).
    pub const ACCOUNT_ORDER_LIMIT: u8 = 36;
    /// The whole batch was voided: it could not be processed, nothing in it
    /// traded (`spec/sequencer.md`, "Void batches").
    pub const BATCH_VOID: u8 = 40;
}

/// What happened to one envelope of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeStatus {
    /// Its bundle was funded and its orders took part in clearing.
    Accepted {
        /// The account that signed it.
        account: AccountId,
        /// The id of its first order; the others follow consecutively.
        first_order: OrderId,
        /// How many orders it holds.
        orders: u16,
    },
    /// It was rejected: `code` is an envelope rejection code (1–31) or a
    /// funding code from [`status`]; `detail` is the offending order's index
    /// for band/market/quantity rejections, the asset id for `UNFUNDED`, else 0.
    Rejected {
        /// The rejection code.
        code: u8,
        /// Its detail.
        detail: u32,
    },
}

/// One envelope's line in the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeOutcome {
    /// The envelope's commitment.
    pub commitment: Commitment,
    /// What happened to it.
    pub status: EnvelopeStatus,
}

/// One market's line in the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketOutcome {
    /// The market.
    pub market: MarketId,
    /// The clearing price, if anything traded.
    pub price: Option<Tick>,
    /// Lots traded.
    pub volume: Lots,
    /// `D − S` at the price (see `spec/clearing.md`).
    pub imbalance: i128,
}

/// One order that filled at least one lot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderFill {
    /// Index of its envelope in [`BatchOutcome::envelopes`].
    pub envelope: u32,
    /// Its position in its bundle.
    pub index: u16,
    /// Its market.
    pub market: MarketId,
    /// Its side.
    pub side: Side,
    /// Lots filled (at least 1).
    pub filled: Lots,
}

/// Everything a batch decided: journaled, published, and re-derived by
/// `verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The batch.
    pub e: BatchId,
    /// The seal's Merkle root (also the clearing seed).
    pub root: MerkleRoot,
    /// The released batch secret `s_e`, published so anyone can re-open.
    pub batch_secret: [u8; 32],
    /// Under a keyper committee, the keypers' attestations that they
    /// released their shares for this batch's seal `(e, envelopes, root)`
    /// (`spec/keyper.md` §9), ascending by keyper: at least `t`. Empty with
    /// the embedded custodian.
    pub release: Vec<ReleaseAttestation>,
    /// Every envelope, in ascending commitment order.
    pub envelopes: Vec<EnvelopeOutcome>,
    /// Every configured market, ascending by id.
    pub markets: Vec<MarketOutcome>,
    /// Every order with a non-zero fill, by (envelope, index).
    pub fills: Vec<OrderFill>,
}

/// Why a batch could not be processed. Each means a bug or a corrupted
/// journal, never bad trader input (that becomes a rejection).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The clearing engine refused the validated input.
    #[error("batch {e}: clearing failed: {source}")]
    Clearing {
        /// The batch.
        e: BatchId,
        /// The engine's error.
        source: clearing::ClearingError,
    },
    /// Settlement refused the fills.
    #[error("batch {e}: settlement failed: {source}")]
    Settlement {
        /// The batch.
        e: BatchId,
        /// The ledger's error.
        source: LedgerError,
    },
    /// A market in the outcome or its fills is not configured.
    #[error("batch {e}: outcome names unknown market {market}")]
    UnknownMarket {
        /// The batch.
        e: BatchId,
        /// The market.
        market: MarketId,
    },
    /// A fill points at an envelope that was not accepted.
    #[error("batch {e}: fill for envelope {envelope}, which was not accepted")]
    BadFill {
        /// The batch.
        e: BatchId,
        /// The envelope index.
        envelope: u32,
    },
    /// Funding or clearing panicked (an engine assertion failed).
    #[error("batch {e}: processing panicked: {message}")]
    Panicked {
        /// The batch.
        e: BatchId,
        /// The panic's message.
        message: String,
    },
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

fn funding_status(error: &FundingError) -> EnvelopeStatus {
    let (code, detail) = match error {
        FundingError::UnknownMarket { index, .. } => (status::UNKNOWN_MARKET, *index as u32),
        FundingError::ZeroQuantity { index } => (status::ZERO_QUANTITY, *index as u32),
        FundingError::OutsideBand { index, .. } => (status::OUTSIDE_BAND, *index as u32),
        FundingError::Unfunded { asset, .. } | FundingError::TooLarge { asset } => {
            (status::UNFUNDED, asset.0)
        }
    };
    EnvelopeStatus::Rejected { code, detail }
}

/// Validates, clears and prices one opened batch against the ledger as it
/// stands. Changes nothing: [`apply_outcome`] settles the result.
///
/// # Errors
///
/// [`ProcessError::Clearing`] if the engine refuses input that passed the
/// funding checks, [`ProcessError::Panicked`] if an assertion of the engine
/// fails (both a bug; the caller voids the batch).
pub fn process_batch(
    opened: &OpenedBatch,
    batch_secret: [u8; 32],
    ledger: &Ledger,
    markets: &BTreeMap<MarketId, MarketConfig>,
    references: &BTreeMap<MarketId, Tick>,
    orders_per_account_max: u32,
) -> Result<BatchOutcome, ProcessError> {
    process_batch_with_input(
        opened,
        batch_secret,
        ledger,
        markets,
        references,
        orders_per_account_max,
    )
    .map(|(outcome, _)| outcome)
}

/// [`process_batch`], also returning the clearing input it built: the
/// funded orders of every market, which the explorer draws
/// ([`crate::curves`]).
///
/// # Errors
///
/// As [`process_batch`].
pub fn process_batch_with_input(
    opened: &OpenedBatch,
    batch_secret: [u8; 32],
    ledger: &Ledger,
    markets: &BTreeMap<MarketId, MarketConfig>,
    references: &BTreeMap<MarketId, Tick>,
    orders_per_account_max: u32,
) -> Result<(BatchOutcome, Vec<MarketInput>), ProcessError> {
    // Nothing is mutated here, so a panic leaves no state half-changed.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        process_unguarded(
            opened,
            batch_secret,
            ledger,
            markets,
            references,
            orders_per_account_max,
        )
    }))
    .unwrap_or_else(|payload| {
        Err(ProcessError::Panicked {
            e: opened.e,
            message: panic_message(payload.as_ref()),
        })
    })
}

/// The outcome of a batch that could not be processed: every envelope (by
/// ascending commitment) rejected as [`status::BATCH_VOID`], every configured
/// market without a trade, no fill. Settling it changes nothing.
#[must_use]
pub fn void_outcome(
    e: BatchId,
    root: MerkleRoot,
    batch_secret: [u8; 32],
    sorted_commitments: &[Commitment],
    markets: &BTreeMap<MarketId, MarketConfig>,
) -> BatchOutcome {
    BatchOutcome {
        e,
        root,
        batch_secret,
        release: Vec::new(),
        envelopes: sorted_commitments
            .iter()
            .map(|&commitment| EnvelopeOutcome {
                commitment,
                status: EnvelopeStatus::Rejected {
                    code: status::BATCH_VOID,
                    detail: 0,
                },
            })
            .collect(),
        markets: markets
            .keys()
            .map(|&market| MarketOutcome {
                market,
                price: None,
                volume: 0,
                imbalance: 0,
            })
            .collect(),
        fills: Vec::new(),
    }
}

/// What a batch clears, before clearing: each envelope's status so far,
/// each order's owner by id, and every configured market's input.
struct Prepared {
    envelopes: Vec<EnvelopeOutcome>,
    /// id -> (envelope index, order index, market, side)
    owners: Vec<(u32, u16, MarketId, Side)>,
    inputs: Vec<MarketInput>,
}

/// The clearing input of an opened batch, exactly as the sequencer builds
/// it (orders per account bounded, funding against `ledger`, ids in
/// commitment order), and the seed that breaks its ties (the seal's root):
/// what `bench clearing --input` replays.
#[must_use]
pub fn clearing_input(
    opened: &OpenedBatch,
    ledger: &Ledger,
    markets: &BTreeMap<MarketId, MarketConfig>,
    references: &BTreeMap<MarketId, Tick>,
    orders_per_account_max: u32,
) -> (Vec<MarketInput>, [u8; 32]) {
    let prepared = prepare(opened, ledger, markets, references, orders_per_account_max);
    (prepared.inputs, opened.root.0)
}

fn prepare(
    opened: &OpenedBatch,
    ledger: &Ledger,
    markets: &BTreeMap<MarketId, MarketConfig>,
    references: &BTreeMap<MarketId, Tick>,
    orders_per_account_max: u32,
) -> Prepared {
    // 1. What opening said, in commitment order.
    let mut envelopes: Vec<EnvelopeOutcome> = opened
        .envelopes
        .iter()
        .map(|o| EnvelopeOutcome {
            commitment: o.commitment,
            status: match &o.outcome {
                Ok(_) => EnvelopeStatus::Accepted {
                    account: AccountId::default(),
                    first_order: OrderId(0),
                    orders: 0,
                },
                Err(rejection) => EnvelopeStatus::Rejected {
                    code: rejection.code(),
                    detail: 0,
                },
            },
        })
        .collect();

    // 2. Each account's orders in the batch, bounded: its bundles in
    // commitment order, one that would pass the bound is rejected.
    let mut per_account: BTreeMap<AccountId, u32> = BTreeMap::new();
    let mut verified: Vec<(usize, AccountId, &[OrderSpec])> = Vec::new();
    for (i, o) in opened.envelopes.iter().enumerate() {
        let Ok(bundle) = &o.outcome else { continue };
        let held = per_account.entry(bundle.account).or_insert(0);
        // At most BUNDLE_ORDERS_MAX orders: fits a u32.
        let orders = bundle.orders.len() as u32;
        match held.checked_add(orders) {
            Some(total) if total <= orders_per_account_max => {
                *held = total;
                verified.push((i, bundle.account, bundle.orders.as_slice()));
            }
            _ => {
                envelopes[i].status = EnvelopeStatus::Rejected {
                    code: status::ACCOUNT_ORDER_LIMIT,
                    detail: *held,
                };
            }
        }
    }

    // 3. Funding, over the remaining verified bundles in commitment order.
    let requests: Vec<(AccountId, &[OrderSpec])> = verified
        .iter()
        .map(|&(_, account, orders)| (account, orders))
        .collect();
    let funding = ledger.check_funding(markets, &requests);

    // 4. Order ids, and the clearing input per market.
    let mut columns: BTreeMap<MarketId, OrderColumns> =
        markets.keys().map(|&m| (m, OrderColumns::new())).collect();
    // id -> (envelope index, order index, market, side)
    let mut owners: Vec<(u32, u16, MarketId, Side)> = Vec::new();
    for (&(index, account, orders), funded) in verified.iter().zip(&funding) {
        let slot = &mut envelopes[index];
        if let Err(error) = funded {
            slot.status = funding_status(error);
            continue;
        }
        let first_order = OrderId(owners.len() as u64);
        for (position, spec) in orders.iter().enumerate() {
            let id = OrderId(owners.len() as u64);
            // Funding checked every market exists.
            if let Some(column) = columns.get_mut(&spec.market) {
                column.push(Order {
                    id,
                    side: spec.side,
                    limit: spec.limit,
                    qty: spec.qty,
                });
            }
            // Bounded: ENVELOPES_PER_BATCH_MAX × BUNDLE_ORDERS_MAX.
            owners.push((index as u32, position as u16, spec.market, spec.side));
        }
        slot.status = EnvelopeStatus::Accepted {
            account,
            first_order,
            orders: orders.len() as u16,
        };
    }

    let inputs: Vec<MarketInput> = columns
        .into_iter()
        .filter_map(|(market, orders)| {
            let config = markets.get(&market)?;
            let reference = references
                .get(&market)
                .copied()
                .unwrap_or(config.initial_price);
            Some(MarketInput {
                config: clearing::MarketParams {
                    market,
                    reference,
                    band: PriceBand::new(config.band_min, config.band_max),
                },
                orders,
            })
        })
        .collect();
    Prepared {
        envelopes,
        owners,
        inputs,
    }
}

fn process_unguarded(
    opened: &OpenedBatch,
    batch_secret: [u8; 32],
    ledger: &Ledger,
    markets: &BTreeMap<MarketId, MarketConfig>,
    references: &BTreeMap<MarketId, Tick>,
    orders_per_account_max: u32,
) -> Result<(BatchOutcome, Vec<MarketInput>), ProcessError> {
    let e = opened.e;
    let Prepared {
        envelopes,
        owners,
        inputs,
    } = prepare(opened, ledger, markets, references, orders_per_account_max);
    // 5. Clear, seeded by the seal root.
    let result = clearing::clear_batch(&inputs, &opened.root.0)
        .map_err(|source| ProcessError::Clearing { e, source })?;

    let mut fills = Vec::new();
    let mut market_outcomes = Vec::with_capacity(result.markets.len());
    for market in &result.markets {
        market_outcomes.push(MarketOutcome {
            market: market.market,
            price: market.price,
            volume: market.volume,
            imbalance: market.imbalance,
        });
        for fill in market.fills().filter(|f| f.filled != 0) {
            if let Some(&(envelope, index, market_id, side)) = owners.get(fill.id.0 as usize) {
                fills.push(OrderFill {
                    envelope,
                    index,
                    market: market_id,
                    side,
                    filled: fill.filled,
                });
            }
        }
    }
    fills.sort_unstable_by_key(|f| (f.envelope, f.index));

    let outcome = BatchOutcome {
        e,
        root: opened.root,
        batch_secret,
        release: Vec::new(),
        envelopes,
        markets: market_outcomes,
        fills,
    };
    Ok((outcome, inputs))
}

/// Settles an outcome into the ledger and moves each traded market's
/// reference price to its clearing price. All or nothing.
///
/// # Errors
///
/// [`ProcessError`] if the outcome does not fit the configuration or the
/// ledger refuses it; nothing changes then.
pub fn apply_outcome(
    outcome: &BatchOutcome,
    ledger: &mut Ledger,
    markets: &BTreeMap<MarketId, MarketConfig>,
    references: &mut BTreeMap<MarketId, Tick>,
) -> Result<(), ProcessError> {
    let e = outcome.e;
    let mut prices = BTreeMap::new();
    for market in &outcome.markets {
        if !markets.contains_key(&market.market) {
            return Err(ProcessError::UnknownMarket {
                e,
                market: market.market,
            });
        }
        if let Some(price) = market.price {
            prices.insert(market.market, price);
        }
    }
    let mut fills = Vec::with_capacity(outcome.fills.len());
    for fill in &outcome.fills {
        let account = match outcome.envelopes.get(fill.envelope as usize) {
            Some(EnvelopeOutcome {
                status: EnvelopeStatus::Accepted { account, .. },
                ..
            }) => *account,
            _ => {
                return Err(ProcessError::BadFill {
                    e,
                    envelope: fill.envelope,
                });
            }
        };
        fills.push(AccountFill {
            account,
            market: fill.market,
            side: fill.side,
            qty: fill.filled,
        });
    }
    ledger
        .settle(markets, &prices, &fills)
        .map_err(|source| ProcessError::Settlement { e, source })?;
    references.extend(prices);
    Ok(())
}

impl BatchOutcome {
    /// Whether this is a voided batch ([`void_outcome`]): at least one
    /// envelope, every one rejected as [`status::BATCH_VOID`], and no fill.
    #[must_use]
    pub fn is_void(&self) -> bool {
        !self.envelopes.is_empty()
            && self.fills.is_empty()
            && self.envelopes.iter().all(|o| {
                matches!(
                    o.status,
                    EnvelopeStatus::Rejected {
                        code: status::BATCH_VOID,
                        ..
                    }
                )
            })
    }
}

impl Decode for BatchOutcome {
    /// Decodes [`BatchOutcome::encode_into`].
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<BatchOutcome, DecodeError> {
        let tag: [u8; 8] = r.array("result tag")?;
        if tag != OUTCOME_TAG && tag != OUTCOME_TAG_V1 {
            return Err(r.invalid("result tag", 0));
        }
        let e = BatchId(r.u64("batch")?);
        let root = MerkleRoot(r.array("root")?);
        let batch_secret = r.array("batch secret")?;
        let release = if tag == OUTCOME_TAG {
            decode_attestations(r)?
        } else {
            Vec::new()
        };
        let count = r.count("envelope count", ENVELOPES_PER_BATCH_MAX)?;
        let mut envelopes = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let commitment = Commitment(r.array("commitment")?);
            let offset = r.offset();
            let code = r.u8("status")?;
            let status = if code == status::ACCEPTED {
                let account = AccountId(r.array("account")?);
                let first_order = OrderId(r.u64("first order")?);
                let orders = r.u16("order count")?;
                if orders == 0 || usize::from(orders) > BUNDLE_ORDERS_MAX {
                    return Err(r.invalid("order count", offset + 41));
                }
                EnvelopeStatus::Accepted {
                    account,
                    first_order,
                    orders,
                }
            } else {
                EnvelopeStatus::Rejected {
                    code,
                    detail: r.u32("detail")?,
                }
            };
            envelopes.push(EnvelopeOutcome { commitment, status });
        }
        let count = r.count("market count", MARKETS_MAX)?;
        let mut markets = Vec::with_capacity(count);
        for _ in 0..count {
            let market = MarketId(r.u32("market")?);
            let offset = r.offset();
            let has_price = r.u8("has price")?;
            let price = r.u64("price")?;
            let price = match (has_price, price) {
                (0, 0) => None,
                (1, price) => Some(Tick(price)),
                // No price must be encoded as price 0: one encoding per value.
                _ => return Err(r.invalid("has price", offset)),
            };
            markets.push(MarketOutcome {
                market,
                price,
                volume: r.u64("volume")?,
                imbalance: r.i128("imbalance")?,
            });
        }
        let count = r.count(
            "fill count",
            ENVELOPES_PER_BATCH_MAX.saturating_mul(BUNDLE_ORDERS_MAX),
        )?;
        let mut fills = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let envelope = r.u32("fill envelope")?;
            let index = r.u16("fill index")?;
            let market = MarketId(r.u32("fill market")?);
            let offset = r.offset();
            let side = Side::from_byte(r.u8("fill side")?)
                .ok_or_else(|| r.invalid("fill side", offset))?;
            fills.push(OrderFill {
                envelope,
                index,
                market,
                side,
                filled: r.u64("filled")?,
            });
        }
        Ok(BatchOutcome {
            e,
            root,
            batch_secret,
            release,
            envelopes,
            markets,
            fills,
        })
    }
}

impl Encode for BatchOutcome {
    /// Appends the canonical encoding (`spec/sequencer.md`, "Result (kind 4)").
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&OUTCOME_TAG);
        out.put_u64(self.e.get());
        out.extend_from_slice(&self.root.0);
        out.extend_from_slice(&self.batch_secret);
        encode_attestations(out, &self.release);
        // Counts are bounded by ENVELOPES_PER_BATCH_MAX, MARKETS_MAX and
        // their product with BUNDLE_ORDERS_MAX, all below u32::MAX.
        out.put_u32(self.envelopes.len() as u32);
        for envelope in &self.envelopes {
            out.extend_from_slice(&envelope.commitment.0);
            match envelope.status {
                EnvelopeStatus::Accepted {
                    account,
                    first_order,
                    orders,
                } => {
                    out.put_u8(status::ACCEPTED);
                    out.extend_from_slice(&account.0);
                    out.put_u64(first_order.0);
                    out.put_u16(orders);
                }
                EnvelopeStatus::Rejected { code, detail } => {
                    out.put_u8(code);
                    out.put_u32(detail);
                }
            }
        }
        out.put_u32(self.markets.len() as u32);
        for market in &self.markets {
            out.put_u32(market.market.0);
            out.put_u8(u8::from(market.price.is_some()));
            out.put_u64(market.price.unwrap_or(Tick::ZERO).get());
            out.put_u64(market.volume);
            out.put_i128(market.imbalance);
        }
        out.put_u32(self.fills.len() as u32);
        for fill in &self.fills {
            out.put_u32(fill.envelope);
            out.put_u16(fill.index);
            out.put_u32(fill.market.0);
            out.put_u8(fill.side.to_byte());
            out.put_u64(fill.filled);
        }
    }
}

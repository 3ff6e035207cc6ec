//! The sequencer core driven the way a hostile trader and a careless operator
//! would: arbitrary market configurations (tick and lot sizes, bands and fees
//! biased to 1, 10^18, `u64::MAX`, `u64::MAX / band_max`, `FEE_BPS_MAX`),
//! arbitrary sealed bundles (up to 256 orders, quantities biased to
//! `u64::MAX`, limits at and beyond the band edges, unknown markets, the
//! 19-sell bundle whose funding sum once wrapped), deposits and withdrawals
//! near the supply limit, garbage and tampered envelopes, partial journal
//! flushes, time, checkpoints, and crashes that lose the writes not yet
//! durable (recovering from the genesis record or from a checkpoint).
//!
//! Checked on every input, with the sequencer's own answers compared with
//! models written here from `spec/` (not from `src/`):
//! - no method fails that must not (`handle_timeout`, `handle_journal_durable`,
//!   `handle_opened`, `recover`); every submission, deposit and withdrawal is
//!   accepted or refused exactly as the model says;
//! - no `Event::BatchVoided`, ever;
//! - the orders-per-account bound (`spec/sequencer.md`) and funding
//!   (`spec/ledger.md`): every envelope's status, in commitment order;
//! - clearing (`spec/clearing.md` §3–§6): price, volume, imbalance, and every
//!   fill (pro rata on the marginal level up to the one leftover lot);
//! - settlement: the ledger moves exactly by the fills' deltas, fees included;
//! - per asset, the balances add up to `ledger().total(asset)`, which is what
//!   was deposited minus withdrawn and never above `u64::MAX`;
//! - every receipt's envelope ends up in a journaled result, and each batch is
//!   published once, with the journaled outcome;
//! - a recovery from a checkpoint gives the state a full replay gives;
//! - at the end (every batch closed and cleared): `verify_journal_with`
//!   reports every batch and checkpoint OK, and a sequencer recovered from the
//!   journal has the same ledger (`==`) and reference prices.
//!
//! A module (not a target) so that `cargo test` replays the crash
//! reproductions in `fuzz/regressions/sequencer_drive/` through it; the
//! target `fuzz_targets/sequencer_drive.rs` calls [`check`].
//!
//! Smoke run (stable toolchain, see `docs/development.md`, "Fuzzing"), from
//! the seeds in `fuzz/corpus/sequencer_drive/`:
//! `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run sequencer_drive -- -max_total_time=120 -rss_limit_mb=4096`
//! (`cargo fuzz run -s none …` runs 3–4× more inputs per second: this is safe
//! Rust over curve arithmetic, where AddressSanitizer mostly costs time).

use sealbatch::codec::{Decode, Encode};
use sealbatch::signed::Statement as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};

use arbitrary::{Result as ArbResult, Unstructured};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sealbatch::envelope::{
    BatchPublicKey, BatchSchedule, Commitment, CustodianError, ENVELOPE_LEN_MAX, ENVELOPE_LEN_MIN,
    EmbeddedCustodian, KeyCustodian, MasterSecret, ReleasedBatchKey, SequencerKey, SignedSeal,
    VERSION, seal_bundle,
};
use sealbatch::journal::Lsn;
use sealbatch::ledger::Ledger;
use sealbatch::market::{AccountId, AssetId, BPS_DENOMINATOR, FEE_BPS_MAX, MarketConfig};
use sealbatch::order::OrderSpec;
use sealbatch::sequencer::{
    BatchOutcome, Checkpoint, EnvelopeStatus, Event, Genesis, Journaled, Limits,
    ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT, OpToken, RESULT_PART_BYTES_MAX, RecordKind,
    ResultAssembler, Sequencer, SequencerRecord, SubmitError, SubmitToken, status,
    verify_journal_with,
};
use sealbatch::types::{BUNDLE_ORDERS_MAX, BatchId, MarketId, Side, Tick};

/// Sealed submissions per input (sealing and opening cost ~60 µs each).
const SEALS_MAX: usize = 48;
/// Actions per input.
const ACTIONS_MAX: usize = 512;
/// Orders per input, over all bundles (clearing models are quadratic-free,
/// but keep executions short).
const ORDERS_MAX: usize = 2048;
const SEQUENCER_SEED: [u8; 32] = [0x5e; 32];
const MASTER: [u8; 32] = [0x3a; 32];
const GENESIS_MS: u64 = 1_700_000_000_000;
const E18: u64 = 1_000_000_000_000_000_000;

type Record = (Lsn, u8, Vec<u8>);

/// Drives a sequencer by `data` and checks everything above: the fuzz
/// target's body, also replayed over `fuzz/regressions/sequencer_drive/` by
/// `cargo test` (`tests/logic/sequencer_drive_regressions.rs`).
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(Some(mut h)) = Harness::new(&mut u) else {
        return;
    };
    let mut actions = 0;
    while !u.is_empty() && actions < ACTIONS_MAX {
        actions += 1;
        if h.step(&mut u).is_err() {
            break;
        }
    }
    h.finish();
}

/// Picks one of `extremes` (most of the time) or an arbitrary value.
fn biased(u: &mut Unstructured<'_>, extremes: &[u64]) -> ArbResult<u64> {
    let tag: u8 = u.arbitrary()?;
    if usize::from(tag) < extremes.len() * 16 {
        Ok(extremes[usize::from(tag) % extremes.len()])
    } else {
        u.arbitrary()
    }
}

fn pick<T: Copy>(u: &mut Unstructured<'_>, items: &[T]) -> ArbResult<T> {
    Ok(*u.choose(items)?)
}

fn arbitrary_market(
    u: &mut Unstructured<'_>,
    id: MarketId,
    assets: &[AssetId],
) -> ArbResult<MarketConfig> {
    let base = pick(u, assets)?;
    let mut quote = pick(u, assets)?;
    if quote == base {
        let at = assets.iter().position(|a| *a == base).unwrap_or(0);
        quote = assets[(at + 1) % assets.len()];
    }
    let band_max = biased(
        u,
        &[
            1000,
            u64::MAX - 1,
            u64::MAX,
            1,
            (1 << 20) - 1,
            E18,
            u64::MAX / 2,
            16,
        ],
    )?
    .max(1);
    let band_min = match u.int_in_range(0u8..=4)? {
        0 => 1,
        1 => band_max,
        2 => (band_max / 2).max(1),
        3 => band_max.saturating_sub(1).max(1),
        _ => u.int_in_range(1..=band_max)?,
    };
    let tick_max = u64::MAX / band_max;
    let tick_size = match u.int_in_range(0u8..=4)? {
        0 => 1,
        1 => tick_max,
        2 => E18.min(tick_max),
        3 => (tick_max / 2).max(1),
        _ => u.int_in_range(1..=tick_max)?,
    };
    let lot_size = biased(u, &[1, E18, u64::MAX, u64::MAX / 16, 10, 1 << 32])?.max(1);
    let initial_price = match u.int_in_range(0u8..=3)? {
        0 => band_min,
        1 => band_max,
        2 => band_min + (band_max - band_min) / 2,
        _ => u.int_in_range(band_min..=band_max)?,
    };
    let fee_bps = match u.int_in_range(0u8..=3)? {
        0 => FEE_BPS_MAX,
        1 => 0,
        2 => 5,
        _ => u.int_in_range(0..=FEE_BPS_MAX)?,
    };
    Ok(MarketConfig {
        id,
        base,
        quote,
        tick_size,
        lot_size,
        band_min: Tick(band_min),
        band_max: Tick(band_max),
        initial_price: Tick(initial_price),
        fee_bps,
    })
}

/// What was submitted under a commitment.
#[derive(Clone, Debug)]
enum Sent {
    /// A bundle sealed properly by `account`.
    Bundle {
        account: AccountId,
        orders: Vec<OrderSpec>,
    },
    /// Garbage or a tampered envelope: it must be rejected at opening.
    Bad,
}

/// What the model says a submission gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Closed,
    NotAnnounced,
    /// With the retry-after.
    Busy(u64),
    Duplicate,
    Full,
}

struct Harness {
    genesis: Genesis,
    limits: Limits,
    seq: Sequencer,
    now: u64,
    /// Records written to the "disk", in LSN order.
    records: Vec<Record>,
    /// Highest LSN reported durable to the current sequencer.
    durable: Lsn,
    traders: Vec<SigningKey>,
    accounts: Vec<AccountId>,
    assets: Vec<AssetId>,
    rng: ChaCha20Rng,
    nonce: u64,
    next_token: u64,
    seals: usize,
    orders_sent: usize,
    /// Token -> (batch, commitment) of every accepted submission.
    submitted: BTreeMap<u64, (BatchId, Commitment)>,
    /// Everything ever accepted, by commitment.
    sent: BTreeMap<Commitment, Sent>,
    /// Model of the journaled envelopes per batch: commitments and bytes.
    held: BTreeMap<BatchId, (BTreeSet<Commitment>, usize)>,
    /// LSNs of accepted submissions whose receipt is still pending.
    pending_receipts: Vec<Lsn>,
    /// Envelopes whose receipt was delivered.
    acked: BTreeSet<(BatchId, Commitment)>,
    /// Batches published (`BatchCleared`) by any incarnation.
    published: BTreeSet<BatchId>,
    /// The latest outcome of each batch as journaled by `handle_opened`.
    settled: BTreeMap<BatchId, BatchOutcome>,
    /// Deposits minus withdrawals per asset, as the model sees them.
    expected_totals: BTreeMap<AssetId, u128>,
    /// The last properly sealed envelope, for resubmission.
    last_sealed: Option<(BatchId, Vec<u8>)>,
    /// Checkpoints written (every record below their LSN durable).
    checkpoints: Vec<Checkpoint>,
    /// A checkpoint taken, written once the records below it are durable.
    checkpoint_pending: Option<Checkpoint>,
}

impl Harness {
    fn new(u: &mut Unstructured<'_>) -> ArbResult<Option<Harness>> {
        let asset_pool = [AssetId(0), AssetId(1), AssetId(2), AssetId(u32::MAX)];
        let market_count = u.int_in_range(1usize..=4)?;
        let mut markets = Vec::with_capacity(market_count);
        let mut id = match u.int_in_range(0u8..=3)? {
            0 | 1 => 1,
            2 => 0,
            _ => u32::MAX - 8,
        };
        for _ in 0..market_count {
            markets.push(arbitrary_market(u, MarketId(id), &asset_pool)?);
            id += 1 + u32::from(u.int_in_range(0u8..=1)?);
        }
        let trader_count = u.int_in_range(2usize..=6)?;
        let trader_byte: u8 = u.arbitrary()?;
        let traders: Vec<SigningKey> = (0..trader_count)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[0] = i as u8;
                seed[1] = trader_byte;
                seed[2] = 0x7d;
                trader_key(seed)
            })
            .collect();
        let accounts: Vec<AccountId> = traders
            .iter()
            .map(|t| AccountId(t.verifying_key().to_bytes()))
            .collect();
        // A careless operator may make a trader the fee account.
        let fee_account = match u.int_in_range(0u8..=7)? {
            0 => accounts[0],
            _ => AccountId([0xfe; 32]),
        };
        // The bound on one account's orders in a batch: the default, or as
        // low as the rules allow, where a few bundles reach it.
        let orders_per_account_per_batch_max =
            pick(u, &[ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT, 256, 300, 1024])?;
        let schedule = BatchSchedule {
            genesis_ms: GENESIS_MS,
            batch_length_ms: biased(u, &[100, 1, 1000, 7])?.clamp(1, 1000),
        };
        let limits = Limits {
            announce_ahead: pick(u, &[8, 8, 1, 0, 2])?,
            envelopes_per_batch_max: pick(u, &[100_000, 100_000, 1, 3])?,
            bytes_per_batch_max: pick(u, &[256 << 20, 256 << 20, 2_000, 9_000])?,
            pending_receipts_max: pick(u, &[1 << 20, 1 << 20, 1, 2])?,
            clear_lag_max_ms: pick(u, &[None, None, Some(1), Some(250), Some(5_000)])?,
            sealed_batches_max: pick(u, &[2, 2, 1, 8, 64])?,
            result_part_bytes: pick(u, &[RESULT_PART_BYTES_MAX, 512, 97])?,
        };
        let key = SequencerKey::from_seed(&SEQUENCER_SEED);
        let genesis = Genesis {
            sequencer: key.public_key(),
            schedule,
            fee_account,
            orders_per_account_per_batch_max,
            markets,
        };
        if genesis.validate().is_err() || limits.validate().is_err() {
            return Ok(None);
        }
        let assets: Vec<AssetId> = genesis
            .markets
            .iter()
            .flat_map(|m| [m.base, m.quote])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Sealing randomness: it orders the commitments, nothing else.
        let rng_seed: u64 = u.arbitrary()?;
        // Start at genesis, or a little before it.
        let now = GENESIS_MS - u64::from(u.int_in_range(0u8..=2)?) * 37;
        let seq = recover(&genesis, limits, None, Vec::new(), Lsn::FIRST, now);
        let mut h = Harness {
            genesis,
            limits,
            seq,
            now,
            records: Vec::new(),
            durable: Lsn::NONE,
            traders,
            accounts,
            assets,
            rng: ChaCha20Rng::seed_from_u64(rng_seed),
            nonce: 0,
            next_token: 0,
            seals: 0,
            orders_sent: 0,
            submitted: BTreeMap::new(),
            sent: BTreeMap::new(),
            held: BTreeMap::new(),
            pending_receipts: Vec::new(),
            acked: BTreeSet::new(),
            published: BTreeSet::new(),
            settled: BTreeMap::new(),
            expected_totals: BTreeMap::new(),
            last_sealed: None,
            checkpoints: Vec::new(),
            checkpoint_pending: None,
        };
        // The operator funds every trader in every asset (or leaves it to the
        // deposits among the actions).
        let funding = match u.int_in_range(0u8..=3)? {
            0 => Some(u64::MAX / 8),
            1 => Some(u64::MAX / 64),
            2 => Some(u64::MAX / 7),
            _ => None,
        };
        if let Some(amount) = funding {
            for account in h.accounts.clone() {
                for asset in h.assets.clone() {
                    h.seq
                        .handle_deposit(OpToken(0), account, asset, amount)
                        .expect("an initial deposit within the supply");
                    *h.expected_totals.entry(asset).or_default() += u128::from(amount);
                }
            }
        }
        h.timeout();
        Ok(Some(h))
    }

    fn markets(&self) -> &[MarketConfig] {
        &self.genesis.markets
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> ArbResult<()> {
        let action = u.int_in_range(0u8..=16)?;
        match action {
            0..=1 => self.deposit(u)?,
            2 => self.withdraw(u)?,
            3..=6 => self.submit_bundle(u, false)?,
            7 => self.submit_bundle(u, true)?,
            8 => self.submit_garbage(u)?,
            9 => self.resubmit(),
            10..=11 => {
                let dt = u.int_in_range(0u64..=300)?;
                self.advance(dt);
            }
            12 => self.pump(),
            13 => {
                let fraction = u.int_in_range(0u8..=3)?;
                self.flush_partly(fraction);
            }
            14 => {
                let how = u.int_in_range(0u8..=5)?;
                self.restart(how % 3, how >= 3);
            }
            // A spurious timeout (the caller may call it any time).
            15 => self.timeout(),
            _ => self.take_checkpoint(),
        }
        self.check_ledger();
        Ok(())
    }

    fn account(&self, u: &mut Unstructured<'_>) -> ArbResult<(usize, AccountId)> {
        let i = u.int_in_range(0..=self.accounts.len() - 1)?;
        Ok((i, self.accounts[i]))
    }

    fn deposit(&mut self, u: &mut Unstructured<'_>) -> ArbResult<()> {
        let (_, account) = self.account(u)?;
        let asset = pick(u, &self.assets)?;
        let amount = biased(
            u,
            &[u64::MAX, u64::MAX / 2, u64::MAX / 8, 1_000_000, 1, E18 * 18],
        )?;
        let total = self.seq.ledger().total(asset);
        let before = self.seq.ledger().balance(&account, asset);
        let lsn = self.seq.next_lsn();
        let result = self
            .seq
            .handle_deposit(OpToken(lsn.get()), account, asset, amount);
        let fits = total + u128::from(amount) <= u128::from(u64::MAX);
        assert_eq!(
            result.is_ok(),
            fits,
            "deposit of {amount} of asset {asset} (total {total}): {result:?}"
        );
        if fits {
            assert_eq!(self.seq.ledger().balance(&account, asset), before + amount);
            *self.expected_totals.entry(asset).or_default() += u128::from(amount);
        } else {
            assert_eq!(self.seq.next_lsn(), lsn, "a refused deposit was journaled");
        }
        Ok(())
    }

    /// A trader's signed withdrawal: taken exactly when it carries the
    /// account's next sequence number and 1 to the balance; a replayed or
    /// skipped number, or an overdraft, changes nothing.
    fn withdraw(&mut self, u: &mut Unstructured<'_>) -> ArbResult<()> {
        let (i, account) = self.account(u)?;
        let asset = pick(u, &self.assets)?;
        let before = self.seq.ledger().balance(&account, asset);
        let amount = match u.int_in_range(0u8..=4)? {
            0 => before,
            1 => before.saturating_add(1),
            2 => before / 2,
            3 => u64::MAX,
            _ => u.arbitrary()?,
        };
        let next = self.seq.funds().next_sequence(&account);
        let sequence = match u.int_in_range(0u8..=3)? {
            0 => next.saturating_sub(1),
            1 => next.saturating_add(1),
            _ => next,
        };
        let signed = sealbatch::signed::WithdrawalStatement {
            account,
            asset,
            amount,
            sequence,
            destination: b"fuzz".to_vec(),
        }
        .sign(
            &self.traders[i],
            &SequencerKey::from_seed(&SEQUENCER_SEED).public_key(),
        )
        .expect("signs");
        let lsn = self.seq.next_lsn();
        let result = self.seq.handle_withdrawal(OpToken(lsn.get()), signed);
        let valid = sequence == next && amount >= 1 && amount <= before;
        assert_eq!(
            result.is_ok(),
            valid,
            "withdrawal {sequence} (next {next}) of {amount} from a balance of {before}: {result:?}"
        );
        if valid {
            assert_eq!(self.seq.ledger().balance(&account, asset), before - amount);
            let total = self.expected_totals.entry(asset).or_default();
            *total -= u128::from(amount);
        } else {
            assert_eq!(
                self.seq.next_lsn(),
                lsn,
                "a refused withdrawal was journaled"
            );
            assert_eq!(self.seq.funds().next_sequence(&account), next);
        }
        Ok(())
    }

    /// A quantity for an order that the trader's current balance covers a
    /// share of, so that extreme markets actually trade.
    fn affordable(&self, account: &AccountId, m: &MarketConfig, side: Side, limit: Tick) -> u64 {
        let ledger = self.seq.ledger();
        match side {
            Side::Sell => ledger.balance(account, m.base) / m.lot_size,
            Side::Buy => {
                let per_lot = u128::from(limit) * u128::from(m.tick_size);
                let per_lot = per_lot + per_lot * u128::from(m.fee_bps) / 10_000 + 1;
                u64::try_from(u128::from(ledger.balance(account, m.quote)) / per_lot)
                    .unwrap_or(u64::MAX)
            }
        }
    }

    /// One order of a hostile trader: any market (or an unknown one), limits
    /// at, beyond and far from the band, quantities up to `u64::MAX`.
    fn hostile_order(
        &self,
        u: &mut Unstructured<'_>,
        account: &AccountId,
        share: u64,
        client_order_id: u64,
    ) -> ArbResult<OrderSpec> {
        let markets = self.markets();
        let unknown = (1..=5u32)
            .map(|k| MarketId(markets[markets.len() - 1].id.0.wrapping_add(k)))
            .find(|id| markets.iter().all(|m| m.id != *id))
            .unwrap_or(MarketId(u32::MAX));
        let which = u.int_in_range(0..=markets.len() * 8)?;
        let Some(m) = markets.get(which / 8) else {
            return Ok(OrderSpec {
                market: unknown,
                side: Side::Buy,
                limit: None,
                qty: 1,
                client_order_id,
            });
        };
        let side = if u.arbitrary::<bool>()? {
            Side::Sell
        } else {
            Side::Buy
        };
        let limit = match u.int_in_range(0u8..=11)? {
            0 | 1 => None,
            2 => Some(m.band_min),
            3 => Some(m.band_max),
            4 => Some(Tick(m.band_min.get().wrapping_sub(1))),
            5 => Some(Tick(m.band_max.get().wrapping_add(1))),
            6 | 7 => Some(m.initial_price),
            8 => Some(self.reference(m)),
            9 => Some(Tick(u.int_in_range(m.band_min.get()..=m.band_max.get())?)),
            10 => Some(
                m.initial_price
                    .saturating_add(u64::from(u.int_in_range(0u8..=3)?))
                    .min(m.band_max),
            ),
            _ => Some(Tick(u.arbitrary()?)),
        };
        let price = limit.unwrap_or(m.band_max).clamp(m.band_min, m.band_max);
        let qty = match u.int_in_range(0u8..=7)? {
            0 => u64::MAX,
            1 => 1,
            2 => u.arbitrary()?,
            3 => u64::from(u.int_in_range(1u8..=16)?),
            _ => self.affordable(account, m, side, price) / share.max(1),
        }
        .max(1);
        Ok(OrderSpec {
            market: m.id,
            side,
            limit,
            qty,
            client_order_id,
        })
    }

    /// One order of an ordinary trader: a configured market, a limit near
    /// the reference price (where the two sides cross) or none, and a share
    /// of what the account holds.
    fn ordinary_order(
        &self,
        u: &mut Unstructured<'_>,
        account: &AccountId,
        share: u64,
        client_order_id: u64,
    ) -> ArbResult<OrderSpec> {
        let markets = self.markets();
        let m = &markets[u.int_in_range(0..=markets.len() - 1)?];
        let side = if u.arbitrary::<bool>()? {
            Side::Sell
        } else {
            Side::Buy
        };
        let reference = self.reference(m);
        let limit = match u.int_in_range(0u8..=3)? {
            0 => None,
            1 => Some(reference),
            2 => Some(
                reference
                    .saturating_add(u64::from(u.int_in_range(1u8..=3)?))
                    .min(m.band_max),
            ),
            _ => Some(
                reference
                    .saturating_sub(u64::from(u.int_in_range(1u8..=3)?))
                    .max(m.band_min),
            ),
        };
        let price = limit.unwrap_or(m.band_max);
        let qty = match u.int_in_range(0u8..=3)? {
            0..=2 => self.affordable(account, m, side, price) / share.max(1),
            _ => u64::from(u.int_in_range(1u8..=16)?),
        }
        .max(1);
        Ok(OrderSpec {
            market: m.id,
            side,
            limit,
            qty,
            client_order_id,
        })
    }

    fn reference(&self, m: &MarketConfig) -> Tick {
        self.seq
            .references()
            .get(&m.id)
            .copied()
            .unwrap_or(m.initial_price)
    }

    fn arbitrary_orders(
        &self,
        u: &mut Unstructured<'_>,
        account: &AccountId,
    ) -> ArbResult<Vec<OrderSpec>> {
        // Mostly ordinary bundles, so that batches trade; a quarter hostile.
        let hostile = u.int_in_range(0u8..=3)? == 3;
        let count = match u.int_in_range(0u8..=9)? {
            0..=3 => 1,
            4 => 2,
            5 => 3,
            6 => 19,
            7 => BUNDLE_ORDERS_MAX,
            _ => u.int_in_range(1..=BUNDLE_ORDERS_MAX)?,
        };
        let count = count.min(ORDERS_MAX.saturating_sub(self.orders_sent).max(1));
        let share = pick(u, &[count as u64, 1, 2, 4])?;
        let order = |u: &mut Unstructured<'_>, i: u64| {
            if hostile {
                self.hostile_order(u, account, share, i)
            } else {
                self.ordinary_order(u, account, share, i)
            }
        };
        if u.ratio(1u8, 2u8)? {
            // One order repeated: how the 19-sell bundle looked.
            let first = order(u, 0)?;
            return Ok((0..count as u64)
                .map(|i| OrderSpec {
                    client_order_id: i,
                    ..first
                })
                .collect());
        }
        let mut orders = Vec::with_capacity(count);
        for i in 0..count {
            if u.is_empty() {
                break;
            }
            orders.push(order(u, i as u64)?);
        }
        if orders.is_empty() {
            orders.push(order(u, 0)?);
        }
        Ok(orders)
    }

    /// What the model says submitting `len` bytes with `commitment` to batch
    /// `e` gets.
    fn expect(&self, e: BatchId, commitment: &Commitment, len: usize) -> Expect {
        let open = self.seq.open_batch_at(self.now);
        let schedule = &self.genesis.schedule;
        if e < open || schedule.close_ms(e).is_none_or(|c| c <= self.now) {
            return Expect::Closed;
        }
        if e > open.saturating_add(self.limits.announce_ahead) {
            return Expect::NotAnnounced;
        }
        // Admission control: batches sealed and not yet cleared, then
        // receipts waiting for the journal (spec/sequencer.md, "Submit").
        let length = self.genesis.schedule.batch_length_ms;
        let lag = self.seq.clear_lag_ms(self.now);
        let lag_max = self
            .limits
            .clear_lag_max_ms
            .unwrap_or(3 * self.genesis.schedule.batch_length_ms);
        assert_eq!(self.seq.clear_lag_max_ms(), lag_max);
        if lag > lag_max {
            return Expect::Busy((lag - lag_max).max(length));
        }
        let in_flight = self.seq.batches_in_flight();
        if in_flight >= self.limits.sealed_batches_max {
            let behind = (in_flight + 1 - self.limits.sealed_batches_max) as u64;
            return Expect::Busy(behind * length);
        }
        if self.pending_receipts.len() >= self.limits.pending_receipts_max {
            return Expect::Busy(length);
        }
        let (held, bytes) = self
            .held
            .get(&e)
            .map_or((0, 0), |(set, bytes)| (set.len(), *bytes));
        if self
            .held
            .get(&e)
            .is_some_and(|(set, _)| set.contains(commitment))
        {
            return Expect::Duplicate;
        }
        if held >= self.limits.envelopes_per_batch_max
            || bytes + len > self.limits.bytes_per_batch_max
        {
            return Expect::Full;
        }
        Expect::Ok
    }

    /// Submits `bytes`, checks the answer against the model when `e` is
    /// known (a well-shaped envelope), and records what was accepted.
    fn submit(&mut self, bytes: Vec<u8>, e: Option<BatchId>, sent: Sent) -> bool {
        let commitment = Commitment::of(&bytes);
        let expect = e.map(|e| self.expect(e, &commitment, bytes.len()));
        self.next_token += 1;
        let token = self.next_token;
        let lsn = self.seq.next_lsn();
        let len = bytes.len();
        let header_e = (bytes.len() >= 9)
            .then(|| u64::from_le_bytes(bytes[1..9].try_into().expect("eight bytes")));
        let result = self.seq.handle_submit(self.now, SubmitToken(token), bytes);
        if let Some(expect) = expect {
            let got = match &result {
                // A duplicate is receipted again, with no new record.
                Ok(_) if self.seq.next_lsn() == lsn => Expect::Duplicate,
                Ok(_) => Expect::Ok,
                Err(SubmitError::BatchClosed { .. }) => Expect::Closed,
                Err(SubmitError::NotAnnounced { .. }) => Expect::NotAnnounced,
                Err(SubmitError::Busy { retry_after_ms }) => Expect::Busy(*retry_after_ms),
                Err(SubmitError::BatchFull { .. }) => Expect::Full,
                Err(SubmitError::Malformed(rejection)) => {
                    panic!(
                        "a well-shaped envelope for batch {e:?} refused as malformed: {rejection:?}"
                    )
                }
            };
            assert_eq!(
                got, expect,
                "submission to batch {e:?} at {}: {result:?}",
                self.now
            );
        }
        match result {
            Ok(c) if self.seq.next_lsn() == lsn => {
                // The batch holds it already: its receipt again, once the
                // last record handed out is durable.
                assert_eq!(
                    c, commitment,
                    "the commitment returned is not the envelope's"
                );
                let e = header_e.expect("a held envelope has a header");
                assert!(
                    self.held
                        .get(&BatchId(e))
                        .is_some_and(|(set, _)| set.contains(&c)),
                    "a submission without a record for an envelope the batch does not hold"
                );
                self.submitted.insert(token, (BatchId(e), c));
                if lsn - 1 > self.durable {
                    self.pending_receipts.push(lsn - 1);
                }
                true
            }
            Ok(c) => {
                assert_eq!(
                    c, commitment,
                    "the commitment returned is not the envelope's"
                );
                let e = header_e.expect("an accepted envelope has a header");
                assert_eq!(
                    self.seq.next_lsn(),
                    lsn + 1,
                    "an accepted envelope is one record"
                );
                self.submitted.insert(token, (BatchId(e), c));
                self.sent.entry(c).or_insert(sent);
                let (set, held_bytes) = self.held.entry(BatchId(e)).or_default();
                set.insert(c);
                *held_bytes += len;
                self.pending_receipts.push(lsn);
                true
            }
            Err(_) => {
                assert_eq!(self.seq.next_lsn(), lsn, "a refused envelope was journaled");
                false
            }
        }
    }

    fn target_batch(&self, u: &mut Unstructured<'_>) -> ArbResult<BatchId> {
        let open = self.seq.open_batch_at(self.now);
        Ok(match u.int_in_range(0u8..=15)? {
            0..=9 => open,
            10..=13 => open + 1,
            14 => open + self.limits.announce_ahead + u64::from(u.arbitrary::<bool>()?),
            _ => open.saturating_sub(1),
        })
    }

    fn submit_bundle(&mut self, u: &mut Unstructured<'_>, tamper: bool) -> ArbResult<()> {
        if self.seals >= SEALS_MAX {
            return Ok(());
        }
        self.seals += 1;
        let (i, account) = self.account(u)?;
        let e = self.target_batch(u)?;
        let orders = self.arbitrary_orders(u, &account)?;
        self.orders_sent += orders.len();
        let public = self.seq.batch_public_key(e).expect("a batch public key");
        self.nonce += 1;
        let deployment = self.genesis.deployment();
        let envelope = seal_bundle(
            &mut self.rng,
            &self.traders[i],
            &deployment,
            e,
            &public,
            self.nonce,
            &orders,
        )
        .expect("a bundle of 1..=256 non-zero orders seals");
        let mut bytes = envelope.into_bytes();
        if !tamper {
            self.last_sealed = Some((e, bytes.clone()));
            self.submit(bytes, Some(e), Sent::Bundle { account, orders });
            return Ok(());
        }
        let e = match u.int_in_range(0u8..=4)? {
            // Ciphertext or tag: the shape still passes, opening fails.
            0 | 1 => {
                let at = u.int_in_range(41..=bytes.len() - 1)?;
                bytes[at] ^= 1 << u.int_in_range(0u8..=7)?;
                Some(e)
            }
            // Another batch in the header: opened with the wrong key.
            2 => {
                let other = e + 1;
                bytes[1..9].copy_from_slice(&other.to_le_bytes());
                Some(other)
            }
            // R: may no longer decode (so no model for the answer).
            3 => {
                let at = u.int_in_range(9..=40)?;
                bytes[at] ^= 1 << u.int_in_range(0u8..=7)?;
                None
            }
            // Length.
            _ => {
                if u.arbitrary::<bool>()? {
                    bytes.pop();
                } else {
                    bytes.push(0);
                }
                None
            }
        };
        self.submit(bytes, e, Sent::Bad);
        Ok(())
    }

    fn submit_garbage(&mut self, u: &mut Unstructured<'_>) -> ArbResult<()> {
        let len = match u.int_in_range(0u8..=5)? {
            0 => 0,
            1 => 10,
            2 => ENVELOPE_LEN_MIN,
            3 => ENVELOPE_LEN_MAX,
            4 => ENVELOPE_LEN_MAX + 1,
            _ => u.int_in_range(0..=ENVELOPE_LEN_MAX + 64)?,
        };
        let mut bytes = vec![0u8; len];
        let fill = u.bytes(len.min(u.len()))?;
        bytes[..fill.len()].copy_from_slice(fill);
        if len >= 9 && u.arbitrary::<bool>()? {
            // A plausible header: the version and the open batch.
            bytes[0] = VERSION;
            let e = self.seq.open_batch_at(self.now);
            bytes[1..9].copy_from_slice(&e.to_le_bytes());
        }
        self.submit(bytes, None, Sent::Bad);
        Ok(())
    }

    /// The last properly sealed envelope again.
    fn resubmit(&mut self) {
        if let Some((e, bytes)) = self.last_sealed.clone() {
            let c = Commitment::of(&bytes);
            let sent = self.sent.get(&c).cloned().unwrap_or(Sent::Bad);
            if let Sent::Bundle { .. } = sent {
                self.submit(bytes, Some(e), sent);
            }
        }
    }

    fn timeout(&mut self) {
        if let Err(error) = self.seq.handle_timeout(self.now) {
            panic!("handle_timeout at {}: {error}", self.now);
        }
    }

    fn advance(&mut self, dt: u64) {
        self.now += dt;
        if self.seq.poll_timeout().is_some_and(|due| due <= self.now) {
            self.timeout();
        }
    }

    /// Moves every queued journal write to the disk; returns whether there
    /// was any.
    fn write_out(&mut self) -> bool {
        let mut any = false;
        while let Some(w) = self.seq.poll_journal() {
            let expected = self.records.last().map_or(Lsn::FIRST, |r| r.0 + 1);
            assert_eq!(w.lsn, expected, "journal writes out of LSN order");
            self.records.push((w.lsn, w.kind.to_byte(), w.payload));
            any = true;
        }
        any
    }

    fn mark_durable(&mut self, lsn: Lsn) {
        if let Err(error) = self.seq.handle_journal_durable(self.now, lsn) {
            panic!("handle_journal_durable({lsn}): {error}");
        }
        self.durable = self.durable.max(lsn);
        self.pending_receipts.retain(|&at| at > lsn);
        if self
            .checkpoint_pending
            .as_ref()
            .is_some_and(|c| c.lsn <= self.durable + 1)
        {
            let checkpoint = self.checkpoint_pending.take().expect("pending");
            self.checkpoints.push(checkpoint);
        }
    }

    /// The operator takes a checkpoint (between events, as the node does);
    /// it is written once the records below it are durable.
    fn take_checkpoint(&mut self) {
        self.write_out();
        let checkpoint = self.seq.checkpoint();
        let next_lsn = self.records.last().map_or(Lsn::FIRST, |r| r.0 + 1);
        assert_eq!(checkpoint.lsn, next_lsn, "checkpoint LSN");
        assert!(checkpoint.replay_from <= checkpoint.lsn);
        let decoded = Checkpoint::from_bytes(&checkpoint.to_bytes()).expect("a checkpoint decodes");
        assert_eq!(decoded, checkpoint, "checkpoint round trip");
        self.checkpoint_pending = Some(checkpoint);
        let durable = self.durable;
        if durable + 1 >= next_lsn {
            self.mark_durable(durable);
        }
    }

    /// Writes everything out, but reports only part of it durable.
    fn flush_partly(&mut self, fraction: u8) {
        self.write_out();
        let Some(last) = self.records.last().map(|r| r.0) else {
            return;
        };
        if last <= self.durable {
            return;
        }
        let lsn = self.durable + (last - self.durable) * u64::from(fraction) / 4;
        if lsn > self.durable {
            self.mark_durable(lsn);
        }
        self.drain_events();
    }

    /// Carries out everything the sequencer asks until it is idle.
    fn pump(&mut self) {
        for _ in 0..64 {
            if self.seq.poll_timeout().is_some_and(|due| due <= self.now) {
                self.timeout();
            }
            let mut progressed = self.write_out();
            if let Some(last) = self.records.last().map(|r| r.0)
                && last > self.durable
            {
                self.mark_durable(last);
                progressed = true;
            }
            while let Some(job) = self.seq.poll_job() {
                progressed = true;
                self.run_job(job);
            }
            progressed |= self.drain_events();
            if !progressed {
                assert!(self.seq.is_idle(), "nothing to do, but not idle");
                return;
            }
        }
        panic!("the sequencer never became idle");
    }

    fn run_job(&mut self, job: sealbatch::sequencer::OpenJob) {
        let e = job.batch();
        assert!(!job.is_empty(), "an open job with no envelope");
        self.write_out();
        let first_new = self.records.len();
        let before = self.seq.ledger().clone();
        let references = self.seq.references().clone();
        let opened = job.run();
        if let Err(error) = self.seq.handle_opened(self.now, opened) {
            panic!("handle_opened(batch {e}): {error}");
        }
        self.drain_events();
        self.write_out();
        let mut assembler = ResultAssembler::default();
        let mut outcomes = Vec::new();
        for (lsn, kind, payload) in &self.records[first_new..] {
            match SequencerRecord::decode(*kind, payload) {
                Ok(SequencerRecord::ResultPart(part)) => {
                    if let Some(outcome) = assembler.push(part).expect("result parts assemble") {
                        outcomes.push(outcome);
                    }
                }
                Ok(other) => panic!("record {lsn} written while settling: {other:?}"),
                Err(error) => panic!("record {lsn} does not decode: {error}"),
            }
        }
        // Jobs are run in order, so each settles exactly its own batch.
        assert_eq!(
            outcomes.len(),
            1,
            "handle_opened(batch {e}) settled {} batches",
            outcomes.len()
        );
        let outcome = outcomes.pop().expect("one outcome");
        assert_eq!(
            outcome.e, e,
            "handle_opened(batch {e}) settled another batch"
        );
        let after = self.seq.ledger().clone();
        let after_references = self.seq.references().clone();
        check_outcome(
            &self.genesis,
            &self.sent,
            &outcome,
            &before,
            &after,
            &references,
            &after_references,
        );
        self.settled.insert(e, outcome);
    }

    fn drain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.seq.poll_event() {
            any = true;
            match event {
                Event::BatchVoided { e, reason } => {
                    panic!("batch {e} voided: {reason}")
                }
                Event::KeyRequested { seal } => {
                    panic!("batch {}: the embedded custodian asked keypers", seal.e)
                }
                // The driver's clock never goes back across a restart.
                Event::KeyUnavailable { e, reason } => {
                    panic!("batch {e}: the custodian refused its key: {reason}")
                }
                Event::Receipt {
                    token,
                    e,
                    commitment,
                } => {
                    let Some(&(want_e, want_c)) = self.submitted.get(&token.0) else {
                        panic!("a receipt for unknown token {}", token.0);
                    };
                    assert_eq!((e, commitment), (want_e, want_c), "receipt {}", token.0);
                    self.acked.insert((e, commitment));
                }
                Event::BatchCleared { outcome, .. } => {
                    let e = outcome.e;
                    assert!(self.published.insert(e), "batch {e} published twice");
                    let Some(settled) = self.settled.get(&e) else {
                        panic!("batch {e} published but never settled here");
                    };
                    assert_eq!(&*outcome, settled, "batch {e}: published outcome differs");
                }
                Event::BatchSealed { seal, tree } => {
                    assert_eq!(seal.count, tree.count(), "seal of batch {}", seal.e);
                    assert!(seal.count > 0, "batch {} sealed empty", seal.e);
                }
                Event::BatchOpened { e, close_ms, .. } => {
                    assert_eq!(Some(close_ms), self.genesis.schedule.close_ms(e));
                }
                // This driver runs no keyper committee.
                Event::OperationDurable { .. } | Event::CommitteeLog { .. } => {}
            }
        }
        any
    }

    /// A crash: the writes not yet on the disk are lost, and of those written
    /// but not reported durable, all, none or half survive. Then recovery,
    /// from the genesis record or from the newest checkpoint written (with
    /// the journal pruned below its `replay_from`), which must give the state
    /// a full replay gives.
    fn restart(&mut self, keep: u8, from_checkpoint: bool) {
        self.write_out();
        let durable_len = self
            .records
            .iter()
            .take_while(|r| r.0 <= self.durable)
            .count();
        let len = match keep {
            0 => self.records.len(),
            1 => durable_len,
            _ => durable_len + (self.records.len() - durable_len) / 2,
        };
        self.records.truncate(len);
        self.checkpoint_pending = None;
        let next_lsn = self.records.last().map_or(Lsn::FIRST, |r| r.0 + 1);
        self.seq = recover(
            &self.genesis,
            self.limits,
            None,
            self.records.clone(),
            next_lsn,
            self.now,
        );
        if from_checkpoint && let Some(checkpoint) = self.checkpoints.last().cloned() {
            assert!(
                checkpoint.lsn <= next_lsn,
                "a written checkpoint beyond the journal"
            );
            let pruned: Vec<Record> = self
                .records
                .iter()
                .filter(|r| r.0 >= checkpoint.replay_from)
                .cloned()
                .collect();
            let from = recover(
                &self.genesis,
                self.limits,
                Some(checkpoint.clone()),
                pruned,
                next_lsn,
                self.now,
            );
            assert_eq!(
                from.ledger(),
                self.seq.ledger(),
                "ledger from checkpoint {}",
                checkpoint.lsn
            );
            assert_eq!(
                from.references(),
                self.seq.references(),
                "references from checkpoint {}",
                checkpoint.lsn
            );
            assert_eq!(from.next_lsn(), self.seq.next_lsn());
            assert_eq!(from.batches_pending(), self.seq.batches_pending());
            self.seq = from;
        }
        self.durable = next_lsn - 1;
        self.pending_receipts.clear();
        // The model, from what the disk kept.
        self.held.clear();
        self.expected_totals.clear();
        for (_, kind, payload) in &self.records {
            match SequencerRecord::decode(*kind, payload).expect("own records decode") {
                SequencerRecord::Envelope { e, bytes } => {
                    let (set, held) = self.held.entry(e).or_default();
                    set.insert(Commitment::of(&bytes));
                    *held += bytes.len();
                }
                SequencerRecord::Deposit(t) => {
                    *self.expected_totals.entry(t.asset).or_default() += u128::from(t.amount);
                }
                SequencerRecord::UnsignedWithdrawal(t) => {
                    *self.expected_totals.entry(t.asset).or_default() -= u128::from(t.amount);
                }
                SequencerRecord::Withdrawal(w) => {
                    let s = &w.signed.statement;
                    *self.expected_totals.entry(s.asset).or_default() -= u128::from(s.amount);
                }
                _ => {}
            }
        }
        self.timeout();
    }

    fn check_ledger(&self) {
        let ledger = self.seq.ledger();
        let mut sums: BTreeMap<AssetId, u128> = BTreeMap::new();
        for (_, asset, amount) in ledger.iter() {
            assert!(amount > 0, "ledger iter yields a zero balance");
            *sums.entry(asset).or_default() += u128::from(amount);
        }
        for asset in sums.keys().chain(self.expected_totals.keys()) {
            let sum = sums.get(asset).copied().unwrap_or(0);
            assert_eq!(
                sum,
                ledger.total(*asset),
                "asset {asset}: balances vs total"
            );
            assert!(
                sum <= u128::from(u64::MAX),
                "asset {asset}: supply {sum} > u64::MAX"
            );
            assert_eq!(
                sum,
                self.expected_totals.get(asset).copied().unwrap_or(0),
                "asset {asset}: balances vs deposits minus withdrawals"
            );
        }
    }

    fn finish(mut self) {
        self.pump();
        // Close everything that may hold envelopes, clear it, publish it.
        let length = self.genesis.schedule.batch_length_ms;
        self.now = self.now.max(GENESIS_MS) + length * (self.limits.announce_ahead + 3);
        self.timeout();
        self.pump();
        self.check_ledger();
        assert_eq!(
            self.seq.batches_pending(),
            0,
            "batches left after closing all"
        );

        let lsns: Vec<Lsn> = self.records.iter().map(|r| r.0).collect();
        assert!(
            lsns.iter().copied().eq(1..=lsns.len() as u64),
            "journal LSNs"
        );
        let sealed: BTreeSet<BatchId> = self
            .records
            .iter()
            .filter(|r| RecordKind::Seal.is(r.1))
            .filter_map(
                |(_, kind, payload)| match SequencerRecord::decode(*kind, payload) {
                    Ok(SequencerRecord::Seal(seal)) => Some(seal.e),
                    _ => None,
                },
            )
            .collect();
        let mut assembler = ResultAssembler::default();
        let mut journaled: BTreeMap<BatchId, BatchOutcome> = BTreeMap::new();
        for (_, kind, payload) in &self.records {
            if let Ok(SequencerRecord::ResultPart(part)) = SequencerRecord::decode(*kind, payload)
                && let Some(outcome) = assembler.push(part).expect("result parts assemble")
            {
                assert!(
                    journaled.insert(outcome.e, outcome).is_none(),
                    "two results for one batch"
                );
            }
        }
        assert_eq!(
            journaled.keys().copied().collect::<BTreeSet<_>>(),
            sealed,
            "sealed batches vs journaled results"
        );
        for (e, c) in &self.acked {
            let found = journaled
                .get(e)
                .is_some_and(|o| o.envelopes.iter().any(|env| env.commitment == *c));
            assert!(
                found,
                "acknowledged envelope {c:?} of batch {e} is in no result"
            );
        }

        let report = verify_journal_with(self.records.clone(), &self.checkpoints)
            .expect("verify reads the journal");
        assert!(
            report.all_ok(),
            "verify: {:?} {:?}",
            report.batches,
            report.checkpoints
        );
        assert_eq!(
            report.checkpoints.len(),
            self.checkpoints.len(),
            "verify saw every checkpoint"
        );
        assert_eq!(
            report.batches.len(),
            sealed.len(),
            "verify saw every sealed batch"
        );

        let next_lsn = self.records.last().map_or(Lsn::FIRST, |r| r.0 + 1);
        let mut again = recover(
            &self.genesis,
            self.limits,
            None,
            self.records.clone(),
            next_lsn,
            self.now,
        );
        assert!(again.poll_job().is_none(), "recovery found a batch to open");
        assert_eq!(again.batches_pending(), 0);
        assert_eq!(again.ledger(), self.seq.ledger(), "recovered ledger");
        assert_eq!(
            again.references(),
            self.seq.references(),
            "recovered references"
        );
    }
}

/// Trader keys, derived once per process (each is a scalar multiplication).
fn trader_key(seed: [u8; 32]) -> SigningKey {
    static KEYS: OnceLock<Mutex<BTreeMap<[u8; 32], SigningKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
    keys.entry(seed)
        .or_insert_with(|| SigningKey::from_bytes(&seed))
        .clone()
}

/// The embedded custodian, with its public keys (a pure function of the
/// fixed master secret and `e`) derived once per process: every input
/// announces a dozen batches, and the derivations would dominate.
struct CachedCustodian(EmbeddedCustodian);

impl KeyCustodian for CachedCustodian {
    fn public_key(&self, e: BatchId) -> Result<BatchPublicKey, CustodianError> {
        static KEYS: OnceLock<Mutex<BTreeMap<BatchId, BatchPublicKey>>> = OnceLock::new();
        let keys = KEYS.get_or_init(Default::default);
        if let Some(key) = keys.lock().unwrap_or_else(|e| e.into_inner()).get(&e) {
            return Ok(*key);
        }
        let key = self.0.public_key(e)?;
        let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() > 1 << 16 {
            keys.clear();
        }
        keys.insert(e, key);
        Ok(key)
    }

    fn release(
        &mut self,
        seal: &SignedSeal,
        now_ms: u64,
    ) -> Result<ReleasedBatchKey, CustodianError> {
        self.0.release(seal, now_ms)
    }
}

fn recover(
    genesis: &Genesis,
    limits: Limits,
    checkpoint: Option<Checkpoint>,
    records: Vec<Record>,
    next_lsn: Lsn,
    now: u64,
) -> Sequencer {
    let key = SequencerKey::from_seed(&SEQUENCER_SEED);
    let custodian = CachedCustodian(EmbeddedCustodian::new(
        MasterSecret::from_bytes(MASTER),
        key.public_key(),
        genesis.schedule,
    ));
    let journaled = Journaled {
        checkpoint,
        records,
        next_lsn,
    };
    match Sequencer::recover(
        genesis.clone(),
        limits,
        key,
        Box::new(custodian),
        journaled,
        now,
    ) {
        Ok(seq) => seq,
        Err(error) => panic!("recover: {error}"),
    }
}

/// Quote units for `qty` lots at `price`, exactly (`None` beyond 128 bits).
fn notional(m: &MarketConfig, price: Tick, qty: u64) -> Option<u128> {
    (u128::from(price) * u128::from(m.tick_size)).checked_mul(u128::from(qty))
}

fn fee(m: &MarketConfig, notional: u128) -> Option<u128> {
    Some(notional.checked_mul(u128::from(m.fee_bps))? / u128::from(BPS_DENOMINATOR))
}

/// `spec/ledger.md`, "Funding check" steps 1 and 2: the rejection, or each
/// asset's requirement (`None`: beyond 128 bits).
fn requirement(
    markets: &BTreeMap<MarketId, MarketConfig>,
    orders: &[OrderSpec],
) -> Result<BTreeMap<AssetId, Option<u128>>, (u8, u32)> {
    let mut needs: BTreeMap<AssetId, Option<u128>> = BTreeMap::new();
    for (i, o) in orders.iter().enumerate() {
        let Some(m) = markets.get(&o.market) else {
            return Err((status::UNKNOWN_MARKET, i as u32));
        };
        if o.qty == 0 {
            return Err((status::ZERO_QUANTITY, i as u32));
        }
        if o.limit.is_some_and(|l| l < m.band_min || l > m.band_max) {
            return Err((status::OUTSIDE_BAND, i as u32));
        }
        let (asset, amount) = match o.side {
            Side::Buy => {
                let n = notional(m, o.limit.unwrap_or(m.band_max), o.qty);
                (m.quote, n.and_then(|n| n.checked_add(fee(m, n)?)))
            }
            Side::Sell => (m.base, Some(u128::from(o.qty) * u128::from(m.lot_size))),
        };
        let sum = needs.entry(asset).or_insert(Some(0));
        *sum = sum.zip(amount).and_then(|(s, a)| s.checked_add(a));
    }
    Ok(needs)
}

/// One order of a market in the batch, as the clearing model sees it.
struct MOrder {
    side: Side,
    limit: Option<Tick>,
    qty: u64,
    filled: u64,
}

fn accepts(o: &MOrder, p: Tick) -> bool {
    match (o.side, o.limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => p <= l,
        (Side::Sell, Some(l)) => p >= l,
    }
}

/// Checks one settled batch against the models of `spec/ledger.md` and
/// `spec/clearing.md`.
fn check_outcome(
    genesis: &Genesis,
    sent: &BTreeMap<Commitment, Sent>,
    outcome: &BatchOutcome,
    before: &Ledger,
    after: &Ledger,
    references: &BTreeMap<MarketId, Tick>,
    after_references: &BTreeMap<MarketId, Tick>,
) {
    let e = outcome.e;
    let markets = genesis.market_map();
    assert!(
        outcome
            .envelopes
            .windows(2)
            .all(|w| w[0].commitment < w[1].commitment),
        "batch {e}: envelopes not in ascending commitment order"
    );

    // Orders per account, then funding, in commitment order, with a running
    // count and reservation per account (spec/sequencer.md, processing).
    let mut held_orders: BTreeMap<AccountId, u32> = BTreeMap::new();
    let mut reserved: BTreeMap<(AccountId, AssetId), u128> = BTreeMap::new();
    let mut next_order = 0u64;
    // Accepted bundles: envelope index -> (account, orders).
    let mut accepted: BTreeMap<usize, (AccountId, &[OrderSpec])> = BTreeMap::new();
    for (index, env) in outcome.envelopes.iter().enumerate() {
        let Some(what) = sent.get(&env.commitment) else {
            panic!(
                "batch {e}: envelope {:?} was never submitted",
                env.commitment
            );
        };
        let (account, orders) = match what {
            Sent::Bad => {
                assert!(
                    matches!(env.status, EnvelopeStatus::Rejected { code: 1..=31, .. }),
                    "batch {e}: a garbage or tampered envelope got {:?}",
                    env.status
                );
                continue;
            }
            Sent::Bundle { account, orders } => (*account, orders.as_slice()),
        };
        let held = held_orders.entry(account).or_default();
        let expected = if *held + orders.len() as u32 > genesis.orders_per_account_per_batch_max {
            EnvelopeStatus::Rejected {
                code: status::ACCOUNT_ORDER_LIMIT,
                detail: *held,
            }
        } else {
            *held += orders.len() as u32;
            funding_status(
                &markets,
                before,
                &mut reserved,
                &mut next_order,
                account,
                orders,
            )
        };
        if matches!(expected, EnvelopeStatus::Accepted { .. }) {
            accepted.insert(index, (account, orders));
        }
        assert_eq!(
            env.status,
            expected,
            "batch {e}: envelope {index} ({} orders)",
            orders.len()
        );
    }
    check_fills_and_prices(
        genesis,
        &markets,
        outcome,
        &accepted,
        before,
        after,
        references,
        after_references,
    );
}

/// `spec/ledger.md`, "Funding check": the status of one bundle given the
/// reservations of the bundles before it; accepting reserves and numbers
/// its orders.
fn funding_status(
    markets: &BTreeMap<MarketId, MarketConfig>,
    before: &Ledger,
    reserved: &mut BTreeMap<(AccountId, AssetId), u128>,
    next_order: &mut u64,
    account: AccountId,
    orders: &[OrderSpec],
) -> EnvelopeStatus {
    let needs = match requirement(markets, orders) {
        Err((code, detail)) => return EnvelopeStatus::Rejected { code, detail },
        Ok(needs) => needs,
    };
    let too_large = needs
        .iter()
        .find(|(_, n)| n.is_none_or(|n| n > u128::from(u64::MAX)));
    let short = needs.iter().find(|(asset, n)| {
        let free = u128::from(before.balance(&account, **asset))
            - reserved.get(&(account, **asset)).copied().unwrap_or(0);
        n.is_none_or(|n| n > free)
    });
    if let Some((asset, _)) = too_large.or(short) {
        return EnvelopeStatus::Rejected {
            code: status::UNFUNDED,
            detail: asset.0,
        };
    }
    for (asset, n) in &needs {
        *reserved.entry((account, *asset)).or_default() += n.expect("checked");
    }
    let first = *next_order;
    *next_order += orders.len() as u64;
    EnvelopeStatus::Accepted {
        account,
        first_order: sealbatch::types::OrderId(first),
        orders: orders.len() as u16,
    }
}

/// The fills, `spec/clearing.md` per market, and settlement.
#[allow(clippy::too_many_arguments)]
fn check_fills_and_prices(
    genesis: &Genesis,
    markets: &BTreeMap<MarketId, MarketConfig>,
    outcome: &BatchOutcome,
    accepted: &BTreeMap<usize, (AccountId, &[OrderSpec])>,
    before: &Ledger,
    after: &Ledger,
    references: &BTreeMap<MarketId, Tick>,
    after_references: &BTreeMap<MarketId, Tick>,
) {
    let e = outcome.e;
    // Fills by (envelope, index); every fill is an accepted order's.
    let mut fills: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for f in &outcome.fills {
        let (envelope, index) = (f.envelope as usize, usize::from(f.index));
        let Some((_, orders)) = accepted.get(&envelope) else {
            panic!("batch {e}: a fill for envelope {envelope}, not accepted");
        };
        let Some(order) = orders.get(index) else {
            panic!("batch {e}: a fill for order {index} of envelope {envelope}");
        };
        assert_eq!(
            (f.market, f.side),
            (order.market, order.side),
            "batch {e}: fill {f:?}"
        );
        assert!(
            f.filled >= 1 && f.filled <= order.qty,
            "batch {e}: fill {f:?} of {order:?}"
        );
        assert!(
            fills.insert((envelope, index), f.filled).is_none(),
            "batch {e}: fill twice"
        );
    }

    // Clearing, per market.
    assert!(
        outcome
            .markets
            .iter()
            .map(|m| m.market)
            .eq(markets.keys().copied()),
        "batch {e}: outcome markets"
    );
    let mut prices: BTreeMap<MarketId, Tick> = BTreeMap::new();
    for mo in &outcome.markets {
        let m = &markets[&mo.market];
        let reference = references[&m.id];
        let orders: Vec<MOrder> = accepted
            .iter()
            .flat_map(|(&env, (_, orders))| {
                orders
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.market == m.id)
                    .map(move |(i, o)| (env, i, o))
            })
            .map(|(env, i, o)| MOrder {
                side: o.side,
                limit: o.limit,
                qty: o.qty,
                filled: fills.get(&(env, i)).copied().unwrap_or(0),
            })
            .collect();
        let price = check_market(e, m, reference, &orders, mo.price, mo.volume, mo.imbalance);
        let expected_reference = price.unwrap_or(reference);
        assert_eq!(
            after_references.get(&m.id),
            Some(&expected_reference),
            "batch {e}: market {} reference after the batch",
            m.id
        );
        if let Some(p) = price {
            prices.insert(m.id, p);
        }
    }

    // Settlement.
    let mut deltas: BTreeMap<(AccountId, AssetId), i128> = BTreeMap::new();
    for f in &outcome.fills {
        let (account, _) = accepted[&(f.envelope as usize)];
        let m = &markets[&f.market];
        let p = prices[&f.market];
        let n = notional(m, p, f.filled).expect("a funded fill's notional fits");
        let fee = fee(m, n).expect("a fee fits");
        let (n, fee) = (
            i128::try_from(n).expect("notional fits i128"),
            i128::try_from(fee).expect("fee fits i128"),
        );
        let base = i128::from(f.filled) * i128::from(m.lot_size);
        let (quote_delta, base_delta) = match f.side {
            Side::Buy => (-(n + fee), base),
            Side::Sell => (n - fee, -base),
        };
        *deltas.entry((account, m.quote)).or_default() += quote_delta;
        *deltas.entry((account, m.base)).or_default() += base_delta;
        *deltas.entry((genesis.fee_account, m.quote)).or_default() += fee;
    }
    let keys: BTreeSet<(AccountId, AssetId)> = before
        .iter()
        .chain(after.iter())
        .map(|(a, s, _)| (a, s))
        .chain(deltas.keys().copied())
        .collect();
    for (account, asset) in keys {
        let was = i128::from(before.balance(&account, asset));
        let is = i128::from(after.balance(&account, asset));
        let delta = deltas.get(&(account, asset)).copied().unwrap_or(0);
        assert_eq!(
            is,
            was + delta,
            "batch {e}: settlement of account {account} asset {asset}"
        );
    }
}

/// `spec/clearing.md` §3–§6 for one market; returns the clearing price.
fn check_market(
    e: BatchId,
    m: &MarketConfig,
    reference: Tick,
    orders: &[MOrder],
    price: Option<Tick>,
    volume: u64,
    imbalance: i128,
) -> Option<Tick> {
    let id = m.id;
    // D(p) and S(p) by sorted limits and prefix sums.
    let mut buys: Vec<(Tick, u128)> = Vec::new();
    let mut sells: Vec<(Tick, u128)> = Vec::new();
    let (mut market_buys, mut market_sells) = (0u128, 0u128);
    for o in orders {
        match (o.side, o.limit) {
            (Side::Buy, None) => market_buys += u128::from(o.qty),
            (Side::Sell, None) => market_sells += u128::from(o.qty),
            (Side::Buy, Some(l)) => buys.push((l, u128::from(o.qty))),
            (Side::Sell, Some(l)) => sells.push((l, u128::from(o.qty))),
        }
    }
    buys.sort_unstable();
    sells.sort_unstable();
    // suffix[i] = sum of buys[i..]; prefix[i] = sum of sells[..i].
    let mut suffix = vec![0u128; buys.len() + 1];
    for i in (0..buys.len()).rev() {
        suffix[i] = suffix[i + 1] + buys[i].1;
    }
    let mut prefix = vec![0u128; sells.len() + 1];
    for i in 0..sells.len() {
        prefix[i + 1] = prefix[i] + sells[i].1;
    }
    let demand = |p: Tick| market_buys + suffix[buys.partition_point(|b| b.0 < p)];
    let supply = |p: Tick| market_sells + prefix[sells.partition_point(|s| s.0 <= p)];
    let at = |p: Tick| {
        let (d, s) = (demand(p), supply(p));
        (d.min(s), d as i128 - s as i128)
    };
    let candidates: BTreeSet<Tick> = orders
        .iter()
        .filter_map(|o| o.limit)
        .chain([reference])
        .collect();
    let best = candidates.iter().map(|&p| at(p).0).max().unwrap_or(0);
    if best == 0 {
        assert_eq!(
            (price, volume, imbalance),
            (None, 0, at(reference).1),
            "batch {e} market {id}: nothing crosses"
        );
        assert!(
            orders.iter().all(|o| o.filled == 0),
            "batch {e} market {id}: a fill without a price"
        );
        return None;
    }
    let c1: Vec<(Tick, i128)> = candidates
        .iter()
        .map(|&p| (p, at(p)))
        .filter(|(_, (v, _))| *v == best)
        .map(|(p, (_, i))| (p, i))
        .collect();
    let least = c1
        .iter()
        .map(|(_, i)| i.unsigned_abs())
        .min()
        .expect("C1 is not empty");
    let c2: Vec<(Tick, i128)> = c1
        .into_iter()
        .filter(|(_, i)| i.unsigned_abs() == least)
        .collect();
    let (lo, hi) = (c2[0].0, c2[c2.len() - 1].0);
    let expected_price = if c2.iter().all(|(_, i)| *i > 0) {
        hi
    } else if c2.iter().all(|(_, i)| *i < 0) {
        lo
    } else {
        reference.clamp(lo, hi)
    };
    let (v, i) = at(expected_price);
    assert!(
        v <= u128::from(u64::MAX),
        "batch {e} market {id}: funded volume {v} beyond u64"
    );
    assert_eq!(
        (price, u128::from(volume), imbalance),
        (Some(expected_price), v, i),
        "batch {e} market {id}: price, volume, imbalance ({} orders, reference {reference})",
        orders.len()
    );
    assert!((m.band_min..=m.band_max).contains(&expected_price));
    let p = expected_price;

    // Allocation (§5).
    let (d, s) = (demand(p), supply(p));
    let long = if d > s {
        Some(Side::Buy)
    } else if d < s {
        Some(Side::Sell)
    } else {
        None
    };
    // Levels of the long side: market orders, then limits best first.
    let mut levels: BTreeMap<(u8, u64), Vec<&MOrder>> = BTreeMap::new();
    for o in orders {
        if !accepts(o, p) {
            assert_eq!(
                o.filled, 0,
                "batch {e} market {id}: an order that refuses {p} filled"
            );
            continue;
        }
        if Some(o.side) != long {
            assert_eq!(
                o.filled, o.qty,
                "batch {e} market {id}: a short-side order not filled"
            );
            continue;
        }
        let rank = match (o.side, o.limit) {
            (_, None) => (0, 0),
            (Side::Buy, Some(l)) => (1, u64::MAX - l.get()),
            (Side::Sell, Some(l)) => (1, l.get()),
        };
        levels.entry(rank).or_default().push(o);
    }
    let mut left = v;
    for level in levels.values() {
        let q: u128 = level.iter().map(|o| u128::from(o.qty)).sum();
        if q <= left {
            for o in level {
                assert_eq!(
                    o.filled, o.qty,
                    "batch {e} market {id}: a level within volume"
                );
            }
            left -= q;
            continue;
        }
        let r = left;
        let mut sum = 0u128;
        for o in level {
            let base = u128::from(o.qty) * r / q;
            let got = u128::from(o.filled);
            assert!(
                got == base || got == base + 1,
                "batch {e} market {id}: marginal fill {got}, pro rata {base} of {r}/{q}"
            );
            sum += got;
        }
        assert_eq!(sum, r, "batch {e} market {id}: marginal level total");
        // Levels after the marginal one get nothing: the long side's total
        // is checked below.
        break;
    }
    let filled_long: u128 = orders
        .iter()
        .filter(|o| Some(o.side) == long)
        .map(|o| u128::from(o.filled))
        .sum();
    if long.is_some() {
        assert_eq!(filled_long, v, "batch {e} market {id}: long side filled");
    }
    Some(p)
}

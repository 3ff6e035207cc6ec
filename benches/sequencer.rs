//! Batch turnaround: from the close of a batch to its result durable in the
//! journal — seal, journal fsync, key release, parallel opening, funding,
//! clearing, settlement, result fsync — for 10^3, 10^4 and 10^5 envelopes of
//! 16 orders across 8 markets, on a real journal in a temporary directory.
//!
//! Run: `cargo bench --bench sequencer` (add `-- 10000` to pick one size).

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sealbatch::envelope::{
    BatchSchedule, EmbeddedCustodian, KeyCustodian, MasterSecret, SequencerKey, seal_bundle,
};
use sealbatch::journal::{FsStorage, Journal, JournalConfig};
use sealbatch::market::{AccountId, AssetId, MarketConfig};
use sealbatch::order::OrderSpec;
use sealbatch::sequencer::{Event, Genesis, Journaled, Limits, OpToken, Sequencer, SubmitToken};
use sealbatch::types::{BatchId, MarketId, Side, Tick};

const GENESIS_MS: u64 = 1_700_000_000_000;
const MARKETS: u32 = 8;
const ORDERS_PER_BUNDLE: usize = 16;
const TRADERS: usize = 1_000;

fn genesis(key: &SequencerKey) -> Genesis {
    Genesis {
        sequencer: key.public_key(),
        schedule: BatchSchedule {
            genesis_ms: GENESIS_MS,
            batch_length_ms: 100,
        },
        fee_account: AccountId([0xfe; 32]),
        orders_per_account_per_batch_max:
            sealbatch::sequencer::ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT,
        markets: (0..MARKETS)
            .map(|m| MarketConfig {
                id: MarketId(m),
                base: AssetId(m + 1),
                quote: AssetId(0),
                tick_size: 1,
                lot_size: 1,
                band_min: Tick(1),
                band_max: Tick(20_000),
                initial_price: Tick(10_000),
                fee_bps: 5,
            })
            .collect(),
    }
}

struct Setup {
    master: [u8; 32],
    key_seed: [u8; 32],
    traders: Vec<SigningKey>,
    envelopes: Vec<Vec<u8>>,
}

fn setup(count: usize) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(count as u64);
    let mut master = [0; 32];
    rng.fill_bytes(&mut master);
    let key_seed = [9; 32];
    let key = SequencerKey::from_seed(&key_seed);
    let g = genesis(&key);
    let custodian = EmbeddedCustodian::new(
        MasterSecret::from_bytes(master),
        key.public_key(),
        g.schedule,
    );
    let public = custodian.public_key(BatchId(0)).expect("key of batch 0");
    let traders: Vec<SigningKey> = (0..TRADERS)
        .map(|_| sealbatch::envelope::generate_account_key(&mut rng))
        .collect();
    let envelopes = (0..count)
        .map(|i| {
            let orders: Vec<OrderSpec> = (0..ORDERS_PER_BUNDLE)
                .map(|j| {
                    let roll = rng.next_u64();
                    OrderSpec {
                        market: MarketId((roll % u64::from(MARKETS)) as u32),
                        side: if roll & 8 == 0 { Side::Buy } else { Side::Sell },
                        limit: Some(Tick(9_900) + (roll >> 8) % 200),
                        qty: 1 + (roll >> 20) % 100,
                        client_order_id: j as u64,
                    }
                })
                .collect();
            seal_bundle(
                &mut rng,
                &traders[i % TRADERS],
                &g.deployment(),
                BatchId(0),
                &public,
                i as u64,
                &orders,
            )
            .expect("seals")
            .into_bytes()
        })
        .collect();
    Setup {
        master,
        key_seed,
        traders,
        envelopes,
    }
}

/// A sequencer with batch 0 full and every trader funded, journaled and
/// synced in `dir`; returns it with its journal.
fn filled(setup: &Setup, dir: &Path) -> (Sequencer, Journal<FsStorage>) {
    let _ = std::fs::remove_dir_all(dir);
    let storage = FsStorage::new(dir).expect("temp dir");
    let (mut journal, _) = Journal::open(storage, JournalConfig::default()).expect("journal");
    let key = SequencerKey::from_seed(&setup.key_seed);
    let g = genesis(&key);
    let custodian = EmbeddedCustodian::new(
        MasterSecret::from_bytes(setup.master),
        key.public_key(),
        g.schedule,
    );
    let mut sequencer = Sequencer::recover(
        g,
        Limits::default(),
        key,
        Box::new(custodian),
        Journaled {
            checkpoint: None,
            records: Vec::new(),
            next_lsn: journal.next_lsn(),
        },
        GENESIS_MS,
    )
    .expect("sequencer");
    for (i, trader) in setup.traders.iter().enumerate() {
        let account = AccountId(trader.verifying_key().to_bytes());
        for asset in 0..=MARKETS {
            sequencer
                // Every asset's total stays within the ledger's supply limit.
                .handle_deposit(
                    OpToken(i as u64),
                    account,
                    AssetId(asset),
                    u64::MAX / TRADERS as u64,
                )
                .expect("deposit");
        }
    }
    for (i, envelope) in setup.envelopes.iter().enumerate() {
        sequencer
            .handle_submit(GENESIS_MS + 1, SubmitToken(i as u64), envelope.clone())
            .expect("accepted");
    }
    drain(&mut sequencer, &mut journal, GENESIS_MS + 1);
    (sequencer, journal)
}

/// Moves journal writes, fsyncs, jobs and events until nothing is left;
/// returns how many batches were published as cleared.
fn drain(sequencer: &mut Sequencer, journal: &mut Journal<FsStorage>, now: u64) -> usize {
    let mut cleared = 0;
    loop {
        let mut progress = false;
        while let Some(write) = sequencer.poll_journal() {
            progress = true;
            journal
                .append(write.kind.to_byte(), &write.payload)
                .expect("append");
        }
        if journal.has_unsynced() {
            progress = true;
            let durable = journal.sync().expect("sync");
            sequencer
                .handle_journal_durable(now, durable)
                .expect("durable");
        }
        while let Some(job) = sequencer.poll_job() {
            progress = true;
            let opened = job.run();
            sequencer.handle_opened(now, opened).expect("processes");
        }
        while let Some(event) = sequencer.poll_event() {
            if matches!(event, Event::BatchCleared { .. }) {
                cleared += 1;
            }
        }
        if !progress {
            return cleared;
        }
    }
}

fn turnaround(c: &mut Criterion) {
    let sizes: Vec<usize> = match std::env::args().skip(1).find_map(|a| a.parse().ok()) {
        Some(size) => vec![size],
        None => vec![1_000, 10_000, 100_000],
    };
    let mut group = c.benchmark_group("turnaround");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for count in sizes {
        let setup = setup(count);
        // Removed when `temp` is dropped; `filled` recreates `dir` in it.
        let temp = tempfile::Builder::new()
            .prefix(&format!("sealbatch-bench-turnaround-{count}-"))
            .tempdir()
            .expect("a temporary directory");
        let dir = temp.path().join("journal");
        group.throughput(Throughput::Elements((count * ORDERS_PER_BUNDLE) as u64));
        group.bench_with_input(BenchmarkId::new("envelopes_x16", count), &count, |b, _| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let (mut sequencer, mut journal) = filled(&setup, &dir);
                    let close = GENESIS_MS + 100;
                    let start = Instant::now();
                    sequencer.handle_timeout(close).expect("close");
                    let cleared = drain(&mut sequencer, &mut journal, close);
                    total += start.elapsed();
                    assert_eq!(cleared, 1, "batch 0 cleared");
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, turnaround);
criterion_main!(benches);

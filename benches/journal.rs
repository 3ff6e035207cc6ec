//! Journal append throughput with group commit: envelope-sized (1 KiB)
//! records, `n` appends per `fdatasync`, on the real file system in a
//! temporary directory; the same through the writer thread, which forms its
//! groups itself; and recovery (open and read back) of 10,000 such records.
//!
//! ```sh
//! cargo bench --bench journal
//! ```

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use sealbatch::journal::{Journal, JournalConfig, JournalWriter, WriterEvent};

/// Kind bytes, as the sequencer assigns them (the journal does not interpret
/// them; `spec/journal.md`).
const ENVELOPE: u8 = 1;

const ENVELOPE_BYTES: usize = 1024;

/// A fresh directory with an unpredictable name, removed on drop.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sealbatch-bench-{name}-"))
        .tempdir()
        .unwrap()
}

fn envelope() -> Vec<u8> {
    // Ciphertext-like bytes.
    let mut payload = vec![0u8; ENVELOPE_BYTES];
    ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut payload);
    payload
}

fn group_commit(c: &mut Criterion) {
    let payload = envelope();
    let mut group = c.benchmark_group("journal_group_commit_1KiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for records_per_sync in [1usize, 64, 512] {
        let dir = temp_dir(&format!("group{records_per_sync}"));
        let (mut journal, _) = Journal::open_dir(&dir, JournalConfig::default()).unwrap();
        group.throughput(Throughput::Elements(records_per_sync as u64));
        group.bench_with_input(
            BenchmarkId::new("records_per_fsync", records_per_sync),
            &records_per_sync,
            |b, &records| {
                b.iter(|| {
                    for _ in 0..records {
                        journal.append(ENVELOPE, &payload).unwrap();
                    }
                    journal.sync().unwrap()
                });
            },
        );
        drop(journal);
    }
    group.finish();
}

fn writer_thread(c: &mut Criterion) {
    const RECORDS: u64 = 4096;
    let payload = envelope();
    let mut group = c.benchmark_group("journal_writer_thread_1KiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(RECORDS));
    let dir = temp_dir("writer");
    let (journal, _) = Journal::open_dir(&dir, JournalConfig::default()).unwrap();
    let mut writer = JournalWriter::spawn(journal, false).unwrap();
    group.bench_function(BenchmarkId::new("records", RECORDS), |b| {
        b.iter(|| {
            let mut last = sealbatch::journal::Lsn::NONE;
            for _ in 0..RECORDS {
                last = writer.append(ENVELOPE, payload.clone()).unwrap();
            }
            loop {
                match writer.wait_event() {
                    Some(WriterEvent::Durable { lsn, .. }) if lsn >= last => break lsn,
                    Some(WriterEvent::Durable { .. }) => {}
                    other => panic!("writer failed: {other:?}"),
                }
            }
        });
    });
    group.finish();
    drop(writer.close().unwrap());
}

fn recovery(c: &mut Criterion) {
    const RECORDS: u64 = 10_000;
    let payload = envelope();
    let dir = temp_dir("recovery");
    let (mut journal, _) = Journal::open_dir(&dir, JournalConfig::default()).unwrap();
    for _ in 0..RECORDS {
        journal.append(ENVELOPE, &payload).unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    let mut group = c.benchmark_group("journal_recovery_1KiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(RECORDS));
    group.bench_function(BenchmarkId::new("records", RECORDS), |b| {
        b.iter(|| {
            let (journal, recovery) = Journal::open_dir(&dir, JournalConfig::default()).unwrap();
            assert_eq!(recovery.records.len() as u64, RECORDS);
            journal.next_lsn()
        });
    });
    group.finish();
}

criterion_group!(benches, group_commit, writer_thread, recovery);
criterion_main!(benches);

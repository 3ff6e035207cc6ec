//! Criterion benchmarks of the clearing engine.
//!
//! Every figure times whole `clear_batch` calls on pre-built, id-sorted
//! columns: validation (ids strictly increasing, quantities, band), price
//! discovery, allocation with pro rata and leftover lots, the release-build
//! invariant checks, and building the result. Generating the orders is not
//! timed, nor is dropping the result (freeing tens of megabytes of fills is
//! the caller's business, afterwards): see [`timed`], the same method as
//! `sealbatch bench clearing`. `canonical` adds `canonical_batch` (sorting arbitrary input and
//! detecting duplicate ids) in front.
//!
//! ```sh
//! cargo bench --bench clearing                              # everything
//! cargo bench --bench clearing -- 'one_market/rayon/1000000'   # one figure
//! ```

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealbatch::clearing::{self, MarketInput, synth};
use sealbatch::order::Order;
use sealbatch::types::MarketId;

const SEED: [u8; 32] = [0x5b; 32];

/// Times `iters` calls of `run`, each dropped outside the timing.
fn timed<T>(iters: u64, mut run: impl FnMut() -> T) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let output = black_box(run());
        total += start.elapsed();
        drop(output);
    }
    total
}
const TICKS: u64 = 10_000;

fn markets(count: u32, per_market: usize) -> Vec<MarketInput> {
    let shape = synth::Shape::uniform(per_market, TICKS);
    (0..count)
        .map(|m| synth::market(MarketId(m), &shape, u64::from(m) << 32, 42))
        .collect()
}

fn one_market(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_market");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in [1_000, 10_000, 100_000, 1_000_000, 10_000_000] {
        let batch = markets(1, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("rayon", n), &batch, |b, batch| {
            b.iter_custom(|iters| timed(iters, || clearing::clear_batch(batch, &SEED)))
        });
        group.bench_with_input(BenchmarkId::new("sequential", n), &batch, |b, batch| {
            b.iter_custom(|iters| timed(iters, || clearing::clear_batch_sequential(batch, &SEED)))
        });
    }
    group.finish();
}

fn many_markets(c: &mut Criterion) {
    let mut group = c.benchmark_group("64_markets_x_100000");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let batch = markets(64, 100_000);
    group.throughput(Throughput::Elements(64 * 100_000));
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    group.bench_function("sequential", |b| {
        b.iter_custom(|iters| timed(iters, || clearing::clear_batch_sequential(&batch, &SEED)))
    });
    group.bench_function("rayon_1_thread", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                one.install(|| clearing::clear_batch(&batch, &SEED))
            })
        })
    });
    group.bench_function(
        format!("rayon_{}_threads", rayon::current_num_threads()),
        |b| b.iter_custom(|iters| timed(iters, || clearing::clear_batch(&batch, &SEED))),
    );
    group.finish();
}

fn canonical(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonical");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let batch = markets(1, 1_000_000);
    let configs: Vec<_> = batch.iter().map(|m| m.config).collect();
    let unsorted: Vec<(MarketId, Order)> = batch[0]
        .orders
        .iter()
        .rev()
        .map(|o| (MarketId(0), o))
        .collect();
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("sort_and_clear/1000000", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                let markets = clearing::canonical_batch(&configs, unsorted.iter().copied())?;
                clearing::clear_batch(&markets, &SEED)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, one_market, many_markets, canonical);
criterion_main!(benches);

//! `sealbatch bench clearing`: orders per second of the clearing engine.
//!
//! Each figure is the median wall time of whole `clear_batch` calls on
//! pre-built, id-sorted columns: validation (ids increasing, quantities,
//! band), price discovery, allocation with pro rata and leftover lots, the
//! release-build invariant checks, and building the result. Generating the
//! orders is not timed, nor is dropping the result. The `canonical` rows
//! time `canonical_batch` (sorting arbitrary input, duplicate detection) plus
//! clearing.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;

use crate::clearing::synth::{self, Shape};
use crate::clearing::{self, MarketInput};
use crate::cli::CommandResult;
use crate::order::Order;
use crate::types::MarketId;

/// Options of `sealbatch bench clearing`.
#[derive(Debug, Args)]
pub struct ClearingBenchArgs {
    /// Largest single market to measure (orders); 10^7 needs about 450 MB.
    #[arg(long, default_value_t = 10_000_000)]
    max_orders: usize,
    /// Minimum measured runs per row (more are run until ~1 s is spent).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only the quick rows (up to 10^6 orders, fewer runs).
    #[arg(long)]
    quick: bool,
}

/// Ticks in each benchmark market's band.
const BENCH_TICKS: u64 = 10_000;
/// Time spent per row before stopping (after the minimum runs).
const ROW_BUDGET: Duration = Duration::from_secs(1);
/// Most runs per row.
const ROW_RUNS_MAX: usize = 101;
/// Batch seed of every benchmark.
const BENCH_SEED: [u8; 32] = [0x5b; 32];

/// How a row runs the engine.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Sequential,
    Rayon(usize),
    Canonical,
}

struct Row {
    shape: String,
    mode: Mode,
    orders: usize,
    median: Duration,
    fastest: Duration,
    runs: usize,
}

pub(super) fn run(args: &ClearingBenchArgs) -> CommandResult {
    let threads = rayon::current_num_threads();
    let max_orders = if args.quick {
        args.max_orders.min(1_000_000)
    } else {
        args.max_orders
    };
    let min_runs = if args.quick { 3 } else { args.runs.max(1) };
    let pool1 = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    // (label, markets, orders per market, modes)
    let mut plan: Vec<(String, u32, usize, Vec<Mode>)> = Vec::new();
    let mut n = 1_000;
    while n <= max_orders {
        let label = format!("1 market × 10^{} orders", n.ilog10());
        let mut modes = vec![Mode::Sequential, Mode::Rayon(threads)];
        if n == 1_000_000 {
            modes.push(Mode::Canonical);
        }
        plan.push((label, 1, n, modes));
        n *= 10;
    }
    if max_orders >= 100_000 {
        plan.push((
            "64 markets × 10^5 orders".to_string(),
            64,
            100_000,
            vec![Mode::Sequential, Mode::Rayon(1), Mode::Rayon(threads)],
        ));
    }
    let total: usize = plan.iter().map(|p| p.3.len()).sum();
    let mut rows = Vec::new();
    let mut done = 0;
    for (label, markets, per_market, modes) in &plan {
        let batch = build(*markets, *per_market);
        let orders: usize = batch.iter().map(|m| m.orders.len()).sum();
        for &mode in modes {
            done += 1;
            eprint!("[{done}/{total}] {label}, {} ...", mode_name(mode));
            let _ = std::io::stderr().flush();
            let (median, fastest, runs) = measure(&batch, mode, min_runs, &pool1)?;
            eprintln!(" {:.3} ms", median.as_secs_f64() * 1e3);
            rows.push(Row {
                shape: label.clone(),
                mode,
                orders,
                median,
                fastest,
                runs,
            });
        }
    }
    print_table(&rows, threads);
    Ok(())
}

/// `markets` synthetic markets of `per_market` orders each, ids unique.
fn build(markets: u32, per_market: usize) -> Vec<MarketInput> {
    let shape = Shape::uniform(per_market, BENCH_TICKS);
    (0..markets)
        .map(|m| synth::market(MarketId(m), &shape, u64::from(m) << 32, 42))
        .collect()
}

fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::Sequential => "sequential".to_string(),
        Mode::Rayon(t) => format!("rayon {t} thread{}", if t == 1 { "" } else { "s" }),
        Mode::Canonical => "canonical (sort + clear)".to_string(),
    }
}

/// Runs once to warm up, then at least `min_runs` times and until
/// [`ROW_BUDGET`] is spent; returns the median, the fastest run and the run
/// count.
fn measure(
    batch: &[MarketInput],
    mode: Mode,
    min_runs: usize,
    pool1: &rayon::ThreadPool,
) -> Result<(Duration, Duration, usize), Box<dyn std::error::Error + Send + Sync>> {
    // Canonical input: the same orders, flattened and reversed (unsorted).
    let flat: Vec<(MarketId, Order)> = match mode {
        Mode::Canonical => batch
            .iter()
            .flat_map(|m| m.orders.iter().map(move |o| (m.config.market, o)))
            .rev()
            .collect(),
        _ => Vec::new(),
    };
    let configs: Vec<_> = batch.iter().map(|m| m.config).collect();
    let once = || -> Result<Duration, clearing::ClearingError> {
        let start = Instant::now();
        let result = match mode {
            Mode::Sequential => clearing::clear_batch_sequential(batch, &BENCH_SEED)?,
            Mode::Rayon(1) => pool1.install(|| clearing::clear_batch(batch, &BENCH_SEED))?,
            Mode::Rayon(_) => clearing::clear_batch(batch, &BENCH_SEED)?,
            Mode::Canonical => {
                let markets = clearing::canonical_batch(&configs, flat.iter().copied())?;
                clearing::clear_batch(&markets, &BENCH_SEED)?
            }
        };
        let elapsed = start.elapsed();
        std::hint::black_box(&result);
        drop(result);
        Ok(elapsed)
    };
    once()?;
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < min_runs || (started.elapsed() < ROW_BUDGET && times.len() < ROW_RUNS_MAX) {
        times.push(once()?);
    }
    times.sort_unstable();
    Ok((times[times.len() / 2], times[0], times.len()))
}

fn print_table(rows: &[Row], threads: usize) {
    println!();
    println!(
        "clearing throughput: {threads} rayon threads, {BENCH_TICKS} ticks per market; \
         M orders/s from the median run (best run in brackets)"
    );
    println!(
        "{:<26} {:<26} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5}",
        "shape", "mode", "orders", "median ms", "best ms", "M orders/s", "(best)", "runs"
    );
    let rate = |orders: usize, time: Duration| {
        let secs = time.as_secs_f64();
        if secs > 0.0 {
            orders as f64 / secs / 1e6
        } else {
            f64::INFINITY
        }
    };
    for row in rows {
        println!(
            "{:<26} {:<26} {:>10} {:>10.3} {:>10.3} {:>10.1} {:>10} {:>5}",
            row.shape,
            mode_name(row.mode),
            row.orders,
            row.median.as_secs_f64() * 1e3,
            row.fastest.as_secs_f64() * 1e3,
            rate(row.orders, row.median),
            format!("({:.1})", rate(row.orders, row.fastest)),
            row.runs
        );
    }
    if let Some(peak) = peak_rss_kib() {
        println!("peak resident memory: {:.0} MiB", peak as f64 / 1024.0);
    }
}

/// The process's peak resident set (`VmHWM`), on Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

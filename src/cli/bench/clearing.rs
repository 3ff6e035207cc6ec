//! `sealbatch bench clearing`: orders per second of the clearing engine, on
//! synthetic order flow of named shapes or on a real batch, on rayon pools
//! of chosen sizes; a table, and optionally JSON, a comparison with a saved
//! run and an SVG chart.
//!
//! Each figure is the median wall time of whole `clear_batch` calls on
//! pre-built, id-sorted columns ([`report::INCLUDES`]); generating the
//! orders, building the columns and dropping the result are not timed
//! ([`report::EXCLUDES`]), and one warm-up run is not counted. Each row
//! samples the machine's CPU counters before and after and is flagged
//! `busy` when other processes or the hypervisor took a visible share.

use crate::codec::Decode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use super::report::{self, CpuSample, Report, Row, Verdict};
use super::svg::{self, shorten};
use crate::clearing::synth::Flow;
use crate::clearing::{self, MarketInput, OrderColumns};
use crate::cli::CommandResult;
use crate::order::Order;
use crate::types::OrderId;

/// Options of `sealbatch bench clearing`.
#[derive(Debug, Args)]
pub struct ClearingBenchArgs {
    /// Rayon pool sizes to run every row on, e.g. `1,2,4,8`, or `max` (the
    /// machine's logical CPUs); the table shows each size's speed-up over 1
    /// thread when 1 is among them.
    #[arg(long, default_value = "1,max", value_name = "LIST")]
    threads: String,
    /// An order flow to clear; repeatable. `NAME[:KEY=VALUE,…]` with names
    /// `uniform`, `normal`, `laplace` (`width=` ticks), `market-heavy`
    /// (`share=` market orders per 1000), `thin-wide` (10^12 ticks: the sort
    /// fallback), `bundles` (`size=` orders per bundle, ids in commitment
    /// order as the sequencer numbers them), and for all `markets=`,
    /// `ticks=`, `seed=`. Default: `uniform` and `uniform:markets=64`.
    #[arg(long = "shape", value_name = "FLOW")]
    shapes: Vec<String>,
    /// Orders per batch, e.g. `1e3,1e5,2500000`; default the powers of ten
    /// from 10^3 to `--max-orders`.
    #[arg(long, value_name = "LIST")]
    orders: Option<String>,
    /// Largest batch of the default sizes (orders); 10^7 needs about 450 MB.
    #[arg(long, default_value_t = 10_000_000)]
    max_orders: usize,
    /// Clear a real batch instead: the CSV of `sealbatch clear`
    /// (`id,market,side,price,qty`) or a transcript written by `sealbatch
    /// export`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["shapes", "orders"])]
    input: Option<PathBuf>,
    /// With `--input`: the batch replicated this many times, each copy with
    /// fresh ids, for larger inputs of the same shape.
    #[arg(long, default_value_t = 1, value_name = "K")]
    scale: usize,
    /// Minimum measured runs per row (more are run until ~1 s is spent).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only the quick rows (up to 10^6 orders, fewer runs).
    #[arg(long)]
    quick: bool,
    /// Write every row, the machine, the revision and the command line as
    /// JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Compare with a saved `--json` report: each row's ratio and whether
    /// it is faster, slower or within the noise of the two runs.
    #[arg(long, value_name = "OLD.json")]
    compare: Option<PathBuf>,
    /// Draw orders/s against orders per batch, one line per thread count.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Testing aid: adds this many microseconds of busy waiting after every
    /// timed clearing (to check that `--compare` calls it slower).
    #[arg(long, default_value_t = 0, hide = true)]
    inject_delay_us: u64,
}

/// Time spent per row before stopping (after the minimum runs).
const ROW_BUDGET: Duration = Duration::from_secs(1);
/// Most runs per row.
const ROW_RUNS_MAX: usize = 101;
/// Most orders in one benchmark batch (about 25 GB of columns).
const ORDERS_MAX: usize = 1 << 30;
/// Tie-break seed of the synthetic batches.
const BENCH_SEED: [u8; 32] = [0x5b; 32];

/// A batch to clear and what to call it.
struct Workload {
    shape: String,
    markets: Vec<MarketInput>,
    seed: [u8; 32],
}

pub(super) fn run(args: &ClearingBenchArgs) -> CommandResult {
    let started_unix_ms = crate::node::now_ms();
    let threads = parse_threads(&args.threads)?;
    let min_runs = if args.quick { 3 } else { args.runs.max(1) };
    let workloads = workloads(args)?;
    let pools = threads
        .iter()
        .map(|&t| rayon::ThreadPoolBuilder::new().num_threads(t).build())
        .collect::<Result<Vec<_>, _>>()?;
    let total = workloads.len() * threads.len();
    let mut rows = Vec::new();
    let mut done = 0;
    for workload in &workloads {
        let orders: usize = workload.markets.iter().map(|m| m.orders.len()).sum();
        for (&t, pool) in threads.iter().zip(&pools) {
            done += 1;
            eprint!(
                "[{done}/{total}] {}, {orders} orders, {t} thread{} ...",
                workload.shape,
                if t == 1 { "" } else { "s" }
            );
            let row = measure(workload, orders, t, pool, min_runs, args.inject_delay_us)?;
            eprintln!(
                " {:.3} ms{}",
                row.median_ns as f64 / 1e6,
                if row.busy { " (busy)" } else { "" }
            );
            rows.push(row);
        }
    }
    let report = Report {
        schema: report::SCHEMA,
        tool: "sealbatch bench clearing".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_revision: git_revision(),
        command_line: std::env::args().collect(),
        started_unix_ms,
        machine: report::machine(),
        includes: report::INCLUDES.into(),
        excludes: report::EXCLUDES.into(),
        rows,
        peak_rss_kib: report::peak_rss_kib(),
    };
    print_table(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .map_err(|error| format!("{}: {error}", path.display()))?;
        println!("rows written to {}", path.display());
    }
    if let Some(path) = &args.svg {
        let title = format!(
            "sealbatch clearing throughput — {}, {} logical CPUs",
            report.machine.cpu_model, report.machine.logical_cpus
        );
        std::fs::write(path, svg::chart(&report.rows, &title))
            .map_err(|error| format!("{}: {error}", path.display()))?;
        println!("chart written to {}", path.display());
    }
    if let Some(path) = &args.compare {
        let old: Report = serde_json::from_str(
            &std::fs::read_to_string(path)
                .map_err(|error| format!("{}: {error}", path.display()))?,
        )
        .map_err(|error| format!("{}: not a bench clearing report: {error}", path.display()))?;
        print_comparison(&report, &old, path);
    }
    Ok(())
}

/// `1,2,4` or `max` (or a mix): distinct pool sizes, ascending.
fn parse_threads(text: &str) -> Result<Vec<usize>, String> {
    let max = std::thread::available_parallelism().map_or(1, usize::from);
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let t = if part == "max" {
            max
        } else {
            part.parse::<usize>()
                .ok()
                .filter(|t| (1..=1024).contains(t))
                .ok_or_else(|| format!("--threads: {part:?} is not 1 to 1024 or max"))?
        };
        out.push(t);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("--threads: no thread count".into());
    }
    Ok(out)
}

/// `1e3,1e5,2500000`.
fn parse_orders(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let n = match p.split_once(['e', 'E']) {
                Some((m, e)) => {
                    let m: usize = m.parse().map_err(|_| format!("--orders: {p:?}"))?;
                    let e: u32 = e.parse().map_err(|_| format!("--orders: {p:?}"))?;
                    10usize
                        .checked_pow(e)
                        .and_then(|x| x.checked_mul(m))
                        .ok_or_else(|| format!("--orders: {p:?} is too large"))?
                }
                None => p.parse().map_err(|_| format!("--orders: {p:?}"))?,
            };
            if n == 0 || n > ORDERS_MAX {
                return Err(format!("--orders: {p:?} is not 1 to {ORDERS_MAX}"));
            }
            Ok(n)
        })
        .collect()
}

fn workloads(args: &ClearingBenchArgs) -> Result<Vec<Workload>, String> {
    if let Some(path) = &args.input {
        let (markets, seed) = read_input(path)?;
        let orders: usize = markets.iter().map(|m| m.orders.len()).sum();
        if args.scale == 0 || orders.saturating_mul(args.scale) > ORDERS_MAX {
            return Err(format!(
                "--scale {}: the batch of {orders} orders would grow past {ORDERS_MAX} orders",
                args.scale
            ));
        }
        let markets = scaled(markets, args.scale);
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let shape = if args.scale > 1 {
            format!("{name} ×{}", args.scale)
        } else {
            name
        };
        return Ok(vec![Workload {
            shape,
            markets,
            seed,
        }]);
    }
    let max_orders = if args.quick {
        args.max_orders.min(1_000_000)
    } else {
        args.max_orders
    };
    let sizes = match &args.orders {
        Some(list) => parse_orders(list)?,
        None => std::iter::successors(Some(1_000usize), |n| n.checked_mul(10))
            .take_while(|&n| n <= max_orders)
            .collect(),
    };
    let mut flows = args
        .shapes
        .iter()
        .map(|s| Flow::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let default_plan = flows.is_empty();
    if default_plan {
        flows.push(Flow::DEFAULT);
    }
    let mut out = Vec::new();
    for flow in &flows {
        for &orders in &sizes {
            out.push(Workload {
                shape: flow.describe(),
                markets: flow.generate(orders),
                seed: BENCH_SEED,
            });
        }
    }
    if default_plan && args.orders.is_none() && max_orders >= 100_000 * 64 {
        let many = Flow {
            markets: 64,
            ..Flow::DEFAULT
        };
        out.push(Workload {
            shape: many.describe(),
            markets: many.generate(6_400_000),
            seed: BENCH_SEED,
        });
    }
    Ok(out)
}

/// A batch from the `clear` CSV or an exported transcript, and its seed.
fn read_input(path: &Path) -> Result<(Vec<MarketInput>, [u8; 32]), String> {
    let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    if bytes.starts_with(&crate::sequencer::TRANSCRIPT_TAG) {
        let transcript = crate::sequencer::Transcript::from_bytes(&bytes)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        return crate::sequencer::transcript_clearing_input(&transcript)
            .map_err(|error| format!("{}: {error}", path.display()));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{}: neither a transcript nor a CSV", path.display()))?;
    let markets = crate::cli::clear::csv_batch(&text)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok((markets, [0; 32]))
}

/// `k` copies of the batch, each with fresh ids (copy `c` of order `i` gets
/// `c · span + i` where `span` passes every id of the batch).
fn scaled(markets: Vec<MarketInput>, k: usize) -> Vec<MarketInput> {
    if k <= 1 {
        return markets;
    }
    let span = markets
        .iter()
        .flat_map(|m| m.orders.ids().iter().map(|id| id.0))
        .max()
        .map_or(1, |max| max.saturating_add(1));
    markets
        .into_iter()
        .map(|m| {
            let mut orders = OrderColumns::with_capacity(m.orders.len() * k);
            for copy in 0..k as u64 {
                for o in m.orders.iter() {
                    orders.push(Order {
                        id: OrderId(copy.saturating_mul(span).saturating_add(o.id.0)),
                        ..o
                    });
                }
            }
            MarketInput {
                config: m.config,
                orders,
            }
        })
        .collect()
}

/// One warm-up run, then at least `min_runs` and until [`ROW_BUDGET`] is
/// spent; the CPU counters around it.
fn measure(
    workload: &Workload,
    orders: usize,
    threads: usize,
    pool: &rayon::ThreadPool,
    min_runs: usize,
    delay_us: u64,
) -> Result<Row, Box<dyn std::error::Error + Send + Sync>> {
    let once = || -> Result<Duration, clearing::ClearingError> {
        let start = Instant::now();
        let result = pool.install(|| clearing::clear_batch(&workload.markets, &workload.seed))?;
        if delay_us > 0 {
            let until = Instant::now() + Duration::from_micros(delay_us);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let elapsed = start.elapsed();
        std::hint::black_box(&result);
        drop(result);
        Ok(elapsed)
    };
    once()?;
    let load_before = report::load_average();
    let before = CpuSample::now();
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < min_runs || (started.elapsed() < ROW_BUDGET && times.len() < ROW_RUNS_MAX) {
        times.push(once()?);
    }
    let (others_share, steal_share) = before.shares(&CpuSample::now());
    times.sort_unstable();
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let median = times[times.len() / 2];
    Ok(Row {
        shape: workload.shape.clone(),
        markets: workload.markets.len(),
        orders,
        threads,
        runs: times.len(),
        median_ns: ns(median),
        min_ns: ns(times[0]),
        max_ns: ns(times[times.len() - 1]),
        p25_ns: ns(times[times.len() / 4]),
        p75_ns: ns(times[(times.len() * 3) / 4]),
        orders_per_s: orders as f64 / median.as_secs_f64().max(1e-12),
        others_share,
        steal_share,
        load_before,
        load_after: report::load_average(),
        busy: others_share > 0.05 || steal_share > 0.02,
    })
}

fn print_table(report: &Report) {
    let m = &report.machine;
    println!();
    println!(
        "clearing throughput: {} ({} logical CPUs), revision {}; M orders/s at the median run",
        m.cpu_model, m.logical_cpus, report.git_revision
    );
    println!("each run includes: {}", report::INCLUDES);
    println!(
        "{:<36} {:>9} {:>7} {:>10} {:>10} {:>10} {:>8} {:>8} {:>5}",
        "shape",
        "orders",
        "threads",
        "median ms",
        "min ms",
        "max ms",
        "M ord/s",
        "speed-up",
        "runs"
    );
    for row in &report.rows {
        let one = report
            .rows
            .iter()
            .find(|r| r.shape == row.shape && r.orders == row.orders && r.threads == 1);
        let speedup = one.map_or(String::new(), |one| {
            format!("{:.2}×", row.orders_per_s / one.orders_per_s.max(1e-12))
        });
        println!(
            "{:<36} {:>9} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>8.1} {:>8} {:>5}{}",
            shorten(&row.shape, 36),
            row.orders,
            row.threads,
            row.median_ns as f64 / 1e6,
            row.min_ns as f64 / 1e6,
            row.max_ns as f64 / 1e6,
            row.orders_per_s / 1e6,
            speedup,
            row.runs,
            if row.busy { "  busy" } else { "" }
        );
    }
    if report.rows.iter().any(|r| r.busy) {
        println!(
            "busy: other processes took over 5% (or the hypervisor over 2%) of the CPU time during that row"
        );
    }
    if let Some(peak) = report.peak_rss_kib {
        println!("peak resident memory: {:.0} MiB", peak as f64 / 1024.0);
    }
}

fn print_comparison(new: &Report, old: &Report, path: &Path) {
    let comparisons = report::compare(new, old);
    println!();
    println!(
        "compared with {} (revision {}, {}):",
        path.display(),
        old.git_revision,
        old.machine.cpu_model
    );
    println!(
        "{:<36} {:>9} {:>7} {:>9} {:>9} {:>7} {:>7}  verdict",
        "shape", "orders", "threads", "old M/s", "new M/s", "ratio", "noise"
    );
    for c in &comparisons {
        let verdict = match c.verdict {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::WithinNoise => "within noise",
        };
        println!(
            "{:<36} {:>9} {:>7} {:>9.1} {:>9.1} {:>6.3}× {:>6.1}%  {verdict}",
            shorten(&c.new.shape, 36),
            c.new.orders,
            c.new.threads,
            c.old.orders_per_s / 1e6,
            c.new.orders_per_s / 1e6,
            c.ratio,
            c.noise * 100.0
        );
    }
    if comparisons.is_empty() {
        println!("no row in common (same shape, orders and threads)");
    }
}

/// The git revision of the source tree the binary was built from, read when
/// the report is written (`git rev-parse` in the crate's directory, as
/// recorded at build time), or `unknown` outside a git checkout. Read at
/// run time, not by a build script: a build script watching the git refs
/// relinked the library and every test binary on each commit.
fn git_revision() -> String {
    std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

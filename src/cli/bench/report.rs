//! `bench clearing`'s machine-readable results: the JSON report (every row
//! with its distribution, the machine, the revision and the command line),
//! the comparison with a saved report, and the facts about the machine and
//! its load that make a row trustworthy or not.

use serde::{Deserialize, Serialize};

/// The report's schema version.
pub const SCHEMA: u32 = 1;

/// What every timed run includes.
pub const INCLUDES: &str = "validation (ids, quantities, band), price discovery (histogram ladder or sort), allocation (pro rata and leftover lots), release-build invariant checks, building the result";

/// What no timed run includes.
pub const EXCLUDES: &str =
    "generating the orders, building the id-sorted columns, dropping the result, a warm-up run";

/// A whole run of `bench clearing`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `sealbatch bench clearing`.
    pub tool: String,
    /// The crate version.
    pub version: String,
    /// The git revision the binary was built from (`unknown` outside a
    /// checkout).
    pub git_revision: String,
    /// The command line, as run.
    pub command_line: Vec<String>,
    /// Unix time, in milliseconds, when the run started.
    pub started_unix_ms: u64,
    /// The machine.
    pub machine: Machine,
    /// [`INCLUDES`].
    pub includes: String,
    /// [`EXCLUDES`].
    pub excludes: String,
    /// Every row, in the order run.
    pub rows: Vec<Row>,
    /// Peak resident memory of the process (`VmHWM`), KiB.
    pub peak_rss_kib: Option<u64>,
}

/// The machine a report was made on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Logical CPUs available to the process.
    pub logical_cpus: usize,
    /// Memory, KiB (`/proc/meminfo`).
    pub memory_kib: Option<u64>,
    /// Kernel release.
    pub kernel: String,
}

/// One measured row: one batch on one rayon pool size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What was cleared (a flow's description, or the input file).
    pub shape: String,
    /// Markets in the batch.
    pub markets: usize,
    /// Orders in the batch.
    pub orders: usize,
    /// Rayon threads.
    pub threads: usize,
    /// Timed runs (after one warm-up run).
    pub runs: usize,
    /// Wall time per run, nanoseconds: median, fastest, slowest.
    pub median_ns: u64,
    /// Fastest run.
    pub min_ns: u64,
    /// Slowest run.
    pub max_ns: u64,
    /// First quartile of the runs.
    pub p25_ns: u64,
    /// Third quartile of the runs.
    pub p75_ns: u64,
    /// Orders per second at the median.
    pub orders_per_s: f64,
    /// Share of all CPU time during the row used by other processes (0–1).
    pub others_share: f64,
    /// Share of all CPU time during the row stolen by the hypervisor (0–1).
    pub steal_share: f64,
    /// 1-minute load average before and after the row.
    pub load_before: f64,
    /// After.
    pub load_after: f64,
    /// Whether the machine was busy during the row (others above 5% or
    /// steal above 2% of CPU time): its figure is not a measurement of the
    /// engine alone.
    pub busy: bool,
}

impl Row {
    /// The relative spread of the runs: the interquartile range over the
    /// median (robust to a lone outlier run).
    #[must_use]
    pub fn spread(&self) -> f64 {
        if self.median_ns == 0 {
            return 0.0;
        }
        (self.p75_ns.saturating_sub(self.p25_ns)) as f64 / self.median_ns as f64
    }

    fn key(&self) -> (&str, usize, usize) {
        (self.shape.as_str(), self.orders, self.threads)
    }
}

/// How a row compares with the same row of a saved report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Faster beyond the noise.
    Faster,
    /// Slower beyond the noise.
    Slower,
    /// Within the run-to-run noise of either run.
    WithinNoise,
}

/// The smallest noise band assumed, however tight both runs were.
pub const NOISE_FLOOR: f64 = 0.03;

/// One row's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The row now.
    pub new: Row,
    /// The same row then.
    pub old: Row,
    /// New throughput over old.
    pub ratio: f64,
    /// The noise band: the larger relative interquartile range of the two
    /// runs, at least [`NOISE_FLOOR`].
    pub noise: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// Compares each row of `new` with the row of `old` of the same shape,
/// orders and threads: faster or slower only beyond the noise band both
/// runs' interquartile ranges give (rows only one report has are left
/// out).
#[must_use]
pub fn compare(new: &Report, old: &Report) -> Vec<Comparison> {
    new.rows
        .iter()
        .filter_map(|n| {
            let o = old.rows.iter().find(|o| o.key() == n.key())?;
            let ratio = if o.orders_per_s > 0.0 {
                n.orders_per_s / o.orders_per_s
            } else {
                f64::INFINITY
            };
            let noise = n.spread().max(o.spread()).max(NOISE_FLOOR);
            let verdict = if ratio > 1.0 + noise {
                Verdict::Faster
            } else if ratio < 1.0 / (1.0 + noise) {
                Verdict::Slower
            } else {
                Verdict::WithinNoise
            };
            Some(Comparison {
                new: n.clone(),
                old: o.clone(),
                ratio,
                noise,
                verdict,
            })
        })
        .collect()
}

/// CPU time counters of the whole machine and of this process, in clock
/// ticks, to tell how much of a row's time others used.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    total: u64,
    idle: u64,
    steal: u64,
    own: u64,
}

impl CpuSample {
    /// Reads `/proc/stat` and `/proc/self/stat` (zeros elsewhere).
    #[must_use]
    pub fn now() -> CpuSample {
        let mut sample = CpuSample::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/stat")
            && let Some(line) = stat.lines().find(|l| l.starts_with("cpu "))
        {
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            sample.total = fields.iter().take(8).sum();
            sample.idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
            sample.steal = fields.get(7).copied().unwrap_or(0);
        }
        if let Ok(own) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces).
            let after = own.rsplit(')').next().unwrap_or("");
            // Every field after the state letter is a number (some, like
            // tpgid, may be -1).
            let fields: Vec<u64> = after
                .split_whitespace()
                .skip(1)
                .map(|f| f.parse::<i64>().map_or(0, |v| v.max(0) as u64))
                .collect();
            // utime and stime are fields 14 and 15 of the whole line: 11th
            // and 12th after the state letter.
            sample.own =
                fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
        }
        sample
    }

    /// `(others' share, steal share)` of all CPU time between `self` and
    /// `later`.
    #[must_use]
    pub fn shares(&self, later: &CpuSample) -> (f64, f64) {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return (0.0, 0.0);
        }
        let busy = total.saturating_sub(later.idle.saturating_sub(self.idle));
        let steal = later.steal.saturating_sub(self.steal);
        let own = later.own.saturating_sub(self.own);
        let others = busy.saturating_sub(own).saturating_sub(steal);
        (others as f64 / total as f64, steal as f64 / total as f64)
    }
}

/// The 1-minute load average (0 where unknown).
#[must_use]
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The machine this process runs on.
#[must_use]
pub fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpu_model,
        logical_cpus: std::thread::available_parallelism().map_or(1, usize::from),
        memory_kib,
        kernel,
    }
}

/// The process's peak resident set (`VmHWM`), KiB, on Linux.
#[must_use]
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(shape: &str, median_ns: u64, p25_ns: u64, p75_ns: u64) -> Row {
        Row {
            shape: shape.into(),
            markets: 1,
            orders: 1_000_000,
            threads: 2,
            runs: 11,
            median_ns,
            min_ns: p25_ns / 2,
            max_ns: p75_ns * 3,
            p25_ns,
            p75_ns,
            orders_per_s: 1e6 / (median_ns as f64 / 1e9),
            others_share: 0.01,
            steal_share: 0.0,
            load_before: 0.5,
            load_after: 0.7,
            busy: false,
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        Report {
            schema: SCHEMA,
            tool: "sealbatch bench clearing".into(),
            version: "0.1.0".into(),
            git_revision: "abc".into(),
            command_line: vec!["sealbatch".into(), "bench".into(), "clearing".into()],
            started_unix_ms: 1,
            machine: Machine {
                cpu_model: "test".into(),
                logical_cpus: 2,
                memory_kib: Some(1),
                kernel: "6".into(),
            },
            includes: INCLUDES.into(),
            excludes: EXCLUDES.into(),
            rows,
            peak_rss_kib: Some(10),
        }
    }

    #[test]
    fn the_report_round_trips_through_json() {
        let r = report(vec![row("uniform", 10_000_000, 9_900_000, 10_300_000)]);
        let text = serde_json::to_string_pretty(&r).expect("serializes");
        let back: Report = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, r);
        assert!(text.contains("\"median_ns\": 10000000"));
    }

    #[test]
    fn comparisons_say_faster_or_slower_only_beyond_the_noise() {
        let old = report(vec![
            row("a", 10_000_000, 9_800_000, 10_200_000),
            row("b", 10_000_000, 9_000_000, 11_000_000),
            row("only old", 1, 1, 1),
        ]);
        let new = report(vec![
            // 2x slower: beyond any noise.
            row("a", 20_000_000, 19_800_000, 20_100_000),
            // 4% faster, but b's middle runs spread 20%: within noise.
            row("b", 9_600_000, 9_000_000, 10_500_000),
        ]);
        let c = compare(&new, &old);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].verdict, Verdict::Slower);
        assert!((c[0].ratio - 0.5).abs() < 1e-9);
        assert_eq!(c[1].verdict, Verdict::WithinNoise);
        assert!(c[1].noise >= 0.2 - 1e-9);
        // The same report against itself: everything within noise.
        assert!(
            compare(&old, &old)
                .iter()
                .all(|c| c.verdict == Verdict::WithinNoise)
        );
        let faster = report(vec![row("a", 5_000_000, 4_950_000, 5_050_000)]);
        assert_eq!(compare(&faster, &old)[0].verdict, Verdict::Faster);
    }
}

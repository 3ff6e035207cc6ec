//! `sealbatch demo`: a sequencer in this process with demo traders against it
//! over loopback QUIC, printing every batch's clearing prices and volumes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use tokio::sync::{oneshot, watch};

use super::CommandResult;
use super::loadgen::{LoadOptions, load};
use super::watch::batch_row;
use crate::client::Client;
use crate::node::{self, NodeConfig};
use crate::types::BatchId;
use crate::wire::ServerMessage;

/// Arguments of `sealbatch demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of trading.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Demo traders.
    #[arg(long, default_value_t = 4)]
    pub traders: usize,
    /// Orders per second, all traders together.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Keep the sequencer's data here (default: a fresh temporary directory
    /// with an unpredictable name, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keypers holding the batch keys (each with its own keys and journal,
    /// over the keyper link); one is stopped halfway. 0: the embedded
    /// custodian (trusted-operator mode).
    #[arg(long, default_value_t = 5)]
    pub keypers: usize,
    /// How many keypers release a key (default a majority).
    #[arg(long)]
    pub threshold: Option<usize>,
    /// Keypers stopped as soon as the first window is certified (instead
    /// of one halfway), to see the release with fewer keypers.
    #[arg(long, default_value_t = 0)]
    pub keypers_down: usize,
    /// Serve `/metrics`, the batch explorer and the trade page here while
    /// the demo runs (e.g. `127.0.0.1:9433`; open `http://127.0.0.1:9433/`,
    /// and `/trade` to trade from the browser over WebTransport).
    #[arg(long, value_name = "ADDR")]
    pub explorer: Option<std::net::SocketAddr>,
}

/// The time from a batch's close until its `t`-th share left a keyper, per
/// batch, from each keyper's release times (Unix ms).
fn release_delays(
    times: &BTreeMap<BatchId, Vec<u64>>,
    t: usize,
    schedule: &crate::envelope::BatchSchedule,
) -> super::loadgen::Latencies {
    let mut delays = super::loadgen::Latencies::default();
    for (&e, at) in times {
        let mut at = at.clone();
        at.sort_unstable();
        let Some(close) = schedule.close_ms(e) else {
            continue;
        };
        if let Some(&ms) = t.checked_sub(1).and_then(|i| at.get(i)) {
            delays.record(Duration::from_millis(ms.saturating_sub(close)));
        }
    }
    delays
}

/// Batches per key generation window in the demo: short, so that the
/// first window is certified within a second or two and the next ones are
/// dealt while the demo runs.
const DEMO_WINDOW_BATCHES: u32 = 50;

/// The keypers of the demo: their member entries, made in `dir`.
pub(crate) fn demo_committee(
    dir: &std::path::Path,
    n: usize,
    threshold: Option<usize>,
) -> Result<crate::node::config::CommitteeConfig, Box<dyn std::error::Error + Send + Sync>> {
    let mut members = Vec::new();
    for k in 1..=n {
        let public = crate::keyper_process::init(&dir.join(format!("keyper-{k}")))?;
        members.push(crate::node::config::CommitteeMember {
            signing: hex::encode(public.signing),
            encryption: hex::encode(public.encryption),
        });
    }
    Ok(crate::node::config::CommitteeConfig {
        threshold,
        window_batches: DEMO_WINDOW_BATCHES,
        lead_batches: 30,
        phase_ms: [400, 200, 200, 400],
        members,
    })
}

/// A keyper running in the demo's process.
type KeyperTask = tokio::task::JoinHandle<Result<(), crate::keyper_process::KeyperProcessError>>;

/// The demo's keypers, each run as its own keyper process would run it,
/// and what they report.
struct DemoKeypers {
    /// Each keyper's stop and task.
    keypers: Vec<(watch::Sender<bool>, KeyperTask)>,
    /// Which keypers released each batch's key (printed with the batch).
    released: Arc<Mutex<BTreeMap<BatchId, BTreeSet<u16>>>>,
    /// When each first release of a batch's key left, unix ms.
    release_times: Arc<Mutex<BTreeMap<BatchId, Vec<u64>>>>,
    /// The batch clock and the threshold, for the release delays.
    clock: (crate::envelope::BatchSchedule, usize),
    /// The committee index of the keyper stopped halfway.
    last_index: Arc<std::sync::atomic::AtomicU16>,
}

/// Starts the committee's keypers against the sequencer at `info` and
/// waits for the first certified window; stops `--keypers-down` of them.
async fn start_keypers(
    args: &DemoArgs,
    committee: &crate::node::config::CommitteeConfig,
    data_dir: &std::path::Path,
    info: &node::NodeInfo,
    watcher: &Client,
) -> Result<DemoKeypers, Box<dyn std::error::Error + Send + Sync>> {
    // The keypers, each as its own keyper process would run it; which
    // of them released each batch's key is printed with the batch.
    let released: Arc<Mutex<BTreeMap<BatchId, BTreeSet<u16>>>> = Arc::default();
    let release_times: Arc<Mutex<BTreeMap<BatchId, Vec<u64>>>> = Arc::default();
    let mut keypers = Vec::new();
    // The committee index of the keyper stopped halfway.
    let last_index = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let schedule = watcher.schedule().await?;
    let t = committee
        .committee(crate::envelope::DeploymentId([0; 32]))?
        .0
        .threshold();
    let clock = (
        crate::envelope::BatchSchedule {
            genesis_ms: schedule.genesis_ms,
            batch_length_ms: schedule.batch_length_ms,
        },
        t,
    );
    if args.keypers_down > committee.members.len() {
        return Err("--keypers-down: more than the committee's keypers".into());
    }
    println!(
        "a committee of {} keypers (any {t} release a key) deals every batch key; the operator holds none",
        committee.members.len()
    );
    for k in 1..=committee.members.len() {
        let config = crate::keyper_process::KeyperConfig {
            data_dir: data_dir.join("keypers").join(format!("keyper-{k}")),
            sequencer: Some(info.listen),
            fingerprint: Some(hex::encode(info.fingerprint)),
            replicas: Vec::new(),
            sequencer_key: hex::encode(info.sequencer_key),
            genesis_ms: schedule.genesis_ms,
            batch_length_ms: schedule.batch_length_ms,
            skew_ms: 20,
            metrics_listen: None,
            committee: committee.clone(),
        };
        let (stop, shutdown) = watch::channel(false);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let released = Arc::clone(&released);
        let release_times = Arc::clone(&release_times);
        let last_index = Arc::clone(&last_index);
        let last = k == committee.members.len();
        tokio::spawn(async move {
            let mut index = 0;
            while let Some(event) = rx.recv().await {
                match event {
                    crate::keyper_process::KeyperEvent::Connected { index: i } => {
                        index = i;
                        if last {
                            last_index.store(i, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    crate::keyper_process::KeyperEvent::Released { e, first, .. } => {
                        if first {
                            release_times
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(e)
                                .or_default()
                                .push(crate::node::now_ms());
                        }
                        released
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(e)
                            .or_default()
                            .insert(index);
                    }
                    crate::keyper_process::KeyperEvent::Refused { .. } => {}
                }
            }
        });
        let task = tokio::spawn(crate::keyper_process::run(config, shutdown, Some(tx)));
        keypers.push((stop, task));
    }
    let started = std::time::Instant::now();
    loop {
        if !watcher.schedule().await?.batch_keys.is_empty() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the committee certified no key in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "first window of {DEMO_WINDOW_BATCHES} batch keys certified after {:.1} s; the next are dealt while trading",
        started.elapsed().as_secs_f64()
    );
    if args.keypers_down > 0 {
        let down = keypers.len() - args.keypers_down;
        for (stop, _) in &keypers[down..] {
            let _ = stop.send(true);
        }
        println!(
            "{} of {} keypers stopped before trading",
            args.keypers_down,
            keypers.len()
        );
    }
    Ok(DemoKeypers {
        keypers,
        released,
        release_times,
        clock,
        last_index,
    })
}

/// Runs the demo.
///
/// # Errors
///
/// The node fails to start, or the run proves something wrong.
pub fn run(args: &DemoArgs) -> CommandResult {
    super::run::init_logging(false, "warn");
    // A temporary directory is removed when `temporary` is dropped, at the
    // end of this function however it ends.
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("sealbatch-demo-")
                .tempdir()
                .map_err(|error| format!("creating a temporary data directory: {error}"))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    if args.keypers > crate::keyper::COMMITTEE_MAX {
        return Err(format!(
            "--keypers: at most {} keypers",
            crate::keyper::COMMITTEE_MAX
        )
        .into());
    }
    let committee = match args.keypers {
        0 => None,
        n => Some(demo_committee(
            &data_dir.join("keypers"),
            n,
            args.threshold,
        )?),
    };
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: args.explorer,
        // With the explorer, the trade page and its WebTransport listener.
        webtransport_listen: args
            .explorer
            .map(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        committee: committee.clone(),
        ..NodeConfig::default()
    };
    config.validate()?;
    let names: Vec<(u32, String)> = {
        let asset = |id: crate::market::AssetId| {
            config
                .assets
                .iter()
                .find(|a| a.id == id)
                .map_or_else(|| id.to_string(), |a| a.name.clone())
        };
        config
            .markets
            .iter()
            .map(|m| (m.id.0, format!("{}/{}", asset(m.base), asset(m.quote))))
            .collect()
    };
    let duration = Duration::from_secs_f64(args.duration.max(0.5));
    let result = super::run::runtime()?.block_on(async {
        let (stop, shutdown) = watch::channel(false);
        let (started_tx, started) = oneshot::channel();
        let node = tokio::spawn(node::run(config, shutdown, Some(started_tx)));
        let info = started.await.map_err(|_| "the sequencer did not start")?;
        println!(
            "sequencer on {} (certificate {}…), data in {}",
            info.listen,
            &hex::encode(info.fingerprint)[..16],
            data_dir.display()
        );
        if let Some(addr) = info.metrics {
            println!("batch explorer on http://{addr}/ (metrics on http://{addr}/metrics)");
            if let Some(webtransport) = info.webtransport {
                println!(
                    "trade from a browser on http://{addr}/trade (WebTransport on {webtransport})"
                );
            }
        }
        println!(
            "{} traders submit sealed bundles of 16 orders at {} orders/s for {:.0} s\n",
            args.traders,
            args.rate,
            duration.as_secs_f64()
        );

        let watcher = Client::connect(info.listen, info.fingerprint).await?;
        let mut committee_run = None;
        if let Some(committee) = &committee {
            committee_run = Some(start_keypers(args, committee, &data_dir, &info, &watcher).await?);
        } else {
            println!("trusted-operator mode: the embedded custodian holds every batch key");
        }
        let released: Arc<Mutex<BTreeMap<BatchId, BTreeSet<u16>>>> = committee_run
            .as_ref()
            .map_or_else(Arc::default, |k| Arc::clone(&k.released));
        let mut keypers = Vec::new();
        let mut clock = None;
        let mut release_times = Arc::default();
        let mut last_index = Arc::default();
        if let Some(run) = committee_run {
            keypers = run.keypers;
            clock = Some(run.clock);
            release_times = run.release_times;
            last_index = run.last_index;
        }
        let printer = tokio::spawn(print_batches(watcher.subscribe().await?, names, Arc::clone(&released)));

        let options = LoadOptions {
            server: info.listen,
            fingerprint: info.fingerprint,
            traders: args.traders.max(1),
            rate: args.rate,
            bundle: 16,
            duration,
            seed: 7,
            fund: true,
            progress: false,
            receipts: None,
        };
        // One keyper stops halfway: the others still release every key.
        let halfway = if args.keypers_down == 0 {
            keypers.last()
        } else {
            None
        };
        let stopper = halfway.map(|(stop, _)| stop.clone()).map(|stop| {
            let last_index = Arc::clone(&last_index);
            tokio::spawn(async move {
                tokio::time::sleep(duration / 2).await;
                let index = last_index.load(std::sync::atomic::Ordering::Relaxed);
                println!("--- keyper {index} stopped: the others release every key ---");
                let _ = stop.send(true);
            })
        });
        let report = load(options).await;
        if let Some(stopper) = stopper {
            let _ = stopper.await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        watcher.close();
        printer.abort();
        let _ = stop.send(true);
        node.await.map_err(|error| error.to_string())??;
        for (stop, task) in keypers {
            let _ = stop.send(true);
            task.await.map_err(|error| error.to_string())??;
        }
        let report = report?;
        println!("\n{}", report.render());
        if let Some((schedule, t)) = &clock {
            let delays = release_delays(
                &release_times.lock().unwrap_or_else(|p| p.into_inner()),
                *t,
                schedule,
            );
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "keys released        p50 {:>7.2} ms   p99 {:>7.2} ms   from close until {t} shares had left (skew 20 ms; {} batches)",
                ms(delays.quantile(0.5)),
                ms(delays.quantile(0.99)),
                delays.len()
            );
        }
        if let Some(rss) = crate::node::metrics::resident_bytes() {
            println!(
                "process memory       {:>9.1} MiB resident (sequencer and traders)",
                rss as f64 / (1 << 20) as f64
            );
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(report)
    });
    let verified = result.and_then(|report| verify_demo(&data_dir, &report));
    drop(temporary);
    verified
}

/// The demo's journal verified and held to every receipt the traders got,
/// each proven included.
fn verify_demo(data_dir: &std::path::Path, report: &super::loadgen::LoadReport) -> CommandResult {
    // The journal is held to every receipt the traders got.
    let receipts = data_dir.join("demo-receipts");
    let _ = std::fs::remove_file(&receipts);
    super::loadgen::append_receipts(&receipts, &report.receipt_list)?;
    super::verify::run(&super::verify::VerifyArgs {
        source: super::verify::JournalArgs {
            data_dir: data_dir.to_path_buf(),
            journal: None,
        },
        transcript: None,
        verbose: false,
        receipts: Some(receipts),
        committee: None,
    })?;
    if report.included != report.receipts {
        return Err(super::Failure::Mismatch(format!(
            "{} receipts were not proven included",
            report.receipts - report.included
        ))
        .into());
    }
    Ok(())
}

/// Prints each cleared batch, with the keypers that released its key.
async fn print_batches(
    mut events: tokio::sync::mpsc::Receiver<ServerMessage>,
    names: Vec<(u32, String)>,
    shown: Arc<Mutex<BTreeMap<BatchId, BTreeSet<u16>>>>,
) {
    let name = |m: u32| {
        names
            .iter()
            .find(|(id, _)| *id == m)
            .map_or_else(|| format!("m{m}"), |(_, n)| n.clone())
    };
    while let Some(event) = events.recv().await {
        if let ServerMessage::BatchCleared(cleared) = event {
            let by = shown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&cleared.e)
                .map(|k| k.iter().map(u16::to_string).collect::<Vec<_>>().join(","));
            match by {
                Some(by) => println!("{} key from keypers {by}", batch_row(&cleared, &name)),
                None => println!("{}", batch_row(&cleared, &name)),
            }
        }
    }
}

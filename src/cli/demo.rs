//! `sealbatch demo`: a sequencer in this process with demo traders against it
//! over loopback QUIC, printing every batch's clearing prices and volumes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::sync::{oneshot, watch};

use super::CommandResult;
use super::loadgen::{LoadOptions, load};
use super::watch::batch_row;
use crate::client::Client;
use crate::node::{self, NodeConfig};
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
                .map_err(|e| format!("creating a temporary data directory: {e}"))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: None,
        ..NodeConfig::default()
    };
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
        println!(
            "{} traders submit sealed bundles of 16 orders at {} orders/s for {:.0} s\n",
            args.traders,
            args.rate,
            duration.as_secs_f64()
        );

        let watcher = Client::connect(info.listen, info.fingerprint).await?;
        let mut events = watcher.subscribe().await?;
        let printer = tokio::spawn(async move {
            let name = |m: u32| {
                names
                    .iter()
                    .find(|(id, _)| *id == m)
                    .map_or_else(|| format!("m{m}"), |(_, n)| n.clone())
            };
            while let Some(event) = events.recv().await {
                if let ServerMessage::BatchCleared(cleared) = event {
                    println!("{}", batch_row(&cleared, &name));
                }
            }
        });

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
        let report = load(options).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        watcher.close();
        printer.abort();
        let _ = stop.send(true);
        node.await.map_err(|e| e.to_string())??;
        let report = report?;
        println!("\n{}", report.render());
        if let Some(rss) = crate::node::metrics::resident_bytes() {
            println!(
                "process memory       {:>9.1} MiB resident (sequencer and traders)",
                rss as f64 / (1 << 20) as f64
            );
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(report)
    });
    let verified = result.and_then(|report| {
        // The journal is held to every receipt the traders got.
        let receipts = data_dir.join("demo-receipts");
        let _ = std::fs::remove_file(&receipts);
        super::loadgen::append_receipts(&receipts, &report.receipt_list)?;
        super::verify::run(&super::verify::VerifyArgs {
            source: super::verify::JournalArgs {
                data_dir: data_dir.clone(),
                journal: None,
            },
            transcript: None,
            verbose: false,
            receipts: Some(receipts),
        })?;
        if report.included != report.receipts {
            return Err(super::Failure::Mismatch(format!(
                "{} receipts were not proven included",
                report.receipts - report.included
            ))
            .into());
        }
        Ok(())
    });
    drop(temporary);
    verified
}

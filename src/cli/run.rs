//! `sealbatch run`: the sequencer process.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tokio::sync::watch;

use super::CommandResult;
use crate::node::{self, NodeConfig};

/// Arguments of `sealbatch run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration; every key has a default (`--print-config` shows
    /// them all, the optional ones left unset as comments).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (journal, keys, certificate), instead of the
    /// configuration's `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// QUIC listen address, instead of the configuration's `listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Prometheus metrics address, instead of the configuration's
    /// `metrics_listen`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
    /// Print the configuration in effect (defaults, then the file, the
    /// environment and the flags) as a TOML file, and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl RunArgs {
    /// The configuration: file (or defaults), then environment, then flags.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, or a bad environment override.
    pub fn config(&self) -> Result<NodeConfig, node::config::ConfigFileError> {
        let mut config = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        config.apply_env()?;
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(metrics) = self.metrics_listen {
            config.metrics_listen = Some(metrics);
        }
        if self.no_metrics {
            config.metrics_listen = None;
        }
        Ok(config)
    }
}

/// Installs the tracing subscriber (`RUST_LOG` filters; default `level`).
pub fn init_logging(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A multi-threaded tokio runtime.
///
/// # Errors
///
/// The runtime could not start.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sealbatch-io")
        .build()
}

/// Turns SIGINT and SIGTERM into `shutdown = true`.
pub fn shutdown_on_signals() -> std::io::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("signal received");
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Runs `sealbatch run`.
///
/// # Errors
///
/// Configuration, start-up, or a fatal journal error.
pub fn run(args: &RunArgs) -> CommandResult {
    let config = args.config()?;
    if args.print_config {
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    init_logging(args.log_json, "info");
    let runtime = runtime()?;
    runtime.block_on(async move {
        let shutdown = shutdown_on_signals()?;
        node::run(config, shutdown, None).await?;
        Ok(())
    })
}

//! `sealbatch keyper`: a keyper's keys and its process.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CommandResult;
use super::run::{init_logging, runtime, shutdown_on_signals};
use crate::keyper_process::{self, KeyperConfig};

/// The keyper's commands.
#[derive(Debug, Subcommand)]
pub enum KeyperCommand {
    /// Create this keyper's keys in a data directory (or read them back)
    /// and print the member entry the committee configuration lists.
    Init(InitArgs),
    /// Run the keyper: connect to the sequencer, take part in key
    /// generation, release shares for closed batches; until SIGINT/SIGTERM.
    Run(KeyperRunArgs),
}

/// Arguments of `sealbatch keyper init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The keyper's data directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Arguments of `sealbatch keyper run`.
#[derive(Debug, Args)]
pub struct KeyperRunArgs {
    /// The keyper's TOML configuration (`spec/keyper.md` §17).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
}

/// Runs a keyper command.
///
/// # Errors
///
/// Keys, configuration or journal that cannot be used.
pub fn run(command: &KeyperCommand) -> CommandResult {
    match command {
        KeyperCommand::Init(args) => {
            let public = keyper_process::init(&args.dir)?;
            println!("[[committee.members]]");
            println!("signing = \"{}\"", hex::encode(public.signing));
            println!("encryption = \"{}\"", hex::encode(public.encryption));
            Ok(())
        }
        KeyperCommand::Run(args) => {
            let config = KeyperConfig::from_file(&args.config)?;
            init_logging(args.log_json, "info");
            runtime()?.block_on(async move {
                let shutdown = shutdown_on_signals()?;
                keyper_process::run(config, shutdown, None).await?;
                Ok(())
            })
        }
    }
}

//! The `sealbatch` command line: a thin shell over the library.
//!
//! Each command lives in its own file with its clap arguments and a `run`
//! function; adding one (`run`, `submit`, `loadgen`, `verify`, `keygen`) means
//! one file, one [`Command`] variant and one arm in [`run`]. Errors are boxed
//! here, at the binary's edge, and printed with their context.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod clear;
mod demo;

/// What a command returns: boxed errors are fine at the binary's edge.
pub type CommandResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// MEV-resistant sealed batch auction sequencer.
#[derive(Debug, Parser)]
#[command(name = "sealbatch", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clear a batch read from a CSV file (`id,market,side,price,qty`) and
    /// print the result as JSON, to replay and audit batches offline.
    Clear(clear::ClearArgs),
    /// Measure throughput and print a plain table.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A short clearing demo: a few markets, seeded random orders, a few
    /// batches, a table of prices and volumes.
    Demo(demo::DemoArgs),
}

/// Parses the command line, runs the command, and maps its error to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sealbatch: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command line.
///
/// # Errors
///
/// Whatever the command reports, with its context (file, line, order).
pub fn run(cli: Cli) -> CommandResult {
    match cli.command {
        Command::Clear(args) => clear::run(&args),
        Command::Bench(command) => bench::run(&command),
        Command::Demo(args) => demo::run(&args),
    }
}

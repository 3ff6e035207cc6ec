//! `sealbatch bench …`: throughput measurements a user can run.

use clap::Subcommand;

use super::CommandResult;

mod clearing;

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The clearing engine: one market of 10^3 … 10^7 orders over 10^4 ticks,
    /// and 64 markets × 10^5 orders, sequential vs rayon.
    Clearing(clearing::ClearingBenchArgs),
}

/// Runs one benchmark.
pub(super) fn run(command: &BenchCommand) -> CommandResult {
    match command {
        BenchCommand::Clearing(args) => clearing::run(args),
    }
}

//! `sealbatch bench …`: throughput measurements a user can run.

use clap::Subcommand;

use super::CommandResult;

mod clearing;
pub mod report;
mod svg;

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The clearing engine's orders per second on named order-flow shapes or
    /// a real batch, on rayon pools of chosen sizes (speed-up over one
    /// thread); optionally JSON, a comparison with a saved run, an SVG chart.
    Clearing(clearing::ClearingBenchArgs),
}

/// Runs one benchmark.
pub(super) fn run(command: &BenchCommand) -> CommandResult {
    match command {
        BenchCommand::Clearing(args) => clearing::run(args),
    }
}

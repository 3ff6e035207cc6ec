//! The `sealbatch` command line: a thin shell over the library.
//!
//! Each command lives in its own file with its clap arguments and a `run`
//! function; adding one (`run`, `submit`, `loadgen`, `verify`, `keygen`) means
//! one file, one [`Command`] variant and one arm in [`run()`]. Errors are boxed
//! here, at the binary's edge, and printed with their context.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod account;
mod bench;
mod clear;
mod clear_demo;
mod cluster;
pub mod connect;
mod demo;
mod deposit;
pub mod faults;
pub mod hostile;
mod keygen;
mod keyper;
pub mod loadgen;
mod operator;
mod plot;
pub mod relay;
pub mod replicas;
pub mod run;
mod submit;
mod verify;
pub mod watch;

/// What a command returns: boxed errors are fine at the binary's edge.
pub type CommandResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Exit status when a command checked something and it does not hold:
/// `verify` found a batch, checkpoint or receipt that does not match, or
/// `loadgen` a receipt not proven included. Also the status of any error
/// without a status of its own.
pub const EXIT_MISMATCH: u8 = 1;
/// Exit status for bad usage (clap's own status for a bad command line) or
/// an input that cannot be read: a missing file or directory, a damaged
/// journal, a transcript or receipts file that does not decode.
pub const EXIT_USAGE: u8 = 2;

/// How a command failed, when its exit status must say which way: see
/// [`exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Read and checked, and something does not match
    /// ([`EXIT_MISMATCH`]).
    #[error("{0}")]
    Mismatch(String),
    /// An input could not be read or does not hold what was asked for, or
    /// an output could not be written ([`EXIT_USAGE`]).
    #[error("{0}")]
    Unreadable(String),
}

/// The exit statuses, as `--help` shows them.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   success
  1   checked, and something does not match (a batch, checkpoint or receipt);
      also any other failure without a status of its own
  2   bad usage, or an input that cannot be read (a missing or damaged
      journal, a transcript or receipts file that does not decode)
  70  `run`: the sequencer stopped on an internal error (a bug)
  74  `run`, `keyper run`: the storage failed (a journal write or fsync
      failed or stalled)
  78  `run`, `keyper run`: the configuration cannot be used (also: a
      descriptor given to --inherit-fd that is not a socket; for a keyper
      also: its keys missing or not its committee entry, a journal of
      another deployment, or it cannot read its own shares)";

/// `verify`'s exit statuses, as `sealbatch verify --help` shows them.
const VERIFY_EXIT_STATUS_HELP: &str = "\
Exit status:
  0  every batch, checkpoint and receipt verified (batches still pending are
     listed, not failures)
  1  read and re-derived, and something does not match: a batch, a
     checkpoint or a receipt (missing from its batch's outcome, or not
     signed by the journal's sequencer)
  2  bad usage, or an input that cannot be read: no journal directory, a
     damaged journal (a torn tail alone is read up to, not damage), a
     transcript or receipts file that cannot be read or decoded";

/// `export`'s exit statuses, as `sealbatch export --help` shows them.
const EXPORT_EXIT_STATUS_HELP: &str = "\
Exit status:
  0  every requested batch's transcript written
  1  a requested batch does not verify (nothing is written for it)
  2  bad usage, a journal that cannot be read, a requested batch not
     cleared in it, or a file that cannot be written";

/// MEV-resistant sealed batch auction sequencer.
#[derive(Debug, Parser)]
#[command(name = "sealbatch", version, about, long_about = None, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// A socket handed down by the process that started this one (a bound
    /// UDP socket or a listening TCP socket, by descriptor number; may be
    /// given more than once): `run` and `keyper run` serve on it where
    /// their configuration names its address, instead of binding.
    #[arg(long = "inherit-fd", value_name = "FD", global = true)]
    pub inherit_fd: Vec<i32>,
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
    /// A sequencer in this process and demo traders over loopback QUIC for
    /// about ten seconds, printing each batch's prices and volumes, then the
    /// load report and a verification of the journal.
    Demo(demo::DemoArgs),
    /// The clearing engine alone: a few markets, seeded random orders, a few
    /// batches, a table of prices and volumes.
    ClearDemo(clear_demo::ClearDemoArgs),
    /// Run the sequencer (QUIC server, journal, metrics) until SIGINT/SIGTERM.
    Run(run::RunArgs),
    /// Create a trader account key.
    Keygen(keygen::KeygenArgs),
    /// A keyper of the committee that holds the batch keys: its keys and
    /// its process.
    #[command(subcommand)]
    Keyper(keyper::KeyperCommand),
    /// A replicated sequencer's replicas: identities, status, membership
    /// changes, and a demo with the leader killed.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Seal and submit one bundle, then wait for its receipt, inclusion proof
    /// and fills.
    Submit(submit::SubmitArgs),
    /// Print every cleared batch as it happens.
    Watch(watch::WatchArgs),
    /// Credit an account, unsigned (demo mode only).
    Deposit(deposit::DepositArgs),
    /// Read an account's balances and next withdrawal number, signed by the
    /// account's key (or an operator's).
    Account(account::AccountArgs),
    /// Withdraw from an account, signed by its key; the operator pays it
    /// out (`sealbatch operator payouts`).
    Withdraw(account::WithdrawArgs),
    /// The operator's commands: a key, signed idempotent deposits, payouts.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Simulated traders over QUIC at a target rate; reports throughput,
    /// latencies and checks every receipt's inclusion.
    Loadgen(loadgen::LoadgenArgs),
    /// Re-derive every batch of a journal (or one exported transcript):
    /// signatures, Merkle roots, decryption, clearing, settlement.
    #[command(after_help = VERIFY_EXIT_STATUS_HELP)]
    Verify(verify::VerifyArgs),
    /// Write self-contained transcripts of cleared batches (envelopes, seal,
    /// released key, outcome, starting balances) for `verify --transcript`.
    #[command(after_help = EXPORT_EXIT_STATUS_HELP)]
    Export(verify::ExportArgs),
    /// Draw a cleared batch's demand and supply curves as SVG (from the
    /// journal or a transcript; the batch is re-derived first).
    #[command(after_help = EXPORT_EXIT_STATUS_HELP)]
    Plot(plot::PlotArgs),
    /// A UDP relay that delays, jitters and loses datagrams each way: a
    /// user-space WAN between replicas (or any QUIC peers) on one machine.
    Relay(relay::RelayArgs),
}

/// Parses the command line (a bad one exits [`EXIT_USAGE`], clap's status),
/// runs the command, and maps its error to an exit code with [`exit_code`].
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // SAFETY: first thing, before this process opens anything of its own:
    // an open descriptor named here can only be one handed down across
    // `exec`, owned by nothing in this process yet.
    if let Err(error) = unsafe { crate::net::inherit::inherit(&cli.inherit_fd) } {
        eprintln!(
            "sealbatch: {INHERIT_FLAG}: {error}",
            INHERIT_FLAG = crate::net::inherit::INHERIT_FLAG
        );
        return ExitCode::from(crate::node::EXIT_CONFIG);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sealbatch: {error}");
            ExitCode::from(exit_code(error.as_ref()))
        }
    }
}

/// The exit status for a command's error: the node's own
/// ([`NodeError::exit_code`](crate::node::NodeError::exit_code): 74 storage,
/// 70 internal, 78 configuration), [`EXIT_MISMATCH`] or [`EXIT_USAGE`] for
/// a [`Failure`], else [`EXIT_MISMATCH`].
#[must_use]
pub fn exit_code(error: &(dyn std::error::Error + 'static)) -> u8 {
    if let Some(node) = error.downcast_ref::<crate::node::NodeError>() {
        node.exit_code()
    } else if let Some(keyper) = error.downcast_ref::<crate::keyper_process::KeyperProcessError>() {
        keyper.exit_code()
    } else if error
        .downcast_ref::<crate::node::config::ConfigFileError>()
        .is_some()
    {
        crate::node::EXIT_CONFIG
    } else if let Some(failure) = error.downcast_ref::<Failure>() {
        match failure {
            Failure::Mismatch(_) => EXIT_MISMATCH,
            Failure::Unreadable(_) => EXIT_USAGE,
        }
    } else {
        EXIT_MISMATCH
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
        Command::ClearDemo(args) => clear_demo::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Keygen(args) => keygen::run(&args),
        Command::Keyper(command) => keyper::run(&command),
        Command::Cluster(command) => cluster::run(&command),
        Command::Submit(args) => submit::run(&args),
        Command::Watch(args) => watch::run(&args),
        Command::Deposit(args) => deposit::run(&args),
        Command::Account(args) => account::account(&args),
        Command::Withdraw(args) => account::withdraw(&args),
        Command::Operator(command) => operator::run(&command),
        Command::Loadgen(args) => loadgen::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Export(args) => verify::export(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Relay(args) => relay::run(&args),
    }
}

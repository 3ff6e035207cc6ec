//! `sealbatch operator …`: the operator's side of money in (`keygen`,
//! `deposit`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rand_core::OsRng;

use super::CommandResult;
use super::connect::{ServerArgs, read_account_key};
use super::deposit::TransferArgs;

/// What the operator does.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create an operator key: its secret half in `--out` (mode 0600; keep it
    /// off the sequencer's machine), its public half printed for the
    /// sequencer's `[operator] keys`.
    Keygen(KeygenArgs),
    /// Credit an account with money that arrived outside the venue, signed
    /// with an operator key and idempotent by its external reference:
    /// running it again with the same `--ref` credits nothing.
    Deposit(DepositArgs),
}

/// Arguments of `sealbatch operator keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; never
    /// overwritten).
    #[arg(long, value_name = "FILE", default_value = "operator.key")]
    pub out: PathBuf,
}

/// Arguments of `sealbatch operator deposit`.
#[derive(Debug, Args)]
pub struct DepositArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The operator's secret key file (`operator keygen`; in demo mode the
    /// data directory's `demo-operator.key` works too).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The external reference (a chain transaction id, a transfer id), 1 to
    /// 64 bytes of text: the same reference is credited once.
    #[arg(long = "ref", value_name = "ID")]
    reference: String,
    #[command(flatten)]
    transfer: TransferArgs,
}

/// Runs one operator command.
pub(super) fn run(command: &OperatorCommand) -> CommandResult {
    match command {
        OperatorCommand::Keygen(args) => {
            let key = crate::envelope::generate_account_key(&mut OsRng);
            crate::secret_file::create_key32(&args.out, &key.to_bytes())?;
            println!("operator {}", hex::encode(key.verifying_key().to_bytes()));
            println!("secret key written to {} (mode 0600)", args.out.display());
            Ok(())
        }
        OperatorCommand::Deposit(args) => deposit(args),
    }
}

fn deposit(args: &DepositArgs) -> CommandResult {
    let key = read_account_key(&args.key)?;
    let t = &args.transfer;
    let account = t.account()?;
    super::run::runtime()?.block_on(async {
        let (client, _) = args.server.connect().await?;
        client
            .operator_deposit(&key, account, t.asset, t.amount, args.reference.as_bytes())
            .await?;
        println!(
            "deposit {} credited once: {} units of asset {} to {}",
            args.reference, t.amount, t.asset, t.account
        );
        client.close();
        Ok(())
    })
}

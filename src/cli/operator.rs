//! `sealbatch operator …`: the operator's side of money in and out
//! (`keygen`, `deposit`, `payouts`, `ack`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rand_core::OsRng;

use super::CommandResult;
use super::connect::{ServerArgs, read_account_key};
use super::deposit::TransferArgs;
use crate::signed::Withdrawal;

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
    /// Stream the withdrawals awaiting payout, oldest first: print each as
    /// a JSON line, or, with `--pay`, run the payout program for each and
    /// acknowledge it with the reference the program prints.
    Payouts(PayoutsArgs),
    /// Acknowledge that one withdrawal was paid out (idempotent: the same
    /// `--id` and `--ref` again is answered as the first).
    Ack(AckArgs),
}

/// Arguments of `sealbatch operator payouts`.
#[derive(Debug, Args)]
pub struct PayoutsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The operator's secret key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Start after this withdrawal id.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Keep watching for new withdrawals (every `--interval-ms`) instead of
    /// stopping when none is left.
    #[arg(long)]
    follow: bool,
    /// How often `--follow` asks, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    interval_ms: u64,
    /// The payout program, run once per withdrawal (no shell) with
    /// `SEALBATCH_WITHDRAWAL_ID`, `SEALBATCH_ACCOUNT`, `SEALBATCH_ASSET`,
    /// `SEALBATCH_AMOUNT`, `SEALBATCH_DESTINATION` (and `…_HEX`) set. It
    /// pays the withdrawal out and prints the payout's reference (its
    /// first line of output, 1 to 64 bytes); exit status 0 acknowledges
    /// it, anything else stops here. It must be idempotent by withdrawal
    /// id: after a crash between its payout and the acknowledgement it is
    /// run again for the same withdrawal and must print the same reference
    /// without paying twice.
    #[arg(long, value_name = "PROGRAM")]
    pay: Option<PathBuf>,
}

/// Arguments of `sealbatch operator ack`.
#[derive(Debug, Args)]
pub struct AckArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The operator's secret key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The withdrawal's id.
    #[arg(long)]
    id: u64,
    /// The payout's external reference (a chain transaction id, a
    /// transfer id), 1 to 64 bytes of text.
    #[arg(long = "ref", value_name = "ID")]
    reference: String,
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
        OperatorCommand::Payouts(args) => payouts(args),
        OperatorCommand::Ack(args) => ack(args),
    }
}

fn ack(args: &AckArgs) -> CommandResult {
    let key = read_account_key(&args.key)?;
    super::run::runtime()?.block_on(async {
        let (client, _) = args.server.connect().await?;
        client
            .acknowledge_payout(&key, args.id, args.reference.as_bytes())
            .await?;
        println!("withdrawal {} paid out as {}", args.id, args.reference);
        client.close();
        Ok(())
    })
}

fn payouts(args: &PayoutsArgs) -> CommandResult {
    let key = read_account_key(&args.key)?;
    super::run::runtime()?.block_on(async {
        let (client, _) = args.server.connect().await?;
        let mut after = args.after;
        loop {
            let (withdrawals, more) = client.payouts(&key, after).await?;
            for w in withdrawals {
                after = w.id;
                let Some(program) = &args.pay else {
                    println!("{}", withdrawal_json(&w));
                    continue;
                };
                let reference = run_payout(program.clone(), w.clone()).await?;
                client
                    .acknowledge_payout(&key, w.id, reference.as_bytes())
                    .await?;
                println!(
                    "{}",
                    serde_json::json!({"paid": w.id, "reference": reference})
                );
            }
            if !more {
                if !args.follow {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(args.interval_ms)).await;
            }
        }
        client.close();
        Ok(())
    })
}

/// One withdrawal as a JSON object.
fn withdrawal_json(w: &Withdrawal) -> serde_json::Value {
    let s = &w.signed.statement;
    serde_json::json!({
        "id": w.id,
        "account": hex::encode(s.account.0),
        "asset": s.asset.0,
        "amount": s.amount,
        "sequence": s.sequence,
        "destination": String::from_utf8_lossy(&s.destination),
        "destination_hex": hex::encode(&s.destination),
    })
}

/// Runs the payout program for `w` and returns the reference it printed.
async fn run_payout(program: PathBuf, w: Withdrawal) -> Result<String, String> {
    let id = w.id;
    let output = tokio::task::spawn_blocking(move || {
        let s = &w.signed.statement;
        std::process::Command::new(&program)
            .env("SEALBATCH_WITHDRAWAL_ID", w.id.to_string())
            .env("SEALBATCH_ACCOUNT", hex::encode(s.account.0))
            .env("SEALBATCH_ASSET", s.asset.0.to_string())
            .env("SEALBATCH_AMOUNT", s.amount.to_string())
            .env(
                "SEALBATCH_DESTINATION",
                String::from_utf8_lossy(&s.destination).as_ref(),
            )
            .env("SEALBATCH_DESTINATION_HEX", hex::encode(&s.destination))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|error| format!("running {}: {error}", program.display()))
    })
    .await
    .map_err(|error| error.to_string())??;
    if !output.status.success() {
        return Err(format!(
            "the payout program failed for withdrawal {id} ({}); it stays pending",
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reference = stdout.lines().next().unwrap_or("").trim().to_string();
    if reference.is_empty() || reference.len() > crate::signed::REFERENCE_LEN_MAX {
        return Err(format!(
            "the payout program printed no reference of 1 to {} bytes for withdrawal {id}",
            crate::signed::REFERENCE_LEN_MAX
        ));
    }
    Ok(reference)
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

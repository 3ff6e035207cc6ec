//! `sealbatch account` and `sealbatch withdraw`: the trader's side of
//! money, both signed with the account's key (balances are private).

use std::path::PathBuf;

use clap::Args;

use super::CommandResult;
use super::connect::{ServerArgs, read_account_key};

/// Arguments of `sealbatch account`.
#[derive(Debug, Args)]
pub struct AccountArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The key that asks: the account's own (`sealbatch keygen`) or an
    /// operator's.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The account to read (64 hex digits); default the key's own.
    #[arg(long, value_name = "HEX")]
    account: Option<String>,
}

/// Arguments of `sealbatch withdraw`.
#[derive(Debug, Args)]
pub struct WithdrawArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The account's secret key file (`sealbatch keygen`): the account
    /// withdrawn from is this key's.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The asset id.
    #[arg(long)]
    asset: u32,
    /// Units to withdraw.
    #[arg(long)]
    amount: u64,
    /// Where the operator pays the money out (a chain address, an account
    /// number): 1 to 64 bytes of text.
    #[arg(long = "to", value_name = "DESTINATION")]
    destination: String,
    /// The account's withdrawal number to sign; default its next, read
    /// from the sequencer first. A number the sequencer took before is
    /// refused (code 13), so a request is never taken twice.
    #[arg(long)]
    sequence: Option<u64>,
}

/// Prints an account's balances and next withdrawal number.
pub(super) fn account(args: &AccountArgs) -> CommandResult {
    let key = read_account_key(&args.key)?;
    let account = match &args.account {
        Some(text) => parse_account(text)?,
        None => key.verifying_key().to_bytes(),
    };
    super::run::runtime()?.block_on(async {
        let (client, _) = args.server.connect().await?;
        let state = client.account(&key, account).await?;
        println!("account {}", hex::encode(account));
        println!("  next withdrawal  {}", state.next_withdrawal);
        for (asset, amount) in state.balances {
            println!("  asset {asset:>4}  {amount:>20}");
        }
        client.close();
        Ok(())
    })
}

/// Signs and sends a withdrawal, waits until it is durable, and prints its
/// id and the balances left.
pub(super) fn withdraw(args: &WithdrawArgs) -> CommandResult {
    let key = read_account_key(&args.key)?;
    let account = key.verifying_key().to_bytes();
    super::run::runtime()?.block_on(async {
        let (client, _) = args.server.connect().await?;
        let id = client
            .withdraw(
                &key,
                args.asset,
                args.amount,
                args.destination.as_bytes(),
                args.sequence,
            )
            .await?;
        let state = client.account(&key, account).await?;
        println!(
            "withdrawal {id} durable: {} units of asset {} to {:?}, awaiting payout",
            args.amount, args.asset, args.destination
        );
        for (asset, amount) in state.balances {
            println!("  asset {asset:>4}  {amount:>20}");
        }
        client.close();
        Ok(())
    })
}

/// An account's 32 bytes from 64 hex digits.
///
/// # Errors
///
/// Not 64 hex digits.
pub fn parse_account(text: &str) -> Result<[u8; 32], &'static str> {
    let mut account = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut account).map_err(|_| "an account is 64 hex digits")?;
    Ok(account)
}

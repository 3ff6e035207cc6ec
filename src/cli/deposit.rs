//! `sealbatch deposit` and `sealbatch withdraw`: credit or debit an account
//! (operator operations; over the wire in demo mode).

use clap::Args;

use super::CommandResult;
use super::connect::ServerArgs;

/// Arguments of `sealbatch deposit` and `sealbatch withdraw`.
#[derive(Debug, Args)]
pub struct DepositArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The account (64 hex digits: its Ed25519 public key).
    #[arg(long)]
    account: String,
    /// The asset id.
    #[arg(long)]
    asset: u32,
    /// Units to credit (or debit).
    #[arg(long)]
    amount: u64,
}

/// Deposits (`credit`) or withdraws, waits until it is durable, and prints
/// the balances.
///
/// # Errors
///
/// Connection failure, or refusal (outside demo mode; a withdrawal beyond
/// the balance).
pub fn run(args: &DepositArgs, credit: bool) -> CommandResult {
    let mut account = [0u8; 32];
    hex::decode_to_slice(args.account.trim(), &mut account)
        .map_err(|_| "--account takes 64 hex digits")?;
    super::run::runtime()?.block_on(async {
        let (client, _) = args.server.connect().await?;
        if credit {
            client.deposit(account, args.asset, args.amount).await?;
        } else {
            client.withdraw(account, args.asset, args.amount).await?;
        }
        let balances = client.account(account).await?;
        let what = if credit { "deposit" } else { "withdrawal" };
        println!("{what} durable; balances of {}:", args.account);
        for (asset, amount) in balances {
            println!("  asset {asset:>4}  {amount:>20}");
        }
        client.close();
        Ok(())
    })
}

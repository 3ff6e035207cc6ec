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
    #[command(flatten)]
    transfer: TransferArgs,
}

/// An amount of an asset for an account, as the money commands name it.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The account (64 hex digits: its Ed25519 public key).
    #[arg(long)]
    pub account: String,
    /// The asset id.
    #[arg(long)]
    pub asset: u32,
    /// Units to credit (or debit).
    #[arg(long)]
    pub amount: u64,
}

impl TransferArgs {
    /// The account's 32 bytes.
    ///
    /// # Errors
    ///
    /// `--account` is not 64 hex digits.
    pub fn account(&self) -> Result<[u8; 32], &'static str> {
        let mut account = [0u8; 32];
        hex::decode_to_slice(self.account.trim(), &mut account)
            .map_err(|_| "--account takes 64 hex digits")?;
        Ok(account)
    }
}

/// Deposits (`credit`) or withdraws, waits until it is durable, and prints
/// the balances.
///
/// # Errors
///
/// Connection failure, or refusal (outside demo mode; a withdrawal beyond
/// the balance).
pub fn run(args: &DepositArgs, credit: bool) -> CommandResult {
    let t = &args.transfer;
    let account = t.account()?;
    super::run::runtime()?.block_on(async {
        let (client, _) = args.server.connect().await?;
        if credit {
            client.deposit(account, t.asset, t.amount).await?;
        } else {
            client.withdraw(account, t.asset, t.amount).await?;
        }
        let balances = client.account(account).await?;
        let what = if credit { "deposit" } else { "withdrawal" };
        println!("{what} durable; balances of {}:", t.account);
        for (asset, amount) in balances {
            println!("  asset {asset:>4}  {amount:>20}");
        }
        client.close();
        Ok(())
    })
}

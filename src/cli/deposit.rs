//! `sealbatch deposit`: credit an account without a signature (demo mode
//! only; otherwise an operator signs, `sealbatch operator deposit`).

use clap::Args;

use super::CommandResult;
use super::connect::ServerArgs;

/// Arguments of `sealbatch deposit`.
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
    /// Units to credit.
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
        super::account::parse_account(&self.account)
    }
}

/// Deposits and waits until it is durable.
///
/// # Errors
///
/// Connection failure, or refusal (outside demo mode).
pub fn run(args: &DepositArgs) -> CommandResult {
    let t = &args.transfer;
    let account = t.account()?;
    super::run::runtime()?.block_on(async {
        let (client, _) = args.server.connect().await?;
        client.deposit(account, t.asset, t.amount).await?;
        println!(
            "deposit durable: {} units of asset {} to {}",
            t.amount, t.asset, t.account
        );
        client.close();
        Ok(())
    })
}

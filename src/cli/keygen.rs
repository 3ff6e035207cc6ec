//! `sealbatch keygen`: a new trader account key.

use std::path::PathBuf;

use clap::Args;
use rand_core::OsRng;

use super::CommandResult;

/// Arguments of `sealbatch keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE", default_value = "account.key")]
    pub out: PathBuf,
}

/// Writes a fresh Ed25519 account key and prints its public key (the account id).
///
/// # Errors
///
/// The file exists or cannot be written.
pub fn run(args: &KeygenArgs) -> CommandResult {
    let key = crate::envelope::generate_account_key(&mut OsRng);
    crate::secret_file::create_key32(&args.out, &key.to_bytes())?;
    println!("account {}", hex::encode(key.verifying_key().to_bytes()));
    println!("secret key written to {} (mode 0600)", args.out.display());
    Ok(())
}

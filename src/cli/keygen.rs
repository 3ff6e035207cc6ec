//! `sealbatch keygen`: a new trader account key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .map_err(|e| format!("creating {}: {e}", args.out.display()))?;
    file.write_all(format!("{}\n", hex::encode(key.to_bytes())).as_bytes())?;
    file.sync_all()?;
    println!("account {}", hex::encode(key.verifying_key().to_bytes()));
    println!("secret key written to {} (mode 0600)", args.out.display());
    Ok(())
}

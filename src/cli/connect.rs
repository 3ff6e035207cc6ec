//! What every client command shares: where the sequencer is, which
//! certificate to pin, and which account key to sign with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::client::Client;
use crate::net::{FINGERPRINT_FILE, parse_fingerprint};
use crate::node::TLS_DIR;
use crate::wire::Schedule;

use super::CommandResult;

/// How to reach the sequencer.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The sequencer's QUIC address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4433")]
    pub server: SocketAddr,
    /// The certificate's SHA-256 fingerprint (64 hex digits); read from
    /// `<data-dir>/tls/fingerprint` when absent.
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
    /// The sequencer's data directory, to find its fingerprint.
    #[arg(long, value_name = "DIR", default_value = "./sealbatch-data")]
    pub data_dir: PathBuf,
    /// Seal only to batch keys certified by the keyper committee with this
    /// id (64 hex digits, as `sealbatch run` logs it); a sequencer without
    /// it is refused. Default: the committee the sequencer names is checked,
    /// and a sequencer in trusted-operator mode is accepted with a warning.
    #[arg(long, value_name = "HEX")]
    pub committee: Option<String>,
}

impl ServerArgs {
    /// The pinned fingerprint.
    ///
    /// # Errors
    ///
    /// The fingerprint file is missing or malformed.
    pub fn fingerprint(&self) -> Result<[u8; 32], Box<dyn std::error::Error + Send + Sync>> {
        if let Some(text) = &self.fingerprint {
            return Ok(parse_fingerprint(text)?);
        }
        let path = self.data_dir.join(TLS_DIR).join(FINGERPRINT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            format!(
                "reading {}: {error} (pass --fingerprint, or --data-dir of a sequencer on this machine)",
                path.display()
            )
        })?;
        Ok(parse_fingerprint(&text)?)
    }

    /// Connects and fetches the (verified) schedule.
    ///
    /// # Errors
    ///
    /// Connection or schedule failures.
    pub async fn connect(
        &self,
    ) -> Result<(Client, Schedule), Box<dyn std::error::Error + Send + Sync>> {
        let client = Client::connect(self.server, self.fingerprint()?).await?;
        if let Some(text) = &self.committee {
            let mut id = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut id)
                .map_err(|_| format!("--committee {text:?} is not 64 hex digits"))?;
            client.set_trust(crate::client::KeyTrust::Committee(id));
        }
        let schedule = client.schedule().await?;
        match client.custody() {
            Some(crate::client::KeyCustody::Operator) => eprintln!(
                "warning: the sequencer runs in trusted-operator mode: its operator holds every batch key"
            ),
            Some(crate::client::KeyCustody::Committee {
                id,
                threshold,
                keypers,
            }) if self.committee.is_none() => eprintln!(
                "batch keys certified by keyper committee {} ({threshold} of {keypers}); pin it with --committee",
                hex::encode(id)
            ),
            _ => {}
        }
        Ok((client, schedule))
    }
}

/// Reads an account key file (64 hex digits, the Ed25519 secret seed; a
/// [`secret_file`](crate::secret_file), so mode 0600).
///
/// # Errors
///
/// Missing, malformed or group/other-accessible file.
pub fn read_account_key(
    path: &Path,
) -> Result<ed25519_dalek::SigningKey, crate::secret_file::SecretFileError> {
    let seed = crate::secret_file::read_key32(path)?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

pub use crate::client::target_batch;

/// Unit result for commands.
pub type Done = CommandResult;

//! The node's secrets in the data directory, kept by
//! [`secret_file`](crate::secret_file)'s rule: the sequencer's signing key
//! seed, the custodian's master secret and the demo accounts' keys.

use std::path::Path;

use zeroize::Zeroizing;

use crate::secret_file::load_or_create_key32;

use super::{DEMO_ACCOUNTS, DEMO_ACCOUNTS_FILE, DEMO_OPERATOR_FILE, NodeError};

/// A fresh 32-byte secret from the operating system.
pub(super) fn random_secret() -> Zeroizing<[u8; 32]> {
    use rand_core::{OsRng, RngCore};
    let mut out = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(out.as_mut());
    out
}

/// The demo accounts' signing keys, created on first start.
///
/// # Errors
///
/// [`NodeError::SecretFile`].
pub fn demo_accounts(data_dir: &Path) -> Result<Vec<ed25519_dalek::SigningKey>, NodeError> {
    (0..DEMO_ACCOUNTS)
        .map(|i| {
            let path = data_dir.join(format!("{DEMO_ACCOUNTS_FILE}-{i}.key"));
            let seed = load_or_create_key32(&path, random_secret)?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        })
        .collect()
}

/// The demo operator's signing key, created on first use: in demo mode it
/// may sign operator deposits (`sealbatch operator deposit --key` with this
/// file).
///
/// # Errors
///
/// [`NodeError::SecretFile`].
pub fn demo_operator(data_dir: &Path) -> Result<ed25519_dalek::SigningKey, NodeError> {
    let seed = load_or_create_key32(&data_dir.join(DEMO_OPERATOR_FILE), random_secret)?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

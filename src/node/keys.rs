//! The node's key files in the data directory: the sequencer's signing key
//! seed and the demo accounts' keys.

use std::path::Path;

use super::{DEMO_ACCOUNTS, DEMO_ACCOUNTS_FILE, NodeError, io};

/// Reads a 32-byte secret file, or creates it (mode 0600, fsynced, directory
/// fsynced) from `fresh`.
pub(super) fn secret_file(
    path: &Path,
    fresh: impl FnOnce() -> [u8; 32],
) -> Result<[u8; 32], NodeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut out = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut out).map_err(|_| NodeError::BadKeyFile {
                path: path.to_path_buf(),
                reason: "expected 64 hex digits",
            })?;
            Ok(out)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = fresh();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io(path))?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(dir))?;
            }
            Ok(secret)
        }
        Err(e) => Err(NodeError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

pub(super) fn random_secret() -> [u8; 32] {
    use rand_core::{OsRng, RngCore};
    let mut out = [0u8; 32];
    OsRng.fill_bytes(&mut out);
    out
}

/// The demo accounts' signing keys, created on first start.
///
/// # Errors
///
/// [`NodeError::Io`] or [`NodeError::BadKeyFile`].
pub fn demo_accounts(data_dir: &Path) -> Result<Vec<ed25519_dalek::SigningKey>, NodeError> {
    (0..DEMO_ACCOUNTS)
        .map(|i| {
            let path = data_dir.join(format!("{DEMO_ACCOUNTS_FILE}-{i}.key"));
            let seed = secret_file(&path, random_secret)?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        })
        .collect()
}

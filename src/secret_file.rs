//! Secret files: one rule for every secret kept on disk — the sequencer's
//! signing key, the key custodian's master secret, account keys (`keygen`,
//! demo accounts) and the TLS private key.
//!
//! - **Created once**: `O_CREAT | O_EXCL` with mode 0600 (an existing file is
//!   never overwritten), written, fsynced, and its directory fsynced.
//! - **Read only when private**: a file with any group or other permission
//!   bit is refused ([`SecretFileError::Exposed`]), as is one larger than
//!   the caller's bound.
//! - **Zeroized**: what is read is returned in [`Zeroizing`] buffers.
//! - **One encoding for 32-byte secrets**: 64 hex digits and a newline
//!   ([`read_key32`], [`create_key32`]). A file of exactly 32 raw bytes, the
//!   form earlier versions wrote the master secret in, is read as well.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Permission bits a secret file must not have: any for group or others.
const NOT_PRIVATE: u32 = 0o077;

/// Largest 32-byte key file: 64 hex digits, a line break, and room for
/// surrounding whitespace.
const KEY32_FILE_BYTES_MAX: usize = 128;

/// A secret file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be opened, read, written or synced.
    #[error("{path}: {source}")]
    Io {
        /// The file (or its directory).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is readable or writable by group or others.
    #[error("{path}: mode {mode:o} lets group or others access a secret (want 0600)")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The contents are not what the file must hold.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretFileError + '_ {
    move |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `path` holding `contents` (mode 0600, never over an existing
/// file), fsyncs it and its directory.
///
/// # Errors
///
/// [`SecretFileError::Io`], also when the file exists.
pub fn create(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io(path))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Reads `path` whole, if it is private and at most `len_max` bytes.
///
/// # Errors
///
/// [`SecretFileError::Io`] (also `NotFound`), [`SecretFileError::Exposed`],
/// or [`SecretFileError::Malformed`] for a file over `len_max` bytes.
pub fn read(path: &Path, len_max: usize) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let file = OpenOptions::new().read(true).open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    let mode = meta.permissions().mode();
    if mode & NOT_PRIVATE != 0 {
        return Err(SecretFileError::Exposed {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    if meta.len() > len_max as u64 {
        return Err(SecretFileError::Malformed {
            path: path.to_path_buf(),
            reason: "larger than such a secret can be",
        });
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(len_max as u64 + 1)
        .read_to_end(&mut contents)
        .map_err(io(path))?;
    if contents.len() > len_max {
        return Err(SecretFileError::Malformed {
            path: path.to_path_buf(),
            reason: "larger than such a secret can be",
        });
    }
    Ok(contents)
}

/// Reads a 32-byte secret: 64 hex digits (surrounding whitespace ignored),
/// or exactly 32 raw bytes.
///
/// # Errors
///
/// As [`read`]; [`SecretFileError::Malformed`] for other contents.
pub fn read_key32(path: &Path) -> Result<Zeroizing<[u8; 32]>, SecretFileError> {
    let contents = read(path, KEY32_FILE_BYTES_MAX)?;
    let mut key = Zeroizing::new([0u8; 32]);
    if let Ok(raw) = <[u8; 32]>::try_from(contents.as_slice()) {
        *key = raw;
        return Ok(key);
    }
    hex::decode_to_slice(contents.trim_ascii(), key.as_mut()).map_err(|_| {
        SecretFileError::Malformed {
            path: path.to_path_buf(),
            reason: "expected 64 hex digits",
        }
    })?;
    Ok(key)
}

/// Creates a file holding the 32-byte secret `key` as 64 hex digits and a
/// newline.
///
/// # Errors
///
/// As [`create`].
pub fn create_key32(path: &Path, key: &[u8; 32]) -> Result<(), SecretFileError> {
    let mut text = Zeroizing::new([0u8; 65]);
    hex::encode_to_slice(key, &mut text[..64]).map_err(|_| SecretFileError::Malformed {
        path: path.to_path_buf(),
        reason: "cannot encode the key",
    })?;
    text[64] = b'\n';
    create(path, text.as_slice())
}

/// Reads the 32-byte secret at `path`, or, if there is no such file,
/// creates it from `fresh` (as [`create_key32`]).
///
/// # Errors
///
/// As [`read_key32`] and [`create_key32`].
pub fn load_or_create_key32(
    path: &Path,
    fresh: impl FnOnce() -> Zeroizing<[u8; 32]>,
) -> Result<Zeroizing<[u8; 32]>, SecretFileError> {
    match read_key32(path) {
        Err(SecretFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let key = fresh();
            create_key32(path, &key)?;
            Ok(key)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory with an unpredictable name, removed on drop.
    fn temp_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("sealbatch-secret-")
            .tempdir()
            .expect("creates a temporary directory")
    }

    #[test]
    fn created_private_read_back_and_never_overwritten() {
        let dir = temp_dir();
        let path = dir.path().join("a.key");
        let key = load_or_create_key32(&path, || Zeroizing::new([7; 32])).expect("creates");
        assert_eq!(*key, [7; 32]);
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).expect("reads"),
            format!("{}\n", "07".repeat(32))
        );
        let again = load_or_create_key32(&path, || Zeroizing::new([9; 32])).expect("reads");
        assert_eq!(*again, [7; 32], "an existing file is read, not replaced");
        assert!(matches!(
            create_key32(&path, &[9; 32]),
            Err(SecretFileError::Io { .. })
        ));
    }

    #[test]
    fn exposed_malformed_and_missing_files_are_refused() {
        let dir = temp_dir();
        let path = dir.path().join("b.key");
        create_key32(&path, &[1; 32]).expect("creates");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            read_key32(&path),
            Err(SecretFileError::Exposed { mode: 0o640, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        for bad in [&b"abc"[..], &[1u8; 31], &[b'0'; 66], &[b'0'; 200]] {
            std::fs::write(&path, bad).expect("writes");
            assert!(
                matches!(read_key32(&path), Err(SecretFileError::Malformed { .. })),
                "{bad:?}"
            );
        }
        let missing = dir.path().join("no/such/dir/c.key");
        assert!(matches!(
            load_or_create_key32(&missing, || Zeroizing::new([0; 32])),
            Err(SecretFileError::Io { .. })
        ));
    }

    #[test]
    fn raw_32_byte_files_of_earlier_versions_still_read() {
        let dir = temp_dir();
        let path = dir.path().join("custodian.key");
        create(&path, &[0xab; 32]).expect("creates");
        assert_eq!(*read_key32(&path).expect("reads"), [0xab; 32]);
    }
}

//! Storage faults on demand: a [`Storage`] wrapper that fails or stalls the
//! operations of the storage inside it when told to, so that the node's
//! storage-fault policy can be tested on the real file system (a full disk,
//! `EIO` on write or on `fsync`, an `fsync` that hangs).
//!
//! Built without [`Faults`] (as the node is outside tests), every call goes
//! straight through; with them, each operation takes one uncontended lock,
//! far below the cost of the operation itself.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::storage::{Storage, StorageFile};

/// A fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Appends write half their bytes, then fail with `ENOSPC` (as a full
    /// file system does).
    NoSpace,
    /// Appends fail with `EIO` before writing anything.
    WriteError,
    /// `fsync` (data or directory) fails with `EIO`.
    SyncError,
    /// `fsync` (data) sleeps this long, then succeeds.
    SyncStall(Duration),
}

/// The faults armed now, shared between a test and the storage it wraps.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<Vec<Fault>>,
}

impl Faults {
    /// No fault armed.
    #[must_use]
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// Arms `fault` from the next operation on, until [`Faults::clear`].
    pub fn arm(&self, fault: Fault) {
        self.lock().push(fault);
    }

    /// Disarms every fault (a full disk that was given space again).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn any(&self, pick: impl Fn(&Fault) -> bool) -> Option<Fault> {
        self.lock().iter().copied().find(pick)
    }

    fn stall(&self) -> Option<Duration> {
        self.lock().iter().find_map(|f| match f {
            Fault::SyncStall(d) => Some(*d),
            _ => None,
        })
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A [`Storage`] whose operations fail or stall as its [`Faults`] say.
#[derive(Clone, Debug)]
pub struct FaultyStorage<S> {
    inner: S,
    faults: Option<Arc<Faults>>,
}

impl<S> FaultyStorage<S> {
    /// `inner`, failing as `faults` says (`None`: never).
    pub fn new(inner: S, faults: Option<Arc<Faults>>) -> FaultyStorage<S> {
        FaultyStorage { inner, faults }
    }

    /// The storage inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    type File = FaultyFile<S::File>;

    fn list(&mut self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn open(&mut self, name: &str) -> io::Result<Self::File> {
        Ok(FaultyFile {
            inner: self.inner.open(name)?,
            faults: self.faults.clone(),
        })
    }

    fn create(&mut self, name: &str) -> io::Result<Self::File> {
        if let Some(faults) = &self.faults
            && faults
                .any(|f| matches!(f, Fault::NoSpace | Fault::WriteError))
                .is_some()
        {
            return Err(errno(libc::ENOSPC));
        }
        Ok(FaultyFile {
            inner: self.inner.create(name)?,
            faults: self.faults.clone(),
        })
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        if let Some(faults) = &self.faults
            && faults.any(|f| matches!(f, Fault::SyncError)).is_some()
        {
            return Err(errno(libc::EIO));
        }
        self.inner.sync_dir()
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.inner.path_of(name)
    }
}

/// A file of [`FaultyStorage`].
#[derive(Debug)]
pub struct FaultyFile<F> {
    inner: F,
    faults: Option<Arc<Faults>>,
}

impl<F: StorageFile> StorageFile for FaultyFile<F> {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.inner.read_all()
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self
            .faults
            .as_ref()
            .and_then(|faults| faults.any(|f| matches!(f, Fault::NoSpace | Fault::WriteError)))
        {
            Some(Fault::NoSpace) => {
                self.inner.append(&bytes[..bytes.len() / 2])?;
                Err(errno(libc::ENOSPC))
            }
            Some(_) => Err(errno(libc::EIO)),
            None => self.inner.append(bytes),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if let Some(faults) = &self.faults {
            if let Some(stall) = faults.stall() {
                std::thread::sleep(stall);
            }
            if faults.any(|f| matches!(f, Fault::SyncError)).is_some() {
                return Err(errno(libc::EIO));
            }
        }
        self.inner.sync_data()
    }

    fn truncate_sync(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate_sync(len)
    }
}

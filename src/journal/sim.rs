//! A simulated disk for deterministic crash tests: [`SimStorage`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::storage::{Storage, StorageFile};

#[derive(Debug, Default)]
struct SimFile {
    /// What a read sees now.
    data: Vec<u8>,
    /// How many bytes of `data` survive a crash for sure (the file is
    /// append-only, so the durable bytes are always a prefix).
    durable_len: usize,
}

#[derive(Debug)]
struct SimDisk {
    files: BTreeMap<String, SimFile>,
    durable_names: BTreeSet<String>,
    /// Files removed since the last directory sync, as they were: a crash
    /// may bring back those whose entry was durable.
    removed: BTreeMap<String, SimFile>,
    ops: u64,
    crash_at: Option<u64>,
    fail_at: Option<u64>,
    crashed: bool,
    rng: ChaCha8Rng,
}

impl SimDisk {
    /// Counts one mutating operation and decides whether it fails.
    fn begin_op(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other("simulated machine is down"));
        }
        let op = self.ops;
        self.ops += 1;
        if self.crash_at.is_some_and(|at| op >= at) {
            self.crashed = true;
            return Err(io::Error::other(format!("simulated crash at op {op}")));
        }
        if self.fail_at == Some(op) {
            return Err(io::Error::other(format!("simulated I/O error at op {op}")));
        }
        Ok(())
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.rng.next_u64() % bound
        }
    }

    fn file(&mut self, name: &str) -> io::Result<&mut SimFile> {
        self.files
            .get_mut(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_string()))
    }
}

/// A simulated disk for deterministic crash tests.
///
/// [`SimStorage`] keeps, for every file, the bytes that are durable apart from
/// the bytes that were written but not yet synced, and likewise for directory
/// entries. [`SimStorage::crash`] then does what a power loss may do: it keeps
/// a seeded random prefix of each file's unsynced bytes (sometimes with its
/// end filled with garbage or zeros, as a torn sector would read) and drops
/// files whose directory entry was never synced. Mutating operations are
/// counted, so a test can stop the machine at any write point
/// ([`SimStorage::crash_at_op`]) or fail a single operation
/// ([`SimStorage::fail_op`]). [`SimStorage::restart`] models the process
/// dying while the OS keeps its page cache (nothing lost, nothing synced).
///
/// Clones share one disk: the test keeps a clone to crash and inspect the
/// disk while the journal owns another.
#[derive(Clone, Debug)]
pub struct SimStorage {
    disk: Arc<Mutex<SimDisk>>,
}

impl SimStorage {
    /// An empty simulated directory whose crashes and partial writes are
    /// drawn from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> SimStorage {
        SimStorage {
            disk: Arc::new(Mutex::new(SimDisk {
                files: BTreeMap::new(),
                durable_names: BTreeSet::new(),
                removed: BTreeMap::new(),
                ops: 0,
                crash_at: None,
                fail_at: None,
                crashed: false,
                rng: ChaCha8Rng::seed_from_u64(seed),
            })),
        }
    }

    fn disk(&self) -> MutexGuard<'_, SimDisk> {
        self.disk
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Number of mutating operations (create, append, sync, truncate)
    /// attempted so far.
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.disk().ops
    }

    /// Stops the machine at mutating operation number `op` (counted from 0
    /// since creation): that operation and every later one fail. An append
    /// that fails this way writes a random prefix of its bytes first.
    pub fn crash_at_op(&self, op: u64) {
        self.disk().crash_at = Some(op);
    }

    /// Fails mutating operation number `op` only, as a transient I/O error.
    pub fn fail_op(&self, op: u64) {
        self.disk().fail_at = Some(op);
    }

    /// Simulates a power loss and restart: each file keeps its durable bytes
    /// plus a random prefix of its unsynced ones (possibly ending in garbage
    /// or zeros), files never made durable by a directory sync may vanish,
    /// and the machine runs again with no failure scheduled.
    pub fn crash(&self) {
        let mut disk = self.disk();
        let removed = std::mem::take(&mut disk.removed);
        for (name, file) in removed {
            if disk.durable_names.contains(&name) && disk.below(2) == 0 {
                disk.files.insert(name, file);
            }
        }
        let names: Vec<String> = disk.files.keys().cloned().collect();
        for name in names {
            if !disk.durable_names.contains(&name) && disk.below(2) == 0 {
                disk.files.remove(&name);
                continue;
            }
            let Some(file) = disk.files.remove(&name) else {
                continue;
            };
            let durable_len = file.durable_len.min(file.data.len());
            let unsynced_len = file.data.len().saturating_sub(durable_len) as u64;
            let keep = disk.below(unsynced_len + 1) as usize;
            let mut bytes = file.data;
            bytes.truncate(durable_len + keep);
            if keep > 0 && disk.below(3) == 0 {
                let from = durable_len + disk.below(keep as u64) as usize;
                let zeros = disk.below(2) == 0;
                for byte in &mut bytes[from..] {
                    *byte = if zeros { 0 } else { disk.rng.next_u64() as u8 };
                }
            }
            let durable_len = bytes.len();
            disk.files.insert(
                name,
                SimFile {
                    data: bytes,
                    durable_len,
                },
            );
        }
        disk.durable_names = disk.files.keys().cloned().collect();
        disk.crash_at = None;
        disk.fail_at = None;
        disk.crashed = false;
    }

    /// Simulates the process dying while the operating system lives on:
    /// every byte written stays readable, nothing more becomes durable, and
    /// the machine runs again with no failure scheduled. A later
    /// [`SimStorage::crash`] can still lose what was never synced.
    pub fn restart(&self) {
        let mut disk = self.disk();
        disk.crash_at = None;
        disk.fail_at = None;
        disk.crashed = false;
    }

    /// Names of the files present now.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        self.disk().files.keys().cloned().collect()
    }

    /// The current (readable) bytes of a file.
    #[must_use]
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.disk().files.get(name).map(|file| file.data.clone())
    }

    /// Replaces a file's bytes, durably, as a disk fault would: for
    /// corruption tests.
    pub fn set_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut disk = self.disk();
        disk.durable_names.insert(name.to_string());
        let durable_len = bytes.len();
        disk.files.insert(
            name.to_string(),
            SimFile {
                data: bytes,
                durable_len,
            },
        );
    }
}

impl Storage for SimStorage {
    type File = SimFileHandle;

    fn list(&mut self) -> io::Result<Vec<String>> {
        let disk = self.disk();
        if disk.crashed {
            return Err(io::Error::other("simulated machine is down"));
        }
        Ok(disk.files.keys().cloned().collect())
    }

    fn open(&mut self, name: &str) -> io::Result<SimFileHandle> {
        self.disk().file(name)?;
        Ok(SimFileHandle {
            disk: self.disk.clone(),
            name: name.to_string(),
        })
    }

    fn create(&mut self, name: &str) -> io::Result<SimFileHandle> {
        let mut disk = self.disk();
        disk.begin_op()?;
        if disk.files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_string(),
            ));
        }
        disk.removed.remove(name);
        disk.files.insert(name.to_string(), SimFile::default());
        Ok(SimFileHandle {
            disk: self.disk.clone(),
            name: name.to_string(),
        })
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let mut disk = self.disk();
        disk.begin_op()?;
        let file = disk
            .files
            .remove(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_string()))?;
        disk.removed.insert(name.to_string(), file);
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        let mut disk = self.disk();
        disk.begin_op()?;
        disk.durable_names = disk.files.keys().cloned().collect();
        disk.removed.clear();
        Ok(())
    }

    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from("sim").join(name)
    }
}

/// A file of [`SimStorage`].
#[derive(Debug)]
pub struct SimFileHandle {
    disk: Arc<Mutex<SimDisk>>,
    name: String,
}

impl SimFileHandle {
    fn disk(&self) -> MutexGuard<'_, SimDisk> {
        self.disk
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl StorageFile for SimFileHandle {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut disk = self.disk();
        if disk.crashed {
            return Err(io::Error::other("simulated machine is down"));
        }
        Ok(disk.file(&self.name)?.data.clone())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        if let Err(error) = disk.begin_op() {
            if disk.crashed {
                let part = disk.below(bytes.len() as u64 + 1) as usize;
                if let Ok(file) = disk.file(&self.name) {
                    file.data.extend_from_slice(&bytes[..part]);
                }
            }
            return Err(error);
        }
        disk.file(&self.name)?.data.extend_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut disk = self.disk();
        disk.begin_op()?;
        let file = disk.file(&self.name)?;
        file.durable_len = file.data.len();
        Ok(())
    }

    fn truncate_sync(&mut self, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        disk.begin_op()?;
        let file = disk.file(&self.name)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        file.data.truncate(len);
        file.durable_len = file.data.len();
        Ok(())
    }
}

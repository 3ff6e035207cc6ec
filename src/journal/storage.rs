//! The storage the journal writes through: a directory of append-only files.
//!
//! [`Storage`] is the seam that lets tests replace the disk with
//! `SimStorage` (feature `test-support`), which loses unsynced bytes on a
//! simulated crash and fails I/O on purpose. [`FsStorage`] is the real one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A directory of files, each named by a plain file name (no separators).
///
/// Durability contract, which the journal relies on and
/// `SimStorage` (feature `test-support`) enforces:
/// - bytes given to [`StorageFile::append`] are durable only after a
///   later [`StorageFile::sync_data`] on that file returned `Ok`;
/// - a file made by [`Storage::create`] survives a crash, and one removed by
///   [`Storage::remove`] stays removed, only after a later
///   [`Storage::sync_dir`] returned `Ok`;
/// - [`StorageFile::truncate_sync`] is durable when it returns `Ok`.
pub trait Storage: Send {
    /// The handle to one open file.
    type File: StorageFile;

    /// Names of all files in the directory, in any order.
    ///
    /// # Errors
    ///
    /// The I/O error reading the directory.
    fn list(&mut self) -> io::Result<Vec<String>>;

    /// Opens an existing file for reading and appending.
    ///
    /// # Errors
    ///
    /// The I/O error, `NotFound` if there is no such file.
    fn open(&mut self, name: &str) -> io::Result<Self::File>;

    /// Creates a new, empty file; fails if the name exists.
    ///
    /// # Errors
    ///
    /// The I/O error, `AlreadyExists` if the name is taken.
    fn create(&mut self, name: &str) -> io::Result<Self::File>;

    /// Removes a file. Like a creation, the removal survives a crash only
    /// after a later [`Storage::sync_dir`] returned `Ok`.
    ///
    /// # Errors
    ///
    /// The I/O error, `NotFound` if there is no such file.
    fn remove(&mut self, name: &str) -> io::Result<()>;

    /// Makes the directory's entries (files created or removed so far)
    /// durable.
    ///
    /// # Errors
    ///
    /// The I/O error of the directory fsync.
    fn sync_dir(&mut self) -> io::Result<()>;

    /// Where the named file lives, for error messages.
    fn path_of(&self, name: &str) -> PathBuf;
}

/// One open file of a [`Storage`].
pub trait StorageFile: Send {
    /// Reads the whole file.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn read_all(&mut self) -> io::Result<Vec<u8>>;

    /// Writes `bytes` at the end of the file (not yet durable).
    ///
    /// # Errors
    ///
    /// The I/O error; part of `bytes` may have been written.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes every byte appended so far durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The I/O error. After an error nothing written since the last
    /// successful sync may be assumed durable, nor even readable.
    fn sync_data(&mut self) -> io::Result<()>;

    /// Cuts the file to `len` bytes and makes that durable (`set_len` then
    /// `sync_all`).
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn truncate_sync(&mut self, len: u64) -> io::Result<()>;
}

/// The real file system: a directory on disk.
#[derive(Clone, Debug)]
pub struct FsStorage {
    dir: PathBuf,
}

impl FsStorage {
    /// Uses `dir` as the journal directory, creating it (and its parents)
    /// if missing.
    ///
    /// # Errors
    ///
    /// The I/O error creating the directory.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<FsStorage> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(FsStorage { dir })
    }

    /// The journal directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for FsStorage {
    type File = FsFile;

    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let is_file = match entry.file_type() {
                Ok(kind) => kind.is_file(),
                // Removed since it was listed (the pruning thread): gone.
                Err(error) if error.kind() == io::ErrorKind::NotFound => false,
                Err(error) => return Err(error),
            };
            if is_file && let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&mut self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(FsFile { file })
    }

    fn create(&mut self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.dir.join(name))?;
        Ok(FsFile { file })
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A file of [`FsStorage`].
#[derive(Debug)]
pub struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::End(0))?;
        self.file.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate_sync(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()
    }
}

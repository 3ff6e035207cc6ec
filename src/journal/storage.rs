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
        list_files(&self.dir)
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
        read_whole(&mut self.file)
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

/// The names of the regular files in `dir`.
fn list_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
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

/// The whole of `file`, from its start.
fn read_whole(file: &mut File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A journal directory on disk opened only to read
/// ([`Journal::open_dir_read_only`](super::Journal::open_dir_read_only)):
/// files are opened read-only, and every call that would change the
/// directory or a file fails with [`io::ErrorKind::PermissionDenied`], so
/// that a reader (`sealbatch verify`) cannot change a journal, even one a
/// live sequencer is writing, or one on a read-only mount.
#[derive(Clone, Debug)]
pub struct ReadOnlyFsStorage {
    dir: PathBuf,
}

impl ReadOnlyFsStorage {
    /// Reads the existing directory `dir` (nothing is created).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] if `dir` is not a directory, or the I/O
    /// error finding out.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<ReadOnlyFsStorage> {
        let dir = dir.as_ref().to_path_buf();
        if !fs::metadata(&dir)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(ReadOnlyFsStorage { dir })
    }

    /// The journal directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The error of every write to a read-only storage.
fn read_only(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("the journal is open read-only: {what} refused"),
    )
}

impl Storage for ReadOnlyFsStorage {
    type File = ReadOnlyFile;

    fn list(&mut self) -> io::Result<Vec<String>> {
        list_files(&self.dir)
    }

    fn open(&mut self, name: &str) -> io::Result<ReadOnlyFile> {
        let file = OpenOptions::new().read(true).open(self.dir.join(name))?;
        Ok(ReadOnlyFile { file })
    }

    fn create(&mut self, _name: &str) -> io::Result<ReadOnlyFile> {
        Err(read_only("creating a file"))
    }

    fn remove(&mut self, _name: &str) -> io::Result<()> {
        Err(read_only("removing a file"))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        Err(read_only("syncing the directory"))
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A file of [`ReadOnlyFsStorage`], opened read-only: it reads, and refuses
/// every write.
#[derive(Debug)]
pub struct ReadOnlyFile {
    file: File,
}

impl StorageFile for ReadOnlyFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        read_whole(&mut self.file)
    }

    fn append(&mut self, _bytes: &[u8]) -> io::Result<()> {
        Err(read_only("appending"))
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Err(read_only("syncing"))
    }

    fn truncate_sync(&mut self, _len: u64) -> io::Result<()> {
        Err(read_only("truncating"))
    }
}

//! The file and directory operations the engine needs, behind a trait.
//!
//! [`FsStorage`] is the real thing (positional writes, `fdatasync`, `mmap` for reads).
//! `SimStorage` (feature `test-support`) keeps files in memory and can lose everything that was not fsynced, tear the
//! last write, fail an fsync with `EIO` or a write with `ENOSPC`: tests use it to play power
//! losses and disk faults that a killed process cannot show (a SIGKILL keeps the page cache).
//!
//! The storage layer knows nothing about records: it moves bytes.

mod fs;
#[cfg(any(test, feature = "test-support"))]
mod sim;
#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod uring;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use fs::FsStorage;
#[cfg(any(test, feature = "test-support"))]
pub use sim::{Fault, PowerLoss, SimCounters, SimStorage};
#[cfg(all(feature = "io-uring", target_os = "linux"))]
pub use uring::UringStorage;

/// Which system calls the real storage writes and fsyncs with.
///
/// # Examples
///
/// ```
/// use stratalog::storage::{IoEngine, OpenMode, real_storage};
///
/// assert_eq!("uring".parse(), Ok(IoEngine::IoUring));
/// assert_eq!(IoEngine::default(), IoEngine::Std);
/// // Asking for io_uring gives it where the kernel allows it, else the std engine.
/// let (storage, used) = real_storage(IoEngine::IoUring);
/// assert!(matches!(used, IoEngine::IoUring | IoEngine::Std));
/// let tmp = tempfile::tempdir().unwrap();
/// let file = storage.open(&tmp.path().join("f"), OpenMode::CreateNew)?;
/// file.write_at(b"abc", 0)?;
/// assert_eq!(file.len()?, 3);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoEngine {
    /// `pwrite` and `fdatasync` ([`FsStorage`]). The default, by measurement
    /// (`stratalog bench --compare-io`, docs/BENCHMARKS.md): io_uring was 0.4–0.6x std with 64
    /// durable writers and not measurably faster otherwise, since every operation is waited
    /// for where it is issued (one submission per call, and io_uring runs fsync in a worker).
    #[default]
    Std,
    /// io_uring ([`UringStorage`], feature `io-uring`, Linux): falls back to [`IoEngine::Std`]
    /// with a warning when the kernel or the build does not allow it.
    IoUring,
}

impl std::str::FromStr for IoEngine {
    type Err = String;

    /// `std` or `uring`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "std" => Ok(IoEngine::Std),
            "uring" | "io-uring" | "io_uring" => Ok(IoEngine::IoUring),
            _ => Err(format!("bad I/O engine {s:?}; use std or uring")),
        }
    }
}

/// The real file system, written with `engine` if this kernel and build allow it, else with
/// [`IoEngine::Std`] (logged as a warning). Returns the engine actually used.
pub fn real_storage(engine: IoEngine) -> (Arc<dyn Storage>, IoEngine) {
    match engine {
        IoEngine::Std => (FsStorage::shared(), IoEngine::Std),
        #[cfg(all(feature = "io-uring", target_os = "linux"))]
        IoEngine::IoUring => match UringStorage::shared() {
            Ok(storage) => (storage, IoEngine::IoUring),
            Err(e) => {
                tracing::warn!(error = %e, "the kernel refused io_uring; writing with pwrite/fdatasync");
                (FsStorage::shared(), IoEngine::Std)
            }
        },
        #[cfg(not(all(feature = "io-uring", target_os = "linux")))]
        IoEngine::IoUring => {
            tracing::warn!(
                "built without the io-uring feature (or not on Linux); writing with pwrite/fdatasync"
            );
            (FsStorage::shared(), IoEngine::Std)
        }
    }
}

/// How [`Storage::open`] treats a missing or existing file.
///
/// # Examples
///
/// ```
/// use stratalog::storage::{FsStorage, OpenMode, Storage};
///
/// let tmp = tempfile::tempdir().unwrap();
/// let path = tmp.path().join("f");
/// assert!(FsStorage.open(&path, OpenMode::Existing).is_err()); // not there yet
/// FsStorage.open(&path, OpenMode::CreateNew)?.write_at(b"x", 0)?;
/// assert!(FsStorage.open(&path, OpenMode::CreateNew).is_err()); // there now
/// // A file opened with `Read` refuses writes.
/// let read_only = FsStorage.open(&path, OpenMode::Read)?;
/// assert!(read_only.write_at(b"y", 0).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading and writing; fail if it does not exist.
    Existing,
    /// Open an existing file for reading only (`O_RDONLY`); fail if it does not exist. Writes,
    /// `set_len` and `allocate` through the handle fail. Works on a read-only mount and on
    /// files the process may not write. Read-only opens and `stratalog verify` use only this.
    Read,
    /// Create the file; fail if it exists.
    CreateNew,
    /// Open the file, creating it empty if it does not exist.
    CreateOrOpen,
}

/// A file system, real or simulated.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use stratalog::storage::{FsStorage, OpenMode, Storage};
///
/// // Code written against `&dyn Storage` runs on the real file system or a simulated one.
/// fn replace(storage: &dyn Storage, dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
///     let tmp = dir.join("file.tmp");
///     storage.open(&tmp, OpenMode::CreateNew)?.write_and_sync(bytes, 0)?;
///     storage.rename(&tmp, &dir.join("file"))?;
///     storage.sync_dir(dir)
/// }
/// let dir = tempfile::tempdir().unwrap();
/// replace(&FsStorage, dir.path(), b"v1")?;
/// assert!(FsStorage.exists(&dir.path().join("file")));
/// assert!(!FsStorage.exists(&dir.path().join("file.tmp")));
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Opens a file for reading and writing, or for reading only with [`OpenMode::Read`].
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a directory and its parents. Each new directory's entry is not durable until
    /// [`Storage::sync_dir`] of its parent: use [`create_dir_durable`] to do both.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (files only, no `.`/`..`), in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file. Not durable until [`Storage::sync_dir`] of its directory.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to`. Not durable until [`Storage::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes an empty directory. Not durable until [`Storage::sync_dir`] of its parent.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes of files and of directories)
    /// durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// True if a file exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Takes an exclusive lock on `path` (created if missing) for as long as the returned guard
    /// lives; fails with `WouldBlock` if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// The directory holding `path`, as a path that can be opened: `.` for a bare relative name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        Some(_) => Path::new("."),
        None => path,
    }
}

/// Creates `dir` and its missing parents, durably: after it returns, every directory it created
/// survives a power loss, because the parent of each was fsynced after the creation (a new
/// directory's entry lives in its parent, and only an fsync of the parent makes it durable).
/// Returns true if `dir` itself was created.
///
/// A directory that already existed is not synced into its parent here: a caller that puts
/// data it acknowledges into a directory someone else may have created (a new log in a
/// directory made by `mkdir`) fsyncs [`parent_dir`] itself, once.
pub fn create_dir_durable(storage: &dyn Storage, dir: &Path) -> io::Result<bool> {
    // The missing directories, deepest first.
    let missing: Vec<&Path> = dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| !storage.exists(a))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    storage.create_dir_all(dir)?;
    // Deepest first: the entry of each new directory lives in the next one up.
    for created in &missing {
        storage.sync_dir(parent_dir(created))?;
    }
    Ok(true)
}

/// Held while a log directory is locked.
///
/// # Examples
///
/// ```
/// use stratalog::storage::{FsStorage, Storage};
///
/// let tmp = tempfile::tempdir().unwrap();
/// let path = tmp.path().join(".lock");
/// let guard = FsStorage.lock(&path)?;
/// // Held: a second lock fails.
/// assert!(FsStorage.lock(&path).is_err());
/// drop(guard);
/// // Released with the guard.
/// let _again = FsStorage.lock(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// An open file.
///
/// # Examples
///
/// ```
/// use stratalog::storage::{FsStorage, OpenMode, Storage};
///
/// let tmp = tempfile::tempdir().unwrap();
/// let file = FsStorage.open(&tmp.path().join("f"), OpenMode::CreateNew)?;
/// file.write_at(b"hello world", 0)?;
/// file.sync()?;
/// let mut buf = [0u8; 5];
/// file.read_at(&mut buf, 6)?;
/// assert_eq!(&buf, b"world");
/// // Allocated bytes read as zeros.
/// file.allocate(11, 5)?;
/// assert_eq!(file.len()?, 16);
/// file.set_len(5)?;
/// assert_eq!(file.len()?, 5);
/// # Ok::<(), std::io::Error>(())
/// ```
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's emptiness is never asked on its own: `len` is compared with positions"
)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Writes all of `buf` at byte `pos`. On error, a prefix of `buf` may have been written.
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Writes `bufs` one after the other from byte `pos`, as one write (`pwritev`): the log
    /// writes a batch's header and its borrowed payload this way without copying them into one
    /// buffer. On error, a prefix may have been written. The default copies the pieces into one
    /// buffer and calls [`StorageFile::write_at`] once, so a storage that counts or tears
    /// writes sees one write.
    fn write_vectored_at(&self, bufs: &[&[u8]], pos: u64) -> io::Result<()> {
        match bufs {
            [one] => self.write_at(one, pos),
            _ => self.write_at(&bufs.concat(), pos),
        }
    }
    /// Reads exactly `buf.len()` bytes at byte `pos`.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Makes every write so far, and the file's length, durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Writes all of `buf` at `pos`, then makes it durable; the fsync never completes before
    /// the write (io_uring submits the two linked, in one system call).
    fn write_and_sync(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.write_at(buf, pos)?;
        self.sync()
    }
    /// Gives the file blocks for `pos..pos + len` without writing data (`fallocate`), growing
    /// its length to at least `pos + len`; the new bytes read as zeros. The default writes
    /// zeros.
    fn allocate(&self, pos: u64, len: u64) -> io::Result<()> {
        let mut at = pos;
        while at < pos + len {
            let n = (pos + len - at).min(ZEROS.len() as u64);
            self.write_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        Ok(())
    }
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Sets the file's length. Callers must never shrink a file that may be mapped.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Bytes `0..len` of the file for reading without a copy. `len` may exceed the file's
    /// current length (the real storage maps it so that later appends become visible through
    /// the same mapping); callers read only bytes that were written.
    fn map(&self, len: u64) -> io::Result<Mapping>;
    /// A descriptor of this file to send its bytes to a socket from (`sendfile`), closed when
    /// dropped: a duplicate of the file's own, or for a sealed segment's mapping a new one of
    /// the same file. `None` (the default) for a storage without descriptors, such as the
    /// simulated one: callers then write the mapped bytes.
    fn send_fd(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }
}

/// Zeros to write from (in the binary's bss: no memory until read).
pub(crate) static ZEROS: [u8; 256 << 10] = [0; 256 << 10];

/// Bytes of a file made readable by [`StorageFile::map`].
///
/// # Examples
///
/// ```
/// use stratalog::storage::{FsStorage, OpenMode, Storage};
///
/// let tmp = tempfile::tempdir().unwrap();
/// let file = FsStorage.open(&tmp.path().join("f"), OpenMode::CreateNew)?;
/// file.write_at(b"abc", 0)?;
/// let mapping = file.map(4096)?;
/// assert_eq!(&mapping.bytes[..3], b"abc");
/// // The real storage's mapping is live: a later write shows through it.
/// assert!(mapping.live);
/// file.write_at(b"d", 3)?;
/// assert_eq!(&mapping.bytes[..4], b"abcd");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The bytes. For the real storage they point into a shared mapping of the file.
    pub bytes: Bytes,
    /// True if later writes to the file show through `bytes` (a real mapping). False if `bytes`
    /// is a copy taken at the time of the call (the simulated storage).
    pub live: bool,
}

/// Reads a whole small file.
pub(crate) fn read_all(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = file.len()?;
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to read"))?;
    let mut buf = vec![0u8; len];
    file.read_at(&mut buf, 0)?;
    Ok(buf)
}

/// Asks the kernel to map the pages of `bytes` (a part of a file mapping) in one call
/// (`MADV_POPULATE_READ`, Linux 5.14 and later), instead of one page fault per few pages on
/// first touch. A hint only: errors are ignored (an older kernel, or memory that is not a
/// mapping), and elsewhere than Linux it does nothing.
#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "madvise on a mapping: see the SAFETY comment inside"
)]
pub(crate) fn populate(bytes: &[u8]) {
    let page = rustix::param::page_size();
    let start = bytes.as_ptr() as usize & !(page - 1);
    let end = bytes.as_ptr() as usize + bytes.len();
    if end <= start {
        return;
    }
    // SAFETY: the range covers the pages of `bytes`, which is borrowed (so mapped) for the
    // whole call; MADV_POPULATE_READ only faults pages in (it fails with EFAULT instead of
    // raising SIGBUS) and changes no byte.
    unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            end - start,
            libc::MADV_POPULATE_READ,
        );
    }
}

/// Elsewhere than Linux pages are faulted in as they are touched.
#[cfg(not(target_os = "linux"))]
pub(crate) fn populate(_bytes: &[u8]) {}

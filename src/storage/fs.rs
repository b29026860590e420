//! The real Linux storage: `pwrite`, `fdatasync`, `mmap`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::{LockGuard, Mapping, OpenMode, Storage, StorageFile};

/// Files on the local file system.
///
/// # Examples
///
/// ```
/// use stratalog::storage::{FsStorage, OpenMode, Storage};
///
/// let tmp = tempfile::tempdir().unwrap();
/// let path = tmp.path().join("data");
/// let file = FsStorage.open(&path, OpenMode::CreateNew)?;
/// file.write_and_sync(b"hello", 0)?;
/// assert_eq!(file.len()?, 5);
/// assert_eq!(FsStorage.list(tmp.path())?, vec!["data".to_string()]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

impl FsStorage {
    /// The real file system, shared.
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(FsStorage)
    }
}

#[derive(Debug)]
struct FsFile {
    file: File,
}

/// Opens a file for reading and writing (or only reading) as `mode` says.
pub(super) fn open_file(path: &Path, mode: OpenMode) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(mode != OpenMode::Read);
    match mode {
        OpenMode::Existing | OpenMode::Read => {}
        OpenMode::CreateNew => {
            options.create_new(true);
        }
        OpenMode::CreateOrOpen => {
            options.create(true);
        }
    }
    options.open(path)
}

#[derive(Debug)]
struct FsLock {
    _file: File,
}

impl LockGuard for FsLock {}

impl Storage for FsStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(FsFile {
            file: open_file(path, mode)?,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(FsLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl StorageFile for FsFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], pos: u64) -> io::Result<()> {
        pwritev_all(&self.file, bufs, pos)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, pos: u64, len: u64) -> io::Result<()> {
        allocate(&self.file, pos, len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        map_file(&self.file, len)
    }

    fn send_fd(&self) -> Option<std::os::fd::OwnedFd> {
        self.file.try_clone().ok().map(Into::into)
    }
}

/// `fallocate(2)` of `pos..pos + len`, growing the file's length.
pub(super) fn allocate(file: &File, pos: u64, len: u64) -> io::Result<()> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), pos, len)?;
    Ok(())
}

/// Maps bytes `0..len` of `file` read-only and shared (see [`StorageFile::map`]).
#[expect(
    unsafe_code,
    reason = "mapping a file is `unsafe`: see the SAFETY comment inside"
)]
pub(super) fn map_file(file: &File, len: u64) -> io::Result<Mapping> {
    if len == 0 {
        return Ok(Mapping {
            bytes: Bytes::new(),
            live: true,
        });
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("mapping too large"))?;
    // SAFETY: the mapping is read-only and shared. The engine never shrinks a segment or index
    // file below what readers were given while it may be mapped (truncation writes a new file
    // and renames it over the old one, and the old inode lives on until its last mapping is
    // dropped; sealing trims only preallocated zeros past the last batch), and readers only touch
    // bytes that were written before they were published, so no access reaches past the end
    // of the file (no SIGBUS). Other processes must not modify the files (the log directory is
    // locked). See docs/SAFETY.md.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    Ok(Mapping {
        bytes: Bytes::from_owner(map),
        live: true,
    })
}

/// Writes every byte of `bufs` at `pos` with `pwritev`, resuming after a short write or an
/// interruption (the kernel writes at most `IOV_MAX` pieces per call, so more go in turns).
pub(crate) fn pwritev_all(file: &File, bufs: &[&[u8]], mut pos: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const IOV_MAX: usize = 1024;
    let mut bufs: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    let mut first = 0;
    while first < bufs.len() {
        let iov: Vec<libc::iovec> = bufs[first..bufs.len().min(first + IOV_MAX)]
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let offset = libc::off_t::try_from(pos).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "write position past off_t")
        })?;
        #[expect(
            unsafe_code,
            reason = "pwritev has no safe wrapper in std: see the SAFETY comment"
        )]
        // SAFETY: every iovec points at a live `&[u8]` borrowed for this call (`bufs`), with its
        // exact length; pwritev only reads them. `iov.len()` is at most IOV_MAX and fits a c_int,
        // and the descriptor belongs to `file`, which outlives the call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut n = n as usize;
        pos += n as u64;
        // Skip the pieces written whole, and the written prefix of a piece written in part.
        while n > 0 {
            let piece = bufs[first];
            if n >= piece.len() {
                n -= piece.len();
                first += 1;
            } else {
                bufs[first] = &piece[n..];
                n = 0;
            }
        }
    }
    Ok(())
}

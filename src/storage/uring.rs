//! The io_uring write path: the real file system, with writes and fsyncs submitted to an
//! io_uring instead of `pwrite` / `fdatasync`.
//!
//! Every thread that writes gets its own small ring (no lock between a writer and the thread
//! running a group-commit fsync). Operations are waited for before they return, so a write is
//! complete before any fsync that follows it is even submitted. Where a write is followed by
//! the fsync that must cover it ([`StorageFile::write_and_sync`]: file headers, checkpoints,
//! rebuilt indexes) the two go to the kernel in one submission, linked (`IOSQE_IO_LINK`): the
//! kernel starts the fsync only after the write completed in full, and cancels it if the write
//! failed or was short. Reads go through the shared mapping, as with [`FsStorage`].
//!
//! [`UringStorage::new`] probes the kernel (ring setup and the write and fsync opcodes) and
//! fails if it refuses, e.g. under a seccomp policy or `kernel.io_uring_disabled`;
//! [`super::default_storage`] then falls back to [`FsStorage`] with a log message.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use io_uring::{IoUring, Probe, opcode, squeue, types};

use super::fs::{allocate, map_file, open_file};
use super::{FsStorage, LockGuard, Mapping, OpenMode, Storage, StorageFile};

/// Entries of each thread's ring: at most a linked write and fsync are in flight per thread.
const RING_ENTRIES: u32 = 4;

/// Files on the local file system, written through io_uring.
///
/// # Examples
///
/// ```
/// use stratalog::storage::{OpenMode, Storage, UringStorage};
///
/// let tmp = tempfile::tempdir().unwrap();
/// // The kernel may refuse io_uring (old kernel, seccomp): then `new` fails and nothing else does.
/// match UringStorage::new() {
///     Ok(storage) => {
///         let file = storage.open(&tmp.path().join("f"), OpenMode::CreateNew)?;
///         file.write_and_sync(b"durable", 0)?;
///         let mut buf = [0u8; 7];
///         file.read_at(&mut buf, 0)?;
///         assert_eq!(&buf, b"durable");
///     }
///     Err(e) => eprintln!("io_uring unavailable here: {e}"),
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct UringStorage {
    fs: FsStorage,
}

impl UringStorage {
    /// Checks that the kernel allows io_uring with the operations this storage needs.
    pub fn new() -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::Write::CODE, "IORING_OP_WRITE"),
            (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring lacks {name}"),
                ));
            }
        }
        Ok(UringStorage { fs: FsStorage })
    }

    /// [`UringStorage::new`], shared.
    pub fn shared() -> io::Result<Arc<dyn Storage>> {
        Ok(Arc::new(UringStorage::new()?))
    }
}

impl Storage for UringStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(UringFile {
            file: open_file(path, mode)?,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.fs.create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.fs.list(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.fs.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.fs.rename(from, to)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.fs.remove_dir(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.fs.sync_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        self.fs.exists(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.fs.lock(path)
    }
}

#[derive(Debug)]
struct UringFile {
    file: File,
}

thread_local! {
    /// This thread's ring, made on first use.
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// Tags of the submissions.
const WRITE: u64 = 1;
const FSYNC: u64 = 2;

/// Submits `entries` to this thread's ring and waits for all of them; returns each one's
/// result by tag.
///
/// # Safety
/// Every buffer an entry points at must stay alive and unmoved until this returns.
// SAFETY: (the contract, for callers) the buffers an entry points at must outlive this call;
// the function itself keeps its side by waiting for every entry the kernel took.
#[expect(
    unsafe_code,
    reason = "submits entries whose buffers the kernel reads: see `# Safety`"
)]
unsafe fn run(entries: &[squeue::Entry]) -> io::Result<[Option<i32>; 3]> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(IoUring::new(RING_ENTRIES)?);
        }
        let ring = slot.as_mut().expect("ring made above");
        // SAFETY: the caller keeps every buffer alive until we return, and we return only once
        // the kernel completed every entry it took (below), or with entries it never took.
        unsafe {
            let mut sq = ring.submission();
            for entry in entries {
                sq.push(entry)
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
        }
        let mut results = [None; 3];
        let mut seen = 0;
        while seen < entries.len() {
            if let Err(e) = ring.submit_and_wait(entries.len() - seen) {
                if ring.submission().is_empty() {
                    // The kernel has our entries: wait on (EINTR, EAGAIN, EBUSY pass).
                    std::thread::yield_now();
                    continue;
                }
                // The kernel took none of them: forget this ring (and its queued entries).
                *slot = None;
                return Err(e);
            }
            for cqe in ring.completion() {
                if let Some(result) = results.get_mut(cqe.user_data() as usize) {
                    *result = Some(cqe.result());
                }
                seen += 1;
            }
        }
        Ok(results)
    })
}

fn result(code: Option<i32>, what: &str) -> io::Result<usize> {
    match code {
        Some(n) if n >= 0 => Ok(n as usize),
        Some(n) => Err(io::Error::from_raw_os_error(-n)),
        None => Err(io::Error::other(format!(
            "io_uring lost the {what} completion"
        ))),
    }
}

impl UringFile {
    fn write_entry(&self, buf: &[u8], pos: u64) -> squeue::Entry {
        let len = buf.len().min(u32::MAX as usize) as u32;
        opcode::Write::new(types::Fd(self.file.as_raw_fd()), buf.as_ptr(), len)
            .offset(pos)
            .build()
            .user_data(WRITE)
    }

    fn fsync_entry(&self) -> squeue::Entry {
        opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(FSYNC)
    }

    /// Writes all of `buf` at `pos`; with `then_sync`, the first write is linked to an fsync.
    /// Returns true if the linked fsync ran and succeeded.
    fn write_inner(&self, mut buf: &[u8], mut pos: u64, then_sync: bool) -> io::Result<bool> {
        let mut synced = false;
        let mut first = true;
        while !buf.is_empty() {
            let link = then_sync && first;
            first = false;
            let write = self.write_entry(buf, pos);
            // SAFETY: `buf` outlives the call, which waits for the write (and fsync) to finish.
            #[expect(
                unsafe_code,
                reason = "calls `run`, whose contract the SAFETY comment below keeps"
            )]
            let results = unsafe {
                if link {
                    run(&[write.flags(squeue::Flags::IO_LINK), self.fsync_entry()])
                } else {
                    run(&[write])
                }
            }?;
            let n = result(results[WRITE as usize], "write")?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if link && n == buf.len() {
                // A short or failed write cancels the linked fsync (-ECANCELED); a full one runs it.
                result(results[FSYNC as usize], "fsync")?;
                synced = true;
            }
            buf = &buf[n..];
            pos += n as u64;
        }
        Ok(synced)
    }
}

impl StorageFile for UringFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.write_inner(buf, pos, false).map(drop)
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], pos: u64) -> io::Result<()> {
        // Waited for here like every write of this engine, so it is ordered with them.
        super::fs::pwritev_all(&self.file, bufs, pos)
    }

    fn write_and_sync(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        if !self.write_inner(buf, pos, true)? {
            self.sync()?;
        }
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, pos)
    }

    fn sync(&self) -> io::Result<()> {
        // SAFETY: an fsync entry points at no buffer.
        #[expect(
            unsafe_code,
            reason = "calls `run`, whose contract the SAFETY comment below keeps"
        )]
        let results = unsafe { run(&[self.fsync_entry()]) }?;
        result(results[FSYNC as usize], "fsync").map(drop)
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

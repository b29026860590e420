//! What a read-only open ([`super::LogOptions::read_only`]) reads through: a storage that
//! opens every file `O_RDONLY` and refuses every change, so that no code path of a read-only
//! log can write, create, remove, rename, fsync or lock anything, even by mistake (it gets an
//! error instead). A read-only log takes no directory lock, so it may look at a log that a
//! writer in another process (or this one) holds open.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::{LockGuard, Mapping, OpenMode, Storage, StorageFile};

/// Wraps a storage for a read-only log: `Existing` opens become [`OpenMode::Read`], every
/// other change fails with `PermissionDenied`.
#[derive(Debug)]
pub(crate) struct ReadOnlyStorage(pub Arc<dyn Storage>);

fn refused(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{what} of {} refused: the log was opened read-only",
            path.display()
        ),
    )
}

impl Storage for ReadOnlyStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        match mode {
            OpenMode::Existing | OpenMode::Read => self.0.open(path, OpenMode::Read),
            OpenMode::CreateNew | OpenMode::CreateOrOpen => Err(refused("creating", path)),
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        Err(refused("creating", path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        Err(refused("removing", path))
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        Err(refused("removing", path))
    }

    fn rename(&self, from: &Path, _to: &Path) -> io::Result<()> {
        Err(refused("renaming", from))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        Err(refused("fsync", dir))
    }

    fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        Err(refused("locking", path))
    }
}

/// A stand-in for a file a read-only log never writes (the active segment's index files, the
/// checkpoint): every operation fails.
#[derive(Debug)]
pub(crate) struct NoFile(pub PathBuf);

impl StorageFile for NoFile {
    fn write_at(&self, _buf: &[u8], _pos: u64) -> io::Result<()> {
        Err(refused("writing", &self.0))
    }

    fn read_at(&self, _buf: &mut [u8], _pos: u64) -> io::Result<()> {
        Err(refused("reading (not opened)", &self.0))
    }

    fn sync(&self) -> io::Result<()> {
        Err(refused("fsync", &self.0))
    }

    fn len(&self) -> io::Result<u64> {
        Err(refused("stat (not opened)", &self.0))
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(refused("truncating", &self.0))
    }

    fn map(&self, _len: u64) -> io::Result<Mapping> {
        Err(refused("mapping (not opened)", &self.0))
    }
}

/// One sound batch found by [`read_batches`]: position, base offset, last offset, max
/// timestamp, length.
pub(crate) type FoundBatch = (u64, u64, u64, i64, u64);

/// Reads the batches of `file` from byte `from` up to `len` with positional reads (never a
/// mapping: a writer may shrink the preallocated space past its last batch at any moment, and
/// a mapped page past the end of a file raises SIGBUS), checking each (header, CRC, offsets
/// following on from `expected`). Stops at the first bad or incomplete batch; returns the
/// batches and, if it stopped early, why.
pub(crate) fn read_batches(
    file: &dyn StorageFile,
    from: u64,
    len: u64,
    expected: u64,
) -> (Vec<FoundBatch>, Option<String>) {
    use crate::format::{BATCH_HEADER_LEN, Batch, BatchHeader};
    let mut found = Vec::new();
    let (mut pos, mut expected) = (from, expected);
    let mut header = [0u8; BATCH_HEADER_LEN];
    while pos < len {
        if len - pos < BATCH_HEADER_LEN as u64 {
            return (found, Some("incomplete batch header".into()));
        }
        if let Err(e) = file.read_at(&mut header, pos) {
            return (found, Some(format!("read: {e}")));
        }
        let size = match BatchHeader::parse(&header) {
            Ok(h) => u64::from(h.length.get()),
            Err(e) => return (found, Some(e.to_string())),
        };
        if size < BATCH_HEADER_LEN as u64 || pos + size > len {
            return (found, Some("incomplete batch".into()));
        }
        let mut buf = vec![0u8; size as usize];
        if let Err(e) = file.read_at(&mut buf, pos) {
            return (found, Some(format!("read: {e}")));
        }
        let batch = match Batch::validate(bytes::Bytes::from(buf)) {
            Ok(b) if b.base_offset() == expected => b,
            Ok(b) => {
                return (
                    found,
                    Some(format!(
                        "batch base offset {} where {expected} was expected",
                        b.base_offset()
                    )),
                );
            }
            Err(e) => return (found, Some(e.to_string())),
        };
        found.push((
            pos,
            batch.base_offset(),
            batch.last_offset(),
            batch.max_timestamp(),
            size,
        ));
        expected = batch.last_offset() + 1;
        pos += size;
    }
    (found, None)
}

/// True if bytes `pos..len` of `file` read as zeros (or the file is shorter: a writer trimmed
/// its preallocated space).
pub(crate) fn zeros_to(file: &dyn StorageFile, mut pos: u64, len: u64) -> bool {
    let mut buf = vec![0u8; 64 << 10];
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        if file.read_at(&mut buf[..n], pos).is_err() {
            return true;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
        pos += n as u64;
    }
    true
}

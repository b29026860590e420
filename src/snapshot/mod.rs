//! Snapshots of a store: a consistent, verifiable point-in-time copy, and its restore
//! (docs/DR.md). Taken offline or from a store in this process ([`create`]), or streamed from
//! a serving node and cut at its high watermarks ([`create_from_node`]); a new follower or
//! mirror starts from one ([`bootstrap`]).
//!
//! A snapshot is a directory holding the store's layout and a `MANIFEST`
//! ([`Manifest`], byte map in docs/DR.md):
//!
//! ```text
//! SNAP/
//!   MANIFEST                        per log: start, end, epoch; per file: length and CRC-32C
//!   stratalog.store                 the registry, copied
//!   consumer_offsets.generation     copied, if the store has one
//!   __consumer_offsets[.<gen>]/     the consumer offsets log, cut like a partition
//!   <topic>/<partition>/            log.meta (copied), log.epochs (cut at the snapshot point),
//!                                   sealed segments and their indexes (hard-linked, or copied
//!                                   across file systems), the active segment (copied up to
//!                                   the snapshot point; its index files are left out and
//!                                   rebuilt by the restore's open)
//! ```
//!
//! The snapshot point of a log is its [`Log::end_offset`], read once for every log before
//! anything is copied (the consumer offsets log first, so that no commit in the snapshot names
//! an offset past its partition's snapshot point). Appends never wait for a snapshot: the end
//! offsets are atomics, the copy takes no lock of the log, and the active segment is cut at
//! the batch boundary of its snapshot point (bytes below a published end offset are never
//! changed in place). Left out: the recovery checkpoint and the clean-close marker (the
//! restored store recovers once, at the restore), quarantine files (bytes cut earlier, not
//! records), a pending `log.reset` marker.
//!
//! Not handled while a store is served: a truncation (follower divergence) or retention that
//! removes or shrinks a segment during the copy makes the snapshot fail (a segment gone) or
//! fail its checks later (a hard-linked segment shrunk in place): take it again.
//!
//! The snapshot is written under a temporary name next to `out` and renamed at the end, so a
//! crash leaves no half snapshot under `out` (only a `.NAME.snapshot-tmp-*` directory to
//! remove). A restore checks every file against the `MANIFEST` while copying it into a
//! temporary directory next to the target, opens the result as a store and checks each log's
//! start and end, and only then renames it into place.
//!
//! # Examples
//!
//! ```
//! use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig, snapshot};
//!
//! # fn main() -> stratalog::Result<()> {
//! let tmp = tempfile::tempdir().unwrap();
//! let store = Store::open(tmp.path().join("store"), StoreOptions::default())?;
//! store.create_topic("orders", 1, TopicConfig::default(), PartitionerKind::Jump)?;
//! let log = store.partition("orders", 0)?;
//! log.append_records(&["a", "b"])?.receipt.wait()?;
//! store.commit("billing", "orders", 0, 1, log.leader_epoch())?;
//!
//! let report = snapshot::create(&store, &tmp.path().join("snap"))?;
//! assert_eq!(report.manifest.partitions.len(), 2); // orders/0 and the consumer offsets
//! log.append_records(&["not in the snapshot"])?.receipt.wait()?;
//!
//! snapshot::verify(&tmp.path().join("snap"))?;
//! snapshot::restore(&tmp.path().join("snap"), &tmp.path().join("restored"))?;
//! let restored = Store::open(tmp.path().join("restored"), StoreOptions::default())?;
//! assert_eq!(restored.partition("orders", 0)?.end_offset(), 2);
//! assert_eq!(restored.committed("billing", "orders", 0).map(|c| c.offset), Some(1));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::format::{
    BATCH_HEADER_LEN, BatchHeader, FILE_HEADER_LEN, FileCopy, MANIFEST_NAME, Manifest,
    ManifestFile, ManifestPartition, SegmentFile, check_manifest_path, decode_epochs,
    encode_epochs, parse_segment_file_name, segment_file_name,
};
use crate::log::Log;
use crate::store::{Store, StoreOptions};

mod node;

pub(crate) use node::serve;
pub use node::{BootstrapReport, NodeSnapshotReport, bootstrap, bootstrap_node, create_from_node};

/// Name of the store's registry file.
const REGISTRY_FILE: &str = "stratalog.store";
/// Name of the file naming the consumer offsets log's generation.
const GENERATION_FILE: &str = "consumer_offsets.generation";
/// A log's settings file.
const META_FILE: &str = "log.meta";
/// A log's epoch history.
const EPOCHS_FILE: &str = "log.epochs";
/// Buffer of a copy.
const COPY_BUF: usize = 1 << 20;

/// What [`create`] did.
///
/// # Examples
///
/// ```
/// use stratalog::{Store, StoreOptions, snapshot};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path().join("s"), StoreOptions::default())?;
/// let report = snapshot::create(&store, &tmp.path().join("snap"))?;
/// // An empty store: the registry, and the consumer offsets log's meta and empty segment.
/// assert!(report.manifest.files.iter().any(|f| f.path == "stratalog.store"));
/// assert_eq!(report.dir, tmp.path().join("snap"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    /// The snapshot directory.
    pub dir: PathBuf,
    /// What was written as its `MANIFEST`.
    pub manifest: Manifest,
    /// Files hard-linked from the store, and their bytes.
    pub linked_files: usize,
    /// Bytes of the hard-linked files.
    pub linked_bytes: u64,
    /// Files copied (or written), and their bytes.
    pub copied_files: usize,
    /// Bytes of the copied files.
    pub copied_bytes: u64,
    /// Time taken to read every log's snapshot point (the only moment the snapshot looks at
    /// the logs' state together; it takes no lock an append needs).
    pub cut_duration: Duration,
    /// Time taken in all.
    pub duration: Duration,
}

/// What [`restore`] did.
///
/// # Examples
///
/// ```
/// use stratalog::{Store, StoreOptions, snapshot};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path().join("s"), StoreOptions::default())?;
/// snapshot::create(&store, &tmp.path().join("snap"))?;
/// let report = snapshot::restore(&tmp.path().join("snap"), &tmp.path().join("r"))?;
/// // Every byte the MANIFEST lists was copied and checked.
/// let listed: u64 = report.manifest.files.iter().map(|f| f.len).sum();
/// assert_eq!(report.bytes, listed);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The restored store's directory.
    pub dir: PathBuf,
    /// The snapshot's `MANIFEST`.
    pub manifest: Manifest,
    /// Bytes copied.
    pub bytes: u64,
    /// Time to copy and check the files (before the store was opened).
    pub copy_duration: Duration,
    /// Time taken in all (copy, opening the store to check it, rename).
    pub duration: Duration,
}

/// One log to snapshot, with its snapshot point.
struct Cut {
    rel: String,
    log: Arc<Log>,
    start: u64,
    end: u64,
    epoch: u64,
}

/// Removes a temporary directory unless disarmed.
struct TempDir {
    path: PathBuf,
    armed: bool,
}

impl TempDir {
    /// Renames the directory to `target` (`what` names it in an error), after which it is no
    /// longer removed on drop, and makes the rename durable.
    fn persist(mut self, target: &Path, what: &'static str) -> Result<()> {
        fs::rename(&self.path, target).ctx(what, target)?;
        self.armed = false;
        sync_dir(crate::storage::parent_dir(target))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn temp_sibling(target: &Path, what: &str) -> Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} has no file name: name the {what} directory",
                target.display()
            ))
        })?
        .to_string_lossy()
        .into_owned();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(crate::storage::parent_dir(target)
        .join(format!(".{name}.{what}-tmp-{}-{nanos}", std::process::id())))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx("fsync directory", dir)
}

/// Takes a snapshot of `store` into the new directory `out` (which must not exist). Safe while
/// the store is being written: see the module docs for the snapshot point.
pub fn create(store: &Store, out: &Path) -> Result<SnapshotReport> {
    create_inner(store, out, &mut || {})
}

/// [`create`], calling `between` once the first log's snapshot point (the consumer offsets
/// log's) is read and before the others are: what the tests use to change the store at the
/// worst moment.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub fn create_with_pause(
    store: &Store,
    out: &Path,
    between: &mut dyn FnMut(),
) -> Result<SnapshotReport> {
    create_inner(store, out, between)
}

fn create_inner(store: &Store, out: &Path, between: &mut dyn FnMut()) -> Result<SnapshotReport> {
    let started = Instant::now();
    if out.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already exists: a snapshot goes to a new directory; choose another name or remove it",
            out.display()
        )));
    }
    let tmp = TempDir {
        path: temp_sibling(out, "snapshot")?,
        armed: true,
    };
    fs::create_dir(&tmp.path).ctx("create directory", &tmp.path)?;
    let root = store.dir().to_path_buf();

    let logs = logs_of(store)?;
    // The snapshot point: every end offset, the consumer offsets log's first.
    let cut_started = Instant::now();
    let mut cuts: Vec<Cut> = Vec::with_capacity(logs.len());
    for (i, (rel, log)) in logs.into_iter().enumerate() {
        if i == 1 {
            between();
        }
        cuts.push(Cut {
            end: log.end_offset(),
            start: log.start_offset(),
            epoch: log.leader_epoch(),
            rel,
            log,
        });
    }
    let cut_duration = cut_started.elapsed();

    let mut w = Writer {
        out: tmp.path.clone(),
        files: Vec::new(),
        dirs: BTreeSet::new(),
        linked: (0, 0),
        copied: (0, 0),
        pending: Pending::default(),
    };
    // Registry after the cut: a topic created meanwhile is in it with no partition (they
    // open empty); its generation file likewise.
    w.copy_whole(&root.join(REGISTRY_FILE), REGISTRY_FILE)?;
    if root.join(GENERATION_FILE).exists() {
        w.copy_whole(&root.join(GENERATION_FILE), GENERATION_FILE)?;
    }
    let mut partitions = Vec::with_capacity(cuts.len());
    for cut in &cuts {
        let start = w.log(cut)?;
        partitions.push(ManifestPartition {
            dir: cut.rel.clone(),
            start_offset: start,
            end_offset: cut.end,
            leader_epoch: cut.epoch,
        });
    }
    let manifest = Manifest {
        snapshot_id: snapshot_id(),
        created_ms: crate::log::now_ms(),
        partitions,
        files: std::mem::take(&mut w.files),
    };
    w.pending.sync()?;
    let manifest_path = tmp.path.join(MANIFEST_NAME);
    write_synced(&manifest_path, &manifest.encode())?;
    for dir in w.dirs.iter().rev() {
        sync_dir(&tmp.path.join(dir))?;
    }
    sync_dir(&tmp.path)?;
    tmp.persist(out, "rename snapshot into place")?;
    Ok(SnapshotReport {
        dir: out.to_path_buf(),
        manifest,
        linked_files: w.linked.0,
        linked_bytes: w.linked.1,
        copied_files: w.copied.0,
        copied_bytes: w.copied.1,
        cut_duration,
        duration: started.elapsed(),
    })
}

/// The logs a snapshot takes, relative directory first: the consumer offsets log, then every
/// partition that exists on disk (others are empty and open lazily in the restored store).
fn logs_of(store: &Store) -> Result<Vec<(String, Arc<Log>)>> {
    let root = store.dir();
    let offsets = store.offsets_log()?;
    let mut logs: Vec<(String, Arc<Log>)> = vec![(rel_of(root, offsets.dir())?, offsets)];
    for topic in store.topics()? {
        for p in 0..topic.partitions() {
            let dir = crate::store::partition_dir(root, &topic.name, p);
            if dir.join(META_FILE).exists() {
                logs.push((
                    format!("{}/{p}", topic.name),
                    store.partition(&topic.name, p)?,
                ));
            }
        }
    }
    Ok(logs)
}

/// Opens the store in `dir` (it must exist), takes a snapshot into `out` and closes the store.
/// Fails with [`Error::Locked`] if another process (a node, a producer) has the store open.
pub fn create_offline(dir: &Path, out: &Path) -> Result<SnapshotReport> {
    let store = Store::open(
        dir,
        StoreOptions {
            create: false,
            // No retention while the snapshot is taken: it could remove a segment mid-copy.
            retention_interval: None,
            ..Default::default()
        },
    )?;
    let report = create(&store, out)?;
    store.close()?;
    Ok(report)
}

fn snapshot_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// `path` relative to `root`, `/`-separated, checked as a manifest path.
fn rel_of(root: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(root).map_err(|_| {
        Error::InvalidArgument(format!(
            "{} is not inside the store directory {}",
            path.display(),
            root.display()
        ))
    })?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let rel = parts.join("/");
    check_manifest_path("log directory", &rel).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: cannot be named in a snapshot: {e}",
            path.display()
        ))
    })?;
    Ok(rel)
}

struct Writer {
    out: PathBuf,
    files: Vec<ManifestFile>,
    /// Directories created under `out`, relative.
    dirs: BTreeSet<String>,
    linked: (usize, u64),
    copied: (usize, u64),
    /// Copies not yet fsynced.
    pending: Pending,
}

impl Writer {
    fn ensure_dir(&mut self, rel_dir: &str) -> Result<()> {
        let mut acc = String::new();
        for part in rel_dir.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if self.dirs.insert(acc.clone()) {
                let p = self.out.join(&acc);
                fs::create_dir(&p).ctx("create directory", &p)?;
            }
        }
        Ok(())
    }

    fn target(&mut self, rel: &str) -> Result<PathBuf> {
        if let Some((dir, _)) = rel.rsplit_once('/') {
            self.ensure_dir(dir)?;
        }
        Ok(self.out.join(rel))
    }

    /// Copies `len` bytes of `src` (all of it if `None`) to `rel`, synced.
    fn copy(&mut self, src: &Path, rel: &str, len: Option<u64>, how: FileCopy) -> Result<()> {
        let dst = self.target(rel)?;
        let (len, crc, file) = copy_file(src, &dst, len)?;
        self.pending.push(dst, file)?;
        self.copied.0 += 1;
        self.copied.1 += len;
        self.files.push(ManifestFile {
            path: rel.to_string(),
            len,
            crc32c: crc,
            how,
        });
        Ok(())
    }

    fn copy_whole(&mut self, src: &Path, rel: &str) -> Result<()> {
        self.copy(src, rel, None, FileCopy::Copied)
    }

    fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.write_as(rel, bytes, FileCopy::Written)
    }

    fn write_as(&mut self, rel: &str, bytes: &[u8], how: FileCopy) -> Result<()> {
        let dst = self.target(rel)?;
        write_synced(&dst, bytes)?;
        self.copied.0 += 1;
        self.copied.1 += bytes.len() as u64;
        self.files.push(ManifestFile {
            path: rel.to_string(),
            len: bytes.len() as u64,
            crc32c: crc32c::crc32c(bytes),
            how,
        });
        Ok(())
    }

    /// Hard-links a file that is never changed in place (copies it across file systems).
    fn link(&mut self, src: &Path, rel: &str) -> Result<()> {
        let dst = self.target(rel)?;
        match fs::hard_link(src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::io(
                    "hard-link (the segment was removed meanwhile, by retention or a truncation: take the snapshot again)",
                    src,
                    e,
                ));
            }
            Err(e) => {
                tracing::debug!(error = %e, src = %src.display(), "hard link refused; copying");
                return self.copy(src, rel, None, FileCopy::Copied);
            }
        }
        let (len, crc) = checksum_file(&dst, None)?;
        self.linked.0 += 1;
        self.linked.1 += len;
        self.files.push(ManifestFile {
            path: rel.to_string(),
            len,
            crc32c: crc,
            how: FileCopy::Linked,
        });
        Ok(())
    }

    /// Takes one log at its snapshot point; returns the start offset taken (the `log.meta`'s,
    /// if retention raised it since the snapshot point was read).
    fn log(&mut self, cut: &Cut) -> Result<u64> {
        let dir = cut.log.dir().to_path_buf();
        self.ensure_dir(&cut.rel)?;
        let meta_path = dir.join(META_FILE);
        let meta = fs::read(&meta_path).ctx("read", &meta_path)?;
        let start = meta_start(&meta, &meta_path)?.max(cut.start).min(cut.end);
        self.write_as(&format!("{}/{META_FILE}", cut.rel), &meta, FileCopy::Copied)?;
        let cut = &Cut {
            rel: cut.rel.clone(),
            log: cut.log.clone(),
            start,
            end: cut.end,
            epoch: cut.epoch,
        };
        if let Some(epochs) = epochs_cut(&dir, cut.end)? {
            self.write(&format!("{}/{EPOCHS_FILE}", cut.rel), &epochs)?;
        }
        let taken = segments_taken(&dir, cut)?;
        let Some((&last, sealed)) = taken.split_last() else {
            return Err(no_segment(&dir, cut.end));
        };
        if taken[0] > start {
            return Err(Error::InvalidArgument(format!(
                "retention removed the segment holding offset {start} of {} during the snapshot: take it again",
                dir.display()
            )));
        }
        for &base in sealed {
            for kind in SegmentFile::ALL {
                let name = segment_file_name(base, kind);
                let src = dir.join(&name);
                if kind != SegmentFile::Log && !src.exists() {
                    continue; // rebuilt by the restored log when it is read
                }
                self.link(&src, &format!("{}/{name}", cut.rel))?;
            }
        }
        // The active segment (or the last one below the point): copied up to the point.
        let name = segment_file_name(last, SegmentFile::Log);
        let src = dir.join(&name);
        let len = cut_position(&src, last, cut.end)?;
        self.copy(
            &src,
            &format!("{}/{name}", cut.rel),
            Some(len),
            FileCopy::Cut,
        )?;
        Ok(start)
    }
}

/// The epoch history of the log in `dir` cut at `end` (the entries that start below it),
/// encoded; `None` if the log has none.
fn epochs_cut(dir: &Path, end: u64) -> Result<Option<Vec<u8>>> {
    let epochs_path = dir.join(EPOCHS_FILE);
    if !epochs_path.exists() {
        return Ok(None);
    }
    let bytes = fs::read(&epochs_path).ctx("read", &epochs_path)?;
    let (current, entries) = decode_epochs(&bytes).map_err(|source| Error::Corrupt {
        path: epochs_path.clone(),
        position: 0,
        source,
    })?;
    let kept: Vec<(u64, u64)> = entries
        .into_iter()
        .filter(|&(_, start)| start < end)
        .collect();
    Ok(Some(encode_epochs(current, &kept)))
}

/// The base offsets of the segments of the log in `dir` a snapshot at `cut` takes: those
/// below the snapshot point, from the one holding the start on (an empty log: its one
/// segment). The last is the one cut at the point; the others are sealed.
fn segments_taken(dir: &Path, cut: &Cut) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        if let Some((base, SegmentFile::Log)) =
            parse_segment_file_name(&entry.file_name().to_string_lossy())
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut taken: Vec<u64> = bases.iter().copied().filter(|&b| b < cut.end).collect();
    if taken.is_empty() {
        // An empty log: its one (empty) segment.
        taken.extend(bases.iter().copied().rfind(|&b| b <= cut.end));
    }
    if let Some(first) = taken.iter().rposition(|&b| b <= cut.start) {
        taken.drain(..first);
    }
    Ok(taken)
}

/// The start offset a `log.meta` holds. Retention raises it (and rewrites the file) before it
/// deletes segments, so a snapshot that copies the file must start where the copy says.
fn meta_start(bytes: &[u8], path: &Path) -> Result<u64> {
    use crate::format::{FileHeader, FileKind, MetaBody};
    let corrupt = |position: usize, source| Error::Corrupt {
        path: path.to_path_buf(),
        position: position as u64,
        source,
    };
    FileHeader::parse(bytes, FileKind::Meta, 0).map_err(|e| corrupt(0, e))?;
    let body = MetaBody::parse(bytes.get(FILE_HEADER_LEN..).unwrap_or_default())
        .map_err(|e| corrupt(FILE_HEADER_LEN, e))?;
    Ok(body.start_offset.get())
}

fn no_segment(dir: &Path, end: u64) -> Error {
    Error::InvalidArgument(format!(
        "the log in {} has no segment at its snapshot point {end}",
        dir.display()
    ))
}

/// The byte position in segment `path` (base offset `base`) where offset `end` starts: the
/// end of the last batch below it.
fn cut_position(path: &Path, base: u64, end: u64) -> Result<u64> {
    let file = File::open(path).ctx("open", path)?;
    cut_position_in(&file, path, base, end)
}

/// [`cut_position`] in an open segment file.
fn cut_position_in(file: &File, path: &Path, base: u64, end: u64) -> Result<u64> {
    let mut pos = FILE_HEADER_LEN as u64;
    let mut next = base;
    let mut header = [0u8; BATCH_HEADER_LEN];
    while next < end {
        file.read_exact_at(&mut header, pos).ctx("read", path)?;
        let h = BatchHeader::parse(&header).map_err(|source| Error::Corrupt {
            path: path.to_path_buf(),
            position: pos,
            source,
        })?;
        let after = h.base_offset.get() + u64::from(h.record_count.get());
        if h.base_offset.get() != next || after > end {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                position: pos,
                source: crate::format::FormatError::Invalid {
                    what: "batch base offset at the snapshot point",
                    value: h.base_offset.get(),
                },
            });
        }
        pos += u64::from(h.length.get());
        next = after;
    }
    Ok(pos)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create_new(path).ctx("create", path)?;
    f.write_all(bytes).ctx("write", path)?;
    f.sync_all().ctx("fsync", path)
}

/// Copies `src` (its first `len` bytes, or all of it) to the new file `dst`; returns the
/// bytes copied, their CRC-32C and the file, not yet synced (see [`Pending`]). Fails if `src`
/// is shorter than `len`.
fn copy_file(src: &Path, dst: &Path, len: Option<u64>) -> Result<(u64, u32, File)> {
    let input = File::open(src).ctx("open", src)?;
    let mut output = File::create_new(dst).ctx("create", dst)?;
    let (n, crc) = stream(input, len, src, |chunk| {
        output.write_all(chunk).ctx("write", dst)
    })?;
    if let Some(want) = len
        && n != want
    {
        return Err(Error::io(
            "copy",
            src,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{n} bytes, {want} expected"),
            ),
        ));
    }
    Ok((n, crc, output))
}

/// [`copy_file`] of a whole file for a restore: the kernel is asked to start writing each
/// chunk back as soon as it is written (`sync_file_range`, Linux), so that the disk works
/// while the copy goes on and the final fsync finds little left to write.
fn copy_writing_back(src: &Path, dst: &Path) -> Result<(u64, u32, File)> {
    let input = File::open(src).ctx("open", src)?;
    let mut output = File::create_new(dst).ctx("create", dst)?;
    let mut written = 0u64;
    let (n, crc) = stream(input, None, src, |chunk| {
        output.write_all(chunk).ctx("write", dst)?;
        start_writeback(&output, written, chunk.len() as u64);
        written += chunk.len() as u64;
        Ok(())
    })?;
    Ok((n, crc, output))
}

/// Asks the kernel to start writing bytes `offset..offset + len` of `file` back to the disk,
/// without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`; nothing elsewhere than Linux).
/// A hint: the fsync that follows is what makes the file durable and reports errors.
#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "sync_file_range has no safe wrapper in std or rustix: see the SAFETY comment"
)]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the whole call (borrowed from `file`), and the call
    // only reads its integer arguments; it touches no memory of this process.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Files written and not yet fsynced: synced together every [`Pending::MAX`] files and at the
/// end, so that the kernel writes one back while the next is copied (an fsync right after each
/// file would wait for it with the disk otherwise idle).
#[derive(Default)]
struct Pending {
    files: Vec<(PathBuf, File)>,
}

impl Pending {
    const MAX: usize = 64;

    fn push(&mut self, path: PathBuf, file: File) -> Result<()> {
        self.files.push((path, file));
        if self.files.len() >= Self::MAX {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        for (path, file) in self.files.drain(..) {
            file.sync_all().ctx("fsync", &path)?;
        }
        Ok(())
    }
}

fn checksum_file(path: &Path, len: Option<u64>) -> Result<(u64, u32)> {
    let input = File::open(path).ctx("open", path)?;
    stream(input, len, path, |_| Ok(()))
}

/// Reads `input` (up to `limit` bytes) in chunks, hands each to `sink`, returns the bytes read
/// and their CRC-32C.
fn stream(
    input: File,
    limit: Option<u64>,
    path: &Path,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<(u64, u32)> {
    let mut reader = input.take(limit.unwrap_or(u64::MAX));
    let mut buf = vec![0u8; COPY_BUF];
    let (mut n, mut crc) = (0u64, 0u32);
    loop {
        let got = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        crc = crc32c::crc32c_append(crc, &buf[..got]);
        sink(&buf[..got])?;
        n += got as u64;
    }
    Ok((n, crc))
}

fn damaged(
    snap: &Path,
    path: impl Into<PathBuf>,
    reason: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::SnapshotDamaged {
        snapshot: snap.to_path_buf(),
        path: path.into(),
        reason: reason.into(),
        source,
    }
}

/// Reads and decodes the `MANIFEST` of the snapshot in `snap`.
pub fn read_manifest(snap: &Path) -> Result<Manifest> {
    let path = snap.join(MANIFEST_NAME);
    let bytes = fs::read(&path)
        .map_err(|e| damaged(snap, &path, "cannot read the MANIFEST", Some(Box::new(e))))?;
    Manifest::decode(&bytes)
        .map_err(|e| damaged(snap, &path, "the MANIFEST is invalid", Some(Box::new(e))))
}

/// Every file under `dir`, relative and `/`-separated (directories are not listed).
fn list_files(snap: &Path, dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type().ctx("stat", &entry.path())?;
        if kind.is_dir() {
            list_files(snap, &entry.path(), &rel, out)?;
        } else if kind.is_file() {
            out.push(rel);
        } else {
            return Err(damaged(
                snap,
                entry.path(),
                "not a regular file or directory",
                None,
            ));
        }
    }
    Ok(())
}

/// Checks that `snap` holds exactly the files its manifest lists (no extra one).
fn check_listing(snap: &Path, manifest: &Manifest) -> Result<()> {
    let mut present = Vec::new();
    list_files(snap, snap, "", &mut present)?;
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for rel in &present {
        if rel != MANIFEST_NAME && !listed.contains(rel.as_str()) {
            return Err(damaged(
                snap,
                snap.join(rel),
                "not listed in the MANIFEST (a MANIFEST from another snapshot?)",
                None,
            ));
        }
    }
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    for f in &manifest.files {
        if !present.contains(f.path.as_str()) {
            return Err(damaged(snap, snap.join(&f.path), "missing", None));
        }
    }
    // Every log the MANIFEST names has its settings and a segment in it.
    for p in &manifest.partitions {
        let meta = format!("{}/{META_FILE}", p.dir);
        if !listed.contains(meta.as_str()) {
            return Err(damaged(
                snap,
                snap.join(&meta),
                "the MANIFEST names the log but not this file",
                None,
            ));
        }
        let has_segment = manifest.files.iter().any(|f| {
            f.path
                .strip_prefix(p.dir.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(parse_segment_file_name)
                .is_some_and(|(_, kind)| kind == SegmentFile::Log)
        });
        if !has_segment {
            return Err(damaged(
                snap,
                snap.join(&p.dir),
                "the MANIFEST names the log but none of its segments",
                None,
            ));
        }
    }
    Ok(())
}

fn check_file(snap: &Path, f: &ManifestFile, len: u64, crc: u32) -> Result<()> {
    let path = snap.join(&f.path);
    if len != f.len {
        let what = if len < f.len { "truncated" } else { "too long" };
        return Err(damaged(
            snap,
            path,
            format!("{what}: {len} bytes, the MANIFEST says {}", f.len),
            None,
        ));
    }
    if crc != f.crc32c {
        return Err(damaged(
            snap,
            path,
            format!(
                "CRC-32C {crc:#010x}, the MANIFEST says {:#010x}: the bytes differ",
                f.crc32c
            ),
            None,
        ));
    }
    Ok(())
}

/// Checks the snapshot in `snap` without restoring it: the `MANIFEST`, that exactly its files
/// are present, and every file's length and CRC-32C. Returns the manifest.
pub fn verify(snap: &Path) -> Result<Manifest> {
    let manifest = read_manifest(snap)?;
    check_listing(snap, &manifest)?;
    for f in &manifest.files {
        let path = snap.join(&f.path);
        // One byte more than listed is enough to tell a longer file.
        let (len, crc) = checksum_file(&path, Some(f.len.saturating_add(1)))?;
        check_file(snap, f, len, crc)?;
    }
    Ok(manifest)
}

/// Restores the snapshot in `snap` into `dir`, which must not exist or be empty. Every file is
/// checked against the `MANIFEST` while it is copied into a temporary directory next to `dir`;
/// the copy is then opened as a store and each log's start and end compared with the
/// `MANIFEST`; only then is it renamed to `dir`. On any failure nothing is left at `dir` (an
/// empty `dir` stays empty).
pub fn restore(snap: &Path, dir: &Path) -> Result<RestoreReport> {
    let started = Instant::now();
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{} is not empty: restore into a new or empty directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("list", dir, e)),
    }
    let manifest = read_manifest(snap)?;
    check_listing(snap, &manifest)?;
    let tmp = TempDir {
        path: temp_sibling(dir, "restore")?,
        armed: true,
    };
    fs::create_dir(&tmp.path).ctx("create directory", &tmp.path)?;
    let mut w = Writer {
        out: tmp.path.clone(),
        files: Vec::new(),
        dirs: BTreeSet::new(),
        linked: (0, 0),
        copied: (0, 0),
        pending: Pending::default(),
    };
    for p in &manifest.partitions {
        w.ensure_dir(&p.dir)?;
    }
    let mut jobs = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        jobs.push((f, snap.join(&f.path), w.target(&f.path)?));
    }
    let bytes = copy_checked(snap, &jobs)?;
    for d in w.dirs.iter().rev() {
        sync_dir(&tmp.path.join(d))?;
    }
    sync_dir(&tmp.path)?;
    let copy_duration = started.elapsed();
    check_restored(snap, &tmp.path, &manifest)?;
    tmp.persist(dir, "rename the restored store into place")?;
    Ok(RestoreReport {
        dir: dir.to_path_buf(),
        manifest,
        bytes,
        copy_duration,
        duration: started.elapsed(),
    })
}

/// How many files a restore copies at once: while one thread waits for the disk (its file's
/// fsync, or the page cache's write-back limit), the others copy and checksum (measured in
/// docs/DR.md: 0.73-0.76x the disk's sequential write with 4 or 8, 0.51 with one).
const RESTORE_THREADS: usize = 4;

/// Copies every `(file, src, dst)`, checking each against its `MANIFEST` entry while it is
/// copied, on a few threads (files in `MANIFEST` order, taken in turn); each file is fsynced
/// by its thread once written, while the others copy. Returns the bytes copied, or the error
/// of the first failing file in `MANIFEST` order.
fn copy_checked(snap: &Path, jobs: &[(&ManifestFile, PathBuf, PathBuf)]) -> Result<u64> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let bytes = AtomicU64::new(0);
    let errors: Mutex<Vec<(usize, Error)>> = Mutex::new(Vec::new());
    let one = |f: &ManifestFile, src: &Path, dst: &Path| -> Result<u64> {
        let (len, crc, file) = copy_writing_back(src, dst).map_err(|e| match e {
            Error::Io { .. } | Error::NoSpace { .. } if !src.exists() => {
                damaged(snap, src, "missing", Some(Box::new(e)))
            }
            e => e,
        })?;
        check_file(snap, f, len, crc)?;
        file.sync_all().ctx("fsync", dst)?;
        Ok(len)
    };
    let work = || {
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((f, src, dst)) = jobs.get(i) else {
                break;
            };
            match one(f, src, dst) {
                Ok(len) => {
                    bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, e));
                }
            }
        }
    };
    let threads = RESTORE_THREADS.min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(work);
        }
        work();
    });
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    errors.sort_by_key(|(i, _)| *i);
    match errors.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(bytes.into_inner()),
    }
}

/// Opens the restored store in `tmp` (recovering each log once) and compares every log's
/// start and end with the manifest.
fn check_restored(snap: &Path, tmp: &Path, manifest: &Manifest) -> Result<()> {
    let store = Store::open(
        tmp,
        StoreOptions {
            create: false,
            retention_interval: None,
            ..Default::default()
        },
    )?;
    let offsets = store.offsets_log()?;
    let offsets_rel = rel_of(tmp, offsets.dir())?;
    for p in &manifest.partitions {
        let log = if p.dir == offsets_rel {
            offsets.clone()
        } else {
            let (topic, partition) = p
                .dir
                .rsplit_once('/')
                .and_then(|(t, n)| Some((t, n.parse::<u32>().ok()?)))
                .ok_or_else(|| {
                    damaged(
                        snap,
                        snap.join(MANIFEST_NAME),
                        format!("{} names no partition of the store", p.dir),
                        None,
                    )
                })?;
            store.partition(topic, partition)?
        };
        if (log.start_offset(), log.end_offset()) != (p.start_offset, p.end_offset) {
            return Err(damaged(
                snap,
                snap.join(&p.dir),
                format!(
                    "the restored log holds offsets {}..{}, the MANIFEST says {}..{}",
                    log.start_offset(),
                    log.end_offset(),
                    p.start_offset,
                    p.end_offset
                ),
                None,
            ));
        }
    }
    drop(offsets);
    store.close()
}

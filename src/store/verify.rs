//! Checking a store's own files without opening it: the registry, the offsets generation
//! pointer, and every record of the consumer offsets log. Nothing is opened for writing and no
//! lock is taken, so it also runs next to a process that has the store open (it then may see a
//! commit being written as a torn tail, which is not reported: recovery cuts torn tails).
//!
//! The partition logs (and the offsets log as a log: indexes, checkpoint, meta) are checked by
//! [`crate::verify_dir`]; this checks what only the store knows how to read, so that a store
//! its commands refuse to open never passes as sound.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::offsets::{self, decode_record};
use super::topic::{self, REGISTRY_NAME};
use crate::error::{Error, IoContext, Result};
use crate::format::{Batch, FileHeader, FileKind};
use crate::storage::FsStorage;

/// A problem found in a store's own files.
///
/// # Examples
///
/// ```
/// use stratalog::store::verify_store;
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("orders", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.close()?;
/// // Damage the topic registry.
/// let registry = tmp.path().join("stratalog.store");
/// let mut bytes = std::fs::read(&registry).unwrap();
/// let last = bytes.len() - 1;
/// bytes[last] ^= 0xff;
/// std::fs::write(&registry, &bytes).unwrap();
/// let report = verify_store(tmp.path())?;
/// assert!(!report.is_ok());
/// // The problem names the file.
/// assert_eq!(report.problems[0].path, registry);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreProblem {
    /// The file it is in.
    pub path: PathBuf,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for StoreProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

/// What [`verify_store`] found.
///
/// # Examples
///
/// ```
/// use stratalog::store::verify_store;
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("a", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.create_topic("b", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.commit("g", "a", 0, 0, 0)?;
/// store.close()?;
/// let report = verify_store(tmp.path())?;
/// assert!(report.is_ok(), "{:?}", report.problems);
/// assert_eq!((report.topics, report.offset_records), (2, 1));
/// // A directory with no store is an error, not an empty report.
/// assert!(verify_store(tmp.path().join("a")).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreVerifyReport {
    /// Topics in the registry (0 if it could not be read).
    pub topics: usize,
    /// Consumer offset records decoded.
    pub offset_records: u64,
    /// Every problem found; empty when the store's files are sound.
    pub problems: Vec<StoreProblem>,
}

impl StoreVerifyReport {
    /// No problem found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store in `dir` without opening it (see the module doc): the registry decodes and
/// every value in it is valid, the offsets generation pointer is sound, and every record of
/// the current consumer offsets log decodes (key and value). Fails only if `dir` holds no
/// store (no registry) or a directory cannot be listed; everything else is a problem in the
/// report, naming its file.
pub fn verify_store(dir: impl AsRef<Path>) -> Result<StoreVerifyReport> {
    let dir = dir.as_ref();
    let mut report = StoreVerifyReport::default();
    let registry = dir.join(REGISTRY_NAME);
    if !registry.exists() {
        return Err(Error::InvalidArgument(format!(
            "no store in {} (no {REGISTRY_NAME} file)",
            dir.display()
        )));
    }
    match topic::read(&FsStorage, dir) {
        Ok(entries) => report.topics = entries.map_or(0, |e| e.len()),
        Err(e) => report.problems.push(StoreProblem {
            path: registry,
            what: e.to_string(),
        }),
    }
    let generation = match offsets::read_generation(&FsStorage, dir) {
        Ok(g) => g,
        Err(e) => {
            report.problems.push(StoreProblem {
                path: dir.join(offsets::GENERATION_FILE),
                what: e.to_string(),
            });
            return Ok(report);
        }
    };
    let log_dir = offsets::log_dir(dir, generation);
    let names = match std::fs::read_dir(&log_dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<String>>>()
            .ctx("list", &log_dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.problems.push(StoreProblem {
                path: log_dir,
                what: "the consumer offsets log is missing".into(),
            });
            return Ok(report);
        }
        Err(e) => return Err(Error::io("list", &log_dir, e)),
    };
    let mut bases: Vec<u64> = names
        .iter()
        .filter(|n| n.len() == 24 && n.ends_with(".log"))
        .filter_map(|n| n[..20].parse().ok())
        .collect();
    bases.sort_unstable();
    for (i, base) in bases.iter().enumerate() {
        let path = log_dir.join(format!("{base:020}.log"));
        let last = i + 1 == bases.len();
        check_segment(&path, *base, last, &mut report)?;
    }
    Ok(report)
}

/// Decodes every offset record of one segment of the offsets log.
fn check_segment(path: &Path, base: u64, last: bool, report: &mut StoreVerifyReport) -> Result<()> {
    let mut problem = |what: String| {
        report.problems.push(StoreProblem {
            path: path.to_path_buf(),
            what,
        })
    };
    let bytes = Bytes::from(std::fs::read(path).ctx("read", path)?);
    if let Err(e) = FileHeader::parse(&bytes, FileKind::Segment, base) {
        problem(e.to_string());
        return Ok(());
    }
    let mut pos = crate::format::FILE_HEADER_LEN;
    let mut records = 0u64;
    let mut bad = Vec::new();
    while pos < bytes.len() {
        // Zeros after the last batch: the preallocated, never written part of the segment.
        if bytes[pos..].iter().all(|&b| b == 0) {
            break;
        }
        let batch = match Batch::validate(bytes.slice(pos..)) {
            Ok(b) => b,
            // The tail of the active segment may be torn by a crash (recovery cuts it) or be
            // being written right now; a sealed segment must be whole.
            Err(_) if last => break,
            Err(e) => {
                bad.push(format!("batch at byte {pos}: {e}"));
                break;
            }
        };
        pos += batch.as_bytes().len();
        let iter = match batch.records() {
            Ok(iter) => iter,
            Err(e) => {
                bad.push(format!("batch at byte {pos}: {e}"));
                continue;
            }
        };
        for r in iter {
            match r {
                Ok(r) => {
                    records += 1;
                    if let Err(e) = decode_record(r.key.as_deref(), &r.value) {
                        bad.push(format!(
                            "consumer offset record at offset {}: {e}",
                            r.offset
                        ));
                    }
                }
                Err(e) => bad.push(format!("batch at offset {}: {e}", batch.base_offset())),
            }
        }
    }
    for what in bad {
        problem(what);
    }
    report.offset_records += records;
    Ok(())
}

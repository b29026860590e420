//! Segment preallocation: the active segment's file is extended ahead of the writer, so that
//! the group-commit `fdatasync` after an append finds the file's length and blocks already
//! durable and only has the appended data to write back.
//!
//! An append that grows a file makes its `fdatasync` commit a metadata change (the new length,
//! new extents) to the file system's journal as well; measured on the development machine
//! (`cargo bench --bench prealloc`, docs/BENCHMARKS.md) 1 KiB appends each followed by an
//! `fdatasync` took about 0.3x the time in a zero-filled file that they took in a growing one,
//! and about 0.6x in a file extended with `fallocate` (whose unwritten extents still change at
//! the first write of each block).
//!
//! Measured with `stratalog bench --compare-prealloc` (docs/BENCHMARKS.md), zeros ahead of the
//! writer made one durable writer of 1 KiB appends about 1.6x faster, and 1 MiB batches each
//! fsynced about 0.85x slower (every byte is written twice); [`Preallocate::Auto`], the
//! default, therefore writes zeros only while fsyncs are small.
//!
//! The work is done by one thread shared by every log in the process: an append that leaves
//! less than half a chunk of preallocated space asks it to extend the file by another chunk
//! (as many bytes as the segment holds, between 64 KiB and [`CHUNK`]). It writes zeros (or
//! calls `fallocate`) in pieces, each under the log's writer lock and only at or past the
//! writer's position, so it never overwrites a batch; after each piece (256 KiB) it fsyncs the
//! file outside the writer lock but through the log's sync gate, like every fsync of a segment (an fsync error
//! it meets fails the log before any other fsync can report success). If the writer outruns
//! it, the writer simply grows the file itself.
//!
//! The space past the last batch of the active segment is therefore zeros. Sealing a segment
//! (at a roll, a truncation or a clean close) trims it; recovery after a crash treats an
//! all-zero tail after the last valid batch as preallocated space, not as a torn write, and
//! trims it too (docs/FORMAT.md, docs/SAFETY.md).

use std::sync::{OnceLock, Weak};

use crossbeam_channel::Sender;

/// How the active segment's file is extended ahead of the writer.
///
/// # Examples
///
/// ```
/// use stratalog::{Log, LogOptions, Preallocate};
///
/// # fn main() -> stratalog::Result<()> {
/// assert_eq!(Preallocate::default(), Preallocate::Auto);
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions { preallocate: Preallocate::Zeros, ..Default::default() })?;
/// // Preallocated zeros are never read as records.
/// log.append_records(&["a"])?.receipt.wait()?;
/// log.close()?;
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// assert_eq!(log.end_offset(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocate {
    /// Not at all: every append grows the file.
    Off,
    /// `fallocate` (the file gets its new length at once, as unwritten extents): no data is
    /// written, but the first write to each block still changes extent metadata at `fdatasync`.
    Fallocate,
    /// Zeros written and fsynced ahead of the writer: appends then overwrite allocated, written
    /// blocks and their `fdatasync` commits no metadata. Costs a second write of every byte
    /// (in the background), so it pays for small durable appends and costs bandwidth for
    /// large ones.
    Zeros,
    /// The default: [`Preallocate::Zeros`] while the log's group-commit fsyncs covered less
    /// than 64 KiB each on average over the last 256 KiB appended
    /// (small durable appends, where zeros were measured fastest), no preallocation otherwise
    /// (large batches, or fsyncs rare under the policy: there writing every byte twice, and
    /// the preallocation's own fsyncs, cost more than they save). It starts with none.
    #[default]
    Auto,
}

/// [`Preallocate::Auto`] writes zeros while fsyncs cover fewer bytes than this on average.
pub const ZEROS_BELOW: u64 = 64 << 10;

/// [`Preallocate::Auto`] decides again after this many bytes appended.
pub const AUTO_WINDOW: u64 = 256 << 10;

impl std::str::FromStr for Preallocate {
    type Err = String;

    /// `auto`, `off`, `fallocate` or `zeros`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Preallocate::Off),
            "fallocate" => Ok(Preallocate::Fallocate),
            "zeros" => Ok(Preallocate::Zeros),
            "auto" => Ok(Preallocate::Auto),
            _ => Err(format!(
                "bad preallocation {s:?}; use auto, off, fallocate or zeros"
            )),
        }
    }
}

/// Most bytes added to the active segment per request. A request adds as many bytes as the
/// segment already holds, at least 64 KiB and at most this (and never past the
/// segment's roll size), so that a log written slowly (one of many partitions) keeps a small
/// tail of zeros and a busy one a large one.
pub const CHUNK: u64 = 4 << 20;

/// Fewest bytes added per request.
pub(crate) const MIN_CHUNK: u64 = 64 << 10;

/// Bytes to add to a segment that holds `written` bytes.
pub(crate) fn chunk_for(written: u64) -> u64 {
    written.clamp(MIN_CHUNK, CHUNK)
}

/// Bytes of zeros written per hold of the writer lock, and per fsync.
pub(crate) const PIECE: u64 = crate::storage::ZEROS.len() as u64;

/// Extends a log's active segment (the log implements it).
pub(crate) trait Filler: Send + Sync {
    /// Runs one preallocation request.
    fn fill(&self);
}

/// A request: the log to extend.
type Request = Weak<dyn Filler>;

/// Asks the shared preallocation thread to run `filler.fill()` soon. Returns false if the
/// thread could not be started (the caller's appends then grow the file themselves).
pub(crate) fn request(filler: Weak<dyn Filler>) -> bool {
    static QUEUE: OnceLock<Option<Sender<Request>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Request>();
        let spawned = std::thread::Builder::new()
            .name("stratalog-prealloc".into())
            .spawn(move || {
                for filler in rx {
                    if let Some(filler) = filler.upgrade() {
                        // A panic in one log's preallocation must not end it for every log.
                        let run = std::panic::AssertUnwindSafe(|| filler.fill());
                        if std::panic::catch_unwind(run).is_err() {
                            tracing::error!("preallocation panicked; that log's segments grow as they are written");
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the preallocation thread; segments grow as they are written");
                None
            }
        }
    });
    queue.as_ref().is_some_and(|tx| tx.send(filler).is_ok())
}

/// Length of `bytes` without its trailing zeros.
pub(crate) fn trim_zeros(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    for chunk in bytes.rchunks(4096) {
        if !all_zero(chunk) {
            let last = chunk
                .iter()
                .rposition(|&b| b != 0)
                .expect("a non-zero byte");
            return end - chunk.len() + last + 1;
        }
        end -= chunk.len();
    }
    0
}

/// True if every byte is zero.
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    // In word-sized steps: a byte at a time is slow for megabytes.
    let words = bytes.chunks_exact(8);
    let rest = words.remainder();
    words
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        .all(|w| w == 0)
        && rest.iter().all(|&b| b == 0)
}

//! The recovery checkpoint (`recovery.checkpoint`) and the log's settings (`log.meta`).
//!
//! The checkpoint says up to where the log was fsynced, so recovery after a crash scans only what
//! came after it. The flusher writes it after each fsync without syncing it: a checkpoint that
//! did not reach the disk is only older, which means more to scan, never less. Its two slots are
//! written in turn so a torn write cannot destroy both. A clean close writes a slot with
//! `clean = 1` and syncs it; opening the log writes a slot with `clean = 0` and syncs it before
//! any append, so a later crash is never taken for a clean close.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zerocopy::IntoBytes;

use super::segment::replace_file;
use crate::error::{Error, IoContext, Result};
use crate::format::{CheckpointSlot, FILE_HEADER_LEN, FileHeader, FileKind, MetaBody};
use crate::storage::{OpenMode, Storage, StorageFile, read_all};

/// Where the log was known durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub clean: bool,
    pub segment_base: u64,
    pub position: u64,
    pub next_offset: u64,
    pub max_ts: i64,
}

#[derive(Debug)]
pub(crate) struct CheckpointFile {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    sequence: u64,
    /// (generation, segment base, position) of the last write: never move backwards within a
    /// generation.
    last: (u64, u64, u64),
    /// Log bytes written since open (`Writer::seq`) when the checkpoint was last fsynced.
    synced_seq: u64,
}

/// After a group-commit fsync, the checkpoint is itself fsynced once this many log bytes were
/// made durable since its last fsync: a power loss (which may lose an unsynced checkpoint, unlike
/// a process crash) then costs a scan of at most this much, plus the active segment's share
/// since its roll. One extra fsync of a small file per 64 MiB is lost in the noise.
pub(crate) const CHECKPOINT_SYNC_BYTES: u64 = 64 << 20;

impl CheckpointFile {
    pub const NAME: &'static str = "recovery.checkpoint";

    /// Opens the checkpoint file, creating it if missing, and returns the newest valid slot.
    pub fn open(storage: &dyn Storage, dir: &Path) -> Result<(CheckpointFile, Option<Checkpoint>)> {
        let path = dir.join(Self::NAME);
        let existed = storage.exists(&path);
        let file = storage
            .open(&path, OpenMode::CreateOrOpen)
            .ctx("open", &path)?;
        let bytes = read_all(file.as_ref()).ctx("read", &path)?;
        let header_ok = FileHeader::parse(&bytes, FileKind::Checkpoint, 0).is_ok();
        let best = header_ok
            .then(|| {
                (0..2)
                    .filter_map(|i| {
                        bytes
                            .get(FILE_HEADER_LEN + 64 * i..)
                            .and_then(CheckpointSlot::parse)
                    })
                    .max_by_key(|s| s.sequence.get())
            })
            .flatten();
        if !header_ok {
            if !bytes.is_empty() {
                tracing::warn!(path = %path.display(), "checkpoint header is bad; recovery scans the last segment");
            }
            file.set_len(0).ctx("truncate", &path)?;
            file.write_and_sync(FileHeader::new(FileKind::Checkpoint, 0).as_bytes(), 0)
                .ctx("write and fsync", &path)?;
            if !existed {
                storage.sync_dir(dir).ctx("fsync directory", dir)?;
            }
        }
        let sequence = best.map_or(0, |s| s.sequence.get());
        let checkpoint = best.map(|s| Checkpoint {
            clean: s.clean.get() == 1,
            segment_base: s.segment_base.get(),
            position: s.position.get(),
            next_offset: s.next_offset.get(),
            max_ts: s.max_timestamp.get(),
        });
        Ok((
            CheckpointFile {
                path,
                file,
                sequence,
                last: (0, 0, 0),
                synced_seq: 0,
            },
            checkpoint,
        ))
    }

    /// For a read-only log: the newest valid slot, read without creating or repairing the
    /// file; the returned file refuses every write (a read-only log never writes one).
    pub fn open_read_only(
        storage: &dyn Storage,
        dir: &Path,
    ) -> Result<(CheckpointFile, Option<Checkpoint>)> {
        let path = dir.join(Self::NAME);
        let checkpoint = super::verify::read_checkpoint(storage, dir)?;
        let file: Arc<dyn StorageFile> = Arc::new(super::readonly::NoFile(path.clone()));
        Ok((
            CheckpointFile {
                path,
                file,
                sequence: 0,
                last: (0, 0, 0),
                synced_seq: 0,
            },
            checkpoint,
        ))
    }

    /// Writes `c` after a group-commit fsync that made `seq` log bytes durable, fsyncing it
    /// every [`CHECKPOINT_SYNC_BYTES`].
    pub fn write_after_fsync(&mut self, c: Checkpoint, generation: u64, seq: u64) -> Result<()> {
        let sync = seq >= self.synced_seq + CHECKPOINT_SYNC_BYTES;
        self.write(c, generation, sync, sync)?;
        if sync {
            self.synced_seq = seq;
        }
        Ok(())
    }

    /// Writes `c`. Unless `force`, a checkpoint that is not ahead of the last one of the same
    /// generation is skipped. With `sync`, the write is fsynced.
    pub fn write(&mut self, c: Checkpoint, generation: u64, force: bool, sync: bool) -> Result<()> {
        let key = (generation, c.segment_base, c.position);
        if !force && key <= self.last && !c.clean {
            return Ok(());
        }
        self.last = key;
        self.sequence += 1;
        let slot = CheckpointSlot {
            crc: 0.into(),
            clean: u32::from(c.clean).into(),
            sequence: self.sequence.into(),
            segment_base: c.segment_base.into(),
            position: c.position.into(),
            next_offset: c.next_offset.into(),
            max_timestamp: c.max_ts.into(),
            reserved: [0; 16],
        }
        .seal();
        let pos = (FILE_HEADER_LEN + 64 * (self.sequence % 2) as usize) as u64;
        if sync {
            self.file
                .write_and_sync(slot.as_bytes(), pos)
                .ctx("write and fsync", &self.path)
        } else {
            self.file
                .write_at(slot.as_bytes(), pos)
                .ctx("write", &self.path)
        }
    }
}

/// The persisted settings and start offset of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub start_offset: u64,
    pub config: super::LogConfig,
}

pub(crate) const META_NAME: &str = "log.meta";

impl Meta {
    pub fn read(storage: &dyn Storage, dir: &Path) -> Result<Option<Meta>> {
        let path = dir.join(META_NAME);
        if !storage.exists(&path) {
            return Ok(None);
        }
        let file = storage.open(&path, OpenMode::Read).ctx("open", &path)?;
        let bytes = read_all(file.as_ref()).ctx("read", &path)?;
        let corrupt = |position, source| Error::Corrupt {
            path: path.clone(),
            position,
            source,
        };
        FileHeader::parse(&bytes, FileKind::Meta, 0).map_err(|e| corrupt(0, e))?;
        let body = MetaBody::parse(&bytes[FILE_HEADER_LEN..])
            .map_err(|e| corrupt(FILE_HEADER_LEN as u64, e))?;
        let limit = |v: u64| (v != u64::MAX).then_some(v);
        let config = super::LogConfig {
            segment_bytes: body.segment_bytes.get(),
            segment_ms: (body.segment_ms.get() != 0).then_some(body.segment_ms.get()),
            retention_bytes: limit(body.retention_bytes.get()),
            retention_ms: limit(body.retention_ms.get()),
            index_interval_bytes: body.index_interval_bytes.get(),
            compression: if body.compression.get() == 1 {
                crate::format::Compression::Lz4
            } else {
                crate::format::Compression::None
            },
        };
        Ok(Some(Meta {
            start_offset: body.start_offset.get(),
            config,
        }))
    }

    pub fn write(&self, storage: &dyn Storage, dir: &Path) -> Result<()> {
        let c = &self.config;
        let body = MetaBody {
            crc: 0.into(),
            reserved0: 0.into(),
            start_offset: self.start_offset.into(),
            segment_bytes: c.segment_bytes.into(),
            segment_ms: c.segment_ms.unwrap_or(0).into(),
            retention_bytes: c.retention_bytes.unwrap_or(u64::MAX).into(),
            retention_ms: c.retention_ms.unwrap_or(u64::MAX).into(),
            index_interval_bytes: c.index_interval_bytes.into(),
            compression: u16::from(c.compression == crate::format::Compression::Lz4).into(),
            reserved1: 0.into(),
            reserved2: 0.into(),
        }
        .seal();
        let mut bytes = FileHeader::new(FileKind::Meta, 0).as_bytes().to_vec();
        bytes.extend_from_slice(body.as_bytes());
        let path = dir.join(META_NAME);
        match replace_file(storage, &path, &bytes) {
            Err(e) if e.is_no_space() && storage.exists(&path) => {
                // A full disk has no room for the temporary copy, yet retention, which frees
                // space, must raise the start offset first. Overwrite the 96 bytes in place
                // instead: they lie in one sector, and the body's CRC catches a torn write.
                let _ = storage.remove(&path.with_extension("meta.tmp"));
                tracing::warn!(path = %path.display(), "no space for a new log.meta; rewriting it in place");
                let file = storage.open(&path, OpenMode::Existing).ctx("open", &path)?;
                file.write_at(&bytes, 0).ctx("write", &path)?;
                file.sync().ctx("fsync", &path)
            }
            other => other,
        }
    }
}

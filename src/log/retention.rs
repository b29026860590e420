//! Retention ([`Log::apply_retention`](super::Log::apply_retention)): deleting the oldest sealed
//! segments beyond the size and age limits, the new start persisted first.

use std::sync::atomic::Ordering;

use super::checkpoint::Meta;
use super::{Inner, lock, quarantine, segment};
use crate::crash;
use crate::error::{Error, Result};

impl Inner {
    pub(super) fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let _m = self.lock_or_fail(&self.maintenance, "maintenance")?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let config = *lock(&self.config);
        let segments = self.segments_from(0);
        let Some((_active, sealed)) = segments.split_last() else {
            return Ok(0);
        };
        let mut total: u64 = segments.iter().map(|s| s.visible_len()).sum();
        let mut doomed = 0;
        for segment in sealed {
            let by_size = config.retention_bytes.is_some_and(|max| total > max);
            let by_age = match config.retention_ms {
                Some(ms) => segment.max_timestamp()? < now_ms.saturating_sub(ms as i64),
                None => false,
            };
            if !by_size && !by_age {
                break;
            }
            total -= segment.visible_len();
            doomed += 1;
        }
        if doomed == 0 {
            return Ok(0);
        }
        // Persist the new start first: a crash after it finishes the deletion at the next open.
        let new_start = segments[doomed].base;
        Meta {
            start_offset: new_start,
            config,
        }
        .write(self.storage.as_ref(), &self.dir)?;
        crash::point("retention.after_meta");
        self.start_offset.store(new_start, Ordering::Release);
        self.segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|base, _| *base >= new_start);
        let removed = segments[..doomed].iter().map(|s| &s.paths);
        segment::remove_segment_files(self.storage.as_ref(), &self.dir, removed)?;
        crash::point("retention.after_delete");
        quarantine::remove_below(self.storage.as_ref(), &self.dir, new_start)?;
        self.cut_epochs(|h| h.truncate_start(new_start))?;
        tracing::info!(dir = %self.dir.display(), segments = doomed, new_start, "retention deleted segments");
        Ok(doomed)
    }
}

//! The epoch history of a log: which leader epoch started at which offset, kept durable in the
//! log directory's `log.epochs` file (byte map in `docs/FORMAT.md`, codec in `format/epochs.rs`).
//!
//! A follower that rejoins asks the leader where its own last epoch ends there, and truncates to
//! that offset: exactly the divergent suffix, never more (Kafka's KIP-101, which replaced
//! truncation to the high watermark that lost acknowledged records, and KIP-279 for two leader
//! changes in quick succession). The history is what answers that question, on both sides.
//!
//! Two things are kept: the *current* epoch, the highest the log has known (it only rises, across
//! restarts and truncations, so a deposed leader can always be fenced), and the *entries*, the
//! epochs of the records the log holds. A truncation removes entries, never the current epoch.
//!
//! Invariants (checked on load and on change): epochs strictly rise; start offsets never fall;
//! no entry is above the current epoch.

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::format::{decode_epochs, encode_epochs};
use crate::storage::{OpenMode, Storage, read_all};

use super::segment::replace_file;

/// Name of the epoch history file in a log directory.
pub(crate) const EPOCHS_NAME: &str = "log.epochs";

/// Which leader epoch started at which offset.
///
/// # Examples
///
/// ```
/// use stratalog::EpochHistory;
///
/// # fn main() -> stratalog::Result<()> {
/// // Epoch 1 started at offset 0, epoch 3 at offset 10.
/// let history = EpochHistory::from_entries(vec![(1, 0), (3, 10)])?;
/// assert_eq!(history.latest(), Some(3));
/// assert_eq!(history.epoch_at(5), Some(1));
/// assert_eq!(history.epoch_at(12), Some(3));
/// // Epochs must rise: a history that goes back is refused.
/// assert!(EpochHistory::from_entries(vec![(3, 0), (1, 10)]).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    /// The highest epoch known.
    current: u64,
    /// `(epoch, start_offset)`, epochs strictly rising, start offsets non-decreasing.
    entries: Vec<(u64, u64)>,
}

impl EpochHistory {
    /// A history of these entries, its current epoch the newest of them (checked like a
    /// loaded file).
    pub fn from_entries(entries: Vec<(u64, u64)>) -> Result<EpochHistory> {
        let current = entries.last().map_or(0, |&(e, _)| e);
        let bytes = encode_epochs_checked(current, &entries)?;
        let (current, entries) = decode_epochs(&bytes).map_err(|source| Error::Corrupt {
            path: EPOCHS_NAME.into(),
            position: 0,
            source,
        })?;
        Ok(EpochHistory { current, entries })
    }

    /// Reads the history of the log in `dir`; an empty history if the file does not exist (a log
    /// written before epochs were kept, or never led).
    pub fn load(storage: &dyn Storage, dir: &Path) -> Result<EpochHistory> {
        let path = dir.join(EPOCHS_NAME);
        if !storage.exists(&path) {
            return Ok(EpochHistory::default());
        }
        let file = storage.open(&path, OpenMode::Read).ctx("open", &path)?;
        let bytes = read_all(file.as_ref()).ctx("read", &path)?;
        let (current, entries) = decode_epochs(&bytes).map_err(|source| Error::Corrupt {
            path: path.clone(),
            position: 0,
            source,
        })?;
        Ok(EpochHistory { current, entries })
    }

    /// Replaces the file durably (temporary file, fsync, rename, fsync of `dir`).
    pub fn store(&self, storage: &dyn Storage, dir: &Path) -> Result<()> {
        replace_file(
            storage,
            &dir.join(EPOCHS_NAME),
            &encode_epochs(self.current, &self.entries),
        )
    }

    /// The entries, `(epoch, start_offset)`, oldest first.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    /// The epoch of the newest records, if any.
    pub fn latest(&self) -> Option<u64> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// The highest epoch known: at least [`EpochHistory::latest`], and never lowered.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Raises the current epoch to `epoch` (a leadership change seen before any record of it).
    /// Returns true if it changed; a lower epoch is refused: the current epoch only rises.
    pub fn raise(&mut self, epoch: u64) -> Result<bool> {
        if epoch < self.current {
            return Err(Error::InvalidArgument(format!(
                "leader epoch {epoch} is below the log's current epoch {}: epochs only rise",
                self.current
            )));
        }
        let changed = epoch > self.current;
        self.current = epoch;
        Ok(changed)
    }

    /// Records that the records of `epoch` start at `start_offset`, and raises the current epoch
    /// to it. Returns true if the history changed, false if `epoch` is already the newest entry.
    /// An epoch below the newest entry, or a start below its start, is refused.
    pub fn assign(&mut self, epoch: u64, start_offset: u64) -> Result<bool> {
        match self.entries.last() {
            Some(&(last, _)) if epoch == last => Ok(false),
            Some(&(last, start)) if epoch < last || start_offset < start => {
                Err(Error::InvalidArgument(format!(
                    "leader epoch {epoch} at offset {start_offset} does not follow epoch {last} \
                     at offset {start}: epochs only rise"
                )))
            }
            _ => {
                self.entries.push((epoch, start_offset));
                self.current = self.current.max(epoch);
                Ok(true)
            }
        }
    }

    /// Where `epoch` ends (KIP-101's `OffsetsForLeaderEpoch`): the largest epoch at or below it
    /// that this history knows, and one past its last offset (the start of the next epoch, or
    /// `log_end` for the newest). `None` if every known epoch is above `epoch` (or none is
    /// known): the asker must truncate to this log's start.
    pub fn end_of(&self, epoch: u64, log_end: u64) -> Option<(u64, u64)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = *self.entries.get(i.checked_sub(1)?)?;
        let end = self.entries.get(i).map_or(log_end, |&(_, start)| start);
        Some((found, end))
    }

    /// The epoch of the record at `offset`, if the history covers it.
    pub fn epoch_at(&self, offset: u64) -> Option<u64> {
        let i = self.entries.partition_point(|&(_, start)| start <= offset);
        self.entries.get(i.checked_sub(1)?).map(|&(e, _)| e)
    }

    /// After the log was truncated to `end` (offsets `end..` removed): drops the epochs that
    /// started at or after it. Returns true if anything changed.
    pub fn truncate_end(&mut self, end: u64) -> bool {
        let keep = self.entries.partition_point(|&(_, start)| start < end);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// After [`crate::Log::reset_to`] dropped every record: drops every entry and keeps the
    /// current epoch. Returns true if anything changed.
    pub(crate) fn clear_entries(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// After retention raised the log start to `start`: drops the epochs that ended before it and
    /// moves the start of the oldest remaining one up to `start`. Returns true if anything
    /// changed.
    pub fn truncate_start(&mut self, start: u64) -> bool {
        let first_kept = self
            .entries
            .partition_point(|&(_, s)| s <= start)
            .saturating_sub(1);
        let mut changed = first_kept > 0;
        self.entries.drain(..first_kept);
        if let Some(first) = self.entries.first_mut()
            && first.1 < start
        {
            first.1 = start;
            changed = true;
        }
        changed
    }
}

fn encode_epochs_checked(current: u64, entries: &[(u64, u64)]) -> Result<Vec<u8>> {
    if entries
        .windows(2)
        .any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
    {
        return Err(Error::InvalidArgument(
            "epoch history entries must have rising epochs and non-decreasing start offsets".into(),
        ));
    }
    Ok(encode_epochs(current, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{PowerLoss, SimStorage};

    fn history(entries: &[(u64, u64)]) -> EpochHistory {
        EpochHistory::from_entries(entries.to_vec()).unwrap()
    }

    #[test]
    fn end_of_answers_as_kip_101_asks() {
        let h = history(&[(1, 0), (3, 10), (5, 40)]);
        assert_eq!(h.end_of(0, 100), None, "before every known epoch");
        assert_eq!(h.end_of(1, 100), Some((1, 10)));
        assert_eq!(
            h.end_of(2, 100),
            Some((1, 10)),
            "an unknown epoch: the one below it"
        );
        assert_eq!(h.end_of(3, 100), Some((3, 40)));
        assert_eq!(
            h.end_of(5, 100),
            Some((5, 100)),
            "the newest ends at the log end"
        );
        assert_eq!(h.end_of(9, 100), Some((5, 100)));
        assert_eq!(EpochHistory::default().end_of(3, 7), None);
        assert_eq!(h.epoch_at(0), Some(1));
        assert_eq!(h.epoch_at(39), Some(3));
        assert_eq!(h.epoch_at(40), Some(5));
    }

    #[test]
    fn epochs_only_rise() {
        let mut h = history(&[(2, 5)]);
        assert!(
            !h.assign(2, 9).unwrap(),
            "the same epoch again changes nothing"
        );
        assert!(h.assign(1, 9).is_err());
        assert!(h.assign(3, 4).is_err(), "a start below the last start");
        assert!(h.assign(3, 9).unwrap());
        assert_eq!(h.latest(), Some(3));
        assert!(h.raise(6).unwrap());
        assert!(h.raise(5).is_err());
        assert!(h.truncate_end(9));
        assert_eq!(
            (h.latest(), h.current()),
            (Some(2), 6),
            "truncation keeps the current epoch"
        );
        assert!(
            h.assign(4, 9).unwrap(),
            "records of an epoch below the current one"
        );
        assert_eq!(h.current(), 6);
        assert!(EpochHistory::from_entries(vec![(3, 0), (2, 1)]).is_err());
    }

    #[test]
    fn truncation_and_retention_cut_the_history() {
        let mut h = history(&[(1, 0), (3, 10), (5, 40)]);
        assert!(h.truncate_end(40));
        assert_eq!(h.entries(), &[(1, 0), (3, 10)]);
        assert!(!h.truncate_end(41));
        assert!(h.truncate_end(10));
        assert_eq!(h.entries(), &[(1, 0)]);

        let mut h = history(&[(1, 0), (3, 10), (5, 40)]);
        assert!(h.truncate_start(12));
        assert_eq!(h.entries(), &[(3, 12), (5, 40)]);
        assert!(h.truncate_start(40));
        assert_eq!(h.entries(), &[(5, 40)]);
        assert!(!h.truncate_start(40));
        assert!(h.truncate_start(50));
        assert_eq!(h.entries(), &[(5, 50)], "the newest epoch is never dropped");
    }

    #[test]
    fn the_history_survives_a_power_loss_once_stored() {
        let sim = SimStorage::new(7);
        let dir = Path::new("/log");
        sim.create_dir_all(dir).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        sim.sync_dir(dir).unwrap();
        assert_eq!(
            EpochHistory::load(&sim, dir).unwrap(),
            EpochHistory::default()
        );
        let h = history(&[(1, 0), (4, 7)]);
        h.store(&sim, dir).unwrap();
        sim.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(EpochHistory::load(&sim, dir).unwrap(), h);
    }
}

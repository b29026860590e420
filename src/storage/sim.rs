//! A simulated, in-memory file system for tests: power losses and disk faults on demand.
//!
//! [`SimStorage`] keeps two views of everything:
//!
//! - the *live* view (the page cache): what reads, [`Storage::list`] and [`Storage::exists`] see;
//! - the *durable* view (the disk): what survives a [`SimStorage::power_loss`].
//!
//! File contents become durable with [`StorageFile::sync`], directory entries (creates, renames,
//! removes of files and of directories) with [`Storage::sync_dir`] of their parent directory. A
//! directory created or removed since its parent's last sync comes back, or vanishes with
//! everything in it, at a power loss; only the root (and a relative path's `.`) always exists.
//! Faults ([`Fault`]) make a chosen `fsync`, directory sync or write fail the way
//! Linux does, or cap the disk size.
//!
//! Everything random (torn writes, partial failed writes) comes from a small PRNG seeded by
//! [`SimStorage::new`], so a run replays exactly given the same seed and the same calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{LockGuard, Mapping, OpenMode, Storage, StorageFile};

/// The largest file the simulation holds (1 GiB); writes or `set_len` beyond it fail with `EFBIG`.
const MAX_FILE_LEN: u64 = 1 << 30;

/// The message of every error returned through a handle opened before a power loss.
const STALE_HANDLE: &str = "stale handle from before a simulated power loss";

/// How [`SimStorage::power_loss`] treats data that was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// Every unsynced write and length change is lost: files go back to their last synced
    /// content.
    DropUnsynced,
    /// For each file, a random number of its unsynced writes and length changes reached the disk
    /// in order, and the next one, if it is a write, reached it only in part (a random prefix,
    /// possibly empty).
    Torn,
}

/// A disk fault to inject with [`SimStorage::inject`].
///
/// `nth` counts calls of the matching kind from the moment of injection, starting at 1
/// (`nth: 1` is the very next call; `nth: 0` is treated as 1). Each such fault fires once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The `nth` [`StorageFile::sync`] fails with `EIO`. As on Linux, the file's unsynced writes
    /// are dropped: they stay visible to reads but never become durable, not even after a later
    /// successful sync.
    FailSync {
        /// Which sync fails, 1-based from the injection.
        nth: u64,
    },
    /// The `nth` [`Storage::sync_dir`] fails with `EIO` and makes nothing durable.
    FailDirSync {
        /// Which directory sync fails, 1-based from the injection.
        nth: u64,
    },
    /// The `nth` [`StorageFile::write_at`] writes a random strict prefix (possibly empty) of its
    /// buffer, then fails with `ENOSPC` if `enospc`, else `EIO`.
    FailWrite {
        /// Which write fails, 1-based from the injection.
        nth: u64,
        /// Fail with `ENOSPC` rather than `EIO`.
        enospc: bool,
    },
    /// The disk holds `bytes` bytes: a write that would make the total live length of the files
    /// in the namespace exceed it writes what fits and fails with `ENOSPC`. Removing files frees
    /// space. Stays until [`SimStorage::clear_faults`]; a later `Capacity` replaces it.
    Capacity {
        /// The disk size in bytes.
        bytes: u64,
    },
}

/// How many operations a [`SimStorage`] has seen since it was created (see
/// [`SimStorage::counters`]).
///
/// A call is counted, and counts towards a [`Fault`]'s `nth`, when it reaches the simulated disk:
/// calls through a stale handle (opened before a power loss) are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Calls of [`StorageFile::write_at`].
    pub writes: u64,
    /// Calls of [`StorageFile::sync`].
    pub syncs: u64,
    /// Calls of [`Storage::sync_dir`].
    pub dir_syncs: u64,
}

/// An in-memory, deterministic file system that can lose power and fail like a disk.
///
/// Clones share the same files. The model is described in `docs/TESTING.md` and `docs/SAFETY.md`.
#[derive(Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

/// A change to a file's content since its last sync, in order.
#[derive(Clone)]
enum Op {
    Write { pos: usize, data: Vec<u8> },
    SetLen(usize),
}

struct Inode {
    /// What reads see (the page cache).
    live: Vec<u8>,
    /// What survives a power loss.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    unsynced: Vec<Op>,
    /// Handles opened since the last power loss that are still alive.
    handles: u64,
}

/// A fault waiting for its call.
struct Pending {
    fault: Fault,
    /// Calls of the matching kind since the injection.
    seen: u64,
}

struct State {
    rng: SplitMix64,
    /// Bumped by every power loss; handles and lock guards carry the value they were made in.
    boot: u64,
    next_ino: u64,
    next_lock: u64,
    inodes: BTreeMap<u64, Inode>,
    live_ns: BTreeMap<PathBuf, u64>,
    durable_ns: BTreeMap<PathBuf, u64>,
    /// Directories as reads see them (the root and `.` are implicit).
    dirs: BTreeSet<PathBuf>,
    /// Directories whose entry in their parent is durable.
    durable_dirs: BTreeSet<PathBuf>,
    /// Held locks: path to the token of the guard holding it.
    locks: BTreeMap<PathBuf, u64>,
    faults: Vec<Pending>,
    capacity: Option<u64>,
    counters: SimCounters,
}

/// splitmix64: tiny, seeded, good enough to pick torn lengths.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; 0 if `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// A number in `0..n` as a `usize`; 0 if `n` is 0.
    fn below_usize(&mut self, n: usize) -> usize {
        // `below(n) < n`, so it fits in a usize.
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn is_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::IsADirectory,
        format!("{}: is a directory", path.display()),
    )
}

fn stale() -> io::Error {
    io::Error::other(STALE_HANDLE)
}

/// Checks that a file of `len` bytes is allowed and converts it to a `usize`.
fn file_len(len: u64) -> io::Result<usize> {
    if len > MAX_FILE_LEN {
        return Err(os_error(libc::EFBIG));
    }
    usize::try_from(len).map_err(|_| os_error(libc::EFBIG))
}

/// Resizes `buf` to `len`, zero-filling, without aborting if memory runs out.
fn resize(buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    if len > buf.len() {
        buf.try_reserve_exact(len - buf.len())
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "simulated file too large"))?;
    }
    buf.resize(len, 0);
    Ok(())
}

/// Applies `op` to `buf` (zero-filling any gap before a write).
fn apply(buf: &mut Vec<u8>, op: &Op) -> io::Result<()> {
    match op {
        Op::Write { pos, data } => {
            if data.is_empty() {
                return Ok(());
            }
            let end = pos.saturating_add(data.len());
            if end > buf.len() {
                resize(buf, end)?;
            }
            buf[*pos..end].copy_from_slice(data);
            Ok(())
        }
        Op::SetLen(len) => resize(buf, *len),
    }
}

/// True for the directories that always exist: the root and the current directory.
fn is_root(dir: &Path) -> bool {
    dir.as_os_str().is_empty() || dir == Path::new(".") || dir.parent().is_none()
}

/// `dir` as the parent of its entries is spelled (`.` is the empty path of bare names).
fn dir_key(dir: &Path) -> &Path {
    if dir == Path::new(".") {
        Path::new("")
    } else {
        dir
    }
}

/// True if `dir` can hold files: the root, the current directory or a created directory.
fn dir_exists(state: &State, dir: &Path) -> bool {
    is_root(dir) || state.dirs.contains(dir)
}

/// The directory holding `path` ("" for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

impl State {
    /// Counts a call of one kind against the pending faults of that kind; returns the fault that
    /// fires, if any (removing it).
    fn fire(&mut self, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut fired = None;
        let mut i = 0;
        while i < self.faults.len() {
            let pending = &mut self.faults[i];
            if matches(&pending.fault) {
                pending.seen += 1;
                let nth = match pending.fault {
                    Fault::FailSync { nth }
                    | Fault::FailDirSync { nth }
                    | Fault::FailWrite { nth, .. } => nth.max(1),
                    Fault::Capacity { .. } => u64::MAX,
                };
                if pending.seen >= nth && fired.is_none() {
                    fired = Some(self.faults.remove(i).fault);
                    continue;
                }
            }
            i += 1;
        }
        fired
    }

    /// Drops `ino` if no namespace entry and no handle refers to it any more.
    fn collect(&mut self, ino: u64) {
        let handles = self.inodes.get(&ino).map_or(0, |inode| inode.handles);
        if handles == 0
            && !self.live_ns.values().any(|&i| i == ino)
            && !self.durable_ns.values().any(|&i| i == ino)
        {
            self.inodes.remove(&ino);
        }
    }

    /// Drops every inode that no namespace entry and no handle refers to.
    fn collect_all(&mut self) {
        let used: BTreeSet<u64> = self
            .live_ns
            .values()
            .chain(self.durable_ns.values())
            .copied()
            .collect();
        self.inodes
            .retain(|ino, inode| inode.handles > 0 || used.contains(ino));
    }

    fn new_inode(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                live: Vec::new(),
                durable: Vec::new(),
                unsynced: Vec::new(),
                handles: 0,
            },
        );
        ino
    }

    /// Bytes used on the simulated disk: the live lengths of the files in the live namespace,
    /// plus `extra` if it is not among them.
    fn used(&self, extra: u64) -> u64 {
        let mut inos: BTreeSet<u64> = self.live_ns.values().copied().collect();
        inos.insert(extra);
        inos.iter()
            .filter_map(|ino| self.inodes.get(ino))
            .map(|inode| inode.live.len() as u64)
            .sum()
    }

    /// Checks that `path` may hold a file: its directory exists and it is not a directory.
    fn check_file_path(&self, path: &Path) -> io::Result<()> {
        if self.dirs.contains(path) || path.parent().is_none() {
            return Err(is_a_directory(path));
        }
        if !dir_exists(self, parent_of(path)) {
            return Err(not_found(path));
        }
        Ok(())
    }

    fn write(&mut self, ino: u64, buf: &[u8], pos: u64) -> io::Result<()> {
        self.counters.writes += 1;
        let fired = self.fire(|f| matches!(f, Fault::FailWrite { .. }));
        let end = pos
            .checked_add(buf.len() as u64)
            .ok_or_else(|| os_error(libc::EFBIG))?;
        file_len(end)?;
        let pos_usize = file_len(pos)?;

        let mut len = buf.len();
        let mut error = None;
        if let Some(Fault::FailWrite { enospc, .. }) = fired {
            len = self.rng.below_usize(buf.len());
            error = Some(os_error(if enospc { libc::ENOSPC } else { libc::EIO }));
        }
        let cur_len = self
            .inodes
            .get(&ino)
            .map_or(0, |inode| inode.live.len() as u64);
        if let Some(capacity) = self.capacity {
            let used = self.used(ino);
            let growth = (pos + len as u64).saturating_sub(cur_len);
            if used.saturating_add(growth) > capacity {
                let fit_end = cur_len.saturating_add(capacity.saturating_sub(used));
                let fit = usize::try_from(fit_end.saturating_sub(pos)).unwrap_or(usize::MAX);
                len = len.min(fit);
                error.get_or_insert_with(|| os_error(libc::ENOSPC));
            }
        }

        if len > 0 {
            let inode = self.inodes.get_mut(&ino).ok_or_else(stale)?;
            let op = Op::Write {
                pos: pos_usize,
                data: buf[..len].to_vec(),
            };
            apply(&mut inode.live, &op)?;
            inode.unsynced.push(op);
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync(&mut self, ino: u64) -> io::Result<()> {
        self.counters.syncs += 1;
        let fired = self.fire(|f| matches!(f, Fault::FailSync { .. }));
        let inode = self.inodes.get_mut(&ino).ok_or_else(stale)?;
        let ops = std::mem::take(&mut inode.unsynced);
        if fired.is_some() {
            // Linux marks the pages clean after a failed writeback: these bytes stay in the page
            // cache but will never reach the disk.
            return Err(os_error(libc::EIO));
        }
        // Replaying the ops (rather than copying `live`) keeps bytes dropped by an earlier failed
        // sync out of the durable content.
        for op in &ops {
            apply(&mut inode.durable, op)?;
        }
        Ok(())
    }

    fn power_loss(&mut self, mode: PowerLoss) {
        self.boot += 1;
        self.locks.clear();
        // A directory survives if its entry, and that of every directory above it, is durable;
        // an entry survives if its directory does.
        let durable_dirs = &self.durable_dirs;
        let surviving: BTreeSet<PathBuf> = durable_dirs
            .iter()
            .filter(|d| {
                d.ancestors()
                    .skip(1)
                    .all(|a| is_root(a) || durable_dirs.contains(a))
            })
            .cloned()
            .collect();
        self.durable_dirs.clone_from(&surviving);
        self.dirs = surviving;
        let dirs = &self.dirs;
        self.durable_ns.retain(|p, _| {
            let parent = parent_of(p);
            is_root(parent) || dirs.contains(parent)
        });
        self.live_ns = self.durable_ns.clone();
        for inode in self.inodes.values_mut() {
            inode.handles = 0;
        }
        self.collect_all();
        let rng = &mut self.rng;
        for inode in self.inodes.values_mut() {
            let ops = std::mem::take(&mut inode.unsynced);
            if mode == PowerLoss::Torn && !ops.is_empty() {
                let k = rng.below_usize(ops.len() + 1);
                // Allocation failures are ignored: these sizes were allocated for `live` already.
                for op in &ops[..k] {
                    let _ = apply(&mut inode.durable, op);
                }
                if let Some(Op::Write { pos, data }) = ops.get(k) {
                    let torn = rng.below_usize(data.len());
                    let _ = apply(
                        &mut inode.durable,
                        &Op::Write {
                            pos: *pos,
                            data: data[..torn].to_vec(),
                        },
                    );
                }
            }
            inode.live.clone_from(&inode.durable);
        }
    }
}

impl SimStorage {
    /// An empty simulated file system whose random choices follow `seed`.
    pub fn new(seed: u64) -> Self {
        let state = State {
            rng: SplitMix64(seed),
            boot: 0,
            next_ino: 1,
            next_lock: 1,
            inodes: BTreeMap::new(),
            live_ns: BTreeMap::new(),
            durable_ns: BTreeMap::new(),
            dirs: BTreeSet::new(),
            durable_dirs: BTreeSet::new(),
            locks: BTreeMap::new(),
            faults: Vec::new(),
            capacity: None,
            counters: SimCounters::default(),
        };
        SimStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A clone of this storage (sharing its files) as a trait object.
    pub fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates losing power: files go back to their durable content (all of it, or with some of
    /// the unsynced writes, see [`PowerLoss`]), the namespace to its durable entries, every lock
    /// is released, and every handle opened before fails from now on with an error saying it is
    /// stale. Lock guards taken before become inert.
    pub fn power_loss(&self, mode: PowerLoss) {
        self.state().power_loss(mode);
    }

    /// Arms a fault (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        let mut state = self.state();
        match fault {
            Fault::Capacity { bytes } => state.capacity = Some(bytes),
            _ => state.faults.push(Pending { fault, seen: 0 }),
        }
    }

    /// Disarms every fault, including a [`Fault::Capacity`].
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.faults.clear();
        state.capacity = None;
    }

    /// How many writes, syncs and directory syncs were made since creation.
    pub fn counters(&self) -> SimCounters {
        self.state().counters
    }

    /// The live content (what reads see) of the file at `path`, if there is one.
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state();
        let ino = state.live_ns.get(path)?;
        state.inodes.get(ino).map(|inode| inode.live.clone())
    }

    /// The content the file at `path` would have after a [`PowerLoss::DropUnsynced`], if it
    /// would exist.
    pub fn durable_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state();
        let ino = state.durable_ns.get(path)?;
        state.inodes.get(ino).map(|inode| inode.durable.clone())
    }

    /// Sets the file at `path` to `data`, live and durable, creating it (and its directories) in
    /// both namespaces if needed. Meant to plant corruption. Does nothing if `path` or one of its
    /// ancestors is a directory or file that cannot take this role.
    pub fn set_file(&self, path: &Path, data: Vec<u8>) {
        let mut state = self.state();
        if state.dirs.contains(path) || path.parent().is_none() || data.len() as u64 > MAX_FILE_LEN
        {
            return;
        }
        let ancestors: Vec<PathBuf> = parent_of(path)
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect();
        if ancestors
            .iter()
            .any(|a| state.live_ns.contains_key(a) || state.durable_ns.contains_key(a))
        {
            return;
        }
        state.dirs.extend(ancestors.iter().cloned());
        state.durable_dirs.extend(ancestors);
        let ino = match state.live_ns.get(path) {
            Some(&ino) => ino,
            None => state.new_inode(),
        };
        let old_durable = state.durable_ns.insert(path.to_path_buf(), ino);
        state.live_ns.insert(path.to_path_buf(), ino);
        if let Some(inode) = state.inodes.get_mut(&ino) {
            inode.live.clone_from(&data);
            inode.durable = data;
            inode.unsynced.clear();
        }
        if let Some(old) = old_durable {
            state.collect(old);
        }
    }

    fn handle(
        &self,
        state: &mut State,
        path: &Path,
        ino: u64,
        read_only: bool,
    ) -> Arc<dyn StorageFile> {
        if let Some(inode) = state.inodes.get_mut(&ino) {
            inode.handles += 1;
        }
        Arc::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            boot: state.boot,
            path: path.to_path_buf(),
            read_only,
        })
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SimStorage");
        match self.state.try_lock() {
            Ok(state) => d
                .field("boot", &state.boot)
                .field("files", &state.live_ns.len())
                .field("durable_files", &state.durable_ns.len())
                .field("counters", &state.counters),
            Err(_) => d.field("state", &"<locked>"),
        };
        d.finish_non_exhaustive()
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state();
        let existing = state.live_ns.get(path).copied();
        if existing.is_none() {
            state.check_file_path(path)?;
        }
        let ino = match (mode, existing) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: file exists", path.display()),
                ));
            }
            (_, Some(ino)) => ino,
            (OpenMode::Existing | OpenMode::Read, None) => return Err(not_found(path)),
            (OpenMode::CreateNew | OpenMode::CreateOrOpen, None) => {
                let ino = state.new_inode();
                state.live_ns.insert(path.to_path_buf(), ino);
                ino
            }
        };
        let file = self.handle(&mut state, path, ino, mode == OpenMode::Read);
        Ok(file)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let ancestors: Vec<PathBuf> = path
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect();
        if let Some(file) = ancestors.iter().find(|a| state.live_ns.contains_key(*a)) {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", file.display()),
            ));
        }
        state.dirs.extend(ancestors);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state();
        if !dir_exists(&state, dir) {
            return Err(not_found(dir));
        }
        let dir = dir_key(dir);
        Ok(state
            .live_ns
            .keys()
            .filter(|p| parent_of(p) == dir)
            .filter_map(|p| p.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        if state.dirs.contains(path) {
            return Err(is_a_directory(path));
        }
        let ino = state.live_ns.remove(path).ok_or_else(|| not_found(path))?;
        state.collect(ino);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        if state.dirs.contains(from) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SimStorage does not rename directories",
            ));
        }
        let ino = *state.live_ns.get(from).ok_or_else(|| not_found(from))?;
        state.check_file_path(to)?;
        if from == to {
            return Ok(());
        }
        state.live_ns.remove(from);
        if let Some(old) = state.live_ns.insert(to.to_path_buf(), ino) {
            state.collect(old);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.counters.dir_syncs += 1;
        if state
            .fire(|f| matches!(f, Fault::FailDirSync { .. }))
            .is_some()
        {
            return Err(os_error(libc::EIO));
        }
        if !dir_exists(&state, dir) {
            return Err(not_found(dir));
        }
        let dir = dir_key(dir);
        let live_dirs: Vec<PathBuf> = state
            .dirs
            .iter()
            .filter(|d| parent_of(d) == dir)
            .cloned()
            .collect();
        state.durable_dirs.retain(|d| parent_of(d) != dir);
        state.durable_dirs.extend(live_dirs);
        let dropped: Vec<u64> = state
            .durable_ns
            .iter()
            .filter(|(p, _)| parent_of(p) == dir)
            .map(|(_, &ino)| ino)
            .collect();
        state.durable_ns.retain(|p, _| parent_of(p) != dir);
        let entries: Vec<(PathBuf, u64)> = state
            .live_ns
            .iter()
            .filter(|(p, _)| parent_of(p) == dir)
            .map(|(p, &ino)| (p.clone(), ino))
            .collect();
        state.durable_ns.extend(entries);
        for ino in dropped {
            state.collect(ino);
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        if state.live_ns.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", path.display()),
            ));
        }
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        if state.live_ns.keys().any(|p| parent_of(p) == path)
            || state.dirs.iter().any(|d| parent_of(d) == path)
        {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("{}: directory not empty", path.display()),
            ));
        }
        state.dirs.remove(path);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state();
        state.live_ns.contains_key(path) || dir_exists(&state, path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut state = self.state();
        if !state.live_ns.contains_key(path) {
            state.check_file_path(path)?;
            let ino = state.new_inode();
            state.live_ns.insert(path.to_path_buf(), ino);
        }
        if state.locks.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{}: locked by another holder", path.display()),
            ));
        }
        let token = state.next_lock;
        state.next_lock += 1;
        state.locks.insert(path.to_path_buf(), token);
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            token,
        }))
    }
}

/// A handle on a simulated file.
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    /// The boot it was opened in: after a power loss it is stale.
    boot: u64,
    /// The path it was opened at, for debugging.
    path: PathBuf,
    /// Opened with [`OpenMode::Read`]: writes fail with `EBADF`, as on a real file.
    read_only: bool,
}

impl SimFile {
    /// The state, if this handle is not stale.
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.boot != self.boot {
            return Err(stale());
        }
        Ok(state)
    }

    /// `EBADF` for a change through a handle opened with [`OpenMode::Read`].
    fn check_writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        Ok(())
    }

    fn with_inode<T>(&self, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state()?;
        let inode = state.inodes.get_mut(&self.ino).ok_or_else(stale)?;
        f(inode)
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("boot", &self.boot)
            .finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state() {
            if let Some(inode) = state.inodes.get_mut(&self.ino) {
                inode.handles = inode.handles.saturating_sub(1);
            }
            state.collect(self.ino);
        }
    }
}

impl StorageFile for SimFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.check_writable()?;
        self.state()?.write(self.ino, buf, pos)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with_inode(|inode| {
            let start = usize::try_from(pos).ok().filter(|&p| p <= inode.live.len());
            let src = start.and_then(|s| inode.live.get(s..)?.get(..buf.len()));
            match src {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                )),
            }
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.state()?.sync(self.ino)
    }

    fn len(&self) -> io::Result<u64> {
        self.with_inode(|inode| Ok(inode.live.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let len = file_len(len)?;
        self.with_inode(|inode| {
            let op = Op::SetLen(len);
            apply(&mut inode.live, &op)?;
            inode.unsynced.push(op);
            Ok(())
        })
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        self.with_inode(|inode| {
            let len = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(inode.live.len());
            Ok(Mapping {
                bytes: Bytes::copy_from_slice(&inode.live[..len]),
                live: false,
            })
        })
    }
}

/// A lock on a simulated path, released on drop unless a power loss happened since.
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    /// Unique among all guards of this storage, so that a stale guard cannot release a lock taken
    /// after a power loss.
    token: u64,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock")
            .field("path", &self.path)
            .field("token", &self.token)
            .finish()
    }
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.locks.get(&self.path) == Some(&self.token) {
            state.locks.remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> &'static Path {
        Path::new("/log")
    }

    fn p(name: &str) -> PathBuf {
        dir().join(name)
    }

    /// A storage with `/log` created, durably.
    fn sim(seed: u64) -> SimStorage {
        let sim = SimStorage::new(seed);
        sim.create_dir_all(dir()).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        sim
    }

    #[test]
    fn new_directory_without_parent_sync_lost() {
        let sim = SimStorage::new(1);
        sim.create_dir_all(Path::new("/a/b/c")).unwrap();
        let f = sim
            .open(Path::new("/a/b/c/f"), OpenMode::CreateNew)
            .unwrap();
        f.write_at(b"x", 0).unwrap();
        f.sync().unwrap();
        sim.sync_dir(Path::new("/a/b/c")).unwrap();
        sim.sync_dir(Path::new("/a/b")).unwrap();
        // `/a` is not in `/`: everything below it goes, synced or not.
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(!sim.exists(Path::new("/a")));
        assert!(!sim.exists(Path::new("/a/b/c")));
        assert!(sim.file(Path::new("/a/b/c/f")).is_none());
        assert_eq!(
            sim.list(Path::new("/a/b/c")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );

        sim.create_dir_all(Path::new("/a/b/c")).unwrap();
        let f = sim
            .open(Path::new("/a/b/c/f"), OpenMode::CreateNew)
            .unwrap();
        f.write_at(b"x", 0).unwrap();
        f.sync().unwrap();
        for d in ["/a/b/c", "/a/b", "/a", "/"] {
            sim.sync_dir(Path::new(d)).unwrap();
        }
        sim.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(sim.file(Path::new("/a/b/c/f")).unwrap(), b"x");
    }

    #[test]
    fn remove_dir_needs_parent_sync_and_an_empty_directory() {
        let sim = sim(1);
        let sub = p("sub");
        sim.create_dir_all(&sub).unwrap();
        sim.sync_dir(dir()).unwrap();
        sim.open(&sub.join("f"), OpenMode::CreateNew).unwrap();
        assert_eq!(
            sim.remove_dir(&sub).unwrap_err().kind(),
            io::ErrorKind::DirectoryNotEmpty
        );
        assert_eq!(
            sim.remove_dir(&sub.join("f")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        sim.remove(&sub.join("f")).unwrap();
        sim.remove_dir(&sub).unwrap();
        assert!(!sim.exists(&sub));
        assert_eq!(
            sim.remove_dir(&sub).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(sim.exists(&sub), "the removal was not synced");
        sim.remove_dir(&sub).unwrap();
        sim.sync_dir(dir()).unwrap();
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(!sim.exists(&sub));
    }

    #[test]
    fn create_dir_durable_syncs_each_new_parent() {
        let sim = SimStorage::new(1);
        let before = sim.counters().dir_syncs;
        assert!(crate::storage::create_dir_durable(&sim, Path::new("/x/y/z")).unwrap());
        assert_eq!(sim.counters().dir_syncs - before, 3);
        assert!(!crate::storage::create_dir_durable(&sim, Path::new("/x/y/z")).unwrap());
        assert_eq!(sim.counters().dir_syncs - before, 3);
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(sim.exists(Path::new("/x/y/z")));
        // A relative path's parent is `.`.
        assert!(crate::storage::create_dir_durable(&sim, Path::new("rel")).unwrap());
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(sim.exists(Path::new("rel")));
    }

    /// Creates `name` and makes its directory entry durable.
    fn durable_empty(sim: &SimStorage, name: &str) -> Arc<dyn StorageFile> {
        let f = sim.open(&p(name), OpenMode::CreateNew).unwrap();
        sim.sync_dir(dir()).unwrap();
        f
    }

    #[test]
    fn unsynced_write_lost_after_drop_unsynced() {
        let sim = sim(1);
        let f = durable_empty(&sim, "a");
        f.write_at(b"hello", 0).unwrap();
        assert_eq!(sim.file(&p("a")).unwrap(), b"hello");
        sim.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(sim.file(&p("a")).unwrap(), b"");
        let f = sim.open(&p("a"), OpenMode::Existing).unwrap();
        assert_eq!(f.len().unwrap(), 0);
    }

    #[test]
    fn synced_write_kept() {
        let sim = sim(1);
        let f = durable_empty(&sim, "a");
        f.write_at(b"hello", 0).unwrap();
        f.sync().unwrap();
        f.write_at(b"world", 5).unwrap();
        sim.power_loss(PowerLoss::DropUnsynced);
        let f = sim.open(&p("a"), OpenMode::Existing).unwrap();
        let mut buf = [0u8; 5];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(f.len().unwrap(), 5);
    }

    #[test]
    fn new_file_without_dir_sync_lost() {
        let sim = sim(1);
        let f = sim.open(&p("a"), OpenMode::CreateNew).unwrap();
        f.write_at(b"x", 0).unwrap();
        f.sync().unwrap();
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(!sim.exists(&p("a")));
        assert!(sim.list(dir()).unwrap().is_empty());
    }

    #[test]
    fn rename_needs_dir_sync() {
        for sync_dir in [false, true] {
            let sim = sim(1);
            let old = durable_empty(&sim, "a");
            old.write_at(b"old", 0).unwrap();
            old.sync().unwrap();
            let tmp = durable_empty(&sim, "a.tmp");
            tmp.write_at(b"new", 0).unwrap();
            tmp.sync().unwrap();
            sim.rename(&p("a.tmp"), &p("a")).unwrap();
            assert_eq!(sim.file(&p("a")).unwrap(), b"new");
            assert!(!sim.exists(&p("a.tmp")));
            if sync_dir {
                sim.sync_dir(dir()).unwrap();
            }
            sim.power_loss(PowerLoss::DropUnsynced);
            let mut names = sim.list(dir()).unwrap();
            names.sort();
            if sync_dir {
                assert_eq!(sim.file(&p("a")).unwrap(), b"new");
                assert_eq!(names, ["a"]);
            } else {
                assert_eq!(sim.file(&p("a")).unwrap(), b"old");
                assert_eq!(sim.file(&p("a.tmp")).unwrap(), b"new");
                assert_eq!(names, ["a", "a.tmp"]);
            }
        }
    }

    #[test]
    fn remove_needs_dir_sync() {
        let sim = sim(1);
        durable_empty(&sim, "a");
        sim.remove(&p("a")).unwrap();
        assert!(!sim.exists(&p("a")));
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(sim.exists(&p("a")));
        sim.remove(&p("a")).unwrap();
        sim.sync_dir(dir()).unwrap();
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(!sim.exists(&p("a")));
    }

    #[test]
    fn failed_sync_drops_unsynced_ops_for_good() {
        let sim = sim(1);
        let f = durable_empty(&sim, "a");
        f.write_at(b"aaaa", 0).unwrap();
        sim.inject(Fault::FailSync { nth: 1 });
        let err = f.sync().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        // The page cache still shows the write.
        assert_eq!(sim.file(&p("a")).unwrap(), b"aaaa");
        f.write_at(b"bbbb", 4).unwrap();
        f.sync().unwrap();
        assert_eq!(sim.file(&p("a")).unwrap(), b"aaaabbbb");
        // The first write never reaches the disk: its bytes are zeros (the gap before "bbbb").
        assert_eq!(sim.durable_file(&p("a")).unwrap(), b"\0\0\0\0bbbb");
        sim.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(sim.file(&p("a")).unwrap(), b"\0\0\0\0bbbb");
    }

    #[test]
    fn fault_nth_counts_from_injection() {
        let sim = sim(1);
        let f = durable_empty(&sim, "a");
        f.sync().unwrap();
        sim.inject(Fault::FailSync { nth: 3 });
        f.sync().unwrap();
        f.sync().unwrap();
        assert_eq!(f.sync().unwrap_err().raw_os_error(), Some(libc::EIO));
        f.sync().unwrap();

        sim.inject(Fault::FailDirSync { nth: 2 });
        sim.sync_dir(dir()).unwrap();
        let g = sim.open(&p("b"), OpenMode::CreateNew).unwrap();
        drop(g);
        assert_eq!(
            sim.sync_dir(dir()).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        assert!(sim.durable_file(&p("b")).is_none());
        sim.sync_dir(dir()).unwrap();
        assert!(sim.durable_file(&p("b")).is_some());

        sim.inject(Fault::FailWrite {
            nth: 1,
            enospc: false,
        });
        let err = f.write_at(b"xyz", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        f.write_at(b"xyz", 0).unwrap();

        let c = sim.counters();
        assert_eq!((c.writes, c.syncs, c.dir_syncs), (2, 5, 5));
    }

    #[test]
    fn clear_faults_disarms() {
        let sim = sim(1);
        let f = durable_empty(&sim, "a");
        sim.inject(Fault::FailSync { nth: 1 });
        sim.inject(Fault::Capacity { bytes: 0 });
        sim.clear_faults();
        f.write_at(b"abc", 0).unwrap();
        f.sync().unwrap();
    }

    #[test]
    fn torn_keeps_a_prefix_of_unsynced_writes() {
        let full = b"aaaabbbbcccc";
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let sim = sim(seed);
            let f = durable_empty(&sim, "a");
            f.write_at(b"aaaa", 0).unwrap();
            f.write_at(b"bbbb", 4).unwrap();
            f.write_at(b"cccc", 8).unwrap();
            sim.power_loss(PowerLoss::Torn);
            let got = sim.file(&p("a")).unwrap();
            assert!(
                full.starts_with(&got),
                "seed {seed}: {got:?} is not a prefix"
            );
            assert_eq!(sim.durable_file(&p("a")).unwrap(), got);
            outcomes.insert(got.len());
        }
        // Some seeds keep nothing, some everything, some tear a write in the middle.
        assert!(outcomes.contains(&0));
        assert!(outcomes.contains(&12));
        assert!(outcomes.iter().any(|len| len % 4 != 0));
    }

    #[test]
    fn torn_is_deterministic() {
        let run = |seed| {
            let sim = sim(seed);
            let f = durable_empty(&sim, "a");
            for i in 0..10u8 {
                f.write_at(&[i; 7], u64::from(i) * 7).unwrap();
            }
            sim.power_loss(PowerLoss::Torn);
            sim.file(&p("a")).unwrap()
        };
        for seed in 0..20 {
            assert_eq!(run(seed), run(seed));
        }
    }

    #[test]
    fn torn_does_not_touch_synced_data_or_undurable_entries() {
        let sim = sim(7);
        let f = durable_empty(&sim, "a");
        f.write_at(b"sync", 0).unwrap();
        f.sync().unwrap();
        let g = sim.open(&p("b"), OpenMode::CreateNew).unwrap();
        g.write_at(b"lost", 0).unwrap();
        sim.power_loss(PowerLoss::Torn);
        assert_eq!(sim.file(&p("a")).unwrap(), b"sync");
        assert!(sim.file(&p("b")).is_none());
    }

    #[test]
    fn enospc_injection_writes_a_partial_prefix() {
        let buf = b"0123456789abcdef";
        let mut lens = BTreeSet::new();
        for seed in 0..50 {
            let sim = sim(seed);
            let f = durable_empty(&sim, "a");
            sim.inject(Fault::FailWrite {
                nth: 1,
                enospc: true,
            });
            let err = f.write_at(buf, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
            let got = sim.file(&p("a")).unwrap();
            assert!(got.len() < buf.len());
            assert!(buf.starts_with(&got));
            lens.insert(got.len());
            // The partial write is unsynced like any other.
            f.sync().unwrap();
            assert_eq!(sim.durable_file(&p("a")).unwrap(), got);
        }
        assert!(lens.len() > 1);
    }

    #[test]
    fn capacity_fills_then_frees_after_remove() {
        let sim = sim(1);
        sim.inject(Fault::Capacity { bytes: 10 });
        let a = durable_empty(&sim, "a");
        a.write_at(b"123456", 0).unwrap();
        let b = durable_empty(&sim, "b");
        let err = b.write_at(b"abcdef", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(sim.file(&p("b")).unwrap(), b"abcd");
        // Overwriting in place needs no space.
        a.write_at(b"xx", 0).unwrap();
        assert_eq!(
            b.write_at(b"z", 4).unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        drop(a);
        sim.remove(&p("a")).unwrap();
        b.write_at(b"efgh", 4).unwrap();
        assert_eq!(sim.file(&p("b")).unwrap(), b"abcdefgh");
    }

    #[test]
    fn stale_handle_after_power_loss() {
        let sim = sim(1);
        let f = durable_empty(&sim, "a");
        f.write_at(b"abc", 0).unwrap();
        f.sync().unwrap();
        let before = sim.counters();
        sim.power_loss(PowerLoss::DropUnsynced);
        let check = |r: io::Result<()>| {
            let err = r.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Other);
            assert!(
                err.to_string()
                    .contains("stale handle from before a simulated power loss")
            );
        };
        check(f.write_at(b"x", 0));
        check(f.read_at(&mut [0u8; 1], 0));
        check(f.sync());
        check(f.len().map(drop));
        check(f.set_len(0));
        check(f.map(3).map(drop));
        assert_eq!(sim.counters(), before);
        assert_eq!(sim.file(&p("a")).unwrap(), b"abc");
        let g = sim.open(&p("a"), OpenMode::Existing).unwrap();
        assert_eq!(g.len().unwrap(), 3);
    }

    #[test]
    fn lock_is_exclusive() {
        let sim = sim(1);
        let path = p("LOCK");
        let guard = sim.lock(&path).unwrap();
        let clone = sim.shared();
        assert_eq!(
            clone.lock(&path).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(sim.lock(&p("other")).is_ok());
        drop(guard);
        let guard = clone.lock(&path).unwrap();
        // A power loss releases it, and the old guard must not release the new holder's lock.
        sim.power_loss(PowerLoss::DropUnsynced);
        let new_guard = sim.lock(&path).unwrap();
        drop(guard);
        assert_eq!(
            sim.lock(&path).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(new_guard);
        assert!(sim.lock(&path).is_ok());
    }

    #[test]
    fn namespace_errors() {
        let sim = SimStorage::new(1);
        assert_eq!(
            sim.open(&p("a"), OpenMode::CreateOrOpen)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(sim.list(dir()).unwrap_err().kind(), io::ErrorKind::NotFound);
        sim.create_dir_all(dir()).unwrap();
        assert_eq!(
            sim.open(&p("a"), OpenMode::Existing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        sim.open(&p("a"), OpenMode::CreateNew).unwrap();
        assert_eq!(
            sim.open(&p("a"), OpenMode::CreateNew).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        sim.open(&p("a"), OpenMode::CreateOrOpen).unwrap();
        assert_eq!(
            sim.remove(&p("b")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.rename(&p("b"), &p("c")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(sim.create_dir_all(&p("a").join("sub")).is_err());
        sim.create_dir_all(&p("sub")).unwrap();
        sim.open(&p("sub").join("x"), OpenMode::CreateNew).unwrap();
        let mut names = sim.list(dir()).unwrap();
        names.sort();
        assert_eq!(names, ["a"]);
        assert_eq!(sim.list(&p("sub")).unwrap(), ["x"]);
    }

    #[test]
    fn reads_lengths_and_maps() {
        let sim = sim(1);
        let f = durable_empty(&sim, "a");
        f.write_at(b"xy", 4).unwrap();
        assert_eq!(sim.file(&p("a")).unwrap(), b"\0\0\0\0xy");
        let mut buf = [0u8; 3];
        assert_eq!(
            f.read_at(&mut buf, 4).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            f.read_at(&mut buf, u64::MAX).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        f.read_at(&mut buf, 3).unwrap();
        assert_eq!(&buf, b"\0xy");
        let map = f.map(100).unwrap();
        assert!(!map.live);
        assert_eq!(&map.bytes[..], b"\0\0\0\0xy");
        f.set_len(2).unwrap();
        assert_eq!(f.len().unwrap(), 2);
        f.set_len(3).unwrap();
        assert_eq!(sim.file(&p("a")).unwrap(), b"\0\0\0");
        assert_eq!(
            f.write_at(b"x", u64::MAX).unwrap_err().raw_os_error(),
            Some(libc::EFBIG)
        );
        assert_eq!(
            f.set_len(u64::MAX).unwrap_err().raw_os_error(),
            Some(libc::EFBIG)
        );
    }

    #[test]
    fn set_file_plants_live_and_durable_content() {
        let sim = SimStorage::new(1);
        sim.set_file(&p("a"), b"bad".to_vec());
        assert_eq!(sim.file(&p("a")).unwrap(), b"bad");
        assert_eq!(sim.durable_file(&p("a")).unwrap(), b"bad");
        sim.power_loss(PowerLoss::DropUnsynced);
        let f = sim.open(&p("a"), OpenMode::Existing).unwrap();
        f.write_at(b"good", 0).unwrap();
        sim.set_file(&p("a"), b"evil".to_vec());
        let mut buf = [0u8; 4];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"evil");
    }

    #[test]
    fn unlinked_open_file_stays_usable() {
        let sim = sim(1);
        let f = durable_empty(&sim, "a");
        sim.remove(&p("a")).unwrap();
        sim.sync_dir(dir()).unwrap();
        f.write_at(b"abc", 0).unwrap();
        f.sync().unwrap();
        assert_eq!(f.len().unwrap(), 3);
        assert!(sim.file(&p("a")).is_none());
    }
}

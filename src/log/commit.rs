//! Group commit: many writers, one fsync.
//!
//! Writers record how many bytes they wrote (`written`, a byte count that only grows while the
//! log is open); the flusher thread fsyncs and raises `durable` to the count it covered, which
//! releases every receipt at or below it at once, whether it is waited on by blocking
//! ([`Receipt::wait`]) or polled as a [`Future`]. An fsync error is sticky: it fails every
//! waiting receipt and every later append until the log is reopened.
//!
//! Who issues the fsync is a choice ([`GroupCommit`]): the first waiting writer, for the group
//! (the default, measured faster), or a flusher thread. A receipt polled as a `Future` always
//! asks the flusher thread, because it must not block the executor thread that polls it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// When appends are made durable.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stratalog::FsyncPolicy;
///
/// // The forms the command line's `--fsync` accepts.
/// assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
/// assert_eq!("10ms".parse(), Ok(FsyncPolicy::Interval(Duration::from_millis(10))));
/// assert_eq!("4096b".parse(), Ok(FsyncPolicy::Bytes(4096)));
/// assert!("sometimes".parse::<FsyncPolicy>().is_err());
/// // Only `Always` makes receipts wait for durability.
/// assert!(FsyncPolicy::Always.acks_durable());
/// assert!(!FsyncPolicy::Never.acks_durable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is durable before its receipt completes. Concurrent writers share fsyncs
    /// (group commit). Readers see only durable batches.
    Always,
    /// fsync every so often; receipts complete when the batch is written (not yet durable).
    Interval(Duration),
    /// fsync once this many bytes were written since the last fsync; receipts complete when
    /// the batch is written.
    Bytes(u64),
    /// fsync only when a segment rolls, on [`crate::Log::flush`] and on close.
    Never,
}

impl FsyncPolicy {
    /// True if receipts wait for durability.
    pub fn acks_durable(self) -> bool {
        self == FsyncPolicy::Always
    }
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    /// `always`, `never`, `<N>ms` or `<N>b` (bytes).
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |n: &str| {
            n.parse::<u64>()
                .map_err(|e| format!("bad fsync policy {s:?}: {e}"))
        };
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ if s.ends_with("ms") => Ok(FsyncPolicy::Interval(Duration::from_millis(parse(
                &s[..s.len() - 2],
            )?))),
            _ if s.ends_with('b') => Ok(FsyncPolicy::Bytes(parse(&s[..s.len() - 1])?)),
            _ => Err(format!(
                "bad fsync policy {s:?}; use always, never, <N>ms or <N>b"
            )),
        }
    }
}

/// Who runs the group-commit fsync under [`FsyncPolicy::Always`].
///
/// Measured on the development machine (docs/BENCHMARKS.md): with one writer, `Leader` is
/// about 0.9x a plain `write` + `sync_data` loop and `Flusher` 0.7-0.8x of it (two thread
/// wake-ups per fsync); with 16 to 64 writers the two are within about 20% of each other.
/// Hence the default.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use stratalog::{GroupCommit, Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let options = LogOptions { group_commit: GroupCommit::Flusher, ..Default::default() };
/// let log = Arc::new(Log::open(tmp.path(), options)?);
/// // Writers on several threads share the flusher's fsyncs.
/// let writers: Vec<_> = (0..4)
///     .map(|i| {
///         let log = Arc::clone(&log);
///         std::thread::spawn(move || log.append_records(&[format!("w{i}")])?.receipt.wait())
///     })
///     .collect();
/// for w in writers {
///     w.join().unwrap()?;
/// }
/// assert_eq!(log.end_offset(), 4);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupCommit {
    /// A flusher thread fsyncs for every writer waiting at that moment; writers sleep until it
    /// is done.
    Flusher,
    /// The first writer that waits on a receipt runs the fsync for the whole group, as
    /// raft-engine's write group does; the others sleep until an fsync covers them, and the
    /// finishing leader hands the lead to one writer it did not cover. Receipts awaited as
    /// futures ask the flusher thread instead (a future must not block its executor), and the
    /// flusher also syncs anything nobody waited for within 2 ms.
    ///
    /// Each writer writes its own batch (under the writer lock) before it waits. The fsync
    /// wakes the writers it covers after releasing the commit state lock, and a covered
    /// receipt completes without taking it: waking them with the lock held made each woken
    /// writer sleep again on the lock (64 writers are 1.4x faster without that, measured in
    /// docs/BENCHMARKS.md). A raft-engine-style handoff, in which one writer writes the
    /// batches queued by the others so that each sleeps once, was measured too and was no
    /// faster (0.94-1.01x with 16 and 64 writers): the cost is the wake-ups, not the writes.
    #[default]
    Leader,
    /// As [`GroupCommit::Leader`] for writers, but the log starts no flusher thread: the work
    /// a flusher does (bytes nobody waited for, [`FsyncPolicy::Interval`] and
    /// [`FsyncPolicy::Bytes`] syncs, receipts awaited as futures) is left to one thread shared
    /// by many logs, which calls [`crate::Log::sync_due`] when the log's notifier
    /// ([`crate::Log::set_sync_notifier`]) fires and when the returned delay has passed. The
    /// store ([`crate::Store`]) runs one such thread for all its partitions.
    External,
}

/// Runs one group-commit fsync (the log implements it).
pub(crate) trait Syncer: Send + Sync {
    fn sync_now(&self);
}

/// In [`GroupCommit::Leader`] mode, the flusher syncs bytes that nobody waited for after this.
const LEADER_BACKSTOP: Duration = Duration::from_millis(2);

#[derive(Debug)]
pub(crate) struct CommitState {
    /// Bytes written since open.
    pub written: u64,
    /// Bytes known durable.
    pub durable: u64,
    /// A flush was asked for up to here.
    pub requested: u64,
    /// Bumped by truncation: results of an fsync that started before it are stale.
    pub generation: u64,
    pub failed: Option<Arc<Error>>,
    pub shutdown: bool,
    pub last_sync: Instant,
    /// An fsync is running (one at a time).
    syncing: bool,
    wakers: Vec<(u64, Waker)>,
    /// What the next group fsync covers, set by the append that wrote up to `written`.
    pub point: Option<SyncPoint>,
}

/// The writer's position after its latest append, recorded under the state lock together with
/// `written` (its `seq`), so that the group fsync learns what to sync and what to publish
/// without taking the writer lock, behind which up to every other writer may be queued (the
/// leader's wait for it was part of the durable writers' tail, docs/BENCHMARKS.md). Bytes of
/// earlier segments are durable already (a segment is synced before the next is created), so
/// syncing `segment` makes everything up to `seq` durable even after the writer moved on.
#[derive(Debug, Clone)]
pub(crate) struct SyncPoint {
    pub generation: u64,
    pub seq: u64,
    pub segment: std::sync::Arc<super::segment::Segment>,
    /// Bytes of `segment` written, and the next offset, after that append.
    pub written: u64,
    pub next_offset: u64,
    /// The segment's largest timestamp after that append.
    pub max_ts: i64,
}

/// Shared between the log, its flusher thread and its receipts.
#[derive(Debug)]
pub(crate) struct Commit {
    state: Mutex<CommitState>,
    /// Signalled when `durable` rises or the log fails.
    done: Condvar,
    /// Signalled when the flusher may have work.
    work: Condvar,
    policy: FsyncPolicy,
    mode: GroupCommit,
    syncer: OnceLock<Weak<dyn Syncer>>,
    /// In [`GroupCommit::External`] mode: called (under the state lock, so it must be quick)
    /// when the log may need a sync from the shared thread.
    notifier: OnceLock<Notifier>,
    /// `durable` as the group fsync last published it (it may lag behind `durable`): a
    /// receipt it covers completes without taking the state lock, which the fsync that woke
    /// its writer may still hold.
    durable_hint: AtomicU64,
}

/// Tells a shared flusher thread that a log may need a sync.
pub(crate) struct Notifier(pub Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

impl std::fmt::Debug for dyn Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Syncer")
    }
}

impl Commit {
    pub fn new(policy: FsyncPolicy, mode: GroupCommit) -> Self {
        Commit {
            state: Mutex::new(CommitState {
                written: 0,
                durable: 0,
                requested: 0,
                generation: 0,
                failed: None,
                shutdown: false,
                last_sync: Instant::now(),
                syncing: false,
                wakers: Vec::new(),
                point: None,
            }),
            done: Condvar::new(),
            work: Condvar::new(),
            policy,
            mode,
            syncer: OnceLock::new(),
            notifier: OnceLock::new(),
            durable_hint: AtomicU64::new(0),
        }
    }

    /// Sets the notifier of [`GroupCommit::External`] mode (once; later calls are ignored).
    pub fn set_notifier(&self, notifier: Notifier) {
        let _ = self.notifier.set(notifier);
    }

    fn notify_external(&self) {
        if let Some(n) = self.notifier.get() {
            (n.0)();
        }
    }

    /// For the shared thread of [`GroupCommit::External`] mode: runs the fsync if one is due,
    /// then says when to look again (`None`: not before the notifier fires).
    pub fn poll_external(&self, sync: impl FnOnce()) -> Option<Duration> {
        let due = self.is_due(&self.lock());
        if due {
            self.run_flusher_sync(sync);
        }
        let st = self.lock();
        if st.failed.is_some() || st.shutdown || st.written <= st.durable {
            return None;
        }
        if st.requested > st.durable {
            return Some(Duration::ZERO);
        }
        match self.policy {
            FsyncPolicy::Always => Some(LEADER_BACKSTOP.saturating_sub(st.last_sync.elapsed())),
            FsyncPolicy::Interval(every) => Some(every.saturating_sub(st.last_sync.elapsed())),
            // The append that crosses the threshold notifies again.
            FsyncPolicy::Bytes(_) | FsyncPolicy::Never => None,
        }
    }

    /// True unless a flusher thread of the log's own runs the group fsyncs.
    fn writers_lead(&self) -> bool {
        self.mode != GroupCommit::Flusher
    }

    /// Tells the commit who runs fsyncs for leaders (set once, right after the log is built).
    pub fn set_syncer(&self, syncer: Weak<dyn Syncer>) {
        let _ = self.syncer.set(syncer);
    }

    /// Runs the flusher's `sync` with no other group fsync running at the same time, unless the
    /// fsync that ran meanwhile (a leader's) made it unnecessary.
    pub fn run_flusher_sync(&self, sync: impl FnOnce()) {
        let mut st = self.lock();
        while st.syncing {
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if !self.is_due(&st) {
            return;
        }
        st.syncing = true;
        drop(st);
        sync();
        self.end_sync(&mut self.lock());
    }

    /// Marks the running fsync finished. In leader mode, hands the lead to one writer that the
    /// fsync did not cover (the others sleep on until an fsync covers them).
    fn end_sync(&self, st: &mut CommitState) {
        st.syncing = false;
        self.done.notify_all();
        if self.writers_lead()
            && let Some(i) = (0..st.wakers.len()).min_by_key(|&i| st.wakers[i].0)
        {
            st.wakers.swap_remove(i).1.wake();
        }
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    pub fn mode(&self) -> GroupCommit {
        self.mode
    }

    /// Locks the state, recovering it if a thread panicked while holding it (also after the
    /// condition-variable waits below): the failure latch lives here, so it must stay reachable
    /// to report the failure, and no critical section leaves a field half-updated (each is a
    /// few assignments of counters and flags; the foreign code that runs under the lock, a
    /// `Waker` or the store's notifier, runs after the fields were updated).
    pub fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sticky failure, if any, as an error to return.
    pub fn check_failed(&self) -> Result<()> {
        match &self.lock().failed {
            Some(e) => Err(Error::Failed(e.clone())),
            None => Ok(()),
        }
    }

    /// Records `written` bytes in total and wakes the flusher if the policy wants a sync now.
    pub fn wrote(&self, st: &mut CommitState, written: u64) {
        debug_assert!(
            written >= st.written,
            "written bytes never go back ({} -> {written})",
            st.written
        );
        debug_assert!(st.durable <= st.written, "durable <= written");
        let was_idle = st.written == st.durable;
        st.written = written;
        let wake = match self.policy {
            FsyncPolicy::Always if self.mode == GroupCommit::External => was_idle,
            FsyncPolicy::Always if self.mode == GroupCommit::Leader => was_idle,
            FsyncPolicy::Always => true,
            FsyncPolicy::Bytes(n) => written - st.durable >= n,
            // The flusher sleeps without a timeout while nothing is pending: the first write
            // after an idle spell must start its clock.
            FsyncPolicy::Interval(_) => was_idle,
            FsyncPolicy::Never => false,
        };
        if wake {
            self.work.notify_one();
        }
        if self.mode == GroupCommit::External && (wake || was_idle) {
            self.notify_external();
        }
    }

    /// Marks everything up to `upto` durable (if `generation` is still current) and releases
    /// the receipts it covers.
    pub fn made_durable(&self, st: &mut CommitState, generation: u64, upto: u64) -> bool {
        match self.covered(st, generation, upto) {
            Some(wakers) => {
                wakers.into_iter().for_each(Waker::wake);
                true
            }
            None => false,
        }
    }

    /// As [`Commit::made_durable`], but returns the wakers of the receipts it covers instead of
    /// waking them (`None` if `generation` is stale). The group fsync wakes them after it
    /// released the state lock: with many writers, a woken writer that finds the lock still
    /// held (the waker is still waking the others) sleeps again on the lock.
    pub fn covered(&self, st: &mut CommitState, generation: u64, upto: u64) -> Option<Vec<Waker>> {
        st.last_sync = Instant::now();
        if generation != st.generation {
            return None;
        }
        let mut woken = Vec::new();
        if upto <= st.durable {
            return Some(woken);
        }
        debug_assert!(
            upto <= st.written,
            "made durable up to {upto}, beyond the {} bytes written",
            st.written
        );
        st.durable = upto;
        let mut i = 0;
        while i < st.wakers.len() {
            if st.wakers[i].0 <= upto {
                woken.push(st.wakers.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        self.done.notify_all();
        Some(woken)
    }

    /// Lets receipts up to `upto` complete without taking the state lock ([`Receipt::wait`]).
    /// Called, with the state lock held, once what `upto` covers is durable and visible.
    pub fn raise_durable_hint(&self, upto: u64) {
        self.durable_hint.fetch_max(upto, Ordering::Release);
    }

    /// Puts the log into the failed state and fails every waiter.
    pub fn fail(&self, error: Error) -> Arc<Error> {
        let mut st = self.lock();
        let error = st.failed.get_or_insert_with(|| Arc::new(error)).clone();
        for (_, waker) in st.wakers.drain(..) {
            waker.wake();
        }
        self.done.notify_all();
        self.work.notify_all();
        error
    }

    /// Asks the flusher to sync everything written so far and waits for it.
    pub fn flush(&self) -> Result<()> {
        let mut st = self.lock();
        if let Some(e) = &st.failed {
            return Err(Error::Failed(e.clone()));
        }
        let target = st.written;
        st.requested = st.requested.max(target);
        self.work.notify_one();
        self.wait_for(st, target)
    }

    fn wait_for<'a>(&'a self, mut st: MutexGuard<'a, CommitState>, target: u64) -> Result<()> {
        loop {
            if st.durable >= target {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(Error::Failed(e.clone()));
            }
            if st.shutdown {
                return Err(Error::Closed);
            }
            let leader = (self.writers_lead() && !st.syncing)
                .then(|| self.syncer.get().and_then(Weak::upgrade))
                .flatten();
            if let Some(syncer) = leader {
                // Lead: fsync for everyone who wrote so far.
                st.syncing = true;
                drop(st);
                syncer.sync_now();
                st = self.lock();
                self.end_sync(&mut st);
                continue;
            }
            // Sleep until an fsync covers `target` (only then is this thread woken: waking
            // every waiter on every fsync costs more than the fsync with many writers).
            st.wakers.push((target, thread_waker()));
            drop(st);
            std::thread::park();
            st = self.lock();
        }
    }

    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.shutdown = true;
        for (_, waker) in st.wakers.drain(..) {
            waker.wake();
        }
        self.work.notify_all();
        self.done.notify_all();
    }

    /// True if the flusher should fsync now.
    fn is_due(&self, st: &CommitState) -> bool {
        let pending = st.written > st.durable;
        let asked = st.requested > st.durable;
        pending
            && match self.policy {
                FsyncPolicy::Always if self.writers_lead() => {
                    asked || st.last_sync.elapsed() >= LEADER_BACKSTOP
                }
                FsyncPolicy::Always => true,
                FsyncPolicy::Bytes(n) => asked || st.written - st.durable >= n,
                FsyncPolicy::Interval(every) => asked || st.last_sync.elapsed() >= every,
                FsyncPolicy::Never => asked,
            }
    }

    /// Blocks the flusher until a sync is due. Returns false when it should exit.
    pub fn wait_for_work(&self) -> bool {
        let mut st = self.lock();
        loop {
            if st.failed.is_some() || st.shutdown {
                return false;
            }
            if self.is_due(&st) {
                return true;
            }
            let pending = st.written > st.durable;
            let leader = self.writers_lead();
            st = match self.policy {
                FsyncPolicy::Always if pending && leader => {
                    let left = LEADER_BACKSTOP.saturating_sub(st.last_sync.elapsed());
                    self.work
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                FsyncPolicy::Interval(every) if pending => {
                    let left = every.saturating_sub(st.last_sync.elapsed());
                    self.work
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                _ => self.work.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// A waker that unparks the current thread.
fn thread_waker() -> Waker {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    thread_local! {
        static WAKER: Waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    }
    WAKER.with(Waker::clone)
}

/// Completes when an append is acknowledged under the log's [`FsyncPolicy`]: durable under
/// [`FsyncPolicy::Always`], written under the others. Wait by blocking with [`Receipt::wait`] or
/// `.await` it (it is a [`Future`]; no runtime is needed).
///
/// # Examples
///
/// ```
/// use stratalog::{FsyncPolicy, Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions { fsync: FsyncPolicy::Always, ..Default::default() })?;
/// let appended = log.append_records(&["x"])?;
/// // Under `Always`, readers see the batch once it is durable: after the receipt completes.
/// appended.receipt.wait()?;
/// assert_eq!(log.read_one(appended.base_offset)?.value, &b"x"[..]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a receipt says when the append is durable; wait for it or drop it explicitly"]
pub struct Receipt {
    commit: Arc<Commit>,
    /// Zero when the receipt is complete from the start.
    target: u64,
}

impl Receipt {
    pub(crate) fn new(commit: Arc<Commit>, target: u64) -> Self {
        Receipt { commit, target }
    }

    /// Blocks until the append is acknowledged. Fails if the log failed (fsync error) or was
    /// closed before the append became durable.
    pub fn wait(&self) -> Result<()> {
        if self.target == 0 || self.commit.durable_hint.load(Ordering::Acquire) >= self.target {
            return Ok(());
        }
        let st = self.commit.lock();
        self.commit.wait_for(st, self.target)
    }

    /// Asks for the append to be made durable now, in the background (by the log's flusher
    /// thread, or the store's shared one), without waiting: for a caller that has more to do
    /// before it waits (a follower fetches its next batches while the last ones are synced).
    /// [`Receipt::wait`] still says when it is done.
    pub fn request_sync(&self) {
        let mut st = self.commit.lock();
        if self.target == 0 || st.durable >= self.target || st.failed.is_some() || st.shutdown {
            return;
        }
        st.requested = st.requested.max(self.target);
        drop(st);
        self.commit.work.notify_one();
        if self.commit.mode == GroupCommit::External {
            self.commit.notify_external();
        }
    }

    /// True if [`Receipt::wait`] would return at once.
    pub fn is_complete(&self) -> bool {
        let st = self.commit.lock();
        self.target == 0 || st.durable >= self.target || st.failed.is_some() || st.shutdown
    }
}

impl Future for Receipt {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.target == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut st = self.commit.lock();
        if st.durable >= self.target {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.failed {
            return Poll::Ready(Err(Error::Failed(e.clone())));
        }
        if st.shutdown {
            return Poll::Ready(Err(Error::Closed));
        }
        st.wakers.push((self.target, cx.waker().clone()));
        // A future must not block its executor by leading an fsync: ask the flusher.
        st.requested = st.requested.max(self.target);
        self.commit.work.notify_one();
        if self.commit.mode == GroupCommit::External {
            self.commit.notify_external();
        }
        Poll::Pending
    }
}

//! Named crash points for crash tests, compiled only with the `crash-points` feature (the
//! crate's own tests enable it through a dev-dependency on itself; release builds never have
//! it, and then [`point`] is an empty inline function).
//!
//! A process arms one point with the environment variable `STRATALOG_CRASH_POINT=NAME` or
//! `NAME:N`; the N-th time (default the first) execution reaches that point, the process
//! prints `crash point NAME hit N` to stderr and aborts at once (`SIGABRT`: no destructor, no
//! flush, no close, like a kill at that instruction).

/// Every crash point, in write-path order.
pub const POINTS: &[&str] = &[
    "append.after_write",
    "index.during_update",
    "fsync.before",
    "fsync.after",
    "roll.after_seal",
    "dir_fsync.before",
    "dir_fsync.after",
    "roll.after_create",
    "retention.after_meta",
    "retention.after_delete",
    "truncate.after_quarantine",
    "truncate.after_remove",
    "truncate.after_prefix",
];

#[cfg(feature = "crash-points")]
thread_local! {
    /// The point at which this thread panics next (see [`panic_at`]).
    static PANIC_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Makes the calling thread panic the next time it reaches the point `name` (once), for
/// in-process tests of what a panic leaves behind (the lock-poisoning policy). Only in builds
/// with the `crash-points` feature.
#[cfg(feature = "crash-points")]
pub fn panic_at(name: &'static str) {
    PANIC_AT.with(|p| p.set(Some(name)));
}

/// Aborts the process here if this point is armed and its hit count is reached; panics here if
/// the calling thread armed it with [`panic_at`].
#[cfg(feature = "crash-points")]
pub fn point(name: &'static str) {
    if PANIC_AT.with(|p| p.get() == Some(name)) {
        PANIC_AT.with(|p| p.set(None));
        panic!("panic point {name}");
    }
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("STRATALOG_CRASH_POINT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_owned(), n.parse().ok()?),
            None => (v, 1),
        };
        Some((name, n))
    });
    if let Some((armed, n)) = armed
        && armed == name
    {
        let hit = HITS.fetch_add(1, Ordering::SeqCst) + 1;
        if hit == *n {
            eprintln!("crash point {name} hit {hit}");
            std::process::abort();
        }
    }
}

/// Does nothing: this build has no crash points.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &'static str) {}

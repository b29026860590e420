//! Process limits a store depends on: open file descriptors.
//!
//! Each open log holds a few descriptors (see [`FDS_PER_LOG`]); a store keeps at most
//! [`crate::StoreOptions::max_open_partitions`] partition logs open and closes the least
//! recently used ones beyond that, so a store of any number of partitions fits in a bounded
//! number of descriptors. Servers also raise the soft descriptor limit to the hard one at
//! start ([`raise_fd_limit`]; the `stratalog` binary does).

/// Descriptors one open writable log holds: its active segment, the active segment's two
/// index files, its checkpoint and its lock (sealed segments found at open are mapped and hold
/// none; a read-only log holds one per segment file it has not mapped yet, at most its active
/// segment and the sealed ones it has not read). Counted by `tests/fd_limit.rs`.
pub const FDS_PER_LOG: u64 = 5;

/// Descriptors left for everything but partition logs when the store sizes its cache from the
/// limit (standard streams, the offsets log, directory listings, sockets of the embedding
/// program).
pub const FDS_RESERVED: u64 = 64;

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`), `None` if unlimited.
pub fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft limit on open file descriptors to the hard limit (capped at 1,048,576), as
/// servers do at start. Returns the soft limit now in force. Fails only if the kernel refuses
/// (then the limit is unchanged).
pub fn raise_fd_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let target = limit.maximum.unwrap_or(u64::MAX).min(1 << 20);
    if limit.current.is_some_and(|soft| soft < target) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(fd_limit())
}

/// How many partition logs a store keeps open by default: what fits in the soft descriptor
/// limit after [`FDS_RESERVED`], at [`FDS_PER_LOG`] plus three (a partition rolled or being
/// read-only inspected holds a few more) per log, between 8 and 10,000.
pub fn default_max_open_partitions() -> usize {
    let limit = fd_limit().unwrap_or(1 << 20);
    (limit.saturating_sub(FDS_RESERVED) / (FDS_PER_LOG + 3)).clamp(8, 10_000) as usize
}

//! Does preallocating segment files pay for durable appends? Interleaved rounds, plain files.
//!
//! Each round appends the same records with `write` + `fdatasync` per append (1 KiB, the
//! latency-bound case) and per 64 KiB group (the bandwidth-bound case) to a file prepared four
//! ways, back to back:
//! - `fresh`: a new empty file (what stratalog does today: every append grows the file, so
//!   each fdatasync also commits a size change and a block allocation);
//! - `fallocate-keep-size`: `fallocate(FALLOC_FL_KEEP_SIZE)` of the whole segment first: the
//!   blocks exist but are unwritten extents beyond the end of file, so each fdatasync still
//!   commits the size change and the conversion of the extent it wrote into;
//! - `fallocate`: the same without KEEP_SIZE (the file is its full size, all unwritten extents;
//!   writes convert extents, size does not change);
//! - `zero-filled`: a file written with zeros and fsynced first (what recycling an old segment
//!   gives): overwrites in place, so fdatasync has no metadata to commit.
//!
//! The figure is each variant's median per-round time relative to `fresh` (lower is faster).
//! The time to prepare a file is not counted; `zero-filled` costs writing the whole segment
//! once, which a recycled segment does not.
//!
//! `cargo bench --bench prealloc` runs 9 rounds; `cargo test` runs one tiny round.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Prep {
    Fresh,
    FallocateKeepSize,
    Fallocate,
    ZeroFilled,
}

const PREPS: [Prep; 4] = [
    Prep::Fresh,
    Prep::FallocateKeepSize,
    Prep::Fallocate,
    Prep::ZeroFilled,
];

fn prepare(path: &Path, prep: Prep, size: u64) -> File {
    let _ = std::fs::remove_file(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create");
    let mode = match prep {
        Prep::Fresh => None,
        Prep::FallocateKeepSize => Some(libc::FALLOC_FL_KEEP_SIZE),
        Prep::Fallocate => Some(0),
        Prep::ZeroFilled => {
            let zeros = vec![0u8; 1 << 20];
            let mut pos = 0;
            while pos < size {
                file.write_all_at(&zeros, pos).expect("zero fill");
                pos += zeros.len() as u64;
            }
            None
        }
    };
    if let Some(mode) = mode {
        // A plain system call through libc, which the crate already depends on; no unsafe
        // memory is involved, but the FFI call itself needs `unsafe`.
        // SAFETY: `fallocate` on an open descriptor we own, with valid arguments.
        #[expect(unsafe_code, reason = "the fallocate FFI call needs `unsafe`")]
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, 0, size as libc::off_t) };
        assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    }
    file.sync_all().expect("sync the prepared file");
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("sync dir");
    }
    file
}

/// Appends `total` bytes in `write_len` writes, each followed by fdatasync.
fn append(file: &File, write_len: usize, total: u64) -> Duration {
    let buf = vec![b'a'; write_len];
    let started = Instant::now();
    let mut pos = 0;
    while pos < total {
        file.write_all_at(&buf, pos).expect("write");
        file.sync_data().expect("fdatasync");
        pos += write_len as u64;
    }
    started.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, scale) = if full { (9, 1) } else { (1, 32) };
    let dir = tempfile::tempdir_in(
        std::env::var_os("STRATALOG_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()),
    )
    .expect("tempdir");
    let path = dir.path().join("segment");
    for (write_len, total) in [(1usize << 10, 4u64 << 20), (64 << 10, 64 << 20)] {
        let total = total / scale;
        let size = total.next_power_of_two().max(1 << 20);
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); PREPS.len()];
        for round in 0..rounds {
            // Rotate the order so that a drifting disk favours no variant.
            for k in 0..PREPS.len() {
                let i = (k + round) % PREPS.len();
                let file = prepare(&path, PREPS[i], size);
                times[i].push(append(&file, write_len, total));
            }
        }
        println!(
            "prealloc: {} B write + fdatasync, {} KiB per file, {rounds} rounds; median time \
             relative to a fresh file (lower is faster):",
            write_len,
            total >> 10
        );
        for (i, prep) in PREPS.iter().enumerate() {
            let mut ratios: Vec<f64> = (0..rounds)
                .map(|r| times[i][r].as_secs_f64() / times[0][r].as_secs_f64())
                .collect();
            ratios.sort_by(f64::total_cmp);
            let mut own = times[i].clone();
            own.sort();
            println!(
                "  {:<20} {:>6.2}x  (median {:>8.1} ms)",
                format!("{prep:?}"),
                ratios[ratios.len() / 2],
                own[own.len() / 2].as_secs_f64() * 1e3
            );
        }
    }
}

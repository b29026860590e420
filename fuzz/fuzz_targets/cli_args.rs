//! Command-line inputs where they reach stratalog's own parsers: the `--fsync` policy and the
//! `--log NAME` check that keeps a log inside `--dir` (both compiled from the CLI's sources).
//! Other arguments are plain numbers and paths that clap parses.
//!
//! Input: NUL-separated arguments; each is tried as an fsync policy and as a log name.
#![no_main]

#[allow(
    dead_code,
    unused_imports,
    reason = "the CLI's module, compiled here only for `log_dir` and the fsync parser: the rest is unused"
)]
#[path = "../../src/cli/mod.rs"]
mod cli;

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use stratalog::FsyncPolicy;

fuzz_target!(|data: &[u8]| {
    for arg in data.split(|&b| b == 0) {
        let Ok(arg) = std::str::from_utf8(arg) else {
            continue;
        };
        if let Ok(policy) = arg.parse::<FsyncPolicy>() {
            // What parses prints back to an argument that parses to the same policy.
            let again = match policy {
                FsyncPolicy::Always => "always".to_owned(),
                FsyncPolicy::Never => "never".to_owned(),
                FsyncPolicy::Interval(d) => format!("{}ms", d.as_millis()),
                FsyncPolicy::Bytes(n) => format!("{n}b"),
            };
            assert_eq!(again.parse::<FsyncPolicy>(), Ok(policy), "{arg:?}");
        }
        let dir = Path::new("/data");
        if let Ok(path) = cli::log_dir(dir, arg) {
            // An accepted name is one plain component: the log stays directly inside DIR.
            assert_eq!(
                path.parent(),
                Some(dir),
                "{arg:?} escapes the data directory"
            );
            let mut parts = Path::new(arg).components();
            assert!(
                matches!(parts.next(), Some(Component::Normal(_))),
                "{arg:?}"
            );
            assert!(parts.next().is_none(), "{arg:?}");
            assert!(!arg.contains('/'), "{arg:?}");
        }
    }
});

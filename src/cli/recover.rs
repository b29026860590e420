//! `stratalog recover`: open a log writable, which runs its recovery (cuts a torn tail into
//! quarantine, rebuilds damaged indexes, finishes an interrupted retention), and close it
//! cleanly. `consume`, `verify` and `dump` only read and never repair.

use std::path::{Path, PathBuf};

use stratalog::storage::FsStorage;
use stratalog::{FsyncPolicy, Log, LogOptions};

use super::verify::find_logs;
use super::{CliError, context, outln};

/// Recovers the log in `dir`.
pub fn run(dir: &Path) -> Result<(), CliError> {
    if !dir.join("log.meta").is_file() {
        return Err(format!("no log in {} (no log.meta)", dir.display()).into());
    }
    recover_one(dir)
}

/// Recovers every log under `data_dir` (each directory holding a `log.meta`, at any depth).
pub fn run_all(data_dir: &Path) -> Result<(), CliError> {
    let mut logs: Vec<PathBuf> = Vec::new();
    find_logs(data_dir, &mut logs)
        .map_err(context(format!("cannot search {}", data_dir.display())))?;
    logs.sort();
    if logs.is_empty() {
        return Err(format!("no log found under {}", data_dir.display()).into());
    }
    for dir in &logs {
        recover_one(dir)?;
    }
    outln!(
        "{} log(s) recovered under {}",
        logs.len(),
        data_dir.display()
    );
    Ok(())
}

fn recover_one(dir: &Path) -> Result<(), CliError> {
    let log = Log::open(
        dir,
        LogOptions {
            fsync: FsyncPolicy::Always,
            storage: FsStorage::shared(),
            create: false,
            ..LogOptions::default()
        },
    )
    .map_err(context(format!("cannot open the log in {}", dir.display())))?;
    let report = log.recovery_report().clone();
    let (start, end) = (log.start_offset(), log.end_offset());
    log.close().map_err(context(format!(
        "closing the log in {} failed",
        dir.display()
    )))?;
    let cut: u64 = report.quarantined.iter().map(|q| q.bytes).sum();
    outln!(
        "{}: offsets {start}..{end}; {} torn tail(s) cut ({cut} bytes kept in quarantine), {} index file(s) rebuilt",
        dir.display(),
        report.torn.len(),
        report.rebuilt_indexes
    );
    Ok(())
}

//! `stratalog verify`: check a log directory, or every log under a data directory, without
//! opening (and so recovering) them.

use std::path::{Path, PathBuf};

use stratalog::storage::FsStorage;
use stratalog::verify_dir;

use super::{CliError, context, outln};

/// Runs `verify` on the log in `dir`.
pub fn run(dir: &Path) -> Result<(), CliError> {
    if !dir.is_dir() {
        return Err(format!("no log directory at {}", dir.display()).into());
    }
    let problems = verify_one(dir)?;
    if problems == 0 {
        outln!("ok: no problem found");
        Ok(())
    } else {
        Err(format!("{problems} problem(s) found in {}", dir.display()).into())
    }
}

/// Runs `verify` on every log under `data_dir`: each directory, at any depth, holding a
/// `log.meta` (including `data_dir` itself).
pub fn run_all(data_dir: &Path) -> Result<(), CliError> {
    if !data_dir.is_dir() {
        return Err(format!("no data directory at {}", data_dir.display()).into());
    }
    let mut logs = Vec::new();
    find_logs(data_dir, &mut logs)
        .map_err(context(format!("cannot search {}", data_dir.display())))?;
    logs.sort();
    if logs.is_empty() {
        return Err(format!(
            "no log found under {} (no directory holds a log.meta)",
            data_dir.display()
        )
        .into());
    }
    let (mut problems, mut bad_logs) = (0, 0);
    // A store's own files (registry, consumer offsets): checked too, so that verify never says
    // ok about a store that its other commands refuse.
    if data_dir.join("stratalog.store").is_file() {
        let report = stratalog::store::verify_store(data_dir).map_err(context(format!(
            "cannot check the store in {}",
            data_dir.display()
        )))?;
        outln!(
            "store {}: {} topic(s), {} consumer offset record(s)",
            data_dir.display(),
            report.topics,
            report.offset_records
        );
        for p in &report.problems {
            outln!("problem: {p}");
        }
        problems += report.problems.len();
        bad_logs += usize::from(!report.is_ok());
    }
    for dir in &logs {
        let found = verify_one(dir)?;
        problems += found;
        bad_logs += usize::from(found > 0);
    }
    outln!(
        "{} log(s) checked under {}, {bad_logs} with problems",
        logs.len(),
        data_dir.display()
    );
    if problems == 0 {
        outln!("ok: no problem found");
        Ok(())
    } else {
        Err(format!(
            "{problems} problem(s) found in {bad_logs} of {} log(s) under {}",
            logs.len(),
            data_dir.display()
        )
        .into())
    }
}

/// Directories under `dir` (and `dir` itself) holding a `log.meta`. Symbolic links are not
/// followed, so a link cannot make the search loop.
pub(crate) fn find_logs(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if dir.join("log.meta").is_file() {
        out.push(dir.to_path_buf());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            find_logs(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// Checks one log, prints its report and returns the number of problems.
fn verify_one(dir: &Path) -> Result<usize, CliError> {
    let report = verify_dir(FsStorage::shared().as_ref(), dir)
        .map_err(context(format!("cannot verify {}", dir.display())))?;
    outln!(
        "{}: {} segments, {} batches, {} records, end offset {}",
        dir.display(),
        report.segments,
        report.batches,
        report.records,
        report.end_offset
    );
    if report.start_offset > 0 || report.offsets_lost > 0 {
        // The two counts agree: records + offsets lost = end offset - start offset.
        outln!(
            "offsets {}..{}: {} records, {} offsets in bad ranges or gaps",
            report.start_offset,
            report.end_offset,
            report.records,
            report.offsets_lost
        );
    }
    for note in &report.notes {
        outln!("note: {note}");
    }
    for q in &report.quarantined {
        outln!("quarantine: {q}");
    }
    for problem in &report.problems {
        outln!("problem: {problem}");
    }
    Ok(report.problems.len())
}

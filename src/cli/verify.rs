//! `stratalog verify`: check a log directory without opening (and so recovering) the log.

use std::path::Path;

use stratalog::storage::FsStorage;
use stratalog::verify_dir;

use super::{CliError, context};

/// Runs `verify` on the log in `dir`.
pub fn run(dir: &Path) -> Result<(), CliError> {
    if !dir.is_dir() {
        return Err(format!("no log directory at {}", dir.display()).into());
    }
    let report = verify_dir(FsStorage::shared().as_ref(), dir)
        .map_err(context(format!("cannot verify {}", dir.display())))?;
    println!(
        "{}: {} segments, {} batches, {} records, end offset {}",
        dir.display(),
        report.segments,
        report.batches,
        report.records,
        report.end_offset
    );
    for note in &report.notes {
        println!("note: {note}");
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    if report.is_sound() {
        println!("ok: no problem found");
        Ok(())
    } else {
        Err(format!(
            "{} problem(s) found in {}",
            report.problems.len(),
            dir.display()
        )
        .into())
    }
}

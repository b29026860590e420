//! The lock-poisoning policy: a panic while a thread holds the log's writer latches the log as
//! failed; nothing carries on from a half-updated writer. Uses the in-process panic points of
//! the `crash-points` feature (`stratalog::crash::panic_at`).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::{options, values};
use stratalog::storage::SimStorage;
use stratalog::{Error, FsyncPolicy, GroupCommit, Log, LogOptions};

/// Panics at `point` inside an append (with the writer lock held), then checks that the log
/// refuses writes with `Poisoned` inside `Failed`, still serves reads, and reopens with every
/// acknowledged record.
fn panic_in_append_latches_failed(point: &'static str, group_commit: GroupCommit) {
    let sim = SimStorage::new(1);
    let dir = Path::new("/poison");
    let opts = || LogOptions {
        group_commit,
        ..options(sim.shared(), FsyncPolicy::Always)
    };
    let log = Log::open(dir, opts()).unwrap();
    log.append_records(&["a"]).unwrap().receipt.wait().unwrap();

    stratalog::crash::panic_at(point);
    let panicked = catch_unwind(AssertUnwindSafe(|| log.append_records(&["b"])));
    assert!(panicked.is_err(), "{point}: the panic point did not fire");

    for attempt in 0..2 {
        match log.append_records(&["c"]) {
            Err(Error::Failed(source)) => assert!(
                matches!(*source, Error::Poisoned { what: "writer" }),
                "{point}: failed with {source}, not the poisoned writer"
            ),
            Err(e) => panic!("{point}: append {attempt} failed with {e}, not Failed(Poisoned)"),
            Ok(_) => panic!("{point}: append {attempt} after a panic in the writer succeeded"),
        }
    }
    assert!(
        matches!(log.flush(), Err(Error::Failed(_))),
        "{point}: flush"
    );
    // Reads do not need the writer: the acknowledged record is still served.
    assert_eq!(values(&log).unwrap(), [b"a".to_vec()], "{point}");
    assert!(log.close().is_err(), "{point}: close of a failed log");

    let log = Log::open(dir, opts()).unwrap();
    let got = values(&log).unwrap();
    assert_eq!(got[0], b"a", "{point}");
    assert!(
        got.len() <= 2 && !got.contains(&b"c".to_vec()),
        "{point}: {got:?}"
    );
    log.append_records(&["d"]).unwrap().receipt.wait().unwrap();
    log.close().unwrap();
}

#[test]
fn panic_after_the_write_latches_the_log_failed() {
    for group_commit in [GroupCommit::Leader, GroupCommit::Flusher] {
        panic_in_append_latches_failed("append.after_write", group_commit);
    }
}

#[test]
fn panic_during_the_index_update_latches_the_log_failed() {
    panic_in_append_latches_failed("index.during_update", GroupCommit::Leader);
}

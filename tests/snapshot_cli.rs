//! `stratalog snapshot`, `restore` and `verify --snapshot`, run as a user would.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Command, Output};

use stratalog::{Store, StoreOptions};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

/// Runs the binary (it never reads standard input here), bounded by its own work.
fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run stratalog");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "stratalog {args:?} panicked:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "stratalog {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "stratalog {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn snapshot_verify_and_restore_round_trip_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, snap, restored) = (
        tmp.path().join("store"),
        tmp.path().join("snap"),
        tmp.path().join("restored"),
    );
    ok(&[
        "topics",
        "create",
        "--dir",
        s(&dir),
        "orders",
        "--partitions",
        "2",
        "--segment-bytes",
        "4096",
    ]);
    ok(&[
        "produce",
        "-d",
        s(&dir),
        "-l",
        "orders/1",
        "-c",
        "300",
        "-s",
        "100",
    ]);
    ok(&[
        "consume",
        "-d",
        s(&dir),
        "-l",
        "orders/1",
        "-g",
        "billing",
        "-n",
        "120",
    ]);

    // Held by another process (here: this one): refused, nothing written.
    {
        let _held = Store::open(&dir, StoreOptions::default()).unwrap();
        let err = fails(&["snapshot", "--dir", s(&dir), "--out", s(&snap)]);
        assert!(err.contains("open in another process"), "{err}");
        assert!(!snap.exists());
    }
    let out = ok(&["snapshot", "--dir", s(&dir), "--out", s(&snap)]);
    assert!(out.contains("orders/1: offsets 0..300"), "{out}");
    assert!(ok(&["verify", "--snapshot", s(&snap)]).starts_with("ok: snapshot"));
    // Into an existing non-empty directory: refused.
    let err = fails(&["restore", "--snapshot", s(&snap), "--dir", s(&dir)]);
    assert!(err.contains("not empty"), "{err}");
    ok(&["restore", "--snapshot", s(&snap), "--dir", s(&restored)]);
    let groups = ok(&["groups", "describe", "--dir", s(&restored), "billing"]);
    assert!(groups.contains("billing orders 1 120 300"), "{groups}");
    let a = ok(&["consume", "-d", s(&dir), "-l", "orders/1", "-n", "300"]);
    let b = ok(&["consume", "-d", s(&restored), "-l", "orders/1", "-n", "300"]);
    assert_eq!(a, b);

    // A truncated file: verify and restore exit non-zero naming it.
    let meta = snap.join("orders/1/log.meta");
    let bytes = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &bytes[..bytes.len() - 3]).unwrap();
    let err = fails(&["verify", "--snapshot", s(&snap)]);
    assert!(
        err.contains("orders/1/log.meta") && err.contains("truncated"),
        "{err}"
    );
    let again = tmp.path().join("again");
    let err = fails(&["restore", "--snapshot", s(&snap), "--dir", s(&again)]);
    assert!(err.contains("orders/1/log.meta"), "{err}");
    assert!(!again.exists());
}

//! `stratalog bench` end to end, on a tiny time budget: it runs every step, writes the JSON and
//! the SVG it promises, prints the table, and removes its scratch files. (No timing is checked:
//! the figures of a two-second run on a shared machine mean nothing.)
#![cfg(feature = "cli")]

use std::process::Command;

#[test]
fn bench_runs_every_step_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    let json = tmp.path().join("figures.json");
    let svg = tmp.path().join("plot.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_stratalog"))
        .args(["bench", "--seconds", "2", "--compare-io", "--dir"])
        .arg(&scratch)
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    for row in [
        "memory copy",
        "one fsync per append",
        "64 durable writers, 1 KiB",
        "random read by offset p50",
        "reopen after crash",
        "[io_uring] 64 durable writers",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in:\n{stdout}");
    }

    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = figures["rows"].as_array().unwrap();
    assert!(rows.len() >= 20, "{} rows", rows.len());
    for row in rows {
        let value = row["value"].as_f64().unwrap();
        assert!(value.is_finite() && value >= 0.0, "bad figure {row}");
    }
    let writers: Vec<u64> = figures["writers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["writers"].as_u64().unwrap())
        .collect();
    assert_eq!(writers, [1, 4, 16, 64]);

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("durable 1 KiB appends/s"));

    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "scratch files left behind: {left:?}");
}

#[test]
fn bench_refuses_a_bad_budget() {
    let out = Command::new(env!("CARGO_BIN_EXE_stratalog"))
        .args(["bench", "--seconds", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seconds"));
}

//! `stratalog verify` on a log with several bad batches in one segment: every bad range is a
//! problem line of its own, the counts agree, and nothing in the directory changes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn verify_lists_every_bad_range_and_counts_that_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let input: String = (0..100).map(|i| format!("rec-{i}\n")).collect();
    let out = run(
        &["produce", "--dir", d, "--log", "l", "--batch", "10"],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.path().join("l");
    let segment = log.join(format!("{:020}.log", 0));
    // (position, size, base offset, record count) of each batch; the producer's batching
    // depends on timing, so the expectations are taken from `dump`.
    let dump = run(&["dump", segment.to_str().unwrap()], b"");
    let batches: Vec<(u64, u64, u64, u64)> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .filter_map(|l| {
            let field = |name: &str| -> Option<u64> {
                l.split(' ')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            Some((
                field("position")?,
                field("size")?,
                field("base_offset")?,
                field("count")?,
            ))
        })
        .collect();
    let n = batches.len() as u64;
    assert!(n >= 8, "{}", String::from_utf8_lossy(&dump.stdout));
    let mut bytes = std::fs::read(&segment).unwrap();
    for i in [2, 5, 6] {
        let (pos, size, _, _) = batches[i];
        bytes[(pos + size - 1) as usize] ^= 0x40;
    }
    std::fs::write(&segment, &bytes).unwrap();
    let before = snapshot(&log);

    let out = run(&["verify", "--dir", d, "--log", "l"], b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let problems: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("problem:"))
        .collect();
    assert_eq!(
        problems.len(),
        2,
        "batches 5 and 6 are one range:\n{stdout}"
    );
    let base = |i: usize| batches[i].2;
    let lost = batches[2].3 + batches[5].3 + batches[6].3;
    for (problem, first, next) in [(problems[0], 2, 3), (problems[1], 5, 7)] {
        assert!(
            problem.contains(&format!("at byte {}", batches[first].0)),
            "{stdout}"
        );
        let offsets = format!("offsets {}..{}", base(first), base(next));
        assert!(problem.contains(&offsets), "{stdout}");
    }
    let summary = format!(
        "1 segments, {} batches, {} records, end offset 100",
        n - 3,
        100 - lost
    );
    assert!(stdout.contains(&summary), "{stdout}");
    let counts = format!(
        "offsets 0..100: {} records, {lost} offsets in bad ranges or gaps",
        100 - lost
    );
    assert!(stdout.contains(&counts), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    assert_eq!(before, snapshot(&log), "verify changed the directory");
}

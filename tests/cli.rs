//! Runs the `stratalog` binary as a user would: produce, consume, verify, dump, bad input.
#![cfg(feature = "cli")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

/// Runs the binary with `args`, feeding `stdin`.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stratalog");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The command may exit without reading (bad arguments): ignore a broken pipe.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for stratalog");
    writer.join().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "stratalog {args:?} panicked:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the binary and asserts that it succeeded.
fn ok(args: &[&str], stdin: &[u8]) -> Output {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "stratalog {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the binary and asserts that it failed cleanly: exit status 1 or 2, `error:` on stderr.
fn fails(args: &[&str], stdin: &[u8]) -> Output {
    let out = run(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "stratalog {args:?} should fail with status 1 or 2, got {}:\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    assert!(
        stderr.contains("error:"),
        "no `error:` on stderr for {args:?}:\n{stderr}"
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Segment files of a log, oldest first.
fn segments(log: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn produce_from_stdin_then_consume_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let input: &[u8] = b"alpha\nbeta\n\ngamma \xc3\xa9\n\xff\xfe\nlast without newline";
    ok(&["produce", "--dir", d, "--log", "orders"], input);
    assert!(dir.path().join("orders").join("log.meta").exists());

    let out = ok(&["consume", "--dir", d, "--log", "orders"], b"");
    assert_eq!(
        out.stdout,
        b"alpha\nbeta\n\ngamma \xc3\xa9\n\xff\xfe\nlast without newline\n"
    );

    let out = ok(
        &["consume", "--dir", d, "--log", "orders", "--format", "json"],
        b"",
    );
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    // Every byte field is one object: hex always, utf8 a string or null.
    let values = [
        r#"{"hex":"616c706861","utf8":"alpha"}"#,
        r#"{"hex":"62657461","utf8":"beta"}"#,
        r#"{"hex":"","utf8":""}"#,
        r#"{"hex":"67616d6d6120c3a9","utf8":"gamma é"}"#,
        r#"{"hex":"fffe","utf8":null}"#,
        r#"{"hex":"6c61737420776974686f7574206e65776c696e65","utf8":"last without newline"}"#,
    ];
    assert_eq!(lines.len(), values.len(), "{lines:?}");
    for (i, (line, value)) in lines.iter().zip(values).enumerate() {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = parsed["timestamp"].as_i64().expect("a timestamp");
        assert!(ts > 1_600_000_000_000, "timestamp {ts} is not now");
        assert_eq!(
            line,
            &format!(
                r#"{{"offset":{i},"timestamp":{ts},"key":null,"value":{value},"headers":[]}}"#
            )
        );
    }

    // --from and --max.
    let out = ok(
        &[
            "consume", "--dir", d, "--log", "orders", "--from", "1", "--max", "2",
        ],
        b"",
    );
    assert_eq!(out.stdout, b"beta\n\n");
    // At the end: nothing, success.
    let out = ok(
        &["consume", "--dir", d, "--log", "orders", "--from", "6"],
        b"",
    );
    assert_eq!(out.stdout, b"");
    // Beyond the end: a clear error.
    let out = fails(
        &["consume", "--dir", d, "--log", "orders", "--from", "7"],
        b"",
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("out of range"), "{stderr}");
    assert!(out.stdout.is_empty());

    // A second producer appends after what is there, with LZ4.
    ok(
        &[
            "produce",
            "--dir",
            d,
            "--log",
            "orders",
            "--compression",
            "lz4",
        ],
        b"more\n",
    );
    let out = ok(
        &["consume", "--dir", d, "--log", "orders", "--from", "6"],
        b"",
    );
    assert_eq!(out.stdout, b"more\n");
    let out = ok(&["dump", s(&dir.path().join("orders"))], b"");
    let dump = text(&out.stdout);
    assert!(dump.contains("compression=none crc=ok"), "{dump}");
    assert!(dump.contains("compression=lz4 crc=ok"), "{dump}");
}

#[test]
fn count_and_size_generate_records_and_report_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let out = ok(
        &[
            "produce", "--dir", d, "--count", "1000", "--size", "64", "--batch", "50",
        ],
        b"",
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("produced 1000 records"), "{stdout}");
    assert!(stdout.contains("records/s"), "{stdout}");
    assert!(stdout.contains("MB/s"), "{stdout}");

    let out = ok(&["consume", "--dir", d], b"");
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1000);
    assert!(lines.iter().all(|l| l.len() == 64));

    let out = ok(&["dump", s(&dir.path().join("default"))], b"");
    let dump = text(&out.stdout);
    assert_eq!(dump.matches("count=50 ").count(), 20, "{dump}");

    let out = ok(&["verify", "--dir", d], b"");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("1 segments, 20 batches, 1000 records, end offset 1000"),
        "{stdout}"
    );
}

#[test]
fn print_acks_reports_every_batch_up_to_the_last_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let input: String = (0..250).map(|i| format!("r{i}\n")).collect();
    let out = ok(
        &[
            "produce",
            "--dir",
            d,
            "--print-acks",
            "--batch",
            "7",
            "--fsync",
            "always",
        ],
        input.as_bytes(),
    );
    let acks: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| {
            l.strip_prefix("acked ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not an ack line: {l:?}"))
        })
        .collect();
    assert_eq!(acks.last(), Some(&249), "{acks:?}");
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
    // Batches hold at most 7 records.
    assert!(acks.len() >= 250 / 7, "{acks:?}");
    let mut previous = None;
    for &a in &acks {
        assert!(a - previous.map_or(0, |p: u64| p + 1) < 7, "{acks:?}");
        previous = Some(a);
    }

    // Offsets go on in a second run; other fsync policies acknowledge too.
    for (fsync, lines, last) in [("never", 10, "259"), ("5ms", 5, "264"), ("4096b", 1, "265")] {
        let input: String = (0..lines).map(|i| format!("x{i}\n")).collect();
        let out = ok(
            &["produce", "--dir", d, "--print-acks", "--fsync", fsync],
            input.as_bytes(),
        );
        let stdout = text(&out.stdout);
        assert_eq!(
            stdout.lines().last(),
            Some(format!("acked {last}").as_str()),
            "{stdout}"
        );
    }
    let out = ok(&["consume", "--dir", d, "--from", "249", "--max", "2"], b"");
    assert_eq!(out.stdout, b"r249\nx0\n");
}

#[test]
fn verify_passes_on_a_good_log_with_several_segments() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let input: String = (0..3000).map(|i| format!("value-{i}\n")).collect();
    ok(
        &["produce", "--dir", d, "--segment-bytes", "4096"],
        input.as_bytes(),
    );
    assert!(segments(&dir.path().join("default")).len() > 3);
    let out = ok(&["verify", "--dir", d], b"");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("3000 records, end offset 3000"), "{stdout}");
    assert!(stdout.contains("ok: no problem found"), "{stdout}");
    assert!(!stdout.contains("problem:"), "{stdout}");
    let out = ok(&["dump", s(&dir.path().join("default"))], b"");
    let dump = text(&out.stdout);
    assert!(!dump.contains("crc=bad"), "{dump}");
    // A log that is not there.
    let out = fails(&["verify", "--dir", d, "--log", "missing"], b"");
    assert!(text(&out.stderr).contains("missing"));
}

/// Reads a little-endian integer of `N` bytes at `at`.
fn le<const N: usize>(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf[..N].copy_from_slice(&bytes[at..at + N]);
    u64::from_le_bytes(buf)
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_caught_by_consume_verify_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let n = 2000;
    let input: String = (0..n).map(|i| format!("rec-{i}\n")).collect();
    ok(
        &[
            "produce",
            "--dir",
            d,
            "--segment-bytes",
            "4096",
            "--batch",
            "10",
        ],
        input.as_bytes(),
    );
    let log = dir.path().join("default");
    let files = segments(&log);
    assert!(files.len() >= 3, "{files:?}");
    // The second segment is sealed (not the last one). Corrupt its second batch.
    let victim = &files[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let first_len = le::<4>(&bytes, 32 + 12) as usize;
    let pos = 32 + first_len;
    let len = le::<4>(&bytes, pos + 12) as usize;
    let base = le::<8>(&bytes, pos + 16);
    let count = le::<4>(&bytes, pos + 48);
    assert!(
        pos + len < bytes.len(),
        "the second batch is not the last one"
    );
    bytes[pos + 64 + len.saturating_sub(64) / 2] ^= 0x20;
    std::fs::write(victim, &bytes).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap();

    // consume prints every record before the bad batch, nothing of it, and names the file.
    let out = run(&["consume", "--dir", d], b"");
    assert_eq!(out.status.code(), Some(1), "consume should fail");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let expected: String = (0..base).map(|i| format!("rec-{i}\n")).collect();
    assert_eq!(stdout, expected, "stderr:\n{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(stderr.contains(name), "{stderr}");
    assert!(stderr.contains(&format!("byte {pos}")), "{stderr}");
    // JSON stops at the same place.
    let out = run(&["consume", "--dir", d, "--format", "json"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).lines().count() as u64, base);
    // Reading from after the bad batch still works.
    let out = ok(
        &["consume", "--dir", d, "--from", &(base + count).to_string()],
        b"",
    );
    let expected: String = (base + count..n).map(|i| format!("rec-{i}\n")).collect();
    assert_eq!(text(&out.stdout), expected);

    // verify fails and names the file and position.
    let out = run(&["verify", "--dir", d], b"");
    assert_eq!(out.status.code(), Some(1), "verify should fail");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("problem:"), "{stdout}");
    assert!(
        stdout.contains(&format!("{name} at byte {pos}")),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("error:"));

    // dump shows the bad batch, goes on after it, and fails.
    for target in [victim.clone(), log.clone()] {
        let out = run(&["dump", s(&target)], b"");
        assert_eq!(out.status.code(), Some(1), "dump should fail");
        let dump = text(&out.stdout);
        let bad: Vec<&str> = dump.lines().filter(|l| l.contains("crc=bad")).collect();
        assert_eq!(bad.len(), 1, "{dump}");
        assert!(
            bad[0].starts_with(&format!("position={pos} base_offset={base} ")),
            "{dump}"
        );
        let after = format!("position={} ", pos + len);
        assert!(
            dump.lines()
                .any(|l| l.starts_with(&after) && l.ends_with("crc=ok")),
            "{dump}"
        );
    }
}

#[test]
fn dump_stops_at_a_torn_batch_and_an_invalid_header() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    ok(
        &["produce", "--dir", d, "--batch", "1"],
        b"one\ntwo\nthree\n",
    );
    let file = segments(&dir.path().join("default")).remove(0);
    let bytes = std::fs::read(&file).unwrap();
    let first = le::<4>(&bytes, 32 + 12) as usize;

    // Cut in the middle of the second batch.
    let cut = dir.path().join("cut.log");
    std::fs::write(&cut, &bytes[..32 + first + 10]).unwrap();
    let out = run(&["dump", s(&cut)], b"");
    assert_eq!(out.status.code(), Some(1));
    let dump = text(&out.stdout);
    assert!(dump.contains("crc=ok"), "{dump}");
    assert!(dump.contains("invalid batch header"), "{dump}");

    // A batch whose length runs past the end of the file.
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let out = run(&["dump", s(&cut)], b"");
    assert_eq!(out.status.code(), Some(1));
    let dump = text(&out.stdout);
    assert_eq!(dump.matches("crc=ok").count(), 2, "{dump}");
    assert!(dump.contains("runs past the end of the file"), "{dump}");

    // A bad magic in the second batch.
    let mut bad = bytes.clone();
    bad[32 + first + 4] ^= 0xff;
    std::fs::write(&cut, &bad).unwrap();
    let out = run(&["dump", s(&cut)], b"");
    assert_eq!(out.status.code(), Some(1));
    let dump = text(&out.stdout);
    assert!(dump.contains(&format!("position={} invalid batch header", 32 + first)));

    // Not a segment at all.
    std::fs::write(&cut, b"hello").unwrap();
    let out = run(&["dump", s(&cut)], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("file header"));
}

#[test]
fn bad_arguments_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let missing = dir.path().join("nope");
    let cases: Vec<Vec<&str>> = vec![
        vec!["frobnicate"],
        vec!["produce"],
        vec!["produce", "--dir", d, "--batch", "0"],
        vec!["produce", "--dir", d, "--batch", "many"],
        vec!["produce", "--dir", d, "--fsync", "sometimes"],
        vec!["produce", "--dir", d, "--fsync", "xms"],
        vec!["produce", "--dir", d, "--compression", "zip"],
        vec!["produce", "--dir", d, "--size", "10"],
        vec!["produce", "--dir", d, "--segment-bytes", "10"],
        vec!["produce", "--dir", d, "--log", "../escape"],
        vec!["produce", "--dir", d, "--log", ""],
        vec!["consume", "--dir", d, "--format", "xml"],
        vec!["consume", "--dir", d, "--from", "-1"],
        vec!["consume", "--dir", s(&missing)],
        vec!["verify"],
        vec!["verify", "--dir", s(&missing)],
        vec!["dump"],
        vec!["dump", s(&missing)],
        vec!["dump", d],
    ];
    for args in cases {
        fails(&args, b"");
    }
    // No command at all: the usage, on stderr, and status 2.
    let out = run(&[], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage"));
    // Nothing was created by the failed commands.
    assert!(!dir.path().join("default").exists());
    assert!(!dir.path().join("escape").exists());

    // Help works and says how JSON shows non-UTF-8 bytes.
    let out = ok(&["--help"], b"");
    let help = text(&out.stdout);
    for command in ["produce", "consume", "verify", "dump"] {
        assert!(help.contains(command), "{help}");
    }
    let out = ok(&["consume", "--help"], b"");
    assert!(text(&out.stdout).contains("hex"));
}

/// `Log::read` may return, after the batches of a segment that fit its byte budget, the first
/// batch of a later segment (skipping the rest). Segments of three big batches then one small
/// one, over more than the 1 MiB consume reads at once, make that happen; consume must still
/// print every record, in order.
#[test]
fn consume_prints_every_record_across_read_budget_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    // With --batch 1 each line is a batch of 64 + 22 + len bytes: three 1250-byte lines fill a
    // 4096-byte segment to 4040 bytes, and the 10-byte line after them starts the next one.
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 0..2400 {
        let len = if i % 4 == 3 { 10 } else { 1250 };
        let mut line = format!("{i:06}-").into_bytes();
        line.resize(len, b'a' + (i % 26) as u8);
        input.extend_from_slice(&line);
        input.push(b'\n');
        expected.push(line);
    }
    ok(
        &[
            "produce",
            "--dir",
            d,
            "--batch",
            "1",
            "--fsync",
            "never",
            "--segment-bytes",
            "4096",
        ],
        &input,
    );
    let out = ok(&["consume", "--dir", d], b"");
    let lines: Vec<&[u8]> = out.stdout.split(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), expected.len() + 1, "one line per record");
    for (i, (got, want)) in lines.iter().zip(&expected).enumerate() {
        assert!(
            got == want,
            "record {i}: got {:?}",
            String::from_utf8_lossy(&got[..got.len().min(12)])
        );
    }
}

/// A reader that goes away (`stratalog ... | head`) ends a command quietly: exit 0, no panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for name in ["a", "b", "c"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratalog"))
            .args(["topics", "create", "--dir"])
            .arg(dir)
            .args([name, "--partitions", "50"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    for args in [
        &["topics", "list"][..],
        &["verify"],
        &["topics", "describe", "a"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stratalog"))
            .args(args)
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }
}

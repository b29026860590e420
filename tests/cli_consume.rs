//! `stratalog consume` beyond printing a log once: `--follow` until a signal, `--from end`,
//! `--from-time`, `-n`, short flags, `STRATALOG_DIR`, and the JSON schema (one type per
//! field).
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

fn run_env(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stratalog");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().expect("wait for stratalog");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "stratalog {args:?} panicked:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok_env(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> String {
    let out = run_env(args, stdin, env);
    assert!(
        out.status.success(),
        "stratalog {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ok(args: &[&str], stdin: &[u8]) -> String {
    ok_env(args, stdin, &[])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Starts `consume ARGS --follow`, reads `expect` lines from it, sends `signal` and returns
/// the lines and the exit status.
fn follow_then_signal(args: &[&str], expect: usize, signal: i32) -> (Vec<String>, Output) {
    let mut child: Child = Command::new(BIN)
        .arg("consume")
        .args(args)
        .arg("--follow")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..expect {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "follow ended early"
        );
        lines.push(line.trim_end().to_string());
    }
    // It keeps running at the end of the log: still there after a few polls.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "--follow exited at the end"
    );
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: sends a signal to our own child process, which has not been waited for.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert_eq!(rest, "", "printed after the signal");
    let out = child.wait_with_output().unwrap();
    (lines, out)
}

#[test]
fn follow_prints_to_the_end_then_waits_until_sigint_or_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    ok(&["produce", "-d", d, "-l", "tail"], b"a\nb\nc\n");
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let (lines, out) = follow_then_signal(&["-d", d, "-l", "tail"], 3, signal);
        assert_eq!(lines, ["a", "b", "c"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "signal {signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The log was closed: a producer can open it again.
    ok(&["produce", "-d", d, "-l", "tail"], b"d\n");

    // A group following a topic commits what it printed before exiting.
    ok(
        &["topics", "create", "--dir", d, "ev", "--partitions", "2"],
        b"",
    );
    ok(&["produce", "-d", d, "-l", "ev/0"], b"x\ny\n");
    ok(&["produce", "-d", d, "-l", "ev/1"], b"z\n");
    let (mut lines, out) = follow_then_signal(&["-d", d, "-t", "ev", "-g", "g"], 3, libc::SIGTERM);
    assert!(out.status.success());
    lines.sort();
    assert_eq!(lines, ["x", "y", "z"]);
    assert_eq!(
        ok(&["groups", "list", "--dir", d], b""),
        "g partitions=2 lag=0\n"
    );
}

#[test]
fn from_end_from_time_max_short_flags_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    ok(&["produce", "--dir", d], b"old1\nold2\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(&["produce", "--dir", d], b"new1\nnew2\n");
    let json = ok(&["consume", "--dir", d, "--format", "json"], b"");
    let ts: Vec<i64> = json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(ts[2] > ts[1], "{ts:?}");

    let from_time = ts[2].to_string();
    assert_eq!(
        ok(&["consume", "-d", d, "--from-time", &from_time], b""),
        "new1\nnew2\n"
    );
    let future = (ts[3] + 60_000).to_string();
    assert_eq!(ok(&["consume", "-d", d, "--from-time", &future], b""), "");
    assert_eq!(ok(&["consume", "-d", d, "--from", "end"], b""), "");
    assert_eq!(
        ok(&["consume", "-d", d, "--from", "start", "-n", "1"], b""),
        "old1\n"
    );
    assert_eq!(
        ok(&["consume", "-d", d, "-o", "1", "-n", "2"], b""),
        "old2\nnew1\n"
    );

    // STRATALOG_DIR stands for --dir.
    let env = [("STRATALOG_DIR", d)];
    assert_eq!(
        ok_env(&["consume", "-n", "1", "-l", "default"], b"", &env),
        "old1\n"
    );
    ok_env(&["produce", "-l", "other"], b"o\n", &env);
    assert_eq!(ok(&["consume", "-d", d, "-l", "other"], b""), "o\n");

    // An offset of one log makes no sense for a whole topic.
    ok(&["topics", "create", "--dir", d, "t"], b"");
    let out = run_env(&["consume", "-d", d, "-t", "t", "--from", "3"], b"", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from end"));
    assert_eq!(
        ok(&["consume", "-d", d, "-t", "t", "--from", "end"], b""),
        ""
    );
    let out = run_env(&["consume", "-d", d, "--from", "later"], b"", &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// `value` was a string when the bytes were UTF-8 and `{"hex":...}` otherwise, so every jq
/// filter had to test its type. Every byte field is now `{"hex":...,"utf8":string|null}`.
#[test]
fn json_gives_every_byte_field_one_type() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    ok(&["topics", "create", "--dir", d, "t"], b"");
    ok(
        &[
            "produce",
            "-d",
            d,
            "-t",
            "t",
            "--key-field",
            "1",
            "-H",
            "h=v",
        ],
        b"text,1\n\xff\xfe,2\n\n",
    );
    let json = ok(&["consume", "-d", d, "-t", "t", "--format", "json"], b"");
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    let check = |field: &serde_json::Value, what: &str| {
        let object = field
            .as_object()
            .unwrap_or_else(|| panic!("{what}: {field}"));
        assert_eq!(object.len(), 2, "{what}: {field}");
        assert!(object["hex"].is_string(), "{what}: {field}");
        assert!(
            object["utf8"].is_string() || object["utf8"].is_null(),
            "{what}: {field}"
        );
    };
    for r in &records {
        check(&r["key"], "key");
        check(&r["value"], "value");
        for h in r["headers"].as_array().unwrap() {
            check(&h["name"], "header name");
            check(&h["value"], "header value");
        }
    }
    assert_eq!(records[0]["value"]["utf8"], "text,1");
    assert_eq!(records[1]["value"]["utf8"], serde_json::Value::Null);
    assert_eq!(
        records[1]["value"]["hex"],
        "ff fe,2".replace(' ', "").replace(",2", "2c32")
    );
    assert_eq!(records[2]["key"]["hex"], "");
}

/// A producer killed between writing a new log's `log.meta` and its first segment leaves a
/// log that holds no record: consume prints nothing and succeeds (it failed, "no segment",
/// when `tests/crash_kill.rs` killed a producer there).
#[test]
fn a_log_whose_creation_did_not_finish_holds_no_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("default");
    stratalog::Log::open(&dir, stratalog::LogOptions::default())
        .unwrap()
        .close()
        .unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "log.meta" {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert_eq!(ok(&["consume", "--dir", s(tmp.path())], b""), "");
}

//! `stratalog produce` against bad input and closed outputs: sizes no batch can hold, lines
//! without end, acknowledgements nobody reads, delimiters, missing keys; and `--key`,
//! `--header`.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

/// Runs the binary with `args`, feeding `stdin` (a closed pipe while feeding is ignored).
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

fn ok(args: &[&str], stdin: &[u8]) -> Output {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "stratalog {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the binary and asserts it failed with `status` and said `error:` on stderr; returns
/// stderr.
fn fails_with(status: i32, args: &[&str], stdin: &[u8]) -> String {
    let out = run(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(status),
        "stratalog {args:?}: {}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// `--size` beyond what a batch can hold used to allocate the value first: "memory
/// allocation failed" and an abort (status 134). It is refused before anything is allocated
/// or created.
#[test]
fn a_size_no_batch_can_hold_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    for size in ["99999999999", "67108779"] {
        let stderr = fails_with(
            1,
            &["produce", "--dir", d, "--count", "1", "--size", size],
            b"",
        );
        assert!(
            stderr.contains("largest record a batch can hold"),
            "{stderr}"
        );
    }
    assert!(!dir.path().join("default").exists());
}

/// Peak resident memory, in KiB, of the largest child of this process waited for so far.
fn children_max_rss_kib() -> i64 {
    // SAFETY: `getrusage` only writes into the struct we pass, which all zeros initialises.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage.ru_maxrss
    }
}

/// A line without a newline used to be read whole (a 1.5 GB line took 2.9 GB) before being
/// refused. Reading stops at the largest record a batch can hold (just under 64 MiB), with
/// an error naming the line, after appending the lines before it. Prints the child's peak
/// memory. (No other test of this file starts a child that large, so the peak is this one's.)
#[test]
fn an_endless_line_is_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    // The line is written in chunks: a child's peak memory counts what it shared with this
    // process when it was forked, so this process must not hold 300 MiB itself.
    let mut child = Command::new(BIN)
        .args(["produce", "--dir", d, "--fsync", "never"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let _ = input.write_all(b"one\ntwo\n");
        for _ in 0..300 {
            if input.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: line 3 is longer than") && stderr.contains("largest record"),
        "{stderr}"
    );
    let peak_mib = children_max_rss_kib() / 1024;
    println!("produce's peak memory reading a 300 MiB line: {peak_mib} MiB");
    assert!(
        peak_mib < 200,
        "produce took {peak_mib} MiB for a line it refuses"
    );
    let out = ok(&["consume", "--dir", d], b"");
    assert_eq!(lines(&out), ["one", "two"]);
}

/// Starts `produce --print-acks ARGS`, reads two ack lines and closes its stdout (`| head
/// -2`). produce used to stop quietly with status 0; it must say the acks could not be
/// delivered and exit 1.
fn acks_to_a_closed_pipe(args: &[&str], stdin: Vec<u8>) {
    let mut child = Command::new(BIN)
        .arg("produce")
        .args(args)
        .arg("--print-acks")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("acked "), "{line:?}");
    }
    drop(reader);
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.contains("cannot deliver the acknowledgements") && !stderr.contains("panicked"),
        "{args:?}: {stderr}"
    );
}

#[test]
fn acks_nobody_reads_fail_the_producer() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    // 100,000 one-record batches: far more ack lines than a pipe holds.
    let input: Vec<u8> = (0..100_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    acks_to_a_closed_pipe(
        &[
            "--dir", d, "--log", "stdin", "--batch", "1", "--fsync", "never",
        ],
        input,
    );
    acks_to_a_closed_pipe(
        &[
            "--dir", d, "--log", "gen", "--count", "100000", "--batch", "1", "--fsync", "never",
        ],
        Vec::new(),
    );
}

#[test]
fn key_and_headers_go_on_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    ok(
        &[
            "produce",
            "-d",
            d,
            "-k",
            "user-7",
            "-H",
            "source=cli",
            "--header",
            "eq=a=b",
            "-H",
            "empty=",
        ],
        b"paid\nshipped\n",
    );
    ok(
        &["produce", "-d", d, "-k", "gen", "-c", "3", "-s", "5"],
        b"",
    );
    let out = ok(&["consume", "-d", d, "--format", "json"], b"");
    let records: Vec<serde_json::Value> = lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    let utf8 = |v: &serde_json::Value| v["utf8"].as_str().unwrap().to_string();
    assert_eq!(utf8(&records[0]["key"]), "user-7");
    assert_eq!(utf8(&records[1]["value"]), "shipped");
    let headers: Vec<(String, String)> = records[1]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (utf8(&h["name"]), utf8(&h["value"])))
        .collect();
    assert_eq!(
        headers,
        [
            ("source".to_string(), "cli".to_string()),
            ("eq".into(), "a=b".into()),
            ("empty".into(), String::new())
        ]
    );
    assert_eq!(utf8(&records[4]["key"]), "gen");
    assert_eq!(records[4]["headers"], serde_json::json!([]));
    // Generated values follow the documented pattern: byte j of record n is 'a' + (n+j) % 26.
    assert_eq!(utf8(&records[2]["value"]), "abcde");
    assert_eq!(utf8(&records[4]["value"]), "cdefg");

    for bad in [
        &["produce", "-d", d, "-H", "novalue"][..],
        &["produce", "-d", d, "-H", "=x"],
    ] {
        let stderr = fails_with(2, bad, b"");
        assert!(stderr.contains("NAME=VALUE"), "{stderr}");
    }
}

fn create_topic(d: &str, name: &str, partitions: &str) {
    ok(
        &[
            "topics",
            "create",
            "--dir",
            d,
            name,
            "--partitions",
            partitions,
        ],
        b"",
    );
}

/// `--delimiter é` was taken as the byte 0xE9, which never occurs alone in UTF-8 text: no
/// line was ever split. A delimiter must be one ASCII character; `\t` is a tab.
#[test]
fn a_delimiter_is_one_ascii_character() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    create_topic(d, "t", "1");
    for bad in ["é", ",,", ""] {
        let stderr = fails_with(
            2,
            &[
                "produce",
                "--dir",
                d,
                "--topic",
                "t",
                "--key-field",
                "1",
                "--delimiter",
                bad,
            ],
            b"a\n",
        );
        assert!(stderr.contains("one ASCII character"), "{bad:?}: {stderr}");
    }
    ok(
        &[
            "produce",
            "--dir",
            d,
            "--topic",
            "t",
            "--key-field",
            "2",
            "--delimiter",
            "\\t",
        ],
        b"a\tk1\tz\n",
    );
    let out = ok(
        &["consume", "--dir", d, "--topic", "t", "--format", "json"],
        b"",
    );
    let record: serde_json::Value = serde_json::from_str(&lines(&out)[0]).unwrap();
    assert_eq!(record["key"]["utf8"], "k1");
}

/// A line without the key field got no key, silently. stderr now says how many lines had
/// none; `--strict-keys` refuses the first such line (after appending the lines before it).
#[test]
fn lines_without_the_key_field_are_counted_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    create_topic(d, "t", "1");
    let input = b"a,k1\nnokey\nb,k2\nalso-none\n";
    let out = ok(&["produce", "-d", d, "-t", "t", "--key-field", "2"], input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 of 4 lines had no field 2"), "{stderr}");
    // Not a terminal: no colour codes in the warning.
    assert!(!stderr.contains('\x1b'), "ANSI codes in a pipe: {stderr:?}");

    let stderr = fails_with(
        1,
        &[
            "produce",
            "-d",
            d,
            "-t",
            "t",
            "--key-field",
            "2",
            "--strict-keys",
        ],
        input,
    );
    assert!(stderr.contains("line 2 has no field 2"), "{stderr}");
    let out = ok(&["consume", "-d", d, "-t", "t"], b"");
    assert_eq!(lines(&out), ["a,k1", "nokey", "b,k2", "also-none", "a,k1"]);
}

/// Warnings used to carry ANSI colour codes into files and pipes.
#[test]
fn warnings_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    ok(&["produce", "--dir", d], b"x\n");
    let out = ok(
        &["produce", "--dir", d, "--segment-bytes", "1048576"],
        b"y\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is ignored"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "ANSI codes in a pipe: {stderr:?}");
}

/// Issue 10, item 2: `produce --log __consumer_offsets` wrote into the store's own offsets log
/// and broke every store command afterwards. The `__` names are refused, and the store still
/// works.
#[test]
fn the_stores_own_logs_are_unreachable_through_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = s(tmp.path());
    ok(&["topics", "create", "--dir", dir, "t"], b"");
    for name in ["__consumer_offsets", "__anything"] {
        let stderr = fails_with(
            1,
            &["produce", "--dir", dir, "--log", name, "--count", "1"],
            b"",
        );
        assert!(stderr.contains("reserved"), "{stderr}");
    }
    assert!(!tmp.path().join("__anything").exists());
    ok(&["topics", "list", "--dir", dir], b"");
}

/// Issue 10, item 9: `produce --count` as a load generator made a `pwrite` per 100 records
/// (10 KB at `--size 100`): the syscalls, not the bytes, were its cost. Without `--batch` it
/// now fills batches of about 128 KiB of values (1310 records of 100 B, 128 of 1 KiB); the
/// acks (one per batch) show where each batch ends. `--batch` still decides when given.
#[test]
fn count_batches_hold_about_128_kib_of_values_unless_batch_is_given() {
    let acked = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "produce",
            "-d",
            s(dir.path()),
            "--fsync",
            "never",
            "--print-acks",
        ];
        args.extend_from_slice(extra);
        let out = ok(&args, b"");
        lines(&out)
            .into_iter()
            .filter(|l| l.starts_with("acked"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        acked(&["--count", "3000", "--size", "100"]),
        ["acked 1309", "acked 2619", "acked 2999"]
    );
    assert_eq!(
        acked(&["--count", "300", "--size", "1024"]),
        ["acked 127", "acked 255", "acked 299"]
    );
    // A value larger than 128 KiB: one record per batch.
    assert_eq!(
        acked(&["--count", "2", "--size", "200000"]),
        ["acked 0", "acked 1"]
    );
    assert_eq!(
        acked(&["--count", "250", "--size", "100", "--batch", "100"]),
        ["acked 99", "acked 199", "acked 249"]
    );
    let help = ok(&["produce", "--help"], b"");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("128 KiB of values"),
        "--help does not document the --count default batch"
    );
}

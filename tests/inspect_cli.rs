//! The command line reads beside a running producer (issue 10: "the process lock refuses
//! consume, topics list and groups describe while a producer runs"), `verify --dir` checks the
//! store's own files, and `recover` repairs what the read-only commands leave alone.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");
/// Generous: only a hang reaches it (the machine is shared and slow at times).
const WAIT: Duration = Duration::from_secs(60);

fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run stratalog");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{args:?} panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "stratalog {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A running `produce --print-acks`: lines go in through `send`, which waits for their ack.
struct Producer {
    child: Child,
    stdin: Option<ChildStdin>,
    acks: mpsc::Receiver<String>,
}

impl Producer {
    fn start(args: &[&str]) -> Producer {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--print-acks")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn produce");
        let stdout = child.stdout.take().unwrap();
        let (tx, acks) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Producer { child, stdin, acks }
    }

    fn send(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        self.acks.recv_timeout(WAIT).expect("an ack")
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            // Give it the chance to finish cleanly, then make sure it is gone.
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[test]
fn consume_and_follow_beside_a_running_producer() {
    let tmp = tempfile::tempdir().unwrap();
    let d = s(tmp.path());
    let mut producer = Producer::start(&["produce", "--dir", d, "--fsync", "always"]);
    assert_eq!(producer.send("first"), "acked 0");
    // The producer holds the log's lock: a read-only consume does not need it.
    assert_eq!(ok(&["consume", "--dir", d]), "first\n");

    let mut follower = Command::new(BIN)
        .args(["consume", "--dir", d, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), "first");
    for (i, value) in ["second", "third"].iter().enumerate() {
        assert_eq!(producer.send(value), format!("acked {}", i + 1));
        assert_eq!(&lines.recv_timeout(WAIT).unwrap(), value, "followed");
    }
    // SIGTERM ends the follower with status 0.
    send_signal(follower.id(), "TERM");
    let status = follower.wait().unwrap();
    assert!(status.success(), "{status}");
    reader.join().unwrap();
}

/// Sends `signal` to our own child `pid` through the `kill` command (no unsafe code here).
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn store_inspection_beside_a_running_producer() {
    let tmp = tempfile::tempdir().unwrap();
    let d = s(tmp.path());
    ok(&["topics", "create", "--dir", d, "t", "--partitions", "3"]);
    let mut producer =
        Producer::start(&["produce", "--dir", d, "--topic", "t", "--key-field", "1"]);
    for key in ["a", "b", "c", "d"] {
        assert!(producer.send(key).starts_with("acked "));
    }
    let list = ok(&["topics", "list", "--dir", d]);
    assert!(list.starts_with("t partitions=3"), "{list}");
    let describe = ok(&["topics", "describe", "--dir", d, "t"]);
    let ends: u64 = describe
        .lines()
        .filter_map(|l| {
            l.split(" end=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(ends, 4, "{describe}");
    let consumed = ok(&["consume", "--dir", d, "--topic", "t"]);
    assert_eq!(consumed.lines().count(), 4, "{consumed}");
    ok(&["groups", "list", "--dir", d]);
    // A consumer group commits, which takes the store: refused while the producer holds it,
    // with a clear error rather than a wrong answer.
    let out = run(&["consume", "--dir", d, "--topic", "t", "--group", "g"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 10 item 2: `verify --dir` said ok about a store whose offsets log its other commands
/// refused.
#[test]
fn verify_checks_the_stores_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = s(tmp.path());
    ok(&["topics", "create", "--dir", d, "t"]);
    ok(&["produce", "--dir", d, "--log", "t/0", "--count", "3"]);
    ok(&["consume", "--dir", d, "--topic", "t", "--group", "g"]);
    assert!(ok(&["verify", "--dir", d]).contains("ok: no problem found"));
    // A record that is not a consumer offset record, appended to the offsets log behind the
    // store's back (what `produce --log __consumer_offsets` did before it was refused).
    let log = stratalog::Log::open(
        tmp.path().join("__consumer_offsets"),
        stratalog::LogOptions {
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    log.append_records(&["not an offset record"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    log.close().unwrap();
    // What the issue saw: the store's commands refuse it...
    assert!(
        !run(&["consume", "--dir", d, "--topic", "t", "--group", "g"])
            .status
            .success()
    );
    let out = run(&["verify", "--dir", d]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "verify said ok about a broken store:\n{text}"
    );
    assert!(text.contains("__consumer_offsets"), "{text}");
}

#[test]
fn recover_repairs_what_read_only_commands_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let d = s(tmp.path());
    // A producer killed with SIGKILL after 10 acknowledged records...
    let mut producer = Producer::start(&["produce", "--dir", d, "--fsync", "always"]);
    for i in 0..10 {
        assert_eq!(producer.send(&format!("r{i}")), format!("acked {i}"));
    }
    producer.child.kill().unwrap();
    producer.child.wait().unwrap();
    // ...and a torn write after its last batch: the start of a batch header.
    let segment = std::fs::read_dir(tmp.path().join("default"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    f.write_all(b"STB1 torn").unwrap();
    drop(f);
    let before = std::fs::read(&segment).unwrap();
    // Read-only commands serve the valid prefix and change nothing.
    assert_eq!(ok(&["consume", "--dir", d]).lines().count(), 10);
    assert_eq!(std::fs::read(&segment).unwrap(), before);
    let verify = ok(&["verify", "--dir", d]);
    assert!(verify.contains("note:"), "{verify}");
    let report = ok(&["recover", "--dir", d]);
    assert!(report.contains("1 torn tail(s) cut"), "{report}");
    let verify = ok(&["verify", "--dir", d]);
    assert!(!verify.contains("note:"), "{verify}");
    assert_eq!(ok(&["consume", "--dir", d]).lines().count(), 10);
}

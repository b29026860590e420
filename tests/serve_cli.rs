//! `stratalog serve`, `status` and `promote` as real processes on 127.0.0.1: a leader and a
//! follower, a produce at `acks=all` through the protocol, the follower's state in `status
//! --json`, a promote. Every process is killed when the test ends, also when it fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratalog::replication::frame::Acks;
use stratalog::replication::transport::Client;
use stratalog::replication::{ErrorCode, Message};
use stratalog::{BatchBuilder, Compression};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");
const TIMEOUT: Duration = Duration::from_secs(30);

/// A `serve` process, killed on drop.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("serve printed {line:?}"))
            .to_string();
        Served { child, addr }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run stratalog")
}

fn status(addr: &str) -> serde_json::Value {
    let out = run(&["status", "--node", addr, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn serve_status_promote() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for d in [&a, &b] {
        let out = run(&["topics", "create", "--dir", d.to_str().unwrap(), "t"]);
        assert!(out.status.success());
    }
    let replication = ["--replicas", "2", "--min-in-sync", "2"];
    let leader = Served::start(
        &[
            &["--dir", a.to_str().unwrap(), "--node-id", "a"][..],
            &replication,
        ]
        .concat(),
    );
    let follower = Served::start(
        &[
            &[
                "--dir",
                b.to_str().unwrap(),
                "--node-id",
                "b",
                "--leader",
                &leader.addr,
            ][..],
            &replication,
        ]
        .concat(),
    );
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push_value(1, b"hello").unwrap();
    let mut encoded = batch.encode(0).unwrap();
    encoded.stamp(0);
    let mut client = Client::connect(leader.addr.parse().unwrap(), TIMEOUT).unwrap();
    // `acks=all` with 2 in sync needs the follower in the set first.
    let started = Instant::now();
    while status(&leader.addr)["partitions"][0]["followers"][0]["in_sync"] != true {
        assert!(
            started.elapsed() < TIMEOUT,
            "the follower never joined the in-sync set"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = client
        .call(&Message::ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Acks::All,
            timeout_ms: 20_000,
            batches: Bytes::copy_from_slice(encoded.as_bytes()),
        })
        .unwrap();
    assert!(
        matches!(
            answer,
            Message::ProduceResponse {
                error: ErrorCode::None,
                ..
            }
        ),
        "{answer:?}"
    );
    let s = status(&leader.addr);
    assert_eq!(s["role"], "leader");
    assert_eq!(s["node_id"], "a");
    let p = &s["partitions"][0];
    assert_eq!(
        (p["log_end"].as_u64(), p["high_watermark"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(p["followers"][0]["node_id"], "b");
    assert_eq!(p["followers"][0]["in_sync"], true);
    assert_eq!(p["followers"][0]["lag"], 0);
    let s = status(&follower.addr);
    assert_eq!(s["role"], "follower");
    assert_eq!(s["leader"], leader.addr.as_str());
    assert_eq!(s["partitions"][0]["log_end"], 1);

    // consume --node: the same output as --dir, up to the high watermark; a follower sends the
    // client to its leader.
    for node in [&leader.addr, &follower.addr] {
        let out = run(&["consume", "--node", node, "--log", "t/0"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    }
    let out = run(&[
        "consume",
        "--node",
        &leader.addr,
        "--topic",
        "t",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (line["partition"].as_u64(), line["offset"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(line["value"]["utf8"], "hello");
    let dir_form = run(&[
        "consume",
        "--dir",
        a.to_str().unwrap(),
        "--topic",
        "t",
        "--format",
        "json",
    ]);
    assert_eq!(dir_form.stdout, out.stdout, "same output as the --dir form");

    // produce --node: lines of stdin, `acked <offset>` per acknowledged batch, through the
    // follower (redirected to the leader).
    let mut child = Command::new(BIN)
        .args([
            "produce",
            "--node",
            &follower.addr,
            "--log",
            "t/0",
            "--acks",
            "all",
            "--print-acks",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"two\nthree\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks = String::from_utf8_lossy(&out.stdout);
    assert_eq!(acks.lines().last(), Some("acked 2"), "{acks}");
    let out = run(&["consume", "--node", &follower.addr, "--log", "t/0"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\ntwo\nthree\n");

    drop(leader);
    let out = run(&["promote", "--node", &follower.addr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    loop {
        let s = status(&follower.addr);
        if s["role"] == "leader" {
            assert!(s["epoch"].as_u64().unwrap() >= 1);
            break;
        }
        assert!(started.elapsed() < TIMEOUT);
    }
    // Nothing listens here: a clear error, exit 1.
    let out = run(&["status", "--node", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
}

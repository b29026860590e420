//! The demo's own etcd, for the etcd failover path: one member on 127.0.0.1 (client and peer
//! ports free when the demo looked), its data in the scratch directory, its log in
//! `logs/etcd.log`. It is a registered child of the demo ([`Proc`]): killed when dropped, by
//! the SIGINT/SIGTERM handler, and by `PR_SET_PDEATHSIG` if the demo dies outright.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::super::{CliError, context};
use super::cluster::Proc;

/// The etcd cluster's name of the demo's nodes (their keys live under `/stratalog/demo/`).
pub const CLUSTER: &str = "demo";

/// How long etcd gets to answer its health check after it starts.
const START: Duration = Duration::from_secs(30);

/// The `etcd` executable on `PATH`, if there is one.
pub fn find_on_path() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join("etcd"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running etcd member.
pub struct Etcd {
    /// The process.
    pub proc: Proc,
    /// Its client address, `127.0.0.1:PORT`.
    pub client: String,
}

impl Etcd {
    /// Starts `binary` with its data in `data`, listening for clients on `client` and for
    /// peers on `peer`, its output appended to `log`; waits until it answers `/health`.
    ///
    /// The election timeout is short (heartbeat 50 ms, election 500 ms): etcd's smallest
    /// lease is 1.5 election timeouts, so that leases of one second are granted as asked.
    pub fn start(
        binary: &Path,
        data: &Path,
        client: &str,
        peer: &str,
        log: &Path,
    ) -> Result<Etcd, CliError> {
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(context(format!("cannot create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(context(format!("cannot share {}", log.display())))?;
        let mut cmd = Command::new(binary);
        cmd.args(["--name", "demo", "--data-dir"])
            .arg(data)
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &format!("demo=http://{peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut proc = Proc::spawn(&mut cmd, &format!("etcd ({})", binary.display()))?;
        let started = Instant::now();
        loop {
            if let Some(status) = proc.exited() {
                return Err(format!(
                    "etcd exited ({status}) before it answered on {client}; its log ({}):\n{}",
                    log.display(),
                    tail(log)
                )
                .into());
            }
            if healthy(client) {
                return Ok(Etcd {
                    proc,
                    client: client.to_string(),
                });
            }
            if started.elapsed() > START {
                return Err(format!(
                    "etcd did not answer on {client} within {} s; its log ({}):\n{}",
                    START.as_secs(),
                    log.display(),
                    tail(log)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `etcd://ADDR`, for `serve --coordinator` and `status --coordinator`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.client)
    }
}

/// True if etcd at `client` says it is healthy (`GET /health`: `{"health":"true"}`, which
/// etcd answers only once it has a raft leader and serves requests).
fn healthy(client: &str) -> bool {
    let Ok(addr) = client.parse() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {client}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.take(64 * 1024).read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") && answer.contains("\"health\":\"true\"")
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

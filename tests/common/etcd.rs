//! A real `etcd` for the coordinator tests: one member on 127.0.0.1 with free ports and a
//! temporary data directory, killed (and its directory removed) when dropped, also when a
//! test panics. A missing `etcd` fails the test (never skipped): `.ci/run` installs it.
//!
//! Included with `#[path = "common/etcd.rs"] mod etcd;` beside `common/cluster.rs`.
#![allow(
    dead_code,
    reason = "each test file includes this module and uses only some of its helpers; `expect` would fail in the files that use them all"
)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stratalog::replication::coordinator::{ClusterView, CoordinatorOptions, describe};

/// A running etcd member.
pub struct Etcd {
    child: Child,
    /// Its client address (`127.0.0.1:PORT`).
    pub client: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd with a short election timeout, so that it grants leases of one second
    /// (its minimum lease is 1.5 election timeouts), and waits until it answers.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let ports = crate::common::free_addrs(2);
        let (client, peer) = (ports[0].clone(), ports[1].clone());
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &format!("t=http://{peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "etcd must be installed for these tests (Debian: etcd-server; .ci/run installs it)",
            );
        let etcd = Etcd {
            child,
            client,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if TcpStream::connect(&etcd.client).is_ok()
                && describe(&etcd.options("probe"), Duration::from_secs(2)).is_ok()
            {
                return etcd;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd did not answer on {} within 30 s",
                etcd.client
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `etcd://ADDR`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.client)
    }

    /// Coordinator options naming this etcd and `cluster`.
    pub fn options(&self, cluster: &str) -> CoordinatorOptions {
        let mut o = CoordinatorOptions::from_url(&self.url()).unwrap();
        o.cluster = cluster.to_string();
        o
    }

    /// The cluster's keys, or `None` if etcd does not answer (within 2 s).
    pub fn view(&self, cluster: &str) -> Option<ClusterView> {
        describe(&self.options(cluster), Duration::from_secs(2)).ok()
    }
}

/// Three etcd members forming one cluster on 127.0.0.1, each killed (and its directory
/// removed) when dropped.
pub struct EtcdCluster {
    /// The members; `None` once killed with [`EtcdCluster::kill`].
    pub members: Vec<Option<Etcd>>,
}

impl EtcdCluster {
    /// Starts three members (short election timeout, as [`Etcd::start`]) and waits until the
    /// cluster answers.
    pub fn start() -> EtcdCluster {
        let ports = crate::common::free_addrs(6);
        let names = ["m0", "m1", "m2"];
        let initial: Vec<String> = (0..3)
            .map(|i| format!("{}=http://{}", names[i], ports[2 * i + 1]))
            .collect();
        let initial = initial.join(",");
        let members: Vec<Option<Etcd>> = (0..3)
            .map(|i| {
                let dir = tempfile::tempdir().unwrap();
                let (client, peer) = (ports[2 * i].clone(), ports[2 * i + 1].clone());
                let child = Command::new("etcd")
                    .args(["--name", names[i], "--data-dir"])
                    .arg(dir.path().join("data"))
                    .args(["--listen-client-urls", &format!("http://{client}")])
                    .args(["--advertise-client-urls", &format!("http://{client}")])
                    .args(["--listen-peer-urls", &format!("http://{peer}")])
                    .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("etcd must be installed for these tests (Debian: etcd-server)");
                Some(Etcd {
                    child,
                    client,
                    _dir: dir,
                })
            })
            .collect();
        let cluster = EtcdCluster { members };
        let started = Instant::now();
        while cluster.view("probe").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the etcd cluster did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `etcd://A,B,C`: every member.
    pub fn url(&self) -> String {
        let clients: Vec<&str> = self
            .members
            .iter()
            .flatten()
            .map(|m| m.client.as_str())
            .collect();
        format!("etcd://{}", clients.join(","))
    }

    /// The cluster's keys as the members still running see them.
    pub fn view(&self, cluster: &str) -> Option<ClusterView> {
        let mut o = CoordinatorOptions::from_url(&self.url()).ok()?;
        o.cluster = cluster.to_string();
        describe(&o, Duration::from_secs(2)).ok()
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.members[i] = None;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stratalog serve` under a coordinator at `url` electing one leader of every partition
/// (`--node-wide-leader`): lease `lease_ms`, three replicas, two in sync for `acks=all`, a
/// follower out of sync after 1 s.
pub fn serve(
    dir: &std::path::Path,
    id: &str,
    listen: &str,
    url: &str,
    cluster: &str,
    lease_ms: u64,
) -> crate::cluster::Proc {
    serve_with(
        dir,
        id,
        listen,
        url,
        cluster,
        lease_ms,
        &["--node-wide-leader"],
    )
}

/// `stratalog serve` under a coordinator with the default election (a leader per partition)
/// and `extra` arguments (`--unclean-election`, `--node-wide-leader`).
pub fn serve_with(
    dir: &std::path::Path,
    id: &str,
    listen: &str,
    url: &str,
    cluster: &str,
    lease_ms: u64,
    extra: &[&str],
) -> crate::cluster::Proc {
    let lease = lease_ms.to_string();
    let mut args = vec![
        "--coordinator",
        url,
        "--cluster",
        cluster,
        "--lease-ms",
        &lease,
        "--replicas",
        "3",
        "--min-in-sync",
        "2",
        "--replica-lag-timeout",
        "1000",
    ];
    args.extend_from_slice(extra);
    crate::cluster::serve(dir, id, listen, None, &args)
}

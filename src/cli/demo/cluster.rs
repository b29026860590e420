//! The demo's processes: `stratalog serve` nodes and a `stratalog mirror` on 127.0.0.1, and the
//! short commands run against them (`topics create`, `status --json`, `promote`, `snapshot`,
//! `restore`), all of them this very executable.
//!
//! Every long-lived child is registered in [`CHILDREN`] while it runs, so that SIGINT or
//! SIGTERM can kill them all ([`kill_all_children`]), and is started with `PR_SET_PDEATHSIG`
//! so that it dies with the demo even if the demo is killed outright.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::{CliError, context};

/// Process ids of the children alive now.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs and reaps every registered child. Called by the signal thread, which exits the
/// process right after: it keeps the registry locked, so that no child starts meanwhile.
pub fn kill_all_children() {
    let pids = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
    for &pid in pids.iter() {
        let pid = pid as libc::pid_t;
        // SAFETY: plain system calls on a child of this process that was not reaped yet (a
        // child leaves the registry before it is reaped elsewhere, under this lock).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    // Keep the lock until the process exits.
    std::mem::forget(pids);
}

/// The command to run this executable with `args`.
pub fn command(exe: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// A long-lived child process, registered while it runs; killed and reaped when dropped.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Spawns `cmd` as a registered child that dies with this process.
    pub fn spawn(cmd: &mut Command, name: &str) -> Result<Proc, CliError> {
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // `prctl`, which is async-signal-safe, allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut registry = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd
            .spawn()
            .map_err(context(format!("cannot start {name}")))?;
        registry.push(child.id());
        Ok(Proc { child: Some(child) })
    }

    /// The child, while it was not reaped.
    pub fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("a Proc holds its child until dropped")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// True once the process has exited (it is then reaped, and its status returned).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let pid = self.pid();
        let mut registry = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
        let status = self.child().try_wait().ok().flatten();
        if status.is_some() {
            registry.retain(|&p| p != pid);
        }
        status
    }

    fn unregister(&self) {
        let pid = self.pid();
        CHILDREN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|&p| p != pid);
    }

    /// SIGKILL, as a crash: the process gets no chance to do anything.
    pub fn kill(mut self) {
        self.unregister();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` for the process to exit on its own (a node closes
    /// its store cleanly); SIGKILL after that. Returns its status, and whether it exited
    /// on its own.
    pub fn terminate(mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: a plain system call on our child, not reaped yet (it is still in
        // `self.child`; only this function and Drop reap it).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return (Some(status), true);
            }
            if started.elapsed() > grace {
                self.unregister();
                let mut child = self.child.take().expect("not reaped yet");
                let _ = child.kill();
                return (child.wait().ok(), false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            CHILDREN
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|&p| p != pid);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a short command of this executable to its end, bounded by `timeout`; its output, or
/// an error naming it with its stderr when it fails.
pub fn run(exe: &Path, args: &[&str], timeout: Duration) -> Result<Output, CliError> {
    let what = format!("stratalog {}", args.join(" "));
    let mut cmd = command(exe, args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd, &what)?;
    let mut stdout = proc.child().stdout.take().ok_or("no stdout")?;
    let mut stderr = proc.child().stderr.take().ok_or("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proc.exited() {
            break Some(status);
        }
        if started.elapsed() > timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(proc);
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(status) if status.success() => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        Some(status) => Err(format!(
            "{what} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        )
        .into()),
        None => Err(format!("{what} did not finish within {} s", timeout.as_secs()).into()),
    }
}

/// `status --node ADDR --json`, or `None` if the node does not answer.
pub fn status(exe: &Path, addr: &str) -> Option<Value> {
    let out = run(
        exe,
        &["status", "--node", addr, "--json"],
        Duration::from_secs(15),
    )
    .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// `n` free ports on 127.0.0.1, as addresses (released before use: nodes must know each
/// other's addresses before they start, and a restarted node listens where it did).
pub fn free_addrs(n: usize) -> Result<Vec<String>, CliError> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(context("cannot find free ports on 127.0.0.1"))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.to_string())
                .map_err(context("no local address"))
        })
        .collect()
}

/// A `serve` or `mirror` process that printed where it listens.
pub struct Server {
    /// The process.
    pub proc: Proc,
}

/// Starts `serve`/`mirror` with `args`, its stderr into `stderr` (appended: a restarted
/// node keeps its earlier lines), and waits for its `listening on` line.
pub fn start_server(
    exe: &Path,
    args: &[String],
    name: &str,
    stderr: &Path,
) -> Result<Server, CliError> {
    let err = File::options()
        .create(true)
        .append(true)
        .open(stderr)
        .map_err(context(format!("cannot create {}", stderr.display())))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err);
    let mut proc = Proc::spawn(&mut cmd, name)?;
    let stdout = proc.child().stdout.take().ok_or("no stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    // The node prints this line once it listens, or exits (closing its stdout).
    let _ = reader.read_line(&mut line);
    if !line.starts_with("listening on ") {
        let log = std::fs::read_to_string(stderr).unwrap_or_default();
        return Err(format!(
            "{name} did not start (it printed {line:?}); its stderr:\n{}",
            log.trim()
        )
        .into());
    }
    // Drain whatever else it prints, until it exits.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    Ok(Server { proc })
}

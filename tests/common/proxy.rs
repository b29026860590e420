//! A TCP proxy on 127.0.0.1 for network fault tests: it forwards between a client and a target
//! and can delay, black-hole, drop one direction, or cut every connection. Everything it starts
//! stops when it is dropped (also when a test panics): the accept loop and each pump poll a stop
//! flag at least every 20 ms.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Keep connections open and accept new ones, but forward nothing either way (a network
    /// partition that TCP cannot see).
    Blackhole,
    /// Forward server to client only; what the client sends is dropped.
    DropClientToServer,
    /// Forward client to server only; what the server sends is dropped.
    DropServerToClient,
}

struct State {
    target: Mutex<SocketAddr>,
    mode: Mutex<Mode>,
    delay_ms: AtomicU64,
    /// Bumped by `cut`: connections of an older generation close.
    generation: AtomicU64,
    stop: AtomicBool,
    connections: AtomicU64,
}

/// A running proxy. Dropping it stops it and closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

const POLL: Duration = Duration::from_millis(20);

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        assert!(target.ip().is_loopback(), "tests only talk to loopback");
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            target: Mutex::new(target),
            mode: Mutex::new(Mode::Pass),
            delay_ms: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        });
        let pumps = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (state, pumps) = (state.clone(), pumps.clone());
            std::thread::spawn(move || accept_loop(listener, state, pumps))
        };
        Ok(Proxy {
            addr,
            state,
            accept: Some(accept),
            pumps,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards new connections to another target (open ones keep theirs).
    pub fn set_target(&self, target: SocketAddr) {
        assert!(target.ip().is_loopback(), "tests only talk to loopback");
        *self.state.target.lock().unwrap() = target;
    }

    /// Sets what is forwarded, for open and new connections.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Holds every chunk this long before forwarding it.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Closes every open connection (both sides see the connection end); new ones are accepted.
    pub fn cut(&self) {
        self.state.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let pumps = std::mem::take(&mut *self.pumps.lock().unwrap());
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>, pumps: Arc<Mutex<Vec<JoinHandle<()>>>>) {
    while !state.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((client, _)) => {
                state.connections.fetch_add(1, Ordering::Relaxed);
                let target = *state.target.lock().unwrap();
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let generation = state.generation.load(Ordering::Acquire);
                let mut pumps = pumps.lock().unwrap();
                pumps.retain(|p| !p.is_finished());
                for (from, to, upstream) in [
                    (client.try_clone(), server.try_clone(), true),
                    (server.try_clone(), client.try_clone(), false),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let state = state.clone();
                    pumps.push(std::thread::spawn(move || {
                        pump(from, to, upstream, generation, &state)
                    }));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Copies `from` to `to` until either side closes, the proxy stops or the connection is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, upstream: bool, generation: u64, state: &State) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if state.stop.load(Ordering::Acquire)
            || state.generation.load(Ordering::Acquire) != generation
        {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        let mode = *state.mode.lock().unwrap();
        let forward = match mode {
            Mode::Pass => true,
            Mode::Blackhole => false,
            Mode::DropClientToServer => !upstream,
            Mode::DropServerToClient => upstream,
        };
        if !forward {
            continue;
        }
        let delay = state.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

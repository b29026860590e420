//! The fault proxy that the replication tests put between nodes (tests/common/proxy.rs) does
//! what they rely on: forwards, delays, black-holes, drops one direction, cuts. All traffic stays
//! on 127.0.0.1; the echo server and the proxy stop when the test ends.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::proxy::{Mode, Proxy};

/// An echo server on 127.0.0.1 that serves until the test process ends (its thread is detached
/// and blocks in accept; it holds no resource beyond the port).
fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `msg` and reads the echo, or `None` if nothing came back within `wait`.
fn round_trip(stream: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(msg).ok()?;
    let mut got = vec![0u8; msg.len()];
    let mut at = 0;
    while at < got.len() {
        match stream.read(&mut got[at..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => at += n,
        }
    }
    Some(got)
}

#[test]
fn the_proxy_forwards_delays_blackholes_drops_and_cuts() {
    let proxy = Proxy::start(echo_server()).unwrap();
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
    let short = Duration::from_millis(300);
    assert_eq!(
        round_trip(&mut c, b"hello", Duration::from_secs(5)).as_deref(),
        Some(&b"hello"[..])
    );

    proxy.set_delay(Duration::from_millis(100));
    let started = Instant::now();
    assert!(round_trip(&mut c, b"slow", Duration::from_secs(5)).is_some());
    // Two hops of 100 ms each: a lower bound only, never an upper one (the machine is shared).
    assert!(started.elapsed() >= Duration::from_millis(200));
    proxy.set_delay(Duration::ZERO);

    for mode in [
        Mode::Blackhole,
        Mode::DropClientToServer,
        Mode::DropServerToClient,
    ] {
        proxy.set_mode(mode);
        let mut fresh = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(round_trip(&mut fresh, b"lost", short), None, "{mode:?}");
    }
    proxy.set_mode(Mode::Pass);
    let mut fresh = TcpStream::connect(proxy.addr()).unwrap();
    assert!(round_trip(&mut fresh, b"back", Duration::from_secs(5)).is_some());

    proxy.cut();
    let mut buf = [0u8; 8];
    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        matches!(fresh.read(&mut buf), Ok(0) | Err(_)),
        "a cut connection ends"
    );
    let mut again = TcpStream::connect(proxy.addr()).unwrap();
    assert!(round_trip(&mut again, b"new", Duration::from_secs(5)).is_some());
    assert!(proxy.connections() >= 6);
}

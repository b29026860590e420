//! Frames over real TCP: a threaded server that hands each request to a [`Handler`], and a
//! blocking client.
//!
//! Threads, not an async runtime: a node talks to a handful of peers and clients, a fetch that
//! long-polls parks one thread on a condition variable, and the library keeps its promise of
//! needing no runtime. Each connection gets one thread, up to [`ServerOptions::max_connections`];
//! more are refused at accept. A bad frame closes that connection only.

use std::io::{self, BufReader, IoSlice, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

use super::frame::{ErrorCode, Message};
use super::{WireError, read_frame, write_frame};
use crate::log::FileRange;

/// Answers requests. Called on the connection's own thread; it may block (a long-poll fetch),
/// which holds up only that connection.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stratalog::replication::transport::{Client, Handler, Reply, Server, ServerOptions};
/// use stratalog::replication::{ErrorCode, Message, WireError};
///
/// /// Answers every promote with the next epoch.
/// struct Echo;
/// impl Handler for Echo {
///     fn handle(&self, request: Message, reply: &mut Reply<'_>) -> Result<(), WireError> {
///         let epoch = match request {
///             Message::PromoteRequest { min_epoch } => min_epoch + 1,
///             _ => 0,
///         };
///         reply.send(&Message::PromoteResponse { error: ErrorCode::None, epoch })
///     }
/// }
///
/// let server = Server::start("127.0.0.1:0", Arc::new(Echo), ServerOptions::default())?;
/// let mut client = Client::connect(server.addr(), Duration::from_secs(10))?;
/// let answer = client.call(&Message::PromoteRequest { min_epoch: 4 })?;
/// assert_eq!(answer, Message::PromoteResponse { error: ErrorCode::None, epoch: 5 });
/// server.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Answers `request` through `reply`. Returning an error closes the connection.
    fn handle(&self, request: Message, reply: &mut Reply<'_>) -> Result<(), WireError>;
}

/// Where a handler writes its answer (the correlation id is filled in). See [`Handler`] for an
/// example.
pub struct Reply<'a> {
    stream: &'a mut TcpStream,
    correlation: u32,
}

impl Reply<'_> {
    /// Sends `message` as the answer.
    pub fn send(&mut self, message: &Message) -> Result<(), WireError> {
        write_frame(self.stream, self.correlation, message)
    }

    /// Sends a fetch answer whose batches are `chunks` (slices of mapped segment files, sent
    /// without copying them into a frame buffer first).
    #[expect(clippy::too_many_arguments, reason = "one argument per wire field")]
    pub fn send_fetch(
        &mut self,
        error: ErrorCode,
        epoch: u64,
        high_watermark: u64,
        log_start: u64,
        log_end: u64,
        diverging_end: u64,
        chunks: &[Bytes],
    ) -> Result<(), WireError> {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let head = self.fetch_head(
            error,
            [epoch, high_watermark, log_start, log_end, diverging_end],
            total as u64,
        )?;
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunks.len() + 1);
        slices.push(IoSlice::new(&head));
        slices.extend(chunks.iter().map(|c| IoSlice::new(c)));
        write_all_vectored(self.stream, &mut slices)?;
        Ok(())
    }
}

impl Reply<'_> {
    /// Sends a fetch answer whose batches are `ranges` ([`crate::Log::read_file_ranges`]):
    /// the header, then each range with `sendfile` from its segment file, looping on partial
    /// sends, or, for a range without a descriptor (the simulated storage; a sealed file that
    /// could not be opened again as itself), its mapped bytes with `writev`. Returns how many
    /// bytes went by `sendfile`. A segment file that ends before its range (never, for ranges
    /// of whole checked batches) is an error: the answer is cut short and the connection must
    /// be closed, which returning the error does.
    #[expect(clippy::too_many_arguments, reason = "one argument per wire field")]
    pub fn send_fetch_ranges(
        &mut self,
        error: ErrorCode,
        epoch: u64,
        high_watermark: u64,
        log_start: u64,
        log_end: u64,
        diverging_end: u64,
        ranges: &[FileRange],
    ) -> Result<u64, WireError> {
        let total: u64 = ranges.iter().map(FileRange::len).sum();
        let head = self.fetch_head(
            error,
            [epoch, high_watermark, log_start, log_end, diverging_end],
            total,
        )?;
        self.stream.write_all(&head)?;
        let mut by_sendfile = 0;
        for range in ranges {
            let sent = match range.fd() {
                Some(fd) => send_file_range(self.stream, fd, range)?,
                None => None,
            };
            if sent.is_some() {
                by_sendfile += range.len();
            } else {
                let mut slices: Vec<IoSlice<'_>> =
                    range.chunks().iter().map(|c| IoSlice::new(c)).collect();
                write_all_vectored(self.stream, &mut slices)?;
            }
        }
        self.stream.flush()?;
        Ok(by_sendfile)
    }
}

impl Reply<'_> {
    /// The head of a fetch answer (frame head and fields up to the batches' length) for
    /// `error` and `fields` = epoch, high watermark, log start, log end, diverging end, and
    /// `total` bytes of batches, refused if they would not fit in a frame.
    fn fetch_head(
        &self,
        error: ErrorCode,
        fields: [u64; 5],
        total: u64,
    ) -> Result<Vec<u8>, WireError> {
        let [epoch, high_watermark, log_start, log_end, diverging_end] = fields;
        let total = u32::try_from(total).map_err(|_| {
            WireError::Frame(super::FrameError::BadLength {
                len: total,
                max: super::frame::MAX_FRAME_BYTES.into(),
            })
        })?;
        let mut head = Vec::with_capacity(64);
        Message::encode_fetch_head(
            self.correlation,
            error,
            epoch,
            high_watermark,
            log_start,
            log_end,
            diverging_end,
            total,
            &mut head,
        )?;
        Ok(head)
    }
}

/// Largest count passed to one `sendfile` (Linux sends at most about 2 GiB per call).
const MAX_SENDFILE: usize = 1 << 30;

/// Sends `range` from `fd` with `sendfile`, looping on partial sends; returns how many calls
/// it took, or `None`, having sent nothing, if the kernel cannot `sendfile` from this file (the
/// caller writes the bytes).
fn send_file_range(
    stream: &TcpStream,
    fd: BorrowedFd<'_>,
    range: &FileRange,
) -> io::Result<Option<u64>> {
    use rustix::io::Errno;
    let (mut at, end) = (range.position(), range.position() + range.len());
    let mut calls = 0;
    while at < end {
        calls += 1;
        let count = usize::try_from(end - at)
            .unwrap_or(MAX_SENDFILE)
            .min(MAX_SENDFILE);
        match rustix::fs::sendfile(stream, fd, Some(&mut at), count) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the segment file ended at {at}, inside a range that ends at {end}"),
                ));
            }
            Ok(_) => {}
            Err(Errno::INTR) => {}
            // A nonblocking socket that is full (or a send timeout that passed): wait until it
            // takes more.
            Err(Errno::AGAIN) => wait_writable(stream)?,
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if at == range.position() => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(calls))
}

/// Waits until `stream` can take more bytes, at most its send timeout (then `TimedOut`).
fn wait_writable(stream: &TcpStream) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let timeout = stream.write_timeout()?.map(|d| Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    });
    let mut fds = [PollFd::new(stream, PollFlags::OUT)];
    loop {
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return Err(io::ErrorKind::TimedOut.into()),
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_all_vectored(w: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.flush()
}

/// How a [`Server`] runs.
///
/// # Examples
///
/// ```
/// use stratalog::replication::transport::ServerOptions;
///
/// let options = ServerOptions { max_connections: 16, ..Default::default() };
/// assert_eq!(options.max_connections, 16);
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; more are closed at accept (default 1024).
    pub max_connections: usize,
    /// A connection idle (no request) for this long is closed (default 5 minutes).
    pub idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A listening TCP server. Dropping it (or [`Server::stop`]) stops accepting, closes every
/// connection and joins every thread it started. See [`Handler`] for an example.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    open: AtomicUsize,
    /// Open connections (a clone of each stream, to shut it down on stop) and their threads.
    connections: Mutex<Vec<(TcpStream, JoinHandle<()>)>>,
}

impl Server {
    /// Listens on `listen` (port 0 picks a free port: see [`Server::addr`]) and serves every
    /// connection with `handler`.
    pub fn start(
        listen: impl ToSocketAddrs,
        handler: Arc<dyn Handler>,
        options: ServerOptions,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("stratalog-accept".into())
                .spawn(move || accept_loop(listener, handler, options, shared))?
        };
        Ok(Server {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Stops accepting, closes every connection and waits for their threads.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let connections = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (stream, _) in &connections {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, thread) in connections {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

const ACCEPT_POLL: Duration = Duration::from_millis(20);

fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    options: ServerOptions,
    shared: Arc<Shared>,
) {
    while !shared.stop.load(Ordering::Acquire) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        // The poisoned-lock case: the list only holds handles, nothing half-updated.
        let mut connections = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|(_, t)| !t.is_finished());
        if connections.len() >= options.max_connections {
            tracing::warn!(
                max = options.max_connections,
                "too many connections; closing a new one"
            );
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let (handler, shared2, idle) = (handler.clone(), shared.clone(), options.idle_timeout);
        shared.open.fetch_add(1, Ordering::AcqRel);
        match std::thread::Builder::new()
            .name("stratalog-conn".into())
            .spawn(move || {
                serve(stream, handler.as_ref(), idle, &shared2.stop);
                shared2.open.fetch_sub(1, Ordering::AcqRel);
            }) {
            Ok(thread) => connections.push((clone, thread)),
            Err(e) => {
                shared.open.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(error = %e, "could not start a connection thread");
            }
        }
    }
}

fn serve(stream: TcpStream, handler: &dyn Handler, idle: Duration, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(idle));
    let peer = stream.peer_addr().ok();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Acquire) {
        let (correlation, request) = match read_frame(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(WireError::Frame(e)) => {
                tracing::warn!(peer = ?peer, error = %e, "bad frame; closing the connection");
                let _ = write_frame(
                    &mut writer,
                    0,
                    &Message::ErrorResponse {
                        error: ErrorCode::InvalidRequest,
                        leader: String::new(),
                        message: format!("bad frame: {e}"),
                    },
                );
                break;
            }
            Err(WireError::Io(_)) => break,
        };
        let mut reply = Reply {
            stream: &mut writer,
            correlation,
        };
        if let Err(e) = handler.handle(request, &mut reply) {
            tracing::debug!(peer = ?peer, error = %e, "closing the connection");
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// A blocking client of one node: one request at a time on one connection. See [`Handler`]
/// for an example.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next: AtomicU32,
}

/// Why a call failed.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stratalog::replication::transport::{CallError, Client};
///
/// // Nothing listens on port 1 of the loopback address.
/// let err = Client::connect("127.0.0.1:1".parse()?, Duration::from_secs(5)).unwrap_err();
/// assert!(matches!(err, CallError::Wire { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The connection or a frame failed; the connection is unusable.
    #[error("talking to {addr}: {source}")]
    Wire {
        /// The node.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: WireError,
    },
    /// The node answered another request than the one sent (a protocol fault).
    #[error("{addr} answered correlation {got}, expected {expected}")]
    Mismatch {
        /// The node.
        addr: SocketAddr,
        /// The correlation id sent.
        expected: u32,
        /// The one received.
        got: u32,
    },
    /// The node closed the connection without answering.
    #[error("{addr} closed the connection without answering")]
    Closed {
        /// The node.
        addr: SocketAddr,
    },
}

impl Client {
    /// Connects to `addr`, waiting at most `timeout` for the connection and for each answer.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client, CallError> {
        let wire = |source: io::Error| CallError::Wire {
            addr,
            source: source.into(),
        };
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(wire)?;
        stream.set_nodelay(true).map_err(wire)?;
        stream.set_read_timeout(Some(timeout)).map_err(wire)?;
        stream.set_write_timeout(Some(timeout)).map_err(wire)?;
        let writer = stream.try_clone().map_err(wire)?;
        Ok(Client {
            addr,
            reader: BufReader::new(stream),
            writer,
            next: AtomicU32::new(1),
        })
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how long a call waits for its answer (a long-poll fetch waits longer).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), CallError> {
        self.writer
            .set_read_timeout(Some(timeout))
            .map_err(|e| CallError::Wire {
                addr: self.addr,
                source: e.into(),
            })
    }

    /// Sends `request` and waits for its answer.
    pub fn call(&mut self, request: &Message) -> Result<Message, CallError> {
        let correlation = self.send(request)?;
        self.receive(correlation)
    }

    /// Sends `request` without waiting for its answer; returns its correlation id for
    /// [`Client::receive`]. A node answers a connection's requests in the order they were sent,
    /// so a caller may send the next request before it reads the last answer (a follower
    /// fetches its next chunk while it appends the last one). Answers must be received in
    /// order.
    pub fn send(&mut self, request: &Message) -> Result<u32, CallError> {
        let correlation = self.next.fetch_add(1, Ordering::Relaxed);
        let addr = self.addr;
        write_frame(&mut self.writer, correlation, request)
            .map_err(|source| CallError::Wire { addr, source })?;
        Ok(correlation)
    }

    /// Waits for the answer to the request sent with `correlation` (the oldest one not yet
    /// received).
    pub fn receive(&mut self, correlation: u32) -> Result<Message, CallError> {
        let addr = self.addr;
        match read_frame(&mut self.reader) {
            Ok(Some((got, message))) if got == correlation => Ok(message),
            // A bad-frame answer (correlation 0) is still an answer the caller can read.
            Ok(Some((0, message @ Message::ErrorResponse { .. }))) => Ok(message),
            Ok(Some((got, _))) => Err(CallError::Mismatch {
                addr,
                expected: correlation,
                got,
            }),
            Ok(None) => Err(CallError::Closed { addr }),
            Err(source) => Err(CallError::Wire { addr, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes promotes as their epoch + 1, answers fetches with fixed chunks, and closes on a
    /// status request (to test a handler error).
    struct Test;

    impl Handler for Test {
        fn handle(&self, request: Message, reply: &mut Reply<'_>) -> Result<(), WireError> {
            match request {
                Message::PromoteRequest { min_epoch } => reply.send(&Message::PromoteResponse {
                    error: ErrorCode::None,
                    epoch: min_epoch + 1,
                }),
                Message::FetchRequest { offset, .. } => reply.send_fetch(
                    ErrorCode::None,
                    1,
                    offset,
                    0,
                    offset,
                    u64::MAX,
                    &[Bytes::from_static(b"abc"), Bytes::from_static(b"defg")],
                ),
                _ => Err(io::Error::other("closing on purpose").into()),
            }
        }
    }

    /// The sendfile loop: to a nonblocking socket, a range larger than the socket buffers goes
    /// in several calls (each partial send is followed by a wait until the socket takes more),
    /// and arrives whole and in order, also when the reader stalls half-way.
    #[test]
    fn a_range_is_sent_whole_across_partial_sendfiles() {
        let tmp = tempfile::tempdir().unwrap();
        let log = crate::Log::open(
            tmp.path(),
            crate::LogOptions {
                config: crate::LogConfig {
                    segment_bytes: 64 << 20,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
        let value = vec![7u8; 256 << 10];
        for _ in 0..96 {
            log.append_records(&[&value]).unwrap();
        }
        log.flush().unwrap();
        let ranges = log.read_file_ranges(0, log.end_offset(), 64 << 20).unwrap();
        assert_eq!(ranges.len(), 1);
        let range = &ranges[0];
        let expected: Vec<u8> = range.chunks().concat();
        assert!(
            expected.len() > 16 << 20,
            "more than the socket buffers hold"
        );

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let want = expected.len();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; want];
            let (mut at, mut paused) = (0, false);
            while at < want {
                let n = (want - at).min(64 << 10);
                std::io::Read::read_exact(&mut client, &mut got[at..at + n]).unwrap();
                at += n;
                if at >= want / 2 && !paused {
                    paused = true;
                    std::thread::sleep(Duration::from_millis(600));
                }
            }
            got
        });
        let calls = send_file_range(&server, range.fd().unwrap(), range)
            .unwrap()
            .expect("a file on a real file system can be sent from");
        let got = reader.join().unwrap();
        assert!(got == expected, "the bytes sent differ from the range");
        println!("{} bytes sent in {calls} sendfile calls", expected.len());
        assert!(
            calls > 1,
            "the range must not fit the socket buffers at once"
        );
    }

    fn fetch(offset: u64) -> Message {
        Message::FetchRequest {
            role: super::super::FetchRole::Consumer,
            node_id: String::new(),
            topic: "t".into(),
            partition: 0,
            offset,
            last_epoch: 0,
            leader_epoch: 0,
            max_bytes: 1024,
            max_wait_ms: 0,
            durable_end: 0,
            topic_id: [0; 16],
        }
    }

    #[test]
    fn requests_are_answered_and_bad_frames_close_only_their_connection() {
        let server =
            Server::start("127.0.0.1:0", Arc::new(Test), ServerOptions::default()).unwrap();
        let timeout = Duration::from_secs(10);
        let mut a = Client::connect(server.addr(), timeout).unwrap();
        let mut b = Client::connect(server.addr(), timeout).unwrap();
        for epoch in 0..50 {
            assert_eq!(
                a.call(&Message::PromoteRequest { min_epoch: epoch })
                    .unwrap(),
                Message::PromoteResponse {
                    error: ErrorCode::None,
                    epoch: epoch + 1
                }
            );
        }
        match b.call(&fetch(7)).unwrap() {
            Message::FetchResponse {
                batches,
                high_watermark,
                ..
            } => {
                assert_eq!(&batches[..], b"abcdefg");
                assert_eq!(high_watermark, 7);
            }
            other => panic!("{other:?}"),
        }
        // Garbage on a third connection: it gets an error answer and is closed; a and b go on.
        let mut c = TcpStream::connect(server.addr()).unwrap();
        c.set_read_timeout(Some(timeout)).unwrap();
        c.write_all(&[0xff; 64]).unwrap();
        let mut r = BufReader::new(c);
        assert!(matches!(
            read_frame(&mut r),
            Ok(Some((
                0,
                Message::ErrorResponse {
                    error: ErrorCode::InvalidRequest,
                    ..
                }
            )))
        ));
        assert!(matches!(read_frame(&mut r), Ok(None) | Err(_)));
        assert!(a.call(&Message::PromoteRequest { min_epoch: 1 }).is_ok());
        // A handler error closes that connection only.
        assert!(b.call(&Message::StatusRequest).is_err());
        assert!(a.call(&Message::PromoteRequest { min_epoch: 2 }).is_ok());
        server.stop();
        assert!(a.call(&Message::PromoteRequest { min_epoch: 3 }).is_err());
    }
}

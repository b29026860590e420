//! Snapshots streamed from a serving node, and the bootstrap of a new follower or mirror from
//! one (docs/DR.md, "Snapshots from a node" and "Bootstrap").
//!
//! The node's side ([`serve`]): every log is cut at its high watermark (the consumer offsets
//! log first, as offline), reading atomics only; then every file the snapshot takes is opened
//! (sealed segments, their indexes, the active segment cut at the batch boundary of the point)
//! and its settings and epoch history read, all before a byte is sent. The open descriptors
//! keep the sealed segments readable even if retention deletes them meanwhile; a segment
//! deleted between the listing and the open makes the plan start over (a few times). Nothing
//! takes a lock an append needs. The files are then sent in chunks (`SnapshotChunk`), each
//! file's CRC-32C computed while it is read, and the `MANIFEST` last (`SnapshotEnd`).
//!
//! The receiving side ([`create_from_node`], [`bootstrap`]) writes the chunks into a temporary
//! directory, computing each file's length and CRC-32C, compares them with the `MANIFEST`
//! that ends the stream, fsyncs, and renames the directory into place.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Cut, EPOCHS_FILE, GENERATION_FILE, META_FILE, Pending, REGISTRY_FILE, RestoreReport, TempDir,
    Writer, check_restored, cut_position_in, epochs_cut, logs_of, meta_start, no_segment,
    segments_taken, sync_dir, temp_sibling, write_synced,
};
use crate::error::{Error, IoContext, Result};
use crate::format::{
    FileCopy, MANIFEST_NAME, Manifest, ManifestFile, ManifestPartition, SegmentFile,
    check_manifest_path, segment_file_name,
};
use crate::replication::{ErrorCode, Message, WireError, read_frame, write_frame};
use crate::store::Store;

/// The chunk size a receiver asks for.
const CHUNK_BYTES: u32 = 4 << 20;
/// The bounds a node clamps a requested chunk size to.
const MIN_CHUNK: u32 = 64 << 10;
const MAX_CHUNK: u32 = 16 << 20;
/// How often the node starts its plan over when retention removed a segment meanwhile.
const PLAN_ATTEMPTS: usize = 10;
/// How long a receiver keeps trying the nodes (a leader change under way, a node restarting).
const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long a receiver waits for the connection and for each frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`create_from_node`] did.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use stratalog::replication::node::{Node, NodeOptions};
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig, snapshot};
///
/// let tmp = tempfile::tempdir()?;
/// let store = Arc::new(Store::open(tmp.path().join("s"), StoreOptions::default())?);
/// store.create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.partition("t", 0)?.append_records(&["a"])?.receipt.wait()?;
/// let node = Node::start(store.clone(), NodeOptions::default())?;
/// let report = snapshot::create_from_node(&[node.addr().to_string()], &tmp.path().join("snap"))?;
/// assert_eq!(report.node, node.addr().to_string());
/// assert!(report.manifest.partitions.iter().any(|p| p.dir == "t/0" && p.end_offset == 1));
/// snapshot::verify(&tmp.path().join("snap"))?;
/// node.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct NodeSnapshotReport {
    /// The snapshot directory.
    pub dir: PathBuf,
    /// The node that served it (the leader).
    pub node: String,
    /// Its `MANIFEST`.
    pub manifest: Manifest,
    /// Bytes received (every file's).
    pub bytes: u64,
    /// Time taken in all.
    pub duration: Duration,
}

/// What [`bootstrap`] did.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use stratalog::replication::node::{Node, NodeOptions};
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig, snapshot};
///
/// let tmp = tempfile::tempdir()?;
/// let store = Arc::new(Store::open(tmp.path().join("leader"), StoreOptions::default())?);
/// store.create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.partition("t", 0)?.append_records(&["a", "b"])?.receipt.wait()?;
/// let leader = Node::start(store.clone(), NodeOptions::default())?;
/// let dir = tmp.path().join("new-follower");
/// let report = snapshot::bootstrap(&dir, &[leader.addr().to_string()])?.expect("empty: bootstrapped");
/// assert!(report.restore.bytes > 0);
/// // A store that holds something is left alone.
/// assert!(snapshot::bootstrap(&dir, &[leader.addr().to_string()])?.is_none());
/// let restored = Store::open(&dir, StoreOptions::default())?;
/// assert_eq!(restored.partition("t", 0)?.end_offset(), 2);
/// leader.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct BootstrapReport {
    /// The node that served the snapshot.
    pub node: String,
    /// The restore into the store's directory (its `manifest` is the snapshot's).
    pub restore: RestoreReport,
}

/// One file of a served snapshot, opened (or read) when the plan was made.
enum Source {
    Bytes(Vec<u8>),
    File { file: File, path: PathBuf, len: u64 },
}

struct Planned {
    rel: String,
    how: FileCopy,
    source: Source,
}

struct Plan {
    partitions: Vec<ManifestPartition>,
    files: Vec<Planned>,
    cut_duration: Duration,
}

/// The node's side of a `SnapshotRequest`: cuts `store` at every log's high watermark and
/// sends the snapshot through `send` (chunks, then `SnapshotEnd`). A failure to cut or read
/// the store is sent as a `SnapshotEnd` with an error; only a failure to send is returned.
pub(crate) fn serve(
    store: &Store,
    chunk_bytes: u32,
    send: &mut dyn FnMut(&Message) -> std::result::Result<(), WireError>,
) -> std::result::Result<(), WireError> {
    let started = Instant::now();
    let chunk = chunk_bytes.clamp(MIN_CHUNK, MAX_CHUNK) as usize;
    let fail = |send: &mut dyn FnMut(&Message) -> std::result::Result<(), WireError>, e: Error| {
        tracing::warn!(error = %e, "a streamed snapshot failed");
        send(&Message::SnapshotEnd {
            error: ErrorCode::StorageError,
            message: shorten(&e.to_string()),
            manifest: Bytes::new(),
        })
    };
    let plan = match plan(store) {
        Ok(plan) => plan,
        Err(e) => return fail(send, e),
    };
    let mut files = Vec::with_capacity(plan.files.len());
    let mut bytes = 0u64;
    for f in plan.files {
        let (len, crc) = match f.source {
            Source::Bytes(b) => {
                send(&Message::SnapshotChunk {
                    path: f.rel.clone(),
                    offset: 0,
                    data: Bytes::copy_from_slice(&b),
                })?;
                (b.len() as u64, crc32c::crc32c(&b))
            }
            Source::File { file, path, len } => {
                let mut crc = 0u32;
                let mut at = 0u64;
                loop {
                    let n = (len - at).min(chunk as u64) as usize;
                    let mut buf = vec![0u8; n];
                    if let Err(e) = file.read_exact_at(&mut buf, at) {
                        return fail(
                            send,
                            Error::io("read (the file shrank: take the snapshot again)", path, e),
                        );
                    }
                    crc = crc32c::crc32c_append(crc, &buf);
                    send(&Message::SnapshotChunk {
                        path: f.rel.clone(),
                        offset: at,
                        data: Bytes::from(buf),
                    })?;
                    at += n as u64;
                    if at >= len {
                        break;
                    }
                }
                (len, crc)
            }
        };
        bytes += len;
        files.push(ManifestFile {
            path: f.rel,
            len,
            crc32c: crc,
            how: f.how,
        });
    }
    let manifest = Manifest {
        snapshot_id: super::snapshot_id(),
        created_ms: crate::log::now_ms(),
        partitions: plan.partitions,
        files,
    };
    send(&Message::SnapshotEnd {
        error: ErrorCode::None,
        message: String::new(),
        manifest: Bytes::from(manifest.encode()),
    })?;
    tracing::info!(
        files = manifest.files.len(),
        bytes,
        cut_us = plan.cut_duration.as_micros() as u64,
        ms = started.elapsed().as_millis() as u64,
        "served a snapshot"
    );
    Ok(())
}

/// At most 1,000 bytes of `s` (a wire string is at most 4,096).
fn shorten(s: &str) -> String {
    let mut end = s.len().min(1000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The cut and every file, opened: starts over when retention removed a segment between the
/// listing and the open.
fn plan(store: &Store) -> Result<Plan> {
    let mut last = None;
    for _ in 0..PLAN_ATTEMPTS {
        match try_plan(store)? {
            Ok(plan) => return Ok(plan),
            Err(raced) => last = Some(raced),
        }
    }
    Err(last.unwrap_or_else(|| Error::InvalidArgument("no attempt made".into())))
}

/// `Ok(Err(e))`: a segment went away meanwhile (retention): try again.
fn try_plan(store: &Store) -> Result<std::result::Result<Plan, Error>> {
    let root = store.dir().to_path_buf();
    let logs = logs_of(store)?;
    // The snapshot point: every high watermark, the consumer offsets log's first (a commit
    // names an offset at or below its partition's high watermark when it is made).
    let cut_started = Instant::now();
    let cuts: Vec<Cut> = logs
        .into_iter()
        .map(|(rel, log)| Cut {
            end: log.high_watermark().min(log.end_offset()),
            start: log.start_offset(),
            epoch: log.leader_epoch(),
            rel,
            log,
        })
        .collect();
    let cut_duration = cut_started.elapsed();
    let mut files = Vec::new();
    let read = |path: &Path| fs::read(path).ctx("read", path);
    files.push(Planned {
        rel: REGISTRY_FILE.into(),
        how: FileCopy::Copied,
        source: Source::Bytes(read(&root.join(REGISTRY_FILE))?),
    });
    if root.join(GENERATION_FILE).exists() {
        files.push(Planned {
            rel: GENERATION_FILE.into(),
            how: FileCopy::Copied,
            source: Source::Bytes(read(&root.join(GENERATION_FILE))?),
        });
    }
    let mut partitions = Vec::with_capacity(cuts.len());
    for cut in &cuts {
        let dir = cut.log.dir().to_path_buf();
        let meta_path = dir.join(META_FILE);
        let meta = read(&meta_path)?;
        // Retention raises the start in log.meta before it deletes segments: the snapshot
        // starts where its copy of the file says.
        let start = meta_start(&meta, &meta_path)?.max(cut.start).min(cut.end);
        let cut = &Cut {
            rel: cut.rel.clone(),
            log: cut.log.clone(),
            start,
            end: cut.end,
            epoch: cut.epoch,
        };
        files.push(Planned {
            rel: format!("{}/{META_FILE}", cut.rel),
            how: FileCopy::Copied,
            source: Source::Bytes(meta),
        });
        if let Some(epochs) = epochs_cut(&dir, cut.end)? {
            files.push(Planned {
                rel: format!("{}/{EPOCHS_FILE}", cut.rel),
                how: FileCopy::Written,
                source: Source::Bytes(epochs),
            });
        }
        let taken = segments_taken(&dir, cut)?;
        let Some((&last, sealed)) = taken.split_last() else {
            return Err(no_segment(&dir, cut.end));
        };
        if taken[0] > cut.start {
            // Retention removed the segment holding the start after it was read.
            return Ok(Err(Error::InvalidArgument(format!(
                "retention removed segments of {} while the snapshot was planned, {} times in a row",
                dir.display(),
                PLAN_ATTEMPTS
            ))));
        }
        for &base in sealed {
            for kind in SegmentFile::ALL {
                let name = segment_file_name(base, kind);
                let path = dir.join(&name);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    // An index is rebuilt by the restored log when it is read.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound && kind != SegmentFile::Log =>
                    {
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Err(Error::io(
                            "open (retention removed it while the snapshot was planned, every attempt)",
                            &path,
                            e,
                        )));
                    }
                    Err(e) => return Err(Error::io("open", &path, e)),
                };
                let len = file.metadata().ctx("stat", &path)?.len();
                files.push(Planned {
                    rel: format!("{}/{name}", cut.rel),
                    how: FileCopy::Copied,
                    source: Source::File { file, path, len },
                });
            }
        }
        let name = segment_file_name(last, SegmentFile::Log);
        let path = dir.join(&name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err(Error::io(
                    "open (removed while the snapshot was planned, every attempt)",
                    &path,
                    e,
                )));
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let len = cut_position_in(&file, &path, last, cut.end)?;
        files.push(Planned {
            rel: format!("{}/{name}", cut.rel),
            how: FileCopy::Cut,
            source: Source::File { file, path, len },
        });
        partitions.push(ManifestPartition {
            dir: cut.rel.clone(),
            start_offset: cut.start,
            end_offset: cut.end,
            leader_epoch: cut.epoch,
        });
    }
    Ok(Ok(Plan {
        partitions,
        files,
        cut_duration,
    }))
}

/// Takes a snapshot of the store a node serves into the new directory `out`: the node at the
/// first of `nodes` that answers (a follower's `NotLeader` answer is followed to the leader)
/// cuts every log at its high watermark and streams the files. The result is a snapshot as
/// [`super::create`] writes one (same layout and `MANIFEST`; sealed segments are copied, not
/// linked), which [`super::verify`] and [`super::restore`] accept. `out` must not exist; on
/// any failure nothing is left there. Tries the nodes for up to 30 s.
pub fn create_from_node(nodes: &[String], out: &Path) -> Result<NodeSnapshotReport> {
    let started = Instant::now();
    if out.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already exists: a snapshot goes to a new directory; choose another name or remove it",
            out.display()
        )));
    }
    let (tmp, got) = receive_any(nodes, out, "snapshot", RETRY_FOR)?;
    write_synced(&tmp.path.join(MANIFEST_NAME), &got.manifest_bytes)?;
    sync_dir(&tmp.path)?;
    tmp.persist(out, "rename snapshot into place")?;
    Ok(NodeSnapshotReport {
        dir: out.to_path_buf(),
        node: got.node,
        manifest: got.manifest,
        bytes: got.bytes,
        duration: started.elapsed(),
    })
}

/// Bootstraps a new follower or mirror: if `dir` does not exist or is empty, takes a snapshot
/// from the leader among `nodes` (as [`create_from_node`]) straight into a temporary
/// directory next to `dir`, checks it (every file against the `MANIFEST`, then the logs'
/// offsets after opening it as a store) and renames it to `dir`; the node started on `dir`
/// then follows from the snapshot's end. Returns `None`, doing nothing, if `dir` holds
/// anything (a node with a store of its own catches up by fetching, see docs/DR.md).
pub fn bootstrap(dir: &Path, nodes: &[String]) -> Result<Option<BootstrapReport>> {
    bootstrap_within(dir, nodes, RETRY_FOR)
}

/// What a node started on `dir` with `options` does first (`stratalog serve --leader`,
/// `stratalog mirror`): a follower, or a mirror of every topic, whose directory is missing or
/// empty is bootstrapped from a snapshot of its leader ([`bootstrap`]), asking each of
/// `leader` and `peers` once (and the leader they name). Returns `None` when it does not apply
/// (a leader, a mirror with a topic pattern, a directory that holds a store). When no node
/// serves a snapshot, the error says so: the caller may start the node anyway, and its
/// fetchers copy the leader's logs from their start as before.
pub fn bootstrap_node(
    dir: &Path,
    options: &crate::replication::node::NodeOptions,
) -> Result<Option<BootstrapReport>> {
    let Some(leader) = &options.leader else {
        return Ok(None);
    };
    if options.mirror && options.topics.is_some() {
        // The registry would name every topic of the source; such a mirror fetches its
        // matching topics from their start instead.
        return Ok(None);
    }
    let mut nodes = vec![leader.clone()];
    nodes.extend(options.peers.iter().filter(|p| *p != leader).cloned());
    bootstrap_within(dir, &nodes, Duration::ZERO)
}

fn bootstrap_within(
    dir: &Path,
    nodes: &[String],
    retry_for: Duration,
) -> Result<Option<BootstrapReport>> {
    let started = Instant::now();
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Ok(None);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("list", dir, e)),
    }
    let (tmp, got) = receive_any(nodes, dir, "bootstrap", retry_for)?;
    sync_dir(&tmp.path)?;
    let copy_duration = started.elapsed();
    check_restored(&tmp.path, &tmp.path, &got.manifest)?;
    tmp.persist(dir, "rename the bootstrapped store into place")?;
    Ok(Some(BootstrapReport {
        node: got.node,
        restore: RestoreReport {
            dir: dir.to_path_buf(),
            manifest: got.manifest,
            bytes: got.bytes,
            copy_duration,
            duration: started.elapsed(),
        },
    }))
}

/// What one streamed snapshot brought.
struct Received {
    node: String,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    bytes: u64,
}

/// Why one attempt failed.
enum Attempt {
    /// The node does not lead; it named this leader (empty if it knows none).
    NotLeader(String),
    /// The connection failed, or the node refused: another node, or a retry, may do.
    Failed(Error),
    /// The node sent a snapshot that does not check (its `MANIFEST` invalid or not matching
    /// the files), or said it could not take one: that is the answer.
    Final(Error),
}

/// Receives a snapshot from the leader among `nodes` into a temporary directory next to
/// `target`, trying the nodes (and the leaders they name) in turn, again and again for up to
/// `retry_for` (zero: one pass).
fn receive_any(
    nodes: &[String],
    target: &Path,
    what: &str,
    retry_for: Duration,
) -> Result<(TempDir, Received)> {
    if nodes.is_empty() {
        return Err(Error::InvalidArgument(
            "no node address given: name the leader (or any node of its cluster)".into(),
        ));
    }
    let deadline = Instant::now() + retry_for;
    // A node named as leader is followed at most this many times (two nodes naming each
    // other during a leader change must not loop).
    let mut hops = 8;
    let mut last: Option<Error> = None;
    let mut queue: std::collections::VecDeque<String> = nodes.iter().cloned().collect();
    loop {
        let Some(addr) = queue.pop_front() else {
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            queue.extend(nodes.iter().cloned());
            continue;
        };
        let tmp = TempDir {
            path: temp_sibling(target, what)?,
            armed: true,
        };
        fs::create_dir(&tmp.path).ctx("create directory", &tmp.path)?;
        match receive_from(&addr, &tmp.path) {
            Ok(got) => return Ok((tmp, got)),
            Err(Attempt::NotLeader(leader)) => {
                tracing::info!(node = addr, leader, "not the leader; following it");
                if !leader.is_empty() && leader != addr && hops > 0 {
                    hops -= 1;
                    queue.push_front(leader);
                }
                last = Some(Error::SnapshotFromNode {
                    node: addr,
                    reason: "it does not lead, and names no leader".into(),
                    source: None,
                });
            }
            Err(Attempt::Failed(e)) => {
                tracing::info!(node = addr, error = %e, "snapshot attempt failed");
                last = Some(e);
            }
            Err(Attempt::Final(e)) => return Err(e),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last.unwrap_or_else(|| Error::SnapshotFromNode {
        node: nodes.join(","),
        reason: "no node answered".into(),
        source: None,
    }))
}

/// One streamed snapshot from `addr` into the existing empty directory `dir`.
fn receive_from(addr: &str, dir: &Path) -> std::result::Result<Received, Attempt> {
    let error = |reason: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
        Error::SnapshotFromNode {
            node: addr.to_string(),
            reason,
            source,
        }
    };
    let failed = |reason, source| Attempt::Failed(error(reason, source));
    let last_word = |reason, source| Attempt::Final(error(reason, source));
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| failed("the address does not resolve".into(), None))?;
    let net = |e: std::io::Error| failed("the connection failed".into(), Some(Box::new(e)));
    let mut stream = TcpStream::connect_timeout(&sock, FRAME_TIMEOUT).map_err(net)?;
    stream.set_nodelay(true).map_err(net)?;
    stream.set_read_timeout(Some(FRAME_TIMEOUT)).map_err(net)?;
    stream.set_write_timeout(Some(FRAME_TIMEOUT)).map_err(net)?;
    const CORRELATION: u32 = 1;
    write_frame(
        &mut stream,
        CORRELATION,
        &Message::SnapshotRequest {
            chunk_bytes: CHUNK_BYTES,
        },
    )
    .map_err(|e| failed("sending the request failed".into(), Some(Box::new(e))))?;
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut w = Writer {
        out: dir.to_path_buf(),
        files: Vec::new(),
        dirs: Default::default(),
        linked: (0, 0),
        copied: (0, 0),
        pending: Pending::default(),
    };
    let local = |e: Error| Attempt::Failed(e);
    // The file being received: its path, the open file, bytes and CRC so far.
    let mut current: Option<(String, PathBuf, File, u64, u32)> = None;
    let mut seen = HashSet::new();
    let mut got: Vec<(String, u64, u32)> = Vec::new();
    let mut bytes = 0u64;
    let finish = |current: &mut Option<(String, PathBuf, File, u64, u32)>,
                  w: &mut Writer,
                  got: &mut Vec<(String, u64, u32)>|
     -> Result<()> {
        if let Some((rel, path, file, len, crc)) = current.take() {
            w.pending.push(path, file)?;
            got.push((rel, len, crc));
        }
        Ok(())
    };
    loop {
        let (correlation, message) = match read_frame(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(failed(
                    "the node closed the connection mid-snapshot".into(),
                    None,
                ));
            }
            Err(e) => return Err(failed("receiving failed".into(), Some(Box::new(e)))),
        };
        match message {
            Message::ErrorResponse {
                error: ErrorCode::NotLeader,
                leader,
                ..
            } => return Err(Attempt::NotLeader(leader)),
            Message::ErrorResponse { error, message, .. } => {
                return Err(failed(
                    format!("the node refused: {}: {message}", error.name()),
                    None,
                ));
            }
            _ if correlation != CORRELATION => {
                return Err(failed(
                    format!("an answer to correlation {correlation}, expected {CORRELATION}"),
                    None,
                ));
            }
            Message::SnapshotChunk { path, offset, data } => {
                if current.as_ref().is_none_or(|c| c.0 != path) {
                    finish(&mut current, &mut w, &mut got).map_err(local)?;
                    check_manifest_path("snapshot file", &path).map_err(|e| {
                        failed(format!("a bad file name {path:?}"), Some(Box::new(e)))
                    })?;
                    if path == MANIFEST_NAME || !seen.insert(path.clone()) {
                        return Err(failed(format!("{path} sent twice"), None));
                    }
                    let dst = w.target(&path).map_err(local)?;
                    let file = File::create_new(&dst).ctx("create", &dst).map_err(local)?;
                    current = Some((path, dst, file, 0, 0));
                }
                let c = current.as_mut().expect("set above");
                if offset != c.3 {
                    return Err(failed(
                        format!("{}: a chunk at {offset}, expected {}", c.0, c.3),
                        None,
                    ));
                }
                c.2.write_all(&data).ctx("write", &c.1).map_err(local)?;
                c.4 = crc32c::crc32c_append(c.4, &data);
                c.3 += data.len() as u64;
                bytes += data.len() as u64;
            }
            Message::SnapshotEnd {
                error,
                message,
                manifest,
            } => {
                finish(&mut current, &mut w, &mut got).map_err(local)?;
                if error != ErrorCode::None {
                    return Err(last_word(
                        format!("the node could not take it: {}: {message}", error.name()),
                        None,
                    ));
                }
                let decoded = Manifest::decode(&manifest).map_err(|e| {
                    last_word("the MANIFEST it sent is invalid".into(), Some(Box::new(e)))
                })?;
                check_received(&decoded, &got).map_err(|r| last_word(r, None))?;
                for p in &decoded.partitions {
                    w.ensure_dir(&p.dir).map_err(local)?;
                }
                w.pending.sync().map_err(local)?;
                for d in w.dirs.iter().rev() {
                    sync_dir(&dir.join(d)).map_err(local)?;
                }
                return Ok(Received {
                    node: addr.to_string(),
                    manifest: decoded,
                    manifest_bytes: manifest.to_vec(),
                    bytes,
                });
            }
            other => {
                return Err(failed(
                    format!("an unexpected answer of kind {}", other.kind()),
                    None,
                ));
            }
        }
    }
}

/// The files received must be exactly the `MANIFEST`'s, in its order, with its lengths and
/// CRC-32Cs.
fn check_received(
    manifest: &Manifest,
    got: &[(String, u64, u32)],
) -> std::result::Result<(), String> {
    for (i, f) in manifest.files.iter().enumerate() {
        let Some((path, len, crc)) = got.get(i) else {
            return Err(format!("{}: listed in the MANIFEST, never sent", f.path));
        };
        if *path != f.path {
            return Err(format!("{path} sent where the MANIFEST lists {}", f.path));
        }
        if (*len, *crc) != (f.len, f.crc32c) {
            return Err(format!(
                "{path}: {len} bytes with CRC-32C {crc:#010x} received, the MANIFEST says {} bytes with {:#010x}",
                f.len, f.crc32c
            ));
        }
    }
    if let Some((path, ..)) = got.get(manifest.files.len()) {
        return Err(format!("{path}: sent, not listed in the MANIFEST"));
    }
    Ok(())
}

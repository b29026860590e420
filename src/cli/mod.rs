//! The commands of the `stratalog` binary. Part of the binary only, not of the library.

pub mod bench;
pub mod consume;
pub mod demo;
pub mod dump;
pub mod groups;
pub mod node;
pub mod produce;
pub mod recover;
pub mod remote;
pub mod snapshot;
pub mod topics;
pub mod verify;

use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use clap::{Args, ValueEnum};
use stratalog::store::PartitionerKind;
use stratalog::{Compression, FsyncPolicy};

/// Any error a command reports; printed as `error: <message>: <source>: ...`.
pub type CliError = Box<dyn Error + Send + Sync>;

/// An error with a sentence saying what was being done.
#[derive(Debug)]
pub struct Context {
    what: String,
    source: CliError,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// Wraps an error with what was being done: `.map_err(context("opening the log"))`.
pub fn context<E: Into<CliError>>(what: impl Into<String>) -> impl FnOnce(E) -> CliError {
    let what = what.into();
    move |e| {
        Box::new(Context {
            what,
            source: e.into(),
        })
    }
}

/// The error's message followed by its `source()` chain. A source whose text its parent's
/// message already holds (the library's I/O errors quote their `io::Error`) is not repeated.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut current = e.source();
    while let Some(source) = current {
        let text = source.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        current = source.source();
    }
    out
}

/// Like [`context`], but builds the sentence only if there is an error (for hot paths).
pub fn context_with<E: Into<CliError>>(
    what: impl FnOnce() -> String,
) -> impl FnOnce(E) -> CliError {
    move |e| {
        Box::new(Context {
            what: what(),
            source: e.into(),
        })
    }
}

/// `println!` that returns the write's error (`?`) instead of panicking on a closed pipe
/// (`stratalog topics list | head`); `main` ends quietly on that error.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?;
    }};
}
pub(crate) use outln;

/// True if the error, or one of its sources, is a write to a closed pipe (`... | head`).
pub fn is_broken_pipe(e: &(dyn Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// `DIR/NAME`, refusing a NAME that is not a plain directory name.
pub fn log_dir(dir: &Path, name: &str) -> Result<PathBuf, CliError> {
    // `__consumer_offsets` and the like are the store's own logs: written through `--log` they
    // would break every store command.
    stratalog::store::check_log_name(name)?;
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(dir.join(name)),
        _ => Err(format!(
            "invalid log name {name:?}: use a plain directory name (no '/', '.' or '..')"
        )
        .into()),
    }
}

/// Which log a command works on: a plain log `DIR/NAME`, or a partition `TOPIC/PARTITION` of
/// the store in `DIR`.
#[derive(Debug, Clone)]
pub enum Target {
    /// A log directory of its own.
    Log(PathBuf),
    /// A partition of a topic of the store in `dir`.
    Partition {
        /// The store's directory.
        dir: PathBuf,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
}

impl Target {
    /// `NAME` (a plain directory name) or `TOPIC/PARTITION`.
    pub fn parse(dir: &Path, name: &str) -> Result<Target, CliError> {
        if let Some((topic, partition)) = name.split_once('/') {
            stratalog::store::check_topic_name(topic)?;
            let partition = partition.parse::<u32>().map_err(|_| {
                format!("invalid log name {name:?}: use NAME or TOPIC/PARTITION (a number)")
            })?;
            return Ok(Target::Partition {
                dir: dir.to_path_buf(),
                topic: topic.to_string(),
                partition,
            });
        }
        Ok(Target::Log(log_dir(dir, name)?))
    }

    /// The directory holding the log's files.
    pub fn log_dir(&self) -> PathBuf {
        match self {
            Target::Log(dir) => dir.clone(),
            Target::Partition {
                dir,
                topic,
                partition,
            } => stratalog::store::partition_dir(dir, topic, *partition),
        }
    }
}

/// Where the log is (`produce` and `consume`).
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Directory holding the logs (or the store). Required unless the command talks to a node
    /// (`consume --node`).
    #[arg(short = 'd', long, value_name = "DIR", env = "STRATALOG_DIR")]
    pub dir: Option<PathBuf>,
    /// Name of the log: its files are in DIR/NAME. `TOPIC/PARTITION` names a partition of a
    /// topic of the store in DIR (see `stratalog topics`).
    #[arg(
        short = 'l',
        long = "log",
        value_name = "NAME",
        default_value = "default"
    )]
    pub name: String,
}

impl LogArgs {
    /// `--dir`, which the command needs.
    pub fn dir(&self) -> Result<PathBuf, CliError> {
        self.dir.clone().ok_or_else(|| {
            "--dir DIR (or the STRATALOG_DIR environment variable) is required".into()
        })
    }
}

/// The `--compression` of batches.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    /// Stored as is.
    None,
    /// One LZ4 block per batch.
    Lz4,
}

impl CompressionArg {
    /// The library's value.
    pub fn into_compression(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
        }
    }
}

/// Parses `--fsync`: `always`, `never`, `<N>ms` or `<N>b`.
pub fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

/// Parses `--partitioner` (see `topics create --help`).
pub fn parse_partitioner(s: &str) -> Result<PartitionerKind, String> {
    s.parse()
}

/// Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it starts from now
/// on, and starts a thread that waits for them and calls `on_signal` with the first one.
///
/// Call it from the main thread before any other thread is started: a thread started earlier
/// keeps the default action (the process dies at once).
pub fn on_interrupt(on_signal: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    // SAFETY: `sigset_t` is plain data for which all zeros is a valid value, and
    // `sigemptyset`/`sigaddset` only write into the set we own.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    };
    // SAFETY: `set` is an initialised signal set; a null old set is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut signal = 0;
                // SAFETY: `set` is an initialised signal set and `signal` a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
                    on_signal(signal);
                    return;
                }
            }
        })?;
    Ok(())
}

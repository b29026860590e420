#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_code)]

//! ## The public surface
//!
//! What an embedder uses is re-exported here, at the root ([`Log`], [`Store`], [`Batch`], ...),
//! plus four modules: [`format`](mod@format) (the documented byte format: batches, records, segment file
//! names), [`storage`] (the file system behind a log, and the I/O engine), [`store`] (topics,
//! partitions, consumer groups, partitioners) and [`replication`] (the node protocol).
//! Internals stay private. The feature `test-support` exposes what this crate's own tests and
//! fuzzers need ([`storage`]'s simulated storage with power losses and injected faults, the
//! log's internals, the on-disk structs of every file); an embedder may enable it in its
//! dev-dependencies to run its own power-loss tests.

#[doc(hidden)]
pub mod crash;
mod error;
pub mod format;
pub mod limits;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod log;
#[cfg(not(feature = "test-support"))]
mod log;
pub mod replication;
pub mod snapshot;
pub mod storage;
pub mod store;

pub use error::{Error, ReplicaGap, Result};
pub use format::{Batch, BatchBuilder, Compression, FormatError, Record, RecordRef, RecordView};
pub use log::{
    Appended, EpochHistory, FileRange, FsyncPolicy, GroupCommit, Log, LogConfig, LogOptions,
    LossKind, MAX_QUARANTINE_BYTES, MAX_QUARANTINE_FILES, Preallocate, Problem, Quarantined,
    Receipt, RecoveryReport, TornTail, VerifyReport, now_ms, verify_dir,
};
pub use store::{
    Committed, GroupOffset, Partitioner, PartitionerKind, PartitionerVersion, Store, StoreOptions,
    TopicConfig, TopicInfo,
};

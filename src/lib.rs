#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[doc(hidden)]
pub mod crash;
pub mod error;
pub mod format;
pub mod limits;
pub mod log;
pub mod storage;
pub mod store;

pub use error::{Error, Result};
pub use format::{Batch, BatchBuilder, Compression, Record, RecordView};
pub use log::{
    Appended, FsyncPolicy, GroupCommit, Log, LogConfig, LogOptions, LossKind, MAX_QUARANTINE_BYTES,
    MAX_QUARANTINE_FILES, PREALLOCATE_CHUNK, Preallocate, QUARANTINE_HEADER_LEN, Quarantined,
    Receipt, RecoveryReport, VerifyReport, now_ms, verify_dir,
};
pub use store::{
    Committed, GroupOffset, Partitioner, PartitionerKind, PartitionerVersion, Store, StoreOptions,
    TopicConfig, TopicInfo,
};

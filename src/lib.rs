#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod error;
pub mod format;
pub mod log;
pub mod storage;
pub mod store;

pub use error::{Error, Result};
pub use format::{Batch, BatchBuilder, Compression, Record, RecordView};
pub use log::{
    Appended, FsyncPolicy, GroupCommit, Log, LogConfig, LogOptions, Receipt, RecoveryReport,
    VerifyReport, now_ms, verify_dir,
};
pub use store::{
    Committed, GroupOffset, Partitioner, PartitionerKind, PartitionerVersion, Store, StoreOptions,
    TopicConfig, TopicInfo,
};

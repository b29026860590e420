//! `stratalog topics create|list|describe|alter|delete`: the topics of a store.

use std::path::Path;

use clap::Args;
use stratalog::storage::FsStorage;
use stratalog::store::{PartitionerKind, Store, StoreOptions, TopicConfig, TopicInfo};
use stratalog::{FsyncPolicy, LogConfig};

use super::{CliError, CompressionArg, context, outln, parse_fsync};

/// Settings of a topic; left out, a new topic gets the default and `alter` keeps the current.
///
/// The `--fsync`, `--segment-bytes`, ... flags of `topics create` and `topics alter`, parsed by
/// clap straight into this struct; `None` keeps the current (or default) value.
#[derive(Debug, Default, Args)]
pub struct Settings {
    /// When appends are durable: `always`, `never`, `<N>ms` or `<N>b` (default always).
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    pub fsync: Option<FsyncPolicy>,
    /// Segment size at which a partition rolls to a new segment (default 1 GiB).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64)
          .range(LogConfig::MIN_SEGMENT_BYTES..=LogConfig::MAX_SEGMENT_BYTES))]
    pub segment_bytes: Option<u64>,
    /// Roll a partition's active segment once its first append is this old (0: never).
    #[arg(long, value_name = "MS")]
    pub segment_ms: Option<u64>,
    /// Delete a partition's oldest segments while it is larger than this (0: no limit).
    #[arg(long, value_name = "BYTES")]
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this (0: no limit).
    #[arg(long, value_name = "MS")]
    pub retention_ms: Option<u64>,
    /// Compression of batches appended by `produce`.
    #[arg(long, value_enum)]
    pub compression: Option<CompressionArg>,
}

impl Settings {
    fn apply(&self, mut c: TopicConfig) -> TopicConfig {
        let none_if_zero = |v: u64| (v != 0).then_some(v);
        if let Some(f) = self.fsync {
            c.fsync = f;
        }
        if let Some(b) = self.segment_bytes {
            c.log.segment_bytes = b;
        }
        if let Some(ms) = self.segment_ms {
            c.log.segment_ms = none_if_zero(ms);
        }
        if let Some(b) = self.retention_bytes {
            c.log.retention_bytes = none_if_zero(b);
        }
        if let Some(ms) = self.retention_ms {
            c.log.retention_ms = none_if_zero(ms);
        }
        if let Some(comp) = self.compression {
            c.log.compression = comp.into_compression();
        }
        c
    }

    fn is_empty(&self) -> bool {
        self.fsync.is_none()
            && self.segment_bytes.is_none()
            && self.segment_ms.is_none()
            && self.retention_bytes.is_none()
            && self.retention_ms.is_none()
            && self.compression.is_none()
    }
}

/// Opens the store in `dir` for a short command (no background retention).
pub fn open_store(dir: &Path, create: bool) -> Result<Store, CliError> {
    Store::open(
        dir,
        StoreOptions {
            storage: FsStorage::shared(),
            create,
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .map_err(context(format!(
        "cannot open the store in {}",
        dir.display()
    )))
}

/// Opens the store in `dir` read-only: no lock is taken and nothing is written, so it works
/// beside a producer that holds the store, and on a read-only mount.
pub fn open_store_read_only(dir: &Path) -> Result<Store, CliError> {
    Store::open_read_only(dir, FsStorage::shared()).map_err(context(format!(
        "cannot open the store in {}",
        dir.display()
    )))
}

fn close(store: Store) -> Result<(), CliError> {
    store.close().map_err(context("closing the store failed"))
}

/// `topics create`.
pub fn create(
    dir: &Path,
    name: &str,
    partitions: u32,
    partitioner: PartitionerKind,
    settings: &Settings,
) -> Result<(), CliError> {
    let store = open_store(dir, true)?;
    let config = settings.apply(TopicConfig::default());
    let created = store
        .create_topic(name, partitions, config, partitioner)
        .map_err(context(format!("cannot create topic {name:?}")));
    close(store)?;
    let t = created?;
    outln!(
        "created topic {} with {} partitions",
        t.name,
        t.partitions()
    );
    Ok(())
}

/// `topics list`.
pub fn list(dir: &Path) -> Result<(), CliError> {
    let store = open_store_read_only(dir)?;
    let topics = store
        .topics()
        .map_err(context("cannot read the topic registry"))?;
    for t in topics {
        let v = t.current();
        outln!(
            "{} partitions={} partitioner={} version={}",
            t.name,
            v.partitions,
            v.kind,
            v.version
        );
    }
    close(store)
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn fsync_name(p: FsyncPolicy) -> String {
    match p {
        FsyncPolicy::Always => "always".into(),
        FsyncPolicy::Never => "never".into(),
        FsyncPolicy::Interval(d) => format!("{}ms", d.as_millis()),
        FsyncPolicy::Bytes(n) => format!("{n}b"),
    }
}

fn print_settings(t: &TopicInfo) -> Result<(), CliError> {
    let c = &t.config.log;
    outln!("topic {}", t.name);
    outln!("  id {}", t.id);
    outln!("  partitions {}", t.partitions());
    outln!("  fsync {}", fsync_name(t.config.fsync));
    outln!("  segment_bytes {}", c.segment_bytes);
    outln!("  segment_ms {}", limit(c.segment_ms));
    outln!("  retention_bytes {}", limit(c.retention_bytes));
    outln!("  retention_ms {}", limit(c.retention_ms));
    outln!("  compression {}", c.compression.name());
    for v in &t.versions {
        let starts: Vec<String> = v.start_offsets.iter().map(u64::to_string).collect();
        outln!(
            "  version {} partitions={} partitioner={} created_ms={} start_offsets=[{}]",
            v.version,
            v.partitions,
            v.kind,
            v.created_ms,
            starts.join(",")
        );
    }
    Ok(())
}

/// `topics describe`: settings, partitioner versions, and each partition's offsets.
pub fn describe(dir: &Path, name: &str) -> Result<(), CliError> {
    let store = open_store_read_only(dir)?;
    let result = (|| -> Result<(), CliError> {
        let t = store
            .topic(name)
            .map_err(context(format!("cannot describe topic {name:?}")))?;
        print_settings(&t)?;
        for p in 0..t.partitions() {
            // A partition never produced to has no log yet: it holds nothing.
            let (start, end, epoch) = match store
                .try_partition(name, p)
                .map_err(context(format!("cannot open partition {name}/{p}")))?
            {
                Some(log) => (log.start_offset(), log.end_offset(), log.leader_epoch()),
                None => (0, 0, 0),
            };
            outln!("  partition {p} start={start} end={end} leader_epoch={epoch}");
        }
        Ok(())
    })();
    close(store)?;
    result
}

/// `topics alter`: change settings, add partitions, change the partitioner.
pub fn alter(
    dir: &Path,
    name: &str,
    partitions: Option<u32>,
    partitioner: Option<PartitionerKind>,
    settings: &Settings,
) -> Result<(), CliError> {
    let store = open_store(dir, false)?;
    let result = (|| -> Result<(), CliError> {
        let what = || format!("cannot alter topic {name:?}");
        let mut t = store.topic(name).map_err(context(what()))?;
        if !settings.is_empty() {
            t = store
                .set_topic_config(name, settings.apply(t.config))
                .map_err(context(what()))?;
        }
        if let Some(kind) = partitioner.filter(|k| *k != t.current().kind) {
            t = store.set_partitioner(name, kind).map_err(context(what()))?;
        }
        if let Some(n) = partitions.filter(|n| *n != t.partitions()) {
            t = store.add_partitions(name, n).map_err(context(what()))?;
        }
        print_settings(&t)?;
        Ok(())
    })();
    close(store)?;
    result
}

/// `topics delete`.
pub fn delete(dir: &Path, name: &str) -> Result<(), CliError> {
    let store = open_store(dir, false)?;
    let deleted = store
        .delete_topic(name)
        .map_err(context(format!("cannot delete topic {name:?}")));
    close(store)?;
    deleted?;
    outln!("deleted topic {name}");
    Ok(())
}

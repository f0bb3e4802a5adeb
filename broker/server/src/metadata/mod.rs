//! Topic metadata: what topics exist, their settings, and which shard owns
//! each partition. The on-disk record of it, and the routing table every
//! shard keeps a copy of.
//!
//! Layout of a data directory:
//! ```text
//! <data>/broker.json                 {"format_version": 1}
//! <data>/topics/<topic>/topic.json   a TopicMeta: settings + placement
//! <data>/topics/<topic>/<partition>/ the partition's log (segments)
//! <data>/topics/.trash-*/            a deleted topic on its way out
//! ```
//!
//! Invariants:
//! - `topic.json` is the commit point of a topic: it is written atomically
//!   (temp file, fdatasync, rename, directory fsync) before any partition of
//!   the topic is served, and a topic without it does not exist.
//! - Deletion renames the topic directory into `.trash-*` in one step (then
//!   fsyncs `topics/`), so a crash never leaves half a topic that a restart
//!   would resurrect with partitions missing; trash is removed at start.
//! - Placement is deterministic (`place`) and persisted: a restart with the
//!   same shard count keeps every partition on its shard.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use broker_log::config::{SEGMENT_BYTES_LIMIT, SEGMENT_BYTES_MIN};
use broker_protocol::{TopicSettings, BROKER_DEFAULT, NO_LIMIT};

/// Version of the data directory's layout and files. A broker refuses a
/// directory with another version.
pub const FORMAT_VERSION: u32 = 1;

/// File at the data directory's root that records the format version.
pub const FORMAT_FILE: &str = "broker.json";

/// Directory (under the data directory) holding one directory per topic.
pub const TOPICS_DIR: &str = "topics";

/// File (in a topic's directory) holding its [`TopicMeta`].
pub const TOPIC_FILE: &str = "topic.json";

/// Prefix of a deleted topic's directory until it is removed.
pub const TRASH_PREFIX: &str = ".trash-";

/// Longest topic name, as in Kafka.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// What went wrong with topic metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A name or setting a client asked for is not allowed.
    #[error("{0}")]
    Invalid(String),
    /// A file or directory of the data directory could not be used.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done ("create", "fsync", ...).
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The log's file I/O (glommio) failed; it names the file.
    #[error(transparent)]
    Log(broker_log::LogError),
    /// A file holds what this broker cannot use.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl MetadataError {
    fn io(what: &'static str, path: &Path, source: io::Error) -> MetadataError {
        MetadataError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The settings of a topic, broker defaults resolved: the cluster
/// metadata's type (a cluster member's topics come from the image), the
/// same fields and `topic.json` form a broker on its own keeps.
pub use broker_cluster::TopicConfig;

/// The settings a CreateTopic request asks for, with `defaults` for the
/// ones it leaves to the broker. Errors name the setting.
pub fn resolve_topic_config(
    asked: &TopicSettings,
    defaults: &TopicConfig,
) -> Result<TopicConfig, MetadataError> {
    let limit = |name: &str, v: i64, default: Option<u64>| -> Result<Option<u64>, MetadataError> {
        match v {
            BROKER_DEFAULT => Ok(default),
            NO_LIMIT => Ok(None),
            v if v >= 1 => Ok(Some(v as u64)),
            v => Err(MetadataError::Invalid(format!(
                "{name} = {v}: must be at least 1, -1 (broker default) or -2 (no limit)"
            ))),
        }
    };
    let segment_bytes = match asked.segment_bytes {
            BROKER_DEFAULT => defaults.segment_bytes,
            v if (SEGMENT_BYTES_MIN as i64..=SEGMENT_BYTES_LIMIT as i64).contains(&v) => v as u64,
            v => {
                return Err(MetadataError::Invalid(format!(
                    "segment_bytes = {v}: must be in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_LIMIT} or -1 (broker default)"
                )))
            }
        };
    Ok(TopicConfig {
        retention_ms: limit("retention_ms", asked.retention_ms, defaults.retention_ms)?,
        retention_bytes: limit(
            "retention_bytes",
            asked.retention_bytes,
            defaults.retention_bytes,
        )?,
        segment_bytes,
        log_append_time: defaults.log_append_time,
        replication_factor: defaults.replication_factor,
        min_insync_replicas: defaults.min_insync_replicas,
        unclean_leader_election: defaults.unclean_leader_election,
    })
}

/// A topic's settings as the wire protocol carries them.
pub fn wire_settings(config: &TopicConfig) -> TopicSettings {
    let limit = |v: Option<u64>| v.map_or(NO_LIMIT, |v| v.min(i64::MAX as u64) as i64);
    TopicSettings {
        retention_ms: limit(config.retention_ms),
        retention_bytes: limit(config.retention_bytes),
        segment_bytes: config.segment_bytes as i64,
    }
}

/// A topic as persisted in its `topic.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// The topic's name.
    pub name: String,
    /// The settings in effect.
    pub config: TopicConfig,
    /// The owning shard of each partition: `shards[p]` owns partition `p`
    /// (a shard of `brokers[p]` in a cluster).
    pub shards: Vec<u16>,
    /// In a cluster, the broker of each partition (`brokers[p]`); empty
    /// for a broker on its own, whose topics are all its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<u32>,
    /// In a cluster, the id of the request that created the topic: a topic
    /// deleted and created again under its name has another one, so the
    /// old one's files are never taken for the new one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<u128>,
    /// In a cluster, for a topic of more than one replica: each partition's
    /// replicas (`replicas[p]`, preference order), each a broker and its
    /// shard that opens the partition; empty for one replica, whose only
    /// copy is `brokers[p]`/`shards[p]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<ReplicaAt>>,
}

/// Where one replica of a partition lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAt {
    /// The broker.
    pub broker: u32,
    /// Its shard that owns the replica's log.
    pub shard: u16,
}

impl TopicMeta {
    /// A new topic with deterministic placement over `shard_count` shards.
    pub fn new(name: &str, partitions: u32, config: TopicConfig, shard_count: u16) -> TopicMeta {
        TopicMeta {
            name: name.to_owned(),
            config,
            shards: (0..partitions)
                .map(|p| place(name, p, shard_count))
                .collect(),
            brokers: Vec::new(),
            created_by: None,
            replicas: Vec::new(),
        }
    }

    /// The broker of `partition` in a cluster; None for a broker on its
    /// own (every partition is its own) or a partition the topic lacks.
    pub fn broker_of(&self, partition: u32) -> Option<u32> {
        self.brokers.get(partition as usize).copied()
    }

    /// Whether `partition` lives on shard `shard` of broker `broker`: its
    /// only copy, or (replicated) one of its replicas.
    pub fn lives_on(&self, partition: u32, broker: u32, shard: u16) -> bool {
        match self.replicas.get(partition as usize) {
            Some(replicas) if !replicas.is_empty() => replicas
                .iter()
                .any(|r| r.broker == broker && r.shard == shard),
            _ => {
                self.owner(partition) == Some(shard)
                    && self.broker_of(partition).is_none_or(|b| b == broker)
            }
        }
    }

    /// Whether `other` is this topic with only its replicas' placement
    /// changed (a reassignment: the same settings, creation and partition
    /// count, both replicated): partitions open and close one by one.
    pub fn same_but_replicas(&self, other: &TopicMeta) -> bool {
        !self.replicas.is_empty()
            && !other.replicas.is_empty()
            && self.replicas.len() == other.replicas.len()
            && self.config == other.config
            && self.created_by == other.created_by
            && self.name == other.name
    }

    /// Whether `other` is this topic with only its leaders moved: the same
    /// settings and replicas, so its partitions stay open where they are.
    pub fn same_but_routing(&self, other: &TopicMeta) -> bool {
        !self.replicas.is_empty()
            && self.replicas == other.replicas
            && self.config == other.config
            && self.created_by == other.created_by
            && self.name == other.name
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The shard owning `partition`, if the topic has it.
    pub fn owner(&self, partition: u32) -> Option<u16> {
        self.shards.get(partition as usize).copied()
    }
}

/// The shard that owns partition `partition` of `topic`: consecutive
/// partitions go round-robin over the shards, starting at a shard chosen by
/// the topic's name, so that many small topics do not all start on shard 0.
pub fn place(topic: &str, partition: u32, shard_count: u16) -> u16 {
    let n = u64::from(shard_count.max(1));
    ((u64::from(name_hash(topic)) + u64::from(partition)) % n) as u16
}

/// The shard that coordinates changes to `topic` (create, delete): all of
/// them go through this one shard, which serialises them.
pub fn controller(topic: &str, shard_count: u16) -> u16 {
    (u64::from(name_hash(topic)) % u64::from(shard_count.max(1))) as u16
}

/// FNV-1a over the name: stable across builds and platforms, since it
/// decides persisted placement.
pub fn name_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Checks a topic name: 1 to 249 bytes of `[a-zA-Z0-9._-]`, not starting
/// with a dot (names starting with a dot are the broker's own, like trash).
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    if name.is_empty() {
        return Err(MetadataError::Invalid(
            "a topic name must not be empty".into(),
        ));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(MetadataError::Invalid(format!(
            "topic name of {} bytes is longer than {MAX_TOPIC_NAME_LEN}",
            name.len()
        )));
    }
    if name.starts_with('.') {
        return Err(MetadataError::Invalid(format!(
            "topic name {name:?} must not start with '.'"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(MetadataError::Invalid(format!(
            "topic name {name:?} has {c:?}: only ASCII letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

/// Every topic, by name: each shard's copy of the routing table. Cheap to
/// clone (topics are shared).
#[derive(Debug, Clone, Default)]
pub struct TopicTable {
    topics: BTreeMap<String, Arc<TopicMeta>>,
}

impl TopicTable {
    /// The topic named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    /// Adds or replaces a topic.
    pub fn insert(&mut self, topic: Arc<TopicMeta>) {
        self.topics.insert(topic.name.clone(), topic);
    }

    /// Removes a topic.
    pub fn remove(&mut self, name: &str) -> Option<Arc<TopicMeta>> {
        self.topics.remove(name)
    }

    /// All topics, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<TopicMeta>> {
        self.topics.values()
    }

    /// The number of topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether there is no topic.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<data>/topics`.
    pub fn topics_dir(&self) -> PathBuf {
        self.root.join(TOPICS_DIR)
    }

    /// A topic's directory.
    pub fn topic_dir(&self, topic: &str) -> PathBuf {
        self.topics_dir().join(topic)
    }

    /// A topic's `topic.json`.
    pub fn topic_file(&self, topic: &str) -> PathBuf {
        self.topic_dir(topic).join(TOPIC_FILE)
    }

    /// A partition's log directory.
    pub fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.topic_dir(topic).join(partition.to_string())
    }
}

/// Startup (before any shard runs; plain blocking I/O): creates the data
/// directory if needed, checks or writes its format version, removes trash
/// left by an interrupted delete, and loads every topic. Errors say which
/// file and why.
pub fn open_data_dir(dir: &DataDir) -> Result<TopicTable, MetadataError> {
    let root = dir.root();
    std::fs::create_dir_all(dir.topics_dir())
        .map_err(|e| MetadataError::io("create data directory", root, e))?;
    let format_path = root.join(FORMAT_FILE);
    match std::fs::read(&format_path) {
        Ok(bytes) => {
            let format: FormatFile =
                serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
                    path: format_path.clone(),
                    reason: format!("unreadable: {e}"),
                })?;
            if format.format_version != FORMAT_VERSION {
                return Err(MetadataError::Corrupt {
                    path: format_path,
                    reason: format!(
                        "data directory has format version {}, this broker reads version {FORMAT_VERSION}",
                        format.format_version
                    ),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let bytes = to_json(&FormatFile {
                format_version: FORMAT_VERSION,
            });
            write_atomic_blocking(&format_path, &bytes)?;
        }
        Err(e) => return Err(MetadataError::io("read", &format_path, e)),
    }
    let mut table = TopicTable::default();
    let topics_dir = dir.topics_dir();
    let entries =
        std::fs::read_dir(&topics_dir).map_err(|e| MetadataError::io("list", &topics_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| MetadataError::io("list", &topics_dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.starts_with(TRASH_PREFIX) {
            std::fs::remove_dir_all(&path)
                .map_err(|e| MetadataError::io("remove deleted topic", &path, e))?;
            continue;
        }
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        let file = path.join(TOPIC_FILE);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            // A directory without topic.json is a create that crashed
            // before its commit point: not a topic.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(MetadataError::io("read", &file, e)),
        };
        let meta: TopicMeta =
            serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
                path: file.clone(),
                reason: format!("unreadable topic metadata: {e}"),
            })?;
        if meta.name != name {
            return Err(MetadataError::Corrupt {
                path: file,
                reason: format!(
                    "names topic {:?} but lives in directory {name:?}",
                    meta.name
                ),
            });
        }
        table.insert(Arc::new(meta));
    }
    Ok(table)
}

/// Re-places partitions whose persisted shard does not exist with
/// `shard_count` shards (the broker was restarted with fewer shards), and
/// rewrites those topics' files. Returns the names of the topics changed.
pub fn fit_to_shards(
    dir: &DataDir,
    table: &mut TopicTable,
    shard_count: u16,
) -> Result<Vec<String>, MetadataError> {
    let mut changed = Vec::new();
    let names: Vec<String> = table.iter().map(|t| t.name.clone()).collect();
    for name in names {
        let Some(topic) = table.get(&name) else {
            continue;
        };
        if topic.shards.iter().all(|&s| s < shard_count) {
            continue;
        }
        let mut meta = TopicMeta::clone(topic);
        for (p, shard) in meta.shards.iter_mut().enumerate() {
            if *shard >= shard_count {
                *shard = place(&name, p as u32, shard_count);
            }
        }
        write_atomic_blocking(&dir.topic_file(&name), &to_json(&meta))?;
        table.insert(Arc::new(meta));
        changed.push(name);
    }
    Ok(changed)
}

/// Creates a topic's directory and `topic.json` with blocking I/O (for
/// start-up, before the shards run), durably.
pub fn create_topic_blocking(dir: &DataDir, meta: &TopicMeta) -> Result<(), MetadataError> {
    let topic_dir = dir.topic_dir(&meta.name);
    std::fs::create_dir_all(&topic_dir).map_err(|e| MetadataError::io("create", &topic_dir, e))?;
    write_atomic_blocking(&dir.topic_file(&meta.name), &to_json(meta))?;
    std::fs::File::open(dir.topics_dir())
        .and_then(|d| d.sync_all())
        .map_err(|e| MetadataError::io("fsync", &dir.topics_dir(), e))
}

/// Commits a new topic from a shard (glommio I/O, nothing blocks the
/// executor): creates its directory, writes `topic.json` atomically, and
/// fsyncs the topic's directory and `topics/`. Once this returns Ok the
/// topic exists, whatever crashes next.
pub async fn commit_topic(dir: &DataDir, meta: &TopicMeta) -> Result<(), MetadataError> {
    let topic_dir = dir.topic_dir(&meta.name);
    broker_log::io::create_dir_all(&topic_dir)
        .await
        .map_err(MetadataError::Log)?;
    let file = dir.topic_file(&meta.name);
    broker_log::io::write_file_atomic(&file, to_json(meta))
        .await
        .map_err(MetadataError::Log)?;
    broker_log::io::sync_dir(&topic_dir)
        .await
        .map_err(MetadataError::Log)?;
    let topics = dir.topics_dir();
    broker_log::io::sync_dir(&topics)
        .await
        .map_err(MetadataError::Log)
}

/// Removes a topic from disk from a shard: renames its directory into the
/// trash (the topic is gone from disk at that instant), fsyncs `topics/`,
/// and removes the trash on a thread of its own (a restart removes what is
/// left). A topic without a directory is already gone.
pub async fn trash_topic(dir: &DataDir, name: &str) -> Result<(), MetadataError> {
    trash(dir, dir.topic_dir(name), name, &[dir.topics_dir()]).await
}

/// Renames `path` into the trash (in the topics directory, named after
/// `what`), fsyncs `dirs`, and removes it on a thread of its own.
async fn trash(
    dir: &DataDir,
    path: PathBuf,
    what: &str,
    dirs: &[PathBuf],
) -> Result<(), MetadataError> {
    if !broker_log::io::exists(&path).await {
        return Ok(());
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    let trash = dir
        .topics_dir()
        .join(format!("{TRASH_PREFIX}{what}-{nanos}"));
    broker_log::io::rename(&path, &trash)
        .await
        .map_err(MetadataError::Log)?;
    for d in dirs {
        broker_log::io::sync_dir(d)
            .await
            .map_err(MetadataError::Log)?;
    }
    std::thread::Builder::new()
        .name("trash".into())
        .spawn(move || {
            if let Err(e) = std::fs::remove_dir_all(&trash) {
                tracing::warn!(path = %trash.display(), error = %e,
                    "removing trashed files failed; the next start retries");
            }
        })
        .map(|_| ())
        .map_err(|e| MetadataError::io("start the trash remover for", &path, e))
}

/// Moves one partition's directory into the trash (in the topics
/// directory, where start-up removes what an interrupted removal left) and
/// removes it: a replica this broker no longer holds (reassigned away).
pub async fn trash_partition(
    dir: &DataDir,
    name: &str,
    partition: u32,
) -> Result<(), MetadataError> {
    let dirs = [dir.topics_dir(), dir.topic_dir(name)];
    let what = format!("{name}-p{partition}");
    trash(dir, dir.partition_dir(name, partition), &what, &dirs).await
}

/// The content of `broker.json`.
#[derive(Debug, Serialize, Deserialize)]
struct FormatFile {
    format_version: u32,
}

/// The JSON of a metadata file. Serialising these plain structs cannot fail
/// (no maps with non-string keys, no custom serialisers).
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    #[allow(clippy::expect_used)]
    serde_json::to_vec_pretty(value).expect("metadata structs always serialise")
}

/// Writes `bytes` to `path` atomically and durably with blocking I/O (for
/// start-up, before the shards run).
fn write_atomic_blocking(path: &Path, bytes: &[u8]) -> Result<(), MetadataError> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let fail = |what: &'static str, e: io::Error| MetadataError::io(what, &tmp, e);
    let mut file = std::fs::File::create(&tmp).map_err(|e| fail("create", e))?;
    file.write_all(bytes).map_err(|e| fail("write", e))?;
    file.sync_data().map_err(|e| fail("fsync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail("rename", e))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| MetadataError::io("fsync", parent, e))?;
    }
    Ok(())
}

/// The cluster id of this data directory (file `cluster.id`), created on
/// first start: 16 random bytes as 22 characters of URL-safe base64, the
/// form Kafka's cluster ids take. Kafka clients compare it between brokers
/// and reconnects, so it never changes for the life of the data.
pub fn cluster_id(dir: &DataDir) -> Result<String, MetadataError> {
    let path = dir.root().join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty() || id.len() > 64 || !id.bytes().all(is_cluster_id_byte) {
                return Err(MetadataError::Corrupt {
                    path,
                    reason: format!("{id:?} is not a cluster id (1-64 of A-Z a-z 0-9 - _)"),
                });
            }
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = base64_url(&random_16()?);
            write_atomic_blocking(&path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(MetadataError::io("read", &path, e)),
    }
}

/// The last broker epoch this cluster member recorded (file
/// `broker-epoch`), None if it never did (a new or wiped directory). The
/// broker presents it when it registers: broker-replication counts a
/// restart clean only if it is the epoch of its last registration that
/// served (or later), and otherwise takes the broker out of every ELR.
pub fn broker_epoch(dir: &DataDir) -> Result<Option<broker_cluster::BrokerEpoch>, MetadataError> {
    let path = dir.root().join("broker-epoch");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map(|e| Some(broker_cluster::BrokerEpoch(e)))
            .map_err(|_| MetadataError::Corrupt {
                path,
                reason: format!("{:?} is not a broker epoch", text.trim()),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MetadataError::io("read", &path, e)),
    }
}

/// Records `epoch` as this member's broker epoch (`broker-epoch`, written
/// atomically and fsynced, the directory too) once the controllers
/// admitted it, before it serves.
pub fn record_broker_epoch(
    dir: &DataDir,
    epoch: broker_cluster::BrokerEpoch,
) -> Result<(), MetadataError> {
    write_atomic_blocking(
        &dir.root().join("broker-epoch"),
        epoch.0.to_string().as_bytes(),
    )
}

/// The cluster id of a cluster member: `expected`, which the data
/// directory's `cluster.id` must already hold (or, for a new directory,
/// is written to it). A directory of another cluster, or of a broker that
/// ran on its own, is refused: its topics are not the cluster's.
pub fn member_cluster_id(dir: &DataDir, expected: &str) -> Result<String, MetadataError> {
    let path = dir.root().join("cluster.id");
    if !path.exists() {
        write_atomic_blocking(&path, expected.as_bytes())?;
    }
    let found = cluster_id(dir)?;
    if found != expected {
        return Err(MetadataError::Corrupt {
            path,
            reason: format!(
                "this data directory belongs to cluster {found:?}, not {expected:?}: a cluster \
                 member needs a new data directory or one of its own cluster"
            ),
        });
    }
    Ok(found)
}

/// The cluster id derived from the controllers (the same on every node
/// given the same list): two FNV-1a 64 hashes of the sorted `id@addr`
/// list, as 22 characters of URL-safe base64 like Kafka's ids.
pub fn derived_cluster_id(
    controllers: &std::collections::BTreeMap<u32, std::net::SocketAddr>,
) -> String {
    let text: Vec<String> = controllers
        .iter()
        .map(|(id, a)| format!("{id}@{a}"))
        .collect();
    let text = text.join(",");
    let fnv = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    raw[8..].copy_from_slice(&fnv(0x8422_2325_cbf2_9ce4).to_be_bytes());
    base64_url(&raw)
}

/// 16 random bytes from the kernel.
pub fn random_16() -> Result<[u8; 16], MetadataError> {
    let mut raw = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .map_err(|e| MetadataError::io("read", Path::new("/dev/urandom"), e))?;
    Ok(raw)
}

/// Producer ids one start of the broker reserves: its shards hand them out
/// (InitProducerId) and none is ever given twice, across restarts too.
pub const PRODUCER_ID_BLOCK: i64 = 1 << 32;

/// Reserves this start's block of producer ids: reads the next free one
/// from `producer-ids` (0 when absent), writes it back one block further
/// (atomically, fsynced) and returns the block's first id. A file that
/// cannot be written (a full disk) gives None, with a warning: the broker
/// still starts, and hands out no producer id until a start that can write
/// it. A corrupt file is an error.
pub fn reserve_producer_ids(dir: &DataDir) -> Result<Option<i64>, MetadataError> {
    let path = dir.root().join("producer-ids");
    let start = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|&n| (0..i64::MAX - PRODUCER_ID_BLOCK).contains(&n))
            .ok_or_else(|| MetadataError::Corrupt {
                path: path.clone(),
                reason: format!("{:?} is not a producer id", text.trim()),
            })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(MetadataError::io("read", &path, e)),
    };
    match write_atomic_blocking(&path, (start + PRODUCER_ID_BLOCK).to_string().as_bytes()) {
        Ok(()) => Ok(Some(start)),
        Err(e) => {
            tracing::warn!(error = %e,
                "no producer ids this start (idempotent producers are refused until a restart can write them)");
            Ok(None)
        }
    }
}

fn is_cluster_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// URL-safe base64 without padding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_epoch_is_recorded_durably_and_absent_on_a_new_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        assert_eq!(broker_epoch(&dir).unwrap(), None);
        record_broker_epoch(&dir, broker_cluster::BrokerEpoch(7)).unwrap();
        assert_eq!(
            broker_epoch(&dir).unwrap(),
            Some(broker_cluster::BrokerEpoch(7))
        );
        record_broker_epoch(&dir, broker_cluster::BrokerEpoch(12)).unwrap();
        assert_eq!(
            broker_epoch(&dir).unwrap(),
            Some(broker_cluster::BrokerEpoch(12))
        );
        std::fs::write(tmp.path().join("broker-epoch"), "twelve").unwrap();
        assert!(matches!(
            broker_epoch(&dir),
            Err(MetadataError::Corrupt { .. })
        ));
    }

    #[test]
    fn placement_is_round_robin_from_a_name_dependent_start() {
        let shards: Vec<u16> = (0..6).map(|p| place("orders", p, 4)).collect();
        for w in shards.windows(2) {
            assert_eq!(w[1], (w[0] + 1) % 4);
        }
        // Stable across builds: persisted placement depends on it.
        assert_eq!(name_hash(""), 0x811c_9dc5);
        assert_eq!(name_hash("a"), 0xe40c_292c);
    }

    #[test]
    fn topic_names_are_checked() {
        for ok in ["a", "orders", "a.b_c-D9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_resolve_against_defaults() {
        let defaults = TopicConfig {
            retention_ms: Some(1000),
            retention_bytes: None,
            segment_bytes: 1 << 30,
            log_append_time: false,
            replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        };
        let all_default = resolve_topic_config(&TopicSettings::default(), &defaults).unwrap();
        assert_eq!(all_default, defaults);
        let asked = TopicSettings {
            retention_ms: NO_LIMIT,
            retention_bytes: 5000,
            segment_bytes: 1 << 20,
        };
        let c = resolve_topic_config(&asked, &defaults).unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.retention_bytes, Some(5000));
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(wire_settings(&c), asked);
        for bad in [
            TopicSettings {
                retention_ms: 0,
                ..TopicSettings::default()
            },
            TopicSettings {
                retention_bytes: -3,
                ..TopicSettings::default()
            },
            TopicSettings {
                segment_bytes: 100,
                ..TopicSettings::default()
            },
        ] {
            assert!(resolve_topic_config(&bad, &defaults).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_dir_round_trip_and_version_check() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("data"));
        assert!(open_data_dir(&dir).unwrap().is_empty());
        let meta = TopicMeta::new(
            "t",
            3,
            TopicConfig {
                retention_ms: None,
                retention_bytes: Some(10),
                segment_bytes: 4096,
                log_append_time: false,
                replication_factor: 1,
                min_insync_replicas: 1,
                unclean_leader_election: false,
            },
            2,
        );
        std::fs::create_dir_all(dir.topic_dir("t")).unwrap();
        write_atomic_blocking(&dir.topic_file("t"), &serde_json::to_vec(&meta).unwrap()).unwrap();
        // A crashed create (no topic.json) and trash are not topics.
        std::fs::create_dir_all(dir.topic_dir("half")).unwrap();
        std::fs::create_dir_all(dir.topics_dir().join(".trash-old-1")).unwrap();
        let table = open_data_dir(&dir).unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(**table.get("t").unwrap(), meta);
        assert!(!dir.topics_dir().join(".trash-old-1").exists());

        // Fewer shards: partitions on shard 1 move, and that is persisted.
        let mut table = table;
        let changed = fit_to_shards(&dir, &mut table, 1).unwrap();
        assert_eq!(changed, vec!["t".to_string()]);
        assert_eq!(
            open_data_dir(&dir).unwrap().get("t").unwrap().shards,
            [0, 0, 0]
        );

        std::fs::write(dir.root().join(FORMAT_FILE), br#"{"format_version": 99}"#).unwrap();
        let err = open_data_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("format version 99"), "{err}");
    }
}

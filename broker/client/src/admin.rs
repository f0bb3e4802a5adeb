//! [`Client`]: the admin and metadata side of the client library, and what
//! the producer and consumer share: the connection pool (one connection per
//! address) and the metadata cache (which shard owns each partition, and
//! that shard's address).
//!
//! Control-plane requests go to the bootstrap address (any port serves
//! them); list offsets goes to the owning shard. The cache is filled on
//! first use of a topic and dropped for a topic on any routing error
//! (NotOwner, UnknownTopic, a lost connection), so the next use asks again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use rustc_hash::FxHashMap;

use super::connection::{lock, Connection, Response};
use super::error::{ClientError, ClientResult};
use super::ClientConfig;
use broker_protocol::generated::{
    CreateTopicResponse, DeleteTopicResponse, ListOffsetsResponse, ListTopicsResponse,
    MetadataResponse,
};
use broker_protocol::{
    ErrorCode, FrameError, FrameHeader, FrameWriter, OffsetQuery, TopicSettings,
};

/// How often a partition-addressed call is tried when routing fails
/// (NotOwner, a topic not yet visible, a lost connection).
const ROUTING_ATTEMPTS: u32 = 4;

/// Pause before retrying a routing failure.
const ROUTING_BACKOFF: Duration = Duration::from_millis(50);

/// A topic as ListTopics reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicListing {
    /// The topic's name.
    pub name: String,
    /// Its number of partitions.
    pub partitions: u32,
}

/// What CreateTopic made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    /// Partitions created.
    pub partitions: u32,
    /// The settings in effect, defaults resolved.
    pub settings: TopicSettings,
}

/// One shard's shard-aware address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardInfo {
    /// The shard's index.
    pub shard: u16,
    /// "host:port" of its listener.
    pub address: String,
}

/// One partition and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    /// The partition's number.
    pub partition: u32,
    /// The shard that owns it.
    pub shard: u16,
    /// That shard's address: where produce, fetch and list offsets go.
    pub address: String,
}

/// A described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Its settings, defaults resolved.
    pub settings: TopicSettings,
    /// Every partition, by number.
    pub partitions: Vec<PartitionInfo>,
}

/// A Metadata answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Every shard's address, by index.
    pub shards: Vec<ShardInfo>,
    /// The topics described (asked-for topics that do not exist are left
    /// out).
    pub topics: Vec<TopicInfo>,
}

/// A partition's offsets, as ListOffsets reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionOffsets {
    /// The offset looked up; for a timestamp query with no record at or
    /// after it, the high watermark.
    pub offset: i64,
    /// The first readable offset.
    pub log_start_offset: i64,
    /// One past the last readable offset.
    pub high_watermark: i64,
}

/// The admin client, and the shared core of producers and consumers.
/// Cheap to clone; clones share connections and the metadata cache.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bootstrap: Vec<String>,
    config: ClientConfig,
    pool: Mutex<HashMap<String, Connection>>,
    topics: Mutex<FxHashMap<String, Arc<TopicInfo>>>,
}

impl Client {
    /// A client of the broker at `bootstrap` ("host:port", or several
    /// separated by commas, tried in order), with default settings.
    /// Connects at once, so a wrong address fails here.
    pub fn connect(bootstrap: &str) -> ClientResult<Client> {
        Client::connect_with(bootstrap, ClientConfig::default())
    }

    /// Like [`Client::connect`], with explicit settings.
    pub fn connect_with(bootstrap: &str, config: ClientConfig) -> ClientResult<Client> {
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if bootstrap.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no bootstrap address given".into(),
            ));
        }
        let client = Client {
            inner: Arc::new(Inner {
                bootstrap,
                config,
                pool: Mutex::new(HashMap::new()),
                topics: Mutex::new(FxHashMap::default()),
            }),
        };
        client.bootstrap_connection()?;
        Ok(client)
    }

    /// The settings connections use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Creates a topic of `partitions` partitions (0: the broker's default).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        settings: &TopicSettings,
    ) -> ClientResult<CreatedTopic> {
        let count = if partitions == 0 {
            -1
        } else {
            i32::try_from(partitions).map_err(|_| {
                ClientError::InvalidArgument(format!("{partitions} partitions is too many"))
            })?
        };
        let response =
            self.control_call(|w, out, id| w.create_topic_request(out, id, name, count, settings))?;
        let frame = response.decode::<CreateTopicResponse>()?;
        self.forget(name);
        Ok(CreatedTopic {
            partitions: u32::try_from(frame.body.partitions()).unwrap_or(0),
            settings: TopicSettings::from_table(frame.body.config()),
        })
    }

    /// Deletes a topic and all its data.
    pub fn delete_topic(&self, name: &str) -> ClientResult<()> {
        let response = self.control_call(|w, out, id| w.delete_topic_request(out, id, name))?;
        response.decode::<DeleteTopicResponse>()?;
        self.forget(name);
        Ok(())
    }

    /// Every topic, sorted by name.
    pub fn list_topics(&self) -> ClientResult<Vec<TopicListing>> {
        let response = self.control_call(|w, out, id| w.list_topics_request(out, id))?;
        let frame = response.decode::<ListTopicsResponse>()?;
        let mut topics: Vec<TopicListing> = frame
            .body
            .topics()
            .iter()
            .flatten()
            .map(|t| TopicListing {
                name: t.name().unwrap_or_default().to_owned(),
                partitions: u32::try_from(t.partitions()).unwrap_or(0),
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// Describes `topics` (all topics when empty) and refreshes the cache
    /// with what comes back.
    pub fn metadata(&self, topics: &[&str]) -> ClientResult<ClusterMetadata> {
        let response = self.control_call(|w, out, id| w.metadata_request(out, id, topics))?;
        let frame = response.decode::<MetadataResponse>()?;
        let body = frame.body;
        let bootstrap_host = host_of(&self.inner.bootstrap[0]);
        let mut shards: Vec<ShardInfo> = body
            .shards()
            .iter()
            .flatten()
            .map(|s| ShardInfo {
                shard: s.shard(),
                address: join_host_port(s.host().unwrap_or_default(), s.port(), bootstrap_host),
            })
            .collect();
        shards.sort_by_key(|s| s.shard);
        let mut described = Vec::new();
        let mut errors = Vec::new();
        for t in body.topics().iter().flatten() {
            let name = t.name().unwrap_or_default().to_owned();
            if let Some(e) = t.error().filter(|e| e.code() != ErrorCode::None) {
                errors.push((name, ClientError::from_wire(e)));
                continue;
            }
            let mut partitions = Vec::new();
            for p in t.partitions().iter().flatten() {
                let address = shards
                    .iter()
                    .find(|s| s.shard == p.shard())
                    .map(|s| s.address.clone())
                    .ok_or_else(|| ClientError::Protocol {
                        addr: self.inner.bootstrap[0].clone(),
                        error: FrameError::LimitExceeded {
                            field: "PartitionMetadata.shard",
                            value: u64::from(p.shard()),
                            max: shards.len() as u64,
                        },
                    })?;
                partitions.push(PartitionInfo {
                    partition: p.partition(),
                    shard: p.shard(),
                    address,
                });
            }
            partitions.sort_by_key(|p| p.partition);
            described.push(TopicInfo {
                name,
                settings: TopicSettings::from_table(t.config()),
                partitions,
            });
        }
        {
            let mut cache = lock(&self.inner.topics);
            for (name, _) in &errors {
                cache.remove(name);
            }
            for t in &described {
                cache.insert(t.name.clone(), Arc::new(t.clone()));
            }
        }
        Ok(ClusterMetadata {
            shards,
            topics: described,
        })
    }

    /// One topic's description, fresh from the broker; an unknown topic is
    /// [`ClientError::Broker`] with [`ErrorCode::UnknownTopic`].
    pub fn describe_topic(&self, name: &str) -> ClientResult<TopicInfo> {
        let metadata = self.metadata(&[name])?;
        metadata
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| unknown_topic(name))
    }

    /// Looks up an offset of a partition on its owning shard.
    pub fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> ClientResult<PartitionOffsets> {
        let timeout = self.inner.config.request_timeout;
        self.with_route(topic, partition, |conn| {
            let response = conn.call(
                timeout,
                |w, out, id| w.list_offsets_request(out, id, topic, partition, query),
                &[],
            )?;
            let frame = response.decode::<ListOffsetsResponse>()?;
            let b = frame.body;
            let offset = if b.offset() < 0 {
                b.high_watermark()
            } else {
                b.offset()
            };
            Ok(PartitionOffsets {
                offset,
                log_start_offset: b.log_start_offset(),
                high_watermark: b.high_watermark(),
            })
        })
    }

    /// The cached description of `topic`, asked for if not cached.
    pub fn topic(&self, topic: &str) -> ClientResult<Arc<TopicInfo>> {
        if let Some(t) = lock(&self.inner.topics).get(topic) {
            return Ok(Arc::clone(t));
        }
        self.metadata(&[topic])?;
        lock(&self.inner.topics)
            .get(topic)
            .cloned()
            .ok_or_else(|| unknown_topic(topic))
    }

    /// The address of the shard that owns `topic`/`partition`.
    pub fn partition_address(&self, topic: &str, partition: u32) -> ClientResult<String> {
        let info = self.topic(topic)?;
        info.partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.address.clone())
            .ok_or(ClientError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: info.partitions.len() as u32,
            })
    }

    /// Drops the cached description of `topic`: its next use asks the
    /// broker again.
    pub fn forget(&self, topic: &str) {
        lock(&self.inner.topics).remove(topic);
    }

    /// The pooled connection to `addr`, made (again) if there is none alive.
    pub fn connection(&self, addr: &str) -> ClientResult<Connection> {
        if let Some(conn) = lock(&self.inner.pool).get(addr) {
            if conn.is_alive() {
                return Ok(conn.clone());
            }
        }
        // Connect outside the pool's lock: other addresses stay usable.
        let conn = Connection::connect(addr, &self.inner.config)?;
        let mut pool = lock(&self.inner.pool);
        match pool.get(addr) {
            Some(existing) if existing.is_alive() => Ok(existing.clone()),
            _ => {
                pool.insert(addr.to_owned(), conn.clone());
                Ok(conn)
            }
        }
    }

    /// Runs `call` on the connection to the partition's owner, refreshing
    /// the metadata and trying again on routing failures.
    pub(crate) fn with_route<T>(
        &self,
        topic: &str,
        partition: u32,
        mut call: impl FnMut(&Connection) -> ClientResult<T>,
    ) -> ClientResult<T> {
        let mut attempt = 1;
        loop {
            let result = self
                .partition_address(topic, partition)
                .and_then(|addr| self.connection(&addr))
                .and_then(|conn| call(&conn));
            match result {
                Err(e) if attempt < ROUTING_ATTEMPTS && e.is_retriable() => {
                    self.forget(topic);
                    std::thread::sleep(ROUTING_BACKOFF * attempt);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A control-plane request to the bootstrap address, tried once more on
    /// a fresh connection if the pooled one turns out to be dead.
    pub(crate) fn control_call(
        &self,
        build: impl Fn(&mut FrameWriter, &mut Vec<u8>, u64) -> Result<FrameHeader, FrameError>,
    ) -> ClientResult<Response> {
        let timeout = self.inner.config.request_timeout;
        let conn = self.bootstrap_connection()?;
        match conn.call(timeout, &build, &[]) {
            Err(ClientError::Disconnected { .. }) => {
                let conn = self.bootstrap_connection()?;
                conn.call(timeout, &build, &[])
            }
            other => other,
        }
    }

    /// "host:port" of an endpoint the broker advertised; an unspecified host
    /// becomes the host the client bootstrapped from.
    pub(crate) fn advertised_address(&self, host: &str, port: u16) -> String {
        join_host_port(host, port, host_of(&self.inner.bootstrap[0]))
    }

    /// A live connection to the first bootstrap address that accepts.
    fn bootstrap_connection(&self) -> ClientResult<Connection> {
        let mut last = None;
        for addr in &self.inner.bootstrap {
            match self.connection(addr) {
                Ok(conn) => return Ok(conn),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::InvalidArgument("no bootstrap address".into())))
    }
}

fn unknown_topic(name: &str) -> ClientError {
    ClientError::Broker {
        code: ErrorCode::UnknownTopic,
        message: format!("unknown topic {name:?}"),
        valid_range: None,
    }
}

/// The host part of "host:port" ("[v6]:port" too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// "host:port" for an advertised endpoint; an unspecified host (the broker
/// listens on all interfaces) becomes the host the client bootstrapped from.
fn join_host_port(host: &str, port: u16, fallback_host: &str) -> String {
    let host = match host {
        "" | "0.0.0.0" | "::" | "[::]" => fallback_host,
        h => h,
    };
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

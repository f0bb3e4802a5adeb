//! One shard's server state: the partitions it owns, its copy of the topic
//! table, its links to the other shards, and the groups it coordinates.
//!
//! Everything here lives on the shard's executor (`Rc`, `RefCell`): the
//! fields are private, and no `RefCell` borrow is held across an `.await`
//! (every borrow is inside one method).
//!
//! Shards talk only through [`ShardMessage`]s: typed requests (append
//! these batches to this partition, read from here, this group operation,
//! open these partitions), each with a oneshot for its answer. Record bytes
//! cross as `Bytes`, never re-encoded.

use std::{
    cell::{Cell, Ref, RefCell},
    collections::{HashMap, HashSet},
    net::SocketAddr,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::arrivals::Arrivals;
use crate::config::ServerConfig;
use crate::error::{ServiceError, ServiceResult, StartError};
use crate::metadata::{DataDir, TopicMeta, TopicTable};
use crate::partition::Partition;
use crate::service::groups::{GroupAnswer, GroupRequest, Groups};
use crate::service::topics::CreateTopic;
use crate::service::{self, Acks, FetchRequest, Produced, RemoteFetched};
use broker_shard::ShardId;

/// A message from one shard to another over the mesh.
pub enum ShardMessage {
    /// Append a produce request's batches to a partition this shard owns.
    Produce {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The record batches, as received (a slice of the request frame).
        batches: bytes::Bytes,
        /// When the producer wants its answer.
        acks: Acks,
        /// The answer.
        reply: oneshot::Sender<ServiceResult<Produced>>,
    },
    /// Read from a partition this shard owns (a long poll, if asked).
    Fetch {
        /// What to read.
        request: FetchRequest,
        /// The answer; its bytes are a copy (log buffers cannot cross shards).
        reply: oneshot::Sender<ServiceResult<RemoteFetched>>,
    },
    /// Look up an offset of a partition this shard owns.
    ListOffsets {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What to look up.
        query: service::OffsetQuery,
        /// The answer.
        reply: oneshot::Sender<ServiceResult<service::Offsets>>,
    },
    /// Create a topic this shard controls.
    CreateTopic {
        /// What to create.
        request: CreateTopic,
        /// The topic as created.
        reply: oneshot::Sender<ServiceResult<Arc<TopicMeta>>>,
    },
    /// Delete a topic this shard controls.
    DeleteTopic {
        /// The topic's name.
        name: String,
        /// Answered once deleted.
        reply: oneshot::Sender<ServiceResult<()>>,
    },
    /// A group operation for a group this shard coordinates.
    Group {
        /// The operation.
        request: GroupRequest,
        /// Its answer.
        reply: oneshot::Sender<ServiceResult<GroupAnswer>>,
    },
    /// Open this shard's partitions of a new topic.
    OpenPartitions {
        /// The topic.
        topic: Arc<TopicMeta>,
        /// Ok once open; the error otherwise.
        reply: oneshot::Sender<ServiceResult<()>>,
    },
    /// Close this shard's partitions of a deleted topic.
    ClosePartitions {
        /// The topic's name.
        topic: String,
        /// Answered once closed.
        reply: oneshot::Sender<()>,
    },
    /// A topic now exists: add it to the routing table.
    TopicAdded {
        /// The topic.
        topic: Arc<TopicMeta>,
        /// Answered once routed.
        reply: oneshot::Sender<()>,
    },
    /// A topic is gone: remove it from the routing table.
    TopicRemoved {
        /// The topic's name.
        topic: String,
        /// Answered once removed.
        reply: oneshot::Sender<()>,
    },
    /// The cluster's metadata image this broker has applied (a cluster
    /// member only): routing answers and version waits use it.
    Image {
        /// The image.
        image: Arc<broker_cluster::MetadataImage>,
        /// Answered once this shard has it.
        reply: oneshot::Sender<()>,
    },
    /// List this shard's consumer groups.
    ListGroups {
        /// A summary of each.
        reply: oneshot::Sender<Vec<service::groups::GroupListing>>,
    },
}

/// The answer to come of a request sent to another shard.
pub struct Answer<T> {
    to: ShardId,
    rx: oneshot::Receiver<ServiceResult<T>>,
}

impl<T> Answer<T> {
    /// Waits for it; an error if the shard dropped the request (stopping).
    pub async fn wait(self) -> ServiceResult<T> {
        let to = self.to;
        self.rx.await.map_err(|_| Self::gone(to))?
    }

    fn gone(to: ShardId) -> ServiceError {
        ServiceError::internal(format!("shard {to} did not answer (shutting down?)"))
    }
}

/// The partitions a shard owns, by topic then partition number.
pub type PartitionMap = HashMap<String, HashMap<u32, Rc<Partition>>>;

/// What a shard is made of when it starts serving.
pub struct ShardParts {
    /// This shard's index.
    pub id: ShardId,
    /// How many shards the broker runs.
    pub shard_count: u16,
    /// The server's settings.
    pub config: Arc<ServerConfig>,
    /// The data directory.
    pub data: DataDir,
    /// Every shard's shard-aware address, as advertised.
    pub endpoints: Vec<SocketAddr>,
    /// The topic table at start.
    pub topics: TopicTable,
    /// The partitions this shard recovered.
    pub partitions: PartitionMap,
    /// Every shard's own Kafka address, by shard (empty: no Kafka listener).
    pub kafka_endpoints: Vec<SocketAddr>,
    /// The Kafka main address every shard accepts on.
    pub kafka_main: Option<SocketAddr>,
    /// The data directory's cluster id.
    pub cluster_id: Arc<str>,
    /// The first producer id of this start's block
    /// ([`crate::metadata::reserve_producer_ids`]); None: none this start.
    pub producer_ids: Option<i64>,
    /// Links to the other shards.
    pub peers: Senders<ShardMessage>,
    /// This shard's metrics series.
    pub metrics: Arc<crate::metrics::ShardMetrics>,
    /// The connection counter every shard shares.
    pub open_connections: Arc<std::sync::atomic::AtomicUsize>,
    /// The way to the controllers, for a cluster member.
    pub cluster: Option<Arc<crate::cluster::Link>>,
}

/// The state of one shard.
pub struct Shard {
    id: ShardId,
    shard_count: u16,
    config: Arc<ServerConfig>,
    data: DataDir,
    endpoints: Vec<SocketAddr>,
    kafka_endpoints: Vec<SocketAddr>,
    kafka_main: Option<SocketAddr>,
    cluster_id: Arc<str>,
    /// The next producer id this shard gives out: the block's ids
    /// `start + shard + k * shard_count`.
    next_producer_id: Cell<i64>,
    producer_ids_end: i64,
    topics: RefCell<TopicTable>,
    partitions: RefCell<PartitionMap>,
    /// Topics this shard is creating or deleting (as their controller):
    /// a second change to the same topic fails fast.
    changing: RefCell<HashSet<String>>,
    peers: Senders<ShardMessage>,
    groups: Groups,
    in_flight: Cell<usize>,
    /// Signalled when `in_flight` drops to 0.
    drained: Arrivals,
    stopping: Cell<bool>,
    metrics: Arc<crate::metrics::ShardMetrics>,
    open_connections: Arc<std::sync::atomic::AtomicUsize>,
    /// A cluster member's way to the controllers.
    cluster: Option<Arc<crate::cluster::Link>>,
    /// The last metadata image this shard has (a cluster member only).
    image: RefCell<Option<Arc<broker_cluster::MetadataImage>>>,
    /// Signalled when `image` changes.
    image_changed: Arrivals,
    /// This shard's replicated partitions.
    replication: crate::replication::ShardReplication,
}

/// Counts a request in flight on its shard for as long as it lives.
pub struct InFlight(Rc<Shard>);

impl InFlight {
    /// Counts one more request on `shard`.
    pub fn new(shard: Rc<Shard>) -> InFlight {
        shard.in_flight.set(shard.in_flight.get() + 1);
        InFlight(shard)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = self.0.in_flight.get().saturating_sub(1);
        self.0.in_flight.set(n);
        if n == 0 {
            self.0.drained.notify();
        }
    }
}

impl Shard {
    /// A shard serving `parts`.
    pub fn new(parts: ShardParts) -> Shard {
        Shard {
            id: parts.id,
            shard_count: parts.shard_count,
            config: parts.config,
            data: parts.data,
            endpoints: parts.endpoints,
            kafka_endpoints: parts.kafka_endpoints,
            kafka_main: parts.kafka_main,
            cluster_id: parts.cluster_id,
            next_producer_id: Cell::new(parts.producer_ids.map_or(0, |s| s + i64::from(parts.id))),
            producer_ids_end: parts
                .producer_ids
                .map_or(0, |s| s + crate::metadata::PRODUCER_ID_BLOCK),
            topics: RefCell::new(parts.topics),
            partitions: RefCell::new(parts.partitions),
            changing: RefCell::new(HashSet::new()),
            peers: parts.peers,
            groups: Groups::default(),
            in_flight: Cell::new(0),
            drained: Arrivals::default(),
            stopping: Cell::new(false),
            metrics: parts.metrics,
            open_connections: parts.open_connections,
            cluster: parts.cluster,
            image: RefCell::new(None),
            image_changed: Arrivals::default(),
            replication: Default::default(),
        }
    }

    /// A cluster member's way to the controllers (None: a broker on its
    /// own).
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Link>> {
        self.cluster.as_ref()
    }

    /// The metadata image this shard has (None: not a cluster member, or
    /// none applied yet).
    pub fn image(&self) -> Option<Arc<broker_cluster::MetadataImage>> {
        self.image.borrow().clone()
    }

    /// Takes a newer image (an older or equal one is ignored), and hands
    /// it to this shard's replicas.
    pub fn set_image(self: &Rc<Self>, image: Arc<broker_cluster::MetadataImage>) {
        let newer = self
            .image
            .borrow()
            .as_ref()
            .is_none_or(|have| image.version() > have.version());
        if newer {
            *self.image.borrow_mut() = Some(Arc::clone(&image));
            self.image_changed.notify();
            glommio::spawn_local(crate::replication::on_image(Rc::clone(self), image)).detach();
        }
    }

    /// This shard's replicated partitions.
    pub fn replication(&self) -> &crate::replication::ShardReplication {
        &self.replication
    }

    /// Waits (at most `limit`) until this shard has an image of at least
    /// `version`; whether it has.
    pub async fn wait_image(&self, version: u64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let seen = self.image_changed.generation();
            if self.image().is_some_and(|i| i.version() >= version) {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline || self.stopping() {
                return false;
            }
            self.image_changed.wait(seen, deadline - now).await;
        }
    }

    /// Every shard's own Kafka address, by shard.
    pub fn kafka_endpoints(&self) -> &[SocketAddr] {
        &self.kafka_endpoints
    }

    /// The Kafka main address.
    pub fn kafka_main(&self) -> Option<SocketAddr> {
        self.kafka_main
    }

    /// A producer id never given before (None once this start's block is
    /// used up: 2^32 ids over the shards; or when this start has none).
    pub fn new_producer_id(&self) -> Option<i64> {
        let id = self.next_producer_id.get();
        if id >= self.producer_ids_end {
            return None;
        }
        self.next_producer_id
            .set(id + i64::from(self.shard_count.max(1)));
        Some(id)
    }

    /// The data directory's cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// This shard's index.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// How many shards the broker runs.
    pub fn shard_count(&self) -> u16 {
        self.shard_count
    }

    /// The server's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The data directory.
    pub fn data(&self) -> &DataDir {
        &self.data
    }

    /// Every shard's shard-aware address, as advertised.
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// This shard's copy of the topic table (never hold it across an await).
    pub fn topics(&self) -> Ref<'_, TopicTable> {
        self.topics.borrow()
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.topics.borrow().get(name).cloned()
    }

    /// The consumer groups this shard coordinates.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// This shard's metrics series.
    pub fn metrics(&self) -> &crate::metrics::ShardMetrics {
        &self.metrics
    }

    /// The connection counter every shard shares.
    pub fn open_connections(&self) -> &std::sync::atomic::AtomicUsize {
        &self.open_connections
    }

    /// Whether a graceful stop began (long polls answer at once).
    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// The partition `partition` of `topic`, if this shard owns it.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|t| t.get(&partition))
            .cloned()
    }

    /// Every partition of `topic` this shard owns.
    pub fn partitions_of(&self, topic: &str) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(topic)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    fn all_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|t| t.values().cloned())
            .collect()
    }

    /// Marks `topic` as being created or deleted by this shard; false if it
    /// already is.
    pub fn begin_change(&self, topic: &str) -> bool {
        self.changing.borrow_mut().insert(topic.to_owned())
    }

    /// Ends what [`Shard::begin_change`] began.
    pub fn end_change(&self, topic: &str) {
        self.changing.borrow_mut().remove(topic);
    }

    /// Adds a topic to this shard's routing table.
    pub fn route_topic(&self, topic: Arc<TopicMeta>) {
        self.topics.borrow_mut().insert(topic);
    }

    /// Removes a topic from this shard's routing table.
    pub fn unroute_topic(&self, topic: &str) {
        self.topics.borrow_mut().remove(topic);
    }

    /// Makes this shard's open partitions of `topic` what its placement
    /// says: opens (recovering them) those placed here and not open yet,
    /// and closes those open here but no longer placed on this broker (a
    /// replica reassigned away), removing their files; serves them from
    /// now on.
    pub async fn open_partitions(&self, topic: &TopicMeta) -> ServiceResult<()> {
        let me = self.config.broker_id;
        let open: Vec<u32> = self
            .partitions
            .borrow()
            .get(&topic.name)
            .map(|t| t.keys().copied().collect())
            .unwrap_or_default();
        for p in open.iter().copied() {
            let here = (0..self.shard_count).any(|s| topic.lives_on(p, me, s));
            if here {
                continue;
            }
            self.replication.remove_partition(&topic.name, p);
            let removed = self
                .partitions
                .borrow_mut()
                .get_mut(&topic.name)
                .and_then(|t| t.remove(&p));
            if let Some(partition) = removed {
                partition.wake_readers();
                if let Err(e) = partition.log().close().await {
                    tracing::warn!(topic = %topic.name, partition = p, error = %e,
                        "closing a dropped replica failed");
                }
                if let Err(e) = crate::metadata::trash_partition(&self.data, &topic.name, p).await {
                    tracing::warn!(topic = %topic.name, partition = p, error = %e,
                        "removing a dropped replica's files failed");
                }
                tracing::info!(topic = %topic.name, partition = p,
                    "replica reassigned away: closed and removed");
            }
        }
        let opened = crate::partition::open_owned(
            self.id,
            &self.metrics,
            &self.config,
            &self.data,
            topic,
            &open,
        )
        .await
        .map_err(|e| ServiceError::storage(e.to_string()))?;
        let mut partitions = self.partitions.borrow_mut();
        let entry = partitions.entry(topic.name.clone()).or_default();
        for p in opened {
            entry.insert(p.number(), Rc::new(p));
        }
        Ok(())
    }

    /// Stops serving this shard's partitions of `topic` and closes them.
    pub async fn close_partitions(&self, topic: &str) {
        self.replication.remove_topic(topic);
        let removed = self.partitions.borrow_mut().remove(topic);
        self.metrics.remove_topic(topic);
        for (p, partition) in removed.into_iter().flatten() {
            // Long polls answer now rather than at their deadline.
            partition.wake_readers();
            if let Err(e) = partition.log().close().await {
                tracing::warn!(topic, partition = p, error = %e, "closing a deleted partition failed");
            }
        }
    }

    /// Handles a message from another shard.
    pub async fn on_message(self: &Rc<Self>, msg: ShardMessage) {
        match msg {
            ShardMessage::Produce {
                topic,
                partition,
                batches,
                acks,
                reply,
            } => {
                let answer = service::produce_here(self, &topic, partition, &batches, acks).await;
                let _ = reply.send(answer);
            }
            ShardMessage::Fetch { request, reply } => {
                let answer = service::fetch_here(self, &request)
                    .await
                    .map(service::Fetched::into_remote);
                let _ = reply.send(answer);
            }
            ShardMessage::ListOffsets {
                topic,
                partition,
                query,
                reply,
            } => {
                let answer = service::list_offsets_here(self, &topic, partition, query).await;
                let _ = reply.send(answer);
            }
            ShardMessage::CreateTopic { request, reply } => {
                let _ = reply.send(service::topics::create_here(self, request).await);
            }
            ShardMessage::DeleteTopic { name, reply } => {
                let _ = reply.send(service::topics::delete_here(self, &name).await);
            }
            ShardMessage::Group { request, reply } => {
                let _ = reply.send(service::groups::serve_here(self, request).await);
            }
            ShardMessage::OpenPartitions { topic, reply } => {
                let _ = reply.send(self.open_partitions(&topic).await);
            }
            ShardMessage::ClosePartitions { topic, reply } => {
                self.close_partitions(&topic).await;
                let _ = reply.send(());
            }
            ShardMessage::TopicAdded { topic, reply } => {
                self.route_topic(topic);
                let _ = reply.send(());
            }
            ShardMessage::TopicRemoved { topic, reply } => {
                self.unroute_topic(&topic);
                let _ = reply.send(());
            }
            ShardMessage::Image { image, reply } => {
                self.set_image(image);
                let _ = reply.send(());
            }
            ShardMessage::ListGroups { reply } => {
                let _ = reply.send(self.groups.listings());
            }
        }
    }

    /// Sends a request to shard `to` and waits for its answer: `make` builds
    /// the message around the reply channel. An error if that shard is gone
    /// (stopping) or dropped the request.
    pub async fn ask<T>(
        &self,
        to: ShardId,
        make: impl FnOnce(oneshot::Sender<ServiceResult<T>>) -> ShardMessage,
    ) -> ServiceResult<T> {
        self.send(to, make).await?.wait().await
    }

    /// Hands a request to shard `to`'s channel, waiting only for room in it
    /// (backpressure), and returns the answer to come. Messages to one shard
    /// are handled there in the order they were sent.
    pub async fn send<T>(
        &self,
        to: ShardId,
        make: impl FnOnce(oneshot::Sender<ServiceResult<T>>) -> ShardMessage,
    ) -> ServiceResult<Answer<T>> {
        let (tx, rx) = oneshot::channel();
        self.peers
            .send_to(usize::from(to), make(tx))
            .await
            .map_err(|_| Answer::<T>::gone(to))?;
        Ok(Answer { to, rx })
    }

    /// Runs `make(reply)` on every shard (this one included, through
    /// `local`) and waits for every answer; None for a shard that did not
    /// answer.
    pub async fn on_all_shards<T, M, L>(self: &Rc<Self>, make: M, local: L) -> Vec<Option<T>>
    where
        T: Send + 'static,
        M: Fn(oneshot::Sender<T>) -> ShardMessage,
        L: std::future::Future<Output = T>,
    {
        let mut waits = Vec::with_capacity(usize::from(self.shard_count));
        for peer in 0..self.shard_count {
            if peer == self.id {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let sent = self
                .peers
                .send_to(usize::from(peer), make(tx))
                .await
                .is_ok();
            waits.push((sent, rx));
        }
        let mut answers = vec![Some(local.await)];
        for (sent, rx) in waits {
            answers.push(if sent { rx.await.ok() } else { None });
        }
        answers
    }

    /// A graceful stop, once the listeners are closed: wake long polls, let
    /// in-flight requests finish (up to `drain`), then flush, fsync and close
    /// every partition, so the next start needs no recovery truncation.
    pub async fn shut_down(&self, drain: Duration) {
        self.stopping.set(true);
        let partitions = self.all_partitions();
        for p in &partitions {
            p.wake_readers();
        }
        let deadline = std::time::Instant::now() + drain;
        while self.in_flight.get() > 0 {
            let seen = self.drained.generation();
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::warn!(
                    shard = self.id,
                    in_flight = self.in_flight.get(),
                    "stopping with requests still in flight"
                );
                break;
            }
            self.drained
                .wait(seen, (deadline - now).min(Duration::from_millis(100)))
                .await;
        }
        for p in partitions {
            if let Err(e) = p.log().close().await {
                tracing::error!(topic = %p.topic(), partition = p.number(), error = %e,
                    "closing the partition failed");
            }
        }
        tracing::info!(shard = self.id, "shard stopped");
    }

    /// Applies retention to every partition of this shard.
    pub async fn enforce_retention(&self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        for p in self.all_partitions() {
            let result = p.log().enforce_retention(now_ms).await;
            p.update_gauges();
            match result {
                Ok(report) if !report.deleted.is_empty() => tracing::info!(
                    topic = %p.topic(), partition = p.number(),
                    segments = report.deleted.len(), bytes = report.deleted_bytes,
                    log_start_offset = report.log_start_offset, "retention deleted segments"
                ),
                Ok(_) | Err(broker_log::LogError::Closed) => {}
                Err(e) => tracing::warn!(topic = %p.topic(), partition = p.number(),
                    error = %e, "retention failed"),
            }
        }
    }
}

/// Opens every partition shard `id` owns, before it serves.
pub async fn open_all(
    id: ShardId,
    metrics: &crate::metrics::ShardMetrics,
    config: &ServerConfig,
    data: &DataDir,
    topics: &TopicTable,
) -> Result<PartitionMap, StartError> {
    let mut map: PartitionMap = HashMap::new();
    for topic in topics.iter() {
        for p in crate::partition::open_owned(id, metrics, config, data, topic, &[]).await? {
            map.entry(topic.name.clone())
                .or_default()
                .insert(p.number(), Rc::new(p));
        }
    }
    Ok(map)
}

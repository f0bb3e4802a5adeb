//! One shard's server state: its partitions, its copy of the topic table,
//! its links to the other shards, and the control plane it coordinates
//! (creating and deleting the topics whose controller it is).
//!
//! Everything here lives on the shard's executor (`Rc`, `RefCell`): a
//! `RefCell` borrow is never held across an `.await`.

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, HashSet},
    net::SocketAddr,
    rc::Rc,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::config::ServerConfig;
use crate::metadata::{DataDir, TopicMeta, TopicTable, TRASH_PREFIX};
use crate::partition::Partition;
use broker_log::LogError;
use broker_protocol::FrameWriter;
use broker_shard::ShardId;

/// A message from one shard to another over the mesh.
pub enum ShardMessage {
    /// A request frame to handle here (a data-path request for a partition
    /// this shard owns, or a topic change this shard controls). The reply
    /// is the whole response frame.
    Request {
        /// The request frame, exactly as received.
        frame: bytes::Bytes,
        /// Where the response goes.
        reply: oneshot::Sender<ForwardedReply>,
    },
    /// Open this shard's partitions of a new topic.
    OpenPartitions {
        /// The topic.
        topic: Arc<TopicMeta>,
        /// Ok once open; the error otherwise.
        reply: oneshot::Sender<Result<(), String>>,
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
    /// List this shard's consumer groups.
    ListGroups {
        /// (group, state, members, generation) of each.
        reply: oneshot::Sender<Vec<(String, String, u32, i32)>>,
    },
    /// A topic is gone: remove it from the routing table.
    TopicRemoved {
        /// The topic's name.
        topic: String,
        /// Answered once removed.
        reply: oneshot::Sender<()>,
    },
}

/// The answer to a forwarded request: the response frame's bytes (empty:
/// nothing to send), and whether the connection must be closed after it.
#[derive(Debug, Default)]
pub struct ForwardedReply {
    /// The whole response frame, or nothing.
    pub frame: Vec<u8>,
    /// Close the client's connection after sending `frame`.
    pub close: bool,
}

/// The state of one shard.
pub struct ShardState {
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
    /// This shard's copy of the topic table.
    pub topics: RefCell<TopicTable>,
    /// The partitions this shard owns, by topic then partition number.
    pub partitions: RefCell<HashMap<String, HashMap<u32, Rc<Partition>>>>,
    /// Topics this shard is creating or deleting (as their controller):
    /// a second change to the same topic waits its turn by failing fast.
    pub changing: RefCell<HashSet<String>>,
    /// Links to the other shards.
    pub peers: Senders<ShardMessage>,
    /// Frame builder, reused between responses.
    pub writer: RefCell<FrameWriter>,
    /// The consumer groups this shard coordinates.
    pub groups: crate::groups::Groups,
    /// Requests being handled on this shard.
    pub in_flight: Cell<usize>,
    /// Signalled when `in_flight` drops to 0.
    pub drained: crate::partition::Arrivals,
    /// Set once a graceful stop began: long polls answer at once.
    pub stopping: Cell<bool>,
    /// This shard's metrics series.
    pub metrics: Arc<crate::metrics::ShardMetrics>,
    /// Client connections open on every shard: the one counter shards
    /// share, touched only when a connection opens or closes.
    pub open_connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a request in flight on its shard for as long as it lives.
pub struct InFlight(Rc<ShardState>);

impl InFlight {
    /// Counts one more request on `shard`.
    pub fn new(shard: Rc<ShardState>) -> InFlight {
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

impl ShardState {
    /// The partition `partition` of `topic`, if this shard owns it.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|t| t.get(&partition))
            .cloned()
    }

    /// Opens this shard's partitions of `topic` (recovering them) and
    /// serves them from now on.
    pub async fn open_partitions(&self, topic: &TopicMeta) -> Result<(), String> {
        let opened =
            crate::partition::open_owned(self.id, &self.metrics, &self.config, &self.data, topic)
                .await?;
        let mut partitions = self.partitions.borrow_mut();
        let entry = partitions.entry(topic.name.clone()).or_default();
        for p in opened {
            entry.insert(p.partition, Rc::new(p));
        }
        Ok(())
    }

    /// Stops serving this shard's partitions of `topic` and closes them.
    pub async fn close_partitions(&self, topic: &str) {
        let removed = self.partitions.borrow_mut().remove(topic);
        self.metrics.remove_topic(topic);
        for (p, partition) in removed.into_iter().flatten() {
            // Wake long polls so they answer now rather than at their deadline.
            partition.arrivals.notify();
            if let Err(e) = partition.log.close().await {
                tracing::warn!(topic, partition = p, error = %e, "closing a deleted partition failed");
            }
        }
    }

    /// Handles a message from another shard.
    pub async fn on_message(self: &Rc<Self>, msg: ShardMessage) {
        match msg {
            ShardMessage::Request { frame, reply } => {
                let answer = crate::handler::handle(self, frame, crate::handler::Via::Peer).await;
                let _ = reply.send(answer.into_forwarded());
            }
            ShardMessage::OpenPartitions { topic, reply } => {
                let _ = reply.send(self.open_partitions(&topic).await);
            }
            ShardMessage::ClosePartitions { topic, reply } => {
                self.close_partitions(&topic).await;
                let _ = reply.send(());
            }
            ShardMessage::TopicAdded { topic, reply } => {
                self.topics.borrow_mut().insert(topic);
                let _ = reply.send(());
            }
            ShardMessage::ListGroups { reply } => {
                let _ = reply.send(self.groups.summaries());
            }
            ShardMessage::TopicRemoved { topic, reply } => {
                self.topics.borrow_mut().remove(&topic);
                let _ = reply.send(());
            }
        }
    }

    /// Sends a request frame to shard `to` and waits for its reply; None
    /// if that shard is gone (it stopped, or dropped the request).
    pub async fn forward(&self, to: ShardId, frame: bytes::Bytes) -> Option<ForwardedReply> {
        let (tx, rx) = oneshot::channel();
        let msg = ShardMessage::Request { frame, reply: tx };
        self.peers.send_to(usize::from(to), msg).await.ok()?;
        rx.await.ok()
    }

    /// Every shard's consumer groups.
    pub async fn all_group_summaries(self: &Rc<Self>) -> Vec<(String, String, u32, i32)> {
        self.on_all_shards(|reply| ShardMessage::ListGroups { reply }, async {
            self.groups.summaries()
        })
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect()
    }

    /// Runs `make(reply)` on every shard (this one included, through
    /// `local`) and waits for every answer.
    async fn on_all_shards<T, M, L>(self: &Rc<Self>, make: M, local: L) -> Vec<Option<T>>
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

    /// Creates `topic` (this shard is its controller): commits its metadata
    /// file, has every owner open its partitions, then routes it on every
    /// shard. Once this returns Ok, every shard serves the topic.
    pub async fn create_topic(self: &Rc<Self>, topic: TopicMeta) -> Result<(), CreateError> {
        if self.topics.borrow().get(&topic.name).is_some() {
            return Err(CreateError::Exists);
        }
        if !self.changing.borrow_mut().insert(topic.name.clone()) {
            return Err(CreateError::Exists);
        }
        let result = self.create_topic_committed(topic.clone()).await;
        self.changing.borrow_mut().remove(&topic.name);
        if let Err(CreateError::Storage(e)) = &result {
            tracing::error!(topic = %topic.name, error = %e, "creating the topic failed");
            // Undo: nothing was routed yet, so the directory can go.
            self.close_everywhere(&topic.name).await;
            let _ = self.trash_topic_dir(&topic.name).await;
        }
        result
    }

    async fn create_topic_committed(self: &Rc<Self>, topic: TopicMeta) -> Result<(), CreateError> {
        let storage = |e: String| CreateError::Storage(e);
        let dir = self.data.topic_dir(&topic.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| storage(format!("cannot create {}: {e}", dir.display())))?;
        let bytes = serde_json::to_vec_pretty(&topic).map_err(|e| storage(e.to_string()))?;
        let file = self.data.topic_file(&topic.name);
        broker_log::io::write_file_atomic(&file, bytes)
            .await
            .map_err(|e| storage(e.to_string()))?;
        broker_log::io::sync_dir(&dir)
            .await
            .map_err(|e| storage(e.to_string()))?;
        broker_log::io::sync_dir(&self.data.topics_dir())
            .await
            .map_err(|e| storage(e.to_string()))?;
        let topic = Arc::new(topic);
        let opened = self
            .on_all_shards(
                |reply| ShardMessage::OpenPartitions {
                    topic: topic.clone(),
                    reply,
                },
                self.open_partitions(&topic),
            )
            .await;
        for answer in opened {
            match answer {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(storage(e)),
                None => return Err(storage("a shard did not answer".into())),
            }
        }
        self.on_all_shards(
            |reply| ShardMessage::TopicAdded {
                topic: topic.clone(),
                reply,
            },
            async {
                self.topics.borrow_mut().insert(topic.clone());
            },
        )
        .await;
        tracing::info!(topic = %topic.name, partitions = topic.partition_count(), "topic created");
        Ok(())
    }

    /// Deletes `name` (this shard is its controller): stops routing it on
    /// every shard, closes its partitions, then moves its directory to the
    /// trash in one rename and removes it.
    pub async fn delete_topic(self: &Rc<Self>, name: &str) -> Result<(), DeleteError> {
        if self.topics.borrow().get(name).is_none() {
            return Err(DeleteError::Unknown);
        }
        if !self.changing.borrow_mut().insert(name.to_owned()) {
            return Err(DeleteError::Busy);
        }
        let owned = name.to_owned();
        self.on_all_shards(
            |reply| ShardMessage::TopicRemoved {
                topic: owned.clone(),
                reply,
            },
            async {
                self.topics.borrow_mut().remove(name);
            },
        )
        .await;
        self.close_everywhere(name).await;
        let result = self.trash_topic_dir(name).await;
        self.changing.borrow_mut().remove(name);
        match result {
            Ok(()) => {
                tracing::info!(topic = name, "topic deleted");
                Ok(())
            }
            Err(e) => {
                tracing::error!(topic = name, error = %e, "deleting the topic's files failed");
                Err(DeleteError::Storage(e))
            }
        }
    }

    async fn close_everywhere(self: &Rc<Self>, name: &str) {
        let owned = name.to_owned();
        self.on_all_shards(
            |reply| ShardMessage::ClosePartitions {
                topic: owned.clone(),
                reply,
            },
            self.close_partitions(name),
        )
        .await;
    }

    /// Renames the topic's directory into the trash (the topic is gone from
    /// disk at that instant), fsyncs `topics/`, and removes the trash in the
    /// background (a restart removes what is left).
    async fn trash_topic_dir(&self, name: &str) -> Result<(), String> {
        let dir = self.data.topic_dir(name);
        if !dir.exists() {
            return Ok(());
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        let trash = self
            .data
            .topics_dir()
            .join(format!("{TRASH_PREFIX}{name}-{nanos}"));
        glommio::io::rename(&dir, &trash).await.map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                dir.display(),
                trash.display()
            )
        })?;
        broker_log::io::sync_dir(&self.data.topics_dir())
            .await
            .map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("trash".into())
            .spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&trash) {
                    tracing::warn!(path = %trash.display(), error = %e, "removing a deleted topic's files failed; the next start retries");
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the trash remover: {e}"))
    }

    /// A graceful stop, once the listeners are closed: wake long polls, let
    /// in-flight requests finish (up to `drain`), then flush, fsync and close
    /// every partition, so the next start needs no recovery truncation.
    pub async fn shut_down(&self, drain: Duration) {
        self.stopping.set(true);
        let partitions: Vec<Rc<Partition>> = self
            .partitions
            .borrow()
            .values()
            .flat_map(|t| t.values().cloned())
            .collect();
        for p in &partitions {
            p.arrivals.notify();
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
            if let Err(e) = p.log.close().await {
                tracing::error!(topic = %p.topic, partition = p.partition, error = %e,
                    "closing the partition failed");
            }
        }
        tracing::info!(shard = self.id, "shard stopped");
    }

    /// Applies retention to every partition of this shard.
    pub async fn enforce_retention(&self) {
        let partitions: Vec<Rc<Partition>> = self
            .partitions
            .borrow()
            .values()
            .flat_map(|t| t.values().cloned())
            .collect();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        for p in partitions {
            let result = p.log.enforce_retention(now_ms).await;
            p.update_gauges();
            match result {
                Ok(report) if !report.deleted.is_empty() => tracing::info!(
                    topic = %p.topic, partition = p.partition,
                    segments = report.deleted.len(), bytes = report.deleted_bytes,
                    log_start_offset = report.log_start_offset, "retention deleted segments"
                ),
                Ok(_) | Err(LogError::Closed) => {}
                Err(e) => tracing::warn!(topic = %p.topic, partition = p.partition,
                    error = %e, "retention failed"),
            }
        }
    }
}

/// Why a topic could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// It exists (or is being created or deleted).
    Exists,
    /// Its files could not be written or its partitions opened.
    Storage(String),
}

/// Why a topic could not be deleted.
#[derive(Debug)]
pub enum DeleteError {
    /// There is no such topic.
    Unknown,
    /// It is being created or deleted right now.
    Busy,
    /// Its files could not be removed.
    Storage(String),
}

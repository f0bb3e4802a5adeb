//! The follower's side of pull replication: one fetch session per leader
//! shard, for every partition this shard follows there (Kafka's replica
//! fetcher thread, one per source broker; here one task per leader shard).
//!
//! A session is a loop of long polls over one connection to the leader
//! shard's own native port: it sends the fetches its replicas want (each
//! replica at most one in flight), and always asks even with none, since
//! the leader answers parked fetches in later polls. Each answer's
//! partitions go to their replicas, which append (durably), then want to
//! fetch again. A session ends when this shard follows nothing on that
//! leader shard for a while, or the shard stops.
//!
//! Failure handling: a broken connection, a refused or late answer drops
//! the connection; the replicas' fetches then time out on their own
//! (`fetch_timeout_ms`) and are sent again on a new connection. Every read
//! is bounded: a frame above the broker's `max_frame_bytes` is refused
//! before anything is allocated, and an answer must come within the long
//! poll's wait plus [`ANSWER_MARGIN`].

use std::{
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::Duration,
};

use broker_protocol::{
    decode_as, decode_prefix, generated::ReplicaFetchError, generated::ReplicaFetchResponse,
    FrameWriter, ReplicaFetchParams, ReplicaFetchPartitionParams, FRAME_PREFIX_LEN,
};
use broker_replication::{
    limits::MAX_FETCH_BATCHES, BatchMeta, BrokerEpoch, BrokerId, EpochEnd, FetchError,
    FetchResponse, LeaderEpoch, Offset, PartitionId,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{FetchedBatches, Replicated};
use crate::shard::Shard;

/// How long the leader may hold a session's poll with nothing to send.
pub const MAX_WAIT_MS: u32 = 500;
/// How much longer than the poll's wait an answer may take.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// The payload budget of one poll, and of one partition in it.
pub const MAX_BYTES: u32 = 8 << 20;
/// Per partition.
pub const PARTITION_MAX_BYTES: u32 = 1 << 20;
/// How long a session with nothing to follow stays before it ends.
const IDLE_END: Duration = Duration::from_secs(5);
/// The pause after a failed connection or a refused poll.
const BACKOFF: Duration = Duration::from_millis(200);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the session for `replica`'s leader shard if none runs.
pub fn ensure_session(shard: &Rc<Shard>, replica: &Replicated) {
    let Some((leader, leader_shard)) = replica
        .outgoing
        .borrow()
        .as_ref()
        .map(|(to, _)| to.0)
        .zip(replica.leader_shard())
    else {
        return;
    };
    if !shard
        .replication()
        .sessions
        .borrow_mut()
        .insert((leader, leader_shard))
    {
        return;
    }
    tracing::info!(
        leader,
        leader_shard,
        shard = shard.id(),
        "replica fetch session starts"
    );
    glommio::spawn_local(session(Rc::clone(shard), leader, leader_shard)).detach();
}

/// The bytes of the first `count` whole batches of `bytes`.
pub fn prefix_len(bytes: &[u8], count: usize) -> usize {
    broker_format::batches(bytes)
        .take(count)
        .map_while(Result::ok)
        .map(|(_, b)| b.len())
        .sum()
}

async fn session(shard: Rc<Shard>, leader: u32, leader_shard: u16) {
    let mut conn: Option<TcpStream> = None;
    let mut idle_since = std::time::Instant::now();
    let mut writer = FrameWriter::new();
    let mut next_id = 1u64;
    while !shard.stopping() {
        let repl = shard.replication();
        let seen = repl.fetch_wanted.generation();
        let followers: Vec<Rc<Replicated>> = repl
            .all()
            .into_iter()
            .filter(|r| r.follows(leader, leader_shard))
            .collect();
        if followers.is_empty() {
            if idle_since.elapsed() >= IDLE_END {
                break;
            }
            repl.fetch_wanted
                .wait(seen, Duration::from_millis(100))
                .await;
            continue;
        }
        idle_since = std::time::Instant::now();
        let wanted: Vec<(Rc<Replicated>, broker_replication::FetchRequest)> = followers
            .iter()
            .filter_map(|r| r.take_outgoing(leader).map(|f| (Rc::clone(r), f)))
            .collect();
        let Some(addr) = leader_addr(&shard, leader, leader_shard) else {
            glommio::timer::sleep(BACKOFF).await;
            continue;
        };
        if conn.is_none() {
            let local = shard
                .endpoints()
                .get(usize::from(shard.id()))
                .map(SocketAddr::ip);
            match connect(&addr, local).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(leader, leader_shard, addr = %addr, error = %e,
                        "replica fetch session cannot connect");
                    glommio::timer::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let stream = conn.as_mut().expect("connected above");
        let id = next_id;
        next_id += 1;
        match poll(&shard, stream, &mut writer, id, &wanted).await {
            Ok(answers) => {
                for (replica, fetched) in answers {
                    replica.on_fetched(&shard, fetched).await;
                }
            }
            Err(e) => {
                tracing::debug!(leader, leader_shard, error = %e,
                    "replica fetch session: poll failed; reconnecting");
                conn = None;
                glommio::timer::sleep(BACKOFF).await;
            }
        }
    }
    shard
        .replication()
        .sessions
        .borrow_mut()
        .remove(&(leader, leader_shard));
    tracing::info!(
        leader,
        leader_shard,
        shard = shard.id(),
        "replica fetch session ends"
    );
}

fn leader_addr(shard: &Shard, leader: u32, leader_shard: u16) -> Option<String> {
    let image = shard.image()?;
    let record = image.broker(broker_cluster::BrokerId(leader))?;
    let l = &record.registration.native;
    let port = *l.shard_ports.get(usize::from(leader_shard))?;
    let (host, _) = crate::cluster::split_host_port(&l.addr);
    Some(format!("{host}:{port}"))
}

/// Connects to `addr` from this broker's own address `local` (so that
/// faults injected per address pair between brokers apply), on a blocking
/// thread: a shard never waits in connect(2).
async fn connect(addr: &str, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing")))?,
    };
    let connected = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<std::net::TcpStream> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            if let Some(ip) =
                local.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4())
            {
                socket.bind(&SocketAddr::new(ip, 0).into())?;
            }
            socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
            socket.set_tcp_nodelay(true)?;
            Ok(socket.into())
        })
        .await?;
    // SAFETY: the descriptor is a connected TCP socket whose ownership
    // moves to the glommio stream here (into_raw_fd gave it up).
    Ok(unsafe { TcpStream::from_raw_fd(connected.into_raw_fd()) })
}

/// Sends one poll with `wanted` and reads its answer: each partition's
/// response for its replica.
async fn poll(
    shard: &Shard,
    stream: &mut TcpStream,
    writer: &mut FrameWriter,
    id: u64,
    wanted: &[(Rc<Replicated>, broker_replication::FetchRequest)],
) -> Result<Vec<(Rc<Replicated>, FetchedBatches)>, String> {
    let me = shard.config().broker_id;
    let epoch = wanted.first().map_or_else(
        || {
            shard
                .image()
                .and_then(|i| i.broker(broker_cluster::BrokerId(me)).map(|r| r.epoch.0))
                .unwrap_or(0)
        },
        |(_, f)| f.replica_epoch.0,
    );
    let partitions: Vec<ReplicaFetchPartitionParams<'_>> = wanted
        .iter()
        .map(|(r, f)| ReplicaFetchPartitionParams {
            topic: r.partition().topic(),
            partition: r.partition().number(),
            leader_epoch: f.leader_epoch.0,
            fetch_offset: f.fetch_offset.0 as i64,
            last_fetched_epoch: f.last_fetched_epoch.map_or(-1, |e| i64::from(e.0)),
            fetch_id: f.fetch_id,
            max_bytes: PARTITION_MAX_BYTES,
        })
        .collect();
    let params = ReplicaFetchParams {
        replica: me,
        replica_epoch: epoch,
        replica_shard: shard.id(),
        max_wait_ms: MAX_WAIT_MS,
        max_bytes: MAX_BYTES,
        partitions: &partitions,
    };
    let mut out = Vec::with_capacity(256);
    writer
        .replica_fetch_request(&mut out, id, &params)
        .map_err(|e| format!("encoding the poll: {e}"))?;
    let limit = Duration::from_millis(u64::from(MAX_WAIT_MS)) + ANSWER_MARGIN;
    let max_frame = shard.config().max_frame_bytes;
    let frame = within(limit, async {
        stream.write_all(&out).await?;
        read_frame(stream, max_frame).await
    })
    .await
    .ok_or_else(|| format!("no answer within {limit:?}"))?
    .map_err(|e| format!("the poll: {e}"))?;
    let frame = bytes::Bytes::from(frame);
    let decoded = decode_as::<ReplicaFetchResponse>(&frame, max_frame)
        .map_err(|e| format!("the answer: {e}"))?;
    if decoded.header.request_id() != id {
        return Err(format!(
            "answer to request {} where {id} was asked",
            decoded.header.request_id()
        ));
    }
    if let Some(error) = decoded.body.error() {
        return Err(format!(
            "the leader refused the poll: {:?} {}",
            error.code(),
            error.message().unwrap_or("")
        ));
    }
    let slices = broker_protocol::replica_fetch_slices(&decoded.body, decoded.payload)
        .map_err(|e| format!("the answer's payload: {e}"))?;
    let payload_start = frame.len() - decoded.payload.len();
    let mut offset_in_payload = 0usize;
    let mut answers = Vec::new();
    let repl = shard.replication();
    for (result, slice) in decoded.body.partitions().iter().flatten().zip(slices) {
        let start = payload_start + offset_in_payload;
        offset_in_payload += slice.len();
        let Some(replica) = repl.get(result.topic(), result.partition()) else {
            continue;
        };
        let error = match result.error() {
            ReplicaFetchError::None => None,
            ReplicaFetchError::FencedLeaderEpoch => Some(FetchError::FencedLeaderEpoch),
            ReplicaFetchError::UnknownLeaderEpoch => Some(FetchError::UnknownLeaderEpoch),
            ReplicaFetchError::UnknownReplica => Some(FetchError::UnknownReplica),
            _ => Some(FetchError::NotLeaderOrFollower),
        };
        let diverging_epoch = (result.diverging_epoch() >= 0 && result.diverging_end_offset() >= 0)
            .then(|| EpochEnd {
                epoch: LeaderEpoch(result.diverging_epoch() as u32),
                end_offset: Offset(result.diverging_end_offset() as u64),
            });
        let mut batches = Vec::new();
        let mut len = 0usize;
        for batch in broker_format::batches(slice).take(MAX_FETCH_BATCHES) {
            let Ok((header, bytes)) = batch else {
                break;
            };
            if header.base_offset < 0 || header.last_offset_delta < 0 {
                break;
            }
            let base = header.base_offset as u64;
            batches.push(BatchMeta {
                base_offset: Offset(base),
                last_offset: Offset(base + header.last_offset_delta as u64),
                epoch: LeaderEpoch(header.partition_leader_epoch.max(0) as u32),
            });
            len += bytes.len();
        }
        let response = FetchResponse {
            partition: PartitionId(result.partition()),
            leader: BrokerId(result.leader()),
            leader_epoch: LeaderEpoch(result.leader_epoch()),
            fetch_id: result.fetch_id(),
            fetch_offset: Offset(result.fetch_offset().max(0) as u64),
            replica_epoch: BrokerEpoch(result.replica_epoch()),
            error,
            diverging_epoch,
            high_watermark: Offset(result.high_watermark().max(0) as u64),
            batches,
        };
        answers.push((
            replica,
            FetchedBatches {
                response,
                bytes: frame.slice(start..start + len),
            },
        ));
    }
    Ok(answers)
}

/// `f`'s output, or None if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// Reads one whole frame, its length checked before anything is allocated.
async fn read_frame(stream: &mut TcpStream, max_frame: usize) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    stream.read_exact(&mut prefix).await?;
    let header = decode_prefix(&prefix, max_frame)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .ok_or_else(|| std::io::Error::other("short frame prefix"))?;
    let total = header.frame_bytes();
    let mut frame = vec![0u8; total];
    frame[..FRAME_PREFIX_LEN].copy_from_slice(&prefix);
    stream.read_exact(&mut frame[FRAME_PREFIX_LEN..]).await?;
    Ok(frame)
}

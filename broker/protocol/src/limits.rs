//! Every bound the wire protocol puts on what a peer can make us allocate or
//! compute, in one place, each with its reason. Decoding checks them before it
//! allocates or walks anything a length or count field describes.

use super::frame::FRAME_PREFIX_LEN;

/// Default largest frame, in bytes, prefix included: 64 MiB.
///
/// A receiver buffers a whole frame before it decodes it, so this bounds
/// what one request makes a connection hold. 64 MiB is eight times the log's
/// default batch limit (8 MiB), so a produce of several large batches or a
/// fetch with a generous `max_bytes` fits; callers pass their own, usually
/// smaller, limit to each decode call.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// Largest frame the format can express: `frame_len` is a u32 counting the
/// bytes after itself.
pub const MAX_ENCODABLE_FRAME_BYTES: u64 = u32::MAX as u64 + 4;

/// Largest flatbuffer header, in bytes: 1 MiB.
///
/// Headers are small (a produce or fetch header is well under 100 bytes);
/// the largest legitimate one is a Metadata response, about 16-30 bytes per
/// partition, so 1 MiB describes tens of thousands of partitions in one
/// answer. It bounds the verifier's work on every frame, whatever
/// `max_frame` a caller chose.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// Deepest nesting of tables the verifier accepts.
///
/// The schema's deepest path is 3 tables (MetadataResponse > TopicMetadata >
/// PartitionMetadata or Error); 16 leaves room for the schema to grow while
/// bounding the verifier's recursion, which hostile input would otherwise
/// drive as deep as the header allows.
pub const VERIFIER_MAX_DEPTH: usize = 16;

/// Most table visits the verifier makes in one header.
///
/// Every table in a tree is reached through a 4-byte offset and starts with a
/// 4-byte vtable offset, so a header of [`MAX_HEADER_BYTES`] without shared
/// subtrees holds at most `MAX_HEADER_BYTES / 8` tables. More visits mean a
/// DAG built to make the verifier walk the same table again and again
/// (exponentially many times through nested vectors).
pub const VERIFIER_MAX_TABLES: usize = MAX_HEADER_BYTES / 8;

/// Most bytes the verifier reads in one header, counting every revisit.
///
/// A legitimate tree costs at most about 4 times its size (each table visit
/// also reads its shared vtable); 8 times [`MAX_HEADER_BYTES`] accepts every
/// legitimate header and stops a DAG that points many vector entries at one
/// large string, which would otherwise cost one UTF-8 check per entry.
pub const VERIFIER_MAX_APPARENT_BYTES: usize = 8 * MAX_HEADER_BYTES;

/// Longest topic name, in bytes, in any request: Kafka's 249.
///
/// A topic name becomes a directory name (with a partition suffix), which
/// file systems cap at 255 bytes.
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// Most topics one Metadata request may name.
///
/// The broker looks each one up and answers for each, so this bounds the
/// work and the size of the answer one request can demand; all topics are
/// asked for with an empty list instead.
pub const MAX_TOPICS_PER_REQUEST: usize = 1024;

/// Most partitions a CreateTopic request may ask for.
///
/// Each partition costs a directory, open files and memory on its shard, and
/// the Metadata answer grows with it (at ~30 bytes a partition, 10 000 of them
/// stay well inside [`MAX_HEADER_BYTES`]).
pub const MAX_PARTITIONS_PER_TOPIC: usize = 10_000;

// The limits must admit the frames they describe.
const _: () = assert!(FRAME_PREFIX_LEN + MAX_HEADER_BYTES <= DEFAULT_MAX_FRAME_BYTES);
const _: () = assert!(DEFAULT_MAX_FRAME_BYTES as u64 <= MAX_ENCODABLE_FRAME_BYTES);

/// Longest group name and member id, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 249;

/// Most partition offsets one OffsetCommit, OffsetFetch or JoinGroup
/// answer may carry.
pub const MAX_PARTITIONS_PER_REQUEST: usize = 100_000;

/// Most partitions one ReplicaFetch request or response may carry, checked
/// on decode of both (and on encode, so a peer never receives one it must
/// refuse).
///
/// A follower shard keeps one fetch session with each leader shard for all
/// the partitions that pair shares, so this bounds the work one request
/// makes the leader do and the follower do with the answer. A result is
/// about 100 bytes of header when topic names are shared (the writers share
/// them): 10 000 results with every field set, over 1 000 topics of
/// 100-byte names, take 1 016 224 bytes, just inside [`MAX_HEADER_BYTES`]
/// (the crate's tests build that answer). Many distinct long names do not
/// fit: the writer then refuses with `HeaderTooLarge`, and the follower must
/// ask for fewer partitions per request (a request costs about half as much
/// per partition).
pub const MAX_PARTITIONS_PER_REPLICA_FETCH: usize = 10_000;

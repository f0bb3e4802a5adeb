//! Kafka's error codes, and the one mapping from the service's
//! [`ErrorKind`] to them. Codes a client retries on (NOT_LEADER_OR_FOLLOWER,
//! UNKNOWN_TOPIC_OR_PARTITION, COORDINATOR_NOT_AVAILABLE, ...) are used
//! wherever the condition is one a retry or a metadata refresh can cure.

use crate::error::{ErrorKind, ServiceError};

/// No error.
pub const NONE: i16 = 0;
/// UNKNOWN_SERVER_ERROR.
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
/// OFFSET_OUT_OF_RANGE.
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
/// CORRUPT_MESSAGE.
pub const CORRUPT_MESSAGE: i16 = 2;
/// UNKNOWN_TOPIC_OR_PARTITION (retriable).
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// LEADER_NOT_AVAILABLE (retriable: the partition's broker is fenced).
pub const LEADER_NOT_AVAILABLE: i16 = 5;
/// NOT_LEADER_OR_FOLLOWER (retriable: refresh metadata).
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// MESSAGE_TOO_LARGE.
pub const MESSAGE_TOO_LARGE: i16 = 10;
/// COORDINATOR_NOT_AVAILABLE (retriable).
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// NOT_COORDINATOR (retriable: find the coordinator again).
pub const NOT_COORDINATOR: i16 = 16;
/// INVALID_TOPIC_EXCEPTION.
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
/// INVALID_REQUIRED_ACKS.
pub const INVALID_REQUIRED_ACKS: i16 = 21;
/// INCONSISTENT_GROUP_PROTOCOL.
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
/// ILLEGAL_GENERATION.
pub const ILLEGAL_GENERATION: i16 = 22;
/// UNKNOWN_MEMBER_ID.
pub const UNKNOWN_MEMBER_ID: i16 = 25;
/// INVALID_SESSION_TIMEOUT.
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
/// REBALANCE_IN_PROGRESS.
pub const REBALANCE_IN_PROGRESS: i16 = 27;
/// UNSUPPORTED_VERSION.
pub const UNSUPPORTED_VERSION: i16 = 35;
/// TOPIC_ALREADY_EXISTS.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
/// INVALID_PARTITIONS.
pub const INVALID_PARTITIONS: i16 = 37;
/// INVALID_REPLICATION_FACTOR.
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
/// INVALID_CONFIG.
pub const INVALID_CONFIG: i16 = 40;
/// INVALID_REQUEST.
pub const INVALID_REQUEST: i16 = 42;
/// OUT_OF_ORDER_SEQUENCE_NUMBER.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// INVALID_PRODUCER_EPOCH.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
/// UNKNOWN_PRODUCER_ID (the producer bumps its epoch, KIP-360).
pub const UNKNOWN_PRODUCER_ID: i16 = 59;
/// REQUEST_TIMED_OUT (retriable; the outcome is unknown).
pub const REQUEST_TIMED_OUT: i16 = 7;
/// NOT_ENOUGH_REPLICAS (retriable; nothing was written).
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND (retriable; written, outcome unknown).
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
/// KAFKA_STORAGE_ERROR (retriable).
pub const KAFKA_STORAGE_ERROR: i16 = 56;
/// UNKNOWN_TOPIC_ID (topic ids are not supported: every id is unknown).
pub const UNKNOWN_TOPIC_ID: i16 = 100;
/// GROUP_ID_NOT_FOUND.
pub const GROUP_ID_NOT_FOUND: i16 = 69;
/// MEMBER_ID_REQUIRED: join again with the member id in the answer.
pub const MEMBER_ID_REQUIRED: i16 = 79;
/// INVALID_GROUP_ID.
pub const INVALID_GROUP_ID: i16 = 24;

/// The Kafka error code of a service error.
pub fn code(e: &ServiceError) -> i16 {
    match e.kind {
        ErrorKind::UnknownTopic | ErrorKind::UnknownPartition => UNKNOWN_TOPIC_OR_PARTITION,
        ErrorKind::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        ErrorKind::InvalidReplicationFactor => INVALID_REPLICATION_FACTOR,
        ErrorKind::NotOwner => NOT_LEADER_OR_FOLLOWER,
        ErrorKind::CorruptBatch => CORRUPT_MESSAGE,
        ErrorKind::BatchTooLarge => MESSAGE_TOO_LARGE,
        ErrorKind::NoSpace | ErrorKind::Storage => KAFKA_STORAGE_ERROR,
        ErrorKind::InvalidRequest => INVALID_REQUEST,
        ErrorKind::TopicExists => TOPIC_ALREADY_EXISTS,
        ErrorKind::UnknownMember => UNKNOWN_MEMBER_ID,
        ErrorKind::IllegalGeneration | ErrorKind::NotAssigned => ILLEGAL_GENERATION,
        ErrorKind::RebalanceInProgress => REBALANCE_IN_PROGRESS,
        ErrorKind::InconsistentGroupProtocol => INCONSISTENT_GROUP_PROTOCOL,
        ErrorKind::Internal => UNKNOWN_SERVER_ERROR,
        ErrorKind::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorKind::ProducerFenced => INVALID_PRODUCER_EPOCH,
        ErrorKind::UnknownProducer => UNKNOWN_PRODUCER_ID,
        ErrorKind::NotEnoughReplicas => NOT_ENOUGH_REPLICAS,
        ErrorKind::NotEnoughReplicasAfterAppend => NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorKind::Indeterminate => REQUEST_TIMED_OUT,
    }
}

/// The Kafka error code of a group operation's error: as [`code`], but a
/// failure of the coordinator itself (the offsets topic missing, a shard
/// stopping) is COORDINATOR_NOT_AVAILABLE, which clients retry after
/// finding the coordinator again; one on another broker is NOT_COORDINATOR.
pub fn group_code(e: &ServiceError) -> i16 {
    match e.kind {
        ErrorKind::Internal => COORDINATOR_NOT_AVAILABLE,
        // The group's coordinator is on another broker of the cluster.
        ErrorKind::NotOwner => NOT_COORDINATOR,
        _ => code(e),
    }
}

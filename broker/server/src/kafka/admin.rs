//! CreateTopics (key 19), versions 2-7 (v5+ flexible), and DeleteTopics
//! (key 20), versions 1-6 (v4+ flexible): thin translations onto
//! [`topics::create`], [`topics::validate_create`] and [`topics::delete`].
//!
//! CreateTopics, per topic, in this order of checks:
//! - a name given twice in one request: INVALID_REQUEST (as Kafka);
//! - `replication_factor` other than -1 (the broker's default,
//!   `--default-replication-factor`) or 1..=16: INVALID_REPLICATION_FACTOR
//!   (and so is more than 1 on a broker on its own, or more than the
//!   cluster's brokers that can take a replica: the controllers' refusal);
//! - manual `assignments`: INVALID_REQUEST (placement is the broker's);
//! - `num_partitions` other than -1 (the broker's default) or
//!   1..=[`MAX_PARTITIONS_PER_TOPIC`]: INVALID_PARTITIONS;
//! - a name that is not a valid topic name, or an internal one ("__"):
//!   INVALID_TOPIC_EXCEPTION;
//! - `configs` mapped by [`configs::topic_settings`]: INVALID_CONFIG naming
//!   the key;
//! - an existing topic: TOPIC_ALREADY_EXISTS.
//!
//! `validate_only` runs every check and answers what would be created,
//! creating nothing. `timeout_ms` is ignored: a create answers once the
//! topic is usable on every shard. v5+ answers carry the topic's partition
//! count, replication factor (1) and configs; topic ids (v7) are not
//! supported (the nil id).
//!
//! DeleteTopics: an unknown name is UNKNOWN_TOPIC_OR_PARTITION; an entry
//! by topic id only (v6) is UNKNOWN_TOPIC_ID (topic ids are not
//! supported); a name given twice is INVALID_REQUEST.

use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::configs::{self, topic_entries, ConfigRefused};
use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request, Response};
use crate::error::{ErrorKind, ServiceError};
use crate::metadata::{validate_topic_name, TopicConfig};
use crate::service::{is_internal, topics};
use crate::shard::Shard;
use broker_protocol::limits::MAX_PARTITIONS_PER_TOPIC;

/// One topic of a CreateTopics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatableTopic<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its partition count; -1 for the broker's default.
    pub num_partitions: i32,
    /// Its replication factor; -1 for the broker's default.
    pub replication_factor: i16,
    /// Manual replica assignment: (partition, broker ids).
    pub assignments: Vec<(i32, Vec<i32>)>,
    /// Its configs: (name, value).
    pub configs: Vec<(&'a str, Option<&'a str>)>,
}

/// A decoded CreateTopics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsRequest<'a> {
    /// The topics, in request order.
    pub topics: Vec<CreatableTopic<'a>>,
    /// How long the client waits (ignored).
    pub timeout_ms: i32,
    /// Check only, create nothing.
    pub validate_only: bool,
}

/// Decodes a CreateTopics request's body (versions 2-7).
pub fn decode<'a>(
    d: &mut Decoder<'a>,
    _v: i16,
    flex: bool,
) -> DecodeResult<CreateTopicsRequest<'a>> {
    // Smallest encodings: a topic is a name, two ints, two array lengths
    // (and tagged fields); an assignment an int and an array length; a
    // config a name and a value.
    let (topic_min, assignment_min, config_min) = if flex { (10, 6, 3) } else { (16, 8, 4) };
    let n = d.count(flex, topic_min)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.string(flex)?;
        let num_partitions = d.i32()?;
        let replication_factor = d.i16()?;
        let m = d.count(flex, assignment_min)?;
        let mut assignments = Vec::with_capacity(m);
        for _ in 0..m {
            let partition = d.i32()?;
            let k = d.count(flex, 4)?;
            let mut brokers = Vec::with_capacity(k);
            for _ in 0..k {
                brokers.push(d.i32()?);
            }
            d.tagged_fields(flex)?;
            assignments.push((partition, brokers));
        }
        let m = d.count(flex, config_min)?;
        let mut configs = Vec::with_capacity(m);
        for _ in 0..m {
            let key = d.string(flex)?;
            let value = d.nullable_string(flex)?;
            d.tagged_fields(flex)?;
            configs.push((key, value));
        }
        d.tagged_fields(flex)?;
        topics.push(CreatableTopic {
            name,
            num_partitions,
            replication_factor,
            assignments,
            configs,
        });
    }
    let timeout_ms = d.i32()?;
    let validate_only = d.bool()?;
    d.tagged_fields(flex)?;
    Ok(CreateTopicsRequest {
        topics,
        timeout_ms,
        validate_only,
    })
}

/// A topic refused: its error code and message.
type Refusal = (i16, String);

/// The service's request for `t`, or why the codec refuses it (the checks
/// of the module's doc, up to the configs).
pub fn check_topic(t: &CreatableTopic<'_>) -> Result<topics::CreateTopic, Refusal> {
    let replication_factor = match t.replication_factor {
        -1 => None,
        n if n >= 1 && n as usize <= broker_cluster::MAX_REPLICAS => Some(n as u16),
        n => {
            return Err((
                errors::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {n}: must be -1 (the broker's default) or 1..={}",
                    broker_cluster::MAX_REPLICAS
                ),
            ))
        }
    };
    if !t.assignments.is_empty() {
        return Err((
            errors::INVALID_REQUEST,
            "manual replica assignment is not supported: the broker places partitions; \
             give num_partitions instead"
                .into(),
        ));
    }
    let partitions = match t.num_partitions {
        -1 => None,
        n if n >= 1 && n as usize <= MAX_PARTITIONS_PER_TOPIC => Some(n as u32),
        n => {
            return Err((
                errors::INVALID_PARTITIONS,
                format!(
                    "num_partitions = {n}: must be -1 (the broker's default) or \
                     1..={MAX_PARTITIONS_PER_TOPIC}"
                ),
            ))
        }
    };
    if let Err(e) = validate_topic_name(t.name) {
        return Err((errors::INVALID_TOPIC_EXCEPTION, e.to_string()));
    }
    if is_internal(t.name) {
        return Err((
            errors::INVALID_TOPIC_EXCEPTION,
            format!(
                "topic names starting with \"__\" are reserved for the broker: {:?}",
                t.name
            ),
        ));
    }
    let settings = configs::topic_settings(&t.configs)
        .map_err(|ConfigRefused(m)| (errors::INVALID_CONFIG, m))?;
    let (min_insync_replicas, unclean_leader_election) = configs::replication_settings(&t.configs);
    Ok(topics::CreateTopic {
        name: t.name.to_owned(),
        partitions,
        settings,
        log_append_time: configs::log_append_time(&t.configs),
        replication_factor,
        min_insync_replicas,
        unclean_leader_election,
    })
}

fn refusal(e: &ServiceError) -> Refusal {
    let code = match e.kind {
        ErrorKind::TopicExists => errors::TOPIC_ALREADY_EXISTS,
        _ => errors::code(e),
    };
    (code, e.message.clone())
}

/// Creates (or with `validate_only` checks) one topic: its partition
/// count and settings.
async fn create_one(
    shard: &Rc<Shard>,
    t: &CreatableTopic<'_>,
    validate_only: bool,
) -> Result<(u32, TopicConfig), Refusal> {
    let request = check_topic(t)?;
    if validate_only {
        let meta = topics::validate_create(shard, &request).map_err(|e| refusal(&e))?;
        return Ok((meta.partition_count(), meta.config));
    }
    let meta = topics::create(shard, request)
        .await
        .map_err(|e| refusal(&e))?;
    Ok((meta.partition_count(), meta.config))
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Answers a CreateTopics request.
pub async fn create_topics(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let v = request.version;
    let asked = decode(&mut request.body, v, request.flexible)?;
    let mut results = Vec::with_capacity(asked.topics.len());
    for (i, t) in asked.topics.iter().enumerate() {
        let twice = asked
            .topics
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.name == t.name);
        let outcome = if twice {
            Err((
                errors::INVALID_REQUEST,
                format!("topic {:?} appears more than once in the request", t.name),
            ))
        } else {
            create_one(shard, t, asked.validate_only).await
        };
        let result = CreatableTopicResult::default().with_name(TopicName(text(t.name)));
        results.push(match outcome {
            Ok((partitions, config)) => {
                let mut r = result.with_error_code(errors::NONE).with_error_message(None);
                if v >= 5 {
                    let entries = topic_entries(&config, shard.config())
                        .into_iter()
                        .map(|e| {
                            CreatableTopicConfigs::default()
                                .with_name(text(e.name))
                                .with_value(Some(text(e.value)))
                                .with_read_only(e.read_only)
                                .with_config_source(e.source)
                                .with_is_sensitive(false)
                        })
                        .collect();
                    r = r
                        .with_num_partitions(partitions as i32)
                        .with_replication_factor(config.replication_factor as i16)
                        .with_configs(Some(entries));
                }
                r
            }
            Err((code, message)) => {
                tracing::info!(topic = t.name, code, %message, "Kafka CreateTopics refused a topic");
                result
                    .with_error_code(code)
                    .with_error_message(Some(text(message)))
            }
        });
    }
    Ok(encode_with(
        &request,
        &CreateTopicsResponse::default().with_topics(results),
    ))
}

/// One topic of a DeleteTopics request: by name (every version) or by id
/// (v6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopic<'a> {
    /// The name; None (v6) when the topic is named by id.
    pub name: Option<&'a str>,
    /// The topic id (v6; zero before).
    pub topic_id: [u8; 16],
}

/// A decoded DeleteTopics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsRequest<'a> {
    /// The topics, in request order.
    pub topics: Vec<DeleteTopic<'a>>,
    /// How long the client waits (ignored).
    pub timeout_ms: i32,
}

/// Decodes a DeleteTopics request's body (versions 1-6).
pub fn decode_delete<'a>(
    d: &mut Decoder<'a>,
    v: i16,
    flex: bool,
) -> DecodeResult<DeleteTopicsRequest<'a>> {
    let mut topics;
    if v >= 6 {
        // A nullable name (1) + a UUID (16) + tagged fields (1).
        let n = d.count(flex, 18)?;
        topics = Vec::with_capacity(n);
        for _ in 0..n {
            let name = d.nullable_string(flex)?;
            let topic_id = d.uuid()?;
            d.tagged_fields(flex)?;
            topics.push(DeleteTopic { name, topic_id });
        }
    } else {
        let n = d.count(flex, if flex { 1 } else { 2 })?;
        topics = Vec::with_capacity(n);
        for _ in 0..n {
            topics.push(DeleteTopic {
                name: Some(d.string(flex)?),
                topic_id: [0; 16],
            });
        }
    }
    let timeout_ms = d.i32()?;
    d.tagged_fields(flex)?;
    Ok(DeleteTopicsRequest { topics, timeout_ms })
}

/// Answers a DeleteTopics request (encoded by hand: the answer echoes
/// topic ids, which the crate's response holds as a type this crate does
/// not depend on).
pub async fn delete_topics(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let (v, flex) = (request.version, request.flexible);
    let asked = decode_delete(&mut request.body, v, flex)?;
    let mut outcomes = Vec::with_capacity(asked.topics.len());
    for (i, t) in asked.topics.iter().enumerate() {
        let twice = asked
            .topics
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && t.name.is_some() && o.name == t.name);
        // A name given twice is refused on every entry, as Kafka does.
        let outcome: Result<(), Refusal> = match t.name {
            None => Err((
                errors::UNKNOWN_TOPIC_ID,
                "topic ids are not supported by this broker: delete topics by name".into(),
            )),
            Some(name) if twice => Err((
                errors::INVALID_REQUEST,
                format!("topic {name:?} appears more than once in the request"),
            )),
            Some(name) => topics::delete(shard, name).await.map_err(|e| refusal(&e)),
        };
        outcomes.push(outcome);
    }
    let mut e = Response::start(&request, if flex { 1 } else { 0 });
    e.i32(0); // throttle_time_ms
    e.array_len(flex, asked.topics.len());
    for (t, outcome) in asked.topics.iter().zip(&outcomes) {
        if v >= 6 {
            e.nullable_string(flex, t.name);
            e.buf.extend_from_slice(&t.topic_id);
        } else {
            e.string(flex, t.name.unwrap_or_default());
        }
        match outcome {
            Ok(()) => {
                e.i16(errors::NONE);
                if v >= 5 {
                    e.nullable_string(flex, None);
                }
            }
            Err((code, message)) => {
                e.i16(*code);
                if v >= 5 {
                    e.nullable_string(flex, Some(message));
                }
            }
        }
        e.tagged_fields(flex);
    }
    e.tagged_fields(flex);
    Ok(Reply::Send(Response::finish(e, Vec::new())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn topic(name: &str) -> CreatableTopic<'_> {
        CreatableTopic {
            name,
            num_partitions: 3,
            replication_factor: 1,
            assignments: vec![],
            configs: vec![("retention.ms", Some("60000"))],
        }
    }

    #[test]
    fn a_good_topic_becomes_the_services_request() {
        let r = check_topic(&topic("orders")).unwrap();
        assert_eq!(r.name, "orders");
        assert_eq!(r.partitions, Some(3));
        assert_eq!(r.settings.retention_ms, 60_000);
        let defaults = CreatableTopic {
            num_partitions: -1,
            replication_factor: -1,
            ..topic("orders")
        };
        assert_eq!(check_topic(&defaults).unwrap().partitions, None);
        assert_eq!(check_topic(&defaults).unwrap().replication_factor, None);
    }

    #[test]
    fn each_bad_field_gets_its_kafka_error() {
        let code = |t: CreatableTopic<'_>| check_topic(&t).unwrap_err().0;
        for rf in [0, -2, 17] {
            assert_eq!(
                code(CreatableTopic {
                    replication_factor: rf,
                    ..topic("a")
                }),
                errors::INVALID_REPLICATION_FACTOR
            );
        }
        // Three replicas pass the codec: the cluster decides.
        let three = CreatableTopic {
            replication_factor: 3,
            ..topic("a")
        };
        assert_eq!(check_topic(&three).unwrap().replication_factor, Some(3));
        assert_eq!(
            code(CreatableTopic {
                assignments: vec![(0, vec![0])],
                ..topic("a")
            }),
            errors::INVALID_REQUEST
        );
        for n in [0, -2, MAX_PARTITIONS_PER_TOPIC as i32 + 1] {
            assert_eq!(
                code(CreatableTopic {
                    num_partitions: n,
                    ..topic("a")
                }),
                errors::INVALID_PARTITIONS
            );
        }
        for name in ["", "a b", "__internal", ".hidden"] {
            assert_eq!(
                code(topic(name)),
                errors::INVALID_TOPIC_EXCEPTION,
                "{name:?}"
            );
        }
        assert_eq!(
            code(CreatableTopic {
                configs: vec![("flush.ms", Some("1"))],
                ..topic("a")
            }),
            errors::INVALID_CONFIG
        );
    }
}

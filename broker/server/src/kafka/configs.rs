//! Kafka's names for our settings, both ways, and DescribeConfigs (key 32),
//! versions 1-4 (v4 flexible).
//!
//! A topic has four settings of its own ([`TopicConfig`]): Kafka's
//! `retention.ms`, `retention.bytes`, `segment.bytes` and
//! `message.timestamp.type` (CreateTime, the default: batches keep the
//! producer's timestamps; or LogAppendTime: the broker stamps them),
//! settable when the topic is created ([`topic_settings`],
//! [`log_append_time`]; -1 is "no limit" for the first two, as in Kafka).
//! Everything else Kafka would let a topic override is fixed here and
//! described as it is: `cleanup.policy=delete` (no compaction),
//! `compression.type=producer` (batches are stored as they
//! came), `max.message.bytes` = the broker's largest batch,
//! `min.insync.replicas=1` (one copy). A create naming any other key, or
//! `cleanup.policy=compact`, is refused with INVALID_CONFIG naming it: a
//! setting silently ignored would be a lie to the client.
//!
//! Sources (KIP-226's `config_source`): a topic value that differs from the
//! broker's default is TOPIC_CONFIG; otherwise the broker's, which is
//! STATIC_BROKER_CONFIG when the broker's value differs from the built-in
//! default ([`ServerConfig::default`]) and DEFAULT_CONFIG when not.
//! `read_only` is true for what cannot be changed at all (the fixed ones and
//! every broker config: there is no AlterConfigs); the three settable
//! topic configs are not read-only (they are set at create).
//!
//! DescribeConfigs answers resource type 2 (a topic; UNKNOWN_TOPIC_OR_PARTITION
//! if it does not exist) and 4 (a broker: any of this broker's node ids, or
//! the empty name for the cluster's defaults; another id is INVALID_REQUEST,
//! as Kafka answers a broker id that is not its own). Other resource types
//! (broker loggers, client metrics, groups) are INVALID_REQUEST. Null
//! `configuration_keys` asks for every config; named keys this broker does
//! not have are left out, as Kafka does.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::config::ServerConfig;
use crate::metadata::TopicConfig;
use crate::shard::Shard;
use broker_log::config::{SEGMENT_BYTES_LIMIT, SEGMENT_BYTES_MIN};
use broker_protocol::{TopicSettings, NO_LIMIT};

/// Kafka's config resource types (`ConfigResource.Type`).
pub mod resource {
    /// A topic.
    pub const TOPIC: i8 = 2;
    /// A broker.
    pub const BROKER: i8 = 4;
}

/// Kafka's config sources (`DescribeConfigsResponse.ConfigSource`).
pub mod source {
    /// Set on the topic.
    pub const TOPIC_CONFIG: i8 = 1;
    /// Set in the broker's configuration (file or flags).
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    /// The built-in default.
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's config types (KIP-569, DescribeConfigs v3+).
pub mod kind {
    /// true / false.
    pub const BOOLEAN: i8 = 1;
    /// A string.
    pub const STRING: i8 = 2;
    /// An INT32.
    pub const INT: i8 = 3;
    /// An INT16.
    pub const SHORT: i8 = 4;
    /// An INT64.
    pub const LONG: i8 = 5;
    /// A comma-separated list.
    pub const LIST: i8 = 7;
}

/// One config as DescribeConfigs (and CreateTopics v5+) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Kafka's name for it.
    pub name: &'static str,
    /// Its value, as Kafka writes it.
    pub value: String,
    /// Whether it cannot be changed.
    pub read_only: bool,
    /// Where the value comes from ([`source`]).
    pub source: i8,
    /// Its type ([`kind`]).
    pub config_type: i8,
    /// The configs that could set it, most specific first (KIP-226).
    pub synonyms: Vec<Synonym>,
}

/// A synonym of a config: a name that sets it, its value and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    /// The name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// Its source.
    pub source: i8,
}

/// A CreateTopics config refused: Kafka's INVALID_CONFIG, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRefused(pub String);

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_owned(), |v| v.to_string())
}

/// The settings a CreateTopics request's `configs` ask for, in our terms
/// (each left to the broker's default unless named). Refuses a null value,
/// a key given twice, a value out of range, `cleanup.policy` other than
/// `delete`, and any other key.
pub fn topic_settings(configs: &[(&str, Option<&str>)]) -> Result<TopicSettings, ConfigRefused> {
    let mut settings = TopicSettings::default();
    for (i, &(key, value)) in configs.iter().enumerate() {
        if configs[..i].iter().any(|&(k, _)| k == key) {
            return Err(ConfigRefused(format!("config {key} is given twice")));
        }
        let Some(value) = value else {
            return Err(ConfigRefused(format!(
                "null value not supported for topic config {key}"
            )));
        };
        let number = || -> Result<i64, ConfigRefused> {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| ConfigRefused(format!("{key} = {value:?}: not a whole number")))
        };
        let limit = || -> Result<i64, ConfigRefused> {
            match number()? {
                -1 => Ok(NO_LIMIT),
                v if v >= 1 => Ok(v),
                v => Err(ConfigRefused(format!(
                    "{key} = {v}: must be -1 (no limit) or at least 1"
                ))),
            }
        };
        match key {
            "retention.ms" => settings.retention_ms = limit()?,
            "retention.bytes" => settings.retention_bytes = limit()?,
            "segment.bytes" => {
                let v = number()?;
                if !(SEGMENT_BYTES_MIN as i64..=SEGMENT_BYTES_LIMIT as i64).contains(&v) {
                    return Err(ConfigRefused(format!(
                        "segment.bytes = {v}: must be in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_LIMIT}"
                    )));
                }
                settings.segment_bytes = v;
            }
            // Read by `log_append_time`; checked here.
            "message.timestamp.type" => {
                if !matches!(value, "CreateTime" | "LogAppendTime") {
                    return Err(ConfigRefused(format!(
                        "message.timestamp.type = {value:?}: must be CreateTime or LogAppendTime"
                    )));
                }
            }
            // Read by `replication_settings`; checked here.
            "min.insync.replicas" => {
                let v = number()?;
                if !(1..=16).contains(&v) {
                    return Err(ConfigRefused(format!(
                        "min.insync.replicas = {v}: must be 1 to 16 (and at most the \
                         replication factor)"
                    )));
                }
            }
            "unclean.leader.election.enable" => {
                if !matches!(value.trim(), "true" | "false") {
                    return Err(ConfigRefused(format!(
                        "unclean.leader.election.enable = {value:?}: must be true or false \
                         (true may lose acknowledged records)"
                    )));
                }
            }
            "cleanup.policy" => {
                let policies: Vec<&str> = value.split(',').map(str::trim).collect();
                if policies.contains(&"compact") {
                    return Err(ConfigRefused(format!(
                        "cleanup.policy = {value:?}: log compaction is not supported by this \
                         broker; only cleanup.policy=delete (time and size retention)"
                    )));
                }
                if policies != ["delete"] {
                    return Err(ConfigRefused(format!(
                        "cleanup.policy = {value:?}: only \"delete\" is supported"
                    )));
                }
            }
            other => {
                return Err(ConfigRefused(format!(
                    "topic config {other} is not supported by this broker; supported: \
                     retention.ms, retention.bytes, segment.bytes, cleanup.policy=delete, \
                     message.timestamp.type, min.insync.replicas, \
                     unclean.leader.election.enable"
                )))
            }
        }
    }
    Ok(settings)
}

/// The source of a broker-level value: its configuration, or the built-in
/// default when it is the same.
fn broker_source(value: &str, builtin: &str) -> i8 {
    if value == builtin {
        source::DEFAULT_CONFIG
    } else {
        source::STATIC_BROKER_CONFIG
    }
}

/// Kafka's name of a topic's timestamp type.
fn timestamp_type(log_append_time: bool) -> &'static str {
    if log_append_time {
        "LogAppendTime"
    } else {
        "CreateTime"
    }
}

/// The `message.timestamp.type` a create asks for (checked by
/// [`topic_settings`]): Some(true) for LogAppendTime.
pub fn log_append_time(configs: &[(&str, Option<&str>)]) -> Option<bool> {
    configs
        .iter()
        .find(|(k, _)| *k == "message.timestamp.type")
        .and_then(|(_, v)| *v)
        .map(|v| v == "LogAppendTime")
}

/// The `min.insync.replicas` and `unclean.leader.election.enable` a create
/// asks for (checked by [`topic_settings`]).
pub fn replication_settings(configs: &[(&str, Option<&str>)]) -> (Option<u16>, Option<bool>) {
    let get = |name: &str| {
        configs
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| *v)
            .map(str::trim)
    };
    (
        get("min.insync.replicas").and_then(|v| v.parse().ok()),
        get("unclean.leader.election.enable").map(|v| v == "true"),
    )
}

/// A topic config backed by a broker config `broker_name`: its source and
/// synonyms from the topic's value, the broker's and the built-in one.
fn backed(
    name: &'static str,
    broker_name: &'static str,
    config_type: i8,
    read_only: bool,
    [topic, broker, builtin]: [String; 3],
) -> ConfigEntry {
    let from_broker = broker_source(&broker, &builtin);
    let mut synonyms = Vec::with_capacity(2);
    let source = if topic != broker {
        synonyms.push(Synonym {
            name,
            value: topic.clone(),
            source: source::TOPIC_CONFIG,
        });
        source::TOPIC_CONFIG
    } else {
        from_broker
    };
    synonyms.push(Synonym {
        name: broker_name,
        value: broker,
        source: from_broker,
    });
    ConfigEntry {
        name,
        value: topic,
        read_only,
        source,
        config_type,
        synonyms,
    }
}

/// A topic's configs as Kafka names them, sorted by name.
pub fn topic_entries(topic: &TopicConfig, server: &ServerConfig) -> Vec<ConfigEntry> {
    let builtin = ServerConfig::default();
    let all = |f: &dyn Fn(&ServerConfig, &TopicConfig) -> String| -> [String; 3] {
        [
            f(server, topic),
            f(server, &server.topic_defaults),
            f(&builtin, &builtin.topic_defaults),
        ]
    };
    vec![
        backed(
            "cleanup.policy",
            "log.cleanup.policy",
            kind::LIST,
            true,
            all(&|_, _| "delete".into()),
        ),
        backed(
            "compression.type",
            "compression.type",
            kind::STRING,
            true,
            all(&|_, _| "producer".into()),
        ),
        backed(
            "max.message.bytes",
            "message.max.bytes",
            kind::INT,
            true,
            all(&|s, _| s.max_batch_bytes.to_string()),
        ),
        backed(
            "message.timestamp.type",
            "log.message.timestamp.type",
            kind::STRING,
            false,
            all(&|_, t| timestamp_type(t.log_append_time).into()),
        ),
        backed(
            "min.insync.replicas",
            "min.insync.replicas",
            kind::INT,
            true,
            all(&|_, t| t.min_insync_replicas.to_string()),
        ),
        backed(
            "retention.bytes",
            "log.retention.bytes",
            kind::LONG,
            false,
            all(&|_, t| limit(t.retention_bytes)),
        ),
        backed(
            "retention.ms",
            "log.retention.ms",
            kind::LONG,
            false,
            all(&|_, t| limit(t.retention_ms)),
        ),
        backed(
            "segment.bytes",
            "log.segment.bytes",
            kind::INT,
            false,
            all(&|_, t| t.segment_bytes.to_string()),
        ),
    ]
}

/// The broker configs Kafka's clients and tools read, sorted by name: all
/// read-only (there is no AlterConfigs).
pub fn broker_entries(server: &ServerConfig) -> Vec<ConfigEntry> {
    let builtin = ServerConfig::default();
    let entry = |name: &'static str, config_type: i8, f: &dyn Fn(&ServerConfig) -> String| {
        let value = f(server);
        let source = broker_source(&value, &f(&builtin));
        ConfigEntry {
            name,
            synonyms: vec![Synonym {
                name,
                value: value.clone(),
                source,
            }],
            value,
            read_only: true,
            source,
            config_type,
        }
    };
    vec![
        entry("auto.create.topics.enable", kind::BOOLEAN, &|s| {
            s.auto_create_topics.to_string()
        }),
        entry("default.replication.factor", kind::INT, &|_| "1".into()),
        entry("group.initial.rebalance.delay.ms", kind::INT, &|s| {
            s.group_initial_rebalance_delay_ms.to_string()
        }),
        entry("group.max.session.timeout.ms", kind::INT, &|s| {
            s.group_max_session_timeout_ms.to_string()
        }),
        entry("group.min.session.timeout.ms", kind::INT, &|s| {
            s.group_min_session_timeout_ms.to_string()
        }),
        entry("log.cleanup.policy", kind::LIST, &|_| "delete".into()),
        entry("log.retention.bytes", kind::LONG, &|s| {
            limit(s.topic_defaults.retention_bytes)
        }),
        entry("log.retention.check.interval.ms", kind::LONG, &|s| {
            s.retention_check.as_millis().to_string()
        }),
        entry("log.retention.ms", kind::LONG, &|s| {
            limit(s.topic_defaults.retention_ms)
        }),
        entry("log.segment.bytes", kind::INT, &|s| {
            s.topic_defaults.segment_bytes.to_string()
        }),
        entry("message.max.bytes", kind::INT, &|s| {
            s.max_batch_bytes.to_string()
        }),
        entry("min.insync.replicas", kind::INT, &|_| "1".into()),
        entry("num.partitions", kind::INT, &|s| {
            s.default_partitions.to_string()
        }),
        entry("offsets.topic.replication.factor", kind::SHORT, &|_| {
            "1".into()
        }),
    ]
}

/// One resource of a DescribeConfigs request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigResource<'a> {
    /// Its type ([`resource`]).
    pub resource_type: i8,
    /// Its name: a topic, or a broker's node id (empty: the cluster's
    /// defaults).
    pub name: &'a str,
    /// The configs asked for; None: all.
    pub keys: Option<Vec<&'a str>>,
}

/// A decoded DescribeConfigs request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeConfigsRequest<'a> {
    /// The resources, in request order.
    pub resources: Vec<ConfigResource<'a>>,
    /// Whether to answer each config's synonyms.
    pub include_synonyms: bool,
    /// Whether documentation is asked for (v3+; there is none to give).
    pub include_documentation: bool,
}

/// Decodes a DescribeConfigs request's body.
pub fn decode<'a>(
    d: &mut Decoder<'a>,
    v: i16,
    flex: bool,
) -> DecodeResult<DescribeConfigsRequest<'a>> {
    // type (1) + name (2 or 1) + keys' length (4 or 1) + tagged (0 or 1).
    let n = d.count(flex, if flex { 4 } else { 7 })?;
    let mut resources = Vec::with_capacity(n);
    for _ in 0..n {
        let resource_type = d.i8()?;
        let name = d.string(flex)?;
        let keys = match d.array_len(flex, if flex { 1 } else { 2 })? {
            None => None,
            Some(m) => {
                let mut keys = Vec::with_capacity(m);
                for _ in 0..m {
                    keys.push(d.string(flex)?);
                }
                Some(keys)
            }
        };
        d.tagged_fields(flex)?;
        resources.push(ConfigResource {
            resource_type,
            name,
            keys,
        });
    }
    let include_synonyms = d.bool()?;
    let include_documentation = if v >= 3 { d.bool()? } else { false };
    d.tagged_fields(flex)?;
    Ok(DescribeConfigsRequest {
        resources,
        include_synonyms,
        include_documentation,
    })
}

/// The configs of one resource, or its error code and message.
fn describe(shard: &Shard, r: &ConfigResource<'_>) -> Result<Vec<ConfigEntry>, (i16, String)> {
    let config = shard.config();
    let entries = match r.resource_type {
        resource::TOPIC => match shard.topic(r.name) {
            Some(meta) => topic_entries(&meta.config, config),
            None => {
                return Err((
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic {:?}", r.name),
                ))
            }
        },
        resource::BROKER => {
            let ours = |id: i32| (0..shard.shard_count()).any(|s| config.kafka_node_id(s) == id);
            if !r.name.is_empty() && !r.name.parse::<i32>().is_ok_and(ours) {
                return Err((
                    errors::INVALID_REQUEST,
                    format!(
                        "broker {:?} is not a node of this broker (its nodes are {}..={})",
                        r.name,
                        config.kafka_node_id(0),
                        config.kafka_node_id(shard.shard_count().saturating_sub(1))
                    ),
                ));
            }
            broker_entries(config)
        }
        other => {
            return Err((
                errors::INVALID_REQUEST,
                format!(
                    "config resource type {other} is not supported: only topics (2) and brokers (4)"
                ),
            ))
        }
    };
    Ok(match &r.keys {
        None => entries,
        Some(keys) => entries
            .into_iter()
            .filter(|e| keys.contains(&e.name))
            .collect(),
    })
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Answers a DescribeConfigs request.
pub fn handle(shard: &Shard, mut request: Request<'_>) -> DecodeResult<Reply> {
    let v = request.version;
    let asked = decode(&mut request.body, v, request.flexible)?;
    let results = asked
        .resources
        .iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(text(r.name));
            match describe(shard, r) {
                Ok(entries) => result
                    .with_error_code(errors::NONE)
                    .with_error_message(None)
                    .with_configs(
                        entries
                            .into_iter()
                            .map(|e| config_result(e, v, asked.include_synonyms))
                            .collect(),
                    ),
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(text(message))),
            }
        })
        .collect();
    Ok(encode_with(
        &request,
        &DescribeConfigsResponse::default().with_results(results),
    ))
}

fn config_result(e: ConfigEntry, v: i16, synonyms: bool) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(text(e.name))
        .with_value(Some(text(e.value)))
        .with_read_only(e.read_only)
        .with_config_source(e.source)
        .with_is_sensitive(false);
    if synonyms {
        out = out.with_synonyms(
            e.synonyms
                .into_iter()
                .map(|s| {
                    DescribeConfigsSynonym::default()
                        .with_name(text(s.name))
                        .with_value(Some(text(s.value)))
                        .with_source(s.source)
                })
                .collect(),
        );
    }
    if v >= 3 {
        out = out.with_config_type(e.config_type).with_documentation(None);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use broker_protocol::BROKER_DEFAULT;

    #[test]
    fn kafka_topic_configs_map_onto_our_settings_with_minus_one_as_no_limit() {
        let s = topic_settings(&[
            ("retention.ms", Some("60000")),
            ("retention.bytes", Some("-1")),
            ("segment.bytes", Some("1048576")),
            ("cleanup.policy", Some("delete")),
        ])
        .unwrap();
        assert_eq!(
            s,
            TopicSettings {
                retention_ms: 60_000,
                retention_bytes: NO_LIMIT,
                segment_bytes: 1_048_576,
            }
        );
        assert_eq!(topic_settings(&[]).unwrap().retention_ms, BROKER_DEFAULT);
    }

    #[test]
    fn unsupported_or_bad_topic_configs_are_refused_naming_the_key() {
        for (configs, named) in [
            (vec![("cleanup.policy", Some("compact"))], "compaction"),
            (
                vec![("cleanup.policy", Some("compact,delete"))],
                "compaction",
            ),
            (vec![("cleanup.policy", Some("nope"))], "cleanup.policy"),
            (
                vec![("min.cleanable.dirty.ratio", Some("0.5"))],
                "min.cleanable.dirty.ratio",
            ),
            (vec![("retention.ms", Some("0"))], "retention.ms"),
            (vec![("retention.ms", Some("soon"))], "retention.ms"),
            (vec![("retention.bytes", None)], "retention.bytes"),
            (vec![("segment.bytes", Some("100"))], "segment.bytes"),
            (
                vec![("retention.ms", Some("1")), ("retention.ms", Some("2"))],
                "twice",
            ),
        ] {
            let ConfigRefused(m) = topic_settings(&configs).unwrap_err();
            assert!(m.contains(named), "{configs:?}: {m}");
        }
    }

    #[test]
    fn a_topic_value_other_than_the_brokers_is_a_topic_config_with_the_broker_as_synonym() {
        let server = ServerConfig::default();
        let topic = TopicConfig {
            retention_ms: Some(60_000),
            ..server.topic_defaults
        };
        let entries = topic_entries(&topic, &server);
        let mut names: Vec<_> = entries.iter().map(|e| e.name).collect();
        names.sort_unstable();
        assert_eq!(names, entries.iter().map(|e| e.name).collect::<Vec<_>>());
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        let ms = get("retention.ms");
        assert_eq!(
            (ms.value.as_str(), ms.source, ms.read_only),
            ("60000", source::TOPIC_CONFIG, false)
        );
        assert_eq!(ms.synonyms[0].source, source::TOPIC_CONFIG);
        assert_eq!(ms.synonyms[1].name, "log.retention.ms");
        assert_eq!(ms.synonyms[1].source, source::DEFAULT_CONFIG);
        assert_eq!(get("retention.bytes").value, "-1");
        assert_eq!(get("retention.bytes").source, source::DEFAULT_CONFIG);
        assert_eq!(get("cleanup.policy").value, "delete");
        assert!(get("cleanup.policy").read_only);
        assert_eq!(get("message.timestamp.type").value, "CreateTime");
        assert_eq!(
            get("max.message.bytes").value,
            server.max_batch_bytes.to_string()
        );
    }

    #[test]
    fn a_broker_value_set_by_its_configuration_is_a_static_broker_config() {
        let server = ServerConfig {
            default_partitions: 3,
            ..ServerConfig::default()
        };
        let entries = broker_entries(&server);
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get("num.partitions").value, "3");
        assert_eq!(get("num.partitions").source, source::STATIC_BROKER_CONFIG);
        assert_eq!(get("default.replication.factor").value, "1");
        assert_eq!(
            get("default.replication.factor").source,
            source::DEFAULT_CONFIG
        );
        assert!(entries.iter().all(|e| e.read_only));
        // The topic's view of the same default names the broker's source.
        let topic = topic_entries(&server.topic_defaults, &server);
        assert!(topic.iter().all(|e| e.source != source::TOPIC_CONFIG));
    }
}

//! librdkafka settings of every client the Kafka backend creates.
//!
//! Each client gets, in order: settings common to all, the defaults of its
//! role, the cluster's `properties` from the config file (so a user
//! overrides any default), then the few settings the backend's semantics
//! depend on (pinned: a property cannot change them). `docs/kafka.md` lists
//! them all.

use std::sync::Arc;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, ClientContext};
use sluice_config::KafkaConfig;

/// Producer: time records wait to be batched together.
pub const DEFAULT_LINGER_MS: u64 = 5;
/// Producer: records per batch at most.
pub const DEFAULT_BATCH_NUM_MESSAGES: u32 = 10_000;
/// Producer: bytes per partition batch at most.
pub const DEFAULT_BATCH_SIZE_BYTES: u32 = 1024 * 1024;
/// Producer: compression of batches (cheap to compress and decompress).
pub const DEFAULT_COMPRESSION: &str = "lz4";
/// Producer: records librdkafka may hold unsent, in KiB (bounds memory).
pub const DEFAULT_QUEUE_BUFFERING_MAX_KBYTES: u32 = 256 * 1024;
/// librdkafka's default `message.max.bytes`; the largest record accepted
/// unless the properties raise it.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// All clients: longest pause between reconnection attempts, so a
/// restarted broker is noticed within about a second.
pub const DEFAULT_RECONNECT_BACKOFF_MAX_MS: u32 = 1_000;
/// Readers: how long the broker may hold a fetch that has nothing new.
/// Kafka answers a held fetch as soon as data arrives, so this bounds only
/// idle traffic, not latency.
pub const DEFAULT_READER_FETCH_WAIT_MS: u32 = 100;
/// End probes: the broker answers at once. Not 0: tansu never answers a
/// fetch whose max wait is 0, and 1 ms costs nothing on Kafka.
pub const PROBE_FETCH_WAIT_MS: u32 = 1;
/// Readers: prefetched data held per reader, in KiB.
pub const DEFAULT_READER_QUEUE_KBYTES: u32 = 8 * 1024;
/// Readers and probes: the `group.id` librdkafka needs for assign(); the
/// group is never joined and nothing is committed under it.
pub const DEFAULT_READER_GROUP_ID: &str = "sluice-reader";

/// What a client is for; decides its defaults and pinned settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The one producer of a cluster.
    Producer,
    /// A pooled reader serving `fetch`.
    Reader,
    /// A pooled consumer that finds where a partition's log ends.
    Probe,
    /// A consumer committing and reading a group's offsets.
    Group(String),
    /// Metadata, watermarks, offsets for times, health.
    Meta,
    /// Topic creation and deletion.
    Admin,
}

impl Role {
    fn label(&self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Reader => "reader",
            Role::Probe => "probe",
            Role::Group(_) => "group",
            Role::Meta => "meta",
            Role::Admin => "admin",
        }
    }
}

/// The settings of one client of cluster `cluster`.
pub fn client_config(cluster: &str, config: &KafkaConfig, role: &Role) -> ClientConfig {
    let timeout_ms = config.request_timeout_ms;
    let mut c = ClientConfig::new();
    c.set("client.id", format!("sluice-{cluster}-{}", role.label()))
        .set("socket.timeout.ms", timeout_ms.max(10).to_string())
        .set(
            "socket.connection.setup.timeout.ms",
            timeout_ms.max(1_000).to_string(),
        )
        .set("reconnect.backoff.ms", "100")
        .set(
            "reconnect.backoff.max.ms",
            DEFAULT_RECONNECT_BACKOFF_MAX_MS.to_string(),
        )
        // Brokers close idle connections; that is not worth an error log.
        .set("log.connection.close", "false");

    match role {
        Role::Producer => {
            c.set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", DEFAULT_LINGER_MS.to_string())
                .set("batch.num.messages", DEFAULT_BATCH_NUM_MESSAGES.to_string())
                .set("batch.size", DEFAULT_BATCH_SIZE_BYTES.to_string())
                .set("compression.type", DEFAULT_COMPRESSION)
                .set("partitioner", "murmur2_random")
                .set(
                    "queue.buffering.max.kbytes",
                    DEFAULT_QUEUE_BUFFERING_MAX_KBYTES.to_string(),
                )
                // A record not acknowledged within the request timeout
                // fails (the cluster counts as down), instead of librdkafka's
                // five minutes of retries.
                .set(
                    "message.timeout.ms",
                    timeout_ms.max(DEFAULT_LINGER_MS + 1).to_string(),
                )
                .set("request.timeout.ms", timeout_ms.to_string());
        }
        Role::Reader | Role::Probe => {
            c.set("group.id", DEFAULT_READER_GROUP_ID)
                .set(
                    "fetch.wait.max.ms",
                    DEFAULT_READER_FETCH_WAIT_MS.to_string(),
                )
                .set(
                    "queued.max.messages.kbytes",
                    DEFAULT_READER_QUEUE_KBYTES.to_string(),
                );
        }
        Role::Group(_) | Role::Meta | Role::Admin => {}
    }

    for (key, value) in &config.properties {
        c.set(key, value);
    }

    // Pinned: what the backend's semantics rest on.
    c.set("bootstrap.servers", &config.bootstrap_servers)
        // Topics are created by `create_topic` only, never as a side
        // effect of a metadata request.
        .set("allow.auto.create.topics", "false");
    match role {
        Role::Producer | Role::Admin => {}
        Role::Reader | Role::Probe => {
            c.set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "true")
                .set("auto.offset.reset", "error");
            if *role == Role::Probe {
                c.set("fetch.wait.max.ms", PROBE_FETCH_WAIT_MS.to_string());
            }
        }
        Role::Group(group) => {
            // These consumers never join the group; the session timeout
            // only bounds how long a commit waits for a coordinator.
            let session_ms = timeout_ms.max(1);
            c.set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("session.timeout.ms", session_ms.to_string())
                .set("heartbeat.interval.ms", (session_ms / 3).max(1).to_string());
        }
        Role::Meta => {
            // Without a group the consumer is a plain handle for metadata
            // and offset look-ups.
            c.remove("group.id");
        }
    }
    c.set_log_level(RDKafkaLogLevel::Info);
    c
}

/// The largest record the producer accepts: `message.max.bytes` from the
/// properties, else librdkafka's default.
pub fn message_max_bytes(config: &KafkaConfig) -> usize {
    config
        .properties
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

/// The context of every client: librdkafka's logs and errors go to
/// `tracing` with the cluster's name and the client's role.
#[derive(Debug)]
pub struct Context {
    cluster: Arc<str>,
    role: &'static str,
}

impl Context {
    /// A context for a client of `cluster` in `role`.
    pub fn new(cluster: &Arc<str>, role: &Role) -> Self {
        Self {
            cluster: Arc::clone(cluster),
            role: role.label(),
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let cluster = &*self.cluster;
        let client = self.role;
        match level {
            // Warnings about properties that do not apply to this kind of
            // client: every property goes to every client by design.
            _ if fac == "CONFWARN" => {
                tracing::debug!(cluster, client, facility = fac, "librdkafka: {message}")
            }
            // A broker that cannot be reached: every client says so on each
            // reconnection attempt; health probing reports the cluster down.
            RDKafkaLogLevel::Error if fac == "FAIL" => {
                tracing::warn!(cluster, client, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(cluster, client, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(cluster, client, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(cluster, client, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(cluster, client, facility = fac, "librdkafka: {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let cluster = &*self.cluster;
        let client = self.role;
        // Reaching the end of a partition is how readers know they are
        // done, not an error.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            tracing::trace!(cluster, client, "librdkafka: {reason}");
            return;
        }
        // A broker that is down makes every client report it on every
        // reconnection attempt; health probing reports it once.
        let transport = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Resolve
                    | RDKafkaErrorCode::OperationTimedOut
            )
        );
        if transport {
            tracing::debug!(cluster, client, error = %error, "librdkafka: {reason}");
        } else {
            tracing::warn!(cluster, client, error = %error, "librdkafka: {reason}");
        }
    }
}

impl ConsumerContext for Context {}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            request_timeout_ms: 3_000,
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn producer_defaults_are_what_a_kafka_user_expects() {
        let c = client_config("east", &kafka(&[]), &Role::Producer);
        for (key, value) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("partitioner", "murmur2_random"),
            ("message.timeout.ms", "3000"),
            ("bootstrap.servers", "127.0.0.1:9092"),
            ("allow.auto.create.topics", "false"),
        ] {
            assert_eq!(c.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn properties_override_defaults_but_not_pinned_settings() {
        let props = [
            ("compression.type", "zstd"),
            ("linger.ms", "20"),
            ("enable.auto.commit", "true"),
            ("bootstrap.servers", "elsewhere:1"),
            ("fetch.wait.max.ms", "250"),
        ];
        let producer = client_config("east", &kafka(&props), &Role::Producer);
        assert_eq!(producer.get("compression.type"), Some("zstd"));
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("bootstrap.servers"), Some("127.0.0.1:9092"));

        let reader = client_config("east", &kafka(&props), &Role::Reader);
        assert_eq!(reader.get("enable.auto.commit"), Some("false"));
        assert_eq!(reader.get("enable.partition.eof"), Some("true"));
        assert_eq!(reader.get("auto.offset.reset"), Some("error"));
        assert_eq!(reader.get("fetch.wait.max.ms"), Some("250"));
        assert_eq!(reader.get("group.id"), Some(DEFAULT_READER_GROUP_ID));

        let probe = client_config("east", &kafka(&props), &Role::Probe);
        assert_eq!(probe.get("fetch.wait.max.ms"), Some("1"));

        let group = client_config(
            "east",
            &kafka(&[("group.id", "x")]),
            &Role::Group("g".into()),
        );
        assert_eq!(group.get("group.id"), Some("g"));
        let meta = client_config("east", &kafka(&[("group.id", "x")]), &Role::Meta);
        assert_eq!(meta.get("group.id"), None);
    }

    #[test]
    fn message_max_bytes_follows_the_properties() {
        assert_eq!(message_max_bytes(&kafka(&[])), DEFAULT_MESSAGE_MAX_BYTES);
        assert_eq!(
            message_max_bytes(&kafka(&[("message.max.bytes", "2000000")])),
            2_000_000
        );
    }
}

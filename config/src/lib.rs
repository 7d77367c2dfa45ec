//! Typed configuration for Sluice.
//!
//! - [`Config`] is the whole file: listeners, storage, topics and clusters.
//! - [`Config::load`] reads a TOML file, rejects unknown keys and runs
//!   [`Config::validate`], so every error names the file, the key and the rule.
//! - `config/sluice.toml` is the default that works with no edits;
//!   `config/examples/*.toml` are parsed by this crate's tests.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod auth;
mod validate;

pub use auth::*;

pub use validate::is_valid_topic_name;

/// Kafka's rule for topic names, quoted in error messages.
pub const TOPIC_NAME_RULE: &str = "topic names must match [a-zA-Z0-9._-]{1,249}";

/// Default HTTPS listener address.
pub const DEFAULT_LISTENER_ADDRESS: &str = "127.0.0.1:8443";
/// Idle time after which a v2 consumer instance is removed (Confluent's
/// `consumer.instance.timeout.ms` default).
pub const DEFAULT_CONSUMER_INSTANCE_TIMEOUT_MS: u64 = 300_000;
/// Long-poll time of `GET .../records` when neither the request nor the
/// instance names one (Confluent's `consumer.request.timeout.ms` default).
pub const DEFAULT_CONSUMER_REQUEST_TIMEOUT_MS: u64 = 1_000;
/// Longest long-poll a records request may ask for.
pub const DEFAULT_CONSUMER_MAX_POLL_TIMEOUT_MS: u64 = 30_000;
/// Consumer instances one gateway keeps at most.
pub const DEFAULT_CONSUMER_MAX_INSTANCES: usize = 10_000;
/// Time to connect to the peer gateway that owns a consumer group.
pub const DEFAULT_PEER_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// How long after an epoch switch the old home is checked for late writes
/// (shared placement): twice the default Kafka request timeout.
pub const DEFAULT_LATE_WRITE_GRACE_MS: u64 = 10_000;
/// How often the lag of the consumer groups a gateway owns is measured.
pub const DEFAULT_CONSUMER_LAG_INTERVAL_MS: u64 = 10_000;
/// Default admin listener address (health, readiness, later metrics).
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:8444";
/// Connections accepted at once per listener; more wait in the kernel backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest request body accepted.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Time a client has to send a complete request head.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Time a client has to complete the TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Time in-flight requests get to finish on shutdown before they are cut.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Segment size at which the embedded log rolls to a new segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes of log between two entries of the sparse offset index.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;
/// Interval between background fsyncs under `fsync = "interval"`.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 50;
/// Retention by age: seven days, Kafka's default.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// How often retention is enforced.
pub const DEFAULT_RETENTION_CHECK_INTERVAL_MS: u64 = 60_000;
/// Partitions of a topic created without an explicit count.
pub const DEFAULT_PARTITIONS: u32 = 3;
/// Weight of a cluster on the hash ring (virtual nodes).
pub const DEFAULT_CLUSTER_WEIGHT: u32 = 100;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Gateway-wide settings.
    pub gateway: GatewayConfig,
    /// The public HTTPS listener (REST, later WebSocket and SSE).
    pub listener: ListenerConfig,
    /// The admin listener: health, readiness and admin routes.
    pub admin: AdminConfig,
    /// Where Sluice keeps its files.
    pub storage: StorageConfig,
    /// Topic creation rules.
    pub topics: TopicsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Distributed tracing: OTLP export and sampling (off unless an endpoint is set).
    pub tracing: TracingConfig,
    /// Routing of topics to clusters: pins, health probing, down policy.
    pub federation: FederationConfig,
    /// Confluent v2 consumer instances and consumer groups.
    pub consumers: ConsumersConfig,
    /// The broker clusters behind the gateway.
    pub clusters: Vec<ClusterConfig>,
    /// A directory of `NAME.toml` files, one cluster each (the `[[clusters]]`
    /// fields without `name`, which is the file's stem), added after
    /// `clusters`. Like a catalog file per cluster: adding a cluster is
    /// adding a file.
    pub clusters_dir: Option<PathBuf>,
    /// Identity, ACLs and quotas; absent means auth is off (see `auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            gateway: GatewayConfig::default(),
            listener: ListenerConfig::default(),
            admin: AdminConfig::default(),
            storage: StorageConfig::default(),
            topics: TopicsConfig::default(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
            federation: FederationConfig::default(),
            consumers: ConsumersConfig::default(),
            clusters: (0..3)
                .map(|i| ClusterConfig::embedded(&format!("local-{i}")))
                .collect(),
            clusters_dir: None,
            auth: None,
        }
    }
}

/// Default of `gateway.tail_poll_ms`.
pub const DEFAULT_TAIL_POLL_MS: u64 = 100;
/// Highest `gateway.tail_poll_ms`.
pub const MAX_TAIL_POLL_MS: u64 = 60_000;

/// Gateway-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// The logical cluster id shown in Confluent v3 routes (`/v3/clusters/{cluster_id}`).
    pub cluster_id: String,
    /// Acknowledgement level for produce requests that do not ask for one.
    pub default_acks: Acks,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace_ms: u64,
    /// How often an idle WebSocket or SSE tail polls its topic. Records
    /// produced through this gateway wake tails at once; the poll finds
    /// those written through other gateways or straight to a cluster.
    pub tail_poll_ms: u64,
    /// This gateway's name among `peers`. Required when `peers` is set.
    pub node_id: Option<String>,
    /// Every gateway of the deployment, this one included. Each consumer
    /// group is owned by one of them (rendezvous hashing of the group name);
    /// consumer requests reaching another gateway are forwarded to the
    /// owner. Empty: this gateway owns every group.
    pub peers: Vec<PeerConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            cluster_id: "sluice".to_owned(),
            default_acks: Acks::All,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            tail_poll_ms: DEFAULT_TAIL_POLL_MS,
            node_id: None,
            peers: Vec::new(),
        }
    }
}

/// One gateway of the deployment, as its peers reach it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The gateway's `gateway.node_id`; part of the group-ownership hash, so
    /// every gateway must list the same names.
    pub name: String,
    /// Base URL of the peer's admin listener, `http://host:port`, where it
    /// serves forwarded consumer requests. Keep it on a private network.
    pub url: String,
}

/// Confluent v2 consumer instances and consumer groups.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumersConfig {
    /// An instance with no request for this long is removed and its group
    /// rebalanced; later requests to it get 404 with code 40403.
    pub instance_timeout_ms: u64,
    /// Long-poll time of a records request that names no `timeout`, unless
    /// the instance set `consumer.request.timeout.ms`.
    pub request_timeout_ms: u64,
    /// The longest long-poll honoured; longer `timeout`s are lowered to it.
    pub max_poll_timeout_ms: u64,
    /// Instances this gateway keeps at most; creating one more is a 429.
    pub max_instances: usize,
    /// Time to connect to the gateway that owns a group before answering
    /// 503 with `Retry-After`.
    pub peer_connect_timeout_ms: u64,
    /// How often `sluice_consumer_lag_records` is measured for the groups
    /// this gateway owns (one offsets request per committed partition).
    pub lag_interval_ms: u64,
}

impl Default for ConsumersConfig {
    fn default() -> Self {
        Self {
            instance_timeout_ms: DEFAULT_CONSUMER_INSTANCE_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_CONSUMER_REQUEST_TIMEOUT_MS,
            max_poll_timeout_ms: DEFAULT_CONSUMER_MAX_POLL_TIMEOUT_MS,
            max_instances: DEFAULT_CONSUMER_MAX_INSTANCES,
            peer_connect_timeout_ms: DEFAULT_PEER_CONNECT_TIMEOUT_MS,
            lag_interval_ms: DEFAULT_CONSUMER_LAG_INTERVAL_MS,
        }
    }
}

/// Acknowledgement level of a produce, in Kafka's vocabulary.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// `0`: the gateway answers without waiting for the cluster's durability policy.
    #[serde(rename = "0")]
    None,
    /// `1`: the record is written to the home cluster's log.
    #[serde(rename = "1")]
    Leader,
    /// `all`: the record is durable per the home cluster's policy.
    #[default]
    #[serde(rename = "all")]
    All,
}

impl Acks {
    /// Parses `0`, `1`, `all` (and `-1`, Kafka's spelling of `all`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "0" => Some(Self::None),
            "1" => Some(Self::Leader),
            "all" | "-1" => Some(Self::All),
            _ => None,
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "0",
            Self::Leader => "1",
            Self::All => "all",
        })
    }
}

/// TLS material for a listener. When absent on a TLS listener, Sluice
/// generates a local CA and a server certificate in `<data_dir>/tls/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The public listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address to bind, `host:port`.
    pub address: SocketAddr,
    /// Serve plaintext HTTP instead of TLS. Only for listeners behind a TLS
    /// terminator or on loopback.
    pub insecure: bool,
    /// Certificate and key; generated when absent.
    pub tls: Option<TlsConfig>,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Time a client has to send a complete request head.
    pub header_read_timeout_ms: u64,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout_ms: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: DEFAULT_LISTENER_ADDRESS
                .parse()
                .expect("valid default address"),
            insecure: false,
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            tls_handshake_timeout_ms: DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
        }
    }
}

/// The admin listener. Plaintext on loopback by default, and marked so.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to bind, `host:port`.
    pub address: SocketAddr,
    /// Serve plaintext HTTP. The default admin listener is on loopback and insecure.
    pub insecure: bool,
    /// Certificate and key when not insecure; the generated ones when absent.
    pub tls: Option<TlsConfig>,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: DEFAULT_ADMIN_ADDRESS
                .parse()
                .expect("valid default address"),
            insecure: true,
            tls: None,
            max_connections: 256,
        }
    }
}

/// Where Sluice keeps its files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root directory: embedded clusters, generated TLS material, placement.
    /// A relative path is taken from the working directory.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
        }
    }
}

/// Topic creation rules, for every cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Create a topic on its first produce, as Kafka's `auto.create.topics.enable`.
    pub auto_create: bool,
    /// Partitions of a topic created without an explicit count.
    pub default_partitions: u32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            auto_create: true,
            default_partitions: DEFAULT_PARTITIONS,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `sluice=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Share of new traces recorded and exported when tracing is on.
pub const DEFAULT_SAMPLING_RATIO: f64 = 1.0;
/// `service.name` of the exported spans.
pub const DEFAULT_SERVICE_NAME: &str = "sluice";
/// Finished spans waiting for export; more are dropped (and counted).
pub const DEFAULT_MAX_QUEUE_SPANS: usize = 2048;
/// Spans sent in one OTLP request at most.
pub const DEFAULT_MAX_EXPORT_BATCH_SPANS: usize = 512;
/// Longest a finished span waits before its batch is sent.
pub const DEFAULT_EXPORT_INTERVAL_MS: u64 = 1_000;
/// Time one OTLP request may take.
pub const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 10_000;

/// Distributed tracing with OpenTelemetry. Off unless `otlp_endpoint` is
/// set: then spans are sampled at `sampling_ratio` (a sampled parent from
/// the client is always followed) and exported in batches over OTLP/HTTP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// OTLP/HTTP URL spans are posted to, e.g. `http://127.0.0.1:4318`
    /// (`/v1/traces` is added when the URL has no path). Absent: tracing is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol; only `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// Share of traces started here that are recorded, from 0.0 to 1.0.
    pub sampling_ratio: f64,
    /// `service.name` resource attribute of every span.
    pub service_name: String,
    /// Finished spans queued for export; when full, new ones are dropped
    /// and counted rather than slowing requests.
    pub max_queue_spans: usize,
    /// Spans per OTLP request at most.
    pub max_export_batch_spans: usize,
    /// Longest a finished span waits in the queue before it is sent.
    pub export_interval_ms: u64,
    /// Time one OTLP request may take.
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            sampling_ratio: DEFAULT_SAMPLING_RATIO,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            max_queue_spans: DEFAULT_MAX_QUEUE_SPANS,
            max_export_batch_spans: DEFAULT_MAX_EXPORT_BATCH_SPANS,
            export_interval_ms: DEFAULT_EXPORT_INTERVAL_MS,
            export_timeout_ms: DEFAULT_EXPORT_TIMEOUT_MS,
        }
    }
}

impl TracingConfig {
    /// Whether spans are recorded and exported.
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    /// The URL spans are posted to: the endpoint, with `/v1/traces` added
    /// when it has no path.
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.otlp_endpoint.as_deref()?.trim_end_matches('/');
        let after_scheme = endpoint
            .split_once("://")
            .map_or(endpoint, |(_, rest)| rest);
        Some(if after_scheme.contains('/') {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        })
    }
}

/// The OTLP protocol spans are exported with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (OTLP/HTTP), the collector's port 4318.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Interval between two health probes of a cluster.
pub const DEFAULT_HEALTH_CHECK_INTERVAL_MS: u64 = 1_000;
/// Time a health probe may take before it counts as a failure.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT_MS: u64 = 500;

/// Routing of topics to clusters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// What happens to a topic's requests while its home cluster is down,
    /// unless a `topic_policies` entry says otherwise.
    pub on_cluster_down: DownPolicy,
    /// Interval between two health probes of each cluster.
    pub health_check_interval_ms: u64,
    /// Time a probe may take before it counts as a failure.
    pub health_check_timeout_ms: u64,
    /// Topics placed on a named cluster instead of by the ring. An exact
    /// `topic` pin wins over a `prefix` pin; the longest prefix wins.
    pub pins: Vec<PinConfig>,
    /// Per-topic down policies; an exact `topic` wins over a `prefix`,
    /// the longest prefix wins.
    pub topic_policies: Vec<TopicPolicyConfig>,
    /// Where topic placement is kept.
    pub placement: PlacementConfig,
}

/// Default name of the compacted topic holding shared placement.
pub const DEFAULT_PLACEMENT_TOPIC: &str = "__sluice_placement";

/// Where topic placement is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// `file`: `<data_dir>/placement/`, for one gateway. `kafka`: a
    /// compacted topic on `cluster`, shared by every gateway that names it.
    pub store: PlacementStoreKind,
    /// The metadata cluster (a `kind = "kafka"` cluster) for `store = "kafka"`.
    pub cluster: Option<String>,
    /// The compacted topic for `store = "kafka"`.
    pub topic: String,
    /// With a shared store: how long after switching a topic's epoch the
    /// switching gateway looks on the old home for records other gateways
    /// wrote there before they saw the switch, and copies them into the
    /// current epoch. More than the clusters' `request_timeout_ms` plus the
    /// time a gateway takes to see a placement change.
    pub late_write_grace_ms: u64,
    /// With a shared store: a gateway refuses produces (503, retriable)
    /// while it has not confirmed for this long that it has every
    /// placement change, so one cut off from the store stops writing to a
    /// home that may have moved. 0 (the default): off, produces go on.
    pub lease_ms: u64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            store: PlacementStoreKind::File,
            cluster: None,
            topic: DEFAULT_PLACEMENT_TOPIC.to_owned(),
            late_write_grace_ms: DEFAULT_LATE_WRITE_GRACE_MS,
            lease_ms: 0,
        }
    }
}

/// Kind of placement store.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlacementStoreKind {
    /// A local file: one gateway per data directory.
    #[default]
    File,
    /// A compacted Kafka topic shared by several gateways.
    Kafka,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            on_cluster_down: DownPolicy::Reject,
            health_check_interval_ms: DEFAULT_HEALTH_CHECK_INTERVAL_MS,
            health_check_timeout_ms: DEFAULT_HEALTH_CHECK_TIMEOUT_MS,
            pins: Vec::new(),
            topic_policies: Vec::new(),
            placement: PlacementConfig::default(),
        }
    }
}

/// What a topic's requests get while its home cluster is down.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DownPolicy {
    /// A fast 503 with `Retry-After`; order is never compromised.
    #[default]
    Reject,
    /// Open a new epoch on the next healthy candidate: availability over strict order.
    Failover,
}

/// A topic, or every topic with a prefix, placed on a named cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    /// Exact topic name (give this or `prefix`).
    pub topic: Option<String>,
    /// Topic-name prefix (give this or `topic`).
    pub prefix: Option<String>,
    /// The cluster's name.
    pub cluster: String,
}

/// A down policy for a topic, or every topic with a prefix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicPolicyConfig {
    /// Exact topic name (give this or `prefix`).
    pub topic: Option<String>,
    /// Topic-name prefix (give this or `topic`).
    pub prefix: Option<String>,
    /// The policy.
    pub on_cluster_down: DownPolicy,
}

/// One broker cluster behind the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique name, `[a-zA-Z0-9._-]{1,64}`; also the directory name of an embedded cluster.
    pub name: String,
    /// Which backend serves it.
    pub kind: ClusterKind,
    /// Share of new topics this cluster takes (virtual nodes on the ring).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Whether the cluster takes new topics, drains, or only serves reads.
    #[serde(default)]
    pub state: ClusterState,
    /// Settings of an embedded cluster.
    #[serde(default)]
    pub embedded: EmbeddedConfig,
    /// Settings of a Kafka cluster; required when `kind = "kafka"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
    /// The file this cluster came from when it was read from `clusters_dir`,
    /// so errors name it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_weight() -> u32 {
    DEFAULT_CLUSTER_WEIGHT
}

impl ClusterConfig {
    /// An embedded cluster with default settings.
    pub fn embedded(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: ClusterKind::Embedded,
            weight: DEFAULT_CLUSTER_WEIGHT,
            state: ClusterState::Active,
            embedded: EmbeddedConfig::default(),
            kafka: None,
            source: None,
        }
    }

    /// A Kafka cluster with default settings.
    pub fn kafka(name: &str, bootstrap_servers: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: ClusterKind::Kafka,
            weight: DEFAULT_CLUSTER_WEIGHT,
            state: ClusterState::Active,
            embedded: EmbeddedConfig::default(),
            kafka: Some(KafkaConfig {
                bootstrap_servers: bootstrap_servers.to_owned(),
                request_timeout_ms: DEFAULT_KAFKA_REQUEST_TIMEOUT_MS,
                properties: Default::default(),
            }),
            source: None,
        }
    }
}

/// Backend kind of a cluster.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClusterKind {
    /// Durable on-disk log inside the gateway process.
    Embedded,
    /// An Apache Kafka (or Kafka-protocol) cluster, through librdkafka.
    Kafka,
}

/// Default time a Kafka call (metadata, delivery, fetch) may take.
pub const DEFAULT_KAFKA_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Settings of a Kafka cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`, librdkafka's `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Time a call to the cluster may take before it fails (and, for
    /// produce, before the cluster counts as down).
    #[serde(default = "default_kafka_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Any librdkafka property, applied to the producer, the consumers and
    /// the admin client after Sluice's defaults (so it overrides them),
    /// e.g. `"compression.type" = "zstd"`, `"security.protocol" = "ssl"`.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn default_kafka_request_timeout_ms() -> u64 {
    DEFAULT_KAFKA_REQUEST_TIMEOUT_MS
}

/// Lifecycle state of a cluster.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterState {
    /// Takes new topics and serves its own.
    #[default]
    Active,
    /// Takes no new topics; its topics move away.
    Draining,
    /// Serves reads of what it holds; takes no writes.
    ReadOnly,
}

/// When the embedded log calls fsync.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before acknowledging every batch (concurrent batches share one fsync).
    #[default]
    Always,
    /// In the background every `fsync_interval_ms`.
    Interval,
    /// Never; the OS writes back when it likes.
    Never,
}

/// Settings of an embedded cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Durability policy for acknowledged writes.
    pub fsync: FsyncPolicy,
    /// Interval between background fsyncs under `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Size at which a partition's active segment is rolled.
    pub segment_bytes: u64,
    /// Bytes of log between two sparse offset-index entries.
    pub index_interval_bytes: u32,
    /// Delete whole segments whose newest record is older than this; absent keeps forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest whole segments while a partition is larger than this; absent means no limit.
    pub retention_bytes: Option<u64>,
    /// How often retention is enforced.
    pub retention_check_interval_ms: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: DEFAULT_FSYNC_INTERVAL_MS,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            retention_check_interval_ms: DEFAULT_RETENTION_CHECK_INTERVAL_MS,
        }
    }
}

/// One cluster's file in `clusters_dir`: the `[[clusters]]` fields but `name`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    kind: ClusterKind,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    state: ClusterState,
    #[serde(default)]
    embedded: EmbeddedConfig,
    #[serde(default)]
    kafka: Option<KafkaConfig>,
}

/// Reads every `*.toml` in `dir`, sorted by name, one cluster per file.
fn load_cluster_dir(dir: &Path) -> Result<Vec<ClusterConfig>, ConfigError> {
    let read_err = |source| ConfigError::Read {
        file: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    let mut clusters = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let parsed: ClusterFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            file: file.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        clusters.push(ClusterConfig {
            name,
            kind: parsed.kind,
            weight: parsed.weight,
            state: parsed.state,
            embedded: parsed.embedded,
            kafka: parsed.kafka,
            source: Some(file),
        });
    }
    Ok(clusters)
}

/// A configuration error naming the file, the key and the rule broken.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value breaks a rule.
    #[error("{file}: `{key}`: {rule}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Dotted path to the key, e.g. `clusters[1].name`.
        key: String,
        /// The rule that was broken.
        rule: String,
    },
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths in it
    /// (data directory, TLS files) are taken from the working directory,
    /// as Kafka takes `log.dirs`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            file: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if let Some(dir) = config.clusters_dir.clone() {
            config.clusters.extend(load_cluster_dir(&dir)?);
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Parses and validates TOML text; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Checks every rule the types cannot express.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        validate::validate(self, file)
    }

    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests;

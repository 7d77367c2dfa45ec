//! Every metric Sluice exports, in one place: its name, kind, labels and
//! meaning. `docs/observability.md` lists the same table for operators.
//!
//! To add a metric, add one line to the `metrics!` list below and record
//! it anywhere with the `metrics` macros and the constant, e.g.
//! `metrics::counter!(QUOTA_THROTTLES_TOTAL, LABEL_KIND => "produce_bytes").increment(1)`.
//!
//! Names follow `sluice_<noun>_<unit>[_total]` (counters end in `_total`,
//! durations are in seconds). Label values must come from a bounded set:
//! cluster names (from config), route templates (axum's `MatchedPath`,
//! never the raw path), methods, status codes, protocols and outcomes.
//! Topic names, principals from tokens, paths and record contents are
//! never label values: a client could make them grow without bound.

/// What a metric is, for its description and the checks in the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution; the name ends in its unit (`_seconds`).
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name in the exposition.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The label keys it carries.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

/// Label: a route template such as `/topics/{topic}`, or `unmatched`.
pub const LABEL_ROUTE: &str = "route";
/// Label: the HTTP method (`GET`, `POST`, ... or `other`).
pub const LABEL_METHOD: &str = "method";
/// Label: the HTTP status code, e.g. `404`.
pub const LABEL_STATUS: &str = "status";
/// Label: the HTTP status class, e.g. `4xx`.
pub const LABEL_STATUS_CLASS: &str = "status_class";
/// Label: a cluster's configured name.
pub const LABEL_CLUSTER: &str = "cluster";
/// Label: the front end, `rest`, `websocket` or `sse`.
pub const LABEL_PROTOCOL: &str = "protocol";
/// Label: a rebalance move's state, `planned`, `completed` or `failed`.
pub const LABEL_STATE: &str = "state";
/// Label: why spans were dropped: `queue_full`, `export_failed`, `export_timeout`.
pub const LABEL_REASON: &str = "reason";
/// Label: which quota (`produce_bytes`, `consume_bytes`, `requests`,
/// `connections`, `subscriptions`).
pub const LABEL_KIND: &str = "kind";
/// Label: what a quota did, `throttle` or `reject`.
pub const LABEL_MODE: &str = "mode";
/// Label: a consumer group (bounded by the groups clients create; the
/// consumer API should cap how many exist).
pub const LABEL_GROUP: &str = "group";
/// Label: a partition number.
pub const LABEL_PARTITION: &str = "partition";

macro_rules! metrics {
    ($($(#[$doc:meta])* $ident:ident = $name:literal, $kind:ident, [$($label:expr),*], $help:literal;)*) => {
        $($(#[$doc])* pub const $ident: &str = $name;)*
        /// Every metric, for descriptions, docs and tests.
        pub const ALL: &[Metric] = &[$(Metric {
            name: $name,
            kind: Kind::$kind,
            labels: &[$($label),*],
            help: $help,
        }),*];
    };
}

metrics! {
    /// HTTP requests answered on the public listener.
    HTTP_REQUESTS_TOTAL = "sluice_http_requests_total", Counter,
        [LABEL_ROUTE, LABEL_METHOD, LABEL_STATUS, LABEL_STATUS_CLASS],
        "HTTP requests answered, by route template, method and status";
    /// Time from a request's arrival to its response head.
    HTTP_REQUEST_DURATION_SECONDS = "sluice_http_request_duration_seconds", Histogram,
        [LABEL_ROUTE, LABEL_METHOD],
        "Time to answer an HTTP request (to the response head; streams run on after it)";
    /// Records acknowledged by their home cluster.
    PRODUCED_RECORDS_TOTAL = "sluice_produced_records_total", Counter,
        [LABEL_CLUSTER, LABEL_PROTOCOL],
        "Records written to a home cluster, by cluster and front end";
    /// Key, value and header bytes of those records, as the client sent them.
    PRODUCED_BYTES_TOTAL = "sluice_produced_bytes_total", Counter,
        [LABEL_CLUSTER, LABEL_PROTOCOL],
        "Key, value and header bytes of records written, by cluster and front end";
    /// Produce calls that failed (no home, home down, bad partition, ...).
    PRODUCE_ERRORS_TOTAL = "sluice_produce_errors_total", Counter,
        [LABEL_PROTOCOL],
        "Produce calls that failed, by front end";
    /// Time a produce call took on the home cluster (routing included).
    PRODUCE_DURATION_SECONDS = "sluice_produce_duration_seconds", Histogram,
        [LABEL_CLUSTER],
        "Time of a produce to the home cluster, routing included";
    /// Records handed to readers (WebSocket, SSE, REST reads).
    DELIVERED_RECORDS_TOTAL = "sluice_delivered_records_total", Counter,
        [LABEL_CLUSTER, LABEL_PROTOCOL],
        "Records delivered to readers, by the cluster read from and front end";
    /// Key, value and header bytes of those records.
    DELIVERED_BYTES_TOTAL = "sluice_delivered_bytes_total", Counter,
        [LABEL_CLUSTER, LABEL_PROTOCOL],
        "Key, value and header bytes of records delivered, by cluster and front end";
    /// Open WebSocket connections.
    WEBSOCKET_CONNECTIONS = "sluice_websocket_connections", Gauge, [],
        "Open WebSocket connections";
    /// Running WebSocket subscriptions, all connections together.
    WEBSOCKET_SUBSCRIPTIONS = "sluice_websocket_subscriptions", Gauge, [],
        "Running WebSocket subscriptions";
    /// Open Server-Sent Events streams.
    SSE_CONNECTIONS = "sluice_sse_connections", Gauge, [],
        "Open Server-Sent Events streams";
    /// Requests a quota delayed or refused (recorded by the quota layer).
    QUOTA_THROTTLES_TOTAL = "sluice_quota_throttles_total", Counter,
        [LABEL_KIND, LABEL_MODE],
        "Requests a quota throttled or rejected, by quota and mode";
    /// Records a consumer group has yet to read (recorded by the consumer API).
    CONSUMER_LAG_RECORDS = "sluice_consumer_lag_records", Gauge,
        [LABEL_CLUSTER, LABEL_GROUP],
        "Records between a consumer group's committed offsets and the partitions' ends";
    /// 1 while a cluster's last health probe succeeded, else 0.
    CLUSTER_UP = "sluice_cluster_up", Gauge, [LABEL_CLUSTER],
        "1 when the cluster's last health probe succeeded, 0 when it is down";
    /// Topics whose current home is the cluster.
    PLACEMENT_TOPICS = "sluice_placement_topics", Gauge, [LABEL_CLUSTER],
        "Topics whose current epoch is on the cluster";
    /// Placement epochs on the cluster, sealed ones included.
    PLACEMENT_EPOCHS = "sluice_placement_epochs", Gauge, [LABEL_CLUSTER],
        "Placement epochs (current and sealed) held by the cluster";
    /// Epoch switches (migrations and failovers) recorded in placement.
    PLACEMENT_EPOCH_SWITCHES = "sluice_placement_epoch_switches", Gauge, [],
        "Epoch switches (migrations, failovers) in the placement table";
    /// Moves of the last rebalance, by state.
    REBALANCE_MOVES = "sluice_rebalance_moves", Gauge, [LABEL_STATE],
        "Moves of the last rebalance: planned, completed, failed";
    /// 1 while a rebalance runs.
    REBALANCE_RUNNING = "sluice_rebalance_running", Gauge, [],
        "1 while a rebalance is moving topics";
    /// Spans sent to the OTLP collector.
    TRACE_SPANS_EXPORTED_TOTAL = "sluice_trace_spans_exported_total", Counter, [],
        "Spans accepted by the OTLP collector";
    /// Spans not exported: the queue was full, or the export failed.
    TRACE_SPANS_DROPPED_TOTAL = "sluice_trace_spans_dropped_total", Counter,
        [LABEL_REASON],
        "Spans dropped instead of exported: queue_full, export_failed, export_timeout";
}

/// Bucket bounds of every `_seconds` histogram: 100 µs to 30 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Gives every metric its `# HELP` line (call once the recorder is set).
pub fn describe() {
    for metric in ALL {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            let rest = m.name.strip_prefix("sluice_").expect("sluice_ prefix");
            assert!(
                rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.name
            );
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
        }
    }

    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../../docs/observability.md");
        for m in ALL {
            assert!(
                docs.contains(&format!("`{}`", m.name)),
                "{} not in docs",
                m.name
            );
        }
    }
}

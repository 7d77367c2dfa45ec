//! Rules the types cannot express. Each failure names the key and the rule.

use std::collections::HashSet;
use std::path::Path;

use crate::{Config, ConfigError};

/// Kafka's topic-name rule: `[a-zA-Z0-9._-]{1,249}`.
pub fn is_valid_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_valid_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

pub(crate) fn validate(config: &Config, file: &Path) -> Result<(), ConfigError> {
    let invalid = |key: String, rule: String| ConfigError::Invalid {
        file: file.to_owned(),
        key,
        rule,
    };

    if config.gateway.cluster_id.is_empty() {
        return Err(invalid(
            "gateway.cluster_id".into(),
            "must not be empty".into(),
        ));
    }
    if !(1..=crate::MAX_TAIL_POLL_MS).contains(&config.gateway.tail_poll_ms) {
        return Err(invalid(
            "gateway.tail_poll_ms".into(),
            format!(
                "must be between 1 and {}, got {}",
                crate::MAX_TAIL_POLL_MS,
                config.gateway.tail_poll_ms
            ),
        ));
    }
    if config.listener.max_connections == 0 {
        return Err(invalid(
            "listener.max_connections".into(),
            "must be at least 1".into(),
        ));
    }
    if config.admin.max_connections == 0 {
        return Err(invalid(
            "admin.max_connections".into(),
            "must be at least 1".into(),
        ));
    }
    if config.listener.max_body_bytes < 1024 {
        return Err(invalid(
            "listener.max_body_bytes".into(),
            "must be at least 1024".into(),
        ));
    }
    if config.listener.header_read_timeout_ms == 0 {
        return Err(invalid(
            "listener.header_read_timeout_ms".into(),
            "must be at least 1".into(),
        ));
    }
    if config.listener.tls_handshake_timeout_ms == 0 {
        return Err(invalid(
            "listener.tls_handshake_timeout_ms".into(),
            "must be at least 1".into(),
        ));
    }
    if config.listener.insecure && config.listener.tls.is_some() {
        return Err(invalid(
            "listener.tls".into(),
            "an insecure listener takes no TLS settings; remove one of the two".into(),
        ));
    }
    if config.admin.insecure && config.admin.tls.is_some() {
        return Err(invalid(
            "admin.tls".into(),
            "an insecure listener takes no TLS settings; remove one of the two".into(),
        ));
    }
    if config.listener.address == config.admin.address && config.listener.address.port() != 0 {
        return Err(invalid(
            "admin.address".into(),
            format!(
                "must differ from listener.address ({})",
                config.listener.address
            ),
        ));
    }
    if config.storage.data_dir.as_os_str().is_empty() {
        return Err(invalid(
            "storage.data_dir".into(),
            "must not be empty".into(),
        ));
    }
    if !(1..=10_000).contains(&config.topics.default_partitions) {
        return Err(invalid(
            "topics.default_partitions".into(),
            "must be between 1 and 10000".into(),
        ));
    }
    if config.clusters.is_empty() {
        return Err(invalid(
            "clusters".into(),
            "at least one cluster is required".into(),
        ));
    }

    if let Some(auth) = &config.auth {
        crate::auth::validate(auth, file)?;
    }
    validate_tracing(&config.tracing).map_err(|(key, rule)| invalid(key, rule))?;
    validate_consumers(config, &invalid)?;

    let f = &config.federation;
    if f.health_check_interval_ms == 0 {
        return Err(invalid(
            "federation.health_check_interval_ms".into(),
            "must be at least 1".into(),
        ));
    }
    if f.health_check_timeout_ms == 0 {
        return Err(invalid(
            "federation.health_check_timeout_ms".into(),
            "must be at least 1".into(),
        ));
    }

    let mut names = HashSet::new();
    for (i, cluster) in config.clusters.iter().enumerate() {
        let key = |field: &str| format!("clusters[{i}].{field}");
        // A cluster read from its own file is reported against that file.
        let invalid = |key: String, rule: String| ConfigError::Invalid {
            file: cluster.source.clone().unwrap_or_else(|| file.to_owned()),
            key,
            rule,
        };
        if !is_valid_cluster_name(&cluster.name) {
            return Err(invalid(
                key("name"),
                format!(
                    "{:?} is not a valid cluster name: names must match [a-zA-Z0-9._-]{{1,64}}",
                    cluster.name
                ),
            ));
        }
        if !names.insert(cluster.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!("duplicate cluster name {:?}", cluster.name),
            ));
        }
        if !(1..=10_000).contains(&cluster.weight) {
            return Err(invalid(key("weight"), "must be between 1 and 10000".into()));
        }
        match (cluster.kind, &cluster.kafka) {
            (crate::ClusterKind::Kafka, None) => return Err(invalid(
                key("kafka"),
                "a cluster of kind \"kafka\" needs a [clusters.kafka] table with bootstrap_servers"
                    .into(),
            )),
            (crate::ClusterKind::Embedded, Some(_)) => {
                return Err(invalid(
                    key("kafka"),
                    "only a cluster of kind \"kafka\" takes a [clusters.kafka] table".into(),
                ))
            }
            (crate::ClusterKind::Kafka, Some(k)) => {
                if k.bootstrap_servers.trim().is_empty() {
                    return Err(invalid(
                        key("kafka.bootstrap_servers"),
                        "must name at least one host:port".into(),
                    ));
                }
                if k.request_timeout_ms == 0 {
                    return Err(invalid(
                        key("kafka.request_timeout_ms"),
                        "must be at least 1".into(),
                    ));
                }
            }
            (crate::ClusterKind::Embedded, None) => {}
        }
        let e = &cluster.embedded;
        if e.fsync_interval_ms == 0 {
            return Err(invalid(
                key("embedded.fsync_interval_ms"),
                "must be at least 1".into(),
            ));
        }
        if e.segment_bytes < 4096 {
            return Err(invalid(
                key("embedded.segment_bytes"),
                "must be at least 4096".into(),
            ));
        }
        if e.index_interval_bytes == 0 {
            return Err(invalid(
                key("embedded.index_interval_bytes"),
                "must be at least 1".into(),
            ));
        }
        if e.retention_ms == Some(0) {
            return Err(invalid(
                key("embedded.retention_ms"),
                "must be at least 1; leave it out to keep records forever".into(),
            ));
        }
        if e.retention_check_interval_ms == 0 {
            return Err(invalid(
                key("embedded.retention_check_interval_ms"),
                "must be at least 1".into(),
            ));
        }
    }

    for (i, pin) in f.pins.iter().enumerate() {
        let key = |field: &str| format!("federation.pins[{i}].{field}");
        check_selector(pin.topic.as_deref(), pin.prefix.as_deref())
            .map_err(|rule| invalid(key("topic"), rule))?;
        if !names.contains(pin.cluster.as_str()) {
            return Err(invalid(
                key("cluster"),
                format!("no cluster named {:?} is configured", pin.cluster),
            ));
        }
    }
    if f.placement.lease_ms > 0 && f.placement.store != crate::PlacementStoreKind::Kafka {
        return Err(invalid(
            "federation.placement.lease_ms".into(),
            "a lease is for placement shared between gateways: it needs store = \"kafka\"".into(),
        ));
    }
    if f.placement.store == crate::PlacementStoreKind::Kafka {
        let Some(name) = f.placement.cluster.as_deref() else {
            return Err(invalid(
                "federation.placement.cluster".into(),
                "store = \"kafka\" needs the name of a kafka cluster to keep placement on".into(),
            ));
        };
        match config.cluster(name) {
            Some(c) if c.kind == crate::ClusterKind::Kafka => {}
            Some(_) => {
                return Err(invalid(
                    "federation.placement.cluster".into(),
                    format!("cluster {name:?} is not of kind \"kafka\""),
                ))
            }
            None => {
                return Err(invalid(
                    "federation.placement.cluster".into(),
                    format!("no cluster named {name:?} is configured"),
                ))
            }
        }
        if f.placement.late_write_grace_ms == 0 {
            return Err(invalid(
                "federation.placement.late_write_grace_ms".into(),
                "must be at least 1".into(),
            ));
        }
        // A gateway past its lease stops writing; a record it sent just
        // before may still land until the clusters' request timeout: the
        // look for late writes must come after both.
        let slowest = config
            .clusters
            .iter()
            .filter_map(|c| c.kafka.as_ref().map(|k| k.request_timeout_ms))
            .max()
            .unwrap_or(0);
        let lease = f.placement.lease_ms;
        if lease > 0 && f.placement.late_write_grace_ms <= lease + slowest {
            return Err(invalid(
                "federation.placement.late_write_grace_ms".into(),
                format!(
                    "must exceed lease_ms ({lease}) plus the longest kafka request_timeout_ms ({slowest}) when lease_ms is set"
                ),
            ));
        }
        if !is_valid_topic_name(&f.placement.topic) {
            return Err(invalid(
                "federation.placement.topic".into(),
                format!("{:?}: {}", f.placement.topic, crate::TOPIC_NAME_RULE),
            ));
        }
    }
    for (i, policy) in f.topic_policies.iter().enumerate() {
        check_selector(policy.topic.as_deref(), policy.prefix.as_deref())
            .map_err(|rule| invalid(format!("federation.topic_policies[{i}].topic"), rule))?;
    }
    if !config
        .clusters
        .iter()
        .any(|c| c.state == crate::ClusterState::Active)
    {
        return Err(invalid(
            "clusters".into(),
            "at least one cluster must be in state \"active\" to take new topics".into(),
        ));
    }
    Ok(())
}

/// `[tracing]`: on failure, the key and the rule.
fn validate_tracing(t: &crate::TracingConfig) -> Result<(), (String, String)> {
    let bad = |key: &str, rule: &str| Err((format!("tracing.{key}"), rule.to_owned()));
    if let Some(endpoint) = &t.otlp_endpoint {
        let Some(rest) = endpoint.strip_prefix("http://") else {
            return if endpoint.starts_with("https://") {
                bad(
                    "otlp_endpoint",
                    "must be an http:// URL: the exporter does not speak TLS; \
                     send to a collector on loopback or a sidecar",
                )
            } else {
                Err((
                    "tracing.otlp_endpoint".into(),
                    format!("{endpoint:?} must be an http://host:port URL"),
                ))
            };
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let port_ok = authority
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_ok());
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) || !port_ok {
            return Err((
                "tracing.otlp_endpoint".into(),
                format!("{endpoint:?} must be an http://host:port URL"),
            ));
        }
    }
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        return bad(
            "sampling_ratio",
            "must be between 0.0 and 1.0 (the share of traces recorded)",
        );
    }
    if t.service_name.trim().is_empty() {
        return bad("service_name", "must not be empty");
    }
    if !(1..=1_000_000).contains(&t.max_queue_spans) {
        return bad("max_queue_spans", "must be between 1 and 1000000");
    }
    if t.max_export_batch_spans == 0 || t.max_export_batch_spans > t.max_queue_spans {
        return bad(
            "max_export_batch_spans",
            "must be at least 1 and at most max_queue_spans",
        );
    }
    if t.export_interval_ms == 0 {
        return bad("export_interval_ms", "must be at least 1");
    }
    if t.export_timeout_ms == 0 {
        return bad("export_timeout_ms", "must be at least 1");
    }
    Ok(())
}

/// The `[consumers]` section, `gateway.node_id` and `gateway.peers`.
fn validate_consumers(
    config: &Config,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let c = &config.consumers;
    for (key, value) in [
        ("consumers.instance_timeout_ms", c.instance_timeout_ms),
        ("consumers.request_timeout_ms", c.request_timeout_ms),
        ("consumers.max_poll_timeout_ms", c.max_poll_timeout_ms),
        (
            "consumers.peer_connect_timeout_ms",
            c.peer_connect_timeout_ms,
        ),
        ("consumers.lag_interval_ms", c.lag_interval_ms),
    ] {
        if value == 0 {
            return Err(invalid(key.into(), "must be at least 1".into()));
        }
    }
    if c.max_instances == 0 {
        return Err(invalid(
            "consumers.max_instances".into(),
            "must be at least 1".into(),
        ));
    }
    if c.request_timeout_ms > c.max_poll_timeout_ms {
        return Err(invalid(
            "consumers.request_timeout_ms".into(),
            format!(
                "must not exceed consumers.max_poll_timeout_ms ({})",
                c.max_poll_timeout_ms
            ),
        ));
    }
    let g = &config.gateway;
    if let Some(node) = &g.node_id {
        if !is_valid_cluster_name(node) {
            return Err(invalid(
                "gateway.node_id".into(),
                format!(
                    "{node:?} is not a valid node name: names must match [a-zA-Z0-9._-]{{1,64}}"
                ),
            ));
        }
    }
    let mut names = HashSet::new();
    for (i, peer) in g.peers.iter().enumerate() {
        let key = |field: &str| format!("gateway.peers[{i}].{field}");
        if !is_valid_cluster_name(&peer.name) {
            return Err(invalid(
                key("name"),
                format!(
                    "{:?} is not a valid node name: names must match [a-zA-Z0-9._-]{{1,64}}",
                    peer.name
                ),
            ));
        }
        if !names.insert(peer.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!("duplicate peer name {:?}", peer.name),
            ));
        }
        check_peer_url(&peer.url).map_err(|rule| invalid(key("url"), rule))?;
    }
    if !g.peers.is_empty() && !config.admin.insecure {
        return Err(invalid(
            "gateway.peers".into(),
            "peers forward consumer requests over plaintext HTTP to each other's admin listeners; \
             set admin.insecure = true and bind admin.address to a private interface"
                .into(),
        ));
    }
    if !g.peers.is_empty() {
        match &g.node_id {
            None => {
                return Err(invalid(
                    "gateway.node_id".into(),
                    "required when gateway.peers is set: the name of this gateway among the peers"
                        .into(),
                ))
            }
            Some(node) if !names.contains(node.as_str()) => {
                return Err(invalid(
                    "gateway.node_id".into(),
                    format!("{node:?} is not one of gateway.peers[].name; list this gateway among its peers"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `http://host:port` with nothing after an optional `/`.
fn check_peer_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{url:?} must be an http:// URL of the peer's admin listener, e.g. http://10.0.0.2:8444"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(format!(
            "{url:?} must name a port, e.g. http://10.0.0.2:8444"
        ));
    };
    if host.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(format!(
            "{url:?} must be http://host:port with no path or credentials"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "{url:?}: port {port:?} must be between 1 and 65535"
        )),
    }
}

/// Exactly one of `topic` and `prefix`, each following the topic-name rule.
fn check_selector(topic: Option<&str>, prefix: Option<&str>) -> Result<(), String> {
    match (topic, prefix) {
        (Some(_), Some(_)) | (None, None) => Err("give exactly one of `topic` and `prefix`".into()),
        (Some(t), None) if !is_valid_topic_name(t) => Err(format!(
            "{t:?} is not a valid topic name: {}",
            crate::TOPIC_NAME_RULE
        )),
        (None, Some(p)) if !is_valid_topic_name(p) => Err(format!(
            "prefix {p:?} must itself follow the topic-name rule: {}",
            crate::TOPIC_NAME_RULE
        )),
        _ => Ok(()),
    }
}

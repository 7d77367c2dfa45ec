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

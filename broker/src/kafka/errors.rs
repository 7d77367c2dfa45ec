//! librdkafka's errors as [`BrokerError`]s.
//!
//! The client's mistakes that the Kafka protocol reports (unknown topic,
//! topic exists, bad partition count, record too large) map to their
//! [`BrokerError`] variants at the call that can tell them apart; every
//! other failure of a cluster (transport, timeout, no leader, coordinator
//! moving, authorization of Sluice's own credentials) is
//! [`BrokerError::Unavailable`]: origin cluster, retriable, and what the
//! federation fails over on.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::BrokerError;

/// `Unavailable` for cluster `cluster`, naming what was being done.
pub fn unavailable(cluster: &str, what: &str, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable {
        cluster: cluster.to_owned(),
        reason: format!("{what}: {error}"),
    }
}

/// Whether an error says the topic or partition does not exist.
pub fn is_unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
    )
}

/// The error code of a librdkafka error, when it has one.
pub fn code(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    error.rdkafka_error_code()
}

/// Whether an error (of a poll) means the cluster cannot be reached at all,
/// as opposed to one connection hiccup that librdkafka retries by itself.
pub fn is_cluster_down(error: &KafkaError) -> bool {
    matches!(code(error), Some(RDKafkaErrorCode::AllBrokersDown))
}

/// Whether a record was refused for its size.
pub fn is_too_large(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_a_retriable_cluster_error() {
        let e = unavailable(
            "east",
            "fetching metadata",
            "Local: All broker connections are down",
        );
        assert!(e.is_retriable());
        assert_eq!(e.origin(), crate::error::ErrorOrigin::Cluster);
        assert!(e.to_string().contains("east"), "{e}");
        assert!(e.to_string().contains("fetching metadata"), "{e}");
    }

    #[test]
    fn classifies_codes() {
        assert!(is_unknown_topic(RDKafkaErrorCode::UnknownTopicOrPartition));
        assert!(!is_unknown_topic(RDKafkaErrorCode::RequestTimedOut));
        assert!(is_too_large(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(is_cluster_down(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::AllBrokersDown
        )));
        assert!(!is_cluster_down(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }
}

//! Errors as HTTP answers: the one place a failure becomes a status, a
//! Confluent error code and a message.
//!
//! Clients get a precise message for their own mistakes (bad name, unknown
//! topic, offset out of range) and a generic one for ours (corrupt data,
//! storage I/O), whose cause is logged here and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sluice_broker::BrokerError;
use sluice_federation::placement::PlacementError;
use sluice_federation::FederationError;

/// Content type of every error body, Confluent's versioned JSON.
pub const ERROR_CONTENT_TYPE: &str = "application/vnd.kafka.v2+json";

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Confluent's error code for an unknown topic.
pub const TOPIC_NOT_FOUND: u32 = 40401;
/// Confluent's error code for an unknown partition.
pub const PARTITION_NOT_FOUND: u32 = 40402;
/// Confluent's error code for creating a topic that exists.
pub const TOPIC_EXISTS: u32 = 40002;
/// Sluice's code for an offset below the log start.
pub const OFFSET_OUT_OF_RANGE: u32 = 41601;
/// Confluent's code for stored bytes the requested format cannot render.
pub const UNRENDERABLE_RECORD: u32 = 40601;
/// Code for a request that conflicts with the federation's state.
pub const CONFLICT: u32 = 409;
/// Confluent's code for a cluster that cannot serve now.
pub const UNAVAILABLE: u32 = 50301;
/// Confluent's code for a failure inside the server.
pub const INTERNAL: u32 = 50001;

/// The message sent for every internal failure; the cause goes to the log.
const INTERNAL_MESSAGE: &str = "internal error";

/// An error answer: `{"error_code": N, "message": "..."}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Confluent error code: the status, or the status with a two-digit suffix.
    pub error_code: u32,
    /// What went wrong, for the client.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, error_code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            error_code,
            message: message.into(),
        }
    }

    /// Builds an error whose code is the status itself.
    fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, u32::from(status.as_u16()), message)
    }

    /// 400: the request is malformed (bad parameter, bad JSON syntax).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::BAD_REQUEST, message)
    }

    /// 404 with code 404: no such route or resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::NOT_FOUND, message)
    }

    /// 405: the route exists but not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::METHOD_NOT_ALLOWED, message)
    }

    /// 406: the response cannot be rendered in an accepted format.
    pub fn not_acceptable(error_code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, error_code, message)
    }

    /// 413: the body is larger than the listener accepts.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 415: the request body's content type is not one we read.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    /// 422: well-formed JSON of the wrong shape or with invalid values.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 503 (code 50301, with `Retry-After`) saying `message`; `cause`,
    /// operational detail such as which cluster and why, is logged as
    /// `what`, never sent.
    pub fn unavailable(cause: &dyn std::fmt::Display, what: &str, message: &'static str) -> Self {
        tracing::warn!(error = %cause, "{what}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE, message)
    }

    /// 500 with a generic message; `cause` is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed inside the gateway");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            INTERNAL,
            INTERNAL_MESSAGE,
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.error_code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// An error and its sources, `outer: inner: ...`: the outer message alone
/// often does not say what went wrong (a client's "connect error").
pub struct WithSources<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for WithSources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(inner) = source {
            write!(f, ": {inner}")?;
            source = inner.source();
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error_code: u32,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error_code: self.error_code,
            message: &self.message,
        };
        // Serializing a u32 and a str cannot fail; the fallback keeps the
        // shape anyway rather than panic in an error path.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
            format!(r#"{{"error_code":{},"message":"error"}}"#, self.error_code).into_bytes()
        });
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ERROR_CONTENT_TYPE),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::UnknownTopic(topic) => Self::new(
                StatusCode::NOT_FOUND,
                TOPIC_NOT_FOUND,
                format!("Topic {topic:?} not found"),
            ),
            BrokerError::UnknownPartition { topic, partition } => Self::new(
                StatusCode::NOT_FOUND,
                PARTITION_NOT_FOUND,
                format!("Partition {partition} of topic {topic:?} not found"),
            ),
            BrokerError::InvalidTopicName(topic) => Self::bad_request(format!(
                "invalid topic name {topic:?}: {}",
                sluice_config::TOPIC_NAME_RULE
            )),
            BrokerError::TopicExists(topic) => Self::new(
                StatusCode::BAD_REQUEST,
                TOPIC_EXISTS,
                format!("Topic {topic:?} already exists"),
            ),
            e @ BrokerError::InvalidPartitionCount(_) => Self::bad_request(e.to_string()),
            e @ BrokerError::OffsetOutOfRange { .. } => Self::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                OFFSET_OUT_OF_RANGE,
                e.to_string(),
            ),
            e @ BrokerError::RecordTooLarge { .. } => Self::payload_too_large(e.to_string()),
            e @ BrokerError::Unavailable { .. } => Self::unavailable(
                &e,
                "cluster unavailable",
                "the topic's cluster is unavailable; retry later",
            ),
            e @ BrokerError::InvalidGroupId { .. } => Self::bad_request(e.to_string()),
            e @ (BrokerError::Corrupt { .. } | BrokerError::Io(_)) => Self::internal(&e),
        }
    }
}

impl From<FederationError> for ApiError {
    fn from(error: FederationError) -> Self {
        match error {
            FederationError::Broker(e) => e.into(),
            e @ FederationError::PlacementStale { .. } => Self::unavailable(
                &e,
                "produce refused",
                "this gateway cannot confirm where topics live right now; retry later",
            ),
            e @ (FederationError::HomeDown { .. } | FederationError::NoHealthyCluster { .. }) => {
                Self::unavailable(
                    &e,
                    "topic unavailable",
                    "the topic's cluster is unavailable; retry later",
                )
            }
            e @ (FederationError::Cursor(_) | FederationError::CursorPartition { .. }) => {
                Self::bad_request(e.to_string())
            }
            FederationError::Placement(e) => match e {
                PlacementError::UnknownTopic(topic) => BrokerError::UnknownTopic(topic).into(),
                PlacementError::TopicExists(topic) => BrokerError::TopicExists(topic).into(),
                PlacementError::InvalidTopicName(topic) => {
                    BrokerError::InvalidTopicName(topic).into()
                }
                PlacementError::UnknownPartition {
                    topic, partition, ..
                } => BrokerError::UnknownPartition { topic, partition }.into(),
                e @ PlacementError::UnknownEpoch { .. } => {
                    Self::bad_request(format!("invalid cursor: {e}"))
                }
                e @ PlacementError::EpochMoved { .. } => {
                    Self::new(StatusCode::CONFLICT, CONFLICT, e.to_string())
                }
                e => Self::internal(&e),
            },
            e @ FederationError::UnknownCluster(_) => {
                Self::new(StatusCode::NOT_FOUND, 404, e.to_string())
            }
            e @ (FederationError::RebalanceRunning
            | FederationError::Conflict(_)
            | FederationError::Config(_)) => {
                Self::new(StatusCode::CONFLICT, CONFLICT, e.to_string())
            }
            e @ (FederationError::NoCluster
            | FederationError::Store(_)
            | FederationError::Internal(_)) => Self::internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("JSON body")
    }

    #[test]
    fn client_mistakes_get_precise_codes() {
        let cases = [
            (BrokerError::UnknownTopic("t".into()), 404, TOPIC_NOT_FOUND),
            (
                BrokerError::UnknownPartition {
                    topic: "t".into(),
                    partition: 7,
                },
                404,
                PARTITION_NOT_FOUND,
            ),
            (BrokerError::InvalidTopicName("a b".into()), 400, 400),
            (BrokerError::TopicExists("t".into()), 400, TOPIC_EXISTS),
            (BrokerError::InvalidPartitionCount(0), 400, 400),
            (
                BrokerError::OffsetOutOfRange {
                    topic: "t".into(),
                    partition: 0,
                    requested: 1,
                    log_start_offset: 5,
                    high_watermark: 9,
                },
                416,
                OFFSET_OUT_OF_RANGE,
            ),
            (BrokerError::RecordTooLarge { size: 9, limit: 1 }, 413, 413),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status.as_u16(), status, "{api}");
            assert_eq!(api.error_code, code, "{api}");
        }
    }

    #[test]
    fn messages_name_what_the_client_got_wrong() {
        let api = ApiError::from(BrokerError::UnknownTopic("orders".into()));
        assert!(api.message.contains("orders"), "{api}");
        let api = ApiError::from(BrokerError::InvalidTopicName("a b".into()));
        assert!(
            api.message.contains(sluice_config::TOPIC_NAME_RULE),
            "{api}"
        );
        let api = ApiError::from(BrokerError::OffsetOutOfRange {
            topic: "t".into(),
            partition: 0,
            requested: 1,
            log_start_offset: 5,
            high_watermark: 9,
        });
        assert!(
            api.message.contains('5') && api.message.contains('9'),
            "{api}"
        );
    }

    #[test]
    fn our_faults_are_generic() {
        let secret = "/var/lib/sluice/secret-path";
        for error in [
            BrokerError::Corrupt {
                location: secret.into(),
                reason: "crc".into(),
            },
            BrokerError::Io(std::io::Error::other(secret)),
        ] {
            let api = ApiError::from(error);
            assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(api.error_code, INTERNAL);
            assert!(!api.message.contains(secret), "{api}");
        }
        let api = ApiError::from(FederationError::NoCluster);
        assert_eq!(api.error_code, INTERNAL);
    }

    #[tokio::test]
    async fn unavailable_is_503_with_retry_after() {
        let api = ApiError::from(FederationError::Broker(BrokerError::Unavailable {
            cluster: "east".into(),
            reason: "disk full".into(),
        }));
        assert_eq!(api.error_code, UNAVAILABLE);
        assert!(!api.message.contains("disk full"));
        let response = api.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn body_is_confluent_shape() {
        let response = ApiError::unprocessable("records: missing").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], ERROR_CONTENT_TYPE);
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"error_code": 422, "message": "records: missing"})
        );
    }
}

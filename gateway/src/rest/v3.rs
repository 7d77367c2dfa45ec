//! v3 clusters and topics: `/v3/clusters[/{cluster_id}[/topics[/{topic}]]]`.
//!
//! The gateway shows all its clusters as one Kafka cluster whose id is
//! `gateway.cluster_id`; which real cluster holds a topic is federation's
//! business (the v2 topic route shows it as the `cluster` extension).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_federation::TopicInfo;

use super::extract::{parse_json, read_body, PathParams};
use super::media;
use crate::app::AppState;
use crate::error::ApiError;

#[derive(Debug, Serialize)]
struct ClusterOut {
    kind: &'static str,
    cluster_id: String,
}

#[derive(Debug, Serialize)]
struct ListOut<T> {
    kind: &'static str,
    data: Vec<T>,
}

#[derive(Debug, Serialize)]
struct TopicOut<'a> {
    kind: &'static str,
    cluster_id: &'a str,
    topic_name: String,
    partitions_count: u32,
    is_internal: bool,
    /// Sluice extension: the topic's home cluster in the federation.
    home_cluster: String,
}

fn topic_out(cluster_id: &str, info: TopicInfo) -> TopicOut<'_> {
    TopicOut {
        kind: "KafkaTopic",
        cluster_id,
        topic_name: info.name,
        partitions_count: info.partitions,
        is_internal: false,
        home_cluster: info.cluster,
    }
}

fn cluster_out(state: &AppState) -> ClusterOut {
    ClusterOut {
        kind: "KafkaCluster",
        cluster_id: state.config.gateway.cluster_id.clone(),
    }
}

/// `POST /v3/clusters/{cluster_id}/topics` body. `replication_factor` is
/// accepted and ignored: durability is each cluster's own policy.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with topic_name")]
struct CreateTopic {
    topic_name: String,
    partitions_count: Option<u32>,
    #[serde(rename = "replication_factor")]
    _replication_factor: Option<i64>,
    configs: Option<Vec<serde_json::Value>>,
}

/// `GET /v3/clusters`.
pub async fn list_clusters(State(state): State<AppState>) -> Response {
    Json(ListOut {
        kind: "KafkaClusterList",
        data: vec![cluster_out(&state)],
    })
    .into_response()
}

/// `GET /v3/clusters/{cluster_id}`.
pub async fn cluster(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    path.cluster_id(&state)?;
    Ok(Json(cluster_out(&state)).into_response())
}

/// `GET /v3/clusters/{cluster_id}/topics`.
pub async fn list_topics(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    path.cluster_id(&state)?;
    let id = &state.config.gateway.cluster_id;
    let topics = state.federation.list_topics().await?;
    Ok(Json(ListOut {
        kind: "KafkaTopicList",
        data: topics.into_iter().map(|t| topic_out(id, t)).collect(),
    })
    .into_response())
}

/// `POST /v3/clusters/{cluster_id}/topics`: 201 with the new topic.
pub async fn create_topic(
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    path.cluster_id(&state)?;
    media::require_json(&headers)?;
    let body = read_body(request, state.config.listener.max_body_bytes).await?;
    let body: CreateTopic = parse_json(&body)?;
    if body.configs.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::unprocessable(
            "configs: per-topic configs are not supported",
        ));
    }
    let info = state
        .federation
        .create_topic(&body.topic_name, body.partitions_count)
        .await?;
    let id = &state.config.gateway.cluster_id;
    Ok((StatusCode::CREATED, Json(topic_out(id, info))).into_response())
}

/// `GET /v3/clusters/{cluster_id}/topics/{topic}`.
pub async fn topic(State(state): State<AppState>, path: PathParams) -> Result<Response, ApiError> {
    path.cluster_id(&state)?;
    let info = state.federation.describe_topic(path.topic()?).await?;
    let id = &state.config.gateway.cluster_id;
    Ok(Json(topic_out(id, info)).into_response())
}

/// `DELETE /v3/clusters/{cluster_id}/topics/{topic}`: 204.
pub async fn delete_topic(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<StatusCode, ApiError> {
    path.cluster_id(&state)?;
    state.federation.delete_topic(path.topic()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! v2 metadata: topics, partitions and partition offsets.
//!
//! Sluice has no brokers to show, so every partition is led by broker 0 with
//! itself as the one in-sync replica: the shape clients expect, honestly
//! filled.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sluice_broker::BrokerError;
use sluice_federation::TopicInfo;

use super::extract::PathParams;
use super::media;
use crate::app::AppState;
use crate::error::ApiError;

#[derive(Debug, Serialize)]
struct TopicOut {
    name: String,
    configs: serde_json::Map<String, serde_json::Value>,
    partitions: Vec<PartitionOut>,
    /// Sluice extension: the topic's home cluster.
    cluster: String,
}

#[derive(Debug, Serialize)]
struct PartitionOut {
    partition: u32,
    leader: u32,
    replicas: [ReplicaOut; 1],
}

#[derive(Debug, Serialize)]
struct ReplicaOut {
    broker: u32,
    leader: bool,
    in_sync: bool,
}

#[derive(Debug, Serialize)]
struct OffsetsOut {
    beginning_offset: u64,
    end_offset: u64,
}

fn partition(partition: u32) -> PartitionOut {
    PartitionOut {
        partition,
        leader: 0,
        replicas: [ReplicaOut {
            broker: 0,
            leader: true,
            in_sync: true,
        }],
    }
}

/// A JSON answer with Confluent's v2 content type.
fn v2_json<T: Serialize>(body: T) -> Response {
    ([(header::CONTENT_TYPE, media::KAFKA_V2)], axum::Json(body)).into_response()
}

/// The topic, and the partition number checked against it.
async fn topic_partition(
    state: &AppState,
    path: &PathParams,
) -> Result<(TopicInfo, u32), ApiError> {
    let topic = path.topic()?;
    let number = path.partition()?;
    let info = state.federation.describe_topic(topic).await?;
    if number >= info.partitions {
        return Err(BrokerError::UnknownPartition {
            topic: info.name,
            partition: number,
        }
        .into());
    }
    Ok((info, number))
}

/// `GET /topics`: topic names.
pub async fn list_topics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let names: Vec<String> = state
        .federation
        .list_topics()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    Ok(v2_json(names))
}

/// `GET /topics/{topic}`.
pub async fn topic(State(state): State<AppState>, path: PathParams) -> Result<Response, ApiError> {
    let info = state.federation.describe_topic(path.topic()?).await?;
    Ok(v2_json(TopicOut {
        partitions: (0..info.partitions).map(partition).collect(),
        name: info.name,
        configs: serde_json::Map::new(),
        cluster: info.cluster,
    }))
}

/// `GET /topics/{topic}/partitions`.
pub async fn partitions(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    let info = state.federation.describe_topic(path.topic()?).await?;
    Ok(v2_json(
        (0..info.partitions).map(partition).collect::<Vec<_>>(),
    ))
}

/// `GET /topics/{topic}/partitions/{partition}`.
pub async fn one_partition(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    let (_, number) = topic_partition(&state, &path).await?;
    Ok(v2_json(partition(number)))
}

/// `GET /topics/{topic}/partitions/{partition}/offsets`.
pub async fn offsets(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    let topic = path.topic()?;
    let number = path.partition()?;
    let offsets = state.federation.offsets(topic, number).await?;
    Ok(v2_json(OffsetsOut {
        beginning_offset: offsets.earliest,
        end_offset: offsets.latest,
    }))
}

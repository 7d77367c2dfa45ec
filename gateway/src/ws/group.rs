//! A group subscription: the connection is a member of a consumer group.
//!
//! The member is a v2 consumer instance (binary format, auto-commit off,
//! `auto.offset.reset` from the subscribe frame's `from`, `earliest` by
//! default) driven through [`crate::rest::consumers::dispatch`], so it lives
//! on the group's owner gateway like every other member, here or through
//! forwarding. The task long-polls the instance, pushes records while
//! credit lasts, announces the partitions it holds in `assigned` frames when
//! they change, and commits on `commit` frames: delivery is at least once.
//! When the subscription ends, the instance is deleted (without a commit),
//! so the group rebalances at once rather than after the idle timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::protocol::{
    AssignedPartition, BytesOut, CommitFrame, Encoded, Framing, HeaderOut, ServerFrame,
    SubscribeFrame,
};
use super::session::{send, Outbox};
use super::CLOSE_SLOW_CONSUMER;
use crate::app::AppState;
use crate::error::ApiError;
use crate::rest::consumers::{dispatch, KAFKA_V2};
use crate::rest::extract::decode_base64;

/// Long-poll of each records request a group member makes.
pub const DEFAULT_WS_GROUP_POLL_MS: u64 = 1_000;
/// `max_bytes` of each records request: what a member holds at most.
pub const DEFAULT_WS_GROUP_MAX_BYTES: usize = 256 * 1024;
/// Commit frames queued for one subscription.
pub const DEFAULT_WS_COMMIT_QUEUE: usize = 16;

/// A record as the v2 records route answers it (binary format).
#[derive(Deserialize)]
struct RecordIn {
    topic: String,
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: Vec<HeaderIn>,
}

#[derive(Deserialize)]
struct HeaderIn {
    name: String,
    value: String,
}

/// A pushed group record: the `record` frame without a cursor (the group's
/// committed offsets are where a member resumes).
#[derive(Serialize)]
struct GroupRecordFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sub: &'a str,
    topic: &'a str,
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<BytesOut<'a>>,
    value: Option<BytesOut<'a>>,
    headers: Vec<HeaderOut<'a>>,
    group: &'a str,
}

/// Why a group subscription stops.
enum Stop {
    Closed,
    Unsubscribed,
    Failed(ApiError),
    SlowConsumer,
}

/// Deletes the instance when the subscription's task ends or is aborted.
struct Leave {
    state: AppState,
    path: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let state = self.state.clone();
        let path = std::mem::take(&mut self.path);
        tokio::spawn(async move {
            let _ = call(&state, Method::DELETE, &path, None).await;
        });
    }
}

/// One request to the group's routes; the answer's JSON (null when empty).
async fn call(
    state: &AppState,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ApiError> {
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, KAFKA_V2);
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .map_err(|e| ApiError::internal(&e))?;
    let response = dispatch(state.clone(), request).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let value: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(&e))?
    };
    if status.is_success() {
        Ok(value)
    } else {
        let code = value["error_code"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(u32::from(status.as_u16()));
        let message = value["message"].as_str().unwrap_or("error").to_owned();
        Err(ApiError::new(status, code, message))
    }
}

/// A running group subscription.
pub struct GroupMember {
    state: AppState,
    id: String,
    group: String,
    path: String,
    granted: watch::Receiver<u64>,
    sent: u64,
    pause_limit: Duration,
    out: Outbox,
    commits: mpsc::Receiver<CommitFrame>,
    /// Per partition, the offset of the last record pushed.
    pushed: BTreeMap<(String, u32), u64>,
    assigned: Vec<AssignedPartition>,
}

impl GroupMember {
    /// Joins the group, answers `subscribed` (or an error), then pushes
    /// records until stopped.
    pub async fn start(
        state: AppState,
        frame: SubscribeFrame,
        granted: watch::Receiver<u64>,
        pause_limit: Duration,
        out: Outbox,
        commits: mpsc::Receiver<CommitFrame>,
    ) {
        let group = frame.group.clone().unwrap_or_default();
        let joined = join(&state, &group, &frame).await;
        let (partitions, path, _leave) = match joined {
            Ok(joined) => joined,
            Err(error) => {
                send(&out, &ServerFrame::error(Some(&frame.id), None, &error)).await;
                return;
            }
        };
        let subscribed = ServerFrame::Subscribed {
            id: &frame.id,
            partitions,
        };
        if !send(&out, &subscribed).await {
            return;
        }
        let mut member = Self {
            state,
            id: frame.id,
            group,
            path,
            granted,
            sent: 0,
            pause_limit,
            out,
            commits,
            pushed: BTreeMap::new(),
            assigned: Vec::new(),
        };
        match member.run().await {
            Stop::Closed => {}
            Stop::Unsubscribed => {
                send(&member.out, &ServerFrame::Unsubscribed { sub: &member.id }).await;
            }
            Stop::Failed(error) => {
                send(
                    &member.out,
                    &ServerFrame::error(None, Some(&member.id), &error),
                )
                .await;
            }
            Stop::SlowConsumer => {
                let reason = format!(
                    "slow consumer: no credit for {} ms",
                    member.pause_limit.as_millis()
                );
                let _ = member.out.close(CLOSE_SLOW_CONSUMER, reason).await;
            }
        }
    }

    async fn run(&mut self) -> Stop {
        loop {
            if let Err(stop) = self.announce().await {
                return stop;
            }
            let (state, path) = (self.state.clone(), self.path.clone());
            let mut polled = tokio::spawn(async move { poll(&state, &path).await });
            // Commits are served while the poll is out; the poll is a task
            // so that finishing it never cuts a commit short.
            let records = loop {
                let stop = tokio::select! {
                    joined = &mut polled => match joined {
                        Ok(Ok(records)) => break records,
                        Ok(Err(error)) => return Stop::Failed(error),
                        Err(error) => return Stop::Failed(ApiError::internal(&error)),
                    },
                    () = self.out.closed() => Stop::Closed,
                    changed = self.granted.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => Stop::Unsubscribed,
                    },
                    commit = self.commits.recv() => match commit {
                        Some(commit) => match self.commit(commit).await {
                            Ok(()) => continue,
                            Err(stop) => stop,
                        },
                        None => Stop::Unsubscribed,
                    },
                };
                polled.abort();
                return stop;
            };
            for record in records {
                if let Err(stop) = self.wait_for_credit().await {
                    return stop;
                }
                // Partitions taken away meanwhile are another member's now.
                if !self
                    .assigned
                    .iter()
                    .any(|a| a.topic == record.topic && a.partition == record.partition)
                {
                    continue;
                }
                if let Err(stop) = self.push(&record).await {
                    return stop;
                }
            }
        }
    }

    /// Sends `assigned` when the member's partitions changed.
    async fn announce(&mut self) -> Result<(), Stop> {
        let value = call(
            &self.state,
            Method::GET,
            &format!("{}/assignments", self.path),
            None,
        )
        .await
        .map_err(Stop::Failed)?;
        let mut partitions: Vec<AssignedPartition> =
            serde_json::from_value(value["partitions"].clone())
                .map_err(|e| Stop::Failed(ApiError::internal(&e)))?;
        partitions.sort();
        if partitions != self.assigned {
            self.assigned = partitions.clone();
            self.pushed.retain(|(t, p), _| {
                partitions
                    .iter()
                    .any(|a| &a.topic == t && a.partition == *p)
            });
            let frame = ServerFrame::Assigned {
                sub: &self.id,
                partitions,
            };
            if !send(&self.out, &frame).await {
                return Err(Stop::Closed);
            }
        }
        Ok(())
    }

    async fn push(&mut self, record: &RecordIn) -> Result<(), Stop> {
        let bytes = |text: &Option<String>, what: &str| {
            text.as_deref()
                .map(|t| decode_base64(t, what))
                .transpose()
                .map_err(Stop::Failed)
        };
        let key = bytes(&record.key, "key")?;
        let value = bytes(&record.value, "value")?;
        let headers = record
            .headers
            .iter()
            .map(|h| Ok((h.name.as_str(), decode_base64(&h.value, "header")?)))
            .collect::<Result<Vec<_>, ApiError>>()
            .map_err(Stop::Failed)?;
        let framing = self.out.framing();
        let frame = GroupRecordFrame {
            kind: "record",
            sub: &self.id,
            topic: &record.topic,
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: key.as_deref().map(|k| BytesOut::new(framing, k)),
            value: value.as_deref().map(|v| BytesOut::new(framing, v)),
            headers: headers
                .iter()
                .map(|(name, value)| HeaderOut {
                    name,
                    value: BytesOut::new(framing, value),
                })
                .collect(),
            group: &self.group,
        };
        let encoded = encode(&frame, framing).map_err(Stop::Failed)?;
        if !self.out.send_encoded(encoded).await {
            return Err(Stop::Closed);
        }
        self.sent += 1;
        self.pushed
            .insert((record.topic.clone(), record.partition), record.offset);
        Ok(())
    }

    async fn commit(&mut self, frame: CommitFrame) -> Result<(), Stop> {
        let offsets: Vec<Value> = match &frame.offsets {
            Some(list) => list.iter().map(|o| json!(o)).collect(),
            None => self
                .pushed
                .iter()
                .map(|((topic, partition), offset)| {
                    json!({"topic": topic, "partition": partition, "offset": offset})
                })
                .collect(),
        };
        let answer = if offsets.is_empty() {
            Ok(Value::Null)
        } else {
            call(
                &self.state,
                Method::POST,
                &format!("{}/offsets", self.path),
                Some(json!({ "offsets": offsets })),
            )
            .await
        };
        let sent = match answer {
            Ok(_) => {
                send(
                    &self.out,
                    &ServerFrame::Committed {
                        sub: &self.id,
                        id: frame.id.as_deref(),
                    },
                )
                .await
            }
            Err(error) => {
                send(
                    &self.out,
                    &ServerFrame::error(frame.id.as_deref(), Some(&self.id), &error),
                )
                .await
            }
        };
        if sent {
            Ok(())
        } else {
            Err(Stop::Closed)
        }
    }

    /// Returns once a record may be sent, serving commits meanwhile; a
    /// pause longer than the limit is a slow consumer.
    async fn wait_for_credit(&mut self) -> Result<(), Stop> {
        if *self.granted.borrow_and_update() > self.sent {
            return Ok(());
        }
        let deadline = Instant::now() + self.pause_limit;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Err(Stop::SlowConsumer),
                changed = self.granted.changed() => {
                    if changed.is_err() {
                        return Err(Stop::Unsubscribed);
                    }
                    if *self.granted.borrow_and_update() > self.sent {
                        return Ok(());
                    }
                }
                commit = self.commits.recv() => match commit {
                    Some(commit) => self.commit(commit).await?,
                    None => return Err(Stop::Unsubscribed),
                },
            }
        }
    }
}

/// A group record frame in the connection's framing.
fn encode(frame: &GroupRecordFrame<'_>, framing: Framing) -> Result<Encoded, ApiError> {
    match framing {
        Framing::Json => serde_json::to_string(frame)
            .map(Encoded::Text)
            .map_err(|e| ApiError::internal(&e)),
        Framing::Cbor => {
            let mut bytes = Vec::with_capacity(128);
            ciborium::ser::into_writer(frame, &mut bytes).map_err(|e| ApiError::internal(&e))?;
            Ok(Encoded::Binary(bytes))
        }
    }
}

/// One long-poll of the member's instance.
async fn poll(state: &AppState, instance: &str) -> Result<Vec<RecordIn>, ApiError> {
    let path = format!(
        "{instance}/records?timeout={DEFAULT_WS_GROUP_POLL_MS}&max_bytes={DEFAULT_WS_GROUP_MAX_BYTES}"
    );
    let value = call(state, Method::GET, &path, None).await?;
    serde_json::from_value(value).map_err(|e| ApiError::internal(&e))
}

/// Creates the member's instance and subscribes it; returns the topic's
/// partition count, the instance's path and the guard that deletes it.
async fn join(
    state: &AppState,
    group: &str,
    frame: &SubscribeFrame,
) -> Result<(u32, String, Leave), ApiError> {
    if frame.cursor.is_some() {
        return Err(ApiError::bad_request(
            "a group subscription resumes from the group's committed offsets; give `group` or `cursor`, not both",
        ));
    }
    let reset = match frame.from.as_deref() {
        None | Some("earliest") => "earliest",
        Some("latest") => "latest",
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "from must be earliest or latest, got {other:?}"
            )))
        }
    };
    let partitions = state
        .federation
        .describe_topic(&frame.topic)
        .await?
        .partitions;
    let created = call(
        state,
        Method::POST,
        &format!("/consumers/{group}"),
        Some(
            json!({"format": "binary", "auto.offset.reset": reset, "auto.commit.enable": "false"}),
        ),
    )
    .await?;
    let instance = created["instance_id"]
        .as_str()
        .ok_or_else(|| ApiError::internal(&"create answered without instance_id"))?
        .to_owned();
    let path = format!("/consumers/{group}/instances/{instance}");
    let leave = Leave {
        state: state.clone(),
        path: path.clone(),
    };
    call(
        state,
        Method::POST,
        &format!("{path}/subscription"),
        Some(json!({"topics": [frame.topic]})),
    )
    .await?;
    Ok((partitions, path, leave))
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{ClientFrame, CommitOffset};
    use super::*;

    #[test]
    fn commit_frames_parse_and_name_their_mistakes() {
        let frame = ClientFrame::parse(
            r#"{"type":"commit","sub":"s","id":"k","offsets":[{"topic":"t","partition":1,"offset":4}]}"#,
        )
        .unwrap();
        let ClientFrame::Commit(commit) = frame else {
            panic!("not a commit")
        };
        let offsets: Vec<CommitOffset> = commit.offsets.unwrap();
        assert_eq!((offsets[0].partition, offsets[0].offset), (1, 4));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"commit","sub":"s"}"#),
            Ok(ClientFrame::Commit(CommitFrame { offsets: None, .. }))
        ));
        let Err(e) = ClientFrame::parse(r#"{"type":"commit","sub":"s","offsets":[{"topic":"t"}]}"#)
        else {
            panic!("accepted a commit without partition")
        };
        assert!(
            e.error.message.starts_with("invalid commit frame"),
            "{}",
            e.error.message
        );
        assert_eq!(e.sub.as_deref(), Some("s"));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"subscribe","id":"s","topic":"t","group":"g"}"#),
            Ok(ClientFrame::Subscribe(SubscribeFrame {
                group: Some(_),
                ..
            }))
        ));
    }

    #[test]
    fn group_records_follow_the_framing() {
        let frame = |framing| GroupRecordFrame {
            kind: "record",
            sub: "s1",
            topic: "orders",
            partition: 1,
            offset: 41,
            timestamp: 7,
            key: Some(BytesOut::new(framing, b"k")),
            value: None,
            headers: vec![HeaderOut {
                name: "h",
                value: BytesOut::new(framing, b"x"),
            }],
            group: "g",
        };
        let Ok(Encoded::Text(text)) = encode(&frame(Framing::Json), Framing::Json) else {
            panic!("JSON framing gives text")
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["key"], "aw==");
        assert_eq!(json["headers"][0]["value"], "eA==");
        assert_eq!(json["group"], "g");
        assert!(json.get("cursor").is_none());
        let Ok(Encoded::Binary(bytes)) = encode(&frame(Framing::Cbor), Framing::Cbor) else {
            panic!("CBOR framing gives binary")
        };
        let cbor: ciborium::Value = ciborium::de::from_reader(bytes.as_slice()).unwrap();
        let key = cbor
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_text() == Some("key"))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(key.as_bytes().map(Vec::as_slice), Some(&b"k"[..]));
    }

    #[test]
    fn group_frames_render_as_documented() {
        let docs = include_str!("../../../docs/websocket.md");
        let assigned = ServerFrame::Assigned {
            sub: "s1",
            partitions: vec![
                AssignedPartition {
                    topic: "orders".into(),
                    partition: 0,
                },
                AssignedPartition {
                    topic: "orders".into(),
                    partition: 1,
                },
            ],
        }
        .to_text();
        assert!(docs.contains(&assigned), "{assigned}");
        let committed = ServerFrame::Committed {
            sub: "s1",
            id: Some("k1"),
        }
        .to_text();
        assert!(docs.contains(&committed), "{committed}");
    }
}

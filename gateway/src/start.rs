//! Where a live tail of a topic starts, shared by the SSE route and
//! WebSocket subscriptions: a cursor handed out earlier (one position per
//! partition), the oldest records, or the end of every partition.

use sluice_federation::cursor::{Cursor, Position};
use sluice_federation::{Federation, FederationError, ReadStart};

use crate::error::ApiError;

/// A read of this size finds where a partition's oldest record is, without
/// holding its payload.
const EARLIEST_PROBE_MAX_BYTES: usize = 1;

/// Tries at reading every partition's end within one epoch before giving
/// up on a topic that keeps switching epochs.
const LATEST_ATTEMPTS: usize = 3;

/// Where a tail starts, as the client asked.
#[derive(Debug)]
pub enum StartAt {
    /// After the positions of a cursor this topic's tails handed out.
    Cursor(Cursor),
    /// The oldest records still held, in the first epoch.
    Earliest,
    /// Only records produced from now on.
    Latest,
    /// The first record of each partition with a timestamp at or after
    /// this many milliseconds since the Unix epoch.
    Time(i64),
}

impl StartAt {
    /// From a `cursor` and a `from` (`earliest` or `latest`, the default),
    /// which exclude each other.
    pub fn parse(cursor: Option<&str>, from: Option<&str>, topic: &str) -> Result<Self, ApiError> {
        match (cursor, from) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "give either `cursor` or `from`, not both",
            )),
            (Some(text), None) => Self::decode(text, topic),
            (None, None | Some("latest")) => Ok(Self::Latest),
            (None, Some("earliest")) => Ok(Self::Earliest),
            (None, Some(other)) => {
                let ms = if other.bytes().all(|b| b.is_ascii_digit()) {
                    other.parse::<i64>().ok()
                } else {
                    crate::rest::time::parse_ms(other)
                };
                match ms {
                    Some(ms) if ms >= 0 => Ok(Self::Time(ms)),
                    _ => Err(ApiError::bad_request(format!(
                        "from must be earliest, latest, milliseconds since the Unix epoch \
                         or an RFC 3339 time, got {other:?}"
                    ))),
                }
            }
        }
    }

    /// A cursor; malformed or foreign ones are a 400 that says so.
    pub fn decode(text: &str, topic: &str) -> Result<Self, ApiError> {
        Cursor::decode(text, topic)
            .map(Self::Cursor)
            .map_err(|e| ApiError::from(FederationError::from(e)))
    }

    /// A cursor with a position for each of the topic's `partitions`.
    pub async fn resolve(
        self,
        federation: &Federation,
        topic: &str,
        partitions: u32,
    ) -> Result<Cursor, ApiError> {
        match self {
            Self::Cursor(cursor) => check_covers(cursor, topic, partitions),
            Self::Earliest => earliest(federation, topic, partitions).await,
            Self::Latest => latest(federation, topic, partitions).await,
            Self::Time(ms) => at_time(federation, topic, partitions, ms).await,
        }
    }
}

fn check_covers(cursor: Cursor, topic: &str, partitions: u32) -> Result<Cursor, ApiError> {
    if let Some(p) = cursor
        .positions()
        .iter()
        .find(|p| p.partition >= partitions)
    {
        return Err(ApiError::bad_request(format!(
            "invalid cursor: topic {topic:?} has {partitions} partitions, the cursor names partition {}",
            p.partition
        )));
    }
    if let Some(missing) = (0..partitions).find(|p| cursor.position(*p).is_none()) {
        return Err(ApiError::bad_request(format!(
            "invalid cursor: it has no position for partition {missing}; \
             use a cursor from a streamed record, which covers every partition"
        )));
    }
    Ok(cursor)
}

async fn earliest(
    federation: &Federation,
    topic: &str,
    partitions: u32,
) -> Result<Cursor, ApiError> {
    let mut cursor = Cursor::default();
    for partition in 0..partitions {
        let probe = federation
            .read(
                topic,
                partition,
                ReadStart::Earliest,
                EARLIEST_PROBE_MAX_BYTES,
            )
            .await?;
        let next_offset = probe
            .records
            .first()
            .map_or(probe.next_offset, |r| r.offset);
        cursor.set(Position {
            partition,
            epoch: probe.epoch,
            next_offset,
        });
    }
    Ok(cursor)
}

/// Per partition, the first record at or after `ms`: the oldest epoch
/// whose cluster holds one within the epoch's range, else the current
/// end (only records produced from now on are that late).
async fn at_time(
    federation: &Federation,
    topic: &str,
    partitions: u32,
    ms: i64,
) -> Result<Cursor, ApiError> {
    let placement = federation.placement(topic).ok_or_else(|| {
        ApiError::from(FederationError::from(
            sluice_broker::BrokerError::UnknownTopic(topic.to_owned()),
        ))
    })?;
    let end = latest(federation, topic, partitions).await?;
    let mut cursor = Cursor::default();
    for partition in 0..partitions {
        let mut found = None;
        for epoch in &placement.epochs {
            let slot = partition as usize;
            let start = epoch.start_offsets.get(slot).copied().unwrap_or(0);
            let stop = epoch
                .end_offsets
                .as_ref()
                .and_then(|e| e.get(slot).copied());
            let Some(member) = federation.member(&epoch.cluster) else {
                continue;
            };
            let offset = member
                .cluster
                .offset_for_timestamp(topic, partition, ms)
                .await
                .map_err(|e| ApiError::from(FederationError::from(e)))?;
            if let Some(offset) = offset {
                let offset = offset.max(start);
                if stop.is_none_or(|stop| offset < stop) {
                    found = Some(Position {
                        partition,
                        epoch: epoch.epoch,
                        next_offset: offset,
                    });
                    break;
                }
            }
        }
        match found.or_else(|| end.position(partition)) {
            Some(position) => cursor.set(position),
            None => {
                return Err(ApiError::bad_request(format!(
                    "no position for partition {partition} of {topic:?}"
                )))
            }
        }
    }
    Ok(cursor)
}

async fn latest(federation: &Federation, topic: &str, partitions: u32) -> Result<Cursor, ApiError> {
    let mut epoch = federation.describe_topic(topic).await?.epoch;
    for _ in 0..LATEST_ATTEMPTS {
        let mut cursor = Cursor::default();
        for partition in 0..partitions {
            let latest = federation.offsets(topic, partition).await?.latest;
            cursor.set(Position {
                partition,
                epoch,
                next_offset: latest,
            });
        }
        // Offsets belong to the epoch current when they were read: if it
        // changed meanwhile, some may be the new cluster's.
        let now = federation.describe_topic(topic).await?.epoch;
        if now == epoch {
            return Ok(cursor);
        }
        epoch = now;
    }
    Err(FederationError::Conflict(format!(
        "topic {topic:?} kept changing epochs while the tail started; retry"
    ))
    .into())
}

/// Resolves when `rx` sees an append to its topic; never, once the topic's
/// sender is gone (deleted topic) or when there is none, so a tail then
/// falls back to polling alone.
pub async fn appended(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(receiver) = rx {
        if receiver.changed().await.is_ok() {
            return;
        }
        *rx = None;
    }
    std::future::pending::<()>().await;
}

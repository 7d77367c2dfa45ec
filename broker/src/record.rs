//! Records as produced and as read.

use std::borrow::Cow;

use bytes::Bytes;

pub use sluice_config::Acks;

/// A record header: a name and opaque bytes, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (UTF-8). Borrowed for the names Sluice writes itself
    /// (`traceparent` on every traced record), so they cost no allocation.
    pub name: Cow<'static, str>,
    /// Header value.
    pub value: Bytes,
}

/// A record to be produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRecord {
    /// Explicit partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
    /// Optional key; a key without an explicit partition picks the partition by murmur2.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value (a tombstone in Kafka terms).
    pub value: Option<Bytes>,
    /// Headers, in order; names may repeat.
    pub headers: Vec<Header>,
    /// Create time in milliseconds since the epoch; `None` stamps it on append.
    pub timestamp_ms: Option<i64>,
}

impl ProduceRecord {
    /// Bytes this record occupies for quota and size accounting.
    pub fn size_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.len())
                .sum::<usize>()
    }
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedOffset {
    /// Partition chosen.
    pub partition: u32,
    /// Offset assigned; `None` when acks=0 did not wait to learn it.
    pub offset: Option<u64>,
    /// The record's timestamp as stored.
    pub timestamp_ms: i64,
}

/// A record as read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition it was read from.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Timestamp in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value, `None` for a null value.
    pub value: Option<Bytes>,
    /// Headers in the order produced.
    pub headers: Vec<Header>,
}

/// The answer to a fetch: records from the requested offset on, and where
/// the partition's log starts and ends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchedBatch {
    /// Records in offset order, starting at the first offset >= the requested one.
    pub records: Vec<Record>,
    /// The next offset to be written (Kafka's high watermark).
    pub high_watermark: u64,
    /// The earliest offset still held.
    pub log_start_offset: u64,
}

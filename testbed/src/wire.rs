//! The one Kafka request the test bed speaks itself: Metadata (v4, all
//! topics, no auto-creation), enough to tell that a broker answers and
//! which cluster it belongs to, without depending on the client under test.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const METADATA: i16 = 3;
const METADATA_VERSION: i16 = 4;
const CORRELATION_ID: i32 = 0x51_1ce;
/// Largest Metadata response accepted (a test broker holds few topics).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// What a broker said about its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataAnswer {
    /// The cluster id (`--cluster-id` for tansu).
    pub cluster_id: Option<String>,
    /// The brokers, as `(node id, host, port)`.
    pub brokers: Vec<(i32, String, i32)>,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting, writing or reading failed.
    #[error("metadata probe of 127.0.0.1:{port}: {source}")]
    Io {
        /// The port.
        port: u16,
        /// The error.
        source: std::io::Error,
    },
    /// No complete answer in time.
    #[error("metadata probe of 127.0.0.1:{port}: no answer within {timeout:?}")]
    Timeout {
        /// The port.
        port: u16,
        /// The bound.
        timeout: Duration,
    },
    /// The answer is not a Metadata response.
    #[error("metadata probe of 127.0.0.1:{port}: malformed answer: {reason}")]
    Malformed {
        /// The port.
        port: u16,
        /// What was wrong.
        reason: String,
    },
}

/// Sends a Metadata request to `127.0.0.1:port` and parses the answer.
pub async fn metadata(port: u16, timeout: Duration) -> Result<MetadataAnswer, ProbeError> {
    match tokio::time::timeout(timeout, exchange(port)).await {
        Ok(Ok(body)) => parse(&body).map_err(|reason| ProbeError::Malformed { port, reason }),
        Ok(Err(source)) => Err(ProbeError::Io { port, source }),
        Err(_) => Err(ProbeError::Timeout { port, timeout }),
    }
}

async fn exchange(port: u16) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(&request()).await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = usize::try_from(i32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_RESPONSE_BYTES {
        return Err(std::io::Error::other(format!(
            "response of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

fn request() -> Vec<u8> {
    const CLIENT_ID: &[u8] = b"sluice-testbed";
    let mut body = Vec::new();
    body.extend_from_slice(&METADATA.to_be_bytes());
    body.extend_from_slice(&METADATA_VERSION.to_be_bytes());
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    body.extend_from_slice(CLIENT_ID);
    body.extend_from_slice(&(-1i32).to_be_bytes()); // topics: null = all
    body.push(0); // allow_auto_topic_creation = false
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    framed
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.bytes.len() < n {
            return Err(format!("truncated: wanted {n} more bytes"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

fn parse(body: &[u8]) -> Result<MetadataAnswer, String> {
    let mut r = Reader { bytes: body };
    let correlation = r.i32()?;
    if correlation != CORRELATION_ID {
        return Err(format!(
            "correlation id {correlation}, sent {CORRELATION_ID}"
        ));
    }
    let _throttle_time_ms = r.i32()?;
    let count = r.i32()?;
    if !(0..=10_000).contains(&count) {
        return Err(format!("broker count {count}"));
    }
    let mut brokers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let node = r.i32()?;
        let host = r.nullable_string()?.unwrap_or_default();
        let port = r.i32()?;
        let _rack = r.nullable_string()?;
        brokers.push((node, host, port));
    }
    let cluster_id = r.nullable_string()?;
    Ok(MetadataAnswer {
        cluster_id,
        brokers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_framed_metadata_v4_for_all_topics() {
        let r = request();
        assert_eq!(
            i32::from_be_bytes([r[0], r[1], r[2], r[3]]) as usize,
            r.len() - 4
        );
        assert_eq!(&r[4..8], &[0, 3, 0, 4]);
        assert_eq!(&r[r.len() - 5..], &[0xff, 0xff, 0xff, 0xff, 0]);
    }

    #[test]
    fn parses_brokers_and_cluster_id() {
        let mut b = Vec::new();
        b.extend_from_slice(&CORRELATION_ID.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&9i16.to_be_bytes());
        b.extend_from_slice(b"127.0.0.1");
        b.extend_from_slice(&9092i32.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend_from_slice(b"c0");
        let answer = parse(&b).expect("parses");
        assert_eq!(answer.cluster_id.as_deref(), Some("c0"));
        assert_eq!(answer.brokers, vec![(7, "127.0.0.1".to_owned(), 9092)]);
        assert!(parse(&b[..b.len() - 1]).is_err());
    }
}

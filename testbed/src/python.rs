//! Reads a topic back with the Python `confluent-kafka` client
//! (`testbed/py/read_topic.py`), so tests check what landed in a broker with
//! a client that shares no code with the `rdkafka` crate under test.
//!
//! The interpreter is `$SLUICE_PYTHON`, else `python3`;
//! `scripts/install-test-deps` installs `confluent-kafka` for it.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use crate::TestbedError;

/// Environment variable naming the Python interpreter.
pub const PYTHON_ENV: &str = "SLUICE_PYTHON";
/// How long reading a topic back may take.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// The script, beside this crate's sources.
pub const READ_TOPIC_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/read_topic.py");

/// A record as the independent client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Timestamp in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Key; `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Value; `None` for a null value.
    pub value: Option<Vec<u8>>,
    /// Headers in order; a header value may be null.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

#[derive(Deserialize)]
struct Json {
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

/// Every record of `topic` on the cluster at `bootstrap`, sorted by
/// partition and offset, read from the start of each partition to its end.
pub async fn read_topic(bootstrap: &str, topic: &str) -> Result<Vec<ReadRecord>, TestbedError> {
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_owned());
    let what = format!("{python} {READ_TOPIC_SCRIPT} {bootstrap} {topic}");
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(READ_TOPIC_SCRIPT)
        .arg(bootstrap)
        .arg(topic)
        .arg(DEFAULT_READ_TIMEOUT.as_secs().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let bound = DEFAULT_READ_TIMEOUT + Duration::from_secs(10);
    let output = tokio::time::timeout(bound, command.output())
        .await
        .map_err(|_| TestbedError::Command {
            what: what.clone(),
            detail: format!("no answer within {bound:?}"),
        })?
        .map_err(|source| TestbedError::Io {
            what: format!("{what} (is Python installed? run scripts/install-test-deps)"),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let hint = if stderr.contains("No module named 'confluent_kafka'") {
            " (run scripts/install-test-deps to install confluent-kafka)"
        } else {
            ""
        };
        return Err(TestbedError::Command {
            what,
            detail: format!("{}{hint}: {stderr}", output.status),
        });
    }
    let parsed: Vec<Json> =
        serde_json::from_slice(&output.stdout).map_err(|e| TestbedError::Command {
            what: what.clone(),
            detail: format!("unreadable output: {e}; stderr: {stderr}"),
        })?;
    parsed
        .into_iter()
        .map(|r| {
            let bytes = |s: Option<String>| s.map(|h| unhex(&h)).transpose();
            let malformed = |e: String| TestbedError::Command {
                what: what.clone(),
                detail: e,
            };
            Ok(ReadRecord {
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: bytes(r.key).map_err(malformed)?,
                value: bytes(r.value).map_err(malformed)?,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(name, value)| Ok((name, bytes(value).map_err(malformed)?)))
                    .collect::<Result<_, TestbedError>>()?,
            })
        })
        .collect()
}

fn unhex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 {
        return Err(format!("odd-length hex {hex:?}"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("bad hex {hex:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::unhex;

    #[test]
    fn unhex_round_trips() {
        assert_eq!(unhex("00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(unhex("").unwrap(), Vec::<u8>::new());
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}

//! What producers send: record values stamped with the producer, a
//! sequence number and the intended send time (so subscribers can measure
//! end-to-end latency and verification can tell records apart), keys from a
//! seeded distribution, and request bodies built from precomputed pieces.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::scenario::ProduceProtocol;

/// Length of the stamp at the start of each value: `L` + 8 + 16 + 16 hex digits.
pub const STAMP_BYTES: usize = 41;

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A small, fast, seeded generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` and `stream` (e.g. a connection index).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Self(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How record keys are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDistribution {
    /// No key: the gateway spreads records over partitions.
    None,
    /// One of `K` keys, each equally likely.
    Uniform(u32),
    /// One of `K` keys, key `i` (from 1) with weight `1 / i^exponent`.
    Zipf(u32, f64),
}

impl KeyDistribution {
    /// How many distinct keys it draws from (0 for none).
    pub fn count(&self) -> u32 {
        match *self {
            Self::None => 0,
            Self::Uniform(k) | Self::Zipf(k, _) => k,
        }
    }

    /// Parses `none`, `uniform:K`, `zipf:K` or `zipf:K:EXPONENT` (default 1.0).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let keys = |p: &str| -> anyhow::Result<u32> {
            let k: u32 = p.parse().with_context(|| format!("{s}: bad key count"))?;
            if k == 0 {
                bail!("{s}: at least one key");
            }
            Ok(k)
        };
        match parts.as_slice() {
            ["none"] => Ok(Self::None),
            ["uniform", k] => Ok(Self::Uniform(keys(k)?)),
            ["zipf", k] => Ok(Self::Zipf(keys(k)?, 1.0)),
            ["zipf", k, e] => Ok(Self::Zipf(
                keys(k)?,
                e.parse().with_context(|| format!("{s}: bad exponent"))?,
            )),
            _ => bail!("{s}: expected none, uniform:K or zipf:K[:EXPONENT]"),
        }
    }
}

/// Draws keys for one connection.
#[derive(Debug, Clone)]
pub struct KeyPicker {
    keys: u32,
    /// Zipf: cumulative weights, normalised to end at 1.
    cdf: Option<std::sync::Arc<Vec<f64>>>,
}

impl KeyPicker {
    /// A picker for `distribution`.
    pub fn new(distribution: &KeyDistribution) -> Self {
        match *distribution {
            KeyDistribution::None => Self { keys: 0, cdf: None },
            KeyDistribution::Uniform(k) => Self { keys: k, cdf: None },
            KeyDistribution::Zipf(k, exponent) => {
                let mut cdf = Vec::with_capacity(k as usize);
                let mut total = 0.0;
                for i in 1..=k {
                    total += 1.0 / f64::from(i).powf(exponent);
                    cdf.push(total);
                }
                for c in &mut cdf {
                    *c /= total;
                }
                Self {
                    keys: k,
                    cdf: Some(std::sync::Arc::new(cdf)),
                }
            }
        }
    }

    /// The next key index, or `None` for unkeyed records.
    pub fn pick(&self, rng: &mut Rng) -> Option<u32> {
        if self.keys == 0 {
            return None;
        }
        match &self.cdf {
            None => Some((rng.next_u64() % u64::from(self.keys)) as u32),
            Some(cdf) => {
                let u = rng.next_f64();
                Some(cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u32)
            }
        }
    }
}

/// What a value says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The producing connection's id.
    pub producer: u32,
    /// The record's number on that connection, from 0.
    pub seq: u64,
    /// Intended send time, µs since the Unix epoch.
    pub sent_us: u64,
}

impl Stamp {
    /// The stamp's bytes: `L`, then the producer, sequence number and send
    /// time in fixed-width lowercase hex.
    pub fn to_bytes(&self) -> [u8; STAMP_BYTES] {
        fn hex(out: &mut [u8], mut v: u64) {
            for b in out.iter_mut().rev() {
                *b = b"0123456789abcdef"[(v & 0xf) as usize];
                v >>= 4;
            }
        }
        let mut out = [0u8; STAMP_BYTES];
        out[0] = b'L';
        hex(&mut out[1..9], u64::from(self.producer));
        hex(&mut out[9..25], self.seq);
        hex(&mut out[25..41], self.sent_us);
        out
    }

    /// Writes the stamp and pads with `.` to `size` bytes.
    pub fn write_value(&self, size: usize, out: &mut String) {
        push_text_value(out, &self.to_bytes(), size.saturating_sub(STAMP_BYTES));
    }

    /// Reads a stamp from a value (a JSON string's quotes allowed).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = value.strip_prefix(b"\"").unwrap_or(value);
        if value.len() < STAMP_BYTES || value[0] != b'L' {
            return None;
        }
        let hex = |range: std::ops::Range<usize>| {
            std::str::from_utf8(&value[range])
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
        };
        Some(Self {
            producer: hex(1..9)? as u32,
            seq: hex(9..25)?,
            sent_us: hex(25..41)?,
        })
    }
}

/// Appends a stamp's bytes (ASCII hex) and `padding` bytes of `.`.
fn push_text_value(out: &mut String, stamp: &[u8; STAMP_BYTES], padding: usize) {
    out.push_str(std::str::from_utf8(stamp).unwrap_or_default());
    push_padding(out, padding);
}

/// Appends `n` bytes of `.`.
fn push_padding(out: &mut String, mut n: usize) {
    const DOTS: &str = "................................................................";
    while n > 0 {
        let take = n.min(DOTS.len());
        out.push_str(&DOTS[..take]);
        n -= take;
    }
}

/// What one request (or frame) carries.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// WebSocket frame id (unused by REST).
    pub id: u64,
    /// Producer id in the stamps.
    pub producer: u32,
    /// Sequence number of the first record.
    pub first_seq: u64,
    /// Records.
    pub records: u32,
    /// Intended send time, µs since the Unix epoch.
    pub sent_us: u64,
}

/// Builds request bodies (REST) or produce frames (WebSocket) for one group.
#[derive(Debug, Clone)]
pub struct BodyBuilder {
    protocol: ProduceProtocol,
    /// Keys as they appear in the body (base64 for binary formats).
    keys: Vec<String>,
    picker: KeyPicker,
    frame_prefix: String,
    /// Padding bytes after each value's stamp.
    padding: usize,
    /// Binary formats: the base64 of the padding after its first byte
    /// (the stamp and that byte are 42 bytes, a whole number of base64
    /// groups, so the rest encodes the same in every record).
    padding_base64: String,
}

impl BodyBuilder {
    /// A builder; `topic` and `acks` go into WebSocket frames.
    pub fn new(
        protocol: ProduceProtocol,
        record_bytes: usize,
        keys: &KeyDistribution,
        topic: &str,
        acks: Option<&str>,
    ) -> Self {
        let picker = KeyPicker::new(keys);
        let keys = (0..keys.count())
            .map(|i| {
                let key = format!("key-{i}");
                match protocol {
                    ProduceProtocol::RestV2Binary | ProduceProtocol::Ws => BASE64.encode(key),
                    ProduceProtocol::RestV2Json | ProduceProtocol::RestV3 => key,
                }
            })
            .collect();
        let mut frame_prefix = String::new();
        if protocol == ProduceProtocol::Ws {
            let topic = serde_json::to_string(topic).unwrap_or_default();
            frame_prefix = match acks {
                Some(acks) => format!(",\"topic\":{topic},\"acks\":\"{acks}\",\"records\":["),
                None => format!(",\"topic\":{topic},\"records\":["),
            };
        }
        let padding = record_bytes.saturating_sub(STAMP_BYTES);
        let mut padding_base64 = String::new();
        push_padding(&mut padding_base64, padding.saturating_sub(1));
        padding_base64 = BASE64.encode(padding_base64);
        Self {
            protocol,
            keys,
            picker,
            frame_prefix,
            padding,
            padding_base64,
        }
    }

    /// Writes the body of `batch` into `out` (cleared first).
    pub fn build(&mut self, out: &mut String, rng: &mut Rng, batch: Batch) {
        let Batch {
            id,
            producer,
            first_seq,
            records: n,
            sent_us,
        } = batch;
        out.clear();
        match self.protocol {
            ProduceProtocol::Ws => {
                let _ = write!(out, "{{\"type\":\"produce\",\"id\":\"{id}\"");
                out.push_str(&self.frame_prefix);
            }
            ProduceProtocol::RestV2Binary | ProduceProtocol::RestV2Json => {
                out.push_str("{\"records\":[");
            }
            ProduceProtocol::RestV3 => {}
        }
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            let stamp = Stamp {
                producer,
                seq: first_seq + u64::from(i),
                sent_us,
            };
            let stamp = stamp.to_bytes();
            let key = self
                .picker
                .pick(rng)
                .map(|k| self.keys[k as usize].as_str());
            out.push('{');
            if let Some(key) = key {
                let (open, close) = match self.protocol {
                    ProduceProtocol::RestV3 => ("\"key\":{\"type\":\"STRING\",\"data\":\"", "\"},"),
                    _ => ("\"key\":\"", "\","),
                };
                out.push_str(open);
                out.push_str(key);
                out.push_str(close);
            }
            match self.protocol {
                ProduceProtocol::RestV2Binary | ProduceProtocol::Ws => {
                    out.push_str("\"value\":\"");
                    // Encoded on the stack and pushed once: the engine's
                    // `encode_string` goes through its chunked encoder.
                    let mut text = [0u8; (STAMP_BYTES + 1).div_ceil(3) * 4];
                    let written = if self.padding == 0 {
                        BASE64.encode_slice(stamp, &mut text)
                    } else {
                        let mut head = [b'.'; STAMP_BYTES + 1];
                        head[..STAMP_BYTES].copy_from_slice(&stamp);
                        BASE64.encode_slice(head, &mut text)
                    };
                    // The buffer fits either input, so encoding cannot fail.
                    let text = written.map_or(&[][..], |n| &text[..n]);
                    out.push_str(std::str::from_utf8(text).unwrap_or_default());
                    if self.padding != 0 {
                        out.push_str(&self.padding_base64);
                    }
                    out.push_str("\"}");
                }
                ProduceProtocol::RestV2Json => {
                    out.push_str("\"value\":\"");
                    push_text_value(out, &stamp, self.padding);
                    out.push_str("\"}");
                }
                ProduceProtocol::RestV3 => {
                    out.push_str("\"value\":{\"type\":\"STRING\",\"data\":\"");
                    push_text_value(out, &stamp, self.padding);
                    out.push_str("\"}}");
                }
            }
        }
        match self.protocol {
            ProduceProtocol::Ws => out.push_str("]}"),
            ProduceProtocol::RestV2Binary | ProduceProtocol::RestV2Json => out.push_str("]}"),
            ProduceProtocol::RestV3 => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_raw_and_as_json_text() {
        let stamp = Stamp {
            producer: 7,
            seq: 123_456,
            sent_us: now_us(),
        };
        let mut value = String::new();
        stamp.write_value(100, &mut value);
        assert_eq!(value.len(), 100);
        assert_eq!(Stamp::parse(value.as_bytes()), Some(stamp));
        assert_eq!(Stamp::parse(format!("\"{value}\"").as_bytes()), Some(stamp));
        assert_eq!(Stamp::parse(b"hello"), None);
    }

    #[test]
    fn binary_values_decode_to_the_stamped_value_at_every_size() {
        let keys = KeyDistribution::Uniform(3);
        for size in [0, 40, 41, 42, 43, 44, 45, 100, 1000] {
            for protocol in [ProduceProtocol::RestV2Binary, ProduceProtocol::Ws] {
                let mut b = BodyBuilder::new(protocol, size, &keys, "t", None);
                let mut out = String::new();
                b.build(
                    &mut out,
                    &mut Rng::new(1, 1),
                    Batch {
                        id: 0,
                        producer: 3,
                        first_seq: 77,
                        records: 2,
                        sent_us: 12_345,
                    },
                );
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                for (i, record) in v["records"].as_array().unwrap().iter().enumerate() {
                    let value = BASE64.decode(record["value"].as_str().unwrap()).unwrap();
                    let mut expected = String::new();
                    Stamp {
                        producer: 3,
                        seq: 77 + i as u64,
                        sent_us: 12_345,
                    }
                    .write_value(size, &mut expected);
                    assert_eq!(value, expected.as_bytes(), "size {size}, {protocol:?}");
                    assert_eq!(value.len(), size.max(STAMP_BYTES));
                }
            }
        }
    }

    #[test]
    fn zipf_prefers_the_first_keys_and_uniform_does_not() {
        let mut rng = Rng::new(42, 0);
        let zipf = KeyPicker::new(&KeyDistribution::Zipf(100, 1.0));
        let uniform = KeyPicker::new(&KeyDistribution::Uniform(100));
        let (mut z0, mut u0) = (0, 0);
        for _ in 0..100_000 {
            z0 += usize::from(zipf.pick(&mut rng) == Some(0));
            u0 += usize::from(uniform.pick(&mut rng) == Some(0));
        }
        // Key 0 has weight 1/H(100) ≈ 19 % under zipf, 1 % uniform.
        assert!((17_000..21_000).contains(&z0), "{z0}");
        assert!((700..1_300).contains(&u0), "{u0}");
        assert_eq!(KeyPicker::new(&KeyDistribution::None).pick(&mut rng), None);
    }

    #[test]
    fn bodies_are_valid_json_of_the_protocol() {
        let keys = KeyDistribution::Uniform(3);
        let mut rng = Rng::new(1, 1);
        let mut out = String::new();
        for protocol in [
            ProduceProtocol::RestV2Binary,
            ProduceProtocol::RestV2Json,
            ProduceProtocol::Ws,
        ] {
            let mut b = BodyBuilder::new(protocol, 60, &keys, "t", Some("1"));
            b.build(
                &mut out,
                &mut rng,
                Batch {
                    id: 9,
                    producer: 1,
                    first_seq: 10,
                    records: 3,
                    sent_us: 5,
                },
            );
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["records"].as_array().unwrap().len(), 3, "{out}");
        }
        let mut b = BodyBuilder::new(ProduceProtocol::RestV3, 60, &keys, "t", None);
        b.build(
            &mut out,
            &mut rng,
            Batch {
                id: 0,
                producer: 1,
                first_seq: 10,
                records: 1,
                sent_us: 5,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let value = v["value"]["data"].as_str().unwrap();
        assert_eq!(Stamp::parse(value.as_bytes()).unwrap().seq, 10);
    }
}

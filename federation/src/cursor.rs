//! Opaque, versioned read cursors.
//!
//! A [`Cursor`] records, per partition, the epoch a reader is in and the
//! next offset to read there. Stateless readers (WebSocket, SSE, record
//! reads) get it as an opaque string and hand it back to resume, across
//! migrations: the placement table's `resolve_read` turns each position
//! into a cluster and offset.
//!
//! # Wire format, version 1
//!
//! Bytes, then base64url without padding:
//!
//! | field | encoding |
//! |---|---|
//! | version | `u8`, `1` |
//! | topic hash | `u32` LE, CRC32C of the topic name |
//! | base epoch | varint: the lowest epoch of all positions (0 if none) |
//! | count | varint: number of positions |
//! | per position, by increasing partition | varint partition, varint `epoch - base`, varint next offset |
//! | checksum | `u32` LE, CRC32C of every byte before it |
//!
//! Varints are unsigned LEB128 in their shortest form. Epochs are stored
//! per partition because during a migration a reader may have finished
//! epoch N on some partitions and be in N+1 on others; the base-plus-delta
//! form keeps that at one byte per partition.
//!
//! Decoding rejects anything else with a [`CursorError`] that says what was
//! wrong, and never panics.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The version this code writes.
pub const CURSOR_VERSION: u8 = 1;

/// Longest cursor string accepted, in bytes: room for about 30,000
/// partitions, and a bound on what a client can make us allocate.
pub const MAX_CURSOR_LEN: usize = 256 * 1024;

/// version + topic hash + base epoch + count + checksum, at their smallest.
const MIN_LEN: usize = 1 + 4 + 1 + 1 + 4;

/// Where a reader is in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The epoch being read in this partition.
    pub epoch: u32,
    /// The next offset to read, on that epoch's cluster.
    pub next_offset: u64,
}

/// A reader's position in every partition it reads, sorted by partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    positions: Vec<Position>,
}

impl Cursor {
    /// A cursor at these positions; of two positions for one partition, the
    /// later wins.
    pub fn new(positions: impl IntoIterator<Item = Position>) -> Self {
        let mut cursor = Self::default();
        for p in positions {
            cursor.set(p);
        }
        cursor
    }

    /// A cursor with every partition in `epoch`, at `(partition, next
    /// offset)`.
    pub fn at_epoch(epoch: u32, offsets: impl IntoIterator<Item = (u32, u64)>) -> Self {
        Self::new(
            offsets
                .into_iter()
                .map(|(partition, next_offset)| Position {
                    partition,
                    epoch,
                    next_offset,
                }),
        )
    }

    /// The positions, by increasing partition.
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// The position in `partition`.
    pub fn position(&self, partition: u32) -> Option<Position> {
        self.positions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()
            .map(|i| self.positions[i])
    }

    /// Records a position, replacing the partition's previous one.
    pub fn set(&mut self, position: Position) {
        match self
            .positions
            .binary_search_by_key(&position.partition, |p| p.partition)
        {
            Ok(i) => self.positions[i] = position,
            Err(i) => self.positions.insert(i, position),
        }
    }

    /// The oldest epoch any partition is still reading.
    pub fn epoch(&self) -> Option<u32> {
        self.positions.iter().map(|p| p.epoch).min()
    }

    /// Whether the cursor has no position.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The opaque string for this cursor on `topic`.
    pub fn encode(&self, topic: &str) -> String {
        let base = self.epoch().unwrap_or(0);
        let mut buf = Vec::with_capacity(MIN_LEN + self.positions.len() * 4);
        buf.push(CURSOR_VERSION);
        buf.extend_from_slice(&topic_hash(topic).to_le_bytes());
        put_varint(&mut buf, u64::from(base));
        put_varint(&mut buf, self.positions.len() as u64);
        for p in &self.positions {
            put_varint(&mut buf, u64::from(p.partition));
            put_varint(&mut buf, u64::from(p.epoch - base));
            put_varint(&mut buf, p.next_offset);
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Parses a cursor that [`Cursor::encode`] made for `topic`.
    pub fn decode(s: &str, topic: &str) -> Result<Self, CursorError> {
        if s.len() > MAX_CURSOR_LEN {
            return Err(Malformed::TooLong.into());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| Malformed::Base64(e.to_string()))?;
        if bytes.len() < MIN_LEN {
            return Err(Malformed::Truncated.into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != crc {
            return Err(Malformed::Checksum.into());
        }
        if body[0] != CURSOR_VERSION {
            return Err(Malformed::UnknownVersion(body[0]).into());
        }
        let hash = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);

        let mut r = Reader(&body[5..]);
        let base = r.u32()?;
        let count = r.varint()?;
        // Each position takes at least three bytes: a count beyond that is a
        // lie, and must not size an allocation.
        if count > (r.0.len() / 3) as u64 {
            return Err(Malformed::Truncated.into());
        }
        let mut positions = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let partition = r.u32()?;
            let epoch = base
                .checked_add(r.u32()?)
                .ok_or(Malformed::EpochOutOfRange)?;
            let next_offset = r.varint()?;
            if positions
                .last()
                .is_some_and(|prev: &Position| prev.partition >= partition)
            {
                return Err(Malformed::PartitionOrder.into());
            }
            positions.push(Position {
                partition,
                epoch,
                next_offset,
            });
        }
        if !r.0.is_empty() {
            return Err(Malformed::TrailingBytes(r.0.len()).into());
        }
        let cursor = Self { positions };
        if cursor.epoch().unwrap_or(0) != base {
            // The base must be the lowest epoch, so every cursor has one
            // encoding.
            return Err(Malformed::EpochOutOfRange.into());
        }
        if hash != topic_hash(topic) {
            return Err(CursorError::Foreign {
                topic: topic.to_owned(),
            });
        }
        Ok(cursor)
    }
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not a cursor this gateway can read.
    #[error("malformed cursor: {0}")]
    Malformed(#[from] Malformed),
    /// A valid cursor, but for another topic.
    #[error("the cursor belongs to another topic, not {topic:?}")]
    Foreign {
        /// The topic the cursor was presented for.
        topic: String,
    },
}

/// What is wrong with a malformed cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Longer than [`MAX_CURSOR_LEN`].
    #[error("longer than {MAX_CURSOR_LEN} bytes")]
    TooLong,
    /// Not base64url without padding.
    #[error("not base64url without padding ({0})")]
    Base64(String),
    /// Ends too early.
    #[error("truncated")]
    Truncated,
    /// The checksum does not match: damaged or edited.
    #[error("bad checksum")]
    Checksum,
    /// A version this gateway does not know (made by a newer one).
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// A varint that is too long, overflows, or is not in shortest form.
    #[error("bad varint")]
    Varint,
    /// A number too large for its field.
    #[error("number out of range")]
    NumberOutOfRange,
    /// An epoch that overflows, or a base that is not the lowest epoch.
    #[error("epoch out of range")]
    EpochOutOfRange,
    /// Partitions not strictly increasing.
    #[error("partitions out of order or repeated")]
    PartitionOrder,
    /// Bytes after the last position.
    #[error("{0} unexpected bytes after the last position")]
    TrailingBytes(usize),
}

/// The 32-bit topic hash in a cursor: CRC32C of the name.
pub fn topic_hash(topic: &str) -> u32 {
    crc32c::crc32c(topic.as_bytes())
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or(Malformed::Truncated)?;
            self.0 = rest;
            let bits = u64::from(b & 0x7f);
            // The 10th byte holds bit 63 only.
            if i == 9 && bits > 1 {
                return Err(Malformed::Varint);
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(Malformed::Varint); // not shortest form
                }
                return Ok(v);
            }
        }
        Err(Malformed::Varint)
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        u32::try_from(self.varint()?).map_err(|_| Malformed::NumberOutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut r = Reader(&buf);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.0.is_empty());
        }
    }

    #[test]
    fn varints_reject_overlong_and_overflowing() {
        assert_eq!(Reader(&[0x80, 0x00]).varint(), Err(Malformed::Varint));
        assert_eq!(Reader(&[0x80]).varint(), Err(Malformed::Truncated));
        let mut eleven = vec![0xff; 10];
        eleven.push(0x01);
        assert_eq!(Reader(&eleven).varint(), Err(Malformed::Varint));
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02);
        assert_eq!(Reader(&overflow).varint(), Err(Malformed::Varint));
    }
}

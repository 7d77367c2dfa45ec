//! Record batches: the unit of append, checksum and read.
//!
//! A batch is a fixed 40-byte header followed by its records (layout in
//! `docs/storage.md`). The CRC32C covers every byte of the batch except the
//! CRC field itself, base offset and length included, so a flipped bit
//! anywhere is caught. Offsets inside a batch are implicit (base + index),
//! timestamps are deltas from the first record, and lengths are varints:
//! a 100-byte record costs about 5 bytes of framing.

use std::ops::Range;

use bytes::Bytes;

use crate::record::{Header, Record};

/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 40;
/// Format version written into every batch.
pub const MAGIC: u8 = 1;
/// Largest batch the log accepts. Keeps a segment's byte positions within
/// `u32` and bounds the memory a single read needs.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const CRC_AT: usize = 12;
const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 17;
const RECORD_COUNT_AT: usize = 20;
const FIRST_TIMESTAMP_AT: usize = 24;
const MAX_TIMESTAMP_AT: usize = 32;
/// Where the second CRC range starts (everything after the CRC field).
const CRC_TAIL_AT: usize = 16;

/// The fixed header of a batch, as read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Total length of the batch, header included.
    pub length: u32,
    /// CRC32C stored in the batch.
    pub crc: u32,
    /// Format version.
    pub magic: u8,
    /// Reserved flags (compression in a later version); 0 today.
    pub attributes: u8,
    /// Number of records, at least 1.
    pub record_count: u32,
    /// Timestamp of the first record; record timestamps are deltas from it.
    pub first_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
}

impl BatchHeader {
    /// Reads the header fields from the first [`HEADER_LEN`] bytes; `None`
    /// when fewer bytes are given.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h = buf.get(..HEADER_LEN)?;
        Some(Self {
            base_offset: u64_at(h, BASE_OFFSET_AT),
            length: u32_at(h, LENGTH_AT),
            crc: u32_at(h, CRC_AT),
            magic: h[MAGIC_AT],
            attributes: h[ATTRIBUTES_AT],
            record_count: u32_at(h, RECORD_COUNT_AT),
            first_timestamp: u64_at(h, FIRST_TIMESTAMP_AT) as i64,
            max_timestamp: u64_at(h, MAX_TIMESTAMP_AT) as i64,
        })
    }

    /// Checks what can be checked without the body, so a garbage length is
    /// rejected before anything is read or allocated for it.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.magic != MAGIC {
            return Err("unknown batch format version");
        }
        if self.attributes != 0 {
            return Err("unknown batch attributes");
        }
        if (self.length as usize) < HEADER_LEN || self.length as usize > MAX_BATCH_BYTES {
            return Err("batch length out of bounds");
        }
        // Each record takes at least 4 bytes (timestamp, key, value, header count).
        if self.record_count == 0 || self.record_count > (self.length - HEADER_LEN as u32) / 4 {
            return Err("record count out of bounds");
        }
        if self
            .base_offset
            .checked_add(u64::from(self.record_count))
            .is_none()
        {
            return Err("offsets overflow");
        }
        Ok(())
    }

    /// One past the last offset of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
}

/// Why a batch was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFault {
    /// Fewer bytes than the header or the stated length: a torn write.
    Short,
    /// Bytes present but wrong: bad header field, checksum or record framing.
    Invalid(&'static str),
}

impl BatchFault {
    /// A description for logs and errors.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Short => "batch cut short",
            Self::Invalid(reason) => reason,
        }
    }
}

/// The CRC32C of a whole batch but its CRC field: the bytes after the
/// field first, then base offset and length. That order lets the append
/// path checksum the records before it knows the base offset and finish
/// under the partition lock with 12 more bytes.
pub fn batch_crc(batch: &[u8]) -> u32 {
    let tail = crc32c::crc32c(&batch[CRC_TAIL_AT..]);
    crc32c::crc32c_append(tail, &batch[..CRC_AT])
}

/// Checks the header and CRC of the batch at the start of `buf` (which may
/// hold more after it) and returns its header.
pub fn verify(buf: &[u8]) -> Result<BatchHeader, BatchFault> {
    let header = BatchHeader::parse(buf).ok_or(BatchFault::Short)?;
    header.check().map_err(BatchFault::Invalid)?;
    let batch = buf.get(..header.length as usize).ok_or(BatchFault::Short)?;
    if batch_crc(batch) != header.crc {
        return Err(BatchFault::Invalid("CRC32C mismatch"));
    }
    Ok(header)
}

/// Builds one batch in a reusable buffer. Records are encoded as they are
/// pushed; the base offset and CRC are stamped when the log appends it.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    /// CRC of bytes 16.. once [`BatchBuilder::finish`] ran; the base offset
    /// is only known under the partition lock, where only the first 12
    /// bytes are left to checksum.
    tail_crc: Option<u32>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(4096)
    }

    /// An empty batch with room for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            record_count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            tail_crc: None,
        }
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.buf[..].fill(0);
        self.record_count = 0;
        self.first_timestamp = 0;
        self.max_timestamp = i64::MIN;
        self.tail_crc = None;
    }

    /// Number of records pushed.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Encoded size of the batch, header included.
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Largest timestamp pushed (`i64::MIN` when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Appends a record.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        if self.record_count == 0 {
            self.first_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        self.tail_crc = None;
        let buf = &mut self.buf;
        put_varint(buf, zigzag(timestamp_ms.wrapping_sub(self.first_timestamp)));
        put_nullable(buf, key);
        put_nullable(buf, value);
        put_varint(buf, headers.len() as u64);
        for header in headers {
            put_varint(buf, header.name.len() as u64);
            buf.extend_from_slice(header.name.as_bytes());
            put_varint(buf, header.value.len() as u64);
            buf.extend_from_slice(&header.value);
        }
        self.record_count = self.record_count.saturating_add(1);
    }

    /// Writes the header fields that do not depend on the base offset and
    /// checksums the rest. Idempotent; pushing again undoes it.
    pub fn finish(&mut self) {
        if self.tail_crc.is_some() {
            return;
        }
        // A length past u32 is refused by the log (MAX_BATCH_BYTES) before
        // this value is ever written to disk.
        let length = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        let h = &mut self.buf[..HEADER_LEN];
        h[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_le_bytes());
        h[MAGIC_AT] = MAGIC;
        h[ATTRIBUTES_AT] = 0;
        h[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&self.record_count.to_le_bytes());
        h[FIRST_TIMESTAMP_AT..FIRST_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.first_timestamp.to_le_bytes());
        h[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.max_timestamp.to_le_bytes());
        self.tail_crc = Some(crc32c::crc32c(&self.buf[CRC_TAIL_AT..]));
    }

    /// Sets the base offset and the final CRC; returns the bytes to write.
    pub(crate) fn stamp(&mut self, base_offset: u64) -> &[u8] {
        self.finish();
        let tail_crc = self.tail_crc.unwrap_or(0);
        self.buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_le_bytes());
        let crc = crc32c::crc32c_append(tail_crc, &self.buf[..CRC_AT]);
        self.buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// A record located inside a batch, payloads as byte ranges of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Offset of the record.
    pub offset: u64,
    /// Timestamp in milliseconds.
    pub timestamp_ms: i64,
    /// Key bytes, `None` for a null key.
    pub key: Option<Range<usize>>,
    /// Value bytes, `None` for a null value.
    pub value: Option<Range<usize>>,
    /// Number of headers.
    pub header_count: usize,
    /// Where the encoded headers sit.
    pub headers: Range<usize>,
    /// Bytes the record takes in the batch, for read budgets.
    pub encoded_len: usize,
}

/// Walks the records of a verified batch.
pub struct RecordDecoder<'a> {
    batch: &'a [u8],
    pos: usize,
    next_offset: u64,
    remaining: u32,
    first_timestamp: i64,
}

impl<'a> RecordDecoder<'a> {
    /// A decoder over `batch` (exactly one batch, header included).
    pub fn new(batch: &'a [u8], header: &BatchHeader) -> Self {
        Self {
            batch,
            pos: HEADER_LEN,
            next_offset: header.base_offset,
            remaining: header.record_count,
            first_timestamp: header.first_timestamp,
        }
    }

    /// The next record; `Ok(None)` at the end. The framing must account for
    /// every byte: leftovers or overruns are `Invalid`, even with a good CRC.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>, BatchFault> {
        if self.remaining == 0 {
            if self.pos != self.batch.len() {
                return Err(BatchFault::Invalid("bytes after the last record"));
            }
            return Ok(None);
        }
        let start = self.pos;
        let delta = unzigzag(self.varint()?);
        let key = self.nullable()?;
        let value = self.nullable()?;
        let header_count = self.length()?;
        let headers_start = self.pos;
        for _ in 0..header_count {
            let name = self.length()?;
            self.skip(name)?;
            let value = self.length()?;
            self.skip(value)?;
        }
        let record = RawRecord {
            offset: self.next_offset,
            timestamp_ms: self.first_timestamp.wrapping_add(delta),
            key,
            value,
            header_count,
            headers: headers_start..self.pos,
            encoded_len: self.pos - start,
        };
        self.next_offset += 1;
        self.remaining -= 1;
        Ok(Some(record))
    }

    fn varint(&mut self) -> Result<u64, BatchFault> {
        let (value, used) = get_varint(&self.batch[self.pos..])?;
        self.pos += used;
        Ok(value)
    }

    fn length(&mut self) -> Result<usize, BatchFault> {
        let n = self.varint()?;
        usize::try_from(n).map_err(|_| BatchFault::Invalid("length overflows"))
    }

    fn skip(&mut self, n: usize) -> Result<Range<usize>, BatchFault> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.batch.len())
            .ok_or(BatchFault::Invalid("field runs past the batch"))?;
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    fn nullable(&mut self) -> Result<Option<Range<usize>>, BatchFault> {
        match self.length()? {
            0 => Ok(None),
            n => self.skip(n - 1).map(Some),
        }
    }
}

/// Builds the [`Record`] for a raw record, slicing payloads out of `batch`
/// without copying them.
pub fn materialize(batch: &Bytes, raw: &RawRecord, partition: u32) -> Result<Record, BatchFault> {
    const OUT_OF_BOUNDS: BatchFault = BatchFault::Invalid("header runs past its record");
    let mut headers = Vec::with_capacity(raw.header_count);
    let area = batch.get(raw.headers.clone()).ok_or(OUT_OF_BOUNDS)?;
    let mut at = 0usize;
    for _ in 0..raw.header_count {
        let (name_len, used) = get_varint(area.get(at..).ok_or(OUT_OF_BOUNDS)?)?;
        let name_at = at + used;
        let name_end = name_at
            .checked_add(usize::try_from(name_len).map_err(|_| OUT_OF_BOUNDS)?)
            .ok_or(OUT_OF_BOUNDS)?;
        let name = area.get(name_at..name_end).ok_or(OUT_OF_BOUNDS)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| BatchFault::Invalid("header name is not UTF-8"))?
            .to_owned();
        let (value_len, used) = get_varint(area.get(name_end..).ok_or(OUT_OF_BOUNDS)?)?;
        let value_at = name_end + used;
        let value_end = value_at
            .checked_add(usize::try_from(value_len).map_err(|_| OUT_OF_BOUNDS)?)
            .filter(|end| *end <= area.len())
            .ok_or(OUT_OF_BOUNDS)?;
        let base = raw.headers.start;
        headers.push(Header {
            name: name.into(),
            value: batch.slice(base + value_at..base + value_end),
        });
        at = value_end;
    }
    let slice = |range: &Option<Range<usize>>| -> Result<Option<Bytes>, BatchFault> {
        match range {
            None => Ok(None),
            Some(r) if r.start <= r.end && r.end <= batch.len() => Ok(Some(batch.slice(r.clone()))),
            Some(_) => Err(BatchFault::Invalid("payload runs past the batch")),
        }
    };
    Ok(Record {
        partition,
        offset: raw.offset,
        timestamp_ms: raw.timestamp_ms,
        key: slice(&raw.key)?,
        value: slice(&raw.value)?,
        headers,
    })
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_nullable(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => buf.push(0),
        Some(b) => {
            put_varint(buf, b.len() as u64 + 1);
            buf.extend_from_slice(b);
        }
    }
}

/// Unsigned LEB128.
fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Reads an unsigned LEB128; returns the value and the bytes used.
fn get_varint(buf: &[u8]) -> Result<(u64, usize), BatchFault> {
    // Most lengths are under 128: one byte, no loop.
    match buf.first() {
        Some(&b) if b < 0x80 => return Ok((u64::from(b), 1)),
        None => return Err(BatchFault::Invalid("field runs past the batch")),
        _ => {}
    }
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(BatchFault::Invalid("varint overflows 64 bits"));
        }
        value |= bits << (7 * i);
        if b < 0x80 {
            return Ok((value, i + 1));
        }
    }
    Err(BatchFault::Invalid(
        "varint runs past the batch or is too long",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(batch: &Bytes) -> Vec<Record> {
        let header = verify(batch).expect("valid batch");
        let mut decoder = RecordDecoder::new(batch, &header);
        let mut out = Vec::new();
        while let Some(raw) = decoder.next_record().expect("well framed") {
            out.push(materialize(batch, &raw, 0).expect("materialize"));
        }
        out
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for n in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, n);
            assert_eq!(get_varint(&buf), Ok((n, buf.len())));
        }
        for n in [0, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(n)), n);
        }
        assert!(get_varint(&[0xff; 11]).is_err());
        assert!(get_varint(&[0x80]).is_err());
    }

    #[test]
    fn a_stamped_batch_verifies_and_decodes() {
        let mut builder = BatchBuilder::new();
        let headers = vec![
            Header {
                name: "trace".into(),
                value: Bytes::from_static(b"abc"),
            },
            Header {
                name: "trace".into(),
                value: Bytes::new(),
            },
        ];
        builder.push(1_000, Some(b"k"), Some(b"v1"), &headers);
        builder.push(999, None, None, &[]);
        builder.push(i64::MAX, Some(b""), Some(b""), &[]);
        let batch = Bytes::copy_from_slice(builder.stamp(42));
        let header = verify(&batch).expect("valid");
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.first_timestamp, 1_000);
        assert_eq!(header.max_timestamp, i64::MAX);
        let records = decode_all(&batch);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].offset, 42);
        assert_eq!(records[0].headers, headers);
        assert_eq!(records[1].timestamp_ms, 999);
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].value, None);
        assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
        assert_eq!(records[2].offset, 44);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut builder = BatchBuilder::new();
        builder.push(5, Some(b"key"), Some(b"value"), &[]);
        let batch = builder.stamp(7).to_vec();
        for i in 0..batch.len() {
            let mut bad = batch.clone();
            bad[i] ^= 0x01;
            assert!(verify(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn builder_reuse_gives_the_same_bytes() {
        let mut builder = BatchBuilder::new();
        builder.push(1, Some(b"a"), Some(b"b"), &[]);
        let first = builder.stamp(0).to_vec();
        builder.clear();
        builder.push(1, Some(b"a"), Some(b"b"), &[]);
        assert_eq!(builder.stamp(0), &first[..]);
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(header) = verify(&bytes) {
                let batch = Bytes::copy_from_slice(&bytes[..header.length as usize]);
                let mut decoder = RecordDecoder::new(&batch, &header);
                while let Ok(Some(raw)) = decoder.next_record() {
                    let _ = materialize(&batch, &raw, 0);
                }
            }
        }

        #[test]
        fn framing_errors_are_caught_even_under_a_valid_crc(
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            count in 1u32..8,
        ) {
            // Forge a batch with a correct CRC around random record bytes.
            let mut batch = vec![0u8; HEADER_LEN];
            batch.extend_from_slice(&bytes);
            let len = batch.len() as u32;
            batch[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&len.to_le_bytes());
            batch[MAGIC_AT] = MAGIC;
            batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_le_bytes());
            let crc = batch_crc(&batch);
            batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
            if let Ok(header) = verify(&batch) {
                let batch = Bytes::from(batch);
                let mut decoder = RecordDecoder::new(&batch, &header);
                while let Ok(Some(raw)) = decoder.next_record() {
                    let _ = materialize(&batch, &raw, 0);
                }
            }
        }
    }
}

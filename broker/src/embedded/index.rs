//! The sparse offset index of a segment.
//!
//! One entry every `index_interval_bytes` of log maps a batch's offset
//! (relative to the segment base) to its byte position, so a read seeks
//! close to its start and scans at most one interval. The active segment's
//! index lives in memory and is rebuilt by the recovery scan on open; a
//! sealed segment's index is written once, when the segment is sealed, with
//! a summary (offset range, size, newest timestamp) that lets open skip
//! scanning sealed segments. The index is derived data: any doubt about it
//! (missing, bad checksum, size not matching the log) means rebuild it from
//! the log, never trust it.

use std::fs;
use std::io;
use std::path::Path;

use super::files;

/// One index entry: the batch starting at `position` has offset
/// `segment base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the batch, relative to the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// Byte position in a segment where the batch holding `target` is found by
/// scanning forward: the last entry at or before `target`, else the start.
pub fn position_for(entries: &[IndexEntry], base_offset: u64, target: u64) -> u64 {
    let idx = entries.partition_point(|e| base_offset + u64::from(e.relative_offset) <= target);
    match idx {
        0 => 0,
        i => u64::from(entries[i - 1].position),
    }
}

/// What a sealed segment's index file says about its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// First offset of the segment (its file name).
    pub base_offset: u64,
    /// One past the last offset in the segment.
    pub next_offset: u64,
    /// Size of the `.log` file the index describes.
    pub log_bytes: u64,
    /// Newest record timestamp in the segment (`i64::MIN` when empty).
    pub max_timestamp: i64,
}

const MAGIC: &[u8; 4] = b"SLIX";
const VERSION: u8 = 1;
/// Size of the fixed index header.
pub const HEADER_LEN: usize = 52;
const ENTRY_LEN: usize = 8;

/// Encodes a sealed segment's index file.
pub fn encode(summary: &SegmentSummary, entries: &[IndexEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        body.extend_from_slice(&e.relative_offset.to_le_bytes());
        body.extend_from_slice(&e.position.to_le_bytes());
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&summary.base_offset.to_le_bytes());
    out.extend_from_slice(&summary.next_offset.to_le_bytes());
    out.extend_from_slice(&summary.log_bytes.to_le_bytes());
    out.extend_from_slice(&summary.max_timestamp.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Writes a sealed segment's index. Not fsynced: a lost or torn index is
/// detected by its checksums and rebuilt from the log.
pub fn write(path: &Path, summary: &SegmentSummary, entries: &[IndexEntry]) -> io::Result<()> {
    files::write_replace(path, &encode(summary, entries), false)
}

/// Reads and checks the summary of an index file against the segment it
/// should describe. `Ok(Err(reason))` means the index must be rebuilt.
pub fn read_summary(
    path: &Path,
    base_offset: u64,
    log_bytes: u64,
) -> io::Result<Result<(SegmentSummary, u32), &'static str>> {
    let bytes = match files::read_prefix(path, HEADER_LEN) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err("index file missing")),
        Err(e) => return Err(e),
    };
    let file_len = fs::metadata(path)?.len();
    Ok(
        parse_summary(&bytes, file_len).and_then(|(summary, count)| {
            if summary.base_offset != base_offset {
                Err("index is for another segment")
            } else if summary.log_bytes != log_bytes {
                Err("index describes a log of another size")
            } else {
                Ok((summary, count))
            }
        }),
    )
}

fn parse_summary(h: &[u8], file_len: u64) -> Result<(SegmentSummary, u32), &'static str> {
    if h.len() < HEADER_LEN {
        return Err("index header cut short");
    }
    if &h[..4] != MAGIC || h[4] != VERSION {
        return Err("not an index file of this version");
    }
    if crc32c::crc32c(&h[..48]) != le_u32(&h[48..52]) {
        return Err("index header checksum mismatch");
    }
    let summary = SegmentSummary {
        base_offset: le_u64(&h[8..16]),
        next_offset: le_u64(&h[16..24]),
        log_bytes: le_u64(&h[24..32]),
        max_timestamp: le_u64(&h[32..40]) as i64,
    };
    let count = le_u32(&h[40..44]);
    if file_len != HEADER_LEN as u64 + u64::from(count) * ENTRY_LEN as u64 {
        return Err("index file size does not match its entry count");
    }
    if summary.next_offset < summary.base_offset {
        return Err("index offset range is inverted");
    }
    Ok((summary, count))
}

/// Reads the entries of an index whose summary was accepted, checking
/// their checksum and order. `Ok(Err(reason))` means rebuild.
pub fn read_entries(
    path: &Path,
    summary: &SegmentSummary,
) -> io::Result<Result<Vec<IndexEntry>, &'static str>> {
    let bytes = fs::read(path)?;
    let file_len = bytes.len() as u64;
    let (found, count) = match parse_summary(&bytes, file_len) {
        Ok(s) => s,
        Err(reason) => return Ok(Err(reason)),
    };
    if found != *summary {
        return Ok(Err("index changed since the log was opened"));
    }
    let body = &bytes[HEADER_LEN..];
    if crc32c::crc32c(body) != le_u32(&bytes[44..48]) {
        return Ok(Err("index entries checksum mismatch"));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for chunk in body.chunks_exact(ENTRY_LEN) {
        entries.push(IndexEntry {
            relative_offset: le_u32(&chunk[..4]),
            position: le_u32(&chunk[4..]),
        });
    }
    let span = summary.next_offset - summary.base_offset;
    let ordered = entries
        .windows(2)
        .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
    let in_range = entries
        .iter()
        .all(|e| u64::from(e.relative_offset) < span && u64::from(e.position) < summary.log_bytes);
    if !ordered || !in_range {
        return Ok(Err("index entries out of order or out of range"));
    }
    Ok(Ok(entries))
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<IndexEntry> {
        vec![
            IndexEntry {
                relative_offset: 10,
                position: 4096,
            },
            IndexEntry {
                relative_offset: 25,
                position: 8200,
            },
        ]
    }

    #[test]
    fn lookup_finds_the_last_entry_at_or_before_the_target() {
        let e = entries();
        assert_eq!(position_for(&e, 100, 100), 0);
        assert_eq!(position_for(&e, 100, 109), 0);
        assert_eq!(position_for(&e, 100, 110), 4096);
        assert_eq!(position_for(&e, 100, 124), 4096);
        assert_eq!(position_for(&e, 100, 125), 8200);
        assert_eq!(position_for(&e, 100, 9_999), 8200);
        assert_eq!(position_for(&[], 100, 9_999), 0);
    }

    #[test]
    fn index_files_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.index");
        let summary = SegmentSummary {
            base_offset: 100,
            next_offset: 140,
            log_bytes: 9000,
            max_timestamp: 77,
        };
        write(&path, &summary, &entries()).expect("write");
        let (read, count) = read_summary(&path, 100, 9000).expect("io").expect("valid");
        assert_eq!((read, count), (summary, 2));
        assert_eq!(read_entries(&path, &summary).expect("io"), Ok(entries()));

        assert!(read_summary(&path, 100, 9001).expect("io").is_err());
        assert!(read_summary(&path, 0, 9000).expect("io").is_err());

        let good = fs::read(&path).expect("read");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&path, &bad).expect("write");
            let accepted = match read_summary(&path, 100, 9000).expect("io") {
                Ok((s, _)) => read_entries(&path, &s).expect("io").is_ok(),
                Err(_) => false,
            };
            assert!(!accepted, "flip at byte {i} accepted");
        }
        fs::write(&path, &good[..good.len() - 1]).expect("write");
        assert!(read_summary(&path, 100, 9000).expect("io").is_err());
        fs::remove_file(&path).expect("rm");
        assert!(read_summary(&path, 100, 9000).expect("io").is_err());
    }
}

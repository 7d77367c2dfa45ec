//! Segments: the files a partition log is cut into, and reading batches
//! out of them.
//!
//! The last segment of a partition is *active*: appended to, its index in
//! memory, scanned on every open. All others are *sealed*: immutable,
//! fsynced before the next segment was created, described by their index
//! file, opened and indexed lazily on first read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::batch::{self, BatchFault, BatchHeader, HEADER_LEN};
use super::files::{self, INDEX_EXT, LOG_EXT};
use super::index::{self, IndexEntry, SegmentSummary};

/// Chunk size of recovery and index-rebuild scans.
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Paths of a segment's two files.
#[derive(Debug, Clone)]
pub struct SegmentPaths {
    /// The `.log` file.
    pub log: PathBuf,
    /// The `.index` file.
    pub index: PathBuf,
}

impl SegmentPaths {
    /// The files of the segment starting at `base_offset` in `dir`.
    pub fn new(dir: &Path, base_offset: u64) -> Self {
        Self {
            log: dir.join(files::segment_file_name(base_offset, LOG_EXT)),
            index: dir.join(files::segment_file_name(base_offset, INDEX_EXT)),
        }
    }
}

/// The segment being appended to.
#[derive(Debug)]
pub struct ActiveSegment {
    /// First offset of the segment.
    pub base_offset: u64,
    /// Its files.
    pub paths: SegmentPaths,
    /// The log file, shared with readers (positional I/O needs no seek state).
    pub file: Arc<File>,
    /// Bytes written and visible to readers.
    pub size: u64,
    /// Sparse index of the batches written so far.
    pub index: Vec<IndexEntry>,
    /// Bytes appended since the last index entry.
    pub bytes_since_index: u64,
    /// Newest timestamp written (`i64::MIN` when empty).
    pub max_timestamp: i64,
}

impl ActiveSegment {
    /// Adds an index entry for a batch about to be written at the current
    /// end, when an interval has passed since the last one.
    pub fn note_batch(&mut self, batch_base_offset: u64, batch_len: u64, interval: u32) {
        if self.bytes_since_index >= u64::from(interval) && self.size > 0 {
            self.index.push(IndexEntry {
                relative_offset: (batch_base_offset - self.base_offset) as u32,
                position: self.size as u32,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += batch_len;
    }
}

/// A sealed, immutable segment.
#[derive(Debug)]
pub struct SealedSegment {
    /// First offset of the segment.
    pub base_offset: u64,
    /// One past its last offset.
    pub next_offset: u64,
    /// Size of its log file.
    pub size: u64,
    /// Newest record timestamp in it.
    pub max_timestamp: i64,
    /// Its files.
    pub paths: SegmentPaths,
    /// Bytes between index entries, to rebuild a damaged index the same way.
    index_interval: u32,
    file: OnceLock<Arc<File>>,
    index: OnceLock<Arc<[IndexEntry]>>,
}

impl SealedSegment {
    /// A sealed segment known from its (checked) index summary; file and
    /// entries are loaded on first read.
    pub fn from_summary(summary: SegmentSummary, paths: SegmentPaths, index_interval: u32) -> Self {
        Self {
            base_offset: summary.base_offset,
            next_offset: summary.next_offset,
            size: summary.log_bytes,
            max_timestamp: summary.max_timestamp,
            paths,
            index_interval,
            file: OnceLock::new(),
            index: OnceLock::new(),
        }
    }

    /// Seals the active segment: same file handle, its index kept in memory.
    pub fn from_active(active: ActiveSegment, next_offset: u64, index_interval: u32) -> Self {
        let sealed = Self {
            base_offset: active.base_offset,
            next_offset,
            size: active.size,
            max_timestamp: active.max_timestamp,
            paths: active.paths,
            index_interval,
            file: OnceLock::new(),
            index: OnceLock::new(),
        };
        let _ = sealed.file.set(active.file);
        let _ = sealed.index.set(active.index.into());
        sealed
    }

    /// The summary written into its index file.
    pub fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            log_bytes: self.size,
            max_timestamp: self.max_timestamp,
        }
    }

    /// The index entries loaded so far, if any (used when writing the index at seal).
    pub fn loaded_index(&self) -> Option<&Arc<[IndexEntry]>> {
        self.index.get()
    }

    /// The log file, opened on first use.
    pub fn file(&self) -> io::Result<Arc<File>> {
        if let Some(f) = self.file.get() {
            return Ok(Arc::clone(f));
        }
        let opened = Arc::new(File::open(&self.paths.log)?);
        // A concurrent reader may have won the race; either handle is fine.
        Ok(Arc::clone(self.file.get_or_init(|| opened)))
    }

    /// Byte position to start scanning for `target`, loading (or, when
    /// damaged, rebuilding) the index on first use.
    pub fn position_for(&self, target: u64) -> io::Result<u64> {
        let entries = match self.index.get() {
            Some(e) => Arc::clone(e),
            None => {
                let loaded: Arc<[IndexEntry]> = self.load_index()?.into();
                Arc::clone(self.index.get_or_init(|| loaded))
            }
        };
        Ok(index::position_for(&entries, self.base_offset, target))
    }

    fn load_index(&self) -> io::Result<Vec<IndexEntry>> {
        match index::read_entries(&self.paths.index, &self.summary()) {
            Ok(Ok(entries)) => return Ok(entries),
            Ok(Err(reason)) => {
                tracing::warn!(index = %self.paths.index.display(), reason, "rebuilding segment index");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(index = %self.paths.index.display(), "segment index vanished; rebuilding");
            }
            Err(e) => return Err(e),
        }
        let file = self.file()?;
        let scan = scan(&file, self.base_offset, self.size, self.index_interval)?;
        if let Err(e) = index::write(&self.paths.index, &self.summary(), &scan.index) {
            tracing::warn!(index = %self.paths.index.display(), error = %e, "cannot rewrite segment index");
        }
        Ok(scan.index)
    }
}

/// What a reader found at a position.
#[derive(Debug)]
pub enum NextBatch {
    /// A whole batch whose header and CRC check out.
    Batch {
        /// Its header.
        header: BatchHeader,
        /// The batch bytes, header included, sharing the read buffer.
        bytes: Bytes,
        /// Its position in the file.
        position: u64,
    },
    /// The end of the range was reached cleanly.
    End,
    /// The bytes at `position` are not a valid batch.
    Fault {
        /// Where the bad batch starts.
        position: u64,
        /// What is wrong with it.
        fault: BatchFault,
    },
}

/// Reads consecutive batches of a file range through one large buffer, so
/// a read is one `pread` per chunk and payloads are slices of that buffer.
pub struct BatchReader<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
    chunk: usize,
    buf: Bytes,
    buf_at: u64,
}

impl<'f> BatchReader<'f> {
    /// A reader of `file[start..end]` that reads `chunk` bytes at a time
    /// (more when a single batch is larger).
    pub fn new(file: &'f File, start: u64, end: u64, chunk: usize) -> Self {
        Self {
            file,
            pos: start,
            end,
            chunk: chunk.max(HEADER_LEN),
            buf: Bytes::new(),
            buf_at: start,
        }
    }

    /// Position of the next batch.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Changes how much the next refill reads.
    pub fn set_chunk(&mut self, chunk: usize) {
        self.chunk = chunk.max(HEADER_LEN);
    }

    /// The next batch, checked.
    pub fn next_batch(&mut self) -> io::Result<NextBatch> {
        if self.pos >= self.end {
            return Ok(NextBatch::End);
        }
        let position = self.pos;
        let fault = |fault| Ok(NextBatch::Fault { position, fault });

        if self.buffered() < HEADER_LEN {
            self.refill(self.chunk)?;
        }
        let Some(header) = BatchHeader::parse(self.buffered_bytes()) else {
            return fault(BatchFault::Short);
        };
        if let Err(reason) = header.check() {
            return fault(BatchFault::Invalid(reason));
        }
        let len = header.length as usize;
        if position + len as u64 > self.end {
            return fault(BatchFault::Short);
        }
        if self.buffered() < len {
            self.refill(self.chunk.max(len))?;
            if self.buffered() < len {
                return fault(BatchFault::Short);
            }
        }
        let start = (self.pos - self.buf_at) as usize;
        let bytes = self.buf.slice(start..start + len);
        if batch::batch_crc(&bytes) != header.crc {
            return fault(BatchFault::Invalid("CRC32C mismatch"));
        }
        self.pos += len as u64;
        Ok(NextBatch::Batch {
            header,
            bytes,
            position,
        })
    }

    fn buffered(&self) -> usize {
        let consumed = (self.pos - self.buf_at) as usize;
        self.buf.len().saturating_sub(consumed)
    }

    fn buffered_bytes(&self) -> &[u8] {
        let consumed = (self.pos - self.buf_at) as usize;
        self.buf.get(consumed..).unwrap_or_default()
    }

    /// Replaces the buffer with up to `want` bytes from the current position.
    /// Batches already handed out keep the old buffer alive.
    fn refill(&mut self, want: usize) -> io::Result<()> {
        let n = want.min((self.end - self.pos) as usize);
        let mut buf = vec![0u8; n];
        let filled = read_at_most(self.file, &mut buf, self.pos)?;
        buf.truncate(filled);
        self.buf = Bytes::from(buf);
        self.buf_at = self.pos;
        Ok(())
    }
}

/// Like `read_exact_at`, but a file shorter than expected yields a short
/// count (a torn or truncated file) instead of an error.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What a full scan of a segment found.
#[derive(Debug)]
pub struct ScanResult {
    /// End of the last valid batch.
    pub valid_bytes: u64,
    /// One past the last valid offset.
    pub next_offset: u64,
    /// Newest timestamp among the valid batches.
    pub max_timestamp: i64,
    /// The index for the valid batches.
    pub index: Vec<IndexEntry>,
    /// Bytes since the last index entry, to continue indexing on append.
    pub bytes_since_index: u64,
    /// Where and why the scan stopped before the end, if it did.
    pub fault: Option<(u64, &'static str)>,
}

/// Reads a segment from the start, checking every batch (CRC, framing of
/// the header, offsets following each other from `base_offset`), and
/// builds its index. Stops at the first bad batch.
pub fn scan(
    file: &File,
    base_offset: u64,
    len: u64,
    index_interval: u32,
) -> io::Result<ScanResult> {
    let mut reader = BatchReader::new(file, 0, len, SCAN_CHUNK_BYTES);
    let mut active = ScanResult {
        valid_bytes: 0,
        next_offset: base_offset,
        max_timestamp: i64::MIN,
        index: Vec::new(),
        bytes_since_index: 0,
        fault: None,
    };
    loop {
        match reader.next_batch()? {
            NextBatch::End => break,
            NextBatch::Fault { position, fault } => {
                active.fault = Some((position, fault.reason()));
                break;
            }
            NextBatch::Batch {
                header, position, ..
            } => {
                if header.base_offset != active.next_offset {
                    active.fault = Some((position, "batch offset out of sequence"));
                    break;
                }
                if header.next_offset() - base_offset > u64::from(u32::MAX)
                    || position + u64::from(header.length) > u64::from(u32::MAX)
                {
                    active.fault = Some((position, "segment too large to index"));
                    break;
                }
                if active.bytes_since_index >= u64::from(index_interval) && position > 0 {
                    active.index.push(IndexEntry {
                        relative_offset: (header.base_offset - base_offset) as u32,
                        position: position as u32,
                    });
                    active.bytes_since_index = 0;
                }
                active.bytes_since_index += u64::from(header.length);
                active.valid_bytes = position + u64::from(header.length);
                active.next_offset = header.next_offset();
                active.max_timestamp = active.max_timestamp.max(header.max_timestamp);
            }
        }
    }
    Ok(active)
}

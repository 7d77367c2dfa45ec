//! [`PartitionLog`]: one partition's segmented, append-only log.
//!
//! Concurrency: one mutex guards the log's shape (segments, sizes, next
//! offset). Appends hold it for the write into the page cache; reads hold
//! it only to snapshot which files and byte ranges to read, then `pread`
//! without it, so readers never wait for each other or for an fsync.
//! Fsyncs run outside that mutex, serialized by their own, and publish a
//! "durable up to" watermark that producers under `fsync = "always"` wait
//! on: every producer that appended before an fsync started shares it
//! (group commit).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sluice_config::EmbeddedConfig;
use tokio::sync::watch;

use super::batch::{self, BatchBuilder, RecordDecoder, HEADER_LEN, MAX_BATCH_BYTES};
use super::files::{self, lock, INDEX_EXT, LOG_EXT};
use super::index::{self, SegmentSummary};
use super::segment::{self, ActiveSegment, BatchReader, NextBatch, SealedSegment, SegmentPaths};
use crate::cluster::PartitionOffsets;
use crate::error::BrokerError;
use crate::record::FetchedBatch;

/// Largest segment size honoured; keeps byte positions within `u32`
/// (index entries) even with one oversized batch past the limit.
pub const MAX_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// Smallest segment size honoured (tests use tiny segments to force rolls).
pub const MIN_SEGMENT_BYTES: u64 = 256;
/// Most bytes of records a single read returns, whatever the caller asks;
/// bounds the memory of one fetch.
pub const MAX_FETCH_BYTES: usize = 32 * 1024 * 1024;
/// Smallest chunk a read fetches from a file at once.
const MIN_READ_CHUNK_BYTES: usize = 4096;
/// Chunk size of `offset_for_timestamp` scans.
const TIMESTAMP_SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Shape parameters of a partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// Size at which the active segment is rolled.
    pub segment_bytes: u64,
    /// Bytes of log between sparse index entries.
    pub index_interval_bytes: u32,
}

impl LogSettings {
    /// The settings of a cluster config, clamped to what the format supports.
    pub fn from_config(config: &EmbeddedConfig) -> Self {
        Self {
            segment_bytes: config.segment_bytes,
            index_interval_bytes: config.index_interval_bytes,
        }
        .clamped()
    }

    fn clamped(self) -> Self {
        Self {
            segment_bytes: self
                .segment_bytes
                .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            index_interval_bytes: self.index_interval_bytes.max(1),
        }
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Number of records.
    pub record_count: u32,
}

impl Appended {
    /// One past its last offset: what must be durable for the batch to be.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// What retention removed from a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStats {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes of log deleted.
    pub bytes: u64,
}

impl std::ops::AddAssign for RetentionStats {
    fn add_assign(&mut self, rhs: Self) {
        self.segments += rhs.segments;
        self.bytes += rhs.bytes;
    }
}

/// When to delete old segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the partition is larger.
    pub retention_bytes: Option<u64>,
}

#[derive(Debug)]
struct LogState {
    /// Sealed segments, oldest first.
    sealed: VecDeque<Arc<SealedSegment>>,
    active: ActiveSegment,
    next_offset: u64,
    /// Bumped whenever a segment file is created; the directory needs an
    /// fsync for that file's name to survive a crash.
    dir_generation: u64,
}

impl LogState {
    fn log_start(&self) -> u64 {
        self.sealed
            .front()
            .map_or(self.active.base_offset, |s| s.base_offset)
    }

    fn needs_roll(&self, batch_len: u64, record_count: u32, settings: &LogSettings) -> bool {
        let active = &self.active;
        active.size > 0
            && (active.size + batch_len > settings.segment_bytes
                || active.size + batch_len > u64::from(u32::MAX)
                || self.next_offset.saturating_add(u64::from(record_count)) - active.base_offset
                    > u64::from(u32::MAX))
    }
}

/// A segment to read and from which byte position.
enum ReadView {
    Sealed(Arc<SealedSegment>),
    Active {
        file: Arc<File>,
        path: PathBuf,
        size: u64,
        start: u64,
    },
}

/// One partition's log on disk.
#[derive(Debug)]
pub struct PartitionLog {
    topic: String,
    partition: u32,
    dir: PathBuf,
    settings: LogSettings,
    state: Mutex<LogState>,
    /// Serializes fsync rounds; never taken while holding `state`.
    sync_round: Mutex<()>,
    /// Every offset below this is on stable storage (or was found on disk
    /// at open).
    synced: AtomicU64,
    /// The `dir_generation` last made durable.
    dir_synced: AtomicU64,
    /// A background fsync task is scheduled or running.
    syncing: AtomicBool,
    /// Data fsyncs done by `sync`, for metrics and tests of group commit.
    fsync_rounds: AtomicU64,
    /// Wakes producers waiting for durability after each fsync round.
    sync_watch: watch::Sender<u64>,
    /// Set when an fsync failed: after a failed fsync the kernel may have
    /// dropped dirty pages, so nothing written since can be promised; the
    /// partition refuses writes until the cluster is reopened and recovers.
    failure: OnceLock<String>,
    /// The topic was deleted; its files are gone.
    deleted: AtomicBool,
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir` and recovers it: leftover
    /// temp files removed, sealed segments checked against their index
    /// (rebuilt when missing or invalid), the active segment scanned and any
    /// torn or corrupt tail truncated after the last valid batch.
    pub fn open(
        dir: &Path,
        topic: &str,
        partition: u32,
        settings: LogSettings,
    ) -> Result<Self, BrokerError> {
        let settings = settings.clamped();
        fs::create_dir_all(dir)?;
        files::remove_tmp_files(dir)?;

        let mut logs = Vec::new();
        let mut indexes = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match files::parse_segment_file_name(&name) {
                Some((base, LOG_EXT)) => logs.push(base),
                Some((base, INDEX_EXT)) => indexes.push(base),
                _ => {
                    tracing::warn!(file = %entry.path().display(), "ignoring unknown file in partition directory")
                }
            }
        }
        logs.sort_unstable();
        for base in indexes {
            if logs.binary_search(&base).is_err() {
                // Left by a crash in the middle of deleting a segment.
                fs::remove_file(SegmentPaths::new(dir, base).index)?;
            }
        }

        let active_base = match logs.pop() {
            Some(base) => base,
            None => {
                File::create(SegmentPaths::new(dir, 0).log)?;
                0
            }
        };

        let mut sealed: VecDeque<Arc<SealedSegment>> = VecDeque::with_capacity(logs.len());
        for base in logs {
            let segment = open_sealed(dir, base, settings.index_interval_bytes)?;
            if let Some(prev) = sealed.back() {
                check_order(prev, segment.base_offset, dir)?;
            }
            sealed.push_back(Arc::new(segment));
        }

        let active = open_active(dir, active_base, settings.index_interval_bytes)?;
        if let Some(prev) = sealed.back() {
            check_order(prev, active_base, dir)?;
        }
        let next_offset = active.1;
        let state = LogState {
            sealed,
            active: active.0,
            next_offset,
            // The active segment's name may not be durable yet (created by
            // now or by a process that crashed before fsyncing the
            // directory): the first fsync round with new data syncs the
            // directory too.
            dir_generation: 1,
        };
        Ok(Self {
            topic: topic.to_owned(),
            partition,
            dir: dir.to_owned(),
            settings,
            state: Mutex::new(state),
            sync_round: Mutex::new(()),
            // What recovery found is taken as synced: it is either durable
            // or was written under a policy that did not promise it. New
            // appends go to the active file, and fsyncing that for them
            // flushes whatever of the old data it still holds.
            synced: AtomicU64::new(next_offset),
            dir_synced: AtomicU64::new(0),
            syncing: AtomicBool::new(false),
            fsync_rounds: AtomicU64::new(0),
            sync_watch: watch::channel(0).0,
            failure: OnceLock::new(),
            deleted: AtomicBool::new(false),
        })
    }

    /// The partition number.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one batch and returns its offsets. Synchronous and complete
    /// on return: the batch is in the page cache (it survives the process
    /// being killed) but not necessarily on disk; see [`Self::sync`].
    pub fn append(&self, batch: &mut BatchBuilder) -> Result<Appended, BrokerError> {
        let len = batch.len_bytes();
        if len > MAX_BATCH_BYTES {
            return Err(BrokerError::RecordTooLarge {
                size: len,
                limit: MAX_BATCH_BYTES,
            });
        }
        self.check_writable()?;
        let count = batch.record_count();
        // The record bytes are checksummed before the lock is taken.
        batch.finish();

        let mut st = lock(&self.state);
        if count == 0 {
            return Ok(Appended {
                base_offset: st.next_offset,
                record_count: 0,
            });
        }
        if st.needs_roll(len as u64, count, &self.settings) {
            // Flush the full segment without the lock first, so the fsync
            // made under the lock by the roll has almost nothing left to do
            // and concurrent appenders are not held up by a long one.
            let file = Arc::clone(&st.active.file);
            drop(st);
            file.sync_data().map_err(|e| self.fsync_failed(e))?;
            st = lock(&self.state);
            if st.needs_roll(len as u64, count, &self.settings) {
                self.roll(&mut st)?;
            }
        }

        let base_offset = st.next_offset;
        if base_offset.checked_add(u64::from(count)).is_none() {
            // Only reachable with a segment file named near u64::MAX.
            return Err(io::Error::other("partition offsets exhausted").into());
        }
        let position = st.active.size;
        let bytes = batch.stamp(base_offset);
        if let Err(e) = st.active.file.write_all_at(bytes, position) {
            // A partial write sits past `size`, invisible to readers and
            // overwritten by the next append; trim it anyway so a crash now
            // does not leave it for recovery to cut.
            let _ = st.active.file.set_len(position);
            return Err(e.into());
        }
        let interval = self.settings.index_interval_bytes;
        st.active.note_batch(base_offset, len as u64, interval);
        st.active.size += len as u64;
        st.active.max_timestamp = st.active.max_timestamp.max(batch.max_timestamp());
        st.next_offset += u64::from(count);
        Ok(Appended {
            base_offset,
            record_count: count,
        })
    }

    /// Seals the active segment and starts a new one at the next offset.
    /// The old segment is fsynced first: so a segment file existing after a
    /// crash implies every earlier one is complete, and recovery only ever
    /// has to scan the last segment.
    fn roll(&self, st: &mut LogState) -> Result<(), BrokerError> {
        st.active
            .file
            .sync_data()
            .map_err(|e| self.fsync_failed(e))?;
        let base_offset = st.next_offset;
        let paths = SegmentPaths::new(&self.dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&paths.log)?;
        let fresh = ActiveSegment {
            base_offset,
            paths,
            file: Arc::new(file),
            size: 0,
            index: Vec::new(),
            bytes_since_index: 0,
            max_timestamp: i64::MIN,
        };
        let old = std::mem::replace(&mut st.active, fresh);
        let sealed =
            SealedSegment::from_active(old, base_offset, self.settings.index_interval_bytes);
        let entries = sealed
            .loaded_index()
            .map(|e| e.to_vec())
            .unwrap_or_default();
        if let Err(e) = index::write(&sealed.paths.index, &sealed.summary(), &entries) {
            // The index is derived data: the next open rebuilds it.
            tracing::warn!(index = %sealed.paths.index.display(), error = %e, "cannot write segment index");
            let _ = fs::remove_file(&sealed.paths.index);
        }
        st.sealed.push_back(Arc::new(sealed));
        st.dir_generation += 1;
        Ok(())
    }

    /// Makes everything appended so far durable: fdatasync of the active
    /// segment (sealed ones were synced when rolled) and of the directory
    /// when a segment file was created since the last round. Returns at
    /// once when nothing was appended since the last round. Blocking.
    pub fn sync(&self) -> Result<(), BrokerError> {
        if self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        self.check_failed()?;
        let _round = lock(&self.sync_round);
        let (target, file, dir_generation) = {
            let st = lock(&self.state);
            (
                st.next_offset,
                Arc::clone(&st.active.file),
                st.dir_generation,
            )
        };
        // A new segment's directory entry only matters once it holds data
        // to protect; until then losing the empty file loses nothing.
        if target <= self.synced.load(Ordering::Acquire) {
            return Ok(());
        }
        let dir_dirty = dir_generation > self.dir_synced.load(Ordering::Acquire);
        file.sync_data().map_err(|e| self.fsync_failed(e))?;
        self.fsync_rounds.fetch_add(1, Ordering::Relaxed);
        if dir_dirty {
            files::fsync_dir(&self.dir).map_err(|e| self.fsync_failed(e))?;
            self.dir_synced.fetch_max(dir_generation, Ordering::AcqRel);
        }
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Number of fsync rounds run by [`Self::sync`] (each covers every
    /// append made before it started).
    pub fn fsync_rounds(&self) -> u64 {
        self.fsync_rounds.load(Ordering::Relaxed)
    }

    /// Offsets below this are durable.
    pub fn synced_offset(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Waits until every offset below `next_offset` is durable, sharing
    /// fsyncs with concurrent waiters. The fsync runs on tokio's blocking
    /// pool and completes even if this future is dropped.
    pub async fn wait_durable(self: &Arc<Self>, next_offset: u64) -> Result<(), BrokerError> {
        let mut changes = self.sync_watch.subscribe();
        loop {
            if self.synced.load(Ordering::Acquire) >= next_offset {
                return Ok(());
            }
            self.check_writable()?;
            self.request_sync();
            if changes.changed().await.is_err() {
                // The sender lives in `self`, which we hold: unreachable,
                // but an error beats a hang.
                return Err(io::Error::other("durability watch closed").into());
            }
        }
    }

    /// Starts an fsync round in the background unless one is already
    /// scheduled. Outside a tokio runtime the round runs inline.
    pub fn request_sync(self: &Arc<Self>) {
        if self
            .syncing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        let task = SyncTask(Arc::clone(self));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || task.run());
            }
            Err(_) => task.run(),
        }
    }

    /// Earliest and latest offsets.
    pub fn offsets(&self) -> PartitionOffsets {
        let st = lock(&self.state);
        PartitionOffsets {
            earliest: st.log_start(),
            latest: st.next_offset,
        }
    }

    /// Whether `offset` is among the last `records` records of the active
    /// segment (or past the end): a read there is of bytes just written,
    /// still in the page cache.
    pub fn is_tail(&self, offset: u64, records: u64) -> bool {
        let st = lock(&self.state);
        offset >= st.active.base_offset && offset.saturating_add(records) >= st.next_offset
    }

    /// Total bytes of log held.
    pub fn size_bytes(&self) -> u64 {
        let st = lock(&self.state);
        st.sealed.iter().map(|s| s.size).sum::<u64>() + st.active.size
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        lock(&self.state).sealed.len() + 1
    }

    /// Reads records from the first offset >= `offset`, about `max_bytes`
    /// of them (capped at [`MAX_FETCH_BYTES`]) but at least one when any
    /// is available. Blocking (positional reads, usually from page cache).
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<FetchedBatch, BrokerError> {
        let budget = max_bytes.min(MAX_FETCH_BYTES);
        let (views, log_start, high_watermark) = {
            let st = lock(&self.state);
            let log_start = st.log_start();
            let high_watermark = st.next_offset;
            if offset < log_start {
                return Err(self.out_of_range(offset, log_start, high_watermark));
            }
            if offset >= high_watermark {
                return Ok(FetchedBatch {
                    records: Vec::new(),
                    high_watermark,
                    log_start_offset: log_start,
                });
            }
            (
                self.plan_read(&st, offset, budget),
                log_start,
                high_watermark,
            )
        };

        let mut records = Vec::new();
        let mut used = 0usize;
        for (i, view) in views.into_iter().enumerate() {
            let seek_to = (i == 0).then_some(offset);
            let (file, path, start, end) = match self.open_view(view, seek_to) {
                Ok(opened) => opened,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(self.vanished(offset, e));
                }
                Err(e) => return Err(e.into()),
            };
            // The first chunk also covers the bytes skipped between the
            // index entry and the requested offset.
            let slack = if i == 0 {
                self.settings.index_interval_bytes as usize + HEADER_LEN
            } else {
                HEADER_LEN
            };
            let mut reader = BatchReader::new(&file, start, end, 0);
            let done = loop {
                let remaining = budget.saturating_sub(used);
                reader.set_chunk((remaining + slack).clamp(MIN_READ_CHUNK_BYTES, MAX_FETCH_BYTES));
                let (header, bytes) = match reader.next_batch()? {
                    NextBatch::End => break false,
                    // Serve what was read before the damage; the next read
                    // starts at the damaged batch and reports it.
                    NextBatch::Fault { .. } if !records.is_empty() => break true,
                    NextBatch::Fault { position, fault } => {
                        return Err(corrupt(&path, position, fault.reason()));
                    }
                    NextBatch::Batch { header, bytes, .. } => (header, bytes),
                };
                if header.next_offset() <= offset {
                    continue;
                }
                let mut decoder = RecordDecoder::new(&bytes, &header);
                let position = reader.position() - bytes.len() as u64;
                let mut full = false;
                let batch_start = records.len();
                loop {
                    let raw = match decoder.next_record() {
                        Ok(Some(raw)) => raw,
                        Ok(None) => break,
                        Err(fault) => {
                            // A batch is served whole or not at all: drop
                            // what was decoded of it before the bad framing.
                            records.truncate(batch_start);
                            if records.is_empty() {
                                return Err(corrupt(&path, position, fault.reason()));
                            }
                            full = true;
                            break;
                        }
                    };
                    if raw.offset < offset {
                        continue;
                    }
                    if !records.is_empty() && used + raw.encoded_len > budget {
                        full = true;
                        break;
                    }
                    used += raw.encoded_len;
                    match batch::materialize(&bytes, &raw, self.partition) {
                        Ok(record) => records.push(record),
                        Err(fault) => {
                            records.truncate(batch_start);
                            if records.is_empty() {
                                return Err(corrupt(&path, position, fault.reason()));
                            }
                            full = true;
                            break;
                        }
                    }
                }
                if full || used >= budget {
                    break true;
                }
            };
            if done {
                break;
            }
        }
        Ok(FetchedBatch {
            records,
            high_watermark,
            log_start_offset: log_start,
        })
    }

    /// Which segments a read of `budget` bytes from `offset` touches.
    fn plan_read(&self, st: &LogState, offset: u64, budget: usize) -> Vec<ReadView> {
        let mut views = Vec::new();
        let mut planned = 0u64;
        if offset < st.active.base_offset {
            let first = st
                .sealed
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            for segment in st.sealed.iter().skip(first) {
                views.push(ReadView::Sealed(Arc::clone(segment)));
                planned += segment.size;
                if planned >= budget as u64 {
                    return views;
                }
            }
        }
        let active = &st.active;
        let start = if offset >= active.base_offset {
            index::position_for(&active.index, active.base_offset, offset)
        } else {
            0
        };
        views.push(ReadView::Active {
            file: Arc::clone(&active.file),
            path: active.paths.log.clone(),
            size: active.size,
            start,
        });
        views
    }

    /// The first offset whose timestamp is >= `timestamp_ms`, if any.
    /// Blocking; skips whole segments and batches by their newest timestamp.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>, BrokerError> {
        let views: Vec<ReadView> = {
            let st = lock(&self.state);
            let mut views: Vec<ReadView> = st
                .sealed
                .iter()
                .filter(|s| s.max_timestamp >= timestamp_ms)
                .map(|s| ReadView::Sealed(Arc::clone(s)))
                .collect();
            if st.active.max_timestamp >= timestamp_ms {
                views.push(ReadView::Active {
                    file: Arc::clone(&st.active.file),
                    path: st.active.paths.log.clone(),
                    size: st.active.size,
                    start: 0,
                });
            }
            views
        };
        for view in views {
            let (file, path, _, size) = match self.open_view(view, None) {
                Ok(opened) => opened,
                // Deleted by retention meanwhile: its records are gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let mut reader = BatchReader::new(&file, 0, size, TIMESTAMP_SCAN_CHUNK_BYTES);
            loop {
                let (header, bytes, position) = match reader.next_batch()? {
                    NextBatch::End => break,
                    NextBatch::Fault { position, fault } => {
                        return Err(corrupt(&path, position, fault.reason()));
                    }
                    NextBatch::Batch {
                        header,
                        bytes,
                        position,
                    } => (header, bytes, position),
                };
                if header.max_timestamp < timestamp_ms {
                    continue;
                }
                let mut decoder = RecordDecoder::new(&bytes, &header);
                while let Some(raw) = decoder
                    .next_record()
                    .map_err(|f| corrupt(&path, position, f.reason()))?
                {
                    if raw.timestamp_ms >= timestamp_ms {
                        return Ok(Some(raw.offset));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The file, path and byte range of a planned view; with `seek_to`, the
    /// range starts at the index position for that offset.
    fn open_view(
        &self,
        view: ReadView,
        seek_to: Option<u64>,
    ) -> io::Result<(Arc<File>, PathBuf, u64, u64)> {
        match view {
            ReadView::Sealed(segment) => {
                let file = segment.file()?;
                let start = match seek_to {
                    Some(offset) => segment.position_for(offset)?,
                    None => 0,
                };
                Ok((file, segment.paths.log.clone(), start, segment.size))
            }
            ReadView::Active {
                file,
                path,
                size,
                start,
            } => Ok((file, path, start, size)),
        }
    }

    /// Deletes the oldest sealed segments that the policy no longer keeps:
    /// older than `retention_ms` by their newest record, or beyond
    /// `retention_bytes`. Only whole sealed segments from the start of the
    /// log, never the active segment, so the log stays contiguous.
    pub fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionStats, BrokerError> {
        let doomed = {
            let mut st = lock(&self.state);
            let mut total = st.sealed.iter().map(|s| s.size).sum::<u64>() + st.active.size;
            let cutoff = policy
                .retention_ms
                .map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
            let mut doomed = Vec::new();
            while let Some(oldest) = st.sealed.front() {
                let too_old = cutoff.is_some_and(|cutoff| oldest.max_timestamp < cutoff);
                let too_big = policy.retention_bytes.is_some_and(|limit| total > limit);
                if !(too_old || too_big) {
                    break;
                }
                total -= oldest.size;
                doomed.extend(st.sealed.pop_front());
            }
            doomed
        };
        let mut stats = RetentionStats::default();
        for segment in doomed {
            tracing::debug!(segment = %segment.paths.log.display(), "retention deletes segment");
            // Log first: a crash in between leaves an orphan index, which
            // open removes; readers holding the file keep reading it.
            remove_if_present(&segment.paths.log)?;
            remove_if_present(&segment.paths.index)?;
            stats.segments += 1;
            stats.bytes += segment.size;
        }
        Ok(stats)
    }

    /// Marks the log as belonging to a deleted topic: writes fail, fsyncs
    /// are skipped.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.sync_watch.send_replace(self.synced_offset());
    }

    fn check_failed(&self) -> Result<(), BrokerError> {
        match self.failure.get() {
            None => Ok(()),
            Some(reason) => Err(io::Error::other(format!(
                "partition {} of {:?} stopped after a failed fsync ({reason}); reopen the cluster to recover",
                self.partition, self.topic
            ))
            .into()),
        }
    }

    fn check_writable(&self) -> Result<(), BrokerError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(BrokerError::UnknownTopic(self.topic.clone()));
        }
        self.check_failed()
    }

    fn fsync_failed(&self, e: io::Error) -> BrokerError {
        tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "fsync failed; partition stops taking writes");
        let _ = self.failure.set(e.to_string());
        e.into()
    }

    fn out_of_range(&self, requested: u64, log_start: u64, high_watermark: u64) -> BrokerError {
        BrokerError::OffsetOutOfRange {
            topic: self.topic.clone(),
            partition: self.partition,
            requested,
            log_start_offset: log_start,
            high_watermark,
        }
    }

    /// A segment planned for a read was deleted by retention before it was
    /// opened.
    fn vanished(&self, offset: u64, e: io::Error) -> BrokerError {
        let offsets = self.offsets();
        if offset < offsets.earliest {
            self.out_of_range(offset, offsets.earliest, offsets.latest)
        } else {
            e.into()
        }
    }
}

/// A scheduled fsync round. Dropping it, after running or without running
/// (a runtime shutting down drops queued blocking tasks), clears the
/// "scheduled" flag and wakes waiters, so nobody waits on a round that
/// will never come.
struct SyncTask(Arc<PartitionLog>);

impl SyncTask {
    fn run(self) {
        // Failures are recorded in the log and reported to every waiter.
        let _ = self.0.sync();
    }
}

impl Drop for SyncTask {
    fn drop(&mut self) {
        let log = &self.0;
        log.syncing.store(false, Ordering::SeqCst);
        log.sync_watch.send_replace(log.synced_offset());
        // An append whose request came while this round ran, after the
        // round took its target, found the flag set and left the fsync to
        // this round. A waiting producer asks again when woken; one whose
        // future was dropped cannot, so its records would stay unsynced
        // until the next produce. Ask for them here (not after a failed
        // fsync: the log is then read-only and asking would loop).
        let behind = lock(&log.state).next_offset > log.synced_offset();
        if behind && !log.deleted.load(Ordering::Acquire) && log.check_failed().is_ok() {
            log.request_sync();
        }
    }
}

fn corrupt(path: &Path, position: u64, reason: &str) -> BrokerError {
    BrokerError::Corrupt {
        location: format!("{} at byte {position}", path.display()),
        reason: reason.to_owned(),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Refuses segment layouts whose offset ranges overlap: serving them would
/// give two records for one offset. Gaps are fine (reads skip them).
fn check_order(prev: &SealedSegment, next_base: u64, dir: &Path) -> Result<(), BrokerError> {
    if next_base < prev.next_offset {
        return Err(BrokerError::Corrupt {
            location: dir.display().to_string(),
            reason: format!(
                "segment {} holds offsets up to {} but the next segment starts at {next_base}",
                prev.base_offset,
                prev.next_offset - 1
            ),
        });
    }
    Ok(())
}

/// A sealed segment at open: trusted from its index summary when that
/// matches the log file, else scanned and re-indexed. A sealed segment is
/// never truncated: its bytes were fsynced, so damage there is disk
/// corruption, kept for inspection and reported by reads as `Corrupt`.
fn open_sealed(dir: &Path, base: u64, index_interval: u32) -> Result<SealedSegment, BrokerError> {
    let paths = SegmentPaths::new(dir, base);
    let log_bytes = fs::metadata(&paths.log)?.len();
    match index::read_summary(&paths.index, base, log_bytes)? {
        Ok((summary, _)) => Ok(SealedSegment::from_summary(summary, paths, index_interval)),
        Err(reason) => {
            tracing::info!(index = %paths.index.display(), reason, "rebuilding index of sealed segment");
            let file = File::open(&paths.log)?;
            let scan = segment::scan(&file, base, log_bytes, index_interval)?;
            if let Some((position, reason)) = scan.fault {
                tracing::error!(
                    segment = %paths.log.display(),
                    position,
                    reason,
                    "sealed segment is damaged; records from this point are unreadable"
                );
            }
            let summary = SegmentSummary {
                base_offset: base,
                next_offset: scan.next_offset,
                log_bytes,
                max_timestamp: scan.max_timestamp,
            };
            index::write(&paths.index, &summary, &scan.index)?;
            Ok(SealedSegment::from_summary(summary, paths, index_interval))
        }
    }
}

/// The active segment at open: scanned in full; a torn or corrupt tail is
/// cut after the last valid batch. Returns it with the next offset.
fn open_active(
    dir: &Path,
    base: u64,
    index_interval: u32,
) -> Result<(ActiveSegment, u64), BrokerError> {
    let paths = SegmentPaths::new(dir, base);
    let file = OpenOptions::new().read(true).write(true).open(&paths.log)?;
    let len = file.metadata()?.len();
    let scan = segment::scan(&file, base, len, index_interval)?;
    if scan.valid_bytes < len {
        let (position, reason) = scan.fault.unwrap_or((scan.valid_bytes, "trailing bytes"));
        tracing::warn!(
            segment = %paths.log.display(),
            position,
            reason,
            cut_bytes = len - scan.valid_bytes,
            "truncating torn or corrupt tail of the active segment"
        );
        file.set_len(scan.valid_bytes)?;
        file.sync_all()?;
    }
    // The active segment's index lives in memory; an index file for it is
    // stale (from a crash right after a roll) and is rewritten on sealing.
    remove_if_present(&paths.index)?;
    let active = ActiveSegment {
        base_offset: base,
        paths,
        file: Arc::new(file),
        size: scan.valid_bytes,
        index: scan.index,
        bytes_since_index: scan.bytes_since_index,
        max_timestamp: scan.max_timestamp,
    };
    Ok((active, scan.next_offset))
}

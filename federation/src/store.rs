//! Persistence of the placement table.
//!
//! A [`PlacementStore`] keeps the log of [`PlacementChange`]s. The gateway
//! plans a change on its table, appends it here (durable when `append`
//! returns), then applies it. Calls are synchronous and rare: call them
//! from `spawn_blocking`, or directly where a short block is acceptable.
//!
//! [`FileStore`] serves one node: `<data_dir>/placement/changes.jsonl`,
//! one change per line as `{"crc32c":N,"change":{...}}\n`, where `N` is the
//! CRC32C of the `change` JSON text exactly as written. Each append is
//! fsynced. When the log passes a size threshold it is compacted into
//! `snapshot.jsonl` (same line format, one change per topic, see
//! [`PlacementTable::to_changes`]) and started afresh. Because applying
//! changes is idempotent, a crash between writing the snapshot and
//! resetting the log only means the old log is replayed over the snapshot,
//! which changes nothing.
//!
//! [`MemoryStore`] keeps the log in memory, for tests.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::placement::{PlacementChange, PlacementTable};

/// Log size beyond which [`FileStore`] compacts it into a snapshot.
pub const DEFAULT_COMPACT_AFTER_BYTES: u64 = 4 * 1024 * 1024;

const PLACEMENT_DIR: &str = "placement";
const LOG_FILE: &str = "changes.jsonl";
const SNAPSHOT_FILE: &str = "snapshot.jsonl";

/// An error from a placement store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system failed; a retry may help.
    #[error("placement store: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The stored log is damaged before its last line, or holds a change
    /// that breaks the table's rules. Needs an operator.
    #[error("placement store: {} line {line} is corrupt: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A change could not be encoded (a bug).
    #[error("placement store: cannot encode a change: {0}")]
    Encode(String),
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a shared store's watcher reports, in order.
#[derive(Debug)]
pub enum Watched {
    /// A change another gateway stored.
    Change(PlacementChange),
    /// Every change stored before this instant has been reported.
    CaughtUp(std::time::Instant),
}

/// Where placement changes are kept. Object-safe: hold it as
/// `Arc<dyn PlacementStore>`.
pub trait PlacementStore: Send + Sync {
    /// Rebuilds the table from everything stored.
    fn load(&self) -> Result<PlacementTable>;

    /// Stores a change; it is durable when this returns `Ok`.
    fn append(&self, change: &PlacementChange) -> Result<()>;

    /// Changes stored by others (other gateways sharing the store), as they
    /// arrive, for the federation to apply. A store only this process
    /// writes has none to report.
    /// With `confirm`, the watcher also reports [`Watched::CaughtUp`] as it
    /// finds it has read everything stored (for a placement lease); without,
    /// it asks nothing beyond the changes.
    fn watch(&self, confirm: bool) -> Option<tokio::sync::mpsc::UnboundedReceiver<Watched>> {
        let _ = confirm;
        None
    }

    /// Whether other gateways share this store (and write to the same
    /// clusters): then an epoch switch is followed by a look for writes
    /// they made to the old home before they saw it.
    fn shared(&self) -> bool {
        false
    }
}

/// The placement log of a single node, in `<data_dir>/placement/`.
///
/// One process per data directory: the store does not lock the files
/// against another process.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    log_path: PathBuf,
    snapshot_path: PathBuf,
    compact_after_bytes: u64,
    log: Mutex<Log>,
}

#[derive(Debug)]
struct Log {
    file: File,
    len: u64,
}

#[derive(Serialize)]
struct LineOut<'a> {
    crc32c: u32,
    change: &'a RawValue,
}

#[derive(Deserialize)]
struct LineIn<'a> {
    crc32c: u32,
    #[serde(borrow)]
    change: &'a RawValue,
}

impl FileStore {
    /// Opens (creating if needed) the store under `data_dir`, with
    /// [`DEFAULT_COMPACT_AFTER_BYTES`].
    ///
    /// A torn last line left by a crash during an append is cut off here,
    /// so the next append starts on a clean line.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_compaction(data_dir, DEFAULT_COMPACT_AFTER_BYTES)
    }

    /// Like [`FileStore::open`], compacting once the log passes
    /// `compact_after_bytes` (`u64::MAX`: never).
    pub fn open_with_compaction(
        data_dir: impl AsRef<Path>,
        compact_after_bytes: u64,
    ) -> Result<Self> {
        let dir = data_dir.as_ref().join(PLACEMENT_DIR);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let log_path = dir.join(LOG_FILE);
        let snapshot_path = dir.join(SNAPSHOT_FILE);

        let existed = log_path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        if !existed {
            sync_dir(&dir)?;
        }

        let text = fs::read(&log_path).map_err(io_err("read", &log_path))?;
        let parsed = parse_lines(&log_path, &text, true)?;
        let mut len = text.len() as u64;
        if parsed.valid_len < len {
            tracing::warn!(
                path = %log_path.display(),
                dropped_bytes = len - parsed.valid_len,
                "placement log ends with a torn line, probably from a crash during an append; dropping it"
            );
            file.set_len(parsed.valid_len)
                .map_err(io_err("truncate", &log_path))?;
            file.sync_all().map_err(io_err("fsync", &log_path))?;
            len = parsed.valid_len;
        }

        Ok(Self {
            dir,
            log_path,
            snapshot_path,
            compact_after_bytes,
            log: Mutex::new(Log { file, len }),
        })
    }

    /// The change log's path.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The snapshot's path (it exists once the log has been compacted).
    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot_path
    }

    /// Writes the current table as a snapshot and empties the log.
    ///
    /// Each step is atomic (temp file, fsync, rename, fsync of the
    /// directory); a crash between the two renames leaves a snapshot and
    /// the full old log, which load to the same table.
    pub fn compact(&self) -> Result<()> {
        let mut log = self.lock();
        self.compact_locked(&mut log)
    }

    fn compact_locked(&self, log: &mut Log) -> Result<()> {
        let table = self.load_locked()?;
        let mut text = Vec::new();
        for change in table.to_changes() {
            text.extend_from_slice(encode_line(&change)?.as_bytes());
        }
        self.replace(&self.snapshot_path, &text)?;
        self.replace(&self.log_path, b"")?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .map_err(io_err("open", &self.log_path))?;
        *log = Log { file, len: 0 };
        Ok(())
    }

    /// Atomically replaces `path` with `contents`.
    fn replace(&self, path: &Path, contents: &[u8]) -> Result<()> {
        let tmp = path.with_extension("jsonl.tmp");
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(contents).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
        sync_dir(&self.dir)
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave `Log` half-updated in a
        // way that matters: the file is the truth and is re-read on load.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn load_locked(&self) -> Result<PlacementTable> {
        let mut table = PlacementTable::new();
        match fs::read(&self.snapshot_path) {
            Ok(text) => {
                // Written whole by rename: any damage is corruption.
                let snapshot = parse_lines(&self.snapshot_path, &text, false)?;
                replay(&mut table, &self.snapshot_path, snapshot.changes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", &self.snapshot_path)(e)),
        }
        let text = fs::read(&self.log_path).map_err(io_err("read", &self.log_path))?;
        let log = parse_lines(&self.log_path, &text, true)?;
        replay(&mut table, &self.log_path, log.changes)?;
        Ok(table)
    }
}

impl PlacementStore for FileStore {
    fn load(&self) -> Result<PlacementTable> {
        let _log = self.lock();
        self.load_locked()
    }

    fn append(&self, change: &PlacementChange) -> Result<()> {
        let line = encode_line(change)?;
        let mut log = self.lock();
        // One write call per line, so a crash leaves at most the last line
        // torn.
        if let Err(e) = log.file.write_all(line.as_bytes()) {
            // Cut off whatever part was written, so later appends start on a
            // clean line.
            let len = log.len;
            let _ = log.file.set_len(len);
            return Err(io_err("append to", &self.log_path)(e));
        }
        log.len += line.len() as u64;
        log.file
            .sync_data()
            .map_err(io_err("fsync", &self.log_path))?;

        if log.len > self.compact_after_bytes {
            // The change is durable already; a failed compaction only leaves
            // a longer log.
            if let Err(e) = self.compact_locked(&mut log) {
                tracing::warn!(error = %e, "placement log compaction failed; will retry on a later append");
            }
        }
        Ok(())
    }
}

/// An in-memory [`PlacementStore`] for tests and for gateways that need no
/// persistence.
#[derive(Debug, Default)]
pub struct MemoryStore {
    changes: Mutex<Vec<PlacementChange>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every change appended so far, in order.
    pub fn changes(&self) -> Vec<PlacementChange> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl PlacementStore for MemoryStore {
    fn load(&self) -> Result<PlacementTable> {
        let changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = PlacementTable::new();
        for (i, change) in changes.iter().enumerate() {
            table.apply(change).map_err(|e| StoreError::Corrupt {
                path: PathBuf::from("<memory>"),
                line: i + 1,
                why: e.to_string(),
            })?;
        }
        Ok(table)
    }

    fn append(&self, change: &PlacementChange) -> Result<()> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(change.clone());
        Ok(())
    }
}

fn encode_line(change: &PlacementChange) -> Result<String> {
    let json = serde_json::to_string(change).map_err(|e| StoreError::Encode(e.to_string()))?;
    let raw = RawValue::from_string(json).map_err(|e| StoreError::Encode(e.to_string()))?;
    let line = LineOut {
        crc32c: crc32c::crc32c(raw.get().as_bytes()),
        change: &raw,
    };
    let mut out = serde_json::to_string(&line).map_err(|e| StoreError::Encode(e.to_string()))?;
    out.push('\n');
    Ok(out)
}

struct Parsed {
    changes: Vec<(usize, PlacementChange)>,
    /// Bytes up to the end of the last good line.
    valid_len: u64,
}

/// Parses a log. With `tolerate_torn`, a damaged or unterminated LAST line
/// is left out (reported through `valid_len`); damage anywhere else is an
/// error.
fn parse_lines(path: &Path, text: &[u8], tolerate_torn: bool) -> Result<Parsed> {
    let mut changes = Vec::new();
    let mut valid_len = 0u64;
    let mut rest = text;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, terminated, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        let is_last = next.is_empty();
        let outcome = if terminated {
            parse_line(line)
        } else {
            Err("no line terminator".to_owned())
        };
        match outcome {
            Ok(change) => {
                changes.push((line_no, change));
                valid_len += line.len() as u64 + 1;
            }
            Err(_) if is_last && tolerate_torn => break,
            Err(why) => {
                return Err(StoreError::Corrupt {
                    path: path.to_owned(),
                    line: line_no,
                    why,
                })
            }
        }
        rest = next;
    }
    Ok(Parsed { changes, valid_len })
}

fn parse_line(line: &[u8]) -> std::result::Result<PlacementChange, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let parsed: LineIn<'_> =
        serde_json::from_str(text).map_err(|e| format!("not a log line: {e}"))?;
    let actual = crc32c::crc32c(parsed.change.get().as_bytes());
    if actual != parsed.crc32c {
        return Err(format!(
            "checksum mismatch: stored {:#010x}, computed {actual:#010x}",
            parsed.crc32c
        ));
    }
    serde_json::from_str(parsed.change.get()).map_err(|e| format!("not a placement change: {e}"))
}

fn replay(
    table: &mut PlacementTable,
    path: &Path,
    changes: Vec<(usize, PlacementChange)>,
) -> Result<()> {
    for (line, change) in changes {
        table.apply(&change).map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            line,
            why: e.to_string(),
        })?;
    }
    Ok(())
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Makes a rename or file creation in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

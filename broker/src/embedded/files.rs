//! Small file-system helpers shared by the embedded backend: crash-safe
//! replacement of small files, directory fsync, segment file names.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Suffix of files being written before they are renamed into place.
/// Whatever carries it at open time is the leftover of a crash.
pub const TMP_SUFFIX: &str = ".tmp";

/// Locks a mutex, ignoring poisoning: the state behind every lock of this
/// backend stays consistent at each statement, and nothing panics while
/// holding one, so a poisoned lock is no reason to stop serving.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Replaces `path` with `bytes` atomically: write a temp file, rename it
/// over. With `durable`, the temp file is fsynced before the rename and the
/// directory after it, so after a crash the file holds either the old or
/// the new content, and the new content once this returns.
pub fn write_replace(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, path)?;
        if durable {
            if let Some(parent) = path.parent() {
                fsync_dir(parent)?;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The temp name used while replacing `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads up to `n` bytes from the start of a file.
pub fn read_prefix(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    File::open(path)?.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Removes every `*.tmp` file directly inside `dir`.
pub fn remove_tmp_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(TMP_SUFFIX) && entry.file_type()?.is_file() {
            tracing::info!(file = %entry.path().display(), "removing leftover temp file");
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Extension of segment log files.
pub const LOG_EXT: &str = "log";
/// Extension of segment index files.
pub const INDEX_EXT: &str = "index";

/// `00000000000000000042.log`: the base offset, zero-padded so names sort
/// as offsets do (Kafka's convention).
pub fn segment_file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// The base offset and extension of a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_as_offsets_and_parse_back() {
        assert_eq!(segment_file_name(42, LOG_EXT), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.index"),
            Some((42, "index"))
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX, LOG_EXT)),
            Some((u64::MAX, "log"))
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.log"), None);
    }

    #[test]
    fn write_replace_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.json");
        write_replace(&path, b"one", true).expect("write");
        write_replace(&path, b"two", false).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert!(!tmp_path(&path).exists());
        fs::write(dir.path().join("b.json.tmp"), b"x").expect("write");
        remove_tmp_files(dir.path()).expect("clean");
        assert!(!dir.path().join("b.json.tmp").exists());
        assert!(path.exists());
    }
}

//! Committed offsets of consumer groups.
//!
//! One small JSON file per group, `groups/<hex of the group id>.json`, holding
//! the group's committed offsets for every topic. A commit rewrites the
//! group's file crash-safely (temp file, fsync, rename, fsync directory)
//! before it returns, so an acknowledged commit survives a crash and a torn
//! one leaves the previous state. Hex keeps any group id a valid, unique
//! file name; the id is also stored inside for people reading the files.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::files::{self, lock};
use crate::error::BrokerError;

/// Longest group id accepted, in bytes. Hex-encoded it stays well within
/// the 255-byte file name limit of common file systems.
pub const MAX_GROUP_ID_BYTES: usize = 120;
/// The rule for group ids, quoted in errors.
pub const GROUP_ID_RULE: &str = "group ids must be 1 to 120 bytes of UTF-8";
const GROUP_FORMAT: u32 = 1;

/// Committed offsets of one group: topic → partition → next offset to read.
type GroupOffsets = BTreeMap<String, BTreeMap<u32, u64>>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    /// Layout version of this file.
    format: u32,
    group: String,
    offsets: GroupOffsets,
}

/// Whether a group id is acceptable.
pub fn is_valid_group_id(group: &str) -> bool {
    (1..=MAX_GROUP_ID_BYTES).contains(&group.len())
}

/// Checks a group id.
pub fn check_group_id(group: &str) -> Result<(), BrokerError> {
    if is_valid_group_id(group) {
        Ok(())
    } else {
        Err(BrokerError::InvalidGroupId {
            group: group.to_owned(),
            rule: GROUP_ID_RULE,
        })
    }
}

#[derive(Debug, Default)]
struct GroupEntry {
    /// Serializes commits of the group; held across the file write.
    write: Mutex<()>,
    /// What the group's file holds; readers never wait for a write.
    offsets: Mutex<GroupOffsets>,
}

/// All groups' committed offsets.
#[derive(Debug)]
pub struct GroupStore {
    dir: PathBuf,
    groups: Mutex<HashMap<String, Arc<GroupEntry>>>,
}

impl GroupStore {
    /// Loads every group file in `dir` (created if missing). An unreadable
    /// group file stops the open: it was written atomically, so damage is
    /// disk corruption that an operator must look at, not a state to guess.
    pub fn open(dir: &Path) -> Result<Self, BrokerError> {
        fs::create_dir_all(dir)?;
        files::remove_tmp_files(dir)?;
        let mut groups = HashMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                tracing::warn!(file = %path.display(), "ignoring unknown file in groups directory");
                continue;
            }
            let corrupt = |reason: String| BrokerError::Corrupt {
                location: path.display().to_string(),
                reason,
            };
            let file: GroupFile = serde_json::from_slice(&fs::read(&path)?)
                .map_err(|e| corrupt(format!("unreadable: {e}")))?;
            if file.format != GROUP_FORMAT {
                return Err(corrupt(format!("unsupported format {}", file.format)));
            }
            if path.file_stem().and_then(|s| s.to_str()) != Some(hex(&file.group).as_str()) {
                return Err(corrupt(format!(
                    "file name does not match group {:?}",
                    file.group
                )));
            }
            let entry = GroupEntry {
                write: Mutex::new(()),
                offsets: Mutex::new(file.offsets),
            };
            groups.insert(file.group, Arc::new(entry));
        }
        Ok(Self {
            dir: dir.to_owned(),
            groups: Mutex::new(groups),
        })
    }

    /// Stores offsets for a group and topic, durably. Blocking.
    pub fn commit(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), BrokerError> {
        check_group_id(group)?;
        let entry = Arc::clone(lock(&self.groups).entry(group.to_owned()).or_default());
        self.rewrite(group, &entry, |all| {
            let committed = all.entry(topic.to_owned()).or_default();
            for &(partition, offset) in offsets {
                committed.insert(partition, offset);
            }
        })
    }

    /// A group's committed offsets for a topic, by partition.
    pub fn committed(&self, group: &str, topic: &str) -> Vec<(u32, u64)> {
        let Some(entry) = lock(&self.groups).get(group).cloned() else {
            return Vec::new();
        };
        let offsets = lock(&entry.offsets);
        offsets
            .get(topic)
            .map(|by_partition| by_partition.iter().map(|(&p, &o)| (p, o)).collect())
            .unwrap_or_default()
    }

    /// Drops every group's offsets for a deleted topic, so a topic created
    /// later under the same name does not inherit them. Blocking.
    pub fn forget_topic(&self, topic: &str) -> Result<(), BrokerError> {
        let entries: Vec<(String, Arc<GroupEntry>)> = lock(&self.groups)
            .iter()
            .map(|(g, e)| (g.clone(), Arc::clone(e)))
            .collect();
        for (group, entry) in entries {
            if lock(&entry.offsets).contains_key(topic) {
                self.rewrite(&group, &entry, |all| {
                    all.remove(topic);
                })?;
            }
        }
        Ok(())
    }

    fn rewrite(
        &self,
        group: &str,
        entry: &GroupEntry,
        change: impl FnOnce(&mut GroupOffsets),
    ) -> Result<(), BrokerError> {
        let _writer = lock(&entry.write);
        let mut next = lock(&entry.offsets).clone();
        change(&mut next);
        let file = GroupFile {
            format: GROUP_FORMAT,
            group: group.to_owned(),
            offsets: next,
        };
        let json = serde_json::to_vec(&file).map_err(io::Error::other)?;
        files::write_replace(&self.path(group), &json, true)?;
        *lock(&entry.offsets) = file.offsets;
        Ok(())
    }

    fn path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{}.json", hex(group)))
    }
}

fn hex(s: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reopen_and_merge_per_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = GroupStore::open(dir.path()).expect("open");
        store
            .commit("g.1/ü", "t", &[(0, 5), (2, 9)])
            .expect("commit");
        store.commit("g.1/ü", "t", &[(0, 7)]).expect("commit");
        store.commit("g.1/ü", "u", &[(1, 1)]).expect("commit");
        store.commit("other", "t", &[(0, 1)]).expect("commit");
        drop(store);

        let store = GroupStore::open(dir.path()).expect("reopen");
        assert_eq!(store.committed("g.1/ü", "t"), vec![(0, 7), (2, 9)]);
        assert_eq!(store.committed("g.1/ü", "u"), vec![(1, 1)]);
        assert_eq!(store.committed("other", "t"), vec![(0, 1)]);
        assert_eq!(store.committed("nobody", "t"), vec![]);

        store.forget_topic("t").expect("forget");
        let store = GroupStore::open(dir.path()).expect("reopen");
        assert_eq!(store.committed("g.1/ü", "t"), vec![]);
        assert_eq!(store.committed("g.1/ü", "u"), vec![(1, 1)]);
    }

    #[test]
    fn group_ids_are_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = GroupStore::open(dir.path()).expect("open");
        assert!(store.commit("", "t", &[(0, 1)]).is_err());
        let long = "x".repeat(MAX_GROUP_ID_BYTES + 1);
        assert!(store.commit(&long, "t", &[(0, 1)]).is_err());
        let longest = "x".repeat(MAX_GROUP_ID_BYTES);
        store.commit(&longest, "t", &[(0, 1)]).expect("longest id");
    }

    #[test]
    fn a_damaged_group_file_is_reported_not_guessed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = GroupStore::open(dir.path()).expect("open");
        store.commit("g", "t", &[(0, 1)]).expect("commit");
        fs::write(
            dir.path().join(format!("{}.json", hex("g"))),
            b"{\"format\":1,",
        )
        .expect("damage");
        fs::write(dir.path().join("x.json.tmp"), b"half").expect("tmp");
        assert!(matches!(
            GroupStore::open(dir.path()),
            Err(BrokerError::Corrupt { .. })
        ));
        assert!(!dir.path().join("x.json.tmp").exists());
    }
}

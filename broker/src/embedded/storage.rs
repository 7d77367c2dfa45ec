//! [`Storage`]: everything an embedded cluster holds on disk, with blocking
//! operations. [`super::EmbeddedCluster`] wraps it for async callers.
//!
//! ```text
//! <dir>/cluster.json            format marker
//! <dir>/topics/<topic>/topic.json
//! <dir>/topics/<topic>/<partition>/<base offset>.log|.index
//! <dir>/groups/<hex group id>.json
//! <dir>/staging/                topics being created (emptied on open)
//! <dir>/trash/                  topics being deleted (emptied on open)
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sluice_config::EmbeddedConfig;

use super::files::{self, lock};
use super::groups::GroupStore;
use super::partition::{LogSettings, RetentionPolicy, RetentionStats};
use super::topic::{self, Topic};
use crate::cluster::TopicMetadata;
use crate::error::BrokerError;

const CLUSTER_FILE: &str = "cluster.json";
const CLUSTER_FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    /// Layout version of the whole directory.
    format: u32,
}

/// The on-disk state of one embedded cluster.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    settings: LogSettings,
    retention: RetentionPolicy,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes topic creation and deletion (slow, file-system bound);
    /// produce and fetch never take it.
    admin: Mutex<()>,
    groups: GroupStore,
}

impl Storage {
    /// Opens or initialises the cluster directory and recovers every topic,
    /// partition and group in it.
    pub fn open(dir: &Path, config: &EmbeddedConfig) -> Result<Self, BrokerError> {
        fs::create_dir_all(dir)?;
        check_format(dir)?;
        for sub in ["topics", "staging", "trash"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        // Half-created topics were never visible; half-deleted ones were
        // already gone from the caller's point of view.
        for sub in ["staging", "trash"] {
            for entry in fs::read_dir(dir.join(sub))? {
                let path = entry?.path();
                tracing::info!(path = %path.display(), "removing leftover of an interrupted topic change");
                if path.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
            }
        }

        let settings = LogSettings::from_config(config);
        let mut topics = BTreeMap::new();
        for entry in fs::read_dir(dir.join("topics"))? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                tracing::warn!(file = %entry.path().display(), "ignoring unknown file in topics directory");
                continue;
            }
            let topic = Topic::open(&entry.path(), settings)?;
            topics.insert(topic.name.clone(), Arc::new(topic));
        }
        let groups = GroupStore::open(&dir.join("groups"))?;
        Ok(Self {
            dir: dir.to_owned(),
            settings,
            retention: RetentionPolicy {
                retention_ms: config.retention_ms,
                retention_bytes: config.retention_bytes,
            },
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            groups,
        })
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An open topic; the name is checked first so a malformed one gets
    /// the precise error.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        if !sluice_config::is_valid_topic_name(name) {
            return Err(BrokerError::InvalidTopicName(name.to_owned()));
        }
        self.topics_read()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))
    }

    /// All topics, sorted by name.
    pub fn list_topics(&self) -> Vec<TopicMetadata> {
        self.topics_read().values().map(|t| t.metadata()).collect()
    }

    /// Every open topic.
    pub fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics_read().values().cloned().collect()
    }

    /// Creates a topic. Blocking.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicMetadata, BrokerError> {
        if !sluice_config::is_valid_topic_name(name) {
            return Err(BrokerError::InvalidTopicName(name.to_owned()));
        }
        topic::check_partition_count(partitions)?;
        let _admin = lock(&self.admin);
        if self.topics_read().contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_owned()));
        }
        let topic = Topic::create(
            &self.dir.join("topics"),
            &self.dir.join("staging"),
            name,
            partitions,
            self.settings,
        )?;
        let metadata = topic.metadata();
        self.topics_write().insert(name.to_owned(), Arc::new(topic));
        Ok(metadata)
    }

    /// Deletes a topic, its data and the groups' offsets for it. Blocking.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let _admin = lock(&self.admin);
        let topic = self.topic(name)?;
        self.topics_write().remove(name);
        topic.delete(&self.dir.join("topics"), &self.dir.join("trash"))?;
        self.groups.forget_topic(name)
    }

    /// The committed-offsets store.
    pub fn groups(&self) -> &GroupStore {
        &self.groups
    }

    /// Fsyncs every partition; tries them all and returns the first error.
    /// Blocking.
    pub fn sync_all(&self) -> Result<(), BrokerError> {
        let mut first_error = None;
        for topic in self.all_topics() {
            for log in &topic.partitions {
                if let Err(e) = log.sync() {
                    tracing::error!(topic = %topic.name, partition = log.partition(), error = %e, "fsync failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Applies the retention policy to every partition now. Blocking.
    pub fn run_retention(&self) -> Result<RetentionStats, BrokerError> {
        let mut total = RetentionStats::default();
        if self.retention == RetentionPolicy::default() {
            return Ok(total);
        }
        let now = now_ms();
        let mut first_error = None;
        for topic in self.all_topics() {
            for log in &topic.partitions {
                match log.apply_retention(&self.retention, now) {
                    Ok(stats) => total += stats,
                    Err(e) => {
                        tracing::error!(topic = %topic.name, partition = log.partition(), error = %e, "retention failed");
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    }

    fn topics_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn topics_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Writes the format marker of a new directory, or checks an existing one,
/// so a future layout change is refused instead of misread.
fn check_format(dir: &Path) -> Result<(), BrokerError> {
    let path = dir.join(CLUSTER_FILE);
    files::remove_tmp_files(dir)?;
    match fs::read(&path) {
        Ok(bytes) => {
            let file: ClusterFile =
                serde_json::from_slice(&bytes).map_err(|e| BrokerError::Corrupt {
                    location: path.display().to_string(),
                    reason: format!("unreadable: {e}"),
                })?;
            if file.format != CLUSTER_FORMAT {
                return Err(BrokerError::Corrupt {
                    location: path.display().to_string(),
                    reason: format!(
                        "directory format {} is not supported by this version (expects {CLUSTER_FORMAT})",
                        file.format
                    ),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let json = serde_json::to_vec(&ClusterFile {
                format: CLUSTER_FORMAT,
            })
            .map_err(std::io::Error::other)?;
            files::write_replace(&path, &json, true)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

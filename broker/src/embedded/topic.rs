//! Topics: a metadata file and one [`PartitionLog`] per partition.
//!
//! A topic is created in a staging directory (partition directories and
//! `topic.json`, fsynced) and renamed into `topics/` in one step, so after a
//! crash it either exists whole or not at all. Deletion renames it into
//! `trash/` first for the same reason, then removes the files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::files;
use super::partition::{LogSettings, PartitionLog};
use crate::cluster::TopicMetadata;
use crate::error::BrokerError;
use crate::partitioner::StickyPartitioner;

/// Largest partition count of a topic.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Name of the metadata file in a topic's directory.
pub const TOPIC_FILE: &str = "topic.json";
const TOPIC_FORMAT: u32 = 1;

/// The persisted description of a topic.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    /// Layout version of this file.
    format: u32,
    name: String,
    partitions: u32,
}

/// The directory name of a topic. Kafka's rule admits `.` and `..`, which
/// are not usable as directory names; `%` is outside the rule, so escaping
/// them cannot collide with another topic.
pub fn dir_name(topic: &str) -> String {
    match topic {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        other => other.to_owned(),
    }
}

/// Checks a partition count against the limits.
pub fn check_partition_count(partitions: u32) -> Result<(), BrokerError> {
    if (1..=MAX_PARTITIONS).contains(&partitions) {
        Ok(())
    } else {
        Err(BrokerError::InvalidPartitionCount(partitions))
    }
}

/// An open topic.
#[derive(Debug)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its partitions, by number.
    pub partitions: Vec<Arc<PartitionLog>>,
    /// Partition choice for keyless records.
    pub sticky: StickyPartitioner,
}

impl Topic {
    /// Creates a topic under `topics_dir`, staged in `staging_dir`. The
    /// caller has checked the name and count and that it does not exist.
    pub fn create(
        topics_dir: &Path,
        staging_dir: &Path,
        name: &str,
        partitions: u32,
        settings: LogSettings,
    ) -> Result<Self, BrokerError> {
        let staged = staging_dir.join(dir_name(name));
        if staged.exists() {
            fs::remove_dir_all(&staged)?;
        }
        fs::create_dir_all(&staged)?;
        for p in 0..partitions {
            fs::create_dir(staged.join(p.to_string()))?;
        }
        let meta = TopicFile {
            format: TOPIC_FORMAT,
            name: name.to_owned(),
            partitions,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
        // Durable write: fsyncs the file and the staging directory, which
        // also holds the partition directories' entries.
        files::write_replace(&staged.join(TOPIC_FILE), &json, true)?;
        let dir = topics_dir.join(dir_name(name));
        fs::rename(&staged, &dir)?;
        files::fsync_dir(topics_dir)?;
        Self::open_partitions(dir, name.to_owned(), partitions, settings)
    }

    /// Opens a topic directory found at startup, recovering its partitions.
    pub fn open(dir: &Path, settings: LogSettings) -> Result<Self, BrokerError> {
        let meta_path = dir.join(TOPIC_FILE);
        files::remove_tmp_files(dir)?;
        let bytes = fs::read(&meta_path)?;
        let corrupt = |reason: String| BrokerError::Corrupt {
            location: meta_path.display().to_string(),
            reason,
        };
        let meta: TopicFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("unreadable: {e}")))?;
        if meta.format != TOPIC_FORMAT {
            return Err(corrupt(format!("unsupported format {}", meta.format)));
        }
        if !sluice_config::is_valid_topic_name(&meta.name) {
            return Err(corrupt(format!("invalid topic name {:?}", meta.name)));
        }
        let expected_dir = dir_name(&meta.name);
        if dir.file_name().and_then(|n| n.to_str()) != Some(expected_dir.as_str()) {
            return Err(corrupt(format!(
                "topic {:?} found in a directory of another name",
                meta.name
            )));
        }
        check_partition_count(meta.partitions)
            .map_err(|_| corrupt(format!("invalid partition count {}", meta.partitions)))?;
        for p in 0..meta.partitions {
            let partition_dir = dir.join(p.to_string());
            if !partition_dir.is_dir() {
                return Err(BrokerError::Corrupt {
                    location: partition_dir.display().to_string(),
                    reason: "partition directory missing".to_owned(),
                });
            }
        }
        Self::open_partitions(dir.to_owned(), meta.name, meta.partitions, settings)
    }

    fn open_partitions(
        dir: PathBuf,
        name: String,
        partitions: u32,
        settings: LogSettings,
    ) -> Result<Self, BrokerError> {
        let logs = (0..partitions)
            .map(|p| PartitionLog::open(&dir.join(p.to_string()), &name, p, settings).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name,
            dir,
            partitions: logs,
            sticky: StickyPartitioner::new(),
        })
    }

    /// Its metadata.
    pub fn metadata(&self) -> TopicMetadata {
        TopicMetadata {
            name: self.name.clone(),
            partitions: self.partitions.len() as u32,
        }
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// One partition's log.
    pub fn partition(&self, partition: u32) -> Result<&Arc<PartitionLog>, BrokerError> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: self.name.clone(),
                partition,
            })
    }

    /// Removes the topic's files: renamed into `trash_dir` (one atomic step
    /// that a crash cannot leave half done), then deleted.
    pub fn delete(&self, topics_dir: &Path, trash_dir: &Path) -> Result<(), BrokerError> {
        for log in &self.partitions {
            log.mark_deleted();
        }
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let trashed = trash_dir.join(format!("{}-{stamp}", dir_name(&self.name)));
        fs::rename(&self.dir, &trashed)?;
        files::fsync_dir(topics_dir)?;
        fs::remove_dir_all(&trashed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_names_get_usable_directories() {
        assert_eq!(dir_name("."), "%2E");
        assert_eq!(dir_name(".."), "%2E%2E");
        assert_eq!(dir_name("a.b"), "a.b");
        assert!(!sluice_config::is_valid_topic_name("%2E"));
    }

    #[test]
    fn partition_counts_are_bounded() {
        assert!(check_partition_count(1).is_ok());
        assert!(check_partition_count(MAX_PARTITIONS).is_ok());
        assert!(matches!(
            check_partition_count(0),
            Err(BrokerError::InvalidPartitionCount(0))
        ));
        assert!(matches!(
            check_partition_count(MAX_PARTITIONS + 1),
            Err(BrokerError::InvalidPartitionCount(_))
        ));
    }
}

//! Partition assignment: which member of a group reads which partition.
//!
//! Kafka's range assignor, per topic: the members subscribed to a topic,
//! sorted by instance id, take contiguous runs of its partitions, the first
//! `partitions % members` one partition more. Pure and deterministic, so a
//! group assigns the same way on every owner gateway.

use std::collections::{BTreeMap, BTreeSet};

/// A topic and one of its partitions.
pub type TopicPartition = (String, u32);

/// Assigns every partition of every subscribed topic to one member.
///
/// `subscriptions` maps a member to the topics it subscribed to;
/// `partitions` gives each topic's partition count (topics missing from it
/// do not exist yet and are assigned to nobody).
pub fn range(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = subscriptions
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (topic, &count) in partitions {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let n = members.len() as u32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in members.into_iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            let set = out.entry(member.clone()).or_default();
            for p in next..next + take {
                set.insert((topic.clone(), p));
            }
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        list.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn splits_a_topic_in_contiguous_runs() {
        let parts = BTreeMap::from([("t".to_owned(), 5)]);
        let out = range(&subs(&[("a", &["t"]), ("b", &["t"])]), &parts);
        let a: Vec<u32> = out["a"].iter().map(|(_, p)| *p).collect();
        let b: Vec<u32> = out["b"].iter().map(|(_, p)| *p).collect();
        assert_eq!((a, b), (vec![0, 1, 2], vec![3, 4]));
    }

    #[test]
    fn every_partition_goes_to_exactly_one_subscriber() {
        let parts = BTreeMap::from([
            ("x".to_owned(), 7),
            ("y".to_owned(), 2),
            ("z".to_owned(), 3),
        ]);
        let s = subs(&[
            ("a", &["x", "y"]),
            ("b", &["x"]),
            ("c", &["x", "y", "missing"]),
        ]);
        let out = range(&s, &parts);
        let mut seen = BTreeSet::new();
        for (member, set) in &out {
            for tp in set {
                assert!(s[member].contains(&tp.0), "{member} got {tp:?}");
                assert!(seen.insert(tp.clone()), "{tp:?} twice");
            }
        }
        assert_eq!(seen.len(), 9, "z has no subscriber: {seen:?}");
    }

    #[test]
    fn more_members_than_partitions_leaves_some_idle() {
        let parts = BTreeMap::from([("t".to_owned(), 1)]);
        let out = range(&subs(&[("a", &["t"]), ("b", &["t"])]), &parts);
        assert_eq!(out["a"].len(), 1);
        assert!(out["b"].is_empty());
    }
}

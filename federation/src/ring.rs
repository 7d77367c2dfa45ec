//! The hash ring that chooses a topic's home cluster, and the rebalance plan
//! that a change of the cluster set yields.
//!
//! [`TopicRing`] wraps `consistent_hash::StaticHashRing`. Each active cluster
//! gets `weight * VNODES_PER_WEIGHT` virtual nodes; a topic's owner is the
//! first cluster clockwise from the topic's hash, and
//! [`TopicRing::candidates`] continues clockwise to give the failover order.
//!
//! Placement must never change between releases or differ between two
//! gateways, so every byte that is hashed is fixed here rather than left to
//! `std::hash::Hash`: see [`StableRingHash`]. The golden file
//! `federation/testdata/ring-golden.tsv` pins the result.

use std::fmt;
use std::hash::{Hash, Hasher};

use consistent_hash::{DefaultHash, Node, RingHash, StaticHashRing};

/// Virtual nodes per unit of cluster weight.
///
/// With the default weight of 100, one virtual node per weight unit left
/// three equal clusters up to 24% away from their fair share of 10,000
/// topics for some of 60 random cluster-name sets, and a 200:100 weight
/// pair up to 29% off its 2:1 ratio. At 16 per unit the worst cases were 8%
/// and 10%, while a ring of three default clusters still has only 4,800
/// points (77 KiB, fits in L2). Changing this constant moves topics: it is
/// part of the placement contract pinned by the golden file.
pub const VNODES_PER_WEIGHT: usize = 16;

/// Largest weight a cluster may have on the ring (the config allows 1..=10,000).
pub const MAX_WEIGHT: u32 = 10_000;

/// An error building a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Two clusters share a name.
    #[error("cluster {0:?} appears twice on the ring")]
    DuplicateCluster(String),
    /// A weight outside `1..=MAX_WEIGHT`.
    #[error("cluster {cluster:?} has weight {weight}; weights must be 1..={MAX_WEIGHT}")]
    InvalidWeight {
        /// The cluster's name.
        cluster: String,
        /// The weight it was given.
        weight: u32,
    },
}

/// A cluster name as a ring key: hashes as its UTF-8 bytes followed by
/// `0xff`, written with `Hasher::write` only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ClusterKey(Box<str>);

impl Hash for ClusterKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        write_str_bytes(state, &self.0);
    }
}

/// A topic name as a ring item; hashes like [`ClusterKey`].
struct TopicKey<'a>(&'a str);

impl Hash for TopicKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        write_str_bytes(state, self.0);
    }
}

/// A virtual-node sequence number: 8 little-endian bytes on every platform.
struct VnodeSeq(u64);

impl Hash for VnodeSeq {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0.to_le_bytes());
    }
}

fn write_str_bytes<H: Hasher>(state: &mut H, s: &str) {
    state.write(s.as_bytes());
    // The same terminator `impl Hash for str` writes today, spelled out so a
    // change in std cannot move topics.
    state.write(&[0xff]);
}

/// The ring's hash: SipHash-1-3 with zero keys (consistent_hash's
/// [`DefaultHash`]), fed only through `Hasher::write` with bytes this module
/// chooses.
///
/// Left to itself, consistent_hash hashes a virtual node as the tuple
/// `(key, seq: usize)`, i.e. `usize::to_ne_bytes`: 4 or 8 bytes, little- or
/// big-endian depending on the target, and a string through std's
/// `impl Hash for str`, whose byte stream std does not promise to keep. Here
/// the sequence number is always 8 little-endian bytes and strings are their
/// bytes plus `0xff`, so the result is identical on every target and
/// release. On 64-bit little-endian targets it equals `DefaultHash` exactly
/// (a test checks this).
#[derive(Debug, Clone, Copy, Default)]
pub struct StableRingHash;

impl RingHash for StableRingHash {
    fn hash_item<T: Hash>(&self, item: &T) -> u64 {
        DefaultHash.hash_item(item)
    }

    fn hash_vnode<K: Hash>(&self, node_key: &K, vnode_seq: usize) -> u64 {
        DefaultHash.hash_item(&(node_key, VnodeSeq(vnode_seq as u64)))
    }
}

impl StableRingHash {
    /// The ring position of a topic name.
    pub fn topic_hash(topic: &str) -> u64 {
        StableRingHash.hash_item(&TopicKey(topic))
    }
}

/// The consistent-hash ring over the active clusters.
///
/// Build one whenever the set of active clusters or their weights change;
/// lookups are `&self` and the ring is `Send + Sync`, so share it in an
/// `Arc`.
pub struct TopicRing {
    /// Clusters and weights, sorted by name.
    clusters: Vec<(String, u32)>,
    /// Borrows nothing outside itself: consistent_hash keeps the nodes in a
    /// `Vec` it owns and points its virtual nodes into that buffer, which
    /// never moves while the ring lives.
    ring: StaticHashRing<'static, ClusterKey, (), StableRingHash>,
}

impl TopicRing {
    /// A ring over these `(cluster name, weight)` pairs.
    ///
    /// Pass the ACTIVE clusters only: draining and read-only clusters take
    /// no new topics, so they must not own any. The order of the pairs does
    /// not matter.
    pub fn new<I, S>(clusters: I) -> Result<Self, RingError>
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let mut list: Vec<(String, u32)> = clusters
            .into_iter()
            .map(|(name, weight)| (name.into(), weight))
            .collect();
        list.sort();
        for pair in list.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(RingError::DuplicateCluster(pair[0].0.clone()));
            }
        }
        for (name, weight) in &list {
            if !(1..=MAX_WEIGHT).contains(weight) {
                return Err(RingError::InvalidWeight {
                    cluster: name.clone(),
                    weight: *weight,
                });
            }
        }
        let nodes = list.iter().map(|(name, weight)| {
            Node::new(ClusterKey(name.as_str().into()))
                .quantity(*weight as usize * VNODES_PER_WEIGHT)
        });
        let ring = StaticHashRing::new(StableRingHash, nodes);
        Ok(Self {
            clusters: list,
            ring,
        })
    }

    /// A ring over the clusters of a configuration whose state is `active`.
    pub fn from_config(clusters: &[sluice_config::ClusterConfig]) -> Result<Self, RingError> {
        Self::new(
            clusters
                .iter()
                .filter(|c| c.state == sluice_config::ClusterState::Active)
                .map(|c| (c.name.as_str(), c.weight)),
        )
    }

    /// The cluster that owns `topic`, or `None` when the ring is empty.
    pub fn owner(&self, topic: &str) -> Option<&str> {
        self.candidates(topic).next()
    }

    /// Every cluster once, in failover order: the owner first, then the
    /// clusters met going clockwise from the topic's position.
    pub fn candidates(&self, topic: &str) -> Candidates<'_> {
        Candidates(self.ring.calc_candidates(&TopicKey(topic)))
    }

    /// [`Self::candidates`] collected.
    pub fn candidate_list(&self, topic: &str) -> Vec<&str> {
        self.candidates(topic).collect()
    }

    /// The clusters on the ring and their weights, sorted by name.
    pub fn clusters(&self) -> &[(String, u32)] {
        &self.clusters
    }

    /// Whether `cluster` is on the ring.
    pub fn contains(&self, cluster: &str) -> bool {
        self.weight(cluster).is_some()
    }

    /// The weight of `cluster`, if it is on the ring.
    pub fn weight(&self, cluster: &str) -> Option<u32> {
        self.clusters
            .binary_search_by(|(name, _)| name.as_str().cmp(cluster))
            .ok()
            .map(|i| self.clusters[i].1)
    }

    /// Number of clusters on the ring.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    /// Whether the ring has no cluster (every lookup answers `None`).
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Number of virtual nodes.
    pub fn virtual_nodes(&self) -> usize {
        self.ring.len()
    }
}

impl Clone for TopicRing {
    fn clone(&self) -> Self {
        Self::new(self.clusters.iter().cloned()).expect("a built ring's clusters are valid")
    }
}

impl fmt::Debug for TopicRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicRing")
            .field("clusters", &self.clusters)
            .field("virtual_nodes", &self.ring.len())
            .finish()
    }
}

/// The clusters for a topic in failover order, each once; from
/// [`TopicRing::candidates`].
pub struct Candidates<'a>(consistent_hash::Candidates<'a, ClusterKey, ()>);

impl<'a> Iterator for Candidates<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.0.next().map(|node| &*node.key.0)
    }
}

/// Why a topic moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveCause {
    /// The old ring put the topic where it is; the new ring puts it
    /// elsewhere (a cluster was added, removed or reweighted).
    OwnerChanged,
    /// The topic was not where the old ring put it (it had failed over, or
    /// a pin was lifted) and goes back to its ring owner.
    Restore,
}

/// One topic to migrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The topic.
    pub topic: String,
    /// Where it lives now (its current epoch's cluster).
    pub from: String,
    /// Its owner on the new ring.
    pub to: String,
    /// Why it moves.
    pub cause: MoveCause,
}

/// The topics whose home must change after the cluster set changed.
///
/// Computing a plan moves nothing: the caller migrates topic by topic
/// (drain-then-switch, see `docs/federation.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebalancePlan {
    /// Topics to migrate, in the order they were given.
    pub moves: Vec<Move>,
    /// Topics that have no owner on the new ring because it is empty; they
    /// stay where they are.
    pub stranded: Vec<String>,
}

impl RebalancePlan {
    /// The moves for `topics`, given as `(topic, current home)`.
    ///
    /// The current home comes from the placement table (the cluster of the
    /// topic's current epoch), not from `old`: a topic that failed over
    /// counts by where it actually is. `old` only labels each move's
    /// [`MoveCause`].
    ///
    /// Pins are the caller's business: leave pinned topics out of `topics`
    /// (a pin wins over the ring, so a pinned topic never moves with it), or
    /// move them to their pinned cluster separately.
    pub fn compute<'t, I>(old: &TopicRing, new: &TopicRing, topics: I) -> Self
    where
        I: IntoIterator<Item = (&'t str, &'t str)>,
    {
        let mut plan = Self::default();
        for (topic, home) in topics {
            match new.owner(topic) {
                None => plan.stranded.push(topic.to_owned()),
                Some(owner) if owner == home => {}
                Some(owner) => {
                    let cause = if old.owner(topic) == Some(home) {
                        MoveCause::OwnerChanged
                    } else {
                        MoveCause::Restore
                    };
                    plan.moves.push(Move {
                        topic: topic.to_owned(),
                        from: home.to_owned(),
                        to: owner.to_owned(),
                        cause,
                    });
                }
            }
        }
        plan
    }

    /// Whether nothing has to move.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(clusters: &[(&str, u32)]) -> TopicRing {
        TopicRing::new(clusters.iter().copied()).unwrap()
    }

    #[test]
    fn empty_ring_has_no_owner() {
        let r = ring(&[]);
        assert!(r.is_empty());
        assert_eq!(r.owner("orders"), None);
        assert!(r.candidate_list("orders").is_empty());
    }

    #[test]
    fn single_cluster_owns_everything() {
        let r = ring(&[("east", 1)]);
        assert_eq!(r.virtual_nodes(), VNODES_PER_WEIGHT);
        for t in ["a", "b", "orders", ""] {
            assert_eq!(r.owner(t), Some("east"));
        }
    }

    #[test]
    fn rejects_duplicates_and_bad_weights() {
        assert_eq!(
            TopicRing::new([("a", 1), ("a", 2)]).unwrap_err(),
            RingError::DuplicateCluster("a".into())
        );
        assert!(matches!(
            TopicRing::new([("a", 0)]).unwrap_err(),
            RingError::InvalidWeight { weight: 0, .. }
        ));
        assert!(TopicRing::new([("a", MAX_WEIGHT + 1)]).is_err());
        assert!(TopicRing::new([("a", MAX_WEIGHT)]).is_ok());
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let a = ring(&[("east", 100), ("west", 100), ("north", 50)]);
        let b = ring(&[("north", 50), ("west", 100), ("east", 100)]);
        for i in 0..500 {
            let t = format!("t{i}");
            assert_eq!(a.candidate_list(&t), b.candidate_list(&t));
        }
    }

    #[test]
    fn weight_lookup() {
        let r = ring(&[("east", 100), ("west", 7)]);
        assert_eq!(r.weight("west"), Some(7));
        assert_eq!(r.weight("north"), None);
        assert!(r.contains("east"));
        assert_eq!(r.len(), 2);
        assert_eq!(r.virtual_nodes(), 107 * VNODES_PER_WEIGHT);
    }

    #[test]
    fn clone_places_the_same() {
        let a = ring(&[("east", 100), ("west", 100)]);
        let b = a.clone();
        for i in 0..200 {
            let t = format!("t{i}");
            assert_eq!(a.owner(&t), b.owner(&t));
        }
    }

    /// The pinned byte stream equals consistent_hash's own on 64-bit
    /// little-endian targets, where `usize` is 8 LE bytes.
    #[cfg(all(target_pointer_width = "64", target_endian = "little"))]
    #[test]
    fn stable_hash_matches_default_hash_here() {
        for name in ["", "east", "topic-0001", "ünïcödé"] {
            assert_eq!(
                StableRingHash::topic_hash(name),
                DefaultHash.hash_item(&name)
            );
            let key = ClusterKey(name.into());
            for seq in [0usize, 1, 99, 1_599] {
                assert_eq!(
                    StableRingHash.hash_vnode(&key, seq),
                    DefaultHash.hash_vnode(&name, seq)
                );
            }
        }
    }

    #[test]
    fn plan_counts_by_current_home() {
        let old = ring(&[("east", 100), ("west", 100)]);
        let new = ring(&[("east", 100), ("west", 100), ("north", 100)]);
        let topics: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
        // Every topic is on its old owner except t0, which failed over.
        let homes: Vec<(String, String)> = topics
            .iter()
            .map(|t| {
                let owner = old.owner(t).unwrap();
                let home = if t == "t0" {
                    old.candidate_list(t)[1]
                } else {
                    owner
                };
                (t.clone(), home.to_owned())
            })
            .collect();
        let plan = RebalancePlan::compute(
            &old,
            &new,
            homes.iter().map(|(t, h)| (t.as_str(), h.as_str())),
        );
        assert!(!plan.is_empty());
        for mv in &plan.moves {
            assert_eq!(Some(mv.to.as_str()), new.owner(&mv.topic));
            assert_ne!(mv.from, mv.to);
            if mv.topic == "t0" {
                assert_eq!(mv.cause, MoveCause::Restore);
            } else {
                assert_eq!(mv.to, "north");
                assert_eq!(mv.cause, MoveCause::OwnerChanged);
            }
        }
        // t0 is off its owner on both rings unless north took it.
        let t0_new = new.owner("t0").unwrap();
        let t0_home = &homes[0].1;
        assert_eq!(
            plan.moves.iter().any(|m| m.topic == "t0"),
            t0_new != t0_home
        );
        // Everything not in the plan already sits on its new owner.
        for (t, h) in &homes {
            if !plan.moves.iter().any(|m| &m.topic == t) {
                assert_eq!(new.owner(t), Some(h.as_str()));
            }
        }
    }

    #[test]
    fn plan_on_empty_ring_strands() {
        let old = ring(&[("east", 1)]);
        let new = ring(&[]);
        let plan = RebalancePlan::compute(&old, &new, [("a", "east")]);
        assert!(plan.moves.is_empty());
        assert_eq!(plan.stranded, vec!["a".to_owned()]);
    }
}

//! Placement contract of the hash ring: golden vectors, balance, movement
//! on add/remove, weights and failover order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use proptest::prelude::*;
use sluice_federation::ring::{MoveCause, RebalancePlan, TopicRing};

fn ring(clusters: &[(&str, u32)]) -> TopicRing {
    TopicRing::new(clusters.iter().copied()).expect("valid ring")
}

fn topics(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("topic-{i:04}")).collect()
}

fn shares(ring: &TopicRing, topics: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in topics {
        *counts
            .entry(ring.owner(t).expect("non-empty ring").to_owned())
            .or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------- golden

const GOLDEN: &str = "testdata/ring-golden.tsv";

/// The rings and topics the golden file covers.
fn golden_rings() -> Vec<Vec<(&'static str, u32)>> {
    vec![
        vec![("east", 100), ("west", 100), ("north", 100)],
        vec![("east", 100), ("west", 100), ("north", 100), ("south", 100)],
    ]
}

fn golden_topics() -> Vec<String> {
    let mut all = topics(200);
    for odd in [
        "a",
        "A",
        "0",
        "_",
        "-",
        ".",
        "..",
        "orders",
        "orders.v2",
        "Order_Events",
        "metrics-eu-west-1",
        "__consumer_offsets",
        "x.y.z-1_2",
    ] {
        all.push(odd.to_owned());
    }
    all.push("z".repeat(249));
    all
}

fn render_golden() -> String {
    let mut out = String::new();
    out.push_str(
        "# Golden placement of TopicRing: topic, owner, failover order.\n\
         # A difference means topics would move between releases. Never edit by hand;\n\
         # regenerate only for a deliberate, documented placement change with\n\
         #   SLUICE_BLESS=1 cargo test -p sluice-federation --test ring golden\n",
    );
    for clusters in golden_rings() {
        let r = ring(&clusters);
        let spec: Vec<String> = clusters.iter().map(|(n, w)| format!("{n}={w}")).collect();
        writeln!(out, "[ring {}]", spec.join(" ")).unwrap();
        for t in golden_topics() {
            let candidates = r.candidate_list(&t);
            writeln!(out, "{t}\t{}\t{}", candidates[0], candidates.join(",")).unwrap();
        }
    }
    out
}

#[test]
fn golden_vectors_are_reproduced_exactly() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let actual = render_golden();
    if std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (generate it with SLUICE_BLESS=1)", path.display()));
    if expected != actual {
        let diffs: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}: file {e:?}, code {a:?}", i + 1))
            .collect();
        panic!(
            "placement differs from {GOLDEN} ({} vs {} lines); first differences:\n{}",
            expected.lines().count(),
            actual.lines().count(),
            diffs.join("\n")
        );
    }
}

#[test]
fn golden_file_covers_every_cluster() {
    let text = render_golden();
    let owners: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(
        owners,
        BTreeSet::from(["east", "north", "south", "west"]),
        "golden vectors should exercise every cluster"
    );
}

// ---------------------------------------------------------------- balance

#[test]
fn three_equal_clusters_share_evenly() {
    let all = topics(10_000);
    let r = ring(&[("east", 100), ("west", 100), ("north", 100)]);
    let counts = shares(&r, &all);
    assert_eq!(counts.len(), 3);
    let fair = all.len() as f64 / 3.0;
    for (cluster, n) in counts {
        let dev = (n as f64 / fair - 1.0).abs();
        assert!(dev <= 0.10, "{cluster} owns {n} of 10000 ({dev:.3} off)");
    }
}

#[test]
fn balance_holds_for_other_cluster_names() {
    // Not only for the golden names: the virtual-node multiplier is chosen so
    // arbitrary names balance too.
    let all = topics(10_000);
    for set in 0..8 {
        let names: Vec<String> = (0..3).map(|i| format!("cluster-{set}-{i}")).collect();
        let r = TopicRing::new(names.iter().map(|n| (n.as_str(), 100))).unwrap();
        let fair = all.len() as f64 / 3.0;
        for (cluster, n) in shares(&r, &all) {
            let dev = (n as f64 / fair - 1.0).abs();
            assert!(dev <= 0.10, "{cluster} owns {n} ({dev:.3} off)");
        }
    }
}

#[test]
fn adding_a_fourth_cluster_moves_little_and_only_to_it() {
    let all = topics(10_000);
    let old = ring(&[("east", 100), ("west", 100), ("north", 100)]);
    let new = ring(&[("east", 100), ("west", 100), ("north", 100), ("south", 100)]);
    let mut moved = 0;
    for t in &all {
        let (a, b) = (old.owner(t).unwrap(), new.owner(t).unwrap());
        if a != b {
            moved += 1;
            assert_eq!(b, "south", "{t} moved from {a} to {b}");
        }
    }
    assert!(moved > 0);
    assert!(
        moved as f64 <= 0.30 * all.len() as f64,
        "{moved} of {} topics moved",
        all.len()
    );

    // The plan says the same.
    let homes: Vec<(String, String)> = all
        .iter()
        .map(|t| (t.clone(), old.owner(t).unwrap().to_owned()))
        .collect();
    let plan = RebalancePlan::compute(
        &old,
        &new,
        homes.iter().map(|(t, h)| (t.as_str(), h.as_str())),
    );
    assert_eq!(plan.moves.len(), moved);
    assert!(plan
        .moves
        .iter()
        .all(|m| m.to == "south" && m.cause == MoveCause::OwnerChanged));
}

#[test]
fn weights_are_respected() {
    let all = topics(10_000);
    let r = ring(&[("big", 200), ("small", 100)]);
    let counts = shares(&r, &all);
    let ratio = counts["big"] as f64 / counts["small"] as f64;
    assert!(
        (ratio / 2.0 - 1.0).abs() <= 0.15,
        "big/small = {ratio:.3}, expected 2 ±15%"
    );

    let r = ring(&[("a", 100), ("b", 100), ("c", 200)]);
    let counts = shares(&r, &all);
    let ratio = counts["c"] as f64 / ((counts["a"] + counts["b"]) as f64 / 2.0);
    assert!((ratio / 2.0 - 1.0).abs() <= 0.15, "c/avg(a,b) = {ratio:.3}");
}

#[test]
fn candidates_list_each_cluster_once_owner_first() {
    let r = ring(&[("east", 100), ("west", 50), ("north", 100), ("south", 1)]);
    for t in topics(2_000) {
        let c = r.candidate_list(&t);
        assert_eq!(c.len(), 4, "{t}: {c:?}");
        let unique: BTreeSet<&str> = c.iter().copied().collect();
        assert_eq!(unique.len(), 4, "{t}: {c:?}");
        assert_eq!(Some(c[0]), r.owner(&t));
    }
}

#[test]
fn from_config_uses_active_clusters_only() {
    use sluice_config::{ClusterConfig, ClusterState};
    let mut draining = ClusterConfig::embedded("west");
    draining.state = ClusterState::Draining;
    let mut read_only = ClusterConfig::embedded("north");
    read_only.state = ClusterState::ReadOnly;
    let r =
        TopicRing::from_config(&[ClusterConfig::embedded("east"), draining, read_only]).unwrap();
    assert_eq!(r.clusters(), &[("east".to_owned(), 100)]);
    assert_eq!(r.owner("anything"), Some("east"));
}

// ---------------------------------------------------------------- properties

fn cluster_set() -> impl Strategy<Value = BTreeMap<String, u32>> {
    prop::collection::btree_map("[a-z][a-z0-9-]{0,8}", 1u32..=200, 1..6)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn adding_a_cluster_only_moves_topics_to_it(
        set in cluster_set(),
        extra in "[A-Z][a-z0-9]{0,8}",
        weight in 1u32..=200,
    ) {
        let old = TopicRing::new(set.iter().map(|(n, w)| (n.as_str(), *w))).unwrap();
        let new = TopicRing::new(
            set.iter().map(|(n, w)| (n.as_str(), *w)).chain([(extra.as_str(), weight)]),
        )
        .unwrap();
        for i in 0..300 {
            let t = format!("t-{i}");
            let (a, b) = (old.owner(&t).unwrap(), new.owner(&t).unwrap());
            prop_assert!(a == b || b == extra, "{} moved {} -> {}", t, a, b);
            // Failover order of the others is untouched.
            let kept: Vec<&str> = new.candidates(&t).filter(|c| *c != extra).collect();
            prop_assert_eq!(kept, old.candidate_list(&t));
        }
    }

    #[test]
    fn removing_a_cluster_only_moves_its_topics(
        set in cluster_set().prop_filter("two or more", |s| s.len() >= 2),
        pick in any::<prop::sample::Index>(),
    ) {
        let removed = set.keys().nth(pick.index(set.len())).unwrap().clone();
        let old = TopicRing::new(set.iter().map(|(n, w)| (n.as_str(), *w))).unwrap();
        let new = TopicRing::new(
            set.iter().filter(|(n, _)| **n != removed).map(|(n, w)| (n.as_str(), *w)),
        )
        .unwrap();
        for i in 0..300 {
            let t = format!("t-{i}");
            let (a, b) = (old.owner(&t).unwrap(), new.owner(&t).unwrap());
            if a != removed {
                prop_assert_eq!(a, b, "{} moved although {} stayed", t, a);
            } else {
                // It goes to its next candidate.
                prop_assert_eq!(Some(b), old.candidates(&t).nth(1));
            }
        }
    }
}

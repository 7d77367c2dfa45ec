//! Rules of the placement table: planning, compare-and-set, idempotent
//! apply, read routing across epochs.

use proptest::prelude::*;
use sluice_federation::placement::{
    Applied, EpochReason, EpochState, EpochSwitch, PlacementChange, PlacementError, PlacementTable,
    ReadFrom,
};

const T0: i64 = 1_700_000_000_000;

/// Plans with `plan` against the table, then applies the change.
fn apply(
    table: &mut PlacementTable,
    plan: impl FnOnce(&PlacementTable) -> Result<PlacementChange, PlacementError>,
) {
    let change = plan(table).expect("valid plan");
    assert_eq!(table.apply(&change), Ok(Applied::Changed), "{change:?}");
}

fn switch(
    expected: u32,
    end: &[u64],
    cluster: &str,
    start: &[u64],
    reason: EpochReason,
) -> EpochSwitch {
    EpochSwitch {
        expected_epoch: expected,
        end_offsets: end.to_vec(),
        cluster: cluster.to_owned(),
        start_offsets: start.to_vec(),
        reason,
    }
}

/// `orders`: 2 partitions, epoch 1 on east, epoch 2 on west, epoch 3 on
/// east again (starting past east's older records).
fn three_epochs() -> PlacementTable {
    let mut t = PlacementTable::new();
    apply(&mut t, |t| t.create("orders", 2, "east", T0));
    apply(&mut t, |t| {
        t.seal_and_open(
            "orders",
            switch(1, &[10, 20], "west", &[0, 0], EpochReason::Migration),
            T0 + 1,
        )
    });
    apply(&mut t, |t| {
        t.seal_and_open(
            "orders",
            switch(2, &[5, 0], "east", &[10, 20], EpochReason::Failover),
            T0 + 2,
        )
    });
    t
}

// ---------------------------------------------------------------- create

#[test]
fn create_opens_epoch_one() {
    let mut t = PlacementTable::new();
    let change = t.create("orders", 3, "east", T0).unwrap();
    assert!(t.is_empty(), "planning does not touch the table");
    assert_eq!(t.apply(&change), Ok(Applied::Changed));
    let e = t.current("orders").unwrap();
    assert_eq!(e.epoch, 1);
    assert_eq!(e.cluster, "east");
    assert_eq!(e.since_ms, T0);
    assert_eq!(e.start_offsets, vec![0, 0, 0]);
    assert_eq!(e.end_offsets, None);
    assert_eq!(e.state, EpochState::Active);
    assert_eq!(e.reason, EpochReason::Created);
    let p = t.get("orders").unwrap();
    assert_eq!((p.generation, p.partitions), (1, 3));
    assert_eq!(t.home("orders"), Some("east"));
    assert_eq!(t.len(), 1);
}

#[test]
fn create_rejects_bad_requests() {
    let mut t = PlacementTable::new();
    apply(&mut t, |t| t.create("orders", 1, "east", T0));
    assert_eq!(
        t.create("orders", 1, "west", T0),
        Err(PlacementError::TopicExists("orders".into()))
    );
    assert_eq!(
        t.create("bad name", 1, "east", T0),
        Err(PlacementError::InvalidTopicName("bad name".into()))
    );
    assert_eq!(
        t.create("x", 0, "east", T0),
        Err(PlacementError::ZeroPartitions("x".into()))
    );
    assert_eq!(
        t.create("x", 1, "", T0),
        Err(PlacementError::EmptyClusterName("x".into()))
    );
}

// ---------------------------------------------------------------- switch

#[test]
fn seal_and_open_seals_the_current_epoch() {
    let t = three_epochs();
    let p = t.get("orders").unwrap();
    assert_eq!(p.epochs.len(), 3);
    let e1 = t.epoch("orders", 1).unwrap();
    assert_eq!(e1.state, EpochState::Sealed);
    assert_eq!(e1.end_offsets.as_deref(), Some(&[10, 20][..]));
    let e2 = t.next_epoch_after("orders", 1).unwrap();
    assert_eq!((e2.epoch, e2.cluster.as_str()), (2, "west"));
    assert_eq!(e2.reason, EpochReason::Migration);
    assert!(e2.is_sealed());
    let e3 = t.current("orders").unwrap();
    assert_eq!((e3.epoch, e3.cluster.as_str()), (3, "east"));
    assert_eq!(e3.start_offsets, vec![10, 20]);
    assert_eq!(e3.reason, EpochReason::Failover);
    assert_eq!(e3.state, EpochState::Active);
    assert!(t.next_epoch_after("orders", 3).is_none());
    assert!(t.epoch("orders", 0).is_none());
    assert!(t.epoch("orders", 4).is_none());
    assert!(t.next_epoch_after("orders", u32::MAX).is_none());
}

#[test]
fn seal_and_open_is_compare_and_set() {
    let mut t = PlacementTable::new();
    apply(&mut t, |t| t.create("orders", 1, "east", T0));
    let first = t
        .seal_and_open(
            "orders",
            switch(1, &[3], "west", &[0], EpochReason::Migration),
            T0,
        )
        .unwrap();
    // A second plan made from the same state is fine until one is applied...
    let second = t
        .seal_and_open(
            "orders",
            switch(1, &[3], "north", &[0], EpochReason::Failover),
            T0,
        )
        .unwrap();
    assert_eq!(t.apply(&first), Ok(Applied::Changed));
    // ...then planning from the old epoch fails, and applying the stale plan
    // is a conflict that changes nothing.
    let err = t
        .seal_and_open(
            "orders",
            switch(1, &[3], "north", &[0], EpochReason::Failover),
            T0,
        )
        .unwrap_err();
    assert_eq!(
        err,
        PlacementError::EpochMoved {
            topic: "orders".into(),
            expected: 1,
            current: 2
        }
    );
    assert!(err.is_retryable());
    assert_eq!(t.apply(&second), Ok(Applied::Conflict));
    assert_eq!(t.home("orders"), Some("west"));
}

#[test]
fn seal_and_open_checks_offsets_and_reason() {
    let mut t = PlacementTable::new();
    apply(&mut t, |t| t.create("orders", 2, "east", T0));
    apply(&mut t, |t| {
        t.seal_and_open(
            "orders",
            switch(1, &[4, 4], "west", &[7, 7], EpochReason::Migration),
            T0,
        )
    });
    let err = t
        .seal_and_open(
            "orders",
            switch(2, &[1], "east", &[0, 0], EpochReason::Migration),
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            PlacementError::OffsetCount {
                what: "end_offsets",
                got: 1,
                partitions: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = t
        .seal_and_open(
            "orders",
            switch(2, &[9, 9], "east", &[0], EpochReason::Migration),
            T0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            PlacementError::OffsetCount {
                what: "start_offsets",
                ..
            }
        ),
        "{err}"
    );
    // Epoch 2 starts at 7 on west; it cannot end at 6.
    let err = t
        .seal_and_open(
            "orders",
            switch(2, &[7, 6], "east", &[0, 0], EpochReason::Migration),
            T0,
        )
        .unwrap_err();
    assert_eq!(
        err,
        PlacementError::EndBeforeStart {
            topic: "orders".into(),
            partition: 1,
            start: 7,
            end: 6
        }
    );
    assert_eq!(
        t.seal_and_open(
            "orders",
            switch(2, &[7, 7], "east", &[0, 0], EpochReason::Created),
            T0
        ),
        Err(PlacementError::CreatedIsNotASwitch("orders".into()))
    );
    assert_eq!(
        t.seal_and_open(
            "orders",
            switch(2, &[7, 7], "", &[0, 0], EpochReason::Migration),
            T0
        ),
        Err(PlacementError::EmptyClusterName("orders".into()))
    );
    assert_eq!(
        t.seal_and_open(
            "nope",
            switch(1, &[0], "east", &[0], EpochReason::Migration),
            T0
        ),
        Err(PlacementError::UnknownTopic("nope".into()))
    );
    // An empty epoch (end == start) is fine.
    apply(&mut t, |t| {
        t.seal_and_open(
            "orders",
            switch(2, &[7, 7], "east", &[0, 0], EpochReason::Migration),
            T0,
        )
    });
}

// ---------------------------------------------------------------- delete

#[test]
fn delete_and_recreate_bumps_the_generation() {
    let mut t = PlacementTable::new();
    let create1 = t.create("orders", 1, "east", T0).unwrap();
    t.apply(&create1).unwrap();
    let delete1 = t.delete("orders").unwrap();
    assert_eq!(
        delete1,
        PlacementChange::Delete {
            topic: "orders".into(),
            generation: 1
        }
    );
    assert_eq!(t.apply(&delete1), Ok(Applied::Changed));
    assert!(!t.contains("orders"));
    assert_eq!(
        t.delete("orders"),
        Err(PlacementError::UnknownTopic("orders".into()))
    );
    // A late copy of the old create does not resurrect the topic.
    assert_eq!(t.apply(&create1), Ok(Applied::Superseded));
    assert!(!t.contains("orders"));
    assert_eq!(t.apply(&delete1), Ok(Applied::Duplicate));

    let create2 = t.create("orders", 4, "west", T0 + 5).unwrap();
    t.apply(&create2).unwrap();
    assert_eq!(t.get("orders").unwrap().generation, 2);
    // Old changes of generation 1 are superseded by generation 2.
    assert_eq!(t.apply(&create1), Ok(Applied::Superseded));
    assert_eq!(t.apply(&delete1), Ok(Applied::Superseded));
    assert_eq!(t.home("orders"), Some("west"));
}

#[test]
fn delete_before_create_wins() {
    let mut t = PlacementTable::new();
    let create = t.create("orders", 1, "east", T0).unwrap();
    let delete = PlacementChange::Delete {
        topic: "orders".into(),
        generation: 1,
    };
    assert_eq!(t.apply(&delete), Ok(Applied::Changed));
    assert_eq!(t.apply(&create), Ok(Applied::Superseded));
    assert!(t.is_empty());
}

// ---------------------------------------------------------------- apply

#[test]
fn apply_is_idempotent_and_ignores_older_states() {
    let mut t = PlacementTable::new();
    let c1 = t.create("orders", 1, "east", T0).unwrap();
    t.apply(&c1).unwrap();
    let c2 = t
        .seal_and_open(
            "orders",
            switch(1, &[3], "west", &[0], EpochReason::Migration),
            T0,
        )
        .unwrap();
    t.apply(&c2).unwrap();
    let snapshot = t.clone();
    assert_eq!(t.apply(&c2), Ok(Applied::Duplicate));
    assert_eq!(t.apply(&c1), Ok(Applied::Superseded));
    assert_eq!(t, snapshot);

    // A gateway that missed c1 still converges from c2 alone.
    let mut late = PlacementTable::new();
    assert_eq!(late.apply(&c2), Ok(Applied::Changed));
    assert_eq!(late.apply(&c1), Ok(Applied::Superseded));
    assert_eq!(late, snapshot);
}

#[test]
fn apply_rejects_a_branch_that_lost() {
    // Two gateways both switched epoch 1; the second then switched again on
    // top of its own (losing) epoch 2.
    let mut base = PlacementTable::new();
    base.apply(&base.create("orders", 1, "east", T0).unwrap())
        .unwrap();
    let win = base
        .seal_and_open(
            "orders",
            switch(1, &[3], "west", &[0], EpochReason::Migration),
            T0,
        )
        .unwrap();
    let lose = base
        .seal_and_open(
            "orders",
            switch(1, &[3], "north", &[0], EpochReason::Failover),
            T0,
        )
        .unwrap();
    let mut branch = base.clone();
    branch.apply(&lose).unwrap();
    let lose_again = branch
        .seal_and_open(
            "orders",
            switch(2, &[1], "south", &[0], EpochReason::Migration),
            T0,
        )
        .unwrap();

    let mut t = base.clone();
    assert_eq!(t.apply(&win), Ok(Applied::Changed));
    assert_eq!(t.apply(&lose), Ok(Applied::Conflict));
    assert_eq!(t.apply(&lose_again), Ok(Applied::Conflict));
    assert_eq!(t.home("orders"), Some("west"));
}

#[test]
fn apply_rejects_invalid_changes() {
    let t = PlacementTable::new();
    let PlacementChange::Create { placement, .. } = t.create("orders", 2, "east", T0).unwrap()
    else {
        unreachable!()
    };
    let cases = [
        {
            let mut p = placement.clone();
            p.generation = 0;
            p
        },
        {
            let mut p = placement.clone();
            p.epochs[0].start_offsets.pop();
            p
        },
        {
            let mut p = placement.clone();
            p.epochs[0].epoch = 2;
            p
        },
        {
            let mut p = placement.clone();
            p.epochs[0].state = EpochState::Sealed;
            p
        },
        {
            let mut p = placement.clone();
            p.epochs[0].reason = EpochReason::Failover;
            p
        },
        {
            let mut p = placement.clone();
            p.epochs.clear();
            p
        },
        {
            let mut p = placement.clone();
            p.partitions = 0;
            p
        },
    ];
    for bad in cases {
        let mut t = PlacementTable::new();
        let change = PlacementChange::Create {
            topic: "orders".into(),
            placement: bad.clone(),
        };
        assert!(
            matches!(t.apply(&change), Err(PlacementError::InvalidChange { .. })),
            "{bad:?}"
        );
        assert!(t.is_empty());
    }
    // A seal whose numbering does not add up.
    let mut t = three_epochs();
    let PlacementChange::SealAndOpen { placement, .. } = t
        .seal_and_open(
            "orders",
            switch(3, &[10, 20], "west", &[0, 0], EpochReason::Migration),
            T0,
        )
        .unwrap()
    else {
        unreachable!()
    };
    let bad = PlacementChange::SealAndOpen {
        topic: "orders".into(),
        sealed_epoch: 1,
        placement,
    };
    assert!(matches!(
        t.apply(&bad),
        Err(PlacementError::InvalidChange { .. })
    ));
    // A sealed epoch ending before its start.
    let PlacementChange::SealAndOpen { mut placement, .. } = t
        .seal_and_open(
            "orders",
            switch(3, &[10, 20], "west", &[0, 0], EpochReason::Migration),
            T0,
        )
        .unwrap()
    else {
        unreachable!()
    };
    placement.epochs[2].end_offsets = Some(vec![9, 20]);
    let bad = PlacementChange::SealAndOpen {
        topic: "orders".into(),
        sealed_epoch: 3,
        placement,
    };
    assert!(matches!(
        t.apply(&bad),
        Err(PlacementError::InvalidChange { .. })
    ));
    assert_eq!(t, three_epochs());
}

#[test]
fn changes_serialize_as_tagged_json() {
    let t = PlacementTable::new();
    let change = t.create("orders", 1, "east", T0).unwrap();
    let json = serde_json::to_string(&change).unwrap();
    assert!(
        json.starts_with(r#"{"op":"create","topic":"orders","#),
        "{json}"
    );
    assert!(json.contains(r#""state":"active""#), "{json}");
    assert!(json.contains(r#""reason":"created""#), "{json}");
    let back: PlacementChange = serde_json::from_str(&json).unwrap();
    assert_eq!(back, change);
}

#[test]
fn to_changes_rebuilds_the_table() {
    let mut t = three_epochs();
    apply(&mut t, |t| t.create("gone", 1, "east", T0));
    apply(&mut t, |t| t.delete("gone"));
    apply(&mut t, |t| t.create("fresh", 1, "north", T0));
    let mut rebuilt = PlacementTable::new();
    for change in t.to_changes() {
        assert_eq!(rebuilt.apply(&change), Ok(Applied::Changed));
    }
    assert_eq!(rebuilt, t);
}

// ---------------------------------------------------------------- lookups

#[test]
fn lookups_by_cluster() {
    let mut t = three_epochs();
    apply(&mut t, |t| t.create("audit", 1, "west", T0));
    apply(&mut t, |t| t.create("billing", 1, "east", T0));
    assert_eq!(
        t.topics_on("east").collect::<Vec<_>>(),
        ["billing", "orders"]
    );
    assert_eq!(t.topics_on("west").collect::<Vec<_>>(), ["audit"]);
    assert_eq!(
        t.topics_reading_from("west").collect::<Vec<_>>(),
        ["audit", "orders"]
    );
    assert_eq!(
        t.homes().collect::<Vec<_>>(),
        [("audit", "west"), ("billing", "east"), ("orders", "east")]
    );
    assert_eq!(t.iter().count(), 3);
}

// ---------------------------------------------------------------- reading

fn read(t: &PlacementTable, epoch: u32, partition: u32, offset: u64) -> ReadFrom<'_> {
    t.resolve_read("orders", epoch, partition, offset).unwrap()
}

#[test]
fn resolve_read_stays_in_an_unfinished_epoch() {
    let t = three_epochs();
    assert_eq!(
        read(&t, 1, 0, 4),
        ReadFrom {
            cluster: "east",
            epoch: 1,
            offset: 4,
            end: Some(10)
        }
    );
    assert_eq!(
        read(&t, 3, 1, 25),
        ReadFrom {
            cluster: "east",
            epoch: 3,
            offset: 25,
            end: None
        }
    );
}

#[test]
fn resolve_read_moves_on_at_the_sealed_end() {
    let t = three_epochs();
    // Partition 0: epoch 1 ends at 10 -> epoch 2 on west from 0.
    assert_eq!(
        read(&t, 1, 0, 10),
        ReadFrom {
            cluster: "west",
            epoch: 2,
            offset: 0,
            end: Some(5)
        }
    );
    // Past the end (should not happen, but is not an error).
    assert_eq!(read(&t, 1, 0, 11).epoch, 2);
    // Partition 1: epoch 2 is empty there (ends at 0), so 1 -> 2 -> 3, which
    // starts at 20 on east.
    assert_eq!(
        read(&t, 1, 1, 20),
        ReadFrom {
            cluster: "east",
            epoch: 3,
            offset: 20,
            end: None
        }
    );
    assert_eq!(
        read(&t, 2, 0, 5),
        ReadFrom {
            cluster: "east",
            epoch: 3,
            offset: 10,
            end: None
        }
    );
}

#[test]
fn resolve_read_raises_offsets_below_an_epoch_start() {
    let t = three_epochs();
    // Epoch 3 on east starts at 10/20: lower offsets are epoch 1's records.
    assert_eq!(read(&t, 3, 0, 0).offset, 10);
    assert_eq!(read(&t, 3, 1, 3).offset, 20);
}

#[test]
fn resolve_read_errors() {
    let t = three_epochs();
    assert_eq!(
        t.resolve_read("orders", 9, 0, 0),
        Err(PlacementError::UnknownEpoch {
            topic: "orders".into(),
            epoch: 9
        })
    );
    assert_eq!(
        t.resolve_read("orders", 0, 0, 0),
        Err(PlacementError::UnknownEpoch {
            topic: "orders".into(),
            epoch: 0
        })
    );
    assert_eq!(
        t.resolve_read("orders", 1, 2, 0),
        Err(PlacementError::UnknownPartition {
            topic: "orders".into(),
            partition: 2,
            partitions: 2
        })
    );
    assert_eq!(
        t.resolve_read("nope", 1, 0, 0),
        Err(PlacementError::UnknownTopic("nope".into()))
    );
}

#[test]
fn a_reader_sees_every_record_once_in_order_across_epochs() {
    // Simulate one partition: each epoch's cluster holds records as offsets;
    // the reader follows resolve_read and must see epoch 1 [0,10), epoch 2
    // [0,5), epoch 3 [10, 13) in that order.
    let t = three_epochs();
    let mut seen = Vec::new();
    let (mut epoch, mut offset) = (1, 0);
    let log_end = |cluster: &str, epoch: u32| match (cluster, epoch) {
        ("east", 3) => 13,
        ("east", _) => 10,
        _ => 5,
    };
    for _ in 0..100 {
        let at = read(&t, epoch, 0, offset);
        let stop = at.end.unwrap_or(log_end(at.cluster, at.epoch));
        if at.offset >= stop {
            break; // caught up with the active epoch
        }
        seen.push((at.epoch, at.offset));
        epoch = at.epoch;
        offset = at.offset + 1;
    }
    let expected: Vec<(u32, u64)> = (0..10)
        .map(|o| (1, o))
        .chain((0..5).map(|o| (2, o)))
        .chain((10..13).map(|o| (3, o)))
        .collect();
    assert_eq!(seen, expected);
}

// ---------------------------------------------------------------- property

#[derive(Debug, Clone)]
enum Op {
    Create {
        topic: u8,
        partitions: u32,
        cluster: u8,
    },
    Switch {
        topic: u8,
        cluster: u8,
        failover: bool,
        stale: bool,
    },
    Delete {
        topic: u8,
    },
}

const TOPICS: [&str; 3] = ["a", "b", "c"];
const CLUSTERS: [&str; 3] = ["east", "west", "north"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u8, 1..4u32, 0..3u8).prop_map(|(topic, partitions, cluster)| Op::Create {
            topic,
            partitions,
            cluster
        }),
        (0..3u8, 0..3u8, any::<bool>(), any::<bool>()).prop_map(
            |(topic, cluster, failover, stale)| Op::Switch {
                topic,
                cluster,
                failover,
                stale
            }
        ),
        (0..3u8).prop_map(|topic| Op::Delete { topic }),
    ]
}

/// Runs the ops as a gateway would (plan, log, apply) and returns the log,
/// including stale plans that lose when applied.
fn run(ops: &[Op]) -> (PlacementTable, Vec<PlacementChange>) {
    let mut table = PlacementTable::new();
    let mut log = Vec::new();
    let mut stale_plans: Vec<PlacementChange> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let now = T0 + i as i64;
        let change = match *op {
            Op::Create {
                topic,
                partitions,
                cluster,
            } => table.create(
                TOPICS[topic as usize],
                partitions,
                CLUSTERS[cluster as usize],
                now,
            ),
            Op::Switch {
                topic,
                cluster,
                failover,
                stale,
            } => {
                let name = TOPICS[topic as usize];
                match table.get(name) {
                    None => continue,
                    Some(p) => {
                        let n = p.partitions as usize;
                        let cur = p.current().unwrap();
                        let end: Vec<u64> =
                            cur.start_offsets.iter().map(|s| s + i as u64).collect();
                        let sw = EpochSwitch {
                            expected_epoch: cur.epoch,
                            end_offsets: end,
                            cluster: CLUSTERS[cluster as usize].to_owned(),
                            start_offsets: vec![i as u64; n],
                            reason: if failover {
                                EpochReason::Failover
                            } else {
                                EpochReason::Migration
                            },
                        };
                        let plan = table.seal_and_open(name, sw, now);
                        if stale {
                            // Keep it to log later, after others moved on.
                            if let Ok(c) = plan {
                                stale_plans.push(c);
                            }
                            continue;
                        }
                        plan
                    }
                }
            }
            Op::Delete { topic } => table.delete(TOPICS[topic as usize]),
        };
        let Ok(change) = change else { continue };
        log.push(change.clone());
        assert_eq!(table.apply(&change), Ok(Applied::Changed));
        // Stale plans reach the log too, as a racing gateway's would.
        if i % 3 == 0 {
            if let Some(c) = stale_plans.pop() {
                table.apply(&c).unwrap();
                log.push(c);
            }
        }
    }
    (table, log)
}

fn replay(log: &[PlacementChange]) -> PlacementTable {
    let mut t = PlacementTable::new();
    for c in log {
        t.apply(c).unwrap();
    }
    t
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn replay_twice_or_with_duplicates_gives_the_same_table(
        ops in prop::collection::vec(op(), 0..40),
        dups in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..20),
    ) {
        let (live, log) = run(&ops);

        // Replaying the log gives the live table.
        let once = replay(&log);
        prop_assert_eq!(&once, &live);

        // Replaying it again on top changes nothing.
        let mut twice = once.clone();
        for c in &log {
            let outcome = twice.apply(c).unwrap();
            prop_assert_ne!(outcome, Applied::Changed, "{:?}", c);
        }
        prop_assert_eq!(&twice, &live);

        // Duplicates delivered late, anywhere after the original.
        if !log.is_empty() {
            let mut with_dups = log.clone();
            for (which, at) in &dups {
                let i = which.index(log.len());
                // Insert a copy of log[i] somewhere after its first position.
                let first = with_dups.iter().position(|c| *c == log[i]).unwrap();
                let pos = first + 1 + at.index(with_dups.len() - first);
                with_dups.insert(pos, log[i].clone());
            }
            prop_assert_eq!(&replay(&with_dups), &live);
        }

        // The snapshot form rebuilds it too.
        prop_assert_eq!(&replay(&live.to_changes()), &live);
        // And so does a log compacted to the last winning change per topic
        // (a compacted log must not keep a losing change: see the docs).
        let mut last: std::collections::BTreeMap<&str, &PlacementChange> = Default::default();
        let mut t = PlacementTable::new();
        for c in &log {
            if t.apply(c).unwrap() == Applied::Changed {
                last.insert(c.topic(), c);
            }
        }
        let compacted: Vec<PlacementChange> = last.into_values().cloned().collect();
        let from_compacted = replay(&compacted);
        for (topic, p) in live.iter() {
            prop_assert_eq!(from_compacted.get(topic), Some(p));
        }
        prop_assert_eq!(from_compacted.len(), live.len());
    }
}

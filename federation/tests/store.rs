//! The file store: reload, torn tails, crash safety, corruption,
//! compaction.

use std::fs;
use std::io::Write as _;
use std::sync::Arc;

use sluice_federation::placement::{EpochReason, EpochSwitch, PlacementChange, PlacementTable};
use sluice_federation::store::{FileStore, MemoryStore, PlacementStore, StoreError};

const T0: i64 = 1_700_000_000_000;

/// Plans, appends, applies: the order a gateway follows.
fn commit(
    store: &dyn PlacementStore,
    table: &mut PlacementTable,
    plan: impl FnOnce(&PlacementTable) -> PlacementChange,
) -> PlacementChange {
    let change = plan(table);
    store.append(&change).unwrap();
    table.apply(&change).unwrap();
    change
}

fn migrate(table: &PlacementTable, topic: &str, to: &str) -> PlacementChange {
    let p = table.get(topic).unwrap();
    let cur = p.current().unwrap();
    table
        .seal_and_open(
            topic,
            EpochSwitch {
                expected_epoch: cur.epoch,
                end_offsets: cur.start_offsets.iter().map(|s| s + 10).collect(),
                cluster: to.to_owned(),
                start_offsets: vec![0; p.partitions as usize],
                reason: EpochReason::Migration,
            },
            T0 + 1,
        )
        .unwrap()
}

/// Some history: two topics, a migration, a delete.
fn history(store: &dyn PlacementStore) -> PlacementTable {
    let mut t = PlacementTable::new();
    commit(store, &mut t, |t| {
        t.create("orders", 3, "east", T0).unwrap()
    });
    commit(store, &mut t, |t| t.create("audit", 1, "west", T0).unwrap());
    commit(store, &mut t, |t| migrate(t, "orders", "north"));
    commit(store, &mut t, |t| t.create("tmp", 1, "west", T0).unwrap());
    commit(store, &mut t, |t| t.delete("tmp").unwrap());
    t
}

#[test]
fn reload_after_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert!(store.load().unwrap().is_empty());
    let expected = history(&store);
    assert_eq!(store.load().unwrap(), expected);
    assert_eq!(
        store.log_path(),
        dir.path().join("placement").join("changes.jsonl")
    );
    let text = fs::read_to_string(store.log_path()).unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(text.starts_with(r#"{"crc32c":"#), "{text}");
}

#[test]
fn restart_preserves_placement() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let store = FileStore::open(dir.path()).unwrap();
        history(&store)
    };
    let store = FileStore::open(dir.path()).unwrap();
    let mut table = store.load().unwrap();
    assert_eq!(table, expected);
    assert_eq!(table.home("orders"), Some("north"));
    // And it keeps going.
    commit(&store, &mut table, |t| migrate(t, "audit", "east"));
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), table);
}

#[test]
fn torn_last_line_is_dropped_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut table = history(&store);
    let good_len = fs::metadata(store.log_path()).unwrap().len();
    drop(store);

    // A crash halfway through writing a line.
    let path = dir.path().join("placement/changes.jsonl");
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"crc32c":12345,"change":{"op":"cre"#)
        .unwrap();
    drop(f);

    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), table);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    // The next append starts on a clean line.
    commit(&store, &mut table, |t| {
        t.create("after", 2, "east", T0).unwrap()
    });
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), table);
    assert!(table.contains("after"));
}

#[test]
fn a_crash_at_every_byte_of_the_last_line_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut table = history(&store);
    let before = table.clone();
    let before_len = fs::metadata(store.log_path()).unwrap().len() as usize;
    commit(&store, &mut table, |t| migrate(t, "orders", "east"));
    drop(store);
    let full = fs::read(dir.path().join("placement/changes.jsonl")).unwrap();
    assert!(full.len() > before_len + 50);

    for cut in before_len..=full.len() {
        let crash = tempfile::tempdir().unwrap();
        fs::create_dir(crash.path().join("placement")).unwrap();
        let path = crash.path().join("placement/changes.jsonl");
        fs::write(&path, &full[..cut]).unwrap();
        let store = FileStore::open(crash.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let loaded = store.load().unwrap();
        let expected = if cut == full.len() { &table } else { &before };
        assert_eq!(&loaded, expected, "cut at {cut} of {}", full.len());
    }
}

#[test]
fn garbage_after_the_last_line_is_dropped() {
    // Some file systems extend the file before its data lands: zeros.
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let table = history(&store);
    drop(store);
    let path = dir.path().join("placement/changes.jsonl");
    for tail in [&[0u8; 64][..], b"\n", b"not json\n", &[0xff, 0xfe, b'\n']] {
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(tail);
        fs::write(&path, &bytes).unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), table, "tail {tail:?}");
    }
}

#[test]
fn corruption_before_the_last_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    history(&store);
    drop(store);
    let path = dir.path().join("placement/changes.jsonl");
    let good = fs::read(&path).unwrap();
    let second_line = good.iter().position(|&b| b == b'\n').unwrap() + 1;

    // Flip one byte inside the second line's change (its cluster name).
    let text = String::from_utf8(good.clone()).unwrap();
    let at = second_line + text[second_line..].find("west").unwrap();
    let mut bad = good.clone();
    bad[at] = b'W';
    fs::write(&path, &bad).unwrap();
    match FileStore::open(dir.path()) {
        Err(StoreError::Corrupt { line, why, .. }) => {
            assert_eq!(line, 2);
            assert!(why.contains("checksum"), "{why}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }

    // A missing line terminator in the middle is corruption too.
    let mut joined = good.clone();
    joined[second_line - 1] = b' ';
    fs::write(&path, &joined).unwrap();
    assert!(matches!(
        FileStore::open(dir.path()),
        Err(StoreError::Corrupt { line: 1, .. })
    ));

    // The error names the file and line, and is not worth retrying.
    let err = FileStore::open(dir.path()).unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("changes.jsonl line 1"), "{err}");
}

#[test]
fn a_valid_line_that_breaks_the_rules_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let t = PlacementTable::new();
    let PlacementChange::Create { mut placement, .. } = t.create("orders", 1, "east", T0).unwrap()
    else {
        unreachable!()
    };
    placement.epochs[0].start_offsets.clear();
    store
        .append(&PlacementChange::Create {
            topic: "orders".into(),
            placement,
        })
        .unwrap();
    store
        .append(&t.create("other", 1, "east", T0).unwrap())
        .unwrap();
    assert!(matches!(
        store.load(),
        Err(StoreError::Corrupt { line: 1, .. })
    ));
}

#[test]
fn compaction_keeps_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open_with_compaction(dir.path(), 2_000).unwrap();
    let mut table = PlacementTable::new();
    for i in 0..30 {
        let topic = format!("topic-{i}");
        commit(&store, &mut table, |t| {
            t.create(&topic, 2, "east", T0).unwrap()
        });
        commit(&store, &mut table, |t| migrate(t, &topic, "west"));
        if i % 3 == 0 {
            commit(&store, &mut table, |t| t.delete(&topic).unwrap());
        }
    }
    assert!(store.snapshot_path().exists());
    let log_len = fs::metadata(store.log_path()).unwrap().len();
    assert!(log_len <= 2_000, "log is {log_len} bytes");
    assert_eq!(store.load().unwrap(), table);
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), table);
    // Deleted names stay deleted: their next create is generation 2.
    let PlacementChange::Create { placement, .. } = table.create("topic-0", 1, "east", T0).unwrap()
    else {
        unreachable!()
    };
    assert_eq!(placement.generation, 2);
}

#[test]
fn a_crash_between_snapshot_and_log_reset_loads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open_with_compaction(dir.path(), u64::MAX).unwrap();
    let table = history(&store);
    let old_log = fs::read(store.log_path()).unwrap();
    store.compact().unwrap();
    assert_eq!(fs::metadata(store.log_path()).unwrap().len(), 0);
    drop(store);
    // As if the log reset never happened: snapshot plus the whole old log.
    fs::write(dir.path().join("placement/changes.jsonl"), &old_log).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), table);
}

#[test]
fn a_damaged_snapshot_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    history(&store);
    store.compact().unwrap();
    let snap = store.snapshot_path().to_owned();
    let mut bytes = fs::read(&snap).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    fs::write(&snap, &bytes).unwrap();
    assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
}

#[test]
fn stores_are_object_safe_and_shareable() {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<Arc<dyn PlacementStore>> = vec![
        Arc::new(FileStore::open(dir.path()).unwrap()),
        Arc::new(MemoryStore::new()),
    ];
    for store in stores {
        let expected = history(store.as_ref());
        let worker = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.load().unwrap())
        };
        assert_eq!(worker.join().unwrap(), expected);
    }
}

#[test]
fn memory_store_keeps_changes_in_order() {
    let store = MemoryStore::new();
    let table = history(&store);
    assert_eq!(store.changes().len(), 5);
    assert_eq!(store.load().unwrap(), table);
}

#[test]
fn io_errors_name_the_path_and_are_retryable() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the placement directory should be.
    fs::write(dir.path().join("placement"), b"").unwrap();
    let err = FileStore::open(dir.path()).unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("placement"), "{err}");
}

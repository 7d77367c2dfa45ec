//! Cursor encoding: round trips, corruption, truncation, foreign topics,
//! and arbitrary input that must never panic.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;
use sluice_federation::cursor::{
    topic_hash, Cursor, CursorError, Malformed, Position, CURSOR_VERSION, MAX_CURSOR_LEN,
};

fn sample() -> Cursor {
    Cursor::new([
        Position {
            partition: 0,
            epoch: 3,
            next_offset: 1_234_567,
        },
        Position {
            partition: 1,
            epoch: 4,
            next_offset: 0,
        },
        Position {
            partition: 7,
            epoch: 3,
            next_offset: u64::MAX,
        },
    ])
}

fn malformed(s: &str, topic: &str) -> Malformed {
    match Cursor::decode(s, topic) {
        Err(CursorError::Malformed(why)) => why,
        other => panic!("{s:?}: expected malformed, got {other:?}"),
    }
}

/// Raw bytes with a correct checksum appended.
fn sealed(mut body: Vec<u8>) -> String {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    URL_SAFE_NO_PAD.encode(body)
}

fn header(topic: &str) -> Vec<u8> {
    let mut b = vec![CURSOR_VERSION];
    b.extend_from_slice(&topic_hash(topic).to_le_bytes());
    b
}

#[test]
fn round_trip() {
    let c = sample();
    let s = c.encode("orders");
    assert!(s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(Cursor::decode(&s, "orders"), Ok(c));
}

#[test]
fn empty_cursor_round_trips() {
    let c = Cursor::default();
    assert!(c.is_empty());
    assert_eq!(c.epoch(), None);
    assert_eq!(Cursor::decode(&c.encode("t"), "t"), Ok(c));
}

#[test]
fn cursor_keeps_one_position_per_partition() {
    let mut c = Cursor::at_epoch(2, [(5, 10), (1, 3), (5, 11)]);
    assert_eq!(
        c.positions(),
        &[
            Position {
                partition: 1,
                epoch: 2,
                next_offset: 3
            },
            Position {
                partition: 5,
                epoch: 2,
                next_offset: 11
            }
        ]
    );
    c.set(Position {
        partition: 1,
        epoch: 3,
        next_offset: 0,
    });
    assert_eq!(c.position(1).map(|p| p.epoch), Some(3));
    assert_eq!(c.position(4), None);
    assert_eq!(c.epoch(), Some(2));
}

#[test]
fn small_cursors_are_short() {
    // One partition in epoch 1 at a modest offset: a few dozen characters.
    let s = Cursor::at_epoch(1, [(0, 1_000)]).encode("orders");
    assert!(s.len() <= 24, "{s} ({} chars)", s.len());
}

#[test]
fn foreign_topic_is_rejected() {
    let s = sample().encode("orders");
    assert_eq!(
        Cursor::decode(&s, "payments"),
        Err(CursorError::Foreign {
            topic: "payments".into()
        })
    );
    let err = Cursor::decode(&s, "payments").unwrap_err().to_string();
    assert!(err.contains("another topic"), "{err}");
}

#[test]
fn every_single_byte_corruption_is_rejected() {
    let s = sample().encode("orders");
    let bytes = URL_SAFE_NO_PAD.decode(&s).unwrap();
    for i in 0..bytes.len() {
        for v in 0..=255u8 {
            if v == bytes[i] {
                continue;
            }
            let mut damaged = bytes.clone();
            damaged[i] = v;
            let d = URL_SAFE_NO_PAD.encode(&damaged);
            assert!(
                matches!(
                    Cursor::decode(&d, "orders"),
                    Err(CursorError::Malformed(Malformed::Checksum))
                ),
                "byte {i} set to {v:#04x} was accepted"
            );
        }
    }
}

#[test]
fn every_single_character_change_is_rejected() {
    let s = sample().encode("orders");
    let alphabet: Vec<char> = ('A'..='Z')
        .chain('a'..='z')
        .chain('0'..='9')
        .chain("-_=+/. ".chars())
        .collect();
    for i in 0..s.len() {
        for &c in &alphabet {
            if s.as_bytes()[i] == c as u8 {
                continue;
            }
            let mut d = s.clone();
            d.replace_range(i..=i, &c.to_string());
            assert!(
                matches!(Cursor::decode(&d, "orders"), Err(CursorError::Malformed(_))),
                "char {i} set to {c:?} was accepted: {d}"
            );
        }
    }
}

#[test]
fn every_truncation_is_rejected() {
    let s = sample().encode("orders");
    for n in 0..s.len() {
        assert!(
            matches!(
                Cursor::decode(&s[..n], "orders"),
                Err(CursorError::Malformed(_))
            ),
            "truncated to {n} chars was accepted"
        );
    }
    let bytes = URL_SAFE_NO_PAD.decode(&s).unwrap();
    for n in 0..bytes.len() {
        let d = URL_SAFE_NO_PAD.encode(&bytes[..n]);
        assert!(
            matches!(Cursor::decode(&d, "orders"), Err(CursorError::Malformed(_))),
            "truncated to {n} bytes was accepted"
        );
    }
}

#[test]
fn errors_say_what_was_wrong() {
    assert!(matches!(malformed("", "t"), Malformed::Truncated));
    assert!(matches!(
        malformed("not a cursor!", "t"),
        Malformed::Base64(_)
    ));
    assert!(matches!(malformed("AAAA=", "t"), Malformed::Base64(_)));
    assert_eq!(malformed("AAAAAAAAAAAAAAAA", "t"), Malformed::Checksum);
    assert_eq!(
        malformed(&"A".repeat(MAX_CURSOR_LEN + 1), "t"),
        Malformed::TooLong
    );

    let mut future = header("t");
    future[0] = 2;
    future.extend_from_slice(&[0, 0]);
    assert_eq!(
        malformed(&sealed(future), "t"),
        Malformed::UnknownVersion(2)
    );

    let mut trailing = header("t");
    trailing.extend_from_slice(&[0, 0, 9]);
    assert_eq!(
        malformed(&sealed(trailing), "t"),
        Malformed::TrailingBytes(1)
    );

    // Count says 5 positions, none follow.
    let mut lying = header("t");
    lying.extend_from_slice(&[0, 5]);
    assert_eq!(malformed(&sealed(lying), "t"), Malformed::Truncated);

    // Partitions 3 then 3.
    let mut repeated = header("t");
    repeated.extend_from_slice(&[0, 2, 3, 0, 1, 3, 0, 2]);
    assert_eq!(malformed(&sealed(repeated), "t"), Malformed::PartitionOrder);

    // Partition number above u32.
    let mut big = header("t");
    big.extend_from_slice(&[0, 1, 0xff, 0xff, 0xff, 0xff, 0x1f, 0, 0]);
    assert_eq!(malformed(&sealed(big), "t"), Malformed::NumberOutOfRange);

    // Overlong varint.
    let mut overlong = header("t");
    overlong.extend_from_slice(&[0x80, 0x00, 0]);
    assert_eq!(malformed(&sealed(overlong), "t"), Malformed::Varint);

    // Base epoch 5 but the only position is in epoch 7: base is not the lowest.
    let mut base = header("t");
    base.extend_from_slice(&[5, 1, 0, 2, 0]);
    assert_eq!(malformed(&sealed(base), "t"), Malformed::EpochOutOfRange);

    // Epoch overflows u32.
    let mut overflow = header("t");
    overflow.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0, 1, 0]);
    assert_eq!(
        malformed(&sealed(overflow), "t"),
        Malformed::EpochOutOfRange
    );

    let msg = CursorError::from(Malformed::Checksum).to_string();
    assert_eq!(msg, "malformed cursor: bad checksum");
}

// ---------------------------------------------------------------- property

fn position() -> impl Strategy<Value = Position> {
    (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(partition, epoch, next_offset)| {
        Position {
            partition,
            epoch,
            next_offset,
        }
    })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn encode_decode_round_trips(
        positions in prop::collection::vec(position(), 0..40),
        topic in "[a-zA-Z0-9._-]{1,40}",
    ) {
        let c = Cursor::new(positions);
        let s = c.encode(&topic);
        prop_assert_eq!(Cursor::decode(&s, &topic), Ok(c.clone()));
        // One encoding per cursor.
        prop_assert_eq!(Cursor::decode(&s, &topic).unwrap().encode(&topic), s);
    }

    #[test]
    fn near_epochs_round_trip(
        base in 0u32..5,
        offsets in prop::collection::vec((0u32..64, 0u32..3, 0u64..1_000_000), 0..64),
    ) {
        let c = Cursor::new(offsets.into_iter().map(|(partition, d, next_offset)| Position {
            partition,
            epoch: base + d,
            next_offset,
        }));
        prop_assert_eq!(Cursor::decode(&c.encode("t"), "t"), Ok(c));
    }

    #[test]
    fn random_strings_never_panic(s in ".{0,200}", topic in ".{0,20}") {
        let _ = Cursor::decode(&s, &topic);
    }

    #[test]
    fn random_base64_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Cursor::decode(&URL_SAFE_NO_PAD.encode(&bytes), "t");
    }

    /// Past the checksum: random bodies that carry a valid checksum reach
    /// the parser itself.
    #[test]
    fn random_checksummed_bodies_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..120),
        small in prop::collection::vec(0u8..4, 0..60),
    ) {
        let mut body = header("t");
        body.extend_from_slice(&tail);
        let _ = Cursor::decode(&sealed(body), "t");
        // Small numbers form plausible varint streams more often.
        let mut body = header("t");
        body.extend_from_slice(&small);
        if let Ok(c) = Cursor::decode(&sealed(body.clone()), "t") {
            prop_assert_eq!(c.encode("t"), sealed(body));
        }
    }
}

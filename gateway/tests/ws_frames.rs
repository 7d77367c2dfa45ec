//! The property the `ws_frame` fuzz target checks (fuzz/fuzz_targets/),
//! run on every test pass: whatever bytes arrive in a WebSocket frame, in
//! either framing, reading it gives a frame or a 4xx error, never a panic.
//! The seeds are the fuzzer's starting corpus, and must stay valid frames.

use std::path::Path;

use proptest::prelude::*;
use sluice::ws::protocol::{ClientFrame, Framing};
use sluice_broker::Acks;

/// What the fuzz target asserts for one input.
fn check(data: &[u8]) {
    for framing in [Framing::Json, Framing::Cbor] {
        match ClientFrame::decode(framing, data) {
            Ok(ClientFrame::Produce(mut produce)) => {
                let _ = produce.acks(Acks::All);
                if let Err(error) = produce.take_records() {
                    assert!(error.status.is_client_error(), "{error}");
                }
            }
            Ok(_) => {}
            Err(error) => assert!(error.error.status.is_client_error(), "{}", error.error),
        }
    }
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/ws_frame");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn seeds_are_valid_frames_of_their_framing() {
    let seeds = seeds();
    assert!(seeds.len() >= 12, "{} seeds", seeds.len());
    for (name, bytes) in &seeds {
        let framing = if name.ends_with(".cbor") {
            Framing::Cbor
        } else {
            Framing::Json
        };
        match ClientFrame::decode(framing, bytes) {
            Ok(ClientFrame::Produce(mut produce)) => {
                let records = produce.take_records().expect(name);
                assert_eq!(records.len(), 2, "{name}");
            }
            Ok(_) => {}
            Err(e) => panic!("{name}: {}", e.error),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&data);
    }

    #[test]
    fn mutated_seeds_never_panic(
        seed in 0usize..12,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].1.clone();
        for (at, byte) in edits {
            let len = data.len();
            data[at % len] = byte;
        }
        let keep = cut % (data.len() + 1);
        check(&data);
        check(&data[..keep]);
    }
}

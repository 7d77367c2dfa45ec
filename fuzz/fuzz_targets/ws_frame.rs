//! Inbound WebSocket frames, in both framings: whatever the bytes, reading
//! a frame and taking a produce's records returns a value or an error with
//! a 4xx code; it never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::ws::protocol::{ClientFrame, Framing};
use sluice_broker::Acks;

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::Json, Framing::Cbor] {
        match ClientFrame::decode(framing, data) {
            Ok(ClientFrame::Produce(mut produce)) => {
                let _ = produce.acks(Acks::All);
                if let Err(error) = produce.take_records() {
                    assert!((400..500).contains(&error.status.as_u16()), "{error}");
                }
            }
            Ok(_) => {}
            Err(error) => assert!((400..500).contains(&error.error.status.as_u16())),
        }
    }
});

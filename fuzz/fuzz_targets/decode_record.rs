//! Any bytes as a ring-buffer record: parse, and decode whatever parses, never panic.
#![no_main]

use keepalive_events::decode::{Decoder, parse_record, record_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(250, 0, vec![(12, "TCP_ABORT_ON_LINGER".into())]);
    // Several records in a row exercise the decoder's per-socket memory too.
    let mut rest = data;
    while !rest.is_empty() {
        let (chunk, next) = rest.split_at(record_len(rest).min(rest.len()));
        rest = next;
        if let Ok(record) = parse_record(chunk) {
            for event in decoder.decode(&record) {
                let _ = keepalive_events::diagnose::Engine::new(16).observe(&event);
            }
        }
    }
});

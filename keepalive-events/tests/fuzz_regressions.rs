//! Every input a fuzzer ever crashed on, and hand-made inputs at the edges of what each
//! parser accepts (truncated lines, invalid UTF-8, numbers out of range, timestamps at the
//! extremes, the fuzzer's seed recording), replayed through the same steps as its fuzz
//! target (fuzz/fuzz_targets/*): they must never crash.

use std::{fs, path::Path};

use keepalive_events::{
    decode::{Decoder, parse_record, record_len},
    diagnose::Engine,
    replay::read_events,
};

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions")
        .join(target);
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| fs::read(e.path()).unwrap())
        .collect()
}

#[test]
fn decode_record_crashes_stay_fixed() {
    let cases = inputs("decode_record");
    assert!(!cases.is_empty());
    for data in cases {
        let mut decoder = Decoder::new(250, 0, vec![]);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let (chunk, next) = rest.split_at(record_len(rest).min(rest.len()));
            rest = next;
            if let Ok(record) = parse_record(chunk) {
                for event in decoder.decode(&record) {
                    let _ = Engine::new(16).observe(&event);
                }
            }
        }
    }
}

#[test]
fn replay_lines_crashes_stay_fixed() {
    let cases = inputs("replay_lines");
    assert!(!cases.is_empty());
    let mut read = 0;
    for data in cases {
        if let Ok(events) = read_events(&data[..], "fuzz") {
            read += events.len();
            let mut engine = Engine::new(64);
            for e in &events {
                let _ = engine.observe(e);
            }
            let _ = engine.finish();
        }
    }
    // The seed recording is valid: the inputs reach the engine, not only the parser's errors.
    assert!(read > 0);
}

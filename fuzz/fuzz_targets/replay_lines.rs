//! Any bytes as a recording for `keepalive why --from`: an error or events, never a panic;
//! whatever parses goes through the diagnosis engine too.
#![no_main]

use keepalive_events::{diagnose::Engine, replay::read_events};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = read_events(data, "fuzz") {
        let mut engine = Engine::new(64);
        for e in &events {
            let _ = engine.observe(e);
        }
        let _ = engine.finish();
    }
});

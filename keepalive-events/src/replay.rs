//! Reading a recording made by `keepalive trace --format json --output FILE`.

use std::io::BufRead;

use anyhow::{Result, bail};

use crate::event::Event;

/// The events of a recording, in order. Verdict and summary lines are skipped (they are
/// recomputed); anything else that is not an event is an error naming its line.
pub fn read_events(input: impl BufRead, name: &str) -> Result<Vec<Event>> {
    let mut events = vec![];
    for (i, line) in input.split(b'\n').enumerate() {
        let n = i + 1;
        let line = line?;
        let Ok(text) = std::str::from_utf8(&line) else {
            bail!(
                "{name}:{n}: not text (is this a JSON recording from `keepalive trace --format json`?)"
            );
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{name}:{n}: not a JSON line: {e}"))?;
        match value.get("type").and_then(|t| t.as_str()) {
            Some("event") => events.push(
                serde_json::from_value(value)
                    .map_err(|e| anyhow::anyhow!("{name}:{n}: malformed event: {e}"))?,
            ),
            Some("verdict") | Some("summary") => {}
            Some(other) => bail!("{name}:{n}: unknown line type `{other}`"),
            None => bail!("{name}:{n}: no \"type\" field"),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"type":"event","ts":"2026-11-28T00:45:02.673Z","saddr":"198.18.0.1","sport":49774,"daddr":"198.18.0.2","dport":35633,"netns":4026532,"cookie":2,"state":"ESTABLISHED","kind":"keepalive_probe","probes":1}"#;

    #[test]
    fn reads_events_and_skips_verdicts_and_summaries() {
        let text = format!("{EVENT}\n{{\"type\":\"summary\",\"events\":1}}\n\n{EVENT}\n");
        let events = read_events(text.as_bytes(), "rec").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].socket.sport, 49774);
    }

    #[test]
    fn names_the_bad_line() {
        for (text, says) in [
            (format!("{EVENT}\nnot json\n"), "rec:2: not a JSON line"),
            (
                format!("{EVENT}\n{{\"type\":\"event\"}}\n"),
                "rec:2: malformed event",
            ),
            ("{\"x\":1}\n".to_string(), "rec:1: no \"type\""),
            (EVENT[..60].to_string(), "rec:1: not a JSON line"),
        ] {
            let err = read_events(text.as_bytes(), "rec").unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let err = read_events(&[0xff, 0xfe, 0x00][..], "rec")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rec:1: not text"), "{err}");
    }
}

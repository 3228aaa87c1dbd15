//! Writers for what keepalive prints: aligned columns for people, JSON lines for programs.

use std::{collections::BTreeMap, io::Write};

use serde::{Deserialize, Serialize};

use crate::event::{Detail, Event, TimeoutReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, one line per event.
    Human,
    /// One JSON object per line, `"type"` telling events, verdicts and the summary apart.
    Json,
}

/// End-of-run figures: nothing lost silently.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Events received from the kernel (before `--kind` filtering).
    pub events: u64,
    /// Events the kernel could not queue because the ring buffer was full.
    pub lost: u64,
    /// Events printed, by kind.
    pub by_kind: BTreeMap<String, u64>,
}

/// A line of JSON output.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Event(&'a Event),
    Summary(&'a Summary),
}

pub struct Writer {
    format: Format,
    out: Box<dyn Write>,
    header_done: bool,
}

impl Writer {
    pub fn new(format: Format, out: Box<dyn Write>) -> Self {
        Writer {
            format,
            out,
            header_done: false,
        }
    }

    pub fn event(&mut self, e: &Event) -> std::io::Result<()> {
        match self.format {
            Format::Json => self.json(&Line::Event(e)),
            Format::Human => {
                if !self.header_done {
                    self.header_done = true;
                    writeln!(
                        self.out,
                        "{:<12} {:<18} {:<47} {:<11} DETAIL",
                        "TIME", "KIND", "LOCAL -> REMOTE", "STATE"
                    )?;
                }
                let time = e.ts.time();
                let owner = match (&e.pid, &e.comm) {
                    (Some(pid), Some(comm)) => format!("  [{comm} {pid}]"),
                    _ => String::new(),
                };
                writeln!(
                    self.out,
                    "{:02}:{:02}:{:02}.{:03} {:<18} {:<47} {:<11} {}{}",
                    time.hour(),
                    time.minute(),
                    time.second(),
                    time.millisecond(),
                    e.detail.kind(),
                    e.socket.endpoints(),
                    e.state.to_string(),
                    describe(e),
                    owner
                )?;
                self.out.flush()
            }
        }
    }

    pub fn summary(&mut self, s: &Summary) -> std::io::Result<()> {
        match self.format {
            Format::Json => self.json(&Line::Summary(s)),
            Format::Human => {
                writeln!(self.out)?;
                writeln!(self.out, "{} events, {} lost", s.events, s.lost)?;
                for (kind, n) in &s.by_kind {
                    writeln!(self.out, "  {kind:<20} {n}")?;
                }
                if s.lost > 0 {
                    writeln!(
                        self.out,
                        "warning: {} events were lost because the ring buffer was full; \
                         use --ring-buffer-size or narrow with --port/--netns",
                        s.lost
                    )?;
                }
                self.out.flush()
            }
        }
    }

    fn json(&mut self, line: &Line<'_>) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// The DETAIL column: what happened, in words, with the numbers that matter.
pub fn describe(e: &Event) -> String {
    let plural = |n: u32| if n == 1 { "" } else { "s" };
    match &e.detail {
        Detail::KeepaliveProbe { probes } => match &e.keepalive {
            Some(k) if k.user_timeout_ms == 0 => format!(
                "probe {probes} of {} unanswered (idle {}s, interval {}s)",
                k.count, k.idle_s, k.interval_s
            ),
            Some(k) => format!(
                "probe {probes} unanswered (idle {}s, interval {}s, user timeout {} ms)",
                k.idle_s, k.interval_s, k.user_timeout_ms
            ),
            None => format!("probe {probes} unanswered"),
        },
        Detail::KeepaliveAnswered { probes } => {
            format!("peer answered after {probes} probe{}", plural(*probes))
        }
        Detail::KeepaliveTimeout { reason, probes } => match (reason, &e.keepalive) {
            (TimeoutReason::UserTimeout, Some(k)) => format!(
                "TCP_USER_TIMEOUT {} ms expired with {probes} probe{} unanswered",
                k.user_timeout_ms,
                plural(*probes)
            ),
            _ => format!("gave up after {probes} unanswered probe{}", plural(*probes)),
        },
        Detail::ResetSent {
            reason,
            kernel_reason: Some(kernel),
        } => format!("RST sent, reason {reason} (kernel: {kernel})"),
        Detail::ResetSent { reason, .. } => format!("RST sent, reason {reason}"),
        Detail::ResetReceived {} => "RST received from peer".into(),
        Detail::StateChange { from, to } => format!("{from} -> {to}"),
        Detail::SocketError { error, errno } => format!("{error} ({errno})"),
        Detail::SocketDestroyed {} => "socket freed".into(),
    }
}

//! Writers for what keepalive prints: aligned columns for people, JSON lines for programs
//! ([`json_line`]); Prometheus metrics ([`metrics`]); the verdict history ([`history`]).

pub mod history;
pub mod json_line;
pub mod metrics;

use std::{collections::BTreeMap, io::Write};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    diagnose::ConnectionTimeline,
    event::{Closer, Detail, DropDirection, Event, TimeoutReason},
    verdict::Verdict,
    workload::Workload,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: aligned columns and words.
    Human,
    /// One JSON object per line, its `"type"` saying what it is (event, verdict, summary, ...).
    Json,
    /// One self-contained line per item, no timestamps or banners: for the systemd journal
    /// (trace's default when stdout is the journal).
    Journal,
}

/// End-of-run figures: nothing lost silently.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Events received from the kernel (before `--kind` filtering).
    pub events: u64,
    /// Events the kernel could not queue because the ring buffer was full, and answers to
    /// probes it could not recognise because more sockets had keepalive timers running than
    /// its table holds (counted as lost keepalive_answered).
    pub lost: u64,
    /// The same by event kind.
    pub lost_by_kind: BTreeMap<String, u64>,
    /// Connections dropped unjudged because the tracker was full.
    #[serde(default)]
    pub evicted: u64,
    /// Events the kernel queued that were never read (always 0 unless something is broken).
    pub unread: u64,
    /// Events printed, by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Connections that ended, by verdict.
    pub verdicts: BTreeMap<String, u64>,
    /// Connection ends the kernel side judged ordinary (short, orderly, nothing went wrong,
    /// no keepalive) and only counted: no event, no verdict. Every end is in `verdicts` or
    /// here, exactly once.
    #[serde(default)]
    pub ordinary_ends: u64,
    /// Runs of the kernel programs the kernel skipped, because another program was running
    /// on the same CPU (a softirq's event inside a process's): their events are missing.
    #[serde(default)]
    pub skipped_runs: u64,
    /// Connections that ended other than by an orderly close, by remote endpoint
    /// (the busiest [`MAX_REMOTES`]; the rest under "other").
    pub deaths_by_remote: BTreeMap<String, u64>,
}

/// Remote endpoints named one by one, in the summary and in the metrics' `remote` label;
/// more are counted under "other".
pub const MAX_REMOTES: usize = 64;

impl Summary {
    pub fn count_verdict(&mut self, v: &Verdict) {
        *self.verdicts.entry(v.verdict.name().into()).or_default() += 1;
        if v.verdict != crate::verdict::VerdictKind::Closed {
            let remote = std::net::SocketAddr::new(v.socket.daddr, v.socket.dport).to_string();
            let key = if self.deaths_by_remote.len() < MAX_REMOTES
                || self.deaths_by_remote.contains_key(&remote)
            {
                remote
            } else {
                "other".into()
            };
            *self.deaths_by_remote.entry(key).or_default() += 1;
        }
    }
}

/// A line of JSON output.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Line<'a> {
    /// Written by [`crate::output::json_line::event`], byte for byte this (its tests compare them).
    #[cfg_attr(not(test), allow(dead_code))]
    Event(&'a Event),
    Verdict(&'a Verdict),
    Summary(&'a Summary),
    /// A stretch of time the history has nothing for: no tracer was running.
    Gap {
        #[serde(with = "time::serde::rfc3339")]
        from: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        to: OffsetDateTime,
    },
}

/// Output is buffered and flushed by [`Writer::flush`], which the live loop calls after each
/// batch it reads: a write per line would cost a system call per event.
pub struct Writer {
    format: Format,
    out: std::io::BufWriter<Box<dyn Write>>,
    /// One JSON line, serialized here first so the writer sees one write per line.
    line: Vec<u8>,
    header_done: bool,
}

impl Writer {
    pub fn new(format: Format, out: Box<dyn Write>) -> Self {
        Writer {
            format,
            out: std::io::BufWriter::with_capacity(1 << 16, out),
            line: Vec::with_capacity(1024),
            header_done: false,
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    pub fn event(&mut self, e: &Event) -> std::io::Result<()> {
        match self.format {
            Format::Json => {
                self.line.clear();
                crate::output::json_line::event(&mut self.line, e)?;
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            }
            Format::Journal => {
                writeln!(
                    self.out,
                    "{} {} {} {}{}",
                    e.detail.kind(),
                    e.socket.endpoints(),
                    e.state,
                    describe(e),
                    owner(e.pid, e.comm.as_deref(), e.workload.as_deref())
                )?;
                Ok(())
            }
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
                let owner = match owner(e.pid, e.comm.as_deref(), e.workload.as_deref()) {
                    o if o.is_empty() => o,
                    o => format!(" {o}"),
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
                Ok(())
            }
        }
    }

    /// A verdict; with its timeline (for `keepalive why`), the connection's events first.
    pub fn verdict(
        &mut self,
        v: &Verdict,
        timeline: Option<&ConnectionTimeline>,
    ) -> std::io::Result<()> {
        self.verdict_after(v, timeline.into_iter().flat_map(|t| t.events()))
    }

    /// A verdict after the events that led to it.
    pub fn verdict_after<'a>(
        &mut self,
        v: &Verdict,
        events: impl Iterator<Item = &'a Event>,
    ) -> std::io::Result<()> {
        for e in events {
            self.event(e)?;
        }
        match self.format {
            Format::Json => self.json(&Line::Verdict(v)),
            Format::Journal => {
                writeln!(
                    self.out,
                    "verdict={} {}{}: {}{}",
                    v.verdict.name(),
                    v.socket.endpoints(),
                    owner(v.pid, v.comm.as_deref(), v.workload.as_deref()),
                    v.summary,
                    if v.advice.is_empty() {
                        String::new()
                    } else {
                        format!(" Advice: {}", v.advice.join(" | "))
                    }
                )?;
                Ok(())
            }
            Format::Human => {
                let label = v.workload.as_ref().and_then(|w| w.label());
                let owner = match (&v.comm, v.pid, label) {
                    (Some(c), Some(p), Some(l)) => format!(" ({c}, pid {p}, {l})"),
                    (Some(c), Some(p), None) => format!(" ({c}, pid {p})"),
                    _ => String::new(),
                };
                writeln!(self.out, "{}", "=".repeat(78))?;
                writeln!(
                    self.out,
                    ">>> {}  {}{owner}",
                    v.verdict.name().to_uppercase(),
                    v.socket.endpoints()
                )?;
                writeln!(self.out, "    {}", v.summary)?;
                for a in &v.advice {
                    writeln!(self.out, "    - {a}")?;
                }
                writeln!(self.out, "{}", "=".repeat(78))?;
                Ok(())
            }
        }
    }

    /// A time the question covers when no tracer was writing the history.
    pub fn gap(&mut self, from: OffsetDateTime, to: OffsetDateTime) -> std::io::Result<()> {
        match self.format {
            Format::Json => self.json(&Line::Gap { from, to }),
            Format::Human | Format::Journal => writeln!(
                self.out,
                "keepalive was not tracing between {} and {}",
                rfc3339(whole_seconds(from)),
                rfc3339(whole_seconds(to))
            ),
        }
    }

    /// One line of `keepalive history`: when, which connection, whose, and how it ended.
    pub fn history_row(&mut self, v: &Verdict) -> std::io::Result<()> {
        match self.format {
            Format::Json => self.json(&Line::Verdict(v)),
            Format::Human | Format::Journal => {
                if !self.header_done {
                    self.header_done = true;
                    writeln!(
                        self.out,
                        "{:<20} {:<47} {:<24} VERDICT",
                        "TIME (UTC)", "LOCAL -> REMOTE", "OWNER"
                    )?;
                }
                let label = v.workload.as_ref().and_then(|w| w.label());
                let owner = match (&v.comm, v.pid, label) {
                    (Some(c), Some(p), Some(l)) => format!("{c} {p} ({l})"),
                    (Some(c), Some(p), None) => format!("{c} {p}"),
                    _ => "-".into(),
                };
                writeln!(
                    self.out,
                    "{:<20} {:<47} {:<24} {}",
                    rfc3339(whole_seconds(v.ts)),
                    v.socket.endpoints(),
                    owner,
                    v.verdict.name()
                )
            }
        }
    }

    /// The end-of-run summary; everything buffered goes out with it.
    pub fn summary(&mut self, s: &Summary) -> std::io::Result<()> {
        self.write_summary(s)?;
        self.out.flush()
    }

    fn write_summary(&mut self, s: &Summary) -> std::io::Result<()> {
        match self.format {
            Format::Json => self.json(&Line::Summary(s)),
            Format::Journal => {
                writeln!(
                    self.out,
                    "summary: {} events, {} lost, verdicts {:?}, {} ordinary ends",
                    s.events, s.lost, s.verdicts, s.ordinary_ends
                )?;
                Ok(())
            }
            Format::Human => {
                writeln!(self.out)?;
                writeln!(self.out, "{} events, {} lost", s.events, s.lost)?;
                for (kind, n) in &s.by_kind {
                    writeln!(self.out, "  {kind:<20} {n}")?;
                }
                if !s.verdicts.is_empty() {
                    writeln!(self.out, "Connections ended, by verdict:")?;
                    for (verdict, n) in &s.verdicts {
                        writeln!(self.out, "  {verdict:<20} {n}")?;
                    }
                }
                if s.ordinary_ends > 0 {
                    writeln!(
                        self.out,
                        "{} ordinary connection ends (short, orderly, no keepalive, nothing went \
                         wrong) were counted, not shown (--all shows them)",
                        s.ordinary_ends
                    )?;
                }
                if !s.deaths_by_remote.is_empty() {
                    writeln!(
                        self.out,
                        "Deaths (other than orderly close), by remote endpoint:"
                    )?;
                    let mut remotes: Vec<_> = s.deaths_by_remote.iter().collect();
                    remotes.sort_by(|a, b| b.1.cmp(a.1));
                    for (remote, n) in remotes {
                        writeln!(self.out, "  {remote:<47} {n}")?;
                    }
                }
                if s.lost > 0 {
                    writeln!(
                        self.out,
                        "warning: {} events were lost ({}): the ring buffer was full, or for \
                         keepalive_answered, more than {} sockets had keepalive timers running at once; \
                         use --ring-buffer-size or narrow with --port/--netns",
                        s.lost,
                        s.lost_by_kind
                            .iter()
                            .map(|(k, n)| format!("{k} {n}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        keepalive_common::KNOWN_SOCKET_SLOTS
                    )?;
                }
                if s.evicted > 0 {
                    writeln!(
                        self.out,
                        "warning: {} connections were dropped unjudged: more were live at once \
                         than the {} tracked; narrow with --port or --netns",
                        s.evicted,
                        crate::diagnose::Engine::DEFAULT_CAPACITY
                    )?;
                }
                if s.skipped_runs > 0 {
                    writeln!(
                        self.out,
                        "warning: the kernel skipped {} runs of keepalive's programs (an event \
                         in a softirq while the same program ran on that CPU): their events are \
                         missing",
                        s.skipped_runs
                    )?;
                }
                if s.unread > 0 {
                    writeln!(
                        self.out,
                        "warning: {} events the kernel queued were never read",
                        s.unread
                    )?;
                }
                Ok(())
            }
        }
    }

    fn json(&mut self, line: &Line<'_>) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, line)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// ` [comm pid]`, with the unit, container or pod when known; empty when the owner is not.
fn owner(pid: Option<u32>, comm: Option<&str>, workload: Option<&Workload>) -> String {
    match (pid, comm, workload.and_then(|w| w.label())) {
        (Some(p), Some(c), Some(l)) => format!(" [{c} {p} {l}]"),
        (Some(p), Some(c), None) => format!(" [{c} {p}]"),
        _ => String::new(),
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
        Detail::StateChange {
            from,
            to,
            retransmits,
            life,
        } => {
            let mut s = format!("{from} -> {to}");
            if let Some(n) = retransmits {
                s += &format!(" with {n} retransmission{} unanswered", plural(*n));
            }
            if let Some(l) = life {
                if let Some(t) = l.established {
                    s += &format!(", up {:.3}s", (e.ts - t).as_seconds_f64());
                }
                match l.closed_first {
                    Some(Closer::Local) => s += ", closed by this side first",
                    Some(Closer::Peer) => s += ", closed by the peer first",
                    None => {}
                }
            }
            s
        }
        Detail::Retransmit { retransmits } => {
            format!("data sent again (retransmission {retransmits} in a row)")
        }
        Detail::SocketError { error, errno } => format!("{error} ({errno})"),
        Detail::SocketDestroyed {} => "socket freed".into(),
        Detail::PacketDropped { reason, direction } => match direction {
            DropDirection::Arriving => {
                format!("this host dropped a packet from the peer ({reason})")
            }
            DropDirection::Leaving => format!("this host dropped an outgoing packet ({reason})"),
        },
        Detail::KeepaliveEnforced { applied, forced } => {
            let k = e.keepalive.clone().unwrap_or_default();
            format!(
                "{} keepalive (idle {}s, interval {}s, count {}){}",
                if *applied {
                    "enforced"
                } else {
                    "would enforce"
                },
                k.idle_s,
                k.interval_s,
                k.count,
                if *forced {
                    ", over the application's own"
                } else {
                    ""
                }
            )
        }
    }
}

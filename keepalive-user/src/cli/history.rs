//! `keepalive history`, and reading the store for `why --since` too.

use std::{io, process::ExitCode};

use anyhow::Result;
use clap::Args;
use keepalive_user::{
    event::Event,
    host::netns,
    output::history::{self as store, History},
    output::{Format, Writer},
    verdict::{Verdict, VerdictKind},
};

use super::args::{ConnectionArgs, PeriodArgs};

pub const EXAMPLES: &str = "\
Examples:
  keepalive history
      Connections that died in the last 24 hours: time, local -> remote, owner, verdict.
  keepalive history --since 2026-11-30T18:00:00Z --until 2026-12-01T08:00:00Z --port 5432
      PostgreSQL connections that died overnight.
  keepalive history --since 7d --all --format json
      Every connection end of the last week, orderly closes included, as JSON lines.

The history is kept by `keepalive trace --history` (the systemd unit and the DaemonSet turn it
on). Times nobody traced are listed as gaps. `keepalive why --since` shows the timelines.";

#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(flatten)]
    period: PeriodArgs,
    /// Orderly closes too, not only deaths, e.g. --all.
    #[arg(long)]
    all: bool,
    /// Output format, e.g. --format json.
    #[arg(short, long, value_enum, default_value = "human")]
    format: Format,
}

/// The deaths of a period, a line each.
pub fn run(args: HistoryArgs) -> Result<ExitCode> {
    from_history(&args.period, &args.connection, args.format, |out, v, _| {
        let shown = args.all || v.verdict != VerdictKind::Closed;
        if shown {
            out.history_row(v)?;
        }
        Ok(shown)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What `why --since` and `history` share: reads the store, prints the period's gaps, then
/// hands `show` each matching connection end, newest first; returns how many it showed.
pub fn from_history(
    period: &PeriodArgs,
    conn: &ConnectionArgs,
    format: Format,
    mut show: impl FnMut(&mut Writer, &Verdict, &[Event]) -> io::Result<bool>,
) -> Result<usize> {
    let now = time::OffsetDateTime::now_utc();
    let (since, until) = period.range(now, "24h")?;
    let h = store::read(&period.history)?;
    let matches = matching(&h, conn, since, until)?;
    let mut out = Writer::new(format, Box::new(io::stdout()));
    for (from, to) in h.gaps(since, until, now) {
        out.gap(from, to)?;
    }
    let mut shown = 0;
    for (v, timeline) in matches {
        shown += show(&mut out, v, timeline)? as usize;
    }
    out.flush()?;
    notes(&h);
    Ok(shown)
}

/// The history's connection ends in `[since, until]` that the filters select, newest first.
fn matching<'h>(
    h: &'h History,
    conn: &ConnectionArgs,
    since: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> Result<Vec<(&'h Verdict, &'h [Event])>> {
    let filter = conn.filter();
    let netns = conn.netns.as_deref().map(netns::inode).transpose()?;
    Ok(h.ends(since, until)
        .filter(|(v, _)| filter.matches(&v.socket, v.pid, v.comm.as_deref(), v.workload.as_deref()))
        .filter(|(v, _)| netns.is_none_or(|n| v.socket.netns == n))
        .collect())
}

/// What the reader of a history should know besides its answer.
fn notes(h: &History) {
    if h.torn > 0 {
        eprintln!(
            "keepalive: {} line(s) of the history did not read back (a tracer killed while \
             writing) and were skipped",
            h.torn
        );
    }
}

//! `keepalive sockets`.

use std::{io, process::ExitCode};

use anyhow::Result;
use clap::Args;
use keepalive_user::{host::netns, host::snapshot, output::Format};

use super::args::{ConnectionArgs, UsageError};

pub const EXAMPLES: &str = "\
Examples:
  keepalive sockets
      Connections of this network namespace: keepalive on/off, idle/interval/count, the
      keepalive timer and probes outstanding, and the owning process.
  keepalive sockets --comm ssh --format json
      Only ssh's connections, as JSON lines.
  keepalive sockets --netns blue --all
      Every TCP socket of namespace `blue`, listening and TIME_WAIT ones included.
  keepalive sockets --idle-limit 350s
      Marks the connections an idle limit of 350 s (AWS NLB and NAT gateway) would kill:
      keepalive off, or a first probe too late; by owner, each group with its fix. Exit 1
      when any is at risk, 0 when none.
  keepalive sockets --idle-limit path
      The same with the limit the last `keepalive path` measured.";

#[derive(Args)]
pub struct SocketsArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Include listening, TIME_WAIT and closed sockets, e.g. --all.
    #[arg(long)]
    all: bool,
    /// Output format, e.g. --format json.
    #[arg(short, long, value_enum, default_value = "human")]
    format: Format,
    /// Mark the established connections a path that forgets idle ones after this long
    /// would kill, e.g. --idle-limit 350s (or `path`: what the last `keepalive path`
    /// measured).
    #[arg(long, value_name = "DURATION|path")]
    idle_limit: Option<String>,
}

/// The idle limit `--idle-limit` names, in seconds.
pub fn idle_limit_s(arg: &str) -> Result<u32> {
    if arg == "path" {
        return keepalive_user::path::last_limit_s()
            .map_err(|e| UsageError(format!("{e:#}")).into());
    }
    let d = keepalive_user::output::history::parse_duration(arg)
        .map_err(|e| UsageError(format!("--idle-limit {arg}: {e}")))?;
    match u32::try_from(d.whole_seconds()) {
        Ok(s) if s >= 1 => Ok(s),
        _ => Err(UsageError(format!("--idle-limit {arg}: at least 1s")).into()),
    }
}

pub fn run(args: SocketsArgs) -> Result<ExitCode> {
    let limit = args.idle_limit.as_deref().map(idle_limit_s).transpose()?;
    let rows = connections(&args.connection, args.all, limit)?;
    keepalive_user::sockets::print(&rows, args.format, &mut io::stdout().lock())?;
    Ok(if rows.iter().any(|r| r.at_risk.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The sockets `connection` selects (in its `--netns`, or this namespace), with owners and
/// options, marked at risk under `limit_s`.
pub fn connections(
    connection: &ConnectionArgs,
    all: bool,
    limit_s: Option<u32>,
) -> Result<Vec<keepalive_user::sockets::SocketRow>> {
    let entries = match &connection.netns {
        Some(ns) => {
            // A namespace that is not there is bad input, like a bad flag.
            let (file, inode) = netns::file(ns).map_err(|e| UsageError(format!("{e:#}")))?;
            snapshot::tcp_sockets_in(&file.to_string_lossy(), inode)?
        }
        None => snapshot::tcp_sockets(netns::current())?,
    };
    Ok(judged(entries, connection, all, limit_s))
}

/// `entries` joined with owners and options, as `connection` selects them.
fn judged(
    entries: Vec<keepalive_user::host::snapshot::SocketEntry>,
    connection: &ConnectionArgs,
    all: bool,
    limit_s: Option<u32>,
) -> Vec<keepalive_user::sockets::SocketRow> {
    keepalive_user::sockets::rows(
        entries,
        &connection.filter(),
        &connection.workloads(),
        all,
        limit_s,
    )
}

/// [`connections`] in `connection`'s `--netns`, or, without one, in every network namespace
/// (a tracer's view, where `keepalive sockets` shows its own namespace as `ss` does).
pub fn connections_everywhere(
    connection: &ConnectionArgs,
    limit_s: Option<u32>,
) -> Result<Vec<keepalive_user::sockets::SocketRow>> {
    if connection.netns.is_some() {
        return connections(connection, false, limit_s);
    }
    let mut entries = vec![];
    for (file, inode) in netns::all() {
        match snapshot::tcp_sockets_in(&file.to_string_lossy(), inode) {
            Ok(found) => entries.extend(found),
            // A process that exited since the scan took its namespace's file with it.
            Err(e) => log::debug!("{}: {e:#}", file.display()),
        }
    }
    Ok(judged(entries, connection, false, limit_s))
}

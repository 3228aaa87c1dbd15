//! `keepalive sockets`.

use std::{io, process::ExitCode};

use anyhow::Result;
use clap::Args;
use keepalive_user::{netns, output::Format, snapshot};

use super::args::{ConnectionArgs, UsageError};

pub const EXAMPLES: &str = "\
Examples:
  keepalive sockets
      Connections of this network namespace: keepalive on/off, idle/interval/count, the
      keepalive timer and probes outstanding, and the owning process.
  keepalive sockets --comm ssh --format json
      Only ssh's connections, as JSON lines.
  keepalive sockets --netns blue --all
      Every TCP socket of namespace `blue`, listening and TIME_WAIT ones included.";

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
}

pub fn run(args: SocketsArgs) -> Result<ExitCode> {
    let entries = match &args.connection.netns {
        Some(ns) => {
            // A namespace that is not there is bad input, like a bad flag.
            let (file, inode) = netns::file(ns).map_err(|e| UsageError(format!("{e:#}")))?;
            snapshot::tcp_sockets_in(&file.to_string_lossy(), inode)?
        }
        None => snapshot::tcp_sockets(netns::current())?,
    };
    let rows = keepalive_user::sockets::rows(
        entries,
        &args.connection.filter(),
        &args.connection.workloads(),
        args.all,
    );
    keepalive_user::sockets::print(&rows, args.format, &mut io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

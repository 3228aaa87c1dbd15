//! The `keepalive` command line: one module per command, each with its arguments, examples
//! and what it runs; the arguments several commands share are in [`args`].

mod args;
mod doctor;
mod enforce;
mod history;
mod path;
mod sockets;
mod trace;
mod why;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use args::UsageError;

#[derive(Parser)]
#[command(
    name = "keepalive",
    version,
    about = "Why did my TCP connection die? Traces TCP keepalive probes, answers, timeouts \
             and resets per connection with eBPF.",
    after_help = "Examples:\n  \
        keepalive trace                      # every keepalive probe, reset, error and state change\n  \
        keepalive trace --port 22            # only connections with port 22 at either end\n  \
        keepalive trace --format json        # JSON lines, for jq or a recording\n  \
        keepalive why --comm ssh             # wait for an ssh connection to die, say why\n  \
        keepalive why --since 12h --comm ssh # why ssh connections died, from the history\n\n\
        Runs as root (or with CAP_BPF and CAP_PERFMON). -v or RUST_LOG=debug shows the tool's own diagnostics."
)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print keepalive probes, answers, timeouts, resets, errors and state changes as they happen.
    #[command(after_help = trace::EXAMPLES)]
    Trace(trace::TraceArgs),
    /// Wait until a matching connection ends, then print its timeline and why it ended; with
    /// --since, say why connections ended earlier, from the history.
    #[command(after_help = why::EXAMPLES)]
    Why(why::WhyArgs),
    /// List the connections that died in a period, from the history `keepalive trace
    /// --history` keeps.
    #[command(after_help = history::EXAMPLES)]
    History(history::HistoryArgs),
    /// Turn keepalive on for the new TCP connections of a cgroup's processes, without
    /// changing the applications, until stopped.
    #[command(after_help = enforce::EXAMPLES)]
    Enforce(enforce::EnforceArgs),
    /// List TCP connections now, with keepalive settings, timer, probes and owner (like `ss -o`).
    #[command(after_help = sockets::EXAMPLES)]
    Sockets(sockets::SocketsArgs),
    /// Measure how long the path to a service keeps an idle TCP connection (a NAT's or
    /// firewall's idle timeout), with keepalive's own probes, and what to set.
    #[command(after_help = path::EXAMPLES)]
    Path(path::PathArgs),
    /// Check this system: kernel, BTF, kprobes, tracepoints, program types, which mode `auto`
    /// picks and why, and what the other mode lacks. Exits 1 when no mode works, or with
    /// --mode kprobe|tracepoint when that mode does not.
    #[command(after_help = doctor::EXAMPLES)]
    Doctor(doctor::DoctorArgs),
}

/// Runs `command`; the commands that trace run on one async thread.
pub fn run(command: Command) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match command {
        Command::Trace(args) => runtime.block_on(trace::run(args)),
        Command::Why(args) if args.period.since.is_some() || args.period.until.is_some() => {
            why::run_since(args)
        }
        Command::Why(args) => runtime.block_on(why::run(args)),
        Command::History(args) => history::run(args),
        Command::Sockets(args) => sockets::run(args),
        Command::Enforce(args) => runtime.block_on(enforce::run(args)),
        Command::Path(args) => runtime.block_on(path::run(args)),
        Command::Doctor(args) => runtime.block_on(doctor::run(args)),
    }
}

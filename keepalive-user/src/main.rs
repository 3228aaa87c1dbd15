//! The `keepalive` command line.

use std::{fs::File, io, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use keepalive_user::{
    event::Detail,
    loader::{LoadOptions, default_btf_path},
    output::{Format, Writer},
    trace::{self, EventFilter},
};

#[derive(Parser)]
#[command(
    name = "keepalive",
    version,
    about = "Why did my TCP connection die? Traces TCP keepalive probes, answers, timeouts \
             and resets per connection with eBPF.",
    after_help = "Examples:\n  \
        keepalive trace                      # every keepalive probe, reset, error and state change\n  \
        keepalive trace --port 22            # only connections with port 22 at either end\n  \
        keepalive trace --format json        # JSON lines, for jq or a recording\n\n\
        Runs as root (or with CAP_BPF and CAP_PERFMON). -v or RUST_LOG=debug shows the tool's own diagnostics."
)]
struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print keepalive probes, answers, timeouts, resets, errors and state changes as they happen.
    #[command(after_help = TRACE_EXAMPLES)]
    Trace(TraceArgs),
}

const TRACE_EXAMPLES: &str = "\
Examples:
  keepalive trace
      Everything, in columns, until Ctrl-C; then how many events were seen and lost.
  keepalive trace --port 5432 --kind keepalive_probe,keepalive_timeout
      Keepalive activity of PostgreSQL connections only.
  keepalive trace --netns blue --format json --output trace.jsonl
      Sockets of network namespace `blue` (ip netns), as JSON lines into a file.

Kinds: keepalive_probe, keepalive_answered, keepalive_timeout, reset_sent, reset_received,
       state_change, socket_error, socket_destroyed.";

#[derive(Args)]
struct TraceArgs {
    /// Output format: columns for reading, or JSON lines for jq and recordings,
    /// e.g. --format json.
    #[arg(short, long, value_enum, default_value = "human")]
    format: Format,
    /// Write events to FILE instead of stdout (e.g. a recording: --format json --output rec.jsonl).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Only connections with this local or remote port, e.g. --port 22 (filtered in the kernel).
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Only sockets of this network namespace: a name from `ip netns`, a path such as
    /// /proc/PID/ns/net, or an inode number as printed in `netns` (filtered in the kernel).
    #[arg(short = 'n', long, value_name = "NETNS")]
    netns: Option<String>,
    /// Only these event kinds, comma-separated, e.g. --kind keepalive_probe,keepalive_timeout.
    #[arg(short, long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(Detail::KINDS))]
    kind: Vec<String>,
    /// Kernel BTF to read struct layouts from, e.g. --btf /sys/kernel/btf/vmlinux (the default).
    #[arg(long, value_name = "PATH", default_value_os_t = default_btf_path().to_path_buf())]
    btf: PathBuf,
    /// Ring buffer size in KiB (a power of two); larger loses fewer events under bursts,
    /// e.g. --ring-buffer-size 16384.
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ring_kib)]
    ring_buffer_size: u32,
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of KiB"))?;
    if !(4..=1 << 20).contains(&kib) || !kib.is_power_of_two() {
        return Err(format!(
            "{kib} KiB: must be a power of two from 4 to 1048576"
        ));
    }
    Ok(kib)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keepalive: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match command {
        Command::Trace(args) => runtime.block_on(run_trace(args)),
    }
}

async fn run_trace(args: TraceArgs) -> Result<()> {
    let opts = LoadOptions {
        btf_path: args.btf,
        filter_port: args.port.unwrap_or(0),
        filter_netns: args
            .netns
            .as_deref()
            .map(resolve_netns)
            .transpose()?
            .unwrap_or(0),
        ring_buffer_size: args.ring_buffer_size * 1024,
    };
    let out: Box<dyn io::Write> = match &args.output {
        Some(path) => Box::new(io::BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(io::stdout()),
    };
    let filter = EventFilter { kinds: args.kind };
    trace::run(&opts, &filter, Writer::new(args.format, out)).await?;
    Ok(())
}

/// A network namespace inode from a number, a path or an `ip netns` name.
fn resolve_netns(s: &str) -> Result<u32> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(inode) = s.parse::<u32>() {
        return Ok(inode);
    }
    let path = if s.contains('/') {
        PathBuf::from(s)
    } else {
        PathBuf::from("/run/netns").join(s)
    };
    match std::fs::metadata(&path) {
        Ok(m) => Ok(m.ino() as u32),
        Err(e) => bail!(
            "--netns {s}: {e} ({}); give an `ip netns` name, a path like /proc/PID/ns/net, \
             or an inode number",
            path.display()
        ),
    }
}

//! The `keepalive` command line.

use std::{fs::File, io, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use keepalive_user::{
    diagnose::ConnectionFilter,
    event::Detail,
    history,
    loader::{LoadOptions, default_btf_path},
    netns,
    output::{Format, Writer},
    pipeline::{Flow, Mode, Pipeline},
    replay, trace,
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
        keepalive trace --format json        # JSON lines, for jq or a recording\n  \
        keepalive why --comm ssh             # wait for an ssh connection to die, say why\n  \
        keepalive why --since 12h --comm ssh # why ssh connections died, from the history\n\n\
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
    /// Wait until a matching connection ends, then print its timeline and why it ended; with
    /// --since, say why connections ended earlier, from the history.
    #[command(after_help = WHY_EXAMPLES)]
    Why(WhyArgs),
    /// List the connections that died in a period, from the history `keepalive trace
    /// --history` keeps.
    #[command(after_help = HISTORY_EXAMPLES)]
    History(HistoryArgs),
    /// Turn keepalive on for the new TCP connections of a cgroup's processes, without
    /// changing the applications, until stopped.
    #[command(after_help = ENFORCE_EXAMPLES)]
    Enforce(keepalive_user::enforce::Args),
    /// List TCP connections now, with keepalive settings, timer, probes and owner (like `ss -o`).
    #[command(after_help = SOCKETS_EXAMPLES)]
    Sockets(SocketsArgs),
    /// Measure how long the path to a service keeps an idle TCP connection (a NAT's or
    /// firewall's idle timeout), with keepalive's own probes, and what to set.
    #[command(after_help = PATH_EXAMPLES)]
    Path(PathArgs),
    /// Check this system: kernel, BTF, kprobes, tracepoints, program types, which mode `auto`
    /// picks and why, and what the other mode lacks.
    Doctor(DoctorArgs),
}

const PATH_EXAMPLES: &str = "\
Examples:
  keepalive path db.example.net:5432
      Idle connections to PostgreSQL, each probing after its own idle time (15 s ... 2 h);
      prints what the path kept and forgot, how (silent drop, RST), and what to set.
  keepalive path [2001:db8::1]:22 --max 30m --format json
      The same over IPv6 up to 30 minutes, as one JSON line: kept_s, forgotten_s, how
      (silent, rst, server_closed), recommended_idle_s and the settings.
  keepalive path 198.19.0.1:80 --netns blue --min 2s --max 60s
      From network namespace `blue`, between 2 s and 1 min.

Any service that holds idle TCP connections will do; nothing is sent but keepalive probes.
A server that closes idle connections itself (FIN) is reported as that, not as the path.
Exit status: 0 a limit was measured, 1 none found up to --max, 2 usage error.
Ctrl-C prints what is known so far.";

#[derive(Args)]
struct PathArgs {
    #[command(flatten)]
    path: keepalive_user::path::Args,
    #[command(flatten)]
    kernel: KernelArgs,
}

#[derive(Args)]
struct DoctorArgs {
    #[command(flatten)]
    kernel: KernelArgs,
}

const ENFORCE_EXAMPLES: &str = "\
Examples:
  keepalive enforce --cgroup system.slice/mysqldump.service --idle 60 --interval 10 --count 6
      Connections the service makes or accepts from now on probe after 60 s of idleness, so a
      NAT or firewall with a longer idle timeout keeps them, and a dead peer is noticed.
  keepalive enforce --cgroup batch --idle 30 --interval 5 --count 3 --port 5432 --dry-run
      Only report which PostgreSQL connections would be changed.

The cgroup is a path in the cgroup v2 hierarchy (found in /proc/self/mountinfo), absolute or
relative to it. Sockets that turned keepalive on themselves are left alone unless --force.
Each change is printed here and appears in `keepalive trace` as kind keepalive_enforced.";

const SOCKETS_EXAMPLES: &str = "\
Examples:
  keepalive sockets
      Connections of this network namespace: keepalive on/off, idle/interval/count, the
      keepalive timer and probes outstanding, and the owning process.
  keepalive sockets --comm ssh --format json
      Only ssh's connections, as JSON lines.
  keepalive sockets --netns blue --all
      Every TCP socket of namespace `blue`, listening and TIME_WAIT ones included.";

#[derive(Args)]
struct SocketsArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Include listening, TIME_WAIT and closed sockets, e.g. --all.
    #[arg(long)]
    all: bool,
    /// Output format, e.g. --format json.
    #[arg(short, long, value_enum, default_value = "human")]
    format: Format,
}

const HISTORY_EXAMPLES: &str = "\
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
struct HistoryArgs {
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

/// A period of the history to look at.
#[derive(Args)]
struct PeriodArgs {
    /// From this time: a time ago (90s, 30m, 12h, 2d, 1h30m) or an RFC 3339 time,
    /// e.g. --since 12h.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Up to this time (the same forms; now when not given), e.g. --until 2h.
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// The store to read: the directory `keepalive trace --history` writes,
    /// e.g. --history /srv/keepalive.
    #[arg(long, value_name = "DIR", default_value = history::DEFAULT_DIR)]
    history: PathBuf,
}

impl PeriodArgs {
    /// `[since, until]`, `since` defaulting to `default_ago` before now.
    fn range(
        &self,
        now: time::OffsetDateTime,
        default_ago: &str,
    ) -> Result<(time::OffsetDateTime, time::OffsetDateTime)> {
        let parse = |flag: &str, s: &str| {
            history::parse_time(s, now).map_err(|e| UsageError(format!("--{flag} {e}")))
        };
        let since = parse("since", self.since.as_deref().unwrap_or(default_ago))?;
        let until = match &self.until {
            Some(u) => parse("until", u)?,
            None => now,
        };
        if since > until {
            return Err(UsageError("--since is after --until".into()).into());
        }
        Ok((since, until))
    }
}

const WHY_EXAMPLES: &str = "\
Examples:
  keepalive why --comm ssh
      Follows live until an ssh connection dies; prints its events and the verdict.
  keepalive why --since 12h --comm ssh
      Why ssh connections ended in the last 12 hours, newest first, from the history
      `keepalive trace --history` keeps; says when nobody was tracing.
  keepalive why --port 5432 --format json
      The same for a PostgreSQL connection, as JSON lines (events, then the verdict).
  keepalive why --from trace.jsonl --addr 198.18.0.2
      Replays a recording made by `keepalive trace --format json --output trace.jsonl`.

Verdicts: keepalive_timeout, reset_after_probe, peer_reset, local_abort, retransmit_timeout,
          user_timeout, closed.";

/// Which connections to look at.
#[derive(Args, Default)]
struct ConnectionArgs {
    /// Only connections with this local or remote port, e.g. --port 22 (filtered in the kernel).
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Only connections with this local or remote address, e.g. --addr 2001:db8::2.
    #[arg(short, long, value_name = "IP")]
    addr: Option<std::net::IpAddr>,
    /// Only connections owned by this process id, e.g. --pid 4242.
    #[arg(long)]
    pid: Option<u32>,
    /// Only connections owned by processes with this command name, e.g. --comm ssh.
    #[arg(short, long)]
    comm: Option<String>,
    /// Only sockets of this network namespace: a name from `ip netns`, a path such as
    /// /proc/PID/ns/net, or an inode number as printed in `netns` (filtered in the kernel).
    #[arg(short = 'n', long, value_name = "NETNS")]
    netns: Option<String>,
}

impl ConnectionArgs {
    fn filter(&self) -> ConnectionFilter {
        ConnectionFilter {
            port: self.port,
            addr: self.addr,
            pid: self.pid,
            comm: self.comm.clone(),
        }
    }
}

/// How to load the kernel programs.
#[derive(Args)]
struct KernelArgs {
    /// Kernel BTF to read struct layouts from, e.g. --btf /sys/kernel/btf/vmlinux (the default).
    #[arg(long, value_name = "PATH", default_value_os_t = default_btf_path().to_path_buf())]
    btf: PathBuf,
    /// Ring buffer size in KiB (a power of two); larger loses fewer events under bursts,
    /// e.g. --ring-buffer-size 16384.
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ring_kib)]
    ring_buffer_size: u32,
    /// How to hook the keepalive timer and resets: kprobes (cheapest; needs CONFIG_KPROBES),
    /// BTF tracepoints, or auto (kprobes when they work, else tracepoints; `keepalive
    /// doctor` says which and why), e.g. --mode tracepoint.
    #[arg(long, value_enum, default_value = "auto", env = "KEEPALIVE_MODE")]
    mode: keepalive_user::hooks::Mode,
}

impl KernelArgs {
    fn load_options(&self, conn: &ConnectionArgs) -> Result<LoadOptions> {
        Ok(LoadOptions {
            btf_path: self.btf.clone(),
            filter_port: conn.port.unwrap_or(0),
            filter_netns: conn
                .netns
                .as_deref()
                .map(netns::inode)
                .transpose()?
                .unwrap_or(0),
            ring_buffer_size: self.ring_buffer_size * 1024,
            mode: self.mode,
            all_states: false,
        })
    }
}

#[derive(Args)]
struct WhyArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Replay this recording (from `keepalive trace --format json --output FILE`) instead of
    /// tracing live, e.g. --from trace.jsonl.
    #[arg(long, value_name = "FILE", conflicts_with = "since")]
    from: Option<PathBuf>,
    #[command(flatten)]
    period: PeriodArgs,
    /// Output format, e.g. --format json.
    #[arg(short, long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    kernel: KernelArgs,
}

const TRACE_EXAMPLES: &str = "\
Examples:
  keepalive trace
      Everything, in columns, until Ctrl-C; then how many events were seen and lost.
  keepalive trace --port 5432 --kind keepalive_probe,keepalive_timeout
      Keepalive activity of PostgreSQL connections only.
  keepalive trace --netns blue --format json --output trace.jsonl
      Sockets of network namespace `blue` (ip netns), as JSON lines into a file.
  keepalive trace --quiet --metrics 127.0.0.1:9477
      Only how connections end, and Prometheus metrics, for a long-running service.

The event kinds are listed under --kind (from the event model itself).";

#[derive(Args)]
struct TraceArgs {
    /// Output format: columns for reading, JSON lines for jq and recordings, or one line per
    /// event and verdict for the systemd journal (the default when stdout is the journal),
    /// e.g. --format json.
    #[arg(short, long, value_enum)]
    format: Option<Format>,
    /// Serve Prometheus metrics (probes, answers, timeouts, connection ends by verdict and
    /// remote, lost events) on this address, e.g. --metrics 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// Write events to FILE instead of stdout (e.g. a recording: --format json --output rec.jsonl).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    connection: ConnectionArgs,
    /// No per-event lines: only verdicts (how each connection ended) and the summary, for
    /// long-running use, e.g. --quiet.
    #[arg(short, long)]
    quiet: bool,
    /// Keep every verdict, and the timeline of each connection that did not close normally,
    /// in DIR (default /var/lib/keepalive, created root-only), for `keepalive why --since`
    /// and `keepalive history` later, e.g. --history.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = history::DEFAULT_DIR)]
    history: Option<PathBuf>,
    /// Size cap of the history in MiB; the oldest entries go first, e.g. --history-size 256.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    history_size: u64,
    /// Only these event kinds, comma-separated, e.g. --kind keepalive_probe,keepalive_timeout.
    #[arg(short, long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(Detail::kinds()))]
    kind: Vec<String>,
    /// Every TCP state change (SYN_SENT, ESTABLISHED, FIN_WAIT2, CLOSE_WAIT, ...) as it
    /// happens and every socket freed, as tcpstates shows them. By default a connection is
    /// one state_change when it closes (-> CLOSE), carrying when it was established and who
    /// closed first: the kernel keeps its start until then, which is all diagnosis needs
    /// and much cheaper on busy hosts.
    #[arg(long)]
    all_states: bool,
    #[command(flatten)]
    kernel: KernelArgs,
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("keepalive: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match command {
        Command::Trace(args) => runtime.block_on(run_trace(args)),
        Command::Why(args) if args.period.since.is_some() || args.period.until.is_some() => {
            run_why_history(args)
        }
        Command::Why(args) => runtime.block_on(run_why(args)),
        Command::History(args) => run_history(args),
        Command::Sockets(args) => run_sockets(args),
        Command::Enforce(args) => runtime.block_on(run_enforce(args)),
        Command::Path(args) => runtime.block_on(run_path(args)),
        Command::Doctor(args) => runtime.block_on(run_doctor(args)),
    }
}

async fn run_enforce(args: keepalive_user::enforce::Args) -> Result<ExitCode> {
    let out = Writer::new(args.format, Box::new(io::stdout()));
    keepalive_user::enforce::run(&args, out).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_path(args: PathArgs) -> Result<ExitCode> {
    let target = &args.path.target;
    let port = target.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
    if !matches!(port, Some(Ok(p)) if p > 0) {
        return Err(UsageError(format!(
            "{target}: give HOST:PORT, e.g. db.example.net:5432 or [2001:db8::1]:22"
        ))
        .into());
    }
    if args.path.min > args.path.max {
        return Err(UsageError("--min is above --max".into()).into());
    }
    let load = args.kernel.load_options(&ConnectionArgs::default())?;
    let result = keepalive_user::path::run(&args.path, load).await?;
    match args.path.format {
        Format::Json => println!("{}", serde_json::to_string(&result)?),
        _ => print!("{}", result.human()),
    }
    Ok(if result.found() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_doctor(args: DoctorArgs) -> Result<ExitCode> {
    let opts = args.kernel.load_options(&ConnectionArgs::default())?;
    let works = keepalive_user::doctor::report(&opts, &mut io::stdout().lock())?;
    Ok(if works {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_sockets(args: SocketsArgs) -> Result<ExitCode> {
    let entries = match &args.connection.netns {
        Some(ns) => {
            let inode = netns::inode(ns)?;
            if ns.parse::<u32>().is_ok() {
                bail!("--netns for `sockets` takes a name or a path, not an inode number")
            }
            let path = netns::path(ns);
            keepalive_user::snapshot::tcp_sockets_in(&path.to_string_lossy(), inode)?
        }
        None => keepalive_user::snapshot::tcp_sockets(netns::current())?,
    };
    let rows = keepalive_user::sockets::rows(entries, &args.connection.filter(), args.all);
    keepalive_user::sockets::print(&rows, args.format, &mut io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

async fn run_trace(args: TraceArgs) -> Result<ExitCode> {
    let mut opts = args.kernel.load_options(&args.connection)?;
    opts.all_states = args.all_states || args.kind.iter().any(|k| k == "socket_destroyed");
    let out: Box<dyn io::Write> = match &args.output {
        Some(path) => Box::new(io::BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(io::stdout()),
    };
    // systemd sets JOURNAL_STREAM when stdout goes to the journal.
    let format = args
        .format
        .unwrap_or(if std::env::var_os("JOURNAL_STREAM").is_some() {
            Format::Journal
        } else {
            Format::Human
        });
    let mut pipeline = Pipeline::new(
        if args.quiet {
            Mode::Verdicts
        } else {
            Mode::Trace
        },
        args.kind,
        args.connection.filter(),
        Writer::new(format, out),
    );
    if let Some(dir) = &args.history {
        let store = history::HistoryWriter::open(
            dir,
            args.history_size << 20,
            time::OffsetDateTime::now_utc(),
        )?;
        pipeline = pipeline.with_history(store);
    }
    if let Some(addr) = args.metrics {
        let metrics = std::sync::Arc::new(std::sync::Mutex::new(
            keepalive_user::metrics::Metrics::new(),
        ));
        keepalive_user::metrics::serve(addr, metrics.clone()).await?;
        pipeline = pipeline.with_metrics(metrics);
    }
    let traced = trace::run(&opts, &mut pipeline).await;
    pipeline.stop_history()?;
    traced?;
    pipeline.write_summary()?;
    if args.output.is_some() {
        // The summary went into the file; the operator at the terminal sees the counts too.
        let s = pipeline.summary();
        eprintln!("keepalive: {} events, {} lost", s.events, s.lost);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_why(args: WhyArgs) -> Result<ExitCode> {
    let mut pipeline = Pipeline::new(
        Mode::Why,
        vec![],
        args.connection.filter(),
        Writer::new(args.format, Box::new(io::stdout())),
    );
    match &args.from {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let events = replay::read_events(io::BufReader::new(file), &path.display().to_string())
                .map_err(|e| UsageError(format!("{e:#}")))?;
            for e in &events {
                if pipeline.event(e)? == Flow::Stop {
                    break;
                }
            }
            if !pipeline.answered() {
                pipeline.finish()?;
            }
        }
        None => {
            let opts = args.kernel.load_options(&args.connection)?;
            trace::run(&opts, &mut pipeline).await?;
        }
    }
    if pipeline.answered() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("keepalive: no matching connection ended");
        Ok(ExitCode::from(1))
    }
}

/// `keepalive why --since`: the verdicts and timelines the history kept, newest first.
fn run_why_history(args: WhyArgs) -> Result<ExitCode> {
    let shown = from_history(
        &args.period,
        &args.connection,
        args.format,
        |out, v, timeline| {
            out.verdict_after(v, timeline.iter())?;
            Ok(true)
        },
    )?;
    if shown == 0 {
        eprintln!("keepalive: no matching connection ended in that period");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `keepalive history`: the deaths of a period, a line each.
fn run_history(args: HistoryArgs) -> Result<ExitCode> {
    from_history(&args.period, &args.connection, args.format, |out, v, _| {
        let shown = args.all || v.verdict != keepalive_user::verdict::VerdictKind::Closed;
        if shown {
            out.history_row(v)?;
        }
        Ok(shown)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What `why --since` and `history` share: reads the store, prints the period's gaps, then
/// hands `show` each matching connection end, newest first; returns how many it showed.
fn from_history(
    period: &PeriodArgs,
    conn: &ConnectionArgs,
    format: Format,
    mut show: impl FnMut(
        &mut Writer,
        &keepalive_user::verdict::Verdict,
        &[keepalive_user::event::Event],
    ) -> io::Result<bool>,
) -> Result<usize> {
    let now = time::OffsetDateTime::now_utc();
    let (since, until) = period.range(now, "24h")?;
    let h = history::read(&period.history)?;
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
    history_notes(&h);
    Ok(shown)
}

/// The history's connection ends in `[since, until]` that the filters select, newest first.
fn matching<'h>(
    h: &'h history::History,
    conn: &ConnectionArgs,
    since: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> Result<
    Vec<(
        &'h keepalive_user::verdict::Verdict,
        &'h [keepalive_user::event::Event],
    )>,
> {
    let filter = conn.filter();
    let netns = conn.netns.as_deref().map(netns::inode).transpose()?;
    Ok(h.deaths(since, until)
        .filter(|(v, _)| filter.matches(&v.socket, v.pid, v.comm.as_deref()))
        .filter(|(v, _)| netns.is_none_or(|n| v.socket.netns == n))
        .collect())
}

/// What the reader of a history should know besides its answer.
fn history_notes(h: &history::History) {
    if h.torn > 0 {
        eprintln!(
            "keepalive: {} line(s) of the history did not read back (a tracer killed while              writing) and were skipped",
            h.torn
        );
    }
}

/// Bad input from the user (exit code 2, like a bad flag).
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

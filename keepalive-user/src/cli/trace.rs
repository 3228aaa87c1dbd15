//! `keepalive trace`.

use std::{fs::File, io, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use keepalive_user::{
    event::Detail,
    output::history,
    output::metrics::{self, Metrics},
    output::{Format, Writer},
    pipeline::{Pipeline, Show},
};

use super::args::{ConnectionArgs, EndsArgs, KernelArgs, UsageError};

pub const EXAMPLES: &str = "\
Examples:
  keepalive trace
      Everything, in columns, until Ctrl-C; then how many events were seen and lost.
  keepalive trace --port 5432 --kind keepalive_probe,keepalive_timeout
      Keepalive activity of PostgreSQL connections only.
  keepalive trace --netns blue --format json --output trace.jsonl
      Sockets of network namespace `blue` (ip netns), as JSON lines into a file.
  keepalive trace --quiet --metrics 127.0.0.1:9477
      Only how connections end, and Prometheus metrics, for a long-running service.
  keepalive trace --all --min-life 1m
      Every connection's end, ordinary ones too (by default short orderly closes with
      nothing wrong are only counted); orderly closes of interest from a minute of life.
  keepalive trace --pod shop/web-0 --quiet
      How the connections of one Kubernetes pod end (--unit and --container work alike);
      each line names the owner's unit, container or pod.

The event kinds are listed under --kind (from the event model itself).";

#[derive(Args)]
pub struct TraceArgs {
    /// Output format: columns for reading, JSON lines for jq and recordings, or one line per
    /// event and verdict for the systemd journal (the default when stdout is the journal),
    /// e.g. --format json.
    #[arg(short, long, value_enum)]
    format: Option<Format>,
    /// Serve Prometheus metrics (probes, answers, timeouts, connection ends by verdict and
    /// remote, lost events) on this address, e.g. --metrics 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// With --metrics: keepalive_connections_at_risk counts, every 30 s, the established
    /// connections a path that forgets idle ones after this long would kill, e.g.
    /// --idle-limit 350s (or `path`: what the last `keepalive path` measured).
    #[arg(long, value_name = "DURATION|path")]
    idle_limit: Option<String>,
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
    ends: EndsArgs,
    #[command(flatten)]
    kernel: KernelArgs,
}

pub async fn run(args: TraceArgs) -> Result<ExitCode> {
    let mut opts = args.kernel.load_options(&args.connection)?;
    opts.all_states = args.all_states || args.kind.iter().any(|k| k == "socket_destroyed");
    args.ends.apply(&mut opts);
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
            Show::Verdicts
        } else {
            Show::Trace
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
    let mut at_risk = None;
    if let Some(addr) = args.metrics {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Metrics::new()));
        metrics::serve(addr, shared.clone()).await?;
        if let Some(limit) = &args.idle_limit {
            let limit_s = super::sockets::idle_limit_s(limit)?;
            at_risk = Some(tokio::spawn(refresh_at_risk(
                shared.clone(),
                limit_s,
                args.connection.clone(),
            )));
        }
        pipeline = pipeline.with_metrics(shared);
    } else if args.idle_limit.is_some() {
        return Err(UsageError("--idle-limit needs --metrics (it sets a metric)".into()).into());
    }
    let traced =
        keepalive_user::trace::run(&opts, &args.connection.workloads(), &mut pipeline).await;
    if let Some(task) = at_risk {
        task.abort();
    }
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

/// Every 30 s, the connections at risk under `limit_s` as `keepalive sockets --idle-limit`
/// finds them into the metric: of the traced namespace with `--netns`, else of every
/// namespace (a sock_diag dump each, one /proc scan for owners).
async fn refresh_at_risk(
    metrics: std::sync::Arc<std::sync::Mutex<Metrics>>,
    limit_s: u32,
    connection: ConnectionArgs,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tick.tick().await;
        let connection = connection.clone();
        let rows = tokio::task::spawn_blocking(move || {
            super::sockets::connections_everywhere(&connection, Some(limit_s))
        })
        .await;
        match rows {
            Ok(Ok(rows)) => metrics.lock().unwrap().set_at_risk(&rows),
            Ok(Err(e)) => log::info!("connections at risk: {e:#}"),
            Err(e) => log::info!("connections at risk: {e}"),
        }
    }
}

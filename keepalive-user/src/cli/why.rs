//! `keepalive why`: live, from a recording (--from) or from the history (--since/--until).

use std::{fs::File, io, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use keepalive_user::{
    output::{Format, Writer},
    pipeline::{Flow, Pipeline, Show},
    replay,
};

use super::{
    args::{ConnectionArgs, EndsArgs, KernelArgs, PeriodArgs, UsageError},
    history,
};

pub const EXAMPLES: &str = "\
Examples:
  keepalive why --comm ssh
      Follows live until an ssh connection dies; prints its events and the verdict.
  keepalive why --since 12h --comm ssh
      Why ssh connections ended in the last 12 hours, newest first, from the history
      `keepalive trace --history` keeps; says when nobody was tracing.
  keepalive why --port 5432 --format json
      The same for a PostgreSQL connection, as JSON lines (events, then the verdict).
  keepalive why --unit postgresql
      The first connection of the postgresql.service unit's processes that dies (--container
      and --pod work alike).
  keepalive why --from trace.jsonl --addr 198.18.0.2
      Replays a recording made by `keepalive trace --format json --output trace.jsonl`.

Verdicts: keepalive_timeout, reset_after_probe, peer_reset, local_abort, retransmit_timeout,
          user_timeout, closed.";

#[derive(Args)]
pub struct WhyArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Replay this recording (from `keepalive trace --format json --output FILE`) instead of
    /// tracing live, e.g. --from trace.jsonl.
    #[arg(long, value_name = "FILE", conflicts_with = "since")]
    from: Option<PathBuf>,
    #[command(flatten)]
    pub period: PeriodArgs,
    /// Output format, e.g. --format json.
    #[arg(short, long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    ends: EndsArgs,
    #[command(flatten)]
    kernel: KernelArgs,
}

/// Live or from a recording: the first matching connection that ends.
pub async fn run(args: WhyArgs) -> Result<ExitCode> {
    let mut pipeline = Pipeline::new(
        Show::Why,
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
            let mut opts = args.kernel.load_options(&args.connection)?;
            args.ends.apply(&mut opts);
            keepalive_user::trace::run(&opts, &args.connection.workloads(), &mut pipeline).await?;
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
pub fn run_since(args: WhyArgs) -> Result<ExitCode> {
    let shown = history::from_history(
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

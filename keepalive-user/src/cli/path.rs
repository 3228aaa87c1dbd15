//! `keepalive path HOST:PORT`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use keepalive_user::output::Format;

use super::args::{ConnectionArgs, KernelArgs, UsageError};

pub const EXAMPLES: &str = "\
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
When even --min is forgotten, it searches below, down to 1 s; it recommends only an idle
time below one it saw kept.
Exit status: 0 a limit was measured, 1 none found up to --max (or nothing kept even at
1 s), 2 usage error.
Ctrl-C prints what is known so far.";

#[derive(Args)]
pub struct PathArgs {
    #[command(flatten)]
    path: keepalive_user::path::Args,
    #[command(flatten)]
    kernel: KernelArgs,
}

pub async fn run(args: PathArgs) -> Result<ExitCode> {
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
    if result.found() && !result.interrupted {
        keepalive_user::path::save_last(&result);
    }
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

//! `keepalive path HOST:PORT`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use keepalive_user::{
    output::Format,
    path::{MAX_IDLE_S, Settings},
};

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

fn parse_seconds(s: &str) -> Result<u32, String> {
    let d = keepalive_user::output::history::parse_duration(s)?;
    let secs = d.whole_seconds();
    if !(1..=i64::from(MAX_IDLE_S)).contains(&secs) {
        return Err(format!("`{s}`: from 1s to 32767s (TCP_KEEPIDLE's limit)"));
    }
    Ok(secs as u32)
}

#[derive(Args)]
pub struct PathArgs {
    /// The service to measure the path to: HOST:PORT, any server that holds idle TCP
    /// connections (sshd, a database, a web server with keep-alive), e.g. db.example.net:5432
    /// or [2001:db8::1]:22.
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
    /// The longest idle time to try, e.g. --max 30m (90s, 30m, 2h, 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_seconds)]
    pub max: u32,
    /// The shortest idle time to try, e.g. --min 5s.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_seconds)]
    pub min: u32,
    /// Connections open at once, at most (each round opens up to this many), e.g.
    /// --connections 8.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub connections: u16,
    /// Output format: words, or one JSON line with the result, e.g. --format json (the
    /// progress of each round goes to stderr either way).
    #[arg(short, long, value_enum, default_value = "human")]
    pub format: Format,
    /// Connect from this network namespace: a name from `ip netns` or a path such as
    /// /proc/PID/ns/net, e.g. --netns blue.
    #[arg(short = 'n', long, value_name = "NETNS")]
    pub netns: Option<String>,

    #[command(flatten)]
    kernel: KernelArgs,
}

pub async fn run(args: PathArgs) -> Result<ExitCode> {
    let target = &args.target;
    let port = target.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
    if !matches!(port, Some(Ok(p)) if p > 0) {
        return Err(UsageError(format!(
            "{target}: give HOST:PORT, e.g. db.example.net:5432 or [2001:db8::1]:22"
        ))
        .into());
    }
    if args.min > args.max {
        return Err(UsageError("--min is above --max".into()).into());
    }
    let load = args.kernel.load_options(&ConnectionArgs::default())?;
    let settings = Settings {
        target: args.target.clone(),
        max: args.max,
        min: args.min,
        connections: args.connections,
        netns: args.netns.clone(),
    };
    let result = keepalive_user::path::run(&settings, load).await?;
    if result.found() && !result.interrupted {
        keepalive_user::path::save_last(&result);
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&result)?),
        _ => print!("{}", result.human()),
    }
    Ok(if result.found() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

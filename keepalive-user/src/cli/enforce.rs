//! `keepalive enforce`.

use std::{io, process::ExitCode};

use anyhow::Result;
use keepalive_user::{
    enforce::Settings,
    output::{Format, Writer},
};

pub const EXAMPLES: &str = "\
Examples:
  keepalive enforce --cgroup system.slice/mysqldump.service --idle 60 --interval 10 --count 6
      Connections the service makes or accepts from now on probe after 60 s of idleness, so a
      NAT or firewall with a longer idle timeout keeps them, and a dead peer is noticed.
  keepalive enforce --cgroup batch --idle 30 --interval 5 --count 3 --port 5432 --dry-run
      Only report which PostgreSQL connections would be changed.

The cgroup is a path in the cgroup v2 hierarchy (found in /proc/self/mountinfo), absolute or
relative to it. Sockets that turned keepalive on themselves are left alone unless --force.
Each change is printed here and appears in `keepalive trace` as kind keepalive_enforced.";

/// `keepalive enforce`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct EnforceArgs {
    /// The cgroup (v2) whose processes' connections get keepalive, e.g. --cgroup user.slice.
    #[arg(long, value_name = "PATH")]
    pub cgroup: String,
    /// Idle seconds before the first probe (TCP_KEEPIDLE), e.g. --idle 60.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=32767))]
    pub idle: u32,
    /// Seconds between probes (TCP_KEEPINTVL), e.g. --interval 10.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=32767))]
    pub interval: u32,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT), e.g. --count 6.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=127))]
    pub count: u32,
    /// Also set TCP_USER_TIMEOUT, in milliseconds, e.g. --user-timeout 90000.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub user_timeout: u32,
    /// Also change sockets whose application turned keepalive on itself, e.g. --force.
    #[arg(long)]
    pub force: bool,
    /// Change nothing; report the connections that would be changed, e.g. --dry-run.
    #[arg(long)]
    pub dry_run: bool,
    /// Only connections with this local or remote port, e.g. --port 3306.
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Only connections with this local or remote address, e.g. --addr 198.18.0.2.
    #[arg(short, long, value_name = "IP")]
    pub addr: Option<std::net::IpAddr>,
    /// Output format, e.g. --format json.
    #[arg(short, long, value_enum, default_value = "human")]
    pub format: Format,
}

pub async fn run(args: EnforceArgs) -> Result<ExitCode> {
    let out = Writer::new(args.format, Box::new(io::stdout()));
    let settings = Settings {
        cgroup: args.cgroup,
        idle: args.idle,
        interval: args.interval,
        count: args.count,
        user_timeout: args.user_timeout,
        force: args.force,
        dry_run: args.dry_run,
        port: args.port,
        addr: args.addr,
    };
    keepalive_user::enforce::run(&settings, out).await?;
    Ok(ExitCode::SUCCESS)
}

//! `keepalive enforce`: its arguments live with the code in `keepalive_user::enforce`.

use std::{io, process::ExitCode};

use anyhow::Result;
use keepalive_user::{enforce::Args, output::Writer};

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

pub async fn run(args: Args) -> Result<ExitCode> {
    let out = Writer::new(args.format, Box::new(io::stdout()));
    keepalive_user::enforce::run(&args, out).await?;
    Ok(ExitCode::SUCCESS)
}

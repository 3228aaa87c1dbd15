//! `cargo xtask bench`: the overhead benchmark, in release builds.

use std::process::Command;

use anyhow::Result;

use crate::{
    setup,
    workspace::{cargo, run_checked, target_dir},
};

#[derive(clap::Args)]
pub struct Args {
    /// A short run (under two minutes), as CI's smoke test.
    #[arg(long)]
    quick: bool,
    /// Only these workloads (churn, bulk, keepalive_storm, timers, drops), e.g. --workload churn.
    #[arg(long)]
    workload: Vec<String>,
    /// Alternating rounds per workload (default 5, 3 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Idle connections probing every second in keepalive_storm (default 50,000, 2,000
    /// with --quick).
    #[arg(long)]
    storm_connections: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    setup::bench_packages()?;
    for (package, bin) in [
        ("keepalive-user", "keepalive"),
        ("keepalive-tests", "keepalive-bench"),
    ] {
        run_checked(
            cargo().args(["build", "--release", "--package", package, "--bin", bin]),
            &format!("building {bin}"),
        )?;
    }
    let release = target_dir().join("release");
    run_checked(
        Command::new(release.join("keepalive-bench"))
            .args(args.quick.then_some("--quick"))
            .args(
                args.workload
                    .iter()
                    .flat_map(|w| ["--workload", w.as_str()]),
            )
            .args(
                args.rounds
                    .iter()
                    .flat_map(|r| ["--rounds".to_string(), r.to_string()]),
            )
            .args(
                args.storm_connections
                    .iter()
                    .flat_map(|n| ["--storm-connections".to_string(), n.to_string()]),
            )
            .env("KEEPALIVE_BIN", release.join("keepalive")),
        "the benchmark",
    )
}

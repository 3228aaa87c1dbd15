//! `cargo xtask soak`: a long trace under churn, checked against what the soak did.

use anyhow::Result;

use crate::{
    setup,
    workspace::{build, cargo, run_checked},
};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 2)]
    minutes: u64,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let bin = build()?;
    run_checked(
        cargo()
            .args(["test", "--package", "keepalive-tests", "--test", "soak"])
            .args(["--", "--ignored", "--nocapture"])
            .env("KEEPALIVE_BIN", &bin)
            .env("KEEPALIVE_SOAK_SECS", (args.minutes * 60).to_string()),
        "the soak",
    )
}

//! `keepalive doctor`.

use std::{io, process::ExitCode};

use anyhow::Result;
use clap::Args;

use super::args::{ConnectionArgs, KernelArgs};

pub const EXAMPLES: &str = "\
Examples:
  keepalive doctor
      What this kernel offers, each mode loaded for real, and which one auto picks.
  keepalive doctor --mode kprobe
      The same report; exits 0 only if kprobe mode works here (a deployment's check).";

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    kernel: KernelArgs,
}

pub async fn run(args: DoctorArgs) -> Result<ExitCode> {
    let opts = args.kernel.load_options(&ConnectionArgs::default())?;
    let works = keepalive_user::doctor::report(&opts, &mut io::stdout().lock())?;
    Ok(if works {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

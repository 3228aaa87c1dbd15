//! `keepalive doctor`.

use std::{io, process::ExitCode};

use anyhow::Result;
use clap::Args;

use super::args::{ConnectionArgs, KernelArgs};

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

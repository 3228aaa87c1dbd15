//! `cargo xtask fuzz`: the record decoder and the replay parser under libFuzzer.

use std::{fs, process::Command};

use anyhow::{Result, bail};

use crate::{setup, workspace::workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

const TARGETS: [&str; 2] = ["decode_record", "replay_lines"];

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    setup::cargo_fuzz()?;
    for target in TARGETS {
        let corpus = workspace_root().join("fuzz/corpus").join(target);
        fs::create_dir_all(&corpus)?;
        let artifacts = workspace_root().join("fuzz/artifacts").join(target);
        let found = || fs::read_dir(&artifacts).map(|d| d.count()).unwrap_or(0);
        let before = found();
        // libFuzzer needs a nightly: the pinned one (the CARGO we run under is stable's).
        let status = Command::new("rustup")
            .current_dir(workspace_root().join("fuzz"))
            .args([
                "run",
                keepalive_toolchain::pinned(),
                "cargo",
                "fuzz",
                "run",
                target,
            ])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .status()?;
        if !status.success() {
            if found() > before {
                bail!(
                    "fuzz target {target} found a crash ({}): add it to \
                     keepalive-events/tests/regressions/{target}/ and fix it",
                    artifacts.display()
                );
            }
            bail!("fuzzing {target} failed to run ({status})");
        }
    }
    Ok(())
}

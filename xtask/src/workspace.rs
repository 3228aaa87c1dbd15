//! The workspace every task works in: its paths, cargo, the optimized binary, and commands
//! run to their end.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Runs `command` to its end; an error saying `what` failed unless it succeeded.
pub fn run_checked(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Builds the binary optimized, as it runs on a busy host, and returns its path.
pub fn build() -> Result<PathBuf> {
    run_checked(
        cargo().args([
            "build",
            "--release",
            "--package",
            "keepalive-user",
            "--bin",
            "keepalive",
        ]),
        "cargo build --release",
    )?;
    Ok(target_dir().join("release").join("keepalive"))
}

pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

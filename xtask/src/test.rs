//! `cargo xtask test`: unit tests and the end-to-end scenarios, with the binary they drive.

use anyhow::Result;

use crate::{
    modules, setup,
    workspace::{build, cargo, run_checked, workspace_root},
};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, e.g. `-- linger`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    // Cheap and structural: before anything is built.
    let cycles = modules::workspace_cycles(&workspace_root())?;
    if !cycles.is_empty() {
        anyhow::bail!("module cycles:\n{}", cycles.join("\n"));
    }
    let bin = build()?;
    // The docs test reads the development tasks' --help from this very binary.
    let xtask = std::env::current_exe()?;
    // Auto mode: kprobe mode where the kernel has kprobes (the tests assert which ran).
    run_checked(
        cargo()
            .args(["test", "--workspace", "--exclude", "keepalive-ebpf"])
            .args(&args.args)
            .env("KEEPALIVE_BIN", &bin)
            .env("XTASK_BIN", &xtask),
        "the tests",
    )?;
    // There tracepoint mode is a mode of its own that users get where kprobes are off: its
    // scenarios run too (elsewhere auto mode was tracepoint mode already).
    if std::path::Path::new(KPROBE_EVENTS).exists() {
        run_checked(
            cargo()
                .args(["test", "--package", "keepalive-tests"])
                .args(&args.args)
                .env("KEEPALIVE_BIN", &bin)
                .env("XTASK_BIN", &xtask)
                .env("KEEPALIVE_MODE", "tracepoint"),
            "the end-to-end scenarios in tracepoint mode",
        )?;
    }
    Ok(())
}

/// Present when the kernel can attach kprobes (perf's kprobe event source).
const KPROBE_EVENTS: &str = "/sys/bus/event_source/devices/kprobe";

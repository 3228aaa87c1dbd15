//! `cargo xtask setup|build|run|test`: the project's own commands, from a fresh machine on.

mod cpio;
mod setup;
mod vm;

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "keepalive's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (Debian packages, the kernel programs' pinned
    /// nightly with rust-src, bpf-linker on the same LLVM); fast when present.
    Setup {
        /// Prove the from-scratch path instead: rustup, Rust and bpf-linker installed into
        /// empty temporary homes, setup, and a build of the kernel programs with them.
        #[arg(long)]
        fresh_check: bool,
    },
    /// Build the `keepalive` binary (kernel programs included).
    Build,
    /// Trace live: `keepalive trace` with the given arguments, e.g. `cargo xtask run -- --port 22`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure tracing overhead: each workload without a tracer, under keepalive and under
    /// bpftrace; writes target/bench/results.json.
    Bench {
        /// A short run (under two minutes), as CI's smoke test.
        #[arg(long)]
        quick: bool,
        /// Only these workloads (churn, bulk, keepalive_storm, timers), e.g. --workload churn.
        #[arg(long)]
        workload: Vec<String>,
        /// Alternating rounds per workload (default 5, 3 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Idle connections probing every second in keepalive_storm (default 50,000, 2,000
        /// with --quick).
        #[arg(long)]
        storm_connections: Option<usize>,
    },
    /// Fuzz the record decoder and the replay parser (cargo-fuzz, installed if missing).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Churn connections and keepalive traffic while tracing; report the tracer's RSS and fds.
    Soak {
        #[arg(long, default_value_t = 2)]
        minutes: u64,
    },
    /// Run the end-to-end scenarios on other kernels under QEMU (Debian 12's 6.1 and 6.12) and
    /// on the host kernel, in every mode each supports; compare the modes' verdicts.
    VmTest {
        /// Only the guest kernel whose label ends with this, e.g. --kernel 6.1 (debian-6.1).
        #[arg(long)]
        kernel: Option<String>,
        /// Skip the scenarios on the host kernel.
        #[arg(long)]
        no_host: bool,
        /// Run this shell command in each guest instead of the scenarios, e.g.
        /// --command 'keepalive trace --mode kprobe & sleep 5'.
        #[arg(long)]
        command: Option<String>,
    },
    /// Run every test: unit tests and the end-to-end scenarios in network namespaces (as root).
    Test {
        /// Extra arguments for `cargo test`, e.g. `-- linger`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Setup { fresh_check: false } => setup::run(),
        Task::Setup { fresh_check: true } => {
            setup::fresh_check(&workspace_root(), &target_dir().join("fresh-check"))
        }
        Task::Build => {
            setup::run()?;
            build().map(|bin| println!("{}", bin.display()))
        }
        Task::Run { args } => {
            setup::run()?;
            let bin = build()?;
            let args: Vec<String> = args.into_iter().skip_while(|a| a == "--").collect();
            // Replace ourselves in spirit: Ctrl-C reaches the tracer, which prints its summary.
            let status = Command::new(&bin).arg("trace").args(&args).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Bench {
            quick,
            workload,
            rounds,
            storm_connections,
        } => {
            setup::run()?;
            setup::bench_packages()?;
            for (package, bin) in [
                ("keepalive-user", "keepalive"),
                ("keepalive-tests", "keepalive-bench"),
            ] {
                let status = cargo()
                    .args(["build", "--release", "--package", package, "--bin", bin])
                    .status()?;
                if !status.success() {
                    bail!("building {bin} failed");
                }
            }
            let release = target_dir().join("release");
            let status = Command::new(release.join("keepalive-bench"))
                .args(quick.then_some("--quick"))
                .args(workload.iter().flat_map(|w| ["--workload", w.as_str()]))
                .args(
                    rounds
                        .iter()
                        .flat_map(|r| ["--rounds".to_string(), r.to_string()]),
                )
                .args(
                    storm_connections
                        .iter()
                        .flat_map(|n| ["--storm-connections".to_string(), n.to_string()]),
                )
                .env("KEEPALIVE_BIN", release.join("keepalive"))
                .status()?;
            if !status.success() {
                bail!("benchmark failed");
            }
            Ok(())
        }
        Task::Fuzz { seconds } => {
            setup::run()?;
            setup::cargo_fuzz()?;
            for target in ["decode_record", "replay_lines"] {
                let corpus = workspace_root().join("fuzz/corpus").join(target);
                std::fs::create_dir_all(&corpus)?;
                // libFuzzer needs a nightly: the pinned one (the CARGO we run under is stable's).
                let artifacts = workspace_root().join("fuzz/artifacts").join(target);
                let before = std::fs::read_dir(&artifacts)
                    .map(|d| d.count())
                    .unwrap_or(0);
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
                    .arg(format!("-max_total_time={seconds}"))
                    .status()?;
                if !status.success() {
                    let after = std::fs::read_dir(&artifacts)
                        .map(|d| d.count())
                        .unwrap_or(0);
                    if after > before {
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
        Task::Soak { minutes } => {
            setup::run()?;
            let bin = build()?;
            let status = cargo()
                .args(["test", "--package", "keepalive-tests", "--test", "soak"])
                .args(["--", "--ignored", "--nocapture"])
                .env("KEEPALIVE_BIN", &bin)
                .env("KEEPALIVE_SOAK_SECS", (minutes * 60).to_string())
                .status()?;
            if !status.success() {
                bail!("soak failed");
            }
            Ok(())
        }
        Task::VmTest {
            kernel,
            no_host,
            command,
        } => {
            setup::run()?;
            setup::vm_packages()?;
            let bin = build()?;
            vm::run(
                &bin,
                &vm::Options {
                    kernel,
                    no_host,
                    command,
                },
            )
        }
        Task::Test { args } => {
            setup::run()?;
            let bin = build()?;
            let status = cargo()
                .args(["test", "--workspace", "--exclude", "keepalive-ebpf"])
                .args(&args)
                .env("KEEPALIVE_BIN", &bin)
                .status()?;
            if !status.success() {
                bail!("tests failed");
            }
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Builds the binary and returns its path.
fn build() -> Result<PathBuf> {
    let status = cargo()
        .args(["build", "--package", "keepalive-user", "--bin", "keepalive"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(target_dir().join("debug").join("keepalive"))
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

//! `cargo xtask setup|build|run|test|bench|fuzz|soak|vm-test|image`: the project's own commands,
//! from a fresh machine on. One module per task.

mod bench;
mod cpio;
mod fuzz;
mod image;
mod modules;
mod setup;
mod soak;
mod test;
mod vm;
mod workspace;

use std::process::Command;

use anyhow::Result;
use clap::{Parser, Subcommand};
use workspace::{build, target_dir, workspace_root};

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
    /// Build the optimized `keepalive` binary (kernel programs included).
    Build,
    /// Trace live: `keepalive trace` with the given arguments, e.g. `cargo xtask run -- --port 22`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure tracing overhead: each workload without a tracer, under keepalive and under
    /// bpftrace; writes target/bench/results.json.
    Bench(bench::Args),
    /// Fuzz the record decoder and the replay parser (cargo-fuzz, installed if missing).
    Fuzz(fuzz::Args),
    /// Churn connections and keepalive traffic while tracing; report the tracer's RSS and fds.
    Soak(soak::Args),
    /// Run the end-to-end scenarios on other kernels under QEMU (Debian 12's 6.1 and 6.12) and
    /// on the host kernel, in every mode each supports; compare the modes' verdicts.
    VmTest(vm::Args),
    /// Run the test suite: unit tests and the end-to-end scenarios in network namespaces (as
    /// root), in each mode the host supports. Soak, fuzz and vm-test are tasks of their own.
    Test(test::Args),
    /// Build the OCI image the DaemonSet runs (a static binary from scratch, with buildah),
    /// into target/image/, and run its binary's --version and doctor.
    Image(image::Args),
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
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::Soak(args) => soak::run(args),
        Task::VmTest(args) => vm::task(args),
        Task::Test(args) => test::run(args),
        Task::Image(args) => image::run(args),
    }
}

//! `cargo xtask test`: unit tests and the end-to-end scenarios, with the binary they drive.

use anyhow::Result;

use crate::{build, cargo, run_checked, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, e.g. `-- linger`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let bin = build()?;
    run_checked(
        cargo()
            .args(["test", "--workspace", "--exclude", "keepalive-ebpf"])
            .args(&args.args)
            .env("KEEPALIVE_BIN", &bin),
        "the tests",
    )
}

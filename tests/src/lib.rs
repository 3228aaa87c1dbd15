//! A small test-topology library: network namespaces joined by veth, nft rules, sockets
//! made inside a namespace, and the `keepalive` tracer run as a user would run it.
//!
//! Every resource cleans up on drop (also when a test panics); names are unique per process
//! and test so scenarios run in parallel; every wait is bounded.

pub mod netns;
pub mod tracer;

pub use netns::{Link, Netns};
pub use tracer::Tracer;

/// Runs a command and panics with its output if it fails: test setup must not half-work.
pub fn sh(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True when running as root; the end-to-end scenarios need it and say so otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

//! Installs what the build and the tests need, idempotently: cheap checks first, and the
//! slow installs only for what is missing.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages: LLVM 22 for bpf-linker, and the real tools the tests drive (ip, nft, sshd,
/// bpftool to check detaching, python3 for a killable server process, systemd-analyze).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "nftables",
    "iproute2",
    "openssh-server",
    "openssh-client",
    "bpftool",
    "python3",
    "systemd",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub fn run() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if !missing.is_empty() {
        install_packages(&missing)?;
    }
    if !has_rust_src()? {
        step(
            "installing nightly rust-src (the BPF target builds core from source)",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
        )?;
    }
    if !bpf_linker_ok() {
        let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
        step(
            "building bpf-linker against LLVM 22 (a few minutes, once)",
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                    "--locked",
                ])
                .env("PATH", path),
        )?;
    }
    Ok(())
}

fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn install_packages(missing: &[&str]) -> Result<()> {
    let is_root = euid() == 0;
    let has_apt = PathBuf::from("/usr/bin/apt-get").exists();
    if !is_root || !has_apt {
        bail!(
            "missing packages: {}\nInstall them (Debian 12 or later), then run this again:\n  \
             sudo apt-get update && sudo apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step(
        "updating the package lists",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    step(
        &format!("installing {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn has_rust_src() -> Result<bool> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else {
        bail!("rustup is needed (https://rustup.rs); then run this again");
    };
    if !out.status.success() {
        return Ok(false);
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists())
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

fn step(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("setup: {what}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("setup failed while {what}: {cmd:?} exited with {status}");
    }
    Ok(())
}

fn euid() -> u32 {
    // /proc/self/status "Uid: real effective ..." avoids a libc dependency for one number.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// cargo-fuzz for `cargo xtask fuzz` (libFuzzer needs the nightly toolchain, present already).
pub fn cargo_fuzz() -> Result<()> {
    let present = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    step(
        "installing cargo-fuzz",
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
    )
}

/// bpftrace, the benchmark's point of comparison (Debian's package).
pub fn bench_packages() -> Result<()> {
    if deb_installed("bpftrace") {
        return Ok(());
    }
    install_packages(&["bpftrace"])
}

/// QEMU and a static busybox for `cargo xtask vm-test`'s guests.
pub fn vm_packages() -> Result<()> {
    let missing: Vec<&str> = ["qemu-system-x86", "busybox-static"]
        .into_iter()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    install_packages(&missing)
}

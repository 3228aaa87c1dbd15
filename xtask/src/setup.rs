//! Installs what the build and the tests need, idempotently: cheap checks first, and the
//! slow installs only for what is missing. The kernel programs' compiler is the toolchain
//! pinned in keepalive-ebpf/rust-toolchain.toml; bpf-linker is built against the LLVM that
//! compiler carries (keepalive_toolchain checks the pair).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use keepalive_toolchain::{self as toolchain, BPF_LINKER_VERSION, Problem};

/// Debian packages for building and for the tools the tests drive: a C toolchain (the host
/// build links with cc; libFuzzer is C++), sysctl, ip, nft, sshd/ssh, bpftool (to check
/// detaching), python3 (a killable server process), systemd-analyze (the unit file),
/// tcpdump (the wire, which the tests compare the trace with).
const PACKAGES: &[&str] = &[
    "ca-certificates",
    "gcc",
    "g++",
    "libc6-dev",
    "procps",
    "nftables",
    "iproute2",
    "openssh-server",
    "openssh-client",
    "bpftool",
    "python3",
    "systemd",
    "tcpdump",
    // xtask's own tests read the VM initramfs back with busybox cpio.
    "busybox-static",
];

/// What bpf-linker's build needs besides LLVM `major` itself.
fn llvm_packages(major: u32) -> Vec<String> {
    vec![
        format!("llvm-{major}-dev"),
        format!("libpolly-{major}-dev"),
        "zlib1g-dev".into(),
        "libzstd-dev".into(),
    ]
}

pub fn run() -> Result<()> {
    install_missing(PACKAGES)?;
    let pinned = toolchain::pinned();
    match toolchain::has_rust_src() {
        Ok(true) => {}
        Ok(false) | Err(Problem::ToolchainMissing) => step(
            &format!("installing {pinned} with rust-src, the kernel programs' compiler"),
            Command::new("rustup").args([
                "toolchain",
                "install",
                pinned,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
        )?,
        Err(problem) => bail!("{problem}"),
    }
    match toolchain::check() {
        Ok(_) => return Ok(()),
        Err(Problem::LinkerMissing | Problem::LinkerVersion { .. }) => {}
        Err(Problem::LlvmMismatch {
            rustc_llvm,
            linker_llvm,
        }) => eprintln!(
            "setup: bpf-linker reads LLVM {linker_llvm} bitcode, {pinned} emits LLVM \
             {rustc_llvm}: rebuilding it"
        ),
        Err(problem) => bail!("{problem}"),
    }
    let llvm = toolchain::llvm_of_pinned()?;
    let packages = llvm_packages(llvm);
    if !deb_installed(&packages[0]) && !deb_available(&packages[0]) {
        bail!(
            "{pinned} carries LLVM {llvm}, and this machine's package sources have no \
             {} to build bpf-linker against. Pin a nightly whose `rustc -vV` reports the \
             LLVM your distribution packages (keepalive-ebpf/rust-toolchain.toml), or install \
             LLVM {llvm} and run:\n  {}",
            packages[0],
            toolchain::install_linker_command(llvm)
        );
    }
    install_missing(&packages.iter().map(String::as_str).collect::<Vec<_>>())?;
    let llvm_bin = format!("/usr/lib/llvm-{llvm}/bin");
    let path = format!("{llvm_bin}:{}", std::env::var("PATH").unwrap_or_default());
    step(
        &format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} (a few minutes, once)"
        ),
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{llvm}"))
            .args(["--locked", "--force"])
            .env("PATH", path),
    )?;
    // The pair, once more, from what is installed now: the build's own check would say the
    // same later, but here is where it can be fixed.
    let ready = toolchain::check().map_err(|p| anyhow::anyhow!("after setup: {p}"))?;
    eprintln!(
        "setup: ready: {} and {} both on LLVM {}",
        ready.toolchain,
        ready.linker.display(),
        ready.llvm
    );
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

/// Whether apt knows the package, refreshing its lists first only when it does not (a
/// machine's lists may be older than the package).
fn deb_available(package: &str) -> bool {
    let known = || {
        Command::new("apt-cache")
            .args(["show", package])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if known() {
        return true;
    }
    if euid() == 0 {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    }
    known()
}

fn install_missing(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = euid() == 0;
    let has_apt = PathBuf::from("/usr/bin/apt-get").exists();
    if !is_root || !has_apt {
        bail!(
            "missing packages: {}\nInstall them (Debian 12 or later; other distributions: \
             their packages of the same names), then run this again:\n  \
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
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn step(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("setup: {what}");
    crate::workspace::run_checked(cmd, what).context("setup failed")
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

/// cargo-fuzz for `cargo xtask fuzz`, run under the pinned nightly (libFuzzer needs one).
pub fn cargo_fuzz() -> Result<()> {
    let present = Command::new("rustup")
        .args(["run", toolchain::pinned(), "cargo", "fuzz", "--version"])
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
    install_missing(&["bpftrace"])
}

/// buildah for `cargo xtask image`, and Rust's musl target for its static binary.
pub fn image_tools() -> Result<()> {
    install_missing(&["buildah"])?;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("x86_64-unknown-linux-musl"))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    step(
        "adding Rust's musl target",
        Command::new("rustup").args(["target", "add", "x86_64-unknown-linux-musl"]),
    )
}

/// QEMU, objcopy and xz for `cargo xtask vm-test`'s guests (busybox comes with setup).
pub fn vm_packages() -> Result<()> {
    install_missing(&["qemu-system-x86", "binutils", "xz-utils"])
}

/// Proves the README's path on this machine as a newcomer meets it: rustup, cargo and
/// bpf-linker installed from nothing into empty, temporary RUSTUP_HOME and CARGO_HOME,
/// `cargo xtask setup`, then a build of the kernel programs with what it installed. Debian
/// packages are shared with the machine (setup checks them the same way either way).
pub fn fresh_check(workspace: &Path, scratch: &Path) -> Result<()> {
    let started = Instant::now();
    if scratch.exists() {
        std::fs::remove_dir_all(scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    let cargo_home = scratch.join("cargo");
    let rustup_home = scratch.join("rustup");
    std::fs::create_dir_all(&cargo_home)?;
    // rustup-init is rustup under another name: the installer a newcomer runs.
    let rustup = toolchain::on_path("rustup").ok_or(Problem::NoRustup)?;
    let init = scratch.join("rustup-init");
    std::fs::copy(&rustup, &init).with_context(|| format!("copying {}", rustup.display()))?;
    // A newcomer's environment: nothing of this machine's Rust installation, no variables
    // an outer cargo or rustup set (RUSTUP_TOOLCHAIN, CARGO_*), only the system PATH.
    let fresh = |program: &Path| {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .current_dir(workspace)
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    cargo_home.join("bin").display()
                ),
            )
            .env(
                "HOME",
                std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
            )
            .env("CARGO_HOME", &cargo_home)
            .env("RUSTUP_HOME", &rustup_home)
            .env("CARGO_TARGET_DIR", scratch.join("target"))
            .env("RUSTUP_AUTO_INSTALL", "0");
        cmd
    };
    step(
        "fresh check: installing rustup and stable Rust into empty homes",
        fresh(&init).args([
            "-y",
            "--no-modify-path",
            "--profile",
            "minimal",
            "--default-toolchain",
            "stable",
        ]),
    )?;
    let cargo = cargo_home.join("bin/cargo");
    step(
        "fresh check: cargo xtask setup",
        fresh(&cargo).args(["xtask", "setup"]),
    )?;
    step(
        "fresh check: building keepalive and its kernel programs with what setup installed",
        fresh(&cargo).args(["build", "--package", "keepalive-user", "--bin", "keepalive"]),
    )?;
    let bin = scratch.join("target/debug/keepalive");
    step(
        "fresh check: running the binary it built",
        Command::new(&bin).arg("--version"),
    )?;
    std::fs::remove_dir_all(scratch).ok();
    eprintln!(
        "setup: fresh check passed in {} s: rustup, {} and bpf-linker {} from nothing, then the \
         kernel programs built",
        started.elapsed().as_secs(),
        toolchain::pinned(),
        BPF_LINKER_VERSION
    );
    Ok(())
}

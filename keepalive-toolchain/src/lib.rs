//! The compiler of keepalive's kernel programs, and whether bpf-linker can link what it emits.
//!
//! rustc compiles the kernel programs to LLVM bitcode and bpf-linker reads that bitcode with
//! the LLVM it was built against: bitcode of a newer LLVM major fails there as
//! `ERROR llvm: Invalid record`. So the pair is checked, not each tool alone: by
//! `cargo xtask setup` (which installs or rebuilds what is missing) and by keepalive-user's
//! build script (which stops before that error and says what to run).

use std::{
    env, fmt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The toolchain file that names the kernel programs' compiler (the one place it is named).
const TOOLCHAIN_FILE: &str = include_str!("../../keepalive-ebpf/rust-toolchain.toml");

/// The bpf-linker release the build is verified with.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The pinned toolchain, e.g. `nightly-2026-06-15`.
pub fn pinned() -> &'static str {
    channel(TOOLCHAIN_FILE).expect("keepalive-ebpf/rust-toolchain.toml names a channel")
}

/// The `channel = "..."` of a rust-toolchain.toml.
fn channel(toml: &str) -> Option<&str> {
    toml.lines().find_map(|line| {
        let value = line.trim().strip_prefix("channel")?.trim_start();
        Some(value.strip_prefix('=')?.trim().trim_matches('"'))
    })
}

/// The LLVM major in `rustc -vV` (`LLVM version: 22.1.6`) or in LLVM's own `--version`
/// (`Debian LLVM version 22.1.8`).
pub fn llvm_major(version_text: &str) -> Option<u32> {
    let (_, rest) = version_text.split_once("LLVM version")?;
    let digits: String = rest
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What stands between this machine and a BPF build, with what to run about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NoRustup,
    ToolchainMissing,
    RustSrcMissing,
    LinkerMissing,
    LinkerVersion {
        found: String,
    },
    LlvmMismatch {
        rustc_llvm: u32,
        linker_llvm: u32,
    },
    /// A tool ran but its LLVM version could not be read from what it printed.
    Unreadable {
        what: &'static str,
        output: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let toolchain = pinned();
        match self {
            Problem::NoRustup => write!(
                f,
                "rustup is not installed; the kernel programs need its pinned {toolchain}.\n\
                 Install it, then run `cargo xtask setup`:\n  \
                 curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y\n  \
                 . \"$HOME/.cargo/env\""
            ),
            Problem::ToolchainMissing => write!(
                f,
                "the kernel programs' compiler {toolchain} (keepalive-ebpf/rust-toolchain.toml) \
                 is not installed.\nRun `cargo xtask setup`, or:\n  \
                 rustup toolchain install {toolchain} --profile minimal --component rust-src"
            ),
            Problem::RustSrcMissing => write!(
                f,
                "{toolchain} lacks rust-src (the BPF target builds core from source).\n\
                 Run `cargo xtask setup`, or:\n  rustup component add rust-src --toolchain {toolchain}"
            ),
            Problem::LinkerMissing => write!(
                f,
                "bpf-linker is not on PATH.\nRun `cargo xtask setup`, or:\n  {}",
                install_linker_command(llvm_of_pinned().unwrap_or(22))
            ),
            Problem::LinkerVersion { found } => write!(
                f,
                "bpf-linker is {found}, the build is verified with {BPF_LINKER_VERSION}.\n\
                 Run `cargo xtask setup`, or:\n  {}",
                install_linker_command(llvm_of_pinned().unwrap_or(22))
            ),
            Problem::LlvmMismatch {
                rustc_llvm,
                linker_llvm,
            } => write!(
                f,
                "{toolchain} emits LLVM {rustc_llvm} bitcode but bpf-linker is built against LLVM \
                 {linker_llvm}: it would fail with \"ERROR llvm: Invalid record\".\n\
                 Run `cargo xtask setup` (it rebuilds bpf-linker), or:\n  {}",
                install_linker_command(*rustc_llvm)
            ),
            Problem::Unreadable { what, output } => {
                write!(
                    f,
                    "could not read the LLVM version of {what} from: {output}"
                )
            }
        }
    }
}

impl std::error::Error for Problem {}

/// The command that builds bpf-linker against LLVM `major` (Debian's llvm-MAJOR-dev).
pub fn install_linker_command(major: u32) -> String {
    format!(
        "PATH=/usr/lib/llvm-{major}/bin:$PATH cargo install bpf-linker --version \
         {BPF_LINKER_VERSION} --no-default-features --features llvm-{major} --locked --force"
    )
}

/// `rustup run <pinned> ...`, never installing anything by itself (the checks only look).
fn pinned_command(program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", pinned(), program])
        .env("RUSTUP_AUTO_INSTALL", "0");
    cmd
}

fn run(mut cmd: Command) -> Option<Output> {
    cmd.output().ok()
}

/// The LLVM major of the pinned toolchain.
pub fn llvm_of_pinned() -> Result<u32, Problem> {
    let mut cmd = pinned_command("rustc");
    cmd.arg("-vV");
    let Some(out) = run(cmd) else {
        return Err(Problem::NoRustup);
    };
    if !out.status.success() {
        return Err(Problem::ToolchainMissing);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    llvm_major(&text).ok_or_else(|| Problem::Unreadable {
        what: "the pinned rustc",
        output: text.into_owned(),
    })
}

/// Whether the pinned toolchain has the library sources `-Z build-std=core` needs.
pub fn has_rust_src() -> Result<bool, Problem> {
    let mut cmd = pinned_command("rustc");
    cmd.args(["--print", "sysroot"]);
    let Some(out) = run(cmd) else {
        return Err(Problem::NoRustup);
    };
    if !out.status.success() {
        return Err(Problem::ToolchainMissing);
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists())
}

/// The program `name` as a command would find it on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// bpf-linker on PATH, as aya-build will find it.
pub fn find_linker() -> Option<PathBuf> {
    on_path("bpf-linker")
}

/// The bpf-linker release, e.g. `0.13.0`.
pub fn linker_version(linker: &Path) -> Option<String> {
    let out = Command::new(linker).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.trim()
            .trim_start_matches("bpf-linker")
            .trim()
            .to_string(),
    )
}

/// The LLVM major bpf-linker reads bitcode with: its LLVM prints its version and exits
/// before any input is read.
pub fn linker_llvm(linker: &Path) -> Result<u32, Problem> {
    let out = Command::new(linker)
        .args(["--llvm-args=--version", "-o", "/dev/null", "/dev/null"])
        .output()
        .map_err(|_| Problem::LinkerMissing)?;
    let text = String::from_utf8_lossy(&out.stdout);
    llvm_major(&text).ok_or_else(|| Problem::Unreadable {
        what: "bpf-linker",
        output: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    })
}

/// Both sides' LLVM majors agree.
pub fn pair(rustc_llvm: u32, linker_llvm: u32) -> Result<(), Problem> {
    if rustc_llvm == linker_llvm {
        Ok(())
    } else {
        Err(Problem::LlvmMismatch {
            rustc_llvm,
            linker_llvm,
        })
    }
}

/// What the check found on a machine ready to build the kernel programs.
#[derive(Debug)]
pub struct Ready {
    pub toolchain: &'static str,
    pub llvm: u32,
    pub linker: PathBuf,
}

/// Everything the BPF build needs, checked in the order a fix must follow.
pub fn check() -> Result<Ready, Problem> {
    let rustc_llvm = llvm_of_pinned()?;
    if !has_rust_src()? {
        return Err(Problem::RustSrcMissing);
    }
    let linker = find_linker().ok_or(Problem::LinkerMissing)?;
    match linker_version(&linker) {
        Some(v) if v == BPF_LINKER_VERSION => {}
        found => {
            return Err(Problem::LinkerVersion {
                found: found.unwrap_or_else(|| "unreadable".into()),
            });
        }
    }
    pair(rustc_llvm, linker_llvm(&linker)?)?;
    Ok(Ready {
        toolchain: pinned(),
        llvm: rustc_llvm,
        linker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_a_dated_nightly() {
        let p = pinned();
        assert!(p.starts_with("nightly-20"), "{p}");
        assert_eq!(p.len(), "nightly-YYYY-MM-DD".len(), "{p}");
    }

    #[test]
    fn channel_is_read_from_toolchain_toml() {
        let toml =
            "# c\n[toolchain]\nchannel = \"nightly-2026-06-15\"\ncomponents = [\"rust-src\"]\n";
        assert_eq!(channel(toml), Some("nightly-2026-06-15"));
        assert_eq!(channel("[toolchain]\n"), None);
    }

    #[test]
    fn llvm_major_from_rustc_and_from_llvm() {
        let rustc = "rustc 1.101.0-nightly (abc 2026-10-29)\nbinary: rustc\nLLVM version: 23.1.4\n";
        assert_eq!(llvm_major(rustc), Some(23));
        assert_eq!(
            llvm_major("Debian LLVM version 22.1.8\n  Optimized build.\n"),
            Some(22)
        );
        assert_eq!(llvm_major("rustc 1.95.0\n"), None);
    }

    /// The state a newcomer met: rustup's moving nightly at LLVM 23, bpf-linker on LLVM 22.
    #[test]
    fn llvm_23_bitcode_for_an_llvm_22_linker_is_refused_with_the_fix() {
        let err = pair(23, 22).unwrap_err();
        assert_eq!(
            err,
            Problem::LlvmMismatch {
                rustc_llvm: 23,
                linker_llvm: 22
            }
        );
        let message = err.to_string();
        assert!(message.contains("Invalid record"), "{message}");
        assert!(message.contains("--features llvm-23"), "{message}");
        assert!(pair(22, 22).is_ok());
    }
}

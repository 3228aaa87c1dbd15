//! `cargo xtask image`: an OCI image from scratch holding one static `keepalive` (musl, so
//! the image needs no libc), built with buildah from Debian's packages: nothing is pulled
//! from a registry. The image goes to an OCI archive a node can load; then the binary is
//! taken from the image's root filesystem and must run `--version` and `doctor` here.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup,
    workspace::{run_checked, target_dir, workspace_root},
};

/// The image's name, as the DaemonSet names it.
pub const IMAGE: &str = concat!("localhost/keepalive:", env!("CARGO_PKG_VERSION"));
const MUSL: &str = "x86_64-unknown-linux-musl";

#[derive(clap::Args)]
pub struct Args {
    /// Build only; do not run the image's binary (`--version`, `doctor`) afterwards.
    #[arg(long)]
    no_check: bool,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    setup::image_tools()?;
    let bin = static_binary()?;
    let dir = target_dir().join("image");
    std::fs::create_dir_all(&dir)?;
    // Its own store under target/: neither the host's container storage nor its driver
    // settings are touched.
    let buildah = |args: &[&str]| -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(dir.join("storage"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    let container = output(&mut buildah(&["from", "scratch"]))?;
    let built = (|| {
        run_checked(
            buildah(&["copy", "--chmod", "0755", &container])
                .arg(&bin)
                .arg("/keepalive"),
            "buildah copy",
        )?;
        run_checked(
            &mut buildah(&[
                "config",
                "--entrypoint",
                r#"["/keepalive"]"#,
                "--cmd",
                "trace",
                "--label",
                "org.opencontainers.image.title=keepalive",
                "--label",
                concat!(
                    "org.opencontainers.image.version=",
                    env!("CARGO_PKG_VERSION")
                ),
                &container,
            ]),
            "buildah config",
        )?;
        run_checked(
            &mut buildah(&["commit", "--rm", &container, IMAGE]),
            "buildah commit",
        )
    })();
    if built.is_err() {
        let _ = buildah(&["rm", &container]).status();
    }
    built?;
    let archive = dir.join(format!("keepalive-{}.oci.tar", env!("CARGO_PKG_VERSION")));
    let _ = std::fs::remove_file(&archive);
    run_checked(
        &mut buildah(&[
            "push",
            IMAGE,
            &format!("oci-archive:{}:{IMAGE}", archive.display()),
        ]),
        "buildah push to an OCI archive",
    )?;
    println!("image {IMAGE}\narchive {}", archive.display());
    if args.no_check {
        return Ok(());
    }
    // The binary as the image holds it, from the image's root filesystem.
    let checking = output(&mut buildah(&["from", IMAGE]))?;
    let checked = (|| {
        let root = PathBuf::from(output(&mut buildah(&["mount", &checking]))?);
        let inside = root.join("keepalive");
        let version = output(Command::new(&inside).arg("--version"))?;
        println!("from the image: {version}");
        run_checked(
            Command::new(&inside).arg("doctor"),
            "the image's keepalive doctor",
        )
    })();
    let _ = buildah(&["umount", &checking]).status();
    let _ = buildah(&["rm", &checking]).status();
    checked
}

/// `keepalive` linked statically against musl.
fn static_binary() -> Result<PathBuf> {
    run_checked(
        Command::new("cargo")
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "-p",
                "keepalive-user",
                "--bin",
                "keepalive",
            ])
            .args(["--target", MUSL]),
        "building a static keepalive",
    )?;
    let bin = target_dir().join(MUSL).join("release").join("keepalive");
    if !is_static(&bin)? {
        bail!("{} is not statically linked", bin.display());
    }
    Ok(bin)
}

/// No program interpreter (PT_INTERP) in the ELF program headers: nothing to load at start.
fn is_static(bin: &Path) -> Result<bool> {
    let elf = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        bail!("{}: not a 64-bit ELF file", bin.display());
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) != PT_INTERP
    }))
}

/// Runs `c` and returns its standard output, trimmed.
fn output(c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DaemonSet runs the image this task builds, and keeps the metrics (remote
    /// endpoints, units, pods) off the node's network address: loopback behind the proxy.
    #[test]
    fn the_daemonset_runs_this_image_and_serves_metrics_on_loopback_only() {
        let yaml =
            std::fs::read_to_string(workspace_root().join("deploy/keepalive-daemonset.yaml"))
                .unwrap();
        assert!(
            yaml.lines()
                .any(|l| l.trim_start().starts_with(&format!("image: {IMAGE}"))),
            "deploy/keepalive-daemonset.yaml does not run {IMAGE}"
        );
        let metrics: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- --metrics="))
            .collect();
        assert_eq!(metrics, ["127.0.0.1:9477"]);
        assert!(yaml.contains("--upstream=http://127.0.0.1:9477/"));
    }
}

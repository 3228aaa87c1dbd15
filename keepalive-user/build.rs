use anyhow::{Context as _, anyhow, bail};
use aya_build::Toolchain;

/// Builds the kernel programs (keepalive-ebpf) for the BPF target, so `cargo build` is enough.
/// Their compiler is the toolchain pinned in keepalive-ebpf/rust-toolchain.toml; before
/// building, its LLVM is checked against bpf-linker's, so a mismatch is reported as one
/// (with the command that fixes it) rather than as bpf-linker's "Invalid record".
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    if std::env::var_os("AYA_BUILD_SKIP").is_none() {
        match keepalive_toolchain::check() {
            Ok(ready) => println!("cargo:rerun-if-changed={}", ready.linker.display()),
            Err(problem) => bail!("cannot build keepalive's kernel programs: {problem}"),
        }
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "keepalive-ebpf")
        .ok_or_else(|| anyhow!("keepalive-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(keepalive_toolchain::pinned()),
    )
}

//! Network namespaces as users name them: an `ip netns` name, a path such as
//! /proc/PID/ns/net, or an inode number (what the kernel side filters on).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

/// Where `ip netns add NAME` keeps its namespaces.
pub const NAMED: &str = "/run/netns";

/// The file of a namespace given by name or path (for an inode number, see [`file`]).
pub fn path(spec: &str) -> PathBuf {
    if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        Path::new(NAMED).join(spec)
    }
}

/// The inode of a namespace given by number, path or name.
pub fn inode(spec: &str) -> Result<u32> {
    if let Ok(inode) = spec.parse::<u32>() {
        return Ok(inode);
    }
    let path = path(spec);
    match std::fs::metadata(&path) {
        Ok(m) => Ok(m.ino() as u32),
        Err(e) => bail!(
            "--netns {spec}: {e} ({}); give an `ip netns` name, a path like /proc/PID/ns/net, \
             or an inode number",
            path.display()
        ),
    }
}

/// The inode of this process's namespace (0 when it cannot be read).
pub fn current() -> u32 {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

/// A file of the namespace given by name, path or inode number, and its inode: for a number,
/// an `ip netns` name or a process's /proc/PID/ns/net with that inode (a namespace with no
/// process and no name has no file to enter).
pub fn file(spec: &str) -> Result<(PathBuf, u32)> {
    let inode = inode(spec)?;
    if spec.parse::<u32>().is_err() {
        return Ok((path(spec), inode));
    }
    let procs = process_namespaces();
    named()
        .into_iter()
        .chain(procs)
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() as u32 == inode))
        .map(|p| (p, inode))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--netns {spec}: no named namespace or process has network namespace {inode}"
            )
        })
}

/// Every network namespace with a process or an `ip netns` name, once each: a file to enter
/// it by, and its inode.
pub fn all() -> Vec<(PathBuf, u32)> {
    let procs = process_namespaces();
    let mut seen = std::collections::HashSet::new();
    named()
        .into_iter()
        .chain(procs)
        .filter_map(|p| {
            let inode = std::fs::metadata(&p).ok()?.ino() as u32;
            seen.insert(inode).then_some((p, inode))
        })
        .collect()
}

/// Each process's network namespace file, /proc/PID/ns/net.
fn process_namespaces() -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"))
}

/// The namespaces `ip netns` names.
pub fn named() -> Vec<PathBuf> {
    std::fs::read_dir(NAMED)
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Moves the calling thread into namespace `spec` (a name or a path): sockets it creates
/// from then on belong to that namespace.
pub fn enter(spec: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let path = path(spec);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("--netns {spec}: {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {spec}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_once_this_one_included() {
        let all = all();
        assert!(all.iter().any(|(_, inode)| *inode == current()), "{all:?}");
        let mut inodes: Vec<u32> = all.iter().map(|(_, i)| *i).collect();
        inodes.sort_unstable();
        inodes.dedup();
        assert_eq!(inodes.len(), all.len(), "{all:?}");
    }
}

//! A newc cpio archive, the format the kernel unpacks as its initramfs. Small enough to
//! write here rather than depend on a host `cpio` binary.

use std::{collections::BTreeMap, io::Write, path::Path};

use anyhow::Result;

#[derive(Clone)]
enum Entry {
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// Files by path inside the archive; directories are implied by the paths.
#[derive(Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.entries.insert(clean(path), Entry::File { data, mode });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entries
            .insert(clean(path), Entry::Symlink(target.to_string()));
    }

    pub fn write(&self, out: &mut impl Write) -> Result<()> {
        // The kernel does not create parent directories: every directory comes first
        // (sorted, so parents precede children).
        let mut dirs = std::collections::BTreeSet::new();
        for path in self.entries.keys() {
            let mut p = Path::new(path).parent();
            while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_string_lossy().into_owned());
                p = dir.parent();
            }
        }
        let mut ino = 1;
        for dir in &dirs {
            header(out, &mut ino, dir, 0o040755, 0)?;
        }
        for (path, entry) in &self.entries {
            match entry {
                Entry::File { data, mode } => {
                    header(out, &mut ino, path, 0o100000 | mode, data.len())?;
                    out.write_all(data)?;
                    pad(out, data.len())?;
                }
                Entry::Symlink(target) => {
                    header(out, &mut ino, path, 0o120777, target.len())?;
                    out.write_all(target.as_bytes())?;
                    pad(out, target.len())?;
                }
            }
        }
        header(out, &mut ino, "TRAILER!!!", 0, 0)?;
        Ok(())
    }
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

fn header(out: &mut impl Write, ino: &mut u32, name: &str, mode: u32, size: usize) -> Result<()> {
    let fields = [
        *ino,
        mode,
        0, // uid
        0, // gid
        if mode & 0o040000 != 0 { 2 } else { 1 },
        0, // mtime
        size as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0, // checksum (newc has none)
    ];
    *ino += 1;
    let mut h = String::from("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    out.write_all(h.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + name.len() + 1)
}

fn pad(out: &mut impl Write, len: usize) -> Result<()> {
    out.write_all(&[0u8; 3][..(4 - len % 4) % 4])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// busybox cpio (packed for the VMs anyway; `cargo xtask setup` installs it) lists what
    /// we wrote.
    #[test]
    fn busybox_reads_the_archive() {
        assert!(
            Path::new("/bin/busybox").exists(),
            "/bin/busybox is missing: run `cargo xtask setup` (Debian's busybox-static)"
        );
        let mut a = Archive::default();
        a.file("/bin/x", b"hello".to_vec(), 0o755);
        a.symlink("/bin/y", "x");
        a.file("/etc/deep/z", vec![1, 2, 3], 0o644);
        let mut bytes = vec![];
        a.write(&mut bytes).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let mut child = std::process::Command::new("/bin/busybox")
            .args(["cpio", "-t"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        let listed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            ["bin", "etc", "etc/deep", "bin/x", "bin/y", "etc/deep/z"]
        );
    }
}

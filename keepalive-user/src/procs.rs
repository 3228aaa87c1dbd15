//! Which process owns a socket, from /proc: for sockets the tracer did not see connect
//! (accepted ones, and those older than the tracer). Timers and resets run in softirq
//! context, so the kernel cannot tell us.

use std::{
    collections::HashMap,
    fs,
    time::{Duration, Instant},
};

/// Socket inode -> (pid, comm), refreshed by scanning /proc/*/fd when a lookup misses,
/// at most once per `min_interval` so a busy host is not scanned continuously.
pub struct ProcessTable {
    owners: HashMap<u64, (u32, String)>,
    last_scan: Option<Instant>,
    min_interval: Duration,
}

impl Default for ProcessTable {
    fn default() -> Self {
        ProcessTable::new(Duration::from_millis(250))
    }
}

impl ProcessTable {
    pub fn new(min_interval: Duration) -> Self {
        ProcessTable {
            owners: HashMap::new(),
            last_scan: None,
            min_interval,
        }
    }

    pub fn lookup(&mut self, ino: u64) -> Option<(u32, String)> {
        if ino == 0 {
            return None;
        }
        if let Some(o) = self.owners.get(&ino) {
            return Some(o.clone());
        }
        if self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.min_interval)
        {
            self.scan();
        }
        self.owners.get(&ino).cloned()
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.owners.clear();
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            let mut comm = None;
            for fd in fds.flatten() {
                let Some(ino) = fs::read_link(fd.path())
                    .ok()
                    .and_then(|l| socket_inode(l.to_str()?))
                else {
                    continue;
                };
                let comm = comm.get_or_insert_with(|| {
                    fs::read_to_string(p.path().join("comm"))
                        .map(|c| c.trim_end().to_string())
                        .unwrap_or_default()
                });
                // The first (lowest) pid holding it: the parent that passed it on, usually.
                self.owners.entry(ino).or_insert((pid, comm.clone()));
            }
        }
    }
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn parses_fd_links() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn finds_this_process_as_owner_of_its_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ino = {
            use std::os::fd::AsRawFd;
            fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
                .unwrap()
                .ino()
        };
        let mut table = ProcessTable::new(Duration::ZERO);
        let (pid, comm) = table.lookup(ino).expect("owner of our own socket");
        assert_eq!(pid, std::process::id());
        assert!(!comm.is_empty());
    }
}

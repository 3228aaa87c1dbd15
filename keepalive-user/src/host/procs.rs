//! Which process owns a socket, from /proc: for sockets the tracer did not see connect
//! (accepted ones, and those older than the tracer). Timers and resets run in softirq
//! context, so the kernel cannot tell us.

use std::{
    collections::HashMap,
    fs,
    sync::Arc,
    time::{Duration, Instant},
};

/// Socket inode -> owning process, refreshed by scanning /proc/*/fd when a lookup misses, at
/// most once per `min_interval` so a busy host is not scanned continuously. A host may hold
/// 100k sockets: each costs a small fixed entry, and a process's name is kept once.
pub struct ProcessTable {
    /// Socket inode -> (pid, the fd holding it in that process).
    sockets: HashMap<u64, (u32, i32)>,
    /// pid -> command name, shared by all its sockets (and the events naming them).
    comms: HashMap<u32, Arc<str>>,
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
            sockets: HashMap::new(),
            comms: HashMap::new(),
            last_scan: None,
            min_interval,
        }
    }

    /// Gives back table space left by a scan of a host that had more sockets then.
    pub fn shrink(&mut self) {
        keepalive_events::table::shrink_map(&mut self.sockets);
        keepalive_events::table::shrink_map(&mut self.comms);
    }

    pub fn lookup(&mut self, ino: u64) -> Option<(u32, Arc<str>)> {
        if ino == 0 {
            return None;
        }
        if !self.sockets.contains_key(&ino)
            && self
                .last_scan
                .is_none_or(|t| t.elapsed() >= self.min_interval)
        {
            self.scan();
        }
        let (pid, _) = *self.sockets.get(&ino)?;
        Some((pid, self.comms.get(&pid)?.clone()))
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.sockets.clear();
        self.comms.clear();
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
            for fd in fds.flatten() {
                let Some(ino) = fs::read_link(fd.path())
                    .ok()
                    .and_then(|l| socket_inode(l.to_str()?))
                else {
                    continue;
                };
                let Some(fd) = fd.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                // The first (lowest) pid holding it: the parent that passed it on, usually.
                self.sockets.entry(ino).or_insert((pid, fd));
                self.comms.entry(pid).or_insert_with(|| {
                    fs::read_to_string(p.path().join("comm"))
                        .map(|c| c.trim_end().into())
                        .unwrap_or_else(|_| "".into())
                });
            }
        }
    }
}

impl ProcessTable {
    /// The keepalive settings of the socket with this inode, read with getsockopt on a copy
    /// of its owner's descriptor (pidfd_getfd, Linux 5.6+): exactly what the kernel applies.
    pub fn keepalive_settings(&mut self, ino: u64) -> Option<SocketOptions> {
        let (pid, _) = self.lookup(ino)?;
        let (_, fd) = *self.sockets.get(&ino)?;
        let copy = copy_fd(pid, fd)?;
        let s = socket2::SockRef::from(&copy);
        Some(SocketOptions {
            enabled: s.keepalive().ok()?,
            idle_s: s.tcp_keepalive_time().ok()?.as_secs_f64(),
            interval_s: s.tcp_keepalive_interval().ok()?.as_secs_f64(),
            count: s.tcp_keepalive_retries().ok()?,
            user_timeout_ms: s
                .tcp_user_timeout()
                .ok()?
                .map(|d| d.as_millis() as u32)
                .unwrap_or(0),
        })
    }
}

/// A socket's keepalive options as getsockopt reports them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SocketOptions {
    pub enabled: bool,
    pub idle_s: f64,
    pub interval_s: f64,
    pub count: u32,
    pub user_timeout_ms: u32,
}

fn copy_fd(pid: u32, fd: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls; each returned descriptor is owned exactly once below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return None;
        }
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let copy = libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        );
        (copy >= 0).then(|| std::os::fd::OwnedFd::from_raw_fd(copy as i32))
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
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let ka = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(42))
            .with_interval(Duration::from_secs(7))
            .with_retries(5);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&ka)
            .unwrap();
        let ino = {
            use std::os::fd::AsRawFd;
            fs::metadata(format!("/proc/self/fd/{}", stream.as_raw_fd()))
                .unwrap()
                .ino()
        };
        let o = table
            .keepalive_settings(ino)
            .expect("settings of our socket");
        assert_eq!(
            o,
            SocketOptions {
                enabled: true,
                idle_s: 42.0,
                interval_s: 7.0,
                count: 5,
                user_timeout_ms: 0
            }
        );
    }
}

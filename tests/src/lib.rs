//! A small test-topology library: network namespaces joined by veth, nft rules, sockets
//! made inside a namespace, and the `keepalive` tracer run as a user would run it.
//!
//! Every resource cleans up on drop (also when a test panics); names are unique per process
//! and test so scenarios run in parallel; every wait is bounded.

pub mod capture;
pub mod cgroup;
pub mod command;
pub mod metrics;
pub mod netns;
pub mod ssh;
pub mod tracer;

pub use command::{json_lines, sh};
pub use netns::{IdleServer, Link, Netns, Routed};
pub use tracer::Tracer;

/// True when running as root; the end-to-end scenarios need it and say so otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A socket setup that turns keepalive on with TCP_KEEPIDLE, TCP_KEEPINTVL (seconds) and
/// TCP_KEEPCNT, for [`Link::connect`].
pub fn keepalive(idle: u64, interval: u64, count: u32) -> impl FnOnce(&socket2::Socket) + Send {
    move |s: &socket2::Socket| {
        let ka = socket2::TcpKeepalive::new()
            .with_time(std::time::Duration::from_secs(idle))
            .with_interval(std::time::Duration::from_secs(interval))
            .with_retries(count);
        s.set_tcp_keepalive(&ka).unwrap();
    }
}

/// The cookie the kernel gives a socket (getsockopt SO_COOKIE), as `ss -e` shows it.
pub fn socket_cookie(s: &std::net::TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: a valid socket fd and a buffer of the size given.
    let rc = unsafe {
        nix::libc::getsockopt(
            s.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_COOKIE,
            &mut cookie as *mut u64 as *mut _,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(SO_COOKIE)");
    cookie
}

/// A history directory (`keepalive trace --history DIR`) of a test's own, removed at the end.
pub struct HistoryStore(pub std::path::PathBuf);

impl HistoryStore {
    pub fn new(name: &str) -> HistoryStore {
        let p =
            std::env::temp_dir().join(format!("keepalive-history-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        HistoryStore(p)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Bytes in its files.
    pub fn size(&self) -> u64 {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }
}

impl Drop for HistoryStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

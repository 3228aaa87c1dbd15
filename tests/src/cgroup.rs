//! Cgroups the tests create (in the cgroup v2 hierarchy) and remove themselves, with
//! processes placed in them: how a service, a container or a pod looks to the kernel.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The cgroup v2 hierarchy's mount point.
pub fn root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            fs.starts_with("cgroup2 ")
                .then(|| PathBuf::from(mount.split(' ').nth(4).unwrap()))
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

/// `keepalive-test-<pid>/<path>` under the hierarchy's root, removed on drop.
pub struct Cgroup {
    /// The directory.
    pub dir: PathBuf,
    /// As the kernel names it: from the hierarchy's root, with a leading slash.
    pub path: String,
    top: PathBuf,
}

impl Cgroup {
    pub fn new(path: &str) -> Cgroup {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(remove_orphans);
        let root = root();
        let top_name = format!("keepalive-test-{}", std::process::id());
        let dir = root.join(&top_name).join(path);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Cgroup {
            path: format!("/{top_name}/{path}"),
            dir,
            top: root.join(top_name),
        }
    }

    /// Starts the test client (see `keepalive-test-client`) in this cgroup and namespace
    /// `netns`, connected to `to` with keepalive `idle`/`interval`/`count`; returns it with
    /// its local port.
    pub fn client(&self, netns: &str, to: std::net::SocketAddr, ka: (u64, u64, u32)) -> Client {
        self.start(netns, &to.to_string(), ka, |_| {})
    }

    /// Starts the test program as a server in this cgroup and namespace `netns`, listening
    /// on `ip`; `connect` is called with its port and must connect to it. Returns it with
    /// the accepted connection's local port, keepalive `idle`/`interval`/`count` on it.
    pub fn server(
        &self,
        netns: &str,
        ip: std::net::IpAddr,
        ka: (u64, u64, u32),
        connect: impl FnOnce(u16),
    ) -> Client {
        self.start(netns, &format!("listen@{ip}"), ka, connect)
    }

    fn start(
        &self,
        netns: &str,
        target: &str,
        ka: (u64, u64, u32),
        connect: impl FnOnce(u16),
    ) -> Client {
        // Built with the tests, next to their own directory (target/<profile>/deps).
        let exe = std::env::current_exe().unwrap();
        let client = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("keepalive-test-client");
        let mut child = Command::new(&client)
            .arg(&self.dir)
            .arg(format!("/run/netns/{netns}"))
            .arg(target)
            .args([ka.0.to_string(), ka.1.to_string(), ka.2.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", client.display()));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if let Some(port) = line.strip_prefix("listening ") {
            connect(port.trim().parse().expect("a port"));
            line.clear();
            out.read_line(&mut line).unwrap();
        }
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("client said {line:?}"));
        Client {
            child,
            out: Some(out),
            port,
        }
    }
}

impl Drop for Cgroup {
    /// Removes this cgroup, then the parents it leaves empty up to the test process's top
    /// directory: another test of the process may still use a shared parent.
    fn drop(&mut self) {
        remove_tree(&self.dir);
        for parent in self.dir.ancestors().skip(1) {
            if !parent.starts_with(&self.top) || std::fs::remove_dir(parent).is_err() {
                break;
            }
        }
    }
}

/// A test client process; killed on drop if still running.
pub struct Client {
    child: Child,
    out: Option<BufReader<std::process::ChildStdout>>,
    pub port: u16,
}

impl Client {
    /// How its connection ended (`error <errno>`, `eof`), waiting at most `limit`.
    pub fn ended(&mut self, limit: Duration) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut out = self.out.take().expect("asked once");
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = tx.send(line);
        });
        rx.recv_timeout(limit)
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|_| panic!("the client's connection did not end in {limit:?}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes `dir` and the cgroups below it, deepest first (a cgroup is removed with rmdir,
/// once no process is left in it).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        // Its last process may still be exiting.
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("could not remove cgroup {}", dir.display());
}

/// Cgroups left by test processes that no longer exist (killed before their Drop ran).
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir(root()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("keepalive-test-"))
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_tree(&e.path());
        }
    }
}

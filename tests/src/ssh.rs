//! Real OpenSSH: an `sshd` with a throwaway configuration, host key and authorized key in a
//! temporary directory (no system file is read or changed), and `ssh` sessions to it.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{command::sh, netns::Netns};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ka-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sshd -D` in a namespace, listening on `addr:22`, accepting one generated key for root.
pub struct Sshd {
    child: Child,
    pub dir: TempDir,
    pub key: PathBuf,
}

impl Sshd {
    pub fn start(ns: &Netns, addr: &str, tag: &str) -> Sshd {
        let dir = TempDir::new(&format!("sshd-{tag}"));
        let d = &dir.0;
        let host_key = d.join("host_ed25519");
        let key = d.join("id_ed25519");
        for k in [&host_key, &key] {
            sh(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-f", k.to_str().unwrap()],
            );
        }
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}\nPort 22\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
                 LogLevel ERROR\nTCPKeepAlive yes\nClientAliveInterval 0\n",
                host_key.display(),
                d.join("authorized_keys").display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory; Debian creates it only when the service runs.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
            ])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sshd");
        let sshd = Sshd { child, dir, key };
        // Wait (bounded) until it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        let target: std::net::SocketAddr = format!("{addr}:22").parse().unwrap();
        while ns.run(move || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err()
        }) {
            assert!(Instant::now() < deadline, "sshd did not listen within 10 s");
            thread::sleep(Duration::from_millis(50));
        }
        sshd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An interactive-looking, idle `ssh` session: `echo ready; sleep 600` on the server.
pub struct SshSession {
    pub child: Option<Child>,
    lines: mpsc::Receiver<String>,
}

impl SshSession {
    /// Starts `ssh` in `ns` with extra `-o` options and waits (bounded) until it is logged in.
    pub fn start(ns: &Netns, sshd: &Sshd, host: &str, options: &[&str]) -> SshSession {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, "ssh", "-F", "/dev/null", "-i"])
            .arg(&sshd.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
            ]);
        for o in options {
            cmd.args(["-o", o]);
        }
        let mut child = cmd
            .arg(format!("root@{host}"))
            .arg("echo ready; exec sleep 600")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh");
        let lines = crate::command::pipe_lines(child.stdout.take().unwrap());
        let session = SshSession {
            child: Some(child),
            lines,
        };
        match session.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l == "ready" => session,
            other => panic!("ssh did not log in within 20 s: {other:?}"),
        }
    }

    /// The pid of the `ssh` process (ip netns exec execs it, so it is the child itself).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits (at most `limit`) until the kernel has sent a keepalive probe in ssh's network
    /// namespace (TcpExt TCPKeepAlive, which counts attempts), then a moment for its answer
    /// on a healthy path: the session's keepalive has been answered at least once. A fixed
    /// sleep raced the first probe on a loaded machine.
    pub fn wait_keepalive_answered(&self, limit: Duration) {
        let probes = || {
            let netstat =
                std::fs::read_to_string(format!("/proc/{}/net/netstat", self.pid())).unwrap();
            let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
            let (names, values) = (tcp_ext.next().unwrap(), tcp_ext.next().unwrap());
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == "TCPKeepAlive")
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .expect("TcpExt TCPKeepAlive")
        };
        let deadline = std::time::Instant::now() + limit;
        while probes() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no keepalive probe from ssh's namespace within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Waits (bounded) for ssh to exit by itself; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.take().unwrap();
        let (status, killed) = crate::command::wait_bounded(child, timeout);
        assert!(!killed, "ssh did not exit within {timeout:?}");
        status
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! Network namespaces the tests create and delete themselves.

use std::{
    fs::File,
    net::IpAddr,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use nix::sched::{CloneFlags, setns};

use crate::command::sh;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (with its nft tables, sockets and links) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `ka<pid>-<n>-<role>`, with loopback up.
    pub fn new(role: &str) -> Netns {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(remove_orphans);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ka{}-{n}-{role}", std::process::id());
        sh("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all);
    }

    /// Runs `nft -f -` with `rules` inside this namespace.
    pub fn nft(&self, rules: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft failed: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sets a sysctl of this namespace, e.g. `net.ipv4.tcp_retries2`: written to /proc/sys
    /// from inside it (a net sysctl file is the namespace of whoever opens it), so no
    /// `sysctl` binary is needed (the kernel matrix's guests have none).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.run(move || {
            std::fs::write(&path, &value).unwrap_or_else(|e| panic!("{path} = {value}: {e}"))
        });
    }

    /// The namespace's TCP counters by name ("OutRsts", "TCPKeepAlive", ...), from
    /// /proc/net/snmp and /proc/net/netstat as read inside it (what `nstat` reads): the
    /// kernel's own count of what the namespace did.
    pub fn tcp_counters(&self) -> std::collections::BTreeMap<String, u64> {
        let mut all = std::collections::BTreeMap::new();
        for file in ["/proc/net/snmp", "/proc/net/netstat"] {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.name, "cat", file])
                .output()
                .expect("ip netns exec cat");
            assert!(out.status.success(), "reading {file} in {}", self.name);
            let text = String::from_utf8(out.stdout).unwrap();
            // Pairs of lines: "Tcp: Name1 Name2 ..." then "Tcp: 1 2 ...".
            let lines: Vec<&str> = text.lines().collect();
            for pair in lines.chunks(2) {
                let [names, values] = pair else { continue };
                let (Some((group, names)), Some((_, values))) =
                    (names.split_once(':'), values.split_once(':'))
                else {
                    continue;
                };
                if group != "Tcp" && group != "TcpExt" {
                    continue;
                }
                for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                    if let Ok(v) = v.parse::<i64>() {
                        all.insert(n.to_string(), v.max(0) as u64);
                    }
                }
            }
        }
        all
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it creates belong to
    /// the namespace for their whole life, wherever they are used afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }
}

/// Deletes namespaces of test processes that are gone: Drop deletes a test's namespaces even
/// when it fails, but not when its process is killed (a timeout, SIGKILL). Namespaces of
/// running processes (tests in parallel) are left alone.
fn remove_orphans() {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("ka")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair with addresses on both ends.
pub struct Link {
    pub a: Netns,
    pub b: Netns,
    pub a_addr: IpAddr,
    pub b_addr: IpAddr,
}

impl Link {
    /// `a` gets 198.18.0.1 / 2001:db8::1, `b` gets 198.18.0.2 / 2001:db8::2 (test ranges).
    pub fn new(a_role: &str, b_role: &str, ipv6: bool) -> Link {
        let a = Netns::new(a_role);
        let b = Netns::new(b_role);
        sh(
            "ip",
            &[
                "link", "add", "veth-ka", "netns", &a.name, "type", "veth", "peer", "name",
                "veth-ka", "netns", &b.name,
            ],
        );
        let (a_addr, b_addr, prefix) = if ipv6 {
            ("2001:db8::1", "2001:db8::2", "64")
        } else {
            ("198.18.0.1", "198.18.0.2", "24")
        };
        for (ns, addr) in [(&a, a_addr), (&b, b_addr)] {
            // nodad: the address is usable at once rather than after duplicate detection.
            let cidr = format!("{addr}/{prefix}");
            if ipv6 {
                ns.ip(&["addr", "add", &cidr, "dev", "veth-ka", "nodad"]);
            } else {
                ns.ip(&["addr", "add", &cidr, "dev", "veth-ka"]);
            }
            ns.ip(&["link", "set", "veth-ka", "up"]);
        }
        Link {
            a,
            b,
            a_addr: a_addr.parse().unwrap(),
            b_addr: b_addr.parse().unwrap(),
        }
    }
}

/// A TCP connection from namespace `a` (client) to namespace `b` (server).
pub struct Connection {
    pub client: std::net::TcpStream,
    pub server: std::net::TcpStream,
    /// The client's local port: how tests find the connection in the trace.
    pub client_port: u16,
    pub server_port: u16,
    /// Keeps the listening socket alive for the connection's life.
    pub listener: std::net::TcpListener,
}

impl Connection {
    /// Data goes both ways, each side reading within `limit`: the connection is alive.
    pub fn still_works(&mut self, limit: std::time::Duration) {
        use std::io::{Read, Write};
        self.client.write_all(b"still here").unwrap();
        let mut buf = [0u8; 10];
        self.server.set_read_timeout(Some(limit)).unwrap();
        self.server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still here");
        self.server.write_all(b"ok").unwrap();
        self.client.set_read_timeout(Some(limit)).unwrap();
        self.client.read_exact(&mut buf[..2]).unwrap();
        assert_eq!(&buf[..2], b"ok");
    }
}

impl Link {
    /// Connects `a` to `b`, calling `configure` on the client socket before connect().
    pub fn connect(&self, configure: impl FnOnce(&socket2::Socket) + Send + 'static) -> Connection {
        connect_between(&self.a, &self.b, self.b_addr, configure)
    }

    /// Drops, silently, every packet arriving in `b`.
    pub fn blackhole_b_all(&self) {
        self.b.nft(
            "table inet ka-all {\n chain input {\n type filter hook input priority 0; \
             policy drop;\n }\n}\n",
        );
    }

    /// Drops, silently, every TCP packet arriving in `b` for `port`.
    pub fn blackhole_b(&self, port: u16) {
        self.b.nft(&format!(
            "table inet ka {{\n chain input {{\n type filter hook input priority 0; policy accept;\n \
             tcp dport {port} drop\n }}\n}}\n"
        ));
    }

    /// Ends [`Link::blackhole_b`]: the outage is over.
    pub fn heal_b(&self) {
        self.b.nft("delete table inet ka\n");
    }
}

/// Client and server namespaces with a router namespace between them:
/// client 198.18.0.1 -- 198.18.0.254 router 198.19.0.254 -- 198.19.0.1 server.
pub struct Routed {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
    pub client_addr: IpAddr,
    pub server_addr: IpAddr,
}

impl Routed {
    /// With `nat`, the router masquerades the client behind 198.19.0.254 (a home or cloud
    /// NAT gateway) and drops packets conntrack finds invalid.
    pub fn new(nat: bool) -> Routed {
        let client = Netns::new("client");
        let router = Netns::new("router");
        let server = Netns::new("server");
        veth(
            &client,
            "198.18.0.1/24",
            &router,
            "198.18.0.254/24",
            "veth-c",
        );
        veth(
            &server,
            "198.19.0.1/24",
            &router,
            "198.19.0.254/24",
            "veth-s",
        );
        client.ip(&["route", "add", "default", "via", "198.18.0.254"]);
        server.ip(&["route", "add", "default", "via", "198.19.0.254"]);
        router.sysctl("net.ipv4.ip_forward", "1");
        if nat {
            router.nft(
                "table ip ka-nat {\n chain post {\n type nat hook postrouting priority 100;\n \
                 oifname \"veth-s\" masquerade\n }\n chain invalid {\n type filter hook forward \
                 priority 0; policy accept;\n ct state invalid drop\n }\n}\n",
            );
            // Conntrack exists in the namespace once a rule uses it. Mid-stream packets of a
            // forgotten connection are then invalid, not picked up again.
            router.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");
        }
        Routed {
            client,
            router,
            server,
            client_addr: "198.18.0.1".parse().unwrap(),
            server_addr: "198.19.0.1".parse().unwrap(),
        }
    }

    /// The router silently drops everything it would forward (the path goes dark).
    pub fn blackhole(&self) {
        self.router.nft(
            "table inet ka-drop {\n chain cut {\n type filter hook forward priority -10; \
             policy drop;\n }\n}\n",
        );
    }

    /// A connection from client to a listener in the server namespace.
    pub fn connect(&self, configure: impl FnOnce(&socket2::Socket) + Send + 'static) -> Connection {
        connect_between(&self.client, &self.server, self.server_addr, configure)
    }

    /// The server host vanishes from the network: the router's link to it is deleted.
    /// (Its namespace lives on while the test holds sockets in it, but nothing reaches it.)
    pub fn vanish_server(&self) {
        self.router.ip(&["link", "del", "veth-s"]);
    }

    /// Replaces the server with a fresh host at the same address: one that rebooted and
    /// remembers no connection. The old one is cut off first, so it says nothing.
    pub fn restart_server(&mut self) {
        self.vanish_server();
        self.server = Netns::new("server2");
        veth(
            &self.server,
            "198.19.0.1/24",
            &self.router,
            "198.19.0.254/24",
            "veth-s",
        );
        self.server
            .ip(&["route", "add", "default", "via", "198.19.0.254"]);
    }
}

/// A veth pair named `name` at both ends, with addresses.
fn veth(a: &Netns, a_cidr: &str, b: &Netns, b_cidr: &str, name: &str) {
    sh(
        "ip",
        &[
            "link", "add", name, "netns", &a.name, "type", "veth", "peer", "name", name, "netns",
            &b.name,
        ],
    );
    for (ns, cidr) in [(a, a_cidr), (b, b_cidr)] {
        ns.ip(&["addr", "add", cidr, "dev", name]);
        ns.ip(&["link", "set", name, "up"]);
    }
}

/// A connection over loopback inside `ns`: both ends on this host, in one namespace.
pub fn loopback(
    ns: &Netns,
    configure: impl FnOnce(&socket2::Socket) + Send + 'static,
) -> Connection {
    connect_between(ns, ns, std::net::Ipv4Addr::LOCALHOST.into(), configure)
}

fn connect_between(
    client_ns: &Netns,
    server_ns: &Netns,
    server_addr: IpAddr,
    configure: impl FnOnce(&socket2::Socket) + Send + 'static,
) -> Connection {
    use socket2::{Domain, Socket, Type};
    use std::net::{SocketAddr, TcpListener};
    let bind = SocketAddr::new(server_addr, 0);
    let listener = server_ns.run(move || TcpListener::bind(bind).unwrap());
    let server = SocketAddr::new(server_addr, listener.local_addr().unwrap().port());
    let client: std::net::TcpStream = client_ns.run(move || {
        let s = Socket::new(Domain::for_address(server), Type::STREAM, None).unwrap();
        configure(&s);
        s.connect(&server.into()).unwrap();
        s.into()
    });
    let (accepted, _) = listener.accept().unwrap();
    Connection {
        client_port: client.local_addr().unwrap().port(),
        server_port: server.port(),
        client,
        server: accepted,
        listener,
    }
}

/// A server that accepts connections and holds them without a word (sshd before login, a
/// database pool), in a namespace of the test's; with `close_after`, it closes each that
/// long after accepting it (an application's idle timeout). Stops on drop, and after
/// ten minutes whatever happens.
pub struct IdleServer {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl IdleServer {
    pub fn start(ns: &Netns, ip: IpAddr, close_after: Option<std::time::Duration>) -> IdleServer {
        use std::sync::{Arc, atomic::AtomicBool};
        use std::time::{Duration, Instant};
        let listener =
            ns.run(move || std::net::TcpListener::bind(std::net::SocketAddr::new(ip, 0)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(600);
            let mut held: Vec<(std::net::TcpStream, Instant)> = vec![];
            while !stopped.load(Ordering::Relaxed) && Instant::now() < end {
                while let Ok((s, _)) = listener.accept() {
                    held.push((s, Instant::now()));
                }
                if let Some(limit) = close_after {
                    held.retain(|(_, at)| at.elapsed() < limit);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        IdleServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for IdleServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

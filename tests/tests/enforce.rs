//! `keepalive enforce`: an application that never enables keepalive, behind a NAT that forgets
//! idle connections, survives once its cgroup gets keepalive; processes outside are untouched.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use keepalive_tests::{
    Routed,
    capture::Capture,
    cgroup::Cgroup,
    is_root,
    tracer::{Tracer, binary, events_of, kinds, rerun_blind, run_json, wait_bounded},
};
use serde_json::Value;

/// An echo server in the server namespace.
fn echo_server(topo: &Routed) -> SocketAddr {
    let bind = SocketAddr::new(topo.server_addr, 0);
    let l = topo.server.run(move || TcpListener::bind(bind).unwrap());
    let addr = SocketAddr::new(topo.server_addr, l.local_addr().unwrap().port());
    thread::spawn(move || {
        for s in l.incoming().take(4).flatten() {
            thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A client without keepalive (a plain Python socket), optionally placed in `cgroup`: it
/// connects, says its local port, idles, then sends and waits 5 s for the echo.
struct Client {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

fn client(
    topo: &Routed,
    server: SocketAddr,
    idle_s: u64,
    cgroup: Option<&Cgroup>,
) -> (Client, u16) {
    let script = format!(
        "import socket,sys\n\
         c=socket.create_connection(('{ip}',{port}))\n\
         print(c.getsockname()[1], flush=True)\n\
         import time; time.sleep({idle_s})\n\
         c.settimeout(5)\n\
         try:\n c.sendall(b'ping'); d=c.recv(4); print('alive' if d==b'ping' else 'dead', flush=True)\n\
         except Exception as e:\n print('dead', e, flush=True)\n",
        ip = server.ip(),
        port = server.port()
    );
    let join = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && ", cg.dir.display()),
        None => String::new(),
    };
    // Join the cgroup first: `ip netns exec` mounts a sysfs of its own, without it.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{join}exec ip netns exec {} python3 -c \"$0\"",
            topo.client.name
        ))
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("client said {line:?}"));
    (Client { child, out }, port)
}

/// What the client said after its idle time: "alive" or "dead ...".
fn outcome(c: Client) -> String {
    let Client { child, mut out } = c;
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    let (status, killed) = wait_bounded(child, Duration::from_secs(40));
    assert!(!killed && status.success());
    text.trim().to_string()
}

fn nat() -> Routed {
    let topo = Routed::new(true);
    topo.router
        .sysctl("net.netfilter.nf_conntrack_tcp_timeout_established", "3");
    topo
}

#[test]
fn without_enforce_the_nat_kills_the_idle_connection() {
    assert!(is_root(), "needs root (cargo xtask test)");
    let topo = nat();
    let server = echo_server(&topo);
    let cg = Cgroup::new("plain");
    let (child, _) = client(&topo, server, 8, Some(&cg));
    let result = outcome(child);
    assert!(result.starts_with("dead"), "{result}");
}

#[test]
fn with_enforce_the_cgroup_survives_20s_and_others_are_untouched() {
    assert!(is_root(), "needs root (cargo xtask test)");
    rerun_blind(enforced_scenario);
}

fn enforced_scenario() -> Result<(), String> {
    let topo = nat();
    let server = echo_server(&topo);
    let cg = Cgroup::new("enforced");
    let tracer = Tracer::trace_netns(&topo.client.name, &[]);
    let second = Tracer::trace_netns(&topo.client.name, &[]);
    let capture = Capture::start(&topo.client);
    let mut enforce = Command::new(binary())
        .args([
            "enforce",
            "--cgroup",
            &cg.path,
            "--idle",
            "2",
            "--interval",
            "1",
            "--count",
            "3",
        ])
        .args(["--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(enforce.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("Enforcing keepalive"), "{line}");

    let (inside, inside_port) = client(&topo, server, 20, Some(&cg));
    let (outside, outside_port) = client(&topo, server, 1, None);
    // The process outside the cgroup keeps its socket as it made it: keepalive off.
    let rows = run_json(&["sockets", "--netns", &topo.client.name, "--format", "json"]);
    let row = |port: u16| {
        rows.iter()
            .find(|r| r["sport"] == port)
            .unwrap_or_else(|| panic!("{port} in {rows:?}"))
            .clone()
    };
    assert_eq!(row(outside_port)["keepalive"]["enabled"], false);
    assert_eq!(row(inside_port)["keepalive"]["enabled"], true);
    assert_eq!(row(inside_port)["keepalive"]["idle_s"], 2.0);

    assert_eq!(outcome(inside), "alive");
    assert_eq!(outcome(outside), "alive");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(enforce.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut reported = String::new();
    enforce
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut reported)
        .unwrap();
    let (status, _) = wait_bounded(enforce, Duration::from_secs(10));
    assert!(status.success());
    assert!(
        reported.contains(&format!("\"sport\":{inside_port}")),
        "{reported}"
    );
    assert!(
        !reported.contains(&format!("\"sport\":{outside_port}")),
        "{reported}"
    );

    let lines = tracer.stop();
    let second_lines = second.stop();
    let events = events_of(&lines, inside_port);
    let kinds = kinds(&events);
    assert!(kinds.iter().any(|k| k == "keepalive_enforced"), "{kinds:?}");
    // The probes enforce turned on, and their answers, as the wire carried them (the
    // client has closed: its close reported the last answer).
    let wire = capture.stop().traced_or_blind(
        SocketAddr::new(topo.client_addr, inside_port),
        &events,
        &events_of(&second_lines, inside_port),
    )?;
    assert!(
        wire.answers >= 5,
        "probes answered over 20 s idle: {kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "keepalive_timeout"), "{kinds:?}");
    assert!(
        !kinds_of(&lines, outside_port)
            .iter()
            .any(|k| k == "keepalive_enforced")
    );
    Ok(())
}

fn kinds_of(lines: &[Value], port: u16) -> Vec<String> {
    kinds(&events_of(lines, port))
}

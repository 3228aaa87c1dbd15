//! The headline use: an SSH session died, and `keepalive why` says why. Real sshd and ssh,
//! a router namespace between them, the path cut by nft.

use std::{net::SocketAddr, thread, time::Duration};

use keepalive_tests::{
    Routed,
    capture::Capture,
    is_root,
    ssh::{SshSession, Sshd},
    tracer::{Why, run_json, timeline},
};
use serde_json::Value;

const SERVER: &str = "198.19.0.1";

/// The local port of `comm`'s connection to port 22, from `keepalive sockets`.
fn local_port(netns: &str, comm: &str) -> u64 {
    let rows = run_json(&[
        "sockets", "--netns", netns, "--comm", comm, "--port", "22", "--format", "json",
    ]);
    assert_eq!(rows.len(), 1, "one {comm} connection expected: {rows:?}");
    rows[0]["sport"].as_u64().unwrap()
}

fn advice(v: &Value) -> String {
    v["advice"].to_string()
}

#[test]
fn ssh_with_tcp_keepalive_dies_of_keepalive_timeout_and_why_names_ssh() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let topo = Routed::new(false);
    for (k, v) in [("time", "2"), ("intvl", "1"), ("probes", "3")] {
        topo.client
            .sysctl(&format!("net.ipv4.tcp_keepalive_{k}"), v);
    }
    let sshd = Sshd::start(&topo.server, SERVER, "ka1");
    let why = Why::start(&["--comm", "ssh", "--netns", &topo.client.name]);
    let capture = Capture::start(&topo.client);
    let mut ssh = SshSession::start(&topo.client, &sshd, SERVER, &["TCPKeepAlive=yes"]);
    let pid = ssh.pid();
    let port = local_port(&topo.client.name, "ssh");
    ssh.wait_keepalive_answered(Duration::from_secs(20)); // idle; a probe answered
    topo.blackhole();
    let status = ssh.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "ssh should fail when the path dies");

    let (v, lines) = why.verdict(Duration::from_secs(10));
    assert_eq!(v["verdict"], "keepalive_timeout", "{v}");
    assert_eq!(v["sport"], port);
    assert_eq!(v["dport"], 22);
    assert_eq!(v["comm"], "ssh");
    assert_eq!(v["pid"], pid);
    assert_eq!(v["probes_unanswered"], 3);
    assert!(advice(&v).contains("ServerAliveInterval"), "{v}");
    assert!(advice(&v).contains("TCPKeepAlive"), "{v}");
    // The timeline shows the probes answered before the cut, then the three lost, and the
    // timeout's RST, exactly as the wire carried them.
    let local = SocketAddr::new(topo.client_addr, port as u16);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert!(wire.answers >= 1, "{wire:?}");
    assert_eq!(wire.resets_sent, 1, "{wire:?}");
}

#[test]
fn ssh_server_alive_gives_up_by_itself_not_a_keepalive_timeout() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let topo = Routed::new(false);
    let sshd = Sshd::start(&topo.server, SERVER, "ka2");
    let why = Why::start(&["--comm", "ssh", "--netns", &topo.client.name]);
    let capture = Capture::start(&topo.client);
    let mut ssh = SshSession::start(
        &topo.client,
        &sshd,
        SERVER,
        &[
            "TCPKeepAlive=no",
            "ServerAliveInterval=1",
            "ServerAliveCountMax=2",
        ],
    );
    let pid = ssh.pid();
    let port = local_port(&topo.client.name, "ssh");
    topo.blackhole();
    let status = ssh.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(255),
        "ssh exits 255 on 'server not responding'"
    );

    let (v, lines) = why.verdict(Duration::from_secs(10));
    assert_eq!(v["sport"], port);
    assert_eq!(
        (v["pid"].as_u64(), v["comm"].as_str()),
        (Some(pid as u64), Some("ssh"))
    );
    // Keepalive was off: no probe on the wire or in the timeline, and no reset.
    let local = SocketAddr::new(topo.client_addr, port as u16);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert_eq!(wire.probes, 0, "{wire:?}");
    assert_ne!(v["verdict"], "keepalive_timeout", "{v}");
    assert_eq!(v["verdict"], "closed", "{v}");
    assert_eq!(
        v["reason"], "application_closed_after_retransmissions",
        "{v}"
    );
    assert!(v["retransmits"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("Not a keepalive timeout"),
        "{v}"
    );
    assert!(advice(&v).contains("ServerAliveCountMax"), "{v}");
}

#[test]
fn sshd_side_of_a_vanished_client_is_keepalive_timeout_owned_by_sshd() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let topo = Routed::new(false);
    for (k, v) in [("time", "2"), ("intvl", "1"), ("probes", "3")] {
        topo.server
            .sysctl(&format!("net.ipv4.tcp_keepalive_{k}"), v);
    }
    let sshd = Sshd::start(&topo.server, SERVER, "ka3");
    let why = Why::start(&["--comm", "sshd", "--netns", &topo.server.name]);
    let capture = Capture::start(&topo.server);
    let _ssh = SshSession::start(&topo.client, &sshd, SERVER, &[]);
    thread::sleep(Duration::from_secs(1));
    // The sshd processes now, the session's among them: it may be gone once it has died.
    let sshds = processes_named("sshd");
    topo.blackhole();

    let (v, lines) = why.verdict(Duration::from_secs(30));
    assert_eq!(v["verdict"], "keepalive_timeout", "{v}");
    assert_eq!(v["sport"], 22);
    // sshd's side on the server's wire: three probes lost, the timeout's RST.
    let local = SocketAddr::new(topo.server_addr, 22);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert_eq!((wire.probes, wire.answers, wire.resets_sent), (3, 0, 1));
    assert_eq!(v["comm"], "sshd", "{v}");
    let pid = v["pid"].as_u64().unwrap() as u32;
    assert!(
        sshds.contains(&pid),
        "pid {pid} is not one of sshd's {sshds:?}"
    );
    assert!(advice(&v).contains("ClientAliveInterval"), "{v}");
}

/// The pids of the processes whose command name is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

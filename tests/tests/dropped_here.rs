//! Whose fault: a keepalive connection dies because its probes' answers never get through,
//! once because this host's own firewall drops them, once because the server's side drops
//! the probes. Only the first is "dropped here", with the kernel's reason, as many as the
//! answers the wire carried; the second says no answer reached this host.

use std::{io::Read, net::SocketAddr, time::Duration};

use keepalive_tests::{
    Link, Tracer,
    capture::{Capture, KeepaliveOnWire},
    is_root, keepalive,
    netns::Connection,
    tracer::{events_of, replayed_verdict},
};
use serde_json::Value;

/// Where the scenario drops the connection's packets.
#[derive(Clone, Copy, Debug)]
enum Dropper {
    /// The client's own input: `tcp sport <server port> drop`.
    ClientFirewall,
    /// The client's conntrack forgets the idle flow (2 s established timeout, no loose
    /// pickup) and `ct state invalid drop` drops what arrives for it.
    ClientConntrack,
    /// The server's input: the probes never reach it.
    ServerFirewall,
}

struct Death {
    verdict: Value,
    events: Vec<Value>,
    wire: KeepaliveOnWire,
}

/// A connection with keepalive `idle`/1 s/3 probes dies of `dropper`; the trace is checked
/// against the capture in the client's namespace.
fn die(ipv6: bool, dropper: Dropper, idle: u64) -> Death {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", ipv6);
    if let Dropper::ClientConntrack = dropper {
        // The table first: it makes the namespace track connections, and its sysctls exist.
        link.a.nft(
            "table inet ka-ct {\n chain input {\n type filter hook input priority 0; \
             policy accept;\n ct state invalid drop\n }\n}\n",
        );
        link.a
            .sysctl("net.netfilter.nf_conntrack_tcp_timeout_established", "2");
        link.a.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");
    }
    let tracer = Tracer::trace_netns(&link.a.name, &[]);
    let capture = Capture::start(&link.a);
    let conn: Connection = link.connect(keepalive(idle, 1, 3));
    match dropper {
        Dropper::ClientFirewall => link.a.nft(&format!(
            "table inet ka-here {{\n chain input {{\n type filter hook input priority 0; \
             policy accept;\n tcp sport {} drop\n }}\n}}\n",
            conn.server_port
        )),
        Dropper::ServerFirewall => link.blackhole_b(conn.server_port),
        Dropper::ClientConntrack => {}
    }
    let client = &conn.client;
    client
        .set_read_timeout(Some(Duration::from_secs(idle + 20)))
        .unwrap();
    let err = (&*client).read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::ETIMEDOUT as i32),
        "{dropper:?}: {err}"
    );
    let lines = tracer.stop();
    let events = events_of(&lines, conn.client_port);
    let local = SocketAddr::new(link.a_addr, conn.client_port);
    // Every probe, answer and reset on the wire is in the trace; an answer this host
    // dropped is there as its drop.
    let wire = capture.stop().assert_traced(local, &events);
    assert_eq!((wire.probes, wire.resets_sent), (3, 1), "{dropper:?}");
    let verdict = lines
        .iter()
        .find(|l| l["type"] == "verdict" && l["sport"] == conn.client_port)
        .unwrap_or_else(|| panic!("{dropper:?}: no verdict in {lines:?}"))
        .clone();
    assert_eq!(verdict["verdict"], "keepalive_timeout", "{verdict}");
    // The recording says the same again.
    let recording = std::env::temp_dir().join(format!("keepalive-{}.jsonl", link.a.name));
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&recording, text.join("\n")).unwrap();
    let replayed = replayed_verdict(&recording, conn.client_port);
    let _ = std::fs::remove_file(&recording);
    for field in ["verdict", "dropped_here", "summary", "advice"] {
        assert_eq!(replayed[field], verdict[field], "{field} replayed");
    }
    Death {
        verdict,
        events,
        wire,
    }
}

fn dropped(events: &[Value]) -> Vec<(&str, &str)> {
    events
        .iter()
        .filter(|e| e["kind"] == "packet_dropped")
        .map(|e| {
            (
                e["reason"].as_str().unwrap(),
                e["direction"].as_str().unwrap(),
            )
        })
        .collect()
}

/// The peer answered every probe and this host's firewall dropped each answer: named, with
/// the count the wire shows, and no keepalive tuning advised.
fn dropped_by_this_hosts_firewall(ipv6: bool, dropper: Dropper, idle: u64) {
    let d = die(ipv6, dropper, idle);
    // The server answered every probe; the answers reached this host's interface.
    assert_eq!(d.wire.answers, 3, "{}", d.verdict);
    assert_eq!(
        dropped(&d.events),
        vec![("NETFILTER_DROP", "arriving"); d.wire.answers],
        "{:?}",
        d.events
    );
    assert_eq!(
        d.verdict["dropped_here"],
        serde_json::json!({ "NETFILTER_DROP": d.wire.answers })
    );
    let summary = d.verdict["summary"].as_str().unwrap();
    assert!(
        summary.contains(
            "the peer answered 3 of them; this host dropped the answers (NETFILTER_DROP x3)"
        ),
        "{summary}"
    );
    let advice = d.verdict["advice"].to_string();
    assert!(advice.contains("nft list ruleset"), "{advice}");
    assert!(!advice.contains("TCP_KEEPIDLE"), "{advice}");
    assert!(d.verdict["recommended_idle_s"].is_null(), "{}", d.verdict);
}

/// The probes were dropped on the server's side: nothing of it happened on this host.
fn dropped_beyond_this_host(ipv6: bool) {
    let d = die(ipv6, Dropper::ServerFirewall, 2);
    assert_eq!(d.wire.answers, 0);
    assert_eq!(dropped(&d.events), vec![], "{:?}", d.events);
    assert!(d.verdict.get("dropped_here").is_none(), "{}", d.verdict);
    let summary = d.verdict["summary"].as_str().unwrap();
    assert!(summary.contains("no answer reached this host"), "{summary}");
}

#[test]
fn answers_dropped_by_this_hosts_firewall_ipv4() {
    dropped_by_this_hosts_firewall(false, Dropper::ClientFirewall, 2);
}

#[test]
fn answers_dropped_by_this_hosts_firewall_ipv6() {
    dropped_by_this_hosts_firewall(true, Dropper::ClientFirewall, 2);
}

#[test]
fn answers_of_a_flow_conntrack_forgot_dropped_as_invalid_ipv4() {
    dropped_by_this_hosts_firewall(false, Dropper::ClientConntrack, 4);
}

#[test]
fn answers_of_a_flow_conntrack_forgot_dropped_as_invalid_ipv6() {
    dropped_by_this_hosts_firewall(true, Dropper::ClientConntrack, 4);
}

#[test]
fn probes_dropped_on_the_servers_side_are_not_dropped_here_ipv4() {
    dropped_beyond_this_host(false);
}

#[test]
fn probes_dropped_on_the_servers_side_are_not_dropped_here_ipv6() {
    dropped_beyond_this_host(true);
}

/// Both ends on this host, both probing: each end's TCP drops every probe it answers (an old
/// sequence, by design). That is keepalive at work, no drop of either connection's.
#[test]
fn answered_probes_over_loopback_are_no_drops() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let ns = keepalive_tests::Netns::new("loop");
    let tracer = Tracer::trace_netns(&ns.name, &[]);
    let capture = Capture::start(&ns);
    let conn = keepalive_tests::netns::loopback(&ns, keepalive(1, 1, 3));
    socket2::SockRef::from(&conn.server)
        .set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(1))
                .with_interval(Duration::from_secs(1)),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    let (client, server) = (conn.client_port, conn.server_port);
    // Closed first: each close reports the answer to its last probe.
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    let lines = tracer.stop();
    let wire = capture.stop();
    for (local, peer) in [(client, server), (server, client)] {
        let events = keepalive_tests::tracer::events_between(&lines, local, peer);
        let on_wire = wire.assert_traced(
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local),
            &events,
        );
        assert!(on_wire.probes >= 2, "{local}: {on_wire:?}");
        assert_eq!(dropped(&events), vec![], "{local}: {events:?}");
    }
}

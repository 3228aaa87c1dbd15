//! The most common killer: a NAT gateway that forgets idle connections. Keepalive idle above
//! its timeout dies; below it, the connection survives with probes answered.

use std::{net::SocketAddr, thread, time::Duration};

use keepalive_tests::{
    Routed,
    capture::Capture,
    is_root, keepalive,
    tracer::{Tracer, Why, advised_idle_below, kinds, rerun_blind, timeline},
};

/// Conntrack's idle limit for established connections on the router, seconds.
const NAT_TIMEOUT: u64 = 3;

fn nat() -> Routed {
    let topo = Routed::new(true);
    topo.router.sysctl(
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        &NAT_TIMEOUT.to_string(),
    );
    topo
}

/// Idle for `secs` through the NAT with keepalive idle `idle`, then data both ways: the
/// connection is still there, and its probes were answered, never timed out, exactly as the
/// wire carried them.
fn survives_idle(topo: &Routed, idle: u64, secs: u64) {
    rerun_blind(|| survives_idle_once(topo, idle, secs));
}

fn survives_idle_once(topo: &Routed, idle: u64, secs: u64) -> Result<(), String> {
    let tracer = Tracer::trace_netns(&topo.client.name, &[]);
    let second = Tracer::trace_netns(&topo.client.name, &[]);
    let capture = Capture::start(&topo.client);
    let mut conn = topo.connect(keepalive(idle, 1, 3));
    thread::sleep(Duration::from_secs(secs));
    conn.still_works(Duration::from_secs(5));
    let (events, wire) =
        tracer.stop_after_close_or_blind(second, conn, topo.client_addr, capture)?;
    assert_eq!(wire.resets_sent + wire.resets_received, 0, "{wire:?}");
    let kinds = kinds(&events);
    let answered = kinds.iter().filter(|k| *k == "keepalive_answered").count();
    // A probe every idle time at most, answered; half of that is the floor asserted.
    let expected = (secs / (2 * (idle + 1))).max(1) as usize;
    assert!(
        answered >= expected,
        "{answered} answers in {secs} s with idle {idle} s: {kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "keepalive_timeout"), "{kinds:?}");
    Ok(())
}

#[test]
fn keepalive_idle_above_the_nat_timeout_dies_and_the_advised_idle_survives_the_nat() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let topo = nat();
    let why = Why::start(&["--netns", &topo.client.name]);
    let capture = Capture::start(&topo.client);
    let conn = topo.connect(keepalive(6, 1, 3));
    let (v, lines) = why.verdict(Duration::from_secs(30));
    assert_eq!(v["sport"], conn.client_port, "{v}");
    assert_eq!(v["verdict"], "keepalive_timeout", "{v}");
    // The NAT forgot the flow: three probes died at the router, the timeout sent a RST.
    let local = SocketAddr::new(topo.client_addr, conn.client_port);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert_eq!((wire.probes, wire.answers, wire.resets_sent), (3, 0, 1));
    assert_eq!(v["idle_s"], 6.0, "{v}");
    let advice = v["advice"].to_string();
    assert!(advice.contains("within 6s of idleness"), "{advice}");
    // The server never heard of the end: its side is still established.
    drop(conn);

    // The advice, checked against the NAT's real limit (which the tool never saw) and then
    // applied: a connection with the advised idle time outlives four NAT timeouts idle.
    let advised = advised_idle_below(&v, NAT_TIMEOUT);
    survives_idle(&topo, advised, 4 * NAT_TIMEOUT);
}

#[test]
fn keepalive_idle_below_the_nat_timeout_survives_20s_with_answered_probes() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    survives_idle(&nat(), 1, 20);
}

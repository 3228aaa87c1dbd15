//! The most common killer: a NAT gateway that forgets idle connections. Keepalive idle above
//! its timeout dies; below it, the connection survives with probes answered.

use std::{thread, time::Duration};

use keepalive_tests::{
    Routed, is_root, keepalive,
    tracer::{Tracer, Why, advised_idle_below, events_of, kinds, no_verdict_for},
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
/// connection is still there, and its probes were answered, never timed out.
fn survives_idle(topo: &Routed, idle: u64, secs: u64) {
    let tracer = Tracer::trace_netns(&topo.client.name, &[]);
    let mut conn = topo.connect(keepalive(idle, 1, 3));
    thread::sleep(Duration::from_secs(secs));
    conn.still_works(Duration::from_secs(5));

    let lines = tracer.stop();
    let events = events_of(&lines, conn.client_port);
    let kinds = kinds(&events);
    let answered = kinds.iter().filter(|k| *k == "keepalive_answered").count();
    // A probe every idle time at most, answered; half of that is the floor asserted.
    let expected = (secs / (2 * (idle + 1))).max(1) as usize;
    assert!(
        answered >= expected,
        "{answered} answers in {secs} s with idle {idle} s: {kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "keepalive_timeout"), "{kinds:?}");
    no_verdict_for(&lines, conn.client_port);
}

#[test]
fn keepalive_idle_above_the_nat_timeout_dies_and_the_advised_idle_survives_the_nat() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let topo = nat();
    let why = Why::start(&["--netns", &topo.client.name]);
    let conn = topo.connect(keepalive(6, 1, 3));
    let (v, _) = why.verdict(Duration::from_secs(30));
    assert_eq!(v["sport"], conn.client_port, "{v}");
    assert_eq!(v["verdict"], "keepalive_timeout", "{v}");
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

//! A healthy idle IPv6 connection: probes go out, the peer answers, nothing dies.

use std::{
    io::{Read, Write},
    thread,
    time::Duration,
};

use keepalive_tests::{
    Link, Tracer,
    capture::Capture,
    is_root, keepalive,
    tracer::{events_of, kinds},
};

#[test]
fn answered_probes_over_ipv6_keep_the_connection_alive() {
    assert!(
        is_root(),
        "end-to-end tests load BPF programs: run as root (cargo xtask test)"
    );
    let link = Link::new("client", "server", true);
    let tracer = Tracer::trace_netns(&link.a.name, &[]);
    let capture = Capture::start(&link.a);
    let mut conn = link.connect(keepalive(1, 1, 2));
    thread::sleep(Duration::from_millis(3500));
    // Still alive after more idle time than 1 + 2 x 1 s of unanswered probes would allow.
    conn.client.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    conn.server.read_exact(&mut byte).unwrap();
    // Closed before the tracer and the capture stop, so both saw the whole of it: the
    // answer to its last probe is reported when it closes.
    let port = conn.client_port;
    drop(conn);
    thread::sleep(Duration::from_millis(300));

    let lines = tracer.stop();
    let events = events_of(&lines, port);
    // Every probe and answer the wire carried, no more, no fewer.
    let local = std::net::SocketAddr::new(link.a_addr, port);
    capture.stop().assert_traced(local, &events);
    let kinds = kinds(&events);
    assert!(
        kinds.iter().filter(|k| *k == "keepalive_probe").count() >= 2,
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "keepalive_answered"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "keepalive_timeout"), "{kinds:?}");
    // Answers come in time: never more than one probe outstanding.
    for e in events.iter().filter(|e| e["kind"] == "keepalive_probe") {
        assert_eq!(e["probes"], 1, "{e}");
        assert_eq!(e["saddr"], "2001:db8::1");
        assert_eq!(e["daddr"], "2001:db8::2");
    }
}

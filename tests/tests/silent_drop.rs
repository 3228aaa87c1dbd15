//! A keepalive connection whose path silently drops everything: exactly TCP_KEEPCNT probes,
//! then the timeout, then the ETIMEDOUT the application sees.

use std::{io::Read, time::Duration};

use keepalive_tests::{
    Link, Tracer,
    capture::Capture,
    is_root, keepalive,
    tracer::{events_of, kinds},
};
use socket2::SockRef;

#[test]
fn silent_drop_gives_three_probes_then_timeout_then_etimedout() {
    assert!(
        is_root(),
        "end-to-end tests load BPF programs: run as root (cargo xtask test)"
    );
    let link = Link::new("client", "server", false);
    let tracer = Tracer::trace_netns(&link.a.name, &[]);
    let capture = Capture::start(&link.a);

    let conn = link.connect(keepalive(2, 1, 3));
    let (client, local_port) = (&conn.client, conn.client_port);
    assert!(SockRef::from(client).keepalive().unwrap());

    // The server host stops answering without a word: every packet to it is dropped.
    link.blackhole_b(conn.server_port);

    // What the application sees: its idle read fails with ETIMEDOUT, in about 2 + 3 x 1 s.
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let err = (&*client).read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc_etimedout()),
        "read error: {err}"
    );

    let lines = tracer.stop();
    let events = events_of(&lines, local_port);
    // Exactly what crossed the wire: three probes, no answer, the client's one RST.
    let local = std::net::SocketAddr::new(link.a_addr, local_port);
    let wire = capture.stop().assert_traced(local, &events);
    assert_eq!((wire.probes, wire.answers, wire.resets_sent), (3, 0, 1));
    let kinds = kinds(&events);
    let probes: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "keepalive_probe")
        .map(|e| e["probes"].as_u64().unwrap())
        .collect();
    assert_eq!(probes, [1, 2, 3], "events: {events:?}");
    assert!(
        !kinds.iter().any(|k| k == "keepalive_answered"),
        "{kinds:?}"
    );

    let position = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing event in {kinds:?}"))
    };
    let last_probe = events
        .iter()
        .rposition(|e| e["kind"] == "keepalive_probe")
        .unwrap();
    let timeout = position(&|e| e["kind"] == "keepalive_timeout");
    let error = position(&|e| e["kind"] == "socket_error" && e["error"] == "ETIMEDOUT");
    assert!(last_probe < timeout && timeout < error, "order: {kinds:?}");

    let t = &events[timeout];
    assert_eq!(t["reason"], "probes_unanswered");
    assert_eq!(t["probes"], 3);
    assert_eq!(t["keepalive"]["count"], 3);
    assert_eq!(t["keepalive"]["idle_s"], 2.0);
    assert_eq!(t["daddr"], "198.18.0.2");
    assert_eq!(
        t["cookie"].as_u64().unwrap(),
        keepalive_tests::socket_cookie(client)
    );
    assert!(t["netns"].as_u64().unwrap() != 0);
    assert!(t["ts"].as_str().unwrap().ends_with('Z'));

    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["lost"], 0);
}

fn libc_etimedout() -> i32 {
    nix::errno::Errno::ETIMEDOUT as i32
}

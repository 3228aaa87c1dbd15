//! close() with SO_LINGER {on, 0} aborts the connection with a RST.

use std::{io::Read, time::Duration};

use keepalive_tests::{Link, Tracer, capture::Capture, is_root, tracer::events_of};
use socket2::SockRef;

#[test]
fn linger_zero_close_is_reset_sent_abort_on_linger() {
    assert!(
        is_root(),
        "end-to-end tests load BPF programs: run as root (cargo xtask test)"
    );
    let link = Link::new("client", "server", false);
    let mut tracer = Tracer::trace_netns(&link.a.name, &[]);
    let capture = Capture::start(&link.a);
    let conn = link.connect(|_| {});
    SockRef::from(&conn.client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let port = conn.client_port;
    drop(conn.client);

    // The peer sees what a user would: connection reset.
    conn.server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let err = (&conn.server).read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    let reset = tracer
        .wait_for(Duration::from_secs(10), |e| {
            e["kind"] == "reset_sent" && e["sport"] == port
        })
        .expect("no reset_sent for the aborted connection");
    assert_eq!(reset["reason"], "TCP_ABORT_ON_LINGER", "{reset}");
    assert_eq!(reset["dport"], conn.server_port);
    let lines = tracer.stop();
    let events = events_of(&lines, port);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "state_change" && e["to"] == "CLOSE")
    );
    // One RST, from this end, on the wire as in the trace.
    let wire = capture
        .stop()
        .assert_traced(std::net::SocketAddr::new(link.a_addr, port), &events);
    assert_eq!((wire.resets_sent, wire.resets_received), (1, 0));
}

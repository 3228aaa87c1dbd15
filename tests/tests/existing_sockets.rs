//! Connections older than the tracer: listed by `keepalive sockets`, and when one dies, its
//! verdict names its owner and cookie like any other.

use std::time::Duration;

use keepalive_tests::{
    Link, Tracer,
    capture::Capture,
    is_root, keepalive,
    tracer::{events_of, run_json},
};
use socket2::SockRef;

#[test]
fn sockets_lists_keepalive_settings_timer_and_owner() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    let conn = link.connect(keepalive(30, 5, 4));
    SockRef::from(&conn.client)
        .set_tcp_user_timeout(Some(Duration::from_millis(9000)))
        .unwrap();
    let rows = run_json(&["sockets", "--netns", &link.a.name, "--format", "json"]);
    let row = rows
        .iter()
        .find(|r| r["sport"] == conn.client_port)
        .unwrap_or_else(|| panic!("client connection missing: {rows:?}"));
    assert_eq!(row["state"], "ESTABLISHED");
    assert_eq!(row["timer"], "keepalive");
    assert_eq!(row["probes"], 0);
    assert_eq!(row["pid"], std::process::id());
    assert_eq!(row["cookie"], keepalive_tests::socket_cookie(&conn.client));
    let ka = &row["keepalive"];
    assert_eq!(
        (
            ka["enabled"].as_bool(),
            ka["idle_s"].as_f64(),
            ka["interval_s"].as_f64()
        ),
        (Some(true), Some(30.0), Some(5.0))
    );
    assert_eq!(
        (ka["count"].as_u64(), ka["user_timeout_ms"].as_u64()),
        (Some(4), Some(9000))
    );
    // The namespace by its inode number, as `trace` prints it in `netns`: the same rows.
    let inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(format!("/run/netns/{}", link.a.name)).unwrap(),
    )
    .to_string();
    let by_inode = run_json(&["sockets", "--netns", &inode, "--format", "json"]);
    let ports = |rows: &[serde_json::Value]| -> Vec<u64> {
        rows.iter().filter_map(|r| r["sport"].as_u64()).collect()
    };
    assert_eq!(ports(&by_inode), ports(&rows), "{by_inode:?}");
}

#[test]
fn a_connection_older_than_the_tracer_gets_its_owner_and_cookie_in_the_verdict() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    // Established, idle and owned before any tracer runs (the capture sees it all).
    let capture = Capture::start(&link.a);
    let conn = link.connect(keepalive(3, 1, 2));
    let mut tracer = Tracer::trace_netns(&link.a.name, &[]);
    link.blackhole_b(conn.server_port);
    let port = conn.client_port;
    let verdict = tracer
        .wait_for(Duration::from_secs(20), |v| {
            v["type"] == "verdict" && v["sport"] == port
        })
        .expect("no verdict for the older connection");
    assert_eq!(verdict["verdict"], "keepalive_timeout", "{verdict}");
    assert_eq!(verdict["probes_unanswered"], 2);
    assert_eq!(verdict["pid"], std::process::id(), "{verdict}");
    assert_eq!(
        verdict["cookie"],
        keepalive_tests::socket_cookie(&conn.client),
        "{verdict}"
    );
    let lines = tracer.stop();
    let local = std::net::SocketAddr::new(link.a_addr, port);
    let wire = capture
        .stop()
        .assert_traced(local, &events_of(&lines, port));
    assert_eq!((wire.probes, wire.resets_sent), (2, 1));
}

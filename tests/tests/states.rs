//! Which state changes are reported: by default the ones that start and end a connection
//! (cheap on hosts with many short connections), with `--all-states` every one of them and
//! the socket being freed, as tcpstates shows them. Both end in the same verdict.

use std::{thread, time::Duration};

use keepalive_tests::{
    Link, Tracer, is_root,
    tracer::{events_of, kinds},
};
use serde_json::Value;

/// The events of the connection with this local port, those from before the port was
/// bound (connect() enters SYN_SENT first) included: found by its cookie.
fn connection(lines: &[Value], port: u16) -> Vec<Value> {
    let cookie = events_of(lines, port)
        .first()
        .map(|e| e["cookie"].clone())
        .unwrap_or_else(|| panic!("no event for port {port}: {lines:?}"));
    lines
        .iter()
        .filter(|v| v["type"] == "event" && v["cookie"] == cookie)
        .cloned()
        .collect()
}

fn transitions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "state_change")
        .map(|e| {
            format!(
                "{}>{}",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn default_reports_start_and_end_all_states_reports_every_transition() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    let default = Tracer::trace_netns(&link.a.name, &[]);
    let all = Tracer::trace_netns(&link.a.name, &["--all-states"]);
    // The client closes first: FIN_WAIT1, FIN_WAIT2, then TIME_WAIT takes over.
    let conn = link.connect(|_| {});
    let port = conn.client_port;
    drop(conn.client);
    thread::sleep(Duration::from_millis(200));
    drop(conn.server);
    thread::sleep(Duration::from_millis(500));
    let default = default.stop();
    let all = all.stop();

    let some = connection(&default, port);
    assert_eq!(
        transitions(&some),
        [
            "CLOSE>SYN_SENT",
            "SYN_SENT>ESTABLISHED",
            "ESTABLISHED>FIN_WAIT1",
            "FIN_WAIT2>CLOSE"
        ],
        "{some:?}"
    );
    assert!(!kinds(&some).contains(&"socket_destroyed".to_string()));

    let every = connection(&all, port);
    assert_eq!(
        transitions(&every),
        [
            "CLOSE>SYN_SENT",
            "SYN_SENT>ESTABLISHED",
            "ESTABLISHED>FIN_WAIT1",
            "FIN_WAIT1>FIN_WAIT2",
            "FIN_WAIT2>CLOSE"
        ],
        "{every:?}"
    );
    assert_eq!(
        kinds(&every).last().unwrap(),
        "socket_destroyed",
        "{every:?}"
    );

    let verdict = |lines: &[Value]| -> Value {
        lines
            .iter()
            .find(|v| v["type"] == "verdict" && v["sport"] == port)
            .cloned()
            .unwrap_or_else(|| panic!("no verdict for port {port}: {lines:?}"))
    };
    let (a, b) = (verdict(&default), verdict(&all));
    assert_eq!(a["verdict"], "closed", "{a}");
    assert_eq!((&a["verdict"], &a["pid"]), (&b["verdict"], &b["pid"]));
    assert_eq!(a["pid"], std::process::id(), "{a}");
}

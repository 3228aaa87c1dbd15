//! Which state changes are reported: by default one per connection, its close, carrying
//! what the kernel kept of its start and of who closed it (cheap on hosts with many short
//! connections); with `--all-states` every change and the socket being freed, as tcpstates
//! shows them. Both end in the same verdict.

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
fn an_end_is_one_state_change_all_states_reports_every_transition_default_counts_it() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    // --all: this short orderly connection is an ordinary end, which the default only counts.
    let default = Tracer::trace_netns(&link.a.name, &["--all"]);
    let all = Tracer::trace_netns(&link.a.name, &["--all-states"]);
    let counted = Tracer::trace_netns(&link.a.name, &[]);
    // The client closes first: FIN_WAIT1, FIN_WAIT2, then TIME_WAIT takes over.
    let before = time::OffsetDateTime::now_utc();
    let conn = link.connect(|_| {});
    let port = conn.client_port;
    drop(conn.client);
    thread::sleep(Duration::from_millis(200));
    drop(conn.server);
    thread::sleep(Duration::from_millis(500));
    let default = default.stop();
    let all = all.stop();
    let counted = counted.stop();
    assert_eq!(
        counted.len(),
        1,
        "no event, no verdict for an ordinary end, only the summary: {counted:?}"
    );
    assert_eq!(counted[0]["ordinary_ends"], 1, "{counted:?}");

    let some = connection(&default, port);
    assert_eq!(transitions(&some), ["FIN_WAIT2>CLOSE"], "{some:?}");
    assert!(!kinds(&some).contains(&"socket_destroyed".to_string()));
    // Its start and its close as the kernel saw them: established, then this side closed
    // first (the client was dropped 200 ms before the server), then the end (an orphan in
    // FIN_WAIT2 hands over to a timewait socket as soon as its FIN is acknowledged).
    let close = &some[0];
    let life = &close["life"];
    assert_eq!(life["closed_first"], "local", "{close}");
    let at = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap_or_else(|| panic!("no time in {close}")),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let (established, app_closed, ended) = (
        at(&life["established"]),
        at(&life["app_closed"]),
        at(&close["ts"]),
    );
    let slack = time::Duration::milliseconds(100);
    assert!(
        before - slack <= established && established <= app_closed && app_closed <= ended,
        "{close}"
    );
    assert!(ended - before < time::Duration::seconds(1), "{close}");
    assert_eq!(
        close["pid"],
        std::process::id(),
        "the owner, from connect(): {close}"
    );

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
    assert!(every.iter().all(|e| e.get("life").is_none()), "{every:?}");

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

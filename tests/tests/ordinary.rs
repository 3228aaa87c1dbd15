//! A busy host's ordinary connections cost a counter, not a record: 20,000 short orderly
//! connections and one silent-drop death, traced with the defaults (a namespace is a scope,
//! not a filter) and `--history`. One verdict, the death's; every ordinary end counted, both
//! sides; a history of a few kilobytes that still answers `why --since`.

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use keepalive_tests::{
    HistoryStore, Link, is_root, json_lines, keepalive, tracer::Tracer, tracer::binary,
};

const ORDINARY: usize = 20_000;

#[test]
fn twenty_thousand_ordinary_connections_and_one_death_make_one_verdict() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let store = HistoryStore::new("ordinary");
    let link = Link::new("ordinary", "server", false);
    // Room for 20,000 connections whose server side waits in TIME_WAIT.
    link.a.sysctl("net.ipv4.ip_local_port_range", "1024 65000");
    let tracer = Tracer::trace_netns(&link.a.name, &["--history", store.path()]);

    let death = link.connect(keepalive(2, 1, 3));
    link.blackhole_b(death.server_port);

    let made = link.a.run(ordinary_connections);
    assert_eq!(made, ORDINARY, "the workload made every connection");

    let mut tracer = tracer;
    let verdict = tracer
        .wait_for(Duration::from_secs(30), |v| v["type"] == "verdict")
        .expect("the death's verdict");
    // The ordinary ends are all counted by now: the summary reads the kernel's counters.
    let lines = tracer.stop();
    let verdicts: Vec<_> = lines.iter().filter(|l| l["type"] == "verdict").collect();
    assert_eq!(verdicts.len(), 1, "one verdict, the death's: {verdicts:?}");
    assert_eq!(verdict["verdict"], "keepalive_timeout", "{verdict}");
    assert_eq!(verdict["sport"], death.client_port, "{verdict}");
    let events = lines.iter().filter(|l| l["type"] == "event").count();
    assert!(
        events < 20,
        "only the death makes events, not the ordinary connections: {events}"
    );

    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(
        summary["ordinary_ends"].as_u64(),
        Some(2 * ORDINARY as u64),
        "every end of the ordinary connections, client and server side: {summary}"
    );
    assert_eq!(summary["verdicts"]["keepalive_timeout"], 1, "{summary}");

    let size = store.size();
    // For the README's "morning after" arithmetic: what one death's line costs.
    println!("history: {size} bytes for {ORDINARY} ordinary connections and one death");
    assert!(size < 100_000, "history of {size} bytes");

    let out = Command::new(binary())
        .args([
            "why",
            "--since",
            "1h",
            "--history",
            store.path(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let answer = json_lines(&out.stdout);
    let from_history = answer
        .iter()
        .find(|l| l["type"] == "verdict")
        .unwrap_or_else(|| panic!("no verdict from the history: {answer:?}"));
    assert_eq!(from_history["verdict"], "keepalive_timeout");
    assert_eq!(from_history["sport"], death.client_port);
    assert!(
        answer
            .iter()
            .any(|l| l["type"] == "event" && l["kind"] == "keepalive_probe"),
        "the death's timeline: {answer:?}"
    );
}

/// Connects ORDINARY times to a server on loopback that accepts and closes first, as web
/// servers do; the client reads the end of stream and closes. Returns how many it made
/// (bounded in time: a minute).
fn ordinary_connections() -> usize {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut made = 0;
    while made < ORDINARY && Instant::now() < deadline {
        let mut client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(server);
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap(), 0, "end of stream");
        drop(client);
        made += 1;
    }
    made
}

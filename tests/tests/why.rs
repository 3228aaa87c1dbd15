//! `keepalive why`: the verdict for the right connection (by local port), with pid and comm,
//! live, and the same again replayed from a recording.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use keepalive_tests::{
    Link, Tracer,
    capture::{Capture, KeepaliveOnWire},
    is_root, json_lines, keepalive,
    netns::Connection,
    tracer::{binary, events_of, replayed_verdict, timeline, wait_bounded},
};
use serde_json::Value;
use socket2::SockRef;

/// Runs `keepalive why --format json` (and a recording tracer, and a capture) on the client
/// namespace while `scenario` plays. Both the timeline `why` printed and the recording show
/// exactly the probes, answers and resets the wire carried. Returns the verdict line, the
/// replayed verdict line and what the wire carried.
fn why(
    link: &Link,
    setup: impl FnOnce(&socket2::Socket) + Send + 'static,
    scenario: impl FnOnce(&Link, Connection) -> Option<Connection>,
) -> (Value, Value, KeepaliveOnWire) {
    assert!(
        is_root(),
        "end-to-end tests load BPF programs: run as root (cargo xtask test)"
    );
    let dir = std::env::temp_dir().join(format!("ka-why-{}-{}", std::process::id(), link.a.name));
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("trace.jsonl");
    let recorder = Tracer::trace_netns(&link.a.name, &["--output", recording.to_str().unwrap()]);
    let mut why = Command::new(binary())
        .args(["why", "--format", "json", "--netns", &link.a.name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = why.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    wait_tracing(&mut why);
    let capture = Capture::start(&link.a);
    let conn = link.connect(setup);
    let client_port = conn.client_port;
    // Keeps the connection open (unless the scenario closed it) until why has answered.
    let _conn = scenario(link, conn);
    let (status, killed) = wait_bounded(why, Duration::from_secs(40));
    assert!(!killed, "keepalive why did not answer within 40 s");
    assert!(status.success(), "keepalive why exited with {status}");
    let printed = json_lines(reader.join().unwrap().as_bytes());
    let verdict = last_verdict(&printed);
    assert_eq!(verdict["sport"], client_port, "{verdict}");
    recorder.stop();
    let wire = capture.stop();
    let local = SocketAddr::new(link.a_addr, client_port);
    wire.assert_traced(local, &timeline(&printed));
    let recorded = json_lines(&std::fs::read(&recording).unwrap());
    let on_wire = wire.assert_traced(local, &events_of(&recorded, client_port));

    let replayed = replayed_verdict(&recording, client_port);
    let _ = std::fs::remove_dir_all(&dir);
    log_verdict(&verdict);
    (verdict, replayed, on_wire)
}

/// Appends the verdict to `KEEPALIVE_VERDICT_LOG` when set: `cargo xtask vm-test` runs these
/// scenarios in each mode and compares what each mode concluded.
fn log_verdict(v: &Value) {
    let Some(path) = std::env::var_os("KEEPALIVE_VERDICT_LOG") else {
        return;
    };
    let test = thread::current().name().unwrap_or("unnamed").to_string();
    let line = format!(
        "{test} verdict={} reason={} probes_unanswered={} error={}\n",
        v["verdict"], v["reason"], v["probes_unanswered"], v["error"]
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("verdict log");
    f.write_all(line.as_bytes()).unwrap();
}

fn wait_tracing(child: &mut std::process::Child) {
    let mut err = child.stderr.take().unwrap();
    let mut buf = [0u8; 256];
    let mut seen = String::new();
    while !seen.contains("Tracing") {
        let n = err.read(&mut buf).unwrap();
        assert!(n > 0, "keepalive why exited before tracing: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
}

fn last_verdict(lines: &[Value]) -> Value {
    lines
        .iter()
        .rfind(|v| v["type"] == "verdict")
        .cloned()
        .unwrap_or_else(|| panic!("no verdict in: {lines:?}"))
}

/// The same verdict live and replayed; the owner is this test process.
fn check(verdict: &Value, replayed: &Value, kind: &str) {
    assert_eq!(verdict["verdict"], kind, "{verdict}");
    for field in [
        "verdict",
        "sport",
        "dport",
        "probes_unanswered",
        "reason",
        "pid",
        "comm",
        "error",
    ] {
        assert_eq!(
            verdict[field], replayed[field],
            "{field}: {verdict} vs {replayed}"
        );
    }
    assert_eq!(verdict["pid"], std::process::id(), "{verdict}");
    assert!(
        !verdict["comm"].as_str().unwrap_or("").is_empty(),
        "{verdict}"
    );
    assert!(!verdict["summary"].as_str().unwrap().is_empty());
}

#[test]
fn silent_drop_is_keepalive_timeout_with_probes_equal_to_keepcnt() {
    let link = Link::new("client", "server", false);
    let (v, r, wire) = why(&link, keepalive(2, 1, 3), |link, conn| {
        link.blackhole_b(conn.server_port);
        Some(conn)
    });
    check(&v, &r, "keepalive_timeout");
    assert_eq!((wire.probes, wire.answers, wire.resets_sent), (3, 0, 1));
    assert_eq!(v["probes_unanswered"], 3);
    assert_eq!(v["idle_s"], 2.0);
    assert_eq!(v["error"], "ETIMEDOUT");
    assert!(v["advice"].as_array().unwrap().len() >= 2, "{v}");
}

#[test]
fn probe_answered_with_rst_by_a_middlebox_is_reset_after_probe() {
    let link = Link::new("client", "server", false);
    let (v, r, wire) = why(&link, keepalive(2, 1, 3), |link, conn| {
        // The server side forgot the connection: its first packet now meets a RST.
        link.b.nft(&format!(
            "table inet ka {{\n chain input {{\n type filter hook input priority 0; policy accept;\n \
             tcp dport {} reject with tcp reset\n }}\n}}\n",
            conn.server_port
        ));
        Some(conn)
    });
    check(&v, &r, "reset_after_probe");
    assert_eq!(v["probes_unanswered"], 1);
    assert_eq!(
        (wire.probes, wire.resets_sent, wire.resets_received),
        (1, 0, 1)
    );
    assert_eq!(v["error"], "ECONNRESET");
}

#[test]
fn user_timeout_below_the_keepalive_budget_is_user_timeout() {
    let link = Link::new("client", "server", false);
    let setup = |s: &socket2::Socket| {
        keepalive(2, 1, 9)(s);
        s.set_tcp_user_timeout(Some(Duration::from_millis(3500)))
            .unwrap();
    };
    let (v, r, wire) = why(&link, setup, |link, conn| {
        link.blackhole_b(conn.server_port);
        Some(conn)
    });
    check(&v, &r, "user_timeout");
    assert_eq!(v["error"], "ETIMEDOUT");
    assert!(wire.probes >= 1 && wire.answers == 0, "{wire:?}");
}

#[test]
fn linger_zero_is_local_abort_on_linger() {
    let link = Link::new("client", "server", false);
    let (v, r, wire) = why(
        &link,
        |_| {},
        |_, conn| {
            SockRef::from(&conn.client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(conn.client);
            None
        },
    );
    check(&v, &r, "local_abort");
    assert_eq!(v["reason"], "TCP_ABORT_ON_LINGER");
    assert_eq!(
        (wire.probes, wire.resets_sent, wire.resets_received),
        (0, 1, 0)
    );
}

#[test]
fn data_in_flight_on_a_dead_path_is_retransmit_timeout() {
    let link = Link::new("client", "server", false);
    link.a.sysctl("net.ipv4.tcp_retries2", "3");
    let (v, r, wire) = why(
        &link,
        |_| {},
        |link, conn| {
            link.blackhole_b(conn.server_port);
            (&conn.client).write_all(b"hello").unwrap();
            Some(conn)
        },
    );
    check(&v, &r, "retransmit_timeout");
    assert_eq!(v["error"], "ETIMEDOUT");
    assert_eq!(wire.probes, 0, "{wire:?}");
    assert!(v["advice"].to_string().contains("Keepalive was off"), "{v}");
}

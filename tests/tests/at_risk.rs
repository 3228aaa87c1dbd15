//! Before it bites: `keepalive sockets --idle-limit` marks the connections a path's idle limit
//! would kill (keepalive off, or a first probe after the limit), each with its fix, and
//! applying the fix clears the mark; `keepalive trace --metrics --idle-limit` counts the
//! same connections.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use keepalive_tests::{
    Link, Tracer, is_root, json_lines, keepalive,
    metrics::{free_port, scrape, sum},
    tracer::binary,
};
use serde_json::Value;
use socket2::{SockRef, TcpKeepalive};

/// `keepalive sockets --netns NS --idle-limit 30s` with `format`: exit code and output.
fn sockets(link: &Link, format: &str) -> (i32, String) {
    let out = Command::new(binary())
        .args(["sockets", "--netns", &link.a.name, "--idle-limit", "30s"])
        .args(["--format", format])
        .output()
        .expect("run keepalive sockets");
    assert!(
        out.stderr.is_empty() || out.status.code() != Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn row(rows: &[Value], port: u16) -> &Value {
    rows.iter()
        .find(|r| r["sport"] == port)
        .unwrap_or_else(|| panic!("{port} missing: {rows:?}"))
}

#[test]
fn an_idle_limit_marks_keepalive_off_and_late_probes_and_the_fix_clears_them() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    let off = link.connect(|_| {});
    let late = link.connect(keepalive(60, 10, 5));
    let fine = link.connect(keepalive(10, 5, 3));

    let (code, out) = sockets(&link, "json");
    assert_eq!(code, 1, "connections at risk: exit 1\n{out}");
    let rows = json_lines(out.as_bytes());
    let risk = |port: u16| row(&rows, port)["at_risk"].clone();
    assert_eq!(risk(off.client_port)["why"], "keepalive_off");
    assert_eq!(risk(late.client_port)["why"], "first_probe_too_late");
    assert!(risk(fine.client_port).is_null(), "{rows:?}");
    // The server's ends live in the other namespace.
    assert_eq!(rows.iter().filter(|r| !r["at_risk"].is_null()).count(), 2);
    for port in [off.client_port, late.client_port] {
        let r = risk(port);
        assert_eq!(r["limit_s"], 30);
        let idle = r["recommended_idle_s"].as_u64().unwrap();
        assert!((1..30).contains(&idle), "{r}");
        let fix = &r["fix"];
        assert!(
            fix["setsockopt"]
                .as_str()
                .unwrap()
                .contains(&format!("TCP_KEEPIDLE={idle}")),
            "{r}"
        );
        assert!(
            fix["enforce"]
                .as_str()
                .unwrap()
                .contains("--cgroup /sys/fs/cgroup/"),
            "{r}"
        );
        // How long it has idled already, from tcp_info.
        assert!(row(&rows, port)["idle_ms"].as_u64().is_some(), "{rows:?}");
    }

    let (code, human) = sockets(&link, "human");
    assert_eq!(code, 1);
    assert!(
        human.contains("At risk under a 30 s idle limit: 2 of 3 connections"),
        "{human}"
    );
    assert!(human.contains("keepalive off"), "{human}");
    assert!(human.contains("first probe after 60 s idle"), "{human}");
    assert!(human.contains("per socket:  SO_KEEPALIVE=1"), "{human}");

    // The same as a metric while tracing: the same two connections.
    let port = free_port();
    let tracer = Tracer::trace_netns(
        &link.a.name,
        &[
            "--metrics",
            &format!("127.0.0.1:{port}"),
            "--idle-limit",
            "30s",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = scrape(port);
        if m.contains("keepalive_connections_at_risk{") || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        sum(&metrics, "keepalive_connections_at_risk{"),
        2.0,
        "{metrics}"
    );
    tracer.stop();

    // The fix, applied: nothing is at risk any more.
    let idle = risk(off.client_port)["recommended_idle_s"]
        .as_u64()
        .unwrap();
    let fixed = TcpKeepalive::new()
        .with_time(Duration::from_secs(idle))
        .with_interval(Duration::from_secs((idle / 5).max(1)))
        .with_retries(5);
    for conn in [&off, &late] {
        SockRef::from(&conn.client)
            .set_tcp_keepalive(&fixed)
            .unwrap();
    }
    let (code, out) = sockets(&link, "json");
    assert_eq!(code, 0, "{out}");
    assert!(
        json_lines(out.as_bytes())
            .iter()
            .all(|r| r["at_risk"].is_null()),
        "{out}"
    );
}

#[test]
fn a_bad_idle_limit_is_a_usage_error() {
    for limit in ["forever", "0s"] {
        let out = Command::new(binary())
            .args(["sockets", "--idle-limit", limit])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--idle-limit {limit}");
    }
}

//! Fleet use: Prometheus metrics that agree with the verdicts printed, a systemd unit that
//! systemd accepts, journal-friendly lines.

use std::{
    io::Read,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use keepalive_tests::{
    Link,
    capture::Capture,
    is_root, keepalive,
    metrics::{free_port, sample, scrape, sum},
    tracer::{Tracer, binary, events_of, wait_bounded, wait_tracing_line},
};
use serde_json::Value;
use socket2::SockRef;

#[test]
fn metrics_match_the_verdicts_printed() {
    assert!(is_root(), "needs root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut tracer = Tracer::trace_netns(&link.a.name, &["--metrics", &metrics_addr]);
    let capture = Capture::start(&link.a);
    // One connection dies of keepalive timeout, one is aborted, one closes normally (an
    // ordinary end: counted by the kernel, no verdict).
    let dying = link.connect(keepalive(1, 1, 2));
    let aborted = link.connect(|_| {});
    let closed = link.connect(|_| {});
    SockRef::from(&aborted.client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let (aborted_port, closed_port, dying_port) =
        (aborted.client_port, closed.client_port, dying.client_port);
    drop(aborted);
    drop(closed);
    link.blackhole_b(dying.server_port);
    for port in [aborted_port, dying_port] {
        tracer
            .wait_for(Duration::from_secs(20), |v| {
                v["type"] == "verdict" && v["sport"] == port
            })
            .unwrap_or_else(|| panic!("no verdict for {port}"));
    }
    thread::sleep(Duration::from_millis(300));
    let metrics = scrape(port);
    let lines = tracer.stop();
    // The trace is the wire's: two probes and the timeout's RST, the abort's RST.
    let wire = capture.stop();
    let on_wire = |port: u16| {
        let local = std::net::SocketAddr::new(link.a_addr, port);
        wire.assert_traced(local, &events_of(&lines, port))
    };
    assert_eq!(on_wire(dying_port).probes, 2);
    assert_eq!(on_wire(aborted_port).resets_sent, 1);
    let count = |pred: &dyn Fn(&Value) -> bool| lines.iter().filter(|v| pred(v)).count() as f64;
    let events = |kind: &str| count(&|v| v["type"] == "event" && v["kind"] == kind);
    assert_eq!(
        sample(&metrics, "keepalive_probes_sent_total"),
        events("keepalive_probe")
    );
    assert_eq!(
        sample(&metrics, "keepalive_probes_answered_total"),
        events("keepalive_answered")
    );
    assert_eq!(
        sample(&metrics, "keepalive_timeouts_total"),
        events("keepalive_timeout")
    );
    assert!(
        sample(&metrics, "keepalive_probes_sent_total") >= 2.0,
        "{metrics}"
    );
    for verdict in ["keepalive_timeout", "local_abort"] {
        let printed = count(&|v| v["type"] == "verdict" && v["verdict"] == verdict);
        let counted = sum(
            &metrics,
            &format!("keepalive_connection_ends_total{{verdict=\"{verdict}\""),
        );
        assert!(printed >= 1.0, "{verdict} verdict missing");
        assert_eq!(counted, printed, "{verdict}: {metrics}");
    }
    // The normal close: no verdict, no line, yet counted in the metrics (with no remote,
    // unit or pod) and in the summary, from the kernel's counter.
    assert_eq!(
        count(&|v| v["type"] == "verdict" && v["sport"] == closed_port),
        0.0
    );
    assert_eq!(
        sample(
            &metrics,
            "keepalive_connection_ends_total{verdict=\"closed\",remote=\"\",unit=\"\",pod=\"\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(lines.last().unwrap()["ordinary_ends"], 1, "{lines:?}");
    assert_eq!(sample(&metrics, "keepalive_events_lost_total"), 0.0);
    assert!(
        metrics.contains("keepalive_idle_before_death_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/keepalive.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/keepalive trace --quiet"));
    // systemd checks that ExecStart exists: point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("ka-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keepalive.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/keepalive", binary().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn under_the_journal_each_verdict_is_one_line() {
    assert!(is_root(), "needs root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    let mut child = Command::new(binary())
        .args(["trace", "--quiet", "--netns", &link.a.name])
        .env("JOURNAL_STREAM", "8:12345")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    wait_tracing_line(&mut err);
    let conn = link.connect(|_| {});
    SockRef::from(&conn.client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let port = conn.client_port;
    drop(conn);
    thread::sleep(Duration::from_millis(700));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (status, _) = wait_bounded(child, Duration::from_secs(10));
    assert!(status.success());
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("verdict=local_abort") && l.contains(&format!(":{port} -> ")))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("TCP_ABORT_ON_LINGER") && line.contains("Advice: "),
        "{line}"
    );
    assert!(!text.contains("====="), "no banners in the journal: {text}");
}

//! An independent reference for what the kernel did: its own per-namespace SNMP counters
//! (/proc/net/snmp and /proc/net/netstat, what `nstat` reads). A namespace of the test's own
//! sees only the test's connections, so after each scenario the counters say exactly how
//! many resets the kernel sent (Tcp OutRsts), on which abort path (TcpExt TCPAbortOnClose,
//! TCPAbortOnData for SO_LINGER 0) and how many keepalive probes it sent (TcpExt
//! TCPKeepAlive). The tracer must report every one of them exactly once, each reset with
//! the reason the kernel's code gives that path (net/ipv4/tcp.c tcp_close(),
//! tcp_timer.c tcp_keepalive_timer(), tcp_ipv4.c tcp_v4_rcv() -> tcp_v4_send_reset()).
//!
//! The wire is the other witness: a capture in the client's namespace shows each
//! keepalive connection's probes and answers and every reset sent, and the tracer must
//! match it exactly.
//!
//! (The issue asked for packetdrill's scripts as this reference. packetdrill is in none of
//! the registries this project's machines reach, nor is GitHub; see the README.)

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

use keepalive_tests::{
    Link, Tracer,
    capture::{Capture, KeepaliveOnWire},
    is_root, keepalive,
    tracer::{events_between, expected_mode},
};
use serde_json::Value;
use socket2::SockRef;

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    let get = |m: &BTreeMap<String, u64>| {
        *m.get(name)
            .unwrap_or_else(|| panic!("the kernel has no counter {name}"))
    };
    get(after) - get(before)
}

fn events<'a>(lines: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    lines
        .iter()
        .filter(move |l| l["type"] == "event" && l["kind"] == kind)
}

#[test]
fn every_reset_and_probe_the_kernel_counted_is_traced_once_with_its_reason() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    // The kernel now and then runs no BPF program at all for an event (seen here in softirqs
    // run on top of the VM agent's thread: ftrace sees the event, no program runs, no miss
    // is counted). That is the only shortfall run again (twice at most, saying so), and only
    // when it is proven: a second tracer lacks exactly the same, while the wire and the
    // counters show the event. Any other difference fails at once.
    for attempt in 1..=3 {
        match scenario() {
            Ok(()) => return,
            Err(blind) if attempt < 3 => eprintln!("attempt {attempt}: {blind}; again"),
            Err(blind) => panic!("attempt {attempt}: {blind}"),
        }
    }
}

/// What the trace in `lines` lacks against `witness` (the wire or a counter), checked on
/// `second`, a tracer that ran alongside: Err when both lack the same (the kernel ran no
/// program for it), a panic when only one does.
fn compare<T: PartialEq + std::fmt::Debug>(
    what: &str,
    traced: T,
    second: T,
    witness: T,
) -> Result<(), String> {
    if traced == witness {
        return Ok(());
    }
    assert_eq!(
        traced, second,
        "{what}: the tracer saw {traced:?}, the witness {witness:?}, and a second tracer \
         {second:?}: not the kernel skipping programs (both would lack the same)"
    );
    Err(format!(
        "{what}: both tracers saw {traced:?}, the witness {witness:?}: the kernel ran no \
         program for it"
    ))
}

/// Whether the kernel says why it sends a reset, and reports one it sends for a segment that
/// matches no socket. Before Linux 6.10 `tcp:tcp_send_reset` had no reason and fired only
/// for full sockets; the release that made it fire for every reset gave it the `reason`
/// field, which its format shows.
fn kernel_names_every_reset() -> bool {
    std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
        .expect("the tracers mount tracefs")
        .contains("reason")
}

/// The reason a reset of the kernel's `name` is reported with: the kernel's own where it
/// names every reset (`kernel_names`, 6.10+); before, kprobe mode names it from the calling
/// function and tracepoint mode cannot.
fn reported_reason(name: &'static str, kernel_names: bool) -> &'static str {
    if kernel_names || expected_mode() == "kprobe" {
        name
    } else {
        "UNKNOWN"
    }
}

/// Every kind of reset and probe once; Err says what both tracers lack alike.
fn scenario() -> Result<(), String> {
    let link = Link::new("client", "server", false);
    let tracer = Tracer::trace_netns(&link.a.name, &[]);
    let second = Tracer::trace_netns(&link.a.name, &[]);
    let capture = Capture::start(&link.a);
    let before = link.a.tcp_counters();
    let mut expected_reasons: BTreeMap<&str, u64> = BTreeMap::new();
    let kernel_names = kernel_names_every_reset();

    // 1. close() with SO_LINGER {on, 0}: tcp_close() -> tcp_disconnect(), TCPAbortOnData.
    let conn = link.connect(|_| {});
    SockRef::from(&conn.client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn.client);
    *expected_reasons.entry("TCP_ABORT_ON_LINGER").or_default() += 1;

    // 2. close() with received data unread: tcp_close(), TCPAbortOnClose,
    //    SK_RST_REASON_TCP_ABORT_ON_CLOSE.
    let mut conn2 = link.connect(|_| {});
    conn2.server.write_all(b"unread").unwrap();
    thread::sleep(Duration::from_millis(200));
    drop(conn2.client);
    *expected_reasons
        .entry(reported_reason("TCP_ABORT_ON_CLOSE", kernel_names))
        .or_default() += 1;

    // 3. A segment for no socket: the server's namespace connects to a closed port here;
    //    tcp_v4_rcv() finds no socket and answers with RST, SK_RST_REASON_NO_SOCKET. Before
    //    Linux 6.10 the kernel's tracepoint does not fire for it: the wire has one reset
    //    more than any tracer can see there.
    let a_addr = link.a_addr;
    let refused = link
        .b
        .run(move || TcpStream::connect((a_addr, 9)).map(|_| ()));
    assert!(
        refused.is_err(),
        "nothing listens on port 9 in the client namespace"
    );
    let unseen_resets = if kernel_names {
        *expected_reasons.entry("NO_SOCKET").or_default() += 1;
        0
    } else {
        1
    };

    // 4. Keepalive probes answered: idle 1 s, 1 s apart, for about 3.5 s.
    let conn4 = link.connect(keepalive(1, 1, 5));
    thread::sleep(Duration::from_millis(3500));

    // 5. Keepalive probes unanswered, then the timeout's reset: tcp_keepalive_timer(),
    //    SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT.
    let conn5 = link.connect(keepalive(1, 1, 2));
    let ports = [
        (conn4.client_port, conn4.server_port),
        (conn5.client_port, conn5.server_port),
    ];
    link.blackhole_b(conn5.server_port);
    conn5
        .client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let err = (&conn5.client).read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::ETIMEDOUT as i32)
    );
    *expected_reasons
        .entry(reported_reason("TCP_KEEPALIVE_TIMEOUT", kernel_names))
        .or_default() += 1;
    drop(conn4);

    // Let the last records arrive before reading the counters and stopping.
    thread::sleep(Duration::from_millis(500));
    let after = link.a.tcp_counters();
    let lines = tracer.stop();
    let lines2 = second.stop();
    let wire = capture.stop();

    // The wire: each keepalive connection's probes, answers and resets, exactly.
    let ends = |(port, peer_port): (u16, u16)| {
        (
            SocketAddr::new(link.a_addr, port),
            SocketAddr::new(link.b_addr, peer_port),
        )
    };
    for (port, peer_port) in ports {
        let (local, peer) = ends((port, peer_port));
        compare(
            &format!("keepalive of {local}"),
            KeepaliveOnWire::in_trace(&events_between(&lines, port, peer_port)),
            KeepaliveOnWire::in_trace(&events_between(&lines2, port, peer_port)),
            wire.keepalive_between(local, peer),
        )?;
    }
    let on_wire = wire.resets_from(link.a_addr);

    // Resets: as many as the kernel sent and the wire carried, each with the reason of its
    // path.
    let resets: Vec<&Value> = events(&lines, "reset_sent").collect();
    let sent = delta(&before, &after, "OutRsts");
    assert_eq!(sent, on_wire as u64, "the kernel's count against the wire");
    compare(
        "resets sent",
        resets.len(),
        events(&lines2, "reset_sent").count(),
        on_wire - unseen_resets,
    )?;
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &resets {
        *reasons
            .entry(r["reason"].as_str().unwrap_or("?"))
            .or_default() += 1;
    }
    assert_eq!(reasons, expected_reasons, "reasons of {resets:?}");
    // The abort paths, by the kernel's own count: one each, the resets named above.
    assert_eq!(delta(&before, &after, "TCPAbortOnClose"), 1);
    assert_eq!(delta(&before, &after, "TCPAbortOnData"), 1);

    // Keepalive probes: as many as the kernel sent, answered and not.
    let probes = events(&lines, "keepalive_probe").count() as u64;
    let probes_sent = delta(&before, &after, "TCPKeepAlive");
    assert!(probes_sent >= 4, "the scenarios made {probes_sent} probes");
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["lost"], 0, "{summary}");
    compare(
        "keepalive probes against the kernel's count",
        probes,
        events(&lines2, "keepalive_probe").count() as u64,
        probes_sent,
    )?;
    // Every answer too, once: the wire's answers are the reference.
    let answers: usize = ports
        .iter()
        .map(|p| {
            let (local, peer) = ends(*p);
            wire.keepalive_between(local, peer).answers
        })
        .sum();
    assert!(answers >= 2, "conn4's probes were answered: {answers}");
    compare(
        "keepalive answers",
        events(&lines, "keepalive_answered").count(),
        events(&lines2, "keepalive_answered").count(),
        answers,
    )?;
    Ok(())
}

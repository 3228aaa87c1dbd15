//! Advice proven by applying it: each test lets a connection die the way a verdict explains,
//! checks the promise the advice makes against the kernel (how soon a death is detected),
//! then applies the advised change to a new connection under the same conditions and checks
//! the outcome the advice promises. (The NAT idle-timeout advice is proven in nat.rs.)

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use keepalive_tests::{
    Link, Tracer,
    capture::{Capture, KeepaliveOnWire},
    is_root, keepalive,
    netns::Connection,
    tracer::{Why, advised_idle_below, kinds, timeline},
};
use serde_json::Value;

/// A path outage the tests ride out: longer than the first settings detect, shorter than
/// the advised ones.
const OUTAGE: Duration = Duration::from_secs(5);

fn etimedout() -> i32 {
    nix::errno::Errno::ETIMEDOUT as i32
}

/// Reads on `client` until the kernel reports an error; the time it took and the error.
fn wait_for_error(client: &std::net::TcpStream, limit: Duration) -> (Duration, i32) {
    let start = Instant::now();
    client.set_read_timeout(Some(limit)).unwrap();
    let err = (&*client).read(&mut [0u8; 1]).unwrap_err();
    (start.elapsed(), err.raw_os_error().unwrap_or(0))
}

/// Waits for `conn` to die with ETIMEDOUT after its peer went quiet, and for `why`'s
/// verdict on it: of kind `verdict`, and given up about `promised` after the last sign of
/// life (not much sooner; later by timer slack at most). Its timeline matches the wire
/// `capture` saw on `client_addr`'s side. Returns the verdict and the wire's counts.
fn dies_as_promised(
    why: Why,
    conn: &Connection,
    verdict: &str,
    promised: Duration,
    (capture, client_addr): (Capture, IpAddr),
) -> (Value, KeepaliveOnWire) {
    let (took, err) = wait_for_error(&conn.client, promised * 4 + Duration::from_secs(10));
    assert_eq!(err, etimedout(), "the application sees ETIMEDOUT");
    let (v, lines) = why.verdict(Duration::from_secs(20));
    let local = SocketAddr::new(client_addr, conn.client_port);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert_eq!(v["sport"], conn.client_port, "{v}");
    assert_eq!(v["verdict"], verdict, "{v}");
    assert!(
        took >= promised.mul_f64(0.8) && took <= promised + Duration::from_secs(2),
        "gave up after {took:?}, promised {promised:?}"
    );
    (v, wire)
}

#[test]
fn keepalive_timeout_detection_is_as_promised_and_the_advised_count_survives_an_outage() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);

    // Idle 1 s, 2 probes 1 s apart: the advice promises detection after 1 + 2 x 1 = 3 s.
    let why = Why::start(&["--netns", &link.a.name]);
    let capture = Capture::start(&link.a);
    let conn = link.connect(keepalive(1, 1, 2));
    link.blackhole_b(conn.server_port);
    // The promise, against the kernel: detected 3 s after the last sign of life.
    let promised = Duration::from_secs(3);
    let (v, wire) = dies_as_promised(
        why,
        &conn,
        "keepalive_timeout",
        promised,
        (capture, link.a_addr),
    );
    assert_eq!((wire.probes, wire.answers, wire.resets_sent), (2, 0, 1));
    let advice = v["advice"].to_string();
    assert!(advice.contains("idle + count x interval = 3s"), "{advice}");
    assert!(advice.contains("raise TCP_KEEPCNT"), "{advice}");
    assert!(
        promised < OUTAGE,
        "the outage below would kill the first settings"
    );
    drop(conn);
    link.heal_b();

    // Applied: more probes (idle 1 s + 8 x 1 s = 9 s to detect) ride out the same outage.
    let tracer = Tracer::trace_netns(&link.a.name, &[]);
    let capture = Capture::start(&link.a);
    let mut conn = link.connect(keepalive(1, 1, 8));
    link.blackhole_b(conn.server_port);
    thread::sleep(OUTAGE);
    link.heal_b();
    // The next probe after the outage is answered.
    thread::sleep(Duration::from_secs(2));
    conn.still_works(Duration::from_secs(15));
    let (events, wire) = tracer.stop_after_close(conn, link.a_addr, capture);
    let kinds = kinds(&events);
    assert!(
        wire.probes >= 3,
        "probes went out during the outage: {kinds:?}"
    );
    assert!(wire.answers >= 1, "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "keepalive_timeout"), "{kinds:?}");
}

#[test]
fn user_timeout_bounds_detection_as_promised_and_the_raised_value_rides_out_a_slow_peer() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    let user_timeout = |ms: u64| {
        move |s: &socket2::Socket| {
            s.set_tcp_user_timeout(Some(Duration::from_millis(ms)))
                .unwrap()
        }
    };

    // TCP_USER_TIMEOUT=2000 with data in flight: given up 2 s after the peer went quiet.
    let why = Why::start(&["--netns", &link.a.name]);
    let capture = Capture::start(&link.a);
    let mut conn = link.connect(user_timeout(2000));
    link.blackhole_b(conn.server_port);
    conn.client.write_all(b"into the void").unwrap();
    let (v, wire) = dies_as_promised(
        why,
        &conn,
        "user_timeout",
        Duration::from_secs(2),
        (capture, link.a_addr),
    );
    assert_eq!(wire.probes, 0, "{wire:?}");
    let advice = v["advice"].to_string();
    assert!(advice.contains("TCP_USER_TIMEOUT=2000 ms"), "{advice}");
    assert!(advice.contains("raise it"), "{advice}");
    drop(conn);
    link.heal_b();

    // Applied: raised above the outage, the same silence is ridden out and the data arrives.
    let tracer = Tracer::trace_netns(&link.a.name, &[]);
    let capture = Capture::start(&link.a);
    let mut conn = link.connect(user_timeout(15_000));
    link.blackhole_b(conn.server_port);
    conn.client.write_all(b"slow peer!").unwrap();
    thread::sleep(OUTAGE);
    link.heal_b();
    let mut buf = [0u8; 10];
    conn.server
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    conn.server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"slow peer!");
    conn.still_works(Duration::from_secs(15));
    let (events, wire) = tracer.stop_after_close(conn, link.a_addr, capture);
    let kinds = kinds(&events);
    assert!(
        kinds.iter().any(|k| k == "retransmit"),
        "retransmissions during the outage: {kinds:?}"
    );
    assert_eq!(wire.probes, 0, "{wire:?}");
}

#[test]
fn a_firewall_that_resets_forgotten_flows_and_the_advised_idle_keeps_the_flow() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    // A stateful firewall between client and server: it forgets an established flow after
    // FORGET_S idle and answers the next packet of a forgotten flow with a RST (conntrack
    // finds it invalid; nothing picks it up again mid-stream).
    const FORGET_S: u64 = 3;
    let topo = keepalive_tests::Routed::new(false);
    topo.router.nft(
        "table inet ka-fw {\n chain filter {\n type filter hook forward priority 0; policy accept;\n \
         ct state invalid reject with tcp reset\n }\n}\n",
    );
    topo.router
        .sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");
    topo.router.sysctl(
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        &FORGET_S.to_string(),
    );

    // Keepalive idle above the firewall's limit: the first probe draws the RST.
    let why = Why::start(&["--netns", &topo.client.name]);
    let capture = Capture::start(&topo.client);
    let conn = topo.connect(keepalive(6, 1, 3));
    let (v, lines) = why.verdict(Duration::from_secs(30));
    assert_eq!(v["sport"], conn.client_port, "{v}");
    assert_eq!(v["verdict"], "reset_after_probe", "{v}");
    // The firewall's RST answered the first probe, as the wire shows.
    let local = SocketAddr::new(topo.client_addr, conn.client_port);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert_eq!(
        (wire.probes, wire.resets_received, wire.resets_sent),
        (1, 1, 0)
    );
    let advice = v["advice"].to_string();
    assert!(advice.contains("within 6s of idleness"), "{advice}");
    let advised = advised_idle_below(&v, FORGET_S);
    drop(conn);

    // Applied: probes every `advised` seconds keep the flow in the firewall through four of
    // its idle limits, then data still goes both ways.
    let tracer = Tracer::trace_netns(&topo.client.name, &[]);
    let capture = Capture::start(&topo.client);
    let mut conn = topo.connect(keepalive(advised, 1, 3));
    thread::sleep(Duration::from_secs(4 * FORGET_S));
    conn.still_works(Duration::from_secs(15));
    let (events, wire) = tracer.stop_after_close(conn, topo.client_addr, capture);
    let kinds = kinds(&events);
    assert!(wire.answers >= 1, "{kinds:?}");
    assert_eq!(wire.resets_received, 0, "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "keepalive_timeout"), "{kinds:?}");
}

#[test]
fn local_aborts_and_the_advised_close_ends_with_fin() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    // Traces a new connection (with SO_LINGER {on, 0} when `linger_zero`) through `close`,
    // and returns the verdict on the client's side.
    let ends_with = |verdict: &str, linger_zero: bool, close: &dyn Fn(Connection)| {
        // --all: a plain close of a short connection is an ordinary end, shown only then.
        let why = Why::start(&["--netns", &link.a.name, "--all"]);
        let capture = Capture::start(&link.a);
        let conn = link.connect(move |s: &socket2::Socket| {
            if linger_zero {
                s.set_linger(Some(Duration::ZERO)).unwrap()
            }
        });
        let port = conn.client_port;
        close(conn);
        let (v, lines) = why.verdict(Duration::from_secs(10));
        assert_eq!(v["sport"], port, "{v}");
        assert_eq!(v["verdict"], verdict, "{v}");
        // An abort is the client's one RST on the wire; a close, none.
        let wire = capture
            .stop()
            .assert_traced(SocketAddr::new(link.a_addr, port), &timeline(&lines));
        let aborted = usize::from(verdict == "local_abort");
        assert_eq!((wire.resets_sent, wire.resets_received), (aborted, 0));
        v
    };
    // The client closes; the server reads the end of stream (or the reset) and closes too.
    let close_client = |conn: Connection| {
        let Connection {
            client, mut server, ..
        } = conn;
        drop(client);
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = server.read(&mut [0u8; 16]);
    };

    // SO_LINGER {on, 0}: the advice is a non-zero linger time or a plain close().
    let v = ends_with("local_abort", true, &close_client);
    assert!(v["advice"].to_string().contains("plain close()"), "{v}");

    // Applied: a plain close() ends with FIN.
    ends_with("closed", false, &close_client);

    // Close with received data unread: the advice is to read everything before close().
    let v = ends_with("local_abort", false, &|mut conn| {
        conn.server.write_all(b"unread").unwrap();
        thread::sleep(Duration::from_millis(200));
        close_client(conn);
    });
    assert_eq!(v["reason"], "TCP_ABORT_ON_CLOSE", "{v}");
    assert!(v["advice"].to_string().contains("read everything"), "{v}");

    // Applied: read what arrived, then close(): FIN.
    ends_with("closed", false, &|mut conn| {
        conn.server.write_all(b"read me").unwrap();
        let mut got = [0u8; 7];
        conn.client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        conn.client.read_exact(&mut got).unwrap();
        close_client(conn);
    });
}

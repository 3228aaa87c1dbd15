//! What happens to a keepalive connection when its peer host vanishes, reboots, or its
//! process is killed.

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use keepalive_tests::{
    Routed,
    capture::Capture,
    is_root, keepalive,
    tracer::{Why, timeline},
};

#[test]
fn peer_host_vanished_is_keepalive_timeout() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let topo = Routed::new(false);
    let why = Why::start(&["--netns", &topo.client.name]);
    let capture = Capture::start(&topo.client);
    let conn = topo.connect(keepalive(2, 1, 3));
    topo.vanish_server();
    let (v, lines) = why.verdict(Duration::from_secs(30));
    assert_eq!(v["sport"], conn.client_port, "{v}");
    assert_eq!(v["verdict"], "keepalive_timeout", "{v}");
    assert_eq!(v["probes_unanswered"], 3, "{v}");
    // Three probes, no answer, the timeout's RST: as the wire carried them.
    let local = SocketAddr::new(topo.client_addr, conn.client_port);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert_eq!((wire.probes, wire.answers, wire.resets_sent), (3, 0, 1));
}

#[test]
fn peer_host_restarted_answers_the_probe_with_rst() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let mut topo = Routed::new(false);
    let why = Why::start(&["--netns", &topo.client.name]);
    let capture = Capture::start(&topo.client);
    let conn = topo.connect(keepalive(3, 1, 3));
    // The server reboots while the connection idles: it remembers nothing.
    topo.restart_server();
    let (v, lines) = why.verdict(Duration::from_secs(30));
    // A probe, answered with the peer's RST (no answer, no RST of ours).
    let local = SocketAddr::new(topo.client_addr, conn.client_port);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert_eq!((wire.probes, wire.answers, wire.resets_received), (1, 0, 1));
    assert_eq!(v["sport"], conn.client_port, "{v}");
    assert_eq!(v["verdict"], "reset_after_probe", "{v}");
    assert_eq!(v["error"], "ECONNRESET", "{v}");
    assert!(
        v["advice"].to_string().contains("within 3s of idleness"),
        "{v}"
    );
}

#[test]
fn peer_process_killed_closes_with_fin() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let topo = Routed::new(false);
    // A real server process in the server namespace that we can kill.
    let mut server = Command::new("ip")
        .args(["netns", "exec", &topo.server.name, "python3", "-c"])
        .arg(
            "import socket,time\n\
             s=socket.socket(); s.bind(('198.19.0.1', 7000)); s.listen()\n\
             print('listening', flush=True)\n\
             c,_=s.accept(); time.sleep(600)\n",
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 server");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "listening");
    // Named by its port: a short connection that closes with FIN is an ordinary end, shown
    // for the connections a filter selects (or with --all).
    let why = Why::start(&["--netns", &topo.client.name, "--port", "7000"]);
    let target: SocketAddr = "198.19.0.1:7000".parse().unwrap();
    let mut client: TcpStream = topo.client.run(move || TcpStream::connect(target).unwrap());
    let port = client.local_addr().unwrap().port();
    std::thread::sleep(Duration::from_millis(300));
    server.kill().unwrap();
    server.wait().unwrap();
    // Like any client, ours sees end of file and closes its side.
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
    drop(client);
    let (v, _) = why.verdict(Duration::from_secs(10));
    assert_eq!(v["sport"], port, "{v}");
    assert_eq!(v["verdict"], "closed", "{v}");
}

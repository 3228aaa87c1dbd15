//! A client or server in a cgroup of the test's choosing: moves itself into CGROUP, enters
//! network namespace NETNS, then either connects to ADDR:PORT, or (`listen@ADDR`) listens on
//! ADDR, prints `port <port>` and accepts one connection; keepalive IDLE/INTERVAL/COUNT
//! seconds on its socket. It prints `port <local port>` once connected, then waits (at most
//! 60 s) for the connection to end and prints how: `error <errno>` or `eof`. The owner a
//! tracer should name is this process, in that cgroup.
//!
//! usage: keepalive-test-client CGROUP NETNS ADDR:PORT|listen@ADDR IDLE INTERVAL COUNT

use std::{
    fs::File,
    io::{Read, Write},
    net::SocketAddr,
    time::Duration,
};

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Socket, TcpKeepalive, Type};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cgroup, netns, addr, idle, interval, count] = &args[..] else {
        eprintln!(
            "usage: keepalive-test-client CGROUP NETNS ADDR:PORT|listen@ADDR IDLE INTERVAL COUNT"
        );
        std::process::exit(2);
    };
    let secs = |s: &String| Duration::from_secs(s.parse().expect("seconds"));
    // "0" moves the writing process: connect() below runs in the cgroup.
    std::fs::write(format!("{cgroup}/cgroup.procs"), "0").expect("joining the cgroup");
    let ns = File::open(netns).expect("opening the namespace");
    setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
    let keepalive = TcpKeepalive::new()
        .with_time(secs(idle))
        .with_interval(secs(interval))
        .with_retries(count.parse().expect("count"));
    let configure = |s: &Socket| {
        s.set_tcp_keepalive(&keepalive).expect("keepalive");
        s.set_keepalive(true).expect("SO_KEEPALIVE");
    };
    let socket = match addr.strip_prefix("listen@") {
        // Accepted: the kernel sees no connect() of ours; the owner is found another way.
        Some(ip) => {
            let at = SocketAddr::new(ip.parse().expect("listen@ADDR"), 0);
            let listener = Socket::new(Domain::for_address(at), Type::STREAM, None).unwrap();
            listener.bind(&at.into()).expect("bind");
            listener.listen(1).unwrap();
            let port = listener.local_addr().unwrap().as_socket().unwrap().port();
            println!("listening {port}");
            std::io::stdout().flush().unwrap();
            let (accepted, _) = listener.accept().expect("accept");
            configure(&accepted);
            accepted
        }
        None => {
            let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            configure(&socket);
            socket.connect(&addr.into()).expect("connect");
            socket
        }
    };
    let mut stream: std::net::TcpStream = socket.into();
    let port = stream.local_addr().unwrap().port();
    println!("port {port}");
    std::io::stdout().flush().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    match stream.read(&mut [0u8; 1]) {
        Ok(0) => println!("eof"),
        Ok(_) => println!("data"),
        Err(e) => println!("error {}", e.raw_os_error().unwrap_or(0)),
    }
}

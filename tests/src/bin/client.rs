//! A client in a cgroup of the test's choosing: moves itself into CGROUP, enters network
//! namespace NETNS, connects to ADDR:PORT with keepalive IDLE/INTERVAL/COUNT seconds, prints
//! `port <local port>`, then waits (at most 60 s) for the connection to end and prints how:
//! `error <errno>` or `eof`. The owner a tracer should name is this process, in that cgroup.
//!
//! usage: keepalive-test-client CGROUP NETNS ADDR:PORT IDLE INTERVAL COUNT

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
        eprintln!("usage: keepalive-test-client CGROUP NETNS ADDR:PORT IDLE INTERVAL COUNT");
        std::process::exit(2);
    };
    let secs = |s: &String| Duration::from_secs(s.parse().expect("seconds"));
    // "0" moves the writing process: connect() below runs in the cgroup.
    std::fs::write(format!("{cgroup}/cgroup.procs"), "0").expect("joining the cgroup");
    let ns = File::open(netns).expect("opening the namespace");
    setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
    let addr: SocketAddr = addr.parse().expect("ADDR:PORT");
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .set_tcp_keepalive(
            &TcpKeepalive::new()
                .with_time(secs(idle))
                .with_interval(secs(interval))
                .with_retries(count.parse().expect("count")),
        )
        .expect("keepalive");
    socket.set_keepalive(true).expect("SO_KEEPALIVE");
    socket.connect(&addr.into()).expect("connect");
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

//! Reading `keepalive trace --metrics` as Prometheus would: a free loopback port to serve
//! on, a scrape, and one sample's value.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /metrics from 127.0.0.1:`port`; the whole HTTP response.
pub fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the sample `name` (with labels, exactly as printed). A series that is
/// absent fails the test: a renamed or dropped metric must not read as zero.
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in the metrics:\n{metrics}"))
}

/// The sum of the samples whose name and labels start with `prefix`, e.g. every remote of
/// `keepalive_connection_ends_total{verdict="closed"`; none at all fails the test.
pub fn sum(metrics: &str, prefix: &str) -> f64 {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        !values.is_empty(),
        "no sample {prefix}... in the metrics:\n{metrics}"
    );
    values.iter().sum()
}

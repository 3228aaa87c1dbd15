//! `keepalive path`: the idle limit of a path, measured against middleboxes the tests build
//! themselves (a NAT router, firewalls that drop or reset forgotten flows, each with a
//! conntrack timeout of a few seconds) and a server that closes idle connections itself.
//! The measured interval must contain the configured limit, and the recommended idle time,
//! applied, must keep a connection through the same router.

use std::{
    io::Read,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use keepalive_tests::{IdleServer, Link, Netns, Routed, is_root, keepalive, tracer};
use serde_json::Value;

/// Runs `keepalive path TARGET --netns NS --format json` with `extra`; returns its exit code
/// and result line.
fn path(ns: &Netns, target: &str, extra: &[&str]) -> (i32, Value) {
    let mut child = Command::new(tracer::binary())
        .args(["path", target, "--netns", &ns.name, "--format", "json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keepalive path");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (status, killed) = tracer::wait_bounded(child, Duration::from_secs(180));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    out.read_to_string(&mut stdout).unwrap();
    err.read_to_string(&mut stderr).unwrap();
    assert!(!killed, "keepalive path ran over 180 s: {stderr}");
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no result: {stderr}"));
    let mut v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["type"], "path", "{v}");
    // What it said while measuring, for the assertions' messages.
    v["progress"] = stderr.into();
    (status.code().unwrap_or(-1), v)
}

fn seconds(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {v}"))
}

/// The result brackets `limit` (seconds) within `width`, and says `how`.
fn brackets(v: &Value, limit: u64, width: u64, how: &str) {
    let (kept, forgotten) = (seconds(v, "kept_s"), seconds(v, "forgotten_s"));
    assert!(
        kept <= limit && limit <= forgotten,
        "kept {kept} s, forgotten {forgotten} s: the limit is {limit} s\n{v}"
    );
    assert!(forgotten - kept <= width, "{v}");
    assert_eq!(v["how"], how, "{v}");
}

/// A router whose conntrack forgets established flows after `forget_s` idle, then treats
/// their packets as invalid: `verdict` (drop, or reject with tcp reset); with `nat`, it also
/// masquerades the client.
fn middlebox(nat: bool, forget_s: u64, verdict: &str) -> Routed {
    let topo = Routed::new(nat);
    if !nat {
        topo.router.nft(&format!(
            "table inet ka-fw {{\n chain filter {{\n type filter hook forward priority 0; \
             policy accept;\n ct state invalid {verdict}\n }}\n}}\n"
        ));
        topo.router
            .sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");
    }
    topo.router.sysctl(
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        &forget_s.to_string(),
    );
    topo
}

/// A NAT forgetting idle flows after `forget_s`, which `path` is not told: with the default
/// --min (15 s) and --max (2 h) it brackets the limit within 2 s, searching below --min when
/// it must, and recommends an idle time below it that, applied, keeps a connection through
/// the router for three of its limits.
fn a_nat_timeout_is_bracketed_and_the_recommended_idle_keeps_the_connection(forget_s: u64) {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let topo = middlebox(true, forget_s, "");
    let server = IdleServer::start(&topo.server, topo.server_addr, None);
    let (code, v) = path(&topo.client, &server.addr.to_string(), &[]);
    assert_eq!(code, 0, "{v}");
    brackets(&v, forget_s, 2, "silent");
    let recommended = seconds(&v, "recommended_idle_s");
    assert!(
        (1..forget_s).contains(&recommended) && recommended <= seconds(&v, "kept_s"),
        "{v}"
    );
    assert!(
        v["settings"]["enforce"]
            .as_str()
            .unwrap()
            .contains(&format!("--idle {recommended}")),
        "{v}"
    );

    // Applied: the connection outlives three of the NAT's idle limits, data still flows.
    let mut conn = topo.connect(keepalive(recommended, 1, 3));
    thread::sleep(Duration::from_secs(3 * forget_s));
    conn.still_works(Duration::from_secs(10));
}

#[test]
fn a_nat_timeout_below_the_shortest_idle_tried_is_found_by_searching_down() {
    a_nat_timeout_is_bracketed_and_the_recommended_idle_keeps_the_connection(7);
}

#[test]
fn a_nat_timeout_between_the_rungs_is_bracketed_with_the_defaults() {
    a_nat_timeout_is_bracketed_and_the_recommended_idle_keeps_the_connection(40);
}

#[test]
fn a_firewall_that_drops_forgotten_flows_is_silent() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    const FORGET_S: u64 = 4;
    let topo = middlebox(false, FORGET_S, "drop");
    let server = IdleServer::start(&topo.server, topo.server_addr, None);
    let (code, v) = path(
        &topo.client,
        &server.addr.to_string(),
        &["--min", "1s", "--max", "12s", "--connections", "8"],
    );
    assert_eq!(code, 0, "{v}");
    brackets(&v, FORGET_S, 2, "silent");
}

#[test]
fn a_firewall_that_resets_forgotten_flows_is_rst() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    const FORGET_S: u64 = 4;
    let topo = middlebox(false, FORGET_S, "reject with tcp reset");
    let server = IdleServer::start(&topo.server, topo.server_addr, None);
    let (code, v) = path(
        &topo.client,
        &server.addr.to_string(),
        &["--min", "1s", "--max", "12s"],
    );
    assert_eq!(code, 0, "{v}");
    brackets(&v, FORGET_S, 2, "rst");
}

#[test]
fn over_ipv6_a_host_firewall_that_resets_is_measured_too() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    // The server host's own stateful firewall forgets idle flows after 3 s and resets them.
    const FORGET_S: u64 = 3;
    let link = Link::new("client", "server", true);
    link.b.nft(
        "table inet ka-fw {\n chain input {\n type filter hook input priority 0; policy accept;\n \
         ct state invalid reject with tcp reset\n }\n}\n",
    );
    link.b.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");
    link.b.sysctl(
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        &FORGET_S.to_string(),
    );
    let server = IdleServer::start(&link.b, link.b_addr, None);
    let (code, v) = path(
        &link.a,
        &server.addr.to_string(),
        &["--min", "1s", "--max", "10s"],
    );
    assert_eq!(code, 0, "{v}");
    brackets(&v, FORGET_S, 2, "rst");
}

#[test]
fn a_server_that_closes_idle_connections_is_the_server_not_the_path() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    const CLOSE_S: u64 = 3;
    let link = Link::new("client", "server", false);
    let server = IdleServer::start(&link.b, link.b_addr, Some(Duration::from_secs(CLOSE_S)));
    let (code, v) = path(
        &link.a,
        &server.addr.to_string(),
        &["--min", "1s", "--max", "10s"],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["how"], "server_closed", "{v}");
    let after = seconds(&v, "forgotten_s");
    assert!((CLOSE_S - 1..=CLOSE_S + 1).contains(&after), "{v}");
    // No path setting is recommended for a server's own limit.
    assert!(v["recommended_idle_s"].is_null(), "{v}");
}

#[test]
fn no_limit_up_to_max_exits_1_and_bad_targets_exit_2() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let link = Link::new("client", "server", false);
    let server = IdleServer::start(&link.b, link.b_addr, None);
    let (code, v) = path(
        &link.a,
        &server.addr.to_string(),
        &["--min", "1s", "--max", "3s", "--connections", "3"],
    );
    assert_eq!(code, 1, "{v}");
    assert!(v["forgotten_s"].is_null(), "{v}");
    assert_eq!(seconds(&v, "kept_s"), 3, "{v}");

    for bad in [
        vec!["path", "no-port-here"],
        vec!["path", "198.18.0.2:22", "--max", "forever"],
        vec!["path", "198.18.0.2:22", "--min", "1m", "--max", "10s"],
    ] {
        let out = Command::new(tracer::binary()).args(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
}

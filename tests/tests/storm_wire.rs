//! An experiment, run by hand: a storm of keepalive probes over loopback, all connections
//! probing once a second, traced against three witnesses: the wire (a capture in the
//! namespace), the kernel's own count of probes (TcpExt TCPKeepAlive) and ftrace (a tracefs
//! instance recording each keepalive timer run). A shortfall the wire, the counter and
//! ftrace agree on, in bursts of runs within a millisecond or two, is the kernel running no
//! BPF program for tracepoint hits ftrace records (README, Robustness). It prints the
//! unseen probes by millisecond.
//!
//! `STORM_CONNECTIONS=2000 cargo test -p keepalive-tests --test storm_wire -- --ignored
//! --nocapture` (with KEEPALIVE_BIN, as root).

use std::{thread, time::Duration};

use keepalive_tests::{
    Netns, Tracer,
    capture::{Capture, KeepaliveOnWire},
    is_root, keepalive,
    netns::loopback,
};

#[test]
#[ignore = "an experiment: cargo test --test storm_wire -- --ignored --nocapture"]
fn storm_trace_against_wire_and_counter() {
    assert!(is_root());
    let n: usize = std::env::var("STORM_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let ns = Netns::new("storm");
    let inst = "/sys/kernel/tracing/instances/storm";
    let _ = std::fs::create_dir(inst);
    let _instance = Instance(inst);
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let addr = kallsyms
        .lines()
        .find(|l| l.ends_with(" tcp_keepalive_timer"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    std::fs::write(format!("{inst}/buffer_size_kb"), "16384").unwrap();
    std::fs::write(
        format!("{inst}/events/timer/timer_expire_entry/filter"),
        format!("function == 0x{addr}"),
    )
    .unwrap();
    std::fs::write(
        format!("{inst}/events/timer/timer_expire_entry/enable"),
        "1",
    )
    .unwrap();
    let tracer = Tracer::trace_netns(&ns.name, &[]);
    let capture = Capture::start(&ns);
    let before = ns.tcp_counters();
    let conns: Vec<_> = (0..n).map(|_| loopback(&ns, keepalive(1, 1, 60))).collect();
    thread::sleep(Duration::from_secs(8));
    let ends: Vec<_> = conns
        .iter()
        .map(|c| {
            (
                c.client.local_addr().unwrap(),
                c.client.peer_addr().unwrap(),
            )
        })
        .collect();
    // Closed, no probe comes after; a close reports the answers its last timer run left.
    drop(conns);
    thread::sleep(Duration::from_secs(1));
    let after = ns.tcp_counters();
    std::fs::write(
        format!("{inst}/events/timer/timer_expire_entry/enable"),
        "0",
    )
    .unwrap();
    let trace = std::fs::read_to_string(format!("{inst}/trace")).unwrap();
    let seen = trace
        .lines()
        .filter(|l| l.contains("timer_expire_entry"))
        .count();

    let lines = tracer.stop();
    let wire = capture.stop();
    let traced = KeepaliveOnWire::in_trace(&lines);
    let mut on_wire = KeepaliveOnWire::default();
    let mut short = std::collections::BTreeMap::<usize, usize>::new();
    let mut unseen: Vec<f64> = vec![];
    let mut by_pair: std::collections::HashMap<_, Vec<_>> = std::collections::HashMap::new();
    for seg in &wire.segments {
        let key = if seg.src < seg.dst {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        by_pair.entry(key).or_default().push(seg.clone());
    }
    for (local, peer) in ends {
        let key = if local < peer {
            (local, peer)
        } else {
            (peer, local)
        };
        let wire = keepalive_tests::capture::Wire {
            segments: by_pair.remove(&key).unwrap_or_default(),
        };
        let k = wire.keepalive_between(local, peer);
        let t = KeepaliveOnWire::in_trace(&keepalive_tests::tracer::events_between(
            &lines,
            local.port(),
            peer.port(),
        ));
        if t.probes != k.probes {
            *short.entry(k.probes - t.probes.min(k.probes)).or_default() += 1;
            if t.probes < k.probes {
                // The wire's probes no traced probe is within 30 ms of: the unseen runs.
                let traced_at: Vec<f64> =
                    keepalive_tests::tracer::events_between(&lines, local.port(), peer.port())
                        .iter()
                        .filter(|e| e["kind"] == "keepalive_probe")
                        .map(|e| {
                            time::OffsetDateTime::parse(
                                e["ts"].as_str().unwrap(),
                                &time::format_description::well_known::Rfc3339,
                            )
                            .unwrap()
                            .unix_timestamp_nanos() as f64
                                / 1e9
                        })
                        .collect();
                unseen.extend(
                    wire.probes_between(local, peer)
                        .iter()
                        .map(|s| s.at)
                        .filter(|at| !traced_at.iter().any(|t| (t - at).abs() < 0.03)),
                );
            }
        }
        on_wire.probes += k.probes;
        on_wire.answers += k.answers;
    }
    eprintln!("connections short by n probes: {short:?}");
    unseen.sort_by(f64::total_cmp);
    let mut by_ms = std::collections::BTreeMap::<i64, usize>::new();
    for u in &unseen {
        *by_ms.entry((u * 1000.0) as i64).or_default() += 1;
    }
    eprintln!("unseen probes on the wire by millisecond: {by_ms:?}");
    let counted = after["TCPKeepAlive"] - before["TCPKeepAlive"];
    eprintln!(
        "{}",
        lines.iter().rfind(|l| l["type"] == "summary").unwrap()
    );
    eprintln!(
        "{n} connections: trace {}/{} probes/answers, wire {}/{}, TCPKeepAlive {counted}, \
         keepalive timer runs ftrace saw {seen}",
        traced.probes, traced.answers, on_wire.probes, on_wire.answers
    );
    assert_eq!(
        (traced.probes, traced.answers),
        (on_wire.probes, on_wire.answers)
    );
}

/// A tracefs instance of the experiment's, removed at the end (also when it fails).
struct Instance(&'static str);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::write(
            format!("{}/events/timer/timer_expire_entry/enable", self.0),
            "0",
        );
        let _ = std::fs::remove_dir(self.0);
    }
}

//! The morning after: a tracer with `--history` keeps verdicts and timelines; once it has
//! stopped (or was killed), `keepalive why --since` and `keepalive history` answer from the
//! store alone, and say when nobody was tracing.

use std::{
    net::SocketAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use keepalive_tests::{
    HistoryStore as Store, Link, Routed,
    capture::Capture,
    is_root, json_lines,
    ssh::{SshSession, Sshd},
    tracer::{Tracer, binary, timeline},
};
use serde_json::Value;

const SERVER: &str = "198.19.0.1";

/// `keepalive <args>`: its exit code, stdout as JSON lines, and stderr.
fn run(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run keepalive");
    (
        out.status.code(),
        json_lines(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_morning_after_why_answers_from_the_history_alone() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let store = Store::new("ssh");
    let topo = Routed::new(false);
    for (k, v) in [("time", "2"), ("intvl", "1"), ("probes", "3")] {
        topo.client
            .sysctl(&format!("net.ipv4.tcp_keepalive_{k}"), v);
    }
    let sshd = Sshd::start(&topo.server, SERVER, "hist1");
    let mut tracer =
        Tracer::trace_netns(&topo.client.name, &["--quiet", "--history", store.path()]);
    let capture = Capture::start(&topo.client);
    let mut ssh = SshSession::start(&topo.client, &sshd, SERVER, &["TCPKeepAlive=yes"]);
    let pid = ssh.pid();
    ssh.wait_keepalive_answered(Duration::from_secs(20)); // idle; a probe answered
    topo.blackhole();
    let status = ssh.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "ssh should fail when the path dies");
    tracer
        .wait_for(Duration::from_secs(10), |v| {
            v["type"] == "verdict" && v["comm"] == "ssh"
        })
        .expect("the tracer saw the session die");
    tracer.stop();
    // Long enough for the time since to count as a gap (under a second does not).
    thread::sleep(Duration::from_millis(1500));

    // Later, with no tracer running: the history alone answers.
    let (code, lines, err) = run(&[
        "why",
        "--since",
        "1h",
        "--comm",
        "ssh",
        "--history",
        store.path(),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let verdicts: Vec<&Value> = lines.iter().filter(|l| l["type"] == "verdict").collect();
    assert_eq!(verdicts.len(), 1, "{lines:?}");
    let v = verdicts[0];
    assert_eq!(v["verdict"], "keepalive_timeout", "{v}");
    assert_eq!(
        (v["comm"].as_str(), v["pid"].as_u64()),
        (Some("ssh"), Some(pid as u64))
    );
    assert_eq!(v["dport"], 22);
    assert!(
        v["advice"].to_string().contains("ServerAliveInterval"),
        "{v}"
    );
    // With the timeline that led to it, as live `why` prints it.
    let kinds: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "event")
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"keepalive_answered"), "{kinds:?}");
    // Probes answered before the cut, then the three unanswered ones.
    let probes = kinds.iter().filter(|k| **k == "keepalive_probe").count();
    assert!(probes >= 4, "{kinds:?}");
    assert!(kinds.contains(&"keepalive_timeout"), "{kinds:?}");
    // The timeline kept is the whole of what the wire carried.
    let local = SocketAddr::new(topo.client_addr, v["sport"].as_u64().unwrap() as u16);
    let wire = capture.stop().assert_traced(local, &timeline(&lines));
    assert_eq!(wire.resets_sent, 1, "{wire:?}");
    // The tracer stopped: the time since is a gap, said so.
    let gap = lines
        .iter()
        .find(|l| l["type"] == "gap")
        .unwrap_or_else(|| panic!("no gap after the tracer stopped: {lines:?}"));
    assert!(gap["to"].is_string(), "{gap}");

    // The human answer names it too, and `keepalive history` lists the death.
    let human = Command::new(binary())
        .args([
            "why",
            "--since",
            "1h",
            "--comm",
            "ssh",
            "--history",
            store.path(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    eprintln!("keepalive why --since 1h --comm ssh:\n{text}");
    assert!(text.contains("KEEPALIVE_TIMEOUT"), "{text}");
    assert!(text.contains("keepalive was not tracing between"), "{text}");
    let table = Command::new(binary())
        .args(["history", "--since", "1h", "--history", store.path()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    eprintln!("keepalive history --since 1h:\n{table}");
    assert!(table.contains("keepalive_timeout"), "{table}");
    let (code, rows, err) = run(&[
        "history",
        "--since",
        "1h",
        "--history",
        store.path(),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        rows.iter().any(|r| r["type"] == "verdict"
            && r["verdict"] == "keepalive_timeout"
            && r["comm"] == "ssh"),
        "{rows:?}"
    );
    // Nothing before tracing started: a question about yesterday is all gap, exit 1.
    let (code, lines, _) = run(&[
        "why",
        "--since",
        "48h",
        "--until",
        "24h",
        "--history",
        store.path(),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "gap");
}

#[test]
fn a_tracer_killed_with_sigkill_leaves_a_history_that_reads_back() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let store = Store::new("kill");
    let link = Link::new("client", "server", false);
    // --all: these short connections' ends are ordinary, kept only then.
    let mut tracer = Tracer::trace_netns(
        &link.a.name,
        &["--quiet", "--all", "--history", store.path()],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = 0;
    for _ in 0..200 {
        let c = link.connect(|_| {});
        last = c.client_port;
        drop(c);
        assert!(Instant::now() < deadline);
    }
    tracer
        .wait_for(Duration::from_secs(10), |v| {
            v["type"] == "verdict" && v["sport"] == last
        })
        .expect("a verdict for the last connection");
    // Killed right after more connections ended, while it may be writing them: no stop
    // marker, maybe a torn line.
    for _ in 0..100 {
        drop(link.connect(|_| {}));
    }
    drop(tracer); // SIGKILL
    // Gaps under a second are not reported (a start before its first line is not one).
    thread::sleep(Duration::from_millis(1500));

    let (code, rows, err) = run(&[
        "history",
        "--since",
        "1h",
        "--all",
        "--history",
        store.path(),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let closed = rows
        .iter()
        .filter(|r| r["type"] == "verdict" && r["verdict"] == "closed")
        .count();
    assert!(
        closed >= 200,
        "{closed} closed connections read back: {err}"
    );
    // Since the kill nobody traced: a gap that reaches now.
    assert!(rows.iter().any(|r| r["type"] == "gap"), "{rows:?}");

    // The lock went with the killed tracer: a new one may write.
    let again = Tracer::trace_netns(&link.a.name, &["--quiet", "--history", store.path()]);
    again.stop();
}

#[test]
fn a_second_tracer_on_the_same_history_is_refused() {
    assert!(is_root(), "end-to-end tests need root (cargo xtask test)");
    let store = Store::new("two");
    let link = Link::new("client", "server", false);
    let first = Tracer::trace_netns(&link.a.name, &["--quiet", "--history", store.path()]);
    let (code, _, err) = run(&["trace", "--quiet", "--history", store.path()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains("another keepalive trace"), "{err}");
    // Root only: it says who talked to whom.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&store.0).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    first.stop();
}

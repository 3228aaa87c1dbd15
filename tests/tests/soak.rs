//! Soak: connection churn plus keepalive traffic while tracing, for KEEPALIVE_SOAK_SECS
//! seconds (run by `cargo xtask soak --minutes N`, in CI for 2 minutes). The tracer must see
//! what happened (every churned connection's end counted exactly, by two tracers: those
//! the kernel's socket table says have ended; every probe the kernel counted, and its
//! answer; no timeout), lose nothing, stop cleanly with its summary, and
//! keep its memory (within 1 MiB) and open files (exactly) flat. Ignored in the normal test run for its length.

use std::{
    fs,
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use keepalive_tests::{
    Link, is_root, keepalive,
    metrics::{free_port, sample, scrape, sum},
    tracer::{binary, wait_bounded, wait_tracing_line},
};

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The churn's connections in namespace `ns` (to the server's `port`) that have not ended:
/// any state but TIME_WAIT (which comes after the end) in the kernel's socket table.
fn churned_not_ended(ns: &str, port: u16) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ss",
            "-Htan",
            "dst",
            &format!(":{port}"),
        ])
        .output()
        .expect("ss");
    assert!(out.status.success(), "ss in {ns}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("TIME-WAIT"))
        .count() as u64
}

#[test]
#[ignore = "long: run with `cargo xtask soak --minutes N`"]
fn soak_memory_and_fds_stay_flat() {
    assert!(is_root(), "needs root");
    let secs: u64 = std::env::var("KEEPALIVE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let link = Link::new("client", "server", false);
    // The tracer's verdicts and summary, for what the kernel counted (ordinary ends, runs
    // it skipped) when a check fails.
    let summary_file =
        std::env::temp_dir().join(format!("keepalive-soak-{}.jsonl", std::process::id()));
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut tracer = Command::new(binary())
        .args([
            "trace",
            "--quiet",
            "--format",
            "json",
            "--output",
            &summary_file.to_string_lossy(),
            "--netns",
            &link.a.name,
        ])
        .args(["--metrics", &metrics_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = tracer.id();
    let mut err = std::io::BufReader::new(tracer.stderr.take().unwrap());
    wait_tracing_line(&mut err);
    // A second tracer, only for its count of ends: the kernel's blind spot (no program run
    // for an event) hits every tracer alike; a fault of one tracer's run does not.
    let second_port = free_port();
    let second = keepalive_tests::Tracer::trace_netns(
        &link.a.name,
        &["--quiet", "--metrics", &format!("127.0.0.1:{second_port}")],
    );
    let probes_at_start = link.a.tcp_counters()["TCPKeepAlive"];

    // Keepalive traffic: idle connections probing every second, answered.
    let idle: Vec<_> = (0..200).map(|_| link.connect(keepalive(1, 1, 3))).collect();
    // Churn: connect, exchange nothing, close, as fast as one thread goes.
    let bind = SocketAddr::new(link.b_addr, 0);
    let listener = link.b.run(move || TcpListener::bind(bind).unwrap());
    let target = SocketAddr::new(link.b_addr, listener.local_addr().unwrap().port());
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let acceptor = {
        let stop = stop.clone();
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let churner = {
        let (stop, churned) = (stop.clone(), churned.clone());
        let ns = link.a.name.clone();
        thread::spawn(move || {
            let f = fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                    drop(s);
                    churned.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Warm up, then measure start and end.
    let warmup = Duration::from_secs(secs.min(60) / 6 + 5);
    thread::sleep(warmup);
    let (rss0, fds0) = (rss_kib(pid), fds(pid));
    let start = Instant::now();
    let until = Duration::from_secs(secs).saturating_sub(warmup);
    while start.elapsed() < until {
        thread::sleep(Duration::from_secs(1));
        assert!(
            tracer.try_wait().unwrap().is_none(),
            "tracer died during the soak"
        );
    }
    let (rss1, fds1) = (rss_kib(pid), fds(pid));
    stop.store(true, Ordering::Relaxed);
    churner.join().unwrap();
    acceptor.join().unwrap();
    let connections = churned.load(Ordering::Relaxed);
    // The last connections' verdicts settle within a fraction of a second.
    thread::sleep(Duration::from_secs(1));
    let keepalive_probes = || link.a.tcp_counters()["TCPKeepAlive"];
    // A connection the server's full accept queue kept half-open ends only once its FIN is
    // through, seconds or minutes later: wait (10 s at most) until every churned one has,
    // then count with the kernel's socket table the ones that still have not ended.
    let ends = |m: &str| sum(m, "keepalive_connection_ends_total{");
    let unended = || churned_not_ended(&link.a.name, target.port());
    let deadline = Instant::now() + Duration::from_secs(10);
    while (unended() > 0
        || ends(&scrape(port)) < connections as f64
        || ends(&scrape(second_port)) < connections as f64)
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_secs(1));
    }
    let unended_before = unended();
    let probes_before = keepalive_probes() - probes_at_start;
    let counted_by_second = ends(&scrape(second_port));
    let metrics = scrape(port);
    let probes_after = keepalive_probes() - probes_at_start;
    let unended_after = unended();
    second.stop();
    drop(idle);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let (status, killed) = wait_bounded(tracer, Duration::from_secs(10));
    assert!(
        !killed && status.success(),
        "tracer did not stop cleanly: {rest}"
    );
    println!(
        "soak: {secs}s, {connections} connections churned, 200 keepalive connections; \
         tracer RSS {rss0} KiB -> {rss1} KiB, open fds {fds0} -> {fds1}; {}",
        rest.trim()
    );
    assert!(
        connections > 1000,
        "churn too slow to mean anything: {connections}"
    );
    // What the tracer saw, against what the soak did: every churned connection's end,
    // exactly (ordinary ends from the kernel's counter, the others from their verdicts).
    let written = fs::read_to_string(&summary_file).unwrap_or_default();
    let _ = fs::remove_file(&summary_file);
    let summary = written.lines().last().unwrap_or("no summary");
    // Exactly: every churned connection that has ended by the kernel's socket table (those
    // still closing are counted before and after the scrapes), by both tracers.
    let counted = ends(&metrics);
    println!(
        "soak: {counted} ends counted for {connections} churned connections \
         ({unended_before} to {unended_after} still closing), a second tracer counted \
         {counted_by_second}; {summary}"
    );
    let ended = (connections - unended_before) as f64..=(connections - unended_after) as f64;
    assert!(
        ended.contains(&counted) && ended.contains(&counted_by_second),
        "{counted} connection ends counted ({counted_by_second} by a second tracer) for \
         {connections} churned connections, {unended_before} to {unended_after} of them \
         still closing; {summary}"
    );
    // Every probe the namespace's kernel counted, within what it sent while the metrics
    // were read (at most one per connection).
    let probes = sample(&metrics, "keepalive_probes_sent_total");
    let answered = sample(&metrics, "keepalive_probes_answered_total");
    assert!(
        probes_before.saturating_sub(200) as f64 <= probes && probes <= probes_after as f64,
        "{probes} probes traced; the kernel counted {probes_before} to {probes_after}"
    );
    assert!(
        probes >= 200.0 * secs as f64 / 4.0,
        "{probes} probes from 200 connections in {secs} s"
    );
    assert!(
        answered >= probes - 200.0,
        "{answered} answers to {probes} probes"
    );
    assert_eq!(sample(&metrics, "keepalive_timeouts_total"), 0.0);
    assert_eq!(
        sample(&metrics, "keepalive_events_lost_total"),
        0.0,
        "{rest}"
    );
    assert!(rest.contains(", 0 lost"), "{rest}");
    assert_eq!(fds0, fds1, "open fds grew");
    // Flat: the engine's bounded state and allocator noise (tens of KiB here), not growth
    // with traffic.
    assert!(
        rss1 <= rss0 + 1024,
        "RSS grew over 1 MiB: {rss0} -> {rss1} KiB"
    );
}

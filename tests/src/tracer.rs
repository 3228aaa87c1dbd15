//! The `keepalive` binary, run as a user runs it, with its JSON lines collected.

use std::{
    io::BufRead,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::{
    capture::{Capture, KeepaliveOnWire},
    netns::Connection,
};

/// How long a tracer may take to load and attach: well under a second on a host, but the
/// kernel matrix runs five at once in a guest emulated on one host thread.
const START_LIMIT: Duration = Duration::from_secs(120);

/// Path of the binary under test: `KEEPALIVE_BIN`, which `cargo xtask test` sets to the
/// binary it has just built. No fallback to whatever build lies in target/: an old binary
/// would test old code and pass.
pub fn binary() -> PathBuf {
    let path = PathBuf::from(std::env::var_os("KEEPALIVE_BIN").expect(
        "KEEPALIVE_BIN is not set: run the tests with `cargo xtask test` (it builds the \
         binary and sets it), or set it to the keepalive binary to test",
    ));
    assert!(
        path.exists(),
        "{} (KEEPALIVE_BIN) not found: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

/// The mode a tracer must run in: the one `KEEPALIVE_MODE` asks for (the kernel matrix runs
/// every scenario in each), else what `auto` must pick here: kprobe mode where the kernel
/// has kprobes, so a kprobe mode that broke and fell back to tracepoints fails the tests.
pub fn expected_mode() -> &'static str {
    match std::env::var("KEEPALIVE_MODE").as_deref() {
        Ok("kprobe") => "kprobe",
        Ok("tracepoint") => "tracepoint",
        _ if std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() => "kprobe",
        _ => "tracepoint",
    }
}

/// Asserts a tracer's "Tracing ... (MODE mode, HZ=...)" line names [`expected_mode`].
fn assert_expected_mode(line: &str) {
    let want = format!("({} mode", expected_mode());
    assert!(line.contains(&want), "expected {want}: {line}");
}

/// A running `keepalive trace --format json`; stopped with SIGINT like Ctrl-C.
pub struct Tracer {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    collected: Vec<Value>,
}

impl Tracer {
    /// Starts `keepalive <args>` and waits (at most START_LIMIT) until it says it is tracing.
    pub fn start(args: &[&str]) -> Tracer {
        let mut child = Command::new(binary())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keepalive");
        let lines = pipe_lines(child.stdout.take().unwrap());
        let stderr = pipe_lines(child.stderr.take().unwrap());
        let mut t = Tracer {
            child: Some(child),
            lines,
            stderr,
            collected: vec![],
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match t.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("Tracing") => {
                    assert_expected_mode(&line);
                    return t;
                }
                Ok(line) => eprintln!("keepalive: {line}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("keepalive exited before tracing: {:?}", t.finish_raw())
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            assert!(
                Instant::now() < deadline,
                "keepalive did not start tracing in {START_LIMIT:?}"
            );
        }
    }

    /// Traces one network namespace, JSON lines, plus `extra` arguments.
    pub fn trace_netns(netns: &str, extra: &[&str]) -> Tracer {
        let mut args = vec!["trace", "--format", "json", "--netns", netns];
        args.extend_from_slice(extra);
        Tracer::start(&args)
    }

    /// Waits up to `timeout` for a JSON line matching `pred`; returns it.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(v) = self.collected.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v = parse(&line);
                    self.collected.push(v.clone());
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Stops the tracer with SIGINT (as Ctrl-C) and returns every JSON line it printed,
    /// the closing summary included. Asserts it exits successfully within 10 s.
    pub fn stop(mut self) -> Vec<Value> {
        let child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
        let (status, _) = wait_bounded(child, Duration::from_secs(10));
        assert!(status.success(), "keepalive exited with {status}");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.collected.push(parse(&line));
        }
        // The tracer's own diagnostics, for the test log.
        while let Ok(line) = self.stderr.try_recv() {
            eprintln!("keepalive: {line}");
        }
        std::mem::take(&mut self.collected)
    }

    fn finish_raw(&mut self) -> String {
        let mut err = String::new();
        while let Ok(l) = self.stderr.try_recv() {
            err.push_str(&l);
            err.push('\n');
        }
        err
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

pub use crate::command::{pipe_lines, wait_bounded};

/// Events (not the summary) of one connection, by its local port, in order.
pub fn events_of(lines: &[Value], local_port: u16) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "event" && v["sport"] == local_port)
        .cloned()
        .collect()
}

/// Events of one connection, by its local and remote ports, in order (a local port may
/// serve connections to several servers).
pub fn events_between(lines: &[Value], local_port: u16, peer_port: u16) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "event" && v["sport"] == local_port && v["dport"] == peer_port)
        .cloned()
        .collect()
}

/// The events among `lines` (a `why`'s timeline, a recording), in order.
pub fn timeline(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "event")
        .cloned()
        .collect()
}

/// The `kind`s of `events`, in order.
pub fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|v| v["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// A running `keepalive why --format json ...`, its output collected.
pub struct Why {
    child: Option<Child>,
    stdout: thread::JoinHandle<String>,
}

impl Why {
    /// Starts `keepalive why --format json <args>` and waits until it traces.
    pub fn start(args: &[&str]) -> Why {
        let mut child = Command::new(binary())
            .args(["why", "--format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keepalive why");
        let mut out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let err = pipe_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match err.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with("Tracing") => {
                    assert_expected_mode(&l);
                    break;
                }
                Ok(l) => eprintln!("keepalive why: {l}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("keepalive why exited early"),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            assert!(
                Instant::now() < deadline,
                "keepalive why did not start in {START_LIMIT:?}"
            );
        }
        thread::spawn(move || while err.recv().is_ok() {});
        Why {
            child: Some(child),
            stdout,
        }
    }

    /// Waits (bounded) for the answer; returns the verdict line and every line printed.
    pub fn verdict(mut self, timeout: Duration) -> (Value, Vec<Value>) {
        let (status, killed) = wait_bounded(self.child.take().unwrap(), timeout);
        assert!(!killed, "keepalive why did not answer within {timeout:?}");
        assert!(status.success(), "keepalive why exited with {status}");
        let out = std::mem::replace(&mut self.stdout, thread::spawn(String::new))
            .join()
            .unwrap();
        let lines: Vec<Value> = out.lines().map(parse).collect();
        let verdict = lines
            .iter()
            .rev()
            .find(|v| v["type"] == "verdict")
            .cloned()
            .unwrap_or_else(|| panic!("no verdict in: {out}"));
        (verdict, lines)
    }
}

impl Drop for Why {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `keepalive <args>` to completion, asserts it succeeded, and returns its stdout as JSON
/// lines (for `--format json` commands: sockets, why --from).
pub fn run_json(args: &[&str]) -> Vec<Value> {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run keepalive");
    assert!(
        out.status.success(),
        "keepalive {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::command::json_lines(&out.stdout)
}

/// The verdict `keepalive why --from RECORDING --port PORT` gives: the replay of a recording.
pub fn replayed_verdict(recording: &std::path::Path, port: u16) -> Value {
    run_json(&[
        "why",
        "--format",
        "json",
        "--from",
        recording.to_str().unwrap(),
        "--port",
        &port.to_string(),
    ])
    .into_iter()
    .rfind(|v| v["type"] == "verdict")
    .expect("a replayed verdict")
}

/// Reads a starting `keepalive`'s stderr up to its "Tracing ..." line and returns that line.
/// Lines before it (auto mode saying it falls back to tracepoints) are echoed for the log.
pub fn wait_tracing_line(err: &mut impl BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = err
            .read_line(&mut line)
            .expect("reading keepalive's stderr");
        assert!(n > 0, "keepalive exited before tracing");
        if line.starts_with("Tracing") {
            assert_expected_mode(&line);
            return line;
        }
        eprint!("keepalive: {line}");
    }
}

/// The keepalive idle time verdict `v` recommends: named in its advice as TCP_KEEPIDLE and
/// below `limit_s`, the middlebox's real idle limit, which the tool never saw.
pub fn advised_idle_below(v: &Value, limit_s: u64) -> u64 {
    let advised = v["recommended_idle_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("no recommended_idle_s: {v}"));
    let advice = v["advice"].to_string();
    assert!(
        advice.contains(&format!("TCP_KEEPIDLE={advised}")),
        "{advice}"
    );
    assert!(
        advised < limit_s as f64,
        "advised idle {advised} s is not below the path's limit of {limit_s} s"
    );
    advised as u64
}

impl Tracer {
    /// [`Tracer::stop_after_close`], with `second`, a tracer that ran alongside, as the
    /// proof of the kernel's blind spot: Err when the trace lacks against the wire exactly
    /// what the second tracer lacks (see [`rerun_blind`]).
    pub fn stop_after_close_or_blind(
        self,
        second: Tracer,
        conn: Connection,
        client_addr: IpAddr,
        capture: Capture,
    ) -> Result<(Vec<Value>, KeepaliveOnWire), String> {
        let (lines, local, peer_port) = self.stop_closed(conn, client_addr);
        let events = events_between(&lines, local.port(), peer_port);
        let second_events = events_between(&second.stop(), local.port(), peer_port);
        let wire = capture
            .stop()
            .traced_or_blind(local, &events, &second_events)?;
        Ok((events, wire))
    }

    /// Ends a connection that survived: closes it, then stops the tracer and `capture`, so
    /// both saw all of it (its close reports the answer to its last probe). Call it right
    /// after data went both ways, when no probe can be out. Asserts the connection's events
    /// show exactly what the wire carried and that its only verdict is that close; returns
    /// its events and the wire's counts.
    pub fn stop_after_close(
        self,
        conn: Connection,
        client_addr: IpAddr,
        capture: Capture,
    ) -> (Vec<Value>, KeepaliveOnWire) {
        let (lines, local, peer_port) = self.stop_closed(conn, client_addr);
        let events = events_between(&lines, local.port(), peer_port);
        let wire = capture.stop().assert_traced(local, &events);
        (events, wire)
    }

    /// Closes `conn`, stops, and checks that its only verdict is that close; returns the
    /// lines, its end here and the peer's port.
    fn stop_closed(self, conn: Connection, client_addr: IpAddr) -> (Vec<Value>, SocketAddr, u16) {
        let (port, peer_port) = (conn.client_port, conn.server_port);
        drop(conn);
        thread::sleep(Duration::from_millis(300));
        let lines = self.stop();
        let verdicts: Vec<&Value> = lines
            .iter()
            .filter(|l| l["type"] == "verdict" && l["sport"] == port)
            .collect();
        assert!(
            verdicts.iter().all(|v| v["verdict"] == "closed"),
            "a verdict other than the test's close: {verdicts:?}"
        );
        (lines, SocketAddr::new(client_addr, port), peer_port)
    }
}

/// Runs `scenario` again (twice at most, saying so) only for the kernel's blind spot (README,
/// Robustness: now and then the kernel runs no BPF program for an event), which the scenario
/// proves by returning Err: a second tracer alongside lacks exactly what the trace lacks
/// against the wire. Any other difference panics inside the scenario.
pub fn rerun_blind<T>(mut scenario: impl FnMut() -> Result<T, String>) -> T {
    for attempt in 1..=3 {
        match scenario() {
            Ok(v) => return v,
            Err(blind) if attempt < 3 => eprintln!("attempt {attempt}: {blind}; again"),
            Err(blind) => panic!("attempt {attempt}: {blind}"),
        }
    }
    unreachable!()
}

//! `keepalive path HOST:PORT`: how long the path to a service keeps an idle TCP connection.
//! A ladder of idle connections, each with its own keepalive idle time, while keepalive's
//! kernel programs watch each one's first keepalive probe: answered, the path still held the
//! flow; no answer or a RST, it had forgotten it. The plan and the judgement are pure
//! ([`crate::path_plan`]); this module is the I/O: sockets, the programs, the clock.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use socket2::{Domain, Socket, TcpKeepalive, Type};
use time::OffsetDateTime;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    event::{Detail, Event, TcpState},
    host::netns,
    kernel::loader::LoadOptions,
    kernel::records::KernelEvents,
    path_plan::{Findings, How, Outcome, PathResult, first_round, next_round, round_plan},
    pipeline::Flow,
};

/// What `keepalive path` measures, and how.
#[derive(Clone, Debug)]
pub struct Settings {
    /// HOST:PORT.
    pub target: String,
    /// The longest and shortest idle times to try, in seconds.
    pub max: u32,
    pub min: u32,
    /// Connections open at once, at most.
    pub connections: u16,
    /// The network namespace to connect from (a name or a path), if not this one.
    pub netns: Option<String>,
}

/// TCP_KEEPIDLE's upper bound in the kernel (MAX_TCP_KEEPIDLE).
pub const MAX_IDLE_S: u32 = 32767;
/// Seconds between a connection's probes: a first probe unanswered this long was lost.
const PROBE_INTERVAL_S: u32 = 2;
/// Probes before the kernel gives up (we decide at the second one already).
const PROBE_COUNT: u32 = 2;
/// Rounds at most: the first spans min..max, the next ones bisect.
const MAX_ROUNDS: usize = 4;
/// Done when kept and forgotten are this close (seconds).
const RESOLUTION_S: u32 = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A round's connections are opened over this long (see where they are opened).
const OPEN_STAGGER: Duration = Duration::from_millis(2100);

/// `HOST:PORT` to the address to connect to (the first the name resolves to).
pub fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| {
            format!("{target}: {e} (give HOST:PORT, e.g. db.example.net:5432 or [2001:db8::1]:22)")
        })?
        .next()
        .ok_or_else(|| format!("{target}: resolves to no address"))
}

/// One connection of the ladder.
struct Rung {
    idle_s: u32,
    stream: TcpStream,
    opened: Instant,
    /// The same moment on the events' clock.
    opened_at: OffsetDateTime,
    probed: bool,
    /// Seconds of silence when the first probe went out, as the kernel reported it: the
    /// timer fires later than set (by up to an eighth for long idles), and this is the
    /// idle time the path was actually tested with.
    probe_idle_s: Option<f64>,
    outcome: Option<Outcome>,
}

impl Rung {
    /// The idle time this rung tested, in whole seconds: rounded down when the path kept the
    /// flow (it kept it at least that long), up when it forgot it (by then it had).
    fn tested_s(&self, outcome: Outcome) -> u32 {
        let Some(idle) = self.probe_idle_s else {
            return self.idle_s;
        };
        match outcome {
            Outcome::Kept => idle.floor() as u32,
            _ => idle.ceil() as u32,
        }
    }

    fn after_s(&self) -> u32 {
        self.opened.elapsed().as_secs_f64().round() as u32
    }

    /// What an event of this connection says about its first probe.
    fn observe(&mut self, e: &Event) {
        if self.outcome.is_some() {
            return;
        }
        self.outcome = match &e.detail {
            Detail::KeepaliveProbe { probes } if *probes >= 2 => Some(Outcome::Silent),
            Detail::KeepaliveProbe { .. } => {
                self.probed = true;
                self.probe_idle_s = Some((e.ts - self.opened_at).as_seconds_f64());
                None
            }
            Detail::KeepaliveAnswered { .. } => Some(Outcome::Kept),
            Detail::KeepaliveTimeout { .. } => Some(Outcome::Silent),
            Detail::ResetReceived {} => Some(self.reset()),
            Detail::StateChange {
                to: TcpState::CloseWait,
                ..
            } => Some(Outcome::ServerClosed {
                after_s: self.after_s(),
            }),
            _ => None,
        };
    }

    /// A RST after our probe answers it; before any probe, the server aborted the connection.
    /// (Past the idle time the probe has gone out even if its event was missed.)
    fn reset(&self) -> Outcome {
        if self.probed || self.opened.elapsed() >= Duration::from_secs(self.idle_s.into()) {
            Outcome::Rst
        } else {
            Outcome::ServerClosed {
                after_s: self.after_s(),
            }
        }
    }

    /// The socket's own view, for when the programs missed the event (the kernel sometimes
    /// runs no program for one): end of stream, a reset, or a timeout.
    fn check_socket(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: a valid socket fd and a buffer of the length given.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        self.outcome = match n {
            0 => Some(Outcome::ServerClosed {
                after_s: self.after_s(),
            }),
            // Data from the server (a banner): read and forgotten.
            1.. => None,
            _ => match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ECONNRESET) => Some(self.reset()),
                Some(libc::ETIMEDOUT) => Some(Outcome::Silent),
                _ => None,
            },
        };
    }
}

/// Opens a connection with keepalive after `idle_s` of silence and nothing else to send.
fn open(target: SocketAddr, idle_s: u32) -> Result<TcpStream> {
    let s = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    s.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(Duration::from_secs(idle_s.into()))
            .with_interval(Duration::from_secs(PROBE_INTERVAL_S.into()))
            .with_retries(PROBE_COUNT),
    )?;
    s.connect_timeout(&target.into(), CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {target}"))?;
    let stream: TcpStream = s.into();
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Measures; Ctrl-C stops early with what is known.
pub async fn run(args: &Settings, mut load: LoadOptions) -> Result<PathResult> {
    if let Some(ns) = &args.netns {
        // The whole run is this thread (a current-thread runtime).
        netns::enter(ns)?;
    }
    let target = resolve(&args.target).map_err(anyhow::Error::msg)?;
    let (min_s, max_s) = (args.min.min(args.max), args.max);
    load.filter_port = target.port();
    load.filter_netns = netns::current();
    // A server's FIN shows as ESTABLISHED -> CLOSE_WAIT, which is folded away by default.
    load.all_states = true;
    let mut kernel = KernelEvents::open(&load, None)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let started = Instant::now();
    let mut findings = Findings::default();
    let mut idles = first_round(min_s, max_s, args.connections.into());
    let mut interrupted = false;

    for round in 1..=MAX_ROUNDS {
        if idles.is_empty() || interrupted {
            break;
        }
        let longest = *idles.iter().max().unwrap();
        eprintln!(
            "round {round}: {} connections to {target}, idle {} ... {} s, {} (this round takes \
             at most {} s)",
            idles.len(),
            idles[0],
            longest,
            round_plan(&findings, min_s),
            longest
                + PROBE_INTERVAL_S * (PROBE_COUNT + 1)
                + OPEN_STAGGER.as_secs_f64().ceil() as u32
        );
        let known_before = (findings.kept_s, findings.forgotten_s);
        let mut rungs: HashMap<u16, Rung> = HashMap::new();
        for (i, &idle_s) in idles.iter().enumerate() {
            // Opened a little apart: the kernel fires a long keepalive timer late, up to a
            // step of its timer wheel (2 s around 40 s), at moments fixed in time, so
            // connections opened at different points of a step probe at different points
            // of it, and repeated idle times still test different ones.
            if i > 0 {
                tokio::time::sleep(OPEN_STAGGER / idles.len() as u32).await;
            }
            let stream = open(target, idle_s)?;
            let port = stream.local_addr()?.port();
            rungs.insert(
                port,
                Rung {
                    idle_s,
                    stream,
                    opened: Instant::now(),
                    opened_at: OffsetDateTime::now_utc(),
                    probed: false,
                    probe_idle_s: None,
                    outcome: None,
                },
            );
            findings.connections += 1;
        }
        let deadline = Instant::now()
            + Duration::from_secs((longest + PROBE_INTERVAL_S * (PROBE_COUNT + 1) + 5).into());
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !rungs.is_empty() && Instant::now() < deadline {
            tokio::select! {
                woken = kernel.woken() => {
                    woken?;
                    watch(&mut kernel, target, &mut rungs)?;
                }
                _ = tick.tick() => {
                    watch(&mut kernel, target, &mut rungs)?;
                    for r in rungs.values_mut() {
                        r.check_socket();
                    }
                }
                _ = sigint.recv() => interrupted = true,
                _ = sigterm.recv() => interrupted = true,
            }
            if interrupted {
                break;
            }
            settle(&mut rungs, &mut findings);
        }
        // Settled, or a round that taught nothing (the kernel's timer fires long idles late,
        // up to an eighth: the idle times left to try all test the same, measured, one).
        if findings.settled(RESOLUTION_S)
            || (round > 1 && (findings.kept_s, findings.forgotten_s) == known_before)
        {
            break;
        }
        idles = next_round(&findings, args.connections.into());
    }
    Ok(PathResult::new(
        args.target.clone(),
        &findings,
        max_s,
        started.elapsed().as_secs(),
        interrupted,
        target.port(),
    ))
}

/// Decided connections are recorded and closed; so are those longer than a flow already
/// forgotten (the path will not keep them either).
fn settle(rungs: &mut HashMap<u16, Rung>, findings: &mut Findings) {
    let mut decided: Vec<(u32, Outcome)> = rungs
        .values()
        .filter_map(|r| r.outcome.map(|o| (r.tested_s(o), o)))
        .collect();
    decided.sort_by_key(|(idle, _)| *idle);
    for (idle_s, outcome) in decided {
        findings.record(idle_s, outcome);
        eprintln!("  idle {idle_s} s: {}", words(outcome));
    }
    rungs.retain(|_, r| r.outcome.is_none());
    if findings.how != Some(How::ServerClosed)
        && let Some(f) = findings.forgotten_s
    {
        rungs.retain(|_, r| r.idle_s < f);
    }
}

fn words(o: Outcome) -> String {
    match o {
        Outcome::Kept => "kept (the probe was answered)".into(),
        Outcome::Silent => "forgotten (the probe went unanswered)".into(),
        Outcome::Rst => "forgotten (the probe drew a RST)".into(),
        Outcome::ServerClosed { after_s } => format!("closed by the server after {after_s} s"),
    }
}

/// Events of our connections, to their rungs (matched by local port and the target).
fn watch(
    kernel: &mut KernelEvents,
    target: SocketAddr,
    rungs: &mut HashMap<u16, Rung>,
) -> Result<()> {
    kernel.drain(|_, _, e| {
        if e.socket.daddr == target.ip()
            && e.socket.dport == target.port()
            && let Some(r) = rungs.get_mut(&e.socket.sport)
        {
            r.observe(&e);
        }
        Ok(Flow::Continue)
    })?;
    Ok(())
}

/// Where `keepalive path` keeps its last result, for `keepalive sockets --idle-limit path`.
pub fn last_result_file() -> std::path::PathBuf {
    std::path::Path::new(crate::output::history::DEFAULT_DIR).join("path-last.json")
}

/// Saves `result` as the last measurement (best effort: the answer is printed anyway).
pub fn save_last(result: &PathResult) {
    let file = last_result_file();
    let saved = std::fs::create_dir_all(crate::output::history::DEFAULT_DIR)
        .and_then(|()| std::fs::write(&file, serde_json::to_vec(result).unwrap_or_default()));
    if let Err(e) = saved {
        log::info!("not saved to {}: {e}", file.display());
    }
}

/// The idle limit the last `keepalive path` measured: the second after the longest idle it
/// saw kept, the earliest the path may forget.
pub fn last_limit_s() -> Result<u32> {
    let file = last_result_file();
    let text = std::fs::read_to_string(&file).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; run `keepalive path HOST:PORT` first",
            file.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    match (v["kept_s"].as_u64(), v["forgotten_s"].as_u64()) {
        (Some(kept), Some(_)) => Ok(kept as u32 + 1),
        _ => anyhow::bail!(
            "the last `keepalive path` (to {}) measured no limit: {}",
            v["target"],
            file.display()
        ),
    }
}

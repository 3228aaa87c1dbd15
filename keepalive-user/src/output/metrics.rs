//! Prometheus metrics for fleets (`keepalive trace --metrics ADDR:PORT`): what happened, counted,
//! for the monitoring users already run, rather than an aggregation of our own.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    event::{Detail, Event},
    verdict::{Verdict, VerdictKind},
};

// Remote endpoints given their own label: as many as the summary names; the rest share
// `remote="other"`, so a host talking to many peers cannot blow up the series count.
use crate::output::MAX_REMOTES;

/// Units and pods given their own label value; past these the rest share "other". Empty
/// when the owner's unit or pod is not known.
const MAX_UNITS: usize = 64;
const MAX_PODS: usize = 128;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    verdict: String,
    remote: String,
    unit: String,
    pod: String,
}

/// Label values seen, at most `max` of them: past it, new ones become "other", so a host
/// with many peers, units or pods cannot blow up the number of series.
struct Bounded {
    seen: HashSet<String>,
    max: usize,
}

impl Bounded {
    fn new(max: usize) -> Self {
        Bounded {
            seen: HashSet::new(),
            max,
        }
    }

    fn value(&mut self, v: String) -> String {
        if v.is_empty() || self.seen.contains(&v) || self.seen.len() < self.max {
            self.seen.insert(v.clone());
            v
        } else {
            "other".into()
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerLabels {
    unit: String,
    pod: String,
}

pub struct Metrics {
    registry: Registry,
    probes_sent: Counter,
    probes_answered: Counter,
    timeouts: Counter,
    events: Family<KindLabels, Counter>,
    ends: Family<EndLabels, Counter>,
    lost: Counter,
    lost_seen: u64,
    /// The kernel's count of ordinary ends already in `ends`.
    ordinary_seen: u64,
    tracked: Gauge,
    at_risk: Family<OwnerLabels, Gauge>,
    idle_before_death: Histogram,
    remotes: Bounded,
    units: Bounded,
    pods: Bounded,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keepalive");
        let probes_sent = Counter::default();
        let probes_answered = Counter::default();
        let timeouts = Counter::default();
        let events = Family::<KindLabels, Counter>::default();
        let ends = Family::<EndLabels, Counter>::default();
        let lost = Counter::default();
        let tracked = Gauge::default();
        let idle_before_death = Histogram::new([
            1.0, 5.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
        ]);
        registry.register("probes_sent", "Keepalive probes sent", probes_sent.clone());
        registry.register(
            "probes_answered",
            "Times outstanding keepalive probes were answered",
            probes_answered.clone(),
        );
        registry.register(
            "timeouts",
            "Connections the keepalive timer gave up on",
            timeouts.clone(),
        );
        registry.register("events", "Events seen, by kind", events.clone());
        registry.register(
            "connection_ends",
            "Connections that ended, by verdict, remote endpoint and the owner's systemd unit \
             and Kubernetes pod (\"other\" past each limit, empty when not known)",
            ends.clone(),
        );
        registry.register(
            "events_lost",
            "Events the kernel could not queue (ring buffer full)",
            lost.clone(),
        );
        registry.register(
            "tracked_connections",
            "Connections being followed",
            tracked.clone(),
        );
        let at_risk = Family::<OwnerLabels, Gauge>::default();
        registry.register(
            "connections_at_risk",
            "Established connections the idle limit given with --idle-limit would kill once \
             idle (keepalive off, or a first probe too late), by the owner's systemd unit and \
             Kubernetes pod; refreshed every 30 s",
            at_risk.clone(),
        );
        registry.register(
            "idle_before_death_seconds",
            "Idle time before the first unanswered probe of connections that died",
            idle_before_death.clone(),
        );
        Metrics {
            registry,
            probes_sent,
            probes_answered,
            timeouts,
            events,
            ends,
            lost,
            lost_seen: 0,
            ordinary_seen: 0,
            tracked,
            at_risk,
            idle_before_death,
            remotes: Bounded::new(MAX_REMOTES),
            units: Bounded::new(MAX_UNITS),
            pods: Bounded::new(MAX_PODS),
        }
    }

    pub fn event(&self, e: &Event) {
        self.events
            .get_or_create(&KindLabels {
                kind: e.detail.kind().into(),
            })
            .inc();
        match e.detail {
            Detail::KeepaliveProbe { .. } => {
                self.probes_sent.inc();
            }
            Detail::KeepaliveAnswered { .. } => {
                self.probes_answered.inc();
            }
            Detail::KeepaliveTimeout { .. } => {
                self.timeouts.inc();
            }
            _ => {}
        }
    }

    pub fn verdict(&mut self, v: &Verdict) {
        let remote = SocketAddr::new(v.socket.daddr, v.socket.dport).to_string();
        let w = v.workload.as_deref();
        let unit = w.and_then(|w| w.unit.clone()).unwrap_or_default();
        let pod = w
            .and_then(|w| w.pod.as_ref().or(w.pod_uid.as_ref()).cloned())
            .unwrap_or_default();
        self.ends
            .get_or_create(&EndLabels {
                verdict: v.verdict.name().into(),
                remote: self.remotes.value(remote),
                unit: self.units.value(unit),
                pod: self.pods.value(pod),
            })
            .inc();
        if let (Some(idle), true) = (v.idle_s, v.probes_unanswered > 0) {
            self.idle_before_death.observe(idle);
        }
    }

    /// The kernel's count of ordinary ends is a running total: they are orderly closes, so
    /// `connection_ends{verdict="closed"}` follows it, with no remote, unit or pod (the
    /// kernel sends nothing about them).
    pub fn set_ordinary_ends(&mut self, total: u64) {
        if total > self.ordinary_seen {
            self.ends
                .get_or_create(&EndLabels {
                    verdict: VerdictKind::Closed.name().into(),
                    remote: String::new(),
                    unit: String::new(),
                    pod: String::new(),
                })
                .inc_by(total - self.ordinary_seen);
            self.ordinary_seen = total;
        }
    }

    /// The kernel's lost counter is a running total; the metric follows it.
    pub fn set_lost(&mut self, total: u64) {
        if total > self.lost_seen {
            self.lost.inc_by(total - self.lost_seen);
            self.lost_seen = total;
        }
    }

    /// The connections at risk now, by owner (as `keepalive sockets --idle-limit` marks
    /// them): every series is replaced, so owners with none left drop out.
    pub fn set_at_risk(&mut self, rows: &[crate::sockets::SocketRow]) {
        self.at_risk.clear();
        for r in rows.iter().filter(|r| r.at_risk.is_some()) {
            let w = r.workload.as_deref();
            let unit = w.and_then(|w| w.unit.clone()).unwrap_or_default();
            let pod = w
                .and_then(|w| w.pod.as_ref().or(w.pod_uid.as_ref()).cloned())
                .unwrap_or_default();
            self.at_risk
                .get_or_create(&OwnerLabels {
                    unit: self.units.value(unit),
                    pod: self.pods.value(pod),
                })
                .inc();
        }
    }

    pub fn set_tracked(&self, n: usize) {
        self.tracked.set(n as i64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Serves `GET /metrics` on `addr` until the process ends: a minimal HTTP/1.1 responder,
/// enough for Prometheus and curl.
pub async fn serve(addr: SocketAddr, metrics: Arc<Mutex<Metrics>>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics {addr}: cannot listen"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                // Read the request head (bounded), then answer and close.
                while n < buf.len() {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        stream.read(&mut buf[n..]),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                        Ok(Ok(k)) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let response = if head.starts_with("GET /metrics ") {
                    let body = metrics.lock().unwrap().render();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; \
                         version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(())
}

//! From events to answers: one timeline per connection, and when it ends, a verdict that says
//! why in plain words, with numbers and what to change. Pure: events in, verdicts out.

use std::{collections::VecDeque, net::IpAddr, sync::Arc};
use time::{Duration, OffsetDateTime};

use crate::event::{
    Detail, DropDirection, Errno, Event, Keepalive, SocketId, TcpState, TimeoutReason,
};
use crate::table::{Map, Set, mostly_empty, shrink_map};
use crate::verdict::{Drops, Reason, ResetReason, Verdict, VerdictKind};
use crate::workload::{Workload, WorkloadFilter};

/// Everything known about one connection so far.
#[derive(Clone, Debug)]
pub struct ConnectionTimeline {
    pub socket: SocketId,
    pub pid: Option<u32>,
    pub comm: Option<Arc<str>>,
    pub workload: Option<Arc<Workload>>,
    pub established: Option<OffsetDateTime>,
    pub last_seen: OffsetDateTime,
    /// Probes outstanding now, and the idle time before the first of them.
    pub probes_out: u32,
    /// f32: seconds with a fraction are plenty here, and tracked connections are many.
    pub probe_episode_idle_s: Option<f32>,
    pub probes_answered: u32,
    pub keepalive: Option<Keepalive>,
    /// Retransmissions in a row, the last one seen.
    pub retransmits: u32,
    /// How it is ending, from the first sign of it: boxed, because a tracer follows many
    /// live connections and few are ending at any moment.
    pub ending: Option<Box<Ending>>,
    /// The most recent events, oldest first, when timelines are kept (`keepalive why`);
    /// boxed so that `keepalive trace`, which keeps none, pays one pointer for it.
    events: Option<Box<VecDeque<Event>>>,
}

/// What a connection's end is made of, as the events tell it.
#[derive(Clone, Debug, Default)]
pub struct Ending {
    pub timeout: Option<(TimeoutReason, u32)>,
    /// Probes outstanding when a RST arrived.
    pub reset_received: Option<u32>,
    pub reset_sent: Option<ResetReason>,
    pub error: Option<Errno>,
    pub closed: Option<(OffsetDateTime, TcpState)>,
    /// The application closed while this many retransmissions were unanswered: it gave up
    /// on a peer that stopped answering (e.g. ssh's ServerAliveCountMax).
    pub gave_up_after: Option<u32>,
    /// The peer's packets this host dropped, and the connection's own.
    pub dropped_here: Drops,
    pub dropped_leaving: Drops,
}

/// Events kept per connection for `keepalive why`.
const TIMELINE_EVENTS: usize = 64;
/// A closed connection's verdict waits this long for the reset and error that follow the
/// close in the kernel (tcp_disconnect and tcp_done_with_error report them after the state).
const SETTLE: Duration = Duration::milliseconds(100);

/// Tracks connections and turns their ends into verdicts. Memory is bounded: a connection is
/// dropped when it ends, and past `capacity` the least recently seen is evicted.
pub struct Engine {
    connections: Map<u64, ConnectionTimeline>,
    /// Connections already judged, so what the kernel does with them afterwards (an orphan
    /// retransmitting its FIN) does not start a second timeline.
    judged: Set<u64>,
    capacity: usize,
    /// Events kept per connection for its timeline (0 when only verdicts are wanted).
    timeline_events: usize,
    /// Connections in the order they closed, so settling looks only at those due.
    closing: VecDeque<(OffsetDateTime, u64)>,
    /// Connections dropped unjudged because `capacity` were tracked already.
    evicted: u64,
}

/// When full, this share of `capacity` (the least recently seen) is evicted in one pass:
/// one scan per many new connections, not one per connection, so a host with more live
/// connections than the capacity costs constant work per event.
const EVICT_SHARE: usize = 16;

impl Default for Engine {
    fn default() -> Self {
        Engine::new(Engine::DEFAULT_CAPACITY)
    }
}

impl Engine {
    /// Connections tracked at once by default.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    pub fn new(capacity: usize) -> Self {
        Engine {
            connections: Map::default(),
            judged: Set::default(),
            capacity: capacity.max(1),
            timeline_events: TIMELINE_EVENTS,
            closing: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Gives back table space a burst left behind (a hash table never shrinks by itself):
    /// call it now and then; it does nothing unless a table is mostly empty.
    pub fn shrink(&mut self) {
        shrink_map(&mut self.connections);
        if mostly_empty(self.judged.capacity(), self.judged.len()) {
            self.judged.shrink_to_fit();
        }
        if mostly_empty(self.closing.capacity(), self.closing.len()) {
            self.closing.shrink_to_fit();
        }
    }

    /// Connections dropped unjudged because the engine was full (its capacity).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Keep no events per connection: verdicts only, less memory and no copy per event
    /// (`keepalive trace`, which prints the events as they come).
    pub fn without_timelines(mut self) -> Self {
        self.timeline_events = 0;
        self
    }

    pub fn tracked(&self) -> usize {
        self.connections.len()
    }

    /// Connections have closed whose verdicts wait for [`Self::settle`].
    pub fn settling(&self) -> bool {
        !self.closing.is_empty()
    }

    /// Feeds one event; returns the verdicts of connections that ended (settled) by now.
    pub fn observe(&mut self, e: &Event) -> Vec<(Verdict, ConnectionTimeline)> {
        let mut done = self.settle(e.ts);
        if e.socket.cookie == 0 {
            return done; // A reset with no socket belongs to no connection.
        }
        let key = e.socket.cookie;
        if matches!(e.detail, Detail::SocketDestroyed {}) {
            self.judged.remove(&key);
        }
        if !self.connections.contains_key(&key) {
            if self.judged.contains(&key) || !starts_tracking(e) {
                return done;
            }
            if self.connections.len() >= self.capacity {
                self.evict_oldest();
            }
            self.connections.insert(key, ConnectionTimeline::new(e));
        }
        let c = self.connections.get_mut(&key).unwrap();
        let was_closed = c.closed().is_some();
        c.apply(e, self.timeline_events);
        if let (false, Some((at, _))) = (was_closed, c.closed()) {
            self.closing.push_back((at, key));
        }
        if matches!(e.detail, Detail::SocketDestroyed {}) {
            let c = self.connections.remove(&key).unwrap();
            self.judged.remove(&key);
            if c.closed().is_some() {
                done.extend(c.verdict().map(|v| (v, c)));
            }
        }
        done
    }

    /// Verdicts of connections closed more than a moment before `now`.
    /// Constant work per event: only the front of the closing queue is looked at.
    pub fn settle(&mut self, now: OffsetDateTime) -> Vec<(Verdict, ConnectionTimeline)> {
        let mut ready = vec![];
        while let Some(&(at, key)) = self.closing.front() {
            if now - at < SETTLE {
                break;
            }
            self.closing.pop_front();
            // It may be gone already (destroyed, evicted) or judged.
            if self
                .connections
                .get(&key)
                .is_some_and(|c| c.closed().is_some())
            {
                ready.push(key);
            }
        }
        if ready.is_empty() {
            return vec![];
        }
        self.take(ready)
    }

    /// Verdicts of every closed connection, at the end of input.
    pub fn finish(&mut self) -> Vec<(Verdict, ConnectionTimeline)> {
        let closed: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| c.closed().is_some())
            .map(|(k, _)| *k)
            .collect();
        self.closing.clear();
        self.take(closed)
    }

    fn take(&mut self, keys: Vec<u64>) -> Vec<(Verdict, ConnectionTimeline)> {
        if self.judged.len() + keys.len() > self.capacity {
            self.judged.clear();
        }
        self.judged.extend(keys.iter().copied());
        let mut out: Vec<_> = keys
            .into_iter()
            .filter_map(|k| self.connections.remove(&k))
            .filter_map(|c| c.verdict().map(|v| (v, c)))
            .collect();
        out.sort_by_key(|(v, _)| v.ts);
        out
    }

    /// Drops the least recently seen connections, a share of the capacity at once.
    fn evict_oldest(&mut self) {
        let n = (self.capacity / EVICT_SHARE).clamp(1, self.connections.len());
        let mut by_age: Vec<(OffsetDateTime, u64)> = self
            .connections
            .iter()
            .map(|(k, c)| (c.last_seen, *k))
            .collect();
        if n < by_age.len() {
            by_age.select_nth_unstable(n);
        }
        for &(_, k) in &by_age[..n] {
            self.connections.remove(&k);
        }
        self.evicted += n as u64;
    }
}

/// Connections are tracked from establishment, or from the first keepalive sign of life of
/// one that was established before tracing started.
fn starts_tracking(e: &Event) -> bool {
    match &e.detail {
        Detail::StateChange { to, life, .. } => {
            *to == TcpState::Established || life.as_ref().is_some_and(|l| l.established.is_some())
        }
        Detail::SocketDestroyed {} => false,
        _ => matches!(
            e.state,
            TcpState::Established | TcpState::CloseWait | TcpState::FinWait1 | TcpState::FinWait2
        ),
    }
}

impl ConnectionTimeline {
    fn new(e: &Event) -> Self {
        ConnectionTimeline {
            socket: e.socket.clone(),
            pid: None,
            comm: None,
            workload: None,
            established: None,
            last_seen: e.ts,
            probes_out: 0,
            probe_episode_idle_s: None,
            probes_answered: 0,
            keepalive: None,
            retransmits: 0,
            ending: None,
            events: None,
        }
    }

    /// The most recent events, oldest first (none unless timelines are kept).
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().flat_map(|e| e.iter())
    }

    /// When and in which state it closed, once it has.
    pub fn closed(&self) -> Option<(OffsetDateTime, TcpState)> {
        self.ending.as_ref()?.closed
    }

    fn ending(&mut self) -> &mut Ending {
        self.ending.get_or_insert_with(Default::default)
    }

    fn apply(&mut self, e: &Event, keep: usize) {
        self.last_seen = e.ts;
        if e.pid.is_some() {
            self.pid = e.pid;
            self.comm = e.comm.clone();
            self.workload = e.workload.clone();
        }
        if let Some(k) = &e.keepalive {
            self.keepalive = Some(k.clone());
        }
        if keep > 0 {
            let events = self.events.get_or_insert_with(Default::default);
            if events.len() >= keep {
                events.pop_front();
            }
            events.push_back(e.clone());
        }
        match &e.detail {
            Detail::StateChange {
                from,
                to,
                retransmits,
                life,
            } => {
                if *to == TcpState::Established && self.established.is_none() {
                    self.established = Some(e.ts);
                }
                if let Some(at) = life.as_ref().and_then(|l| l.established) {
                    self.established.get_or_insert(at);
                }
                let app_closed = matches!(
                    (from, to),
                    (TcpState::Established, TcpState::FinWait1)
                        | (TcpState::CloseWait, TcpState::LastAck)
                );
                if let (true, Some(n)) = (app_closed, retransmits) {
                    // The connection is over for its user now, whatever the orphan does later.
                    let end = self.ending();
                    end.gave_up_after = Some(*n);
                    end.closed.get_or_insert((e.ts, e.state));
                }
                if *to == TcpState::Close {
                    self.ending().closed.get_or_insert((e.ts, e.state));
                }
            }
            Detail::KeepaliveProbe { probes } => {
                if self.probes_out == 0 {
                    self.probe_episode_idle_s = e.keepalive.as_ref().map(|k| k.idle_s as f32);
                }
                self.probes_out = *probes;
            }
            Detail::KeepaliveAnswered { .. } => {
                self.probes_out = 0;
                self.probes_answered += 1;
            }
            Detail::KeepaliveTimeout { reason, probes } => {
                self.ending().timeout = Some((*reason, *probes));
                self.probes_out = *probes;
            }
            Detail::ResetReceived {} => {
                let outstanding = self.probes_out;
                self.ending().reset_received.get_or_insert(outstanding);
            }
            Detail::ResetSent { reason, .. } => {
                let end = self.ending();
                if end.timeout.is_none() && end.reset_received.is_none() {
                    end.reset_sent.get_or_insert(reason.clone());
                }
            }
            Detail::SocketError { error, .. } => {
                self.ending().error.get_or_insert(*error);
            }
            Detail::SocketDestroyed {} => {
                self.ending().closed.get_or_insert((e.ts, e.state));
            }
            Detail::Retransmit { retransmits } => self.retransmits = *retransmits,
            Detail::PacketDropped { reason, direction } => {
                let end = self.ending();
                let drops = match direction {
                    DropDirection::Arriving => &mut end.dropped_here,
                    DropDirection::Leaving => &mut end.dropped_leaving,
                };
                *drops.entry(reason.clone()).or_default() += 1;
            }
            // Says nothing about how a connection ends.
            Detail::KeepaliveEnforced { .. } => {}
        }
    }

    /// Why it ended, once it has.
    pub fn verdict(&self) -> Option<Verdict> {
        let end = self.ending.as_deref()?;
        let (ended, _) = end.closed?;
        let ka = self.keepalive.as_ref();
        let user_timeout_ms = ka.map(|k| k.user_timeout_ms).unwrap_or(0);
        let (verdict, reason): (VerdictKind, Option<Reason>) = if let Some((reason, _)) =
            end.timeout
        {
            match reason {
                TimeoutReason::UserTimeout => (VerdictKind::UserTimeout, Some(Reason::UserTimeout)),
                TimeoutReason::ProbesUnanswered => (
                    VerdictKind::KeepaliveTimeout,
                    Some(Reason::ProbesUnanswered),
                ),
            }
        } else if let Some(outstanding) = end.reset_received {
            if outstanding > 0 {
                (VerdictKind::ResetAfterProbe, None)
            } else {
                (VerdictKind::PeerReset, None)
            }
        } else if let Some(reason) = &end.reset_sent {
            (VerdictKind::LocalAbort, Some(Reason::Reset(reason.clone())))
        } else if end.error == Some(Errno::ETIMEDOUT) {
            if user_timeout_ms != 0 {
                (VerdictKind::UserTimeout, Some(Reason::UserTimeout))
            } else {
                (VerdictKind::RetransmitTimeout, None)
            }
        } else {
            (VerdictKind::Closed, None)
        };
        let (verdict, reason) = match (verdict, end.gave_up_after) {
            (VerdictKind::Closed, Some(_)) => (
                VerdictKind::Closed,
                Some(Reason::ApplicationClosedAfterRetransmissions),
            ),
            _ => (verdict, reason),
        };
        let mut v = Verdict {
            verdict,
            ts: ended,
            socket: self.socket.clone(),
            pid: self.pid,
            comm: self.comm.clone(),
            workload: self.workload.clone(),
            probes_unanswered: self.probes_out,
            probes_answered: self.probes_answered,
            retransmits: end.gave_up_after.unwrap_or(self.retransmits),
            lifetime_s: self
                .established
                .map(|t| ((ended - t).as_seconds_f64() * 1000.0).round() / 1000.0),
            idle_s: if self.probes_out > 0 {
                // Whole jiffies: milliseconds are exact for HZ up to 1000.
                self.probe_episode_idle_s
                    .map(|s| (s as f64 * 1000.0).round() / 1000.0)
            } else {
                None
            },
            error: end.error,
            reason,
            summary: String::new(),
            advice: vec![],
            recommended_idle_s: None,
            keepalive: self.keepalive.clone(),
            dropped_here: end.dropped_here.clone(),
            dropped_leaving: end.dropped_leaving.clone(),
        };
        crate::advice::explain(&mut v);
        Some(v)
    }
}

/// Which connections a user asks about (`--port`, `--addr`, `--pid`, `--comm`, `--unit`,
/// `--container`, `--pod`).
#[derive(Clone, Debug, Default)]
pub struct ConnectionFilter {
    pub port: Option<u16>,
    pub addr: Option<IpAddr>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub workload: WorkloadFilter,
}

impl ConnectionFilter {
    pub fn matches(
        &self,
        s: &SocketId,
        pid: Option<u32>,
        comm: Option<&str>,
        workload: Option<&Workload>,
    ) -> bool {
        self.port.is_none_or(|p| s.sport == p || s.dport == p)
            && self.addr.is_none_or(|a| s.saddr == a || s.daddr == a)
            && self.pid.is_none_or(|p| pid == Some(p))
            && self.comm.as_deref().is_none_or(|c| comm == Some(c))
            && self.workload.matches(workload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Closer, Keepalive, Life};

    /// A recorded sequence, one event per step, one second apart by default.
    struct Recording {
        t: OffsetDateTime,
        events: Vec<Event>,
    }

    fn ka(idle: f64, intvl: f64, count: u32, user_timeout_ms: u32, enabled: bool) -> Keepalive {
        Keepalive {
            enabled,
            idle_s: idle,
            interval_s: intvl,
            count,
            user_timeout_ms,
            set_by_socket: Default::default(),
            probes_out: 0,
        }
    }

    impl Recording {
        fn new() -> Self {
            Recording {
                t: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
                events: vec![],
            }
        }
        fn at(mut self, secs: f64, detail: Detail, state: TcpState, k: Option<Keepalive>) -> Self {
            self.t += Duration::seconds_f64(secs);
            self.events.push(Event {
                ts: self.t,
                socket: SocketId {
                    saddr: "198.18.0.1".parse().unwrap(),
                    sport: 40000,
                    daddr: "198.18.0.2".parse().unwrap(),
                    dport: 22,
                    netns: 1,
                    cookie: 7,
                },
                state,
                pid: Some(100),
                comm: Some("ssh".into()),
                workload: None,
                detail,
                keepalive: k,
            });
            self
        }
        fn established(self) -> Self {
            self.at(
                0.0,
                Detail::StateChange {
                    from: TcpState::SynSent,
                    to: TcpState::Established,
                    retransmits: None,
                    life: None,
                },
                TcpState::SynSent,
                None,
            )
        }
        fn probes(mut self, n: u32, k: &Keepalive, first_after: f64) -> Self {
            for i in 1..=n {
                let wait = if i == 1 { first_after } else { k.interval_s };
                self = self.at(
                    wait,
                    Detail::KeepaliveProbe { probes: i },
                    TcpState::Established,
                    Some(k.clone()),
                );
            }
            self
        }
        /// The timer gives up after `probes` unanswered, an interval after the last.
        fn gave_up(self, probes: u32, k: &Keepalive) -> Self {
            self.at(
                k.interval_s,
                Detail::KeepaliveTimeout {
                    reason: TimeoutReason::ProbesUnanswered,
                    probes,
                },
                TcpState::Established,
                Some(k.clone()),
            )
        }
        fn close(self, after: f64) -> Self {
            self.at(
                after,
                Detail::StateChange {
                    from: TcpState::Established,
                    to: TcpState::Close,
                    retransmits: None,
                    life: None,
                },
                TcpState::Established,
                None,
            )
        }
        fn error(self, name: &str, errno: i32) -> Self {
            self.at(
                0.0,
                Detail::SocketError {
                    error: Errno::from_name(name).unwrap(),
                    errno,
                },
                TcpState::Close,
                None,
            )
        }
        fn dropped(self, reason: &str, direction: DropDirection) -> Self {
            self.at(
                0.01,
                Detail::PacketDropped {
                    reason: reason.into(),
                    direction,
                },
                TcpState::Established,
                None,
            )
        }
        fn verdict(self) -> Verdict {
            let mut engine = Engine::default();
            let mut out = vec![];
            for e in &self.events {
                out.extend(engine.observe(e));
            }
            out.extend(engine.finish());
            assert_eq!(out.len(), 1, "one connection, one verdict: {out:?}");
            out.remove(0).0
        }
    }

    #[test]
    fn unanswered_probes_are_a_keepalive_timeout() {
        let k = ka(2.0, 1.0, 3, 0, true);
        let v = Recording::new()
            .established()
            .probes(3, &k, 2.0)
            .gave_up(3, &k)
            .at(
                0.0,
                Detail::ResetSent {
                    reason: ResetReason::from_name("TCP_KEEPALIVE_TIMEOUT"),
                    kernel_reason: None,
                },
                TcpState::Established,
                None,
            )
            .close(0.0)
            .error("ETIMEDOUT", 110)
            .verdict();
        assert_eq!(v.verdict, VerdictKind::KeepaliveTimeout);
        assert_eq!(
            (v.probes_unanswered, v.idle_s, v.lifetime_s),
            (3, Some(2.0), Some(5.0))
        );
        assert_eq!(v.error, Some(Errno::ETIMEDOUT));
        assert!(v.summary.contains("3 keepalive probes"), "{}", v.summary);
        assert!(
            v.advice
                .iter()
                .any(|a| a.contains("idle + count x interval = 5s"))
        );
        assert!(v.advice.iter().any(|a| a.contains("ServerAliveInterval")));
    }

    /// Probes each answered, each answer dropped by this host (`reason`), then the timeout.
    fn answers_dropped_here(reason: &str) -> Verdict {
        let k = ka(2.0, 1.0, 3, 0, true);
        let mut r = Recording::new().established();
        for i in 1..=3 {
            r = r
                .at(
                    if i == 1 { 2.0 } else { 1.0 },
                    Detail::KeepaliveProbe { probes: i },
                    TcpState::Established,
                    Some(k.clone()),
                )
                .dropped(reason, DropDirection::Arriving);
        }
        r.gave_up(3, &k)
            .close(0.0)
            .error("ETIMEDOUT", 110)
            .verdict()
    }

    #[test]
    fn answers_this_host_dropped_are_named_and_no_keepalive_tuning_is_advised() {
        let v = answers_dropped_here("NETFILTER_DROP");
        assert_eq!(v.verdict, VerdictKind::KeepaliveTimeout);
        assert_eq!(v.dropped_here, Drops::from([("NETFILTER_DROP".into(), 3)]));
        assert!(v.dropped_leaving.is_empty());
        assert!(
            v.summary.contains(
                "the peer answered 3 of them; this host dropped the answers \
                 (NETFILTER_DROP x3): look at this host's firewall/conntrack"
            ),
            "{}",
            v.summary
        );
        assert!(!v.summary.contains("no answer reached"), "{}", v.summary);
        let advice = v.advice.join("\n");
        assert!(advice.contains("nft list ruleset"), "{advice}");
        assert!(advice.contains("conntrack -L"), "{advice}");
        assert!(!advice.contains("TCP_KEEPIDLE"), "{advice}");
        assert!(!advice.contains("tcp_keepalive_time"), "{advice}");
        assert_eq!(v.recommended_idle_s, None);
        // The JSON field, and its absence when nothing was dropped.
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json["dropped_here"],
            serde_json::json!({"NETFILTER_DROP": 3})
        );
        assert!(json.get("dropped_leaving").is_none());
        let back: Verdict = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn answers_the_tcp_stack_refused_point_at_the_connections_state() {
        let v = answers_dropped_here("TCP_INVALID_SEQUENCE");
        let advice = v.advice.join("\n");
        assert!(advice.contains("TCP stack dropped them"), "{advice}");
        assert!(advice.contains("TCP_INVALID_SEQUENCE"), "{advice}");
        assert!(!advice.contains("nft list ruleset"), "{advice}");
        let v = answers_dropped_here("SOCKET_RCVBUFF");
        assert!(
            v.advice.join("\n").contains("for SOCKET_RCVBUFF"),
            "{:?}",
            v.advice
        );
    }

    #[test]
    fn without_drops_here_no_answer_reached_this_host() {
        let k = ka(2.0, 1.0, 3, 0, true);
        let v = Recording::new()
            .established()
            .probes(3, &k, 2.0)
            .gave_up(3, &k)
            .close(0.0)
            .verdict();
        assert!(v.dropped_here.is_empty());
        assert!(
            v.summary.contains("no answer reached this host"),
            "{}",
            v.summary
        );
        assert!(
            serde_json::to_value(&v)
                .unwrap()
                .get("dropped_here")
                .is_none()
        );
    }

    #[test]
    fn probes_dropped_before_they_left_are_named() {
        let k = ka(2.0, 1.0, 3, 0, true);
        let v = Recording::new()
            .established()
            .probes(1, &k, 2.0)
            .dropped("QDISC_DROP", DropDirection::Leaving)
            .probes(1, &k, 1.0)
            .dropped("QDISC_DROP", DropDirection::Leaving)
            .gave_up(2, &k)
            .close(0.0)
            .verdict();
        assert!(v.dropped_here.is_empty());
        assert_eq!(v.dropped_leaving, Drops::from([("QDISC_DROP".into(), 2)]));
        assert!(
            v.summary.contains(
                "This host dropped 2 of the connection's own packets before they left \
                 (QDISC_DROP x2)"
            ),
            "{}",
            v.summary
        );
        assert!(
            v.advice.iter().any(|a| a.contains("tc -s qdisc")),
            "{:?}",
            v.advice
        );
    }

    #[test]
    fn probe_answered_with_rst_is_reset_after_probe_with_the_idle_bound() {
        let k = ka(600.0, 75.0, 9, 0, true);
        let v = Recording::new()
            .established()
            .probes(1, &k, 600.0)
            .at(0.01, Detail::ResetReceived {}, TcpState::Established, None)
            .close(0.0)
            .error("ECONNRESET", 104)
            .verdict();
        assert_eq!(v.verdict, VerdictKind::ResetAfterProbe);
        assert_eq!(v.idle_s, Some(600.0));
        // A third of the idle time that failed, at most 2 minutes.
        assert_eq!(v.recommended_idle_s, Some(120.0));
        assert!(v.advice[0].contains("TCP_KEEPIDLE=120"), "{:?}", v.advice);
    }

    #[test]
    fn rst_without_probe_is_peer_reset() {
        let v = Recording::new()
            .established()
            .at(3.0, Detail::ResetReceived {}, TcpState::Established, None)
            .close(0.0)
            .verdict();
        assert_eq!(v.verdict, VerdictKind::PeerReset);
        assert_eq!(v.probes_unanswered, 0);
    }

    #[test]
    fn our_rst_is_local_abort_with_reason_even_when_it_follows_the_close() {
        // tcp_disconnect() changes the state before it sends the RST.
        let v = Recording::new()
            .established()
            .close(1.0)
            .at(
                0.0,
                Detail::ResetSent {
                    reason: ResetReason::AbortOnLinger,
                    kernel_reason: Some(ResetReason::TcpState),
                },
                TcpState::Close,
                None,
            )
            .verdict();
        assert_eq!(v.verdict, VerdictKind::LocalAbort);
        assert_eq!(v.reason, Some(Reason::Reset(ResetReason::AbortOnLinger)));
        assert!(v.advice[0].contains("SO_LINGER"));
    }

    #[test]
    fn etimedout_without_keepalive_is_retransmit_timeout_and_says_keepalive_was_off() {
        let v = Recording::new()
            .established()
            .close(30.0)
            .at(
                0.0,
                Detail::SocketError {
                    error: Errno::ETIMEDOUT,
                    errno: 110,
                },
                TcpState::Close,
                Some(ka(7200.0, 75.0, 9, 0, false)),
            )
            .verdict();
        assert_eq!(v.verdict, VerdictKind::RetransmitTimeout);
        assert!(v.summary.contains("retransmissions"), "{}", v.summary);
        assert!(v.advice.iter().any(|a| a.contains("Keepalive was off")));
    }

    #[test]
    fn user_timeout_from_the_keepalive_timer_or_retransmissions() {
        let k = ka(2.0, 1.0, 9, 3000, true);
        let from_timer = Recording::new()
            .established()
            .probes(2, &k, 2.0)
            .at(
                1.0,
                Detail::KeepaliveTimeout {
                    reason: TimeoutReason::UserTimeout,
                    probes: 2,
                },
                TcpState::Established,
                Some(k.clone()),
            )
            .close(0.0)
            .verdict();
        assert_eq!(from_timer.verdict, VerdictKind::UserTimeout);
        assert!(from_timer.summary.contains("3000 ms"));
        let from_data = Recording::new()
            .established()
            .close(5.0)
            .at(
                0.0,
                Detail::SocketError {
                    error: Errno::ETIMEDOUT,
                    errno: 110,
                },
                TcpState::Close,
                Some(k),
            )
            .verdict();
        assert_eq!(from_data.verdict, VerdictKind::UserTimeout);
    }

    #[test]
    fn fin_is_closed_and_answered_probes_are_counted() {
        let k = ka(1.0, 1.0, 3, 0, true);
        let v = Recording::new()
            .established()
            .probes(1, &k, 1.0)
            .at(
                1.0,
                Detail::KeepaliveAnswered { probes: 1 },
                TcpState::Established,
                Some(k.clone()),
            )
            .at(
                1.0,
                Detail::StateChange {
                    from: TcpState::Established,
                    to: TcpState::FinWait1,
                    retransmits: None,
                    life: None,
                },
                TcpState::Established,
                None,
            )
            .close(0.1)
            .verdict();
        assert_eq!(v.verdict, VerdictKind::Closed);
        assert_eq!((v.probes_unanswered, v.probes_answered), (0, 1));
        assert!(v.advice.is_empty());
    }

    #[test]
    fn verdict_waits_for_what_follows_the_close_then_settles() {
        let mut engine = Engine::default();
        let rec = Recording::new().established().close(1.0);
        let close_ts = rec.events[1].ts;
        for e in &rec.events {
            assert!(engine.observe(e).is_empty());
        }
        assert!(
            engine
                .settle(close_ts + Duration::milliseconds(50))
                .is_empty()
        );
        let v = engine.settle(close_ts + Duration::milliseconds(150));
        assert_eq!(v.len(), 1);
        assert_eq!(engine.tracked(), 0);
    }

    #[test]
    fn memory_is_bounded_by_capacity() {
        let mut engine = Engine::new(10);
        for cookie in 0..100u64 {
            let mut e = Recording::new().established().events.remove(0);
            e.socket.cookie = cookie + 1;
            engine.observe(&e);
        }
        assert_eq!(engine.tracked(), 10);
        assert_eq!(engine.evicted(), 90);
    }

    #[test]
    fn shrink_gives_back_what_a_burst_of_connections_left() {
        let mut engine = Engine::new(100_000);
        let mut e = Recording::new().established().events.remove(0);
        for cookie in 1..=20_000u64 {
            e.socket.cookie = cookie;
            engine.observe(&e);
        }
        let grown = engine.connections.capacity();
        e.detail = Detail::SocketDestroyed {};
        for cookie in 1..=19_990u64 {
            e.socket.cookie = cookie;
            engine.observe(&e);
        }
        engine.shrink();
        assert_eq!(engine.tracked(), 10);
        assert!(engine.connections.capacity() < grown / 8, "{grown}");
        // A table in use is left as it is.
        let kept = engine.connections.capacity();
        engine.shrink();
        assert_eq!(engine.connections.capacity(), kept);
    }

    #[test]
    fn a_full_engine_evicts_the_least_recently_seen_in_batches_and_counts_them() {
        let mut engine = Engine::new(64);
        let mut rec = Recording::new();
        for cookie in 1..=1000u64 {
            rec.t += Duration::seconds(1);
            rec = rec.established();
            let mut e = rec.events.pop().unwrap();
            e.socket.cookie = cookie;
            engine.observe(&e);
            // An old connection that keeps talking is not the one evicted.
            e.socket.cookie = 1;
            e.detail = Detail::KeepaliveProbe { probes: 1 };
            e.state = TcpState::Established;
            engine.observe(&e);
        }
        // 64 / EVICT_SHARE are evicted at once when full.
        assert!(
            (60..=64).contains(&engine.tracked()),
            "{}",
            engine.tracked()
        );
        assert_eq!(engine.evicted() + engine.tracked() as u64, 1000);
        assert!(engine.connections.contains_key(&1));
        assert!(engine.connections.contains_key(&1000));
        assert!(!engine.connections.contains_key(&2));
    }

    #[test]
    fn filters_match_port_address_pid_and_comm() {
        let rec = Recording::new().established();
        let e = &rec.events[0];
        let f = |f: ConnectionFilter| f.matches(&e.socket, e.pid, e.comm.as_deref(), None);
        assert!(f(ConnectionFilter::default()));
        assert!(f(ConnectionFilter {
            port: Some(22),
            comm: Some("ssh".into()),
            ..Default::default()
        }));
        assert!(!f(ConnectionFilter {
            port: Some(23),
            ..Default::default()
        }));
        assert!(f(ConnectionFilter {
            addr: Some("198.18.0.2".parse().unwrap()),
            pid: Some(100),
            ..Default::default()
        }));
        assert!(!f(ConnectionFilter {
            pid: Some(101),
            ..Default::default()
        }));
    }

    #[test]
    fn application_closing_after_unanswered_retransmissions_is_closed_not_keepalive() {
        let mut rec = Recording::new().established();
        for n in 1..=3 {
            rec = rec.at(
                0.5,
                Detail::Retransmit { retransmits: n },
                TcpState::Established,
                None,
            );
        }
        let rec = rec
            .at(
                0.2,
                Detail::StateChange {
                    from: TcpState::Established,
                    to: TcpState::FinWait1,
                    retransmits: Some(3),
                    life: None,
                },
                TcpState::Established,
                None,
            )
            // The orphan goes on retransmitting and closes much later: no second verdict.
            .at(
                5.0,
                Detail::Retransmit { retransmits: 4 },
                TcpState::FinWait1,
                None,
            )
            .close(30.0);
        let v = rec.verdict();
        assert_eq!(v.verdict, VerdictKind::Closed);
        assert_eq!(
            v.reason,
            Some(Reason::ApplicationClosedAfterRetransmissions)
        );
        assert_eq!(v.retransmits, 3);
        assert!(
            v.summary.contains("Not a keepalive timeout"),
            "{}",
            v.summary
        );
        assert!(v.advice.iter().any(|a| a.contains("ServerAliveCountMax")));
    }

    /// By default the kernel side sends a connection's start with its close: one event is a
    /// whole ordinary life, and it gets the same verdict the separate transitions get.
    #[test]
    fn a_close_with_its_life_is_a_whole_connection() {
        let start = OffsetDateTime::UNIX_EPOCH + Duration::seconds(1_000);
        let life = |established| Life {
            established,
            app_closed: Some(start + Duration::seconds(4)),
            closed_first: Some(Closer::Local),
        };
        let closed = |life| {
            let mut rec = Recording::new();
            rec.t = start;
            rec.at(
                5.0,
                Detail::StateChange {
                    from: TcpState::FinWait2,
                    to: TcpState::Close,
                    retransmits: None,
                    life,
                },
                TcpState::FinWait2,
                None,
            )
        };
        let v = closed(Some(life(Some(start)))).verdict();
        assert_eq!(v.verdict, VerdictKind::Closed);
        assert_eq!(v.lifetime_s, Some(5.0));
        assert_eq!((v.pid, v.comm.as_deref()), (Some(100), Some("ssh")));
        // A connection established before tracing started, or never established (a refused
        // connect), is not judged from its close alone, as without the life.
        for life in [Some(life(None)), None] {
            let mut engine = Engine::default();
            let rec = closed(life);
            assert!(engine.observe(&rec.events[0]).is_empty());
            assert!(engine.finish().is_empty());
        }
    }

    /// Probes, then the close with the life: the start the life carries counts for the
    /// lifetime, and the verdict is the probes'.
    #[test]
    fn a_life_after_live_events_dates_the_start() {
        let k = ka(2.0, 1.0, 3, 0, true);
        let start = OffsetDateTime::UNIX_EPOCH + Duration::seconds(1_000);
        let mut rec = Recording::new();
        rec.t = start;
        let v = rec
            .probes(3, &k, 2.0)
            .gave_up(3, &k)
            .at(
                0.0,
                Detail::StateChange {
                    from: TcpState::Established,
                    to: TcpState::Close,
                    retransmits: None,
                    life: Some(Life {
                        established: Some(start),
                        app_closed: None,
                        closed_first: None,
                    }),
                },
                TcpState::Established,
                None,
            )
            .verdict();
        assert_eq!(v.verdict, VerdictKind::KeepaliveTimeout);
        assert_eq!(v.lifetime_s, Some(5.0));
    }
}

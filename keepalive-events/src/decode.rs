//! Turns kernel records (ring-buffer bytes) into [`Event`]s. Pure: no I/O, no kernel.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use bytes::Buf;
use keepalive_common::{
    ConnectionLife, KeepaliveSettings, Kind, LifeRecord, REASON_UNKNOWN, Record, drop_direction,
    family, flag, kind, owner_from,
};
use time::OffsetDateTime;

use crate::event::{
    Closer, Detail, DropDirection, Errno, Event, Keepalive, Life, ResetReason, SetBySocket,
    SocketId, TcpState, TimeoutReason,
};
use crate::table::{Map, mostly_empty, shrink_map};
use crate::workload::Workload;

/// Sockets remembered at once; the oldest knowledge is dropped past this (only sockets
/// never seen closing or being destroyed accumulate).
const MAX_SOCKETS: usize = 1 << 18;
/// Distinct command names kept for sharing; past it the set starts again.
const MAX_COMMS: usize = 4096;
/// A socket that reached CLOSE is forgotten this long after: its last records (the reset
/// and error reported after the state, a late free) come within it. Without this, a busy
/// host's closed sockets would pile up to MAX_SOCKETS, since frees are not reported.
const FORGET_CLOSED_NS: u64 = 2_000_000_000;

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Size { got: usize, expected: usize },
    Kind(u8),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Size { got, expected } => {
                write!(f, "record of {got} bytes, expected {expected}")
            }
            DecodeError::Kind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// One ring-buffer record: a [`Record`], and for [`kind::CONNECTION_CLOSED`] the life that
/// follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub record: Record,
    pub life: Option<ConnectionLife>,
}

impl From<Record> for Parsed {
    fn from(record: Record) -> Self {
        Parsed { record, life: None }
    }
}

/// The size of the record that starts `b` (by its kind byte; a [`Record`]'s when `b` is too
/// short to say): how a stream of records, such as a fuzzer's input, splits.
pub fn record_len(b: &[u8]) -> usize {
    match b.get(core::mem::offset_of!(Record, kind)) {
        Some(&kind::CONNECTION_CLOSED) => LifeRecord::SIZE,
        _ => Record::SIZE,
    }
}

/// The event kind (as printed) a record kind decodes to; None for kinds that do not exist.
pub fn kind_name(k: u8) -> Option<&'static str> {
    Kind::try_from(k).ok().map(Kind::event_name)
}

/// Parses one ring-buffer record. Field by field rather than a pointer cast, so any byte
/// string is safe to feed in.
pub fn parse_record(b: &[u8]) -> Result<Parsed, DecodeError> {
    let expected = record_len(b);
    if b.len() != expected {
        return Err(DecodeError::Size {
            got: b.len(),
            expected,
        });
    }
    let (mut head, mut tail) = b.split_at(Record::SIZE);
    let record = parse_head(&mut head);
    Kind::try_from(record.kind).map_err(DecodeError::Kind)?;
    let life = (record.kind == kind::CONNECTION_CLOSED).then(|| ConnectionLife {
        established_ns: tail.get_u64_ne(),
        app_closed_ns: tail.get_u64_ne(),
        app_closed_from: tail.get_u8(),
        owner_from: tail.get_u8(),
        _pad: [0; 6],
    });
    Ok(Parsed { record, life })
}

/// The [`Record`] part, `b` holding at least its size.
fn parse_head(b: &mut &[u8]) -> Record {
    let bytes16 = |b: &mut &[u8]| {
        let mut a = [0u8; 16];
        b.copy_to_slice(&mut a);
        a
    };
    Record {
        ts_ns: b.get_u64_ne(),
        skaddr: b.get_u64_ne(),
        cookie: b.get_u64_ne(),
        saddr: bytes16(b),
        daddr: bytes16(b),
        netns: b.get_u32_ne(),
        pid: b.get_u32_ne(),
        sport: b.get_u16_ne(),
        dport: b.get_u16_ne(),
        family: b.get_u16_ne(),
        kind: b.get_u8(),
        state: b.get_u8(),
        arg0: b.get_u32_ne(),
        arg1: b.get_u32_ne(),
        flags: b.get_u8(),
        retransmits: b.get_u8(),
        _pad: {
            b.advance(6);
            [0; 6]
        },
        comm: bytes16(b),
        keepalive: KeepaliveSettings {
            idle_jiffies: b.get_u32_ne(),
            interval_jiffies: b.get_u32_ne(),
            user_timeout_ms: b.get_u32_ne(),
            count: b.get_u8(),
            probes_out: b.get_u8(),
            enabled: b.get_u8(),
            set_by_socket: b.get_u8(),
        },
        ino: b.get_u64_ne(),
        cgroup: b.get_u64_ne(),
    }
}

/// What turning records into events needs to know about the kernel, plus the little state
/// that keeps identities stable across a socket's life.
pub struct Decoder {
    hz: u32,
    /// Add to CLOCK_MONOTONIC nanoseconds to get wall-clock nanoseconds.
    realtime_offset_ns: i128,
    /// The last wall-clock second [`Decoder::time`] computed a date for, and that time.
    last_second: std::cell::Cell<(i64, OffsetDateTime)>,
    reset_reasons: Map<u32, ResetReason>,
    /// `enum skb_drop_reason` names by value.
    drop_reasons: Map<u32, String>,
    /// Kprobe mode on kernels without reset reasons: `[start, end)` of kernel functions that
    /// send resets, and the cause each stands for.
    reset_callers: Vec<(u64, u64, ResetReason)>,
    /// What is known of each socket, by its address: one table, so a record costs one
    /// lookup (with 100,000 sockets each is a cache miss, the most of decoding one).
    sockets: Map<u64, SocketSeen>,
    /// Sockets that reached CLOSE, oldest first: (when, address, id cookie).
    closed: VecDeque<(u64, u64, u64)>,
    /// Command names seen, shared: a process opening 50,000 connections is one string.
    comms: Map<[u8; 16], Arc<str>>,
    /// Names an owner's cgroup (given by id): its unit, container, pod. Asked once per
    /// socket, when its owner is learned.
    workloads: Option<WorkloadOf>,
}

/// The events of one record, in order (see [`Decoder::decode`]).
pub struct Decoded {
    answer: Option<Event>,
    event: Event,
}

impl IntoIterator for Decoded {
    type Item = Event;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Event>, std::iter::Once<Event>>;

    fn into_iter(self) -> Self::IntoIter {
        self.answer.into_iter().chain(std::iter::once(self.event))
    }
}

/// Names a cgroup by its id (reading the cgroup filesystem is the caller's business).
pub type WorkloadOf = Box<dyn FnMut(u64) -> Option<Arc<Workload>> + Send>;

/// What the decoder remembers of a socket.
struct SocketSeen {
    /// The kernel cookie last read from it (0 before the kernel assigned one). A different
    /// cookie at the same address is a new socket: freed sockets are not reported by
    /// default, so this is how reuse is noticed.
    cookie: u64,
    /// Its identity as first seen and last seen with its ports (closing clears them before
    /// the last events).
    id: SocketId,
    /// Owning process, learned where the kernel runs in the owner's context (connect,
    /// close), or found by the caller in /proc ([`Decoder::set_owner`]).
    owner: Option<Owner>,
}

/// A socket's owner as the decoder keeps it.
#[derive(Clone, Debug)]
pub struct Owner {
    pub pid: u32,
    pub comm: Arc<str>,
    pub workload: Option<Arc<Workload>>,
}

impl Decoder {
    pub fn new(hz: u32, realtime_offset_ns: i128, reset_reasons: Vec<(u32, String)>) -> Self {
        Decoder {
            hz: hz.max(1),
            realtime_offset_ns,
            last_second: std::cell::Cell::new((i64::MIN, OffsetDateTime::UNIX_EPOCH)),
            reset_reasons: reset_reasons
                .into_iter()
                .map(|(v, name)| (v, ResetReason::from_name(&name)))
                .collect(),
            drop_reasons: Map::default(),
            reset_callers: vec![],
            sockets: Map::default(),
            closed: VecDeque::new(),
            comms: Map::default(),
            workloads: None,
        }
    }

    /// Names owners' cgroups with `names` (without it, events carry no workload).
    pub fn with_workloads(mut self, names: WorkloadOf) -> Self {
        self.workloads = Some(names);
        self
    }

    /// Names drops by the kernel's `enum skb_drop_reason` (value, name without its prefix).
    pub fn with_drop_reasons(mut self, reasons: Vec<(u32, String)>) -> Self {
        self.drop_reasons = reasons.into_iter().collect();
        self
    }

    /// Names the cause of resets that carry no kernel reason by the function that sent them
    /// (kprobe mode reports its address).
    pub fn with_reset_callers(mut self, callers: Vec<(u64, u64, String)>) -> Self {
        self.reset_callers = callers
            .into_iter()
            .map(|(start, end, cause)| (start, end, ResetReason::from_name(&cause)))
            .collect();
        self
    }

    /// Gives back table space a burst of sockets left behind (see `Engine::shrink`).
    pub fn shrink(&mut self) {
        shrink_map(&mut self.sockets);
        if mostly_empty(self.closed.capacity(), self.closed.len()) {
            self.closed.shrink_to_fit();
        }
    }

    /// Sockets whose identity and owner are remembered now.
    pub fn remembered(&self) -> usize {
        self.sockets.len()
    }

    /// The events of one record: one, or two for a keepalive probe whose timer run first
    /// found earlier probes answered (the answer, then the probe).
    pub fn decode(&mut self, p: &Parsed) -> Decoded {
        let r = &p.record;
        let answer =
            (r.kind == kind::KEEPALIVE_PROBE && r.flags & flag::ANSWERED_FIRST != 0).then(|| {
                let mut a = *r;
                a.kind = kind::KEEPALIVE_ANSWERED;
                a.arg0 = r.arg1;
                a.arg1 = 0;
                a.flags &= !flag::ANSWERED_FIRST;
                a.keepalive.probes_out = 0;
                self.decode_with(&a, None)
            });
        Decoded {
            answer,
            event: self.decode_with(r, p.life.as_ref()),
        }
    }

    fn decode_with(&mut self, r: &Record, life: Option<&ConnectionLife>) -> Event {
        self.forget_closed(r.ts_ns);
        let mut detail = self.detail(r);
        if let (Detail::StateChange { life: l, .. }, Some(life)) = (&mut detail, life) {
            *l = Some(self.life(life));
        }
        // The task of the record is the owner where the kernel ran in the owner's context
        // (connect, close), or where the kernel kept the owner with the connection's life.
        let owner_known = match &detail {
            Detail::StateChange { from, to, .. } if life.is_none() => {
                runs_in_owner_context(*from, *to)
            }
            _ => life.is_some_and(|l| l.owner_from != owner_from::UNKNOWN),
        };
        let Decoder {
            sockets,
            comms,
            workloads,
            closed,
            ..
        } = self;
        // One lookup gives the socket's identity and its owner.
        let (socket, known) = identify(sockets, r);
        if let Detail::StateChange {
            to: TcpState::Close,
            ..
        } = detail
            && socket.cookie != 0
        {
            closed.push_back((r.ts_ns, r.skaddr, socket.cookie));
        }
        let owner = known.and_then(|known| {
            if owner_known && known.owner.is_none() {
                known.owner = Some(Owner {
                    pid: r.pid,
                    comm: shared_comm(comms, &r.comm),
                    workload: match workloads {
                        Some(names) if r.cgroup != 0 => names(r.cgroup),
                        _ => None,
                    },
                });
            }
            known.owner.clone()
        });
        if r.kind == kind::SOCKET_DESTROYED {
            self.sockets.remove(&r.skaddr);
        }
        Event {
            ts: self.time(r.ts_ns),
            socket,
            state: TcpState::from_kernel(r.state as u32),
            pid: owner.as_ref().map(|o| o.pid),
            comm: owner.as_ref().map(|o| o.comm.clone()),
            workload: owner.and_then(|o| o.workload),
            detail,
            keepalive: (r.flags & flag::HAS_KEEPALIVE != 0).then(|| self.keepalive(&r.keepalive)),
        }
    }

    /// Wall-clock time of a CLOCK_MONOTONIC timestamp. The calendar date of the second is
    /// reused while records stay in it (they come in bursts): only the nanoseconds change.
    fn time(&self, ns: u64) -> OffsetDateTime {
        let wall = ns as i128 + self.realtime_offset_ns;
        let slow = || {
            OffsetDateTime::from_unix_timestamp_nanos(wall).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        };
        // 64-bit arithmetic: a 128-bit division is a library call.
        let Ok(wall) = i64::try_from(wall) else {
            return slow();
        };
        let (second, nano) = (
            wall.div_euclid(1_000_000_000),
            wall.rem_euclid(1_000_000_000),
        );
        let (cached_second, cached) = self.last_second.get();
        if second == cached_second
            && let Ok(t) = cached.replace_nanosecond(nano as u32)
        {
            return t;
        }
        let t = slow();
        self.last_second.set((second, t));
        t
    }

    fn life(&self, l: &ConnectionLife) -> Life {
        let at = |ns: u64| (ns != 0).then(|| self.time(ns));
        Life {
            established: at(l.established_ns),
            app_closed: at(l.app_closed_ns),
            closed_first: (l.app_closed_ns != 0).then(|| {
                if TcpState::from_kernel(l.app_closed_from as u32) == TcpState::CloseWait {
                    Closer::Peer
                } else {
                    Closer::Local
                }
            }),
        }
    }

    /// Forgets sockets closed long enough before `now`, unless their address holds a new
    /// socket by now (its cookie differs).
    fn forget_closed(&mut self, now: u64) {
        while let Some(&(at, skaddr, cookie)) = self.closed.front() {
            if now < at.saturating_add(FORGET_CLOSED_NS) {
                break;
            }
            self.closed.pop_front();
            if self
                .sockets
                .get(&skaddr)
                .is_some_and(|k| k.id.cookie == cookie)
            {
                self.sockets.remove(&skaddr);
            }
        }
    }

    /// Records the owner of a socket found another way (its inode in /proc), after one of
    /// its records was decoded.
    pub fn set_owner(&mut self, skaddr: u64, owner: Owner) {
        if let Some(known) = self.sockets.get_mut(&skaddr) {
            known.owner = Some(owner);
        }
    }

    fn detail(&self, r: &Record) -> Detail {
        // parse_record refuses any other byte; a record built by hand must hold a kind too.
        let kind =
            Kind::try_from(r.kind).unwrap_or_else(|b| panic!("record kind {b}: no such kind"));
        // Every kind, no catch-all: a new one does not compile until it is decoded.
        match kind {
            Kind::KeepaliveProbe => Detail::KeepaliveProbe { probes: r.arg0 },
            Kind::KeepaliveAnswered => Detail::KeepaliveAnswered { probes: r.arg0 },
            Kind::KeepaliveTimeout => Detail::KeepaliveTimeout {
                // With TCP_USER_TIMEOUT set, the kernel ignores the probe count.
                reason: if r.keepalive.user_timeout_ms != 0 {
                    TimeoutReason::UserTimeout
                } else {
                    TimeoutReason::ProbesUnanswered
                },
                probes: r.arg0,
            },
            Kind::ResetSent => {
                let reason = match self.reset_reason(r.arg0) {
                    ResetReason::Unknown => {
                        self.reset_caller(r.arg1).unwrap_or(ResetReason::Unknown)
                    }
                    reason => reason,
                };
                // Linger-0 aborts go through tcp_disconnect(), which says only TCP_STATE.
                if r.flags & flag::LINGER_ZERO != 0 && reason.is_generic() {
                    Detail::ResetSent {
                        reason: ResetReason::AbortOnLinger,
                        kernel_reason: Some(reason),
                    }
                } else {
                    Detail::ResetSent {
                        reason,
                        kernel_reason: None,
                    }
                }
            }
            Kind::ResetReceived => Detail::ResetReceived {},
            Kind::StateChange | Kind::ConnectionClosed => Detail::StateChange {
                from: TcpState::from_kernel(r.arg0),
                to: TcpState::from_kernel(r.arg1),
                retransmits: (r.retransmits > 0).then_some(r.retransmits as u32),
                life: None,
            },
            // icsk_retransmits counts timeouts before this one.
            Kind::Retransmit => Detail::Retransmit {
                retransmits: r.arg0.saturating_add(1),
            },
            Kind::KeepaliveEnforced => Detail::KeepaliveEnforced {
                applied: r.arg0 != 0,
                forced: r.arg1 != 0,
            },
            Kind::SocketError => Detail::SocketError {
                error: Errno(r.arg0 as i32),
                errno: r.arg0 as i32,
            },
            Kind::PacketDropped => Detail::PacketDropped {
                reason: self
                    .drop_reasons
                    .get(&r.arg0)
                    .cloned()
                    .unwrap_or_else(|| format!("REASON_{}", r.arg0)),
                direction: if r.arg1 == drop_direction::LEAVING {
                    DropDirection::Leaving
                } else {
                    DropDirection::Arriving
                },
            },
            Kind::SocketDestroyed => Detail::SocketDestroyed {},
        }
    }

    fn reset_reason(&self, v: u32) -> ResetReason {
        if v == REASON_UNKNOWN {
            return ResetReason::Unknown;
        }
        self.reset_reasons
            .get(&v)
            .cloned()
            .unwrap_or_else(|| ResetReason::Other(format!("REASON_{v}")))
    }

    /// The cause for a reset sent from the kernel address whose low 32 bits are `low`
    /// (x86-64 kernel text is in the top 2 GiB, so the high half is all ones).
    fn reset_caller(&self, low: u32) -> Option<ResetReason> {
        if low == 0 {
            return None;
        }
        let addr = 0xffff_ffff_0000_0000 | low as u64;
        self.reset_callers
            .iter()
            .find(|(start, end, _)| (*start..*end).contains(&addr))
            .map(|(_, _, cause)| cause.clone())
    }

    fn keepalive(&self, k: &KeepaliveSettings) -> Keepalive {
        let secs = |j: u32| j as f64 / self.hz as f64;
        Keepalive {
            enabled: k.enabled != 0,
            idle_s: secs(k.idle_jiffies),
            interval_s: secs(k.interval_jiffies),
            count: k.count as u32,
            user_timeout_ms: k.user_timeout_ms,
            set_by_socket: SetBySocket(k.set_by_socket),
            probes_out: k.probes_out as u32,
        }
    }
}

/// Transitions the kernel makes in the system call of the socket's owner: connect() and
/// close()/shutdown(). Others run in softirq context, where the current task is unrelated.
fn runs_in_owner_context(from: TcpState, to: TcpState) -> bool {
    use TcpState::*;
    matches!(
        (from, to),
        (Close, SynSent) | (Established, FinWait1) | (CloseWait, LastAck)
    )
}

/// The identity of the socket a record is about, and what is remembered of it (None for a
/// reset with no socket). Notices an address reused by a new socket (a different cookie)
/// and keeps a disconnected socket's identity (ports cleared) as the same connection.
fn identify<'a>(
    sockets: &'a mut Map<u64, SocketSeen>,
    r: &Record,
) -> (SocketId, Option<&'a mut SocketSeen>) {
    let addr = |a: &[u8; 16]| -> IpAddr {
        if r.family == family::INET6 {
            Ipv6Addr::from(*a).into()
        } else {
            Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
        }
    };
    let mut seen = SocketId {
        saddr: addr(&r.saddr),
        sport: r.sport,
        daddr: addr(&r.daddr),
        dport: r.dport,
        netns: r.netns,
        cookie: if r.cookie != 0 { r.cookie } else { r.skaddr },
    };
    if r.flags & flag::NO_SOCKET != 0 {
        seen.cookie = 0;
        return (seen, None);
    }
    if sockets.len() >= MAX_SOCKETS && !sockets.contains_key(&r.skaddr) {
        sockets.clear();
    }
    let fresh = |seen: &SocketId| SocketSeen {
        cookie: r.cookie,
        id: seen.clone(),
        owner: None,
    };
    let known = sockets.entry(r.skaddr).or_insert_with(|| fresh(&seen));
    // Another socket at the same address: forget the old one (its owner too).
    if known.cookie != 0 && r.cookie != 0 && known.cookie != r.cookie {
        *known = fresh(&seen);
    }
    // Ports cleared: the socket was disconnected; it is still the same connection.
    if seen.sport == 0 || (seen.dport == 0 && known.id.dport != 0) {
        return (known.id.clone(), Some(known));
    }
    if r.cookie != 0 {
        known.cookie = r.cookie;
    }
    seen.cookie = known.id.cookie;
    known.id = seen.clone();
    (seen, Some(known))
}

/// The shared copy of a command name (a process opening 50,000 connections is one string).
fn shared_comm(comms: &mut Map<[u8; 16], Arc<str>>, comm: &[u8; 16]) -> Arc<str> {
    if comms.len() >= MAX_COMMS {
        comms.clear();
    }
    comms
        .entry(*comm)
        .or_insert_with(|| String::from_utf8_lossy(comm).trim_end_matches('\0').into())
        .clone()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The one event `r` decodes to.
    fn one(d: &mut Decoder, r: &Record) -> Event {
        only(d.decode(&Parsed::from(*r)))
    }
    use keepalive_common::set_by_socket;

    pub fn record(kind: u8) -> Record {
        let mut r: Record = unsafe { std::mem::zeroed() };
        r.kind = kind;
        r.family = 2;
        r.saddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        r.daddr[..4].copy_from_slice(&[198, 18, 1, 1]);
        r.sport = 40000;
        r.dport = 5000;
        r.skaddr = 0xffff_8880_0000_1000;
        r.state = 1;
        r
    }

    fn as_bytes(r: &Record) -> &[u8] {
        unsafe { std::slice::from_raw_parts(r as *const Record as *const u8, Record::SIZE) }
    }

    #[test]
    fn parses_what_the_kernel_writes() {
        let mut r = record(kind::KEEPALIVE_PROBE);
        r.arg0 = 2;
        r.keepalive.count = 3;
        r.comm[..3].copy_from_slice(b"ssh");
        assert_eq!(parse_record(as_bytes(&r)).unwrap(), r.into());
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let r = record(kind::KEEPALIVE_PROBE);
        assert_eq!(
            parse_record(&as_bytes(&r)[..10]),
            Err(DecodeError::Size {
                got: 10,
                expected: Record::SIZE
            })
        );
        let r = record(99);
        assert_eq!(parse_record(as_bytes(&r)), Err(DecodeError::Kind(99)));
    }

    #[test]
    fn names_drops_by_the_kernels_reasons_and_their_direction() {
        let mut d = Decoder::new(250, 0, vec![]).with_drop_reasons(vec![
            (12, "NETFILTER_DROP".into()),
            (42, "TCP_INVALID_SEQUENCE".into()),
        ]);
        let mut r = record(kind::PACKET_DROPPED);
        r.arg0 = 12;
        r.arg1 = drop_direction::ARRIVING;
        assert_eq!(
            one(&mut d, &r).detail,
            Detail::PacketDropped {
                reason: "NETFILTER_DROP".into(),
                direction: DropDirection::Arriving
            }
        );
        r.arg0 = 42;
        r.arg1 = drop_direction::LEAVING;
        assert_eq!(
            one(&mut d, &r).detail,
            Detail::PacketDropped {
                reason: "TCP_INVALID_SEQUENCE".into(),
                direction: DropDirection::Leaving
            }
        );
        // A reason this build's table lacks keeps its number.
        r.arg0 = 999;
        assert!(matches!(
            one(&mut d, &r).detail,
            Detail::PacketDropped { reason, .. } if reason == "REASON_999"
        ));
    }

    #[test]
    fn converts_jiffies_names_reasons_and_keeps_ids_stable() {
        let mut d = Decoder::new(250, 0, vec![(12, "TCP_ABORT_ON_LINGER".into())]);
        let mut probe = record(kind::KEEPALIVE_PROBE);
        probe.arg0 = 1;
        probe.flags = flag::HAS_KEEPALIVE;
        probe.keepalive = KeepaliveSettings {
            idle_jiffies: 500,
            interval_jiffies: 250,
            user_timeout_ms: 0,
            count: 3,
            probes_out: 1,
            enabled: 1,
            set_by_socket: set_by_socket::IDLE | set_by_socket::COUNT,
        };
        let e = one(&mut d, &probe);
        assert_eq!(e.detail, Detail::KeepaliveProbe { probes: 1 });
        assert_eq!(e.socket.endpoints(), "198.18.0.1:40000 -> 198.18.1.1:5000");
        let k = e.keepalive.unwrap();
        assert_eq!((k.idle_s, k.interval_s, k.count), (2.0, 1.0, 3));
        assert_eq!(
            k.set_by_socket.names().collect::<Vec<_>>(),
            ["idle", "count"]
        );
        // No cookie yet: the socket address stands in, and stays even once a cookie appears.
        assert_eq!(e.socket.cookie, probe.skaddr);
        let mut reset = record(kind::RESET_SENT);
        reset.cookie = 77;
        reset.arg0 = 12;
        let e = one(&mut d, &reset);
        assert_eq!(e.socket.cookie, probe.skaddr);
        assert_eq!(
            e.detail,
            Detail::ResetSent {
                reason: ResetReason::from_name("TCP_ABORT_ON_LINGER"),
                kernel_reason: None,
            }
        );
        reset.arg0 = REASON_UNKNOWN;
        assert_eq!(
            one(&mut d, &reset).detail,
            Detail::ResetSent {
                reason: ResetReason::from_name("UNKNOWN"),
                kernel_reason: None,
            }
        );
    }

    #[test]
    fn names_resets_without_a_kernel_reason_by_their_caller() {
        let mut d = Decoder::new(250, 0, vec![]).with_reset_callers(vec![
            (
                0xffffffff81a0b000,
                0xffffffff81a0b400,
                "TCP_KEEPALIVE_TIMEOUT".into(),
            ),
            (0xffffffff81900000, 0xffffffff81900800, "TCP_STATE".into()),
        ]);
        let mut reset = record(kind::RESET_SENT);
        reset.arg0 = REASON_UNKNOWN;
        let reason = |d: &mut Decoder, r: &Record| match one(d, r).detail {
            Detail::ResetSent {
                reason,
                kernel_reason,
            } => (reason, kernel_reason),
            other => panic!("{other:?}"),
        };
        reset.arg1 = 0x81a0b123;
        assert_eq!(reason(&mut d, &reset).0.name(), "TCP_KEEPALIVE_TIMEOUT");
        // The end is exclusive; an unknown caller stays unknown.
        reset.arg1 = 0x81a0b400;
        assert_eq!(reason(&mut d, &reset).0.name(), "UNKNOWN");
        // A linger-0 close: tcp_disconnect sends it, the socket flags say why.
        reset.arg1 = 0x81900010;
        reset.flags = flag::LINGER_ZERO;
        assert_eq!(
            reason(&mut d, &reset),
            (ResetReason::AbortOnLinger, Some(ResetReason::TcpState))
        );
        // A kernel reason wins over the caller.
        let mut d =
            Decoder::new(250, 0, vec![(3, "TCP_ABORT_ON_CLOSE".into())]).with_reset_callers(vec![
                (0xffffffff81900000, 0xffffffff81900800, "TCP_STATE".into()),
            ]);
        reset.arg0 = 3;
        reset.flags = 0;
        assert_eq!(reason(&mut d, &reset).0.name(), "TCP_ABORT_ON_CLOSE");
    }

    #[test]
    fn names_linger_zero_aborts_and_keeps_identity_after_disconnect() {
        let mut d = Decoder::new(250, 0, vec![(14, "TCP_STATE".into())]);
        let first = one(&mut d, &record(kind::STATE_CHANGE)).socket;
        // tcp_disconnect() has cleared the ports and the local address by now.
        let mut reset = record(kind::RESET_SENT);
        reset.arg0 = 14;
        reset.flags = flag::LINGER_ZERO;
        reset.dport = 0;
        reset.saddr = [0; 16];
        let e = one(&mut d, &reset);
        assert_eq!(e.socket, first);
        assert_eq!(
            e.detail,
            Detail::ResetSent {
                reason: ResetReason::from_name("TCP_ABORT_ON_LINGER"),
                kernel_reason: Some(ResetReason::from_name("TCP_STATE")),
            }
        );
        reset.flags = 0;
        assert_eq!(
            one(&mut d, &reset).detail,
            Detail::ResetSent {
                reason: ResetReason::from_name("TCP_STATE"),
                kernel_reason: None,
            }
        );
    }

    #[test]
    fn learns_owner_at_connect_and_forgets_it_at_destroy() {
        let mut d = Decoder::new(250, 0, vec![]);
        let mut connect = record(kind::STATE_CHANGE);
        connect.arg0 = 7;
        connect.arg1 = 2;
        connect.pid = 4242;
        connect.comm[..3].copy_from_slice(b"ssh");
        assert_eq!(one(&mut d, &connect).pid, Some(4242));
        // A later event in softirq context runs on behalf of some other task.
        let mut err = record(kind::SOCKET_ERROR);
        err.arg0 = 110;
        err.pid = 1;
        let e = one(&mut d, &err);
        assert_eq!((e.pid, e.comm.as_deref()), (Some(4242), Some("ssh")));
        assert_eq!(
            e.detail,
            Detail::SocketError {
                error: Errno::ETIMEDOUT,
                errno: 110
            }
        );
        one(&mut d, &record(kind::SOCKET_DESTROYED));
        assert_eq!(one(&mut d, &err).pid, None);
        // The same process's next connection shares its name, not a copy of it.
        let first = one(&mut d, &connect).comm.unwrap();
        connect.skaddr += 4096;
        let second = one(&mut d, &connect).comm.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn a_new_cookie_at_a_known_address_is_a_new_socket() {
        // Freed sockets are not reported by default: the next socket the allocator puts at
        // the same address must not inherit the old one's identity or owner.
        let mut d = Decoder::new(250, 0, vec![]);
        let mut connect = record(kind::STATE_CHANGE);
        connect.arg0 = 7;
        connect.arg1 = 2;
        connect.cookie = 10;
        connect.pid = 4242;
        connect.comm[..3].copy_from_slice(b"ssh");
        let old = one(&mut d, &connect);
        assert_eq!((old.socket.cookie, old.pid), (10, Some(4242)));
        let mut next = record(kind::STATE_CHANGE);
        next.arg0 = 2;
        next.arg1 = 1;
        next.cookie = 11;
        next.sport = 40001;
        let e = one(&mut d, &next);
        assert_eq!((e.socket.cookie, e.socket.sport, e.pid), (11, 40001, None));
        // A socket known before its cookie was assigned keeps the identity it was first
        // seen with once the cookie appears.
        let mut timer = record(kind::KEEPALIVE_PROBE);
        timer.skaddr += 4096;
        let first = one(&mut d, &timer).socket;
        timer.cookie = 12;
        assert_eq!(one(&mut d, &timer).socket, first);
    }

    #[test]
    fn closed_sockets_are_forgotten_once_their_last_records_have_come() {
        let mut d = Decoder::new(250, 0, vec![]);
        let state = |from: u32, to: u32, ts_s: f64, cookie: u64| {
            let mut r = record(kind::STATE_CHANGE);
            (r.arg0, r.arg1, r.ts_ns, r.cookie) = (from, to, (ts_s * 1e9) as u64, cookie);
            r.pid = 4242;
            r.comm[..3].copy_from_slice(b"ssh");
            r
        };
        one(&mut d, &state(7, 2, 1.0, 10)); // connect
        one(&mut d, &state(2, 1, 1.1, 10)); // established
        one(&mut d, &state(1, 7, 5.0, 10)); // closed
        // The error reported right after the state still names the owner.
        let mut err = record(kind::SOCKET_ERROR);
        (err.arg0, err.ts_ns, err.cookie) = (110, 5_000_100_000, 10);
        assert_eq!(one(&mut d, &err).pid, Some(4242));
        assert_eq!(d.remembered(), 1);
        // Another socket's record, well after: the closed one is forgotten.
        let mut other = state(2, 1, 8.0, 20);
        other.skaddr += 4096;
        one(&mut d, &other);
        assert_eq!(d.remembered(), 1);
        // A new socket the allocator put at the closed one's address in the meantime keeps
        // what was learned of it.
        one(&mut d, &state(7, 2, 9.0, 30));
        one(&mut d, &state(1, 7, 9.5, 30));
        let mut reuse = state(7, 2, 10.0, 31);
        reuse.pid = 777;
        one(&mut d, &reuse);
        let mut probe = record(kind::KEEPALIVE_PROBE);
        (probe.ts_ns, probe.cookie) = (20_000_000_000, 31);
        let e = one(&mut d, &probe);
        assert_eq!((e.socket.cookie, e.pid), (31, Some(777)));
    }

    /// A close with its life: parsed from the bytes the kernel writes, the owner the kernel
    /// kept named on it (not the task that ran the close), and the life in wall-clock time.
    #[test]
    fn a_close_with_its_life_names_owner_and_start() {
        let mut r = record(kind::CONNECTION_CLOSED);
        (r.arg0, r.arg1, r.state) = (5, 7, 5); // FIN_WAIT2 -> CLOSE
        r.ts_ns = 9_000_000_000;
        r.pid = 4242;
        r.comm[..3].copy_from_slice(b"ssh");
        let whole = LifeRecord {
            record: r,
            life: ConnectionLife {
                established_ns: 1_000_000_000,
                app_closed_ns: 8_000_000_000,
                app_closed_from: 1, // ESTABLISHED: this side closed first
                owner_from: owner_from::CONNECT,
                _pad: [0; 6],
            },
        };
        let bytes = unsafe {
            std::slice::from_raw_parts(&whole as *const LifeRecord as *const u8, LifeRecord::SIZE)
        };
        assert_eq!(record_len(bytes), LifeRecord::SIZE);
        assert_eq!(
            parse_record(&bytes[..Record::SIZE]),
            Err(DecodeError::Size {
                got: Record::SIZE,
                expected: LifeRecord::SIZE
            })
        );
        let parsed = parse_record(bytes).unwrap();
        assert_eq!(parsed.life, Some(whole.life));
        let mut d = Decoder::new(250, 1_000_000_000_000_000_000, vec![]);
        let e = only(d.decode(&parsed));
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(1_000_000_000 + s).unwrap();
        assert_eq!(e.ts, t(9));
        assert_eq!((e.pid, e.comm.as_deref()), (Some(4242), Some("ssh")));
        assert_eq!(
            e.detail,
            Detail::StateChange {
                from: TcpState::FinWait2,
                to: TcpState::Close,
                retransmits: None,
                life: Some(Life {
                    established: Some(t(1)),
                    app_closed: Some(t(8)),
                    closed_first: Some(Closer::Local),
                }),
            }
        );
        // Closed after the peer (CLOSE_WAIT), owner unknown: the task that ran is not named.
        let mut other = whole;
        other.record.skaddr += 4096;
        other.life.app_closed_from = 8;
        other.life.owner_from = owner_from::UNKNOWN;
        let e = only(d.decode(&Parsed {
            record: other.record,
            life: Some(other.life),
        }));
        assert_eq!(e.pid, None);
        match e.detail {
            Detail::StateChange { life: Some(l), .. } => {
                assert_eq!(l.closed_first, Some(Closer::Peer))
            }
            other => panic!("{other:?}"),
        }
    }

    /// Times within a second reuse its date; crossing a second (or a day, or going back)
    /// computes afresh: every one equals the plain conversion.
    #[test]
    fn wall_clock_times_across_seconds_and_days() {
        let offset = 1_764_547_199_000_000_000i128; // 2025-11-30T23:59:59Z at monotonic 0
        let d = Decoder::new(250, offset, vec![]);
        for ns in [
            0u64,
            1,
            999_999_999,
            1_000_000_000, // midnight: a new day
            1_500_000_000,
            400_000_000, // back into the previous day
            86_400_000_000_123,
            u64::MAX,
        ] {
            let expected = OffsetDateTime::from_unix_timestamp_nanos(ns as i128 + offset).unwrap();
            assert_eq!(d.time(ns), expected, "{ns}");
        }
    }

    fn only(d: Decoded) -> Event {
        let mut events: Vec<Event> = d.into_iter().collect();
        assert_eq!(events.len(), 1, "{events:?}");
        events.pop().unwrap()
    }

    /// A probe record whose run first found earlier probes answered is the answer, then the
    /// probe: the answer with no probes out, the probe as any other.
    #[test]
    fn a_probe_that_carries_an_answer_is_two_events() {
        let mut d = Decoder::new(250, 0, vec![]);
        let mut r = record(kind::KEEPALIVE_PROBE);
        r.flags = flag::HAS_KEEPALIVE | flag::ANSWERED_FIRST;
        r.arg0 = 1;
        r.arg1 = 2;
        r.keepalive.probes_out = 1;
        let events: Vec<Event> = d.decode(&r.into()).into_iter().collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].detail, Detail::KeepaliveAnswered { probes: 2 });
        assert_eq!(events[0].keepalive.as_ref().unwrap().probes_out, 0);
        assert_eq!(events[1].detail, Detail::KeepaliveProbe { probes: 1 });
        assert_eq!(events[1].keepalive.as_ref().unwrap().probes_out, 1);
        assert_eq!(events[0].socket, events[1].socket);
        assert_eq!(events[0].ts, events[1].ts);
        // Without the flag: the probe alone.
        r.flags = flag::HAS_KEEPALIVE;
        assert_eq!(
            only(d.decode(&r.into())).detail,
            Detail::KeepaliveProbe { probes: 1 }
        );
    }
}

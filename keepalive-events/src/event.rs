//! The events keepalive reports, as users and recordings see them.
//!
//! One type serves live tracing, JSON output and replay (`--from`), so a recording reads
//! back into exactly what was printed.

use std::{fmt, net::IpAddr, sync::Arc};

use crate::workload::Workload;
use keepalive_common::{Kind, set_by_socket};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A connection's identity as printed: local and remote endpoint, namespace, socket cookie.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SocketId {
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub netns: u32,
    /// Socket cookie where the kernel gave one, else the socket's kernel address: stable for
    /// the socket's whole life either way.
    pub cookie: u64,
}

impl SocketId {
    /// `local -> remote`, IPv6 addresses in brackets.
    pub fn endpoints(&self) -> String {
        format!(
            "{} -> {}",
            std::net::SocketAddr::new(self.saddr, self.sport),
            std::net::SocketAddr::new(self.daddr, self.dport)
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    #[serde(flatten)]
    pub socket: SocketId,
    /// TCP state when the event was captured (before the change, for state changes).
    pub state: TcpState,
    /// The process owning the socket, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<Arc<str>>,
    /// The owner's cgroup, unit, container and pod, when known.
    #[serde(flatten, with = "crate::workload::flat")]
    pub workload: Option<Arc<Workload>>,
    #[serde(flatten)]
    pub detail: Detail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Keepalive>,
}

/// What happened. `kind` in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    /// A keepalive probe went out; `probes` unanswered so far, this one included.
    KeepaliveProbe {
        probes: u32,
    },
    /// The peer answered: `probes` outstanding probes were cleared.
    KeepaliveAnswered {
        probes: u32,
    },
    /// The keepalive timer gave up after `probes` unanswered probes.
    KeepaliveTimeout {
        reason: TimeoutReason,
        probes: u32,
    },
    /// We sent a RST, `reason` as the kernel names it (`UNKNOWN` before Linux 6.10). Where
    /// the kernel's reason is generic and the cause is known from the socket (SO_LINGER 0),
    /// `reason` names the cause and `kernel_reason` keeps what the kernel said.
    ResetSent {
        reason: ResetReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kernel_reason: Option<ResetReason>,
    },
    ResetReceived {},
    /// `retransmits`: data retransmissions still unanswered when the state changed.
    /// `life`: on a change to CLOSE, how the connection started and was closed, when the
    /// kernel side kept that instead of reporting each of those changes (the default).
    StateChange {
        from: TcpState,
        to: TcpState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retransmits: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        life: Option<Life>,
    },
    /// An error was reported to the socket's owner, e.g. ETIMEDOUT.
    SocketError {
        /// The same as `errno`, by name.
        error: Errno,
        errno: i32,
    },
    SocketDestroyed {},
    /// `keepalive enforce` turned keepalive on for this new connection (`applied` false: a dry
    /// run, it would have); `forced`: the application had turned it on itself.
    KeepaliveEnforced {
        applied: bool,
        forced: bool,
    },
    /// Unacknowledged data was sent again; `retransmits` in a row without an answer,
    /// this one included.
    Retransmit {
        retransmits: u32,
    },
    /// This host dropped one of the connection's packets, `reason` as the kernel names it
    /// (`enum skb_drop_reason` without its prefix, e.g. `NETFILTER_DROP`).
    PacketDropped {
        reason: String,
        direction: DropDirection,
    },
}

/// Whose packet this host dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropDirection {
    /// The peer's, arriving: an answer that reached this host and went no further.
    Arriving,
    /// The connection's own, leaving: it never left this host.
    Leaving,
}

impl DropDirection {
    pub fn name(self) -> &'static str {
        match self {
            DropDirection::Arriving => "arriving",
            DropDirection::Leaving => "leaving",
        }
    }
}

impl Detail {
    /// The record kind this event is decoded from (a close with its life is a state change).
    pub fn record_kind(&self) -> Kind {
        match self {
            Detail::KeepaliveProbe { .. } => Kind::KeepaliveProbe,
            Detail::KeepaliveAnswered { .. } => Kind::KeepaliveAnswered,
            Detail::KeepaliveTimeout { .. } => Kind::KeepaliveTimeout,
            Detail::ResetSent { .. } => Kind::ResetSent,
            Detail::ResetReceived {} => Kind::ResetReceived,
            Detail::StateChange { .. } => Kind::StateChange,
            Detail::SocketError { .. } => Kind::SocketError,
            Detail::SocketDestroyed {} => Kind::SocketDestroyed,
            Detail::Retransmit { .. } => Kind::Retransmit,
            Detail::KeepaliveEnforced { .. } => Kind::KeepaliveEnforced,
            Detail::PacketDropped { .. } => Kind::PacketDropped,
        }
    }

    /// Its `kind` as printed.
    pub fn kind(&self) -> &'static str {
        self.record_kind().event_name()
    }

    /// Every event kind as printed, once each (for `--kind` and its help).
    pub fn kinds() -> Vec<&'static str> {
        let mut names = Vec::with_capacity(Kind::ALL.len());
        for kind in Kind::ALL {
            if !names.contains(&kind.event_name()) {
                names.push(kind.event_name());
            }
        }
        names
    }
}

/// A connection's start and close, reported with its end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Life {
    /// When it was established; absent when that was before tracing started.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub established: Option<OffsetDateTime>,
    /// When the application closed it (close() or shutdown()); absent when it did not.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub app_closed: Option<OffsetDateTime>,
    /// Which side closed first, when the application closed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_first: Option<Closer>,
}

/// Who sent the first FIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Closer {
    /// This side's application (ESTABLISHED -> FIN_WAIT1).
    Local,
    /// The peer; the application closed after it (CLOSE_WAIT -> LAST_ACK).
    Peer,
}

/// Why the keepalive timer gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutReason {
    /// TCP_KEEPCNT (or tcp_keepalive_probes) probes went unanswered.
    ProbesUnanswered,
    /// TCP_USER_TIMEOUT expired while probes were unanswered.
    UserTimeout,
}

/// A socket's effective keepalive settings when the event was captured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Keepalive {
    /// SO_KEEPALIVE is on.
    pub enabled: bool,
    /// Idle seconds before the first probe (TCP_KEEPIDLE, else net.ipv4.tcp_keepalive_time).
    pub idle_s: f64,
    /// Seconds between probes (TCP_KEEPINTVL, else net.ipv4.tcp_keepalive_intvl).
    pub interval_s: f64,
    /// Unanswered probes before giving up (TCP_KEEPCNT, else net.ipv4.tcp_keepalive_probes).
    pub count: u32,
    /// TCP_USER_TIMEOUT in milliseconds, 0 when unset.
    pub user_timeout_ms: u32,
    /// Which of idle/interval/count the socket set itself rather than inheriting the sysctl.
    #[serde(default, skip_serializing_if = "SetBySocket::is_empty")]
    pub set_by_socket: SetBySocket,
    /// Probes outstanding.
    pub probes_out: u32,
}

/// Which keepalive settings a socket set itself (bits of [`set_by_socket`]); in JSON, a
/// list of "idle", "interval" and "count". A byte rather than a list of strings: every
/// event with settings carries one, and none should cost an allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetBySocket(pub u8);

impl SetBySocket {
    const NAMES: [(u8, &'static str); 3] = [
        (set_by_socket::IDLE, "idle"),
        (set_by_socket::INTERVAL, "interval"),
        (set_by_socket::COUNT, "count"),
    ];

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| name)
    }
}

impl Serialize for SetBySocket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for SetBySocket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut bits = 0;
        for name in Vec::<String>::deserialize(d)? {
            let (bit, _) = Self::NAMES
                .into_iter()
                .find(|(_, n)| *n == name)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown setting `{name}` (idle, interval, count)"
                    ))
                })?;
            bits |= bit;
        }
        Ok(SetBySocket(bits))
    }
}

/// TCP states with the kernel's numbering (include/net/tcp_states.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    BoundInactive,
    Unknown,
}

impl TcpState {
    pub fn from_kernel(v: u32) -> Self {
        use TcpState::*;
        use keepalive_common::tcp_state as k;
        match u8::try_from(v).unwrap_or(0) {
            k::ESTABLISHED => Established,
            k::SYN_SENT => SynSent,
            k::SYN_RECV => SynRecv,
            k::FIN_WAIT1 => FinWait1,
            k::FIN_WAIT2 => FinWait2,
            k::TIME_WAIT => TimeWait,
            k::CLOSE => Close,
            k::CLOSE_WAIT => CloseWait,
            k::LAST_ACK => LastAck,
            k::LISTEN => Listen,
            k::CLOSING => Closing,
            k::NEW_SYN_RECV => NewSynRecv,
            k::BOUND_INACTIVE => BoundInactive,
            _ => Unknown,
        }
    }

    /// As in JSON (a test keeps the two the same) and in `ss`.
    pub fn name(self) -> &'static str {
        use TcpState::*;
        match self {
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait1 => "FIN_WAIT1",
            FinWait2 => "FIN_WAIT2",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            Closing => "CLOSING",
            NewSynRecv => "NEW_SYN_RECV",
            BoundInactive => "BOUND_INACTIVE",
            Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Name of an errno value, e.g. 110 -> "ETIMEDOUT".
pub fn errno_name(errno: i32) -> String {
    match nix::errno::Errno::from_raw(errno) {
        nix::errno::Errno::UnknownErrno => format!("E{errno}"),
        e => format!("{e:?}"),
    }
}

/// An error reported to the application (a positive errno), in JSON by its name:
/// `"ETIMEDOUT"`, or `"E<n>"` for a value this system has no name for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const ETIMEDOUT: Errno = Errno(nix::errno::Errno::ETIMEDOUT as i32);
    pub const ECONNRESET: Errno = Errno(nix::errno::Errno::ECONNRESET as i32);

    pub fn name(self) -> String {
        errno_name(self.0)
    }

    /// The errno a name stands for (as [`Self::name`] writes it). Replays and histories
    /// read one per error, so the names are listed once.
    pub fn from_name(name: &str) -> Option<Errno> {
        static BY_NAME: std::sync::OnceLock<std::collections::HashMap<String, Errno>> =
            std::sync::OnceLock::new();
        // Linux's errnos are below 140; a name outside is written E<n>.
        let by_name = BY_NAME.get_or_init(|| (1..256).map(|n| (errno_name(n), Errno(n))).collect());
        by_name
            .get(name)
            .copied()
            .or_else(|| name.strip_prefix('E')?.parse().ok().map(Errno))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for Errno {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Errno {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Errno::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("`{name}` is no errno")))
    }
}

/// Declares the reset reasons keepalive decides on, by the kernel's names for them.
macro_rules! reset_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// The reason of a reset this host sent: the kernel's name for it (`enum
        /// sk_rst_reason` without its prefix), or the cause known from the socket or the
        /// caller. The names keepalive decides on are variants; any other is kept as
        /// [`ResetReason::Other`]. In JSON the name.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum ResetReason {
            $( $(#[$doc])* $variant, )*
            /// Any other name.
            Other(String),
        }

        impl ResetReason {
            pub fn from_name(name: &str) -> ResetReason {
                match name {
                    $( $name => ResetReason::$variant, )*
                    other => ResetReason::Other(other.to_string()),
                }
            }

            pub fn name(&self) -> &str {
                match self {
                    $( ResetReason::$variant => $name, )*
                    ResetReason::Other(name) => name,
                }
            }
        }
    };
}

reset_reasons! {
    /// The kernel did not say (no reason before Linux 6.10, and no cause known otherwise).
    Unknown = "UNKNOWN",
    /// The socket was closed or disconnected in a state that requires a RST.
    TcpState = "TCP_STATE",
    NotSpecified = "NOT_SPECIFIED",
    /// close() with SO_LINGER {on, 0}.
    AbortOnLinger = "TCP_ABORT_ON_LINGER",
    /// close() with received data unread.
    AbortOnClose = "TCP_ABORT_ON_CLOSE",
    /// Out of TCP memory or orphan sockets.
    AbortOnMemory = "TCP_ABORT_ON_MEMORY",
    /// connect(AF_UNSPEC) with data unsent or unread.
    DisconnectWithData = "TCP_DISCONNECT_WITH_DATA",
}

impl ResetReason {
    /// Says only that a RST was due, not why: the socket may know better (SO_LINGER 0).
    pub fn is_generic(&self) -> bool {
        matches!(
            self,
            ResetReason::Unknown | ResetReason::TcpState | ResetReason::NotSpecified
        )
    }
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ResetReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ResetReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ResetReason::from_name(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_their_json() {
        for v in 0..=16 {
            let state = TcpState::from_kernel(v);
            assert_eq!(serde_json::to_value(state).unwrap(), state.name(), "{v}");
        }
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let e = Event {
            ts: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap(),
            socket: SocketId {
                saddr: "2001:db8::1".parse().unwrap(),
                sport: 40000,
                daddr: "198.18.0.2".parse().unwrap(),
                dport: 22,
                netns: 4026531840,
                cookie: 42,
            },
            state: TcpState::Established,
            pid: Some(7),
            comm: Some("ssh".into()),
            workload: Some(Arc::new(crate::workload::Workload::from_cgroup(
                "/system.slice/ssh.service",
            ))),
            detail: Detail::KeepaliveTimeout {
                reason: TimeoutReason::ProbesUnanswered,
                probes: 3,
            },
            keepalive: Some(Keepalive {
                enabled: true,
                idle_s: 2.0,
                interval_s: 1.0,
                count: 3,
                user_timeout_ms: 0,
                set_by_socket: SetBySocket(set_by_socket::IDLE),
                probes_out: 3,
            }),
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.contains(r#""kind":"keepalive_timeout""#), "{line}");
        assert!(
            line.contains(r#""ts":"2023-11-14T22:13:20.123456789Z""#),
            "{line}"
        );
        assert!(line.contains(r#""state":"ESTABLISHED""#), "{line}");
        assert!(line.contains(r#""set_by_socket":["idle"]"#), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn settings_set_by_the_socket_are_a_list_of_names() {
        let all: SetBySocket = serde_json::from_str(r#"["count","idle","interval"]"#).unwrap();
        assert_eq!(
            all.names().collect::<Vec<_>>(),
            ["idle", "interval", "count"]
        );
        let err = serde_json::from_str::<SetBySocket>(r#"["idle","nagle"]"#).unwrap_err();
        assert!(err.to_string().contains("unknown setting `nagle`"), "{err}");
    }

    #[test]
    fn names_errnos_and_states() {
        assert_eq!(errno_name(110), "ETIMEDOUT");
        assert_eq!(errno_name(104), "ECONNRESET");
        assert_eq!(TcpState::from_kernel(2).to_string(), "SYN_SENT");
        assert_eq!(TcpState::from_kernel(99), TcpState::Unknown);
    }
}

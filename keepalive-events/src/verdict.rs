//! A connection's verdict: how it ended, with the numbers that show it and, once
//! the advice module has explained it, what to change. The field names are part of the
//! JSON output contract.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::event::ResetReason;
use crate::{
    event::{Errno, Keepalive, SocketId},
    workload::Workload,
};

/// How a connection ended. The names are part of the output contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Keepalive probes went unanswered: the peer or a middlebox silently went away.
    KeepaliveTimeout,
    /// A keepalive probe was answered with RST: the peer or a NAT forgot the connection.
    ResetAfterProbe,
    /// The peer reset the connection otherwise.
    PeerReset,
    /// This host sent the RST (linger 0, close with unread data, memory, ...).
    LocalAbort,
    /// Data went unacknowledged until retransmissions ran out: not a keepalive problem.
    RetransmitTimeout,
    /// TCP_USER_TIMEOUT cut the connection.
    UserTimeout,
    /// Orderly close with FIN.
    Closed,
}

impl VerdictKind {
    pub fn name(self) -> &'static str {
        match self {
            VerdictKind::KeepaliveTimeout => "keepalive_timeout",
            VerdictKind::ResetAfterProbe => "reset_after_probe",
            VerdictKind::PeerReset => "peer_reset",
            VerdictKind::LocalAbort => "local_abort",
            VerdictKind::RetransmitTimeout => "retransmit_timeout",
            VerdictKind::UserTimeout => "user_timeout",
            VerdictKind::Closed => "closed",
        }
    }
}

/// Why one connection died.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub verdict: VerdictKind,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    #[serde(flatten)]
    pub socket: SocketId,
    pub pid: Option<u32>,
    pub comm: Option<Arc<str>>,
    /// The owner's cgroup, unit, container and pod, when known.
    #[serde(flatten, with = "crate::workload::flat")]
    pub workload: Option<Arc<Workload>>,
    /// Keepalive probes outstanding (unanswered) when it ended. Earlier builds wrote it as
    /// `probes_sent` (the metric of that name counts every probe); histories read back.
    #[serde(alias = "probes_sent")]
    pub probes_unanswered: u32,
    /// Times the peer answered keepalive probes over the connection's life.
    pub probes_answered: u32,
    /// Retransmissions in a row without an answer when it ended (or when the application
    /// closed it).
    pub retransmits: u32,
    /// Seconds from establishment to the end, when the start was seen.
    pub lifetime_s: Option<f64>,
    /// Seconds the connection was idle before the first unanswered probe.
    pub idle_s: Option<f64>,
    /// Error reported to the application, e.g. ETIMEDOUT.
    pub error: Option<Errno>,
    /// Why, within its kind: why the keepalive timer gave up, the kernel's reason for this
    /// host's reset, or that the application closed after retransmissions.
    pub reason: Option<Reason>,
    pub summary: String,
    pub advice: Vec<String>,
    /// The keepalive idle time (TCP_KEEPIDLE, seconds) the advice recommends, when the
    /// death points at an idle timeout on the path.
    #[serde(default)]
    pub recommended_idle_s: Option<f64>,
    pub keepalive: Option<Keepalive>,
    /// The peer's packets that reached this host and were dropped here, by the kernel's
    /// reason (`{"NETFILTER_DROP": 3}`); absent when none were.
    #[serde(default, skip_serializing_if = "Drops::is_empty")]
    pub dropped_here: Drops,
    /// The connection's own packets this host dropped before they left, by reason; absent
    /// when none were.
    #[serde(default, skip_serializing_if = "Drops::is_empty")]
    pub dropped_leaving: Drops,
}

/// Packets dropped, by the kernel's reason name.
pub type Drops = std::collections::BTreeMap<String, u32>;

/// `NETFILTER_DROP x3, TCP_INVALID_SEQUENCE x1`
pub fn drops_text(d: &Drops) -> String {
    d.iter()
        .map(|(reason, n)| format!("{reason} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a connection ended as it did, within its [`VerdictKind`]. In JSON a string: the names
/// below, or the kernel's name of a reset's reason (upper case, as `enum sk_rst_reason`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The keepalive timer's probes went unanswered (TCP_KEEPCNT of them).
    ProbesUnanswered,
    /// TCP_USER_TIMEOUT expired.
    UserTimeout,
    /// The application closed while its data went unacknowledged (a [`VerdictKind::Closed`]
    /// that is not a clean one).
    ApplicationClosedAfterRetransmissions,
    /// This host sent the reset, for the reason the kernel gives (or the cause known from
    /// the socket, such as `TCP_ABORT_ON_LINGER`).
    Reset(ResetReason),
}

impl Reason {
    const PROBES_UNANSWERED: &'static str = "probes_unanswered";
    const USER_TIMEOUT: &'static str = "user_timeout";
    const APPLICATION_CLOSED: &'static str = "application_closed_after_retransmissions";

    pub fn name(&self) -> &str {
        match self {
            Reason::ProbesUnanswered => Self::PROBES_UNANSWERED,
            Reason::UserTimeout => Self::USER_TIMEOUT,
            Reason::ApplicationClosedAfterRetransmissions => Self::APPLICATION_CLOSED,
            Reason::Reset(r) => r.name(),
        }
    }

    pub fn from_name(name: &str) -> Reason {
        match name {
            Self::PROBES_UNANSWERED => Reason::ProbesUnanswered,
            Self::USER_TIMEOUT => Reason::UserTimeout,
            Self::APPLICATION_CLOSED => Reason::ApplicationClosedAfterRetransmissions,
            _ => Reason::Reset(ResetReason::from_name(name)),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Reason::from_name(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_back_as_written() {
        for r in [
            Reason::ProbesUnanswered,
            Reason::UserTimeout,
            Reason::ApplicationClosedAfterRetransmissions,
            Reason::Reset(ResetReason::Unknown),
            Reason::Reset(ResetReason::from_name("TCP_ABORT_ON_LINGER")),
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), r, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&Reason::Reset(ResetReason::Unknown)).unwrap(),
            "\"UNKNOWN\""
        );
    }

    #[test]
    fn a_verdict_of_an_older_history_reads_back() {
        // As `keepalive trace --history` wrote it before the field was renamed.
        let old = r#"{"verdict":"keepalive_timeout","ts":"2026-11-30T01:00:00Z","saddr":"198.18.0.1","sport":40000,"daddr":"198.18.0.2","dport":22,"netns":1,"cookie":7,"pid":100,"comm":"ssh","probes_sent":3,"probes_answered":0,"retransmits":0,"lifetime_s":5.0,"idle_s":2.0,"error":"ETIMEDOUT","reason":"probes_unanswered","summary":"s","advice":[],"keepalive":null}"#;
        let v: Verdict = serde_json::from_str(old).unwrap();
        assert_eq!((v.probes_unanswered, v.workload.is_none()), (3, true));
        let now = serde_json::to_string(&v).unwrap();
        assert!(now.contains(r#""probes_unanswered":3"#), "{now}");
        assert_eq!(serde_json::from_str::<Verdict>(&now).unwrap(), v);
    }
}

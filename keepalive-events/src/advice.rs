//! The words of a verdict: what happened, with the measured numbers, and what to change.

use crate::{
    event::Keepalive,
    idle_limit::{self, IdleLimit, rule},
    verdict::{Drops, Reason, ResetReason, Verdict, VerdictKind, drops_text},
};

/// Fills `summary` and `advice` from the verdict's numbers and the socket's settings.
pub fn explain(v: &mut Verdict) {
    let ka = v.keepalive.clone();
    let ssh = matches!(
        v.comm.as_deref(),
        Some("ssh") | Some("sshd") | Some("autossh")
    );
    let lifetime = v
        .lifetime_s
        .map(|s| format!(" after {}", secs(s)))
        .unwrap_or_default();
    let mut advice = vec![];
    v.summary = match v.verdict {
        VerdictKind::KeepaliveTimeout if !v.dropped_here.is_empty() => {
            let (idle, _, _) = settings(ka.as_ref());
            let answers: u32 = v.dropped_here.values().sum();
            advice.extend(dropped_here_advice(&v.dropped_here));
            format!(
                "Connection timed out{lifetime}: {} keepalive probes went out after {} idle, \
                 and the peer answered {answers} of them; this host dropped the answers ({}): \
                 look at this host's firewall/conntrack.",
                v.probes_unanswered,
                secs(v.idle_s.unwrap_or(idle)),
                drops_text(&v.dropped_here)
            )
        }
        VerdictKind::KeepaliveTimeout => {
            let (idle, intvl, count) = settings(ka.as_ref());
            let detection = idle + intvl * count as f64;
            advice.push(if detection > 120.0 {
                format!(
                    "Dead peers are detected after idle + count x interval = {} here. To \
                     detect sooner, lower TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT on the socket, \
                     or net.ipv4.tcp_keepalive_time/_intvl/_probes (per network namespace), \
                     e.g. sysctl -w net.ipv4.tcp_keepalive_time=60 \
                     net.ipv4.tcp_keepalive_intvl=10 net.ipv4.tcp_keepalive_probes=6.",
                    secs(detection)
                )
            } else {
                format!(
                    "Keepalive detected the dead connection after idle + count x interval = \
                     {} as configured; raise TCP_KEEPCNT or TCP_KEEPINTVL if short outages \
                     should be survived.",
                    secs(detection)
                )
            });
            let first_unanswered = v.idle_s.unwrap_or(idle);
            if v.probes_answered > 0 {
                advice.push(format!(
                    "Probes after the same {} of idleness were answered {} time{} before, so \
                     no idle timeout on the path is at play: the peer host or the path went \
                     down (or a firewall started dropping).",
                    secs(first_unanswered),
                    v.probes_answered,
                    if v.probes_answered == 1 { "" } else { "s" }
                ));
            } else {
                let idle = recommended_idle(first_unanswered);
                v.recommended_idle_s = Some(idle);
                advice.push(format!(
                    "If the peer is alive, something on the path drops traffic silently: a link or \
                 host that went down, or a NAT or firewall that forgot the connection within \
                 {} of idleness. In that case keep the keepalive idle time well below that \
                 bound, e.g. TCP_KEEPIDLE={idle} or sysctl -w \
                 net.ipv4.tcp_keepalive_time={idle} ({}), so probes \
                 refresh its state in time.",
                    secs(first_unanswered),
                    rule(IdleLimit::Below {
                        forgotten_s: first_unanswered
                    }),
                ));
            }
            format!(
                "Connection timed out{lifetime}: {} keepalive probes, {} apart, went unanswered \
                 after {} idle: no answer reached this host. The peer or a middlebox on the \
                 path silently went away.",
                v.probes_unanswered,
                secs(intvl),
                secs(v.idle_s.unwrap_or(idle))
            )
        }
        VerdictKind::ResetAfterProbe => {
            let idle = v.idle_s.or(ka.as_ref().map(|k| k.idle_s)).unwrap_or(0.0);
            let recommended = recommended_idle(idle);
            v.recommended_idle_s = Some(recommended);
            advice.push(format!(
                "The connection was forgotten within {} of idleness. Keep the keepalive idle \
                 time well below that limit so probes refresh NAT/conntrack state in time, \
                 e.g. TCP_KEEPIDLE={recommended} on the socket or sysctl -w \
                 net.ipv4.tcp_keepalive_time={recommended} ({}).",
                secs(idle),
                rule(IdleLimit::Below { forgotten_s: idle }),
            ));
            format!(
                "Connection reset{lifetime}: a keepalive probe sent after {} idle was answered \
                 with RST. The peer or a NAT/conntrack middlebox had forgotten the connection \
                 (peer restarted, or state expired while idle).",
                secs(idle)
            )
        }
        VerdictKind::PeerReset => {
            advice.push(
                "The peer's application aborted or its host no longer knew the connection; \
                 look at the peer's logs around this time."
                    .into(),
            );
            format!("Connection reset by the peer{lifetime}.")
        }
        VerdictKind::LocalAbort => {
            let reason = match &v.reason {
                Some(Reason::Reset(r)) => r.clone(),
                _ => ResetReason::Unknown,
            };
            advice.push(local_abort_advice(&reason).into());
            format!(
                "This host aborted the connection with RST{lifetime} (reason {}).",
                reason.name()
            )
        }
        VerdictKind::RetransmitTimeout => {
            advice.push(
                "Data went unacknowledged until retransmissions ran out: the peer or the path \
                 stopped working while data was in flight. This is not a keepalive problem; \
                 net.ipv4.tcp_retries2 (default 15, about 15 minutes) or TCP_USER_TIMEOUT set \
                 how long it takes to give up."
                    .into(),
            );
            format!(
                "Connection timed out{lifetime} with data unacknowledged: retransmissions ran \
                 out (ETIMEDOUT)."
            )
        }
        VerdictKind::UserTimeout => {
            let ms = ka.as_ref().map(|k| k.user_timeout_ms).unwrap_or(0);
            advice.push(format!(
                "TCP_USER_TIMEOUT={ms} ms on the socket bounds how long data or keepalive probes \
                 may stay unacknowledged; raise it if the peer is slow rather than gone."
            ));
            format!(
                "Connection cut by TCP_USER_TIMEOUT ({ms} ms){lifetime}: the peer stopped \
                 acknowledging."
            )
        }
        VerdictKind::Closed if v.reason == Some(Reason::ApplicationClosedAfterRetransmissions) => {
            let n = v.retransmits;
            advice.push(
                "The peer or the path stopped answering while data was in flight; find out why \
                 (peer host down, link or firewall dropping). The application noticed first \
                 and closed: its own timeout, not the kernel's."
                    .into(),
            );
            if ssh {
                advice.push(
                    "ssh gave up by itself: ServerAliveInterval x ServerAliveCountMax \
                     (ClientAliveInterval x ClientAliveCountMax in sshd) unanswered ends the \
                     session. These are ssh messages, not TCP keepalive; raise them to \
                     tolerate longer outages."
                        .into(),
                );
            }
            format!(
                "The application closed the connection{lifetime} after {n} unanswered \
                 retransmission{}: the peer stopped answering. Not a keepalive timeout.",
                if n == 1 { "" } else { "s" }
            )
        }
        VerdictKind::Closed => format!("Connection closed normally with FIN{lifetime}."),
    };
    if v.verdict != VerdictKind::KeepaliveTimeout && !v.dropped_here.is_empty() {
        v.summary += &format!(
            " This host dropped {} of the peer's packets that reached it ({}).",
            v.dropped_here.values().sum::<u32>(),
            drops_text(&v.dropped_here)
        );
        advice.extend(dropped_here_advice(&v.dropped_here));
    }
    if !v.dropped_leaving.is_empty() {
        v.summary += &format!(
            " This host dropped {} of the connection's own packets before they left ({}).",
            v.dropped_leaving.values().sum::<u32>(),
            drops_text(&v.dropped_leaving)
        );
        advice.push(format!(
            "Outgoing packets were dropped here: look at {}.",
            if v.dropped_leaving.contains_key("NETFILTER_DROP") {
                "this host's output firewall rules (`nft list ruleset`)"
            } else {
                "the egress queue and interface (`tc -s qdisc`, `ip -s link`)"
            }
        ));
    }
    if v.verdict != VerdictKind::Closed {
        if let Some(k) = &ka
            && !k.enabled
            && v.verdict != VerdictKind::LocalAbort
        {
            advice.push(
                "Keepalive was off on this socket (SO_KEEPALIVE=0): enable it with \
                     setsockopt(SO_KEEPALIVE, 1) and TCP_KEEPIDLE below any NAT or firewall \
                     idle timeout, or with `keepalive enforce` without changing the \
                     application."
                    .into(),
            );
        }
        if ssh {
            advice.push(
                "ssh: TCPKeepAlive=yes uses the kernel keepalive above; ServerAliveInterval=30 \
                 with ServerAliveCountMax=3 (ClientAliveInterval/ClientAliveCountMax in sshd) \
                 probe at the application level, through NATs, and end a dead session in about \
                 90 s."
                    .into(),
            );
        }
    }
    v.advice = advice;
}

/// What to look at for the peer's packets this host dropped, one line per kind of reason;
/// never keepalive settings: the answers arrived.
fn dropped_here_advice(drops: &Drops) -> Vec<String> {
    let mut advice = vec![];
    if drops.contains_key("NETFILTER_DROP") {
        advice.push(
            "This host's firewall dropped them: find the rule with `nft list ruleset` (or \
             `iptables-save`). A `ct state invalid drop` rule drops the packets of a flow \
             conntrack no longer knows: see `conntrack -L` and \
             net.netfilter.nf_conntrack_tcp_timeout_established. The kernel does not name the \
             rule; `nft monitor trace` with a `meta nftrace set 1` rule does."
                .into(),
        );
    }
    let tcp: Vec<&str> = drops
        .keys()
        .filter(|r| r.starts_with("TCP_"))
        .map(String::as_str)
        .collect();
    if !tcp.is_empty() {
        advice.push(format!(
            "The TCP stack dropped them as not fitting the connection ({}): the two ends \
             disagree about its state (a middlebox rewrote or forgot it, or the peer \
             restarted); compare captures on both ends.",
            tcp.join(", ")
        ));
    }
    let other: Vec<&str> = drops
        .keys()
        .filter(|r| *r != "NETFILTER_DROP" && !r.starts_with("TCP_"))
        .map(String::as_str)
        .collect();
    if !other.is_empty() {
        advice.push(format!(
            "The kernel dropped them for {}: see its counters (`nstat -a`, `ip -s link`) and \
             the reason's meaning in the kernel's include/net/dropreason-core.h.",
            other.join(", ")
        ));
    }
    advice.push(
        "Keepalive settings are not the cause: the answers arrived, and this host threw them \
         away."
            .into(),
    );
    advice
}

/// The keepalive idle time to advise after a connection was forgotten within `failed`
/// seconds of idleness (see [`IdleLimit::Below`]).
pub fn recommended_idle(failed: f64) -> f64 {
    idle_limit::recommended_idle(IdleLimit::Below {
        forgotten_s: failed,
    })
}

fn settings(k: Option<&Keepalive>) -> (f64, f64, u32) {
    k.map(|k| (k.idle_s, k.interval_s, k.count))
        .unwrap_or((7200.0, 75.0, 9))
}

/// What to do about a reset this host sent, by the kernel's reason for it.
fn local_abort_advice(reason: &ResetReason) -> &'static str {
    match reason {
        ResetReason::AbortOnLinger => {
            "The application closed the socket with SO_LINGER {on, 0}, which discards unsent \
             data and resets the connection; use a non-zero linger time or plain close() for \
             an orderly FIN."
        }
        ResetReason::AbortOnClose => {
            "The application closed the socket while received data was still unread; read \
             everything (or shutdown(SHUT_WR) and drain) before close()."
        }
        ResetReason::AbortOnMemory => {
            "The kernel ran out of TCP memory or orphan sockets (net.ipv4.tcp_mem, \
             net.ipv4.tcp_max_orphans); check `nstat TcpExtTCPAbortOnMemory`."
        }
        ResetReason::DisconnectWithData => {
            "The application disconnected (connect(AF_UNSPEC)) with data unsent or unread."
        }
        ResetReason::TcpState => {
            "The socket was closed or disconnected in a state that requires a RST (e.g. \
             SO_LINGER 0, or shutdown during the handshake)."
        }
        ResetReason::Unknown | ResetReason::NotSpecified | ResetReason::Other(_) => {
            "The kernel aborted the connection; see the reason for which path."
        }
    }
}

/// Seconds, briefly: 2s, 1.5s, 2h.
pub fn secs(s: f64) -> String {
    if s >= 3600.0 && s % 3600.0 == 0.0 {
        format!("{}h", s / 3600.0)
    } else if s >= 60.0 && s % 60.0 == 0.0 {
        format!("{}min", s / 60.0)
    } else {
        format!("{}s", (s * 1000.0).round() / 1000.0)
    }
}

//! Every kernel program, declared once: its name in the object, where it attaches, in which
//! modes, and what is lost without it. The kernel's nesting guards take their slots from here,
//! and the user side's loader and `keepalive doctor` attach and check from this table.

/// The kernel function that runs a socket's keepalive timer: what kprobe mode hooks and
/// tracepoint mode finds among all timers by its address.
pub const KEEPALIVE_TIMER_FN: &str = "tcp_keepalive_timer";

/// Slots of the kernel's per-CPU table of events a guarded tracepoint's first program took,
/// one per guarded tracepoint.
pub mod guard_slot {
    pub const INET_SOCK_SET_STATE: u32 = 0;
    pub const TCP_RETRANSMIT_SKB: u32 = 1;
    pub const TCP_SEND_RESET: u32 = 2;
    pub const TCP_RECEIVE_RESET: u32 = 3;
    pub const INET_SK_ERROR_REPORT: u32 = 4;
    pub const TCP_DESTROY_SOCK: u32 = 5;
    /// How many there are: the table's size.
    pub const COUNT: u32 = 6;
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A BTF tracepoint, `group:name` as tracefs lists it.
    Tracepoint {
        group: &'static str,
        name: &'static str,
    },
    /// A kprobe (or kretprobe, by program type) on a kernel function.
    Kprobe(&'static str),
}

/// Which modes attach a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modes {
    Both,
    /// Tracepoint mode only (kprobe mode hooks the keepalive timer itself).
    Tracepoint,
    Kprobe,
}

/// A kernel program: its name in the object, where it attaches, in which modes, and what
/// keepalive cannot report without it.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    pub name: &'static str,
    pub hook: Hook,
    pub modes: Modes,
    pub lost_without: &'static str,
    /// Attached only to report every state change and socket freed (`--all-states`).
    pub all_states_only: bool,
    /// Attached only where the kernel says why it drops a packet (Linux 5.17 and later):
    /// without the reason a drop explains nothing.
    pub needs_drop_reasons: bool,
    /// For a tracepoint guarded against nesting: its slot in the kernel's per-CPU table of
    /// events taken (see `guarded!` in keepalive-ebpf), shared by the tracepoint's two
    /// programs.
    pub guard_slot: Option<u32>,
}

const fn tracepoint(
    name: &'static str,
    group: &'static str,
    tracepoint: &'static str,
    modes: Modes,
    lost_without: &'static str,
) -> Program {
    Program {
        name,
        hook: Hook::Tracepoint {
            group,
            name: tracepoint,
        },
        modes,
        lost_without,
        all_states_only: false,
        needs_drop_reasons: false,
        guard_slot: None,
    }
}

/// A guarded tracepoint's program (its first, or its `_nested` second).
const fn guarded(slot: u32, p: Program) -> Program {
    Program {
        guard_slot: Some(slot),
        ..p
    }
}

/// A tracepoint attached only with `--all-states`.
const fn all_states_only(p: Program) -> Program {
    Program {
        all_states_only: true,
        ..p
    }
}

/// A tracepoint attached only where the kernel names its drops.
const fn with_drop_reasons(p: Program) -> Program {
    Program {
        needs_drop_reasons: true,
        ..p
    }
}

const fn kprobe(name: &'static str, function: &'static str, lost_without: &'static str) -> Program {
    Program {
        name,
        hook: Hook::Kprobe(function),
        modes: Modes::Kprobe,
        lost_without,
        all_states_only: false,
        needs_drop_reasons: false,
        guard_slot: None,
    }
}

/// Every program, in attach order: the keepalive timer first; a `_nested` program runs after
/// its primary and covers events the kernel skipped for it (see `guarded!` in
/// keepalive-ebpf).
pub const PROGRAMS: &[Program] = &[
    tracepoint(
        "timer_expire_entry",
        "timer",
        "timer_expire_entry",
        Modes::Tracepoint,
        "keepalive probes and timeouts",
    ),
    tracepoint(
        "timer_expire_exit",
        "timer",
        "timer_expire_exit",
        Modes::Tracepoint,
        "keepalive probes and timeouts",
    ),
    kprobe(
        "keepalive_timer_kprobe",
        KEEPALIVE_TIMER_FN,
        "keepalive probes and timeouts",
    ),
    kprobe(
        "keepalive_timer_kretprobe",
        KEEPALIVE_TIMER_FN,
        "keepalive probes and timeouts",
    ),
    kprobe(
        "active_reset_kprobe",
        "tcp_send_active_reset",
        "the causes of resets before Linux 6.10",
    ),
    guarded(
        guard_slot::INET_SOCK_SET_STATE,
        tracepoint(
            "inet_sock_set_state",
            "sock",
            "inet_sock_set_state",
            Modes::Both,
            "state changes",
        ),
    ),
    guarded(
        guard_slot::INET_SOCK_SET_STATE,
        tracepoint(
            "inet_sock_set_state_nested",
            "sock",
            "inet_sock_set_state",
            Modes::Both,
            "state changes",
        ),
    ),
    guarded(
        guard_slot::TCP_SEND_RESET,
        tracepoint(
            "tcp_send_reset",
            "tcp",
            "tcp_send_reset",
            Modes::Both,
            "resets sent",
        ),
    ),
    guarded(
        guard_slot::TCP_SEND_RESET,
        tracepoint(
            "tcp_send_reset_nested",
            "tcp",
            "tcp_send_reset",
            Modes::Both,
            "resets sent",
        ),
    ),
    guarded(
        guard_slot::TCP_RECEIVE_RESET,
        tracepoint(
            "tcp_receive_reset",
            "tcp",
            "tcp_receive_reset",
            Modes::Both,
            "resets received",
        ),
    ),
    guarded(
        guard_slot::TCP_RECEIVE_RESET,
        tracepoint(
            "tcp_receive_reset_nested",
            "tcp",
            "tcp_receive_reset",
            Modes::Both,
            "resets received",
        ),
    ),
    guarded(
        guard_slot::INET_SK_ERROR_REPORT,
        tracepoint(
            "inet_sk_error_report",
            "sock",
            "inet_sk_error_report",
            Modes::Both,
            "socket errors",
        ),
    ),
    guarded(
        guard_slot::INET_SK_ERROR_REPORT,
        tracepoint(
            "inet_sk_error_report_nested",
            "sock",
            "inet_sk_error_report",
            Modes::Both,
            "socket errors",
        ),
    ),
    // Connections are forgotten when their close is seen; the freeing of a socket is an
    // event of its own only with --all-states.
    guarded(
        guard_slot::TCP_DESTROY_SOCK,
        all_states_only(tracepoint(
            "tcp_destroy_sock",
            "tcp",
            "tcp_destroy_sock",
            Modes::Both,
            "freed sockets (socket_destroyed, with --all-states)",
        )),
    ),
    guarded(
        guard_slot::TCP_DESTROY_SOCK,
        all_states_only(tracepoint(
            "tcp_destroy_sock_nested",
            "tcp",
            "tcp_destroy_sock",
            Modes::Both,
            "freed sockets (socket_destroyed, with --all-states)",
        )),
    ),
    guarded(
        guard_slot::TCP_RETRANSMIT_SKB,
        tracepoint(
            "tcp_retransmit_skb",
            "tcp",
            "tcp_retransmit_skb",
            Modes::Both,
            "retransmissions",
        ),
    ),
    guarded(
        guard_slot::TCP_RETRANSMIT_SKB,
        tracepoint(
            "tcp_retransmit_skb_nested",
            "tcp",
            "tcp_retransmit_skb",
            Modes::Both,
            "retransmissions",
        ),
    ),
    // Kprobe mode takes the same tracepoint: it carries the reason, a kprobe would not.
    with_drop_reasons(tracepoint(
        "kfree_skb",
        "skb",
        "kfree_skb",
        Modes::Both,
        "packets of dying connections this host dropped (dropped_here)",
    )),
];

/// The kernel functions kprobe mode hooks, once each, in table order.
pub fn kprobe_functions() -> impl Iterator<Item = &'static str> {
    PROGRAMS
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.hook {
            Hook::Kprobe(f) if !PROGRAMS[..i].iter().any(|q| q.hook == p.hook) => Some(f),
            _ => None,
        })
}

/// Each tracepoint any mode uses, once, with its first program (the modes that need it and
/// what is lost without it), in table order.
pub fn tracepoints() -> impl Iterator<Item = &'static Program> {
    PROGRAMS
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.hook {
            Hook::Tracepoint { .. } if !PROGRAMS[..i].iter().any(|q| q.hook == p.hook) => Some(p),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each slot belongs to one tracepoint, whose first program and `_nested` second share it.
    #[test]
    fn each_guard_slot_is_one_tracepoints_pair() {
        for slot in 0..guard_slot::COUNT {
            let pair: [&Program; 2] = {
                let mut p = PROGRAMS.iter().filter(|p| p.guard_slot == Some(slot));
                let pair = [p.next().unwrap(), p.next().unwrap()];
                assert!(p.next().is_none(), "slot {slot}");
                pair
            };
            assert_eq!(pair[0].hook, pair[1].hook);
            assert_eq!(
                pair[1].name.strip_suffix("_nested"),
                Some(pair[0].name),
                "slot {slot}"
            );
        }
        assert!(
            PROGRAMS
                .iter()
                .all(|p| p.guard_slot.is_none_or(|s| s < guard_slot::COUNT))
        );
    }
}

//! Where keepalive's kernel programs attach, in which mode, and what is lost without each:
//! the one table the loader attaches from and `keepalive doctor` checks.

/// How the keepalive timer and the resets sockets send are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Kprobe mode where the kernel has kprobes, else tracepoint mode.
    Auto,
    /// Kprobes on tcp_keepalive_timer and tcp_send_active_reset: only the keepalive timer
    /// pays, and resets name their cause on kernels before 6.10. Tracepoints for the rest.
    Kprobe,
    /// BTF tracepoints only: the keepalive timer is found among all timers by its address.
    Tracepoint,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Kprobe => "kprobe",
            Mode::Tracepoint => "tracepoint",
        }
    }
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
}

impl Program {
    pub fn in_mode(&self, mode: Mode) -> bool {
        match self.modes {
            Modes::Both => true,
            Modes::Tracepoint => mode == Mode::Tracepoint,
            Modes::Kprobe => mode == Mode::Kprobe,
        }
    }
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
        "tcp_keepalive_timer",
        "keepalive probes and timeouts",
    ),
    kprobe(
        "keepalive_timer_kretprobe",
        "tcp_keepalive_timer",
        "keepalive probes and timeouts",
    ),
    kprobe(
        "active_reset_kprobe",
        "tcp_send_active_reset",
        "the causes of resets before Linux 6.10",
    ),
    tracepoint(
        "inet_sock_set_state",
        "sock",
        "inet_sock_set_state",
        Modes::Both,
        "state changes",
    ),
    tracepoint(
        "inet_sock_set_state_nested",
        "sock",
        "inet_sock_set_state",
        Modes::Both,
        "state changes",
    ),
    tracepoint(
        "tcp_send_reset",
        "tcp",
        "tcp_send_reset",
        Modes::Both,
        "resets sent",
    ),
    tracepoint(
        "tcp_send_reset_nested",
        "tcp",
        "tcp_send_reset",
        Modes::Both,
        "resets sent",
    ),
    tracepoint(
        "tcp_receive_reset",
        "tcp",
        "tcp_receive_reset",
        Modes::Both,
        "resets received",
    ),
    tracepoint(
        "tcp_receive_reset_nested",
        "tcp",
        "tcp_receive_reset",
        Modes::Both,
        "resets received",
    ),
    tracepoint(
        "inet_sk_error_report",
        "sock",
        "inet_sk_error_report",
        Modes::Both,
        "socket errors",
    ),
    tracepoint(
        "inet_sk_error_report_nested",
        "sock",
        "inet_sk_error_report",
        Modes::Both,
        "socket errors",
    ),
    // Connections are forgotten when their close is seen; the freeing of a socket is an
    // event of its own only with --all-states.
    all_states_only(tracepoint(
        "tcp_destroy_sock",
        "tcp",
        "tcp_destroy_sock",
        Modes::Both,
        "freed sockets (socket_destroyed, with --all-states)",
    )),
    all_states_only(tracepoint(
        "tcp_destroy_sock_nested",
        "tcp",
        "tcp_destroy_sock",
        Modes::Both,
        "freed sockets (socket_destroyed, with --all-states)",
    )),
    tracepoint(
        "tcp_retransmit_skb",
        "tcp",
        "tcp_retransmit_skb",
        Modes::Both,
        "retransmissions",
    ),
    tracepoint(
        "tcp_retransmit_skb_nested",
        "tcp",
        "tcp_retransmit_skb",
        Modes::Both,
        "retransmissions",
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

/// The programs `mode` (not `Auto`) attaches, in order.
pub fn programs(mode: Mode) -> impl Iterator<Item = &'static Program> {
    PROGRAMS.iter().filter(move |p| p.in_mode(mode))
}

/// Each tracepoint any mode uses, once, with the modes that need it and what is lost
/// without it.
pub fn tracepoints() -> Vec<(&'static str, &'static str, Modes, &'static str)> {
    let mut seen: Vec<(&'static str, &'static str, Modes, &'static str)> = vec![];
    for p in PROGRAMS {
        if let Hook::Tracepoint { group, name } = p.hook
            && !seen.iter().any(|(g, n, _, _)| (*g, *n) == (group, name))
        {
            seen.push((group, name, p.modes, p.lost_without));
        }
    }
    seen
}

/// The kernel functions kprobe mode hooks, once each.
pub fn kprobe_functions() -> Vec<&'static str> {
    let mut functions = vec![];
    for p in PROGRAMS {
        if let Hook::Kprobe(f) = p.hook
            && !functions.contains(&f)
        {
            functions.push(f);
        }
    }
    functions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_hooks_the_keepalive_timer_and_every_common_tracepoint() {
        for mode in [Mode::Kprobe, Mode::Tracepoint] {
            let names: Vec<_> = programs(mode).map(|p| p.name).collect();
            assert!(
                names.iter().any(|n| n.contains("timer")),
                "{mode:?}: {names:?}"
            );
            assert!(names.contains(&"tcp_send_reset"), "{mode:?}");
        }
        assert_eq!(
            kprobe_functions(),
            ["tcp_keepalive_timer", "tcp_send_active_reset"]
        );
        // Two tracepoints are tracepoint mode's own, seven are common.
        assert_eq!(tracepoints().len(), 9);
    }
}

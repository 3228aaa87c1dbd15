//! Which of keepalive's kernel programs (declared in `keepalive_common::programs`) each
//! attach mode uses: what the loader attaches and `keepalive doctor` checks.

/// How the keepalive timer and the resets sockets send are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Kprobe mode where the kernel has kprobes, else tracepoint mode.
    Auto,
    /// Kprobes on tcp_keepalive_timer and tcp_send_active_reset: only the keepalive timer
    /// pays, and resets name their cause on kernels before 6.10. Tracepoints for the rest.
    Kprobe,
    /// BTF tracepoints only: the keepalive timer is found among all timers by its address.
    Tracepoint,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
        }
    }
}

pub use keepalive_common::programs::{
    Hook, Modes, PROGRAMS, Program, kprobe_functions, tracepoints,
};

/// Whether `mode` (not `Auto`) attaches `program`.
pub fn in_mode(program: &Program, mode: AttachMode) -> bool {
    match program.modes {
        Modes::Both => true,
        Modes::Tracepoint => mode == AttachMode::Tracepoint,
        Modes::Kprobe => mode == AttachMode::Kprobe,
    }
}

/// The programs `mode` (not `Auto`) attaches, in order.
pub fn programs(mode: AttachMode) -> impl Iterator<Item = &'static Program> {
    PROGRAMS.iter().filter(move |p| in_mode(p, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_hooks_the_keepalive_timer_and_every_common_tracepoint() {
        for mode in [AttachMode::Kprobe, AttachMode::Tracepoint] {
            let names: Vec<_> = programs(mode).map(|p| p.name).collect();
            assert!(
                names.iter().any(|n| n.contains("timer")),
                "{mode:?}: {names:?}"
            );
            assert!(names.contains(&"tcp_send_reset"), "{mode:?}");
        }
        assert_eq!(
            kprobe_functions().collect::<Vec<_>>(),
            ["tcp_keepalive_timer", "tcp_send_active_reset"]
        );
        // Two tracepoints are tracepoint mode's own, seven are common.
        assert_eq!(tracepoints().count(), 9);
    }
}

//! The one rule for the keepalive idle time to recommend, from what is known of the idle
//! time after which a path forgets a connection: `keepalive path` and the verdicts' advice
//! use it, and the settings lines (sysctl, setsockopt, ssh, `keepalive enforce`) repeat it.

/// What is known of a path's idle limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IdleLimit {
    /// Measured: a connection idle `kept_s` seconds was kept, one idle `forgotten_s`
    /// forgotten (`keepalive path`).
    Measured { kept_s: f64, forgotten_s: f64 },
    /// Only that a connection idle `forgotten_s` was forgotten (a death): the limit is
    /// somewhere below.
    Below { forgotten_s: f64 },
}

/// Linux's timer wheel fires a timer up to an eighth of its timeout late: a keepalive idle
/// time of `s` sends its first probe by `s * 9/8`.
const TIMER_LATENESS: f64 = 9.0 / 8.0;

/// When a keepalive idle time of `idle_s` sends its first probe at the latest.
pub fn first_probe_by(idle_s: f64) -> f64 {
    idle_s * TIMER_LATENESS
}

/// The idle time to set, in whole seconds, at least 1.
///
/// Measured: the longest idle whose first probe still goes out by `kept_s` when the timer
/// runs its latest (`kept_s * 8/9`), less one second for the middlebox's own timer, which may
/// run early by its granularity, and for the measurement's whole seconds; never above what
/// was kept. Below: a third of the idle that failed, at most 2 minutes (under the shortest
/// common cloud limits: Azure's 4 min, AWS's 350 s), since one failure says only that the
/// limit is somewhere below it.
pub fn recommended_idle(limit: IdleLimit) -> f64 {
    match limit {
        IdleLimit::Measured { kept_s, .. } => ((kept_s / TIMER_LATENESS).floor() - 1.0)
            .min(kept_s.floor())
            .max(1.0),
        IdleLimit::Below { forgotten_s } => (forgotten_s / 3.0).floor().clamp(1.0, 120.0),
    }
}

/// How [`recommended_idle`] chose, in words.
pub fn rule(limit: IdleLimit) -> &'static str {
    match limit {
        IdleLimit::Measured { .. } => {
            "the longest idle whose first probe goes out within what was kept even when the \
             kernel's timer fires an eighth late, less 1 s for the middlebox's timer"
        }
        IdleLimit::Below { .. } => {
            "a third of the idle time that failed, at most 2 min: the limit is somewhere \
             below it"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(kept_s: f64) -> f64 {
        recommended_idle(IdleLimit::Measured {
            kept_s,
            forgotten_s: kept_s + 2.0,
        })
    }

    #[test]
    fn a_measured_limit_gives_the_longest_idle_probing_in_time_with_a_second_spare() {
        // A NAT forgetting after 7 s, measured kept 6 s.
        assert_eq!(measured(6.0), 4.0);
        // AWS NAT gateway (350 s): kept 349 s.
        assert_eq!(measured(349.0), 309.0);
        // Never above what was kept, never below 1 s.
        assert_eq!(measured(1.0), 1.0);
        assert_eq!(measured(2.0), 1.0);
        for kept in 1..2000 {
            let r = measured(kept as f64);
            assert!(r >= 1.0 && r <= kept as f64, "{kept}: {r}");
            // The first probe goes out within what was kept, late timer and all.
            assert!(
                kept < 3 || r * TIMER_LATENESS + 1.0 <= kept as f64,
                "{kept}: {r}"
            );
        }
    }

    #[test]
    fn a_death_alone_gives_a_third_at_most_two_minutes() {
        let below = |f: f64| recommended_idle(IdleLimit::Below { forgotten_s: f });
        assert_eq!(below(600.0), 120.0);
        assert_eq!(below(6.0), 2.0);
        assert_eq!(below(2.0), 1.0);
    }
}

//! `keepalive path`'s plan and judgement, pure: which idle times to try, what the first
//! keepalive probe of each connection says, and what the path keeps. No I/O (see `path`).

use keepalive_events::idle_limit::{self, IdleLimit};
use serde::Serialize;

/// What a connection's first keepalive probe, after `idle` seconds of silence, found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: the path still held the flow after that idle time.
    Kept,
    /// Not answered (a second probe went out, or the keepalive timer gave up): a middlebox
    /// dropped the flow silently.
    Silent,
    /// Answered with a RST: a middlebox (or a host that lost the connection) reset it.
    Rst,
    /// The server closed the connection (FIN, or RST before any probe) after `after_s`
    /// seconds: the server's own idle limit, not the path's.
    ServerClosed { after_s: u32 },
}

/// How the path (or the server) forgot idle connections. `how` in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    Silent,
    Rst,
    ServerClosed,
}

impl How {
    pub fn words(self) -> &'static str {
        match self {
            How::Silent => "silently dropped (no answer, no RST): a NAT or firewall",
            How::Rst => "answered with RST: a firewall or NAT that resets forgotten flows",
            How::ServerClosed => "closed by the server itself (FIN): its own idle timeout",
        }
    }
}

/// What is known so far: the longest idle time a probe was answered after, the shortest
/// after which the flow was forgotten, and how.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    pub kept_s: Option<u32>,
    pub forgotten_s: Option<u32>,
    pub how: Option<How>,
    /// Connections opened so far.
    pub connections: usize,
}

impl Findings {
    pub fn record(&mut self, idle_s: u32, outcome: Outcome) {
        match outcome {
            Outcome::Kept => {
                // Only below what failed: a later answer above it says the failure was not
                // the path's idle limit (monotonic paths make this moot).
                if self.forgotten_s.is_none_or(|f| idle_s < f) {
                    self.kept_s = Some(self.kept_s.map_or(idle_s, |k| k.max(idle_s)));
                }
            }
            Outcome::Silent | Outcome::Rst => {
                if self.forgotten_s.is_none_or(|f| idle_s < f) {
                    self.forgotten_s = Some(idle_s);
                    self.how = Some(if outcome == Outcome::Rst {
                        How::Rst
                    } else {
                        How::Silent
                    });
                }
                if self.kept_s.is_some_and(|k| k >= idle_s) {
                    self.kept_s = None;
                }
            }
            Outcome::ServerClosed { after_s } => {
                // The server's limit is measured directly: the time to its FIN.
                if self.how != Some(How::ServerClosed)
                    || self.forgotten_s.is_none_or(|f| after_s < f)
                {
                    self.forgotten_s = Some(after_s);
                    self.how = Some(How::ServerClosed);
                }
            }
        }
    }

    /// Nothing more to learn: the server's own limit was measured, or the interval between
    /// kept and forgotten is at most `resolution_s` wide.
    pub fn settled(&self, resolution_s: u32) -> bool {
        match (self.how, self.kept_s, self.forgotten_s) {
            (Some(How::ServerClosed), _, _) => true,
            (_, Some(k), Some(f)) => f.saturating_sub(k) <= resolution_s,
            (_, None, Some(f)) => f <= 1,
            _ => false,
        }
    }
}

/// The first round: up to `n` idle times from `min_s` to `max_s`, spaced geometrically (a
/// limit could be 30 s or 2 h; each rung is a constant factor above the last).
pub fn first_round(min_s: u32, max_s: u32, n: usize) -> Vec<u32> {
    let (min_s, max_s) = (min_s.max(1), max_s.max(min_s.max(1)));
    if n <= 1 || min_s == max_s {
        return vec![max_s];
    }
    let ratio = (max_s as f64 / min_s as f64).powf(1.0 / (n - 1) as f64);
    let mut rungs: Vec<u32> = (0..n)
        .map(|i| (min_s as f64 * ratio.powi(i as i32)).round() as u32)
        .map(|s| s.clamp(min_s, max_s))
        .collect();
    rungs.dedup();
    rungs
}

/// The next round: up to `n` whole seconds strictly between the longest idle kept and the
/// shortest forgotten, evenly spaced (empty when there is nothing between them). With
/// nothing kept yet (the shortest idle tried was forgotten), down to 1 s: a user does not
/// know the limit in advance, and no recommendation comes from what was not seen kept.
pub fn next_round(f: &Findings, n: usize) -> Vec<u32> {
    let Some(forgotten) = f.forgotten_s else {
        return vec![];
    };
    let low = f.kept_s.unwrap_or(0);
    let between = forgotten.saturating_sub(low).saturating_sub(1) as usize;
    if between == 0 || f.how == Some(How::ServerClosed) {
        return vec![];
    }
    if between < n {
        // Fewer whole seconds than connections: each several times, from the one kept on
        // (a long timer fires late, so a repeat opened at another moment tests a later
        // idle time: see `path`).
        let mut rungs: Vec<u32> = (0..n as u32)
            .map(|i| low.max(1) + i % (forgotten - low.max(1)))
            .collect();
        rungs.sort_unstable();
        return rungs;
    }
    let k = between.min(n);
    let mut rungs: Vec<u32> = (1..=k)
        .map(|i| low + ((i * (forgotten - low) as usize) as f64 / (k + 1) as f64).round() as u32)
        .filter(|&s| s > low && s < forgotten && s > 0)
        .collect();
    rungs.dedup();
    rungs
}

/// What a round does, in words: its plan, for the progress lines.
pub fn round_plan(f: &Findings, min_s: u32) -> String {
    match (f.kept_s, f.forgotten_s) {
        (None, None) => "from --min to --max, spaced geometrically".into(),
        (Some(k), Some(fs)) => format!("between kept {k} s and forgotten {fs} s"),
        (None, Some(fs)) if fs <= min_s => format!(
            "nothing was kept at {fs} s (the shortest tried): searching below it, down to 1 s"
        ),
        (None, Some(fs)) => format!("below forgotten {fs} s, down to 1 s"),
        (Some(k), None) => format!("above kept {k} s"),
    }
}

/// The idle time to set for a path seen to keep `kept_s` and forget `forgotten_s` (the
/// one rule: [`idle_limit::recommended_idle`]).
pub fn recommended_idle(kept_s: u32, forgotten_s: u32) -> u32 {
    idle_limit::recommended_idle(measured(kept_s, forgotten_s)) as u32
}

fn measured(kept_s: u32, forgotten_s: u32) -> IdleLimit {
    IdleLimit::Measured {
        kept_s: kept_s.into(),
        forgotten_s: forgotten_s.into(),
    }
}

/// What to set, concretely, for a recommended idle time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub sysctl: String,
    pub setsockopt: String,
    pub ssh: String,
    pub enforce: String,
}

impl Settings {
    pub fn for_idle(idle_s: u32, port: u16) -> Settings {
        Settings::for_idle_in(idle_s, port, None)
    }

    /// The same, `keepalive enforce` naming `cgroup` (a path from the cgroup hierarchy's
    /// root, e.g. /system.slice/app.service) when the owner's is known.
    pub fn for_idle_in(idle_s: u32, port: u16, cgroup: Option<&str>) -> Settings {
        let cgroup = cgroup.map_or("<the service's cgroup>".to_string(), |c| {
            format!("/sys/fs/cgroup{c}")
        });
        // Probes a fifth of the idle apart, a few of them: a dead peer is found within
        // about twice the idle time.
        let interval = (idle_s / 5).max(1);
        Settings {
            sysctl: format!(
                "sysctl -w net.ipv4.tcp_keepalive_time={idle_s} net.ipv4.tcp_keepalive_intvl={interval} net.ipv4.tcp_keepalive_probes=5"
            ),
            setsockopt: format!(
                "SO_KEEPALIVE=1, TCP_KEEPIDLE={idle_s}, TCP_KEEPINTVL={interval}, TCP_KEEPCNT=5"
            ),
            ssh: format!(
                "ssh -o ServerAliveInterval={idle_s} -o ServerAliveCountMax=3 (application-level messages through the tunnel, not TCP keepalive)"
            ),
            enforce: format!(
                "keepalive enforce --cgroup {cgroup} --idle {idle_s} --interval {interval} --count 5 --port {port}"
            ),
        }
    }
}

/// `keepalive path`'s answer. One JSON line with `--format json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathResult {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub target: String,
    /// The longest idle time (seconds) after which a probe was answered.
    pub kept_s: Option<u32>,
    /// The shortest idle time (seconds) after which the connection was forgotten (for the
    /// server: the time it closed an idle connection after).
    pub forgotten_s: Option<u32>,
    pub how: Option<How>,
    pub recommended_idle_s: Option<u32>,
    pub settings: Option<Settings>,
    /// The longest idle time tried (`--max`).
    pub max_s: u32,
    pub connections: usize,
    pub seconds: u64,
    /// Stopped (Ctrl-C) before the measurement was done: what is known so far.
    pub interrupted: bool,
}

impl PathResult {
    pub fn new(
        target: String,
        f: &Findings,
        max_s: u32,
        seconds: u64,
        interrupted: bool,
        port: u16,
    ) -> PathResult {
        // A server's own limit is the application's business: the settings are for a path.
        // Only from an idle time seen kept: never a guess below a failure.
        let recommended = match (f.how, f.kept_s, f.forgotten_s) {
            (Some(How::ServerClosed), _, _) => None,
            (_, Some(k), Some(fs)) => Some(recommended_idle(k, fs)),
            _ => None,
        };
        PathResult {
            kind: "path",
            target,
            kept_s: f.kept_s,
            forgotten_s: f.forgotten_s,
            how: f.how,
            recommended_idle_s: recommended,
            settings: recommended.map(|r| Settings::for_idle(r, port)),
            max_s,
            connections: f.connections,
            seconds,
            interrupted,
        }
    }

    /// Whether a limit was measured (exit 0): forgotten after some idle time and kept after
    /// a shorter one, or the server's own. Otherwise (none up to `--max`, or nothing kept
    /// even at 1 s) exit 1.
    pub fn found(&self) -> bool {
        self.forgotten_s.is_some() && (self.kept_s.is_some() || self.how == Some(How::ServerClosed))
    }

    /// In words, for a terminal.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let kept = self
            .kept_s
            .map(|k| format!("kept >= {k} s"))
            .unwrap_or_else(|| "no idle time tried was kept".into());
        match (self.how, self.forgotten_s) {
            (Some(How::ServerClosed), Some(f)) => {
                out.push_str(&format!(
                    "{}: the server closes idle connections after about {f} s ({}); {kept} \
                     before that. Not a path limit: raise the server's idle timeout, or have \
                     the client send application-level keepalives within {f} s.\n",
                    self.target,
                    How::ServerClosed.words()
                ));
            }
            (Some(how), Some(f)) if self.kept_s.is_none() && !self.interrupted => {
                out.push_str(&format!(
                    "{}: forgotten after {f} s of idleness ({}), and nothing down to 1 s was \
                     kept: no keepalive idle time helps on this path. Something drops the flow \
                     (or its state) at once; look at the firewall or NAT between.\n",
                    self.target,
                    how.words()
                ));
            }
            (Some(how), Some(f)) => {
                out.push_str(&format!(
                    "{}: {kept}, forgotten by {f} s of idleness ({}).\n",
                    self.target,
                    how.words()
                ));
            }
            _ => {
                out.push_str(&format!(
                    "{}: no limit found: idle connections were kept up to {} s (--max).\n",
                    self.target, self.max_s
                ));
            }
        }
        if let (Some(r), Some(s), Some(k), Some(f)) = (
            self.recommended_idle_s,
            &self.settings,
            self.kept_s,
            self.forgotten_s,
        ) {
            out.push_str(&format!(
                "Recommended keepalive idle time: {r} s ({}).\n  \
                 host-wide:   {}\n  per socket:  {}\n  ssh:         {}\n  no code change: {}\n",
                idle_limit::rule(measured(k, f)),
                s.sysctl,
                s.setsockopt,
                s.ssh,
                s.enforce
            ));
        }
        if self.interrupted {
            out.push_str("(interrupted: what was known so far)\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_round_spans_min_to_max_geometrically() {
        let r = first_round(15, 7200, 16);
        assert_eq!(r.first(), Some(&15));
        assert_eq!(r.last(), Some(&7200));
        assert_eq!(r.len(), 16);
        assert!(r.windows(2).all(|w| w[0] < w[1]), "{r:?}");
        assert_eq!(first_round(2, 2, 8), [2]);
        assert_eq!(first_round(1, 3, 8), [1, 2, 3]);
    }

    /// A NAT that keeps flows idle up to `limit` s and silently forgets longer ones.
    fn nat(limit: u32) -> impl Fn(u32) -> Outcome {
        move |idle| {
            if idle <= limit {
                Outcome::Kept
            } else {
                Outcome::Silent
            }
        }
    }

    #[test]
    fn bisection_narrows_to_the_resolution() {
        // A NAT that forgets after 6 s: the first round brackets it, the second pins it.
        let limit = 6;
        let nat = nat(limit);
        let mut f = Findings::default();
        for idle in first_round(2, 20, 8) {
            f.record(idle, nat(idle));
        }
        assert!(
            f.kept_s.unwrap() <= limit && f.forgotten_s.unwrap() > limit,
            "{f:?}"
        );
        let next = next_round(&f, 16);
        assert!(!next.is_empty());
        for idle in next {
            f.record(idle, nat(idle));
        }
        assert_eq!((f.kept_s, f.forgotten_s), (Some(6), Some(7)));
        assert!(f.settled(2));
        assert_eq!(f.how, Some(How::Silent));
        assert!(next_round(&f, 16).is_empty());
    }

    #[test]
    fn a_server_that_closes_is_measured_directly_and_gets_no_path_settings() {
        let mut f = Findings::default();
        f.record(2, Outcome::Kept);
        f.record(8, Outcome::ServerClosed { after_s: 5 });
        f.record(12, Outcome::ServerClosed { after_s: 5 });
        assert!(f.settled(2));
        let r = PathResult::new("198.19.0.1:22".into(), &f, 20, 9, false, 22);
        assert_eq!((r.how, r.forgotten_s), (Some(How::ServerClosed), Some(5)));
        assert_eq!(r.recommended_idle_s, None);
        assert!(r.human().contains("the server closes idle connections"));
    }

    #[test]
    fn a_reset_names_how_and_the_recommendation_keeps_a_margin() {
        let mut f = Findings::default();
        f.record(4, Outcome::Kept);
        f.record(6, Outcome::Rst);
        let r = PathResult::new("[2001:db8::1]:5432".into(), &f, 60, 7, false, 5432);
        assert_eq!(r.how, Some(How::Rst));
        assert_eq!(r.recommended_idle_s, Some(2));
        assert!(r.settings.unwrap().enforce.contains("--idle 2"));
        let json =
            serde_json::to_value(PathResult::new("h:1".into(), &f, 60, 7, false, 1)).unwrap();
        assert_eq!(json["kept_s"], 4);
        assert_eq!(json["forgotten_s"], 6);
        assert_eq!(json["how"], "rst");
    }

    /// A path forgetting after `limit` s, measured with the defaults (15 s to 2 h, 16
    /// connections a round, 4 rounds, 2 s resolution), as `path` runs its rounds.
    fn measure_with_defaults(limit: u32) -> (Findings, Vec<String>) {
        let nat = nat(limit);
        let mut f = Findings::default();
        let mut plans = vec![];
        let mut idles = first_round(15, 7200, 16);
        for _ in 0..4 {
            if idles.is_empty() {
                break;
            }
            plans.push(round_plan(&f, 15));
            for &idle in &idles {
                f.record(idle, nat(idle));
            }
            if f.settled(2) {
                break;
            }
            idles = next_round(&f, 16);
        }
        (f, plans)
    }

    #[test]
    fn a_limit_below_the_shortest_idle_tried_is_searched_down_to_and_never_guessed() {
        for limit in [1, 3, 7, 14, 40, 350, 600, 900] {
            let (f, plans) = measure_with_defaults(limit);
            let (k, fs) = (f.kept_s.unwrap(), f.forgotten_s.unwrap());
            assert!(k <= limit && limit < fs && fs - k <= 2, "{limit}: {f:?}");
            let r = PathResult::new("h:1".into(), &f, 7200, 60, false, 1);
            assert!(r.found());
            let rec = r.recommended_idle_s.unwrap();
            assert!(rec <= k && rec < limit.max(2), "{limit}: {rec}");
            if limit < 15 {
                assert!(
                    plans[1].contains("searching below it, down to 1 s"),
                    "{plans:?}"
                );
            }
        }
        // Kept 7 s: probing after 5 s goes out by 5.6 s even when the timer fires late.
        let (f, _) = measure_with_defaults(7);
        let r = PathResult::new("198.18.2.1:4022".into(), &f, 7200, 60, false, 4022);
        assert_eq!((r.kept_s, r.recommended_idle_s), (Some(7), Some(5)));
        assert!(
            r.human().contains("Recommended keepalive idle time: 5 s"),
            "{}",
            r.human()
        );
    }

    #[test]
    fn nothing_kept_down_to_one_second_says_so_and_recommends_nothing() {
        let mut f = Findings::default();
        for idle in first_round(15, 7200, 16) {
            f.record(idle, Outcome::Silent);
        }
        assert!(!f.settled(2));
        let next = next_round(&f, 16);
        assert_eq!(next.first(), Some(&1), "{next:?}");
        for idle in next {
            f.record(idle, Outcome::Silent);
        }
        assert!(f.settled(2));
        let r = PathResult::new("h:1".into(), &f, 7200, 60, false, 1);
        assert_eq!((r.kept_s, r.recommended_idle_s), (None, None));
        assert!(!r.found());
        assert!(
            r.human().contains("nothing down to 1 s was kept"),
            "{}",
            r.human()
        );
    }

    #[test]
    fn nothing_forgotten_up_to_max_is_no_limit() {
        let mut f = Findings::default();
        for idle in first_round(1, 10, 4) {
            f.record(idle, Outcome::Kept);
        }
        assert!(next_round(&f, 16).is_empty());
        let r = PathResult::new("h:1".into(), &f, 10, 12, false, 1);
        assert!(!r.found());
        assert!(r.human().contains("no limit found"));
    }
}

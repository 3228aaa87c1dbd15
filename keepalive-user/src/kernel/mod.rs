//! The kernel side seen from user space: facts about the running kernel that the programs
//! need (symbol addresses, HZ, clocks, the file systems tracing relies on; here), its types
//! ([`btf`]), the programs each mode attaches ([`hooks`]), loading them ([`loader`]) and the
//! records they send ([`records`]).

pub mod btf;
pub mod hooks;
pub mod loader;
pub mod records;

use std::{fs, path::Path, thread, time::Duration};

use anyhow::{Context as _, Result, bail};
use keepalive_common::programs::KEEPALIVE_TIMER_FN;

/// Address of a kernel text symbol from /proc/kallsyms.
pub fn symbol_address(name: &str) -> Result<u64> {
    let kallsyms = fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let addr = parse_kallsyms(&kallsyms, name)
        .with_context(|| format!("kernel symbol `{name}` not found in /proc/kallsyms"))?;
    if addr == 0 {
        bail!(
            "/proc/kallsyms hides addresses (kernel.kptr_restrict); run as root \
             or set `sysctl kernel.kptr_restrict=0`"
        );
    }
    Ok(addr)
}

fn parse_kallsyms(kallsyms: &str, name: &str) -> Option<u64> {
    kallsyms.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (addr, _kind, sym) = (f.next()?, f.next()?, f.next()?);
        (sym == name && f.next().is_none()).then(|| u64::from_str_radix(addr, 16).ok())?
    })
}

/// The rates Linux builds with.
const HZ_RATES: [u32; 4] = [100, 250, 300, 1000];

/// The kernel's tick rate. Keepalive settings live in jiffies inside the kernel; this converts
/// them to seconds. Measured from the jiffies in /proc/timer_list against CLOCK_MONOTONIC read
/// around each read, so it needs no kernel config file. A busy machine (a loaded VM) can stall a
/// read for milliseconds, so the measurement goes on until only one rate fits its error bounds.
pub fn hz() -> Result<u32> {
    let sample = || -> Result<JiffiesSample> {
        let before = monotonic_ns();
        let text = fs::read_to_string("/proc/timer_list").context("reading /proc/timer_list")?;
        let after = monotonic_ns();
        let jiffies = parse_timer_list(&text).context("unexpected /proc/timer_list format")?;
        Ok(JiffiesSample {
            before,
            jiffies,
            after,
        })
    };
    let first = sample()?;
    let mut last = first;
    for _ in 0..HZ_MAX_SAMPLES {
        thread::sleep(Duration::from_millis(20));
        last = sample()?;
        if let Some(hz) = hz_between(&first, &last) {
            return Ok(hz);
        }
    }
    Ok(nearest_hz(&first, &last))
}

/// Bounds how long `hz` measures (20 ms apart): a machine this stalled gets the nearest rate.
const HZ_MAX_SAMPLES: u32 = 100;

#[derive(Clone, Copy, Debug)]
struct JiffiesSample {
    /// CLOCK_MONOTONIC before and after the read, in nanoseconds.
    before: u64,
    jiffies: u64,
    after: u64,
}

fn monotonic_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_MONOTONIC) as u64
}

fn clock_ns(clock: nix::time::ClockId) -> i128 {
    let t = nix::time::clock_gettime(clock).expect("clock_gettime");
    t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128
}

/// The one rate between the slowest and fastest the two samples allow, if only one fits. The
/// jiffies were read somewhere inside each read, and may lag a tick or two on a CPU just out of
/// idle, hence the slack.
fn hz_between(a: &JiffiesSample, b: &JiffiesSample) -> Option<u32> {
    const SLACK: f64 = 2.0;
    let ticks = b.jiffies.wrapping_sub(a.jiffies) as f64;
    let longest = b.after.saturating_sub(a.before) as f64 / 1e9;
    let shortest = b.before.saturating_sub(a.after) as f64 / 1e9;
    if shortest <= 0.0 {
        return None;
    }
    let (slowest, fastest) = ((ticks - SLACK) / longest, (ticks + SLACK) / shortest);
    let mut fits = HZ_RATES
        .into_iter()
        .filter(|&hz| (slowest..=fastest).contains(&(hz as f64)));
    match (fits.next(), fits.next()) {
        (Some(hz), None) => Some(hz),
        _ => None,
    }
}

fn nearest_hz(a: &JiffiesSample, b: &JiffiesSample) -> u32 {
    let middle = |s: &JiffiesSample| (s.before / 2 + s.after / 2) as f64;
    let measured = b.jiffies.wrapping_sub(a.jiffies) as f64 / ((middle(b) - middle(a)) / 1e9);
    HZ_RATES
        .into_iter()
        .min_by(|a, b| {
            (*a as f64 - measured)
                .abs()
                .total_cmp(&(*b as f64 - measured).abs())
        })
        .unwrap()
}

fn parse_timer_list(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("jiffies: ")?.trim().parse().ok())
}

/// Nanoseconds to add to CLOCK_MONOTONIC (what `bpf_ktime_get_ns` reads) to get wall time.
pub fn monotonic_to_realtime_ns() -> i128 {
    let mono = clock_ns(nix::time::ClockId::CLOCK_MONOTONIC);
    let real = clock_ns(nix::time::ClockId::CLOCK_REALTIME);
    real - mono
}

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs where tracing tools expect it if it is not there yet.
pub fn ensure_tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting tracefs on {TRACEFS}"))?;
    log::info!("mounted tracefs on {TRACEFS}");
    Ok(())
}

/// The BPF file system where `keepalive enforce` pins its stream for `keepalive trace`;
/// mounted if absent. Returns keepalive's directory in it.
pub fn ensure_bpffs() -> Result<std::path::PathBuf> {
    const BPFFS: &str = "/sys/fs/bpf";
    let mounted = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(BPFFS) && l.contains(" bpf "));
    if !mounted {
        fs::create_dir_all(BPFFS).ok();
        nix::mount::mount(
            Some("bpffs"),
            BPFFS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting the BPF file system on {BPFFS}"))?;
    }
    let dir = std::path::PathBuf::from(keepalive_common::names::ENFORCE_PIN_DIR);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Whether this kernel has tracepoint `group:name`.
pub fn has_tracepoint(group: &str, name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events")
        .join(group)
        .join(name)
        .exists()
}

/// Why kprobes cannot be used here, or None when they can (as far as can be told before
/// attaching): the kernel needs CONFIG_KPROBES, and `functions` must exist.
pub fn kprobes_unavailable(functions: &[&str]) -> Option<String> {
    // The perf kprobe PMU (Linux 4.17+) is what aya attaches through.
    if !Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        return Some("this kernel has no kprobes (CONFIG_KPROBES is off)".into());
    }
    let kallsyms = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    functions
        .iter()
        .find(|f| parse_kallsyms(&kallsyms, f).is_none())
        .map(|f| format!("kernel function {f} not found in /proc/kallsyms"))
}

/// Kernel functions that call `tcp_send_active_reset()`, and the reset cause each stands for
/// (named like Linux 6.10's `enum sk_rst_reason`, which older kernels lack). The kprobe
/// reports the caller's address; this names it.
const RESET_CALLERS: &[(&str, &str)] = &[
    (KEEPALIVE_TIMER_FN, "TCP_KEEPALIVE_TIMEOUT"),
    // close() with unread data (a linger-0 close goes through tcp_disconnect).
    ("__tcp_close", "TCP_ABORT_ON_CLOSE"),
    ("tcp_close", "TCP_ABORT_ON_CLOSE"),
    ("tcp_disconnect", "TCP_STATE"),
    // ss -K and other SOCK_DESTROY users.
    ("tcp_abort", "TCP_ABORT"),
    // Orphaned sockets over the memory limit, from the retransmit and probe timers.
    ("tcp_out_of_resources", "TCP_ABORT_ON_MEMORY"),
    ("tcp_write_timeout", "TCP_ABORT_ON_MEMORY"),
    ("tcp_probe_timer", "TCP_ABORT_ON_MEMORY"),
    ("tcp_retransmit_timer", "TCP_ABORT_ON_MEMORY"),
];

/// Address ranges `[start, end)` of the functions in [`RESET_CALLERS`] with their cause, from
/// /proc/kallsyms (a function ends where the next symbol starts).
pub fn reset_callers() -> Vec<(u64, u64, String)> {
    let Ok(kallsyms) = fs::read_to_string("/proc/kallsyms") else {
        return vec![];
    };
    reset_callers_in(&kallsyms)
}

fn reset_callers_in(kallsyms: &str) -> Vec<(u64, u64, String)> {
    let mut starts = vec![];
    let mut wanted = vec![];
    for line in kallsyms.lines() {
        let mut f = line.split_whitespace();
        let (Some(addr), Some(_), Some(sym)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        starts.push(addr);
        if f.next().is_none()
            && let Some((_, cause)) = RESET_CALLERS.iter().find(|(name, _)| *name == sym)
        {
            wanted.push((addr, *cause));
        }
    }
    starts.sort_unstable();
    wanted
        .into_iter()
        .filter(|(addr, _)| *addr != 0)
        .map(|(addr, cause)| {
            let i = starts.partition_point(|&a| a <= addr);
            let end = starts.get(i).copied().unwrap_or(u64::MAX);
            (addr, end, cause.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_symbol_and_ignores_module_symbols() {
        let text = "ffffffff81000000 T _text\n\
                    ffffffff81a0b0c0 t tcp_keepalive_timer\n\
                    ffffffffc0001000 t tcp_keepalive_timer_x\t[mod]\n";
        assert_eq!(
            parse_kallsyms(text, "tcp_keepalive_timer"),
            Some(0xffffffff81a0b0c0)
        );
        assert_eq!(parse_kallsyms(text, "tcp_keepalive"), None);
    }

    #[test]
    fn reset_callers_end_where_the_next_symbol_starts() {
        let text = "ffffffff81a0b000 t tcp_keepalive_timer\n\
                    ffffffff81a0b400 t tcp_init_xmit_timers\n\
                    ffffffff81900000 T tcp_disconnect\n\
                    ffffffff81900800 T tcp_sock_set_cork\n\
                    0000000000000000 T tcp_close\n";
        let mut callers = reset_callers_in(text);
        callers.sort();
        assert_eq!(
            callers,
            vec![
                (0xffffffff81900000, 0xffffffff81900800, "TCP_STATE".into()),
                (
                    0xffffffff81a0b000,
                    0xffffffff81a0b400,
                    "TCP_KEEPALIVE_TIMEOUT".into()
                ),
            ]
        );
    }

    #[test]
    fn parses_timer_list() {
        let text = "Timer List Version: v0.10\nnow at 193383931731 nsecs\n\ncpu: 0\n jiffies: 99\njiffies: 4294940580\n";
        assert_eq!(parse_timer_list(text), Some(4294940580));
    }

    #[test]
    fn hz_is_the_one_rate_the_bounds_allow() {
        let at = |ms: u64, jiffies: u64, read_ms: u64| JiffiesSample {
            before: ms * 1_000_000,
            jiffies,
            after: (ms + read_ms) * 1_000_000,
        };
        // 250 Hz, 100 ms apart, fast reads.
        assert_eq!(hz_between(&at(0, 1000, 1), &at(100, 1025, 1)), Some(250));
        // A 12 ms stall inside a read: 60 ms looked like 300 Hz; the bounds admit both.
        assert_eq!(hz_between(&at(0, 1000, 1), &at(60, 1018, 12)), None);
        assert_eq!(hz_between(&at(0, 1000, 1), &at(20, 1020, 1)), Some(1000));
        assert_eq!(hz_between(&at(0, 1000, 1), &at(200, 1020, 1)), Some(100));
        assert_eq!(hz_between(&at(0, 1000, 1), &at(400, 1120, 1)), Some(300));
        assert_eq!(nearest_hz(&at(0, 1000, 0), &at(60, 1018, 0)), 300);
        assert_eq!(nearest_hz(&at(0, 1000, 0), &at(100, 1024, 0)), 250);
    }
}

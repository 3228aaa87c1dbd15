//! An event's JSON line written straight into a buffer. Event lines are most of what
//! `keepalive trace --format json` writes (one or two per keepalive probe), and serde's
//! generic path spent about a third of the tracer's time on them: escaping every key,
//! the map machinery of the flattened fields. This writes the same bytes (a test compares
//! them with serde's for every kind and every optional field); keys and names are written as
//! they are, as are strings with nothing to escape (command names, nearly always); other
//! strings and unusual floats and times still go through serde_json and time.

use std::{
    io::{self, Write},
    net::IpAddr,
};

use keepalive_events::{
    event::{Closer, Detail, Event, Keepalive, Life, TimeoutReason},
    workload::Workload,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Appends `e` as `{"type":"event",...}` (no newline).
pub fn event(out: &mut Vec<u8>, e: &Event) -> io::Result<()> {
    out.extend_from_slice(br#"{"type":"event","ts":"#);
    ts(out, e.ts)?;
    let s = &e.socket;
    out.extend_from_slice(br#","saddr":""#);
    ip(out, s.saddr);
    out.extend_from_slice(br#"","sport":"#);
    int(out, s.sport);
    out.extend_from_slice(br#","daddr":""#);
    ip(out, s.daddr);
    out.extend_from_slice(br#"","dport":"#);
    int(out, s.dport);
    out.extend_from_slice(br#","netns":"#);
    int(out, s.netns);
    out.extend_from_slice(br#","cookie":"#);
    int(out, s.cookie);
    out.extend_from_slice(br#","state":"#);
    name(out, e.state.name());
    if let Some(pid) = e.pid {
        out.extend_from_slice(br#","pid":"#);
        int(out, pid);
    }
    if let Some(comm) = &e.comm {
        string_field(out, "comm", comm)?;
    }
    if let Some(w) = &e.workload {
        workload(out, w)?;
    }
    detail(out, &e.detail)?;
    if let Some(k) = &e.keepalive {
        keepalive(out, k)?;
    }
    out.push(b'}');
    Ok(())
}

fn detail(out: &mut Vec<u8>, d: &Detail) -> io::Result<()> {
    out.extend_from_slice(br#","kind":"#);
    name(out, d.kind());
    match d {
        Detail::KeepaliveProbe { probes } | Detail::KeepaliveAnswered { probes } => {
            int_field(out, "probes", *probes)
        }
        Detail::KeepaliveTimeout { reason, probes } => {
            out.extend_from_slice(br#","reason":"#);
            name(
                out,
                match reason {
                    TimeoutReason::ProbesUnanswered => "probes_unanswered",
                    TimeoutReason::UserTimeout => "user_timeout",
                },
            );
            int_field(out, "probes", *probes)
        }
        Detail::ResetSent {
            reason,
            kernel_reason,
        } => {
            string_field(out, "reason", reason.name())?;
            if let Some(k) = kernel_reason {
                string_field(out, "kernel_reason", k.name())?;
            }
        }
        Detail::ResetReceived {} | Detail::SocketDestroyed {} => {}
        Detail::StateChange {
            from,
            to,
            retransmits,
            life: l,
        } => {
            out.extend_from_slice(br#","from":"#);
            name(out, from.name());
            out.extend_from_slice(br#","to":"#);
            name(out, to.name());
            if let Some(r) = retransmits {
                int_field(out, "retransmits", *r);
            }
            if let Some(l) = l {
                life(out, l)?;
            }
        }
        Detail::SocketError { error, errno } => {
            string_field(out, "error", &error.name())?;
            out.extend_from_slice(br#","errno":"#);
            int(out, *errno);
        }
        Detail::KeepaliveEnforced { applied, forced } => {
            out.extend_from_slice(br#","applied":"#);
            boolean(out, *applied);
            out.extend_from_slice(br#","forced":"#);
            boolean(out, *forced);
        }
        Detail::Retransmit { retransmits } => int_field(out, "retransmits", *retransmits),
        Detail::PacketDropped { reason, direction } => {
            string_field(out, "reason", reason)?;
            out.extend_from_slice(br#","direction":"#);
            name(out, direction.name());
        }
    }
    Ok(())
}

fn life(out: &mut Vec<u8>, l: &Life) -> io::Result<()> {
    out.extend_from_slice(br#","life":{"#);
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, key: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        name(out, key);
        out.push(b':');
    };
    if let Some(t) = l.established {
        key(out, "established");
        ts(out, t)?;
    }
    if let Some(t) = l.app_closed {
        key(out, "app_closed");
        ts(out, t)?;
    }
    if let Some(c) = l.closed_first {
        key(out, "closed_first");
        name(
            out,
            match c {
                Closer::Local => "local",
                Closer::Peer => "peer",
            },
        );
    }
    out.push(b'}');
    Ok(())
}

fn keepalive(out: &mut Vec<u8>, k: &Keepalive) -> io::Result<()> {
    out.extend_from_slice(br#","keepalive":{"enabled":"#);
    boolean(out, k.enabled);
    out.extend_from_slice(br#","idle_s":"#);
    number(out, k.idle_s)?;
    out.extend_from_slice(br#","interval_s":"#);
    number(out, k.interval_s)?;
    int_field(out, "count", k.count);
    int_field(out, "user_timeout_ms", k.user_timeout_ms);
    if !k.set_by_socket.is_empty() {
        out.extend_from_slice(br#","set_by_socket":["#);
        for (i, n) in k.set_by_socket.names().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            name(out, n);
        }
        out.push(b']');
    }
    int_field(out, "probes_out", k.probes_out);
    out.push(b'}');
    Ok(())
}

fn workload(out: &mut Vec<u8>, w: &Workload) -> io::Result<()> {
    string_field(out, "cgroup", &w.cgroup)?;
    for (key, value) in [
        ("unit", &w.unit),
        ("container", &w.container),
        ("pod", &w.pod),
        ("pod_uid", &w.pod_uid),
    ] {
        if let Some(v) = value {
            string_field(out, key, v)?;
        }
    }
    Ok(())
}

/// A name of ours (a key, a kind, a state): nothing in it to escape.
#[inline(always)]
fn name(out: &mut Vec<u8>, n: &str) {
    out.push(b'"');
    out.extend_from_slice(n.as_bytes());
    out.push(b'"');
}

/// `,"key":"value"`, the value escaped as JSON needs.
fn string_field(out: &mut Vec<u8>, key: &str, value: &str) -> io::Result<()> {
    out.push(b',');
    name(out, key);
    out.push(b':');
    // serde_json escapes only quotes, backslashes and control characters: a value without
    // any (a command name nearly always) is written as it is.
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        name(out, value);
        return Ok(());
    }
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)
}

#[inline(always)]
fn int_field(out: &mut Vec<u8>, key: &str, v: u32) {
    out.push(b',');
    name(out, key);
    out.push(b':');
    int(out, v);
}

/// An integer as serde_json writes it (with the same itoa).
#[inline(always)]
fn int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[inline(always)]
fn boolean(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// An address as its Display writes it; IPv4, the common case, built on the stack and
/// appended at once (a call to copy a few bytes costs more than the digits).
fn ip(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    text[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    text[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + octet % 10;
                n += 1;
            }
            out.extend_from_slice(&text[..n]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A float as serde_json writes it (`3.0`, not `3`; `null` when not finite). Keepalive
/// settings are whole seconds nearly always: those are written as digits and `.0`.
fn number(out: &mut Vec<u8>, v: f64) -> io::Result<()> {
    if v.fract() == 0.0 && (0.0..1e9).contains(&v) && v.is_sign_positive() {
        let mut text = itoa::Buffer::new();
        let digits = text.format(v as u32).as_bytes();
        let mut whole = [b'0'; 11];
        whole[..digits.len()].copy_from_slice(digits);
        whole[digits.len()] = b'.';
        out.extend_from_slice(&whole[..digits.len() + 2]);
        return Ok(());
    }
    serde_json::to_writer(&mut *out, &v).map_err(io::Error::other)
}

thread_local! {
    /// The second [`ts`] wrote last, and its text up to the fraction (quote included).
    static LAST_SECOND: std::cell::Cell<Option<((time::Date, u8, u8, u8), [u8; 20])>> =
        const { std::cell::Cell::new(None) };
}

/// `v` as `width` decimal digits, zero-padded, at `text[at..]`.
#[inline(always)]
fn put_digits(text: &mut [u8], at: usize, width: usize, mut v: u32) {
    for i in (at..at + width).rev() {
        text[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// A time as `time::serde::rfc3339` writes it, quoted: `"2026-12-01T10:19:04.5Z"`, the
/// fraction without trailing zeros and absent when zero. UTC times of years 0-9999 (every
/// event's) are built on the stack and appended at once; others go through `time`.
fn ts(out: &mut Vec<u8>, t: OffsetDateTime) -> io::Result<()> {
    if !t.offset().is_utc() || !(0..=9999).contains(&t.year()) {
        out.push(b'"');
        t.format_into(out, &Rfc3339).map_err(io::Error::other)?;
        out.push(b'"');
        return Ok(());
    }
    let (h, m, sec, mut ns) = t.to_hms_nano();
    // The date and time to the second, reused while events stay in that second (they come
    // in bursts): computing a calendar date is most of writing a time.
    let second = (t.date(), h, m, sec);
    let mut text = *b"\"0000-00-00T00:00:00.000000000Z\"";
    match LAST_SECOND.get() {
        Some((at, prefix)) if at == second => text[..20].copy_from_slice(&prefix),
        _ => {
            let (year, month, day) = t.to_calendar_date();
            put_digits(&mut text, 1, 4, year as u32);
            put_digits(&mut text, 6, 2, month as u32);
            put_digits(&mut text, 9, 2, day as u32);
            put_digits(&mut text, 12, 2, h as u32);
            put_digits(&mut text, 15, 2, m as u32);
            put_digits(&mut text, 18, 2, sec as u32);
            let mut prefix = [0; 20];
            prefix.copy_from_slice(&text[..20]);
            LAST_SECOND.set(Some((second, prefix)));
        }
    }
    let mut end = 20; // just past the seconds
    if ns != 0 {
        let mut width = 9;
        while ns % 10 == 0 {
            ns /= 10;
            width -= 1;
        }
        put_digits(&mut text, 21, width, ns);
        end = 21 + width;
    }
    text[end] = b'Z';
    text[end + 1] = b'"';
    out.extend_from_slice(&text[..end + 2]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keepalive_events::event::{Errno, ResetReason, SetBySocket, SocketId, TcpState};

    use super::*;
    use crate::output::Line;

    fn at(ns: i128) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(1_764_500_000_000_000_000 + ns).unwrap()
    }

    /// Every kind, with and without each optional field, odd strings and floats.
    fn events() -> Vec<Event> {
        let details = vec![
            Detail::KeepaliveProbe { probes: 1 },
            Detail::KeepaliveAnswered { probes: 9 },
            Detail::KeepaliveTimeout {
                reason: TimeoutReason::ProbesUnanswered,
                probes: 9,
            },
            Detail::KeepaliveTimeout {
                reason: TimeoutReason::UserTimeout,
                probes: 0,
            },
            Detail::ResetSent {
                reason: ResetReason::from_name("TCP_KEEPALIVE_TIMEOUT"),
                kernel_reason: None,
            },
            Detail::ResetSent {
                reason: ResetReason::AbortOnLinger,
                kernel_reason: Some(ResetReason::from_name("NOT_SPECIFIED \"odd\"")),
            },
            Detail::ResetReceived {},
            Detail::StateChange {
                from: TcpState::Established,
                to: TcpState::Close,
                retransmits: None,
                life: None,
            },
            Detail::StateChange {
                from: TcpState::FinWait1,
                to: TcpState::Close,
                retransmits: Some(3),
                life: Some(Life {
                    established: Some(at(0)),
                    app_closed: Some(at(1_500_000_000)),
                    closed_first: Some(Closer::Local),
                }),
            },
            Detail::StateChange {
                from: TcpState::LastAck,
                to: TcpState::Close,
                retransmits: None,
                life: Some(Life {
                    established: None,
                    app_closed: None,
                    closed_first: Some(Closer::Peer),
                }),
            },
            Detail::StateChange {
                from: TcpState::SynSent,
                to: TcpState::Established,
                retransmits: None,
                life: Some(Life {
                    established: None,
                    app_closed: None,
                    closed_first: None,
                }),
            },
            Detail::SocketError {
                error: Errno::ETIMEDOUT,
                errno: 110,
            },
            Detail::SocketDestroyed {},
            Detail::KeepaliveEnforced {
                applied: true,
                forced: false,
            },
            Detail::Retransmit { retransmits: 15 },
        ];
        let keepalives = [
            None,
            Some(Keepalive {
                enabled: true,
                idle_s: 7200.0,
                interval_s: 75.0,
                count: 9,
                user_timeout_ms: 0,
                set_by_socket: SetBySocket::default(),
                probes_out: 0,
            }),
            Some(Keepalive {
                enabled: false,
                idle_s: 0.1,
                interval_s: 1e-3,
                count: 1,
                user_timeout_ms: 30_000,
                set_by_socket: SetBySocket(0b111),
                probes_out: 255,
            }),
            Some(Keepalive {
                set_by_socket: SetBySocket(0b010),
                idle_s: f64::NAN,
                ..Keepalive::default()
            }),
        ];
        let mut pod = Workload::from_cgroup(
            "/kubepods/podd3e6b7a0-1c2d-4e5f-8a9b-0c1d2e3f4a5b/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        );
        pod.pod = Some("shop/web-0".into());
        let workloads = [
            None,
            Some(Arc::new(Workload::from_cgroup("/system.slice/ssh.service"))),
            Some(Arc::new(pod)),
            Some(Arc::new(Workload::from_cgroup("/odd \"cgroup\"\\ é\n"))),
        ];
        let owners = [
            (None, None),
            (Some(4242), Some(Arc::from("ssh"))),
            (Some(1), Some(Arc::from("we\"ird\\\u{1}"))),
        ];
        let mut out = vec![];
        for (i, detail) in details.into_iter().enumerate() {
            for (j, keepalive) in keepalives.iter().enumerate() {
                let (pid, comm) = owners[(i + j) % owners.len()].clone();
                out.push(Event {
                    ts: at((i * 1_000_000_007 + j) as i128),
                    socket: SocketId {
                        saddr: if i % 2 == 0 {
                            "198.18.0.1".parse().unwrap()
                        } else {
                            "2001:db8::1".parse().unwrap()
                        },
                        sport: 40_000 + i as u16,
                        daddr: if i % 2 == 0 {
                            "198.18.0.2".parse().unwrap()
                        } else {
                            "2001:db8::2".parse().unwrap()
                        },
                        dport: 22,
                        netns: 4_026_531_840,
                        cookie: u64::MAX - i as u64,
                    },
                    state: TcpState::from_kernel((i + j) as u32 % 15),
                    pid,
                    comm,
                    workload: workloads[(i + 2 * j) % workloads.len()].clone(),
                    detail: detail.clone(),
                    keepalive: keepalive.clone(),
                });
            }
        }
        out
    }

    #[test]
    fn writes_what_serde_writes() {
        for e in events() {
            let mut fast = vec![];
            event(&mut fast, &e).unwrap();
            let serde = serde_json::to_vec(&Line::Event(&e)).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&serde),
                "{e:?}"
            );
        }
    }

    #[test]
    fn reads_back_as_the_same_event() {
        let mut text = vec![];
        let events = events();
        for e in events
            .iter()
            .filter(|e| e.keepalive.as_ref().is_none_or(|k| !k.idle_s.is_nan()))
        {
            event(&mut text, e).unwrap();
            text.push(b'\n');
        }
        let back = keepalive_events::replay::read_events(&text[..], "test").unwrap();
        let expected: Vec<&Event> = events
            .iter()
            .filter(|e| e.keepalive.as_ref().is_none_or(|k| !k.idle_s.is_nan()))
            .collect();
        assert_eq!(back.iter().collect::<Vec<_>>(), expected);
    }

    /// The hand-written numbers and times, over the edges of their fast paths.
    #[test]
    fn numbers_and_times_as_serde_writes_them() {
        for v in [0u64, 7, 9, 10, 99, 100, 65_535, 4_026_531_840, u64::MAX] {
            let mut fast = vec![];
            int(&mut fast, v);
            assert_eq!(fast, serde_json::to_vec(&v).unwrap());
        }
        let floats = [
            0.0,
            -0.0,
            1.0,
            75.0,
            7200.0,
            32_767.0,
            999_999_999.0,
            1e9,
            1e15,
            1e16,
            1e300,
            0.5,
            0.004,
            -1.0,
            -75.0,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ];
        for v in floats {
            let mut fast = vec![];
            number(&mut fast, v).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
        let nanos = [
            0,
            1,
            10,
            100_000,
            500_000_000,
            123_456_789,
            999_999_999,
            120,
        ];
        let seconds = [
            0i64,
            59,
            1_764_500_000,
            951_782_400,     // 2000-02-29
            253_402_300_799, // 9999-12-31T23:59:59
            -1,              // 1969
            -62_167_219_200, // 0000-01-01
            -62_167_219_201, // year -1: time's own error
            253_402_300_800, // year 10000: likewise
        ];
        for s in seconds {
            for n in nanos {
                let Ok(t) = OffsetDateTime::from_unix_timestamp(s) else {
                    continue;
                };
                let t = t.replace_nanosecond(n).unwrap();
                let shifted = t.checked_to_offset(time::macros::offset!(+05:30));
                for t in [Some(t), shifted].into_iter().flatten() {
                    let mut fast = vec![];
                    let fast = ts(&mut fast, t).map(|()| String::from_utf8(fast).unwrap());
                    let slow = t.format(&Rfc3339).map(|f| format!("\"{f}\""));
                    assert_eq!(fast.ok(), slow.ok(), "{t}");
                }
            }
        }
    }
}

//! The flight recorder: `keepalive trace --history DIR` keeps every verdict, and the timeline
//! of every connection that did not close normally, so `keepalive why --since` and
//! `keepalive history` can answer the morning after.
//!
//! The store is a directory of JSON-lines segments (`segment-00000001.jsonl`, ...). The writer
//! appends one whole line per write and starts a new segment at an eighth of the size cap,
//! deleting the oldest segments past the cap. A tracer killed mid-write leaves at most one torn
//! line at the end of its segment: readers skip and count it, and the next writer starts on a
//! fresh line. A lock file (flock) keeps a second writer out; readers take no lock, so they
//! never hold the writer up. Markers say when tracing started, was still running (once a
//! minute) and stopped, so a question about a time nobody traced is answered as a gap.
//! The store says who talked to whom: the directory is 0700 and its files 0600.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{
    diagnose::ConnectionTimeline,
    event::Event,
    verdict::{Verdict, VerdictKind},
};

/// Where `--history` keeps its store unless told otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/keepalive";
/// The default size cap of a store.
pub const DEFAULT_SIZE: u64 = 64 << 20;
/// How often a running tracer says it is still tracing: the precision of a gap after a
/// tracer that was killed.
pub const ALIVE_EVERY: Duration = Duration::minutes(1);

const LOCK: &str = "lock";
const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".jsonl";
/// Segments a full store is made of: the cap is kept to within one segment.
const SEGMENTS: u64 = 8;

/// One line of the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// A tracer started writing (its process id).
    Start {
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
        pid: u32,
    },
    /// The tracer is still tracing.
    Alive {
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
    },
    /// The tracer stopped.
    Stop {
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
    },
    /// A connection's end of interest: a death, or an orderly close worth keeping (see
    /// `keepalive trace --min-life`); `timeline` is empty for one that closed normally.
    /// Stores written before it had this name call it "death".
    #[serde(alias = "death")]
    End {
        verdict: Box<Verdict>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        timeline: Vec<Event>,
    },
}

/// [`Entry::End`] as written, borrowing what it shows: a verdict is serialized, not
/// copied first.
#[derive(Serialize)]
#[serde(tag = "type", rename = "end")]
struct EndLine<'a> {
    verdict: &'a Verdict,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    timeline: Vec<&'a Event>,
}

impl Entry {
    pub fn ts(&self) -> OffsetDateTime {
        match self {
            Entry::Start { ts, .. } | Entry::Alive { ts } | Entry::Stop { ts } => *ts,
            Entry::End { verdict, .. } => verdict.ts,
        }
    }
}

/// The writing end, held by `keepalive trace --history`.
pub struct HistoryWriter {
    dir: PathBuf,
    cap: u64,
    /// Kept open: the flock lives as long as this file.
    _lock: File,
    segment: File,
    segment_no: u64,
    segment_len: u64,
    last_alive: OffsetDateTime,
    line: Vec<u8>,
}

impl HistoryWriter {
    /// Opens (or creates) the store in `dir` for writing, capped at `cap` bytes; fails when
    /// another tracer writes to it.
    pub fn open(dir: &Path, cap: u64, now: OffsetDateTime) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the history directory {}", dir.display()))?;
        // An existing directory keeps its mode otherwise.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} readable by root only", dir.display()))?;
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK))
            .with_context(|| format!("opening {}", dir.join(LOCK).display()))?;
        // A reader checking whether a tracer is live holds a shared lock for a moment: try
        // again briefly before calling the store taken.
        let locked = (0..20).any(|attempt| {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            try_lock(&lock, libc::LOCK_EX)
        });
        if !locked {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            bail!(
                "{} is in use: another keepalive trace (pid {}) writes its history there; \
                 stop it, or give this one another --history directory",
                dir.display(),
                pid.trim()
            );
        }
        lock.set_len(0)?;
        write!(lock, "{}", std::process::id())?;
        let segment_no = segments(dir)?.last().map(|(n, _)| *n).unwrap_or(1);
        let mut w = HistoryWriter {
            dir: dir.to_path_buf(),
            cap: cap.max(SEGMENTS * 4096),
            _lock: lock,
            segment: open_segment(dir, segment_no)?,
            segment_no,
            segment_len: 0,
            last_alive: now,
            line: Vec::with_capacity(4096),
        };
        w.segment_len = w.segment.metadata()?.len();
        // A tracer killed mid-write left a torn line: end it, so ours starts on its own.
        if w.segment_len > 0 && !ends_with_newline(&mut w.segment)? {
            w.segment.write_all(b"\n")?;
            w.segment_len += 1;
        }
        w.write(&Entry::Start {
            ts: now,
            pid: std::process::id(),
        })?;
        Ok(w)
    }

    /// Records a connection's end: its verdict, and its timeline unless it closed normally.
    pub fn end(&mut self, v: &Verdict, timeline: &ConnectionTimeline) -> Result<()> {
        let timeline = if v.verdict == VerdictKind::Closed {
            vec![]
        } else {
            timeline.events().collect()
        };
        self.write(&EndLine {
            verdict: v,
            timeline,
        })
    }

    /// Says it is still tracing, once per [`ALIVE_EVERY`] (call it often).
    pub fn tick(&mut self, now: OffsetDateTime) -> Result<()> {
        if now - self.last_alive >= ALIVE_EVERY {
            self.last_alive = now;
            self.write(&Entry::Alive { ts: now })?;
            // Once a minute, what was written reaches the disk even if the host goes down.
            self.segment.sync_data()?;
        }
        Ok(())
    }

    /// Tracing stops.
    pub fn stop(mut self, now: OffsetDateTime) -> Result<()> {
        self.write(&Entry::Stop { ts: now })?;
        self.segment.sync_data()?;
        Ok(())
    }

    fn write(&mut self, e: &impl Serialize) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, e)?;
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if self.segment_len > 0 && self.segment_len + len > self.cap / SEGMENTS {
            self.rotate()?;
        }
        // One write per line: a crash leaves a prefix of the last line, never a mix.
        self.segment
            .write_all(&self.line)
            .with_context(|| format!("writing history to {}", self.dir.display()))?;
        self.segment_len += len;
        Ok(())
    }

    /// A new segment; the oldest go while the store is over its cap.
    fn rotate(&mut self) -> Result<()> {
        self.segment_no += 1;
        self.segment = open_segment(&self.dir, self.segment_no)?;
        self.segment_len = 0;
        let all = segments(&self.dir)?;
        let mut total: u64 = all.iter().map(|(_, len)| len).sum();
        for (n, len) in all {
            if total <= self.cap - self.cap / SEGMENTS || n == self.segment_no {
                break;
            }
            fs::remove_file(segment_path(&self.dir, n))?;
            total -= len;
        }
        Ok(())
    }
}

fn try_lock(f: &File, how: i32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows; no memory is involved.
    unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

fn ends_with_newline(f: &mut File) -> Result<bool> {
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1))?;
    f.read_exact(&mut last)?;
    f.seek(SeekFrom::End(0))?;
    Ok(last[0] == b'\n')
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{n:08}{SEGMENT_SUFFIX}"))
}

fn open_segment(dir: &Path, n: u64) -> Result<File> {
    let path = segment_path(dir, n);
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The store's segments, oldest first, with their sizes.
fn segments(dir: &Path) -> Result<Vec<(u64, u64)>> {
    let mut out = vec![];
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix(SEGMENT_PREFIX))
            .and_then(|s| s.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, e.metadata()?.len()));
    }
    out.sort();
    Ok(out)
}

/// A store as read back.
#[derive(Debug, Default)]
pub struct History {
    /// Every entry, oldest first.
    pub entries: Vec<Entry>,
    /// Lines that did not read back (a write torn by a crash): skipped.
    pub torn: u64,
    /// A tracer is writing to the store now.
    pub live: bool,
}

/// Reads the store in `dir`.
pub fn read(dir: &Path) -> Result<History> {
    if !dir.join(LOCK).exists() {
        bail!(
            "no history in {}: keepalive trace --history {} keeps one (the systemd unit and \
             the DaemonSet turn it on)",
            dir.display(),
            dir.display()
        );
    }
    // A shared lock we can take means no writer holds the exclusive one.
    let live = match File::open(dir.join(LOCK)) {
        Ok(f) => !try_lock(&f, libc::LOCK_SH),
        Err(_) => false,
    };
    let mut h = History {
        live,
        ..Default::default()
    };
    let all = segments(dir)?;
    for (i, (n, _)) in all.iter().enumerate() {
        // A segment the writer deleted since the listing is simply gone.
        let Ok(data) = fs::read(segment_path(dir, *n)) else {
            continue;
        };
        let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
        // What follows the last newline: nothing, or a line being written right now (the
        // newest segment of a live store), or one a crash tore.
        let unfinished = lines.pop().filter(|l| !l.is_empty());
        if unfinished.is_some() && !(live && i + 1 == all.len()) {
            h.torn += 1;
        }
        for line in lines.into_iter().filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => h.entries.push(e),
                Err(_) => h.torn += 1,
            }
        }
    }
    Ok(h)
}

impl History {
    /// Connection ends in `[since, until]`, newest first.
    pub fn ends(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> impl Iterator<Item = (&Verdict, &[Event])> {
        self.entries
            .iter()
            .rev()
            .filter_map(|e| match e {
                Entry::End { verdict, timeline } => Some((&**verdict, &timeline[..])),
                _ => None,
            })
            .filter(move |(v, _)| since <= v.ts && v.ts <= until)
    }

    /// The stretches of `[since, until]` when no tracer was writing, oldest first. A tracer
    /// that stopped cleanly covers up to its stop; one that was killed up to its last line
    /// (at most [`ALIVE_EVERY`] before it died); the one writing now, up to `now`.
    pub fn gaps(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Vec<(OffsetDateTime, OffsetDateTime)> {
        let mut covered: Vec<(OffsetDateTime, OffsetDateTime)> = vec![];
        let mut open: Option<(OffsetDateTime, OffsetDateTime)> = None;
        for e in &self.entries {
            match e {
                Entry::Start { ts, .. } => {
                    covered.extend(open.take());
                    open = Some((*ts, *ts));
                }
                Entry::Stop { ts } => {
                    if let Some((from, _)) = open.take() {
                        covered.push((from, *ts));
                    }
                }
                other => {
                    if let Some((_, to)) = &mut open {
                        *to = (*to).max(other.ts());
                    }
                }
            }
        }
        if let Some((from, to)) = open {
            covered.push((from, if self.live { now } else { to }));
        }
        covered.sort_by_key(|c| c.0);
        let mut gaps = vec![];
        let mut at = since;
        for (from, to) in covered {
            if from > at && at < until {
                gaps.push((at, from.min(until)));
            }
            at = at.max(to);
        }
        if at < until {
            gaps.push((at, until));
        }
        // Under a second is the time between a start and its first line, not a gap.
        gaps.retain(|(a, b)| *b - *a >= Duration::SECOND);
        gaps
    }
}

/// A point in time as `--since`/`--until` take it: a time ago (`90s`, `30m`, `12h`, `2d`,
/// or combined, `1h30m`) or an RFC 3339 timestamp (`2026-11-30T22:00:00Z`).
pub fn parse_time(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let ago = parse_duration(s).map_err(|_| {
        format!(
            "`{s}`: give a time ago such as 90s, 30m, 12h, 2d or 1h30m, or an RFC 3339 time \
             such as 2026-11-30T22:00:00Z"
        )
    })?;
    Ok(now - ago)
}

/// A duration such as 90s, 30m, 12h, 2d or 1h30m.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}`: give a duration such as 90s, 30m, 12h, 2d or 1h30m");
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total += match c {
            's' => Duration::seconds(n),
            'm' => Duration::minutes(n),
            'h' => Duration::hours(n),
            'd' => Duration::days(n),
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SocketId;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap()
    }

    fn verdict(kind: VerdictKind, ts: OffsetDateTime) -> Verdict {
        Verdict {
            verdict: kind,
            ts,
            socket: SocketId {
                saddr: "198.18.0.1".parse().unwrap(),
                sport: 40000,
                daddr: "198.18.0.2".parse().unwrap(),
                dport: 22,
                netns: 1,
                cookie: 7,
            },
            pid: Some(100),
            comm: Some("ssh".into()),
            workload: None,
            probes_unanswered: 3,
            probes_answered: 0,
            retransmits: 0,
            lifetime_s: Some(5.0),
            idle_s: Some(2.0),
            error: Some(crate::event::Errno::ETIMEDOUT),
            reason: None,
            summary: "Connection timed out".into(),
            advice: vec!["lower TCP_KEEPIDLE".into()],
            recommended_idle_s: None,
            dropped_here: Default::default(),
            dropped_leaving: Default::default(),
            keepalive: None,
        }
    }

    fn death(w: &mut HistoryWriter, kind: VerdictKind, ts: OffsetDateTime) {
        w.write(&Entry::End {
            verdict: Box::new(verdict(kind, ts)),
            timeline: vec![],
        })
        .unwrap();
    }

    fn store() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    /// A small temporary directory, removed at the end (no crate for four lines).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "keepalive-history-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&p);
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn reads_back_what_was_written_newest_first_root_only() {
        let dir = store();
        let mut w = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(0)).unwrap();
        death(&mut w, VerdictKind::KeepaliveTimeout, at(10));
        death(&mut w, VerdictKind::PeerReset, at(20));
        w.stop(at(30)).unwrap();
        let h = read(&dir.0).unwrap();
        assert_eq!((h.torn, h.live), (0, false));
        let kinds: Vec<_> = h.ends(at(0), at(30)).map(|(v, _)| v.verdict).collect();
        assert_eq!(
            kinds,
            [VerdictKind::PeerReset, VerdictKind::KeepaliveTimeout]
        );
        assert_eq!(h.ends(at(15), at(30)).count(), 1);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.0), 0o700);
        for (n, _) in segments(&dir.0).unwrap() {
            assert_eq!(mode(&segment_path(&dir.0, n)), 0o600);
        }
    }

    #[test]
    fn a_death_reads_back_with_its_verdict_and_timeline() {
        use crate::{
            diagnose::Engine,
            event::{Detail, Event, TcpState, TimeoutReason},
        };
        let socket = verdict(VerdictKind::Closed, at(0)).socket;
        let event = |s: i64, state: TcpState, detail: Detail| Event {
            ts: at(s),
            socket: socket.clone(),
            state,
            pid: Some(100),
            comm: Some("ssh".into()),
            workload: Some(std::sync::Arc::new(crate::workload::Workload::from_cgroup(
                "/system.slice/ssh.service",
            ))),
            detail,
            keepalive: None,
        };
        let change = |from, to| Detail::StateChange {
            from,
            to,
            retransmits: None,
            life: None,
        };
        let events = [
            event(
                1,
                TcpState::SynSent,
                change(TcpState::SynSent, TcpState::Established),
            ),
            event(
                3,
                TcpState::Established,
                Detail::KeepaliveProbe { probes: 1 },
            ),
            event(
                4,
                TcpState::Established,
                Detail::KeepaliveTimeout {
                    reason: TimeoutReason::ProbesUnanswered,
                    probes: 1,
                },
            ),
            event(
                4,
                TcpState::Established,
                change(TcpState::Established, TcpState::Close),
            ),
        ];
        let mut engine = Engine::default();
        let mut ends: Vec<_> = events.iter().flat_map(|e| engine.observe(e)).collect();
        ends.extend(engine.finish());
        let [(v, timeline)] = &ends[..] else {
            panic!("one connection, one end: {ends:?}")
        };
        assert_eq!(v.verdict, VerdictKind::KeepaliveTimeout);
        let dir = store();
        let mut w = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(0)).unwrap();
        w.end(v, timeline).unwrap();
        drop(w);
        let h = read(&dir.0).unwrap();
        let back: Vec<_> = h.ends(at(0), at(9)).collect();
        assert_eq!(back, [(v, &events[..])]);
    }

    #[test]
    fn ends_are_written_as_end_lines_and_stores_of_death_lines_still_read() {
        let dir = store();
        let mut w = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(0)).unwrap();
        death(&mut w, VerdictKind::Closed, at(10));
        drop(w);
        let (n, _) = *segments(&dir.0).unwrap().last().unwrap();
        let text = fs::read_to_string(segment_path(&dir.0, n)).unwrap();
        let written = text.lines().find(|l| l.contains("verdict")).unwrap();
        assert!(written.starts_with(r#"{"type":"end","#), "{written}");
        // An earlier build's line, the same but for its name.
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(&dir.0, n))
            .unwrap();
        writeln!(
            f,
            "{}",
            written.replace(r#""type":"end""#, r#""type":"death""#)
        )
        .unwrap();
        drop(f);
        let h = read(&dir.0).unwrap();
        assert_eq!((h.torn, h.ends(at(0), at(99)).count()), (0, 2));
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_counted_and_the_next_writer_goes_on() {
        let dir = store();
        let mut w = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(0)).unwrap();
        death(&mut w, VerdictKind::KeepaliveTimeout, at(10));
        drop(w);
        // What SIGKILL in the middle of a write leaves: a prefix of a line.
        let (n, _) = *segments(&dir.0).unwrap().last().unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(&dir.0, n))
            .unwrap();
        f.write_all(br#"{"type":"death","verdict":{"verdict":"peer_re"#)
            .unwrap();
        drop(f);
        let h = read(&dir.0).unwrap();
        assert_eq!((h.torn, h.ends(at(0), at(99)).count()), (1, 1));
        let mut w = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(50)).unwrap();
        death(&mut w, VerdictKind::PeerReset, at(60));
        drop(w);
        let h = read(&dir.0).unwrap();
        assert_eq!((h.torn, h.ends(at(0), at(99)).count()), (1, 2));
    }

    #[test]
    fn the_size_cap_holds_under_a_storm_of_deaths() {
        let dir = store();
        let cap = 256 << 10;
        let mut w = HistoryWriter::open(&dir.0, cap, at(0)).unwrap();
        for i in 0..5_000 {
            death(&mut w, VerdictKind::KeepaliveTimeout, at(i));
        }
        let total: u64 = segments(&dir.0).unwrap().iter().map(|(_, l)| l).sum();
        assert!(total <= cap, "{total} bytes in a store capped at {cap}");
        let h = read(&dir.0).unwrap();
        // The newest survive, the oldest went.
        let newest = h.ends(at(0), at(99_999)).next().unwrap().0.ts;
        assert_eq!(newest, at(4_999));
        assert!(h.ends(at(0), at(99_999)).count() > 100);
        assert!(h.ends(at(0), at(99_999)).count() < 5_000);
    }

    #[test]
    fn a_second_writer_is_refused_and_readers_see_the_first_live() {
        let dir = store();
        let _w = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(0)).unwrap();
        let err = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("in use"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert!(read(&dir.0).unwrap().live);
    }

    #[test]
    fn gaps_are_the_times_nobody_traced() {
        let dir = store();
        // A clean run from 0 to 100, a run killed after its last line at 400, a live one.
        let mut w = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(0)).unwrap();
        w.tick(at(60)).unwrap();
        w.stop(at(100)).unwrap();
        let mut w = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(300)).unwrap();
        w.tick(at(360)).unwrap();
        death(&mut w, VerdictKind::PeerReset, at(400));
        drop(w);
        let h = read(&dir.0).unwrap();
        assert_eq!(
            h.gaps(at(-50), at(1000), at(1000)),
            [(at(-50), at(0)), (at(100), at(300)), (at(400), at(1000))]
        );
        assert_eq!(h.gaps(at(10), at(90), at(1000)), []);
        let _live = HistoryWriter::open(&dir.0, DEFAULT_SIZE, at(500)).unwrap();
        let h = read(&dir.0).unwrap();
        assert_eq!(
            h.gaps(at(0), at(1000), at(1000)),
            [(at(100), at(300)), (at(400), at(500))]
        );
    }

    #[test]
    fn times_ago_and_timestamps() {
        let now = at(100_000);
        assert_eq!(parse_time("12h", now), Ok(now - Duration::hours(12)));
        assert_eq!(parse_time("1h30m", now), Ok(now - Duration::minutes(90)));
        assert_eq!(parse_time("2026-11-30T22:00:00Z", now).unwrap().hour(), 22);
        for bad in ["", "12", "h", "12x", "yesterday"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}

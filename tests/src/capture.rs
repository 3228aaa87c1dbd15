//! The wire as the tests' reference: tcpdump in a scenario's own namespace, read back into
//! each connection's keepalive probes, the answers to them and its resets. The tracer never
//! sees this: what it reports is compared with what crossed the wire.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    command::{pipe_lines, wait_bounded},
    netns::Netns,
};

/// tcpdump capturing every TCP segment on every interface of a namespace into a file.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts capturing in `ns` and returns once tcpdump listens (at most 10 s).
    pub fn start(ns: &Netns) -> Capture {
        let file = std::env::temp_dir().join(format!("keepalive-{}.pcap", ns.name));
        let mut child = Command::new("ip")
            // -Z root: no switch to a `tcpdump` user, which a test guest does not have.
            .args(["netns", "exec", &ns.name, "tcpdump", "-Z", "root"])
            // --immediate-mode: each packet handed over as it comes, not in blocks that a
            // stop would leave behind unwritten (a keepalive timeout's last RST was).
            .args(["-i", "any", "-n", "-U", "--immediate-mode"])
            // Headers only (lengths come from the IP header): in immediate mode each ring
            // slot holds a whole snapshot, and at the default 256 KiB the 2 MiB ring had 8
            // slots, which a burst of connections overran ("dropped by kernel").
            .args(["-s", "160", "-B", "8192"])
            .arg("-w")
            .arg(&file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (cargo xtask setup installs it)");
        let stderr = pipe_lines(child.stderr.take().unwrap());
        let c = Capture {
            child: Some(child),
            file,
            stderr,
        };
        let mut said = vec![];
        loop {
            match c.stderr.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains("listening on") => return c,
                Ok(line) => said.push(line),
                Err(e) => panic!("tcpdump did not start listening ({e}): {said:?}"),
            }
        }
    }

    /// Stops the capture and reads it. Asserts tcpdump dropped nothing: a witness with gaps
    /// would prove nothing.
    pub fn stop(mut self) -> Wire {
        // tcpdump writes each packet as it comes (-U): a moment for the last ones.
        thread::sleep(Duration::from_millis(200));
        let child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT tcpdump");
        let (status, killed) = wait_bounded(child, Duration::from_secs(10));
        assert!(!killed && status.success(), "tcpdump: {status}");
        let said: Vec<String> = self.stderr.try_iter().collect();
        let count = |what: &str| -> u64 {
            said.iter()
                .find(|l| l.ends_with(what))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("tcpdump said no \"{what}\": {said:?}"))
        };
        // ("received by filter" may exceed "captured": on loopback, libpcap drops the
        // outgoing copy of each packet, which the kernel counted too.)
        assert_eq!(
            count("dropped by kernel"),
            0,
            "the capture is incomplete: {said:?}"
        );
        let bytes = std::fs::read(&self.file).expect("reading the capture");
        Wire {
            segments: read_pcap(&bytes),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// One TCP segment as it crossed the wire.
#[derive(Clone, Debug)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Payload bytes.
    pub len: u32,
    /// When it was captured, seconds since the epoch.
    pub at: f64,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// What a capture saw, in order.
pub struct Wire {
    pub segments: Vec<Segment>,
}

/// One connection's keepalive and resets on the wire, seen from its `local` end.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeepaliveOnWire {
    /// Segments `local` sent with no data at the sequence before the one its peer
    /// acknowledged last (snd_una - 1): keepalive probes.
    pub probes: usize,
    /// Times the peer acknowledged after probes were out: each brings the count of
    /// outstanding probes back to zero, as one `keepalive_answered` event says, or, when
    /// this host dropped it, one arriving `packet_dropped` while probes were out.
    pub answers: usize,
    /// RSTs `local` sent, and RSTs its peer sent.
    pub resets_sent: usize,
    pub resets_received: usize,
}

impl KeepaliveOnWire {
    /// The same counts from a tracer's events of one connection, to compare with the wire.
    pub fn in_trace(events: &[serde_json::Value]) -> KeepaliveOnWire {
        let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
        // An answer dropped here crossed the wire all the same.
        let mut out = false;
        let mut dropped_answers = 0;
        for e in events {
            match e["kind"].as_str() {
                Some("keepalive_probe") => out = true,
                Some("keepalive_answered") => out = false,
                Some("packet_dropped") if e["direction"] == "arriving" && out => {
                    dropped_answers += 1;
                    out = false;
                }
                _ => {}
            }
        }
        KeepaliveOnWire {
            probes: count("keepalive_probe"),
            answers: count("keepalive_answered") + dropped_answers,
            resets_sent: count("reset_sent"),
            resets_received: count("reset_received"),
        }
    }
}

impl Wire {
    /// The keepalive probes, answers and resets of the connection whose end here is `local`.
    /// Panics when `local` served connections to several peers (the kernel may reuse a
    /// local port towards another server): then name the peer, [`Wire::keepalive_between`].
    pub fn keepalive(&self, local: SocketAddr) -> KeepaliveOnWire {
        let peers: std::collections::BTreeSet<SocketAddr> = self
            .segments
            .iter()
            .filter_map(|s| {
                (s.src == local)
                    .then_some(s.dst)
                    .or((s.dst == local).then_some(s.src))
            })
            .collect();
        assert!(
            peers.len() <= 1,
            "{local} served connections to {peers:?}: name the peer"
        );
        match peers.first() {
            Some(peer) => self.keepalive_between(local, *peer),
            None => KeepaliveOnWire::default(),
        }
    }

    /// The keepalive probes, answers and resets of the connection between `local` (its end
    /// here) and `peer`.
    pub fn keepalive_between(&self, local: SocketAddr, peer: SocketAddr) -> KeepaliveOnWire {
        let mut seen = KeepaliveOnWire::default();
        // What the peer acknowledged last (local's snd_una), and probes out since.
        let mut acked: Option<u32> = None;
        let mut out = 0;
        for s in &self.segments {
            if (s.src, s.dst) != (local, peer) && (s.src, s.dst) != (peer, local) {
                continue;
            }
            if s.src == local {
                if s.flags & RST != 0 {
                    seen.resets_sent += 1;
                } else if is_probe(s, acked) {
                    seen.probes += 1;
                    out += 1;
                }
            } else if s.dst == local {
                if s.flags & RST != 0 {
                    seen.resets_received += 1;
                }
                if let Some(a) = acknowledges(s) {
                    acked = Some(a);
                    if out > 0 {
                        seen.answers += 1;
                        out = 0;
                    }
                }
            }
        }
        seen
    }
}

/// A segment with no data at the sequence before the one its peer acknowledged last
/// (`acked`, snd_una): a keepalive probe.
fn is_probe(s: &Segment, acked: Option<u32>) -> bool {
    s.len == 0
        && s.flags & (SYN | FIN | RST) == 0
        && acked.is_some_and(|a| s.seq == a.wrapping_sub(1))
}

/// What a segment acknowledges, if it is an acknowledgement (a RST is no answer, whatever
/// it acknowledges).
fn acknowledges(s: &Segment) -> Option<u32> {
    (s.flags & ACK != 0 && s.flags & RST == 0).then_some(s.ack)
}

impl Wire {
    /// The keepalive probes `local` sent to `peer`, as [`Wire::keepalive_between`] counts
    /// them.
    pub fn probes_between(&self, local: SocketAddr, peer: SocketAddr) -> Vec<&Segment> {
        let mut acked = None;
        let mut probes = vec![];
        for s in &self.segments {
            if (s.src, s.dst) == (peer, local) {
                acked = acknowledges(s).or(acked);
            } else if (s.src, s.dst) == (local, peer) && is_probe(s, acked) {
                probes.push(s);
            }
        }
        probes
    }
}

impl Wire {
    /// Asserts that a tracer's `events` of the connection whose end here is `local` show
    /// exactly the probes, answers and resets (by direction) that crossed the wire, and
    /// returns them for the scenario's own expectations.
    pub fn assert_traced(
        &self,
        local: SocketAddr,
        events: &[serde_json::Value],
    ) -> KeepaliveOnWire {
        let (traced, wire) = self.compare(local, events);
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(
            traced, wire,
            "the trace (left) and the wire (right) disagree on {local}; traced: {kinds:?}"
        );
        wire
    }

    /// [`Wire::assert_traced`], where a shortfall is the kernel's blind spot (README: it now
    /// and then runs no BPF program for an event) when it is proven: a second tracer's
    /// `second` events lack exactly the same. Then Err says so, for the scenario to run again;
    /// any other difference panics.
    pub fn traced_or_blind(
        &self,
        local: SocketAddr,
        events: &[serde_json::Value],
        second: &[serde_json::Value],
    ) -> Result<KeepaliveOnWire, String> {
        let (traced, wire) = self.compare(local, events);
        if traced == wire {
            return Ok(wire);
        }
        let (by_second, _) = self.compare(local, second);
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(
            traced, by_second,
            "the trace (left) and the wire ({wire:?}) disagree on {local}, and a second \
             tracer (right) does not lack the same: not the kernel skipping programs; \
             traced: {kinds:?}"
        );
        Err(format!(
            "both tracers saw {traced:?} on {local}, the wire {wire:?}: the kernel ran no \
             program for the difference"
        ))
    }

    /// What `events` of the connection whose end here is `local` show, and what the wire
    /// carried.
    fn compare(
        &self,
        local: SocketAddr,
        events: &[serde_json::Value],
    ) -> (KeepaliveOnWire, KeepaliveOnWire) {
        // The peer the events name: the same local port may have served other connections.
        let peers: std::collections::BTreeSet<SocketAddr> = events
            .iter()
            .filter_map(|e| {
                let ip: IpAddr = e["daddr"].as_str()?.parse().ok()?;
                Some(SocketAddr::new(ip, e["dport"].as_u64()? as u16))
            })
            .collect();
        assert!(
            peers.len() <= 1,
            "events of connections from {local} to {peers:?}: filter by the peer too"
        );
        let wire = match peers.first() {
            Some(peer) => self.keepalive_between(local, *peer),
            None => self.keepalive(local),
        };
        (KeepaliveOnWire::in_trace(events), wire)
    }

    /// RSTs sent from `ip`, of every connection (and of none: a reset to a closed port).
    pub fn resets_from(&self, ip: IpAddr) -> usize {
        self.segments
            .iter()
            .filter(|s| s.src.ip() == ip && s.flags & RST != 0)
            .count()
    }
}

/// The TCP segments of a pcap file (link types Ethernet, Linux cooked v1 and v2).
pub fn read_pcap(bytes: &[u8]) -> Vec<Segment> {
    let u32_at = |b: &[u8], at: usize, le: bool| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    assert!(bytes.len() >= 24, "not a pcap file");
    let le = match &bytes[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        other => panic!("not a pcap file: magic {other:02x?}"),
    };
    let link = u32_at(bytes, 20, le);
    // The second magic of each pair stamps nanoseconds, the first microseconds.
    let fraction = if matches!(
        &bytes[..4],
        [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d]
    ) {
        1e-9
    } else {
        1e-6
    };
    let mut segments = vec![];
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let caplen = u32_at(bytes, at + 8, le) as usize;
        let stamp = u32_at(bytes, at, le) as f64 + u32_at(bytes, at + 4, le) as f64 * fraction;
        let frame = &bytes[at + 16..(at + 16 + caplen).min(bytes.len())];
        at += 16 + caplen;
        let (ethertype, l3) = match link {
            1 if frame.len() >= 14 => (u16::from_be_bytes([frame[12], frame[13]]), 14),
            113 if frame.len() >= 16 => (u16::from_be_bytes([frame[14], frame[15]]), 16),
            276 if frame.len() >= 20 => (u16::from_be_bytes([frame[0], frame[1]]), 20),
            1 | 113 | 276 => continue,
            other => panic!("link type {other} not read"),
        };
        if let Some(mut s) = segment(ethertype, &frame[l3..]) {
            s.at = stamp;
            segments.push(s);
        }
    }
    segments
}

/// The TCP segment in an IPv4 or IPv6 packet.
fn segment(ethertype: u16, ip: &[u8]) -> Option<Segment> {
    let (src, dst, tcp, payload_end) = match ethertype {
        0x0800 if ip.len() >= 20 && ip[9] == 6 => {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let a = |o: usize| IpAddr::V4(Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]));
            (a(12), a(16), ihl, total)
        }
        // Extension headers are not expected in these tests' traffic.
        0x86dd if ip.len() >= 40 && ip[6] == 6 => {
            let a = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&ip[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            (a(8), a(24), 40, 40 + payload)
        }
        _ => return None,
    };
    let t = ip.get(tcp..tcp + 20)?;
    let port = |o: usize| u16::from_be_bytes([t[o], t[o + 1]]);
    let word = |o: usize| u32::from_be_bytes([t[o], t[o + 1], t[o + 2], t[o + 3]]);
    let header = (t[12] >> 4) as usize * 4;
    Some(Segment {
        src: SocketAddr::new(src, port(0)),
        dst: SocketAddr::new(dst, port(2)),
        seq: word(4),
        ack: word(8),
        flags: t[13],
        len: payload_end.saturating_sub(tcp + header) as u32,
        at: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(src: &str, dst: &str, seq: u32, ack: u32, flags: u8, len: u32) -> Segment {
        Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq,
            ack,
            flags,
            len,
            at: 0.0,
        }
    }

    #[test]
    fn probes_answers_and_resets_are_told_apart() {
        let (c, s) = ("198.18.0.1:5000", "198.18.0.2:22");
        let wire = Wire {
            segments: vec![
                seg(c, s, 100, 0, SYN, 0),
                seg(s, c, 900, 101, SYN | ACK, 0),
                seg(c, s, 101, 901, ACK, 0),
                seg(c, s, 101, 901, ACK, 10), // data
                seg(s, c, 901, 111, ACK, 0),
                seg(c, s, 110, 901, ACK, 0), // probe: snd_una - 1
                seg(s, c, 901, 111, ACK, 0), // its answer
                seg(c, s, 110, 901, ACK, 0), // probe
                seg(c, s, 110, 901, ACK, 0), // probe, unanswered
                seg(c, s, 111, 901, RST | ACK, 0),
            ],
        };
        assert_eq!(
            wire.keepalive(c.parse().unwrap()),
            KeepaliveOnWire {
                probes: 3,
                answers: 1,
                resets_sent: 1,
                resets_received: 0
            }
        );
    }
}

//! The TCP sockets that exist right now, from the kernel's sock_diag netlink interface (what
//! `ss` reads): so connections older than the tracer are known from the start, with their
//! keepalive timer and probes so far.

use std::{fs::File, net::IpAddr, thread, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId as DiagSocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use serde::Serialize;

use crate::event::{SocketId, TcpState};

/// One socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SocketEntry {
    #[serde(flatten)]
    pub socket: SocketId,
    pub state: TcpState,
    /// The timer running now, like `ss -o`: keepalive, retransmit, probe, timewait.
    pub timer: Option<String>,
    /// Seconds until it fires.
    pub timer_s: Option<f64>,
    /// Keepalive probes sent and not answered yet (`tcpi_probes`).
    pub probes: u8,
    /// Milliseconds since anything crossed the path for it, either way: the last data sent
    /// or received, or the last ACK received (`tcp_info`); what a middlebox's idle timer
    /// has counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    /// Inode of the socket's file, 0 when no process holds it.
    #[serde(skip)]
    pub inode: u32,
}

/// The TCP sockets of the current network namespace, IPv4 and IPv6.
pub fn tcp_sockets(netns_inode: u32) -> Result<Vec<SocketEntry>> {
    let mut out = dump(AF_INET, netns_inode)?;
    out.extend(dump(AF_INET6, netns_inode)?);
    Ok(out)
}

/// The same, inside the network namespace at `path` (e.g. /run/netns/NAME).
pub fn tcp_sockets_in(path: &str, netns_inode: u32) -> Result<Vec<SocketEntry>> {
    let path = path.to_string();
    thread::spawn(move || -> Result<Vec<SocketEntry>> {
        let f = File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {path}"))?;
        tcp_sockets(netns_inode)
    })
    .join()
    .map_err(|_| anyhow!("sock_diag thread panicked"))?
}

fn dump(family: u8, netns_inode: u32) -> Result<Vec<SocketEntry>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("opening a sock_diag socket")?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states: StateFlags::all(),
            socket_id: if family == AF_INET {
                DiagSocketId::new_v4()
            } else {
                DiagSocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut entries = vec![];
    let mut rx = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[offset..size])
                .map_err(|e| anyhow!("sock_diag answer: {e}"))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    entries.push(entry(&r, netns_inode));
                }
                NetlinkPayload::Done(_) => return Ok(entries),
                NetlinkPayload::Error(e) => bail!("sock_diag: {e:?}"),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

fn entry(r: &netlink_packet_sock_diag::inet::InetResponse, netns: u32) -> SocketEntry {
    use netlink_packet_sock_diag::inet::Timer;
    let h = &r.header;
    let id = &h.socket_id;
    let (timer, timer_s) = match &h.timer {
        Some(Timer::KeepAlive(d)) => (Some("keepalive"), Some(secs(d))),
        Some(Timer::Retransmit(d, _)) => (Some("retransmit"), Some(secs(d))),
        Some(Timer::Probe(d)) => (Some("zero_window_probe"), Some(secs(d))),
        Some(Timer::TimeWait) => (Some("timewait"), None),
        None => (None, None),
    };
    let info = r.nlas.iter().find_map(|n| match n {
        Nla::TcpInfo(info) => Some(info),
        _ => None,
    });
    let probes = info.map_or(0, |i| i.probes);
    let idle_ms = info.map(|i| {
        i.last_data_sent
            .min(i.last_data_recv)
            .min(i.last_ack_recv)
            .into()
    });
    SocketEntry {
        socket: SocketId {
            saddr: unmap(id.source_address),
            sport: id.source_port,
            daddr: unmap(id.destination_address),
            dport: id.destination_port,
            netns,
            cookie: u64::from_ne_bytes(id.cookie),
        },
        state: TcpState::from_kernel(h.state as u32),
        timer: timer.map(str::to_string),
        timer_s,
        probes,
        idle_ms,
        inode: h.inode,
    }
}

fn secs(d: &Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// IPv4 connections on dual-stack sockets show as ::ffff:a.b.c.d; the tracer prints a.b.c.d.
fn unmap(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real listening and connected pair on loopback shows up, with the cookie the kernel
    /// gives the socket (SO_COOKIE).
    #[test]
    fn finds_our_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let local = client.local_addr().unwrap();
        let all = tcp_sockets(0).unwrap();
        let mine = all
            .iter()
            .find(|e| e.socket.sport == local.port() && e.socket.dport == addr.port())
            .expect("our connection in the dump");
        assert_eq!(mine.state, TcpState::Established);
        assert_ne!(mine.socket.cookie, 0);
        assert_ne!(mine.inode, 0);
        assert!(
            all.iter()
                .any(|e| e.socket.sport == addr.port() && e.state == TcpState::Listen)
        );
    }
}

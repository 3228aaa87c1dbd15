//! Packets this host drops (`skb:kfree_skb`, with the kernel's reason), for the connections
//! that may be dying: keepalive probes out, retransmitting, or named by a port filter. Those
//! are followed in [`FLOWS`] by their two ends, so a drop costs the rest of the host one
//! counter read while none is followed, and one lookup of a TCP packet's ends while some are.
//! A packet no socket took (NO_SOCKET: a closed port, a scan, a flood) is no followed
//! connection's, and an old sequence (TCP_OLD_SEQUENCE) is how TCP drops each keepalive
//! probe it receives once it has answered it: both return after the counter and the reason.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap},
    programs::BtfTracePointContext,
};
use keepalive_common::{FOLLOWED_FLOW_SLOTS, Record, drop_direction, kind};

use crate::{
    record::{LOST, count, new_record, submit},
    sock::{Address, IPPROTO_TCP, Object, Typed, read, read_identity, wanted},
};

/// A connection by its two ends (address words, port), the end with the lower port first:
/// a packet finds it with one lookup whichever way it travels.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Flow {
    first: [u64; 2],
    second: [u64; 2],
    first_port: u16,
    second_port: u16,
    _pad: u32,
}

/// A followed connection: its socket, to report a drop as its event, and what tells a
/// packet of it from one of another namespace with the same ends.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Followed {
    sk: u64,
    cookie: u64,
    local: [u64; 2],
    netns: u32,
    local_port: u16,
    _pad: u16,
}

/// Followed connections. Preallocated: probes start in timer context. An entry goes when
/// its connection closes (the close of a connection followed here is always of interest).
#[map]
static FLOWS: HashMap<Flow, Followed> = HashMap::with_max_entries(FOLLOWED_FLOW_SLOTS, 0);

/// How many entries [`FLOWS`] holds: while none, a drop returns after reading it.
#[map]
static FOLLOWED: Array<u64> = Array::with_max_entries(1, 0);

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;
const ETH_IPV4: u8 = 4;
const ETH_IPV6: u8 = 6;

/// An address as two words, an IPv4-mapped IPv6 one as its IPv4 address (its packets are
/// IPv4).
#[inline(always)]
fn words(addr: &[u8; 16]) -> [u64; 2] {
    // Two word loads (the arrays sit at 8-byte offsets): a 16-byte copy is a byte loop.
    let p = addr.as_ptr() as *const u64;
    let w = unsafe { [core::ptr::read(p), core::ptr::read(p.add(1))] };
    if w[0] == 0 && w[1] & 0xffff_ffff == 0xffff_0000 {
        [w[1] >> 32, 0]
    } else {
        w
    }
}

#[inline(always)]
fn flow(a: [u64; 2], a_port: u16, b: [u64; 2], b_port: u16) -> Flow {
    let a_first =
        a_port < b_port || (a_port == b_port && (a[0] < b[0] || (a[0] == b[0] && a[1] <= b[1])));
    let (first, first_port, second, second_port) = if a_first {
        (a, a_port, b, b_port)
    } else {
        (b, b_port, a, a_port)
    };
    Flow {
        first,
        second,
        first_port,
        second_port,
        _pad: 0,
    }
}

/// The ends of a connection, as a socket's identity holds them.
pub struct Ends<'a> {
    pub local: &'a [u8; 16],
    pub local_port: u16,
    pub remote: &'a [u8; 16],
    pub remote_port: u16,
}

impl Ends<'_> {
    #[inline(always)]
    pub fn of(r: &Record) -> Ends<'_> {
        Ends {
            local: &r.saddr,
            local_port: r.sport,
            remote: &r.daddr,
            remote_port: r.dport,
        }
    }

    #[inline(always)]
    fn key(&self) -> Flow {
        flow(
            words(self.local),
            self.local_port,
            words(self.remote),
            self.remote_port,
        )
    }
}

/// Follows the connection of socket `sk` (its cookie and namespace, its `ends`): its drops
/// are reported from now on. Counted as a lost `packet_dropped` when the table is full.
pub fn follow(sk: u64, cookie: u64, netns: u32, ends: Ends) {
    let f = Followed {
        sk,
        cookie,
        local: words(ends.local),
        netns,
        local_port: ends.local_port,
        _pad: 0,
    };
    match FLOWS.insert(&ends.key(), &f, BPF_NOEXIST) {
        Ok(()) => add(1),
        Err(e) if -e == EEXIST => {}
        Err(_) => {
            count(&LOST, kind::PACKET_DROPPED as u32);
        }
    }
}

/// The connection of socket `sk` closes: its drops no longer matter.
pub fn unfollow(sk: u64, ends: Ends) {
    if followed() == 0 {
        return;
    }
    let key = ends.key();
    // The other end of a loopback connection has the same ends: remove only our own.
    if unsafe { FLOWS.get(&key) }.is_some_and(|f| f.sk == sk) {
        remove_flow(&key);
    }
}

fn remove_flow(key: &Flow) {
    if FLOWS.remove(key).is_ok() {
        add(u64::MAX);
    }
}

#[inline(always)]
fn followed() -> u64 {
    FOLLOWED
        .get_ptr(0)
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) })
}

/// Adds `n` (wrapping: u64::MAX takes one away) to the count of followed connections.
fn add(n: u64) {
    if let Some(c) = FOLLOWED.get_ptr_mut(0) {
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                c, n,
            );
        }
    }
}

/// The kernel drops a packet: reported when it is a TCP segment of a followed connection,
/// in that connection's namespace.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    if followed() == 0 {
        return 0;
    }
    let reason = ctx.arg::<u32>(2);
    if reason == config!(drop_reason_no_socket) || reason == config!(drop_reason_old_sequence) {
        return 0;
    }
    let skb = Typed(ctx.arg::<*const u8>(0));
    let nh: u16 = skb.get(config!(offsets.skb_network_header));
    if nh == u16::MAX {
        return 0;
    }
    let ip = skb.get(config!(offsets.skb_head)) + nh as u64;
    // The longest fixed header (IPv6) in one read; an IPv4 header's 20 bytes are in it.
    let h: [u64; 5] = read(ip, 0);
    let version = (h[0] as u8) >> 4;
    let (src, dst, tcp) = if version == ETH_IPV4 {
        if (h[1] >> 8) as u8 != IPPROTO_TCP as u8 {
            return 0;
        }
        let header_len = ((h[0] as u8) & 0xf) as u64 * 4;
        ([h[1] >> 32, 0], [h[2] & 0xffff_ffff, 0], ip + header_len)
    } else if version == ETH_IPV6 {
        // Segments behind extension headers are not looked at: TCP sends none.
        if (h[0] >> 48) as u8 != IPPROTO_TCP as u8 {
            return 0;
        }
        ([h[1], h[2]], [h[3], h[4]], ip + 40)
    } else {
        return 0;
    };
    let ports: [u16; 2] = read(tcp, 0);
    let (sport, dport) = (u16::from_be(ports[0]), u16::from_be(ports[1]));
    let key = flow(src, sport, dst, dport);
    let Some(f) = (unsafe { FLOWS.get(&key) }) else {
        return 0;
    };
    let f = *f;
    // The same ends in another namespace (a test's two hosts, two containers) are another
    // connection: the device's namespace decides; inside TCP, where the packet has no device
    // left, the socket that was receiving it (6.13+), else the packet's own socket.
    let dev: u64 = skb.get(config!(offsets.skb_dev));
    let skb_sk: u64 = skb.get(config!(offsets.skb_sk));
    let ours = if dev != 0 {
        Address(dev)
            .follow(config!(offsets.dev_net))
            .get(config!(offsets.net_inum))
            == f.netns
    } else {
        (config!(kfree_skb_rx_sk) != 0 && ctx.arg::<u64>(3) == f.sk) || skb_sk == f.sk
    };
    if !ours {
        return 0;
    }
    let direction = if sport == f.local_port && src == f.local {
        // Ours only while it is still ours: on its way out (a qdisc, an output rule). Once
        // it reached the peer's socket on this host (loopback), the peer dropped it.
        if skb_sk != f.sk {
            return 0;
        }
        drop_direction::LEAVING
    } else {
        drop_direction::ARRIVING
    };
    let mut slot = core::mem::MaybeUninit::uninit();
    let r = new_record(&mut slot, kind::PACKET_DROPPED);
    read_identity(Address(f.sk), r);
    if f.cookie != 0 && r.cookie != f.cookie {
        // Its close went unseen (the kernel skips programs now and then) and the socket's
        // memory is another's now.
        remove_flow(&key);
        return 0;
    }
    if !wanted(r) {
        return 0;
    }
    r.arg0 = reason;
    r.arg1 = direction;
    submit(&ctx, r);
    0
}

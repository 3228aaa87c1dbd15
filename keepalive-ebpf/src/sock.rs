//! Reading kernel structures at offsets resolved from BTF by the user side.

use aya_ebpf::{helpers::generated::bpf_probe_read_kernel, macros::map, maps::LruHashMap};
use keepalive_common::{KeepaliveSettings, Record, set_by_socket};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_NEW_SYN_RECV: u8 = 12;

/// Reads a `T` at `base + off`; a fault reads as zero (the helper zeroes the destination).
/// No branch on the helper's result: with ~30 reads per program, a branch each multiplies
/// the paths the verifier walks, past older kernels' limits (6.1 gave up at 1M instructions).
#[inline(always)]
pub fn read<T: Default>(base: u64, off: u32) -> T {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr() as *mut core::ffi::c_void,
            core::mem::size_of::<T>() as u32,
            (base + off as u64) as *const core::ffi::c_void,
        );
        v.assume_init()
    }
}

/// Fills the connection identity of `r` from a socket (full, request or timewait: only
/// `sock_common` fields are read here, valid for all three).
#[inline(always)]
pub fn read_identity(sk: u64, r: &mut Record) {
    r.skaddr = sk;
    r.family = read(sk, config!(offsets.family));
    r.state = read(sk, config!(offsets.state));
    // Full sockets lose skc_num when unhashed on close, before the close is traced;
    // inet_sport survives. Request and timewait sockets only have skc_num.
    r.sport = if r.state == TCP_TIME_WAIT || r.state == TCP_NEW_SYN_RECV {
        read(sk, config!(offsets.num))
    } else {
        u16::from_be(read(sk, config!(offsets.inet_sport)))
    };
    r.dport = u16::from_be(read(sk, config!(offsets.dport)));
    if r.family == AF_INET6 {
        r.saddr = read(sk, config!(offsets.v6_rcv_saddr));
        r.daddr = read(sk, config!(offsets.v6_daddr));
    } else {
        let s: [u8; 4] = read(sk, config!(offsets.rcv_saddr));
        let d: [u8; 4] = read(sk, config!(offsets.daddr));
        r.saddr[..4].copy_from_slice(&s);
        r.daddr[..4].copy_from_slice(&d);
    }
    let net: u64 = read(sk, config!(offsets.net));
    r.netns = read(net, config!(offsets.net_inum));
    r.cookie = read(sk, config!(offsets.cookie));
    if r.state != TCP_TIME_WAIT && r.state != TCP_NEW_SYN_RECV {
        let socket: u64 = read(sk, config!(offsets.sk_socket));
        if socket != 0 {
            let inode = socket + config!(offsets.socket_inode) as u64;
            r.ino = read(inode, config!(offsets.inode_ino));
        }
    }
}

/// The filters the user asked for, applied before any ring buffer space is reserved.
/// A socket that matched once stays wanted: closing clears its ports before the last events.
#[inline(always)]
pub fn wanted(r: &Record) -> bool {
    let port = config!(filter_port);
    let netns = config!(filter_netns);
    if port == 0 && netns == 0 {
        return true;
    }
    if (port == 0 || r.sport == port || r.dport == port) && (netns == 0 || r.netns == netns) {
        let _ = MATCHED.insert(&r.skaddr, &1, 0);
        return true;
    }
    unsafe { MATCHED.get(&r.skaddr) }.is_some()
}

/// Forgets a destroyed socket for the filters.
#[inline(always)]
pub fn forget(sk: u64) {
    if config!(filter_port) != 0 || config!(filter_netns) != 0 {
        let _ = MATCHED.remove(&sk);
    }
}

/// Sockets that matched the filters (only used when filtering).
#[map]
static MATCHED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// SO_LINGER on with a zero time: close() aborts with a RST. Kernels report that reset as
/// TCP_STATE (it goes through tcp_disconnect), so the cause is captured here.
#[inline(always)]
pub fn lingers_zero(sk: u64) -> bool {
    let flags: u64 = read(sk, config!(offsets.sk_flags));
    (flags >> (config!(offsets.linger_bit) & 63)) & 1 == 1
        && read::<u64>(sk, config!(offsets.sk_lingertime)) == 0
}

/// The socket's effective keepalive settings: its own setsockopt values, else the sysctls of
/// its network namespace (what `keepalive_time_when()` and friends compute in the kernel).
/// Only for full TCP sockets.
#[inline(always)]
pub fn read_keepalive(sk: u64) -> KeepaliveSettings {
    let mut k = KeepaliveSettings::default();
    let net: u64 = read(sk, config!(offsets.net));
    k.idle_jiffies = read(sk, config!(offsets.keepalive_time));
    if k.idle_jiffies == 0 {
        k.idle_jiffies = read::<i32>(net, config!(offsets.net_keepalive_time)) as u32;
    } else {
        k.set_by_socket |= set_by_socket::IDLE;
    }
    k.interval_jiffies = read(sk, config!(offsets.keepalive_intvl));
    if k.interval_jiffies == 0 {
        k.interval_jiffies = read::<i32>(net, config!(offsets.net_keepalive_intvl)) as u32;
    } else {
        k.set_by_socket |= set_by_socket::INTERVAL;
    }
    k.count = read(sk, config!(offsets.keepalive_probes));
    if k.count == 0 {
        k.count = read(net, config!(offsets.net_keepalive_probes));
    } else {
        k.set_by_socket |= set_by_socket::COUNT;
    }
    k.user_timeout_ms = read(sk, config!(offsets.user_timeout));
    k.probes_out = read(sk, config!(offsets.probes_out));
    let flags: u64 = read(sk, config!(offsets.sk_flags));
    k.enabled = ((flags >> (config!(offsets.keepopen_bit) & 63)) & 1) as u8;
    k
}

//! Reading kernel structures at offsets resolved from BTF by the user side.

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_skc_to_tcp_sock},
    macros::map,
    maps::LruHashMap,
};
use keepalive_common::{Field, KeepaliveSettings, Pointer, Record, set_by_socket};

pub const AF_INET: u16 = keepalive_common::family::INET;
pub const AF_INET6: u16 = keepalive_common::family::INET6;
pub const IPPROTO_TCP: u16 = 6;

pub use keepalive_common::tcp_state;
use tcp_state::{NEW_SYN_RECV as TCP_NEW_SYN_RECV, TIME_WAIT as TCP_TIME_WAIT};

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

/// Reads kernel field `field` of the object at `base`, as what it is declared to be.
#[inline(always)]
pub fn read_field<T: Default>(base: u64, field: Field<T>) -> T {
    read(base, field.value)
}

/// A kernel object whose fields a program reads.
pub trait Object: Copy {
    fn addr(self) -> u64;
    /// The `T` at `off` bytes into the object; a fault reads as zero.
    fn get_at<T: Copy + Default>(self, off: u32) -> T;
    /// Kernel field `field`, as what it is declared to be.
    #[inline(always)]
    fn get<T: Copy + Default>(self, field: Field<T>) -> T {
        self.get_at(field.value)
    }
    /// The object a pointer field points to, read the same way.
    fn follow(self, field: Field<Pointer>) -> Self;
}

/// An object known only by its address (kprobe arguments, a socket found from its timer):
/// every field costs a bpf_probe_read_kernel call.
#[derive(Clone, Copy)]
pub struct Address(pub u64);

impl Object for Address {
    #[inline(always)]
    fn addr(self) -> u64 {
        self.0
    }
    #[inline(always)]
    fn get_at<T: Copy + Default>(self, off: u32) -> T {
        read(self.0, off)
    }
    #[inline(always)]
    fn follow(self, field: Field<Pointer>) -> Self {
        Address(self.get(field))
    }
}

/// A pointer whose BTF type the verifier knows (a BTF tracepoint's argument, or what
/// bpf_skc_to_tcp_sock returns): fields are plain loads, which the kernel turns into
/// fault-safe ones. That is an order of magnitude cheaper than a helper call per field,
/// and state changes read ~20 fields on every connection's every transition.
/// The verifier needs each offset constant: they come from CONFIG, which is frozen
/// read-only data, so it knows their values. A pointer field read this way keeps its type.
#[derive(Clone, Copy)]
pub struct Typed(pub *const u8);

impl Object for Typed {
    #[inline(always)]
    fn addr(self) -> u64 {
        self.0 as u64
    }
    #[inline(always)]
    fn get_at<T: Copy + Default>(self, off: u32) -> T {
        unsafe { core::ptr::read(self.0.add(off as usize) as *const T) }
    }
    #[inline(always)]
    fn follow(self, field: Field<Pointer>) -> Self {
        Typed(self.get(field) as *const u8)
    }
}

/// The full TCP socket behind a BTF tracepoint's `struct sock *` argument, typed as
/// `struct tcp_sock` so fields past `struct sock` (ports, probe counts, keepalive settings)
/// can be loaded; None for request and timewait sockets (and NULL).
#[inline(always)]
pub fn tcp_sock(sk: u64) -> Option<Typed> {
    if sk == 0 {
        return None;
    }
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut core::ffi::c_void) };
    (!tp.is_null()).then_some(Typed(tp as *const u8))
}

/// IPv4 addresses go in the first four bytes of a record's 16.
#[inline(always)]
fn v4(a: u32) -> [u8; 16] {
    // Words, not a zeroed byte array and a copy: that is a byte-loop memset call in BPF.
    unsafe { core::mem::transmute([a, 0u32, 0, 0]) }
}

#[inline(always)]
fn v6<S: Object>(sk: S, field: Field<[u8; 16]>) -> [u8; 16] {
    // Two word loads: a 16-byte array load is a call to the byte-loop memmove, which the
    // verifier also refuses to share between kinds of pointer.
    let words: [u64; 2] = [sk.get_at(field.value), sk.get_at(field.value + 8)];
    unsafe { core::mem::transmute(words) }
}

/// Fills the connection identity of `r` from a socket (full, request or timewait: only
/// `sock_common` fields are read here, valid for all three).
#[inline(always)]
pub fn read_identity<S: Object>(sk: S, r: &mut Record) {
    r.skaddr = sk.addr();
    r.family = sk.get(config!(offsets.family));
    r.state = sk.get(config!(offsets.state));
    // Full sockets lose skc_num when unhashed on close, before the close is traced;
    // inet_sport survives. Request and timewait sockets only have skc_num.
    r.sport = if r.state == TCP_TIME_WAIT || r.state == TCP_NEW_SYN_RECV {
        sk.get(config!(offsets.num))
    } else {
        u16::from_be(sk.get(config!(offsets.inet_sport)))
    };
    r.dport = u16::from_be(sk.get(config!(offsets.dport)));
    if r.family == AF_INET6 {
        r.saddr = v6(sk, config!(offsets.v6_rcv_saddr));
        r.daddr = v6(sk, config!(offsets.v6_daddr));
    } else {
        r.saddr = v4(sk.get(config!(offsets.rcv_saddr)));
        r.daddr = v4(sk.get(config!(offsets.daddr)));
    }
    r.netns = sk
        .follow(config!(offsets.net))
        .get(config!(offsets.net_inum));
    r.cookie = sk.get(config!(offsets.cookie));
    if r.state != TCP_TIME_WAIT && r.state != TCP_NEW_SYN_RECV {
        let socket: u64 = sk.get(config!(offsets.sk_socket));
        if socket != 0 {
            // The inode sits before the socket (struct socket_alloc): outside what the
            // verifier lets a typed load reach, so it is always a helper read.
            let inode = socket + config!(offsets.socket_inode).value as u64;
            r.ino = read_field(inode, config!(offsets.inode_ino));
        }
    }
}

/// The filters the user asked for, applied before any ring buffer space is reserved.
/// A socket's namespace never changes. A socket that matched the port once stays wanted:
/// closing clears its ports before the last events. It is remembered by its cookie, which
/// no other socket ever has (by address, a socket of another namespace or port reusing a
/// freed one's memory would pass as it), or by address while it has none.
#[inline(always)]
pub fn wanted(r: &Record) -> bool {
    if !filtering() {
        return true;
    }
    let netns = config!(filter_netns);
    if netns != 0 && r.netns != netns {
        return false;
    }
    let port = config!(filter_port);
    if port == 0 {
        return true;
    }
    let key = matched_key(r.cookie, r.skaddr);
    if r.sport == port || r.dport == port {
        let _ = MATCHED.insert(&key, &1, 0);
        return true;
    }
    unsafe { MATCHED.get(&key) }.is_some()
}

/// How [`MATCHED`] knows a socket: its cookie, or its address while it has none.
#[inline(always)]
fn matched_key(cookie: u64, skaddr: u64) -> u64 {
    if cookie != 0 { cookie } else { skaddr }
}

/// The user asked for some connections only (a port or a network namespace).
#[inline(always)]
pub fn filtering() -> bool {
    config!(filter_port) != 0 || config!(filter_netns) != 0
}

/// A destroyed socket's entry in the filters' table goes.
#[inline(always)]
pub fn remove_match(sk: u64) {
    if filtering() {
        let cookie: u64 = read_field(sk, config!(offsets.cookie));
        let _ = MATCHED.remove(&matched_key(cookie, sk));
    }
}

/// Sockets that matched the port filter, by [`matched_key`] (only used when filtering by
/// port; an LRU, since without `all_states` nothing sees a socket freed).
#[map]
static MATCHED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// SO_LINGER on with a zero time: close() aborts with a RST. Kernels report that reset as
/// TCP_STATE (it goes through tcp_disconnect), so the cause is captured here.
#[inline(always)]
pub fn lingers_zero<S: Object>(sk: S) -> bool {
    let flags: u64 = sk.get(config!(offsets.sk_flags));
    (flags >> (config!(offsets.linger_bit).value & 63)) & 1 == 1
        && sk.get(config!(offsets.sk_lingertime)) == 0
}

/// Whether the socket has SO_KEEPALIVE on.
#[inline(always)]
pub fn keepalive_on<S: Object>(sk: S) -> bool {
    let flags: u64 = sk.get(config!(offsets.sk_flags));
    (flags >> (config!(offsets.keepopen_bit).value & 63)) & 1 == 1
}

/// The socket's effective keepalive settings: its own setsockopt values, else the sysctls of
/// its network namespace (what `keepalive_time_when()` and friends compute in the kernel).
/// Only for full TCP sockets.
#[inline(always)]
pub fn read_keepalive<S: Object>(sk: S) -> KeepaliveSettings {
    let mut k = KeepaliveSettings::default();
    let net = sk.follow(config!(offsets.net));
    k.idle_jiffies = sk.get(config!(offsets.keepalive_time));
    if k.idle_jiffies == 0 {
        k.idle_jiffies = net.get(config!(offsets.net_keepalive_time)) as u32;
    } else {
        k.set_by_socket |= set_by_socket::IDLE;
    }
    k.interval_jiffies = sk.get(config!(offsets.keepalive_intvl));
    if k.interval_jiffies == 0 {
        k.interval_jiffies = net.get(config!(offsets.net_keepalive_intvl)) as u32;
    } else {
        k.set_by_socket |= set_by_socket::INTERVAL;
    }
    k.count = sk.get(config!(offsets.keepalive_probes));
    if k.count == 0 {
        k.count = net.get(config!(offsets.net_keepalive_probes));
    } else {
        k.set_by_socket |= set_by_socket::COUNT;
    }
    k.user_timeout_ms = sk.get(config!(offsets.user_timeout));
    k.probes_out = sk.get(config!(offsets.probes_out));
    k.enabled = keepalive_on(sk) as u8;
    k
}

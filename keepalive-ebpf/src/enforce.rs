//! `keepalive enforce`: a sock_ops program that turns TCP keepalive on for the connections of
//! a cgroup's processes, as they are established, without changing the applications.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_get_socket_cookie, bpf_getsockopt, bpf_setsockopt},
    macros::{map, sock_ops},
    maps::RingBuf,
    programs::SockOpsContext,
};
use keepalive_common::{EnforceConfig, Record, flag, kind, set_by_socket};

use crate::sock::{AF_INET, AF_INET6, tcp_state};

#[unsafe(no_mangle)]
static ENFORCE: EnforceConfig = EnforceConfig::zeroed();

/// Records for `keepalive enforce` itself.
#[map]
static ENFORCE_REPORT: RingBuf = RingBuf::with_byte_size(1 << 16, 0);

/// The same records for `keepalive trace`, which finds this map pinned.
#[map]
static ENFORCED: RingBuf = RingBuf::with_byte_size(1 << 16, 0);

const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;
const BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: u32 = 5;
const SOL_SOCKET: i32 = 1;
const SO_KEEPALIVE: i32 = 9;
const SOL_TCP: i32 = 6;
const TCP_KEEPIDLE: i32 = 4;
const TCP_KEEPINTVL: i32 = 5;
const TCP_KEEPCNT: i32 = 6;
const TCP_USER_TIMEOUT: i32 = 18;

macro_rules! enforce {
    ($($field:ident).+) => {
        unsafe { core::ptr::read_volatile(&ENFORCE.$($field).+) }
    };
}

#[sock_ops]
pub fn keepalive_enforce(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        return 1;
    }
    let mut r: Record = unsafe { core::mem::zeroed() };
    r.kind = kind::KEEPALIVE_ENFORCED;
    r.state = tcp_state::ESTABLISHED;
    r.sport = ctx.local_port() as u16;
    // remote_port holds the port in network order in its upper half.
    r.dport = u16::from_be((ctx.remote_port() >> 16) as u16);
    let family = ctx.family();
    if family == AF_INET6 as u32 {
        r.family = AF_INET6;
        // The context allows only 4-byte loads of these fields: one word at a time.
        for i in 0..4 {
            let (l, rm) = unsafe {
                (
                    core::ptr::read_volatile(&(*ctx.ops).local_ip6[i]),
                    core::ptr::read_volatile(&(*ctx.ops).remote_ip6[i]),
                )
            };
            r.saddr[i * 4..i * 4 + 4].copy_from_slice(&l.to_ne_bytes());
            r.daddr[i * 4..i * 4 + 4].copy_from_slice(&rm.to_ne_bytes());
        }
    } else {
        r.family = AF_INET;
        r.saddr[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
        r.daddr[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
    }
    let port = enforce!(port);
    if port != 0 && r.sport != port && r.dport != port {
        return 1;
    }
    if enforce!(addr_family) != 0 {
        let addr = enforce!(addr);
        let width = if r.family == AF_INET6 { 16 } else { 4 };
        if enforce!(addr_family) != r.family
            || (r.saddr[..width] != addr[..width] && r.daddr[..width] != addr[..width])
        {
            return 1;
        }
    }
    let ops = ctx.as_ptr();
    let mut on: i32 = 0;
    unsafe {
        bpf_getsockopt(
            ops,
            SOL_SOCKET,
            SO_KEEPALIVE,
            &mut on as *mut i32 as *mut _,
            4,
        );
    }
    if on != 0 && enforce!(force) == 0 {
        return 1; // The application chose its own keepalive: leave it.
    }
    let dry_run = enforce!(dry_run) != 0;
    if !dry_run {
        let set = |level: i32, name: i32, value: u32| {
            let mut v = value as i32;
            unsafe { bpf_setsockopt(ops, level, name, &mut v as *mut i32 as *mut _, 4) }
        };
        set(SOL_SOCKET, SO_KEEPALIVE, 1);
        set(SOL_TCP, TCP_KEEPIDLE, enforce!(idle_s));
        set(SOL_TCP, TCP_KEEPINTVL, enforce!(interval_s));
        set(SOL_TCP, TCP_KEEPCNT, enforce!(count));
        let ut = enforce!(user_timeout_ms);
        if ut != 0 {
            set(SOL_TCP, TCP_USER_TIMEOUT, ut);
        }
    }
    r.cookie = unsafe { bpf_get_socket_cookie(ops) };
    r.arg0 = if dry_run { 0 } else { 1 };
    r.arg1 = (on != 0) as u32;
    r.flags = flag::HAS_KEEPALIVE;
    r.keepalive.enabled = 1;
    r.keepalive.idle_jiffies = enforce!(idle_jiffies);
    r.keepalive.interval_jiffies = enforce!(interval_jiffies);
    r.keepalive.count = enforce!(count) as u8;
    r.keepalive.user_timeout_ms = enforce!(user_timeout_ms);
    r.keepalive.set_by_socket =
        set_by_socket::IDLE | set_by_socket::INTERVAL | set_by_socket::COUNT;
    r.ts_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    for ring in [&ENFORCE_REPORT, &ENFORCED] {
        if let Some(mut e) = ring.reserve::<Record>(0) {
            e.write(r);
            e.submit(0);
        }
    }
    1
}

//! keepalive's kernel side: small programs that capture, filter cheaply and emit.
//!
//! Tracepoint mode uses BTF-typed tracepoints (tp_btf): the keepalive timer is found among
//! all timers by its function address, everything else comes from TCP and socket tracepoints.
//! Kprobe mode hooks the timer and active resets directly. Which programs exist, where they
//! attach and their nesting guards' slots are declared in `keepalive_common::programs`; the
//! fields they read, in `keepalive_common::Offsets`.
//!
//! Only what saves real work is decided here: a connection's start and close are kept in a
//! per-socket table until it ends (life.rs), a keepalive timer's probes in another
//! (timer.rs), dying connections' dropped packets are matched by their ends (drops.rs), and
//! an ordinary end is only counted. Records are built and queued in record.rs, sockets read in
//! sock.rs. A connection's story and its verdict are user space's work.
#![no_std]
#![no_main]
// Atomic add on a map value (LOST); the BPF target has no atomic types.
#![feature(core_intrinsics)]
#![allow(internal_features)]

/// Reads one field of the CONFIG global. Volatile so the compiler does not fold the zero
/// the object file holds: the loader rewrites it before the programs load.
macro_rules! config {
    ($($field:ident).+) => {
        unsafe { core::ptr::read_volatile(&$crate::config::CONFIG.$($field).+) }
    };
}

mod config;
mod drops;
mod enforce;
mod life;
mod record;
mod sock;
mod timer;

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_get_socket_cookie,
    },
    macros::{btf_tracepoint, kprobe, kretprobe, map},
    maps::{PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;
use keepalive_common::{
    KernelConfig, LifeRecord, REASON_UNKNOWN, Record, flag, kind, owner_from, programs::guard_slot,
};
use record::{new_record, submit, submit_with, with_task};
use sock::tcp_state::{
    CLOSE as TCP_CLOSE, CLOSE_WAIT as TCP_CLOSE_WAIT, ESTABLISHED as TCP_ESTABLISHED,
    FIN_WAIT1 as TCP_FIN_WAIT1, LAST_ACK as TCP_LAST_ACK, LISTEN as TCP_LISTEN,
    NEW_SYN_RECV as TCP_NEW_SYN_RECV, SYN_SENT as TCP_SYN_SENT, TIME_WAIT as TCP_TIME_WAIT,
};
use sock::{
    AF_INET, AF_INET6, Address, IPPROTO_TCP, Object, Typed, filtering, keepalive_on, lingers_zero,
    read, read_field, read_identity, read_keepalive, remove_match, tcp_sock, wanted,
};

#[btf_tracepoint(function = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: BtfTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    // The hot path for every timer in the system: one load and a compare.
    let function: u64 = Typed(timer as *const u8).get(config!(offsets.timer_function));
    if function != config!(keepalive_timer_fn) {
        return 0;
    }
    timer::entered(&ctx, timer - config!(offsets.sk_timer).value as u64);
    0
}

#[btf_tracepoint(function = "timer_expire_exit")]
pub fn timer_expire_exit(ctx: BtfTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    // Every timer in the system again: the same compare before anything else.
    let function: u64 = Typed(timer as *const u8).get(config!(offsets.timer_function));
    if function != config!(keepalive_timer_fn) {
        return 0;
    }
    timer::left(&ctx, timer - config!(offsets.sk_timer).value as u64);
    0
}

/// Kprobe mode: the keepalive timer itself, so no other timer pays for the filter.
#[kprobe]
pub fn keepalive_timer_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(timer) = ctx.arg::<u64>(0) {
        timer::entered(&ctx, timer - config!(offsets.sk_timer).value as u64);
    }
    0
}

/// Kprobe mode: the keepalive timer returns. The socket comes from the per-CPU run state
/// (a return probe has no arguments; timers do not nest on one CPU).
#[kretprobe]
pub fn keepalive_timer_kretprobe(ctx: RetProbeContext) -> u32 {
    timer::left_current(&ctx);
    0
}

/// The transitions diagnosis uses: connect() (names the owner), established (the start),
/// the application closing, and the end. The rest of a normal life (SYN_RECV, FIN_WAIT2,
/// CLOSE_WAIT, ...) is reported only with `all_states`: a busy server makes
/// millions of them, and each costs a record.
#[inline(always)]
fn wanted_transition(old: u8, new: u8) -> bool {
    config!(all_states) != 0
        || new == TCP_ESTABLISHED
        || new == TCP_CLOSE
        || (old == TCP_CLOSE && new == TCP_SYN_SENT)
        || (old == TCP_ESTABLISHED && new == TCP_FIN_WAIT1)
        || (old == TCP_CLOSE_WAIT && new == TCP_LAST_ACK)
}

fn on_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    // `int` in the tracepoint; states fit a byte, as the socket holds them.
    let old = ctx.arg::<i32>(1) as u8;
    let new = ctx.arg::<i32>(2) as u8;
    if !wanted_transition(old, new) {
        return 0;
    }
    // None for other protocols: the tracepoint reports every inet socket.
    let Some(sk) = tcp_sock(ctx.arg(0)) else {
        return 0;
    };
    let closes = new == TCP_CLOSE;
    // Assigns the socket its cookie if it has none yet. For tracing programs this helper
    // id is the kernel's bpf_get_socket_ptr_cookie.
    let cookie = || unsafe { bpf_get_socket_cookie(ctx.arg::<*mut core::ffi::c_void>(0)) };
    // Without filters a folded transition or an ordinary end reads nothing more; with
    // them, only a connection they match gets an entry, so its identity is read first.
    let retransmits: u8 = sk.get(config!(offsets.retransmits));
    if !filtering() && needs_nothing_more(sk, old, new, retransmits, &cookie) {
        return 0;
    }
    let mut slot = MaybeUninit::uninit();
    let r = new_record(&mut slot, kind::STATE_CHANGE);
    read_identity(sk, r);
    r.cookie = cookie();
    if !wanted(r) {
        return 0;
    }
    // A connection the user names by its port: its drops matter from the start.
    if new == TCP_ESTABLISHED && config!(filter_port) != 0 {
        drops::follow(sk.addr(), r.cookie, r.netns, drops::Ends::of(r));
    }
    if filtering() && needs_nothing_more(sk, old, new, retransmits, &cookie) {
        return 0;
    }
    timer::timeout_first(&ctx, sk.addr(), r);
    r.state = old;
    r.arg0 = old as u32;
    r.arg1 = new as u32;
    // Settings matter when a connection starts and ends; other transitions skip the reads.
    if closes || new == TCP_ESTABLISHED {
        r.flags |= flag::HAS_KEEPALIVE;
        r.keepalive = read_keepalive(sk);
    }
    r.retransmits = retransmits;
    with_task(r);
    if closes {
        // Sent, so its keepalive timer's copy goes too (without --all-states nothing else,
        // tcp_destroy_sock, removes it), after the answers no timer run reported yet.
        timer::closed(&ctx, sk.addr(), old);
        drops::unfollow(sk.addr(), drops::Ends::of(r));
        if let Some(l) = life::get(sk.addr()) {
            if l.life.owner_from != owner_from::UNKNOWN {
                life::name_owner(l, r);
            }
            r.kind = kind::CONNECTION_CLOSED;
            submit_life(&ctx, r, &l.life);
            life::end(l);
            return 0;
        }
    }
    submit(&ctx, r);
    0
}

/// Whether the transition `old` -> `new` is done with once the connection's life has it:
/// folded into its entry, or an ordinary end counted (or a listener closing, which ends no
/// connection). Otherwise it becomes a record.
#[inline(always)]
fn needs_nothing_more(
    sk: Typed,
    old: u8,
    new: u8,
    retransmits: u8,
    cookie: &impl Fn() -> u64,
) -> bool {
    if new != TCP_CLOSE {
        if config!(all_states) != 0 {
            return false;
        }
        // A connection's first transition: the socket gets its cookie now, so every later
        // event, timer ones included, reads the same one.
        if (old == TCP_CLOSE && new == TCP_SYN_SENT) || new == TCP_ESTABLISHED {
            cookie();
        }
        return life::fold(sk.addr(), old, new, retransmits, keepalive_mark(sk));
    }
    if config!(all_ends) != 0 {
        return false;
    }
    old == TCP_LISTEN || life::ends_ordinarily(sk, old, retransmits)
}

/// [`keepalive_common::life_mark::KEEPALIVE`] when the socket has SO_KEEPALIVE on.
#[inline(always)]
fn keepalive_mark(sk: Typed) -> u8 {
    if keepalive_on(sk) {
        keepalive_common::life_mark::KEEPALIVE
    } else {
        0
    }
}

/// A connection's CLOSE with what was kept of its life, written straight into the ring (a
/// [`LifeRecord`] on the stack would not fit next to the record on older kernels' 512 bytes).
fn submit_life(ctx: &BtfTracePointContext, r: &Record, life: &keepalive_common::ConnectionLife) {
    submit_with(ctx, r.kind, |p: *mut LifeRecord| unsafe {
        core::ptr::addr_of_mut!((*p).record).write(*r);
        core::ptr::addr_of_mut!((*p).life).write(*life);
    });
}

fn on_tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    let Some(sk) = tcp_sock(ctx.arg(0)) else {
        return 0;
    };
    let mut slot = MaybeUninit::uninit();
    let r = new_record(&mut slot, kind::RETRANSMIT);
    read_identity(sk, r);
    if !wanted(r) {
        return 0;
    }
    r.arg0 = sk.get(config!(offsets.retransmits)) as u32;
    life::mark(sk.addr());
    drops::follow(sk.addr(), r.cookie, r.netns, drops::Ends::of(r));
    submit(&ctx, r);
    0
}

fn on_tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    // Active resets (a socket, no packet) come from the tcp_send_active_reset kprobe then.
    if skb == 0 && config!(resets_by_kprobe) != 0 {
        return 0;
    }
    let mut slot = MaybeUninit::uninit();
    let r = new_record(&mut slot, kind::RESET_SENT);
    r.arg0 = if config!(send_reset_has_reason) != 0 {
        ctx.arg::<u32>(2)
    } else {
        REASON_UNKNOWN
    };
    if sk != 0 {
        read_identity(Address(sk), r);
    } else if skb != 0 {
        read_reset_packet(skb, r);
    } else {
        return 0;
    }
    if !wanted(r) {
        return 0;
    }
    if sk != 0 {
        reset_by_socket(&ctx, sk, r);
    }
    with_task(r);
    submit(&ctx, r);
    0
}

/// Kprobe mode: every reset a socket sends itself (close with unread data, linger 0, abort,
/// keepalive or memory give-up). Before Linux 6.10 the kernel gives no reason: the caller's
/// address goes in `arg1` and user space names the cause from it.
#[kprobe]
pub fn active_reset_kprobe(ctx: ProbeContext) -> u32 {
    let Some(sk) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let mut slot = MaybeUninit::uninit();
    let r = new_record(&mut slot, kind::RESET_SENT);
    read_identity(Address(sk), r);
    if !wanted(r) {
        return 0;
    }
    // Both arguments read, each at its fixed place, then one chosen: choosing the place
    // first makes the compiler load from a computed context offset, which the verifier
    // refuses ("dereference of modified ctx ptr").
    let (second, third) = unsafe {
        (
            core::ptr::read_volatile(&ctx.arg::<u32>(1)),
            core::ptr::read_volatile(&ctx.arg::<u32>(2)),
        )
    };
    r.arg0 = match config!(active_reset_reason_arg) {
        1 => second,
        2 => third,
        _ => None,
    }
    .unwrap_or(REASON_UNKNOWN);
    // x86-64 kernel text lives in the top 2 GiB: the low half of the address identifies it.
    r.arg1 = caller(&ctx) as u32;
    reset_by_socket(&ctx, sk, r);
    with_task(r);
    submit(&ctx, r);
    0
}

/// What a reset from a socket needs besides its identity.
fn reset_by_socket<C: EbpfContext>(ctx: &C, sk: u64, r: &mut Record) {
    life::mark(sk);
    timer::timeout_first(ctx, sk, r);
    if r.state != TCP_TIME_WAIT && r.state != TCP_NEW_SYN_RECV && lingers_zero(Address(sk)) {
        r.flags |= flag::LINGER_ZERO;
    }
}

/// The return address at a kprobe on a function's first instruction: the top of the stack.
#[cfg(bpf_target_arch = "x86_64")]
fn caller(ctx: &ProbeContext) -> u64 {
    let sp = unsafe { (*ctx.regs).rsp };
    read(sp, 0)
}

#[cfg(not(bpf_target_arch = "x86_64"))]
fn caller(_ctx: &ProbeContext) -> u64 {
    0
}

/// A reset with no socket answers a packet nobody owns: our side is that packet's
/// destination, the remote side its source.
fn read_reset_packet(skb: u64, r: &mut Record) {
    let head: u64 = read_field(skb, config!(offsets.skb_head));
    let nh: u16 = read_field(skb, config!(offsets.skb_network_header));
    let th: u16 = read_field(skb, config!(offsets.skb_transport_header));
    let ip = head + nh as u64;
    let version = read::<u8>(ip, 0) >> 4;
    if version == 4 {
        r.family = AF_INET;
        let src: [u8; 4] = read(ip, 12);
        let dst: [u8; 4] = read(ip, 16);
        r.daddr[..4].copy_from_slice(&src);
        r.saddr[..4].copy_from_slice(&dst);
    } else if version == 6 {
        r.family = AF_INET6;
        r.daddr = read(ip, 8);
        r.saddr = read(ip, 24);
    } else {
        return;
    }
    let tcp = head + th as u64;
    r.dport = u16::from_be(read(tcp, 0));
    r.sport = u16::from_be(read(tcp, 2));
    // The namespace of the device the packet arrived on: the one that sends the reset, so
    // `--netns` selects it like a socket's.
    r.netns = Address(skb)
        .follow(config!(offsets.skb_dev))
        .follow(config!(offsets.dev_net))
        .get(config!(offsets.net_inum));
    r.flags |= flag::NO_SOCKET;
}

fn on_tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let mut slot = MaybeUninit::uninit();
    let r = new_record(&mut slot, kind::RESET_RECEIVED);
    read_identity(Address(sk), r);
    if !wanted(r) {
        return 0;
    }
    life::mark(sk);
    submit(&ctx, r);
    0
}

fn on_inet_sk_error_report(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    if read_field(sk, config!(offsets.protocol)) != IPPROTO_TCP {
        return 0;
    }
    let mut slot = MaybeUninit::uninit();
    let r = new_record(&mut slot, kind::SOCKET_ERROR);
    read_identity(Address(sk), r);
    if !wanted(r) {
        return 0;
    }
    life::mark(sk);
    timer::timeout_first(&ctx, sk, r);
    // tcp_write_err() and friends set sk_err just before reporting it.
    r.arg0 = read_field(sk, config!(offsets.sk_err)) as u32;
    r.flags = flag::HAS_KEEPALIVE;
    r.keepalive = read_keepalive(Address(sk));
    r.retransmits = read_field(sk, config!(offsets.retransmits));
    with_task(r);
    submit(&ctx, r);
    0
}

fn on_tcp_destroy_sock(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    timer::remove_known(sk);
    life::remove_life(sk);
    // A full socket is freed after its state went to CLOSE, which was reported: the record
    // says nothing new, and every connection would pay for it.
    if config!(all_states) != 0 {
        if let Some(tp) = tcp_sock(sk) {
            let mut slot = MaybeUninit::uninit();
            let r = new_record(&mut slot, kind::SOCKET_DESTROYED);
            read_identity(tp, r);
            if wanted(r) {
                submit(&ctx, r);
            }
        }
    }
    remove_match(sk);
    0
}

/// Tracepoints that fire in process context and in softirq context alike. The kernel skips
/// a program that is already running on the CPU, so an event in a softirq that interrupts the
/// same program in process context would be lost silently. Each gets a second program that
/// runs after the first and handles the event only when the first did not: the first notes
/// each event it takes (by its arguments) in a per-CPU ring, and the second handles an event
/// that is not there. (Telling from a flag the first sets while it runs left a gap: the
/// kernel counts a program as running a little before its first instruction and after its
/// last, and an event nested there was lost by both.)
macro_rules! guarded {
    ($slot:expr, $tp:tt, $primary:ident, $backup:ident, $body:ident, $key:ident) => {
        #[btf_tracepoint(function = $tp)]
        pub fn $primary(ctx: BtfTracePointContext) -> i32 {
            if let Some(h) = TAKEN.get_ptr_mut($slot) {
                let h = unsafe { &mut *h };
                h.keys[(h.next & (TAKEN_RING as u32 - 1)) as usize] = $key(&ctx);
                h.next = h.next.wrapping_add(1);
            }
            $body(ctx)
        }

        #[btf_tracepoint(function = $tp)]
        pub fn $backup(ctx: BtfTracePointContext) -> i32 {
            let Some(h) = TAKEN.get_ptr_mut($slot) else {
                return 0;
            };
            // Through the map and back: the socket pointer becomes a plain number, which
            // may be compared as the compiler likes (with arithmetic).
            let key = unsafe {
                core::ptr::write_volatile(&mut (*h).event, $key(&ctx));
                core::ptr::read_volatile(&(*h).event)
            };
            if unsafe { &*h }.keys.contains(&key) {
                return 0;
            }
            $body(ctx)
        }
    };
}

/// Events a guarded tracepoint's first program took on this CPU, newest last. Nesting on a
/// CPU is at most a few levels deep, so a few suffice.
const TAKEN_RING: usize = 4;

/// An event by its arguments: two words, compared, never combined (the verifier allows no
/// arithmetic on the socket pointer a BTF tracepoint passes).
type EventKey = [u64; 2];

#[derive(Clone, Copy)]
#[repr(C)]
struct Taken {
    keys: [EventKey; TAKEN_RING],
    next: u32,
    /// The second program's event, staged here (see there).
    event: EventKey,
}

/// Per CPU and guarded tracepoint (its slot in `keepalive_common::programs`): the events
/// its first program took.
#[map]
static TAKEN: PerCpuArray<Taken> = PerCpuArray::with_max_entries(guard_slot::COUNT, 0);

/// An event of a tracepoint whose only argument is the socket.
#[inline(always)]
fn key_sk(ctx: &BtfTracePointContext) -> EventKey {
    [ctx.arg::<u64>(0), 0]
}

/// An event of a tracepoint on a socket and a packet (the socket may be NULL: a reset for
/// no socket).
#[inline(always)]
fn key_sk_skb(ctx: &BtfTracePointContext) -> EventKey {
    [ctx.arg::<u64>(0), ctx.arg::<u64>(1)]
}

/// A state change: the socket and both states (a socket makes each transition once).
#[inline(always)]
fn key_transition(ctx: &BtfTracePointContext) -> EventKey {
    [
        ctx.arg::<u64>(0),
        (ctx.arg::<u32>(1) as u64) | ((ctx.arg::<u32>(2) as u64) << 32),
    ]
}

guarded!(
    guard_slot::INET_SOCK_SET_STATE,
    "inet_sock_set_state",
    inet_sock_set_state,
    inet_sock_set_state_nested,
    on_inet_sock_set_state,
    key_transition
);
guarded!(
    guard_slot::TCP_RETRANSMIT_SKB,
    "tcp_retransmit_skb",
    tcp_retransmit_skb,
    tcp_retransmit_skb_nested,
    on_tcp_retransmit_skb,
    key_sk_skb
);
guarded!(
    guard_slot::TCP_SEND_RESET,
    "tcp_send_reset",
    tcp_send_reset,
    tcp_send_reset_nested,
    on_tcp_send_reset,
    key_sk_skb
);
guarded!(
    guard_slot::TCP_RECEIVE_RESET,
    "tcp_receive_reset",
    tcp_receive_reset,
    tcp_receive_reset_nested,
    on_tcp_receive_reset,
    key_sk
);
guarded!(
    guard_slot::INET_SK_ERROR_REPORT,
    "inet_sk_error_report",
    inet_sk_error_report,
    inet_sk_error_report_nested,
    on_inet_sk_error_report,
    key_sk
);
guarded!(
    guard_slot::TCP_DESTROY_SOCK,
    "tcp_destroy_sock",
    tcp_destroy_sock,
    tcp_destroy_sock_nested,
    on_tcp_destroy_sock,
    key_sk
);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
